//! The `acme_txt_publish` Ansible module (a thin main over certbridge-dns).
fn main() {
    certbridge_core::protocol::run(
        "acme_txt_publish",
        // `env`: an exec zone's variables (API passwords, tokens).
        &["tsig_secret", "env"],
        certbridge_dns::publish::run_module,
    )
}
