//! The options `acme_request` and `acme_finalize` share, parsed strictly and validated in full
//! before any disk or network access: names, cert names, directories, key types, limits.

use crate::ca::ChallengeKind;
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

mod options;
mod parse;
#[cfg(test)]
mod tests;

pub use options::*;
pub use parse::*;

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
    /// `<cert_root>/<dir>`: the first name without `*.` (see `Identifier::dir_name`).
    pub dir: String,
    pub challenge: Challenge,
}

/// How a cert's names are validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Dns01,
    /// http-01: tokens go to `<webroot>/.well-known/acme-challenge/` (an absolute path).
    Http01 {
        webroot: String,
        /// No `webroot_hosts`: this host writes the tokens itself, so its webroot must exist.
        served_here: bool,
    },
}

impl Challenge {
    pub fn kind(&self) -> ChallengeKind {
        match self {
            Challenge::Dns01 => ChallengeKind::Dns01,
            Challenge::Http01 { .. } => ChallengeKind::Http01,
        }
    }
    pub fn webroot(&self) -> Option<&str> {
        match self {
            Challenge::Dns01 => None,
            Challenge::Http01 { webroot, .. } => Some(webroot),
        }
    }
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
