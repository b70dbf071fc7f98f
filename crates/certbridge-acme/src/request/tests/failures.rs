//! CA failures: the problem document carried to the reply, Retry-After, the backoff.

use super::*;

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
fn the_metrics_file_shows_when_a_cert_in_backoff_is_tried_next() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let prom = tmp.path().join("certbridge.prom");
    let ca = FakeCa::default();
    ca.script().new_order_failures.push(ca_problem(
        "create an order",
        "serverInternal",
        500,
        "oops",
    ));
    let with_metrics = |now: i64| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(
            &cfg,
            false,
            3600,
            policy::DEFAULT_ARI_INTERVAL,
            Some(prom.clone()),
            None,
            None,
            &ca,
            &EventLog::disabled("acme_request"),
            now,
        ))
        .unwrap()
    };
    let next_try = format!(
        "certbridge_cert_next_try_timestamp_seconds{{cert=\"main\"}} {}\n",
        NOW + 60
    );
    // The failing pulse itself already names the next try, and so does a pulse in backoff.
    assert!(failure(&with_metrics(NOW), "main").is_some());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(&next_try), "{text}");
    assert_eq!(with_metrics(NOW + 30).certs["main"].reason, "backoff");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(&next_try), "{text}");
    // Issued after the backoff: the line is gone.
    let out = with_metrics(NOW + 60);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        !text.contains("certbridge_cert_next_try_timestamp_seconds{"),
        "{text}"
    );
}
