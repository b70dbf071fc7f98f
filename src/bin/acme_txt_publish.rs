//! The `acme_txt_publish` Ansible module (a thin main over certbridge-dns).
fn main() {
    certbridge_core::protocol::run(
        "acme_txt_publish",
        &["tsig_secret", "api_key"],
        certbridge_dns::publish::run_module,
    )
}
