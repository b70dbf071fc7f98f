//! The host modules' CA trait ([`crate::ca`]) over the ACME client ([`crate::client`]).

use crate::ca::{
    CaAccount, CaConnector, CaFailure, ChallengeKind, CreatedOrder, HttpToken, OrderView,
    RenewalWindow,
};
use crate::client::{
    from_http_failure, map_error, problem_error, AccountStore, AcmeAccount, AcmeError,
    ClientConfig, OrderInfo, ProblemDoc,
};
use crate::config::Config;
use crate::http::AcmeHttpClient;
use crate::store::ChallengeRecord;
use certbridge_core::names::Identifier;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Opens accounts with the real client. One per run: every request of the run (directory,
/// renewal information, account, orders) goes through one HTTP client, built at first use,
/// and the account is looked up once.
#[derive(Default)]
pub struct Connector {
    http: Mutex<Option<AcmeHttpClient>>,
    account: Mutex<Option<AcmeAccount>>,
}

impl Connector {
    /// The run's HTTP client (reads `ca_file` or the system bundle the first time).
    fn http(&self, cc: &ClientConfig) -> Result<AcmeHttpClient, AcmeError> {
        let mut slot = self.http.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(http) = slot.as_ref() {
            return Ok(http.clone());
        }
        let http = cc.http_client()?;
        *slot = Some(http.clone());
        Ok(http)
    }
}

/// The client settings for a configuration.
fn client_config(cfg: &Config, deadline: Instant) -> ClientConfig {
    let mut cc = ClientConfig::new(cfg.directory.clone(), deadline);
    cc.ca_file = cfg.ca_file.clone();
    cc.request_timeout = cfg.request_timeout;
    cc.proxy = cfg.proxy.clone();
    cc
}

/// Checks the client settings without disk or network access (part of option validation).
pub(crate) fn preflight(cfg: &Config) -> Result<(), String> {
    if cfg.self_sign {
        return Ok(());
    }
    client_config(cfg, Instant::now() + cfg.timeout)
        .validate()
        .map_err(|e| e.to_string())
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

fn http_tokens(info: &OrderInfo) -> Vec<HttpToken> {
    info.http.clone()
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn past_deadline(what: String, deadline: Instant, started: Instant) -> AcmeError {
    AcmeError::Timeout {
        what,
        after: deadline.saturating_duration_since(started),
    }
}

/// A non-2xx answer to a GET: the CA's problem document when the body is one (its HTTP status
/// filled in when it names none), else the status alone.
fn http_problem(
    what: String,
    status: u16,
    body: &[u8],
    retry_after: Option<SystemTime>,
) -> AcmeError {
    let mut problem: ProblemDoc = serde_json::from_slice::<instant_acme::Problem>(body)
        .map(|p| ProblemDoc::from_acme(&p))
        .unwrap_or_default();
    problem.status.get_or_insert(status);
    problem_error(&what, problem, retry_after)
}

/// GET of a renewal-information resource: the window, the CA's Retry-After.
async fn fetch_window(
    client: &AcmeHttpClient,
    base: &str,
    cert_id: &str,
    deadline: Instant,
) -> Result<RenewalWindow, CaFailure> {
    use instant_acme::HttpClient;
    let started = Instant::now();
    let url = format!("{}/{cert_id}", base.trim_end_matches('/'));
    let what = format!("renewal information {url}");
    let req = http::Request::get(&url)
        .body(instant_acme::BodyWrapper::default())
        .map_err(|e| CaFailure::local(format!("{what}: {e}")))?;
    let stats = client.stats();
    let work = async {
        let mut rsp = client.request(req).await.map_err(|e| {
            map_error(
                &what,
                e,
                &stats,
                deadline.saturating_duration_since(started),
            )
        })?;
        let body = rsp
            .body
            .into_bytes()
            .await
            .map_err(|e| AcmeError::Protocol {
                what: what.clone(),
                reason: format!("reading the answer: {e}"),
            })?;
        Ok::<_, AcmeError>((rsp.parts, body))
    };
    let (parts, body) = tokio::time::timeout(left(deadline), work)
        .await
        .map_err(|_| past_deadline(what.clone(), deadline, started))??;
    let retry_after = crate::http::parse_retry_after(&parts.headers, SystemTime::now());
    if !parts.status.is_success() {
        return Err(http_problem(what, parts.status.as_u16(), &body, retry_after).into());
    }
    let info: instant_acme::RenewalInfo =
        serde_json::from_slice(&body).map_err(|e| AcmeError::UnexpectedAnswer {
            what: what.clone(),
            reason: format!("not a renewal-information object: {e}"),
        })?;
    Ok(RenewalWindow {
        start: info.suggested_window.start.unix_timestamp(),
        end: info.suggested_window.end.unix_timestamp(),
        retry_after: retry_after.map(crate::unix),
        explanation_url: info.explanation_url,
    })
}

impl CaConnector for Connector {
    type Account = AcmeAccount;
    async fn open(&self, cfg: &Config, deadline: Instant) -> Result<AcmeAccount, CaFailure> {
        if let Some(account) = self
            .account
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(account.clone());
        }
        let cc = client_config(cfg, deadline);
        let eab = cfg
            .eab
            .as_ref()
            .map(|(kid, key)| (kid.as_str(), key.as_slice()));
        let account = AccountStore::new(&cfg.store.root)
            .open_or_create_with(
                &cc,
                || self.http(&cc),
                cfg.account_email.as_deref(),
                cfg.terms_agreed,
                eab,
            )
            .await?;
        *self.account.lock().unwrap_or_else(|e| e.into_inner()) = Some(account.clone());
        Ok(account)
    }

    async fn renewal_info(
        &self,
        cfg: &Config,
        deadline: Instant,
        cert_ids: &[String],
    ) -> Result<Option<Vec<Result<RenewalWindow, CaFailure>>>, CaFailure> {
        let started = Instant::now();
        let cc = client_config(cfg, deadline);
        let http = self.http(&cc)?;
        let what = format!("fetch the directory {}", cfg.directory);
        let (status, body) = tokio::time::timeout(left(deadline), http.get(&cfg.directory))
            .await
            .map_err(|_| past_deadline(what.clone(), deadline, started))?
            .map_err(|e| from_http_failure(&what, e))?;
        if !status.is_success() {
            return Err(http_problem(what, status.as_u16(), &body, None).into());
        }
        let directory: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| AcmeError::UnexpectedAnswer {
                what: what.clone(),
                reason: format!("not a directory object: {e}"),
            })?;
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
        let info = AcmeAccount::new_order(self, names, replaces, profile).await?;
        Ok(CreatedOrder {
            challenges: challenges(&info),
            http: http_tokens(&info),
            url: info.url,
        })
    }
    async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure> {
        let info = AcmeAccount::order_state(self, url).await?;
        Ok(info.map(|i| OrderView {
            status: i.status,
            identifiers: i
                .identifiers
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
            challenges: challenges(&i),
            http: http_tokens(&i),
        }))
    }
    async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure> {
        self.deactivate_pending_authorizations(url).await?;
        Ok(())
    }
    async fn finalize(
        &self,
        url: &str,
        csr_der: &[u8],
        deadline: Instant,
        kind: ChallengeKind,
    ) -> Result<String, CaFailure> {
        Ok(AcmeAccount::finalize(self, url, csr_der, deadline, kind).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_get_keeps_the_cas_problem_document_and_status() {
        let body = br#"{"type":"urn:ietf:params:acme:error:malformed","detail":"All requests MUST include a User-Agent header","subproblems":[{"identifier":{"type":"dns","value":"a.example.test"},"type":"urn:ietf:params:acme:error:caa","detail":"no"}]}"#;
        let e = http_problem("fetch the directory d".into(), 400, body, None);
        let p = e.problem().expect("problem kept");
        assert_eq!(p.short_kind(), Some("malformed"));
        assert_eq!(p.status, Some(400), "the HTTP status fills the gap");
        assert_eq!(p.subproblems.len(), 1);
        let text = e.to_string();
        assert!(
            text.contains("User-Agent") && text.contains("HTTP 400"),
            "{text}"
        );
        let e = http_problem("fetch the directory d".into(), 503, b"<html>", None);
        assert_eq!(e.problem().unwrap().status, Some(503));
        assert!(e.to_string().contains("HTTP 503"), "{e}");
    }
}
