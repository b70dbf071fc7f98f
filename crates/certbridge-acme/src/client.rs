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

/// The status of an order, as the CA reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

impl From<instant_acme::OrderStatus> for OrderStatus {
    fn from(s: instant_acme::OrderStatus) -> Self {
        match s {
            instant_acme::OrderStatus::Pending => OrderStatus::Pending,
            instant_acme::OrderStatus::Ready => OrderStatus::Ready,
            instant_acme::OrderStatus::Processing => OrderStatus::Processing,
            instant_acme::OrderStatus::Valid => OrderStatus::Valid,
            instant_acme::OrderStatus::Invalid => OrderStatus::Invalid,
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Ready => "ready",
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        })
    }
}

/// One dns-01 value to publish: the CA will look for TXT `value` at `record`
/// (`_acme-challenge.<identifier without *.>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChallenge {
    pub identifier: Identifier,
    pub record: DomainName,
    pub value: TxtDigest,
}

/// What the CA says about an order. Authorizations it already holds valid have no challenge.
#[derive(Clone, Debug, Serialize)]
pub struct OrderInfo {
    pub url: String,
    pub status: OrderStatus,
    /// Every identifier of the order (from its authorizations, sorted), wildcards as `*.name`.
    pub identifiers: Vec<Identifier>,
    /// The dns-01 values of the pending authorizations, sorted by record, then identifier.
    pub challenges: Vec<PendingChallenge>,
    pub profile: Option<String>,
    /// The order's error, if the CA recorded one.
    pub error: Option<ProblemDoc>,
}

/// The answer of [`AcmeAccount::new_order`].
pub type NewOrderInfo = OrderInfo;
/// The answer of [`AcmeAccount::order_state`].
pub type OrderSnapshot = OrderInfo;

/// A renewal window from the CA's renewal information (RFC 9773).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    pub start: SystemTime,
    pub end: SystemTime,
    /// When to ask again (the server's Retry-After).
    pub retry_after: SystemTime,
    pub explanation_url: Option<String>,
}

/// An ACME problem document (RFC 7807 / RFC 8555 section 6.7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub detail: Option<String>,
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<SubProblemDoc>,
}

/// A problem about one identifier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubProblemDoc {
    pub identifier: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub detail: Option<String>,
}

impl ProblemDoc {
    fn from_acme(p: &instant_acme::Problem) -> ProblemDoc {
        ProblemDoc {
            kind: p.r#type.clone(),
            detail: p.detail.clone(),
            status: p.status,
            subproblems: p
                .subproblems
                .iter()
                .map(|s| SubProblemDoc {
                    identifier: s
                        .identifier
                        .as_ref()
                        .map(|i| i.authorized(false).to_string()),
                    kind: s.r#type.clone(),
                    detail: s.detail.clone(),
                })
                .collect(),
        }
    }

    /// The type without the `urn:ietf:params:acme:error:` prefix (e.g. `rateLimited`).
    pub fn short_kind(&self) -> Option<&str> {
        self.kind
            .as_deref()
            .map(|k| k.strip_prefix(ERR_PREFIX).unwrap_or(k))
    }

    fn is(&self, short: &str) -> bool {
        self.short_kind() == Some(short)
    }

    /// HTTP 429 or type `rateLimited`.
    pub fn is_rate_limited(&self) -> bool {
        self.status == Some(429) || self.is("rateLimited")
    }

    /// What a CA answers for an order (or account) it no longer knows, e.g. after a restart.
    fn means_unknown(&self) -> bool {
        self.status == Some(404)
            || self.is("malformed")
            || self.is("unauthorized")
            || self.is("accountDoesNotExist")
    }
}

impl fmt::Display for ProblemDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail.as_deref().unwrap_or("(no detail)"))?;
        match (&self.kind, self.status) {
            (Some(k), Some(s)) => write!(f, " [{k}, HTTP {s}]")?,
            (Some(k), None) => write!(f, " [{k}]")?,
            (None, Some(s)) => write!(f, " [HTTP {s}]")?,
            (None, None) => {}
        }
        for (i, sub) in self.subproblems.iter().enumerate() {
            f.write_str(if i == 0 { "; " } else { ", " })?;
            write!(
                f,
                "{}: {} [{}]",
                sub.identifier.as_deref().unwrap_or("(no identifier)"),
                sub.detail.as_deref().unwrap_or("(no detail)"),
                sub.kind.as_deref().unwrap_or("no type")
            )?;
        }
        Ok(())
    }
}

/// Every way the ACME client fails. Messages name the culprit and never hold key material.
#[derive(Debug)]
pub enum AcmeError {
    /// The CA answered with a problem document.
    Problem {
        what: String,
        problem: ProblemDoc,
        retry_after: Option<SystemTime>,
    },
    /// HTTP 429 or `rateLimited`.
    RateLimited {
        what: String,
        problem: ProblemDoc,
        retry_after: Option<SystemTime>,
    },
    /// Name resolution or TCP connect failed.
    Unreachable { url: String, reason: String },
    /// An operation (or one HTTP request) did not finish in time.
    Timeout { what: String, after: Duration },
    /// The CA asks to come back later than this call's deadline.
    RetryAfterPastDeadline { what: String, retry_at: SystemTime },
    /// The TLS handshake with the server failed.
    Tls { url: String, reason: String },
    /// `ca_file` is unreadable or holds no certificate.
    BadCaFile { path: PathBuf, reason: String },
    /// No `ca_file` and no system CA bundle.
    NoSystemRoots { tried: Vec<String> },
    /// `directory` is not an https URL.
    BadDirectory { directory: String, reason: String },
    /// The `proxy` option (or `https_proxy`) is unusable.
    BadProxy { proxy: String, reason: String },
    /// The proxy was unreachable or refused the tunnel.
    Proxy {
        url: String,
        proxy: String,
        reason: String,
    },
    /// The account file is unreadable, corrupt, or cannot be written.
    AccountFile { path: PathBuf, reason: String },
    /// A bad `account_email`.
    BadEmail { email: String, reason: String },
    /// A bad external account binding (the key itself is never shown).
    BadEab { reason: String },
    /// A bad `replaces` value or a certificate ARI cannot identify.
    BadCertificateId { reason: String },
    /// The CA no longer knows the order (restarted, expired, other account).
    OrderGone { url: String },
    /// The order is invalid; `problem` holds the order's and each challenge's errors.
    OrderInvalid { url: String, problem: ProblemDoc },
    /// A pending authorization offers no dns-01 challenge.
    NoDns01 { identifier: String },
    /// The server lacks a feature (e.g. ARI for `replaces`).
    Unsupported { what: String },
    /// An answer that is not the JSON RFC 8555 describes (e.g. Pebble's order status
    /// `deactivated`).
    UnexpectedAnswer { what: String, reason: String },
    /// Anything else the server or the protocol layer got wrong.
    Protocol { what: String, reason: String },
}

fn fmt_time(t: SystemTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_else(|_| format!("{t:?}"))
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Problem {
                what,
                problem,
                retry_after,
            } => {
                write!(f, "{what}: the CA answered: {problem}")?;
                if let Some(t) = retry_after {
                    write!(f, " (retry after {})", fmt_time(*t))?;
                }
                Ok(())
            }
            AcmeError::RateLimited {
                what,
                problem,
                retry_after,
            } => {
                write!(f, "{what}: rate limited by the CA: {problem}")?;
                match retry_after {
                    Some(t) => write!(f, "; retry after {}", fmt_time(*t)),
                    None => f.write_str("; retry later"),
                }
            }
            AcmeError::Unreachable { url, reason } => write!(
                f,
                "cannot reach the ACME server at {url}: {reason} (check `directory`, the network \
                 or `proxy`)"
            ),
            AcmeError::Timeout { what, after } => write!(
                f,
                "{what}: no result within {:.1} s (raise `timeout`, or `request_timeout` for \
                 one request, if the CA is slow)",
                after.as_secs_f64()
            ),
            AcmeError::RetryAfterPastDeadline { what, retry_at } => write!(
                f,
                "{what}: the CA asks to retry at {}, after this call's deadline; run again \
                 later or raise `timeout`",
                fmt_time(*retry_at)
            ),
            AcmeError::Tls { url, reason } => write!(
                f,
                "TLS handshake with {url} failed: {reason} (is `ca_file` the CA of the ACME \
                 server's certificate?)"
            ),
            AcmeError::BadCaFile { path, reason } => {
                write!(f, "ca_file {}: {reason}", path.display())
            }
            AcmeError::NoSystemRoots { tried } => write!(
                f,
                "no system CA bundle found (tried {}): set `ca_file` to a PEM bundle of the \
                 CA certificates to trust",
                tried.join(", ")
            ),
            AcmeError::BadDirectory { directory, reason } => {
                write!(f, "directory {directory:?}: {reason}")
            }
            AcmeError::BadProxy { proxy, reason } => write!(f, "proxy {proxy:?}: {reason}"),
            AcmeError::Proxy { url, proxy, reason } => {
                write!(f, "proxy {proxy} failed for {url}: {reason}")
            }
            AcmeError::AccountFile { path, reason } => write!(
                f,
                "account file {}: {reason} (remove it to register a new account)",
                path.display()
            ),
            AcmeError::BadEmail { email, reason } => {
                write!(f, "account_email {email:?}: {reason}")
            }
            AcmeError::BadEab { reason } => write!(f, "external account binding: {reason}"),
            AcmeError::BadCertificateId { reason } => {
                write!(f, "certificate identifier (ARI): {reason}")
            }
            AcmeError::OrderGone { url } => write!(
                f,
                "the CA no longer knows order {url} (restarted, expired or another account); \
                 a new order is needed"
            ),
            AcmeError::OrderInvalid { url, problem } => {
                write!(f, "order {url} is invalid: {problem}")
            }
            AcmeError::NoDns01 { identifier } => write!(
                f,
                "the CA offers no dns-01 challenge for {identifier} (dns-01 is required)"
            ),
            AcmeError::Unsupported { what } => write!(f, "the ACME server does not support {what}"),
            AcmeError::UnexpectedAnswer { what, reason } => {
                write!(f, "{what}: unexpected answer from the CA: {reason}")
            }
            AcmeError::Protocol { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

impl std::error::Error for AcmeError {}

impl AcmeError {
    /// The server's Retry-After, if it sent one: when the caller may try again.
    pub fn retry_after(&self) -> Option<SystemTime> {
        match self {
            AcmeError::Problem { retry_after, .. } | AcmeError::RateLimited { retry_after, .. } => {
                *retry_after
            }
            AcmeError::RetryAfterPastDeadline { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    /// The CA's problem document, if the failure carries one.
    pub fn problem(&self) -> Option<&ProblemDoc> {
        match self {
            AcmeError::Problem { problem, .. }
            | AcmeError::RateLimited { problem, .. }
            | AcmeError::OrderInvalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Configuration errors (bad options or files) as opposed to CA/network failures.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AcmeError::BadCaFile { .. }
                | AcmeError::NoSystemRoots { .. }
                | AcmeError::BadDirectory { .. }
                | AcmeError::BadProxy { .. }
                | AcmeError::BadEmail { .. }
                | AcmeError::BadEab { .. }
                | AcmeError::AccountFile { .. }
        )
    }
}

/// Within one operation: instant-acme's error (maybe retried) or a final client error.
enum OpError {
    Acme(instant_acme::Error),
    Client(AcmeError),
}

impl From<instant_acme::Error> for OpError {
    fn from(e: instant_acme::Error) -> Self {
        OpError::Acme(e)
    }
}

impl From<AcmeError> for OpError {
    fn from(e: AcmeError) -> Self {
        OpError::Client(e)
    }
}

fn is_bad_nonce(p: &instant_acme::Problem) -> bool {
    p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce")
}

/// A rate limit (429 / `rateLimited`) or an outage (503) whose answer says when to come back.
fn is_retry_later(p: &instant_acme::Problem) -> bool {
    p.status == Some(429)
        || p.status == Some(503)
        || p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")
}

/// Runs `op` until it succeeds, fails for another reason than badNonce, or `deadline` passes.
/// instant-acme retries a rejected nonce twice per request; a flaky CA needs more. A rate
/// limit or an outage with a Retry-After inside the deadline is waited out and tried again;
/// one past the deadline fails at once, with the time.
async fn attempt<T>(
    stats: &HttpStats,
    what: &str,
    deadline: Instant,
    mut op: impl AsyncFnMut() -> Result<T, OpError>,
) -> Result<T, AcmeError> {
    let started = Instant::now();
    loop {
        // A Retry-After left over from an earlier answer must not be blamed on this one.
        let _ = stats.take_error_retry_after();
        let outcome = tokio::time::timeout_at(deadline.into(), op()).await;
        match outcome {
            Err(_) => {
                return Err(AcmeError::Timeout {
                    what: what.into(),
                    after: deadline.saturating_duration_since(started),
                })
            }
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(OpError::Client(e))) => return Err(e),
            Ok(Err(OpError::Acme(instant_acme::Error::Api(p))))
                if is_bad_nonce(&p) && Instant::now() < deadline =>
            {
                continue
            }
            Ok(Err(OpError::Acme(instant_acme::Error::Api(p)))) if is_retry_later(&p) => {
                let retry_after = stats.take_error_retry_after();
                if let Some(at) = retry_after {
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    if Instant::now() + wait < deadline {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                return Err(api_error(what, p, retry_after));
            }
            Ok(Err(OpError::Acme(e))) => {
                return Err(map_error(
                    what,
                    e,
                    stats,
                    deadline.saturating_duration_since(started),
                ))
            }
        }
    }
}

/// The CA's problem document as an error, with the Retry-After its answer carried.
fn api_error(what: &str, p: instant_acme::Problem, retry_after: Option<SystemTime>) -> AcmeError {
    let problem = ProblemDoc::from_acme(&p);
    if problem.is_rate_limited() {
        AcmeError::RateLimited {
            what: what.into(),
            problem,
            retry_after,
        }
    } else {
        AcmeError::Problem {
            what: what.into(),
            problem,
            retry_after,
        }
    }
}

fn map_error(what: &str, e: instant_acme::Error, stats: &HttpStats, budget: Duration) -> AcmeError {
    match e {
        instant_acme::Error::Api(p) => api_error(what, p, stats.take_error_retry_after()),
        instant_acme::Error::Timeout(Some(at)) => AcmeError::RetryAfterPastDeadline {
            what: what.into(),
            retry_at: SystemTime::now() + at.saturating_duration_since(Instant::now()),
        },
        instant_acme::Error::Timeout(None) => AcmeError::Timeout {
            what: what.into(),
            after: budget,
        },
        instant_acme::Error::Unsupported(feature) => AcmeError::Unsupported {
            what: feature.into(),
        },
        instant_acme::Error::Json(e) => AcmeError::UnexpectedAnswer {
            what: what.into(),
            reason: e.to_string(),
        },
        instant_acme::Error::Other(boxed) => match boxed.downcast::<HttpFailure>() {
            Ok(failure) => from_http_failure(what, *failure),
            Err(other) => AcmeError::Protocol {
                what: what.into(),
                reason: other.to_string(),
            },
        },
        other => AcmeError::Protocol {
            what: what.into(),
            reason: other.to_string(),
        },
    }
}

fn from_http_failure(what: &str, f: HttpFailure) -> AcmeError {
    match f {
        HttpFailure::Timeout { url, after } => AcmeError::Timeout {
            what: format!("{what} (request to {url})"),
            after,
        },
        HttpFailure::Unreachable { url, reason } => AcmeError::Unreachable { url, reason },
        HttpFailure::Tls { url, reason } => AcmeError::Tls { url, reason },
        HttpFailure::Proxy { url, proxy, reason } => AcmeError::Proxy { url, proxy, reason },
        HttpFailure::Other { url, reason } => AcmeError::Protocol {
            what: format!("{what} (request to {url})"),
            reason,
        },
    }
}

/// What the account file holds (mode 0600: the credentials include the account key).
#[derive(Serialize, Deserialize)]
struct AccountFileData {
    directory: String,
    account_url: String,
    email: Option<String>,
    credentials: AccountCredentials,
}

/// The stored account's public facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAccountInfo {
    pub account_url: String,
    pub email: Option<String>,
}

/// Accounts under `<cert_root>/.certbridge/accounts/<sha256 hex of the directory URL>.json`.
#[derive(Clone, Debug)]
pub struct AccountStore {
    dir: PathBuf,
}

/// `mailto:` contact for an email, checked for shape.
fn contact_for(email: &str) -> Result<String, AcmeError> {
    let bad = |reason: &str| AcmeError::BadEmail {
        email: email.into(),
        reason: reason.into(),
    };
    let addr = email.strip_prefix("mailto:").unwrap_or(email);
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Err(bad("not an email address (no @)"));
    };
    if local.is_empty() || domain.is_empty() || !domain.contains('.') {
        return Err(bad("not an email address"));
    }
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(bad("contains whitespace or a comma"));
    }
    Ok(format!("mailto:{addr}"))
}

impl AccountStore {
    /// The store of a cert root. No disk access.
    pub fn new(cert_root: &Path) -> AccountStore {
        AccountStore {
            dir: cert_root.join(".certbridge").join("accounts"),
        }
    }

    /// The account file of a directory URL (hash of its exact spelling).
    pub fn path_for(&self, directory: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    fn read(&self, directory: &str) -> Result<Option<AccountFileData>, AcmeError> {
        let path = self.path_for(directory);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(AcmeError::AccountFile {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let data: AccountFileData =
            serde_json::from_str(&text).map_err(|e| AcmeError::AccountFile {
                path: path.clone(),
                // Only the position: serde_json's message can quote content, i.e. the key.
                reason: format!(
                    "not a certbridge account file (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        if data.directory != directory {
            return Err(AcmeError::AccountFile {
                path,
                reason: format!("belongs to directory {:?}", data.directory),
            });
        }
        Ok(Some(data))
    }

    fn write(&self, data: &AccountFileData) -> Result<(), AcmeError> {
        let path = self.path_for(&data.directory);
        let fail = |e: io::Error| AcmeError::AccountFile {
            path: path.clone(),
            reason: e.to_string(),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(fail)?;
        let json = serde_json::to_vec_pretty(data).map_err(|e| AcmeError::AccountFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let attrs = FileAttrs {
            mode: Some(0o600),
            ..FileAttrs::default()
        };
        atomic_write(&path, &json, &attrs, None).map_err(fail)
    }

    /// The stored account's URL and email, without any network access.
    pub fn stored(&self, directory: &str) -> Result<Option<StoredAccountInfo>, AcmeError> {
        Ok(self.read(directory)?.map(|d| StoredAccountInfo {
            account_url: d.account_url,
            email: d.email,
        }))
    }

    /// Opens the stored account for `cfg.directory` (checking the CA still knows it) or
    /// registers a new one and stores it. A changed `email` updates the contact at the CA and
    /// in the file; `None` leaves a stored contact alone. `eab` is (key id, raw HMAC key).
    pub async fn open_or_create(
        &self,
        cfg: &ClientConfig,
        email: Option<&str>,
        terms_agreed: bool,
        eab: Option<(&str, &[u8])>,
    ) -> Result<AcmeAccount, AcmeError> {
        cfg.validate()?;
        let contact = email.map(contact_for).transpose()?;
        if let Some((kid, key)) = eab {
            if kid.trim().is_empty() {
                return Err(AcmeError::BadEab {
                    reason: "eab_kid is empty".into(),
                });
            }
            if key.is_empty() {
                return Err(AcmeError::BadEab {
                    reason: "eab_hmac_key is empty".into(),
                });
            }
        }
        let stored = self.read(&cfg.directory)?;
        let http = cfg.http_client()?;
        let stats = http.stats();

        if let Some(data) = stored {
            if let Some(mut account) = existing(cfg, &http, &data).await? {
                let wanted = email.map(|e| e.strip_prefix("mailto:").unwrap_or(e).to_owned());
                if wanted.is_some() && wanted != data.email {
                    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                    attempt(
                        &stats,
                        "update the account contact",
                        cfg.deadline,
                        async || Ok(account.account.update_contacts(&contacts).await?),
                    )
                    .await?;
                    self.write(&AccountFileData {
                        email: wanted,
                        ..data
                    })?;
                }
                account.stats = stats;
                return Ok(account);
            }
        }

        // No file, or the CA forgot the account (e.g. a restarted test CA): register.
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: terms_agreed,
            only_return_existing: false,
        };
        let eab_key = eab.map(|(kid, key)| ExternalAccountKey::new(kid.to_owned(), key));
        let (account, credentials) = attempt(
            &stats,
            "register an ACME account",
            cfg.deadline,
            async || {
                let builder = Account::builder_with_http(Box::new(http.clone()));
                Ok(builder
                    .create(&new_account, cfg.directory.clone(), eab_key.as_ref())
                    .await?)
            },
        )
        .await?;
        let data = AccountFileData {
            directory: cfg.directory.clone(),
            account_url: account.id().to_owned(),
            email: email.map(|e| e.strip_prefix("mailto:").unwrap_or(e).to_owned()),
            credentials,
        };
        self.write(&data)?;
        Ok(AcmeAccount::wrap(account, cfg, stats))
    }

    /// Opens the stored account without registering or writing anything: `Ok(None)` when there
    /// is no account file or the CA no longer knows the account.
    pub async fn load_only(&self, cfg: &ClientConfig) -> Result<Option<AcmeAccount>, AcmeError> {
        cfg.validate()?;
        let Some(data) = self.read(&cfg.directory)? else {
            return Ok(None);
        };
        let http = cfg.http_client()?;
        existing(cfg, &http, &data).await
    }
}

/// Looks the stored account up at the CA (newAccount with onlyReturnExisting): `None` if the
/// CA does not know its key.
async fn existing(
    cfg: &ClientConfig,
    http: &AcmeHttpClient,
    data: &AccountFileData,
) -> Result<Option<AcmeAccount>, AcmeError> {
    let stats = http.stats();
    let pkcs8 = data.credentials.private_key().secret_pkcs8_der().to_vec();
    let found = attempt(
        &stats,
        "look up the ACME account",
        cfg.deadline,
        async || {
            let key = Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(pkcs8.clone()))?;
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone()));
            let builder = Account::builder_with_http(Box::new(http.clone()));
            Ok(builder.from_key((key, der), cfg.directory.clone()).await?)
        },
    )
    .await;
    match found {
        Ok((account, _)) => Ok(Some(AcmeAccount::wrap(account, cfg, stats))),
        Err(AcmeError::Problem { problem, .. }) if problem.is("accountDoesNotExist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// An account at one CA. Cheap to clone; clones share the connection pool and counters.
#[derive(Clone)]
pub struct AcmeAccount {
    account: Account,
    directory: String,
    deadline: Instant,
    stats: Arc<HttpStats>,
}

impl fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeAccount")
            .field("url", &self.account.id())
            .field("directory", &self.directory)
            .finish()
    }
}

/// Decodes the `eab_hmac_key` option (base64url, padding optional, as CAs hand it out). The
/// error never shows the key.
pub fn decode_eab_key(encoded: &str) -> Result<Vec<u8>, AcmeError> {
    use base64::Engine;
    let trimmed = encoded.trim().trim_end_matches('=');
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| AcmeError::BadEab {
            reason: "eab_hmac_key is not base64url".into(),
        })?;
    if key.is_empty() {
        return Err(AcmeError::BadEab {
            reason: "eab_hmac_key is empty".into(),
        });
    }
    Ok(key)
}

/// `aki.serial` (base64url) -> the identifier instant-acme sends as `replaces`.
fn parse_cert_id(s: &str) -> Result<CertificateIdentifier<'_>, AcmeError> {
    let b64 = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match s.split_once('.') {
        Some((aki, serial)) if b64(aki) && b64(serial) => Ok(CertificateIdentifier {
            authority_key_identifier: Cow::Borrowed(aki),
            serial: Cow::Borrowed(serial),
        }),
        _ => Err(AcmeError::BadCertificateId {
            reason: format!("{s:?} is not base64url(AKI).base64url(serial)"),
        }),
    }
}

/// The ARI identifier (`base64url(AKI).base64url(serial)`) of a DER certificate, as
/// `new_order`'s `replaces` wants it.
pub fn ari_cert_id(cert_der: &[u8]) -> Result<String, AcmeError> {
    let der = CertificateDer::from(cert_der);
    CertificateIdentifier::try_from(&der)
        .map(|id| id.to_string())
        .map_err(|reason| AcmeError::BadCertificateId { reason })
}

/// Reads the order's authorizations: every identifier, and the dns-01 value of each pending one.
async fn read_authorizations(
    order: &mut Order,
) -> Result<(Vec<Identifier>, Vec<PendingChallenge>), OpError> {
    let mut identifiers = Vec::new();
    let mut challenges = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz?;
        let shown = authz.identifier().to_string();
        let identifier = Identifier::parse(&shown)
            .map_err(|e| AcmeError::Protocol {
                what: "read the order's authorizations".into(),
                reason: format!("the CA returned identifier {shown:?}: {e}"),
            })?
            .0;
        if authz.status == AuthorizationStatus::Pending {
            let challenge =
                authz
                    .challenge(ChallengeType::Dns01)
                    .ok_or_else(|| AcmeError::NoDns01 {
                        identifier: shown.clone(),
                    })?;
            let value = challenge.key_authorization().dns_value();
            let value = TxtDigest::parse(&value).map_err(|e| AcmeError::Protocol {
                what: "compute the dns-01 value".into(),
                reason: e.to_string(),
            })?;
            challenges.push(PendingChallenge {
                record: identifier.challenge_record(),
                identifier: identifier.clone(),
                value,
            });
        }
        identifiers.push(identifier);
    }
    // CAs list authorizations in any order (Pebble: a different one per fetch): sort, so the
    // same order always reads the same.
    identifiers.sort();
    challenges.sort_by(|a, b| (&a.record, &a.identifier).cmp(&(&b.record, &b.identifier)));
    Ok((identifiers, challenges))
}

impl AcmeAccount {
    fn wrap(account: Account, cfg: &ClientConfig, stats: Arc<HttpStats>) -> AcmeAccount {
        AcmeAccount {
            account,
            directory: cfg.directory.clone(),
            deadline: cfg.deadline,
            stats,
        }
    }

    /// The account URL (the `kid` of every request).
    pub fn url(&self) -> &str {
        self.account.id()
    }

    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// The deadline operations stop at (from [`ClientConfig::deadline`]).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline of later operations (e.g. a per-cert budget).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Requests retried so far because the CA rejected their nonce (all clones together).
    pub fn retries(&self) -> u64 {
        self.stats.bad_nonces()
    }

    /// HTTP requests made so far (all clones together).
    pub fn requests(&self) -> u64 {
        self.stats.requests()
    }

    /// Profiles the CA offers (directory `meta.profiles`): (name, description).
    pub fn profiles(&self) -> Vec<(String, String)> {
        self.account
            .profiles()
            .map(|p| (p.name.to_owned(), p.description.to_owned()))
            .collect()
    }

    /// Creates an order and returns the dns-01 values still to publish. `replaces` is the ARI
    /// id of the certificate being renewed (see [`ari_cert_id`]); a CA without ARI gives
    /// `Unsupported`.
    pub async fn new_order(
        &self,
        identifiers: &[Identifier],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<OrderInfo, AcmeError> {
        let ids: Vec<instant_acme::Identifier> = identifiers
            .iter()
            .map(|i| instant_acme::Identifier::Dns(i.as_str().to_owned()))
            .collect();
        let mut request = NewOrder::new(&ids);
        if let Some(r) = replaces {
            request = request.replaces(parse_cert_id(r)?);
        }
        if let Some(p) = profile {
            request = request.profile(p);
        }
        let mut order = attempt(&self.stats, "create an order", self.deadline, async || {
            Ok(self.account.new_order(&request).await?)
        })
        .await?;
        let what = format!("read the authorizations of order {}", order.url());
        let (identifiers, challenges) = attempt(&self.stats, &what, self.deadline, async || {
            read_authorizations(&mut order).await
        })
        .await?;
        let state = order.state();
        Ok(OrderInfo {
            status: state.status.into(),
            profile: state.profile.clone(),
            error: state.error.as_ref().map(ProblemDoc::from_acme),
            url: order.url().to_owned(),
            identifiers,
            challenges,
        })
    }

    /// Fetches an order by URL (POST-as-GET).
    async fn fetch_order(&self, url: &str, deadline: Instant) -> Result<Option<Order>, AcmeError> {
        let what = format!("fetch order {url}");
        let fetched = attempt(&self.stats, &what, deadline, async || {
            Ok(self.account.order(url.to_owned()).await?)
        })
        .await;
        match fetched {
            Ok(order) => Ok(Some(order)),
            Err(AcmeError::Problem { problem, .. }) if problem.means_unknown() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The order's current state and pending values; `None` when the CA no longer knows it (404,
    /// or malformed / unauthorized after a CA restart) or reports a state outside RFC 8555
    /// (Pebble's `deactivated`): either way it cannot be used any more.
    pub async fn order_state(&self, url: &str) -> Result<Option<OrderInfo>, AcmeError> {
        let mut order = match self.fetch_order(url, self.deadline).await {
            Ok(Some(order)) => order,
            Ok(None) | Err(AcmeError::UnexpectedAnswer { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = format!("read the authorizations of order {url}");
        let read = attempt(&self.stats, &what, self.deadline, async || {
            read_authorizations(&mut order).await
        })
        .await;
        let (identifiers, challenges) = match read {
            Ok(r) => r,
            Err(AcmeError::Problem { problem, .. }) if problem.means_unknown() => return Ok(None),
            Err(e) => return Err(e),
        };
        let state = order.state();
        Ok(Some(OrderInfo {
            url: url.to_owned(),
            status: state.status.into(),
            profile: state.profile.clone(),
            error: state.error.as_ref().map(ProblemDoc::from_acme),
            identifiers,
            challenges,
        }))
    }

    /// Deactivates the order's pending authorizations (before abandoning it for a new one), so
    /// they do not count against the CA's pending-authorization limit. Returns how many.
    pub async fn deactivate_pending_authorizations(&self, url: &str) -> Result<usize, AcmeError> {
        let Some(mut order) = self.fetch_order(url, self.deadline).await? else {
            return Ok(0);
        };
        let mut done: HashSet<String> = HashSet::new();
        let what = format!("deactivate the authorizations of order {url}");
        attempt(&self.stats, &what, self.deadline, async || {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                if authz.status == AuthorizationStatus::Pending && !done.contains(authz.url()) {
                    let authz_url = authz.url().to_owned();
                    authz.deactivate().await?;
                    done.insert(authz_url);
                }
            }
            Ok(())
        })
        .await?;
        Ok(done.len())
    }

    /// Completes an order created by [`AcmeAccount::new_order`] (possibly in another process):
    /// resumes it by URL, tells the CA the pending dns-01 values are published, waits for
    /// validation honouring Retry-After, finalizes with `csr_der` (persist its key first), waits
    /// for issuance and returns the PEM chain, leaf first. Stops at `deadline` (or the config's,
    /// whichever is earlier).
    pub async fn finalize(
        &self,
        order_url: &str,
        csr_der: &[u8],
        deadline: Instant,
    ) -> Result<String, AcmeError> {
        let deadline = deadline.min(self.deadline);
        let Some(mut order) = self.fetch_order(order_url, deadline).await? else {
            return Err(AcmeError::OrderGone {
                url: order_url.to_owned(),
            });
        };
        let mut readied: HashSet<String> = HashSet::new();
        // Pending -> Ready -> Processing -> Valid; each arm moves the order on or returns.
        for _ in 0..8 {
            match OrderStatus::from(order.state().status) {
                OrderStatus::Pending => {
                    let what = format!("mark the challenges of order {order_url} ready");
                    attempt(&self.stats, &what, deadline, async || {
                        set_challenges_ready(&mut order, &mut readied).await
                    })
                    .await?;
                    let what = format!("wait for the CA to validate order {order_url}");
                    let polled = attempt(&self.stats, &what, deadline, async || {
                        Ok(order.poll_ready(&poll_policy(deadline)).await?)
                    })
                    .await;
                    match polled {
                        Ok(_) => {}
                        // The order carries an error: report it with each challenge's error.
                        Err(AcmeError::Problem { .. }) => {
                            return Err(self.invalid_order(&mut order, deadline).await)
                        }
                        Err(e) => return Err(e),
                    }
                }
                OrderStatus::Ready => {
                    let what = format!("finalize order {order_url}");
                    attempt(&self.stats, &what, deadline, async || {
                        Ok(order.finalize_csr(csr_der).await?)
                    })
                    .await?;
                }
                // A CA that issues at once answers the finalize with a valid order: download
                // without the poll's first wait.
                OrderStatus::Valid => {
                    let what = format!("download the certificate of order {order_url}");
                    return attempt(&self.stats, &what, deadline, async || {
                        order
                            .certificate()
                            .await?
                            .ok_or(OpError::from(AcmeError::Protocol {
                                what: what.clone(),
                                reason: "the valid order has no certificate URL".into(),
                            }))
                    })
                    .await;
                }
                OrderStatus::Processing => {
                    let what = format!("download the certificate of order {order_url}");
                    return attempt(&self.stats, &what, deadline, async || {
                        Ok(order.poll_certificate(&poll_policy(deadline)).await?)
                    })
                    .await;
                }
                OrderStatus::Invalid => return Err(self.invalid_order(&mut order, deadline).await),
            }
        }
        Err(AcmeError::Protocol {
            what: format!("finalize order {order_url}"),
            reason: format!(
                "the order stays {}",
                OrderStatus::from(order.state().status)
            ),
        })
    }

    /// The error of an invalid order: the order's problem plus each failed challenge's error.
    async fn invalid_order(&self, order: &mut Order, deadline: Instant) -> AcmeError {
        let url = order.url().to_owned();
        let mut problem = order
            .state()
            .error
            .as_ref()
            .map(ProblemDoc::from_acme)
            .unwrap_or_default();
        let what = format!("read why order {url} failed");
        let subs = attempt(&self.stats, &what, deadline, async || {
            let mut subs = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                authz.refresh().await?;
                let identifier = authz.identifier().to_string();
                for challenge in &authz.challenges {
                    if let Some(err) = &challenge.error {
                        subs.push(SubProblemDoc {
                            identifier: Some(identifier.clone()),
                            kind: err.r#type.clone(),
                            detail: err.detail.clone(),
                        });
                    }
                }
            }
            Ok(subs)
        })
        .await
        .unwrap_or_default();
        for sub in subs {
            if !problem.subproblems.contains(&sub) {
                problem.subproblems.push(sub);
            }
        }
        if problem.detail.is_none() && problem.subproblems.is_empty() {
            problem.detail = Some("the CA gave no reason".into());
        }
        AcmeError::OrderInvalid { url, problem }
    }

    /// The CA's suggested renewal window for a certificate (RFC 9773); `Ok(None)` when the
    /// directory offers no renewalInfo.
    pub async fn renewal_info(&self, cert_der: &[u8]) -> Result<Option<RenewalWindow>, AcmeError> {
        let der = CertificateDer::from(cert_der);
        let id = CertificateIdentifier::try_from(&der)
            .map_err(|reason| AcmeError::BadCertificateId { reason })?;
        let what = format!("fetch the renewal information of {id}");
        let fetched = attempt(&self.stats, &what, self.deadline, async || {
            Ok(self.account.renewal_info(&id).await?)
        })
        .await;
        match fetched {
            Ok((info, delay)) => Ok(Some(RenewalWindow {
                start: info.suggested_window.start.into(),
                end: info.suggested_window.end.into(),
                retry_after: SystemTime::now() + delay,
                explanation_url: info.explanation_url,
            })),
            Err(AcmeError::Unsupported { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Polling: start at 20 ms (a CA that validates or issues within a few round trips is not
/// kept waiting), double each time (about 2.5 s after 7 polls, capped by the deadline).
/// A CA's Retry-After takes precedence; one past the deadline makes instant-acme fail at once,
/// with the time.
fn poll_policy(deadline: Instant) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(20))
        .backoff(2.0)
        .timeout(deadline.saturating_duration_since(Instant::now()))
}

/// POSTs `{}` to each pending authorization's dns-01 challenge once (`readied` survives retries).
async fn set_challenges_ready(
    order: &mut Order,
    readied: &mut HashSet<String>,
) -> Result<(), OpError> {
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let shown = authz.identifier().to_string();
        let mut challenge = authz
            .challenge(ChallengeType::Dns01)
            .ok_or(AcmeError::NoDns01 { identifier: shown })?;
        if readied.contains(&challenge.url) {
            continue;
        }
        let challenge_url = challenge.url.clone();
        challenge.set_ready().await?;
        readied.insert(challenge_url);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, status: u16) -> ProblemDoc {
        ProblemDoc {
            kind: Some(format!("{ERR_PREFIX}{kind}")),
            detail: Some("some detail".into()),
            status: Some(status),
            subproblems: vec![],
        }
    }

    #[test]
    fn problems_render_type_detail_status_and_each_subproblem() {
        let mut p = problem("rejectedIdentifier", 400);
        p.subproblems = vec![
            SubProblemDoc {
                identifier: Some("bad.example.test".into()),
                kind: Some(format!("{ERR_PREFIX}rejectedIdentifier")),
                detail: Some("policy forbids".into()),
            },
            SubProblemDoc {
                identifier: Some("*.w.example.test".into()),
                kind: Some(format!("{ERR_PREFIX}caa")),
                detail: Some("CAA forbids".into()),
            },
        ];
        let text = AcmeError::Problem {
            what: "create an order".into(),
            problem: p,
            retry_after: None,
        }
        .to_string();
        for needle in [
            "create an order",
            "some detail",
            "urn:ietf:params:acme:error:rejectedIdentifier",
            "HTTP 400",
            "bad.example.test: policy forbids",
            "*.w.example.test: CAA forbids [urn:ietf:params:acme:error:caa]",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in {text}");
        }
    }

    #[test]
    fn rate_limits_are_recognised_and_carry_retry_after() {
        assert!(problem("rateLimited", 429).is_rate_limited());
        assert!(ProblemDoc {
            status: Some(429),
            ..ProblemDoc::default()
        }
        .is_rate_limited());
        assert!(!problem("malformed", 400).is_rate_limited());
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let e = AcmeError::RateLimited {
            what: "create an order".into(),
            problem: problem("rateLimited", 429),
            retry_after: Some(at),
        };
        assert_eq!(e.retry_after(), Some(at));
        assert!(e.to_string().contains("2027-01-15T08:00:00Z"), "{e}");
    }

    #[test]
    fn unknown_orders_are_recognised() {
        assert!(problem("malformed", 404).means_unknown());
        assert!(problem("unauthorized", 403).means_unknown());
        assert!(problem("accountDoesNotExist", 400).means_unknown());
        assert!(!problem("serverInternal", 500).means_unknown());
    }

    #[test]
    fn account_paths_hash_the_exact_directory_spelling() {
        let store = AccountStore::new(Path::new("/etc/letsencrypt-certs"));
        let a = store.path_for("https://127.0.0.1:14000/dir");
        let b = store.path_for("https://localhost:14000/dir");
        assert_ne!(a, b);
        assert!(a.starts_with("/etc/letsencrypt-certs/.certbridge/accounts"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64 + 5);
        assert!(name.ends_with(".json"));
    }

    #[test]
    fn config_is_checked_before_any_access() {
        let deadline = Instant::now();
        let bad = ClientConfig::new("http://ca.example/dir", deadline);
        assert!(matches!(
            bad.validate(),
            Err(AcmeError::BadDirectory { .. })
        ));
        let mut cfg = ClientConfig::new("https://ca.example/dir", deadline);
        assert!(cfg.validate().is_ok());
        cfg.proxy = Some("socks5://proxy:1080".into());
        assert!(matches!(cfg.validate(), Err(AcmeError::BadProxy { .. })));
        cfg.proxy = None;
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        match cfg.http_client() {
            Err(e @ AcmeError::BadCaFile { .. }) => {
                assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}")
            }
            other => panic!("expected BadCaFile, got {:?}", other.err()),
        }
    }

    #[test]
    fn emails_become_mailto_contacts() {
        assert_eq!(contact_for("a@b.example").unwrap(), "mailto:a@b.example");
        assert_eq!(
            contact_for("mailto:a@b.example").unwrap(),
            "mailto:a@b.example"
        );
        assert!(contact_for("nobody").is_err());
        assert!(contact_for("a b@c.example").is_err());
        assert!(contact_for("a@b.example,c@d.example").is_err());
    }

    #[test]
    fn deadlines_and_retry_after_map_to_their_variants() {
        let stats = HttpStats::default();
        let soon = Instant::now() + Duration::from_secs(3600);
        let e = map_error(
            "wait for validation",
            instant_acme::Error::Timeout(Some(soon)),
            &stats,
            Duration::from_secs(60),
        );
        let at = e.retry_after().expect("retry time");
        let ahead = at.duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600));
        assert!(matches!(e, AcmeError::RetryAfterPastDeadline { .. }), "{e}");
        assert!(e.to_string().contains("after this call's deadline"), "{e}");
        let e = map_error(
            "wait for validation",
            instant_acme::Error::Timeout(None),
            &stats,
            Duration::from_secs(60),
        );
        assert!(e.to_string().contains("within 60.0 s"), "{e}");
        let rate: instant_acme::Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
        )
        .unwrap();
        let e = map_error("create an order", rate.into(), &stats, Duration::ZERO);
        assert!(matches!(e, AcmeError::RateLimited { .. }), "{e}");
        assert!(e.to_string().contains("too many"), "{e}");
    }

    #[test]
    fn debug_output_hides_proxy_credentials() {
        let mut cfg = ClientConfig::new("https://ca.example/dir", Instant::now());
        cfg.proxy = Some("http://user:hunter2@proxy:3128".into());
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let e = cfg.validate();
        assert!(e.is_ok());
        cfg.proxy = Some("ftp://user:hunter2@proxy:3128".into());
        let e = cfg.validate().unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn eab_keys_decode_without_showing_them() {
        assert_eq!(decode_eab_key("AQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(decode_eab_key("_-8=").unwrap(), vec![0xff, 0xef]);
        let err = decode_eab_key("secret+key/with$junk").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(decode_eab_key("").is_err());
    }

    #[test]
    fn replaces_ids_are_checked() {
        let id = parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        assert!(parse_cert_id("no-dot").is_err());
        assert!(parse_cert_id("a.b.c").is_err());
        assert!(parse_cert_id("a+b.c").is_err());
    }

    #[test]
    fn ari_ids_come_from_aki_and_serial() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1, 2, 3, 4]);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.test".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, 0x02]));
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        assert_eq!(ari_cert_id(leaf.der()).unwrap(), "AQIDBA.AQI");
        let _ = ca_cert;
        assert!(ari_cert_id(b"junk").is_err());
    }
}
