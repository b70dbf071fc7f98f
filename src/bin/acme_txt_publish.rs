//! The `acme_txt_publish` Ansible module (a thin main over the certbridge libraries).
fn main() {
    certbridge_core::protocol::run("acme_txt_publish", &[], |_: serde_json::Map<String, serde_json::Value>, _| {
        Err(certbridge_core::protocol::Failure::new("acme_txt_publish is not implemented yet"))
    })
}
