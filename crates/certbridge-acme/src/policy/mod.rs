//! The renewal decision: a pure function of what is installed, what was recorded, what the
//! user asks for and the time (injected, so every boundary is testable without waiting).

use crate::certinfo::{KeyType, LeafInfo};
use crate::selfsign;
use crate::store::{AriState, Layout, Meta, OnDisk};
use serde::Serialize;

/// Let's Encrypt's production directory (the default).
pub const LE_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: certificates from it are not trusted.
pub const LE_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The "directory" recorded for certificates of the local self-sign test CA.
pub const SELF_SIGN_DIRECTORY: &str = "self-sign";

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

mod ari;
mod limits;
#[cfg(test)]
mod tests;

pub use ari::*;
pub use limits::*;

/// What to do with one cert this pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep what is installed (also while backing off).
    Ok,
    /// Order (or resume ordering) a new certificate.
    Issue,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Valid,
    Missing,
    NamesChanged,
    KeyTypeChanged,
    DirectoryChanged,
    ProductionKept,
    SelfSigned,
    KeyMismatch,
    Due,
    Forced,
    Backoff,
    Adopted,
    ProfileChanged,
    AriWindow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Valid => "valid",
            Reason::Missing => "missing",
            Reason::NamesChanged => "names_changed",
            Reason::KeyTypeChanged => "key_type_changed",
            Reason::DirectoryChanged => "directory_changed",
            Reason::ProductionKept => "production_kept",
            Reason::SelfSigned => "self_signed",
            Reason::KeyMismatch => "key_mismatch",
            Reason::Due => "due",
            Reason::Forced => "forced",
            Reason::Backoff => "backoff",
            Reason::Adopted => "adopted",
            Reason::ProfileChanged => "profile_changed",
            Reason::AriWindow => "ari_window",
        }
    }
}

/// The decision for one cert, with what the reply reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    /// When the installed certificate becomes due (None without one).
    pub renew_at: Option<i64>,
    /// Set while backing off.
    pub retry_not_before: Option<i64>,
    /// Something the user should know (e.g. an ignored `renew_days`).
    pub warning: Option<String>,
    /// `renew_at` comes from the CA's renewal information (RFC 9773).
    pub by_ari: bool,
}

/// What the user asks for one cert.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub cert: &'a str,
    /// Canonical (lower-case, no trailing dot), distinct names.
    pub names: &'a [String],
    pub key_type: KeyType,
    /// The directory URL to use, or [`SELF_SIGN_DIRECTORY`].
    pub directory: &'a str,
    /// The target directory issues untrusted certificates (staging, or self-sign).
    pub untrusted_target: bool,
    pub self_sign: bool,
    pub renew_days: Option<u64>,
    pub forced: bool,
    /// Seed of the per-host jitter (the host name, or the `jitter_seed` option).
    pub jitter_seed: &'a str,
    /// The ACME profile asked for (None: the CA's default).
    pub profile: Option<&'a str>,
}

/// True for a directory whose certificates are not publicly trusted.
pub fn is_staging(directory: &str, staging_option: bool) -> bool {
    staging_option || directory == LE_STAGING
}

/// A number in [0, 1) fixed per host and cert: spreads a fleet's renewals.
pub fn jitter_fraction(seed: &str, cert: &str) -> f64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(seed.as_bytes());
    ctx.update(b"\0");
    ctx.update(cert.as_bytes());
    let digest = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// When `leaf` becomes due, and a warning if `renew_days` had to be ignored.
pub fn renew_at(leaf: &LeafInfo, renew_days: Option<u64>, jitter: f64) -> (i64, Option<String>) {
    let lifetime = leaf.lifetime();
    let left_fraction = if lifetime < 10 * DAY { 2 } else { 3 };
    let jitter_secs = (lifetime as f64 * 0.10 * jitter) as i64;
    let mut at = leaf.not_after - lifetime / left_fraction - jitter_secs;
    let mut warning = None;
    if let Some(days) = renew_days {
        let threshold = (days as i64).saturating_mul(DAY);
        if threshold >= lifetime / 2 {
            warning = Some(format!(
                "renew_days {days} is half the certificate lifetime ({} days) or more and would renew at every run; it is ignored",
                lifetime / DAY
            ));
        } else {
            at = at.min(leaf.not_after - threshold);
        }
    }
    (at, warning)
}

/// When to try again after the `failures`-th consecutive failure at `now`: the CA's
/// Retry-After when it gave one, else 1 min, 10 min, 100 min, then daily.
pub fn retry_not_before(failures: u32, now: i64, ca_retry_after: Option<i64>) -> i64 {
    if let Some(t) = ca_retry_after.filter(|t| *t > now) {
        return t;
    }
    let delay = match failures {
        0 | 1 => 60,
        2 => 600,
        3 => 6_000,
        _ => DAY,
    };
    now + delay
}

/// The decision for one cert at time `now` (unix seconds).
pub fn decide(want: &Wanted<'_>, meta: Option<&Meta>, on_disk: &OnDisk, now: i64) -> Decision {
    let mut d = Decision {
        action: Action::Ok,
        reason: Reason::Valid,
        renew_at: None,
        retry_not_before: None,
        warning: None,
        by_ari: false,
    };
    let reissue = why_reissue(want, meta, on_disk, now, &mut d);
    if want.forced {
        d.action = Action::Issue;
        d.reason = Reason::Forced;
        return d;
    }
    match reissue {
        Some(reason) if reason == Reason::ProductionKept => d.reason = reason,
        Some(reason) => {
            let backoff = meta.and_then(|m| m.retry_not_before).filter(|t| *t > now);
            if let Some(t) = backoff {
                d.reason = Reason::Backoff;
                d.retry_not_before = Some(t);
            } else {
                d.action = Action::Issue;
                d.reason = reason;
            }
        }
        None => {
            let adopted =
                on_disk.layout == Layout::AcmeSh && meta.is_none_or(|m| m.directory.is_none());
            d.reason = if adopted {
                Reason::Adopted
            } else {
                Reason::Valid
            };
        }
    }
    d
}

fn why_reissue(
    want: &Wanted<'_>,
    meta: Option<&Meta>,
    on_disk: &OnDisk,
    now: i64,
    d: &mut Decision,
) -> Option<Reason> {
    let Some(leaf) = on_disk
        .leaf
        .as_ref()
        .filter(|_| on_disk.layout != Layout::Missing)
    else {
        return Some(Reason::Missing);
    };
    let (at, warning) = renew_at(
        leaf,
        want.renew_days,
        jitter_fraction(want.jitter_seed, want.cert),
    );
    d.renew_at = Some(at);
    d.warning = warning;
    let due = now >= at;
    let managed = on_disk.layout == Layout::Managed;
    let self_signed = selfsign::is_local_ca(&leaf.issuer) || meta.is_some_and(|m| m.self_signed);
    if !want.self_sign && self_signed {
        return Some(Reason::SelfSigned);
    }
    // `want.names` are distinct (validated), so covering them with as many names is equality.
    let covered = want.names.iter().all(|n| leaf.names.contains(n));
    let names_ok = if managed {
        covered && leaf.names.len() == want.names.len()
    } else {
        // An adopted acme.sh certificate may carry more names than asked for.
        covered
    };
    if !names_ok {
        return Some(Reason::NamesChanged);
    }
    // acme.sh-era keys have no recorded type; adopting them must not force a reissue.
    if managed && leaf.key_type != Some(want.key_type) {
        return Some(Reason::KeyTypeChanged);
    }
    if !on_disk.key_matches {
        return Some(Reason::KeyMismatch);
    }
    let issued_here = meta.and_then(|m| m.directory.as_deref());
    if let Some(old_dir) = issued_here {
        // One URL can serve both (a private CA): the recorded staging flag counts too.
        let old_untrusted = meta.is_some_and(|m| m.staging || m.self_signed);
        if old_dir != want.directory || old_untrusted != want.untrusted_target {
            let old_trusted = !old_untrusted;
            let still_valid = leaf.not_after > now && !due;
            if want.untrusted_target && old_trusted && still_valid {
                return Some(Reason::ProductionKept);
            }
            return Some(Reason::DirectoryChanged);
        }
        // Profiles are a CA matter: the local test CA has none.
        let old_profile = meta.and_then(|m| m.profile.as_deref());
        if !want.self_sign && !self_signed && old_profile != want.profile {
            return Some(Reason::ProfileChanged);
        }
    }
    // The CA's renewal information takes precedence over the lifetime rule (RFC 9773).
    if let Some(ari_at) = meta.and_then(|m| ari_renew_at(m.ari.as_ref(), leaf)) {
        let ari = meta.and_then(|m| m.ari.as_ref());
        let failed = ari.is_some_and(|a| a.last_error.is_some());
        // After a failed check the CA's last window still counts, but so does the lifetime rule.
        let lifetime_at = if failed { at } else { i64::MAX };
        let fixed_at = match want.renew_days {
            Some(days) if d.warning.is_none() => leaf.not_after - (days as i64) * DAY,
            _ => i64::MAX,
        };
        let other_at = lifetime_at.min(fixed_at);
        d.renew_at = Some(ari_at.min(other_at));
        d.by_ari = ari_at <= other_at;
        if now >= ari_at && ari_at <= other_at {
            return Some(Reason::AriWindow);
        }
        if now >= other_at {
            return Some(Reason::Due);
        }
        return None;
    }
    if due {
        return Some(Reason::Due);
    }
    None
}
