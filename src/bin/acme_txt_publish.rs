//! The `acme_txt_publish` Ansible module (a thin main over certbridge-dns).
fn main() {
    certbridge_core::protocol::run(
        "acme_txt_publish",
        // `env`: an exec zone's variables (API passwords, tokens); `api_key`: a powerdns zone's.
        &["tsig_secret", "env", "api_key"],
        certbridge_dns::publish::run_module,
    )
}
