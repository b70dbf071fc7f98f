//! Renewal information in acme_request: which certs are due a check, asking the CA, storing
//! its answer and deciding again.

use super::*;

/// A random number for the point inside a renewal window (RFC 9773 asks for a random one).
pub(super) fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // The system RNG failing is not a reason to fail a pulse: the window start is still valid.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_be_bytes(b)
}

/// The installed certificate's ARI id, when it was issued through this directory (ARI ids
/// only mean something to the CA that issued the certificate).
pub(super) fn replaced_cert_id(cfg: &Config, st: &CertState<'_>) -> Option<String> {
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
pub(super) async fn check_renewal_info<C: CaConnector>(
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
                Ok(w) => AriAnswer::Window(w),
                Err(f) => AriAnswer::Failed {
                    message: f.message(),
                    retry_after: f.retry_after(),
                },
            })
            .collect(),
        Err(f) => vec![
            AriAnswer::Failed {
                message: f.message(),
                retry_after: f.retry_after(),
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
