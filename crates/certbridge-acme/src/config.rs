//! The options `acme_request` and `acme_finalize` share, parsed strictly and validated in full
//! before any disk or network access: names, cert names, directories, key types, limits.

use crate::certinfo::KeyType;
use crate::policy::{self, LE_PRODUCTION, SELF_SIGN_DIRECTORY};
use crate::store::{Store, RESERVED};
use certbridge_core::names::{CertName, Identifier, NameError};
use certbridge_core::protocol::{coerce, limits, parse_options};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// Default of `request_timeout`: the deadline of each HTTP request (seconds).
pub const DEFAULT_REQUEST_TIMEOUT: u64 = 30;

/// At most this many names per certificate (Let's Encrypt's limit).
pub const MAX_NAMES: usize = 100;

/// One cert as the user wrote it: a list of names, or `{names, key_type, profile}`.
#[derive(Debug, Clone)]
pub enum CertEntry {
    Names(Vec<String>),
    Detailed(DetailedCert),
}

/// The keys of a cert's map form.
pub const CERT_KEYS: &[&str] = &["names", "key_type", "profile"];

/// By hand rather than `untagged`, whose only error is "did not match any variant of untagged
/// enum CertEntry": this one names the key at fault (serde's path names the cert).
impl<'de> Deserialize<'de> for CertEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let shape = "expected a list of names, or a map with `names` (and optionally `key_type`, `profile`)";
        match Value::deserialize(d)? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(D::Error::custom(format!(
                        "name {}: expected a string, found {other}",
                        i + 1
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(CertEntry::Names),
            Value::Object(map) => {
                if let Some(key) = map.keys().find(|k| !CERT_KEYS.contains(&k.as_str())) {
                    return Err(D::Error::custom(format!(
                        "unsupported key `{key}` in the cert's map; valid keys: {}",
                        CERT_KEYS.join(", ")
                    )));
                }
                if !map.contains_key("names") {
                    return Err(D::Error::custom(
                        "the cert's map has no `names` (the list of names of the certificate)",
                    ));
                }
                // Only the three known keys remain: any error is a type error of one of them.
                let mut detailed = DetailedCert {
                    names: Vec::new(),
                    key_type: None,
                    profile: None,
                };
                for (key, v) in map {
                    let text = |v: Value| match v {
                        Value::Null => Ok(None),
                        Value::String(s) => Ok(Some(s)),
                        other => Err(D::Error::custom(format!(
                            "`{key}`: expected a string, found {other}"
                        ))),
                    };
                    match key.as_str() {
                        "names" => match CertEntry::deserialize(v)
                            .map_err(|e| D::Error::custom(format!("`names`: {e}")))?
                        {
                            CertEntry::Names(n) => detailed.names = n,
                            CertEntry::Detailed(_) => {
                                return Err(D::Error::custom(
                                    "`names`: expected a list of names, found a map",
                                ))
                            }
                        },
                        "key_type" => detailed.key_type = text(v)?,
                        _ => detailed.profile = text(v)?,
                    }
                }
                Ok(CertEntry::Detailed(detailed))
            }
            Value::String(s) => Err(D::Error::custom(format!(
                "{shape}, found the string \"{s}\" (a cert with one name is a list of one)"
            ))),
            other => Err(D::Error::custom(format!("{shape}, found {other}"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DetailedCert {
    pub names: Vec<String>,
    pub key_type: Option<String>,
    pub profile: Option<String>,
}

/// `force`: true/false, or a list of cert names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Force {
    #[default]
    None,
    All,
    Certs(Vec<String>),
}

fn force<'de, D: Deserializer<'de>>(d: D) -> Result<Force, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "expected a boolean or a list of cert names, found {other} in the list"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Force::Certs),
        other => coerce::boolean(other)
            .map(|b| if b { Force::All } else { Force::None })
            .map_err(|e| serde::de::Error::custom(format!("{e} (or a list of cert names)"))),
    }
}

/// The common options, as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonOptions {
    pub certs: BTreeMap<String, CertEntry>,
    #[serde(default)]
    pub directory: Option<String>,
    #[serde(default, deserialize_with = "coerce::opt_boolean")]
    pub staging: Option<bool>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub account_email: Option<String>,
    #[serde(default, deserialize_with = "coerce::opt_boolean")]
    pub terms_agreed: Option<bool>,
    #[serde(default)]
    pub cert_root: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub key_type: Option<String>,
    /// 0 to 3650 days.
    #[serde(
        default,
        deserialize_with = "coerce::opt_days::<_, 0, { limits::RENEW_DAYS }>"
    )]
    pub renew_days: Option<u64>,
    #[serde(default, deserialize_with = "force")]
    pub force: Force,
    #[serde(default, deserialize_with = "coerce::opt_boolean")]
    pub self_sign: Option<bool>,
    /// 1 second to one day.
    #[serde(
        default,
        deserialize_with = "coerce::opt_seconds::<_, 1, { limits::DAY }>"
    )]
    pub timeout: Option<u64>,
    /// 1 second to one hour.
    #[serde(
        default,
        deserialize_with = "coerce::opt_seconds::<_, 1, { limits::HOUR }>"
    )]
    pub request_timeout: Option<u64>,
    #[serde(default)]
    pub log_file: Option<String>,
    #[serde(default)]
    pub jitter_seed: Option<String>,
    #[serde(default)]
    pub eab_kid: Option<String>,
    #[serde(default)]
    pub eab_hmac_key: Option<String>,
    #[serde(default)]
    pub proxy: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// The option names of [`CommonOptions`].
pub const COMMON_KEYS: &[&str] = &[
    "certs",
    "directory",
    "staging",
    "ca_file",
    "account_email",
    "terms_agreed",
    "cert_root",
    "group",
    "key_type",
    "renew_days",
    "force",
    "self_sign",
    "timeout",
    "request_timeout",
    "log_file",
    "jitter_seed",
    "eab_kid",
    "eab_hmac_key",
    "proxy",
    "profile",
];

/// Option names that hold secrets (never echoed): the EAB key, and the proxy URL, which may
/// carry credentials.
pub const SECRET_KEYS: &[&str] = &["eab_hmac_key", "proxy"];

/// A configuration error, naming the option, cert and name at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Options(String),
    #[error("unsupported option `{name}`; valid options: {valid}")]
    Unknown { name: String, valid: String },
    #[error("`certs` is empty: declare at least one cert")]
    NoCerts,
    #[error("certs: {0}")]
    CertName(NameError),
    #[error("certs.{cert}: the cert name `.certbridge` (or anything under it) is reserved")]
    Reserved { cert: String },
    #[error("certs.{cert}: no names")]
    NoNames { cert: String },
    #[error("certs.{cert}: {count} names, at most {MAX_NAMES} are allowed per certificate")]
    TooManyNames { cert: String, count: usize },
    #[error("certs.{cert}: {source}")]
    Name { cert: String, source: NameError },
    #[error("certs.{cert}: `{name}` appears more than once (names are compared lower-cased, without a trailing dot)")]
    Duplicate { cert: String, name: String },
    #[error(
        "certs.{a} and certs.{b} both map to the directory `{dir}` (the first name without `*.`)"
    )]
    SameDirectory { a: String, b: String, dir: String },
    #[error("{option}: {detail}")]
    Invalid { option: String, detail: String },
    #[error("certs.{cert}: {source}; {hint}")]
    MadeName {
        cert: String,
        source: NameError,
        hint: String,
    },
}

/// Which type a cert's new keys get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChoice {
    /// Set by the user (`key_type`, or the cert's own): always this type.
    Set(KeyType),
    /// Not set: the type of the installed certificate's key (an adopted acme.sh RSA
    /// certificate renews with RSA of its size), else the default.
    Keep,
}

impl KeyChoice {
    /// The type for the next key, given the installed certificate's (if any and known).
    pub fn resolve(self, installed: Option<KeyType>) -> KeyType {
        match self {
            KeyChoice::Set(k) => k,
            KeyChoice::Keep => installed.unwrap_or_default(),
        }
    }
}

/// One cert, validated.
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub name: CertName,
    /// Canonical names in the order given (the first names the directory).
    pub names: Vec<Identifier>,
    pub key_type: KeyChoice,
    /// The ACME profile to ask for (None: the CA's default).
    pub profile: Option<String>,
    /// `<cert_root>/<dir>`: the first name without `*.`.
    pub dir: String,
}

impl CertSpec {
    pub fn name_strings(&self) -> Vec<String> {
        self.names.iter().map(|n| n.as_str().to_owned()).collect()
    }
    /// The names in canonical sorted order (what the decision compares).
    pub fn sorted_names(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.names.iter().map(|n| n.as_str().to_owned()).collect();
        set.into_iter().collect()
    }
}

/// The validated common configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub certs: Vec<CertSpec>,
    /// The exact directory URL spelling (or [`SELF_SIGN_DIRECTORY`] with `self_sign`).
    pub directory: String,
    pub staging: bool,
    pub self_sign: bool,
    pub ca_file: Option<PathBuf>,
    pub account_email: Option<String>,
    pub terms_agreed: bool,
    pub store: Store,
    pub renew_days: Option<u64>,
    pub force: Force,
    pub timeout: Duration,
    /// Deadline of each HTTP request to the CA (the HTTP client has none of its own).
    pub request_timeout: Duration,
    pub log_file: Option<PathBuf>,
    pub jitter_seed: String,
    pub eab: Option<(String, Vec<u8>)>,
    /// `http://host:port` CONNECT proxy for every ACME request (None: `https_proxy` /
    /// `no_proxy` from the environment).
    pub proxy: Option<String>,
    /// Normalisations worth telling the user (e.g. `WWW.Example.org.` -> `www.example.org`).
    pub notes: Vec<String>,
}

impl Config {
    /// True when the target directory issues untrusted certificates.
    pub fn untrusted_target(&self) -> bool {
        self.self_sign || policy::is_staging(&self.directory, self.staging)
    }
    pub fn forced(&self, cert: &str) -> bool {
        match &self.force {
            Force::None => false,
            Force::All => true,
            Force::Certs(list) => list.iter().any(|c| c == cert),
        }
    }
    pub fn cert(&self, name: &str) -> Option<&CertSpec> {
        self.certs.iter().find(|c| c.name.as_str() == name)
    }
}

/// Splits the raw options into the common ones and a module's own (`T`, with `own_keys`),
/// refusing any other key with the full list of valid ones.
pub fn split_options<T: DeserializeOwned>(
    raw: Map<String, Value>,
    own_keys: &[&str],
) -> Result<(CommonOptions, T), ConfigError> {
    let mut common = Map::new();
    let mut own = Map::new();
    for (k, v) in raw {
        if COMMON_KEYS.contains(&k.as_str()) {
            common.insert(k, v);
        } else if own_keys.contains(&k.as_str()) {
            own.insert(k, v);
        } else {
            let mut valid: Vec<&str> = COMMON_KEYS.iter().chain(own_keys).copied().collect();
            valid.sort_unstable();
            return Err(ConfigError::Unknown {
                name: k,
                valid: valid.join(", "),
            });
        }
    }
    let common =
        parse_options::<CommonOptions>(common).map_err(|e| ConfigError::Options(e.to_string()))?;
    let own = parse_options::<T>(own).map_err(|e| ConfigError::Options(e.to_string()))?;
    Ok((common, own))
}

/// Strips an OpenDev-style `:port` suffix (used by their cert checks, not for issuance).
fn strip_port(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    }
}

fn invalid(option: &str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option: option.into(),
        detail: detail.into(),
    }
}

/// The host name that seeds the renewal jitter (read from the kernel, no NSS).
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Validates everything; `default_timeout` is the module's own default.
pub fn validate(o: CommonOptions, default_timeout: u64) -> Result<Config, ConfigError> {
    if o.certs.is_empty() {
        return Err(ConfigError::NoCerts);
    }
    let default_key_type = match &o.key_type {
        Some(k) => KeyChoice::Set(k.parse::<KeyType>().map_err(|e| invalid("key_type", e))?),
        None => KeyChoice::Keep,
    };
    let default_profile = match &o.profile {
        Some(p) => check_profile("profile", p)?,
        None => None,
    };
    let mut notes = Vec::new();
    let mut certs = Vec::new();
    let mut dirs: BTreeMap<String, String> = BTreeMap::new();
    for (cert, entry) in &o.certs {
        let name = CertName::parse(cert).map_err(ConfigError::CertName)?;
        if cert.eq_ignore_ascii_case(RESERVED) {
            return Err(ConfigError::Reserved { cert: cert.clone() });
        }
        let (raw_names, key_type, profile) = match entry {
            CertEntry::Names(n) => (n.clone(), default_key_type, default_profile.clone()),
            CertEntry::Detailed(d) => (
                d.names.clone(),
                match &d.key_type {
                    Some(k) => KeyChoice::Set(
                        k.parse::<KeyType>()
                            .map_err(|e| invalid(&format!("certs.{cert}.key_type"), e))?,
                    ),
                    None => default_key_type,
                },
                match &d.profile {
                    Some(p) => check_profile(&format!("certs.{cert}.profile"), p)?,
                    None => default_profile.clone(),
                },
            ),
        };
        if raw_names.is_empty() {
            return Err(ConfigError::NoNames { cert: cert.clone() });
        }
        let mut names: Vec<Identifier> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut seen_raw: BTreeSet<String> = BTreeSet::new();
        for raw in &raw_names {
            let stripped = strip_port(raw.trim());
            let (id, normalised) =
                Identifier::parse(stripped).map_err(|source| ConfigError::Name {
                    cert: cert.clone(),
                    source,
                })?;
            if normalised {
                notes.push(format!("certs.{cert}: `{raw}` is used as `{id}`"));
            }
            if !seen.insert(id.as_str().to_owned()) {
                // The same name twice with different ports is one name, not an error.
                if stripped != raw.trim() && seen_raw.insert(raw.clone()) {
                    continue;
                }
                return Err(ConfigError::Duplicate {
                    cert: cert.clone(),
                    name: raw.clone(),
                });
            }
            seen_raw.insert(raw.clone());
            names.push(id);
        }
        if names.len() > MAX_NAMES {
            return Err(ConfigError::TooManyNames {
                cert: cert.clone(),
                count: names.len(),
            });
        }
        let dir = names[0].base().to_owned();
        if let Some(other) = dirs.insert(dir.clone(), cert.clone()) {
            return Err(ConfigError::SameDirectory {
                a: other,
                b: cert.clone(),
                dir,
            });
        }
        certs.push(CertSpec {
            name,
            names,
            key_type,
            profile,
            dir,
        });
    }
    let self_sign = o.self_sign.unwrap_or(false);
    let directory = if self_sign {
        SELF_SIGN_DIRECTORY.to_owned()
    } else {
        let d = o.directory.clone().unwrap_or_else(|| LE_PRODUCTION.into());
        if !d.starts_with("https://") || d.contains(char::is_whitespace) {
            return Err(invalid(
                "directory",
                format!("`{d}` is not an https:// URL"),
            ));
        }
        d
    };
    let cert_root = PathBuf::from(
        o.cert_root
            .clone()
            .unwrap_or_else(|| "/etc/letsencrypt-certs".into()),
    );
    if !cert_root.is_absolute() {
        return Err(invalid(
            "cert_root",
            format!("`{}` is not an absolute path", cert_root.display()),
        ));
    }
    let gid = match &o.group {
        Some(g) if !g.is_empty() => Some(
            certbridge_core::fsutil::lookup_gid(g).map_err(|e| invalid("group", e.to_string()))?,
        ),
        _ => None,
    };
    let store = Store::new(cert_root, gid);
    for spec in &certs {
        check_made_names(&store, spec)?;
    }
    let ca_file = o
        .ca_file
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(p) = &ca_file {
        if !p.is_file() {
            return Err(invalid(
                "ca_file",
                format!("{} is not a readable file", p.display()),
            ));
        }
        // Read it now, as the client will: a file that is no PEM bundle is a configuration
        // error, found before any lock or state change, never a CA failure with backoff.
        if let Err(crate::http::RootsError::BadCaFile { reason, .. }) =
            crate::http::load_roots(Some(p))
        {
            return Err(invalid("ca_file", format!("{}: {reason}", p.display())));
        }
    }
    if let Some(e) = &o.account_email {
        if !e.contains('@') || e.contains(char::is_whitespace) || e.contains(['<', '>', ',']) {
            return Err(invalid(
                "account_email",
                format!("`{e}` is not an e-mail address"),
            ));
        }
    }
    if let Force::Certs(list) = &o.force {
        if let Some(unknown) = list.iter().find(|c| !o.certs.contains_key(*c)) {
            return Err(invalid(
                "force",
                format!("`{unknown}` is not a declared cert"),
            ));
        }
    }
    // Both bounded by the parser (at least 1 s, at most a day / an hour).
    let timeout = o.timeout.unwrap_or(default_timeout);
    let request_timeout = o.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    // An empty string is "not given" (as for `ca_file`); one without the other is an error,
    // and so is a key that decodes to nothing: the client would refuse it only after the lock.
    let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let eab = match (given(&o.eab_kid), given(&o.eab_hmac_key)) {
        (None, None) => None,
        (Some(kid), Some(key)) => {
            let bytes = crate::client::decode_eab_key(&key).map_err(|_| {
                invalid(
                    "eab_hmac_key",
                    "is not base64url, or decodes to nothing (its value is not shown)",
                )
            })?;
            Some((kid.trim().to_owned(), bytes))
        }
        (Some(_), None) => {
            return Err(invalid(
                "eab_hmac_key",
                "is missing or empty: eab_kid and eab_hmac_key go together",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "eab_kid",
                "is missing or empty: eab_kid and eab_hmac_key go together",
            ))
        }
    };
    let log_file = match &o.log_file {
        Some(s) if s.is_empty() => None,
        Some(s) => Some(PathBuf::from(s)),
        None => Some(PathBuf::from("/var/log/certbridge/certbridge.log")),
    };
    Ok(Config {
        certs,
        directory,
        staging: o.staging.unwrap_or(false),
        self_sign,
        ca_file,
        account_email: o.account_email.clone(),
        terms_agreed: o.terms_agreed.unwrap_or(true),
        store,
        renew_days: o.renew_days,
        force: o.force.clone(),
        timeout: Duration::from_secs(timeout),
        request_timeout: Duration::from_secs(request_timeout),
        log_file,
        jitter_seed: o.jitter_seed.clone().unwrap_or_else(host_name),
        eab,
        proxy: o.proxy.clone().filter(|p| !p.trim().is_empty()),
        notes,
    })
}

/// Every directory and file the store makes for `spec` (with the temporary names made beside
/// them): the cert directory `<cert_root>/<dir>`, its service files (`<dir>.key`, `<dir>.cer`,
/// ...) and links, the same files in a generation directory, and under `.certbridge/` the
/// cert's metadata `<cert>.json` and its order's key. Checked against the file-name and path
/// limits before any lock, order or write: a name too long would otherwise fail only at
/// install, after the CA issued, leaving a partial generation behind.
fn check_made_names(store: &Store, spec: &CertSpec) -> Result<(), ConfigError> {
    let cert = spec.name.as_str();
    let made = |dir_name: &str| -> Vec<(PathBuf, String)> {
        let cert_dir = store.cert_dir(dir_name);
        // The longest generation directory name `next_generation` can produce.
        let gen_dir = cert_dir.join(format!("gen-{}", u64::MAX));
        // The service files first: `<dir>.key` is what a long first name breaks first.
        let mut out = Vec::new();
        for d in [&cert_dir, &gen_dir] {
            for (name, _) in crate::store::service_files(dir_name) {
                out.push((d.clone(), name));
            }
        }
        for name in ["current", "previous"] {
            out.push((cert_dir.clone(), name.to_owned()));
        }
        out.push((cert_dir.clone(), format!("gen-{}", u64::MAX)));
        out.push((store.root.clone(), dir_name.to_owned()));
        out
    };
    let check = |dir_name: &str| -> Result<(), NameError> {
        made(dir_name)
            .iter()
            .try_for_each(|(parent, name)| certbridge_core::names::check_made_file(parent, name))
    };
    if let Err(source) = check(&spec.dir) {
        // The longest first name that would fit, for the hint.
        let fits = (1..spec.dir.len())
            .rev()
            .find(|n| check(&"a".repeat(*n)).is_ok());
        let or_root = match source {
            NameError::PathTooLong { .. } => " (or shorten `cert_root`)",
            _ => "",
        };
        let hint = match fits {
            Some(n) => format!(
                "the first name (without `*.`) names the directory and its `<dir>.key` and \
                 `<dir>.cer` files: put a name of at most {n} octets first{or_root}"
            ),
            None => "shorten `cert_root`".into(),
        };
        return Err(ConfigError::MadeName {
            cert: cert.into(),
            source,
            hint,
        });
    }
    for path in [store.meta_path(cert), store.pending_key_path(cert)] {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        certbridge_core::names::check_made_file(parent, &name.to_string_lossy()).map_err(
            |source| ConfigError::MadeName {
                cert: cert.into(),
                source,
                hint: "shorten `cert_root` or the cert name".into(),
            },
        )?;
    }
    Ok(())
}

/// A profile name as CAs spell them (`tlsserver`, `shortlived`); empty means the default.
fn check_profile(option: &str, p: &str) -> Result<Option<String>, ConfigError> {
    let p = p.trim();
    if p.is_empty() {
        return Ok(None);
    }
    let ok = p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(invalid(
            option,
            format!("`{p}` is not a profile name (letters, digits, `-`, `_`, `.`)"),
        ));
    }
    Ok(Some(p.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        #[serde(default)]
        #[allow(dead_code)]
        only: Option<Vec<String>>,
    }

    fn check(v: Value) -> Result<Config, String> {
        let Value::Object(m) = v else { panic!() };
        let (common, _own): (CommonOptions, Own) =
            split_options(m, &["only"]).map_err(|e| e.to_string())?;
        validate(common, 60).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_lists_maps_ports_and_normalises() {
        let c = check(json!({"certs": {
            "main": ["WWW.Example.test.", "example.test:443"],
            "rsa": {"names": ["*.s3.example.test", "s3.example.test"], "key_type": "rsa-2048"}},
            "jitter_seed": "h"}))
        .unwrap();
        let main = c.cert("main").unwrap();
        assert_eq!(
            main.name_strings(),
            vec!["www.example.test", "example.test"]
        );
        assert_eq!(main.dir, "www.example.test");
        assert_eq!(c.cert("rsa").unwrap().dir, "s3.example.test");
        assert_eq!(
            c.cert("rsa").unwrap().key_type,
            KeyChoice::Set(KeyType::Rsa2048)
        );
        // Not set: the installed certificate's type, else the default.
        assert_eq!(main.key_type, KeyChoice::Keep);
        assert_eq!(
            main.key_type.resolve(Some(KeyType::Rsa3072)),
            KeyType::Rsa3072
        );
        assert_eq!(main.key_type.resolve(None), KeyType::EcP256);
        assert_eq!(c.directory, LE_PRODUCTION);
        assert_eq!(c.notes.len(), 1);
        assert_eq!(c.timeout, Duration::from_secs(60));
    }

    #[test]
    fn refuses_bad_input_naming_cert_and_name() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"certs": {}}), "empty"),
            (
                json!({"certs": {"a": ["a.example.test"]}, "colour": 1}),
                "unsupported option `colour`",
            ),
            (
                json!({"certs": {"a": ["A.example.test", "a.example.test"]}}),
                "certs.a: `a.example.test` appears more than once",
            ),
            (
                json!({"certs": {"a": ["*.*.x.test"]}}),
                "certs.a: `*.*.x.test`",
            ),
            (json!({"certs": {"a": ["a..b"]}}), "certs.a: `a..b`"),
            (json!({"certs": {"a": ["a_b.example.test"]}}), "`_`"),
            (json!({"certs": {"a": ["single"]}}), "single label"),
            (json!({"certs": {"../x": ["a.example.test"]}}), "`../x`"),
            (
                json!({"certs": {".certbridge": ["a.example.test"]}}),
                "`.certbridge`",
            ),
            (
                json!({"certs": {"a": ["x.example.test"], "b": ["*.x.example.test"]}}),
                "both map to the directory `x.example.test`",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "key_type": "dsa"}),
                "key_type: unknown key type `dsa`",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "force": ["b"]}),
                "force: `b`",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "cert_root": "rel"}),
                "cert_root",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "directory": "http://x"}),
                "directory",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "timeout": "soon"}),
                "timeout",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k"}),
                "eab_kid",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k", "eab_hmac_key": "not base64!"}),
                "eab_hmac_key",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "group": "no-such-group-x"}),
                "group",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "ca_file": "/nonexistent"}),
                "ca_file",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "account_email": "nobody"}),
                "account_email",
            ),
            (
                json!({"certs": {"a": ["a.example.test"]}, "profile": "no spaces"}),
                "profile: `no spaces`",
            ),
            (
                json!({"certs": {"a": {"names": ["a.example.test"], "profile": "x/y"}}}),
                "certs.a.profile",
            ),
        ];
        for (input, want) in cases {
            let err = check(input.clone()).expect_err(&input.to_string());
            assert!(err.contains(want), "{input}: {err}");
        }
        let many: Vec<String> = (0..101).map(|i| format!("n{i}.example.test")).collect();
        let err = check(json!({"certs": {"big": many}})).unwrap_err();
        assert!(err.contains("certs.big: 101 names"), "{err}");
        let err = check(json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k", "eab_hmac_key": "c2VjcmV0!!"})).unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    /// A valid name of `len` octets (labels of up to 63 octets).
    fn long_name(len: usize) -> String {
        let mut body = String::new();
        while body.len() + ".test".len() < len {
            if !body.is_empty() {
                body.push('.');
            }
            let room = len - ".test".len() - body.len();
            // Never leave exactly one octet: it would need a dot and an empty label.
            let take = if room > 63 && room - 63 == 1 {
                62
            } else {
                room.min(63)
            };
            body.push_str(&"a".repeat(take));
        }
        format!("{body}.test")
    }

    #[test]
    fn durations_are_bounded_naming_option_and_range() {
        let base = |k: &str, v: Value| {
            let mut o = json!({"certs": {"a": ["a.example.test"]}, "jitter_seed": "h"});
            o[k] = v;
            o
        };
        for (k, v, want) in [
            ("timeout", json!(18446744073709551615u64), "option `timeout`: expected a whole number of seconds from 1 to 86400 (1 day), found 18446744073709551615"),
            ("timeout", json!(0), "from 1 to 86400"),
            ("timeout", json!("86401"), "found 86401"),
            ("request_timeout", json!(1e20), "option `request_timeout`: expected a whole number of seconds from 1 to 3600 (1 hour)"),
            ("renew_days", json!(18446744073709551615u64), "option `renew_days`: expected a whole number of days from 0 to 3650"),
        ] {
            let err = check(base(k, v.clone())).unwrap_err();
            assert!(err.contains(want), "{k}={v}: {err}");
        }
        let c = check(base("timeout", json!("86400"))).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(86_400));
    }

    #[test]
    fn names_whose_files_cannot_be_made_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("certs");
        let with = |first: &str| {
            check(json!({"certs": {"big": [first, "www.example.test"]},
                "cert_root": root, "jitter_seed": "h"}))
        };
        // 253 and 251 octets are valid names, but `<dir>.key`'s temp names are too long.
        for len in [253, 251, 233] {
            let name = long_name(len);
            assert_eq!(name.len(), len);
            let err = with(&name).unwrap_err();
            assert!(
                err.starts_with("certs.big: the file name `")
                    && err.contains(&format!("`{name}.key` would be"))
                    && err.contains("over the 255-octet file-name limit")
                    && err.contains("at most 232 octets first"),
                "{len}: {err}"
            );
            // As a wildcard the base is what names the directory.
            let err = with(&format!("*.{name}")).unwrap_err();
            assert!(err.contains("certs.big"), "{err}");
        }
        with(&long_name(232)).unwrap();
        // Only the first name names a directory.
        check(json!({"certs": {"big": ["a.example.test", long_name(253)]},
            "cert_root": root, "jitter_seed": "h"}))
        .unwrap();
        assert!(!root.exists(), "validation made the cert root");
        // A cert root so deep that no cert directory fits in PATH_MAX.
        let deep = format!("/{}", vec!["d".repeat(200); 20].join("/"));
        let err = check(
            json!({"certs": {"a": ["a.example.test"]}, "cert_root": deep, "jitter_seed": "h"}),
        )
        .unwrap_err();
        assert!(
            err.contains("certs.a: the path") && err.contains("cert_root"),
            "{err}"
        );
    }

    #[test]
    fn ca_file_and_eab_are_checked_before_any_lock() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "just text\n").unwrap();
        let base = || json!({"certs": {"a": ["a.example.test"]}, "jitter_seed": "h"});
        let mut o = base();
        o["ca_file"] = json!(not_pem);
        let err = check(o).unwrap_err();
        assert!(
            err.starts_with("ca_file: ") && err.contains("no PEM certificate"),
            "{err}"
        );
        for (kid, key, want) in [
            (
                json!("kid-1"),
                json!(""),
                "eab_hmac_key: is missing or empty",
            ),
            (
                json!("kid-1"),
                json!("  "),
                "eab_hmac_key: is missing or empty",
            ),
            (
                json!("kid-1"),
                json!("===="),
                "eab_hmac_key: is not base64url, or decodes to nothing",
            ),
            (json!(""), json!("c2VjcmV0"), "eab_kid: is missing or empty"),
        ] {
            let mut o = base();
            o["eab_kid"] = kid;
            o["eab_hmac_key"] = key;
            let err = check(o).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        // Both empty: not given (what a role passes for unset variables).
        let mut o = base();
        o["eab_kid"] = json!("");
        o["eab_hmac_key"] = json!("");
        assert!(check(o).unwrap().eab.is_none());
    }

    #[test]
    fn unknown_keys_of_a_cert_map_are_named_with_the_cert() {
        for (entry, want) in [
            (
                json!({"names": ["a.example.test"], "kye_type": "rsa-2048"}),
                "option `certs.main`: unsupported key `kye_type` in the cert's map; valid keys: names, key_type, profile",
            ),
            (json!({"key_type": "rsa-2048"}), "option `certs.main`: the cert's map has no `names`"),
            (json!({"names": "a.example.test"}), "option `certs.main`: `names`:"),
            (json!({"names": ["a.example.test"], "key_type": 2048}), "option `certs.main`: `key_type`: expected a string"),
            (json!(["a.example.test", 7]), "option `certs.main`: name 2: expected a string"),
            (json!("a.example.test"), "option `certs.main`: expected a list of names"),
        ] {
            let err = check(json!({"certs": {"main": entry}})).unwrap_err();
            assert!(err.contains(want), "{entry}: {err}");
            assert!(!err.contains("untagged"), "{err}");
        }
        let c = check(json!({"certs": {"main": {"names": ["a.example.test"], "key_type": null, "profile": "x"}}, "jitter_seed": "h"})).unwrap();
        assert_eq!(c.cert("main").unwrap().profile.as_deref(), Some("x"));
    }

    #[test]
    fn profile_per_cert_overrides_the_default_and_proxy_is_kept() {
        let c = check(json!({"certs": {
            "a": ["a.example.test"],
            "b": {"names": ["b.example.test"], "profile": "shortlived"}},
            "profile": "tlsserver", "proxy": "http://127.0.0.1:3128"}))
        .unwrap();
        assert_eq!(c.cert("a").unwrap().profile.as_deref(), Some("tlsserver"));
        assert_eq!(c.cert("b").unwrap().profile.as_deref(), Some("shortlived"));
        assert_eq!(c.proxy.as_deref(), Some("http://127.0.0.1:3128"));
        let c = check(json!({"certs": {"a": ["a.example.test"]}, "profile": ""})).unwrap();
        assert_eq!(c.cert("a").unwrap().profile, None);
    }

    #[test]
    fn force_accepts_bool_string_and_list() {
        let c = check(json!({"certs": {"a": ["a.example.test"]}, "force": "yes"})).unwrap();
        assert!(c.forced("a"));
        let c = check(
            json!({"certs": {"a": ["a.example.test"], "b": ["b.example.test"]}, "force": ["b"]}),
        )
        .unwrap();
        assert!(!c.forced("a") && c.forced("b"));
    }
}
