//! One acceptance scenario for every acme_txt_publish backend, run through the module binary
//! against real servers of the test bed: zonefile (BIND), rfc2136 on BIND and on Knot, and
//! exec through docs/examples/ (Infoblox WAPI and Designate scripts, talking to the stand-ins
//! of tests/dns_api_standin.py, which apply each change to BIND by nsupdate). The scenario:
//! 5 hosts published through their CNAMEs and verified on the server, an idempotent re-run,
//! stale values kept within `keep_seconds` and removed after it, a broken configuration
//! failing with zone, method and target named while the old data stays served, and no secret
//! in any output or state file. A new backend adds one [`Fixture`] and one `#[test]`.

use certbridge_testsupport as support;

#[path = "dns_backends/fixtures.rs"]
mod fixtures;
use fixtures::{Exec, PowerDns, Rfc2136, StandIn, ZoneFile};

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{run_module, ModuleRun, Testbed};

/// One backend under test. The scenario only speaks through this.
trait Fixture {
    /// For messages: "rfc2136 on Knot", ...
    fn label(&self) -> String;
    /// The bed (its resolver follows the CNAMEs of `example.test`).
    fn bed(&self) -> &Testbed;
    /// Host n (1..=5) in example.test whose `_acme-challenge` CNAME leads into the zone.
    fn host(&self, n: u32) -> String;
    /// The signing-zone owner that CNAME leads to.
    fn owner(&self, n: u32) -> String;
    /// The `zones` entry: `method` and its options.
    fn zone(&self) -> Value;
    /// The entry broken so the backend fails (wrong key, failing command, ...), and words
    /// its error must contain besides the zone and the method.
    fn broken_zone(&self) -> (Value, Vec<String>);
    /// The authoritative servers (address:port) that must serve the values.
    fn servers(&self) -> Vec<String>;
    /// Strings that must never appear in output or state files.
    fn secrets(&self) -> Vec<String>;
    /// The zone's origin.
    fn origin(&self) -> String {
        self.zone()["origin"].as_str().unwrap().to_owned()
    }
}

/// A dns-01-shaped value (43 base64url characters) from a short tag.
fn digest(tag: &str) -> String {
    let mut s: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.extend(std::iter::repeat_n('a', 43usize.saturating_sub(s.len())));
    s.truncate(43);
    s
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn rec(host: &str, value: &str) -> Value {
    json!({"host": host, "cert": "main", "name": format!("{host}.example.test"),
           "record": format!("_acme-challenge.{host}.example.test"), "value": value})
}

/// What every server serves at `owner`; all must agree.
fn served(f: &dyn Fixture, owner: &str) -> BTreeSet<String> {
    let mut seen: Option<BTreeSet<String>> = None;
    for s in f.servers() {
        let got = certbridge_dns::verify::served_values(
            s.parse().unwrap(),
            owner,
            Duration::from_secs(3),
        )
        .unwrap_or_else(|e| panic!("{}: query {owner} at {s}: {e}", f.label()));
        if let Some(prev) = &seen {
            assert_eq!(prev, &got, "{}: servers disagree at {owner}", f.label());
        }
        seen = Some(got);
    }
    seen.unwrap_or_default()
}

fn args(f: &dyn Fixture, zone: Value, state: &Path, records: Vec<Value>, keep: u64) -> Value {
    json!({
        "records": records,
        "zones": [zone],
        "cname_check": "resolver",
        "resolver": f.bed().get("TESTBED_DNS"),
        "nameservers": f.servers(),
        "keep_seconds": keep,
        "state_dir": state.to_str().unwrap(),
        "timeout": 20,
    })
}

fn ok(f: &dyn Fixture, what: &str, run: &ModuleRun) -> bool {
    assert!(
        !run.failed(),
        "{}: {what} failed: {}\n{}",
        f.label(),
        run.msg(),
        run.json
    );
    for s in f.servers() {
        assert_eq!(
            run.json["verified"][s.as_str()]["ok"],
            true,
            "{}: {what} not verified on {s}: {}",
            f.label(),
            run.json
        );
    }
    run.changed()
}

/// The scenario. Returns every module output, for the secret check.
fn acceptance(f: &dyn Fixture) {
    let state = tempfile::tempdir().unwrap();
    let label = f.label();
    let v = |tag: &str| digest(&format!("{}-{tag}", f.origin().replace('.', "")));
    let mut outputs = Vec::new();
    let records: Vec<Value> = (1..=5)
        .map(|n| rec(&f.host(n), &v(&n.to_string())))
        .collect();

    // 1. Five hosts through their CNAMEs, published and verified on every server.
    let first = run_module(
        "acme_txt_publish",
        &args(f, f.zone(), state.path(), records.clone(), 3600),
    );
    assert!(ok(f, "the first run", &first), "{label}: nothing changed");
    for n in 1..=5 {
        assert_eq!(
            served(f, &f.owner(n)),
            set(&[&v(&n.to_string())]),
            "{label}: owner {n}"
        );
        let published = first.json["published"][f.owner(n)].to_string();
        assert!(
            published.contains(&v(&n.to_string())),
            "{label}: {published}"
        );
    }
    outputs.push(first);

    // 2. The same again: nothing to do.
    let again = run_module(
        "acme_txt_publish",
        &args(f, f.zone(), state.path(), records, 3600),
    );
    assert!(
        !ok(f, "the re-run", &again),
        "{label}: the re-run changed: {}",
        again.json
    );
    outputs.push(again);

    // 3. Host 1 has a new value, host 2 none: within keep_seconds the old values stay ...
    let fresh: Vec<Value> = [(1, "1b"), (3, "3"), (4, "4"), (5, "5")]
        .iter()
        .map(|(n, tag)| rec(&f.host(*n), &v(tag)))
        .collect();
    let kept = run_module(
        "acme_txt_publish",
        &args(f, f.zone(), state.path(), fresh.clone(), 3600),
    );
    assert!(
        ok(f, "the run within keep_seconds", &kept),
        "{label}: 1b not published"
    );
    assert_eq!(
        served(f, &f.owner(1)),
        set(&[&v("1"), &v("1b")]),
        "{label}: owner 1 kept"
    );
    assert_eq!(
        served(f, &f.owner(2)),
        set(&[&v("2")]),
        "{label}: owner 2 kept"
    );
    outputs.push(kept);

    // ... and once they are older than keep_seconds (0 here) they go.
    let aged = run_module(
        "acme_txt_publish",
        &args(f, f.zone(), state.path(), fresh.clone(), 0),
    );
    assert!(
        ok(f, "the run after keep_seconds", &aged),
        "{label}: nothing removed"
    );
    assert_eq!(
        served(f, &f.owner(1)),
        set(&[&v("1b")]),
        "{label}: stale at 1"
    );
    assert!(served(f, &f.owner(2)).is_empty(), "{label}: stale at 2");
    let removed = aged.json["removed"].to_string();
    assert!(
        removed.contains(&v("1")) && removed.contains(&v("2")),
        "{label}: {removed}"
    );
    outputs.push(aged);

    // 4. A broken configuration fails, names the culprit, and the old data stays served.
    let (broken, needles) = f.broken_zone();
    let mut bad_records = fresh;
    bad_records.push(rec(&f.host(2), &v("2c")));
    let bad = run_module(
        "acme_txt_publish",
        &args(f, broken, state.path(), bad_records, 0),
    );
    assert!(
        bad.failed(),
        "{label}: the broken zone was accepted: {}",
        bad.json
    );
    let msg = bad.msg();
    let method = f.zone()["method"].as_str().unwrap().to_owned();
    for needle in needles.iter().chain([&f.origin(), &method]) {
        assert!(
            msg.contains(needle.as_str()),
            "{label}: message lacks `{needle}`: {msg}"
        );
    }
    println!("{label}: broken: {msg}");
    assert!(
        served(f, &f.owner(2)).is_empty(),
        "{label}: published anyway"
    );
    assert_eq!(
        served(f, &f.owner(1)),
        set(&[&v("1b")]),
        "{label}: old data lost"
    );
    assert_eq!(
        served(f, &f.owner(5)),
        set(&[&v("5")]),
        "{label}: old data lost"
    );
    outputs.push(bad);

    // 5. No secret anywhere: module output (stdout, stderr) or the state directory.
    let mut texts: Vec<String> = outputs
        .iter()
        .flat_map(|r| [r.stdout.clone(), r.stderr.clone()])
        .collect();
    for entry in std::fs::read_dir(state.path()).unwrap() {
        texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    for secret in f.secrets() {
        assert!(secret.len() >= 8, "{label}: a weak probe");
        for t in &texts {
            assert!(!t.contains(&secret), "{label}: a secret leaked: {t}");
        }
    }
    println!("{label}: publish, verify, re-run, keep, expire, fail and secrets: ok");
}

// ---------------------------------------------------------------------------------------
// One test per backend

#[test]
fn zonefile_on_bind() {
    acceptance(&ZoneFile(Testbed::start(&["--hosts", "8"])));
}

#[test]
fn rfc2136_on_bind() {
    acceptance(&Rfc2136 {
        bed: Testbed::start(&["--hosts", "5"]),
        knot: false,
    });
}

#[test]
fn powerdns_on_powerdns() {
    acceptance(&PowerDns(Testbed::start(&["--hosts", "5", "--pdns"])));
}

#[test]
fn rfc2136_on_knot() {
    acceptance(&Rfc2136 {
        bed: Testbed::start(&["--hosts", "5", "--knot"]),
        knot: true,
    });
}

#[test]
fn exec_infoblox_wapi_script_through_its_stand_in() {
    let bed = Testbed::start(&["--hosts", "5"]);
    let api = StandIn::start(&bed);
    let f = Exec {
        bed,
        api,
        designate: false,
    };
    acceptance(&f);
    let calls = f.api.calls();
    // Reads list record:txt; changes are one POST per added value, one DELETE per removed.
    assert!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST /wapi/v2.12/record:txt 201"))
            .count()
            == 6,
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.starts_with("DELETE /wapi/v2.12/record:txt/"))
            .count()
            == 2,
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.ends_with(" 401")),
        "the wrong password was not refused: {calls:?}"
    );
}

#[test]
fn exec_designate_script_through_its_stand_in() {
    let bed = Testbed::start(&["--hosts", "5"]);
    let api = StandIn::start(&bed);
    let f = Exec {
        bed,
        api,
        designate: true,
    };
    acceptance(&f);
    let calls = f.api.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("POST /v2/zones/") && c.ends_with(" 202")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("PUT /v2/zones/") && c.ends_with(" 202")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("DELETE /v2/zones/") && c.ends_with(" 202")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.ends_with(" 401")),
        "the wrong token was not refused: {calls:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Bad input that needs no bed: the failing part is reached before any DNS query.

/// Module args publishing one value at `acme.<zone>` (no CNAME followed) with `zone`.
fn direct(zone: Value, state: &Path) -> Value {
    let origin = zone["origin"].as_str().unwrap().to_owned();
    json!({
        "records": [rec("h1", &digest("direct"))],
        "zones": [zone], "alias": format!("acme.{origin}"), "check_cname": false,
        "nameservers": ["127.0.0.1:9"], "state_dir": state.to_str().unwrap(), "timeout": 10,
    })
}

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there now.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn exec_command_missing_failing_garbage_or_hanging_fails_naming_zone_and_command() {
    let state = tempfile::tempdir().unwrap();
    let exec = |command: Value, deadline: u64| {
        json!({"origin": "api-signing.test", "method": "exec", "command": command,
               "deadline": deadline, "env": {"API_SECRET": "hook-secret-Pq55"}})
    };
    let cases = [
        (
            exec(json!(["/nonexistent/certbridge-hook"]), 5),
            "cannot start it",
        ),
        (
            exec(
                json!([
                    "sh",
                    "-c",
                    "echo refused by API for $API_SECRET >&2; exit 1"
                ]),
                5,
            ),
            "refused by API for <redacted>",
        ),
        (
            exec(
                json!(["sh", "-c", "cat >/dev/null; echo '<html>oops</html>'"]),
                5,
            ),
            "not JSON",
        ),
        (
            exec(json!(["sh", "-c", "echo '{\"version\": 1}'"]), 5),
            "malformed answer",
        ),
        (exec(json!(["sleep", "30"]), 1), "did not answer within 1s"),
    ];
    for (zone, want) in cases {
        let started = Instant::now();
        let run = run_module("acme_txt_publish", &direct(zone, state.path()));
        let msg = run.msg();
        assert!(run.failed(), "{want}: accepted: {}", run.json);
        for needle in ["api-signing.test", "method exec", want] {
            assert!(msg.contains(needle), "lacks `{needle}`: {msg}");
        }
        assert!(
            !run.stdout.contains("hook-secret-Pq55"),
            "secret leaked: {}",
            run.stdout
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{want}: took {:?}",
            started.elapsed()
        );
        println!("exec: {msg}");
    }
    // Nothing was published, so no state was recorded.
    assert!(!state.path().join("api-signing.test.exec.json").exists());
}

#[test]
fn rfc2136_server_down_fails_naming_zone_method_and_server() {
    let state = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", closed_port());
    let zone = json!({"origin": "down-signing.test", "method": "rfc2136", "server": server,
                      "tsig_name": "k", "tsig_secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQ="});
    let run = run_module("acme_txt_publish", &direct(zone, state.path()));
    assert!(run.failed(), "{}", run.json);
    let msg = run.msg();
    for needle in ["down-signing.test", "method rfc2136", server.as_str()] {
        assert!(msg.contains(needle), "lacks `{needle}`: {msg}");
    }
    assert!(
        !run.stdout.contains("c2VjcmV0LXNlY3JldC1zZWNyZXQ="),
        "{}",
        run.stdout
    );
    println!("rfc2136 down: {msg}");
}

#[test]
fn an_option_of_another_method_is_refused_by_the_parser() {
    let state = tempfile::tempdir().unwrap();
    let zone = json!({"origin": "api-signing.test", "method": "exec", "command": ["true"],
                      "tsig_secret": "c2VjcmV0"});
    let run = run_module("acme_txt_publish", &direct(zone, state.path()));
    let msg = run.msg();
    assert!(run.failed(), "{}", run.json);
    assert!(
        msg.contains("option `zones[0]`: unsupported option `tsig_secret` for method exec")
            && msg.contains("command"),
        "{msg}"
    );
}
