//! A CA in memory for the orchestration tests of acme_request and acme_finalize: it answers
//! through the same trait as the real client, fails as it is told to (with the problem
//! documents real CAs send), issues real certificates for the CSR it is given, and records
//! every call so a test can say what the module asked.

use super::*;
use crate::client::SubProblemDoc;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const ACCOUNT: &str = "https://ca.example.test/acct/1";
pub(crate) const ORDER_PREFIX: &str = "https://ca.example.test/order/";

/// An order the fake CA holds.
#[derive(Debug, Clone)]
pub(crate) struct FakeOrder {
    pub status: OrderStatus,
    /// Sorted, as the modules store them.
    pub identifiers: Vec<String>,
    pub challenges: Vec<ChallengeRecord>,
    pub http: Vec<crate::ca::HttpToken>,
}

impl FakeOrder {
    /// A pending order for `names`, one dns-01 value per name.
    pub fn pending(names: &[String]) -> FakeOrder {
        let mut identifiers = names.to_vec();
        identifiers.sort();
        let challenges: Vec<ChallengeRecord> = identifiers
            .iter()
            .map(|n| ChallengeRecord {
                name: n.clone(),
                record: format!("_acme-challenge.{}", n.trim_start_matches("*.")),
                value: format!("value-for-{n}"),
            })
            .collect();
        // The CA offers both challenges, except http-01 for wildcards and dns-01 for addresses.
        let http = identifiers
            .iter()
            .filter(|n| !n.starts_with("*."))
            .map(|n| crate::ca::HttpToken {
                name: n.clone(),
                token: format!("token-{}", n.replace([':', '.'], "-")),
                key_authorization: format!("token-{}.thumb", n.replace([':', '.'], "-")),
            })
            .collect();
        let challenges = challenges
            .into_iter()
            .filter(|c: &ChallengeRecord| c.name.parse::<std::net::IpAddr>().is_err())
            .collect();
        FakeOrder {
            status: OrderStatus::Pending,
            identifiers,
            challenges,
            http,
        }
    }
}

/// What the CA's renewal information says.
#[derive(Debug, Clone)]
pub(crate) enum FakeAri {
    /// The directory offers no `renewalInfo`.
    Unsupported,
    /// The directory cannot be fetched.
    DirectoryFails(CaFailure),
    /// Every certificate gets this window.
    Window(RenewalWindow),
    /// Every certificate's GET fails.
    EachFails(CaFailure),
}

/// How the fake CA behaves; tests change it between runs.
#[derive(Debug)]
pub(crate) struct Script {
    pub profiles: Vec<String>,
    pub open_failure: Option<CaFailure>,
    /// Consumed one per newOrder (front first); when empty, orders are created.
    pub new_order_failures: Vec<CaFailure>,
    /// A newOrder naming `replaces` fails with this (e.g. `alreadyReplaced`).
    pub refuse_replaces: Option<CaFailure>,
    pub orders: BTreeMap<String, FakeOrder>,
    pub order_state_failure: Option<CaFailure>,
    pub deactivate_failure: Option<CaFailure>,
    pub ari: FakeAri,
    pub finalize_failure: Option<CaFailure>,
    /// Issue for these names instead of the order's (a CA mistake the modules must catch).
    pub issue_names: Option<Vec<String>>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            profiles: crate::policy::LE_PROFILES
                .iter()
                .map(|l| l.profile.to_owned())
                .collect(),
            open_failure: None,
            new_order_failures: Vec::new(),
            refuse_replaces: None,
            orders: BTreeMap::new(),
            order_state_failure: None,
            deactivate_failure: None,
            ari: FakeAri::Unsupported,
            finalize_failure: None,
            issue_names: None,
        }
    }
}

/// One newOrder as the CA received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewOrderCall {
    pub names: Vec<String>,
    pub replaces: Option<String>,
    pub profile: Option<String>,
}

/// Every call the modules made.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub opened: usize,
    pub new_orders: Vec<NewOrderCall>,
    pub order_states: Vec<String>,
    pub deactivated: Vec<String>,
    pub finalized: Vec<String>,
    /// The ARI ids asked for, per renewal-information call.
    pub renewal_info: Vec<Vec<String>>,
}

impl Calls {
    /// Whether the CA heard nothing at all.
    pub fn none(&self) -> bool {
        self.opened == 0
            && self.new_orders.is_empty()
            && self.order_states.is_empty()
            && self.deactivated.is_empty()
            && self.finalized.is_empty()
            && self.renewal_info.is_empty()
    }
}

/// The fake CA; clones share the script, the calls and the issuing key.
#[derive(Clone)]
pub(crate) struct FakeCa {
    script: Arc<Mutex<Script>>,
    calls: Arc<Mutex<Calls>>,
    issuer: Arc<KeyPair>,
}

impl Default for FakeCa {
    fn default() -> Self {
        FakeCa {
            script: Arc::default(),
            calls: Arc::default(),
            issuer: Arc::new(KeyPair::generate().expect("issuer key")),
        }
    }
}

/// A problem document as a CA sends it, wrapped as the client reports it.
pub(crate) fn ca_problem(what: &str, kind: &str, status: u16, detail: &str) -> CaFailure {
    problem_with(what, kind, status, detail, Vec::new(), None)
}

/// The same with subproblems and a Retry-After (unix seconds).
pub(crate) fn problem_with(
    what: &str,
    kind: &str,
    status: u16,
    detail: &str,
    subproblems: Vec<SubProblemDoc>,
    retry_after: Option<i64>,
) -> CaFailure {
    let problem = ProblemDoc {
        kind: Some(format!("urn:ietf:params:acme:error:{kind}")),
        detail: Some(detail.into()),
        status: Some(status),
        subproblems,
    };
    let retry_after = retry_after.map(|t| UNIX_EPOCH + Duration::from_secs(t as u64));
    crate::client::problem_error(what, problem, retry_after).into()
}

fn issuer_params() -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("issuer params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![7, 7, 7, 7]);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Fake CA");
    params
}

/// A public key read from a CSR, for rcgen to sign.
struct CsrKey {
    der: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.der
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

fn csr_key(csr_der: &[u8]) -> CsrKey {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .expect("a CSR");
    let der = csr
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec();
    let alg = match der.len() {
        65 => &rcgen::PKCS_ECDSA_P256_SHA256,
        97 => &rcgen::PKCS_ECDSA_P384_SHA384,
        _ => &rcgen::PKCS_RSA_SHA256,
    };
    CsrKey { der, alg }
}

impl FakeCa {
    pub fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    pub fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap()
    }

    /// Forgets the calls so far (the script stays).
    pub fn clear_calls(&self) {
        *self.calls() = Calls::default();
    }

    /// A chain (leaf, then the fake CA) for `key` and `names`, valid between the two times.
    pub fn issue(
        &self,
        key: &impl PublicKeyData,
        names: &[String],
        not_before: i64,
        not_after: i64,
    ) -> String {
        let mut params = CertificateParams::new(names.to_vec()).expect("leaf params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_be_bytes().to_vec()));
        params.use_authority_key_identifier_extension = true;
        let issuer_cert = issuer_params().self_signed(&*self.issuer).unwrap();
        let issuer = Issuer::new(issuer_params(), &*self.issuer);
        let leaf = params.signed_by(key, &issuer).expect("sign the leaf");
        format!("{}{}", leaf.pem(), issuer_cert.pem())
    }

    fn failing(
        &self,
        pick: impl FnOnce(&mut Script) -> Option<CaFailure>,
    ) -> Result<(), CaFailure> {
        match pick(&mut self.script()) {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

impl CaConnector for FakeCa {
    type Account = FakeCa;
    async fn open(
        &self,
        _cfg: &crate::config::Config,
        _deadline: Instant,
    ) -> Result<FakeCa, CaFailure> {
        self.calls().opened += 1;
        self.failing(|s| s.open_failure.clone())?;
        Ok(self.clone())
    }

    async fn renewal_info(
        &self,
        _cfg: &crate::config::Config,
        _deadline: Instant,
        cert_ids: &[String],
    ) -> Result<Option<Vec<Result<RenewalWindow, CaFailure>>>, CaFailure> {
        self.calls().renewal_info.push(cert_ids.to_vec());
        let answer = self.script().ari.clone();
        match answer {
            FakeAri::Unsupported => Ok(None),
            FakeAri::DirectoryFails(f) => Err(f),
            FakeAri::Window(w) => Ok(Some(cert_ids.iter().map(|_| Ok(w.clone())).collect())),
            FakeAri::EachFails(f) => Ok(Some(cert_ids.iter().map(|_| Err(f.clone())).collect())),
        }
    }
}

impl CaAccount for FakeCa {
    fn account_url(&self) -> String {
        ACCOUNT.into()
    }
    fn retries(&self) -> u64 {
        0
    }
    fn profiles(&self) -> Vec<String> {
        self.script().profiles.clone()
    }
    async fn new_order(
        &self,
        names: &[Identifier],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<CreatedOrder, CaFailure> {
        let names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
        let count = {
            let mut calls = self.calls();
            calls.new_orders.push(NewOrderCall {
                names: names.clone(),
                replaces: replaces.map(str::to_owned),
                profile: profile.map(str::to_owned),
            });
            calls.new_orders.len()
        };
        let mut script = self.script();
        if replaces.is_some() {
            if let Some(f) = script.refuse_replaces.clone() {
                return Err(f);
            }
        }
        if !script.new_order_failures.is_empty() {
            return Err(script.new_order_failures.remove(0));
        }
        let url = format!("{ORDER_PREFIX}{count}");
        let order = FakeOrder::pending(&names);
        let challenges = order.challenges.clone();
        let http = order.http.clone();
        script.orders.insert(url.clone(), order);
        Ok(CreatedOrder {
            url,
            challenges,
            http,
        })
    }
    async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure> {
        self.calls().order_states.push(url.to_owned());
        self.failing(|s| s.order_state_failure.clone())?;
        Ok(self.script().orders.get(url).map(|o| OrderView {
            status: o.status,
            identifiers: o.identifiers.clone(),
            challenges: o.challenges.clone(),
            http: o.http.clone(),
        }))
    }
    async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure> {
        self.calls().deactivated.push(url.to_owned());
        self.failing(|s| s.deactivate_failure.clone())?;
        if let Some(o) = self.script().orders.get_mut(url) {
            o.status = OrderStatus::Invalid;
        }
        Ok(())
    }
    async fn finalize(
        &self,
        url: &str,
        csr_der: &[u8],
        _deadline: Instant,
        _kind: crate::ca::ChallengeKind,
    ) -> Result<String, CaFailure> {
        self.calls().finalized.push(url.to_owned());
        self.failing(|s| s.finalize_failure.clone())?;
        let names = {
            let mut script = self.script();
            let override_names = script.issue_names.clone();
            let Some(order) = script.orders.get_mut(url) else {
                return Err(AcmeError::OrderGone { url: url.into() }.into());
            };
            order.status = OrderStatus::Valid;
            override_names.unwrap_or_else(|| order.identifiers.clone())
        };
        let now = crate::now();
        Ok(self.issue(&csr_key(csr_der), &names, now - 60, now + 90 * 86_400))
    }
}

/// Installs a certificate this fake CA issued for `cert` (valid between the two times) and
/// records it in the metadata as acme_finalize would: the state of a host after a renewal.
pub(crate) fn install_issued(
    ca: &FakeCa,
    cfg: &crate::config::Config,
    cert: &str,
    not_before: i64,
    not_after: i64,
) -> crate::certinfo::LeafInfo {
    let spec = cfg.cert(cert).expect("declared cert");
    let key_type = spec.key_type.resolve(None);
    let key = key_type.generate().expect("key");
    let names = spec.sorted_names();
    let chain = ca.issue(&key, &names, not_before, not_after);
    let set = crate::certinfo::verify_issued(&chain, &key.serialize_pem(), &names, not_before)
        .expect("a valid set");
    cfg.store.ensure_reserved().expect("cert root");
    cfg.store.install(&spec.dir, &set).expect("install");
    let mut meta = cfg.store.load_meta(cert).unwrap().unwrap_or_default();
    meta.names = names;
    meta.key_type = Some(key_type);
    meta.directory = Some(cfg.directory.clone());
    meta.staging = cfg.untrusted_target();
    meta.account_url = Some(ACCOUNT.into());
    meta.profile = spec.profile.clone();
    meta.serial = Some(set.leaf.serial.clone());
    meta.not_after = Some(set.leaf.not_after);
    meta.issuer = Some(set.leaf.issuer.clone());
    meta.issued_at = Some(not_before);
    cfg.store.save_meta(cert, &meta).expect("save meta");
    set.leaf
}
