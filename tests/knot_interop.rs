//! acme_txt_publish's `rfc2136` method against Knot DNS (the bed's knotd, `--knot`) and BIND
//! (the bed's `dyn-signing.test`), each with hmac-sha256 and hmac-sha512. The same scenario
//! on every server and key: several owners through both CNAME layouts, verification on the
//! server's answers, an idempotent re-run, stale values removed, and a wrong key failing
//! clearly with nothing published. tests/acme_txt_publish.rs covers BIND's other cases.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{dig, run_module, BedTsig, ModuleRun, Testbed};

/// Which of the bed's servers takes the updates.
#[derive(Clone, Copy)]
enum Server {
    Knot,
    Bind,
}

/// One server's facts in a running bed.
struct Target {
    bed: Testbed,
    key: BedTsig,
    addr: String,
    port: String,
    zone: String,
    shared_alias: String,
    /// Prefix of the per-name hosts in example.test (`knot1`, `dyn1`, ... `knotshared`).
    prefix: &'static str,
}

impl Target {
    /// Starts a bed for `server` and takes its key `key_index` (0: hmac-sha256, 1: sha512).
    fn start(server: Server, key_index: usize) -> Target {
        // (bed options, TESTBED_* of the address, its port, the zone, the shared alias, prefix)
        let (opts, addr, port, zone, alias, prefix): (&[&str], _, _, _, _, _) = match server {
            Server::Knot => (
                &["--hosts", "3", "--knot"],
                "TESTBED_KNOT",
                "TESTBED_KNOT_PORT",
                "TESTBED_KNOT_ZONE",
                "TESTBED_KNOT_SHARED_ALIAS",
                "knot",
            ),
            Server::Bind => (
                &["--hosts", "3"],
                "TESTBED_DNS",
                "TESTBED_DNS_PORT",
                "TESTBED_DYNAMIC_ZONE",
                "TESTBED_DYNAMIC_SHARED_ALIAS",
                "dyn",
            ),
        };
        let bed = Testbed::start(opts);
        let keys = match server {
            Server::Knot => bed.knot_keys(),
            Server::Bind => bed.bind_keys(),
        };
        Target {
            key: keys[key_index].clone(),
            addr: bed.get(addr).to_owned(),
            port: bed.get(port).to_owned(),
            zone: bed.get(zone).to_owned(),
            shared_alias: bed.get(alias).to_owned(),
            prefix,
            bed,
        }
    }

    /// The signing-zone owner behind `_acme-challenge.<prefix><n>.example.test`.
    fn owner(&self, n: u32) -> String {
        format!("{}{n}.example.test.{}", self.prefix, self.zone)
    }

    /// A record for host `<prefix><n>` (`<prefix>shared` for n = 0).
    fn rec(&self, n: u32, value: &str) -> Value {
        let host = match n {
            0 => format!("{}shared", self.prefix),
            n => format!("{}{n}", self.prefix),
        };
        json!({"host": host, "cert": "main", "name": format!("{host}.example.test"),
               "record": format!("_acme-challenge.{host}.example.test"), "value": value})
    }

    /// TXT values the server serves at `owner` (asked directly, no recursion).
    fn served(&self, owner: &str) -> BTreeSet<String> {
        let server = self.addr.parse().unwrap();
        certbridge_dns::verify::served_values(server, owner, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("query {owner} at {}: {e}", self.addr))
    }

    /// The zone's SOA serial on the server.
    fn serial(&self) -> u32 {
        let soa = dig(&self.port, &self.zone, "SOA");
        soa.first()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no SOA of {} at {}: {soa:?}", self.zone, self.addr))
    }

    /// Module arguments: the zone over rfc2136 with `key`; CNAMEs followed through the bed's
    /// resolver (BIND, which forwards the Knot zone to knotd); verification on the server.
    fn args(&self, state: &std::path::Path, key: &BedTsig, records: Vec<Value>) -> Value {
        json!({
            "records": records,
            "zones": [{
                "origin": self.zone, "method": "rfc2136",
                "server": self.addr, "tsig_name": key.name,
                "tsig_algorithm": key.algorithm, "tsig_secret": key.secret,
            }],
            "cname_check": "resolver",
            "resolver": self.bed.get("TESTBED_DNS"),
            "nameservers": [self.addr],
            "keep_seconds": 0,
            "state_dir": state.to_str().unwrap(),
            "timeout": 20,
        })
    }
}

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

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}\n{}", run.msg(), run.json);
    &run.json
}

fn changed(run: &ModuleRun) -> bool {
    ok(run)["changed"].as_bool().expect("changed is a bool")
}

/// A base64 secret as long as the bed's but not it (all `A`, one `=` of padding).
fn wrong_secret(len: usize) -> String {
    let mut s = "A".repeat(len - 1);
    s.push('=');
    s
}

/// The whole scenario on `server` with its key `key_index`.
fn publish_verify_rerun_remove_refuse(server: Server, key_index: usize) {
    let t = Target::start(server, key_index);
    let key = t.key.clone();
    let alg = format!("{} {}", t.addr, key.algorithm);
    let state = tempfile::tempdir().unwrap();
    let v = |tag: &str| digest(&format!("{}-{tag}", key.algorithm));
    let verified_ok = |run: &ModuleRun| run.json["verified"][t.addr.as_str()]["ok"] == true;

    // Several owners: three per-name labels and the shared alias (n = 0).
    let records = vec![
        t.rec(1, &v("1")),
        t.rec(2, &v("2")),
        t.rec(3, &v("3")),
        t.rec(0, &v("s")),
    ];
    let serial0 = t.serial();
    let first = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &key, records.clone()),
    );
    assert!(changed(&first), "{alg}: the first run publishes");
    assert!(verified_ok(&first), "{alg}: not verified: {}", first.json);
    let rejected = first.json["rejected"].as_array().unwrap();
    assert!(rejected.is_empty(), "{alg}: {}", first.json);
    for (n, tag) in [(1, "1"), (2, "2"), (3, "3")] {
        assert_eq!(t.served(&t.owner(n)), set(&[&v(tag)]), "{alg}: owner {n}");
    }
    assert_eq!(t.served(&t.shared_alias), set(&[&v("s")]), "{alg}: alias");
    // One UPDATE message: the serial rises once for the whole change.
    assert_eq!(
        t.serial(),
        serial0 + 1,
        "{alg}: one update, one serial step"
    );
    assert!(
        !first.stdout.contains(&key.secret),
        "{alg}: the secret leaked"
    );

    // Idempotent: the same values again send no update.
    let again = run_module("acme_txt_publish", &t.args(state.path(), &key, records));
    assert!(
        !changed(&again),
        "{alg}: the re-run changed: {}",
        again.json
    );
    assert!(
        verified_ok(&again),
        "{alg}: re-run not verified: {}",
        again.json
    );
    assert_eq!(
        t.serial(),
        serial0 + 1,
        "{alg}: the re-run updated the zone"
    );

    // A new value at owner 1, owner 2 no longer wanted: with keep_seconds 0 the stale go.
    let fresh = vec![t.rec(1, &v("1b")), t.rec(3, &v("3")), t.rec(0, &v("s"))];
    let third = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &key, fresh.clone()),
    );
    assert!(changed(&third), "{alg}: the new value was not published");
    assert!(verified_ok(&third), "{alg}: not verified: {}", third.json);
    assert_eq!(t.served(&t.owner(1)), set(&[&v("1b")]), "{alg}: stale at 1");
    assert!(t.served(&t.owner(2)).is_empty(), "{alg}: stale at 2");
    assert_eq!(t.served(&t.owner(3)), set(&[&v("3")]), "{alg}: owner 3");
    let removed = third.json["removed"].to_string();
    assert!(
        removed.contains(&v("1")) && removed.contains(&v("2")),
        "{alg}: removed values not reported: {removed}"
    );

    // A wrong secret for the same key name: refused, named clearly, nothing published.
    let serial_before = t.serial();
    let wrong = BedTsig {
        secret: wrong_secret(key.secret.len()),
        ..key.clone()
    };
    let mut bad_records = fresh;
    bad_records.push(t.rec(2, &v("2c")));
    let bad = run_module(
        "acme_txt_publish",
        &t.args(state.path(), &wrong, bad_records),
    );
    assert!(
        bad.failed(),
        "{alg}: a wrong key was accepted: {}",
        bad.json
    );
    let msg = bad.msg();
    for needle in [&t.zone, "rfc2136", &t.addr, &key.name, "TSIG"] {
        assert!(
            msg.contains(needle),
            "{alg}: message lacks `{needle}`: {msg}"
        );
    }
    println!("{alg}: wrong key: {msg}");
    assert!(!bad.stdout.contains(&wrong.secret) && !bad.stdout.contains(&key.secret));
    assert!(t.served(&t.owner(2)).is_empty(), "{alg}: published anyway");
    assert_eq!(
        t.served(&t.owner(1)),
        set(&[&v("1b")]),
        "{alg}: old data lost"
    );
    assert_eq!(t.serial(), serial_before, "{alg}: the zone changed");
}

#[test]
fn knot_rfc2136_hmac_sha256() {
    publish_verify_rerun_remove_refuse(Server::Knot, 0);
}

#[test]
fn knot_rfc2136_hmac_sha512() {
    publish_verify_rerun_remove_refuse(Server::Knot, 1);
}

#[test]
fn bind_rfc2136_hmac_sha256() {
    publish_verify_rerun_remove_refuse(Server::Bind, 0);
}

#[test]
fn bind_rfc2136_hmac_sha512() {
    publish_verify_rerun_remove_refuse(Server::Bind, 1);
}
