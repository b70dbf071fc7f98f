//! acme_txt_publish's `powerdns` method against PowerDNS Authoritative (the bed's pdns_server,
//! `--pdns`: gsqlite3, HTTP API, SOA-EDIT-API INCREASE). Five hosts through both CNAME
//! layouts, verification on the server, an idempotent re-run, stale values removed, a change
//! PowerDNS refuses (422) leaving every old value in place; then a wrong key, a missing zone
//! and a stopped server, each failing with zone, method and server named and nothing
//! published; an https URL refused up front. The API key appears in no output, state file or
//! server log.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use support::{dig, run_module, ModuleRun, Testbed};

struct Pdns {
    bed: Testbed,
    addr: String,
    zone: String,
    api: String,
    key: String,
}

impl Pdns {
    fn start() -> Pdns {
        let bed = Testbed::start(&["--hosts", "4", "--pdns"]);
        Pdns {
            addr: bed.get("TESTBED_PDNS").to_owned(),
            zone: bed.get("TESTBED_PDNS_ZONE").to_owned(),
            api: bed.get("TESTBED_PDNS_API_URL").to_owned(),
            key: bed.get("TESTBED_PDNS_API_KEY").to_owned(),
            bed,
        }
    }

    /// The signing-zone owner behind `_acme-challenge.pdns<n>.example.test` (n = 0: shared).
    fn owner(&self, n: u32) -> String {
        match n {
            0 => self.bed.get("TESTBED_PDNS_SHARED_ALIAS").to_owned(),
            n => format!("pdns{n}.example.test.{}", self.zone),
        }
    }

    fn rec(&self, n: u32, value: &str) -> Value {
        let host = match n {
            0 => "pdnsshared".to_string(),
            n => format!("pdns{n}"),
        };
        json!({"host": host, "cert": "main", "name": format!("{host}.example.test"),
               "record": format!("_acme-challenge.{host}.example.test"), "value": value})
    }

    fn served(&self, owner: &str) -> BTreeSet<String> {
        let server = self.addr.parse().unwrap();
        certbridge_dns::verify::served_values(server, owner, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("query {owner} at {}: {e}", self.addr))
    }

    fn serial(&self) -> u32 {
        let port = self.bed.get("TESTBED_PDNS_PORT").to_owned();
        let soa = dig(&port, &self.zone, "SOA");
        soa.first()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no SOA of {} at {}: {soa:?}", self.zone, self.addr))
    }

    fn zone_args(&self, origin: &str, key: &str) -> Value {
        json!({"origin": origin, "method": "powerdns", "api_url": self.api, "api_key": key, "ttl": 5})
    }

    fn args(&self, state: &Path, key: &str, records: Vec<Value>, keep: u64) -> Value {
        json!({
            "records": records,
            "zones": [self.zone_args(&self.zone, key)],
            "cname_check": "resolver",
            "resolver": self.bed.get("TESTBED_DNS"),
            "nameservers": [self.addr],
            "keep_seconds": keep,
            "state_dir": state.to_str().unwrap(),
            "timeout": 20,
        })
    }

    /// A change made by the zone's operator through the API (curl, as an operator would).
    fn operator_patch(&self, rrsets: Value) {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PATCH",
            ])
            .args(["-H", &format!("X-API-Key: {}", self.key)])
            .args(["-H", "Content-Type: application/json"])
            .args(["--data", &json!({ "rrsets": rrsets }).to_string()])
            .arg(format!(
                "{}/api/v1/servers/localhost/zones/{}.",
                self.api, self.zone
            ))
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "204", "{out:?}");
    }

    /// Everything a run left behind that must not hold the key: its output and stderr, the
    /// state dir's files and PowerDNS's log.
    fn assert_key_absent(&self, run: &ModuleRun, state: &Path) {
        assert!(
            !run.stdout.contains(&self.key),
            "the key is in the module's output"
        );
        assert!(
            !run.stderr.contains(&self.key),
            "the key is in the module's stderr"
        );
        for entry in std::fs::read_dir(state).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read(&path).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&text).contains(&self.key),
                "the key is in {}",
                path.display()
            );
        }
        let log = std::fs::read_to_string(self.bed.get("TESTBED_PDNS_LOG")).unwrap();
        assert!(!log.contains(&self.key), "the key is in PowerDNS's log");
    }
}

fn digest(tag: &str) -> String {
    let mut s: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.extend(std::iter::repeat_n('p', 43usize.saturating_sub(s.len())));
    s.truncate(43);
    s
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}\n{}", run.msg(), run.json);
    &run.json
}

#[test]
fn powerdns_publishes_verifies_is_idempotent_expires_and_keeps_old_data_on_refusal() {
    let t = Pdns::start();
    let state = tempfile::tempdir().unwrap();
    let verified_ok = |run: &ModuleRun| run.json["verified"][t.addr.as_str()]["ok"] == true;

    // Five hosts: four per-name labels and the shared alias (n = 0), all through CNAMEs.
    let hosts = [1, 2, 3, 4, 0];
    let records: Vec<Value> = hosts
        .iter()
        .map(|&n| t.rec(n, &digest(&format!("v{n}"))))
        .collect();
    let serial0 = t.serial();
    let first = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &t.key, records.clone(), 3600),
    );
    assert!(
        ok(&first)["changed"] == true,
        "the first run publishes: {}",
        first.json
    );
    assert!(verified_ok(&first), "not verified: {}", first.json);
    assert_eq!(first.json["rejected"], json!([]), "{}", first.json);
    for n in hosts {
        assert_eq!(
            t.served(&t.owner(n)),
            set(&[&digest(&format!("v{n}"))]),
            "owner {n}"
        );
    }
    // One PATCH, one serial step (SOA-EDIT-API INCREASE; the SOA is the server's).
    assert_eq!(t.serial(), serial0 + 1, "one PATCH, one serial step");
    t.assert_key_absent(&first, state.path());

    // Idempotent: the same values again change nothing.
    let again = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &t.key, records, 3600),
    );
    assert!(
        ok(&again)["changed"] == false,
        "the re-run changed: {}",
        again.json
    );
    assert!(verified_ok(&again), "re-run not verified: {}", again.json);
    assert_eq!(t.serial(), serial0 + 1, "the re-run touched the zone");

    // New values at 1 and the alias; 2 no longer wanted. Kept while younger than keep_seconds...
    let fresh: Vec<Value> = vec![
        t.rec(1, &digest("v1b")),
        t.rec(3, &digest("v3")),
        t.rec(0, &digest("v0b")),
    ];
    let kept = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &t.key, fresh.clone(), 3600),
    );
    ok(&kept);
    assert_eq!(
        t.served(&t.owner(1)),
        set(&[&digest("v1"), &digest("v1b")]),
        "kept at 1"
    );
    assert_eq!(t.served(&t.owner(2)), set(&[&digest("v2")]), "kept at 2");
    // ...removed once older (keep_seconds 0): owner 2 is left without TXT (a DELETE).
    let third = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &t.key, fresh.clone(), 0),
    );
    assert!(ok(&third)["changed"] == true, "{}", third.json);
    assert!(verified_ok(&third), "not verified: {}", third.json);
    assert_eq!(t.served(&t.owner(1)), set(&[&digest("v1b")]), "stale at 1");
    assert!(t.served(&t.owner(2)).is_empty(), "stale at 2");
    assert_eq!(
        t.served(&t.owner(0)),
        set(&[&digest("v0b")]),
        "stale at the alias"
    );
    let removed = third.json["removed"].to_string();
    for v in ["v1", "v2", "v0"] {
        assert!(
            removed.contains(&digest(v)),
            "{v} not reported removed: {removed}"
        );
    }

    // A change PowerDNS refuses: a record whose owner (in the zone itself, published without
    // a CNAME) holds a CNAME. The whole PATCH is refused (422, PowerDNS's text kept), so the
    // valid part of it (a new value at owner 1) is not applied either.
    let conflict = format!("_acme-challenge.conflict.{}", t.zone);
    t.operator_patch(json!([{"name": format!("{conflict}."), "type": "CNAME", "ttl": 5,
        "changetype": "REPLACE", "records": [{"content": format!("{}.", t.owner(3)), "disabled": false}]}]));
    let serial_before = t.serial();
    let mut bad_records = fresh.clone();
    bad_records[0] = t.rec(1, &digest("v1c"));
    bad_records.push(
        json!({"host": "conflict", "cert": "main", "name": format!("conflict.{}", t.zone),
        "record": conflict, "value": digest("vc")}),
    );
    let refused = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &t.key, bad_records, 0),
    );
    assert!(
        refused.failed(),
        "the refused PATCH passed: {}",
        refused.json
    );
    let msg = refused.msg();
    for needle in [
        t.zone.as_str(),
        "powerdns",
        t.api.as_str(),
        "HTTP 422",
        "Conflicts with pre-existing RRset",
    ] {
        assert!(msg.contains(needle), "message lacks `{needle}`: {msg}");
    }
    println!("422: {msg}");
    assert_eq!(
        t.served(&t.owner(1)),
        set(&[&digest("v1b")]),
        "part of a refused PATCH applied"
    );
    assert_eq!(t.serial(), serial_before, "the zone changed");
    t.assert_key_absent(&refused, state.path());
}

#[test]
fn powerdns_wrong_key_missing_zone_stopped_server_and_https_fail_named_with_nothing_published() {
    let t = Pdns::start();
    let state = tempfile::tempdir().unwrap();
    let serial0 = t.serial();
    let records = vec![t.rec(1, &digest("w1")), t.rec(0, &digest("w0"))];

    // Wrong key: 401, named; nothing published.
    let wrong = "certbridge-not-the-key-0123456789";
    let bad = run_module(
        "acme_txt_publish",
        &t.args(state.path(), wrong, records.clone(), 0),
    );
    assert!(bad.failed(), "a wrong key was accepted: {}", bad.json);
    let msg = bad.msg();
    for needle in [
        t.zone.as_str(),
        "powerdns",
        t.api.as_str(),
        "HTTP 401",
        "api_key",
    ] {
        assert!(msg.contains(needle), "message lacks `{needle}`: {msg}");
    }
    println!("wrong key: {msg}");
    assert!(
        !bad.stdout.contains(wrong),
        "the wrong key is in the output"
    );
    t.assert_key_absent(&bad, state.path());
    assert!(
        t.served(&t.owner(1)).is_empty(),
        "published with a wrong key"
    );
    assert_eq!(t.serial(), serial0);

    // A zone the server does not have: 404, named.
    let missing = "missing-pdns.test";
    let mut args = t.args(
        state.path(),
        &t.key,
        vec![json!({"host": "m", "cert": "main",
        "name": format!("m.{missing}"), "record": format!("_acme-challenge.m.{missing}"),
        "value": digest("m")})],
        0,
    );
    args["zones"] = json!([t.zone_args(missing, &t.key)]);
    let nozone = run_module("acme_txt_publish", &args);
    assert!(nozone.failed(), "{}", nozone.json);
    let msg = nozone.msg();
    for needle in [missing, "powerdns", t.api.as_str(), "HTTP 404"] {
        assert!(msg.contains(needle), "message lacks `{needle}`: {msg}");
    }
    println!("missing zone: {msg}");

    // The server stopped (SIGSTOP: its sockets accept, nothing answers): the deadline, named.
    let pid = t.bed.get("TESTBED_PDNS_PID").to_owned();
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success());
    };
    signal("-STOP");
    let mut args = t.args(state.path(), &t.key, records.clone(), 0);
    args["timeout"] = json!(2);
    let started = std::time::Instant::now();
    let down = run_module("acme_txt_publish", &args);
    let took = started.elapsed();
    signal("-CONT");
    assert!(down.failed(), "{}", down.json);
    let msg = down.msg();
    for needle in [t.zone.as_str(), "powerdns", t.api.as_str(), "deadline"] {
        assert!(msg.contains(needle), "message lacks `{needle}`: {msg}");
    }
    assert!(
        took < Duration::from_secs(10),
        "the deadline was not kept: {took:?}"
    );
    println!("stopped server ({took:?}): {msg}");

    // A port nobody listens on: cannot reach, named.
    let mut args = t.args(state.path(), &t.key, records.clone(), 0);
    args["zones"][0]["api_url"] = json!("http://127.0.0.1:9");
    let refused = run_module("acme_txt_publish", &args);
    assert!(refused.failed(), "{}", refused.json);
    let msg = refused.msg();
    assert!(
        msg.contains("cannot reach") && msg.contains("127.0.0.1:9") && msg.contains("powerdns"),
        "{msg}"
    );

    // Nothing of the above reached the zone.
    assert!(t.served(&t.owner(1)).is_empty());
    assert_eq!(t.serial(), serial0);

    // An https api_url is refused when the options are read, saying what to do instead.
    let mut args = t.args(state.path(), &t.key, records.clone(), 0);
    args["zones"][0]["api_url"] = json!(t.api.replace("http://", "https://"));
    let https = run_module("acme_txt_publish", &args);
    assert!(https.failed(), "{}", https.json);
    let msg = https.msg();
    assert!(
        msg.contains("https is not supported") && msg.contains("zones[0]"),
        "{msg}"
    );
    assert!(t.served(&t.owner(1)).is_empty());

    // The right key then works.
    let good = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &t.key, records, 0),
    );
    assert!(ok(&good)["changed"] == true, "{}", good.json);
    assert_eq!(t.served(&t.owner(1)), set(&[&digest("w1")]));
    assert_eq!(t.serial(), serial0 + 1);
    t.assert_key_absent(&good, state.path());
}
