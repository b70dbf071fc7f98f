//! What the host modules need from an ACME CA, as a trait: the orchestration in
//! [`crate::request`] and [`crate::finalize`] is written against it, and
//! [`crate::acme`] implements it over [`crate::client`].

use crate::client::{AcmeError, ProblemDoc};
use crate::store::ChallengeRecord;
use certbridge_core::names::Identifier;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// An order's status as the CA reports it (instant-acme's, the one vocabulary of the crate).
pub use instant_acme::OrderStatus;

/// Which challenge a cert's authorizations are validated by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChallengeKind {
    #[default]
    #[serde(rename = "dns-01")]
    Dns01,
    #[serde(rename = "http-01")]
    Http01,
}

impl ChallengeKind {
    pub fn is_dns(&self) -> bool {
        *self == ChallengeKind::Dns01
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

/// One pending http-01 challenge: the CA will GET `/.well-known/acme-challenge/<token>` on
/// `name` and expect `key_authorization`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpToken {
    pub name: String,
    pub token: String,
    pub key_authorization: String,
}

/// A freshly created order: its URL and the dns-01 values and http-01 tokens still needed.
#[derive(Debug, Clone)]
pub struct CreatedOrder {
    pub url: String,
    pub challenges: Vec<ChallengeRecord>,
    pub http: Vec<HttpToken>,
}

/// What a CA's renewal information says about one certificate (the policy's type).
pub use crate::policy::RenewalWindow;

/// What the CA says about an existing order.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub status: OrderStatus,
    /// Lower-case names, wildcards as `*.name`.
    pub identifiers: Vec<String>,
    /// The dns-01 values still pending.
    pub challenges: Vec<ChallengeRecord>,
    /// The http-01 tokens still pending.
    pub http: Vec<HttpToken>,
}

/// Why the CA layer failed for one cert: the ACME client's error, kept whole (the CA's
/// problem document with its type, detail and subproblems, and its Retry-After) until the
/// module renders its message, or a failure on this side of the CA (a check, a deadline, a
/// local file).
#[derive(Debug, Clone)]
pub enum CaFailure {
    /// The ACME client's error (shared: one account failure fails every cert of the run).
    Acme(Arc<AcmeError>),
    /// Not an answer of the CA: what the user should know, as a sentence.
    Local(String),
}

impl CaFailure {
    pub fn local(message: impl Into<String>) -> CaFailure {
        CaFailure::Local(message.into())
    }

    /// The CA's problem document, when the failure carries one.
    pub fn problem(&self) -> Option<&ProblemDoc> {
        match self {
            CaFailure::Acme(e) => e.problem(),
            CaFailure::Local(_) => None,
        }
    }

    /// The CA's Retry-After (unix seconds), for the backoff.
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            CaFailure::Acme(e) => e.retry_after().map(crate::unix),
            CaFailure::Local(_) => None,
        }
    }

    /// Whether this newOrder failure is the CA refusing `replaces`, so that ordering without it
    /// may work.
    pub fn refuses_replaces(&self) -> bool {
        matches!(self, CaFailure::Acme(e) if replaces_refused(e))
    }

    /// Whether the CA is done with the order: it turned invalid or is gone (its challenges
    /// will never be validated again).
    pub fn order_finished(&self) -> bool {
        matches!(self, CaFailure::Acme(e) if matches!(**e, AcmeError::OrderInvalid { .. } | AcmeError::OrderGone { .. }))
    }

    /// The message users read (the CA's problem rendered in full).
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<AcmeError> for CaFailure {
    fn from(e: AcmeError) -> Self {
        CaFailure::Acme(Arc::new(e))
    }
}

impl std::fmt::Display for CaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaFailure::Acme(e) => e.fmt(f),
            CaFailure::Local(m) => f.write_str(m),
        }
    }
}

/// Whether a newOrder failure is the CA refusing `replaces` (so ordering without it may work):
/// `alreadyReplaced`, a malformed or conflicting `replaces`, a CA without ARI, or a CA that
/// did not reflect the field.
fn replaces_refused(e: &AcmeError) -> bool {
    match e {
        AcmeError::Unsupported { .. } | AcmeError::BadCertificateId { .. } => true,
        AcmeError::Problem { problem, .. } => {
            matches!(
                problem.short_kind(),
                Some("alreadyReplaced") | Some("malformed") | Some("conflict")
            ) || problem.status == Some(409)
                || problem
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.to_ascii_lowercase().contains("replace"))
        }
        AcmeError::Protocol { reason, .. } => reason.contains("replaces"),
        _ => false,
    }
}

/// One ACME account at one directory.
#[allow(async_fn_in_trait)]
pub trait CaAccount {
    fn account_url(&self) -> String;
    /// Operation-level retries so far (badNonce and other transient answers).
    fn retries(&self) -> u64;
    /// The profiles the CA offers (directory `meta.profiles`), by name.
    fn profiles(&self) -> Vec<String>;
    /// Creates an order, naming the certificate it `replaces` (an ARI id) when given.
    async fn new_order(
        &self,
        names: &[Identifier],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<CreatedOrder, CaFailure>;
    /// None: the CA no longer knows the order (restarted, expired, another account).
    async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure>;
    async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure>;
    /// Resumes the order, marks its pending `kind` challenges ready, lets the CA validate,
    /// finalizes with `csr_der`, returns the PEM chain.
    async fn finalize(
        &self,
        url: &str,
        csr_der: &[u8],
        deadline: Instant,
        kind: ChallengeKind,
    ) -> Result<String, CaFailure>;
}

/// Opens (or creates) the account for a configuration.
#[allow(async_fn_in_trait)]
pub trait CaConnector {
    type Account: CaAccount;
    async fn open(
        &self,
        cfg: &crate::config::Config,
        deadline: Instant,
    ) -> Result<Self::Account, CaFailure>;
    /// The renewal information of each certificate (by ARI id), without an account: one GET
    /// of the directory, then one GET per certificate. `Ok(None)`: the directory offers none.
    async fn renewal_info(
        &self,
        cfg: &crate::config::Config,
        deadline: Instant,
        cert_ids: &[String],
    ) -> Result<Option<Vec<Result<RenewalWindow, CaFailure>>>, CaFailure>;
}

/// The module's reply, or a failure naming each failed cert with its message, carrying the
/// partial results and `problems.<cert>` (the CA's problem documents).
pub(crate) fn reply_or_failure(
    mut reply: certbridge_core::protocol::Reply,
    failures: &[(String, CaFailure)],
) -> Result<certbridge_core::protocol::Reply, certbridge_core::protocol::Failure> {
    if failures.is_empty() {
        return Ok(reply);
    }
    let problems: serde_json::Map<String, Value> = failures
        .iter()
        .map(|(c, f)| {
            let problem = f.problem().and_then(|p| serde_json::to_value(p).ok());
            (c.clone(), problem.unwrap_or(Value::Null))
        })
        .collect();
    reply.set("problems", problems);
    let msg = failures
        .iter()
        .map(|(c, f)| format!("cert {c}: {f}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(certbridge_core::protocol::Failure::from_reply(msg, reply))
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ProblemDoc;

    fn problem(kind: &str, status: Option<u16>, detail: &str) -> AcmeError {
        AcmeError::Problem {
            what: "create an order".into(),
            problem: ProblemDoc {
                kind: Some(format!("urn:ietf:params:acme:error:{kind}")),
                detail: Some(detail.into()),
                status,
                subproblems: vec![],
            },
            retry_after: None,
        }
    }

    #[test]
    fn refusals_of_replaces_are_told_from_other_failures() {
        assert!(replaces_refused(&problem(
            "alreadyReplaced",
            Some(409),
            "x"
        )));
        assert!(replaces_refused(&problem("malformed", Some(400), "bad")));
        assert!(replaces_refused(&problem(
            "serverInternal",
            Some(500),
            "Replaces is wrong"
        )));
        assert!(replaces_refused(&AcmeError::Unsupported {
            what: "ARI".into()
        }));
        assert!(!replaces_refused(&problem(
            "rateLimited",
            Some(429),
            "too many"
        )));
        assert!(!replaces_refused(&problem(
            "rejectedIdentifier",
            Some(400),
            "policy"
        )));
        assert!(!replaces_refused(&AcmeError::Unreachable {
            url: "https://ca.example.test/dir".into(),
            reason: "refused".into()
        }));
    }
}
