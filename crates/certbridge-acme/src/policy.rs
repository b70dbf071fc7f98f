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

/// What Let's Encrypt allows under one of its profiles (letsencrypt.org/docs/profiles,
/// 2026-07): checked before ordering, so a configuration it would refuse fails without an
/// order, and a stored order it has let expire is not resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileLimits {
    /// The profile (`classic` also for orders that name none: Let's Encrypt's default).
    pub profile: &'static str,
    /// Names (identifiers) per certificate.
    pub max_names: usize,
    /// Seconds a pending authorization lives.
    pub pending_authz_lifetime: i64,
    /// Seconds an order lives.
    pub order_lifetime: i64,
}

impl ProfileLimits {
    /// How long after its creation a pending order can still be completed: until its
    /// authorizations or the order itself expire, whichever is first.
    pub fn pending_order_lifetime(&self) -> i64 {
        self.pending_authz_lifetime.min(self.order_lifetime)
    }
}

/// Let's Encrypt's profiles: `classic` (90-day certificates), `tlsserver` (45 days) and
/// `shortlived` (160 hours, otherwise like `tlsserver`).
pub const LE_PROFILES: [ProfileLimits; 3] = [
    ProfileLimits {
        profile: "classic",
        max_names: 100,
        pending_authz_lifetime: 7 * DAY,
        order_lifetime: 7 * DAY,
    },
    ProfileLimits {
        profile: "tlsserver",
        max_names: 25,
        pending_authz_lifetime: HOUR,
        order_lifetime: 8 * HOUR,
    },
    ProfileLimits {
        profile: "shortlived",
        max_names: 25,
        pending_authz_lifetime: HOUR,
        order_lifetime: 8 * HOUR,
    },
];

/// True for Let's Encrypt's production and staging directories (by host: the path and a
/// trailing slash do not matter).
pub fn is_letsencrypt(directory: &str) -> bool {
    let host = |url: &str| -> Option<String> {
        let rest = url.strip_prefix("https://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let host = authority.rsplit('@').next()?;
        let host = host.strip_suffix(":443").unwrap_or(host);
        Some(host.trim_end_matches('.').to_ascii_lowercase())
    };
    let Some(h) = host(directory) else {
        return false;
    };
    [LE_PRODUCTION, LE_STAGING]
        .iter()
        .any(|known| host(known).as_deref() == Some(h.as_str()))
}

/// The limits of `profile` (None: the CA's default) at `directory`, when the CA is one whose
/// limits are known (Let's Encrypt) and so is the profile; other CAs' answers are reported
/// as they come.
pub fn profile_limits(directory: &str, profile: Option<&str>) -> Option<ProfileLimits> {
    if !is_letsencrypt(directory) {
        return None;
    }
    let name = profile.unwrap_or("classic");
    LE_PROFILES.iter().find(|l| l.profile == name).copied()
}

/// Why `count` names cannot be ordered under `limits` (None: they can), naming both numbers.
pub fn too_many_names(limits: &ProfileLimits, count: usize, asked: Option<&str>) -> Option<String> {
    if count <= limits.max_names {
        return None;
    }
    let which = match asked {
        Some(p) => format!("`{p}` profile"),
        None => format!("default profile (`{}`)", limits.profile),
    };
    let more: Vec<String> = LE_PROFILES
        .iter()
        .filter(|l| l.max_names >= count)
        .map(|l| format!("`{}` allows {}", l.profile, l.max_names))
        .collect();
    let instead = if more.is_empty() {
        "split the names over several certs".to_owned()
    } else {
        format!(
            "split the names over several certs or choose another profile ({})",
            more.join(", ")
        )
    };
    Some(format!(
        "{count} names, but Let's Encrypt's {which} allows at most {} per certificate: {instead}",
        limits.max_names
    ))
}

/// A number of seconds as people say it (`1 h`, `7 d`, `90 min`, `45 s`).
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s >= DAY && s % DAY == 0 => format!("{} d", s / DAY),
        s if s >= HOUR && s % HOUR == 0 => format!("{} h", s / HOUR),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Default of `ari_interval`: how often the CA's renewal information is fetched (seconds)
/// when it gives no Retry-After.
pub const DEFAULT_ARI_INTERVAL: i64 = 6 * 3600;
/// Bounds on the CA's Retry-After for renewal information: at least a minute apart, and at
/// least once a day (a CA may move a window when it plans a revocation).
const ARI_RETRY_MIN: i64 = 60;
const ARI_RETRY_MAX: i64 = DAY;
/// After a failed check, try again within the hour (the lifetime rule applies meanwhile).
const ARI_FAILURE_RETRY: i64 = 3600;

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

/// What one renewal-information check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AriAnswer {
    /// The directory offers no `renewalInfo`.
    Unsupported,
    /// The suggested window (unix seconds) and the CA's Retry-After.
    Window {
        start: i64,
        end: i64,
        retry_after: Option<i64>,
        explanation_url: Option<String>,
    },
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
        AriAnswer::Window {
            start,
            end,
            retry_after,
            explanation_url,
        } => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certinfo;
    use rcgen::KeyPair;

    const NOW: i64 = 1_800_000_000;
    const PROD: &str = "https://ca.example/dir";

    struct Fixture {
        key: KeyPair,
        names: Vec<String>,
    }

    fn fixture() -> Fixture {
        Fixture {
            key: KeyType::EcP256.generate().unwrap(),
            names: vec!["a.example.test".into(), "www.example.test".into()],
        }
    }

    fn leaf(key: &KeyPair, names: &[String], not_before: i64, lifetime: i64) -> LeafInfo {
        let mut p = rcgen::CertificateParams::new(names.to_vec()).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_before + lifetime).unwrap();
        let pem = p.self_signed(key).unwrap().pem();
        certinfo::leaf_info_pem(&pem, "test").unwrap()
    }

    fn managed(leaf: LeafInfo) -> OnDisk {
        OnDisk {
            layout: Layout::Managed,
            leaf: Some(leaf),
            key_matches: true,
        }
    }

    fn meta(names: &[String]) -> Meta {
        Meta {
            names: names.to_vec(),
            key_type: Some(KeyType::EcP256),
            directory: Some(PROD.into()),
            ..Default::default()
        }
    }

    fn want<'a>(f: &'a Fixture) -> Wanted<'a> {
        Wanted {
            cert: "main",
            names: &f.names,
            key_type: KeyType::EcP256,
            directory: PROD,
            untrusted_target: false,
            self_sign: false,
            renew_days: None,
            forced: false,
            jitter_seed: "host1",
            profile: None,
        }
    }

    fn decide_at(w: &Wanted<'_>, m: Option<&Meta>, disk: &OnDisk, now: i64) -> (Action, Reason) {
        let d = decide(w, m, disk, now);
        (d.action, d.reason)
    }

    #[test]
    fn missing_valid_and_forced() {
        let f = fixture();
        let none = OnDisk {
            layout: Layout::Missing,
            leaf: None,
            key_matches: false,
        };
        assert_eq!(
            decide_at(&want(&f), None, &none, NOW),
            (Action::Issue, Reason::Missing)
        );
        let disk = managed(leaf(&f.key, &f.names, NOW - DAY, 90 * DAY));
        let m = meta(&f.names);
        assert_eq!(
            decide_at(&want(&f), Some(&m), &disk, NOW),
            (Action::Ok, Reason::Valid)
        );
        let forced = Wanted {
            forced: true,
            ..want(&f)
        };
        assert_eq!(
            decide_at(&forced, Some(&m), &disk, NOW),
            (Action::Issue, Reason::Forced)
        );
    }

    #[test]
    fn names_and_key_type_changes_reissue() {
        let f = fixture();
        let m = meta(&f.names);
        let disk = managed(leaf(&f.key, &f.names[..1], NOW - DAY, 90 * DAY));
        assert_eq!(
            decide_at(&want(&f), Some(&m), &disk, NOW),
            (Action::Issue, Reason::NamesChanged)
        );
        let disk = managed(leaf(&f.key, &f.names, NOW - DAY, 90 * DAY));
        let w = Wanted {
            key_type: KeyType::EcP384,
            ..want(&f)
        };
        assert_eq!(
            decide_at(&w, Some(&m), &disk, NOW),
            (Action::Issue, Reason::KeyTypeChanged)
        );
        let mut mismatch = disk.clone();
        mismatch.key_matches = false;
        assert_eq!(
            decide_at(&want(&f), Some(&m), &mismatch, NOW),
            (Action::Issue, Reason::KeyMismatch)
        );
    }

    #[test]
    fn directory_changes_reissue_except_production_to_staging() {
        let f = fixture();
        let disk = managed(leaf(&f.key, &f.names, NOW - DAY, 90 * DAY));
        let m = meta(&f.names);
        let other = Wanted {
            directory: "https://other.example/dir",
            ..want(&f)
        };
        assert_eq!(
            decide_at(&other, Some(&m), &disk, NOW),
            (Action::Issue, Reason::DirectoryChanged)
        );
        let staging = Wanted {
            directory: LE_STAGING,
            untrusted_target: is_staging(LE_STAGING, false),
            ..want(&f)
        };
        assert_eq!(
            decide_at(&staging, Some(&m), &disk, NOW),
            (Action::Ok, Reason::ProductionKept)
        );
        let forced = Wanted {
            forced: true,
            ..staging.clone()
        };
        assert_eq!(
            decide_at(&forced, Some(&m), &disk, NOW),
            (Action::Issue, Reason::Forced)
        );
        // Staging -> production reissues.
        let staged = Meta {
            staging: true,
            directory: Some(LE_STAGING.into()),
            ..m.clone()
        };
        assert_eq!(
            decide_at(&want(&f), Some(&staged), &disk, NOW),
            (Action::Issue, Reason::DirectoryChanged)
        );
        // One URL for both (a private CA): staging -> production still reissues, the
        // other way keeps the production certificate.
        let same_url_staged = Meta {
            staging: true,
            directory: Some(want(&f).directory.into()),
            ..m.clone()
        };
        assert_eq!(
            decide_at(&want(&f), Some(&same_url_staged), &disk, NOW),
            (Action::Issue, Reason::DirectoryChanged)
        );
        let same_url_staging = Wanted {
            untrusted_target: true,
            ..want(&f)
        };
        assert_eq!(
            decide_at(&same_url_staging, Some(&m), &disk, NOW),
            (Action::Ok, Reason::ProductionKept)
        );
        // A kept production certificate is still renewed when it becomes due.
        let late = NOW + 80 * DAY;
        assert_eq!(
            decide_at(&staging, Some(&m), &disk, late),
            (Action::Issue, Reason::DirectoryChanged)
        );
    }

    #[test]
    fn self_signed_reissues_only_without_self_sign() {
        let f = fixture();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = selfsign::TestCa::open_or_create(ca_dir.path()).unwrap();
        let chain = ca.sign(&f.key, &f.names, NOW - DAY).unwrap();
        let l = certinfo::leaf_info_pem(&chain, "t").unwrap();
        let disk = managed(l);
        let m = Meta {
            directory: Some(SELF_SIGN_DIRECTORY.into()),
            self_signed: true,
            ..meta(&f.names)
        };
        assert_eq!(
            decide_at(&want(&f), Some(&m), &disk, NOW),
            (Action::Issue, Reason::SelfSigned)
        );
        let ss = Wanted {
            self_sign: true,
            directory: SELF_SIGN_DIRECTORY,
            untrusted_target: true,
            ..want(&f)
        };
        assert_eq!(
            decide_at(&ss, Some(&m), &disk, NOW),
            (Action::Ok, Reason::Valid)
        );
        // Self-sign mode keeps a still-valid CA certificate (a debugging switch).
        let prod_disk = managed(leaf(&f.key, &f.names, NOW - DAY, 90 * DAY));
        assert_eq!(
            decide_at(&ss, Some(&meta(&f.names)), &prod_disk, NOW),
            (Action::Ok, Reason::ProductionKept)
        );
    }

    #[test]
    fn due_boundaries_one_third_and_one_half_with_jitter() {
        let f = fixture();
        let m = meta(&f.names);
        for (lifetime, fraction) in [(90 * DAY, 3), (6 * DAY, 2)] {
            let l = leaf(&f.key, &f.names, NOW, lifetime);
            let j = jitter_fraction("host1", "main");
            let expected = l.not_after - lifetime / fraction - (lifetime as f64 * 0.1 * j) as i64;
            let disk = managed(l);
            let d = decide(&want(&f), Some(&m), &disk, NOW);
            assert_eq!(d.renew_at, Some(expected));
            assert_eq!(
                decide_at(&want(&f), Some(&m), &disk, expected - 1),
                (Action::Ok, Reason::Valid)
            );
            assert_eq!(
                decide_at(&want(&f), Some(&m), &disk, expected),
                (Action::Issue, Reason::Due)
            );
            // Jitter moves renewal earlier by at most 10% of the lifetime.
            assert!(expected <= NOW + lifetime - lifetime / fraction);
            assert!(expected > NOW + lifetime - lifetime / fraction - lifetime / 10);
        }
        // Lifetime exactly 10 days uses one third.
        let l = leaf(&f.key, &f.names, NOW, 10 * DAY);
        let (at, _) = renew_at(&l, None, 0.0);
        assert_eq!(at, l.not_after - 10 * DAY / 3);
    }

    #[test]
    fn jitter_is_deterministic_per_host_and_cert_and_spreads() {
        assert_eq!(jitter_fraction("h", "c"), jitter_fraction("h", "c"));
        assert_ne!(jitter_fraction("h1", "c"), jitter_fraction("h2", "c"));
        let values: Vec<f64> = (0..1000)
            .map(|i| jitter_fraction(&format!("host{i}"), "c"))
            .collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..600).contains(&low), "{low}");
    }

    #[test]
    fn renew_days_applies_below_half_the_lifetime_else_warns() {
        let f = fixture();
        let m = meta(&f.names);
        let l = leaf(&f.key, &f.names, NOW, 90 * DAY);
        let w = Wanted {
            renew_days: Some(40),
            ..want(&f)
        };
        let disk = managed(l.clone());
        let d = decide(&w, Some(&m), &disk, NOW);
        assert_eq!(d.renew_at, Some(l.not_after - 40 * DAY));
        assert!(d.warning.is_none());
        assert_eq!(
            decide_at(&w, Some(&m), &disk, l.not_after - 40 * DAY),
            (Action::Issue, Reason::Due)
        );
        let too_big = Wanted {
            renew_days: Some(45),
            ..want(&f)
        };
        let d = decide(&too_big, Some(&m), &disk, NOW);
        assert!(d.warning.as_deref().unwrap_or("").contains("ignored"));
        assert_eq!(d.action, Action::Ok);
    }

    #[test]
    fn backoff_schedule_and_retry_after() {
        assert_eq!(retry_not_before(1, NOW, None), NOW + 60);
        assert_eq!(retry_not_before(2, NOW, None), NOW + 600);
        assert_eq!(retry_not_before(3, NOW, None), NOW + 6000);
        assert_eq!(retry_not_before(4, NOW, None), NOW + DAY);
        assert_eq!(retry_not_before(9, NOW, None), NOW + DAY);
        assert_eq!(retry_not_before(1, NOW, Some(NOW + 7200)), NOW + 7200);
        assert_eq!(retry_not_before(1, NOW, Some(NOW - 5)), NOW + 60);
    }

    #[test]
    fn backoff_holds_until_retry_not_before_and_force_overrides() {
        let f = fixture();
        let none = OnDisk {
            layout: Layout::Missing,
            leaf: None,
            key_matches: false,
        };
        let m = Meta {
            retry_not_before: Some(NOW + 60),
            failures: 1,
            ..Default::default()
        };
        let d = decide(&want(&f), Some(&m), &none, NOW);
        assert_eq!(
            (d.action, d.reason, d.retry_not_before),
            (Action::Ok, Reason::Backoff, Some(NOW + 60))
        );
        assert_eq!(
            decide_at(&want(&f), Some(&m), &none, NOW + 60),
            (Action::Issue, Reason::Missing)
        );
        let forced = Wanted {
            forced: true,
            ..want(&f)
        };
        assert_eq!(
            decide_at(&forced, Some(&m), &none, NOW),
            (Action::Issue, Reason::Forced)
        );
    }

    #[test]
    fn acme_sh_directory_is_adopted_unless_due_or_not_covering() {
        let f = fixture();
        let mut more = f.names.clone();
        more.push("extra.example.test".into());
        let disk = OnDisk {
            layout: Layout::AcmeSh,
            leaf: Some(leaf(&f.key, &more, NOW - DAY, 90 * DAY)),
            key_matches: true,
        };
        // Key type is not checked for adopted keys (acme.sh did not record one).
        let rsa = Wanted {
            key_type: KeyType::Rsa4096,
            ..want(&f)
        };
        assert_eq!(
            decide_at(&rsa, None, &disk, NOW),
            (Action::Ok, Reason::Adopted)
        );
        assert_eq!(
            decide_at(&want(&f), None, &disk, NOW + 70 * DAY),
            (Action::Issue, Reason::Due)
        );
        let fewer = OnDisk {
            leaf: Some(leaf(&f.key, &f.names[..1], NOW - DAY, 90 * DAY)),
            ..disk.clone()
        };
        assert_eq!(
            decide_at(&want(&f), None, &fewer, NOW),
            (Action::Issue, Reason::NamesChanged)
        );
        let mismatch = OnDisk {
            key_matches: false,
            ..disk
        };
        assert_eq!(
            decide_at(&want(&f), None, &mismatch, NOW),
            (Action::Issue, Reason::KeyMismatch)
        );
    }

    fn window(l: &LeafInfo, start: i64, end: i64, random: u64) -> AriState {
        let answer = AriAnswer::Window {
            start,
            end,
            retry_after: None,
            explanation_url: None,
        };
        ari_update(
            None,
            &l.serial,
            None,
            answer,
            DEFAULT_ARI_INTERVAL,
            NOW,
            random,
        )
    }

    #[test]
    fn ari_window_takes_precedence_over_the_lifetime_rule() {
        let f = fixture();
        let l = leaf(&f.key, &f.names, NOW - DAY, 90 * DAY);
        let disk = managed(l.clone());
        let (lifetime_at, _) = renew_at(&l, None, jitter_fraction("host1", "main"));
        // A window after the lifetime rule's point: ARI wins, the cert is kept past it.
        let later = Meta {
            ari: Some(window(&l, lifetime_at + DAY, lifetime_at + 2 * DAY, 0)),
            ..meta(&f.names)
        };
        let d = decide(&want(&f), Some(&later), &disk, lifetime_at + 1);
        assert_eq!((d.action, d.reason), (Action::Ok, Reason::Valid));
        assert_eq!(d.renew_at, Some(lifetime_at + DAY));
        assert!(d.by_ari);
        assert_eq!(
            decide_at(&want(&f), Some(&later), &disk, lifetime_at + DAY),
            (Action::Issue, Reason::AriWindow)
        );
        // A window earlier than the lifetime rule: renewed inside it.
        let earlier = Meta {
            ari: Some(window(&l, NOW + 10 * DAY, NOW + 12 * DAY, 7)),
            ..meta(&f.names)
        };
        assert_eq!(
            decide_at(&want(&f), Some(&earlier), &disk, NOW + 10 * DAY + 6),
            (Action::Ok, Reason::Valid)
        );
        assert_eq!(
            decide_at(&want(&f), Some(&earlier), &disk, NOW + 10 * DAY + 7),
            (Action::Issue, Reason::AriWindow)
        );
        // A window in the past (a revocation is coming): renew now.
        let past = Meta {
            ari: Some(window(&l, NOW - 2 * DAY, NOW - DAY, 12345)),
            ..meta(&f.names)
        };
        assert_eq!(
            decide_at(&want(&f), Some(&past), &disk, NOW),
            (Action::Issue, Reason::AriWindow)
        );
        // State about another certificate (the previous serial) is ignored.
        let mut stale = later.clone();
        if let Some(a) = stale.ari.as_mut() {
            a.serial = "00:01".into();
        }
        assert_eq!(
            decide_at(&want(&f), Some(&stale), &disk, lifetime_at + 1),
            (Action::Issue, Reason::Due)
        );
        // A window past the expiry (a CA error) is capped at 95% of the lifetime.
        let broken = Meta {
            ari: Some(window(&l, l.not_after + DAY, l.not_after + 2 * DAY, 0)),
            ..meta(&f.names)
        };
        let d = decide(&want(&f), Some(&broken), &disk, NOW);
        assert_eq!(d.renew_at, Some(l.not_after - l.lifetime() / 20));
    }

    #[test]
    fn a_failed_check_brings_the_lifetime_rule_back() {
        let f = fixture();
        let l = leaf(&f.key, &f.names, NOW - DAY, 90 * DAY);
        let disk = managed(l.clone());
        let (lifetime_at, _) = renew_at(&l, None, jitter_fraction("host1", "main"));
        let ok = window(&l, lifetime_at + DAY, lifetime_at + 2 * DAY, 0);
        let failed = ari_update(
            Some(&ok),
            &l.serial,
            None,
            AriAnswer::Failed {
                message: "HTTP 503".into(),
                retry_after: None,
            },
            DEFAULT_ARI_INTERVAL,
            NOW + 60,
            99,
        );
        assert_eq!(failed.renew_at, ok.renew_at, "the last window is kept");
        assert_eq!(failed.next_check, None);
        assert_eq!(
            ari_next_check(&failed, DEFAULT_ARI_INTERVAL),
            NOW + 60 + 3600
        );
        assert_eq!(ari_next_check(&failed, 600), NOW + 60 + 600);
        let m = Meta {
            ari: Some(failed),
            ..meta(&f.names)
        };
        assert_eq!(
            decide_at(&want(&f), Some(&m), &disk, lifetime_at),
            (Action::Issue, Reason::Due)
        );
    }

    #[test]
    fn ari_point_is_chosen_once_per_window_and_checks_follow_retry_after() {
        let f = fixture();
        let l = leaf(&f.key, &f.names, NOW - DAY, 90 * DAY);
        let answer = |start: i64, retry_after: Option<i64>| AriAnswer::Window {
            start,
            end: start + DAY,
            retry_after,
            explanation_url: None,
        };
        let first = ari_update(
            None,
            &l.serial,
            None,
            answer(NOW + 50 * DAY, Some(NOW + 7200)),
            21600,
            NOW,
            1000,
        );
        assert_eq!(first.renew_at, Some(NOW + 50 * DAY + 1000));
        assert_eq!(first.next_check, Some(NOW + 7200));
        // Same window, new random number: the point stays.
        let again = ari_update(
            Some(&first),
            &l.serial,
            None,
            answer(NOW + 50 * DAY, None),
            21600,
            NOW + 7200,
            5,
        );
        assert_eq!(again.renew_at, first.renew_at);
        assert_eq!(ari_next_check(&again, 21600), NOW + 7200 + 21600);
        // A moved window: a new point inside it.
        let moved = ari_update(
            Some(&again),
            &l.serial,
            None,
            answer(NOW + 40 * DAY, None),
            21600,
            NOW + 9000,
            5,
        );
        assert_eq!(moved.renew_at, Some(NOW + 40 * DAY + 5));
        // Retry-After is bounded: at least a minute, at most a day.
        let soon = ari_update(
            None,
            &l.serial,
            None,
            answer(NOW, Some(NOW + 1)),
            21600,
            NOW,
            0,
        );
        assert_eq!(soon.next_check, Some(NOW + 60));
        let late = ari_update(
            None,
            &l.serial,
            None,
            answer(NOW, Some(NOW + 30 * DAY)),
            21600,
            NOW,
            0,
        );
        assert_eq!(late.next_check, Some(NOW + DAY));
        // Every point lands inside the window.
        for r in [0u64, 1, 86_400, 86_401, u64::MAX] {
            let s = ari_update(None, &l.serial, None, answer(NOW, None), 21600, NOW, r);
            let at = s.renew_at.unwrap();
            assert!((NOW..=NOW + DAY).contains(&at), "{r}: {at}");
        }
        let none = ari_update(None, &l.serial, None, AriAnswer::Unsupported, 21600, NOW, 0);
        assert!(!none.supported);
        assert_eq!(ari_next_check(&none, 21600), NOW + 21600);
        assert_eq!(ari_next_check(&none, 600), NOW + 600);
        // No check before `interval` after issuance, then at `next_check`.
        assert!(!ari_check_due(None, &l, 2 * DAY, NOW));
        assert!(ari_check_due(None, &l, DAY, NOW));
        assert!(!ari_check_due(Some(&first), &l, 0, NOW + 7199));
        assert!(ari_check_due(Some(&first), &l, 0, NOW + 7200));
        let mut other = first.clone();
        other.serial = "00:02".into();
        assert!(ari_check_due(Some(&other), &l, DAY, NOW));
        // Unsupported: the lifetime rule decides.
        let m = Meta {
            ari: Some(none),
            ..meta(&f.names)
        };
        let d = decide(&want(&f), Some(&m), &managed(l), NOW);
        assert!(!d.by_ari);
    }

    #[test]
    fn lets_encrypt_profiles_and_their_limits() {
        for d in [
            LE_PRODUCTION,
            LE_STAGING,
            "https://ACME-v02.api.letsencrypt.org:443/directory/",
        ] {
            assert!(is_letsencrypt(d), "{d}");
        }
        for d in [
            "https://acme-v02.api.letsencrypt.org.example.test/directory",
            "https://example.test/acme-v02.api.letsencrypt.org/directory",
            "http://acme-v02.api.letsencrypt.org/directory",
            "https://127.0.0.1:14000/dir",
            SELF_SIGN_DIRECTORY,
        ] {
            assert!(!is_letsencrypt(d), "{d}");
        }
        let limits = |p: Option<&str>| profile_limits(LE_PRODUCTION, p).unwrap();
        for p in ["tlsserver", "shortlived"] {
            let l = limits(Some(p));
            assert_eq!((l.max_names, l.pending_order_lifetime()), (25, 3600), "{p}");
            assert_eq!(l.order_lifetime, 8 * 3600);
        }
        assert_eq!(limits(Some("classic")), limits(None));
        assert_eq!(
            (
                limits(None).max_names,
                limits(None).pending_order_lifetime()
            ),
            (100, 7 * DAY)
        );
        assert_eq!(profile_limits(LE_STAGING, Some("brandnew")), None);
        assert_eq!(
            profile_limits("https://ca.example.test/dir", Some("tlsserver")),
            None
        );

        let tls = limits(Some("tlsserver"));
        assert_eq!(too_many_names(&tls, 25, Some("tlsserver")), None);
        let msg = too_many_names(&tls, 26, Some("tlsserver")).unwrap();
        assert!(
            msg.starts_with("26 names, but Let's Encrypt's `tlsserver` profile allows at most 25")
                && msg.contains("`classic` allows 100"),
            "{msg}"
        );
        let msg = too_many_names(&limits(None), 101, None).unwrap();
        assert!(
            msg.contains("default profile (`classic`) allows at most 100")
                && msg.ends_with("split the names over several certs"),
            "{msg}"
        );
        assert_eq!(human_duration(3600), "1 h");
        assert_eq!(human_duration(7 * DAY), "7 d");
        assert_eq!(human_duration(90 * 60), "90 min");
        assert_eq!(human_duration(3700), "3700 s");
    }

    #[test]
    fn a_changed_profile_reissues() {
        let f = fixture();
        let disk = managed(leaf(&f.key, &f.names, NOW - DAY, 90 * DAY));
        let m = Meta {
            profile: Some("classic".into()),
            ..meta(&f.names)
        };
        let w = Wanted {
            profile: Some("classic"),
            ..want(&f)
        };
        assert_eq!(
            decide_at(&w, Some(&m), &disk, NOW),
            (Action::Ok, Reason::Valid)
        );
        let other = Wanted {
            profile: Some("tlsserver"),
            ..want(&f)
        };
        assert_eq!(
            decide_at(&other, Some(&m), &disk, NOW),
            (Action::Issue, Reason::ProfileChanged)
        );
        // Back to the CA's default is a change too; an adopted cert has no profile to change.
        assert_eq!(
            decide_at(&want(&f), Some(&m), &disk, NOW),
            (Action::Issue, Reason::ProfileChanged)
        );
        let adopted = OnDisk {
            layout: Layout::AcmeSh,
            ..disk
        };
        assert_eq!(
            decide_at(&other, None, &adopted, NOW),
            (Action::Ok, Reason::Adopted)
        );
    }
}
