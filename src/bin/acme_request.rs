//! The `acme_request` Ansible module (a thin main over the certbridge libraries).
fn main() {
    certbridge_core::protocol::run(
        "acme_request",
        certbridge_acme::config::SECRET_KEYS,
        |raw: serde_json::Map<String, serde_json::Value>, inv| {
            certbridge_acme::request::module(raw, inv, &certbridge_acme::acme::Connector::default())
        },
    )
}
