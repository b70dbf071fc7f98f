//! `acme_request` (play 1, on each host): decide per cert; for certs to issue, ensure the
//! account and an order (reusing a live one), and return the dns-01 values to publish.
//! A pulse with nothing to do makes no network call and writes nothing. When the CA offers
//! renewal information (RFC 9773), each certificate's window is fetched at most every
//! `ari_interval` (or the CA's Retry-After), without an account, and the point chosen in it is
//! stored; renewals name the certificate they replace.

use crate::budget;
use crate::ca::{CaAccount, CaConnector, CaFailure, OrderStatus};
use crate::certinfo::KeyType;
use crate::cnamecheck::{CnameCheck, CnameCheckInput};
use crate::config::{self, CertSpec, Config};
use crate::eventlog::EventLog;
use crate::metrics::{self, CertMetrics};
use crate::policy::{self, Action, Decision, Wanted};
use crate::policy::{AriAnswer, Reason};
use crate::store::{AriState, OnDisk, Reconciled, StoreError};
use crate::store::{CaOrder, Meta, OrderAt, PendingOrder};
use certbridge_core::protocol::{coerce, limits, Failure, Invocation, Reply};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod ari;
mod catchup;
mod order;
#[cfg(test)]
mod tests;

use ari::*;
pub(crate) use catchup::*;
use order::*;

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
    /// Set when the controller plans the rate budget: the new certs it admitted (see budget).
    #[serde(default)]
    pub admit: Option<Vec<String>>,
}

pub const OWN_KEYS: &[&str] = &[
    "pending_max_age",
    "metrics_file",
    "ari_interval",
    "cname_check",
    "admit",
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
    /// Waits for the controller's rate budget (see budget): nothing was ordered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// When a new certificate was last ordered for it under the rate budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_cert_at: Option<i64>,
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

/// One http-01 token to serve (acme_http_publish writes it on the webroot hosts).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HttpRequired {
    pub cert: String,
    pub name: String,
    pub token: String,
    pub key_authorization: String,
    pub webroot: String,
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
    pub http: Vec<HttpRequired>,
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
        reply.set("acme_http_required", &self.http);
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
        own.admit.as_deref(),
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

/// Decides and orders. `now` is injected for tests.
#[allow(clippy::too_many_arguments)]
pub async fn run<C: CaConnector>(
    cfg: &Config,
    check_mode: bool,
    pending_max_age: i64,
    ari_interval: i64,
    metrics_file: Option<PathBuf>,
    cname: Option<&CnameCheck>,
    admit: Option<&[String]>,
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
                CaFailure::local(e.to_string()),
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
    let mut held = std::collections::BTreeSet::new();
    to_issue.retain(|i| {
        let st = &states[*i];
        let wait = budget::held(
            admit,
            st.spec.name.as_str(),
            st.decision.reason,
            st.meta.pending.is_some(),
        );
        if wait {
            held.insert(*i);
        }
        !wait
    });
    if !cfg.self_sign {
        refuse_bad_webroots(&states, &mut to_issue, log, &mut out);
    }
    // Held certs are checked when the round admits them (the second call orders them).
    let mut owners = crate::cnamecheck::Owners::new();
    if let Some(cc) = cname.filter(|_| !cfg.self_sign) {
        owners = refuse_bad_cnames(cc, &states, &mut to_issue, log, deadline, &mut out).await;
    }
    if admit.is_some() && !check_mode {
        for i in &to_issue {
            let st = &mut states[*i];
            if budget::counts_against_limits(st.decision.reason) && st.meta.pending.is_none() {
                st.meta.new_cert_at = Some(now);
            }
        }
    }
    if !check_mode && !to_issue.is_empty() {
        if cfg.self_sign {
            for i in &to_issue {
                let st = &mut states[*i];
                let key_type = key_type_of(st.spec, &st.on_disk);
                let fresh = st
                    .meta
                    .pending
                    .as_ref()
                    .is_none_or(|p| !same_request(p, st.spec, cfg, key_type));
                if fresh {
                    st.meta.pending =
                        Some(new_pending(cfg, st.spec, key_type, OrderAt::SelfSign, now));
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

    for (i, st) in states.iter_mut().enumerate() {
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
                held: held.contains(&i),
                new_cert_at: st.meta.new_cert_at,
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
                    // In backoff: from an earlier pulse's failure or this one's.
                    next_try: st.meta.retry_not_before.filter(|t| *t > now),
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
        .flat_map(|p| p.challenges().iter().map(|c| c.value.as_str()))
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
