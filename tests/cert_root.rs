//! The cert root under stress (`self_sign`, no CA): key files 0600 (0640 with `group`), cert
//! directories 2750 with a group, whatever the caller's umask (000 or 077); two acme_finalize
//! runs at once on one cert root; a run that waits for the lock held by another process, or
//! gives up after its timeout naming the lock file and the holder's pid.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{module_bin, run_module, tree};

const CERTS: [(&str, &[&str]); 2] = [
    ("main", &["web.root.test", "www.root.test"]),
    ("wild", &["*.s3.root.test", "s3.root.test"]),
];

fn args(root: &Path, extra: Value) -> Value {
    let certs: serde_json::Map<String, Value> = CERTS
        .iter()
        .map(|(c, names)| (c.to_string(), json!(names)))
        .collect();
    let mut v = json!({
        "cert_root": root.join("certs"),
        "log_file": root.join("certbridge.log"),
        "self_sign": true,
        "jitter_seed": "root-host",
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

fn args_file(dir: &Path, name: &str, args: &Value) -> PathBuf {
    let p = dir.join(format!("{name}.args.json"));
    std::fs::write(&p, serde_json::to_vec(args).unwrap()).unwrap();
    p
}

/// Starts module `name` under `sh -c 'umask U; exec ...'` (no umask: as inherited).
fn spawn(name: &str, args_path: &Path, umask: Option<u32>) -> Child {
    let mut cmd = match umask {
        Some(u) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("umask {u:03o}; exec \"$0\" \"$1\""))
                .arg(module_bin(name))
                .arg(args_path);
            c
        }
        None => {
            let mut c = Command::new(module_bin(name));
            c.arg(args_path);
            c
        }
    };
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn reply(name: &str, out: Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{name} printed no JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn run_umask(root: &Path, name: &str, a: &Value, umask: u32) -> Value {
    let p = args_file(root, name, a);
    let v = reply(
        name,
        spawn(name, &p, Some(umask)).wait_with_output().unwrap(),
    );
    assert_ne!(v["failed"], true, "{name} under umask {umask:03o}: {v}");
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A group for key files: as root any gid will do (a number no user has proves the chown);
/// otherwise the caller's own group.
fn test_gid(root: &Path) -> u32 {
    let probe = root.join("gid-probe");
    std::fs::write(&probe, b"").unwrap();
    let m = std::fs::metadata(&probe).unwrap();
    std::fs::remove_file(&probe).unwrap();
    if m.uid() == 0 {
        4242
    } else {
        m.gid()
    }
}

/// Checks the modes of everything the modules wrote under `root/certs`.
fn check_modes(root: &Path, gid: Option<u32>, when: &str) -> usize {
    let certs = root.join("certs");
    let mut checked = 0;
    let (key_mode, dir_mode) = match gid {
        Some(_) => (0o640, 0o2750),
        None => (0o600, 0o755),
    };
    for (cert, names) in CERTS {
        let first = dir_of(names);
        let dir = certs.join(&first);
        assert_eq!(mode(&dir), dir_mode, "{when}: {cert} dir {}", dir.display());
        let gens: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.is_symlink())
            .collect();
        assert!(!gens.is_empty());
        for g in gens.iter().chain([&dir]) {
            assert_eq!(mode(g), dir_mode, "{when}: {}", g.display());
            if let Some(gid) = gid {
                assert_eq!(
                    std::fs::metadata(g).unwrap().gid(),
                    gid,
                    "{when}: {}",
                    g.display()
                );
            }
        }
        for g in &gens {
            for f in std::fs::read_dir(g).unwrap().flatten() {
                let p = f.path();
                let n = f.file_name().to_string_lossy().into_owned();
                let private = n == "privkey.pem" || n == "combined.pem" || n.ends_with(".key");
                let want = if private { key_mode } else { 0o644 };
                assert_eq!(mode(&p), want, "{when}: {}", p.display());
                if let (true, Some(gid)) = (private, gid) {
                    assert_eq!(
                        std::fs::metadata(&p).unwrap().gid(),
                        gid,
                        "{when}: {}",
                        p.display()
                    );
                }
                checked += 1;
            }
        }
        // Through the stable names, as a service opens them.
        for f in support::certset::service_files(&first) {
            let private = f == "privkey.pem" || f == "combined.pem" || f.ends_with(".key");
            assert_eq!(
                mode(&dir.join(&f)),
                if private { key_mode } else { 0o644 },
                "{when}: {f}"
            );
        }
        support::certset::read_set(&dir, &first, names).unwrap_or_else(|e| panic!("{when}: {e}"));
    }
    // Bookkeeping: nobody but the owner reads any of it (accounts, metadata, order keys, the
    // self-sign CA's key).
    assert_eq!(mode(&certs.join(".certbridge")), 0o700, "{when}");
    let bookkeeping = certs.join(".certbridge");
    let reserved: Vec<PathBuf> = tree::snapshot(&bookkeeping)
        .into_keys()
        .map(|p| bookkeeping.join(p))
        .collect();
    for p in &reserved {
        let m = mode(p);
        let public_cert = p.extension().is_some_and(|e| e == "pem")
            && std::fs::read_to_string(p).is_ok_and(|s| !s.contains("PRIVATE KEY"));
        if !public_cert {
            assert_eq!(m & 0o077, 0, "{when}: {} is mode {m:o}", p.display());
        }
        checked += 1;
    }
    checked
}

#[test]
fn key_files_and_dirs_keep_their_modes_under_umask_000_and_077() {
    for umask in [0o000, 0o077] {
        for with_group in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let gid = with_group.then(|| test_gid(root));
            let extra = match gid {
                Some(g) => json!({"group": g.to_string()}),
                None => json!({}),
            };
            let a = args(root, extra.clone());
            run_umask(root, "acme_request", &a, umask);
            run_umask(root, "acme_finalize", &a, umask);
            let when = format!("umask {umask:03o}, group {gid:?}, first issuance");
            let n1 = check_modes(root, gid, &when);
            // A reissue writes a second generation and swaps: same modes.
            let mut forced = a.clone();
            forced["force"] = json!(true);
            run_umask(root, "acme_request", &forced, umask);
            run_umask(root, "acme_finalize", &a, umask);
            let when = format!("umask {umask:03o}, group {gid:?}, reissue");
            let n2 = check_modes(root, gid, &when);
            println!("{when}: {n1} + {n2} paths checked");
        }
    }
}

/// The pid written into the lock file by its holder.
fn lock_holder(lock: &Path) -> Option<u32> {
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

#[test]
fn two_finalize_runs_at_once_both_succeed_and_one_installs() {
    let mut installs = 0;
    for trial in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let a = args(root, json!({"timeout": 60}));
        assert!(!run_module("acme_request", &a).failed());
        let p = args_file(root, "acme_finalize", &a);
        let runs: Vec<Child> = (0..2).map(|_| spawn("acme_finalize", &p, None)).collect();
        let replies: Vec<Value> = runs
            .into_iter()
            .map(|c| reply("acme_finalize", c.wait_with_output().unwrap()))
            .collect();
        for r in &replies {
            assert_ne!(r["failed"], true, "trial {trial}: {r}");
            // The handler is owed either way: both report the certs as updated.
            assert_eq!(r["updated"], json!(["main", "wild"]), "trial {trial}: {r}");
        }
        let changed: Vec<bool> = replies.iter().map(|r| r["changed"] == true).collect();
        assert_eq!(
            changed.iter().filter(|c| **c).count(),
            1,
            "trial {trial}: {replies:?}"
        );
        installs += 1;
        for (_, names) in CERTS {
            let dir = root.join("certs").join(dir_of(names));
            support::certset::read_set(&dir, &dir_of(names), names).unwrap();
            // Exactly one generation was installed.
            assert_eq!(
                std::fs::read_link(dir.join("current")).unwrap(),
                Path::new("gen-1")
            );
            assert!(
                !dir.join("gen-2").exists(),
                "trial {trial}: installed twice"
            );
        }
    }
    println!("two concurrent acme_finalize runs, {installs} trials: one installed, one found nothing pending, both succeeded");
}

/// A TCP port that accepts connections and never answers (a hung CA).
fn silent_server() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn a_run_waits_for_the_holder_or_gives_up_naming_the_lock_and_its_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = args(root, json!({}));
    assert!(!run_module("acme_request", &a).failed());
    let lock = root.join("certs/.certbridge/lock");

    // Another process holds the cert root's lock: an acme_request stuck on a CA that never
    // answers (it holds the lock while it talks to the CA, up to its timeout of 6 s).
    let silent = silent_server();
    let held_for = Duration::from_secs(6);
    let holder_args = json!({
        "cert_root": root.join("certs"),
        "log_file": root.join("holder.log"),
        "directory": format!("https://{}/dir", silent.local_addr().unwrap()),
        "jitter_seed": "root-host",
        "certs": {"other": ["other.root.test"]},
        "timeout": held_for.as_secs(),
    });
    // Any CA file will do: the handshake never completes.
    let ca = rcgen::generate_simple_self_signed(vec!["unused.root.test".into()]).unwrap();
    let ca_file = root.join("unused-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let mut holder_args = holder_args;
    holder_args["ca_file"] = json!(ca_file);
    let hp = args_file(root, "holder", &holder_args);
    let started = Instant::now();
    let holder = spawn("acme_request", &hp, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lock_holder(&lock) != Some(holder.id()) {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = support::certset::read_set(
        &root.join("certs").join(dir_of(CERTS[0].1)),
        &dir_of(CERTS[0].1),
        CERTS[0].1,
    )
    .unwrap();

    // A short timeout: fails after it, naming the lock file and the holder's pid.
    let gave_up = run_module("acme_finalize", &args(root, json!({"timeout": 1})));
    assert!(gave_up.failed(), "{}", gave_up.json);
    let msg = gave_up.msg();
    assert!(msg.contains(&lock.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("pid {}", holder.id())), "{msg}");
    assert!(
        gave_up.elapsed >= Duration::from_secs(1),
        "{:?}",
        gave_up.elapsed
    );
    assert_eq!(
        support::certset::read_set(
            &root.join("certs").join(dir_of(CERTS[0].1)),
            &dir_of(CERTS[0].1),
            CERTS[0].1
        )
        .unwrap(),
        before,
        "a run that got no lock changed files"
    );

    // A long timeout: waits until the holder lets go, then installs.
    let fp = args_file(root, "waiter", &args(root, json!({"timeout": 60})));
    let waiter = spawn("acme_finalize", &fp, None);
    let holder_out = holder.wait_with_output().unwrap();
    let holder_done = started.elapsed();
    let holder_reply = reply("acme_request", holder_out);
    assert_eq!(
        holder_reply["failed"], true,
        "the hung CA must fail the holder: {holder_reply}"
    );
    let waited = reply("acme_finalize", waiter.wait_with_output().unwrap());
    let waiter_done = started.elapsed();
    assert_ne!(waited["failed"], true, "{waited}");
    assert_eq!(waited["updated"], json!(["main", "wild"]));
    assert!(
        waiter_done >= holder_done,
        "finished before the holder released the lock"
    );
    for (_, names) in CERTS {
        let dir = root.join("certs").join(dir_of(names));
        assert!(matches!(
            support::certset::read_set(&dir, &dir_of(names), names).unwrap(),
            support::certset::Seen::Complete(_)
        ));
    }
    drop(silent);
    println!(
        "lock: timeout 1 failed after {:.1} s naming the holder pid; the waiter finished {:.1} s \
         after start, the holder at {:.1} s",
        gave_up.elapsed.as_secs_f64(),
        waiter_done.as_secs_f64(),
        holder_done.as_secs_f64()
    );
}

/// What services read in `cert`'s directory, or why it is not one matching set.
fn served(root: &Path, cert: &str) -> Result<support::certset::Seen, String> {
    let names = CERTS.iter().find(|(c, _)| *c == cert).unwrap().1;
    let first = dir_of(names);
    support::certset::read_set(&root.join("certs").join(&first), &first, names)
}

#[test]
fn a_stable_name_that_points_elsewhere_is_repaired_and_owes_the_handler() {
    for plant in [
        "link elsewhere",
        "real file",
        "dangling link",
        "current elsewhere",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let a = args(root, json!({}));
        assert!(!run_module("acme_request", &a).failed());
        assert!(!run_module("acme_finalize", &a).failed());
        let ack = run_module(
            "acme_finalize",
            &args(root, json!({"only": [], "ack": ["main", "wild"]})),
        );
        assert!(!ack.failed(), "{}", ack.json);
        let good = served(root, "main").unwrap();
        let dir = root.join("certs").join(dir_of(CERTS[0].1));
        let wild = root.join("certs").join(dir_of(CERTS[1].1));
        // Another cert's key, outside certbridge's reach.
        let other = root.join("other.key");
        std::fs::copy(wild.join("privkey.pem"), &other).unwrap();
        let other_before = std::fs::read(&other).unwrap();
        let key = dir.join("privkey.pem");
        match plant {
            "link elsewhere" => {
                std::fs::remove_file(&key).unwrap();
                std::os::unix::fs::symlink(&other, &key).unwrap();
            }
            "real file" => {
                std::fs::remove_file(&key).unwrap();
                std::fs::copy(&other, &key).unwrap();
            }
            "dangling link" => {
                std::fs::remove_file(&key).unwrap();
                std::os::unix::fs::symlink(root.join("gone/privkey.pem"), &key).unwrap();
            }
            _ => {
                // `current` at a copy of the other cert's files: every name follows it.
                let elsewhere = root.join("elsewhere");
                std::fs::create_dir(&elsewhere).unwrap();
                for f in std::fs::read_dir(wild.join("current")).unwrap().flatten() {
                    std::fs::copy(f.path(), elsewhere.join(f.file_name())).unwrap();
                }
                std::fs::remove_file(dir.join("current")).unwrap();
                std::os::unix::fs::symlink(&elsewhere, dir.join("current")).unwrap();
            }
        }
        assert_ne!(served(root, "main"), Ok(good.clone()), "{plant}");
        // Check mode writes nothing.
        let check = run_module(
            "acme_request",
            &args(root, json!({"_ansible_check_mode": true})),
        );
        assert!(!check.failed(), "{plant}: {}", check.json);
        assert_ne!(
            served(root, "main"),
            Ok(good.clone()),
            "{plant}: check mode repaired"
        );

        let req = run_module("acme_request", &a);
        assert!(!req.failed(), "{plant}: {}", req.json);
        assert!(req.changed(), "{plant}: {}", req.json);
        assert_eq!(
            req.json["unacked"],
            json!(["main"]),
            "{plant}: {}",
            req.json
        );
        assert_eq!(req.json["pending"], json!([]), "{plant}: {}", req.json);
        assert_eq!(req.json["certs"]["main"]["action"], "ok", "{plant}");
        assert_eq!(served(root, "main"), Ok(good.clone()), "{plant}");
        assert_eq!(
            std::fs::read_link(&key).unwrap(),
            Path::new("current/privkey.pem"),
            "{plant}"
        );
        assert!(
            std::fs::read_link(dir.join("current"))
                .unwrap()
                .to_string_lossy()
                .starts_with("gen-"),
            "{plant}"
        );
        assert_eq!(std::fs::read(&other).unwrap(), other_before, "{plant}");
        let log = std::fs::read_to_string(root.join("certbridge.log")).unwrap();
        assert!(log.contains("layout_repaired"), "{plant}: {log}");
        let fin = run_module("acme_finalize", &a);
        assert_eq!(
            fin.json["updated"],
            json!(["main"]),
            "{plant}: {}",
            fin.json
        );
        let ack = run_module(
            "acme_finalize",
            &args(root, json!({"only": [], "ack": ["main"]})),
        );
        assert!(!ack.failed(), "{}", ack.json);
        let req = run_module("acme_request", &a);
        assert!(!req.changed(), "{plant}: repaired again: {}", req.json);
        assert_eq!(req.json["unacked"], json!([]), "{plant}: {}", req.json);
    }
}

#[test]
fn forced_reissues_replace_a_stable_name_planted_between_request_and_finalize() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = args(root, json!({}));
    assert!(!run_module("acme_request", &a).failed());
    assert!(!run_module("acme_finalize", &a).failed());
    let dir = root.join("certs").join(dir_of(CERTS[0].1));
    let wild = root.join("certs").join(dir_of(CERTS[1].1));
    let other = root.join("other.key");
    std::fs::copy(wild.join("privkey.pem"), &other).unwrap();
    let key = dir.join("privkey.pem");
    for round in 0..2 {
        let forced = args(root, json!({"force": ["main"]}));
        let req = run_module("acme_request", &forced);
        assert_eq!(req.json["pending"], json!(["main"]), "{}", req.json);
        // Planted after acme_request looked: the install itself must not keep it.
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&other, &key).unwrap();
        let fin = run_module("acme_finalize", &a);
        assert!(!fin.failed(), "round {round}: {}", fin.json);
        assert_eq!(
            fin.json["updated"],
            json!(["main", "wild"]),
            "round {round}"
        );
        assert_eq!(
            std::fs::read_link(&key).unwrap(),
            Path::new("current/privkey.pem"),
            "round {round}"
        );
        assert!(
            matches!(
                served(root, "main"),
                Ok(support::certset::Seen::Complete(_))
            ),
            "round {round}: {:?}",
            served(root, "main")
        );
        let req = run_module("acme_request", &a);
        assert_eq!(req.json["certs"]["main"]["reason"], "valid", "{}", req.json);
        assert!(!req.changed(), "{}", req.json);
    }
}

#[test]
fn a_stable_name_that_cannot_be_replaced_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = args(root, json!({}));
    assert!(!run_module("acme_request", &a).failed());
    assert!(!run_module("acme_finalize", &a).failed());
    let dir = root.join("certs").join(dir_of(CERTS[0].1));
    let key = dir.join("privkey.pem");
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    std::fs::write(key.join("keep"), "someone's").unwrap();
    let req = run_module("acme_request", &a);
    assert!(req.failed(), "{}", req.json);
    let msg = req.msg();
    assert!(
        msg.contains("cert main") && msg.contains(&key.display().to_string()),
        "{msg}"
    );
    // The other cert is still decided and reported.
    assert_eq!(req.json["certs"]["wild"]["action"], "ok", "{}", req.json);
    let fin = run_module("acme_finalize", &a);
    assert!(fin.failed(), "{}", fin.json);
    assert!(
        fin.msg().contains(&key.display().to_string()),
        "{}",
        fin.msg()
    );
    assert_eq!(
        std::fs::read_to_string(key.join("keep")).unwrap(),
        "someone's"
    );
    // Moved away: the next run puts the link back.
    std::fs::remove_dir_all(&key).unwrap();
    let req = run_module("acme_request", &a);
    assert!(!req.failed() && req.changed(), "{}", req.json);
    assert!(matches!(
        served(root, "main"),
        Ok(support::certset::Seen::Complete(_))
    ));
}
