//! Let's Encrypt's per-profile limits, checked before ordering.

use super::*;

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
