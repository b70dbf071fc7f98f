//! Unit tests of the renewal decision, the profile limits and the renewal-information state.

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
    let answer = AriAnswer::Window(RenewalWindow {
        start,
        end,
        retry_after: None,
        explanation_url: None,
    });
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
    let answer = |start: i64, retry_after: Option<i64>| {
        AriAnswer::Window(RenewalWindow {
            start,
            end: start + DAY,
            retry_after,
            explanation_url: None,
        })
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
