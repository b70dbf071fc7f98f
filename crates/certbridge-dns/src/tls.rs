//! Trust roots for HTTPS clients: a given PEM bundle, else the system bundle file (static
//! binaries read no platform store). Shared by the ACME client and the HTTP DNS backends.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::path::{Path, PathBuf};

/// System CA bundle files, in the order the common distributions place them.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL 7+
    "/etc/ssl/ca-bundle.pem",             // openSUSE, SLES
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/ssl/cert.pem",                  // Alpine, macOS-like layouts
];

/// Why trust roots could not be set up.
#[derive(Debug, Clone)]
pub enum RootsError {
    /// The given `ca_file` is unreadable or holds no usable certificate.
    BadCaFile { path: PathBuf, reason: String },
    /// No `ca_file` given and no system bundle found.
    NoSystemRoots { tried: Vec<String> },
}

impl fmt::Display for RootsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootsError::BadCaFile { path, reason } => {
                write!(f, "ca_file {}: {reason}", path.display())
            }
            RootsError::NoSystemRoots { tried } => write!(
                f,
                "no system CA bundle found (tried {}): set ca_file",
                tried.join(", ")
            ),
        }
    }
}

/// Reads every certificate of a PEM bundle into a root store.
pub fn load_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, RootsError> {
    if let Some(path) = ca_file {
        return roots_from_file(path).map_err(|reason| RootsError::BadCaFile {
            path: path.to_owned(),
            reason,
        });
    }
    let mut tried = Vec::new();
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if path.is_file() {
            if let Ok(roots) = roots_from_file(&path) {
                return Ok(roots);
            }
        }
        tried.push(path.display().to_string());
    }
    Err(RootsError::NoSystemRoots { tried })
}

fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0usize;
    for (index, item) in CertificateDer::pem_slice_iter(&data).enumerate() {
        let der = item.map_err(|e| format!("certificate {}: bad PEM: {e}", index + 1))?;
        roots
            .add(der)
            .map_err(|e| format!("certificate {}: {e}", index + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(roots)
}
