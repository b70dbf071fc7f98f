//! Let's Encrypt's rate limits as the CA proxy enforces them: token buckets (GCRA, as Boulder's
//! `ratelimits` package keeps them) per account, registered domain, exact set of names and
//! client IP, answered like Boulder: 429 `rateLimited`, `Retry-After`, and Boulder's detail text.
//!
//! Pure logic over an injected clock (seconds since the epoch), so it is tested without a CA;
//! `ca_proxy` calls it with the wall clock. Sources: letsencrypt.org/docs/rate-limits (limits,
//! exemptions) and Boulder's `ratelimits/limiter.go` (the detail texts).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// Where the proxy reads the Public Suffix List (Debian's `publicsuffix` package).
pub const PSL_FILE: &str = "/usr/share/publicsuffix/public_suffix_list.dat";
const DOCS: &str = "https://letsencrypt.org/docs/rate-limits/";

/// `count` requests per `period`, refilled one every `period / count` (a token bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub period: Duration,
}

impl Limit {
    pub fn new(count: u32, period: Duration) -> Limit {
        assert!(count > 0, "a limit of 0 refuses everything: use None");
        Limit { count, period }
    }
}

const HOUR: u64 = 3600;

/// The four limits a fleet meets; `None` switches one off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// New Orders per Account: 300 per 3 h.
    pub new_orders_per_account: Option<Limit>,
    /// New Certificates per Registered Domain (Public Suffix List): 50 per 7 d.
    pub certs_per_registered_domain: Option<Limit>,
    /// New Certificates per Exact Set of Identifiers: 5 per 7 d.
    pub certs_per_exact_set: Option<Limit>,
    /// New Registrations per IP Address: 10 per 3 h.
    pub new_accounts_per_ip: Option<Limit>,
}

impl RateLimits {
    /// Let's Encrypt's production values (letsencrypt.org/docs/rate-limits, 2026).
    pub fn lets_encrypt() -> RateLimits {
        RateLimits {
            new_orders_per_account: Some(Limit::new(300, Duration::from_secs(3 * HOUR))),
            certs_per_registered_domain: Some(Limit::new(50, Duration::from_secs(168 * HOUR))),
            certs_per_exact_set: Some(Limit::new(5, Duration::from_secs(168 * HOUR))),
            new_accounts_per_ip: Some(Limit::new(10, Duration::from_secs(3 * HOUR))),
        }
    }

    pub fn none() -> RateLimits {
        RateLimits {
            new_orders_per_account: None,
            certs_per_registered_domain: None,
            certs_per_exact_set: None,
            new_accounts_per_ip: None,
        }
    }
}

/// A refused request: which limit, how long until it fits, and Boulder's detail text.
#[derive(Clone, Debug, PartialEq)]
pub struct Limited {
    /// `new_orders`, `registered_domain`, `exact_set` or `new_accounts`.
    pub limit: &'static str,
    /// Seconds until the request fits (the `Retry-After` header, rounded up).
    pub retry_after: u64,
    pub detail: String,
}

/// What a newOrder is, for the limits.
pub struct OrderRequest<'a> {
    pub account: &'a str,
    pub names: &'a [String],
    /// It names, in `replaces`, a certificate not already replaced (ARI, RFC 9773): exempt
    /// from every limit.
    pub replaces: bool,
}

/// The buckets: key -> theoretical arrival time (TAT) of the next request, in seconds.
pub struct Limiter {
    limits: RateLimits,
    tat: HashMap<String, f64>,
    /// Exact name sets (lower-cased, sorted) a certificate was issued for: a later order for
    /// one is a renewal, exempt from the orders and registered-domain limits.
    issued: HashSet<BTreeSet<String>>,
    registered: Box<dyn Fn(&str) -> String + Send>,
}

impl Limiter {
    /// `registered`: a name's registered domain.
    pub fn new(limits: RateLimits, registered: Box<dyn Fn(&str) -> String + Send>) -> Limiter {
        Limiter {
            limits,
            tat: HashMap::new(),
            issued: HashSet::new(),
            registered,
        }
    }

    /// With the Public Suffix List of [`PSL_FILE`]; panics when it is missing (test setup:
    /// `make deps` installs it).
    pub fn with_psl(limits: RateLimits) -> Limiter {
        use publicsuffix::Psl;
        let text = std::fs::read_to_string(PSL_FILE)
            .unwrap_or_else(|e| panic!("{PSL_FILE}: {e} (install Debian's publicsuffix)"));
        let list: publicsuffix::List = text.parse().expect("a Public Suffix List");
        Limiter::new(
            limits,
            Box::new(move |name: &str| {
                let name = name.trim_start_matches("*.").to_ascii_lowercase();
                list.domain(name.as_bytes())
                    .map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned())
                    .unwrap_or(name)
            }),
        )
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The GCRA decision for `key` at `now`: Ok(new TAT) or Err(seconds until it fits).
    fn decide(&self, key: &str, limit: Limit, now: f64) -> Result<f64, f64> {
        let period = limit.period.as_secs_f64();
        let interval = period / f64::from(limit.count);
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        if new_tat - now <= period + 1e-9 {
            Ok(new_tat)
        } else {
            Err(new_tat - now - period)
        }
    }

    /// Checks a newAccount from `ip` (spends nothing: [`Limiter::account_made`] does, once
    /// the CA made the account).
    pub fn check_account(&self, ip: &str, now: f64) -> Result<(), Limited> {
        let Some(limit) = self.limits.new_accounts_per_ip else {
            return Ok(());
        };
        self.decide(&format!("accounts:{ip}"), limit, now)
            .map(drop)
            .map_err(|wait| limited("new_accounts", limit, None, wait, now))
    }

    pub fn account_made(&mut self, ip: &str, now: f64) {
        let key = format!("accounts:{ip}");
        if let Some(limit) = self.limits.new_accounts_per_ip {
            if let Ok(tat) = self.decide(&key, limit, now) {
                self.tat.insert(key, tat);
            }
        }
    }

    /// Checks and spends a newOrder as Boulder does: every applicable bucket at once or none;
    /// the refusal names the limit that frees last.
    pub fn new_order(&mut self, order: &OrderRequest, now: f64) -> Result<(), Limited> {
        if order.replaces {
            return Ok(());
        }
        let set: BTreeSet<String> = order.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let renewal = self.issued.contains(&set);
        let mut keys: Vec<(String, &'static str, Limit, Option<String>)> = Vec::new();
        if let (false, Some(l)) = (renewal, self.limits.new_orders_per_account) {
            keys.push((format!("orders:{}", order.account), "new_orders", l, None));
        }
        if let (false, Some(l)) = (renewal, self.limits.certs_per_registered_domain) {
            let domains: BTreeSet<String> = set.iter().map(|n| (self.registered)(n)).collect();
            for d in domains {
                keys.push((format!("domain:{d}"), "registered_domain", l, Some(d)));
            }
        }
        if let Some(l) = self.limits.certs_per_exact_set {
            let joined = set.iter().cloned().collect::<Vec<_>>().join(",");
            keys.push((format!("set:{joined}"), "exact_set", l, None));
        }
        let mut spent = Vec::new();
        let mut worst: Option<(f64, &'static str, Limit, Option<String>)> = None;
        for (key, name, limit, label) in keys {
            match self.decide(&key, limit, now) {
                Ok(tat) => spent.push((key, tat)),
                Err(wait) => {
                    if worst.as_ref().is_none_or(|w| wait > w.0) {
                        worst = Some((wait, name, limit, label));
                    }
                }
            }
        }
        if let Some((wait, name, limit, label)) = worst {
            return Err(limited(name, limit, label.as_deref(), wait, now));
        }
        self.tat.extend(spent);
        Ok(())
    }

    /// A certificate was issued for `names`: later orders for this exact set are renewals.
    pub fn issued(&mut self, names: &[String]) {
        self.issued
            .insert(names.iter().map(|n| n.to_ascii_lowercase()).collect());
    }
}

/// Go's `time.Duration` text, as Boulder prints periods (`3h0m0s`, `168h0m0s`, `1m0s`, `30s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Boulder's retry-after timestamp: `2006-01-02 15:04:05 UTC`.
fn utc(at: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at.ceil() as i64)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

fn limited(name: &'static str, limit: Limit, label: Option<&str>, wait: f64, now: f64) -> Limited {
    let (n, period, ts) = (limit.count, go_duration(limit.period), utc(now + wait));
    let detail = match name {
        "new_accounts" => format!(
            "too many new registrations ({n}) from this IP address in the last {period}, retry after {ts}: see {DOCS}#new-registrations-per-ip-address"
        ),
        "new_orders" => format!(
            "too many new orders ({n}) from this account in the last {period}, retry after {ts}: see {DOCS}#new-orders-per-account"
        ),
        "registered_domain" => format!(
            "too many certificates ({n}) already issued for {:?} in the last {period}, retry after {ts}: see {DOCS}#new-certificates-per-registered-domain",
            label.unwrap_or_default()
        ),
        _ => format!(
            "too many certificates ({n}) already issued for this exact set of identifiers in the last {period}, retry after {ts}: see {DOCS}#new-certificates-per-exact-set-of-identifiers"
        ),
    };
    Limited {
        limit: name,
        retry_after: wait.ceil().max(1.0) as u64,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_labels() -> Box<dyn Fn(&str) -> String + Send> {
        Box::new(|n: &str| {
            n.rsplitn(3, '.')
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(".")
        })
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_burst_then_one_per_interval_with_boulders_text() {
        let limits = RateLimits {
            certs_per_registered_domain: Some(Limit::new(2, Duration::from_secs(7 * 86400))),
            ..RateLimits::none()
        };
        let mut l = Limiter::new(limits, two_labels());
        let now = 1_800_000_000.0;
        for host in ["a", "b"] {
            let n = names(&[&format!("{host}.example.org")]);
            let order = OrderRequest {
                account: host,
                names: &n,
                replaces: false,
            };
            assert!(l.new_order(&order, now).is_ok());
        }
        let n = names(&["c.example.org"]);
        let order = OrderRequest {
            account: "c",
            names: &n,
            replaces: false,
        };
        let refused = l.new_order(&order, now).unwrap_err();
        assert_eq!(refused.limit, "registered_domain");
        // Two per week: one back every 3.5 days.
        assert_eq!(refused.retry_after, 302_400);
        assert_eq!(
            refused.detail,
            "too many certificates (2) already issued for \"example.org\" in the last 168h0m0s, retry after 2027-01-18 20:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain"
        );
        assert!(l.new_order(&order, now + 302_399.0).is_err());
        assert!(l.new_order(&order, now + 302_400.0).is_ok());
        // An ARI renewal is exempt from everything.
        let again = OrderRequest {
            account: "c",
            names: &n,
            replaces: true,
        };
        assert!(l.new_order(&again, now + 302_400.0).is_ok());
    }

    #[test]
    fn renewals_skip_orders_and_domain_but_not_the_exact_set() {
        let limits = RateLimits {
            new_orders_per_account: Some(Limit::new(1, Duration::from_secs(3 * 3600))),
            certs_per_registered_domain: Some(Limit::new(1, Duration::from_secs(7 * 86400))),
            certs_per_exact_set: Some(Limit::new(2, Duration::from_secs(7 * 86400))),
            new_accounts_per_ip: None,
        };
        let mut l = Limiter::new(limits, two_labels());
        let n = names(&["www.example.org", "example.org"]);
        let order = OrderRequest {
            account: "1",
            names: &n,
            replaces: false,
        };
        assert!(l.new_order(&order, 0.0).is_ok());
        // Refused (nothing spent), naming the limit that frees last.
        assert_eq!(
            l.new_order(&order, 0.0).unwrap_err().limit,
            "registered_domain"
        );
        l.issued(&names(&["EXAMPLE.org", "www.example.org"]));
        // Now a renewal: the account and domain buckets are empty but do not apply.
        assert!(l.new_order(&order, 0.0).is_ok());
        let refused = l.new_order(&order, 0.0).unwrap_err();
        assert_eq!(refused.limit, "exact_set");
        assert!(refused.detail.starts_with("too many certificates (2) already issued for this exact set of identifiers in the last 168h0m0s, retry after 1970-01-0"), "{}", refused.detail);
    }

    #[test]
    fn accounts_per_ip_count_only_made_accounts() {
        let limits = RateLimits {
            new_accounts_per_ip: Some(Limit::new(1, Duration::from_secs(3 * 3600))),
            ..RateLimits::none()
        };
        let mut l = Limiter::new(limits, two_labels());
        assert!(l.check_account("127.0.0.1", 0.0).is_ok());
        assert!(l.check_account("127.0.0.1", 0.0).is_ok());
        l.account_made("127.0.0.1", 0.0);
        let refused = l.check_account("127.0.0.1", 60.0).unwrap_err();
        assert_eq!(
            (refused.limit, refused.retry_after),
            ("new_accounts", 10_740)
        );
        assert!(refused.detail.starts_with("too many new registrations (1) from this IP address in the last 3h0m0s, retry after 1970-01-01 03:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-registrations-per-ip-address"), "{}", refused.detail);
        assert!(l.check_account("10.0.0.1", 60.0).is_ok());
    }

    #[test]
    fn the_public_suffix_list_gives_registered_domains() {
        let mut l = Limiter::with_psl(RateLimits {
            certs_per_registered_domain: Some(Limit::new(1, Duration::from_secs(3600))),
            ..RateLimits::none()
        });
        let first = names(&["a.example.co.uk"]);
        let other = names(&["b.other.co.uk"]);
        let same = names(&["*.c.example.co.uk"]);
        for (n, ok) in [(&first, true), (&other, true), (&same, false)] {
            let order = OrderRequest {
                account: "1",
                names: n,
                replaces: false,
            };
            assert_eq!(l.new_order(&order, 0.0).is_ok(), ok, "{n:?}");
        }
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    }
}
