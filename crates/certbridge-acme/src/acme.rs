//! The host modules' CA trait ([`crate::ca`]) over the ACME client ([`crate::client`]).

use crate::ca::{
    CaAccount, CaConnector, CaFailure, CreatedOrder, OrderStatus, OrderView, RenewalWindow,
};
use crate::client::{self, AccountStore, AcmeAccount, AcmeError, ClientConfig, OrderInfo};
use crate::config::Config;
use crate::store::ChallengeRecord;
use certbridge_core::names::Identifier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Opens accounts with the real client.
#[derive(Debug, Default)]
pub struct Connector;

/// The client settings for a configuration.
pub fn client_config(cfg: &Config, deadline: Instant) -> ClientConfig {
    let mut cc = ClientConfig::new(cfg.directory.clone(), deadline);
    cc.ca_file = cfg.ca_file.clone();
    cc.request_timeout = cfg.request_timeout;
    cc.proxy = cfg.proxy.clone();
    cc
}

/// Checks the client settings without disk or network access (part of option validation).
pub fn preflight(cfg: &Config) -> Result<(), String> {
    if cfg.self_sign {
        return Ok(());
    }
    client_config(cfg, Instant::now() + cfg.timeout)
        .validate()
        .map_err(|e| e.to_string())
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A client error as a per-cert failure (message, problem document, Retry-After).
pub fn failure(e: AcmeError) -> CaFailure {
    CaFailure {
        message: e.to_string(),
        problem: e.problem().and_then(|p| serde_json::to_value(p).ok()),
        retry_after: e.retry_after().map(unix),
    }
}

fn challenges(info: &OrderInfo) -> Vec<ChallengeRecord> {
    info.challenges
        .iter()
        .map(|c| ChallengeRecord {
            name: c.identifier.as_str().to_owned(),
            record: c.record.as_str().to_owned(),
            value: c.value.as_str().to_owned(),
        })
        .collect()
}

fn status(s: client::OrderStatus) -> OrderStatus {
    match s {
        client::OrderStatus::Pending => OrderStatus::Pending,
        client::OrderStatus::Ready => OrderStatus::Ready,
        client::OrderStatus::Processing => OrderStatus::Processing,
        client::OrderStatus::Valid => OrderStatus::Valid,
        client::OrderStatus::Invalid => OrderStatus::Invalid,
    }
}

fn plain_failure(message: String) -> CaFailure {
    CaFailure {
        message,
        problem: None,
        retry_after: None,
    }
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// GET of a renewal-information resource: the window, the CA's Retry-After.
async fn fetch_window(
    client: &crate::http::AcmeHttpClient,
    base: &str,
    cert_id: &str,
    deadline: Instant,
) -> Result<RenewalWindow, CaFailure> {
    use instant_acme::HttpClient;
    let url = format!("{}/{cert_id}", base.trim_end_matches('/'));
    let what = format!("renewal information {url}");
    let req = http::Request::get(&url)
        .body(instant_acme::BodyWrapper::default())
        .map_err(|e| plain_failure(format!("{what}: {e}")))?;
    let work = async {
        let mut rsp = client
            .request(req)
            .await
            .map_err(|e| plain_failure(format!("{what}: {}", http_error(&e))))?;
        let body = rsp
            .body
            .into_bytes()
            .await
            .map_err(|e| plain_failure(format!("{what}: reading the answer: {e}")))?;
        Ok::<_, CaFailure>((rsp.parts, body))
    };
    let (parts, body) = tokio::time::timeout(left(deadline), work)
        .await
        .map_err(|_| plain_failure(format!("{what}: no answer before the deadline")))??;
    let retry_after = crate::http::parse_retry_after(&parts.headers, SystemTime::now()).map(unix);
    if !parts.status.is_success() {
        let problem: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let detail = problem
            .as_ref()
            .and_then(|p| p.get("detail"))
            .and_then(|d| d.as_str())
            .unwrap_or("(no detail)")
            .to_owned();
        return Err(CaFailure {
            message: format!("{what}: HTTP {}: {detail}", parts.status.as_u16()),
            problem,
            retry_after,
        });
    }
    let info: instant_acme::RenewalInfo = serde_json::from_slice(&body)
        .map_err(|e| plain_failure(format!("{what}: not a renewal-information object: {e}")))?;
    Ok(RenewalWindow {
        start: info.suggested_window.start.unix_timestamp(),
        end: info.suggested_window.end.unix_timestamp(),
        retry_after,
        explanation_url: info.explanation_url,
    })
}

/// An HTTP-layer error (connect, TLS, proxy, timeout) as the client's own message.
fn http_error(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Other(inner) => match inner.downcast_ref::<crate::http::HttpFailure>()
        {
            Some(f) => f.to_string(),
            None => inner.to_string(),
        },
        other => other.to_string(),
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

impl CaConnector for Connector {
    type Account = AcmeAccount;
    async fn open(&self, cfg: &Config, deadline: Instant) -> Result<AcmeAccount, CaFailure> {
        let cc = client_config(cfg, deadline);
        let eab = cfg
            .eab
            .as_ref()
            .map(|(kid, key)| (kid.as_str(), key.as_slice()));
        AccountStore::new(&cfg.store.root)
            .open_or_create(&cc, cfg.account_email.as_deref(), cfg.terms_agreed, eab)
            .await
            .map_err(failure)
    }

    async fn renewal_info(
        &self,
        cfg: &Config,
        deadline: Instant,
        cert_ids: &[String],
    ) -> Result<Option<Vec<Result<RenewalWindow, CaFailure>>>, CaFailure> {
        let cc = client_config(cfg, deadline);
        let http = cc.http_client().map_err(failure)?;
        let what = format!("fetch the directory {}", cfg.directory);
        let (status, body) = tokio::time::timeout(left(deadline), http.get(&cfg.directory))
            .await
            .map_err(|_| plain_failure(format!("{what}: no answer before the deadline")))?
            .map_err(|e| plain_failure(format!("{what}: {e}")))?;
        if !status.is_success() {
            return Err(plain_failure(format!("{what}: HTTP {}", status.as_u16())));
        }
        let directory: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| plain_failure(format!("{what}: not a directory object: {e}")))?;
        let Some(base) = directory.get("renewalInfo").and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        let jobs = cert_ids
            .iter()
            .map(|id| fetch_window(&http, base, id, deadline));
        Ok(Some(futures_util::future::join_all(jobs).await))
    }
}

impl CaAccount for AcmeAccount {
    fn account_url(&self) -> String {
        self.url().to_owned()
    }
    fn retries(&self) -> u64 {
        AcmeAccount::retries(self)
    }
    fn profiles(&self) -> Vec<String> {
        AcmeAccount::profiles(self)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }
    async fn new_order(
        &self,
        names: &[Identifier],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<CreatedOrder, CaFailure> {
        let mut dropped = None;
        let mut sent = replaces;
        let info = match AcmeAccount::new_order(self, names, replaces, profile).await {
            Err(e) if replaces.is_some() && replaces_refused(&e) => {
                // Once more without `replaces`: a renewal must not fail for it.
                dropped = Some(e.to_string());
                sent = None;
                AcmeAccount::new_order(self, names, None, profile).await
            }
            other => other,
        }
        .map_err(failure)?;
        Ok(CreatedOrder {
            challenges: challenges(&info),
            url: info.url,
            replaces: sent.map(str::to_owned),
            replaces_dropped: dropped,
        })
    }
    async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure> {
        let info = AcmeAccount::order_state(self, url).await.map_err(failure)?;
        Ok(info.map(|i| OrderView {
            status: status(i.status),
            identifiers: i
                .identifiers
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
            challenges: challenges(&i),
        }))
    }
    async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure> {
        self.deactivate_pending_authorizations(url)
            .await
            .map(|_| ())
            .map_err(failure)
    }
    async fn finalize(
        &self,
        url: &str,
        csr_der: &[u8],
        deadline: Instant,
    ) -> Result<String, CaFailure> {
        AcmeAccount::finalize(self, url, csr_der, deadline)
            .await
            .map_err(failure)
    }
}
