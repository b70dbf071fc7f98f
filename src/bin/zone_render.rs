//! The `zone_render` Ansible module: renders a zone file (see `modules/zone_render.yml`).
//! A thin main over `certbridge_core::zone`; links no TLS and no async runtime.
fn main() {
    certbridge_core::protocol::run("zone_render", &[], certbridge_core::zone::zone_render)
}
