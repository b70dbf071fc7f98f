//! Renewal information (RFC 9773): when to check, what a check found, the point chosen in
//! the CA's window.

use super::*;

/// Default of `ari_interval`: how often the CA's renewal information is fetched (seconds)
/// when it gives no Retry-After.
pub const DEFAULT_ARI_INTERVAL: i64 = 6 * 3600;
/// Bounds on the CA's Retry-After for renewal information: at least a minute apart, and at
/// least once a day (a CA may move a window when it plans a revocation).
pub(super) const ARI_RETRY_MIN: i64 = 60;
pub(super) const ARI_RETRY_MAX: i64 = DAY;
/// After a failed check, try again within the hour (the lifetime rule applies meanwhile).
pub(super) const ARI_FAILURE_RETRY: i64 = 3600;

/// The point inside the CA's window at which `leaf` is renewed, when a successful (or, after
/// a failure, the last successful) renewal-information check about this very certificate
/// gave one. A window ending after the certificate expires (a CA error) is capped at 95% of
/// its lifetime, so no certificate is ever left to expire.
pub fn ari_renew_at(ari: Option<&AriState>, leaf: &LeafInfo) -> Option<i64> {
    let ari = ari.filter(|a| a.serial == leaf.serial && a.supported)?;
    let at = ari.renew_at?;
    Some(at.min(leaf.not_after - leaf.lifetime() / 20))
}

/// Whether the renewal information of `leaf` should be fetched at `now`: when the stored
/// check's `next_check` has passed, or, before any check of this certificate, `interval`
/// after it was issued (a new certificate's window is far ahead).
pub fn ari_check_due(ari: Option<&AriState>, leaf: &LeafInfo, interval: i64, now: i64) -> bool {
    match ari.filter(|a| a.serial == leaf.serial) {
        Some(a) => now >= ari_next_check(a, interval),
        None => now >= leaf.not_before + interval,
    }
}

/// When the stored check falls due: the CA's Retry-After, else `interval` after it (within
/// the hour after a failure).
pub fn ari_next_check(a: &AriState, interval: i64) -> i64 {
    let interval = interval.max(0);
    a.next_check.unwrap_or_else(|| match a.last_error {
        Some(_) => a.checked_at + interval.min(ARI_FAILURE_RETRY),
        None => a.checked_at.saturating_add(interval),
    })
}

/// What a CA's renewal information (RFC 9773) says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The suggested window, unix seconds.
    pub start: i64,
    pub end: i64,
    /// The CA's Retry-After (unix seconds), when it sent one.
    pub retry_after: Option<i64>,
    pub explanation_url: Option<String>,
}

/// What one renewal-information check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AriAnswer {
    /// The directory offers no `renewalInfo`.
    Unsupported,
    /// The suggested window and the CA's Retry-After.
    Window(RenewalWindow),
    /// The CA did not answer usefully.
    Failed {
        message: String,
        retry_after: Option<i64>,
    },
}

/// The new stored state after a check at `now`. `random` picks the point inside a window
/// (RFC 9773 section 4.2: uniformly at random); an unchanged window keeps the point chosen
/// before, so frequent pulses do not re-roll it.
pub fn ari_update(
    prev: Option<&AriState>,
    serial: &str,
    cert_id: Option<String>,
    answer: AriAnswer,
    interval: i64,
    now: i64,
    random: u64,
) -> AriState {
    let prev = prev.filter(|a| a.serial == serial);
    let _ = interval;
    let retry = |t: Option<i64>| t.map(|t| t.clamp(now + ARI_RETRY_MIN, now + ARI_RETRY_MAX));
    let base = AriState {
        serial: serial.to_owned(),
        cert_id,
        checked_at: now,
        ..Default::default()
    };
    match answer {
        AriAnswer::Unsupported => base,
        AriAnswer::Window(RenewalWindow {
            start,
            end,
            retry_after,
            explanation_url,
        }) => {
            let end = end.max(start);
            let kept = prev.and_then(|p| {
                (p.window_start == Some(start) && p.window_end == Some(end))
                    .then_some(p.renew_at)
                    .flatten()
            });
            let chosen =
                kept.unwrap_or_else(|| start + (random % ((end - start) as u64 + 1)) as i64);
            AriState {
                supported: true,
                next_check: retry(retry_after),
                window_start: Some(start),
                window_end: Some(end),
                renew_at: Some(chosen),
                explanation_url,
                ..base
            }
        }
        AriAnswer::Failed {
            message,
            retry_after,
        } => {
            let keep = prev.cloned().unwrap_or_default();
            AriState {
                supported: keep.supported,
                next_check: retry(retry_after),
                window_start: keep.window_start,
                window_end: keep.window_end,
                renew_at: keep.renew_at,
                explanation_url: keep.explanation_url,
                last_error: Some(message),
                cert_id: base.cert_id.or(keep.cert_id),
                ..base
            }
        }
    }
}
