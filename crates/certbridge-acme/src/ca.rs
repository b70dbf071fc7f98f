//! What the host modules need from an ACME CA, as a trait: the orchestration in
//! [`crate::request`] and [`crate::finalize`] is written against it, and
//! [`crate::acme`] implements it over [`crate::client`].

use crate::store::ChallengeRecord;
use certbridge_core::names::Identifier;
use serde_json::Value;
use std::time::Instant;

/// An order's status as the CA reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

/// A freshly created order: its URL and the dns-01 values still needed.
#[derive(Debug, Clone)]
pub struct CreatedOrder {
    pub url: String,
    pub challenges: Vec<ChallengeRecord>,
    /// The ARI id the order names in `replaces` (None: it names none).
    pub replaces: Option<String>,
    /// Why a `replaces` asked for was dropped (the CA rejected it, or offers no ARI).
    pub replaces_dropped: Option<String>,
}

/// What a CA's renewal information (RFC 9773) says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The suggested window, unix seconds.
    pub start: i64,
    pub end: i64,
    /// The CA's Retry-After (unix seconds), when it sent one.
    pub retry_after: Option<i64>,
    pub explanation_url: Option<String>,
}

/// What the CA says about an existing order.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub status: OrderStatus,
    /// Lower-case names, wildcards as `*.name`.
    pub identifiers: Vec<String>,
    /// The dns-01 values still pending.
    pub challenges: Vec<ChallengeRecord>,
}

/// A CA failure for one cert: an actionable message, the problem document (for the log and
/// the reply), and the CA's Retry-After (unix time) for the backoff.
#[derive(Debug, Clone)]
pub struct CaFailure {
    pub message: String,
    pub problem: Option<Value>,
    pub retry_after: Option<i64>,
}

impl std::fmt::Display for CaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
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
    /// Creates an order. `replaces` (an ARI id) is sent when the CA offers ARI; when the CA
    /// rejects it (`alreadyReplaced` and the like) the order is created once more without it.
    async fn new_order(
        &self,
        names: &[Identifier],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<CreatedOrder, CaFailure>;
    /// None: the CA no longer knows the order (restarted, expired, another account).
    async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure>;
    async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure>;
    /// Resumes the order, lets the CA validate, finalizes with `csr_der`, returns the PEM chain.
    async fn finalize(
        &self,
        url: &str,
        csr_der: &[u8],
        deadline: Instant,
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
pub fn reply_or_failure(
    mut reply: certbridge_core::protocol::Reply,
    failures: &[(String, CaFailure)],
) -> Result<certbridge_core::protocol::Reply, certbridge_core::protocol::Failure> {
    if failures.is_empty() {
        return Ok(reply);
    }
    let problems: serde_json::Map<String, Value> = failures
        .iter()
        .map(|(c, f)| (c.clone(), f.problem.clone().unwrap_or(Value::Null)))
        .collect();
    reply.set("problems", problems);
    let msg = failures
        .iter()
        .map(|(c, f)| format!("cert {c}: {}", f.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(certbridge_core::protocol::Failure::from_reply(msg, reply))
}
