//! Let's Encrypt's per-profile name limits before any order, and profiles the CA does not
//! offer.

use super::*;

#[test]
fn lets_encrypt_name_limits_fail_before_ordering_without_backoff() {
    for directory in [
        LE_PRODUCTION,
        LE_STAGING,
        "https://ACME-v02.api.letsencrypt.org/directory/",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let certs = json!({
            "big": {"names": names(26), "profile": "tlsserver"},
            "short": {"names": names(30).into_iter().map(|n| format!("s{n}")).collect::<Vec<_>>(), "profile": "shortlived"},
            "small": {"names": ["small.example.test"], "profile": "tlsserver"},
            "classic": names(26).into_iter().map(|n| format!("c{n}")).collect::<Vec<_>>(),
            "edge": {"names": names(25).into_iter().map(|n| format!("e{n}")).collect::<Vec<_>>(), "profile": "tlsserver"},
        });
        let cfg = config(tmp.path(), directory, certs);
        let ca = FakeCa::default();
        let out = run_at(&cfg, &ca, false, 3600);
        let big = failure(&out, "big").expect("big refused").message();
        assert!(
            big.contains("26 names")
                && big.contains("`tlsserver` profile allows at most 25")
                && big.contains("`classic` allows 100"),
            "{big}"
        );
        let short = failure(&out, "short").expect("short refused").message();
        assert!(
            short.contains("30 names") && short.contains("`shortlived` profile allows at most 25"),
            "{short}"
        );
        assert_eq!(out.failures.len(), 2, "{:?}", out.failures);
        let ordered: Vec<usize> = ca
            .calls()
            .new_orders
            .iter()
            .map(|o| o.names.len())
            .collect();
        let mut ordered = ordered;
        ordered.sort();
        assert_eq!(
            ordered,
            vec![1, 25, 26],
            "{directory}: the others are ordered"
        );
        for cert in ["big", "short"] {
            let meta = cfg.store.load_meta(cert).unwrap().unwrap_or_default();
            assert_eq!(meta.retry_not_before, None, "{cert}: no backoff");
            assert_eq!(meta.failures, 0);
            assert!(meta.pending.is_none());
        }
        assert_eq!(out.certs["big"].action, Action::Issue);
    }
}

#[test]
fn the_limit_check_needs_no_ca_and_holds_in_check_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        LE_PRODUCTION,
        json!({"big": {"names": names(26), "profile": "tlsserver"}}),
    );
    let ca = FakeCa::default();
    let out = run_at(&cfg, &ca, true, 3600);
    assert!(failure(&out, "big").is_some());
    let out = run_at(&cfg, &ca, false, 3600);
    assert!(failure(&out, "big").is_some());
    let calls = ca.calls();
    assert_eq!(
        (calls.opened, calls.new_orders.len()),
        (0, 0),
        "no account, no order: {calls:?}"
    );
}

#[test]
fn other_cas_are_asked_and_their_answer_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"big": {"names": names(26), "profile": "tlsserver"}}),
    );
    let ca = FakeCa::default();
    ca.script().new_order_failures.push(ca_problem(
        "create an order",
        "malformed",
        400,
        "Error creating new order :: Order cannot contain more than 25 DNS names",
    ));
    let out = run_at(&cfg, &ca, false, 3600);
    let f = failure(&out, "big").expect("the CA refused");
    assert!(f.message().contains("more than 25 DNS names"), "{f}");
    assert_eq!(f.problem().unwrap().status, Some(400));
    assert_eq!(ca.calls().new_orders.len(), 1);
    // The CA said no: that is a CA failure, with the usual backoff.
    let meta = cfg.store.load_meta("big").unwrap().unwrap();
    assert_eq!(meta.retry_not_before, Some(NOW + 60));
}

#[test]
fn a_profile_the_ca_does_not_offer_fails_without_an_order_or_a_backoff() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        OTHER_CA,
        json!({"main": {"names": ["main.example.test"], "profile": "tlsserver"}}),
    );
    let ca = FakeCa::default();
    ca.script().profiles = vec!["classic".into(), "default".into()];
    let out = run_at(&cfg, &ca, false, 3600);
    let f = failure(&out, "main").expect("refused");
    assert!(
        f.message().contains("profile `tlsserver` is not offered")
            && f.message().contains("it offers: classic, default"),
        "{f}"
    );
    assert!(f.problem().is_none());
    assert!(ca.calls().new_orders.is_empty());
    let m = cfg.store.load_meta("main").unwrap().unwrap_or_default();
    assert_eq!((m.failures, m.retry_not_before), (0, None));
}
