//! `acme_request` (play 1, on each host): decide per cert; for certs to issue, ensure the
//! account and an order (reusing a live one), and return the dns-01 values to publish.
//! A pulse with nothing to do makes no network call and writes nothing. When the CA offers
//! renewal information (RFC 9773), each certificate's window is fetched at most every
//! `ari_interval` (or the CA's Retry-After), without an account, and the point chosen in it is
//! stored; renewals name the certificate they replace.

use crate::ca::{CaAccount, CaConnector, CaFailure, OrderStatus};
use crate::certinfo::KeyType;
use crate::cnamecheck::{CnameCheck, CnameCheckInput};
use crate::config::{self, CertSpec, Config};
use crate::eventlog::EventLog;
use crate::metrics::{self, CertMetrics};
use crate::policy::{self, Action, Decision, Wanted};
use crate::policy::{AriAnswer, Reason};
use crate::store::{AriState, OnDisk, Reconciled, StoreError};
use crate::store::{Meta, PendingOrder};
use certbridge_core::protocol::{coerce, limits, Failure, Invocation, Reply};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default of `timeout` for acme_request (seconds).
pub const DEFAULT_TIMEOUT: u64 = 60;
/// Default of `pending_max_age` (seconds).
pub const DEFAULT_PENDING_MAX_AGE: u64 = 3600;

/// acme_request's own options.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestOptions {
    /// 0 to 365 days.
    #[serde(
        default,
        deserialize_with = "coerce::opt_seconds::<_, 0, { limits::YEAR }>"
    )]
    pub pending_max_age: Option<u64>,
    #[serde(default)]
    pub metrics_file: Option<String>,
    /// Seconds between renewal-information checks when the CA sends no Retry-After (0 to 365
    /// days).
    #[serde(
        default,
        deserialize_with = "coerce::opt_seconds::<_, 0, { limits::YEAR }>"
    )]
    pub ari_interval: Option<u64>,
    /// Follow each name's `_acme-challenge` CNAME before ordering (see [`crate::cnamecheck`]).
    #[serde(default)]
    pub cname_check: Option<CnameCheckInput>,
}

pub const OWN_KEYS: &[&str] = &[
    "pending_max_age",
    "metrics_file",
    "ari_interval",
    "cname_check",
];

/// What the reply says about a certificate's renewal information.
#[derive(Debug, Clone, Serialize)]
pub struct AriReport {
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    /// The point chosen inside the window.
    pub renew_at: Option<i64>,
    pub next_check: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AriReport {
    fn of(a: &AriState, interval: i64) -> Option<AriReport> {
        a.supported.then(|| AriReport {
            window_start: a.window_start,
            window_end: a.window_end,
            renew_at: a.renew_at,
            next_check: policy::ari_next_check(a, interval),
            explanation_url: a.explanation_url.clone(),
            error: a.last_error.clone(),
        })
    }
}

/// Per cert, in the reply.
#[derive(Debug, Clone, Serialize)]
pub struct CertResult {
    pub action: Action,
    pub reason: &'static str,
    pub not_after: Option<i64>,
    pub dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_not_before: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The CA's renewal information about the installed certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ari: Option<AriReport>,
    /// Why a new order was made although one was stored (too old for the CA or for
    /// `pending_max_age`, gone, invalid, for other names...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_reason: Option<String>,
}

/// One value to publish.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TxtRequired {
    pub cert: String,
    pub name: String,
    pub record: String,
    pub value: String,
    /// Where the value will be published (with `cname_check`): the pulse counts values per
    /// owner before publishing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A value of a finished order, to be removed at the next publish.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TxtRetired {
    pub record: String,
    pub value: String,
}

/// The whole result.
#[derive(Debug, Default)]
pub struct Outcome {
    pub certs: BTreeMap<String, CertResult>,
    pub txt: Vec<TxtRequired>,
    pub retired: Vec<TxtRetired>,
    pub pending: Vec<String>,
    pub unacked: Vec<String>,
    pub orders_created: usize,
    /// Certs whose service-facing names were repaired.
    pub repaired: usize,
    pub failures: Vec<(String, CaFailure)>,
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn into_reply(self) -> Result<Reply, Failure> {
        let mut reply = Reply::changed(self.orders_created > 0 || self.repaired > 0);
        reply.set("certs", &self.certs);
        reply.set("acme_txt_required", &self.txt);
        reply.set("acme_txt_retired", &self.retired);
        reply.set("pending", &self.pending);
        reply.set("unacked", &self.unacked);
        for w in self.warnings {
            reply.warn(w);
        }
        crate::ca::reply_or_failure(reply, &self.failures)
    }
}

/// The module: parse, validate (before any disk or network access), run.
pub fn module<C: CaConnector>(
    raw: Map<String, Value>,
    inv: &Invocation,
    connector: &C,
) -> Result<Reply, Failure> {
    let (common, own): (config::CommonOptions, RequestOptions) =
        config::split_options(raw, OWN_KEYS).map_err(|e| Failure::new(e.to_string()))?;
    let cfg = config::validate(common, DEFAULT_TIMEOUT).map_err(|e| Failure::new(e.to_string()))?;
    crate::acme::preflight(&cfg).map_err(Failure::new)?;
    let cname = own
        .cname_check
        .clone()
        .map(CnameCheck::parse)
        .transpose()
        .map_err(Failure::new)?;
    let pending_max_age = own.pending_max_age.unwrap_or(DEFAULT_PENDING_MAX_AGE) as i64;
    // Both bounded by the parser (at most a year): the casts cannot wrap.
    let ari_interval = own
        .ari_interval
        .map_or(policy::DEFAULT_ARI_INTERVAL, |s| s as i64);
    let metrics_file = own
        .metrics_file
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let log = if inv.check_mode {
        EventLog::disabled("acme_request")
    } else {
        EventLog::new(cfg.log_file.clone(), "acme_request")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    let outcome = rt.block_on(run(
        &cfg,
        inv.check_mode,
        pending_max_age,
        ari_interval,
        metrics_file,
        cname.as_ref(),
        connector,
        &log,
        crate::now(),
    ))?;
    let mut outcome = outcome;
    outcome.warnings.extend(cfg.notes.iter().cloned());
    outcome.warnings.extend(log.warning());
    outcome.into_reply()
}

struct CertState<'a> {
    spec: &'a CertSpec,
    meta: Meta,
    had_meta: bool,
    decision: Decision,
    not_after: Option<i64>,
    on_disk: OnDisk,
    /// Why the stored order was not resumed (set when a new one was made instead).
    order_reason: Option<String>,
}

/// What [`catch_up`] did to one cert.
pub(crate) struct CaughtUp {
    /// What is installed, read after any repair.
    pub on_disk: OnDisk,
    /// Service-facing names repaired (the handler is then owed).
    pub repaired: Vec<String>,
    /// Why a name could not be repaired (it names the file).
    pub repair_failed: Option<StoreError>,
    pub reconciled: Reconciled,
}

/// Brings one cert's metadata, just loaded, in step with its directory, before anything is
/// decided on it: repairs the names the store owns (`repair`: under the lock only), then
/// records what a killed run installed but did not record (see [`crate::store::Store::reconcile`]).
/// `had_meta`: the metadata file existed (a cert without one is taken as found).
pub(crate) fn catch_up(
    cfg: &Config,
    spec: &CertSpec,
    meta: &mut Meta,
    had_meta: bool,
    repair: bool,
    log: &EventLog,
    now: i64,
) -> CaughtUp {
    let store = &cfg.store;
    let cert = spec.name.as_str();
    let (repaired, repair_failed) = if repair {
        match store.repair_layout(&spec.dir, meta.serial.as_deref()) {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e)),
        }
    } else {
        (Vec::new(), None)
    };
    if !repaired.is_empty() {
        // Services may have read other files than ours: they should reload.
        meta.handler_owed = true;
        log.event(
            "layout_repaired",
            json!({"cert": cert, "dir": store.cert_dir(&spec.dir), "names": repaired}),
        );
    }
    let on_disk = store.read_installed(&spec.dir);
    let order_url = meta.pending.as_ref().and_then(|p| p.url.clone());
    let reconciled = if had_meta {
        store.reconcile(cert, &spec.dir, meta, &on_disk, now)
    } else {
        Reconciled::InStep
    };
    match &reconciled {
        Reconciled::InStep => {}
        Reconciled::OrderInstalled { serial } => log.event(
            "install_recorded",
            json!({"cert": cert, "order_url": order_url, "serial": serial}),
        ),
        Reconciled::Adopted { serial } => {
            log.event("installed_adopted", json!({"cert": cert, "serial": serial}))
        }
    }
    CaughtUp {
        on_disk,
        repaired,
        repair_failed,
        reconciled,
    }
}

/// Removes what killed runs left in the cert root (under the lock); a failure is a warning.
pub(crate) fn remove_leftovers(cfg: &Config, log: &EventLog, warnings: &mut Vec<String>) {
    match cfg
        .store
        .remove_leftovers(cfg.certs.iter().map(|s| s.dir.as_str()))
    {
        Ok(removed) if !removed.is_empty() => {
            log.event("leftovers_removed", json!({"paths": removed}));
        }
        Ok(_) => {}
        Err(e) => warnings.push(format!("cannot remove what a killed run left: {e}")),
    }
}

/// The decision for one cert, as the policy sees it.
fn decide_one(
    cfg: &Config,
    spec: &CertSpec,
    meta: Option<&Meta>,
    on_disk: &OnDisk,
    now: i64,
) -> Decision {
    let names = spec.sorted_names();
    let want = Wanted {
        cert: spec.name.as_str(),
        names: &names,
        key_type: key_type_of(spec, on_disk),
        directory: &cfg.directory,
        untrusted_target: cfg.untrusted_target(),
        self_sign: cfg.self_sign,
        renew_days: cfg.renew_days,
        forced: cfg.forced(spec.name.as_str()),
        jitter_seed: &cfg.jitter_seed,
        profile: spec.profile.as_deref().filter(|_| !cfg.self_sign),
    };
    policy::decide(&want, meta, on_disk, now)
}

/// The type of `spec`'s next key: the one set, else the installed certificate's.
fn key_type_of(spec: &CertSpec, on_disk: &OnDisk) -> KeyType {
    spec.key_type
        .resolve(on_disk.leaf.as_ref().and_then(|l| l.key_type))
}

/// A random number for the point inside a renewal window (RFC 9773 asks for a random one).
fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // The system RNG failing is not a reason to fail a pulse: the window start is still valid.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_be_bytes(b)
}

/// The installed certificate's ARI id, when it was issued through this directory (ARI ids
/// only mean something to the CA that issued the certificate).
fn replaced_cert_id(cfg: &Config, st: &CertState<'_>) -> Option<String> {
    st.on_disk.leaf.as_ref()?;
    if st.meta.directory.as_deref() != Some(cfg.directory.as_str()) || st.meta.self_signed {
        return None;
    }
    let der = cfg.store.installed_leaf_der(&st.spec.dir)?;
    crate::client::ari_cert_id(&der).ok()
}

/// Fetches the renewal information of every cert whose check is due, stores what it says and
/// decides those certs again. Only certs that are otherwise kept (or due by time alone) are
/// checked; a failure is a warning, and the lifetime rule applies.
#[allow(clippy::too_many_arguments)]
async fn check_renewal_info<C: CaConnector>(
    cfg: &Config,
    states: &mut [CertState<'_>],
    connector: &C,
    log: &EventLog,
    deadline: Instant,
    interval: i64,
    now: i64,
    out: &mut Outcome,
) {
    let mut due: Vec<(usize, String, String)> = Vec::new();
    for (i, st) in states.iter().enumerate() {
        if !matches!(
            st.decision.reason,
            Reason::Valid | Reason::Due | Reason::AriWindow
        ) {
            continue;
        }
        let Some(leaf) = st.on_disk.leaf.as_ref() else {
            continue;
        };
        if !policy::ari_check_due(st.meta.ari.as_ref(), leaf, interval, now) {
            continue;
        }
        if let Some(id) = replaced_cert_id(cfg, st) {
            due.push((i, id, leaf.serial.clone()));
        }
    }
    if due.is_empty() {
        return;
    }
    // Renewal information must not eat the time orders need.
    let ari_deadline = deadline.min(Instant::now() + cfg.timeout / 3);
    let ids: Vec<String> = due.iter().map(|(_, id, _)| id.clone()).collect();
    let answers: Vec<AriAnswer> = match connector.renewal_info(cfg, ari_deadline, &ids).await {
        Ok(None) => vec![AriAnswer::Unsupported; due.len()],
        Ok(Some(list)) => list
            .into_iter()
            .map(|r| match r {
                Ok(w) => AriAnswer::Window {
                    start: w.start,
                    end: w.end,
                    retry_after: w.retry_after,
                    explanation_url: w.explanation_url,
                },
                Err(f) => AriAnswer::Failed {
                    message: f.message,
                    retry_after: f.retry_after,
                },
            })
            .collect(),
        Err(f) => vec![
            AriAnswer::Failed {
                message: f.message,
                retry_after: f.retry_after,
            };
            due.len()
        ],
    };
    for ((i, id, serial), answer) in due.into_iter().zip(answers) {
        let st = &mut states[i];
        let name = st.spec.name.as_str();
        if let AriAnswer::Failed { message, .. } = &answer {
            out.warnings.push(format!(
                "cert {name}: no renewal information from the CA ({message}); the lifetime rule applies"
            ));
        }
        let state = policy::ari_update(
            st.meta.ari.as_ref(),
            &serial,
            Some(id),
            answer,
            interval,
            now,
            random_u64(),
        );
        log.event(
            "renewal_info",
            json!({"cert": name, "supported": state.supported, "window_start": state.window_start,
                   "window_end": state.window_end, "renew_at": state.renew_at,
                   "next_check": policy::ari_next_check(&state, interval), "explanation_url": state.explanation_url,
                   "error": state.last_error}),
        );
        st.meta.ari = Some(state);
        st.decision = decide_one(cfg, st.spec, Some(&st.meta), &st.on_disk, now);
    }
}

/// Decides and orders. `now` is injected for tests.
#[allow(clippy::too_many_arguments)]
pub async fn run<C: CaConnector>(
    cfg: &Config,
    check_mode: bool,
    pending_max_age: i64,
    ari_interval: i64,
    metrics_file: Option<PathBuf>,
    cname: Option<&CnameCheck>,
    connector: &C,
    log: &EventLog,
    now: i64,
) -> Result<Outcome, Failure> {
    let deadline = Instant::now() + cfg.timeout;
    let store = &cfg.store;
    // Check mode writes nothing, so it takes no lock (the lock file lives in the cert root).
    let _lock = if check_mode {
        None
    } else {
        Some(
            store
                .lock(cfg.timeout)
                .map_err(|e| Failure::new(e.to_string()))?,
        )
    };
    let mut out = Outcome::default();
    if !check_mode {
        remove_leftovers(cfg, log, &mut out.warnings);
    }
    let mut states = Vec::new();
    for spec in &cfg.certs {
        let loaded = store
            .load_meta(spec.name.as_str())
            .map_err(|e| Failure::new(e.to_string()))?;
        let had_meta = loaded.is_some();
        let mut meta = loaded.unwrap_or_default();
        // Check mode writes nothing: it repairs nothing, but sees what a killed run installed.
        let caught = catch_up(cfg, spec, &mut meta, had_meta, !check_mode, log, now);
        if !caught.repaired.is_empty() {
            out.repaired += 1;
        }
        if let Some(e) = caught.repair_failed {
            // The cert is still decided (and ordered); its install fails the same way until
            // the file is moved away.
            out.failures.push((
                spec.name.as_str().to_owned(),
                CaFailure {
                    message: e.to_string(),
                    problem: None,
                    retry_after: None,
                },
            ));
        }
        let on_disk = caught.on_disk;
        let decision = decide_one(cfg, spec, had_meta.then_some(&meta), &on_disk, now);
        states.push(CertState {
            spec,
            had_meta,
            meta,
            decision,
            not_after: on_disk.leaf.as_ref().map(|l| l.not_after),
            on_disk,
            order_reason: None,
        });
    }
    // Check mode reads no directory: it decides on the stored renewal information.
    if !check_mode && !cfg.self_sign {
        check_renewal_info(
            cfg,
            &mut states,
            connector,
            log,
            deadline,
            ari_interval,
            now,
            &mut out,
        )
        .await;
    }
    for st in &states {
        let decision = &st.decision;
        if let Some(w) = &decision.warning {
            out.warnings.push(format!("cert {}: {w}", st.spec.name));
        }
        log.event(
            "decision",
            json!({"cert": st.spec.name.as_str(), "action": decision.action, "reason": decision.reason.as_str(),
                   "not_after": st.not_after, "renew_at": decision.renew_at, "by_ari": decision.by_ari}),
        );
    }

    let mut to_issue: Vec<usize> = (0..states.len())
        .filter(|i| states[*i].decision.action == Action::Issue)
        .collect();
    refuse_over_profile_limits(cfg, &states, &mut to_issue, log, &mut out);
    let mut owners = crate::cnamecheck::Owners::new();
    if let Some(cc) = cname.filter(|_| !cfg.self_sign) {
        owners = refuse_bad_cnames(cc, &states, &mut to_issue, log, deadline, &mut out).await;
    }
    if !check_mode && !to_issue.is_empty() {
        if cfg.self_sign {
            for i in &to_issue {
                let st = &mut states[*i];
                let fresh = st.meta.pending.as_ref().is_none_or(|p| {
                    !same_request(p, st.spec, cfg, key_type_of(st.spec, &st.on_disk))
                });
                if fresh {
                    let key_type = key_type_of(st.spec, &st.on_disk);
                    st.meta.pending = Some(new_pending(
                        cfg,
                        st.spec,
                        key_type,
                        None,
                        None,
                        Vec::new(),
                        None,
                        now,
                    ));
                    out.orders_created += 1;
                    // A new order gets a new key.
                    let _ = store.clear_pending_key(st.spec.name.as_str());
                }
            }
        } else {
            order_all(
                cfg,
                &mut states,
                &to_issue,
                connector,
                log,
                deadline,
                pending_max_age,
                now,
                &mut out,
            )
            .await;
        }
    }
    if !check_mode && !cfg.self_sign {
        abandon_orders(cfg, &states, connector, log, deadline, &mut out).await;
    }
    for t in &mut out.txt {
        t.owner = owners.get(&t.record).cloned();
    }

    for st in &mut states {
        let name = st.spec.name.as_str().to_owned();
        // A cert that no longer needs issuing forgets its order in flight (see abandon_orders;
        // its key goes once the metadata no longer names the order).
        if st.decision.action == Action::Ok && st.meta.pending.is_some() && !check_mode {
            if let Some(p) = st.meta.pending.take() {
                crate::retired::retire(&mut st.meta.retired, &p, now);
            }
        }
        if st.decision.action == Action::Issue && st.meta.pending.is_some() {
            out.pending.push(name.clone());
        }
        if st.meta.handler_owed {
            out.unacked.push(name.clone());
        }
        out.certs.insert(
            name,
            CertResult {
                action: st.decision.action,
                reason: st.decision.reason.as_str(),
                not_after: st.not_after,
                dir: cfg.store.cert_dir(&st.spec.dir).display().to_string(),
                retry_not_before: st.decision.retry_not_before,
                renew_at: st.decision.renew_at,
                profile: st.meta.profile.clone(),
                ari: st
                    .meta
                    .ari
                    .as_ref()
                    .filter(|a| {
                        st.on_disk
                            .leaf
                            .as_ref()
                            .is_some_and(|l| l.serial == a.serial)
                    })
                    .and_then(|a| AriReport::of(a, ari_interval)),
                order_reason: st.order_reason.clone(),
            },
        );
    }
    report_retired(&mut states, check_mode, now, &mut out);
    if !check_mode {
        for st in &states {
            let changed_meta = st.had_meta || st.meta != Meta::default();
            if changed_meta {
                let before = store.load_meta(st.spec.name.as_str()).ok().flatten();
                if before.as_ref() != Some(&st.meta) {
                    store
                        .save_meta(st.spec.name.as_str(), &st.meta)
                        .map_err(|e| Failure::new(e.to_string()))?;
                }
            }
        }
        // Keys of orders no metadata names any more (forgotten above, recorded as installed
        // by `catch_up`, or left by a run killed before it removed them).
        for st in &states {
            if st.meta.pending.is_none() {
                let _ = store.clear_pending_key(st.spec.name.as_str());
            }
        }
        if let Some(path) = &metrics_file {
            let items: Vec<CertMetrics> = states
                .iter()
                .map(|st| CertMetrics {
                    cert: st.spec.name.as_str().to_owned(),
                    dir: st.spec.dir.clone(),
                    issuer: st.meta.issuer.clone(),
                    not_after: st.not_after,
                    last_failure: st.meta.last_failure,
                })
                .collect();
            if let Err(e) = metrics::write_if_changed(path, &items) {
                out.warnings.push(format!(
                    "cannot write the metrics file {}: {e}",
                    path.display()
                ));
            }
        }
    }
    Ok(out)
}

/// Lists the values of finished orders for the next publish (a value an order in flight
/// needs again, as a CA may hand out the same pending authorization, is left out), and
/// forgets those reported long enough.
fn report_retired(states: &mut [CertState<'_>], check_mode: bool, now: i64, out: &mut Outcome) {
    let live: Vec<&str> = states
        .iter()
        .filter_map(|st| st.meta.pending.as_ref())
        .flat_map(|p| p.challenges.iter().map(|c| c.value.as_str()))
        .collect();
    let mut retired = Vec::new();
    for st in states.iter() {
        for r in &st.meta.retired {
            if now.saturating_sub(r.at) < crate::retired::REPORT_SECONDS
                && !live.contains(&r.value.as_str())
            {
                retired.push(TxtRetired {
                    record: r.record.clone(),
                    value: r.value.clone(),
                });
            }
        }
    }
    out.retired = retired;
    if !check_mode {
        for st in states.iter_mut() {
            crate::retired::prune(&mut st.meta.retired, now);
        }
    }
}

/// Deactivates the pending authorizations of the orders in flight of certs that no longer
/// need issuing, before they are forgotten: left pending they count against the CA's limits
/// until they expire (days at Let's Encrypt), and one naming `replaces` keeps the certificate
/// "already replaced" (RFC 9773), so its real renewal would have to order without. Best
/// effort, only for orders of this directory's account, one account for all; a failure is
/// a warning. Not while backing off: the CA is left alone then (and the order most likely
/// failed anyway).
async fn abandon_orders<C: CaConnector>(
    cfg: &Config,
    states: &[CertState<'_>],
    connector: &C,
    log: &EventLog,
    deadline: Instant,
    out: &mut Outcome,
) {
    let abandoned: Vec<(String, String, String)> = states
        .iter()
        .filter(|st| st.decision.action == Action::Ok && st.decision.reason != Reason::Backoff)
        .filter_map(|st| {
            let p = st.meta.pending.as_ref()?;
            if p.self_sign || p.directory != cfg.directory {
                return None;
            }
            Some((
                st.spec.name.as_str().to_owned(),
                p.url.clone()?,
                p.account_url.clone()?,
            ))
        })
        .collect();
    if abandoned.is_empty() {
        return;
    }
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let account = match connector.open(cfg, deadline).await {
        Ok(a) => a,
        Err(f) => {
            for (name, url, _) in &abandoned {
                out.warnings.push(format!(
                    "cert {name}: the order {url} is no longer needed but cannot be deactivated ({}); it stays pending at the CA until it expires",
                    f.message
                ));
            }
            return;
        }
    };
    let me = account.account_url();
    for (name, url, owner) in abandoned.into_iter().filter(|(_, _, o)| *o == me) {
        let error = match tokio::time::timeout(left(), account.deactivate_pending(&url)).await {
            Ok(Ok(())) => None,
            Ok(Err(f)) => Some(f.message),
            Err(_) => Some("no answer before the deadline".to_owned()),
        };
        log.event(
            "order_abandoned",
            json!({"cert": name, "order_url": url, "account": owner, "error": error}),
        );
        if let Some(e) = error {
            out.warnings.push(format!(
                "cert {name}: the order {url} is no longer needed but cannot be deactivated ({e}); it stays pending at the CA until it expires"
            ));
        }
    }
}

/// Why `spec` cannot be ordered at all under the known limits of its profile at this CA
/// (Let's Encrypt's), naming both numbers; None: it can, or the CA's limits are not known.
pub fn over_profile_limit(cfg: &Config, spec: &CertSpec) -> Option<String> {
    if cfg.self_sign {
        return None;
    }
    let asked = spec.profile.as_deref();
    let limits = policy::profile_limits(&cfg.directory, asked)?;
    policy::too_many_names(&limits, spec.names.len(), asked)
}

/// Takes the certs Let's Encrypt would refuse for their number of names out of `to_issue`:
/// each fails at once, without an order and without a backoff (a configuration error, the
/// next run with fixed options should not wait). A kept cert over the limit only warns: its
/// renewal will fail the same way.
fn refuse_over_profile_limits(
    cfg: &Config,
    states: &[CertState<'_>],
    to_issue: &mut Vec<usize>,
    log: &EventLog,
    out: &mut Outcome,
) {
    to_issue.retain(|i| {
        let spec = states[*i].spec;
        let Some(message) = over_profile_limit(cfg, spec) else {
            return true;
        };
        log.event(
            "order_refused",
            json!({"cert": spec.name.as_str(), "message": message}),
        );
        let f = CaFailure {
            message,
            problem: None,
            retry_after: None,
        };
        out.failures.push((spec.name.as_str().to_owned(), f));
        false
    });
    for st in states.iter().filter(|st| st.decision.action == Action::Ok) {
        if let Some(m) = over_profile_limit(cfg, st.spec) {
            out.warnings.push(format!(
                "cert {}: {m}; it is kept for now, its renewal will fail",
                st.spec.name
            ));
        }
    }
}

/// Takes the certs whose `_acme-challenge` CNAMEs do not lead into the signing zones out of
/// `to_issue`: each fails at once with the records to add, without an order and without a
/// backoff (the next pulse after the fix should not wait). Returns where the others' values go.
async fn refuse_bad_cnames(
    cc: &CnameCheck,
    states: &[CertState<'_>],
    to_issue: &mut Vec<usize>,
    log: &EventLog,
    deadline: Instant,
    out: &mut Outcome,
) -> crate::cnamecheck::Owners {
    let certs: Vec<(String, Vec<certbridge_core::names::Identifier>)> = to_issue
        .iter()
        .map(|i| {
            let spec = states[*i].spec;
            (spec.name.as_str().to_owned(), spec.names.clone())
        })
        .collect();
    if certs.is_empty() {
        return Default::default();
    }
    let mut checked = cc.check(&certs, deadline).await;
    let mut owners = crate::cnamecheck::Owners::new();
    to_issue.retain(|i| {
        let cert = states[*i].spec.name.as_str();
        match checked.remove(cert) {
            Some(Err(message)) => {
                log.event("order_refused", json!({"cert": cert, "message": message}));
                out.failures.push((
                    cert.to_owned(),
                    CaFailure {
                        message,
                        problem: None,
                        retry_after: None,
                    },
                ));
                false
            }
            Some(Ok(o)) => {
                owners.extend(o);
                true
            }
            None => true,
        }
    });
    owners
}

/// Why a stored order `age` seconds old is too old to resume: the CA has let it expire (its
/// profile's known lifetime), or it is older than `pending_max_age`.
fn stale_reason(cfg: &Config, spec: &CertSpec, age: i64, pending_max_age: i64) -> Option<String> {
    if let Some(l) = policy::profile_limits(&cfg.directory, spec.profile.as_deref()) {
        if age >= l.pending_order_lifetime() {
            return Some(format!(
                "the stored order is {age} s old: Let's Encrypt's `{}` profile keeps pending authorizations {} and orders {}",
                l.profile,
                policy::human_duration(l.pending_authz_lifetime),
                policy::human_duration(l.order_lifetime)
            ));
        }
    }
    (age >= pending_max_age).then(|| {
        format!("the stored order is {age} s old, older than pending_max_age ({pending_max_age} s)")
    })
}

fn same_request(p: &PendingOrder, spec: &CertSpec, cfg: &Config, key_type: KeyType) -> bool {
    p.directory == cfg.directory
        && p.names == spec.sorted_names()
        && p.key_type == key_type
        && p.self_sign == cfg.self_sign
        && (cfg.self_sign || p.profile == spec.profile)
}

#[allow(clippy::too_many_arguments)]
fn new_pending(
    cfg: &Config,
    spec: &CertSpec,
    key_type: KeyType,
    url: Option<String>,
    account_url: Option<String>,
    challenges: Vec<crate::store::ChallengeRecord>,
    replaces: Option<String>,
    now: i64,
) -> PendingOrder {
    PendingOrder {
        url,
        created_at: now,
        directory: cfg.directory.clone(),
        account_url,
        names: spec.sorted_names(),
        key_type,
        staging: cfg.untrusted_target(),
        self_sign: cfg.self_sign,
        challenges,
        profile: spec.profile.clone().filter(|_| !cfg.self_sign),
        replaces,
    }
}

/// Records a CA failure for the backoff and the reply.
pub fn record_failure(meta: &mut Meta, failure: &CaFailure, now: i64) {
    meta.failures = meta.failures.saturating_add(1);
    meta.retry_not_before = Some(policy::retry_not_before(
        meta.failures,
        now,
        failure.retry_after,
    ));
    meta.last_failure = Some(now);
    meta.last_problem = Some(failure.message.clone());
}

#[allow(clippy::too_many_arguments)]
async fn order_all<C: CaConnector>(
    cfg: &Config,
    states: &mut [CertState<'_>],
    to_issue: &[usize],
    connector: &C,
    log: &EventLog,
    deadline: Instant,
    pending_max_age: i64,
    now: i64,
    out: &mut Outcome,
) {
    let account = match connector.open(cfg, deadline).await {
        Ok(a) => a,
        Err(f) => {
            // Without an account no cert can be ordered: each fails with the same cause.
            log.event(
                "account_failed",
                json!({"problem": f.problem, "message": f.message}),
            );
            for i in to_issue {
                let st = &mut states[*i];
                record_failure(&mut st.meta, &f, now);
                out.failures
                    .push((st.spec.name.as_str().to_owned(), f.clone()));
            }
            return;
        }
    };
    let account_url = account.account_url();
    // A profile the CA does not offer is a configuration error: no order, and no backoff (the
    // next run with a fixed `profile` should not wait).
    let mut offered = account.profiles();
    offered.sort();
    let mut to_issue = to_issue.to_vec();
    to_issue.retain(|i| {
        let spec = states[*i].spec;
        let Some(wanted) = spec.profile.as_deref() else {
            return true;
        };
        if offered.iter().any(|p| p == wanted) {
            return true;
        }
        let offers = if offered.is_empty() {
            "it offers no profiles".to_owned()
        } else {
            format!("it offers: {}", offered.join(", "))
        };
        let f = CaFailure {
            message: format!(
                "profile `{wanted}` is not offered by the CA at {}; {offers}",
                cfg.directory
            ),
            problem: None,
            retry_after: None,
        };
        log.event(
            "order_failed",
            json!({"cert": spec.name.as_str(), "message": f.message}),
        );
        out.failures.push((spec.name.as_str().to_owned(), f));
        false
    });
    let jobs = to_issue.iter().map(|i| {
        let st = &states[*i];
        order_one(
            cfg,
            st.spec,
            key_type_of(st.spec, &st.on_disk),
            st.meta.pending.clone(),
            replaced_cert_id(cfg, st),
            &account,
            &account_url,
            pending_max_age,
            now,
            deadline,
        )
    });
    let results = futures_util::future::join_all(jobs).await;
    for (i, result) in to_issue.iter().zip(results) {
        let st = &mut states[*i];
        let name = st.spec.name.as_str().to_owned();
        match result {
            Ok(Ordered {
                pending,
                created,
                replaces_dropped,
                why_new,
            }) => {
                log.event(
                    if created { "order_created" } else { "order_reused" },
                    json!({"cert": name, "order_url": pending.url, "values": pending.challenges.len(),
                           "replaces": pending.replaces, "profile": pending.profile,
                           "replaces_dropped": replaces_dropped, "stored_order_not_reused": why_new}),
                );
                st.order_reason = why_new;
                if let Some(why) = replaces_dropped {
                    out.warnings.push(format!(
                        "cert {name}: the CA refused `replaces` ({why}); ordered without it"
                    ));
                }
                if created {
                    if let Some(old) = &st.meta.pending {
                        // The stored order is replaced: its values are of no use any more.
                        crate::retired::retire(&mut st.meta.retired, old, now);
                    }
                    out.orders_created += 1;
                    // A new order gets a new key.
                    let _ = cfg.store.clear_pending_key(&name);
                }
                for c in &pending.challenges {
                    out.txt.push(TxtRequired {
                        cert: name.clone(),
                        name: c.name.clone(),
                        record: c.record.clone(),
                        value: c.value.clone(),
                        owner: None,
                    });
                }
                st.meta.pending = Some(pending);
            }
            Err(f) => {
                log.event(
                    "order_failed",
                    json!({"cert": name, "problem": f.problem, "message": f.message}),
                );
                record_failure(&mut st.meta, &f, now);
                out.failures.push((name, f));
            }
        }
    }
}

/// What [`order_one`] did.
struct Ordered {
    pending: PendingOrder,
    /// A new order (else the stored one is resumed).
    created: bool,
    /// Why the CA's refusal of `replaces` made it order without.
    replaces_dropped: Option<String>,
    /// Why the stored order was not resumed.
    why_new: Option<String>,
}

/// Reuses the stored order when the CA still has it for the same request, else replaces it.
/// A stored order of this account that is not resumed has its pending authorizations
/// deactivated first: they stop counting against the CA's limits, and the order turns
/// invalid, so a `replaces` it carried may be named again (RFC 9773: a certificate with a live
/// replacement order is `alreadyReplaced`).
#[allow(clippy::too_many_arguments)]
async fn order_one<A: CaAccount>(
    cfg: &Config,
    spec: &CertSpec,
    key_type: KeyType,
    stored: Option<PendingOrder>,
    replaces: Option<String>,
    account: &A,
    account_url: &str,
    pending_max_age: i64,
    now: i64,
    deadline: Instant,
) -> Result<Ordered, CaFailure> {
    let timeout = |what: &str| CaFailure {
        message: format!(
            "{what}: no answer from the CA before the deadline ({}s)",
            cfg.timeout.as_secs()
        ),
        problem: None,
        retry_after: None,
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut why_new = None;
    if let Some(p) = stored {
        let same_account = p.account_url.as_deref() == Some(account_url);
        let same = same_request(&p, spec, cfg, key_type);
        match p.url.clone() {
            Some(url) if same_account && same => {
                let stale = stale_reason(cfg, spec, now - p.created_at, pending_max_age);
                if stale.is_some() {
                    why_new = stale;
                } else {
                    let state = tokio::time::timeout(left(), account.order_state(&url))
                        .await
                        .map_err(|_| timeout("reading the pending order"))?;
                    // A CA that forgot the order (restart) or refuses it means a new order.
                    why_new = Some(match state {
                        Ok(Some(view)) => {
                            let mut ids = view.identifiers.clone();
                            ids.sort();
                            let live = matches!(
                                view.status,
                                OrderStatus::Pending
                                    | OrderStatus::Ready
                                    | OrderStatus::Processing
                                    | OrderStatus::Valid
                            );
                            if live && ids == p.names {
                                let mut reused = p.clone();
                                reused.challenges = view.challenges;
                                return Ok(Ordered {
                                    pending: reused,
                                    created: false,
                                    replaces_dropped: None,
                                    why_new: None,
                                });
                            }
                            if live {
                                "the CA's stored order is for other names".to_owned()
                            } else {
                                format!("the stored order is {:?}", view.status).to_lowercase()
                            }
                        }
                        Ok(None) => "the CA no longer has the stored order".to_owned(),
                        Err(f) => format!("the stored order cannot be read: {}", f.message),
                    });
                }
                // Stale: free the CA's pending authorizations before ordering anew (best effort).
                let _ = tokio::time::timeout(left(), account.deactivate_pending(&url)).await;
            }
            Some(url) if same_account => {
                why_new =
                    Some("the stored order is for other names, key type or profile".to_owned());
                let _ = tokio::time::timeout(left(), account.deactivate_pending(&url)).await;
            }
            Some(_) => {
                why_new = Some("the stored order belongs to another account".to_owned());
            }
            None => {}
        }
    }
    let created = tokio::time::timeout(
        left(),
        account.new_order(&spec.names, replaces.as_deref(), spec.profile.as_deref()),
    )
    .await
    .map_err(|_| timeout("creating the order"))??;
    Ok(Ordered {
        pending: new_pending(
            cfg,
            spec,
            key_type,
            Some(created.url),
            Some(account_url.to_owned()),
            created.challenges,
            created.replaces,
            now,
        ),
        created: true,
        replaces_dropped: created.replaces_dropped,
        why_new,
    })
}

#[cfg(test)]
mod tests {
    //! The ordering decisions against a fake CA that records every call: Let's Encrypt's
    //! per-profile limits before any order, and stored orders the CA has let expire.
    use super::*;
    use crate::ca::{CreatedOrder, OrderView, RenewalWindow};
    use crate::policy::{LE_PRODUCTION, LE_STAGING};
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    const NOW: i64 = 1_800_000_000;
    const ACCOUNT: &str = "https://ca.example.test/acct/1";
    const STORED: &str = "https://ca.example.test/order/stored";

    #[derive(Default, Debug)]
    struct Calls {
        opened: usize,
        /// (names, profile) of every newOrder.
        new_orders: Vec<(Vec<String>, Option<String>)>,
        order_states: Vec<String>,
        deactivated: Vec<String>,
    }

    /// A CA offering Let's Encrypt's profile names. `refuse_over`: it answers a newOrder with
    /// more names than this with Boulder's problem document.
    #[derive(Clone, Default)]
    struct FakeCa {
        calls: Arc<Mutex<Calls>>,
        refuse_over: Option<usize>,
    }

    impl FakeCa {
        fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
            self.calls.lock().unwrap()
        }
    }

    impl CaConnector for FakeCa {
        type Account = FakeCa;
        async fn open(&self, _cfg: &Config, _deadline: Instant) -> Result<FakeCa, CaFailure> {
            self.calls().opened += 1;
            Ok(self.clone())
        }
        async fn renewal_info(
            &self,
            _cfg: &Config,
            _deadline: Instant,
            _ids: &[String],
        ) -> Result<Option<Vec<Result<RenewalWindow, CaFailure>>>, CaFailure> {
            Ok(None)
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
            policy::LE_PROFILES
                .iter()
                .map(|l| l.profile.to_owned())
                .collect()
        }
        async fn new_order(
            &self,
            names: &[certbridge_core::names::Identifier],
            _replaces: Option<&str>,
            profile: Option<&str>,
        ) -> Result<CreatedOrder, CaFailure> {
            let names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
            let count = names.len();
            let mut calls = self.calls();
            calls.new_orders.push((names, profile.map(str::to_owned)));
            if let Some(max) = self.refuse_over.filter(|max| count > *max) {
                let detail = format!(
                    "Error creating new order :: Order cannot contain more than {max} DNS names"
                );
                return Err(CaFailure {
                    message: format!("create an order: malformed: {detail}"),
                    problem: Some(json!({"type": "urn:ietf:params:acme:error:malformed",
                                         "detail": detail, "status": 400})),
                    retry_after: None,
                });
            }
            Ok(CreatedOrder {
                url: format!("https://ca.example.test/order/{}", calls.new_orders.len()),
                challenges: Vec::new(),
                replaces: None,
                replaces_dropped: None,
            })
        }
        async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure> {
            self.calls().order_states.push(url.to_owned());
            Ok(Some(OrderView {
                status: OrderStatus::Pending,
                identifiers: vec!["main.example.test".into()],
                challenges: Vec::new(),
            }))
        }
        async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure> {
            self.calls().deactivated.push(url.to_owned());
            Ok(())
        }
        async fn finalize(
            &self,
            _url: &str,
            _csr: &[u8],
            _deadline: Instant,
        ) -> Result<String, CaFailure> {
            unreachable!("acme_request never finalizes")
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}.example.test")).collect()
    }

    fn config(root: &Path, directory: &str, certs: Value) -> Config {
        let v = json!({"certs": certs, "directory": directory, "cert_root": root.join("certs"),
                       "jitter_seed": "h"});
        let Value::Object(m) = v else { unreachable!() };
        let (common, _own): (config::CommonOptions, RequestOptions) =
            config::split_options(m, OWN_KEYS).unwrap();
        config::validate(common, 60).unwrap()
    }

    fn run_at(cfg: &Config, ca: &FakeCa, check_mode: bool, pending_max_age: i64) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = EventLog::disabled("acme_request");
        rt.block_on(run(
            cfg,
            check_mode,
            pending_max_age,
            policy::DEFAULT_ARI_INTERVAL,
            None,
            None,
            ca,
            &log,
            NOW,
        ))
        .unwrap()
    }

    fn failure<'a>(out: &'a Outcome, cert: &str) -> Option<&'a CaFailure> {
        out.failures.iter().find(|(c, _)| c == cert).map(|(_, f)| f)
    }

    #[test]
    fn lets_encrypt_name_limits_fail_before_ordering_without_backoff() {
        for directory in [
            LE_PRODUCTION,
            LE_STAGING,
            "https://ACME-v02.api.letsencrypt.org/directory/",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let certs = json!({
                "big": {"names": names(26), "profile": "tlsserver"},
                "short": {"names": names(30).into_iter().map(|n| format!("s{n}")).collect::<Vec<_>>(), "profile": "shortlived"},
                "small": {"names": ["small.example.test"], "profile": "tlsserver"},
                "classic": names(26).into_iter().map(|n| format!("c{n}")).collect::<Vec<_>>(),
                "edge": {"names": names(25).into_iter().map(|n| format!("e{n}")).collect::<Vec<_>>(), "profile": "tlsserver"},
            });
            let cfg = config(tmp.path(), directory, certs);
            let ca = FakeCa::default();
            let out = run_at(&cfg, &ca, false, 3600);
            let big = failure(&out, "big").expect("big refused").message.clone();
            assert!(
                big.contains("26 names")
                    && big.contains("`tlsserver` profile allows at most 25")
                    && big.contains("`classic` allows 100"),
                "{big}"
            );
            let short = failure(&out, "short")
                .expect("short refused")
                .message
                .clone();
            assert!(
                short.contains("30 names")
                    && short.contains("`shortlived` profile allows at most 25"),
                "{short}"
            );
            assert_eq!(out.failures.len(), 2, "{:?}", out.failures);
            let ordered: Vec<usize> = ca.calls().new_orders.iter().map(|(n, _)| n.len()).collect();
            let mut ordered = ordered;
            ordered.sort();
            assert_eq!(
                ordered,
                vec![1, 25, 26],
                "{directory}: the others are ordered"
            );
            for cert in ["big", "short"] {
                let meta = cfg.store.load_meta(cert).unwrap().unwrap_or_default();
                assert_eq!(meta.retry_not_before, None, "{cert}: no backoff");
                assert_eq!(meta.failures, 0);
                assert!(meta.pending.is_none());
            }
            assert_eq!(out.certs["big"].action, Action::Issue);
        }
    }

    #[test]
    fn the_limit_check_needs_no_ca_and_holds_in_check_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(
            tmp.path(),
            LE_PRODUCTION,
            json!({"big": {"names": names(26), "profile": "tlsserver"}}),
        );
        let ca = FakeCa::default();
        let out = run_at(&cfg, &ca, true, 3600);
        assert!(failure(&out, "big").is_some());
        let out = run_at(&cfg, &ca, false, 3600);
        assert!(failure(&out, "big").is_some());
        let calls = ca.calls();
        assert_eq!(
            (calls.opened, calls.new_orders.len()),
            (0, 0),
            "no account, no order: {calls:?}"
        );
    }

    #[test]
    fn other_cas_are_asked_and_their_answer_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(
            tmp.path(),
            "https://ca.example.test/dir",
            json!({"big": {"names": names(26), "profile": "tlsserver"}}),
        );
        let ca = FakeCa {
            refuse_over: Some(25),
            ..Default::default()
        };
        let out = run_at(&cfg, &ca, false, 3600);
        let f = failure(&out, "big").expect("the CA refused");
        assert!(
            f.message.contains("more than 25 DNS names"),
            "{}",
            f.message
        );
        assert_eq!(f.problem.as_ref().unwrap()["status"], 400);
        assert_eq!(ca.calls().new_orders.len(), 1);
        // The CA said no: that is a CA failure, with the usual backoff.
        let meta = cfg.store.load_meta("big").unwrap().unwrap();
        assert_eq!(meta.retry_not_before, Some(NOW + 60));
    }

    fn store_pending(cfg: &Config, cert: &str, names: &[&str], age: i64) {
        let spec = cfg.cert(cert).unwrap();
        let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        sorted.sort();
        let meta = Meta {
            pending: Some(PendingOrder {
                url: Some(STORED.into()),
                created_at: NOW - age,
                directory: cfg.directory.clone(),
                account_url: Some(ACCOUNT.into()),
                names: sorted,
                key_type: spec.key_type.resolve(None),
                staging: cfg.untrusted_target(),
                self_sign: false,
                challenges: Vec::new(),
                profile: spec.profile.clone(),
                replaces: None,
            }),
            ..Default::default()
        };
        cfg.store.save_meta(cert, &meta).unwrap();
    }

    /// (resumed, deactivated, order_reason) after one run with a stored order `age` s old.
    fn with_stored(
        directory: &str,
        profile: Option<&str>,
        age: i64,
        pending_max_age: i64,
    ) -> (bool, bool, Option<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let cert = match profile {
            Some(p) => json!({"names": ["main.example.test"], "profile": p}),
            None => json!(["main.example.test"]),
        };
        let cfg = config(tmp.path(), directory, json!({ "main": cert }));
        store_pending(&cfg, "main", &["main.example.test"], age);
        let ca = FakeCa::default();
        let out = run_at(&cfg, &ca, false, pending_max_age);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let calls = ca.calls();
        let resumed = calls.new_orders.is_empty();
        assert_eq!(
            resumed,
            !calls.order_states.is_empty() && calls.deactivated.is_empty()
        );
        assert_eq!(out.orders_created, usize::from(!resumed));
        (
            resumed,
            calls.deactivated == vec![STORED.to_owned()],
            out.certs["main"].order_reason.clone(),
        )
    }

    #[test]
    fn a_stored_order_past_its_profiles_lifetime_is_not_resumed() {
        // tlsserver / shortlived: pending authorizations live 1 h at Let's Encrypt, whatever
        // pending_max_age allows.
        for profile in ["tlsserver", "shortlived"] {
            let (resumed, deactivated, why) =
                with_stored(LE_PRODUCTION, Some(profile), 3700, 86_400);
            assert!(!resumed && deactivated, "{profile}");
            let why = why.unwrap();
            assert!(
                why.contains("3700 s old")
                    && why.contains(&format!("`{profile}` profile"))
                    && why.contains("1 h")
                    && why.contains("8 h"),
                "{why}"
            );
            let (resumed, _, why) = with_stored(LE_STAGING, Some(profile), 1800, 86_400);
            assert!(resumed && why.is_none(), "{profile}: younger than 1 h");
        }
        // classic (named or Let's Encrypt's default): 7 days.
        for profile in [Some("classic"), None] {
            let (resumed, _, _) = with_stored(LE_PRODUCTION, profile, 3 * 86_400, 30 * 86_400);
            assert!(resumed, "{profile:?}");
            let (resumed, _, why) = with_stored(LE_PRODUCTION, profile, 8 * 86_400, 30 * 86_400);
            assert!(!resumed, "{profile:?}");
            assert!(why.unwrap().contains("7 d"));
        }
        // Another CA: only pending_max_age counts.
        let (resumed, _, _) = with_stored(
            "https://ca.example.test/dir",
            Some("tlsserver"),
            3700,
            86_400,
        );
        assert!(resumed);
        let (resumed, deactivated, why) =
            with_stored("https://ca.example.test/dir", Some("tlsserver"), 3700, 3600);
        assert!(!resumed && deactivated);
        assert!(why.unwrap().contains("pending_max_age (3600 s)"));
    }

    #[test]
    fn an_order_no_longer_needed_is_deactivated_before_it_is_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(
            tmp.path(),
            "https://ca.example.test/dir",
            json!({"main": ["main.example.test"]}),
        );
        store_pending(&cfg, "main", &["main.example.test"], 60);
        // Installed and valid: nothing to issue (the same state a moved ARI window leaves).
        let now = crate::now();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["main.example.test".to_owned()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 86_400).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 80 * 86_400).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = cfg.store.cert_dir("main.example.test");
        std::fs::create_dir_all(dir.join("gen-1")).unwrap();
        std::fs::write(dir.join("gen-1/cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("gen-1/privkey.pem"), key.serialize_pem()).unwrap();
        std::os::unix::fs::symlink("gen-1", dir.join("current")).unwrap();
        let ca = FakeCa::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = EventLog::disabled("acme_request");
        let out = rt
            .block_on(run(&cfg, false, 3600, 21_600, None, None, &ca, &log, now))
            .unwrap();
        assert_eq!(out.certs["main"].action, Action::Ok, "{:?}", out.certs);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let calls = ca.calls();
        assert_eq!(calls.deactivated, vec![STORED.to_owned()]);
        assert!(calls.new_orders.is_empty());
        drop(calls);
        let meta = cfg.store.load_meta("main").unwrap().unwrap();
        assert!(meta.pending.is_none());
        // Nothing left to abandon: the next pulse asks nothing.
        let out = rt
            .block_on(run(&cfg, false, 3600, 21_600, None, None, &ca, &log, now))
            .unwrap();
        assert_eq!(out.certs["main"].action, Action::Ok);
        assert_eq!(ca.calls().opened, 1);
    }

    #[test]
    fn a_stored_order_for_other_names_is_deactivated_before_a_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(
            tmp.path(),
            "https://ca.example.test/dir",
            json!({"main": ["main.example.test", "www.example.test"]}),
        );
        store_pending(&cfg, "main", &["main.example.test"], 60);
        let ca = FakeCa::default();
        let out = run_at(&cfg, &ca, false, 3600);
        let calls = ca.calls();
        assert_eq!(calls.deactivated, vec![STORED.to_owned()]);
        assert!(calls.order_states.is_empty());
        assert_eq!(calls.new_orders.len(), 1);
        let why = out.certs["main"].order_reason.clone().unwrap();
        assert!(why.contains("other names"), "{why}");
    }
}
