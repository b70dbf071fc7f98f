//! acme_request's orchestration against the fake CA ([`crate::ca::fake`]), without a network:
//! the decisions, Let's Encrypt's per-profile limits before any order, resuming or replacing a
//! stored order, CA failures with their problem documents, the backoff, renewal information
//! and its fallbacks, and the `replaces` fallback.

use super::*;
use crate::ca::fake::{
    ca_problem, install_issued, problem_with, FakeAri, FakeCa, FakeOrder, ACCOUNT,
};
use crate::ca::RenewalWindow;
use crate::client::SubProblemDoc;
use crate::policy::{LE_PRODUCTION, LE_STAGING};
use std::path::Path;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;
const STORED: &str = "https://ca.example.test/order/stored";
const OTHER_CA: &str = "https://ca.example.test/dir";

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}.example.test")).collect()
}

fn config(root: &Path, directory: &str, certs: Value) -> Config {
    let v = json!({"certs": certs, "directory": directory, "cert_root": root.join("certs"),
                   "jitter_seed": "h"});
    let Value::Object(m) = v else { unreachable!() };
    let (common, _own): (config::CommonOptions, RequestOptions) =
        config::split_options(m, OWN_KEYS).unwrap();
    config::validate(common, 60).unwrap()
}

/// One cert, `main` (main.example.test), at a CA that is not Let's Encrypt.
fn main_config(root: &Path) -> Config {
    config(root, OTHER_CA, json!({"main": ["main.example.test"]}))
}

fn run_when(
    cfg: &Config,
    ca: &FakeCa,
    check_mode: bool,
    pending_max_age: i64,
    now: i64,
) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = EventLog::disabled("acme_request");
    rt.block_on(run(
        cfg,
        check_mode,
        pending_max_age,
        policy::DEFAULT_ARI_INTERVAL,
        None,
        ca,
        &log,
        now,
    ))
    .unwrap()
}

fn run_at(cfg: &Config, ca: &FakeCa, check_mode: bool, pending_max_age: i64) -> Outcome {
    run_when(cfg, ca, check_mode, pending_max_age, NOW)
}

fn failure<'a>(out: &'a Outcome, cert: &str) -> Option<&'a CaFailure> {
    out.failures.iter().find(|(c, _)| c == cert).map(|(_, f)| f)
}

fn meta(cfg: &Config, cert: &str) -> Meta {
    cfg.store.load_meta(cert).unwrap().expect("metadata saved")
}

/// A certificate for `main` valid from 10 days ago for 90 days: not due by the lifetime rule.
fn install_valid(ca: &FakeCa, cfg: &Config) -> crate::certinfo::LeafInfo {
    install_issued(ca, cfg, "main", NOW - 10 * DAY, NOW + 80 * DAY)
}

/// The ARI id of what is installed for `main`.
fn installed_id(cfg: &Config) -> String {
    let der = cfg.store.installed_leaf_der("main.example.test").unwrap();
    crate::client::ari_cert_id(&der).unwrap()
}

fn window(start: i64, end: i64) -> RenewalWindow {
    RenewalWindow {
        start,
        end,
        retry_after: None,
        explanation_url: None,
    }
}

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

fn store_pending(cfg: &Config, ca: &FakeCa, cert: &str, names: &[&str], age: i64) {
    let spec = cfg.cert(cert).unwrap();
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    ca.script()
        .orders
        .insert(STORED.into(), FakeOrder::pending(&sorted));
    let meta = Meta {
        pending: Some(PendingOrder {
            created_at: NOW - age,
            directory: cfg.directory.clone(),
            names: sorted,
            key_type: spec.key_type,
            staging: cfg.untrusted_target(),
            at: OrderAt::Ca(CaOrder {
                url: STORED.into(),
                account_url: ACCOUNT.into(),
                challenges: Vec::new(),
                profile: spec.profile.clone(),
                replaces: None,
            }),
        }),
        ..Default::default()
    };
    cfg.store.save_meta(cert, &meta).unwrap();
}

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
        .block_on(run(&cfg, false, 3600, 21_600, None, &ca, &log, now))
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
        .block_on(run(&cfg, false, 3600, 21_600, None, &ca, &log, now))
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
fn an_account_failure_fails_every_cert_keeping_the_problem_document() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        OTHER_CA,
        json!({"a": ["a.example.test"], "b": ["b.example.test"]}),
    );
    let ca = FakeCa::default();
    ca.script().open_failure = Some(problem_with(
        "register an ACME account",
        "unauthorized",
        403,
        "account is deactivated",
        vec![SubProblemDoc {
            identifier: Some("a.example.test".into()),
            kind: Some("urn:ietf:params:acme:error:unauthorized".into()),
            detail: Some("policy".into()),
        }],
        None,
    ));
    let out = run_at(&cfg, &ca, false, 3600);
    assert_eq!(out.failures.len(), 2);
    assert!(ca.calls().new_orders.is_empty());
    for cert in ["a", "b"] {
        let m = meta(&cfg, cert);
        assert_eq!(
            (m.failures, m.retry_not_before),
            (1, Some(NOW + 60)),
            "{cert}"
        );
        assert!(m.last_problem.unwrap().contains("account is deactivated"));
        assert!(m.pending.is_none());
    }
    let failed = out.into_reply().unwrap_err();
    let text = &failed.msg;
    assert!(
        text.contains("cert a: register an ACME account: the CA answered: account is deactivated")
            && text.contains("a.example.test: policy"),
        "the message renders the whole problem: {text}"
    );
    let problem = &failed.fields["problems"]["b"];
    assert_eq!(problem["type"], "urn:ietf:params:acme:error:unauthorized");
    assert_eq!(problem["detail"], "account is deactivated");
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["subproblems"][0]["identifier"], "a.example.test");
}

#[test]
fn a_rate_limit_backs_off_until_the_cas_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    ca.script().new_order_failures.push(problem_with(
        "create an order",
        "rateLimited",
        429,
        "too many certificates already issued",
        Vec::new(),
        Some(NOW + 7200),
    ));
    let out = run_at(&cfg, &ca, false, 3600);
    let f = failure(&out, "main").expect("rate limited");
    assert_eq!(f.problem().unwrap().short_kind(), Some("rateLimited"));
    assert!(f.message().contains("rate limited by the CA"), "{f}");
    let m = meta(&cfg, "main");
    assert_eq!(m.retry_not_before, Some(NOW + 7200));
    assert!(m.pending.is_none());
}

#[test]
fn the_backoff_holds_without_asking_the_ca_then_grows_with_each_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    for _ in 0..2 {
        ca.script().new_order_failures.push(ca_problem(
            "create an order",
            "serverInternal",
            500,
            "oops",
        ));
    }
    run_at(&cfg, &ca, false, 3600);
    assert_eq!(meta(&cfg, "main").retry_not_before, Some(NOW + 60));
    ca.clear_calls();
    // Within the backoff: kept, and the CA hears nothing.
    let out = run_when(&cfg, &ca, false, 3600, NOW + 59);
    assert_eq!(out.certs["main"].reason, "backoff");
    assert_eq!(out.certs["main"].retry_not_before, Some(NOW + 60));
    assert!(out.failures.is_empty());
    assert!(ca.calls().none(), "{:?}", ca.calls());
    // After it: asked again; a second failure waits 10 minutes.
    let out = run_when(&cfg, &ca, false, 3600, NOW + 60);
    assert!(failure(&out, "main").is_some());
    let m = meta(&cfg, "main");
    assert_eq!((m.failures, m.retry_not_before), (2, Some(NOW + 60 + 600)));
    // The CA recovers: ordered, and the count starts afresh only once a certificate is in.
    let out = run_when(&cfg, &ca, false, 3600, NOW + 700);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(out.orders_created, 1);
}

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
