//! The `acme_group` Ansible module (a thin main over the certbridge libraries).
fn main() {
    certbridge_core::protocol::run(
        "acme_group",
        certbridge_acme::config::SECRET_KEYS,
        certbridge_group::module,
    )
}
