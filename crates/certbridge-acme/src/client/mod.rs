//! The ACME client the modules use: accounts kept per directory URL under the cert root, orders
//! and their dns-01 values, resuming an order by URL in another process, finalizing, ARI and
//! profiles. Wraps instant-acme; adds operation-level badNonce retries up to a deadline,
//! Retry-After handling and one error enum with messages users can act on.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use certbridge_core::fsutil::{atomic_write, FileAttrs};
use certbridge_core::names::{DomainName, Identifier, TxtDigest};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Key, NewAccount, NewOrder, Order, RetryPolicy,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::http::{AcmeHttpClient, HttpFailure, HttpSettings, HttpStats, ProxyPolicy, RootsError};

mod account;
mod errors;
mod order;
#[cfg(test)]
mod tests;

pub use account::*;
pub use errors::*;
pub use order::*;

/// An order's status as the CA reports it.
pub use instant_acme::OrderStatus;

/// Default deadline of each HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const ERR_PREFIX: &str = "urn:ietf:params:acme:error:";

/// A single-threaded tokio runtime with I/O and timers, enough for every client operation
/// (the module binaries and the tests run their async work on it).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// How to reach one ACME server.
#[derive(Clone)]
pub struct ClientConfig {
    /// The directory URL, spelled exactly the same in every process: it keys the account file
    /// and the CA checks the account URL prefix against it.
    pub directory: String,
    /// PEM bundle trusted for the server's HTTPS (every certificate in it); `None`: the system
    /// bundle.
    pub ca_file: Option<PathBuf>,
    /// Deadline of each HTTP request (connect, TLS, request, answer).
    pub request_timeout: Duration,
    /// An `http://host:port` CONNECT proxy for every request; `None`: `https_proxy` /
    /// `HTTPS_PROXY` from the environment, minus `no_proxy` / `NO_PROXY`.
    pub proxy: Option<String>,
    /// Deadline of the whole call: every operation, with its retries, stops here.
    pub deadline: Instant,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy URL may carry credentials: show whether one is set, not what it is.
        f.debug_struct("ClientConfig")
            .field("directory", &self.directory)
            .field("ca_file", &self.ca_file)
            .field("request_timeout", &self.request_timeout)
            .field("proxy", &self.proxy.as_ref().map(|_| "(set)"))
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl ClientConfig {
    /// A config with the default request timeout, system roots and the environment's proxy.
    pub fn new(directory: impl Into<String>, deadline: Instant) -> ClientConfig {
        ClientConfig {
            directory: directory.into(),
            ca_file: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            proxy: None,
            deadline,
        }
    }

    /// Checks the settings without touching disk or network (`ca_file` is read later).
    pub fn validate(&self) -> Result<(), AcmeError> {
        self.proxy_policy()?;
        check_directory_url(&self.directory)
    }

    fn proxy_policy(&self) -> Result<ProxyPolicy, AcmeError> {
        ProxyPolicy::from_settings(self.proxy.as_deref(), &|k| std::env::var(k).ok()).map_err(|e| {
            AcmeError::BadProxy {
                proxy: e.proxy,
                reason: e.reason,
            }
        })
    }

    /// The HTTP client for this server (reads `ca_file` or the system bundle now).
    pub fn http_client(&self) -> Result<AcmeHttpClient, AcmeError> {
        self.validate()?;
        let settings = HttpSettings {
            ca_file: self.ca_file.clone(),
            request_timeout: self.request_timeout,
            proxy: self.proxy_policy()?,
        };
        AcmeHttpClient::new(&settings).map_err(|e| match e {
            RootsError::BadCaFile { path, reason } => AcmeError::BadCaFile { path, reason },
            RootsError::NoSystemRoots { tried } => AcmeError::NoSystemRoots { tried },
        })
    }
}

fn check_directory_url(url: &str) -> Result<(), AcmeError> {
    let bad = |reason: &str| AcmeError::BadDirectory {
        directory: url.into(),
        reason: reason.into(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must start with https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(())
}
