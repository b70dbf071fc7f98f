//! Decisions and orders: the first order, check mode, nothing to do, renewal by lifetime,
//! stored orders resumed, replaced or abandoned.

use super::*;

/// (resumed, deactivated, order_reason) after one run with a stored order `age` s old.
fn with_stored(
    directory: &str,
    profile: Option<&str>,
    age: i64,
    pending_max_age: i64,
) -> (bool, bool, Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let cert = match profile {
        Some(p) => json!({"names": ["main.example.test"], "profile": p}),
        None => json!(["main.example.test"]),
    };
    let cfg = config(tmp.path(), directory, json!({ "main": cert }));
    let ca = FakeCa::default();
    store_pending(&cfg, &ca, "main", &["main.example.test"], age);
    let out = run_at(&cfg, &ca, false, pending_max_age);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let calls = ca.calls();
    let resumed = calls.new_orders.is_empty();
    assert_eq!(
        resumed,
        !calls.order_states.is_empty() && calls.deactivated.is_empty()
    );
    assert_eq!(out.orders_created, usize::from(!resumed));
    (
        resumed,
        calls.deactivated == vec![STORED.to_owned()],
        out.certs["main"].order_reason.clone(),
    )
}

#[test]
fn a_stored_order_past_its_profiles_lifetime_is_not_resumed() {
    // tlsserver / shortlived: pending authorizations live 1 h at Let's Encrypt, whatever
    // pending_max_age allows.
    for profile in ["tlsserver", "shortlived"] {
        let (resumed, deactivated, why) = with_stored(LE_PRODUCTION, Some(profile), 3700, 86_400);
        assert!(!resumed && deactivated, "{profile}");
        let why = why.unwrap();
        assert!(
            why.contains("3700 s old")
                && why.contains(&format!("`{profile}` profile"))
                && why.contains("1 h")
                && why.contains("8 h"),
            "{why}"
        );
        let (resumed, _, why) = with_stored(LE_STAGING, Some(profile), 1800, 86_400);
        assert!(resumed && why.is_none(), "{profile}: younger than 1 h");
    }
    // classic (named or Let's Encrypt's default): 7 days.
    for profile in [Some("classic"), None] {
        let (resumed, _, _) = with_stored(LE_PRODUCTION, profile, 3 * 86_400, 30 * 86_400);
        assert!(resumed, "{profile:?}");
        let (resumed, _, why) = with_stored(LE_PRODUCTION, profile, 8 * 86_400, 30 * 86_400);
        assert!(!resumed, "{profile:?}");
        assert!(why.unwrap().contains("7 d"));
    }
    // Another CA: only pending_max_age counts.
    let (resumed, _, _) = with_stored(
        "https://ca.example.test/dir",
        Some("tlsserver"),
        3700,
        86_400,
    );
    assert!(resumed);
    let (resumed, deactivated, why) =
        with_stored("https://ca.example.test/dir", Some("tlsserver"), 3700, 3600);
    assert!(!resumed && deactivated);
    assert!(why.unwrap().contains("pending_max_age (3600 s)"));
}

#[test]
fn an_order_no_longer_needed_is_deactivated_before_it_is_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"main": ["main.example.test"]}),
    );
    let ca = FakeCa::default();
    store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
    // Installed and valid: nothing to issue (the same state a moved ARI window leaves).
    let now = crate::now();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["main.example.test".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 86_400).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 80 * 86_400).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = cfg.store.cert_dir("main.example.test");
    std::fs::create_dir_all(dir.join("gen-1")).unwrap();
    std::fs::write(dir.join("gen-1/cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("gen-1/privkey.pem"), key.serialize_pem()).unwrap();
    std::os::unix::fs::symlink("gen-1", dir.join("current")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = EventLog::disabled("acme_request");
    let out = rt
        .block_on(run(
            &cfg, false, 3600, 21_600, None, None, None, &ca, &log, now,
        ))
        .unwrap();
    assert_eq!(out.certs["main"].action, Action::Ok, "{:?}", out.certs);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let calls = ca.calls();
    assert_eq!(calls.deactivated, vec![STORED.to_owned()]);
    assert!(calls.new_orders.is_empty());
    drop(calls);
    let meta = cfg.store.load_meta("main").unwrap().unwrap();
    assert!(meta.pending.is_none());
    // Nothing left to abandon: the next pulse asks nothing.
    let out = rt
        .block_on(run(
            &cfg, false, 3600, 21_600, None, None, None, &ca, &log, now,
        ))
        .unwrap();
    assert_eq!(out.certs["main"].action, Action::Ok);
    assert_eq!(ca.calls().opened, 1);
}

#[test]
fn a_stored_order_for_other_names_is_deactivated_before_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"main": ["main.example.test", "www.example.test"]}),
    );
    let ca = FakeCa::default();
    store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
    let out = run_at(&cfg, &ca, false, 3600);
    let calls = ca.calls();
    assert_eq!(calls.deactivated, vec![STORED.to_owned()]);
    assert!(calls.order_states.is_empty());
    assert_eq!(calls.new_orders.len(), 1);
    let why = out.certs["main"].order_reason.clone().unwrap();
    assert!(why.contains("other names"), "{why}");
}

#[test]
fn a_first_run_orders_and_returns_the_values_to_publish() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        OTHER_CA,
        json!({"main": ["main.example.test", "*.main.example.test"]}),
    );
    let ca = FakeCa::default();
    let out = run_at(&cfg, &ca, false, 3600);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(out.certs["main"].action, Action::Issue);
    assert_eq!(out.certs["main"].reason, "missing");
    assert_eq!(out.orders_created, 1);
    assert_eq!(out.pending, vec!["main".to_owned()]);
    let records: Vec<&str> = out.txt.iter().map(|t| t.record.as_str()).collect();
    assert_eq!(
        records,
        vec!["_acme-challenge.main.example.test"; 2],
        "one value per name, the wildcard's on the base name"
    );
    let p = meta(&cfg, "main").pending.expect("order stored");
    let order = p.ca().expect("an order at the CA");
    assert_eq!(order.url, "https://ca.example.test/order/1");
    assert_eq!(order.account_url, ACCOUNT);
    assert_eq!(order.challenges.len(), 2);
    assert_eq!(order.replaces, None, "nothing installed, nothing replaced");
    assert!(out.into_reply().unwrap().changed);
}

#[test]
fn check_mode_decides_but_asks_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    let out = run_at(&cfg, &ca, true, 3600);
    assert_eq!(out.certs["main"].action, Action::Issue);
    assert!(ca.calls().none(), "{:?}", ca.calls());
    assert_eq!(out.orders_created, 0);
    assert!(cfg.store.load_meta("main").unwrap().is_none());
}

#[test]
fn a_valid_certificate_is_kept_and_the_next_pulse_asks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_valid(&ca, &cfg);
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(out.certs["main"].action, Action::Ok);
    assert_eq!(out.certs["main"].reason, "valid");
    // The first check of renewal information is due (the CA offers none); no account, no order.
    let calls = ca.calls();
    assert_eq!(calls.renewal_info.len(), 1);
    assert_eq!((calls.opened, calls.new_orders.len()), (0, 0));
    drop(calls);
    ca.clear_calls();
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(out.certs["main"].action, Action::Ok);
    assert!(ca.calls().none(), "{:?}", ca.calls());
    assert!(!out.into_reply().unwrap().changed);
}

#[test]
fn a_certificate_due_by_its_lifetime_is_renewed_naming_what_it_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_issued(&ca, &cfg, "main", NOW - 70 * DAY, NOW + 20 * DAY);
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(out.certs["main"].action, Action::Issue);
    assert_eq!(out.certs["main"].reason, "due");
    let calls = ca.calls();
    assert_eq!(calls.new_orders.len(), 1);
    assert_eq!(calls.new_orders[0].replaces, Some(installed_id(&cfg)));
    drop(calls);
    assert_eq!(
        meta(&cfg, "main")
            .pending
            .unwrap()
            .ca()
            .unwrap()
            .replaces
            .clone(),
        Some(installed_id(&cfg))
    );
}

#[test]
fn a_stored_order_the_ca_still_has_is_resumed_with_its_values() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
    let out = run_at(&cfg, &ca, false, 3600);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let calls = ca.calls();
    assert_eq!(calls.order_states, vec![STORED.to_owned()]);
    assert!(calls.new_orders.is_empty() && calls.deactivated.is_empty());
    drop(calls);
    assert_eq!(out.orders_created, 0);
    assert_eq!(out.certs["main"].order_reason, None);
    // The values come from the CA's view of the order, and are stored with it.
    assert_eq!(out.txt.len(), 1);
    assert_eq!(out.txt[0].value, "value-for-main.example.test");
    let p = meta(&cfg, "main").pending.unwrap();
    assert_eq!(p.url(), Some(STORED));
    assert_eq!(p.challenges().len(), 1);
    assert!(
        !out.into_reply().unwrap().changed,
        "resuming changes nothing"
    );
}

#[test]
fn a_stored_order_the_ca_forgot_or_invalidated_is_replaced() {
    for (status, why) in [
        (None, "the CA no longer has the stored order"),
        (Some(OrderStatus::Invalid), "the stored order is invalid"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = main_config(tmp.path());
        let ca = FakeCa::default();
        store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
        match status {
            None => {
                ca.script().orders.clear();
            }
            Some(s) => ca.script().orders.get_mut(STORED).unwrap().status = s,
        }
        let out = run_at(&cfg, &ca, false, 3600);
        assert_eq!(out.certs["main"].order_reason.as_deref(), Some(why));
        assert_eq!(out.orders_created, 1);
        let p = meta(&cfg, "main").pending.unwrap();
        assert_eq!(p.url(), Some("https://ca.example.test/order/1"));
    }
}

#[test]
fn a_stored_order_of_another_account_is_neither_read_nor_deactivated() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
    let mut m = meta(&cfg, "main");
    if let Some(OrderAt::Ca(o)) = m.pending.as_mut().map(|p| &mut p.at) {
        o.account_url = "https://ca.example.test/acct/other".into();
    }
    cfg.store.save_meta("main", &m).unwrap();
    let out = run_at(&cfg, &ca, false, 3600);
    let calls = ca.calls();
    assert!(calls.order_states.is_empty() && calls.deactivated.is_empty());
    assert_eq!(calls.new_orders.len(), 1);
    drop(calls);
    let why = out.certs["main"].order_reason.clone().unwrap();
    assert!(why.contains("another account"), "{why}");
}

#[test]
fn an_unreadable_stored_order_is_replaced_naming_the_cas_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
    ca.script().order_state_failure = Some(ca_problem(
        "fetch order",
        "serverInternal",
        500,
        "the database is down",
    ));
    let out = run_at(&cfg, &ca, false, 3600);
    let why = out.certs["main"].order_reason.clone().unwrap();
    assert!(
        why.starts_with("the stored order cannot be read:") && why.contains("the database is down"),
        "{why}"
    );
    assert_eq!(ca.calls().deactivated, vec![STORED.to_owned()]);
    assert_eq!(out.orders_created, 1);
}

#[test]
fn a_failed_deactivation_of_an_order_no_longer_needed_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    install_valid(&ca, &cfg);
    let leaf_meta = meta(&cfg, "main");
    store_pending(&cfg, &ca, "main", &["main.example.test"], 60);
    let mut m = meta(&cfg, "main");
    m.pending.as_mut().unwrap().directory = cfg.directory.clone();
    let pending = m.pending.take();
    let m = Meta {
        pending,
        ..leaf_meta
    };
    cfg.store.save_meta("main", &m).unwrap();
    ca.script().deactivate_failure = Some(ca_problem("deactivate", "serverInternal", 500, "busy"));
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(out.certs["main"].action, Action::Ok);
    assert!(out.failures.is_empty());
    let warning = out
        .warnings
        .iter()
        .find(|w| w.contains("cannot be deactivated"))
        .expect("warned");
    assert!(
        warning.contains("busy") && warning.contains(STORED),
        "{warning}"
    );
    assert!(
        meta(&cfg, "main").pending.is_none(),
        "forgotten all the same"
    );
}

#[test]
fn a_planned_pulse_orders_only_the_admitted_new_certs_and_records_when() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"web": ["web.example.test"], "mail": ["mail.example.test"]}),
    );
    let ca = FakeCa::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = EventLog::disabled("acme_request");
    let plan = |admit: &[String]| {
        rt.block_on(run(
            &cfg,
            false,
            3600,
            21_600,
            None,
            None,
            Some(admit),
            &ca,
            &log,
            NOW,
        ))
        .unwrap()
    };
    // Nothing admitted yet: both wait, no order, nothing pending.
    let out = plan(&[]);
    assert!(
        out.certs["web"].held && out.certs["mail"].held,
        "{:?}",
        out.certs
    );
    assert!(out.pending.is_empty() && out.txt.is_empty());
    assert!(ca.calls().new_orders.is_empty());
    // web admitted: ordered and recorded; mail still waits.
    let out = plan(&["web".to_owned()]);
    assert!(!out.certs["web"].held && out.certs["mail"].held);
    assert_eq!(out.pending, vec!["web".to_owned()]);
    assert_eq!(out.certs["web"].new_cert_at, Some(NOW));
    assert_eq!(ca.calls().new_orders.len(), 1);
}
