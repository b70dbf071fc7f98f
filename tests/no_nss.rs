//! The module binaries resolve names in-process (/etc/hosts, /etc/resolv.conf) and look up
//! groups by reading /etc/group: a static glibc binary that called getaddrinfo or getpwnam would
//! load the *host's* NSS modules at run time and break on hosts with another glibc. This reads
//! the symbol table of the unstripped test builds and proves no such function is linked.

use std::process::Command;

/// glibc functions that go through NSS (and so dlopen the host's libnss_*.so).
const NSS_FUNCTIONS: [&str; 10] = [
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname_r",
    "gethostbyname2_r",
    "getnameinfo",
    "getpwnam_r",
    "getpwuid_r",
    "getgrnam_r",
    "getgrgid_r",
    "__nss_lookup_function",
];

#[test]
fn module_binaries_link_no_nss_lookups() {
    let mut checked = Vec::new();
    // Always cargo's own (unstripped) builds, whatever CERTBRIDGE_MODULES_DIR says.
    let built = [
        ("acme_request", env!("CARGO_BIN_EXE_acme_request")),
        ("acme_finalize", env!("CARGO_BIN_EXE_acme_finalize")),
        ("acme_txt_publish", env!("CARGO_BIN_EXE_acme_txt_publish")),
        ("zone_render", env!("CARGO_BIN_EXE_zone_render")),
    ];
    for (module, bin) in built {
        let bin = std::path::Path::new(bin);
        let out = Command::new("nm")
            .arg("--defined-only")
            .arg(bin)
            .output()
            .expect("run nm (binutils)");
        assert!(
            out.status.success(),
            "nm {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let symbols = String::from_utf8_lossy(&out.stdout);
        assert!(
            symbols.lines().count() > 1000,
            "{} has no symbol table to check (stripped?)",
            bin.display()
        );
        let linked: Vec<&str> = symbols
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|sym| NSS_FUNCTIONS.contains(sym))
            .collect();
        assert!(linked.is_empty(), "{module} links NSS lookups: {linked:?}");
        checked.push(module);
    }
    println!(
        "checked {} binaries for {} NSS functions: none linked ({})",
        checked.len(),
        NSS_FUNCTIONS.len(),
        checked.join(", ")
    );
}
