//! The options both modules share, as Ansible passes them (before validation).

use super::*;

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
pub const CERT_KEYS: &[&str] = &[
    "names",
    "key_type",
    "profile",
    "challenge",
    "webroot",
    "webroot_hosts",
];

/// By hand rather than `untagged`, whose only error is "did not match any variant of untagged
/// enum CertEntry": this one names the key at fault (serde's path names the cert).
impl<'de> Deserialize<'de> for CertEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let shape = "expected a list of names, or a map with `names` (and optionally `key_type`, `profile`, `challenge`, `webroot`, `webroot_hosts`)";
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
                    challenge: None,
                    webroot: None,
                    webroot_hosts: false,
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
                        "challenge" => detailed.challenge = text(v)?,
                        "webroot" => detailed.webroot = text(v)?,
                        // Where the controller writes the tokens: not this module's business.
                        "webroot_hosts" => {
                            detailed.webroot_hosts = !matches!(&v, Value::Null)
                                && v.as_str().is_none_or(|s| !s.trim().is_empty())
                        }
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
    pub challenge: Option<String>,
    pub webroot: Option<String>,
    /// Another host (a `webroot_hosts` pattern) writes this cert's http-01 tokens.
    pub webroot_hosts: bool,
}

/// `force`: true/false, or a list of cert names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Force {
    #[default]
    None,
    All,
    Certs(Vec<String>),
}

pub(super) fn force<'de, D: Deserializer<'de>>(d: D) -> Result<Force, D::Error> {
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
    /// `dns-01` (default) or `http-01`, for certs that do not set their own.
    #[serde(default)]
    pub challenge: Option<String>,
    /// The http-01 webroot of certs that do not set their own.
    #[serde(default)]
    pub webroot: Option<String>,
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
    "challenge",
    "webroot",
];

/// Option names that hold secrets (never echoed): the EAB key, and the proxy URL, which may
/// carry credentials.
pub const SECRET_KEYS: &[&str] = &["eab_hmac_key", "proxy"];
