//! Unit tests of the renewal decision, the profile limits and the renewal-information state.

use super::*;
use crate::certinfo;
use rcgen::KeyPair;

mod ari;
mod limits;

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
