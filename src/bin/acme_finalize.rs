//! The `acme_finalize` Ansible module (a thin main over the certbridge libraries).
fn main() {
    certbridge_core::protocol::run(
        "acme_finalize",
        certbridge_acme::config::SECRET_KEYS,
        |raw: serde_json::Map<String, serde_json::Value>, inv| {
            certbridge_acme::finalize::module(
                raw,
                inv,
                &certbridge_acme::acme::Connector::default(),
            )
        },
    )
}
