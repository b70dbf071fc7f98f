//! The `zone_render` module built from certbridge-core alone (the same one-line main as
//! `src/bin/zone_render.rs`), so the crash-consistency test can build it with the
//! `crash-points` feature in seconds instead of rebuilding every module's dependencies.
fn main() {
    certbridge_core::protocol::run("zone_render", &[], certbridge_core::zone::zone_render)
}
