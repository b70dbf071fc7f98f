//! The host modules' CA trait ([`crate::ca`]) over the ACME client ([`crate::client`]).

use crate::ca::{CaAccount, CaConnector, CaFailure, CreatedOrder, OrderStatus, OrderView};
use crate::client::{self, AccountStore, AcmeAccount, AcmeError, ClientConfig, OrderInfo};
use crate::config::Config;
use crate::store::ChallengeRecord;
use certbridge_core::names::Identifier;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Opens accounts with the real client.
#[derive(Debug, Default)]
pub struct Connector;

/// The client settings for a configuration.
pub fn client_config(cfg: &Config, deadline: Instant) -> ClientConfig {
    let mut cc = ClientConfig::new(cfg.directory.clone(), deadline);
    cc.ca_file = cfg.ca_file.clone();
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
}

impl CaAccount for AcmeAccount {
    fn account_url(&self) -> String {
        self.url().to_owned()
    }
    fn retries(&self) -> u64 {
        AcmeAccount::retries(self)
    }
    async fn new_order(&self, names: &[Identifier]) -> Result<CreatedOrder, CaFailure> {
        let info = AcmeAccount::new_order(self, names, None, None)
            .await
            .map_err(failure)?;
        Ok(CreatedOrder {
            challenges: challenges(&info),
            url: info.url,
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
