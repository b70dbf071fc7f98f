//! `acme_finalize` (play 3, on each host): for each pending cert, finalize its order with a key
//! made and persisted on this host (or sign it with the local test CA for `self_sign`), verify
//! the result, install it atomically, and report which certs changed (they drive the handlers)
//! until the role acknowledges them with `ack`.

use crate::ca::{CaAccount, CaConnector, CaFailure};
use crate::certinfo::{self, IssuedSet};
use crate::config::{self, Config};
use crate::eventlog::EventLog;
use crate::policy::SELF_SIGN_DIRECTORY;
use crate::request::{catch_up, record_failure, remove_leftovers};
use crate::selfsign::TestCa;
use crate::store::{Meta, PendingOrder, Reconciled};
use certbridge_core::crash_point;
use certbridge_core::protocol::{Failure, Invocation, Reply};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Default of `timeout` for acme_finalize (seconds).
pub const DEFAULT_TIMEOUT: u64 = 300;

/// acme_finalize's own options.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FinalizeOptions {
    /// Finalize only these certs (default: every pending cert).
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// Handlers of these certs ran: stop reporting them in `updated`.
    #[serde(default)]
    pub ack: Option<Vec<String>>,
    /// Restore the previous generation of these certs.
    #[serde(default)]
    pub rollback: Option<Vec<String>>,
    /// Resolver (address or address:port) on which every value must be visible before the CA
    /// is asked to validate; `off` (or unset) skips the check.
    #[serde(default)]
    pub dns_check: Option<String>,
    /// How long `dns_check` waits for values at most (seconds, 0 to one day; default the
    /// whole `timeout`).
    #[serde(
        default,
        deserialize_with = "certbridge_core::protocol::coerce::opt_seconds::<_, 0, { certbridge_core::protocol::limits::DAY }>"
    )]
    pub dns_check_timeout: Option<u64>,
}

pub const OWN_KEYS: &[&str] = &["only", "ack", "rollback", "dns_check", "dns_check_timeout"];

/// The parsed `dns_check` option.
fn dns_check_server(own: &FinalizeOptions) -> Result<Option<std::net::SocketAddr>, String> {
    match own.dns_check.as_deref().map(str::trim) {
        None | Some("") | Some("off") | Some("false") | Some("no") => Ok(None),
        Some(s) => certbridge_core::names::ServerAddr::parse(s, 53)
            .map(|a| Some(a.0))
            .map_err(|e| format!("dns_check: {e}, or `off`")),
    }
}

/// Per installed cert, in the reply.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub serial: String,
    pub not_after: i64,
    pub issuer: String,
    pub dir: String,
}

/// The whole result.
#[derive(Debug, Default)]
pub struct Outcome {
    pub certs: BTreeMap<String, Installed>,
    /// Certs whose files changed now, plus those whose handler is still owed.
    pub updated: BTreeSet<String>,
    pub changed: bool,
    pub acme_retries: u64,
    pub failures: Vec<(String, CaFailure)>,
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn into_reply(self) -> Result<Reply, Failure> {
        let mut reply = Reply::changed(self.changed);
        reply.set("updated", &self.updated);
        reply.set("certs", &self.certs);
        reply.set("acme_retries", self.acme_retries);
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
    let (common, own): (config::CommonOptions, FinalizeOptions) =
        config::split_options(raw, OWN_KEYS).map_err(|e| Failure::new(e.to_string()))?;
    let cfg = config::validate(common, DEFAULT_TIMEOUT).map_err(|e| Failure::new(e.to_string()))?;
    crate::acme::preflight(&cfg).map_err(Failure::new)?;
    for (option, list) in [
        ("only", &own.only),
        ("ack", &own.ack),
        ("rollback", &own.rollback),
    ] {
        if let Some(unknown) = list.iter().flatten().find(|c| cfg.cert(c).is_none()) {
            return Err(Failure::new(format!(
                "{option}: `{unknown}` is not a declared cert"
            )));
        }
    }
    dns_check_server(&own).map_err(Failure::new)?;
    let log = if inv.check_mode {
        EventLog::disabled("acme_finalize")
    } else {
        EventLog::new(cfg.log_file.clone(), "acme_finalize")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    let mut outcome = rt.block_on(run(&cfg, &own, inv.check_mode, connector, &log))?;
    outcome.warnings.extend(log.warning());
    outcome.into_reply()
}

fn installed(cfg: &Config, dir: &str, set: &IssuedSet) -> Installed {
    Installed {
        serial: set.leaf.serial.clone(),
        not_after: set.leaf.not_after,
        issuer: set.leaf.issuer.clone(),
        dir: cfg.store.cert_dir(dir).display().to_string(),
    }
}

/// Acknowledges, rolls back, finalizes and installs.
pub async fn run<C: CaConnector>(
    cfg: &Config,
    own: &FinalizeOptions,
    check_mode: bool,
    connector: &C,
    log: &EventLog,
) -> Result<Outcome, Failure> {
    let deadline = Instant::now() + cfg.timeout;
    let store = &cfg.store;
    let mut out = Outcome::default();
    let acked = |cert: &str| own.ack.iter().flatten().any(|c| c == cert);
    if check_mode {
        // Say what would happen; touch nothing.
        for spec in &cfg.certs {
            let name = spec.name.as_str();
            let loaded = store.load_meta(name).ok().flatten();
            let had_meta = loaded.is_some();
            let mut meta = loaded.unwrap_or_default();
            if acked(name) {
                meta.handler_owed = false;
            }
            // What a killed run installed but did not record is owed (repairs: not in check mode).
            let _ = catch_up(cfg, spec, &mut meta, had_meta, false, log, crate::now());
            let selected = own
                .only
                .as_ref()
                .is_none_or(|o| o.iter().any(|c| c == name));
            if (meta.pending.is_some() && selected)
                || own.rollback.iter().flatten().any(|c| c == name)
            {
                out.changed = true;
            }
            if meta.handler_owed {
                out.updated.insert(name.to_owned());
            }
        }
        return Ok(out);
    }
    let _lock = store
        .lock(cfg.timeout)
        .map_err(|e| Failure::new(e.to_string()))?;
    remove_leftovers(cfg, log, &mut out.warnings);
    let mut metas: BTreeMap<String, Meta> = BTreeMap::new();
    // What each cert's metadata file holds (the default when there is none): saved only
    // when it differs.
    let mut saved: BTreeMap<String, Meta> = BTreeMap::new();
    let start = crate::now();
    for spec in &cfg.certs {
        let name = spec.name.as_str();
        let loaded = store
            .load_meta(name)
            .map_err(|e| Failure::new(e.to_string()))?;
        let had_meta = loaded.is_some();
        let mut m = loaded.unwrap_or_default();
        saved.insert(name.to_owned(), m.clone());
        // Acknowledgements first: they are about what earlier runs reported, which the
        // metadata records. What `catch_up` finds next was never reported, so never acked.
        if acked(name) {
            if m.handler_owed {
                log.event("ack", json!({"cert": name}));
            }
            m.handler_owed = false;
        }
        let c = catch_up(cfg, spec, &mut m, had_meta, true, log, start);
        if !c.repaired.is_empty() {
            out.changed = true;
        }
        if let Some(e) = c.repair_failed {
            out.failures
                .push((name.to_owned(), local_failure(e.to_string())));
        }
        if let (Reconciled::OrderInstalled { .. } | Reconciled::Adopted { .. }, Some(leaf)) =
            (&c.reconciled, c.on_disk.leaf)
        {
            out.certs.insert(
                name.to_owned(),
                Installed {
                    serial: leaf.serial,
                    not_after: leaf.not_after,
                    issuer: leaf.issuer,
                    dir: store.cert_dir(&spec.dir).display().to_string(),
                },
            );
        }
        metas.insert(name.to_owned(), m);
    }
    // Acknowledgements and what was caught up are kept before anything else can fail.
    for cert in metas.keys() {
        save_if_changed(cfg, cert, &metas, &mut saved)?;
    }
    for cert in own.rollback.iter().flatten() {
        let Some(spec) = cfg.cert(cert) else { continue };
        store
            .rollback(&spec.dir)
            .map_err(|e| Failure::new(format!("rollback of cert {cert}: {e}")))?;
        let on_disk = store.read_installed(&spec.dir);
        let m = metas.entry(cert.clone()).or_default();
        if let Some(leaf) = on_disk.leaf {
            m.adopt_installed(&leaf);
            out.certs.insert(
                cert.clone(),
                Installed {
                    serial: leaf.serial,
                    not_after: leaf.not_after,
                    issuer: leaf.issuer,
                    dir: store.cert_dir(&spec.dir).display().to_string(),
                },
            );
        }
        m.handler_owed = true;
        out.changed = true;
        log.event("rollback", json!({"cert": cert}));
        save_if_changed(cfg, cert, &metas, &mut saved)?;
    }

    let selected: Vec<(String, PendingOrder)> = cfg
        .certs
        .iter()
        .filter(|s| {
            own.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|c| c == s.name.as_str()))
        })
        .filter_map(|s| {
            let p = metas.get(s.name.as_str())?.pending.clone()?;
            Some((s.name.as_str().to_owned(), p))
        })
        .collect();
    let now = crate::now();
    let (self_signed, acme): (Vec<_>, Vec<_>) =
        selected.into_iter().partition(|(_, p)| p.is_self_sign());

    for (cert, pending) in self_signed {
        let result = sign_locally(cfg, &cert, &pending, now);
        finish(cfg, &cert, &pending, result, &mut metas, &mut out, log, now);
        save_if_changed(cfg, &cert, &metas, &mut saved)?;
    }
    let mut acme = acme;
    if let (Some(server), false) = (
        dns_check_server(own).map_err(Failure::new)?,
        acme.is_empty(),
    ) {
        let check_deadline = own
            .dns_check_timeout
            .map(|s| (Instant::now() + Duration::from_secs(s)).min(deadline))
            .unwrap_or(deadline);
        let resolver = crate::txtcheck::resolver(server).map_err(Failure::new)?;
        let jobs = acme
            .iter()
            .map(|(_, p)| crate::txtcheck::wait_visible(&resolver, p.challenges(), check_deadline));
        let missing = futures_util::future::join_all(jobs).await;
        let mut visible = Vec::new();
        for ((cert, pending), missing) in acme.into_iter().zip(missing) {
            if missing.is_empty() {
                visible.push((cert, pending));
                continue;
            }
            let list = missing
                .iter()
                .map(|c| format!("{} {}", c.record, c.value))
                .collect::<Vec<_>>()
                .join(", ");
            let f = local_failure(format!(
                "TXT not published: {list} not visible on {server}; the CA was not asked to validate"
            ));
            log.event("txt_not_published", json!({"cert": cert, "missing": list}));
            // Not the CA's failure: no backoff, the order stays pending for the next pulse.
            out.failures.push((cert, f));
        }
        acme = visible;
    }
    if !acme.is_empty() {
        match connector.open(cfg, deadline).await {
            Ok(account) => {
                let jobs = acme
                    .iter()
                    .map(|(cert, p)| finalize_one(cfg, cert, p, &account, deadline));
                let results = futures_util::future::join_all(jobs).await;
                out.acme_retries = account.retries();
                for ((cert, pending), result) in acme.iter().zip(results) {
                    let result = result.and_then(|set| install(cfg, cert, set));
                    finish(
                        cfg,
                        cert,
                        pending,
                        result,
                        &mut metas,
                        &mut out,
                        log,
                        crate::now(),
                    );
                    save_if_changed(cfg, cert, &metas, &mut saved)?;
                }
            }
            Err(f) => {
                for (cert, pending) in &acme {
                    finish(
                        cfg,
                        cert,
                        pending,
                        Err(f.clone()),
                        &mut metas,
                        &mut out,
                        log,
                        now,
                    );
                }
            }
        }
    }

    for (cert, m) in &metas {
        if m.handler_owed {
            out.updated.insert(cert.clone());
        }
        save_if_changed(cfg, cert, &metas, &mut saved)?;
    }
    crash_point!("after_metas_saved");
    // Only once the metadata no longer points at the order: a crash before this leaves the
    // key the order was finalized with, so a rerun downloads a certificate that matches it
    // (and a key left by a crash after it goes at the next run).
    for (cert, m) in &metas {
        if m.pending.is_none() {
            let _ = store.clear_pending_key(cert);
        }
    }
    Ok(out)
}

/// Records the result of one cert: metadata, reply, log.
#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: &Config,
    cert: &str,
    pending: &PendingOrder,
    result: Result<IssuedSet, CaFailure>,
    metas: &mut BTreeMap<String, Meta>,
    out: &mut Outcome,
    log: &EventLog,
    now: i64,
) {
    let Some(spec) = cfg.cert(cert) else { return };
    let m = metas.entry(cert.to_owned()).or_default();
    match result {
        Ok(set) => {
            m.record_issued(pending, &set.leaf, now);
            out.changed = true;
            log.event(
                "installed",
                json!({"cert": cert, "order_url": pending.url(), "serial": set.leaf.serial,
                       "not_after": set.leaf.not_after, "issuer": set.leaf.issuer}),
            );
            out.certs
                .insert(cert.to_owned(), installed(cfg, &spec.dir, &set));
        }
        Err(f) => {
            log.event(
                "finalize_failed",
                json!({"cert": cert, "order_url": pending.url(), "problem": f.problem(), "message": f.message()}),
            );
            record_failure(m, &f, now);
            out.failures.push((cert.to_owned(), f));
        }
    }
}

/// Saves `cert`'s metadata when it differs from what its file holds. Each cert's metadata is
/// saved as soon as it changes (an install, a rollback), so a kill later in the run loses no
/// other cert's record or acknowledgement.
fn save_if_changed(
    cfg: &Config,
    cert: &str,
    metas: &BTreeMap<String, Meta>,
    saved: &mut BTreeMap<String, Meta>,
) -> Result<(), Failure> {
    let Some(m) = metas.get(cert) else {
        return Ok(());
    };
    if saved.get(cert) == Some(m) {
        return Ok(());
    }
    crash_point!("before_meta_save");
    cfg.store
        .save_meta(cert, m)
        .map_err(|e| Failure::new(e.to_string()))?;
    saved.insert(cert.to_owned(), m.clone());
    Ok(())
}

fn local_failure(message: String) -> CaFailure {
    CaFailure::Local(message)
}

fn sign_locally(
    cfg: &Config,
    cert: &str,
    pending: &PendingOrder,
    now: i64,
) -> Result<IssuedSet, CaFailure> {
    let fail = |e: &dyn std::fmt::Display| local_failure(e.to_string());
    let ca = TestCa::open_or_create(&cfg.store.selfsign_dir()).map_err(|e| fail(&e))?;
    let key_pem = cfg
        .store
        .pending_key(cert, pending.key_type)
        .map_err(|e| fail(&e))?;
    let key = certinfo::load_key(&key_pem).map_err(|e| fail(&e))?;
    let spec = cfg
        .cert(cert)
        .ok_or_else(|| local_failure(format!("{cert} is not declared")))?;
    // The requested order of names: the first is the subject CN.
    let names = spec.name_strings();
    let chain = ca.sign(&key, &names, now).map_err(|e| fail(&e))?;
    let set =
        certinfo::verify_issued(&chain, &key_pem, &pending.names, now).map_err(|e| fail(&e))?;
    install(cfg, cert, set)
}

fn install(cfg: &Config, cert: &str, set: IssuedSet) -> Result<IssuedSet, CaFailure> {
    let spec = cfg
        .cert(cert)
        .ok_or_else(|| local_failure(format!("{cert} is not declared")))?;
    cfg.store.install(&spec.dir, &set).map_err(|e| {
        local_failure(format!(
            "install failed, the previous files are in place: {e}"
        ))
    })?;
    Ok(set)
}

async fn finalize_one<A: CaAccount>(
    cfg: &Config,
    cert: &str,
    pending: &PendingOrder,
    account: &A,
    deadline: Instant,
) -> Result<IssuedSet, CaFailure> {
    // The self-signed orders were taken out before (sign_locally).
    let Some(url) = pending.url() else {
        return Err(local_failure(
            "the pending order is for the local test CA; run acme_request again".into(),
        ));
    };
    if pending.directory != cfg.directory || pending.directory == SELF_SIGN_DIRECTORY {
        return Err(local_failure(format!(
            "the pending order is for {}, not {}; run acme_request again",
            pending.directory, cfg.directory
        )));
    }
    // Persisted before finalizing: a rerun on the same order must present the same key.
    let key_pem = cfg
        .store
        .pending_key(cert, pending.key_type)
        .map_err(|e| local_failure(e.to_string()))?;
    let key = certinfo::load_key(&key_pem).map_err(|e| local_failure(e.to_string()))?;
    let csr = certinfo::csr_der(&key, &pending.names).map_err(|e| local_failure(e.to_string()))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let chain = tokio::time::timeout(left, account.finalize(url, &csr, deadline))
        .await
        .map_err(|_| {
            local_failure(format!(
                "the CA did not issue before the deadline ({}s); the order stays pending",
                cfg.timeout.as_secs()
            ))
        })??;
    certinfo::verify_issued(&chain, &key_pem, &pending.names, crate::now())
        .map_err(|e| local_failure(format!("the CA's certificate was not installed: {e}")))
}

#[cfg(test)]
mod tests;
