//! `acme_request` (play 1, on each host): decide per cert; for certs to issue, ensure the
//! account and an order (reusing a live one), and return the dns-01 values to publish.
//! A pulse with nothing to do makes no network call and writes nothing.

use crate::ca::{CaAccount, CaConnector, CaFailure, OrderStatus};
use crate::config::{self, CertSpec, Config};
use crate::eventlog::EventLog;
use crate::metrics::{self, CertMetrics};
use crate::policy::{self, Action, Decision, Wanted};
use crate::store::{Meta, PendingOrder};
use certbridge_core::protocol::{coerce, Failure, Invocation, Reply};
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
    #[serde(default, deserialize_with = "coerce::opt_uint")]
    pub pending_max_age: Option<u64>,
    #[serde(default)]
    pub metrics_file: Option<String>,
}

pub const OWN_KEYS: &[&str] = &["pending_max_age", "metrics_file"];

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
}

/// One value to publish.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TxtRequired {
    pub cert: String,
    pub name: String,
    pub record: String,
    pub value: String,
}

/// The whole result.
#[derive(Debug, Default)]
pub struct Outcome {
    pub certs: BTreeMap<String, CertResult>,
    pub txt: Vec<TxtRequired>,
    pub pending: Vec<String>,
    pub unacked: Vec<String>,
    pub orders_created: usize,
    pub failures: Vec<(String, CaFailure)>,
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn into_reply(self) -> Result<Reply, Failure> {
        let mut reply = Reply::changed(self.orders_created > 0);
        reply.set("certs", &self.certs);
        reply.set("acme_txt_required", &self.txt);
        reply.set("pending", &self.pending);
        reply.set("unacked", &self.unacked);
        for w in self.warnings {
            reply.warn(w);
        }
        if self.failures.is_empty() {
            return Ok(reply);
        }
        let problems: Map<String, Value> = self
            .failures
            .iter()
            .map(|(c, f)| (c.clone(), f.problem.clone().unwrap_or(Value::Null)))
            .collect();
        reply.set("problems", problems);
        let msg = self
            .failures
            .iter()
            .map(|(c, f)| format!("cert {c}: {}", f.message))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Failure::from_reply(msg, reply))
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
    let pending_max_age = own.pending_max_age.unwrap_or(DEFAULT_PENDING_MAX_AGE) as i64;
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
        metrics_file,
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
}

/// Decides and orders. `now` is injected for tests.
pub async fn run<C: CaConnector>(
    cfg: &Config,
    check_mode: bool,
    pending_max_age: i64,
    metrics_file: Option<PathBuf>,
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
    let mut states = Vec::new();
    for spec in &cfg.certs {
        let loaded = store
            .load_meta(spec.name.as_str())
            .map_err(|e| Failure::new(e.to_string()))?;
        let on_disk = store.read_installed(&spec.dir);
        let names = spec.sorted_names();
        let want = Wanted {
            cert: spec.name.as_str(),
            names: &names,
            key_type: spec.key_type,
            directory: &cfg.directory,
            untrusted_target: cfg.untrusted_target(),
            self_sign: cfg.self_sign,
            renew_days: cfg.renew_days,
            forced: cfg.forced(spec.name.as_str()),
            jitter_seed: &cfg.jitter_seed,
        };
        let decision = policy::decide(&want, loaded.as_ref(), &on_disk, now);
        if let Some(w) = &decision.warning {
            out.warnings.push(format!("cert {}: {w}", spec.name));
        }
        log.event(
            "decision",
            json!({"cert": spec.name.as_str(), "action": decision.action, "reason": decision.reason.as_str(),
                   "not_after": on_disk.leaf.as_ref().map(|l| l.not_after), "renew_at": decision.renew_at}),
        );
        states.push(CertState {
            spec,
            had_meta: loaded.is_some(),
            meta: loaded.unwrap_or_default(),
            decision,
            not_after: on_disk.leaf.as_ref().map(|l| l.not_after),
        });
    }

    let to_issue: Vec<usize> = (0..states.len())
        .filter(|i| states[*i].decision.action == Action::Issue)
        .collect();
    if !check_mode && !to_issue.is_empty() {
        if cfg.self_sign {
            for i in &to_issue {
                let st = &mut states[*i];
                let fresh = st
                    .meta
                    .pending
                    .as_ref()
                    .is_none_or(|p| !same_request(p, st.spec, cfg));
                if fresh {
                    st.meta.pending = Some(new_pending(cfg, st.spec, None, None, Vec::new(), now));
                    out.orders_created += 1;
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

    for st in &mut states {
        let name = st.spec.name.as_str().to_owned();
        // A cert that no longer needs issuing forgets its order in flight.
        if st.decision.action == Action::Ok && st.meta.pending.is_some() && !check_mode {
            st.meta.pending = None;
            let _ = store.clear_pending_key(&name);
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
            },
        );
    }
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

fn same_request(p: &PendingOrder, spec: &CertSpec, cfg: &Config) -> bool {
    p.directory == cfg.directory
        && p.names == spec.sorted_names()
        && p.key_type == spec.key_type
        && p.self_sign == cfg.self_sign
}

fn new_pending(
    cfg: &Config,
    spec: &CertSpec,
    url: Option<String>,
    account_url: Option<String>,
    challenges: Vec<crate::store::ChallengeRecord>,
    now: i64,
) -> PendingOrder {
    PendingOrder {
        url,
        created_at: now,
        directory: cfg.directory.clone(),
        account_url,
        names: spec.sorted_names(),
        key_type: spec.key_type,
        staging: cfg.untrusted_target(),
        self_sign: cfg.self_sign,
        challenges,
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
    let jobs = to_issue.iter().map(|i| {
        let st = &states[*i];
        order_one(
            cfg,
            st.spec,
            st.meta.pending.clone(),
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
            Ok((pending, created)) => {
                log.event(
                    if created { "order_created" } else { "order_reused" },
                    json!({"cert": name, "order_url": pending.url, "values": pending.challenges.len()}),
                );
                if created {
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

/// Reuses the stored order when the CA still has it for the same request, else replaces it.
#[allow(clippy::too_many_arguments)]
async fn order_one<A: CaAccount>(
    cfg: &Config,
    spec: &CertSpec,
    stored: Option<PendingOrder>,
    account: &A,
    account_url: &str,
    pending_max_age: i64,
    now: i64,
    deadline: Instant,
) -> Result<(PendingOrder, bool), CaFailure> {
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
    if let Some(p) = stored {
        let same_account = p.account_url.as_deref() == Some(account_url);
        if let (Some(url), true) = (p.url.clone(), same_account && same_request(&p, spec, cfg)) {
            let young = now - p.created_at < pending_max_age;
            if young {
                let state = tokio::time::timeout(left(), account.order_state(&url))
                    .await
                    .map_err(|_| timeout("reading the pending order"))?;
                // A CA that forgot the order (restart) or refuses it means a new order.
                if let Ok(Some(view)) = state {
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
                        return Ok((reused, false));
                    }
                }
            }
            // Stale: free the CA's pending authorizations before ordering anew (best effort).
            let _ = tokio::time::timeout(left(), account.deactivate_pending(&url)).await;
        }
    }
    let created = tokio::time::timeout(left(), account.new_order(&spec.names))
        .await
        .map_err(|_| timeout("creating the order"))??;
    Ok((
        new_pending(
            cfg,
            spec,
            Some(created.url),
            Some(account_url.to_owned()),
            created.challenges,
            now,
        ),
        true,
    ))
}
