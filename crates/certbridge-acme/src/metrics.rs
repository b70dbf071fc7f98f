//! The Prometheus textfile (`metrics_file`): when each declared cert expires, when it last
//! failed, and when a cert in backoff is tried next. Written atomically, and only when its content changes (a no-op pulse touches nothing).

use certbridge_core::fsutil::{Dir, FileAttrs};
use std::fmt::Write;
use std::io::Read;
use std::path::Path;

/// One cert's line items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMetrics {
    pub cert: String,
    pub dir: String,
    pub issuer: Option<String>,
    pub not_after: Option<i64>,
    pub last_failure: Option<i64>,
    /// Set while the cert is in backoff after a CA failure: when it is tried next.
    pub next_try: Option<i64>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the textfile (stable order: as given, which callers sort by cert name).
pub fn render(certs: &[CertMetrics]) -> String {
    let mut out = String::new();
    out.push_str("# HELP certbridge_cert_not_after_seconds When the installed certificate expires (unix time).\n");
    out.push_str("# TYPE certbridge_cert_not_after_seconds gauge\n");
    for c in certs {
        if let Some(t) = c.not_after {
            let _ = writeln!(
                out,
                "certbridge_cert_not_after_seconds{{cert=\"{}\",dir=\"{}\",issuer=\"{}\"}} {t}",
                label(&c.cert),
                label(&c.dir),
                label(c.issuer.as_deref().unwrap_or(""))
            );
        }
    }
    out.push_str("# HELP certbridge_cert_last_failure_timestamp_seconds When issuing this cert last failed (unix time; 0: never).\n");
    out.push_str("# TYPE certbridge_cert_last_failure_timestamp_seconds gauge\n");
    for c in certs {
        let _ = writeln!(
            out,
            "certbridge_cert_last_failure_timestamp_seconds{{cert=\"{}\"}} {}",
            label(&c.cert),
            c.last_failure.unwrap_or(0)
        );
    }
    out.push_str("# HELP certbridge_cert_next_try_timestamp_seconds When a cert in backoff after a CA failure is tried next (unix time).\n");
    out.push_str("# TYPE certbridge_cert_next_try_timestamp_seconds gauge\n");
    for c in certs {
        if let Some(t) = c.next_try {
            let _ = writeln!(
                out,
                "certbridge_cert_next_try_timestamp_seconds{{cert=\"{}\"}} {t}",
                label(&c.cert)
            );
        }
    }
    out
}

/// Writes `path` when its content differs; returns whether it was written. The file is read
/// and replaced relative to its directory, never through a symbolic link (an error): a
/// textfile directory may be writable by the exporter's user.
pub fn write_if_changed(path: &Path, certs: &[CertMetrics]) -> std::io::Result<bool> {
    let text = render(certs);
    let (dir, name) = Dir::open_parent(path)?;
    let old = match dir.open_read(&name)? {
        Some(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            if bytes == text.as_bytes() {
                return Ok(false);
            }
            Some(f.metadata()?)
        }
        None => None,
    };
    let attrs = FileAttrs {
        mode: Some(0o644),
        ..Default::default()
    };
    dir.replace(&name, text.as_bytes(), &attrs, old.as_ref(), None)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("certbridge.prom");
        let certs = vec![CertMetrics {
            cert: "main".into(),
            dir: "a.example.test".into(),
            issuer: Some("Pebble \"I\"".into()),
            not_after: Some(1_900_000_000),
            last_failure: None,
            next_try: None,
        }];
        assert!(write_if_changed(&p, &certs).unwrap());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(r#"certbridge_cert_not_after_seconds{cert="main",dir="a.example.test",issuer="Pebble \"I\""} 1900000000"#));
        assert!(text.contains(r#"certbridge_cert_last_failure_timestamp_seconds{cert="main"} 0"#));
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert!(!write_if_changed(&p, &certs).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
        assert!(!text.contains("certbridge_cert_next_try_timestamp_seconds{"));
    }

    #[test]
    fn a_cert_in_backoff_has_its_next_try() {
        let certs = [
            CertMetrics {
                cert: "failing".into(),
                dir: "f.example.test".into(),
                issuer: None,
                not_after: None,
                last_failure: Some(1_800_000_000),
                next_try: Some(1_800_000_300),
            },
            CertMetrics {
                cert: "fine".into(),
                dir: "g.example.test".into(),
                issuer: Some("CA".into()),
                not_after: Some(1_900_000_000),
                last_failure: None,
                next_try: None,
            },
        ];
        let text = render(&certs);
        assert!(text.contains("# TYPE certbridge_cert_next_try_timestamp_seconds gauge\n"));
        assert!(
            text.contains(
                "certbridge_cert_next_try_timestamp_seconds{cert=\"failing\"} 1800000300\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("certbridge_cert_next_try_timestamp_seconds{cert=\"fine\"}"),
            "a cert not in backoff has no next try: {text}"
        );
    }
}
