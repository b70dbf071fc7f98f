//! Domain types parsed once at the edge: certificate identifiers, DNS owner names,
//! cert names (safe path components), dns-01 TXT digests and server addresses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Why a name was refused. The message names the culprit and, where useful, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` is empty")]
    Empty(String),
    #[error("`{name}` is longer than 253 octets ({len})")]
    TooLong { name: String, len: usize },
    #[error("`{name}` has a label longer than 63 octets")]
    LabelTooLong { name: String },
    #[error("`{name}` has an empty label (`..`, or a leading dot)")]
    EmptyLabel { name: String },
    #[error("`{name}` is not ASCII: give internationalized names as punycode (xn--...)")]
    NotAscii { name: String },
    #[error(
        "`{name}` has the character {ch:?}; only letters, digits and `-` are allowed in a label"
    )]
    BadChar { name: String, ch: char },
    #[error("`{name}` has a label that starts or ends with `-`")]
    Hyphen { name: String },
    #[error("`{name}`: `*` is allowed only as the whole left-most label (`*.example.org`)")]
    BadWildcard { name: String },
    #[error("`{name}` is a single label; a certificate needs a fully qualified name")]
    SingleLabel { name: String },
    #[error("`{name}` has `_`, which certificate names cannot carry")]
    Underscore { name: String },
    #[error("cert name `{0}` is not a safe directory name: use letters, digits, `-`, `_` and `.`, not starting with `.`, at most 128 characters")]
    BadCertName(String),
    #[error(
        "`{0}` is not a dns-01 value: expected exactly 43 base64url characters (a SHA-256 digest)"
    )]
    BadTxtDigest(String),
    #[error("`{0}` is not an address:port (an IP address, `[v6]:port`, or an address alone for port {1})")]
    BadAddress(String, u16),
    #[error("the file name `{name}` would be {len} octets with its temporary name (`.<name>.tmp.<pid>.<n>`), over the {NAME_MAX}-octet file-name limit")]
    FileNameTooLong { name: String, len: usize },
    #[error("the path `{path}` would be {len} octets with its temporary name, over the {PATH_MAX}-octet path limit")]
    PathTooLong { path: String, len: usize },
}

/// The longest file name (one path component) Linux file systems take (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// The longest path the kernel takes, without the terminating NUL (`PATH_MAX` - 1).
pub const PATH_MAX: usize = 4095;
/// The most a name made beside a file adds to that file's name: the temporary name of an
/// atomic write, `.<name>.tmp.<pid>.<attempt>`, with a pid of up to 10 digits (a `u32`) and
/// an attempt of up to 2. Shorter companions (the symlink swaps' `.<name>.tmp.<pid>`, locks
/// `.<name>.lock`) fit when it fits.
pub const TEMP_NAME_EXTRA: usize = 1 + ".tmp.".len() + 10 + 1 + 2;

/// Checks, before anything is written, that the file `name` can be made in `dir`: the name
/// and its temporary names fit [`NAME_MAX`], and the longest resulting path fits
/// [`PATH_MAX`]. A name that fails here would fail with "File name too long" half-way
/// through a write.
pub fn check_made_file(dir: &std::path::Path, name: &str) -> Result<(), NameError> {
    let len = name.len() + TEMP_NAME_EXTRA;
    if len > NAME_MAX {
        return Err(NameError::FileNameTooLong {
            name: name.into(),
            len,
        });
    }
    let path = dir.join(name);
    let path_len = path.as_os_str().len() + TEMP_NAME_EXTRA;
    if path_len > PATH_MAX {
        return Err(NameError::PathTooLong {
            path: path.display().to_string(),
            len: path_len,
        });
    }
    Ok(())
}

/// Shared label rules. `underscore`: owner names may carry `_acme-challenge`-style labels.
fn check_labels(original: &str, name: &str, underscore: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(original.into()));
    }
    if !name.is_ascii() {
        return Err(NameError::NotAscii {
            name: original.into(),
        });
    }
    if name.len() > 253 {
        return Err(NameError::TooLong {
            name: original.into(),
            len: name.len(),
        });
    }
    for (i, label) in name.split('.').enumerate() {
        if label.is_empty() {
            return Err(NameError::EmptyLabel {
                name: original.into(),
            });
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong {
                name: original.into(),
            });
        }
        if label == "*" {
            if i != 0 {
                return Err(NameError::BadWildcard {
                    name: original.into(),
                });
            }
            continue;
        }
        for ch in label.chars() {
            match ch {
                'a'..='z' | '0'..='9' | '-' => {}
                '_' if underscore => {}
                '_' => {
                    return Err(NameError::Underscore {
                        name: original.into(),
                    })
                }
                '*' => {
                    return Err(NameError::BadWildcard {
                        name: original.into(),
                    })
                }
                _ => {
                    return Err(NameError::BadChar {
                        name: original.into(),
                        ch,
                    })
                }
            }
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Hyphen {
                name: original.into(),
            });
        }
    }
    Ok(())
}

/// Lower-cases and drops one trailing dot; tells whether the input was already canonical.
fn canonical(input: &str) -> (String, bool) {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    let lower = trimmed.to_ascii_lowercase();
    let same = lower == input;
    (lower, same)
}

/// A name a certificate is issued for: LDH labels, at least two, no `_`, a wildcard only as a
/// leading `*.`. Stored lower-case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identifier(String);

impl Identifier {
    /// Parses a certificate name; `Ok((id, normalized))` where `normalized` says the input was
    /// changed (case or trailing dot), which callers report.
    pub fn parse(input: &str) -> Result<(Self, bool), NameError> {
        // An IP address (RFC 8738): kept in its canonical text form (`::1`, not `0:0:...:1`).
        if let Ok(ip) = input.trim().parse::<IpAddr>() {
            let text = ip.to_string();
            let same = text == input;
            return Ok((Identifier(text), !same));
        }
        let (name, same) = canonical(input.trim());
        check_labels(input, &name, false)?;
        if !name.contains('.')
            || name == "*"
            || name.matches('.').count() == 1 && name.starts_with("*.")
        {
            return Err(NameError::SingleLabel { name: input.into() });
        }
        Ok((Identifier(name), !same))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
    /// The address, when this is an IP identifier (RFC 8738).
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }
    /// The cert directory name this identifier gives as a cert's first name: the name without
    /// `*.`; an IPv6 address with each `:` as `-`, and `0` before a leading `-` (`::1` ->
    /// `0--1`), so no directory name starts with `-` or holds a `:`. Canonical addresses never
    /// start with `0:`, so no two addresses share a directory name.
    pub fn dir_name(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(_)) => {
                let d = self.0.replace(':', "-");
                if d.starts_with('-') {
                    format!("0{d}")
                } else {
                    d
                }
            }
            _ => self.base().to_owned(),
        }
    }
    /// The name without a leading `*.` (where its dns-01 record lives, and its directory).
    pub fn base(&self) -> &str {
        self.0.strip_prefix("*.").unwrap_or(&self.0)
    }
    /// `_acme-challenge.<base>`: the owner the CA queries for this identifier.
    pub fn challenge_record(&self) -> DomainName {
        DomainName(format!("_acme-challenge.{}", self.base()))
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Any DNS owner name (zone origins, record owners, CNAME targets): LDH labels plus `_`,
/// `*` only as the whole left-most label. Lower-case, absolute, stored without the final dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let (name, _) = canonical(input.trim());
        if name.is_empty() {
            return Err(NameError::Empty(input.into()));
        }
        check_labels(input, &name, true)?;
        Ok(DomainName(name))
    }
    /// The root zone, `.`.
    pub fn root() -> Self {
        DomainName(String::new())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// With the trailing dot, as zone files and DNS tools print it.
    pub fn fqdn(&self) -> String {
        format!("{}.", self.0)
    }
    /// True when `self` is `zone` or below it.
    pub fn is_subdomain_of(&self, zone: &DomainName) -> bool {
        zone.0.is_empty()
            || self.0 == zone.0
            || (self.0.len() > zone.0.len()
                && self.0.ends_with(&zone.0)
                && self.0.as_bytes()[self.0.len() - zone.0.len() - 1] == b'.')
    }
    /// The part of `self` relative to `zone` (`@` for the apex), or `None` when outside it.
    pub fn relative_to(&self, zone: &DomainName) -> Option<String> {
        if !self.is_subdomain_of(zone) {
            return None;
        }
        if self.0 == zone.0 {
            return Some("@".into());
        }
        if zone.0.is_empty() {
            return Some(self.0.clone());
        }
        Some(self.0[..self.0.len() - zone.0.len() - 1].to_owned())
    }
    /// The parent name (`None` at the root).
    pub fn parent(&self) -> Option<DomainName> {
        if self.0.is_empty() {
            return None;
        }
        Some(DomainName(
            self.0
                .split_once('.')
                .map(|(_, p)| p)
                .unwrap_or("")
                .to_owned(),
        ))
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fqdn())
    }
}

impl FromStr for DomainName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DomainName::parse(s)
    }
}

/// A cert name (the key of `letsencrypt_certs`): names the handler and is used in paths under
/// the reserved area, so it must be a safe single path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertName(String);

impl CertName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let ok = !input.is_empty()
            && input.len() <= 128
            && !input.starts_with('.')
            && input
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(CertName(input.to_owned()))
        } else {
            Err(NameError::BadCertName(input.into()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dns-01 TXT value: base64url (no padding) of a SHA-256 digest, exactly 43 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxtDigest(String);

impl TxtDigest {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let ok = input.len() == 43
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(TxtDigest(input.to_owned()))
        } else {
            Err(NameError::BadTxtDigest(input.into()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TxtDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server address: `1.2.3.4:53`, `[::1]:53`, or an address alone (default port).
/// Only IP literals: the modules resolve nothing through the host's libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerAddr(pub SocketAddr);

impl ServerAddr {
    pub fn parse(input: &str, default_port: u16) -> Result<Self, NameError> {
        let s = input.trim();
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(ServerAddr(sa));
        }
        if let Ok(ip) = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(ServerAddr(SocketAddr::new(ip, default_port)));
        }
        Err(NameError::BadAddress(input.into(), default_port))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! serde_via_str {
    ($t:ty, $parse:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(DomainName, DomainName::parse);
serde_via_str!(CertName, CertName::parse);
serde_via_str!(TxtDigest, TxtDigest::parse);
serde_via_str!(Identifier, |s: &str| Identifier::parse(s).map(|(id, _)| id));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_identifiers_are_canonical_and_name_safe_directories() {
        let (v6, changed) = Identifier::parse("0:0:0:0:0:0:0:1").unwrap();
        assert_eq!((v6.as_str(), changed), ("::1", true));
        assert_eq!(v6.dir_name(), "0--1");
        let (v6, _) = Identifier::parse("2001:DB8::a").unwrap();
        assert_eq!(
            (v6.as_str(), v6.dir_name().as_str()),
            ("2001:db8::a", "2001-db8--a")
        );
        let (v4, changed) = Identifier::parse("127.0.0.1").unwrap();
        assert_eq!((v4.dir_name().as_str(), changed), ("127.0.0.1", false));
        assert!(v4.ip().is_some() && !v4.is_wildcard());
        let (dns, _) = Identifier::parse("*.Example.org").unwrap();
        assert!(dns.ip().is_none());
        assert_eq!(dns.dir_name(), "example.org");
    }

    #[test]
    fn identifiers_normalize_and_refuse() {
        let (id, changed) = Identifier::parse("WWW.Example.org.").unwrap();
        assert_eq!(id.as_str(), "www.example.org");
        assert!(changed);
        let (w, _) = Identifier::parse("*.s3.example.org").unwrap();
        assert!(w.is_wildcard());
        assert_eq!(w.base(), "s3.example.org");
        assert_eq!(
            w.challenge_record().as_str(),
            "_acme-challenge.s3.example.org"
        );
        for bad in [
            "",
            "localhost",
            "*.org",
            "*.*.x.org",
            "a..b.org",
            "_x.example.org",
            "a b.org",
            "a;b.org",
            "-a.example.org",
            "bü.example.org",
            "a.*.example.org",
            "x*.example.org",
        ] {
            assert!(Identifier::parse(bad).is_err(), "{bad} should be refused");
        }
        let long_label = format!("{}.org", "a".repeat(64));
        assert!(matches!(
            Identifier::parse(&long_label),
            Err(NameError::LabelTooLong { .. })
        ));
        let long = format!("{}.org", vec!["a".repeat(60); 5].join("."));
        assert!(matches!(
            Identifier::parse(&long),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn domain_names_allow_underscore_and_relate_to_zones() {
        let zone = DomainName::parse("acme.example.net.").unwrap();
        let owner = DomainName::parse("_acme-challenge.Web01.acme.example.net").unwrap();
        assert!(owner.is_subdomain_of(&zone));
        assert_eq!(owner.relative_to(&zone).unwrap(), "_acme-challenge.web01");
        assert_eq!(zone.relative_to(&zone).unwrap(), "@");
        let other = DomainName::parse("xacme.example.net").unwrap();
        assert!(!other.is_subdomain_of(&zone));
        assert_eq!(zone.parent().unwrap().as_str(), "example.net");
        assert_eq!(owner.fqdn(), "_acme-challenge.web01.acme.example.net.");
    }

    #[test]
    fn cert_names_are_safe_path_components() {
        for ok in ["web01-main", "wildcard", "a.b_c"] {
            CertName::parse(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/abs",
            ".certbridge",
            "a/b",
            "a b",
            "a\nb",
        ] {
            assert!(CertName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn txt_digests_are_43_base64url() {
        TxtDigest::parse("DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-").unwrap();
        for bad in [
            "",
            "short",
            "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=",
            "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;",
        ] {
            assert!(TxtDigest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn made_files_fit_name_and_path_limits_with_their_temp_names() {
        let dir = std::path::Path::new("/etc/letsencrypt-certs");
        let fits = "a".repeat(NAME_MAX - TEMP_NAME_EXTRA);
        check_made_file(dir, &fits).unwrap();
        let over = format!("{fits}b");
        let e = check_made_file(dir, &over).unwrap_err();
        assert!(
            matches!(e, NameError::FileNameTooLong { len: 256, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("255-octet file-name limit"), "{e}");
        // A 251-octet first name: `<dir>.key` is 255 octets, its temp names are not.
        let key = format!("{}.key", "x".repeat(251));
        assert!(check_made_file(dir, &key).is_err());
        let deep = std::path::PathBuf::from(format!("/{}", vec!["d".repeat(200); 21].join("/")));
        let e = check_made_file(&deep, "cert.pem").unwrap_err();
        assert!(matches!(e, NameError::PathTooLong { .. }), "{e}");
    }

    #[test]
    fn server_addresses() {
        assert_eq!(ServerAddr::parse("127.0.0.1", 53).unwrap().0.port(), 53);
        assert_eq!(
            ServerAddr::parse("127.0.0.1:5353", 53).unwrap().0.port(),
            5353
        );
        assert_eq!(ServerAddr::parse("[::1]:54", 53).unwrap().0.port(), 54);
        assert_eq!(ServerAddr::parse("::1", 53).unwrap().0.port(), 53);
        assert!(ServerAddr::parse("ns1.example.org", 53).is_err());
    }
}
