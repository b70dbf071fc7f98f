//! CA faults against the real module binaries: Pebble stopped between acme_request and
//! acme_finalize, rate limits and outages with Retry-After inside and beyond the deadline, a
//! rate-limited newAccount on one of two hosts, and connections that hang. Faults come from
//! the fault-injecting proxy in front of Pebble (tests/support/ca_proxy.rs); values are published
//! by TSIG-signed nsupdate into the bed's dynamic signing zone.
#[path = "support/ca_proxy.rs"]
mod ca_proxy;
#[path = "support/certset.rs"]
mod certset;
mod common;

use ca_proxy::{CaProxy, Endpoint, Fault, ProxyConfig};
use common::{run_module, ModuleRun, Testbed};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One managed host: its own cert root, log and ACME endpoint (Pebble or the proxy).
struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: Value,
}

impl Host {
    fn new(directory: &str, ca_file: &Path, seed: &str) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let base = json!({
            "directory": directory,
            "ca_file": ca_file,
            "cert_root": root.join("certs"),
            "log_file": root.join("certbridge.log"),
            "jitter_seed": seed,
        });
        Host {
            _tmp: tmp,
            root,
            base,
        }
    }

    fn on_bed(bed: &Testbed) -> Host {
        Host::new(
            bed.get("TESTBED_ACME_DIRECTORY"),
            Path::new(bed.get("TESTBED_ACME_CA_FILE")),
            "fault-host",
        )
    }

    fn via(proxy: &CaProxy, seed: &str) -> Host {
        Host::new(&proxy.directory_url(), proxy.ca_file(), seed)
    }

    fn args(&self, extra: &Value) -> Value {
        let mut v = self.base.clone();
        let (Value::Object(a), Value::Object(b)) = (&mut v, extra.clone()) else {
            panic!()
        };
        a.extend(b);
        v
    }

    fn request(&self, extra: &Value) -> ModuleRun {
        run_module("acme_request", &self.args(extra))
    }

    fn finalize(&self, extra: &Value) -> ModuleRun {
        run_module("acme_finalize", &self.args(extra))
    }

    /// Every file under the cert dir `dir` with its bytes (links as their targets): what
    /// services could read. Bookkeeping under `.certbridge/` is not part of it.
    fn cert_files(&self, dir: &str) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        fn walk(dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let v = if m.is_symlink() {
                    std::fs::read_link(&p)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes()
                } else if m.is_dir() {
                    walk(&p, out);
                    b"dir".to_vec()
                } else {
                    std::fs::read(&p).unwrap()
                };
                out.insert(p.display().to_string(), v);
            }
        }
        walk(&self.root.join("certs").join(dir), &mut out);
        out
    }

    fn serial(&self, dir: &str) -> String {
        let pem =
            std::fs::read_to_string(self.root.join("certs").join(dir).join("cert.pem")).unwrap();
        certbridge_acme::certinfo::leaf_info_pem(&pem, "cert.pem")
            .unwrap()
            .serial
    }

    /// The installed set of `dir` is complete and covers `names`.
    fn assert_complete(&self, dir: &str, names: &[&str]) {
        let seen = certset::read_set(&self.root.join("certs").join(dir), dir, names)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(
            matches!(seen, certset::Seen::Complete(_)),
            "{dir}: nothing installed"
        );
    }
}

fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}", run.json);
    &run.json
}

fn dig(bed: &Testbed, rtype: &str, name: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            "+short",
            "-p",
            bed.get("TESTBED_DNS_PORT"),
            "@127.0.0.1",
            rtype,
            name,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_matches('"').trim_end_matches('.').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Publishes `acme_txt_required` into the dynamic signing zone through each record's CNAME
/// (TSIG-signed nsupdate), then waits until the bed's resolver answers every value.
fn publish(bed: &Testbed, txt: &Value) {
    let mut script = format!(
        "server 127.0.0.1 {}\nzone dyn-signing.test\n",
        bed.get("TESTBED_DNS_PORT")
    );
    let mut wanted = Vec::new();
    for t in txt.as_array().expect("acme_txt_required") {
        let record = t["record"].as_str().unwrap();
        let value = t["value"].as_str().unwrap();
        let target = dig(bed, "CNAME", record)
            .pop()
            .unwrap_or_else(|| panic!("{record} has no CNAME in the bed"));
        assert!(
            target.ends_with(".dyn-signing.test"),
            "{record} -> {target}"
        );
        script.push_str(&format!("update add {target}. 60 TXT \"{value}\"\n"));
        wanted.push((record.to_owned(), value.to_owned()));
    }
    if wanted.is_empty() {
        return;
    }
    script.push_str("send\n");
    let key = format!(
        "{}:{}:{}",
        bed.get("TESTBED_TSIG_ALGORITHM"),
        bed.get("TESTBED_TSIG_NAME"),
        bed.get("TESTBED_TSIG_SECRET")
    );
    let mut child = Command::new("nsupdate")
        .args(["-y", &key])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nsupdate failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (record, value) in wanted {
        while !dig(bed, "TXT", &record).contains(&value) {
            assert!(Instant::now() < deadline, "{record} {value} not visible");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// acme_request (must succeed), publish, acme_finalize (must succeed).
fn pulse(bed: &Testbed, host: &Host, extra: &Value) -> (Value, Value) {
    let req = host.request(extra);
    let req = ok(&req).clone();
    publish(bed, &req["acme_txt_required"]);
    let fin = host.finalize(extra);
    (req, ok(&fin).clone())
}

/// How to start the bed's Pebble again (same argv, environment and ports): a new CA that has
/// forgotten every account and order.
struct PebbleCommand {
    argv: Vec<String>,
    environ: Vec<(String, String)>,
    cwd: PathBuf,
    port: u16,
}

fn proc_list(pid: &str, what: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{what}"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

impl PebbleCommand {
    fn of(bed: &Testbed) -> PebbleCommand {
        let pid = bed.get("TESTBED_PEBBLE_PID");
        let port = bed
            .get("TESTBED_ACME_DIRECTORY")
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        PebbleCommand {
            argv: proc_list(pid, "cmdline"),
            environ: proc_list(pid, "environ")
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect(),
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
            port,
        }
    }

    fn start(&self) -> RunningPebble {
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.environ.clone())
            .current_dir(&self.cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "restarted pebble does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RunningPebble(child)
    }
}

/// Stops the bed's Pebble by pid and waits until it is gone.
fn stop_pebble(bed: &Testbed) {
    let pid = bed.get("TESTBED_PEBBLE_PID");
    assert!(Command::new("kill").arg(pid).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "pebble {pid} did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Pebble the test started; killed on drop.
struct RunningPebble(std::process::Child);

impl Drop for RunningPebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy_for(bed: &Testbed) -> CaProxy {
    CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        ProxyConfig::default(),
    )
}

fn retry_not_before(host: &Host, cert: &str) -> Option<i64> {
    let path = host
        .root
        .join(format!("certs/.certbridge/certs/{cert}.json"));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    meta["retry_not_before"].as_i64()
}

#[test]
fn pebble_stopped_between_request_and_finalize_changes_nothing_and_the_next_pulse_completes() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let host = Host::on_bed(&bed);
    let certs = json!({"certs": {"main": ["dyn1.example.test", "dyn2.example.test"]}});
    let (_, fin) = pulse(&bed, &host, &certs);
    assert_eq!(fin["updated"], json!(["main"]));
    let first_serial = host.serial("dyn1.example.test");

    // A reissue is ordered and its values published; then the CA goes away.
    let forced = json!({"certs": certs["certs"], "force": true});
    let req = host.request(&forced);
    publish(&bed, &ok(&req)["acme_txt_required"]);
    let pebble = PebbleCommand::of(&bed);
    let before = host.cert_files("dyn1.example.test");
    stop_pebble(&bed);
    let down = host.finalize(&json!({"certs": certs["certs"], "timeout": 20}));
    assert!(down.failed(), "{}", down.json);
    let msg = down.msg();
    assert!(
        msg.contains("cert main: cannot reach the ACME server"),
        "{msg}"
    );
    assert!(msg.contains(bed.get("TESTBED_ACME_DIRECTORY")), "{msg}");
    assert!(down.elapsed < Duration::from_secs(20), "{:?}", down.elapsed);
    assert_eq!(
        host.cert_files("dyn1.example.test"),
        before,
        "cert files changed"
    );
    host.assert_complete(
        "dyn1.example.test",
        &["dyn1.example.test", "dyn2.example.test"],
    );
    // The failure is remembered (a backoff); the next pulse here is forced, which overrides it.
    assert!(retry_not_before(&host, "main").is_some_and(|t| t > certbridge_acme::now()));

    // The CA comes back (a new CA: accounts and orders gone); the next forced pulse completes.
    let _pebble = pebble.start();
    let (req, fin) = pulse(&bed, &host, &forced);
    assert_eq!(req["certs"]["main"]["reason"], "forced");
    assert!(req["changed"].as_bool().unwrap(), "a new order: {req}");
    assert_eq!(fin["updated"], json!(["main"]));
    assert_ne!(host.serial("dyn1.example.test"), first_serial);
    host.assert_complete(
        "dyn1.example.test",
        &["dyn1.example.test", "dyn2.example.test"],
    );
    println!(
        "pebble stopped after request: finalize failed in {:.1} s naming the CA, {} cert files \
         unchanged; restarted CA: the next pulse made a new order and installed",
        down.elapsed.as_secs_f64(),
        before.len()
    );
}

#[test]
fn retry_after_inside_the_deadline_is_waited_out_and_beyond_it_backs_off() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = proxy_for(&bed);
    let host = Host::via(&proxy, "fault-host");
    let certs = json!({"certs": {"main": ["dyn1.example.test"]}});

    // newOrder rate-limited for 2 s, finalize unavailable for 2 s: both waited out, issued.
    proxy.inject(Fault::rate_limited(Endpoint::NewOrder, 1, 2));
    let req = host.request(&certs);
    let req_json = ok(&req).clone();
    assert!(req.elapsed >= Duration::from_secs(2), "{:?}", req.elapsed);
    publish(&bed, &req_json["acme_txt_required"]);
    proxy.inject(Fault::unavailable(Endpoint::Finalize, 1, 2));
    let fin = host.finalize(&certs);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert!(fin.elapsed >= Duration::from_secs(2), "{:?}", fin.elapsed);
    assert_eq!(proxy.faults_left(), 0, "both faults acted");
    let answered = |e: Endpoint| -> Vec<Option<u16>> {
        proxy.requests_to(e).iter().map(|r| r.status).collect()
    };
    assert_eq!(answered(Endpoint::NewOrder), vec![Some(429), Some(201)]);
    assert_eq!(answered(Endpoint::Finalize), vec![Some(503), Some(200)]);
    host.assert_complete("dyn1.example.test", &["dyn1.example.test"]);
    let installed = host.cert_files("dyn1.example.test");
    let _ = host.finalize(&json!({"certs": certs["certs"], "ack": ["main"]}));

    // The names change, and newOrder is rate-limited for an hour: a clear failure saying when,
    // and a stored backoff the next pulse reports.
    let certs = json!({"certs": {"main": ["dyn1.example.test", "dyn2.example.test"]}});
    let forced = json!({"certs": certs["certs"], "force": true});
    proxy.inject(Fault::rate_limited(Endpoint::NewOrder, 1, 3600));
    let limited = host.request(&certs);
    assert!(limited.failed(), "{}", limited.json);
    let msg = limited.msg();
    assert!(
        msg.contains("cert main: create an order: rate limited by the CA"),
        "{msg}"
    );
    assert!(msg.contains("; retry after 20"), "{msg}");
    assert!(
        limited.elapsed < Duration::from_secs(30),
        "failed at once: {:?}",
        limited.elapsed
    );
    assert!(limited.json["problems"]["main"]["type"]
        .as_str()
        .unwrap_or("")
        .ends_with("rateLimited"));
    let backoff = host.request(&certs);
    assert_eq!(
        ok(&backoff)["certs"]["main"]["reason"],
        "backoff",
        "{}",
        backoff.json
    );
    assert_eq!(backoff.json["changed"], false);
    let retry_at = backoff.json["certs"]["main"]["retry_not_before"]
        .as_i64()
        .unwrap();
    let now = certbridge_acme::now();
    assert!(
        retry_at > now + 3500 && retry_at <= now + 3600,
        "{retry_at} vs {now}"
    );
    assert_eq!(host.cert_files("dyn1.example.test"), installed);

    // Forced past the backoff, then an outage for an hour on finalize: the order stays
    // pending, the files unchanged, a backoff stored.
    let req = host.request(&forced);
    publish(&bed, &ok(&req)["acme_txt_required"]);
    proxy.inject(Fault::unavailable(Endpoint::Finalize, 1, 3600));
    let down = host.finalize(&certs);
    assert!(down.failed(), "{}", down.json);
    let msg = down.msg();
    assert!(msg.contains("cert main: finalize order"), "{msg}");
    assert!(msg.contains("(retry after 20"), "{msg}");
    assert_eq!(
        host.cert_files("dyn1.example.test"),
        installed,
        "cert files changed"
    );
    let retry_at = retry_not_before(&host, "main").expect("backoff stored");
    assert!(retry_at > certbridge_acme::now() + 3500, "{retry_at}");
    let next = host.request(&certs);
    assert_eq!(
        ok(&next)["certs"]["main"]["reason"],
        "backoff",
        "{}",
        next.json
    );
    // Backing off, the host forgets the order (nothing pending, no value to publish); a
    // forced pulse once the CA is back orders again and completes.
    assert_eq!(next.json["pending"], json!([]), "{}", next.json);
    let (_, fin) = pulse(&bed, &host, &forced);
    assert_eq!(fin["updated"], json!(["main"]));
    assert_ne!(host.cert_files("dyn1.example.test"), installed);
    host.assert_complete(
        "dyn1.example.test",
        &["dyn1.example.test", "dyn2.example.test"],
    );
    assert_eq!(ok(&host.request(&certs))["certs"]["main"]["action"], "ok");
    println!(
        "retry-after: 429 newOrder (2 s) and 503 finalize (2 s) waited out and issued; 429 (1 h) \
         failed in {:.1} s stating the time, backoff until {retry_at}; 503 finalize (1 h) left \
         the files alone and backed off; a forced pulse completed afterwards",
        limited.elapsed.as_secs_f64()
    );
}

#[test]
fn a_rate_limited_new_account_fails_only_that_host() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = proxy_for(&bed);
    let limited = Host::via(&proxy, "host-a");
    let other = Host::via(&proxy, "host-b");
    let certs_a = json!({"certs": {"a": ["dyn1.example.test"]}});
    let certs_b = json!({"certs": {"b": ["dyn2.example.test"]}});
    // Many hosts behind one address: the CA refuses this host's registration.
    proxy.inject(Fault::rate_limited(Endpoint::NewAccount, 1, 3600));
    let refused = limited.request(&certs_a);
    assert!(refused.failed(), "{}", refused.json);
    assert!(refused.msg().contains("cert a:"), "{}", refused.msg());
    assert!(refused.msg().contains("rate limited"), "{}", refused.msg());
    assert!(refused.msg().contains("retry after"), "{}", refused.msg());
    assert_eq!(refused.json["pending"], json!([]));
    assert!(!limited
        .root
        .join("certs/dyn1.example.test/cert.pem")
        .exists());
    // The other host registers and is issued in the same pulse.
    let (req, fin) = pulse(&bed, &other, &certs_b);
    assert_eq!(req["pending"], json!(["b"]));
    assert_eq!(fin["updated"], json!(["b"]));
    other.assert_complete("dyn2.example.test", &["dyn2.example.test"]);
    let again = limited.request(&certs_a);
    assert_eq!(
        ok(&again)["certs"]["a"]["reason"],
        "backoff",
        "{}",
        again.json
    );
    let statuses: Vec<Option<u16>> = proxy
        .requests_to(Endpoint::NewAccount)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[0], Some(429), "{statuses:?}");
    assert!(
        statuses[1..].iter().all(|s| matches!(s, Some(200 | 201))),
        "one refused registration, no retry within the hour: {statuses:?}"
    );
    println!("rateLimited newAccount: host a failed and backs off, host b issued");
}

#[test]
fn a_hanging_connection_fails_at_the_per_request_deadline() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = proxy_for(&bed);
    let host = Host::via(&proxy, "fault-host");
    let certs = json!({"certs": {"main": ["dyn1.example.test"]}});
    let quick = json!({"certs": certs["certs"], "request_timeout": 3, "timeout": 120});

    // newOrder never answered: acme_request fails after its 3 s request deadline, not 120 s.
    proxy.inject(Fault::hang(Endpoint::NewOrder, 1));
    let hung = host.request(&quick);
    assert!(hung.failed(), "{}", hung.json);
    let msg = hung.msg();
    assert!(
        msg.contains("cert main: create an order (request to "),
        "{msg}"
    );
    assert!(msg.contains("/order-plz): no result within 3.0 s"), "{msg}");
    assert!(hung.elapsed >= Duration::from_secs(3), "{:?}", hung.elapsed);
    assert!(hung.elapsed < Duration::from_secs(60), "{:?}", hung.elapsed);

    // Issued later; then a reissue whose finalize hangs: fails at the request deadline, files
    // unchanged, and the next finalize completes the same order.
    let (_, fin) = pulse(
        &bed,
        &host,
        &json!({"certs": certs["certs"], "force": true}),
    );
    assert_eq!(fin["updated"], json!(["main"]));
    let installed = host.cert_files("dyn1.example.test");
    let req = host.request(&json!({"certs": certs["certs"], "force": true}));
    publish(&bed, &ok(&req)["acme_txt_required"]);
    proxy.inject(Fault::hang(Endpoint::Finalize, 1));
    let stuck = host.finalize(&quick);
    assert!(stuck.failed(), "{}", stuck.json);
    assert!(
        stuck.msg().contains("no result within 3.0 s"),
        "{}",
        stuck.msg()
    );
    assert!(
        stuck.elapsed < Duration::from_secs(60),
        "{:?}",
        stuck.elapsed
    );
    assert_eq!(host.cert_files("dyn1.example.test"), installed);
    let fin = host.finalize(&quick);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert_ne!(host.cert_files("dyn1.example.test"), installed);
    host.assert_complete("dyn1.example.test", &["dyn1.example.test"]);

    // A bad value is refused before any network access.
    let bad = host.request(&json!({"certs": certs["certs"], "request_timeout": 0}));
    assert!(
        bad.failed() && bad.msg().contains("request_timeout"),
        "{}",
        bad.msg()
    );
    println!(
        "hangs: newOrder failed after {:.1} s, finalize after {:.1} s (request_timeout 3, \
         timeout 120); the order completed at the next run",
        hung.elapsed.as_secs_f64(),
        stuck.elapsed.as_secs_f64()
    );
}
