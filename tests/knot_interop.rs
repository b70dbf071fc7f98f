//! acme_txt_publish's `rfc2136` method against Knot DNS (the bed's knotd, `--knot`) with each
//! TSIG algorithm it serves (hmac-sha256, hmac-sha512): several owners through both CNAME
//! layouts, verification on Knot's answers, an idempotent re-run, stale values removed, and a
//! wrong key failing clearly with nothing published. tests/acme_txt_publish.rs covers BIND.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{dig, run_module, BedTsig, ModuleRun, Testbed};

/// A dns-01-shaped value (43 base64url characters) from a short tag.
fn digest(tag: &str) -> String {
    let mut s: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.extend(std::iter::repeat_n('k', 43usize.saturating_sub(s.len())));
    s.truncate(43);
    s
}

fn rec(host: &str, value: &str) -> Value {
    json!({"host": host, "cert": "main", "name": format!("{host}.example.test"),
           "record": format!("_acme-challenge.{host}.example.test"), "value": value})
}

/// TXT values knotd serves at `owner` (asked directly, no recursion).
fn served(bed: &Testbed, owner: &str) -> BTreeSet<String> {
    let server = bed.get("TESTBED_KNOT").parse().unwrap();
    certbridge_dns::verify::served_values(server, owner, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("query {owner} at knotd: {e}"))
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// The SOA serial knotd serves for its zone.
fn serial(bed: &Testbed) -> u32 {
    let soa = dig(
        bed.get("TESTBED_KNOT_PORT"),
        bed.get("TESTBED_KNOT_ZONE"),
        "SOA",
    );
    soa.first()
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA from knotd: {soa:?}"))
}

/// Module arguments: the Knot zone over rfc2136 with `key`; CNAMEs followed through the bed's
/// resolver (BIND, which forwards the Knot zone to knotd); verification on knotd itself.
fn args(bed: &Testbed, state: &std::path::Path, key: &BedTsig, records: Vec<Value>) -> Value {
    json!({
        "records": records,
        "zones": [{
            "origin": bed.get("TESTBED_KNOT_ZONE"), "method": "rfc2136",
            "server": bed.get("TESTBED_KNOT"), "tsig_name": key.name,
            "tsig_algorithm": key.algorithm, "tsig_secret": key.secret,
        }],
        "cname_check": "resolver",
        "resolver": bed.get("TESTBED_DNS"),
        "nameservers": [bed.get("TESTBED_KNOT")],
        "keep_seconds": 0,
        "state_dir": state.to_str().unwrap(),
        "timeout": 20,
    })
}

fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}\n{}", run.msg(), run.json);
    &run.json
}

fn changed(run: &ModuleRun) -> bool {
    ok(run)["changed"].as_bool().expect("changed is a bool")
}

/// The whole interop scenario with one of knotd's keys (index into [`Testbed::knot_keys`]).
fn publish_verify_rerun_remove_refuse(key_index: usize) {
    let bed = Testbed::start(&["--hosts", "3", "--knot"]);
    let key = bed.knot_keys()[key_index].clone();
    let alg = key.algorithm.clone();
    let state = tempfile::tempdir().unwrap();
    let knot = bed.get("TESTBED_KNOT").to_owned();
    let zone = bed.get("TESTBED_KNOT_ZONE").to_owned();
    let owner = |host: &str| format!("{host}.example.test.{zone}");
    let shared = bed.get("TESTBED_KNOT_SHARED_ALIAS").to_owned();
    let v = |tag: &str| digest(&format!("{alg}-{tag}"));

    // Several owners: three per-name labels and the shared alias.
    let records = vec![
        rec("knot1", &v("1")),
        rec("knot2", &v("2")),
        rec("knot3", &v("3")),
        rec("knotshared", &v("s")),
    ];
    let serial0 = serial(&bed);
    let first = run_module(
        "acme_txt_publish",
        &args(&bed, state.path(), &key, records.clone()),
    );
    assert!(changed(&first), "{alg}: the first run publishes");
    assert_eq!(
        first.json["verified"][knot.as_str()]["ok"],
        true,
        "{alg}: {}",
        first.json
    );
    assert!(
        first.json["rejected"].as_array().unwrap().is_empty(),
        "{}",
        first.json
    );
    for (host, tag) in [("knot1", "1"), ("knot2", "2"), ("knot3", "3")] {
        assert_eq!(served(&bed, &owner(host)), set(&[&v(tag)]), "{alg}: {host}");
    }
    assert_eq!(
        served(&bed, &shared),
        set(&[&v("s")]),
        "{alg}: shared alias"
    );
    // One UPDATE message: Knot raises the serial once for the whole change.
    assert_eq!(
        serial(&bed),
        serial0 + 1,
        "{alg}: one update, one serial step"
    );
    assert!(
        !first.stdout.contains(&key.secret),
        "{alg}: the TSIG secret leaked"
    );

    // Idempotent: the same values again send no update.
    let again = run_module("acme_txt_publish", &args(&bed, state.path(), &key, records));
    assert!(
        !changed(&again),
        "{alg}: the re-run changed something: {}",
        again.json
    );
    assert_eq!(again.json["verified"][knot.as_str()]["ok"], true);
    assert_eq!(
        serial(&bed),
        serial0 + 1,
        "{alg}: the re-run updated the zone"
    );

    // New value for knot1, knot2 no longer wanted: with keep_seconds 0 the stale values go.
    let fresh = vec![
        rec("knot1", &v("1b")),
        rec("knot3", &v("3")),
        rec("knotshared", &v("s")),
    ];
    let third = run_module(
        "acme_txt_publish",
        &args(&bed, state.path(), &key, fresh.clone()),
    );
    assert!(changed(&third), "{alg}: the new value was not published");
    assert_eq!(third.json["verified"][knot.as_str()]["ok"], true);
    assert_eq!(
        served(&bed, &owner("knot1")),
        set(&[&v("1b")]),
        "{alg}: stale knot1 value"
    );
    assert!(
        served(&bed, &owner("knot2")).is_empty(),
        "{alg}: stale knot2 value"
    );
    assert_eq!(served(&bed, &owner("knot3")), set(&[&v("3")]));
    let removed = &third.json["removed"];
    assert!(
        removed.to_string().contains(&v("1")) && removed.to_string().contains(&v("2")),
        "{alg}: removed values not reported: {removed}"
    );

    // A wrong secret for the same key name: refused by Knot, named clearly, nothing published.
    let serial_before = serial(&bed);
    let wrong = BedTsig {
        secret: wrong_secret(key.secret.len()),
        ..key.clone()
    };
    let mut bad_records = fresh;
    bad_records.push(rec("knot2", &v("2c")));
    let bad = run_module(
        "acme_txt_publish",
        &args(&bed, state.path(), &wrong, bad_records),
    );
    assert!(
        bad.failed(),
        "{alg}: a wrong key was accepted: {}",
        bad.json
    );
    let msg = bad.msg();
    for needle in [
        zone.as_str(),
        "rfc2136",
        knot.as_str(),
        key.name.as_str(),
        "TSIG",
    ] {
        assert!(
            msg.contains(needle),
            "{alg}: message lacks `{needle}`: {msg}"
        );
    }
    assert!(!bad.stdout.contains(&wrong.secret) && !bad.stdout.contains(&key.secret));
    assert!(
        served(&bed, &owner("knot2")).is_empty(),
        "{alg}: published with a wrong key"
    );
    assert_eq!(
        served(&bed, &owner("knot1")),
        set(&[&v("1b")]),
        "{alg}: old data lost"
    );
    assert_eq!(serial(&bed), serial_before, "{alg}: the zone changed");
}

/// A base64 secret of `len` characters that is not the bed's (all `A`, padded like it).
fn wrong_secret(len: usize) -> String {
    let mut s = "A".repeat(len - 1);
    s.push('=');
    s
}

#[test]
fn knot_rfc2136_hmac_sha256() {
    publish_verify_rerun_remove_refuse(0);
}

#[test]
fn knot_rfc2136_hmac_sha512() {
    publish_verify_rerun_remove_refuse(1);
}
