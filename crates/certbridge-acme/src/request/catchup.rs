//! What both modules do to a cert's metadata before deciding on it: catching up with what a
//! killed run installed, repairing names, removing leftovers; and recording a CA failure.

use super::*;

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
    let order_url = meta
        .pending
        .as_ref()
        .and_then(|p| p.url().map(str::to_owned));
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

/// Records a CA failure for the backoff and the reply.
pub(crate) fn record_failure(meta: &mut Meta, failure: &CaFailure, now: i64) {
    meta.failures = meta.failures.saturating_add(1);
    meta.retry_not_before = Some(policy::retry_not_before(
        meta.failures,
        now,
        failure.retry_after(),
    ));
    meta.last_failure = Some(now);
    meta.last_problem = Some(failure.message());
}
