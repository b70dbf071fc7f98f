//! Links planted by a less privileged user are never followed by root. Zone directories are
//! commonly writable by the DNS server's user (Debian's `/var/lib/bind` is `root:bind 0775`):
//! here a system user `certbridge-evil` (created when missing; the tests run as root) owns
//! such a directory and plants symbolic links in it, aimed at a root-only file. Lock files,
//! the zone file, the cert store's lock, the decision log and the metrics file: the target is
//! never written, truncated, chowned or shown; the run says which path is a link and what to
//! do. With `follow_symlink: true` the zone link's target is written, but a diff does not show
//! its old content. Also: a zone `path` that is a directory is refused before any lock file is
//! made beside it, and a lock held by another program is described as far as it is known.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{run_module, ModuleRun};

const ORIGIN: &str = "acme.example.test";
const EVIL: &str = "certbridge-evil";
/// The root-only file's content: no reply may ever contain it.
const SECRET: &str = "root-only secret 7c1e9b0d";

/// The unprivileged user's uid and gid, creating the user once when missing (as root); `None`
/// when the tests do not run as root (the links are then planted by the test's own user).
fn evil() -> Option<(u32, u32)> {
    static USER: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    *USER.get_or_init(|| {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, EVIL]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let me = Command::new("id").arg("-u").output().expect("run id");
        if String::from_utf8_lossy(&me.stdout).trim() != "0" {
            return None;
        }
        if id("-u").is_none() {
            let status = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(EVIL)
                .status()
                .expect("run useradd");
            assert!(
                status.success() || id("-u").is_some(),
                "useradd {EVIL} failed"
            );
        }
        Some((id("-u").expect("uid"), id("-g").expect("gid")))
    })
}

/// A scratch tree: `zones/` is `root:certbridge-evil 0775` like `/var/lib/bind`, `vault/`
/// is root's own (0700) and holds `precious`, a root-only file with [`SECRET`] in it.
struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    zones: PathBuf,
    precious: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        // The unprivileged user must be able to reach zones/.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let zones = root.join("zones");
        fs::create_dir(&zones).unwrap();
        Self::hand_over(&zones);
        let vault = root.join("vault");
        fs::create_dir(&vault).unwrap();
        fs::set_permissions(&vault, fs::Permissions::from_mode(0o700)).unwrap();
        let precious = vault.join("precious");
        fs::write(&precious, format!("{SECRET}\n")).unwrap();
        fs::set_permissions(&precious, fs::Permissions::from_mode(0o600)).unwrap();
        Tree {
            _tmp: tmp,
            root,
            zones,
            precious,
        }
    }

    /// Makes `dir` writable by the unprivileged user (`root:<evil> 0775`).
    fn hand_over(dir: &Path) {
        if let Some((_, gid)) = evil() {
            std::os::unix::fs::chown(dir, Some(0), Some(gid)).unwrap();
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o775)).unwrap();
    }

    /// The unprivileged user plants `link` -> `target`.
    fn plant(&self, target: &Path, link: &Path) {
        match evil() {
            Some((uid, _)) => {
                let out = Command::new("runuser")
                    .args(["-u", EVIL, "--", "ln", "-s"])
                    .arg(target)
                    .arg(link)
                    .output()
                    .expect("run runuser");
                assert!(
                    out.status.success(),
                    "planting {} as {EVIL}: {}",
                    link.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(fs::symlink_metadata(link).unwrap().uid(), uid);
            }
            None => std::os::unix::fs::symlink(target, link).unwrap(),
        }
    }

    /// What must not change about the precious file (content, inode change time, owner,
    /// mode) and about a planted link (still a link, to the same target).
    fn snapshot(&self, link: &Path) -> (Vec<u8>, (i64, i64), u32, u32, PathBuf) {
        let m = fs::metadata(&self.precious).unwrap();
        (
            fs::read(&self.precious).unwrap(),
            (m.ctime(), m.ctime_nsec()),
            m.uid(),
            m.mode(),
            fs::read_link(link).expect("the planted link is still a link"),
        )
    }
}

/// Nothing the module printed carries the secret.
fn discloses_nothing(run: &ModuleRun) {
    assert!(
        !run.stdout.contains(SECRET) && !run.stderr.contains(SECRET),
        "the target's content was disclosed: {}",
        run.stdout
    );
}

fn zone_args(path: &Path) -> Value {
    json!({
        "path": path,
        "origin": ORIGIN,
        "ns": ["ns1.acme.example.test"],
        "records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"},
                    {"name": "www", "type": "TXT", "value": "hello"}],
    })
}

/// acme_txt_publish on one zonefile zone at `path`, nothing listening for the checks (the
/// runs here fail or are refused before they get that far, or run in check mode).
fn publish_args(tree: &Tree, path: &Path, zone_extra: Value) -> Value {
    let mut zone = json!({"origin": ORIGIN, "method": "zonefile", "path": path,
                          "ns": ["ns1.acme.example.test"], "validate": ["true", "%s"], "reload": ["true"]});
    zone.as_object_mut()
        .unwrap()
        .extend(zone_extra.as_object().cloned().unwrap_or_default());
    json!({
        "records": [{"host": "h1", "cert": "main", "name": "web.example.test",
                     "record": "_acme-challenge.web.example.test",
                     "value": "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-"}],
        "zones": [zone],
        "check_cname": false, "alias": format!("acme.{ORIGIN}"),
        "nameservers": ["127.0.0.1:9"], "state_dir": tree.root.join("state"), "timeout": 2,
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    v
}

/// Exercises: `.<zone>.lock` planted as a link to a root-only file: zone_render and
/// acme_txt_publish fail naming the lock file and saying it is a link; the target is not
/// truncated, written or chmoded, and the zone is not written.
#[test]
fn a_planted_lock_link_is_refused_and_its_target_untouched() {
    let tree = Tree::new();
    let zone = tree.zones.join("z.zone");
    let lock = tree.zones.join(".z.zone.lock");
    tree.plant(&tree.precious, &lock);
    let before = tree.snapshot(&lock);

    let run = run_module("zone_render", &zone_args(&zone));
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.msg()
            .contains(&format!("cannot open the lock file {}", lock.display()))
            && run.msg().contains("symbolic link")
            && run.msg().contains("remove it"),
        "{}",
        run.msg()
    );
    assert_eq!(tree.snapshot(&lock), before);
    assert!(!zone.exists());

    let run = run_module("acme_txt_publish", &publish_args(&tree, &zone, json!({})));
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.msg().contains(&lock.display().to_string()) && run.msg().contains("symbolic link"),
        "{}",
        run.msg()
    );
    assert_eq!(tree.snapshot(&lock), before);
    assert!(!zone.exists());

    // Removing the link is the fix: the next run creates a plain lock file and writes.
    fs::remove_file(&lock).unwrap();
    let run = run_module("zone_render", &zone_args(&zone));
    assert!(!run.failed(), "{}", run.json);
    assert!(fs::symlink_metadata(&lock).unwrap().is_file());
}

/// Exercises: the zone file planted as a link to a root-only file: refused, naming the path
/// and `follow_symlink`, in every mode (also check + diff mode, which would have printed the
/// target); the target is untouched and no reply carries its content; the link stays.
#[test]
fn a_planted_zone_link_is_refused_naming_the_path_and_the_option() {
    let tree = Tree::new();
    let zone = tree.zones.join("z.zone");
    tree.plant(&tree.precious, &zone);
    let before = tree.snapshot(&zone);
    let refused = |run: &ModuleRun| {
        assert!(run.failed(), "{}", run.json);
        assert!(
            run.msg().contains(&format!(
                "path `{}` is a symbolic link, which is not followed",
                zone.display()
            )) && run.msg().contains("follow_symlink: true"),
            "{}",
            run.msg()
        );
        assert!(run.json.get("diff").is_none(), "{}", run.json);
        discloses_nothing(run);
        assert_eq!(tree.snapshot(&zone), before);
    };
    let diff = json!({"_ansible_diff": true});
    let check_diff = json!({"_ansible_diff": true, "_ansible_check_mode": true});
    for extra in [json!({}), diff.clone(), check_diff.clone()] {
        refused(&run_module(
            "zone_render",
            &with(zone_args(&zone), extra.clone()),
        ));
        refused(&run_module(
            "acme_txt_publish",
            &with(publish_args(&tree, &zone, json!({})), extra),
        ));
    }
    // `follow_symlink: false` says the same as leaving it out.
    refused(&run_module(
        "zone_render",
        &with(zone_args(&zone), json!({"follow_symlink": false})),
    ));
    // No lock or temp file was left beside the link either.
    let left: Vec<_> = fs::read_dir(&tree.zones)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Exercises: with `follow_symlink: true` the link's target is written (keeping its owner and
/// mode; the link stays a link), and the diff shows the new zone but not the target's old
/// content; the next run is idempotent. acme_txt_publish's zones take the option too.
#[test]
fn with_follow_symlink_the_target_is_written_but_not_disclosed() {
    let tree = Tree::new();
    let zone = tree.zones.join("z.zone");
    tree.plant(&tree.precious, &zone);
    let link_before = fs::read_link(&zone).unwrap();

    // Check mode first: nothing written, nothing shown.
    let args = with(
        zone_args(&zone),
        json!({"follow_symlink": true, "_ansible_diff": true}),
    );
    let run = run_module(
        "zone_render",
        &with(args.clone(), json!({"_ansible_check_mode": true})),
    );
    assert!(!run.failed() && run.changed(), "{}", run.json);
    discloses_nothing(&run);
    assert_eq!(
        fs::read_to_string(&tree.precious).unwrap(),
        format!("{SECRET}\n")
    );

    let run = run_module("zone_render", &args);
    assert!(!run.failed() && run.changed(), "{}", run.json);
    discloses_nothing(&run);
    let diff = &run.json["diff"];
    let before = diff["before"].as_str().unwrap();
    assert!(
        before.contains("not shown") && before.contains("follow_symlink"),
        "{before}"
    );
    assert!(
        diff["after"]
            .as_str()
            .unwrap()
            .contains("www\t60\tIN\tTXT\t\"hello\""),
        "{diff}"
    );
    assert_eq!(diff["before_header"], zone.display().to_string());
    // The target now holds the zone, with its owner and mode; the link is still the link.
    let written = fs::read_to_string(&tree.precious).unwrap();
    assert!(written.starts_with("; certbridge zone file for acme.example.test."));
    let m = fs::metadata(&tree.precious).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    assert_eq!(fs::read_link(&zone).unwrap(), link_before);
    assert!(!tree.zones.join(".z.zone.tmp").exists());

    let again = run_module("zone_render", &args);
    assert!(!again.failed() && !again.changed(), "{}", again.json);

    // acme_txt_publish (check mode, so no name server is asked): the same.
    fs::write(&tree.precious, format!("{SECRET}\n")).unwrap();
    let run = run_module(
        "acme_txt_publish",
        &with(
            publish_args(&tree, &zone, json!({"follow_symlink": true})),
            json!({"_ansible_diff": true, "_ansible_check_mode": true}),
        ),
    );
    assert!(!run.failed(), "{}", run.json);
    discloses_nothing(&run);
    let before = run.json["diff"][0]["before"].as_str().unwrap_or_default();
    assert!(before.contains("not shown"), "{}", run.json);
    assert_eq!(
        fs::read_to_string(&tree.precious).unwrap(),
        format!("{SECRET}\n")
    );
}

/// Exercises: a zone `path` that is a directory is refused with a clear message, and no lock
/// file (`.zones.lock`) is made in its parent.
#[test]
fn a_zone_path_that_is_a_directory_is_refused_before_any_lock() {
    let tree = Tree::new();
    let listing = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let parent_before = listing(&tree.root);
    for path in [
        tree.zones.clone(),
        PathBuf::from(format!("{}/", tree.zones.display())),
    ] {
        let run = run_module("zone_render", &zone_args(&path));
        assert!(run.failed(), "{}", run.json);
        assert!(
            run.msg().contains("is a directory") && run.msg().contains("zone file"),
            "{}",
            run.msg()
        );
        let run = run_module("acme_txt_publish", &publish_args(&tree, &path, json!({})));
        assert!(run.failed(), "{}", run.json);
        assert!(run.msg().contains("is a directory"), "{}", run.msg());
    }
    assert_eq!(listing(&tree.root), parent_before);
    assert!(listing(&tree.zones).is_empty());
}

/// Exercises: the cert store's lock (`<root>/.certbridge/lock`), the decision log and the
/// metrics file, each planted as a link to a root-only file: the store lock fails the run
/// naming it; the log and metrics files become warnings naming them; no target is touched.
#[test]
fn store_lock_decision_log_and_metrics_links_are_refused() {
    let tree = Tree::new();
    let certs = tree.root.join("certs");
    let reserved = certs.join(".certbridge");
    fs::create_dir_all(&reserved).unwrap();
    Tree::hand_over(&reserved);
    let lock = reserved.join("lock");
    tree.plant(&tree.precious, &lock);
    let before = tree.snapshot(&lock);
    let logs = tree.root.join("log");
    fs::create_dir(&logs).unwrap();
    Tree::hand_over(&logs);
    let log = logs.join("certbridge.log");
    let prom = logs.join("certbridge.prom");
    let args = json!({
        "cert_root": certs,
        "log_file": log,
        "metrics_file": prom,
        "directory": "https://127.0.0.1:9/dir",
        "jitter_seed": "test-host",
        "certs": {"main": ["m.example.test"]},
        "self_sign": true,
        "timeout": 5,
    });
    let run = run_module("acme_request", &args);
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.msg()
            .contains(&format!("cannot open the lock file {}", lock.display()))
            && run.msg().contains("symbolic link"),
        "{}",
        run.msg()
    );
    assert_eq!(tree.snapshot(&lock), before);
    fs::remove_file(&lock).unwrap();

    tree.plant(&tree.precious, &log);
    tree.plant(&tree.precious, &prom);
    let before = (tree.snapshot(&log), tree.snapshot(&prom));
    let run = run_module("acme_request", &args);
    assert!(!run.failed(), "{}", run.json);
    let warnings = run.json["warnings"].to_string();
    for (what, path) in [("log", &log), ("metrics", &prom)] {
        assert!(
            warnings.contains(&format!(
                "cannot write the {what} file {}: it is a symbolic link",
                path.display()
            )),
            "{warnings}"
        );
    }
    discloses_nothing(&run);
    assert_eq!((tree.snapshot(&log), tree.snapshot(&prom)), before);
    assert!(fs::symlink_metadata(&lock).unwrap().is_file());
}

/// Exercises: a lock held by another program (util-linux `flock`), with a stale pid left in
/// the file by a certbridge run long gone: the message names the lock, does not call the
/// stale pid the holder but says it is no longer running, and names the real holder when
/// /proc/locks can tell.
#[test]
fn a_lock_held_by_another_program_is_described_as_far_as_known() {
    let tree = Tree::new();
    let zone = tree.zones.join("z.zone");
    let lock = tree.zones.join(".z.zone.lock");
    fs::write(&lock, "999999999").unwrap();
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o600)).unwrap();
    let ready = tree.root.join("held");
    // flock takes the lock and runs the shell, which holds it until told to let go.
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args([
            "sh",
            "-c",
            "touch \"$0\"; while [ ! -e \"$0.release\" ]; do sleep 0.02; done",
        ])
        .arg(&ready)
        .spawn()
        .expect("run flock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = run_module(
        "zone_render",
        &with(zone_args(&zone), json!({"lock_timeout": 1})),
    );
    fs::write(tree.root.join("held.release"), "").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(run.failed(), "{}", run.json);
    let msg = run.msg();
    assert!(
        msg.contains(&format!(
            "the lock {} is held by another process",
            lock.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Pid 999999999 (as recorded in {}", lock.display()))
            && msg.contains("is no longer running"),
        "{msg}"
    );
    if msg.contains("/proc/locks") {
        assert!(
            msg.contains(&format!("/proc/locks names pid {} (`flock`)", holder.id())),
            "{msg}"
        );
    }
    println!("{msg}");
    assert!(!zone.exists());
}
