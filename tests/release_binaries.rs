//! The shipped module binaries (the release build in `modules/`, `make modules`): statically
//! linked, within their size budgets, and built without the test-only crash points.
//! Ansible copies a binary module to the host on every task, so size is transfer time.

use std::path::PathBuf;

/// (module, budget in bytes)
const BUDGETS: [(&str, u64); 6] = [
    ("acme_request", 4 * 1024 * 1024),
    ("acme_finalize", 4 * 1024 * 1024 + 512 * 1024),
    ("acme_txt_publish", 3 * 1024 * 1024),
    // http-01 token files: certbridge-core only (the protocol shim, serde_json, safe writes;
    // no TLS, no async), as zone_render: the same budget.
    ("acme_http_publish", 1024 * 1024 + 512 * 1024),
    // Group certificates: the store, the local test CA's parsing and HPKE; no ACME client.
    ("acme_group", 2 * 1024 * 1024 + 512 * 1024),
    ("zone_render", 1024 * 1024 + 512 * 1024),
];

fn release_dir() -> PathBuf {
    std::env::var_os("CERTBRIDGE_RELEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("modules"))
}

/// ELF64 little-endian: does any program header have type PT_INTERP (a dynamic loader)?
fn has_interpreter(elf: &[u8]) -> Result<bool, String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err("not an ELF64 little-endian file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > elf.len() {
            return Err("truncated program headers".into());
        }
        let p_type = u32::from_le_bytes([elf[off], elf[off + 1], elf[off + 2], elf[off + 3]]);
        if p_type == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn release_modules_are_static_small_and_free_of_crash_points() {
    let dir = release_dir();
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for (name, budget) in BUDGETS {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the release modules first (`make modules`)",
                path.display()
            )
        });
        let size = bytes.len() as u64;
        report.push(format!(
            "{name:<17} {size:>9} bytes ({:.2} MiB, budget {:.2} MiB)",
            size as f64 / 1048576.0,
            budget as f64 / 1048576.0
        ));
        match has_interpreter(&bytes) {
            Ok(false) => {}
            Ok(true) => problems.push(format!("{name} is dynamically linked (has PT_INTERP)")),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
        if size > budget {
            problems.push(format!(
                "{name} is {size} bytes, over its budget of {budget}"
            ));
        }
        if contains(&bytes, b"CERTBRIDGE_CRASH_AT") {
            problems.push(format!(
                "{name} was built with the crash-points test feature"
            ));
        }
    }
    println!(
        "release module sizes ({}):\n  {}",
        dir.display(),
        report.join("\n  ")
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
