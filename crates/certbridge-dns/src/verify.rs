//! The one propagation checker: poll a source of TXT answers for every name until each
//! expected value is there, or the deadline passes ([`verify_server`]). acme_txt_publish asks
//! every authoritative server of a zone directly ([`Direct`]: no recursion, UDP then TCP when
//! truncated). A caller with its own DNS client (acme_finalize's `dns_check`, which links
//! hickory's resolver for HTTP) plugs it in as a [`TxtSource`] instead of a second client.
//! Values are compared, never serials: an inline-signed zone serves another serial than its
//! file, and a secondary may already serve the values under a serial we never saw.

use crate::chase::to_name;
use crate::transport;
use certbridge_core::names::DomainName;
use futures_util::stream::{self, StreamExt};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// Queries in flight per server.
const CONCURRENCY: usize = 32;
/// Pause between polling rounds: short at first (a reload is served within ~0.1 s on
/// loopback), growing so a slow secondary is not hammered.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// What one server must answer: owner -> values.
pub type Expected = BTreeMap<DomainName, BTreeSet<String>>;

/// Where the checker's answers come from.
#[allow(async_fn_in_trait)] // static dispatch only
pub trait TxtSource {
    /// The TXT values served at `owner` now.
    async fn txt(&self, owner: &DomainName, deadline: Instant) -> Result<BTreeSet<String>, String>;
}

/// An authoritative server asked directly.
#[derive(Debug, Clone, Copy)]
pub struct Direct(pub SocketAddr);

impl TxtSource for Direct {
    async fn txt(&self, owner: &DomainName, deadline: Instant) -> Result<BTreeSet<String>, String> {
        txt_values(self.0, owner, deadline).await
    }
}

/// One server's verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerResult {
    pub ok: bool,
    /// Owner -> values still missing when the deadline passed (empty when ok).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, Vec<String>>,
    /// The last query error, if the server did not answer properly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds until every value was seen (or until giving up).
    pub seconds: f64,
    /// Polling rounds made.
    pub rounds: u32,
}

/// The TXT values `server` serves at `owner` (each RR's strings joined, as the CA reads them).
pub async fn txt_values(
    server: SocketAddr,
    owner: &DomainName,
    deadline: Instant,
) -> Result<BTreeSet<String>, String> {
    let name = to_name(owner);
    let msg = transport::query(server, &name, RecordType::TXT, false, deadline)
        .await
        .map_err(|e| e.to_string())?;
    match msg.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rc => {
            return Err(format!(
                "{server}: answered TXT {} with {}",
                owner.fqdn(),
                rc.to_string().to_uppercase()
            ))
        }
    }
    if !msg.metadata.authoritative {
        return Err(format!(
            "{server}: is not authoritative for {}",
            owner.fqdn()
        ));
    }
    Ok(msg
        .answers
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// Polls `source` until it serves every expected value or `deadline` passes.
pub async fn verify_server<S: TxtSource>(
    source: &S,
    expected: &Expected,
    deadline: Instant,
) -> ServerResult {
    let start = Instant::now();
    let mut missing: Expected = expected.clone();
    missing.retain(|_, v| !v.is_empty());
    let mut last_error;
    let mut rounds = 0u32;
    let mut pause = POLL_FIRST;
    loop {
        rounds += 1;
        let owners: Vec<DomainName> = missing.keys().cloned().collect();
        let answers: Vec<(DomainName, Result<BTreeSet<String>, String>)> = stream::iter(owners)
            .map(|owner| async move {
                let got = source.txt(&owner, deadline).await;
                (owner, got)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        last_error = None;
        for (owner, got) in answers {
            match got {
                Ok(values) => {
                    if let Some(want) = missing.get_mut(&owner) {
                        want.retain(|v| !values.contains(v));
                        if want.is_empty() {
                            missing.remove(&owner);
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        if missing.is_empty() {
            return ServerResult {
                ok: true,
                missing: BTreeMap::new(),
                error: None,
                seconds: start.elapsed().as_secs_f64(),
                rounds,
            };
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 2).min(POLL_MAX);
        if Instant::now() >= deadline {
            break;
        }
    }
    ServerResult {
        ok: false,
        missing: missing
            .into_iter()
            .map(|(o, v)| (o.as_str().to_owned(), v.into_iter().collect()))
            .collect(),
        error: last_error,
        seconds: start.elapsed().as_secs_f64(),
        rounds,
    }
}

/// Verifies every server at once; keyed by the server's address.
pub async fn verify_all(
    plan: BTreeMap<SocketAddr, Expected>,
    deadline: Instant,
) -> BTreeMap<String, ServerResult> {
    let checks = plan.into_iter().map(|(server, expected)| async move {
        let r = verify_server(&Direct(server), &expected, deadline).await;
        (server.to_string(), r)
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

/// One line per failed server: what it is missing and why, for the failure message.
pub fn describe_failures(results: &BTreeMap<String, ServerResult>) -> Vec<String> {
    results
        .iter()
        .filter(|(_, r)| !r.ok)
        .map(|(server, r)| {
            let count: usize = r.missing.values().map(Vec::len).sum();
            let mut owners: Vec<String> = r.missing.keys().take(5).cloned().collect();
            if r.missing.len() > 5 {
                owners.push(format!("and {} more owners", r.missing.len() - 5));
            }
            let why = r
                .error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            format!(
                "{server} does not serve {count} value(s) after {:.1}s at {}{why}",
                r.seconds,
                owners.join(", ")
            )
        })
        .collect()
}

/// What `server` answers for TXT at `owner`, for tests and tools outside an async context.
pub fn served_values(
    server: SocketAddr,
    owner: &str,
    timeout: Duration,
) -> Result<BTreeSet<String>, String> {
    let owner = DomainName::parse(owner).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async { txt_values(server, &owner, Instant::now() + timeout).await })
}
