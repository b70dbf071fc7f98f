//! The CA's problem documents, the client's one error enum, and the retry loop that maps
//! instant-acme's errors onto it.

use super::*;

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
    pub(crate) fn from_acme(p: &instant_acme::Problem) -> ProblemDoc {
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

    pub(super) fn is(&self, short: &str) -> bool {
        self.short_kind() == Some(short)
    }

    /// HTTP 429 or type `rateLimited`.
    pub fn is_rate_limited(&self) -> bool {
        self.status == Some(429) || self.is("rateLimited")
    }

    /// What a CA answers for an order (or account) it no longer knows, e.g. after a restart.
    pub(super) fn means_unknown(&self) -> bool {
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
    /// A pending authorization offers no challenge of the cert's kind.
    NoChallenge {
        identifier: String,
        kind: &'static str,
    },
    /// The server lacks a feature (e.g. ARI for `replaces`).
    Unsupported { what: String },
    /// An answer that is not the JSON RFC 8555 describes (e.g. Pebble's order status
    /// `deactivated`).
    UnexpectedAnswer { what: String, reason: String },
    /// Anything else the server or the protocol layer got wrong.
    Protocol { what: String, reason: String },
}

pub(super) fn fmt_time(t: SystemTime) -> String {
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
            AcmeError::NoChallenge { identifier, kind } => write!(
                f,
                "the CA offers no {kind} challenge for {identifier} (the cert's `challenge`)"
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
}

/// Within one operation: instant-acme's error (maybe retried) or a final client error.
pub(super) enum OpError {
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

pub(super) fn is_bad_nonce(p: &instant_acme::Problem) -> bool {
    p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce")
}

/// A rate limit (429 / `rateLimited`) or an outage (503) whose answer says when to come back.
pub(super) fn is_retry_later(p: &instant_acme::Problem) -> bool {
    p.status == Some(429)
        || p.status == Some(503)
        || p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")
}

/// Runs `op` until it succeeds, fails for another reason than badNonce, or `deadline` passes.
/// instant-acme retries a rejected nonce twice per request; a flaky CA needs more. A rate
/// limit or an outage with a Retry-After inside the deadline is waited out and tried again;
/// one past the deadline fails at once, with the time.
pub(super) async fn attempt<T>(
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
pub(super) fn api_error(
    what: &str,
    p: instant_acme::Problem,
    retry_after: Option<SystemTime>,
) -> AcmeError {
    problem_error(what, ProblemDoc::from_acme(&p), retry_after)
}

/// A problem document as an error: a rate limit, or another refusal.
pub(crate) fn problem_error(
    what: &str,
    problem: ProblemDoc,
    retry_after: Option<SystemTime>,
) -> AcmeError {
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

pub(crate) fn map_error(
    what: &str,
    e: instant_acme::Error,
    stats: &HttpStats,
    budget: Duration,
) -> AcmeError {
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

pub(crate) fn from_http_failure(what: &str, f: HttpFailure) -> AcmeError {
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
