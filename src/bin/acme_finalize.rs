//! The `acme_finalize` Ansible module (a thin main over the certbridge libraries).
fn main() {
    certbridge_core::protocol::run("acme_finalize", &[], |_: serde_json::Map<String, serde_json::Value>, _| {
        Err(certbridge_core::protocol::Failure::new("acme_finalize is not implemented yet"))
    })
}
