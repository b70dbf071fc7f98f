//! Crash consistency and locking of zone writes. `zone_render` built with the `crash-points`
//! feature is killed at every named point of the write path and SIGKILLed at seeded random
//! moments; after each kill the zone file is complete (it parses, and holds exactly the old or
//! exactly the new records and serial, never a mix or a prefix) and the next run completes.
//! Two writers of one zone at once: the second waits for the lock, or gives up after its
//! timeout naming the lock file and the holder's pid; the file is never corrupted.
//!
//! The crash build is `cargo build -p certbridge-core --features crash-points --example
//! zone_render_crash` (the module's main over certbridge-core alone) into `<target>/crash-points`:
//! a few seconds once built, about a minute from cold.

use certbridge_testsupport as support;

use certbridge_core::zone::{parse_rendered, RenderedZone};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{module_bin, run_module};

const ORIGIN: &str = "acme.example.test";

/// The crash points of the zone write path, in the order a run passes them, and whether the
/// file holds the new content once a run dies there.
const POINTS: [(&str, bool); 5] = [
    ("zone_locked", false),
    ("temp_written", false),
    ("before_rename", false),
    ("after_rename", true),
    ("zone_written", true),
];

/// Builds the crash-point zone_render (once per test binary) and returns its path.
fn crash_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // <target>/<triple>/debug/zone_render -> <target>
            let target = Path::new(env!("CARGO_BIN_EXE_zone_render"))
                .ancestors()
                .nth(3)
                .expect("target dir")
                .join("crash-points");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let start = Instant::now();
            let out = Command::new(cargo)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "build",
                    "-p",
                    "certbridge-core",
                    "--features",
                    "crash-points",
                    "--example",
                    "zone_render_crash",
                    "--message-format=json-render-diagnostics",
                    "--target-dir",
                ])
                .arg(&target)
                .stderr(Stdio::inherit())
                .output()
                .expect("run cargo");
            assert!(
                out.status.success(),
                "building the crash-point zone_render failed"
            );
            let exe = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|m| m["target"]["name"] == "zone_render_crash")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo reported no executable");
            println!(
                "crash-point build: {:.1} s ({})",
                start.elapsed().as_secs_f64(),
                exe.display()
            );
            exe
        })
        .clone()
}

/// Module args for `n` TXT records whose values carry `tag`.
fn zone_args(path: &Path, tag: &str, n: usize) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("_acme-challenge.h{i}"), "type": "TXT", "value": format!("{tag}-{i:06}")}))
        .collect();
    json!({
        "path": path, "origin": ORIGIN, "ns": ["ns1.acme.example.test"],
        "records": records, "lock_timeout": 10,
    })
}

/// Runs `bin` the way Ansible does, without waiting.
fn spawn(bin: &Path, args: &Value, dir: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let args_path = dir.join(format!("args-{}", rand_tag()));
    std::fs::write(&args_path, serde_json::to_vec(args).unwrap()).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(&args_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn zone_render")
}

fn rand_tag() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The zone file, parsed; panics (naming `when`) when it is missing, partial or malformed.
fn read_zone(path: &Path, when: &str) -> RenderedZone {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{when}: {e}"));
    parse_rendered(&text).unwrap_or_else(|e| {
        panic!(
            "{when}: the zone file is not complete: {e} ({} bytes)",
            text.len()
        )
    })
}

fn txt_tags(zone: &RenderedZone) -> BTreeSet<String> {
    zone.txt()
        .map(|(_, v, _)| v.split('-').next().unwrap_or_default().to_owned())
        .collect()
}

/// The zone holds exactly the records of `tag` (all `n` of them) and nothing else.
fn holds(zone: &RenderedZone, tag: &str, n: usize) -> bool {
    let values: BTreeSet<&str> = zone.txt().map(|(_, v, _)| v).collect();
    values.len() == n && values.iter().all(|v| v.starts_with(&format!("{tag}-")))
}

/// Runs the module to completion and checks it wrote `tag`'s records.
fn complete(path: &Path, tag: &str, n: usize) -> u32 {
    let run = run_module("zone_render", &zone_args(path, tag, n));
    assert!(!run.failed(), "the next run failed: {}", run.json);
    let zone = read_zone(path, "after a completed run");
    assert!(
        holds(&zone, tag, n),
        "after a completed run: {:?}",
        txt_tags(&zone)
    );
    zone.serial
}

/// Temp files a killed run left beside the zone (named `.<file>.tmp.<pid>.<n>`).
fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .count()
}

#[test]
fn killed_at_every_crash_point_the_zone_is_old_or_new_and_the_next_run_completes() {
    let bin = crash_binary();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("signing.zone");
    let n = 200;
    complete(&path, "base", n);
    let mut old = "base".to_string();
    for (i, (point, new_expected)) in POINTS.iter().enumerate() {
        let new = format!("p{i}");
        let before = read_zone(&path, "before the kill");
        let child = spawn(
            &bin,
            &zone_args(&path, &new, n),
            tmp.path(),
            &[("CERTBRIDGE_CRASH_AT", point)],
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{point}: the run was not stopped by its crash point: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "{point}: printed a result before dying"
        );
        let after = read_zone(&path, point);
        if *new_expected {
            assert!(
                holds(&after, &new, n),
                "{point}: expected the new zone, found {:?}",
                txt_tags(&after)
            );
            assert!(after.serial > before.serial, "{point}: serial did not move");
        } else {
            assert_eq!(after, before, "{point}: the old zone changed");
        }
        // The lock died with the process: the next run takes it at once and completes.
        let start = Instant::now();
        complete(&path, &new, n);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{point}: the next run waited {:?}",
            start.elapsed()
        );
        old = new;
    }
    // The ordinary test build carries no crash points: the same variable does nothing there.
    let run = support::run_module_env(
        "zone_render",
        &zone_args(&path, "plain", n),
        &[("CERTBRIDGE_CRASH_AT", "before_rename")],
    );
    assert!(!run.failed() && run.changed(), "{}", run.json);
    assert!(holds(&read_zone(&path, "plain build"), "plain", n));
    println!(
        "crash points exercised: {} ({}); last content before the plain run: {old}; temp files left by killed runs: {}",
        POINTS.len(),
        POINTS.map(|(p, _)| p).join(", "),
        leftovers(tmp.path())
    );
}

/// xorshift64*: a seeded, dependency-free source of kill delays (the seed is printed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_partial_zone() {
    let seed: u64 = std::env::var("CERTBRIDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE_5EED);
    let trials: usize = std::env::var("CERTBRIDGE_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = Rng(seed);
    let bin = module_bin("zone_render");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("signing.zone");
    // Enough records that writing the file takes a measurable part of the run.
    let n = 4_000;
    complete(&path, "t0", n);
    // How long an uninterrupted run takes, timed like the trials (from spawn to exit): kill
    // moments are drawn from 0 to 1.2 times that.
    let start = Instant::now();
    let run = spawn(&bin, &zone_args(&path, "t1", n), tmp.path(), &[]);
    assert!(run.wait_with_output().unwrap().status.success());
    let full = start.elapsed();
    assert!(holds(&read_zone(&path, "timed run"), "t1", n));
    let (mut old_kept, mut new_found, mut finished) = (0, 0, 0);
    let mut current = "t1".to_string();
    for trial in 0..trials {
        let new = format!("r{trial}");
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 6 / 5 + 1));
        let mut child = spawn(&bin, &zone_args(&path, &new, n), tmp.path(), &[]);
        // The kill moment is the experiment's variable, not a wait for something to happen.
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL; an already finished run is fine
        let status = child.wait().unwrap();
        let zone = read_zone(
            &path,
            &format!("trial {trial} (seed {seed}, killed after {delay:?})"),
        );
        if holds(&zone, &new, n) {
            new_found += 1;
            finished += usize::from(status.success());
        } else {
            assert!(
                holds(&zone, &current, n),
                "trial {trial} (seed {seed}, {delay:?}): neither the old nor the new records: {:?}",
                txt_tags(&zone)
            );
            old_kept += 1;
        }
        complete(&path, &new, n);
        current = new;
    }
    println!(
        "random kills: {trials} trials (seed {seed}, {n} records, full run {:.0} ms): old zone kept {old_kept}, new zone {new_found} (of which {finished} had finished), partial 0; temp files left: {}",
        full.as_secs_f64() * 1000.0,
        leftovers(tmp.path())
    );
    assert!(
        old_kept > 0 && new_found > 0,
        "the kill moments did not cover both outcomes"
    );
}

#[test]
fn concurrent_writers_wait_for_the_lock_or_name_its_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("signing.zone");
    let lock = dir.join(".signing.zone.lock");
    complete(&path, "start", 5);
    // Run A holds the lock while its validator waits for the test to release it.
    let gate = dir.join("gate");
    let mut a_args = zone_args(&path, "a", 5);
    a_args["validate"] = json!([
        "sh",
        "-c",
        "touch \"$0.started\"; while [ ! -e \"$0.release\" ]; do sleep 0.02; done",
        gate,
        "%s"
    ]);
    let a = spawn(&module_bin("zone_render"), &a_args, dir, &[]);
    let started = dir.join("gate.started");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "run A never reached its validator"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let holder = a.id().to_string();

    // B (zone_render) and C (acme_txt_publish on the same file) give up, naming lock and pid.
    let mut b_args = zone_args(&path, "b", 5);
    b_args["lock_timeout"] = json!(1);
    let b = run_module("zone_render", &b_args);
    assert!(b.failed(), "{}", b.json);
    assert!(
        b.msg().contains(lock.to_str().unwrap()) && b.msg().contains(&holder),
        "{}",
        b.msg()
    );
    assert!(b.elapsed < Duration::from_secs(3), "{:?}", b.elapsed);
    let c = run_module(
        "acme_txt_publish",
        &json!({
            "records": [{"host": "h1", "cert": "main", "name": "web.example.test",
                         "record": "_acme-challenge.web.example.test", "value": "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-"}],
            "zones": [{"origin": ORIGIN, "method": "zonefile", "path": path, "ns": ["ns1.acme.example.test"],
                       "validate": ["true", "%s"], "reload": ["true"]}],
            "check_cname": false, "alias": format!("acme.{ORIGIN}"),
            "nameservers": ["127.0.0.1:9"], "state_dir": dir.join("state"), "timeout": 2,
        }),
    );
    assert!(c.failed(), "{}", c.json);
    assert!(
        c.msg().contains(".signing.zone.lock") && c.msg().contains(&holder),
        "{}",
        c.msg()
    );
    assert!(c.elapsed < Duration::from_secs(4), "{:?}", c.elapsed);
    assert!(holds(
        &read_zone(&path, "while A holds the lock"),
        "start",
        5
    ));

    // D waits for the lock instead, and writes after A.
    let d = spawn(
        &module_bin("zone_render"),
        &zone_args(&path, "d", 5),
        dir,
        &[],
    );
    std::fs::write(dir.join("gate.release"), "").unwrap();
    let a_out = a.wait_with_output().unwrap();
    let d_out = d.wait_with_output().unwrap();
    let a_json: Value = serde_json::from_slice(&a_out.stdout).unwrap();
    let d_json: Value = serde_json::from_slice(&d_out.stdout).unwrap();
    assert_eq!(a_json["changed"], true, "{a_json}");
    assert_eq!(d_json["changed"], true, "{d_json}");
    assert!(
        d_json["serial"].as_u64() > a_json["serial"].as_u64(),
        "{a_json} {d_json}"
    );
    let zone = read_zone(&path, "after both runs");
    assert!(holds(&zone, "d", 5), "{:?}", txt_tags(&zone));
    println!(
        "lock: 2 writers refused naming {} and pid {holder}, 1 waited and wrote after the holder",
        lock.display()
    );
}
