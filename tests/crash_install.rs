//! Crash consistency of the install path: `acme_finalize` built with the test-only
//! `crash-points` feature dies at every named crash point and is SIGKILLed at 50 seeded random
//! moments of its install phase (`self_sign`, no CA needed). After each death the files services
//! read form one complete matching set, old or new, never mixed or partial; the next run
//! completes and ends in the new set.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::certset::{read_set, CertSet, Seen};
use support::run_module;

/// The crash points on acme_finalize's install path (`crash_point!` in certbridge-acme's store
/// and certbridge-core's atomic writes), in the order a run reaches them.
const POINTS: [&str; 6] = [
    "before_rename",
    "after_key_written",
    "after_generation_fsynced",
    "before_swap",
    "after_swap",
    "before_prune",
];

/// Three certs, so one run installs three times and a random kill has more to hit.
const CERTS: [(&str, &[&str]); 3] = [
    ("alpha", &["alpha.crash.test", "www.alpha.crash.test"]),
    ("beta", &["beta.crash.test"]),
    ("gamma", &["*.gamma.crash.test", "gamma.crash.test"]),
];

/// acme_finalize with crash points, built once per test process. The build shares this test
/// run's build directory (its dependencies are compiled already: only the workspace crates are
/// built again with the feature, under their own hashes) and puts the binary into
/// `<build dir>/crash-points`, so the usual `acme_finalize` the other tests run is never
/// replaced. `cargo test` holds no lock while tests run. A cargo without `build.build-dir`
/// (before 1.91) ignores it and builds everything there: slower, same result.
fn crash_finalize() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <build dir>/[<triple>/]<profile>/deps/<this test>
        let mut build_dir = exe.parent().and_then(Path::parent).and_then(Path::parent);
        if let Some(t) = build_dir {
            if t.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("-linux-"))
            {
                build_dir = t.parent();
            }
        }
        let build_dir = build_dir.expect("build dir");
        let target_dir = build_dir.join("crash-points");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let started = Instant::now();
        let out = Command::new(cargo)
            .args([
                "build",
                "--offline",
                "--features",
                "crash-points",
                "--bin",
                "acme_finalize",
                "--message-format",
                "json",
                "--target-dir",
            ])
            .arg(&target_dir)
            .arg("--config")
            .arg(format!(
                "build.build-dir={:?}",
                build_dir.display().to_string()
            ))
            .current_dir(support::repo_root())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build --features crash-points failed"
        );
        let bin = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["name"] == "acme_finalize"
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no acme_finalize executable");
        eprintln!(
            "crash-points build of acme_finalize: {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            bin.display()
        );
        bin
    })
}

fn args(root: &Path, extra: Value) -> Value {
    let certs: serde_json::Map<String, Value> = CERTS
        .iter()
        .map(|(c, names)| (c.to_string(), json!(names)))
        .collect();
    let mut v = json!({
        "cert_root": root.join("certs"),
        "log_file": root.join("certbridge.log"),
        "self_sign": true,
        "jitter_seed": "crash-host",
        "certs": certs,
    });
    let (Value::Object(a), Value::Object(b)) = (&mut v, extra) else {
        panic!()
    };
    a.extend(b);
    v
}

fn dir_of(names: &[&str]) -> String {
    names[0].trim_start_matches("*.").to_owned()
}

/// What services see in every cert dir; panics naming the dir on any inconsistency.
fn snapshot(root: &Path, when: &str) -> Vec<Seen> {
    CERTS
        .iter()
        .map(|(cert, names)| {
            let dir = root.join("certs").join(dir_of(names));
            read_set(&dir, &dir_of(names), names)
                .unwrap_or_else(|e| panic!("{when}: cert {cert} in {}: {e}", dir.display()))
        })
        .collect()
}

/// Each cert dir holds its old set or a new complete one (any new one: a rerun may issue again).
fn assert_old_or_new(old: &[Seen], now: &[Seen], when: &str) -> (usize, usize) {
    let (mut olds, mut news) = (0, 0);
    for ((cert, _), (o, n)) in CERTS.iter().zip(old.iter().zip(now)) {
        match (o, n) {
            (a, b) if a == b => olds += 1,
            (_, Seen::Complete(CertSet { key, .. })) => {
                if let Seen::Complete(prev) = o {
                    assert_ne!(
                        &prev.key, key,
                        "{when}: cert {cert}: the old key under a new cert"
                    );
                }
                news += 1
            }
            (_, Seen::Absent) => panic!("{when}: cert {cert}: its installed files vanished"),
        }
    }
    (olds, news)
}

/// acme_request (forced reissue of every cert, or the first issuance) with the usual binary.
fn request(root: &Path, force: bool) {
    let r = run_module("acme_request", &args(root, json!({"force": force})));
    assert!(!r.failed(), "{}", r.json);
    assert_eq!(
        r.json["pending"],
        json!(["alpha", "beta", "gamma"]),
        "{}",
        r.json
    );
}

/// Runs the usual acme_finalize to completion and checks every cert ends in a new set.
/// Returns how long that run took.
fn recover(root: &Path, old: &[Seen], when: &str) -> Duration {
    let fin = run_module("acme_finalize", &args(root, json!({})));
    assert!(!fin.failed(), "{when}: the next run failed: {}", fin.json);
    assert_eq!(
        fin.json["updated"],
        json!(["alpha", "beta", "gamma"]),
        "{when}"
    );
    let now = snapshot(root, &format!("{when}, after the next run"));
    for ((cert, names), (o, n)) in CERTS.iter().zip(old.iter().zip(&now)) {
        assert_ne!(o, n, "{when}: cert {cert} did not end in a new set");
        let dir = root.join("certs").join(dir_of(names));
        let gens: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gen-") || n.contains(".tmp."))
            .collect();
        assert!(
            gens.len() <= 2 && gens.iter().all(|g| g.starts_with("gen-")),
            "{when}: cert {cert} leftovers {gens:?}"
        );
    }
    let req = run_module("acme_request", &args(root, json!({})));
    assert_eq!(req.json["pending"], json!([]), "{when}: {}", req.json);
    let ack = run_module(
        "acme_finalize",
        &args(root, json!({"ack": ["alpha", "beta", "gamma"]})),
    );
    assert!(!ack.failed(), "{}", ack.json);
    fin.elapsed
}

fn args_file(dir: &Path, args: &Value) -> PathBuf {
    let p = dir.join("args.json");
    std::fs::write(&p, serde_json::to_vec(args).unwrap()).unwrap();
    p
}

/// Runs the crash build with `CERTBRIDGE_CRASH_AT=point` and returns how it ended.
fn run_crashing(root: &Path, point: &str) -> ExitStatus {
    let a = args_file(root, &args(root, json!({})));
    Command::new(crash_finalize())
        .arg(a)
        .env("CERTBRIDGE_CRASH_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

/// How far the install got: the number of cert dirs with a generation newer than `current`.
fn unswapped_generations(root: &Path) -> usize {
    CERTS
        .iter()
        .filter(|(_, names)| {
            let dir = root.join("certs").join(dir_of(names));
            let current = std::fs::read_link(dir.join("current")).ok().and_then(|c| {
                c.to_string_lossy()
                    .strip_prefix("gen-")?
                    .parse::<u64>()
                    .ok()
            });
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("gen-")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| Some(n) > current)
                })
        })
        .count()
}

#[test]
fn a_crash_at_every_named_point_leaves_old_or_new_and_the_next_run_completes() {
    let bin = crash_finalize();
    assert!(bin.is_file());
    let mut crashes = 0;
    for point in POINTS {
        for first in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let phase = if first { "first issuance" } else { "reissue" };
            if !first {
                request(root, false);
                let fin = run_module("acme_finalize", &args(root, json!({})));
                assert!(!fin.failed(), "{}", fin.json);
            }
            let old = snapshot(root, "before");
            request(root, !first);
            // A point can be on the way more than once (a pending key is written once, then the
            // install of the same cert reaches the point again): crash until the run passes it.
            let mut deaths = Vec::new();
            for attempt in 1..=3 {
                let status = run_crashing(root, point);
                if status.success() {
                    break;
                }
                assert_eq!(
                    status.signal(),
                    Some(libc_sigabrt()),
                    "{point}/{phase}: run {attempt} ended with {status:?}, not at the crash point"
                );
                crashes += 1;
                let now = snapshot(root, &format!("{point}/{phase} after crash {attempt}"));
                let (olds, news) = assert_old_or_new(&old, &now, point);
                deaths.push(format!(
                    "crash {attempt}: {olds} old, {news} new, {} unswapped generation(s)",
                    unswapped_generations(root)
                ));
                // One cert at a time reaches the point; at most twice per cert (key, install).
                if attempt == 2 || point == "before_rename" {
                    break;
                }
            }
            assert!(
                !deaths.is_empty(),
                "{point}/{phase}: the crash point never fired"
            );
            recover(root, &old, &format!("{point}/{phase}"));
            println!("crash point {point} ({phase}): {}", deaths.join("; "));
        }
    }
    println!(
        "named crash points: {} points x 2 phases, {crashes} crashes, every one consistent",
        POINTS.len()
    );
}

fn libc_sigabrt() -> i32 {
    6
}

/// splitmix64: a seeded sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi.saturating_sub(lo)).as_micros().max(1) as u64;
        lo + Duration::from_micros(self.next() % span)
    }
}

/// When (after spawn) a finalize run starts installing and when it exits, measured on one run
/// by watching for the first new generation directory.
fn measure_install_window(root: &Path) -> (Duration, Duration) {
    request(root, true);
    let a = args_file(root, &args(root, json!({})));
    let first_dir = root.join("certs").join(dir_of(CERTS[0].1));
    let gens_before = std::fs::read_dir(&first_dir).unwrap().count();
    let started = Instant::now();
    let mut child = Command::new(crash_finalize())
        .arg(a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut install_start = None;
    loop {
        if install_start.is_none() && std::fs::read_dir(&first_dir).unwrap().count() > gens_before {
            install_start = Some(started.elapsed());
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::yield_now();
    }
    let exit = started.elapsed();
    (install_start.unwrap_or(exit / 2), exit)
}

#[test]
fn fifty_random_kills_during_install_leave_old_or_new_and_the_next_run_completes() {
    let seed: u64 = std::env::var("CERTBRIDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_2026);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    request(root, false);
    let first = run_module("acme_finalize", &args(root, json!({})));
    assert!(!first.failed(), "{}", first.json);
    crash_finalize();
    // Calibrate: the install phase of one run, then kill inside [start/2, end] of it.
    let mut windows: Vec<(Duration, Duration)> =
        (0..3).map(|_| measure_install_window(root)).collect();
    windows.sort();
    let (start, end) = windows[1];
    let (lo, hi) = (start / 2, end + end / 10);
    println!("seed {seed}: install starts ~{start:?} after spawn, run ends ~{end:?}; first kills in [{lo:?}, {hi:?})");
    // Later windows follow the machine's pace: the last full run's length.
    let (mut lo, mut hi) = (lo, hi);
    let _ = run_module(
        "acme_finalize",
        &args(root, json!({"ack": ["alpha", "beta", "gamma"]})),
    );

    let (mut running, mut exited, mut mixed_moments, mut unswapped) = (0, 0, 0, 0);
    for trial in 0..50 {
        let old = snapshot(root, &format!("trial {trial}, before"));
        request(root, true);
        let a = args_file(root, &args(root, json!({})));
        let delay = rng.between(lo, hi);
        let mut child = Command::new(crash_finalize())
            .arg(a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            exited += 1;
        } else {
            child.kill().unwrap();
            running += 1;
        }
        let status = child.wait().unwrap();
        let when = format!("trial {trial} (kill after {delay:?}, {status:?})");
        let now = snapshot(root, &when);
        let (olds, news) = assert_old_or_new(&old, &now, &when);
        if olds > 0 && news > 0 {
            mixed_moments += 1;
        }
        unswapped += unswapped_generations(root).min(1);
        let full_run = recover(root, &old, &when);
        if full_run > Duration::ZERO {
            (lo, hi) = (
                full_run.mul_f64(start.as_secs_f64() / end.as_secs_f64() / 2.0),
                full_run,
            );
        }
    }
    println!(
        "50 random kills: {running} while running ({mixed_moments} between two certs' swaps, \
         {unswapped} with a written but unswapped generation), {exited} after the run ended; \
         every state consistent, every next run completed"
    );
    assert!(
        running >= 10,
        "only {running} kills hit a running process: calibrate the window"
    );
}

// ---------------------------------------------------------------------------------------------
// Installed but not recorded: a kill between a cert's swap and the save of its metadata must
// not lose the handler (issue 13). The next run, acme_request or acme_finalize, records what is
// installed, reports the cert as updated/unacked, and orders nothing new.

/// Every crash point between a cert's swap and the save of its metadata, in run order
/// (`{cert}`: the cert killed).
const WINDOW: [&str; 6] = [
    "after_swap",
    "before_prune",
    "after_prune",
    "before_meta_save",
    "temp_written:{cert}.json",
    "before_rename:{cert}.json",
];

/// Runs the crash build with `CERTBRIDGE_CRASH_AT=point` and `extra` options; asserts it died
/// there.
fn crash_at(root: &Path, point: &str, extra: Value) {
    let a = args_file(root, &args(root, extra));
    let status = Command::new(crash_finalize())
        .arg(a)
        .env("CERTBRIDGE_CRASH_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc_sigabrt()),
        "{point}: the run ended with {status:?}, not at the crash point"
    );
}

fn cert_dir(root: &Path, cert: &str) -> PathBuf {
    let names = CERTS.iter().find(|(c, _)| *c == cert).unwrap().1;
    root.join("certs").join(dir_of(names))
}

/// The metadata acme_request and acme_finalize keep for `cert`.
fn meta(root: &Path, cert: &str) -> Value {
    let p = root.join(format!("certs/.certbridge/certs/{cert}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// The serial of the certificate services read for `cert`.
fn installed_serial(root: &Path, cert: &str) -> String {
    let pem = std::fs::read_to_string(cert_dir(root, cert).join("cert.pem")).unwrap();
    certbridge_acme::certinfo::leaf_info_pem(&pem, "cert.pem")
        .unwrap()
        .serial
}

fn current_gen(root: &Path, cert: &str) -> PathBuf {
    std::fs::read_link(cert_dir(root, cert).join("current")).unwrap()
}

fn pending_key(root: &Path, cert: &str) -> PathBuf {
    root.join(format!("certs/.certbridge/pending/{cert}.key"))
}

/// Issues every cert and acknowledges the handlers: a quiet cert root.
fn quiet_root(root: &Path) {
    request(root, false);
    let fin = run_module("acme_finalize", &args(root, json!({})));
    assert!(!fin.failed(), "{}", fin.json);
    ack_all(root);
}

fn ack_all(root: &Path) {
    let ack = run_module(
        "acme_finalize",
        &args(root, json!({"only": [], "ack": ["alpha", "beta", "gamma"]})),
    );
    assert!(!ack.failed(), "{}", ack.json);
    assert_eq!(ack.json["updated"], json!([]), "{}", ack.json);
}

/// After a kill left `killed` installed but unrecorded (the others in `pending` still to
/// finalize): the next runs record it, owe its handler (and no other's), and order nothing.
/// `request_first`: acme_request is the next run, else acme_finalize.
fn assert_caught_up(root: &Path, killed: &str, pending: &[&str], request_first: bool, when: &str) {
    let serial = installed_serial(root, killed);
    let gen = current_gen(root, killed);
    assert_ne!(
        meta(root, killed)["serial"],
        json!(serial),
        "{when}: the kill did not hit the window"
    );
    let mut updated: Vec<&str> = pending.iter().copied().chain([killed]).collect();
    updated.sort();
    let check_request = |req: &support::ModuleRun, pending: &[&str]| {
        assert!(!req.failed(), "{when}: {}", req.json);
        assert!(!req.changed(), "{when}: a new order: {}", req.json);
        assert_eq!(req.json["pending"], json!(pending), "{when}: {}", req.json);
        assert_eq!(req.json["certs"][killed]["action"], "ok", "{when}");
    };
    if request_first {
        let req = run_module("acme_request", &args(root, json!({})));
        check_request(&req, pending);
        assert_eq!(req.json["unacked"], json!([killed]), "{when}: {}", req.json);
        let m = meta(root, killed);
        assert_eq!(m["serial"], json!(serial), "{when}: {m}");
        assert_eq!(m["handler_owed"], json!(true), "{when}: {m}");
        assert_eq!(m["pending"], Value::Null, "{when}: {m}");
        assert!(!pending_key(root, killed).exists(), "{when}");
    }
    let fin = run_module("acme_finalize", &args(root, json!({})));
    assert!(!fin.failed(), "{when}: {}", fin.json);
    assert_eq!(fin.json["updated"], json!(updated), "{when}: {}", fin.json);
    if !request_first {
        assert_eq!(
            fin.json["certs"][killed]["serial"],
            json!(serial),
            "{when}: {}",
            fin.json
        );
    }
    assert_eq!(current_gen(root, killed), gen, "{when}: installed again");
    assert_eq!(installed_serial(root, killed), serial, "{when}");
    let m = meta(root, killed);
    assert_eq!(m["serial"], json!(serial), "{when}: {m}");
    assert_eq!(m["pending"], Value::Null, "{when}: {m}");
    assert!(!pending_key(root, killed).exists(), "{when}");
    let req = run_module("acme_request", &args(root, json!({})));
    check_request(&req, &[]);
    assert_eq!(req.json["unacked"], json!(updated), "{when}: {}", req.json);
    ack_all(root);
    let req = run_module("acme_request", &args(root, json!({})));
    assert_eq!(req.json["unacked"], json!([]), "{when}: {}", req.json);
    assert!(!req.changed(), "{when}: {}", req.json);
}

#[test]
fn a_kill_between_swap_and_metadata_save_still_owes_the_handler_and_orders_nothing() {
    crash_finalize();
    let mut cases = 0;
    for point in WINDOW {
        for request_first in [true, false] {
            // First issuance: alpha dies in the window, beta and gamma are still to finalize.
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            request(root, false);
            let p = point.replace("{cert}", "alpha");
            crash_at(root, &p, json!({}));
            snapshot(root, &format!("{p} (first issuance)"));
            let when = format!("{p} (first issuance, request first: {request_first})");
            assert_caught_up(root, "alpha", &["beta", "gamma"], request_first, &when);

            // Reissue of beta alone: alpha and gamma, acknowledged, must stay quiet.
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            quiet_root(root);
            let old = snapshot(root, "before");
            let req = run_module("acme_request", &args(root, json!({"force": ["beta"]})));
            assert_eq!(req.json["pending"], json!(["beta"]), "{}", req.json);
            let p = point.replace("{cert}", "beta");
            crash_at(root, &p, json!({}));
            let now = snapshot(root, &p);
            assert_eq!((now[0] == old[0], now[1] == old[1]), (true, false), "{p}");
            let when = format!("{p} (reissue, request first: {request_first})");
            assert_caught_up(root, "beta", &[], request_first, &when);
            cases += 2;
        }
    }
    println!("killed between swap and metadata save: {cases} cases, every handler owed once, no new order");
}

#[test]
fn a_kill_during_rollback_before_the_metadata_save_owes_the_handler() {
    crash_finalize();
    for point in [
        "after_swap",
        "before_meta_save",
        "temp_written:beta.json",
        "before_rename:beta.json",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        quiet_root(root);
        let first = installed_serial(root, "beta");
        request(root, true);
        let fin = run_module("acme_finalize", &args(root, json!({})));
        assert!(!fin.failed(), "{}", fin.json);
        ack_all(root);
        assert_ne!(installed_serial(root, "beta"), first);
        crash_at(root, point, json!({"rollback": ["beta"]}));
        snapshot(root, point);
        assert_eq!(installed_serial(root, "beta"), first, "{point}");
        let req = run_module("acme_request", &args(root, json!({})));
        assert!(!req.failed() && !req.changed(), "{point}: {}", req.json);
        assert_eq!(req.json["pending"], json!([]), "{point}");
        assert_eq!(
            req.json["unacked"],
            json!(["beta"]),
            "{point}: {}",
            req.json
        );
        assert_eq!(meta(root, "beta")["serial"], json!(first), "{point}");
        let fin = run_module("acme_finalize", &args(root, json!({})));
        assert_eq!(
            fin.json["updated"],
            json!(["beta"]),
            "{point}: {}",
            fin.json
        );
        assert_eq!(installed_serial(root, "beta"), first, "{point}");
        ack_all(root);
    }
}

#[test]
fn a_kill_while_acknowledging_fires_again_only_the_handlers_whose_ack_was_lost() {
    crash_finalize();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    request(root, false);
    let fin = run_module("acme_finalize", &args(root, json!({})));
    assert_eq!(fin.json["updated"], json!(["alpha", "beta", "gamma"]));
    // The acknowledging run dies saving beta's metadata: alpha's ack is kept.
    crash_at(
        root,
        "before_rename:beta.json",
        json!({"only": [], "ack": ["alpha", "beta", "gamma"]}),
    );
    let req = run_module("acme_request", &args(root, json!({})));
    assert_eq!(
        req.json["unacked"],
        json!(["beta", "gamma"]),
        "{}",
        req.json
    );
    let fin = run_module("acme_finalize", &args(root, json!({})));
    assert_eq!(
        fin.json["updated"],
        json!(["beta", "gamma"]),
        "{}",
        fin.json
    );
    assert!(!fin.changed(), "{}", fin.json);
    ack_all(root);
}

/// Temp files of `dir` (names `.<name>.tmp.<pid>...`).
fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && n.contains(".tmp.")
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn temp_files_a_kill_leaves_are_owner_only_and_go_at_the_next_run() {
    use std::os::unix::fs::PermissionsExt;
    crash_finalize();
    let reserved = |root: &Path, sub: &str| root.join("certs/.certbridge").join(sub);
    // (crash point, where its temp file is, holds a private key)
    type TempDir = fn(&Path) -> PathBuf;
    let cases: [(&str, TempDir, bool); 3] = [
        (
            "temp_written:alpha.key",
            |r| r.join("certs/.certbridge/pending"),
            true,
        ),
        (
            "temp_written:alpha.json",
            |r| r.join("certs/.certbridge/certs"),
            false,
        ),
        ("temp_link:current", |r| cert_dir(r, "alpha"), false),
    ];
    for (point, dir_of_temp, private) in cases {
        for next in ["acme_request", "acme_finalize"] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            request(root, false);
            crash_at(root, point, json!({}));
            let dir = dir_of_temp(root);
            let left = temps(&dir);
            assert_eq!(left.len(), 1, "{point}: {left:?}");
            let m = std::fs::symlink_metadata(&left[0]).unwrap();
            if m.is_file() {
                let mode = m.permissions().mode() & 0o777;
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{point}: {} is {mode:o}",
                    left[0].display()
                );
            }
            if private {
                let text = std::fs::read_to_string(&left[0]).unwrap();
                assert!(text.contains("PRIVATE KEY"), "{point}: {text}");
            }
            let run = run_module(next, &args(root, json!({})));
            assert!(!run.failed(), "{point}, {next}: {}", run.json);
            assert_eq!(temps(&dir), Vec::<PathBuf>::new(), "{point}, {next}");
            for sub in ["certs", "pending", "accounts", "selfsign"] {
                if reserved(root, sub).is_dir() {
                    assert_eq!(temps(&reserved(root, sub)), Vec::<PathBuf>::new(), "{sub}");
                }
            }
            let fin = run_module("acme_finalize", &args(root, json!({})));
            assert!(!fin.failed(), "{}", fin.json);
            assert_eq!(
                fin.json["updated"],
                json!(["alpha", "beta", "gamma"]),
                "{point}, {next}"
            );
            for (cert, names) in CERTS {
                let d = root.join("certs").join(dir_of(names));
                assert!(
                    matches!(read_set(&d, &dir_of(names), names), Ok(Seen::Complete(_))),
                    "{point}, {next}: {cert}"
                );
                assert_eq!(temps(&d), Vec::<PathBuf>::new(), "{point}, {next}: {cert}");
            }
        }
    }
}
