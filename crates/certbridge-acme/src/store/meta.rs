//! What is kept per cert across runs: the metadata file's contents and the order in flight.

use super::*;
use crate::ca::ChallengeKind;

/// The order in flight for one cert (written by acme_request, consumed by acme_finalize).
/// Stored in the flat format of earlier releases ([`PendingOrderFile`]), read back into
/// these types: an order at a CA always has its URL and account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "PendingOrderFile", into = "PendingOrderFile")]
pub struct PendingOrder {
    pub created_at: i64,
    pub directory: String,
    pub names: Vec<String>,
    pub key_type: KeyType,
    pub staging: bool,
    pub at: OrderAt,
}

/// Who signs the order in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderAt {
    /// The local test CA (`self_sign`): nothing to resume, nothing to publish.
    SelfSign,
    /// An ACME CA.
    Ca(CaOrder),
}

/// An order at an ACME CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOrder {
    pub url: String,
    /// The account that made it: only that account can resume or deactivate it.
    pub account_url: String,
    /// The dns-01 values this order needs (empty when every authorization was valid).
    pub challenges: Vec<ChallengeRecord>,
    /// The profile asked for (None: the CA's default).
    pub profile: Option<String>,
    /// The ARI id of the certificate this order replaces, when the CA accepted `replaces`.
    pub replaces: Option<String>,
    /// The challenge its authorizations are validated by.
    pub kind: ChallengeKind,
    /// The http-01 tokens this order needs, with the webroot each goes to.
    pub http: Vec<HttpRecord>,
}

/// One http-01 token to serve, and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpRecord {
    pub name: String,
    pub token: String,
    pub key_authorization: String,
    pub webroot: String,
}

impl PendingOrder {
    /// The order at the CA, unless the local test CA signs it.
    pub fn ca(&self) -> Option<&CaOrder> {
        match &self.at {
            OrderAt::Ca(o) => Some(o),
            OrderAt::SelfSign => None,
        }
    }

    pub fn is_self_sign(&self) -> bool {
        self.at == OrderAt::SelfSign
    }

    /// The order's URL (for the log and the reply; None for `self_sign`).
    pub fn url(&self) -> Option<&str> {
        self.ca().map(|o| o.url.as_str())
    }

    /// The dns-01 values to publish (none for `self_sign`).
    pub fn challenges(&self) -> &[ChallengeRecord] {
        self.ca().map_or(&[], |o| o.challenges.as_slice())
    }

    /// The http-01 tokens to serve (none for `self_sign`).
    pub fn http(&self) -> &[HttpRecord] {
        self.ca().map_or(&[], |o| o.http.as_slice())
    }

    /// The challenge the order's authorizations are validated by.
    pub fn kind(&self) -> ChallengeKind {
        self.ca().map_or(ChallengeKind::Dns01, |o| o.kind)
    }

    pub fn profile(&self) -> Option<&str> {
        self.ca().and_then(|o| o.profile.as_deref())
    }
}

/// The order in flight as the metadata file holds it (the format every release wrote).
#[derive(Serialize, Deserialize)]
struct PendingOrderFile {
    /// None for `self_sign` (no CA, nothing to resume).
    url: Option<String>,
    created_at: i64,
    directory: String,
    account_url: Option<String>,
    names: Vec<String>,
    key_type: KeyType,
    staging: bool,
    self_sign: bool,
    #[serde(default)]
    challenges: Vec<ChallengeRecord>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    replaces: Option<String>,
    /// Left out for dns-01 orders: metadata of earlier releases reads back unchanged.
    #[serde(default, skip_serializing_if = "ChallengeKind::is_dns")]
    challenge: ChallengeKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    http: Vec<HttpRecord>,
}

impl TryFrom<PendingOrderFile> for PendingOrder {
    type Error = String;
    fn try_from(f: PendingOrderFile) -> Result<Self, String> {
        let at = match (f.self_sign, f.url, f.account_url) {
            (true, _, _) => OrderAt::SelfSign,
            (false, Some(url), Some(account_url)) => OrderAt::Ca(CaOrder {
                url,
                account_url,
                challenges: f.challenges,
                profile: f.profile,
                replaces: f.replaces,
                kind: f.challenge,
                http: f.http,
            }),
            (false, None, _) => return Err("an order at a CA without its URL".into()),
            (false, Some(_), None) => return Err("an order at a CA without its account".into()),
        };
        Ok(PendingOrder {
            created_at: f.created_at,
            directory: f.directory,
            names: f.names,
            key_type: f.key_type,
            staging: f.staging,
            at,
        })
    }
}

impl From<PendingOrder> for PendingOrderFile {
    fn from(p: PendingOrder) -> Self {
        let (url, account_url, challenges, profile, replaces, self_sign, challenge, http) =
            match p.at {
                OrderAt::SelfSign => (
                    None,
                    None,
                    Vec::new(),
                    None,
                    None,
                    true,
                    ChallengeKind::Dns01,
                    Vec::new(),
                ),
                OrderAt::Ca(o) => (
                    Some(o.url),
                    Some(o.account_url),
                    o.challenges,
                    o.profile,
                    o.replaces,
                    false,
                    o.kind,
                    o.http,
                ),
            };
        PendingOrderFile {
            url,
            created_at: p.created_at,
            directory: p.directory,
            account_url,
            names: p.names,
            key_type: p.key_type,
            staging: p.staging,
            self_sign,
            challenges,
            profile,
            replaces,
            challenge,
            http,
        }
    }
}

/// One dns-01 value to publish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub name: String,
    pub record: String,
    pub value: String,
}

/// What the decision needs about one cert, kept across runs (JSON, 0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The installed generation's facts (None before the first issuance).
    pub names: Vec<String>,
    pub key_type: Option<KeyType>,
    pub directory: Option<String>,
    #[serde(default)]
    pub staging: bool,
    #[serde(default)]
    pub self_signed: bool,
    pub account_url: Option<String>,
    pub profile: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<i64>,
    pub issuer: Option<String>,
    pub issued_at: Option<i64>,
    pub pending: Option<PendingOrder>,
    /// Backoff after failures.
    #[serde(default)]
    pub failures: u32,
    pub retry_not_before: Option<i64>,
    pub last_failure: Option<i64>,
    pub last_problem: Option<String>,
    /// Files changed and the handler has not acknowledged it yet.
    #[serde(default)]
    pub handler_owed: bool,
    /// The CA's renewal information (RFC 9773) about the installed certificate.
    #[serde(default)]
    pub ari: Option<AriState>,
    /// dns-01 values of finished or abandoned orders, reported until published away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<crate::retired::RetiredValue>,
    /// When this cert last ordered a new certificate admitted by the fleet rate budget (left
    /// out when unset: metadata without it is written back as it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_cert_at: Option<i64>,
}

/// What the last renewal-information check found for one installed certificate, and when to
/// check again. Kept so that pulses between checks need no network call, and so that the
/// random point chosen inside a window is chosen once, not at every pulse.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AriState {
    /// Serial of the certificate this is about (a new certificate starts afresh).
    pub serial: String,
    /// Its ARI id, `base64url(AKI).base64url(serial)`.
    pub cert_id: Option<String>,
    /// The directory offered `renewalInfo` at the last check.
    pub supported: bool,
    pub checked_at: i64,
    /// No check before this: the CA's Retry-After. None: `ari_interval` after `checked_at`
    /// (within the hour after a failure), with the interval of the run that looks.
    pub next_check: Option<i64>,
    /// The suggested window (unix seconds) and the point chosen inside it.
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub renew_at: Option<i64>,
    pub explanation_url: Option<String>,
    /// Set when the last check failed (the lifetime rule then applies).
    pub last_error: Option<String>,
}

impl Meta {
    /// Records `pending`'s certificate (`leaf`) as installed at `now`: what a successful
    /// acme_finalize records, whether it saw the install through or a later run finds it.
    pub fn record_issued(&mut self, pending: &PendingOrder, leaf: &LeafInfo, now: i64) {
        self.names = pending.names.clone();
        self.key_type = Some(pending.key_type);
        self.directory = Some(pending.directory.clone());
        self.staging = pending.staging;
        self.self_signed = pending.is_self_sign();
        self.account_url = pending.ca().map(|o| o.account_url.clone());
        self.profile = pending.profile().map(str::to_owned);
        // Renewal information was about the replaced certificate.
        self.ari = None;
        self.serial = Some(leaf.serial.clone());
        self.not_after = Some(leaf.not_after);
        self.issuer = Some(leaf.issuer.clone());
        self.issued_at = Some(now);
        crate::retired::retire(&mut self.retired, pending, now);
        self.pending = None;
        self.failures = 0;
        self.retry_not_before = None;
        self.last_problem = None;
        self.handler_owed = true;
    }

    /// Records the facts of an installed certificate that no order of this metadata explains
    /// (a rollback, or a generation whose order was forgotten), and owes the handler.
    pub fn adopt_installed(&mut self, leaf: &LeafInfo) {
        if self.serial.as_deref() != Some(leaf.serial.as_str()) {
            self.ari = None;
        }
        self.serial = Some(leaf.serial.clone());
        self.not_after = Some(leaf.not_after);
        self.issuer = Some(leaf.issuer.clone());
        self.names = leaf.names.iter().cloned().collect();
        self.key_type = leaf.key_type;
        self.handler_owed = true;
    }
}

/// What [`Store::reconcile`] found when it compared a cert's metadata with its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The metadata records what is installed.
    InStep,
    /// The installed certificate is the pending order's (a run was killed between the swap
    /// and saving the metadata): recorded as that order's success, the order is done.
    OrderInstalled { serial: String },
    /// Another certificate is installed than recorded (a killed rollback, or an install whose
    /// order is not the pending one): its facts are adopted.
    Adopted { serial: String },
}
