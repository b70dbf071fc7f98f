//! The `zone_render` Ansible module (a thin main over the certbridge libraries).
fn main() {
    certbridge_core::protocol::run("zone_render", &[], |_: serde_json::Map<String, serde_json::Value>, _| {
        Err(certbridge_core::protocol::Failure::new("zone_render is not implemented yet"))
    })
}
