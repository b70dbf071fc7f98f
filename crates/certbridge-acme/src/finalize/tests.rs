//! acme_finalize's orchestration against the fake CA ([`crate::ca::fake`]), without a network:
//! finalizing and installing an order acme_request made, CA failures with their problem
//! documents, the backoff, certificates that must not be installed, `only` and `ack`.

use super::*;
use crate::ca::fake::{ca_problem, problem_with, FakeCa, ACCOUNT};
use crate::client::SubProblemDoc;
use std::path::Path;

const OTHER_CA: &str = "https://ca.example.test/dir";

fn config(root: &Path, certs: Value) -> Config {
    let v = json!({"certs": certs, "directory": OTHER_CA, "cert_root": root.join("certs"),
                   "jitter_seed": "h"});
    let Value::Object(m) = v else { unreachable!() };
    let (common, _own): (config::CommonOptions, FinalizeOptions) =
        config::split_options(m, OWN_KEYS).unwrap();
    config::validate(common, 60).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// acme_request's run at the fake CA: stores an order for every cert.
fn request(cfg: &Config, ca: &FakeCa) {
    let log = EventLog::disabled("acme_request");
    let now = crate::now();
    let out = rt()
        .block_on(crate::request::run(
            cfg, false, 3600, 21_600, None, None, None, ca, &log, now,
        ))
        .unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    ca.clear_calls();
}

fn finalize(cfg: &Config, ca: &FakeCa, own: &FinalizeOptions) -> Outcome {
    let log = EventLog::disabled("acme_finalize");
    rt().block_on(run(cfg, own, false, ca, &log)).unwrap()
}

fn meta(cfg: &Config, cert: &str) -> Meta {
    cfg.store.load_meta(cert).unwrap().expect("metadata")
}

fn main_config(root: &Path) -> Config {
    config(
        root,
        json!({"main": ["main.example.test", "www.example.test"]}),
    )
}

#[test]
fn a_pending_order_is_finalized_installed_recorded_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    request(&cfg, &ca);
    let url = meta(&cfg, "main")
        .pending
        .unwrap()
        .url()
        .unwrap()
        .to_owned();
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(ca.calls().finalized, vec![url]);
    let installed = cfg
        .store
        .read_installed("main.example.test")
        .leaf
        .expect("installed");
    assert_eq!(out.certs["main"].serial, installed.serial);
    assert!(out.updated.contains("main") && out.changed);
    let m = meta(&cfg, "main");
    assert!(m.pending.is_none());
    assert_eq!(m.serial.as_deref(), Some(installed.serial.as_str()));
    assert_eq!(m.account_url.as_deref(), Some(ACCOUNT));
    assert_eq!(m.directory.as_deref(), Some(OTHER_CA));
    assert!(m.handler_owed);
    assert!(
        !cfg.store.pending_key_path("main").exists(),
        "the order's key is gone"
    );
}

#[test]
fn nothing_pending_asks_the_ca_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    assert!(ca.calls().none(), "{:?}", ca.calls());
    assert!(!out.changed && out.certs.is_empty() && out.failures.is_empty());
}

#[test]
fn an_invalid_order_keeps_its_problem_document_the_order_and_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    request(&cfg, &ca);
    let url = meta(&cfg, "main")
        .pending
        .unwrap()
        .url()
        .unwrap()
        .to_owned();
    ca.script().finalize_failure = Some(problem_with(
        "wait for the CA to validate",
        "unauthorized",
        403,
        "Some of the authorizations failed",
        vec![SubProblemDoc {
            identifier: Some("www.example.test".into()),
            kind: Some("urn:ietf:params:acme:error:dns".into()),
            detail: Some("No TXT record found at _acme-challenge.www.example.test".into()),
        }],
        None,
    ));
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    let key_before = std::fs::read(cfg.store.pending_key_path("main")).unwrap();
    let m = meta(&cfg, "main");
    assert_eq!(
        m.pending.as_ref().and_then(|p| p.url().map(str::to_owned)),
        Some(url)
    );
    assert_eq!(m.failures, 1);
    assert!(m.retry_not_before.is_some());
    assert!(cfg.store.read_installed("main.example.test").leaf.is_none());
    let failed = out.into_reply().unwrap_err();
    assert!(
        failed
            .msg
            .contains("No TXT record found at _acme-challenge.www.example.test"),
        "{}",
        failed.msg
    );
    let p = &failed.fields["problems"]["main"];
    assert_eq!(p["type"], "urn:ietf:params:acme:error:unauthorized");
    assert_eq!(
        p["subproblems"][0]["type"],
        "urn:ietf:params:acme:error:dns"
    );
    assert_eq!(p["subproblems"][0]["identifier"], "www.example.test");
    // The next run finalizes the same order with the same key.
    ca.script().finalize_failure = None;
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let installed = cfg.store.read_installed("main.example.test");
    assert!(installed.key_matches);
    let key_pem = String::from_utf8(key_before).unwrap();
    assert!(certinfo::key_matches(
        &key_pem,
        installed.leaf.as_ref().unwrap()
    ));
}

#[test]
fn an_account_failure_fails_each_pending_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        json!({"a": ["a.example.test"], "b": ["b.example.test"]}),
    );
    let ca = FakeCa::default();
    request(&cfg, &ca);
    ca.script().open_failure = Some(ca_problem(
        "look up the ACME account",
        "serverInternal",
        500,
        "maintenance",
    ));
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    assert_eq!(out.failures.len(), 2);
    assert!(ca.calls().finalized.is_empty());
    for cert in ["a", "b"] {
        let m = meta(&cfg, cert);
        assert!(m.pending.is_some(), "{cert}: the order stays");
        assert!(m.last_problem.unwrap().contains("maintenance"));
    }
}

#[test]
fn a_certificate_for_other_names_is_not_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    request(&cfg, &ca);
    ca.script().issue_names = Some(vec!["main.example.test".into()]);
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    let (_, f) = &out.failures[0];
    assert!(f.message().contains("was not installed"), "{f}");
    assert!(cfg.store.read_installed("main.example.test").leaf.is_none());
    assert!(meta(&cfg, "main").pending.is_some());
}

#[test]
fn an_order_the_ca_forgot_says_a_new_one_is_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    request(&cfg, &ca);
    ca.script().orders.clear();
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    let (_, f) = &out.failures[0];
    assert!(f.message().contains("a new order is needed"), "{f}");
}

#[test]
fn an_order_for_another_directory_is_not_sent_to_this_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = main_config(tmp.path());
    let ca = FakeCa::default();
    request(&cfg, &ca);
    let mut m = meta(&cfg, "main");
    m.pending.as_mut().unwrap().directory = "https://elsewhere.example.test/dir".into();
    cfg.store.save_meta("main", &m).unwrap();
    let out = finalize(&cfg, &ca, &FinalizeOptions::default());
    let (_, f) = &out.failures[0];
    assert!(f.message().contains("run acme_request again"), "{f}");
    assert!(ca.calls().finalized.is_empty());
}

#[test]
fn only_finalizes_the_certs_named_and_ack_stops_reporting_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        json!({"a": ["a.example.test"], "b": ["b.example.test"]}),
    );
    let ca = FakeCa::default();
    request(&cfg, &ca);
    let only_a = FinalizeOptions {
        only: Some(vec!["a".into()]),
        ..FinalizeOptions::default()
    };
    let out = finalize(&cfg, &ca, &only_a);
    assert_eq!(out.certs.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(ca.calls().finalized.len(), 1);
    assert!(meta(&cfg, "b").pending.is_some());
    // Reported until acknowledged.
    let out = finalize(&cfg, &ca, &only_a);
    assert!(out.updated.contains("a"));
    let ack = FinalizeOptions {
        only: Some(vec![]),
        ack: Some(vec!["a".into()]),
        ..FinalizeOptions::default()
    };
    let out = finalize(&cfg, &ca, &ack);
    assert!(!out.updated.contains("a"), "{:?}", out.updated);
    assert!(!meta(&cfg, "a").handler_owed);
}
