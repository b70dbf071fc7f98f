//! Renewal information: windows, failures and the lifetime fallback, and the `replaces`
//! fallback.

use super::*;

#[test]
fn a_passed_ari_window_renews_early_naming_the_replaced_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_valid(&ca, &cfg);
    ca.script().ari = FakeAri::Window(window(NOW - 3600, NOW - 60));
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(out.certs["main"].action, Action::Issue);
    assert_eq!(out.certs["main"].reason, "ari_window");
    let id = installed_id(&cfg);
    let calls = ca.calls();
    assert_eq!(calls.renewal_info, vec![vec![id.clone()]]);
    assert_eq!(calls.new_orders[0].replaces, Some(id));
    drop(calls);
    let ari = out.certs["main"].ari.clone().expect("reported");
    assert_eq!(
        (ari.window_start, ari.window_end),
        (Some(NOW - 3600), Some(NOW - 60))
    );
}

#[test]
fn a_window_ahead_keeps_the_certificate_and_is_not_asked_again_before_the_next_check() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_valid(&ca, &cfg);
    let mut w = window(NOW + 10 * DAY, NOW + 11 * DAY);
    w.retry_after = Some(NOW + 3 * 3600);
    ca.script().ari = FakeAri::Window(w);
    let out = run_at(&cfg, &ca, false, 3600);
    let cert = &out.certs["main"];
    assert_eq!((cert.action, cert.reason), (Action::Ok, "valid"));
    let at = cert.renew_at.unwrap();
    assert!((NOW + 10 * DAY..=NOW + 11 * DAY).contains(&at), "{at}");
    let stored = meta(&cfg, "main").ari.unwrap();
    assert_eq!(
        (stored.renew_at, stored.next_check),
        (Some(at), Some(NOW + 3 * 3600))
    );
    ca.clear_calls();
    run_when(&cfg, &ca, false, 3600, NOW + 3 * 3600 - 1);
    assert!(ca.calls().none(), "before the CA's Retry-After");
    let out = run_when(&cfg, &ca, false, 3600, NOW + 3 * 3600);
    assert_eq!(ca.calls().renewal_info.len(), 1, "at the CA's Retry-After");
    assert_eq!(
        out.certs["main"].renew_at,
        Some(at),
        "the point is chosen once"
    );
}

#[test]
fn a_failed_ari_check_warns_with_the_cas_problem_and_the_lifetime_rule_applies() {
    for ari in [
        FakeAri::DirectoryFails(ca_problem(
            "fetch the directory",
            "malformed",
            400,
            "All requests MUST include a User-Agent header",
        )),
        FakeAri::EachFails(ca_problem(
            "renewal information",
            "malformed",
            400,
            "All requests MUST include a User-Agent header",
        )),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = main_config(tmp.path());
        let ca = FakeCa::default();
        install_issued(&ca, &cfg, "main", NOW - 70 * DAY, NOW + 20 * DAY);
        ca.script().ari = ari;
        let out = run_at(&cfg, &ca, false, 3600);
        let warning = out
            .warnings
            .iter()
            .find(|w| w.contains("no renewal information"));
        let warning = warning.expect("warned");
        assert!(
            warning.contains("User-Agent") && warning.contains("the lifetime rule applies"),
            "{warning}"
        );
        // Due by its lifetime: renewed all the same, and still naming what it replaces.
        assert_eq!(out.certs["main"].reason, "due");
        assert_eq!(ca.calls().new_orders[0].replaces, Some(installed_id(&cfg)));
        let stored = meta(&cfg, "main").ari.unwrap();
        assert!(stored.last_error.unwrap().contains("User-Agent"));
    }
}

#[test]
fn a_ca_without_ari_is_not_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_valid(&ca, &cfg);
    let out = run_at(&cfg, &ca, false, 3600);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.certs["main"].ari.as_ref().map(|a| a.renew_at), None);
    assert!(!meta(&cfg, "main").ari.unwrap().supported);
}

#[test]
fn a_refused_replaces_is_dropped_and_the_order_made_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_issued(&ca, &cfg, "main", NOW - 70 * DAY, NOW + 20 * DAY);
    ca.script().refuse_replaces = Some(ca_problem(
        "create an order",
        "alreadyReplaced",
        409,
        "the certificate has already been replaced",
    ));
    let out = run_at(&cfg, &ca, false, 3600);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let asked: Vec<Option<String>> = ca
        .calls()
        .new_orders
        .iter()
        .map(|o| o.replaces.clone())
        .collect();
    assert_eq!(asked, vec![Some(installed_id(&cfg)), None]);
    let warning = out
        .warnings
        .iter()
        .find(|w| w.contains("refused `replaces`"))
        .expect("warned");
    assert!(warning.contains("already been replaced"), "{warning}");
    assert_eq!(
        meta(&cfg, "main")
            .pending
            .unwrap()
            .ca()
            .unwrap()
            .replaces
            .clone(),
        None
    );
}

#[test]
fn other_failures_of_an_order_naming_replaces_are_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_issued(&ca, &cfg, "main", NOW - 70 * DAY, NOW + 20 * DAY);
    ca.script().refuse_replaces = Some(ca_problem(
        "create an order",
        "rejectedIdentifier",
        400,
        "policy forbids issuing for this name",
    ));
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(ca.calls().new_orders.len(), 1);
    let f = failure(&out, "main").expect("failed");
    assert_eq!(
        f.problem().unwrap().short_kind(),
        Some("rejectedIdentifier")
    );
    assert_eq!(meta(&cfg, "main").retry_not_before, Some(NOW + 60));
}
