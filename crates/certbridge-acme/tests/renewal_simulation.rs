//! A year of hourly pulses over 1,000 certificates (half with 6-day, half with 45-day
//! lifetimes) driving the real renewal decision (`policy::decide`, `policy::ari_check_due`,
//! `policy::ari_update`) the way `acme_request` does, with a simulated clock and a simulated
//! CA that serves renewal windows, moves some into the past (a planned revocation) and fails
//! every renewal-information request for three days. No network, no real time.
//!
//! Asserts: no certificate ever expires; renewals governed by the CA's window spread across
//! it; never more than Let's Encrypt's 300 new orders per account per 3 hours (all 1,000
//! certificates share one account, the worst case). Prints the figures.

use certbridge_acme::certinfo::{KeyType, LeafInfo};
use certbridge_acme::policy::{self, Action, AriAnswer, Reason, RenewalWindow, Wanted};
use certbridge_acme::store::{Layout, Meta, OnDisk};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const START: i64 = 1_800_000_000;
const CERTS: usize = 1000;
const DIRECTORY: &str = "https://acme.example/directory";
const RATE_WINDOW: i64 = 3 * HOUR;
const RATE_LIMIT: usize = 300;
/// The day the CA announces a revocation of every 20th certificate (its window moves into
/// the past), and the days renewal information is down.
const REVOCATION_DAY: i64 = 120;
const ARI_OUTAGE_DAYS: std::ops::Range<i64> = 200..203;

/// xorshift64*: a deterministic stand-in for the system RNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Cert {
    name: String,
    names: Vec<String>,
    lifetime: i64,
    /// The installed certificate (`leaf` is always set).
    disk: OnDisk,
    meta: Meta,
    /// Set by the CA's revocation announcement: renew before this.
    revoked_window_from: Option<i64>,
    serial_counter: u64,
}

fn leaf(names: &[String], not_before: i64, lifetime: i64, serial: String) -> LeafInfo {
    LeafInfo {
        names: names.iter().cloned().collect::<BTreeSet<_>>(),
        not_before,
        not_after: not_before + lifetime,
        serial,
        issuer: "Simulated CA".into(),
        self_issued: false,
        key_type: Some(KeyType::EcP256),
        spki: Vec::new(),
    }
}

/// The CA's suggested window, like Let's Encrypt's: about two thirds into the lifetime.
fn ca_window(leaf: &LeafInfo) -> (i64, i64) {
    let l = leaf.lifetime();
    (
        leaf.not_before + l * 62 / 100,
        leaf.not_before + l * 67 / 100,
    )
}

#[test]
fn a_year_of_hourly_pulses_never_lets_a_certificate_expire() {
    let started = std::time::Instant::now();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let ari_interval = policy::DEFAULT_ARI_INTERVAL;
    let mut certs: Vec<Cert> = (0..CERTS)
        .map(|i| {
            let lifetime = if i % 2 == 0 { 6 * DAY } else { 45 * DAY };
            let names = vec![format!("host{i}.example.test")];
            // A fleet in steady state: issued at random points of the last half lifetime.
            let issued = START - (rng.unit() * (lifetime / 2) as f64) as i64;
            let meta = Meta {
                names: names.clone(),
                key_type: Some(KeyType::EcP256),
                directory: Some(DIRECTORY.into()),
                ..Default::default()
            };
            Cert {
                name: format!("cert{i}"),
                disk: OnDisk {
                    layout: Layout::Managed,
                    leaf: Some(leaf(&names, issued, lifetime, format!("{i:04x}:00"))),
                    key_matches: true,
                },
                names,
                lifetime,
                meta,
                revoked_window_from: None,
                serial_counter: 0,
            }
        })
        .collect();

    let mut expired = 0usize;
    let mut orders: VecDeque<i64> = VecDeque::new();
    let mut max_orders_3h = 0usize;
    let mut total_orders = 0usize;
    let mut ari_fetches = 0usize;
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Where in the CA's window ARI renewals happened (deciles), per lifetime.
    let mut position: BTreeMap<i64, [usize; 10]> = BTreeMap::new();
    // Lifetime used at renewal (percent), per lifetime.
    let mut used: BTreeMap<i64, BTreeMap<i64, usize>> = BTreeMap::new();
    let mut min_left_fraction = f64::MAX;
    let mut revocation_delay_max = 0i64;
    let mut decisions = 0usize;

    let pulses = 365 * 24;
    for pulse in 0..pulses {
        let now = START + pulse * HOUR;
        let day = (now - START) / DAY;
        let outage = ARI_OUTAGE_DAYS.contains(&day);
        if pulse == REVOCATION_DAY * 24 {
            for c in certs.iter_mut().step_by(20) {
                c.revoked_window_from = Some(now);
            }
        }
        while orders.front().is_some_and(|t| *t <= now - RATE_WINDOW) {
            orders.pop_front();
        }
        for c in certs.iter_mut() {
            let Some(installed) = c.disk.leaf.as_ref() else {
                panic!("{} has no certificate", c.name);
            };
            if now >= installed.not_after {
                expired += 1;
            }
            let want = Wanted {
                cert: &c.name,
                names: &c.names,
                key_type: KeyType::EcP256,
                directory: DIRECTORY,
                untrusted_target: false,
                self_sign: false,
                renew_days: None,
                forced: false,
                jitter_seed: "sim-host",
                profile: None,
            };
            let mut d = policy::decide(&want, Some(&c.meta), &c.disk, now);
            decisions += 1;
            // As acme_request: a due renewal-information check first, then decide again.
            if matches!(d.reason, Reason::Valid | Reason::Due | Reason::AriWindow)
                && policy::ari_check_due(c.meta.ari.as_ref(), installed, ari_interval, now)
            {
                ari_fetches += 1;
                let answer = if outage {
                    AriAnswer::Failed {
                        message: "HTTP 503".into(),
                        retry_after: None,
                    }
                } else {
                    let (start, end) = match c.revoked_window_from {
                        Some(_) => (now - 2 * DAY, now - DAY),
                        None => ca_window(installed),
                    };
                    AriAnswer::Window(RenewalWindow {
                        start,
                        end,
                        retry_after: Some(now + 6 * HOUR),
                        explanation_url: None,
                    })
                };
                let state = policy::ari_update(
                    c.meta.ari.as_ref(),
                    &installed.serial,
                    None,
                    answer,
                    ari_interval,
                    now,
                    rng.next(),
                );
                c.meta.ari = Some(state);
                d = policy::decide(&want, Some(&c.meta), &c.disk, now);
                decisions += 1;
            }
            if d.action != Action::Issue {
                continue;
            }
            *reasons.entry(d.reason.as_str()).or_default() += 1;
            let left = (installed.not_after - now) as f64 / c.lifetime as f64;
            min_left_fraction = min_left_fraction.min(left);
            let used_pct = (now - installed.not_before) * 100 / c.lifetime;
            *used
                .entry(c.lifetime / DAY)
                .or_default()
                .entry(used_pct / 5 * 5)
                .or_default() += 1;
            if d.reason == Reason::AriWindow && c.revoked_window_from.is_none() {
                // Where the point chosen in the window lies (the renewal follows at the first
                // pulse after it).
                let (start, end) = ca_window(installed);
                let chosen = c.meta.ari.as_ref().and_then(|a| a.renew_at).unwrap_or(now);
                assert!(
                    now - chosen < HOUR,
                    "{}: renewed {} s late",
                    c.name,
                    now - chosen
                );
                let decile = ((chosen - start) * 10 / (end - start + 1)).clamp(0, 9) as usize;
                position.entry(c.lifetime / DAY).or_insert([0; 10])[decile] += 1;
            }
            if let Some(from) = c.revoked_window_from.take() {
                revocation_delay_max = revocation_delay_max.max(now - from);
            }
            // The order, then (acme_finalize, same pulse) the new certificate.
            orders.push_back(now);
            total_orders += 1;
            max_orders_3h = max_orders_3h.max(orders.len());
            c.serial_counter += 1;
            let serial = format!("{}:{:x}", c.name, c.serial_counter);
            c.disk.leaf = Some(leaf(&c.names, now, c.lifetime, serial.clone()));
            c.meta.serial = Some(serial);
            c.meta.not_after = Some(now + c.lifetime);
            c.meta.ari = None;
        }
    }

    let elapsed = started.elapsed();
    println!(
        "simulated {pulses} hourly pulses x {CERTS} certs ({decisions} decisions) in {elapsed:.2?}"
    );
    println!("expired certificates: {expired}");
    println!("new orders: {total_orders}; most in any 3 h: {max_orders_3h} (limit {RATE_LIMIT})");
    println!("renewal-information fetches: {ari_fetches}");
    println!("renewals by reason: {reasons:?}");
    println!(
        "least lifetime left at a renewal: {:.1}%",
        min_left_fraction * 100.0
    );
    println!(
        "longest delay from a revocation announcement to the renewal: {revocation_delay_max} s"
    );
    for (days, deciles) in &position {
        let total: usize = deciles.iter().sum();
        println!("{days}-day certs, renewals by the point chosen in the CA's window (deciles, {total} renewals):");
        let max = *deciles.iter().max().unwrap_or(&1);
        for (i, n) in deciles.iter().enumerate() {
            let bar = "#".repeat(n * 50 / max.max(1));
            println!("  {:>3}-{:>3}% {n:>6} {bar}", i * 10, i * 10 + 10);
        }
    }
    for (days, hist) in &used {
        println!("{days}-day certs, lifetime used at renewal (5% buckets): {hist:?}");
    }

    assert_eq!(expired, 0, "a certificate expired");
    assert!(max_orders_3h <= RATE_LIMIT, "{max_orders_3h} orders in 3 h");
    assert!(revocation_delay_max <= 7 * HOUR, "{revocation_delay_max}");
    assert!(
        reasons.get("due").copied().unwrap_or(0) > 0,
        "the outage used the lifetime rule"
    );
    for (days, deciles) in &position {
        let total: usize = deciles.iter().sum();
        let mean = total / 10;
        // Spread: every tenth of the window is used, none more than twice its share.
        for (i, n) in deciles.iter().enumerate() {
            assert!(*n > 0, "{days}-day: decile {i} empty: {deciles:?}");
            assert!(
                *n <= mean * 2 + 2,
                "{days}-day: decile {i} crowded: {deciles:?}"
            );
        }
    }
}
