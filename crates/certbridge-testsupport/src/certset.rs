//! What services see in a cert directory: the nine service-facing files read as a service
//! would (following the stable links), checked to be one complete, matching set.

use std::path::Path;

/// The service-facing names of a cert directory whose first name is `first`.
pub fn service_files(first: &str) -> Vec<String> {
    vec![
        "privkey.pem".into(),
        "cert.pem".into(),
        "chain.pem".into(),
        "fullchain.pem".into(),
        "combined.pem".into(),
        format!("{first}.key"),
        format!("{first}.cer"),
        "ca.cer".into(),
        "fullchain.cer".into(),
    ]
}

/// One complete set as services read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSet {
    pub key: String,
    pub cert: String,
    pub chain: String,
}

/// What a reader finds in `dir` right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No service file is readable (before the first issuance).
    Absent,
    Complete(CertSet),
}

fn with_nl(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// Reads the service files of `dir` (first name `first`) and checks they form one set whose
/// leaf covers exactly `names`: every file present and non-empty, or none readable; the key
/// matches the leaf; `fullchain` = cert + chain; `combined` = key + cert + chain; the acme.sh
/// names hold the same bytes as the certbot names. Err describes the first inconsistency.
pub fn read_set(dir: &Path, first: &str, names: &[&str]) -> Result<Seen, String> {
    let files = service_files(first);
    let mut found: Vec<Option<String>> = Vec::new();
    for f in &files {
        match std::fs::read_to_string(dir.join(f)) {
            Ok(s) => found.push(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => found.push(None),
            Err(e) => return Err(format!("{f}: {e}")),
        }
    }
    if found.iter().all(Option::is_none) {
        return Ok(Seen::Absent);
    }
    if let Some(i) = found.iter().position(Option::is_none) {
        return Err(format!("partial set: {} is missing", files[i]));
    }
    let v: Vec<String> = found.into_iter().flatten().collect();
    if let Some(i) = v.iter().position(|s| s.trim().is_empty()) {
        return Err(format!("{} is empty", files[i]));
    }
    let (key, cert, chain) = (&v[0], &v[1], &v[2]);
    let leaf = certbridge_acme::certinfo::leaf_info_pem(cert, "cert.pem")
        .map_err(|e| format!("cert.pem does not parse: {e}"))?;
    if !certbridge_acme::certinfo::key_matches(key, &leaf) {
        return Err("privkey.pem does not match cert.pem".into());
    }
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got: Vec<String> = leaf.names.iter().cloned().collect();
    if got != want {
        return Err(format!("cert.pem covers {got:?}, not {want:?}"));
    }
    let fullchain = format!("{cert}{chain}");
    let combined = format!("{}{cert}{chain}", with_nl(key));
    let expect = [
        (3, &fullchain, "cert.pem + chain.pem"),
        (4, &combined, "privkey.pem + cert.pem + chain.pem"),
        (5, key, "privkey.pem"),
        (6, cert, "cert.pem"),
        (7, chain, "chain.pem"),
        (8, &fullchain, "cert.pem + chain.pem"),
    ];
    for (i, content, what) in expect {
        if &v[i] != content {
            return Err(format!("{} is not {what}", files[i]));
        }
    }
    Ok(Seen::Complete(CertSet {
        key: key.clone(),
        cert: cert.clone(),
        chain: chain.clone(),
    }))
}
