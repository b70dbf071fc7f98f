//! The CA's renewal information in the decision: windows, failed checks, the point chosen.

use super::*;

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
