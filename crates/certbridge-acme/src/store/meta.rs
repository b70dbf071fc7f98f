//! What is kept per cert across runs: the metadata file's contents and the order in flight.

use super::*;

/// The order in flight for one cert (written by acme_request, consumed by acme_finalize).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingOrder {
    /// None for `self_sign` (no CA, nothing to resume).
    pub url: Option<String>,
    pub created_at: i64,
    pub directory: String,
    pub account_url: Option<String>,
    pub names: Vec<String>,
    pub key_type: KeyType,
    pub staging: bool,
    pub self_sign: bool,
    /// The dns-01 values this order needs (empty when every authorization was valid).
    #[serde(default)]
    pub challenges: Vec<ChallengeRecord>,
    /// The profile asked for (None: the CA's default).
    #[serde(default)]
    pub profile: Option<String>,
    /// The ARI id of the certificate this order replaces, when the CA accepted `replaces`.
    #[serde(default)]
    pub replaces: Option<String>,
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
        self.self_signed = pending.self_sign;
        self.account_url = pending.account_url.clone();
        self.profile = pending.profile.clone();
        // Renewal information was about the replaced certificate.
        self.ari = None;
        self.serial = Some(leaf.serial.clone());
        self.not_after = Some(leaf.not_after);
        self.issuer = Some(leaf.issuer.clone());
        self.issued_at = Some(now);
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
