//! Integration tests of the `zone_render` module binary, run the way Ansible runs it; BIND's
//! own `named-checkzone`/`named-compilezone` judge the files it writes.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::run_module;

const ORIGIN: &str = "acme.example.test";

/// Minimal valid arguments for a zone at `path` (in-zone NS with its address, so BIND's
/// checks need no network).
fn args(path: &Path, records: Value) -> Value {
    let mut all = vec![json!({"name": "ns1", "type": "A", "value": "127.0.0.1"})];
    all.extend(records.as_array().cloned().unwrap_or_default());
    json!({
        "path": path,
        "origin": ORIGIN,
        "ns": ["ns1.acme.example.test"],
        "records": all,
    })
}

fn zone_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("acme.example.test.zone")
}

/// BIND's canonical dump of the zone, each line's whitespace runs squeezed to one space
/// (fails the test if BIND refuses the zone).
fn compiled(path: &Path) -> String {
    let out = Command::new("named-compilezone")
        .args(["-q", "-o", "-", ORIGIN])
        .arg(path)
        .output()
        .expect("run named-compilezone");
    assert!(
        out.status.success(),
        "BIND refused the zone: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

/// The serial after `old`: +1 on the same UTC day, else the new day's `YYYYMMDD00`.
fn assert_next_serial(old: u64, new: u64) {
    assert!(
        new == old + 1 || (new > old && new.is_multiple_of(100)),
        "{old} -> {new}"
    );
}

fn mtime_ns(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec())
}

/// Exercises: a first run creates the file, returns changed/serial/path/records, and the
/// file passes `named-checkzone` given as a `validate` string.
#[test]
fn creates_a_zone_file_that_bind_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let mut a = args(
        &path,
        json!([{"name": "@", "type": "TXT", "value": "hello"}]),
    );
    a["validate"] = json!(format!("named-checkzone {ORIGIN} %s"));
    let run = run_module("zone_render", &a);
    assert!(!run.failed(), "{}", run.stdout);
    assert!(run.changed());
    assert_eq!(run.json["path"], json!(path));
    assert_eq!(run.json["records"], 2);
    let serial = run.json["serial"].as_u64().unwrap();
    assert_eq!(
        serial % 100,
        0,
        "a new zone gets a YYYYMMDD00 serial: {serial}"
    );
    assert!((2025010100..2100010100).contains(&serial), "{serial}");
    let dump = compiled(&path);
    assert!(
        dump.contains(&format!(
            "SOA ns1.acme.example.test. hostmaster.acme.example.test. {serial} 3600 600 1209600 60"
        )),
        "{dump}"
    );
    assert!(
        dump.contains("acme.example.test. 60 IN TXT \"hello\""),
        "{dump}"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o644
    );
}

/// Exercises: a second identical run reports changed=false, the same serial, and leaves the
/// file untouched (same mtime and inode).
#[test]
fn second_run_is_idempotent_and_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let a = args(
        &path,
        json!([{"name": "www", "type": "A", "value": "192.0.2.1"}]),
    );
    let first = run_module("zone_render", &a);
    assert!(first.changed() && !first.failed(), "{}", first.stdout);
    let (before_mtime, before_ino) = (mtime_ns(&path), fs::metadata(&path).unwrap().ino());
    let second = run_module("zone_render", &a);
    assert!(!second.failed(), "{}", second.stdout);
    assert!(!second.changed());
    assert_eq!(second.json["serial"], first.json["serial"]);
    assert_eq!(mtime_ns(&path), before_mtime);
    assert_eq!(fs::metadata(&path).unwrap().ino(), before_ino);
}

/// Exercises: changed content gets a strictly greater serial (same day: +1), and records
/// listed in another order or twice render the same file (no change, duplicates warned).
#[test]
fn changed_content_bumps_the_serial_and_order_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let r1 = json!({"name": "a", "type": "TXT", "value": "1"});
    let r2 = json!({"name": "b", "type": "TXT", "value": "2"});
    let first = run_module("zone_render", &args(&path, json!([r1, r2])));
    let s1 = first.json["serial"].as_u64().unwrap();
    let reordered = run_module("zone_render", &args(&path, json!([r2, r1, r2])));
    assert!(!reordered.changed(), "{}", reordered.stdout);
    assert!(reordered.json["warnings"][0]
        .as_str()
        .unwrap()
        .contains("1 duplicate"));
    let r3 = json!({"name": "b", "type": "TXT", "value": "3"});
    let bumped = run_module("zone_render", &args(&path, json!([r1, r3])));
    assert!(bumped.changed());
    let s2 = bumped.json["serial"].as_u64().unwrap();
    assert_next_serial(s1, s2);
    assert!(compiled(&path).contains(&format!(" {s2} 3600 ")));
}

/// Exercises: a serial already ahead of today's date (a foreign file) is never reduced.
#[test]
fn serial_never_goes_backwards_from_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    fs::write(
        &path,
        "$TTL 60\n@ IN SOA ns1 h ( 4000000000 ; serial\n 1 2 3 4 )\n",
    )
    .unwrap();
    let run = run_module("zone_render", &args(&path, json!([])));
    assert!(run.changed(), "{}", run.stdout);
    assert_eq!(run.json["serial"], 4000000001u64);
}

/// Exercises: `validate` as an argv list; a refusal (named-checkzone with the wrong origin)
/// fails, keeps the old file byte for byte, and reports the validator's output, rc and argv.
#[test]
fn failed_validation_keeps_the_old_file_and_reports_the_validator() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let mut good = args(&path, json!([{"name": "a", "type": "TXT", "value": "old"}]));
    good["validate"] = json!(["named-checkzone", ORIGIN, "%s"]);
    assert!(run_module("zone_render", &good).changed());
    let old = fs::read(&path).unwrap();

    let mut bad = args(&path, json!([{"name": "a", "type": "TXT", "value": "new"}]));
    bad["validate"] = json!(["named-checkzone", "wrong.test", "%s"]);
    let run = run_module("zone_render", &bad);
    assert!(run.failed(), "{}", run.stdout);
    assert!(!run.exit_ok);
    let msg = run.msg();
    assert!(
        msg.contains("out-of-zone data") && msg.contains("not loaded due to errors"),
        "{msg}"
    );
    assert!(msg.contains("old zone file was left in place"), "{msg}");
    assert_eq!(run.json["validate_rc"], 1);
    assert_eq!(run.json["validate_argv"][1], "wrong.test");
    assert!(run.json["validate_output"]
        .as_str()
        .unwrap()
        .contains("has 0 SOA records"));
    assert_eq!(fs::read(&path).unwrap(), old);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Exercises: a validator that cannot be started is a clear failure, nothing written.
#[test]
fn missing_validator_program_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let mut a = args(&path, json!([]));
    a["validate"] = json!("no-such-checker-certbridge %s");
    let run = run_module("zone_render", &a);
    assert!(run.failed());
    assert!(
        run.msg()
            .contains("cannot run `no-such-checker-certbridge`"),
        "{}",
        run.msg()
    );
    assert!(!path.exists());
}

/// Exercises: check mode writes nothing (new and existing file), reports changed and the
/// serial that would be written.
#[test]
fn check_mode_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let mut a = args(&path, json!([{"name": "a", "type": "TXT", "value": "1"}]));
    a["_ansible_check_mode"] = json!(true);
    let run = run_module("zone_render", &a);
    assert!(run.changed() && !run.failed(), "{}", run.stdout);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing may be created"
    );

    let real = run_module(
        "zone_render",
        &args(&path, json!([{"name": "a", "type": "TXT", "value": "1"}])),
    );
    let content = fs::read(&path).unwrap();
    let mut change = args(&path, json!([{"name": "a", "type": "TXT", "value": "2"}]));
    change["_ansible_check_mode"] = json!(true);
    let run = run_module("zone_render", &change);
    assert!(run.changed());
    assert_next_serial(
        real.json["serial"].as_u64().unwrap(),
        run.json["serial"].as_u64().unwrap(),
    );
    assert_eq!(fs::read(&path).unwrap(), content);
}

/// Exercises: diff mode returns before/after (with check mode too); without diff mode there
/// is no diff key; diffs are capped at 1,000 lines.
#[test]
fn diff_mode_returns_a_capped_diff() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let plain = run_module(
        "zone_render",
        &args(&path, json!([{"name": "a", "type": "TXT", "value": "1"}])),
    );
    assert!(plain.json.get("diff").is_none());

    let mut a = args(&path, json!([{"name": "a", "type": "TXT", "value": "2"}]));
    a["_ansible_diff"] = json!(true);
    a["_ansible_check_mode"] = json!(true);
    let run = run_module("zone_render", &a);
    let before = run.json["diff"]["before"].as_str().unwrap();
    let after = run.json["diff"]["after"].as_str().unwrap();
    assert!(before.contains("a\t60\tIN\tTXT\t\"1\""), "{before}");
    assert!(after.contains("a\t60\tIN\tTXT\t\"2\""), "{after}");

    let many: Vec<Value> = (0..1500)
        .map(|i| json!({"name": format!("h{i}"), "type": "TXT", "value": "v"}))
        .collect();
    let mut big = args(&path, json!(many));
    big["_ansible_diff"] = json!(true);
    let run = run_module("zone_render", &big);
    assert_eq!(run.json["records"], 1501);
    let after = run.json["diff"]["after"].as_str().unwrap();
    assert_eq!(after.lines().count(), 1001);
    assert!(
        after.ends_with("more lines not shown]\n"),
        "{}",
        &after[after.len() - 80..]
    );
}

/// Exercises: unknown and missing options fail naming them, before any file is written.
#[test]
fn unknown_and_missing_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let mut a = args(&path, json!([]));
    a["colour"] = json!("blue");
    let run = run_module("zone_render", &a);
    assert!(run.failed());
    assert!(
        run.msg().contains("unsupported option `colour`") && run.msg().contains("validate"),
        "{}",
        run.msg()
    );
    let run = run_module("zone_render", &json!({"path": path, "origin": ORIGIN}));
    assert_eq!(run.msg(), "missing required option `ns`");
    let mut a = args(
        &path,
        json!([{"name": "a", "type": "TXT", "value": "1", "weight": 3}]),
    );
    a["records"][1]["weight"] = json!(3);
    let run = run_module("zone_render", &a);
    assert!(
        run.msg()
            .contains("unsupported option `weight` in `records[1]`"),
        "{}",
        run.msg()
    );
    assert!(!path.exists());
}

/// Exercises: bad names (record owner, origin, ns, absolute owner outside the zone) are
/// refused naming the culprit, before any file is written.
#[test]
fn bad_names_are_refused_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let cases = [
        (
            json!({"name": "a..b", "type": "TXT", "value": "v"}),
            "records[1]: record `a..b`",
        ),
        (
            json!({"name": "x.*", "type": "TXT", "value": "v"}),
            "`*` is allowed only",
        ),
        (
            json!({"name": "www.other.test.", "type": "TXT", "value": "v"}),
            "record `www.other.test.` is outside the zone",
        ),
        (
            json!({"name": "a", "type": "SRV", "value": "v"}),
            "unsupported type `SRV`",
        ),
        (
            json!({"name": "a", "type": "CNAME", "value": "bad..target"}),
            "records[1]: record `a` CNAME",
        ),
    ];
    for (record, expected) in cases {
        let run = run_module("zone_render", &args(&path, json!([record])));
        assert!(run.failed(), "{record}");
        assert!(run.msg().contains(expected), "{record}: {}", run.msg());
    }
    let mut a = args(&path, json!([]));
    a["origin"] = json!("bad_origin!.test");
    assert!(run_module("zone_render", &a)
        .msg()
        .starts_with("option `origin`:"));
    let mut a = args(&path, json!([]));
    a["ns"] = json!(["ns1.acme.example.test", "ns 2"]);
    assert!(run_module("zone_render", &a)
        .msg()
        .starts_with("option `ns[1]`:"));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Exercises: values that would inject zone syntax (`"`, `\`, newline, control characters,
/// text after an address or target, malformed CAA) are refused naming the record, before
/// any file (or lock file) is written, and an existing file is left alone.
#[test]
fn injection_attempts_are_refused_before_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let cases = [
        ("TXT", "v\" ; $INCLUDE /etc/passwd ; \""),
        ("TXT", "v\\"),
        ("TXT", "v\n$INCLUDE /etc/passwd"),
        ("TXT", "bell\u{7}"),
        ("A", "192.0.2.1 ; $INCLUDE /etc/passwd"),
        ("A", "192.0.2.1\n$INCLUDE /etc/passwd"),
        ("AAAA", "::1 ( 1"),
        ("CNAME", "t.example.test.\n$INCLUDE /etc/passwd"),
        ("NS", "$INCLUDE"),
        ("CAA", "0 issue \"x\" ; y"),
        ("CAA", "0 issue \"x\"\n$INCLUDE /etc/passwd"),
    ];
    for (rtype, value) in cases {
        let run = run_module(
            "zone_render",
            &args(
                &path,
                json!([{"name": "evil", "type": rtype, "value": value}]),
            ),
        );
        assert!(run.failed(), "{rtype} {value:?}: {}", run.stdout);
        assert!(
            run.msg()
                .contains(&format!("records[1]: record `evil` {rtype}")),
            "{}",
            run.msg()
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{rtype} {value:?} touched the disk"
        );
    }
    let ok = run_module("zone_render", &args(&path, json!([])));
    assert!(ok.changed());
    let content = fs::read(&path).unwrap();
    let run = run_module(
        "zone_render",
        &args(
            &path,
            json!([{"name": "evil", "type": "TXT", "value": "a\"b"}]),
        ),
    );
    assert!(run.msg().contains("contains `\"`"), "{}", run.msg());
    assert_eq!(fs::read(&path).unwrap(), content);
}

/// Exercises: what is harmless inside quotes (`;`, `$INCLUDE`, parentheses) reaches BIND
/// verbatim; values over 255 bytes are split into several strings that BIND joins back.
#[test]
fn tricky_and_long_txt_values_reach_bind_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let tricky = "v=x ; $INCLUDE /etc/passwd ( ) @";
    let long = "k".repeat(600);
    let mut a = args(
        &path,
        json!([
            {"name": "tricky", "type": "TXT", "value": tricky},
            {"name": "long", "type": "TXT", "value": long},
            {"name": "@", "type": "CAA", "value": "0 issue \"letsencrypt.org; validationmethods=dns-01\""},
            {"name": "v6", "type": "AAAA", "value": "2001:db8::7", "ttl": "300"},
            {"name": "alias", "type": "CNAME", "value": "tricky"},
            {"name": "sub", "type": "NS", "value": "ns.elsewhere.test."},
        ]),
    );
    a["validate"] = json!(format!("named-checkzone -q {ORIGIN} %s"));
    let run = run_module("zone_render", &a);
    assert!(!run.failed(), "{}", run.stdout);
    let dump = compiled(&path);
    assert!(
        dump.contains(&format!("tricky.acme.example.test. 60 IN TXT \"{tricky}\"")),
        "{dump}"
    );
    let k255 = "k".repeat(255);
    assert!(
        dump.contains(&format!(
            "long.acme.example.test. 60 IN TXT \"{k255}\" \"{k255}\" \"{}\"",
            "k".repeat(90)
        )),
        "{dump}"
    );
    assert!(
        dump.contains("CAA 0 issue \"letsencrypt.org; validationmethods=dns-01\""),
        "{dump}"
    );
    assert!(
        dump.contains("v6.acme.example.test. 300 IN AAAA 2001:db8::7"),
        "{dump}"
    );
    assert!(
        dump.contains("alias.acme.example.test. 60 IN CNAME tricky.\n"),
        "CNAME targets are absolute names: {dump}"
    );
    assert!(!dump.contains("root:"), "nothing was included");
}

/// Group of the freshly created file `probe` as a name, and an owner to set: as root, the
/// `daemon` account (so a real change is observed); otherwise our own group and no owner.
fn accounts_for_test(probe: &Path) -> (Option<&'static str>, String, u32) {
    fs::write(probe, "").unwrap();
    let meta = fs::metadata(probe).unwrap();
    if meta.uid() == 0 {
        return (Some("daemon"), "daemon".into(), 1);
    }
    let groups = fs::read_to_string("/etc/group").unwrap();
    let name = groups
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == meta.gid().to_string()).then(|| f[0].to_owned())
        })
        .expect("our primary group is in /etc/group");
    (None, name, meta.gid())
}

/// Exercises: `mode`, `owner` and `group` are applied to a new file; a later run with the same
/// content but another mode fixes the mode without rewriting (changed, same mtime, same
/// serial); a run without mode/owner/group keeps them.
#[test]
fn mode_owner_and_group_are_applied_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = zone_path(&dir);
    let (owner, group, gid) = accounts_for_test(&dir.path().join("probe"));
    let mut a = args(&path, json!([{"name": "a", "type": "TXT", "value": "1"}]));
    a["mode"] = json!("0640");
    a["group"] = json!(group);
    if let Some(o) = owner {
        a["owner"] = json!(o);
    }
    let first = run_module("zone_render", &a);
    assert!(first.changed() && !first.failed(), "{}", first.stdout);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), gid);
    if owner.is_some() {
        assert_eq!(meta.uid(), 1);
    }
    let mtime = mtime_ns(&path);
    a["mode"] = json!(384); // 0600 as YAML's 0600 arrives
    let second = run_module("zone_render", &a);
    assert!(second.changed(), "{}", second.stdout);
    assert_eq!(second.json["serial"], first.json["serial"]);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(mtime_ns(&path), mtime);
    // A content change without mode/owner/group keeps what the file has.
    let third = run_module(
        "zone_render",
        &args(&path, json!([{"name": "a", "type": "TXT", "value": "2"}])),
    );
    assert!(third.changed());
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.gid(), gid);

    let mut bad = args(&path, json!([]));
    bad["group"] = json!("no-such-group-certbridge");
    assert!(run_module("zone_render", &bad)
        .msg()
        .starts_with("group `no-such-group-certbridge`"));
    let mut bad = args(&path, json!([]));
    bad["mode"] = json!("u=rw");
    assert!(run_module("zone_render", &bad)
        .msg()
        .contains("symbolic modes are not supported"));
}
