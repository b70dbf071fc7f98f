//! acme_txt_publish against the real test bed (BIND primary, optional secondary): both CNAME
//! layouts, both methods, idempotence, rejected records, faults, keep_seconds, and a paused
//! secondary. Each test starts its own bed (about 2 s) so they can run in parallel.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{run_module, ModuleRun, Testbed};

/// A deterministic dns-01-shaped value (43 base64url characters) from a short tag.
fn digest(tag: &str) -> String {
    let mut s: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.len() < 43 {
        s.push('x');
    }
    s.truncate(43);
    s
}

fn rec(host: &str, cert: &str, name: &str, value: &str) -> Value {
    let base = name.strip_prefix("*.").unwrap_or(name);
    json!({"host": host, "cert": cert, "name": name, "record": format!("_acme-challenge.{base}"), "value": value})
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// TXT values `server` serves at `owner` (asked directly, no recursion).
fn served(server: &str, owner: &str) -> BTreeSet<String> {
    certbridge_dns::verify::served_values(addr(server), owner, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("query {owner} at {server}: {e}"))
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn zonefile_zone(bed: &Testbed, secondary: bool) -> Value {
    let mut ns = vec!["ns1.signing.test"];
    let mut statics = vec![json!({"name": "ns1", "type": "A", "value": "127.0.0.1"})];
    if secondary {
        ns.push("ns2.signing.test");
        statics.push(json!({"name": "ns2", "type": "A", "value": "127.0.0.1"}));
    }
    json!({
        "origin": bed.get("TESTBED_SIGNING_ZONE"), "method": "zonefile",
        "path": bed.get("TESTBED_SIGNING_ZONE_FILE"), "ns": ns, "static_records": statics,
        "rndc_conf": bed.get("TESTBED_RNDC_CONF"),
    })
}

fn dyn_zone(bed: &Testbed) -> Value {
    json!({
        "origin": bed.get("TESTBED_DYNAMIC_ZONE"), "method": "rfc2136",
        "server": bed.get("TESTBED_DNS"), "tsig_name": bed.get("TESTBED_TSIG_NAME"),
        "tsig_algorithm": bed.get("TESTBED_TSIG_ALGORITHM"), "tsig_secret": bed.get("TESTBED_TSIG_SECRET"),
    })
}

/// Module args: the bed's resolver and NS port, a private state dir, a 20 s timeout.
fn args(bed: &Testbed, state: &std::path::Path, records: Vec<Value>, zones: Vec<Value>) -> Value {
    json!({
        "records": records, "zones": zones,
        "resolver": bed.get("TESTBED_DNS"),
        "nameserver_port": bed.get("TESTBED_DNS_PORT").parse::<u16>().unwrap(),
        "state_dir": state.to_str().unwrap(),
        "timeout": 20,
    })
}

fn with(mut v: Value, patch: Value) -> Value {
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}\n{}", run.msg(), run.json);
    &run.json
}

fn file_hash(path: &str) -> (Vec<u8>, std::time::SystemTime) {
    let meta = std::fs::metadata(path).unwrap();
    (std::fs::read(path).unwrap(), meta.modified().unwrap())
}

/// Sends a signal to a test-bed daemon by pid.
fn signal(pid: &str, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid)
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Resumes the paused secondary even when an assertion fails, so the bed can stop it.
struct Resume<'a>(&'a str);
impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.0).status();
    }
}

#[test]
fn both_layouts_both_methods_rejections_and_idempotence() {
    let bed = Testbed::start(&["--hosts", "6", "--secondary"]);
    let state = tempfile::tempdir().unwrap();
    let (primary, secondary) = (
        bed.get("TESTBED_DNS").to_owned(),
        bed.get("TESTBED_DNS_SECONDARY").to_owned(),
    );
    let good = vec![
        rec("host1", "main", "host1.example.test", &digest("host1")),
        rec("host2", "main", "host2.example.test", &digest("host2")),
        rec("host4", "main", "host4.example.test", &digest("host4")),
        rec("s3", "wild", "*.s3.example.test", &digest("s3-wild")),
        rec("s3", "wild", "s3.example.test", &digest("s3-apex")),
        rec("dyn1", "main", "dyn1.example.test", &digest("dyn1")),
        rec(
            "dynshared",
            "main",
            "dynshared.example.test",
            &digest("dynshared"),
        ),
    ];
    let bad = [
        rec("nocname", "c1", "nocname.example.test", &digest("nocname")),
        rec("wrong", "c2", "wrong.example.test", &digest("wrong")),
        rec("loop", "c3", "loop.example.test", &digest("loop")),
        rec("direct", "c4", "direct.example.test", &digest("direct")),
        rec(
            "badvalue",
            "c5",
            "host5.example.test",
            "not-a-dns-01-digest",
        ),
    ];
    let records: Vec<Value> = good.iter().chain(bad.iter()).cloned().collect();
    let base = with(
        args(
            &bed,
            state.path(),
            records,
            vec![zonefile_zone(&bed, true), dyn_zone(&bed)],
        ),
        json!({"nameservers": [primary, secondary]}),
    );
    let first = run_module(
        "acme_txt_publish",
        &with(base.clone(), json!({"_ansible_diff": true})),
    );
    let out = ok(&first);
    assert!(first.changed());
    assert!(
        !first.stdout.contains(bed.get("TESTBED_TSIG_SECRET")),
        "the TSIG secret leaked"
    );

    // Both layouts, both zones: each owner carries exactly its values.
    let expected = [
        (
            "acme.signing.test",
            set(&[&digest("host1"), &digest("host2")]),
        ),
        ("host4.example.test.signing.test", set(&[&digest("host4")])),
        (
            "s3.example.test.signing.test",
            set(&[&digest("s3-wild"), &digest("s3-apex")]),
        ),
        (
            "dyn1.example.test.dyn-signing.test",
            set(&[&digest("dyn1")]),
        ),
        ("acme.dyn-signing.test", set(&[&digest("dynshared")])),
    ];
    for (owner, values) in &expected {
        let published: BTreeSet<String> = out["published"][owner]
            .as_array()
            .unwrap_or_else(|| panic!("{owner} not in published: {}", out["published"]))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&published, values, "{owner}");
        assert_eq!(&served(&primary, owner), values, "primary, {owner}");
        assert_eq!(&served(&secondary, owner), values, "secondary, {owner}");
    }
    assert_eq!(out["published"].as_object().unwrap().len(), expected.len());
    for server in [&primary, &secondary] {
        assert_eq!(
            out["verified"][server.as_str()]["ok"],
            true,
            "{}",
            out["verified"]
        );
    }
    assert_eq!(
        out["diff"].as_array().map(Vec::len),
        Some(2),
        "one diff per zone"
    );

    // Exactly the bad records are rejected, each with its reason and the exact fix.
    let rejected = out["rejected"].as_array().unwrap();
    let by_host = |h: &str| {
        rejected
            .iter()
            .find(|r| r["host"] == h)
            .unwrap_or_else(|| panic!("{h} not rejected: {rejected:?}"))
    };
    assert_eq!(rejected.len(), 5, "{rejected:?}");
    for (host, reason) in [
        ("nocname", "has no CNAME"),
        ("wrong", "outside every managed zone"),
        ("loop", "CNAME loop"),
        ("direct", "TXT records of its own"),
        ("badvalue", "43 base64url characters"),
    ] {
        let r = by_host(host);
        assert!(
            r["reason"].as_str().unwrap().contains(reason),
            "{host}: {r}"
        );
        assert_eq!(r["cert"], by_host(host)["cert"]);
    }
    assert_eq!(by_host("badvalue")["cert"], "c5");
    assert!(by_host("badvalue")["reason"]
        .as_str()
        .unwrap()
        .contains("badvalue"));
    assert_eq!(
        by_host("nocname")["fix"],
        "_acme-challenge.nocname.example.test. IN CNAME nocname.example.test.signing.test."
    );
    assert_eq!(
        by_host("wrong")["fix"],
        "_acme-challenge.wrong.example.test. IN CNAME wrong.example.test.signing.test."
    );

    // Idempotence: the same values again touch nothing (file, state) and still verify.
    let zone_file = bed.get("TESTBED_SIGNING_ZONE_FILE");
    let before = file_hash(zone_file);
    let state_file = state.path().join("dyn-signing.test.rfc2136.json");
    let state_before = std::fs::read(&state_file).unwrap();
    let second = run_module("acme_txt_publish", &base);
    assert!(!ok(&second).get("changed").unwrap().as_bool().unwrap());
    assert_eq!(file_hash(zone_file), before, "the zone file was touched");
    assert_eq!(std::fs::read(&state_file).unwrap(), state_before);
    assert_eq!(second.json["verified"][primary.as_str()]["ok"], true);
    assert_eq!(second.json["rejected"].as_array().unwrap().len(), 5);

    // The resolver's view finds the same owners and the same faults.
    let via_resolver = run_module(
        "acme_txt_publish",
        &with(base.clone(), json!({"cname_check": "resolver"})),
    );
    assert!(!ok(&via_resolver).get("changed").unwrap().as_bool().unwrap());
    assert_eq!(via_resolver.json["published"], out["published"]);
    assert_eq!(via_resolver.json["rejected"], out["rejected"]);

    // Check mode with a new value: reports a change, writes nothing, sends nothing.
    let mut records2: Vec<Value> = good.clone();
    records2.push(rec("host5", "main", "host5.example.test", &digest("host5")));
    records2.push(rec("dyn2", "main", "dyn2.example.test", &digest("dyn2")));
    let check = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"records": records2, "_ansible_check_mode": true, "_ansible_diff": true}),
        ),
    );
    assert!(ok(&check).get("changed").unwrap().as_bool().unwrap());
    assert!(check.json["diff"][0]["after"]
        .as_str()
        .unwrap()
        .contains(&digest("host5")));
    assert_eq!(
        file_hash(zone_file),
        before,
        "check mode wrote the zone file"
    );
    assert_eq!(
        std::fs::read(&state_file).unwrap(),
        state_before,
        "check mode wrote the state"
    );
    assert!(served(&primary, "host5.example.test.signing.test").is_empty());
    assert!(served(&primary, "dyn2.example.test.dyn-signing.test").is_empty());
}

#[test]
fn faults_fail_clearly_and_lose_nothing() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let state = tempfile::tempdir().unwrap();
    let primary = bed.get("TESTBED_DNS").to_owned();
    let zone_file = bed.get("TESTBED_SIGNING_ZONE_FILE").to_owned();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let v1 = digest("faults-v1");
    let good = vec![rec("host4", "main", "host4.example.test", &v1)];
    let base = args(
        &bed,
        state.path(),
        good.clone(),
        vec![zonefile_zone(&bed, false)],
    );
    ok(&run_module("acme_txt_publish", &base));
    let owner = "host4.example.test.signing.test";
    assert_eq!(served(&primary, owner), set(&[&v1]));
    let published = file_hash(&zone_file);

    // Every record bad: fails before any network access (nothing listens at the resolver).
    let all_bad = with(
        base.clone(),
        json!({"resolver": dead, "records": [rec("h9", "c9", "host4.example.test", "short")]}),
    );
    let run = run_module("acme_txt_publish", &all_bad);
    assert!(
        run.failed() && run.msg().contains("h9") && run.msg().contains("c9"),
        "{}",
        run.json
    );
    assert!(run.elapsed < Duration::from_secs(1), "{:?}", run.elapsed);
    assert_eq!(file_hash(&zone_file), published);

    // A zone that fails validation is never loaded: the old one keeps serving.
    // (A second in-zone NS without an address: only named-checkzone notices.)
    let mut invalid = zonefile_zone(&bed, false);
    invalid["ns"] = json!(["ns1.signing.test", "ns9.signing.test"]);
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"zones": [invalid], "records": [rec("host4", "main", "host4.example.test", &digest("faults-v2"))]}),
        ),
    );
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.msg().contains("named-checkzone") && run.msg().contains("no address records"),
        "{}",
        run.msg()
    );
    assert!(
        run.msg().contains("old zone file is unchanged"),
        "{}",
        run.msg()
    );
    assert_eq!(file_hash(&zone_file), published);
    assert_eq!(served(&primary, owner), set(&[&v1]));

    // Wrong TSIG key: a clear failure naming the key, never the secret.
    let mut wrong_key = dyn_zone(&bed);
    wrong_key["tsig_secret"] = json!("d3JvbmcgYnV0IHZhbGlkIGJhc2U2NCBzZWNyZXQ=");
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"zones": [wrong_key], "records": [rec("dyn1", "main", "dyn1.example.test", &v1)]}),
        ),
    );
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.msg().contains("TSIG") && run.msg().contains(bed.get("TESTBED_TSIG_NAME")),
        "{}",
        run.msg()
    );
    assert!(!run
        .stdout
        .contains("d3JvbmcgYnV0IHZhbGlkIGJhc2U2NCBzZWNyZXQ="));

    // The update server down: fails at once, naming it.
    let mut down = dyn_zone(&bed);
    down["server"] = json!(dead);
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"zones": [down], "records": [rec("dyn1", "main", "dyn1.example.test", &v1)], "timeout": 5}),
        ),
    );
    assert!(run.failed() && run.msg().contains(&dead), "{}", run.json);
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);

    // An authoritative server down: verification fails within the deadline, naming it.
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"nameservers": [primary, dead], "timeout": 3}),
        ),
    );
    assert!(run.failed() && run.msg().contains(&dead), "{}", run.json);
    assert!(run.elapsed < Duration::from_secs(4), "{:?}", run.elapsed);
    assert_eq!(run.json["verified"][primary.as_str()]["ok"], true);
    assert_eq!(run.json["verified"][dead.as_str()]["ok"], false);
    assert_eq!(
        run.json["verified"][dead.as_str()]["missing"][owner],
        json!([v1])
    );

    // Another run holds the zone's lock: wait up to the timeout, then name lock and holder.
    {
        let lock_path = certbridge_core::zone::lock_path(zone_file.as_ref());
        let _held =
            certbridge_core::fsutil::Lock::acquire(&lock_path, Duration::from_secs(1)).unwrap();
        let run = run_module(
            "acme_txt_publish",
            &with(
                base.clone(),
                json!({"timeout": 2, "records": [rec("host4", "main", "host4.example.test", &digest("faults-v3"))]}),
            ),
        );
        assert!(run.failed(), "{}", run.json);
        assert!(
            run.msg().contains(&std::process::id().to_string()) && run.msg().contains(".lock"),
            "{}",
            run.msg()
        );
        assert!(run.elapsed < Duration::from_secs(4), "{:?}", run.elapsed);
    }
    assert_eq!(file_hash(&zone_file), published);

    // The zonefile method on a zone that takes dynamic updates: refused before writing ...
    let dyn_file = bed.get("TESTBED_DYNAMIC_ZONE_FILE").to_owned();
    let dyn_before = file_hash(&dyn_file);
    let dyn_as_file = json!({
        "origin": "dyn-signing.test", "method": "zonefile", "path": dyn_file, "ns": ["ns1.dyn-signing.test"],
        "static_records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"}], "rndc_conf": bed.get("TESTBED_RNDC_CONF"),
    });
    let dyn_records = vec![rec("dyn1", "main", "dyn1.example.test", &digest("frozen"))];
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"zones": [dyn_as_file.clone()], "records": dyn_records.clone()}),
        ),
    );
    assert!(run.failed() && run.msg().contains("freeze"), "{}", run.json);
    assert_eq!(file_hash(&dyn_file), dyn_before);
    // ... or written between rndc freeze and thaw, after which it takes updates again.
    let mut frozen = dyn_as_file;
    frozen["freeze"] = json!(true);
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"zones": [frozen], "records": dyn_records}),
        ),
    );
    ok(&run);
    assert_eq!(
        served(&primary, "dyn1.example.test.dyn-signing.test"),
        set(&[&digest("frozen")])
    );
    let run = run_module(
        "acme_txt_publish",
        &with(
            base.clone(),
            json!({"zones": [dyn_zone(&bed)], "records": [rec("dyn2", "main", "dyn2.example.test", &v1)]}),
        ),
    );
    ok(&run);
    assert_eq!(
        served(&primary, "dyn2.example.test.dyn-signing.test"),
        set(&[&v1])
    );
}

#[test]
fn keep_seconds_warnings_and_alias() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let state = tempfile::tempdir().unwrap();
    let primary = bed.get("TESTBED_DNS").to_owned();
    // No `nameservers`: verification asks each zone's NS (127.0.0.1 at nameserver_port).
    let zones = vec![zonefile_zone(&bed, false), dyn_zone(&bed)];
    let run_with = |records: Vec<Value>, patch: Value| {
        let r = run_module(
            "acme_txt_publish",
            &with(args(&bed, state.path(), records, zones.clone()), patch),
        );
        assert!(!r.failed(), "{}", r.json);
        r
    };
    let (file_owner, dyn_owner) = (
        "host4.example.test.signing.test",
        "dyn1.example.test.dyn-signing.test",
    );
    let pair = |tag: &str| {
        vec![
            rec(
                "host4",
                "main",
                "host4.example.test",
                &digest(&format!("file-{tag}")),
            ),
            rec(
                "dyn1",
                "main",
                "dyn1.example.test",
                &digest(&format!("dyn-{tag}")),
            ),
        ]
    };
    let r1 = run_with(pair("one"), json!({}));
    assert_eq!(
        r1.json["verified"][primary.as_str()]["ok"],
        true,
        "{}",
        r1.json
    );
    // A later run (e.g. with --limit) publishes other values: the earlier ones stay.
    let r2 = run_with(pair("two"), json!({}));
    assert!(r2.changed());
    assert_eq!(r2.json["removed"], json!({}));
    assert_eq!(
        served(&primary, file_owner),
        set(&[&digest("file-one"), &digest("file-two")])
    );
    assert_eq!(
        served(&primary, dyn_owner),
        set(&[&digest("dyn-one"), &digest("dyn-two")])
    );
    // Outside the window they go, in both methods.
    let r3 = run_with(pair("three"), json!({"keep_seconds": 0}));
    assert_eq!(served(&primary, file_owner), set(&[&digest("file-three")]));
    assert_eq!(served(&primary, dyn_owner), set(&[&digest("dyn-three")]));
    assert_eq!(
        r3.json["removed"][file_owner],
        json!([digest("file-one"), digest("file-two")]),
        "{}",
        r3.json
    );
    assert_eq!(
        r3.json["removed"][dyn_owner],
        json!([digest("dyn-one"), digest("dyn-two")])
    );

    // 12 values at the shared name: published and verified (the answer needs TCP), with a
    // warning; 6 hosts asking for one exact name set: a rate-limit warning.
    let mut crowded = Vec::new();
    for i in 0..12 {
        let host = format!("host{}", i % 3 + 1);
        crowded.push(rec(
            &host,
            &format!("c{i}"),
            &format!("{host}.example.test"),
            &digest(&format!("crowd{i}")),
        ));
    }
    for i in 1..=6 {
        crowded.push(rec(
            &format!("web{i}"),
            "site",
            "host5.example.test",
            &digest(&format!("site{i}")),
        ));
    }
    let r4 = run_with(crowded, json!({}));
    assert_eq!(served(&primary, "acme.signing.test").len(), 12);
    let warnings = r4.json["warnings"].to_string();
    assert!(
        warnings.contains("acme.signing.test. carries 12 TXT values"),
        "{warnings}"
    );
    assert!(
        warnings.contains("6 hosts") && warnings.contains("host5.example.test"),
        "{warnings}"
    );

    // An alias: every record must be a CNAME to it ...
    let alias_records = vec![
        rec("host1", "main", "host1.example.test", &digest("alias1")),
        rec("host4", "main", "host4.example.test", &digest("alias4")),
    ];
    let r5 = run_with(alias_records.clone(), json!({"alias": "acme.signing.test"}));
    assert_eq!(r5.json["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(r5.json["rejected"][0]["host"], "host4");
    assert_eq!(
        r5.json["rejected"][0]["fix"],
        "_acme-challenge.host4.example.test. IN CNAME acme.signing.test."
    );
    // ... unless check_cname is off: then everything goes to the alias, with no lookups.
    let r6 = run_with(
        alias_records,
        json!({"alias": "acme.signing.test", "check_cname": false}),
    );
    assert_eq!(r6.json["rejected"], json!([]));
    assert!(served(&primary, "acme.signing.test").contains(&digest("alias4")));
}

#[test]
fn paused_secondary_delays_then_fails_naming_it() {
    let bed = Testbed::start(&["--hosts", "6", "--secondary"]);
    let state = tempfile::tempdir().unwrap();
    let (primary, secondary) = (
        bed.get("TESTBED_DNS").to_owned(),
        bed.get("TESTBED_DNS_SECONDARY").to_owned(),
    );
    let pid = bed.get("TESTBED_SECONDARY_PID").to_owned();
    let base = with(
        args(
            &bed,
            state.path(),
            vec![],
            vec![zonefile_zone(&bed, true), dyn_zone(&bed)],
        ),
        json!({"nameservers": [primary, secondary]}),
    );
    let records = |tag: &str| {
        json!([
            rec(
                "host4",
                "main",
                "host4.example.test",
                &digest(&format!("pause-{tag}"))
            ),
            rec(
                "dyn1",
                "main",
                "dyn1.example.test",
                &digest(&format!("pause-{tag}"))
            ),
        ])
    };

    // Paused before publishing, resumed 2 s later: success, and it took the 2 s.
    let _resume = Resume(&pid);
    signal(&pid, "STOP");
    let resumer = {
        let pid = pid.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2)); // the scenario: a 2 s outage
            signal(&pid, "CONT");
        })
    };
    let run = run_module(
        "acme_txt_publish",
        &with(base.clone(), json!({"records": records("a")})),
    );
    resumer.join().unwrap();
    let out = ok(&run);
    assert!(out["elapsed"].as_f64().unwrap() >= 2.0, "{}", out);
    assert_eq!(out["verified"][secondary.as_str()]["ok"], true);
    assert_eq!(
        served(&secondary, "host4.example.test.signing.test"),
        set(&[&digest("pause-a")])
    );

    // Left paused: fails within timeout + 1 s, naming the server and what it lacks.
    signal(&pid, "STOP");
    let start = Instant::now();
    let run = run_module(
        "acme_txt_publish",
        &with(base.clone(), json!({"records": records("b"), "timeout": 3})),
    );
    let took = start.elapsed();
    signal(&pid, "CONT");
    assert!(run.failed(), "{}", run.json);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(took >= Duration::from_secs(3), "gave up early: {took:?}");
    assert!(run.msg().contains(&secondary), "{}", run.msg());
    assert!(
        !run.msg().contains(&format!("{primary} does not serve")),
        "{}",
        run.msg()
    );
    assert_eq!(run.json["verified"][primary.as_str()]["ok"], true);
    let missing = &run.json["verified"][secondary.as_str()]["missing"];
    assert!(
        missing["host4.example.test.signing.test"].is_array(),
        "{missing}"
    );
    assert!(
        missing["dyn1.example.test.dyn-signing.test"].is_array(),
        "{missing}"
    );
}

/// OpenDev's shared layout after a few crowded pulses: 101 values at one name. BIND 9.18.28+
/// refuses such a zone file (`max-records-per-type`, 100) and keeps serving the old zone.
/// With the default limit the module refuses before writing, naming the owner and the
/// limit; with the limit off (the real refusal) it fails as soon as `rndc zonestatus` shows
/// the old serial, with the reason, not after its timeout. The bed then takes a normal publish.
#[test]
fn a_zone_the_server_refuses_is_reported_at_once_with_the_reason() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let state = tempfile::tempdir().unwrap();
    let primary = bed.get("TESTBED_DNS").to_owned();
    let zone_path = bed.get("TESTBED_SIGNING_ZONE_FILE").to_owned();
    // 101 values at acme.signing.test (each host's CNAME leads there), `tag` makes them new.
    let crowd_of = |tag: &str| -> Vec<Value> {
        (0..101)
            .map(|i| {
                rec(
                    &format!("h{}", i % 3 + 1),
                    &format!("c{i}"),
                    &format!("host{}.example.test", i % 3 + 1),
                    &digest(&format!("{tag}-{i}")),
                )
            })
            .collect()
    };
    let crowd = crowd_of("crowd");
    // With the per-owner limit off, the file is written and BIND refuses it.
    let refused_run = |records: Vec<Value>, zones: Vec<Value>, want: &[&str]| {
        let run = run_module(
            "acme_txt_publish",
            &with(
                args(&bed, state.path(), records, zones),
                json!({"timeout": 60, "max_records_per_type": 0}),
            ),
        );
        assert!(run.failed(), "{}", run.json);
        for w in want {
            assert!(run.msg().contains(w), "missing {w:?}: {}", run.msg());
        }
        run
    };
    let zones = vec![zonefile_zone(&bed, false)];
    let before = file_hash(&zone_path);

    // 1. Default limit (100): refused before the zone file is touched.
    let run = run_module(
        "acme_txt_publish",
        &with(
            args(&bed, state.path(), crowd.clone(), zones.clone()),
            json!({"timeout": 60}),
        ),
    );
    assert!(run.failed(), "{}", run.json);
    for want in [
        "acme.signing.test. would carry 101 TXT records",
        "max-records-per-type",
        "own label",
    ] {
        assert!(run.msg().contains(want), "missing {want:?}: {}", run.msg());
    }
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
    assert_eq!(file_hash(&zone_path).0, before.0, "the zone file changed");

    // 2. Limit off: the file is written, BIND refuses to load it; reported within the
    // load grace, far below the 60 s timeout the verification would otherwise wait out.
    let run = refused_run(
        crowd,
        zones.clone(),
        &[
            "did not load the new zone file",
            "zonestatus signing.test` still shows serial 1",
            "carries 101 TXT records",
            "max-records-per-type",
        ],
    );
    assert!(
        run.elapsed < Duration::from_secs(20),
        "a refused reload was reported only after {:?}",
        run.elapsed
    );
    let named_log = std::fs::read_to_string(bed.get("TESTBED_NAMED_LOG")).unwrap();
    assert!(
        named_log.contains("too many records"),
        "BIND did not refuse the zone: the test exercised nothing"
    );
    let refused_after = run.elapsed;

    // 2b. The same with the zone's `server_log` (the bed's named logs to that file): BIND's own
    // words are the reason, and its logged refusal ends the wait before the load grace.
    let mut logged_zone = zonefile_zone(&bed, false);
    logged_zone["server_log"] = json!(bed.get("TESTBED_NAMED_LOG"));
    let run = refused_run(
        crowd_of("crowd2"),
        vec![logged_zone],
        &[
            "did not load the new zone file",
            "the server logged",
            "'signing.test/IN' (zone): too many records (must not exceed 100)",
            "zone signing.test/IN: loading from master file",
            "max-records-per-type",
        ],
    );
    assert!(
        run.elapsed < Duration::from_secs(8),
        "the logged refusal did not end the wait: {:?}",
        run.elapsed
    );
    let logged_after = run.elapsed;

    // 3. A zone BIND takes: published and verified (the module recovers the file).
    let few: Vec<Value> = (0..5)
        .map(|i| {
            rec(
                "h1",
                &format!("ok{i}"),
                "host1.example.test",
                &digest(&format!("ok-{i}")),
            )
        })
        .collect();
    let run = run_module(
        "acme_txt_publish",
        &with(
            args(&bed, state.path(), few, zones),
            json!({"keep_seconds": 0}),
        ),
    );
    ok(&run);
    assert_eq!(served(&primary, "acme.signing.test").len(), 5);
    println!(
        "101 values at one name: refused before writing; with the limit off BIND refused the zone and the module said so after {:.1} s (timeout 60 s), {:.1} s with its log quoted",
        refused_after.as_secs_f64(),
        logged_after.as_secs_f64()
    );
}
