//! The bad-input table: malformed inputs across all four modules, each refused with
//! `failed: true` and a message naming the culprit, within a second, before any network
//! access (the ACME directory and every DNS server point at sentinel sockets that must see
//! no traffic) and before any disk change (the cert root, zone and state trees are hashed
//! before and after every row). Prints how many rows each module exercised.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{module_bin, tree};

const ORIGIN: &str = "acme.example.test";
const TSIG_GOOD: &str = "c2VjcmV0LXRzaWcta2V5LWZvci10aGUtdGFibGUtdGVzdA==";
/// A shape-valid dns-01 value (43 base64url characters).
const DIGEST: &str = "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-";

/// Sockets on loopback that stand in for the ACME CA and every DNS server: a module that
/// reached the network would connect to (or send to) one of them.
struct Sentinels {
    tcp: TcpListener,
    udp: UdpSocket,
    /// The UDP port's TCP twin, so DNS over TCP is caught too.
    dns_tcp: TcpListener,
}

impl Sentinels {
    fn start() -> Sentinels {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        // A UDP port whose TCP twin is also free, so one address serves both transports.
        let (udp, dns_tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let port = udp.local_addr().ok()?.port();
                let tcp = TcpListener::bind(("127.0.0.1", port)).ok()?;
                Some((udp, tcp))
            })
            .expect("a UDP+TCP port pair on loopback");
        udp.set_nonblocking(true).unwrap();
        dns_tcp.set_nonblocking(true).unwrap();
        Sentinels { tcp, udp, dns_tcp }
    }
    fn directory_url(&self) -> String {
        format!("https://{}/dir", self.tcp.local_addr().unwrap())
    }
    fn dns(&self) -> String {
        self.udp.local_addr().unwrap().to_string()
    }
    fn dns_port(&self) -> u16 {
        self.udp.local_addr().unwrap().port()
    }
    /// What reached the sentinels since the last call (empty: no network access).
    fn traffic(&self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok((_, peer)) = self.tcp.accept() {
            seen.push(format!("TCP connection to the ACME directory from {peer}"));
        }
        while let Ok((_, peer)) = self.dns_tcp.accept() {
            seen.push(format!("TCP connection to the DNS sentinel from {peer}"));
        }
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = self.udp.recv_from(&mut buf) {
            seen.push(format!(
                "{n}-byte UDP datagram to the DNS sentinel from {peer}"
            ));
        }
        seen
    }
}

/// How the module is called: args as JSON, raw bytes in the args file, a missing args file,
/// or no argument at all.
enum Input {
    Args(Value),
    Raw(&'static str),
    MissingFile,
    NoArgv,
}

struct Row {
    module: &'static str,
    what: String,
    input: Input,
    /// A substring of `msg` that names the culprit.
    want: String,
    /// Strings that must not appear in the output (secrets in the row's input).
    never: Vec<String>,
}

fn row(
    module: &'static str,
    what: impl Into<String>,
    input: Input,
    want: impl Into<String>,
) -> Row {
    Row {
        module,
        what: what.into(),
        input,
        want: want.into(),
        never: Vec::new(),
    }
}

/// The files every row must leave alone, and the valid baseline args of each module.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    zone_file: PathBuf,
    sentinels: Sentinels,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in [
            "certs/web.example.test",
            "certs/.certbridge/certs",
            "zones",
            "state",
            "log",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("certs/web.example.test/cert.pem"), "existing\n").unwrap();
        // The cert's metadata: a configuration error must not count as a CA failure in it.
        let meta = json!({"names": ["web.example.test", "www.example.test"], "failures": 0});
        std::fs::write(
            root.join("certs/.certbridge/certs/main.json"),
            meta.to_string(),
        )
        .unwrap();
        std::fs::write(root.join("ca-not-pem.txt"), "not a certificate\n").unwrap();
        std::fs::write(root.join("log/certbridge.log"), "{\"existing\":true}\n").unwrap();
        let zone_file = root.join("zones/signing.zone");
        let fx = Fixture {
            _tmp: tmp,
            root,
            zone_file,
            sentinels: Sentinels::start(),
        };
        // A real zone file, rendered by the module itself, that a faulty row would rewrite.
        let made = support::run_module("zone_render", &fx.zone_render());
        assert!(!made.failed() && made.changed(), "{}", made.json);
        fx
    }

    fn zone_render(&self) -> Value {
        json!({
            "path": self.zone_file, "origin": ORIGIN, "ns": ["ns1.acme.example.test"],
            "records": [
                {"name": "ns1", "type": "A", "value": "127.0.0.1"},
                {"name": "_acme-challenge.web", "type": "TXT", "value": DIGEST},
            ],
        })
    }

    fn file_zone(&self) -> Value {
        json!({
            "origin": ORIGIN, "method": "zonefile", "path": self.zone_file,
            "ns": ["ns1.acme.example.test"],
            "static_records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"}],
            "reload": ["false"],
        })
    }

    fn dyn_zone(&self) -> Value {
        json!({
            "origin": "dyn.example.test", "method": "rfc2136", "server": self.sentinels.dns(),
            "tsig_name": "certbridge-key", "tsig_algorithm": "hmac-sha256", "tsig_secret": TSIG_GOOD,
        })
    }

    fn publish(&self) -> Value {
        json!({
            "records": [txt_record("h1", "main", "web.example.test", DIGEST)],
            "zones": [self.file_zone(), self.dyn_zone()],
            "resolver": self.sentinels.dns(),
            "nameserver_port": self.sentinels.dns_port(),
            "state_dir": self.root.join("state"),
            "timeout": 5,
        })
    }

    fn acme(&self) -> Value {
        json!({
            "certs": {"main": ["web.example.test", "www.example.test"]},
            "cert_root": self.root.join("certs"),
            "log_file": self.root.join("log/certbridge.log"),
            "directory": self.sentinels.directory_url(),
            "jitter_seed": "table-host",
            "timeout": 5,
        })
    }
}

fn txt_record(host: &str, cert: &str, name: &str, value: &str) -> Value {
    let base = name.strip_prefix("*.").unwrap_or(name);
    json!({"host": host, "cert": cert, "name": name, "record": format!("_acme-challenge.{base}"), "value": value})
}

/// `base` with `patch`'s keys set (a `null` in the patch removes the key).
fn patched(mut base: Value, patch: Value) -> Value {
    let (Value::Object(b), Value::Object(p)) = (&mut base, patch) else {
        panic!("objects expected")
    };
    for (k, v) in p {
        if v.is_null() {
            b.remove(&k);
        } else {
            b.insert(k, v);
        }
    }
    base
}

/// What one call printed.
struct Outcome {
    json: Value,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn call(module: &str, input: &Input) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let args_path = dir.path().join("args");
    let mut cmd = Command::new(module_bin(module));
    match input {
        Input::Args(v) => {
            std::fs::write(&args_path, serde_json::to_vec(v).unwrap()).unwrap();
            cmd.arg(&args_path);
        }
        Input::Raw(text) => {
            std::fs::write(&args_path, text).unwrap();
            cmd.arg(&args_path);
        }
        Input::MissingFile => {
            cmd.arg(dir.path().join("no-such-args-file"));
        }
        Input::NoArgv => {}
    }
    let start = Instant::now();
    let out = cmd.output().expect("run module");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{module} did not print one JSON object ({e}): stdout={stdout:?} stderr={stderr:?}")
    });
    Outcome {
        json,
        stdout,
        stderr,
        elapsed,
    }
}

/// Rows every module shares: the protocol layer's own failures.
fn protocol_rows(module: &'static str, base: Value) -> Vec<Row> {
    vec![
        row(
            module,
            "args file is not JSON",
            Input::Raw("{path: nope"),
            "is not a JSON object",
        ),
        row(
            module,
            "args file is a JSON array",
            Input::Raw("[1, 2]"),
            "found a list",
        ),
        row(
            module,
            "args file is a JSON string",
            Input::Raw("\"x\""),
            "found a string",
        ),
        row(
            module,
            "args file is missing",
            Input::MissingFile,
            "cannot read the arguments file",
        ),
        row(
            module,
            "no args file argument",
            Input::NoArgv,
            format!("usage: {module}"),
        ),
        row(
            module,
            "unknown option",
            Input::Args(patched(base, json!({"colour": "blue"}))),
            "unsupported option `colour`",
        ),
    ]
}

fn zone_render_rows(fx: &Fixture) -> Vec<Row> {
    let m = "zone_render";
    let base = fx.zone_render();
    let with = |patch: Value| Input::Args(patched(fx.zone_render(), patch));
    let rec = |name: &str, rtype: &str, value: &str| {
        Input::Args(patched(
            fx.zone_render(),
            json!({"records": [{"name": name, "type": rtype, "value": value}]}),
        ))
    };
    let long_label = "l".repeat(64);
    let long_name = vec!["abcdefghi"; 26].join(".");
    let mut rows = protocol_rows(m, base);
    rows.extend([
        row(
            m,
            "missing origin",
            with(json!({"origin": null})),
            "missing required option `origin`",
        ),
        row(
            m,
            "missing path",
            with(json!({"path": null})),
            "missing required option `path`",
        ),
        row(
            m,
            "ttl is not a number",
            with(json!({"ttl": "soon"})),
            "option `ttl`",
        ),
        row(
            m,
            "ns is not a list",
            with(json!({"ns": "ns1.acme.example.test"})),
            "option `ns`",
        ),
        row(
            m,
            "records is a map",
            with(json!({"records": {"a": 1}})),
            "option `records`",
        ),
        row(
            m,
            "unknown record field",
            with(
                json!({"records": [{"name": "a", "type": "A", "value": "192.0.2.1", "weight": 1}]}),
            ),
            "unsupported option `weight` in `records[0]`",
        ),
        row(
            m,
            "relative path",
            with(json!({"path": "zones/x.zone"})),
            "zones/x.zone",
        ),
        row(
            m,
            "symbolic mode",
            with(json!({"mode": "u+rw"})),
            "`u+rw` is not an octal mode",
        ),
        row(
            m,
            "unknown owner",
            with(json!({"owner": "no-such-user-certbridge"})),
            "no-such-user-certbridge",
        ),
        row(
            m,
            "non-ASCII origin",
            with(json!({"origin": "bücher.example.test"})),
            "punycode",
        ),
        row(m, "`a..b` owner", rec("a..b", "TXT", "v"), "record `a..b`"),
        row(
            m,
            "`*.*.x` owner",
            rec("*.*.x", "TXT", "v"),
            "`*` is allowed only",
        ),
        row(
            m,
            "label over 63",
            rec(&long_label, "TXT", "v"),
            "longer than 63",
        ),
        row(
            m,
            "name over 253",
            rec(&long_name, "TXT", "v"),
            "longer than 253",
        ),
        row(m, "non-ASCII owner", rec("bücher", "TXT", "v"), "punycode"),
        row(m, "space in owner", rec("a b", "TXT", "v"), "record `a b`"),
        row(
            m,
            "owner outside the zone",
            rec("www.other.test.", "TXT", "v"),
            "record `www.other.test.` is outside the zone",
        ),
        row(
            m,
            "newline in TXT value",
            rec("n", "TXT", "a\nb"),
            "records[0]: record `n` TXT",
        ),
        row(
            m,
            "quote in TXT value",
            rec("q", "TXT", "a\"b"),
            "records[0]: record `q` TXT",
        ),
        row(
            m,
            "backslash in TXT value",
            rec("b", "TXT", "a\\b"),
            "records[0]: record `b` TXT",
        ),
        row(
            m,
            "`;` after an A value",
            rec("s", "A", "192.0.2.1 ; $INCLUDE /etc/passwd"),
            "records[0]: record `s` A",
        ),
        row(
            m,
            "unsupported type",
            rec("t", "SRV", "0 0 1 x."),
            "unsupported type `SRV`",
        ),
    ]);
    rows
}

fn publish_rows(fx: &Fixture) -> Vec<Row> {
    let m = "acme_txt_publish";
    let with = |patch: Value| Input::Args(patched(fx.publish(), patch));
    let records = |r: Value| with(json!({"records": [r]}));
    let zone = |patch: Value| with(json!({"zones": [patched(fx.file_zone(), patch)]}));
    let dynz = |patch: Value| with(json!({"zones": [patched(fx.dyn_zone(), patch)]}));
    let mut rows = protocol_rows(m, fx.publish());
    rows.extend([
        row(m, "missing zones", with(json!({"zones": null})), "missing required option `zones`"),
        row(m, "missing records", with(json!({"records": null})), "missing required option `records`"),
        row(m, "empty zones", with(json!({"zones": []})), "`zones` is empty"),
        row(m, "timeout is not a number", with(json!({"timeout": "soon"})), "option `timeout`"),
        row(m, "port out of range", with(json!({"nameserver_port": 70000})), "nameserver_port"),
        row(m, "resolver is a host name", with(json!({"resolver": "ns1.example.test"})), "option `resolver`"),
        row(m, "record value not a dns-01 digest", records(txt_record("h1", "main", "web.example.test", "abc")), "`abc` is not a dns-01 value"),
        row(m, "record value with `;`", records(txt_record("h1", "main", "web.example.test", "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaa;aaaaaaaaa-")), "is not a dns-01 value"),
        row(m, "record value with a space", records(txt_record("h1", "main", "web.example.test", "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaa aaaaaaaaa-")), "is not a dns-01 value"),
        row(m, "record value with a newline", records(txt_record("h1", "main", "web.example.test", "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaa\naaaaaaaaa-")), "is not a dns-01 value"),
        row(m, "record value with a quote", records(txt_record("h1", "main", "web.example.test", "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaa\"aaaaaaaaa-")), "is not a dns-01 value"),
        row(m, "record value with a backslash", records(txt_record("h1", "main", "web.example.test", "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaa\\aaaaaaaaa-")), "is not a dns-01 value"),
        row(m, "name with `_`", records(txt_record("h1", "main", "a_b.example.test", DIGEST)), "h1 main a_b.example.test"),
        row(m, "single-label name", records(txt_record("h1", "main", "localhost", DIGEST)), "single label"),
        row(m, "`*.*.x` name", records(txt_record("h1", "main", "*.*.x.example.test", DIGEST)), "`*.*.x.example.test`"),
        row(m, "non-ASCII name", records(txt_record("h1", "main", "bücher.example.test", DIGEST)), "punycode"),
        row(m, "cert name `../x`", records(txt_record("h1", "../x", "web.example.test", DIGEST)), "`../x`"),
        row(m, "record is not the name's challenge record", records(json!({"host": "h1", "cert": "main", "name": "web.example.test", "record": "_acme-challenge.other.example.test", "value": DIGEST})), "is not the challenge record of `web.example.test`"),
        row(m, "alias outside every managed zone", with(json!({"alias": "acme.elsewhere.test", "check_cname": false})), "not inside any managed zone"),
        row(m, "zone listed twice", with(json!({"zones": [fx.file_zone(), fx.file_zone()]})), "listed twice"),
        row(m, "unknown method", zone(json!({"method": "ftp"})), "method"),
        row(m, "zonefile zone without path", zone(json!({"path": null})), "missing required option `path` in `zones[0]`"),
        row(m, "zonefile zone with a TSIG server", zone(json!({"server": "127.0.0.1:9"})), "option `zones[0]`: unsupported option `server` for method zonefile"),
        row(m, "bad static record", zone(json!({"static_records": [{"name": "x", "type": "TXT", "value": "a\"b"}]})), "static_records[0]: record `x` TXT"),
        row(m, "rfc2136 zone without tsig_secret", dynz(json!({"tsig_secret": null})), "missing required option `tsig_secret`"),
        row(m, "unknown TSIG algorithm", dynz(json!({"tsig_algorithm": "hmac-md4"})), "hmac-md4"),
    ]);
    let not_base64 = "not base64 at all!";
    let mut r = row(
        m,
        "TSIG secret that is not base64",
        dynz(json!({"tsig_secret": not_base64})),
        "tsig_secret",
    );
    r.never.push(not_base64.into());
    rows.push(r);
    rows
}

/// Rows for acme_request and acme_finalize (same common options, from issue 4).
fn acme_rows(fx: &Fixture, m: &'static str) -> Vec<Row> {
    let with = |patch: Value| Input::Args(patched(fx.acme(), patch));
    let names = |list: Value| with(json!({"certs": {"main": list}}));
    let cert = |name: &str| {
        let mut certs = serde_json::Map::new();
        certs.insert(name.into(), json!(["web.example.test"]));
        with(json!({"certs": certs}))
    };
    let many: Vec<String> = (0..101).map(|i| format!("n{i}.example.test")).collect();
    let mut rows = protocol_rows(m, fx.acme());
    rows.extend([
        row(
            m,
            "missing certs",
            with(json!({"certs": null})),
            "missing required option `certs`",
        ),
        row(
            m,
            "empty cert list",
            with(json!({"certs": {}})),
            "`certs` is empty",
        ),
        row(m, "cert with no names", names(json!([])), "certs.main"),
        row(
            m,
            "timeout is not a number",
            with(json!({"timeout": "soon"})),
            "timeout",
        ),
        row(
            m,
            "renew_days is a list",
            with(json!({"renew_days": [1]})),
            "renew_days",
        ),
        row(
            m,
            "self_sign is not a boolean",
            with(json!({"self_sign": "maybe"})),
            "self_sign",
        ),
        row(
            m,
            "unknown key type",
            with(json!({"key_type": "dsa-1024"})),
            "key_type",
        ),
        row(m, "101 names", names(json!(many)), "certs.main: 101 names"),
        row(
            m,
            "duplicates after lower-casing",
            names(json!(["Web.example.test", "web.example.test"])),
            "appears more than once",
        ),
        row(
            m,
            "`*.*.x`",
            names(json!(["*.*.x.example.test"])),
            "`*.*.x.example.test`",
        ),
        row(
            m,
            "`a..b`",
            names(json!(["a..b.example.test"])),
            "`a..b.example.test`",
        ),
        row(
            m,
            "label over 63",
            names(json!([format!("{}.example.test", "x".repeat(64))])),
            "longer than 63",
        ),
        row(
            m,
            "name over 253",
            names(json!([format!("{}.test", "abcdefghi.".repeat(26))])),
            "longer than 253",
        ),
        row(
            m,
            "single-label name",
            names(json!(["localhost"])),
            "single label",
        ),
        row(
            m,
            "`_` in a name",
            names(json!(["a_b.example.test"])),
            "`_`",
        ),
        row(
            m,
            "non-ASCII name",
            names(json!(["bücher.example.test"])),
            "punycode",
        ),
        row(
            m,
            "space in a name",
            names(json!(["a b.example.test"])),
            "certs.main: `a b.example.test`",
        ),
        row(
            m,
            "newline in a name",
            names(json!(["a\nb.example.test"])),
            "certs.main",
        ),
        row(
            m,
            "quote in a name",
            names(json!(["a\"b.example.test"])),
            "certs.main",
        ),
        row(
            m,
            "backslash in a name",
            names(json!(["a\\b.example.test"])),
            "certs.main",
        ),
        row(
            m,
            "`;` in a name",
            names(json!(["a;b.example.test"])),
            "certs.main",
        ),
        row(m, "cert name `../x`", cert("../x"), "`../x`"),
        row(m, "cert name `/abs`", cert("/abs"), "`/abs`"),
        row(m, "cert name `.`", cert("."), "`.`"),
        row(
            m,
            "cert name `.certbridge`",
            cert(".certbridge"),
            "`.certbridge`",
        ),
        row(m, "cert name with a space", cert("my cert"), "`my cert`"),
        row(
            m,
            "two certs in one directory",
            with(json!({"certs": {"a": ["x.example.test"], "b": ["*.x.example.test"]}})),
            "both map to the directory `x.example.test`",
        ),
        row(
            m,
            "force names an undeclared cert",
            with(json!({"force": ["nope"]})),
            "`nope`",
        ),
    ]);
    let hmac = "!!not-base64-hmac-key!!";
    let mut r = row(
        m,
        "EAB HMAC key that is not base64",
        with(json!({"eab_kid": "kid-1", "eab_hmac_key": hmac})),
        "eab_hmac_key",
    );
    r.never.push(hmac.into());
    rows.push(r);
    if m == "acme_finalize" {
        rows.extend([
            row(
                m,
                "only names an undeclared cert",
                with(json!({"only": ["nope"]})),
                "only: `nope`",
            ),
            row(
                m,
                "ack names an undeclared cert",
                with(json!({"ack": ["nope"]})),
                "ack: `nope`",
            ),
            row(
                m,
                "rollback names an undeclared cert",
                with(json!({"rollback": ["nope"]})),
                "rollback: `nope`",
            ),
            row(
                m,
                "acme_request's option",
                with(json!({"pending_max_age": 5})),
                "unsupported option `pending_max_age`",
            ),
        ]);
    } else {
        rows.push(row(
            m,
            "acme_finalize's option",
            with(json!({"ack": ["main"]})),
            "unsupported option `ack`",
        ));
    }
    rows
}

/// Issue 13: out-of-range durations (they overflowed a deadline: "internal error"), names
/// whose files cannot be made (install failed after issuance), configuration errors found
/// only after the lock (counted as CA failures), modes read wrongly, a cert map's unknown key.
fn limit_rows(fx: &Fixture) -> Vec<Row> {
    const HUGE: u64 = u64::MAX;
    let secs = |lo: u64, hi: &str| format!("expected a whole number of seconds from {lo} to {hi}");
    let zr = |patch: Value| Input::Args(patched(fx.zone_render(), patch));
    let publish = |patch: Value| Input::Args(patched(fx.publish(), patch));
    let zone = |patch: Value| publish(json!({"zones": [patched(fx.file_zone(), patch)]}));
    // 240 octets: a valid name, too long for `<name>.rfc2136.json` and its temp name.
    let long_origin = format!("{}.example.test", vec!["o".repeat(56); 4].join("."));
    let zone_path = fx.root.join(format!("zones/{}.zone", "z".repeat(240)));
    let mut rows = vec![
        row("zone_render", "lock_timeout 2^64-1", zr(json!({"lock_timeout": HUGE})), format!("option `lock_timeout`: {}", secs(0, "86400 (1 day)"))),
        row("zone_render", "mode 644 as a number", zr(json!({"mode": 644})), "option `mode`: 644 is a decimal number (mode 0o1204, as Ansible reads a number): quote the octal mode, \"0644\""),
        row("zone_render", "setuid mode \"4755\"", zr(json!({"mode": "4755"})), "option `mode`: `4755`: set-user-ID"),
        row("zone_render", "setgid mode \"2644\"", zr(json!({"mode": "2644"})), "`2644`: set-user-ID, set-group-ID and sticky bits"),
        row("zone_render", "sticky mode 01644 as YAML's number", zr(json!({"mode": 0o1644})), "is mode 0o1644: set-user-ID, set-group-ID and sticky bits"),
        row("zone_render", "zone file name too long for its temp file", zr(json!({"path": zone_path})), "path: the file name `zzz"),
        row("acme_txt_publish", "timeout 2^64-1", publish(json!({"timeout": HUGE})), format!("option `timeout`: {}", secs(1, "86400 (1 day)"))),
        row("acme_txt_publish", "timeout beyond 64 bits", publish(json!({"timeout": "99999999999999999999999"})), "found 99999999999999999999999"),
        row("acme_txt_publish", "keep_seconds 2^64-1", publish(json!({"keep_seconds": HUGE})), format!("option `keep_seconds`: {}", secs(0, "31536000 (365 days)"))),
        row("acme_txt_publish", "max_records_per_type negative", publish(json!({"max_records_per_type": -1})), "option `max_records_per_type`: expected a non-negative integer, found -1"),
        row("acme_txt_publish", "retired value missing", publish(json!({"retired": [{"host": "h1"}]})), "missing required option `value` in `retired[0]`"),
        row("acme_txt_publish", "zone mode 644 as a number", zone(json!({"mode": 644})), "quote the octal mode, \"0644\""),
        row("acme_txt_publish", "zone mode \"4755\"", zone(json!({"mode": "4755"})), "set-user-ID"),
        row("acme_txt_publish", "rfc2136 origin too long for its state file", publish(json!({"zones": [patched(fx.dyn_zone(), json!({"origin": long_origin}))]})), "its state file in `state_dir`: the file name"),
    ];
    for m in ["acme_request", "acme_finalize"] {
        let with = |patch: Value| Input::Args(patched(fx.acme(), patch));
        let first = |name: String| with(json!({"certs": {"main": [name, "www.example.test"]}}));
        // Valid names of 251 and 253 octets (four labels): too long for `<dir>.key` and temps.
        let long = |n: usize| {
            format!(
                "{}.{}.test",
                vec!["n".repeat(63); 3].join("."),
                "n".repeat(n - 197)
            )
        };
        rows.extend([
            row(m, "timeout 2^64-1", with(json!({"timeout": HUGE})), format!("option `timeout`: {}", secs(1, "86400 (1 day)"))),
            row(m, "timeout as a huge string", with(json!({"timeout": "18446744073709551616"})), "option `timeout`: expected a whole number of seconds from 1 to 86400 (1 day), found 18446744073709551616"),
            row(m, "request_timeout 1e30", with(json!({"request_timeout": 1e30})), format!("option `request_timeout`: {}", secs(1, "3600 (1 hour)"))),
            row(m, "renew_days 2^64-1", with(json!({"renew_days": HUGE})), "option `renew_days`: expected a whole number of days from 0 to 3650"),
            row(m, "251-octet first name", first(long(251)), format!("certs.main: the file name `{}.key` would be", long(251))),
            row(m, "253-octet first name", first(long(253)), "at most 232 octets first"),
            row(m, "ca_file that is not PEM", with(json!({"ca_file": fx.root.join("ca-not-pem.txt")})), "ca_file: "),
            row(m, "empty eab_hmac_key", with(json!({"eab_kid": "kid-1", "eab_hmac_key": ""})), "eab_hmac_key: is missing or empty"),
            row(m, "unknown key in a cert map", with(json!({"certs": {"main": {"names": ["web.example.test"], "kye_type": "rsa-2048"}}})), "option `certs.main`: unsupported key `kye_type` in the cert's map; valid keys: names, key_type, profile"),
        ]);
    }
    rows.push(row(
        "acme_request",
        "pending_max_age 2^64-1",
        Input::Args(patched(fx.acme(), json!({"pending_max_age": HUGE}))),
        format!(
            "option `pending_max_age`: {}",
            secs(0, "31536000 (365 days)")
        ),
    ));
    rows.push(row(
        "acme_request",
        "ari_interval 2^64-1",
        Input::Args(patched(fx.acme(), json!({"ari_interval": HUGE}))),
        format!("option `ari_interval`: {}", secs(0, "31536000 (365 days)")),
    ));
    for (what, check, expected) in [
        (
            "cname_check without zones",
            json!({"zones": []}),
            "option `cname_check.zones`: is empty",
        ),
        (
            "cname_check zone not a name",
            json!({"zones": ["a..b"]}),
            "option `cname_check.zones`:",
        ),
        (
            "cname_check port 0",
            json!({"zones": ["signing.test"], "nameserver_port": 0}),
            "option `cname_check.nameserver_port`: 0 is not a port",
        ),
        (
            "cname_check alias outside the zones",
            json!({"zones": ["signing.test"], "alias": "acme.elsewhere.test"}),
            "option `cname_check.alias`: acme.elsewhere.test. is not inside a signing zone",
        ),
        (
            "cname_check unknown lookup",
            json!({"zones": ["signing.test"], "lookup": "guess"}),
            "cname_check",
        ),
    ] {
        rows.push(row(
            "acme_request",
            what,
            Input::Args(patched(fx.acme(), json!({"cname_check": check}))),
            expected.to_string(),
        ));
    }
    rows.push(row(
        "acme_finalize",
        "dns_check_timeout 2^64-1",
        Input::Args(patched(fx.acme(), json!({"dns_check_timeout": HUGE}))),
        format!("option `dns_check_timeout`: {}", secs(0, "86400 (1 day)")),
    ));
    rows
}

#[test]
fn malformed_inputs_fail_fast_naming_the_culprit_and_touch_nothing() {
    let fx = Fixture::new();
    let mut rows = zone_render_rows(&fx);
    rows.extend(publish_rows(&fx));
    rows.extend(acme_rows(&fx, "acme_request"));
    rows.extend(acme_rows(&fx, "acme_finalize"));
    rows.extend(limit_rows(&fx));
    assert!(fx.sentinels.traffic().is_empty());

    let mut problems = Vec::new();
    let mut per_module: BTreeMap<&str, usize> = BTreeMap::new();
    let mut slowest = (Duration::ZERO, String::new());
    for r in &rows {
        let before = tree::snapshot(&fx.root);
        let out = call(r.module, &r.input);
        let label = format!("{} / {}", r.module, r.what);
        *per_module.entry(r.module).or_default() += 1;
        if out.elapsed > slowest.0 {
            slowest = (out.elapsed, label.clone());
        }
        let msg = out.json["msg"].as_str().unwrap_or_default();
        if out.json["failed"] != json!(true) {
            problems.push(format!("{label}: not failed: {}", out.json));
        } else if !msg.contains(&r.want) {
            problems.push(format!(
                "{label}: wanted {:?} in the message, got {msg:?}",
                r.want
            ));
        }
        if out.json["changed"] == json!(true) {
            problems.push(format!("{label}: reported changed"));
        }
        if out.elapsed >= Duration::from_secs(1) {
            problems.push(format!("{label}: took {:?}", out.elapsed));
        }
        let traffic = fx.sentinels.traffic();
        if !traffic.is_empty() {
            problems.push(format!("{label}: reached the network: {traffic:?}"));
        }
        let after = tree::snapshot(&fx.root);
        if after != before {
            let changed: Vec<_> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
                .collect();
            problems.push(format!("{label}: changed files {changed:?}"));
        }
        for secret in &r.never {
            if out.stdout.contains(secret.as_str()) || out.stderr.contains(secret.as_str()) {
                problems.push(format!("{label}: echoed the secret"));
            }
        }
    }
    let counts: Vec<String> = per_module.iter().map(|(m, n)| format!("{m} {n}")).collect();
    println!(
        "bad-input rows exercised: {} ({}); slowest {:?} ({})",
        rows.len(),
        counts.join(", "),
        slowest.0,
        slowest.1
    );
    assert!(rows.len() >= 40 && per_module.len() == 4);
    assert!(
        problems.is_empty(),
        "{} of {} rows failed:\n{}",
        problems.len(),
        rows.len(),
        problems.join("\n")
    );
}

/// The sentinels do see a connection and a datagram, so "no traffic" above cannot pass
/// vacuously.
#[test]
fn sentinels_see_traffic() {
    let s = Sentinels::start();
    let _conn = std::net::TcpStream::connect(s.tcp.local_addr().unwrap()).unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.send_to(b"x", s.udp.local_addr().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        seen.extend(s.traffic());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}
