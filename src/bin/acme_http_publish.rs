//! The `acme_http_publish` Ansible module (a thin main over certbridge-core's webroot writer).
fn main() {
    certbridge_core::protocol::run(
        "acme_http_publish",
        &[],
        certbridge_core::webroot::run_module,
    )
}
