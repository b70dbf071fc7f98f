//! Link options of the module binaries (release builds only; Ansible copies a binary module
//! to the host on every task, so size is transfer time).
//!
//! - `-z pack-relative-relocs`: the static-PIE binaries relocate themselves at start; their
//!   ~16,000 relative relocations are stored as RELR bitmaps instead of 24-byte RELA entries
//!   (about 125 KB less in acme_request). glibc's static-PIE start-up applies RELR since 2.36,
//!   and the binaries carry their own glibc, so the host's does not matter.
//! - `--no-eh-frame-hdr`: the binaries abort on panic and print their JSON from their own
//!   panic hook, which never walks the stack; nothing unwinds, so the unwinder's lookup table
//!   (`.eh_frame_hdr`, about 64 KB in acme_request) is left out. (The tables themselves stay:
//!   std's are prebuilt with them, and under LTO `-C force-unwind-tables=no` changes nothing.)
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    }
}
