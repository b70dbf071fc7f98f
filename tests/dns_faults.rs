//! DNS faults across the pulse (what tests/acme_txt_publish.rs does not already cover at the
//! module level): the nameserver hanging -> publishing fails within its deadline, no cert is
//! finalized and no cert file changes, and the next pulse completes once it is back; one
//! host's missing `_acme-challenge` CNAME -> only that host's cert fails (with the fix), the
//! other host's cert is issued in the same pulse.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{run_module, Host, ModuleRun, Testbed};

/// A host ordering `certs` from the bed's Pebble; acme_finalize checks the published values.
fn dns_host(bed: &Testbed, certs: Value) -> Host {
    Host::on_bed(bed)
        .with(json!({"jitter_seed": "dns-faults", "timeout": 60, "certs": certs}))
        .with_finalize(json!({"dns_check": bed.get("TESTBED_DNS"), "dns_check_timeout": 2}))
}

fn publish_args(bed: &Testbed, state: &Path, records: &[Value], timeout: u64) -> Value {
    json!({
        "records": records,
        "zones": [
            {"origin": bed.get("TESTBED_SIGNING_ZONE"), "method": "zonefile",
             "path": bed.get("TESTBED_SIGNING_ZONE_FILE"), "ns": ["ns1.signing.test"],
             "static_records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"}],
             "rndc_conf": bed.get("TESTBED_RNDC_CONF")},
            {"origin": bed.get("TESTBED_DYNAMIC_ZONE"), "method": "rfc2136",
             "server": bed.get("TESTBED_DNS"), "tsig_name": bed.get("TESTBED_TSIG_NAME"),
             "tsig_algorithm": bed.get("TESTBED_TSIG_ALGORITHM"), "tsig_secret": bed.get("TESTBED_TSIG_SECRET")},
        ],
        "resolver": bed.get("TESTBED_DNS"),
        "nameserver_port": bed.get("TESTBED_DNS_PORT").parse::<u16>().unwrap(),
        "state_dir": state,
        "timeout": timeout,
    })
}

fn records_of(host: &str, req: &ModuleRun) -> Vec<Value> {
    assert!(!req.failed(), "{}", req.json);
    req.json["acme_txt_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t["host"] = json!(host);
            t
        })
        .collect()
}

fn signal(pid: &str, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn updated(run: &ModuleRun) -> Vec<String> {
    run.json["updated"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nameserver_down_fails_within_the_deadline_and_finalizes_nothing() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let state = tempfile::tempdir().unwrap();
    let host = dns_host(
        &bed,
        json!({"web": ["host5.example.test"], "dyn": ["dyn1.example.test"]}),
    );
    let records = records_of("h1", &host.request(json!({})));
    assert_eq!(records.len(), 2);
    let before = host.files();

    // named hangs (SIGSTOP): every query and update goes unanswered.
    let named = bed.get("TESTBED_NAMED_PID").to_owned();
    signal(&named, "STOP");
    let run = run_module(
        "acme_txt_publish",
        &publish_args(&bed, state.path(), &records, 4),
    );
    let fin = host.finalize(json!({}));
    signal(&named, "CONT");
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.elapsed < Duration::from_secs(7),
        "publish took {:?}",
        run.elapsed
    );
    assert!(fin.failed(), "{}", fin.json);
    assert!(
        fin.msg().contains("web") && fin.msg().contains("dyn"),
        "{}",
        fin.msg()
    );
    assert!(updated(&fin).is_empty(), "{}", fin.json);
    assert_eq!(
        host.files(),
        before,
        "cert files changed while DNS was down"
    );
    let (publish_took, finalize_took) = (run.elapsed, fin.elapsed);

    // named back: the next pulse completes.
    let records = records_of("h1", &host.request(json!({})));
    let run = run_module(
        "acme_txt_publish",
        &publish_args(&bed, state.path(), &records, 20),
    );
    assert!(!run.failed(), "{}", run.json);
    let fin = host.finalize(json!({}));
    assert!(!fin.failed(), "{}", fin.json);
    let mut got = updated(&fin);
    got.sort();
    assert_eq!(got, ["dyn", "web"]);
    println!(
        "named stopped: publish failed after {:.1} s, finalize refused both certs after {:.1} s; recovered",
        publish_took.as_secs_f64(),
        finalize_took.as_secs_f64()
    );
}

#[test]
fn a_missing_cname_fails_only_that_host() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let state = tempfile::tempdir().unwrap();
    let good = dns_host(&bed, json!({"main": ["host6.example.test"]}));
    let bad = dns_host(&bed, json!({"main": ["nocname.example.test"]}));
    let mut records = records_of("good-host", &good.request(json!({})));
    records.extend(records_of("bad-host", &bad.request(json!({}))));
    let run = run_module(
        "acme_txt_publish",
        &publish_args(&bed, state.path(), &records, 20),
    );
    let rejected = run.json["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1, "{}", run.json);
    assert_eq!(rejected[0]["host"], "bad-host");
    assert!(
        rejected[0]["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("_acme-challenge.nocname.example.test"),
        "{}",
        rejected[0]
    );
    let before_bad = bad.files();
    let fin_good = good.finalize(json!({}));
    assert!(!fin_good.failed(), "{}", fin_good.json);
    assert_eq!(updated(&fin_good), ["main"]);
    let fin_bad = bad.finalize(json!({}));
    assert!(fin_bad.failed(), "{}", fin_bad.json);
    assert!(fin_bad.msg().contains("main"), "{}", fin_bad.msg());
    assert!(updated(&fin_bad).is_empty());
    assert_eq!(bad.files(), before_bad);
    println!(
        "missing CNAME: 1 of 2 hosts rejected with the fix, the other issued in the same pulse"
    );
}

/// Play 1 checks the CNAMEs (acme_request's `cname_check`, the chaser acme_txt_publish uses):
/// a missing or wrong `_acme-challenge` CNAME fails its cert with the record to add and no
/// order is made, without a backoff; the other certs are ordered and each value names the
/// owner it will land on (per-name label or the shared name), which acme_txt_publish accepts.
#[test]
fn a_bad_cname_fails_its_cert_in_play_1_before_any_order() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let state = tempfile::tempdir().unwrap();
    // Two http-01 certs among them: `aweb` (sorted first, so a CNAME result handed to the
    // wrong cert would refuse it) has no CNAME to check; `bweb`'s webroot, served by this host,
    // does not exist, which fails it before any order as well.
    let webroot = tempfile::tempdir().unwrap();
    let host = dns_host(
        &bed,
        json!({"good": ["host5.example.test"], "shared": ["host1.example.test"],
               "bad": ["host6.example.test", "nocname.example.test"], "wrong": ["wrong.example.test"],
               "aweb": {"names": ["host4.example.test"], "challenge": "http-01",
                        "webroot": webroot.path()},
               "bweb": {"names": ["host3.example.test"], "challenge": "http-01",
                        "webroot": webroot.path().join("missing")}}),
    );
    let req = host.request(json!({"cname_check": {
        "zones": [bed.get("TESTBED_SIGNING_ZONE"), bed.get("TESTBED_DYNAMIC_ZONE")],
        "resolver": bed.get("TESTBED_DNS"),
        "nameserver_port": bed.get("TESTBED_DNS_PORT").parse::<u16>().unwrap(),
    }}));
    assert!(req.failed(), "{}", req.json);
    let msg = req.msg();
    for want in [
        "nocname.example.test: _acme-challenge.nocname.example.test. has no CNAME",
        "add: _acme-challenge.nocname.example.test. IN CNAME nocname.example.test.signing.test.",
        "wrong.example.test: _acme-challenge.wrong.example.test. points to wrong.example.test.elsewhere.test.",
        "`host3.example.test`: webroot",
        "missing does not exist",
    ] {
        assert!(msg.contains(want), "missing {want:?}: {msg}");
    }
    assert_eq!(
        req.json["pending"],
        json!(["aweb", "good", "shared"]),
        "{}",
        req.json
    );
    assert_eq!(
        req.json["acme_http_required"][0]["cert"], "aweb",
        "{}",
        req.json
    );
    let mut owners: Vec<(String, String)> = req.json["acme_txt_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["cert"].as_str().unwrap().to_owned(),
                t["owner"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [
            ("good".into(), "host5.example.test.signing.test".into()),
            ("shared".into(), "acme.signing.test".into())
        ]
    );
    // No order for the refused certs, and no backoff: the next pulse after the fix orders.
    let log = std::fs::read_to_string(host.root.join("certbridge.log")).unwrap();
    for cert in ["bad", "wrong", "bweb"] {
        assert!(
            !log.lines()
                .any(|l| l.contains("\"order_created\"")
                    && l.contains(&format!("\"cert\":\"{cert}\""))),
            "an order was made for {cert}"
        );
        assert!(
            req.json["certs"][cert]["retry_not_before"].is_null(),
            "{}",
            req.json
        );
    }
    // The values, owners included, publish and finalize.
    let records = req.json["acme_txt_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t["host"] = json!("h1");
            t
        })
        .collect::<Vec<_>>();
    let run = run_module(
        "acme_txt_publish",
        &publish_args(&bed, state.path(), &records, 20),
    );
    assert!(!run.failed(), "{}", run.json);
    let fin = host.finalize(json!({"only": ["good", "shared"]}));
    let mut got = updated(&fin);
    got.sort();
    assert_eq!(got, ["good", "shared"], "{}", fin.json);
    println!(
        "play 1 refused 2 certs with bad CNAMEs before ordering; 2 others issued with their owners"
    );
}

fn values_of(run: &ModuleRun, key: &str) -> Vec<String> {
    run.json[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["value"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Values of finished orders leave the signing zone at the next publish, whatever
/// `keep_seconds` says: the host reports them (`acme_txt_retired`) after finalizing, and
/// acme_txt_publish removes them. A value of another pulse's order still in flight (published
/// earlier, not in this run, not retired) stays, protected by `keep_seconds`.
#[test]
fn values_of_finished_orders_leave_at_the_next_publish() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let state = tempfile::tempdir().unwrap();
    let done = dns_host(&bed, json!({"main": ["host4.example.test"]}));
    let inflight = dns_host(&bed, json!({"main": ["host5.example.test"]}));
    let later = dns_host(&bed, json!({"main": ["host6.example.test"]}));
    let txt = |owner: &str| support::dns::txt_values(&bed, owner);

    // Pulse 1 finishes `done`'s order.
    let req = done.request(json!({}));
    let finished = values_of(&req, "acme_txt_required");
    let run = run_module(
        "acme_txt_publish",
        &publish_args(&bed, state.path(), &records_of("done", &req), 20),
    );
    assert!(!run.failed(), "{}", run.json);
    assert!(!done.finalize(json!({})).failed());
    // Another pulse publishes `inflight`'s value and is still running (not finalized).
    let req = inflight.request(json!({}));
    let in_flight = values_of(&req, "acme_txt_required");
    let run = run_module(
        "acme_txt_publish",
        &publish_args(&bed, state.path(), &records_of("inflight", &req), 20),
    );
    assert!(!run.failed(), "{}", run.json);

    // Pulse 2: `done` has nothing to order and reports its finished value.
    let req = done.request(json!({}));
    assert!(!req.failed(), "{}", req.json);
    assert_eq!(
        values_of(&req, "acme_txt_retired"),
        finished,
        "{}",
        req.json
    );
    let mut retired = req.json["acme_txt_retired"].as_array().unwrap().clone();
    for r in &mut retired {
        r["host"] = json!("done");
    }
    let new = later.request(json!({}));
    let mut args = publish_args(&bed, state.path(), &records_of("later", &new), 20);
    args["retired"] = json!(retired);
    assert_eq!(
        args["keep_seconds"],
        Value::Null,
        "the default keep_seconds (1 h) applies"
    );
    let run = run_module("acme_txt_publish", &args);
    assert!(!run.failed(), "{}", run.json);
    let done_owner = "host4.example.test.signing.test";
    assert_eq!(
        run.json["removed"][done_owner],
        json!(finished),
        "{}",
        run.json
    );
    assert!(
        txt(done_owner).is_empty(),
        "a finished order's value is still served"
    );
    assert_eq!(
        txt("host5.example.test.signing.test"),
        in_flight,
        "an in-flight value went"
    );
    assert_eq!(
        txt("host6.example.test.signing.test"),
        values_of(&new, "acme_txt_required")
    );
    println!(
        "a finished order's value left at the next publish; another pulse's in-flight value stayed"
    );
}
