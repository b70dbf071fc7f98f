//! acme_request without a CA: bad input is refused before any disk or network access, check
//! mode touches nothing, decisions and reasons, `self_sign` pending, and a no-op pulse with
//! nothing listening at the directory URL.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::{run_module, tree};

/// A directory URL nothing listens on: any network access would fail (or hang) visibly.
const DEAD_DIRECTORY: &str = "https://127.0.0.1:9/dir";

fn base(root: &Path) -> Value {
    json!({
        "cert_root": root.join("certs"),
        "log_file": root.join("log/certbridge.log"),
        "directory": DEAD_DIRECTORY,
        "jitter_seed": "test-host",
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    let (Value::Object(a), Value::Object(b)) = (&mut v, extra) else {
        panic!()
    };
    a.extend(b);
    v
}

#[test]
fn bad_input_fails_fast_naming_the_culprit_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("certs/keep")).unwrap();
    std::fs::write(root.join("certs/keep/file"), "x").unwrap();
    let before = tree::written(root);
    let many: Vec<String> = (0..101).map(|i| format!("n{i}.example.test")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing required option `certs`"),
        (json!({"certs": {}}), "`certs` is empty"),
        (
            json!({"certs": {"a": ["a.example.test"]}, "colour": "red"}),
            "unsupported option `colour`",
        ),
        (json!({"certs": {"a": "a.example.test"}}), "certs"),
        (
            json!({"certs": {"a": ["A.example.test", "a.example.test."]}}),
            "certs.a: `a.example.test.` appears more than once",
        ),
        (json!({"certs": {"big": many}}), "certs.big: 101 names"),
        (
            json!({"certs": {"a": ["*.*.example.test"]}}),
            "certs.a: `*.*.example.test`",
        ),
        (
            json!({"certs": {"a": ["a..example.test"]}}),
            "certs.a: `a..example.test`",
        ),
        (
            json!({"certs": {"a": [format!("{}.example.test", "x".repeat(64))]}}),
            "longer than 63",
        ),
        (
            json!({"certs": {"a": [format!("{}.test", "abcdefghi.".repeat(26))]}}),
            "longer than 253",
        ),
        (json!({"certs": {"a": ["localhost"]}}), "single label"),
        (json!({"certs": {"a": ["a_b.example.test"]}}), "`_`"),
        (json!({"certs": {"a": ["bücher.example.test"]}}), "punycode"),
        (
            json!({"certs": {"a": ["a b.example.test"]}}),
            "certs.a: `a b.example.test`",
        ),
        (json!({"certs": {"a": ["a;b.example.test"]}}), "certs.a"),
        (json!({"certs": {"../x": ["a.example.test"]}}), "`../x`"),
        (json!({"certs": {"/abs": ["a.example.test"]}}), "`/abs`"),
        (json!({"certs": {".": ["a.example.test"]}}), "`.`"),
        (
            json!({"certs": {".certbridge": ["a.example.test"]}}),
            "`.certbridge`",
        ),
        (
            json!({"certs": {"a": ["x.example.test"], "b": ["*.x.example.test", "y.example.test"]}}),
            "both map to the directory `x.example.test`",
        ),
        (
            json!({"certs": {"a": {"names": ["a.example.test"], "key_type": "ec-p521"}}}),
            "certs.a.key_type",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "key_type": "dsa"}),
            "key_type",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "timeout": "soon"}),
            "timeout",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "force": ["nope"]}),
            "force: `nope`",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k", "eab_hmac_key": "!!not-base64!!"}),
            "eab_hmac_key",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "pending_max_age": -1}),
            "pending_max_age",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "ack": ["a"]}),
            "unsupported option `ack`",
        ),
    ];
    for (extra, want) in &cases {
        let mut args = with(base(root), extra.clone());
        if extra.get("certs").is_none() {
            args.as_object_mut().unwrap().remove("certs");
        }
        let run = run_module("acme_request", &args);
        assert!(run.failed(), "{extra}: {}", run.json);
        assert!(
            run.msg().contains(want),
            "{extra}: wanted {want:?} in {:?}",
            run.msg()
        );
        assert!(
            run.elapsed < Duration::from_secs(1),
            "{extra}: took {:?}",
            run.elapsed
        );
        assert!(
            !run.stdout.contains("not-base64"),
            "secret echoed: {}",
            run.stdout
        );
    }
    assert_eq!(tree::written(root), before, "bad input changed files");
    println!("bad-input cases exercised: {}", cases.len());
}

#[test]
fn check_mode_and_self_sign_pending_and_noop_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let args = with(
        base(root),
        json!({"certs": {"main": ["WWW.Example.test.", "example.test:443"], "wild": ["*.s3.example.test", "s3.example.test"]},
               "self_sign": true}),
    );
    // Check mode: decisions only, nothing written (not even the cert root).
    let check = run_module(
        "acme_request",
        &with(args.clone(), json!({"_ansible_check_mode": true})),
    );
    assert!(!check.failed(), "{}", check.json);
    assert_eq!(check.json["certs"]["main"]["action"], "issue");
    assert_eq!(check.json["certs"]["main"]["reason"], "missing");
    assert!(
        !root.join("certs").exists(),
        "check mode created the cert root"
    );
    assert!(!root.join("log").exists(), "check mode wrote the log");
    assert!(
        check.json["warnings"]
            .to_string()
            .contains("www.example.test"),
        "{}",
        check.json
    );

    let run = run_module("acme_request", &args);
    assert!(!run.failed(), "{}", run.json);
    assert!(run.changed());
    assert_eq!(run.json["pending"], json!(["main", "wild"]));
    assert_eq!(run.json["acme_txt_required"], json!([]));
    assert!(run.json["certs"]["main"]["dir"]
        .as_str()
        .unwrap()
        .ends_with("/certs/www.example.test"));
    // Asking again keeps the same pending entries: no new "order".
    let again = run_module("acme_request", &args);
    assert!(!again.changed(), "{}", again.json);
    assert_eq!(again.json["pending"], json!(["main", "wild"]));

    // Finalize, then the next pulse is a no-op: nothing listens at the directory URL.
    let fin = run_module("acme_finalize", &args);
    assert!(!fin.failed(), "{}", fin.json);
    let before = tree::written(&root.join("certs"));
    let noop = run_module(
        "acme_request",
        &with(args.clone(), json!({"self_sign": false, "force": false})),
    );
    // Self-signed while self_sign is off: reissue is wanted, which needs the (dead) CA.
    assert_eq!(
        noop.json["certs"]["main"]["reason"], "self_signed",
        "{}",
        noop.json
    );
    let noop = run_module("acme_request", &args);
    assert!(!noop.failed() && !noop.changed(), "{}", noop.json);
    assert_eq!(noop.json["certs"]["main"]["action"], "ok");
    assert_eq!(noop.json["certs"]["main"]["reason"], "valid");
    assert_eq!(noop.json["pending"], json!([]));
    assert_eq!(noop.json["unacked"], json!(["main", "wild"]));
    let log = std::fs::read_to_string(root.join("log/certbridge.log")).unwrap();
    assert!(log
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(!log.contains("PRIVATE KEY"));
    let after = tree::written(&root.join("certs"));
    // Only bookkeeping may change on the failed attempt (backoff); cert files never.
    let files = |t: &BTreeMap<String, tree::Written>| -> BTreeMap<String, tree::Written> {
        t.iter()
            .filter(|(k, _)| !k.starts_with(".certbridge"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(files(&before), files(&after));
}

#[test]
fn metrics_file_is_written_and_only_rewritten_on_change() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let prom = root.join("certbridge.prom");
    let args = with(
        base(root),
        json!({"certs": {"main": ["m.example.test"]}, "self_sign": true, "metrics_file": prom}),
    );
    assert!(!run_module("acme_request", &args).failed());
    let mut fin_args = args.clone();
    fin_args.as_object_mut().unwrap().remove("metrics_file");
    assert!(!run_module("acme_finalize", &fin_args).failed());
    assert!(!run_module("acme_request", &args).failed());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(r#"certbridge_cert_not_after_seconds{cert="main",dir="m.example.test",issuer="certbridge self-sign test CA"}"#), "{text}");
    assert!(
        text.contains(r#"certbridge_cert_last_failure_timestamp_seconds{cert="main"} 0"#),
        "{text}"
    );
    let mtime = std::fs::metadata(&prom).unwrap().modified().unwrap();
    assert!(!run_module("acme_request", &args).failed());
    assert_eq!(std::fs::metadata(&prom).unwrap().modified().unwrap(), mtime);
}

#[test]
fn second_run_waits_for_the_lock_then_fails_naming_it_and_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let certs = root.join("certs");
    std::fs::create_dir_all(certs.join(".certbridge")).unwrap();
    let lock_path = certs.join(".certbridge/lock");
    let _held = certbridge_core::fsutil::Lock::acquire(&lock_path, Duration::from_secs(1)).unwrap();
    let args = with(
        base(root),
        json!({"certs": {"main": ["m.example.test"]}, "self_sign": true, "timeout": 1}),
    );
    let run = run_module("acme_request", &args);
    assert!(run.failed());
    assert!(
        run.msg().contains(&lock_path.display().to_string()),
        "{}",
        run.msg()
    );
    assert!(
        run.msg().contains(&std::process::id().to_string()),
        "{}",
        run.msg()
    );
    assert!(run.elapsed >= Duration::from_secs(1));
}

#[test]
fn an_acme_sh_directory_is_adopted_without_reissue_or_handler_then_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.join("certs/a.example.test");
    std::fs::create_dir_all(&dir).unwrap();
    // What OpenDev's acme.sh roles left behind: real files named after the first name.
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "90",
        ])
        .args([
            "-subj",
            "/CN=a.example.test",
            "-addext",
            "subjectAltName=DNS:a.example.test,DNS:b.example.test",
        ])
        .arg("-keyout")
        .arg(dir.join("a.example.test.key"))
        .arg("-out")
        .arg(dir.join("a.example.test.cer"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::copy(dir.join("a.example.test.cer"), dir.join("ca.cer")).unwrap();
    let old_cert = std::fs::read_to_string(dir.join("a.example.test.cer")).unwrap();
    let args = with(
        base(root),
        json!({"certs": {"web": ["a.example.test", "b.example.test"]}}),
    );
    let run = run_module("acme_request", &args);
    assert!(!run.failed() && !run.changed(), "{}", run.json);
    assert_eq!(run.json["certs"]["web"]["action"], "ok");
    assert_eq!(run.json["certs"]["web"]["reason"], "adopted");
    assert_eq!(run.json["unacked"], json!([]));
    assert_eq!(run.json["pending"], json!([]));
    let fin = run_module("acme_finalize", &args);
    assert_eq!(fin.json["updated"], json!([]), "{}", fin.json);
    assert!(!fin.changed());
    assert!(!std::fs::symlink_metadata(dir.join("a.example.test.cer"))
        .unwrap()
        .is_symlink());
    // The first later issuance moves it to the new layout; the acme.sh set stays as previous.
    let ss = with(args.clone(), json!({"self_sign": true, "force": true}));
    assert!(!run_module("acme_request", &ss).failed());
    let fin = run_module("acme_finalize", &ss);
    assert_eq!(fin.json["updated"], json!(["web"]), "{}", fin.json);
    assert!(std::fs::symlink_metadata(dir.join("a.example.test.cer"))
        .unwrap()
        .is_symlink());
    assert_ne!(
        std::fs::read_to_string(dir.join("a.example.test.cer")).unwrap(),
        old_cert
    );
    let rb = run_module("acme_finalize", &with(ss, json!({"rollback": ["web"]})));
    assert!(!rb.failed(), "{}", rb.json);
    assert_eq!(
        std::fs::read_to_string(dir.join("a.example.test.cer")).unwrap(),
        old_cert
    );
}
