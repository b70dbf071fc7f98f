//! acme_finalize without a CA (`self_sign`): the layout services read, modes, `updated` until
//! `ack`, `force`, `only`, `rollback`, per-cert key types, and bad input.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use support::run_module;

fn args(root: &Path, extra: Value) -> Value {
    let mut v = json!({
        "cert_root": root.join("certs"),
        "log_file": root.join("certbridge.log"),
        "directory": "https://127.0.0.1:9/dir",
        "self_sign": true,
        "jitter_seed": "test-host",
        "certs": {
            "main": ["web.example.test", "www.example.test"],
            "wild": {"names": ["*.s3.example.test", "s3.example.test"], "key_type": "ec-p384"},
        },
    });
    let (Value::Object(a), Value::Object(b)) = (&mut v, extra) else {
        panic!()
    };
    a.extend(b);
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn leaf_names(pem: &str) -> Vec<String> {
    let info = certbridge_acme::certinfo::leaf_info_pem(pem, "test").unwrap();
    info.names.into_iter().collect()
}

fn pulse(root: &Path, extra: Value) -> (Value, Value) {
    let a = args(root, extra);
    let req = run_module("acme_request", &a);
    assert!(!req.failed(), "{}", req.json);
    let fin = run_module("acme_finalize", &a);
    assert!(!fin.failed(), "{}", fin.json);
    (req.json, fin.json)
}

#[test]
fn self_sign_installs_the_full_layout_and_reports_updated_until_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_, fin) = pulse(root, json!({}));
    assert_eq!(fin["changed"], true);
    assert_eq!(fin["updated"], json!(["main", "wild"]));
    let dir = root.join("certs/web.example.test");
    assert_eq!(fin["certs"]["main"]["dir"], dir.display().to_string());
    assert_eq!(
        fin["certs"]["main"]["issuer"],
        "certbridge self-sign test CA"
    );
    assert!(fin["certs"]["main"]["not_after"].as_i64().unwrap() > certbridge_acme::now());
    for f in [
        "privkey.pem",
        "cert.pem",
        "chain.pem",
        "fullchain.pem",
        "combined.pem",
        "web.example.test.key",
        "web.example.test.cer",
        "ca.cer",
        "fullchain.cer",
    ] {
        let p = dir.join(f);
        assert!(
            std::fs::symlink_metadata(&p).unwrap().is_symlink(),
            "{f} is not a stable link"
        );
        assert!(!read(&p).is_empty(), "{f} is empty");
    }
    let key = read(&dir.join("privkey.pem"));
    let cert = read(&dir.join("cert.pem"));
    let chain = read(&dir.join("chain.pem"));
    let leaf = certbridge_acme::certinfo::leaf_info_pem(&cert, "cert").unwrap();
    assert!(certbridge_acme::certinfo::key_matches(&key, &leaf));
    assert_eq!(
        leaf_names(&cert),
        vec!["web.example.test", "www.example.test"]
    );
    assert_eq!(read(&dir.join("fullchain.pem")), format!("{cert}{chain}"));
    assert!(read(&dir.join("combined.pem")).starts_with(key.trim_end()));
    assert_eq!(read(&dir.join("web.example.test.key")), key);
    assert_eq!(read(&dir.join("ca.cer")), chain);
    assert_eq!(
        read(&root.join("certs/.certbridge/selfsign/ca.pem")).trim(),
        chain.trim()
    );
    assert_eq!(mode(&dir.join("privkey.pem")), 0o600);
    assert_eq!(mode(&dir.join("combined.pem")), 0o600);
    assert_eq!(mode(&dir.join("cert.pem")), 0o644);
    let wild = root.join("certs/s3.example.test");
    let wcert = read(&wild.join("cert.pem"));
    assert_eq!(
        leaf_names(&wcert),
        vec!["*.s3.example.test", "s3.example.test"]
    );
    let winfo = certbridge_acme::certinfo::leaf_info_pem(&wcert, "w").unwrap();
    assert_eq!(
        winfo.key_type,
        Some(certbridge_acme::certinfo::KeyType::EcP384)
    );

    // Handlers not acknowledged: reported again, by both modules.
    let req = run_module("acme_request", &args(root, json!({})));
    assert_eq!(req.json["unacked"], json!(["main", "wild"]));
    assert!(!req.changed());
    let fin = run_module("acme_finalize", &args(root, json!({})));
    assert!(!fin.changed());
    assert_eq!(fin.json["updated"], json!(["main", "wild"]));
    // Acknowledge one: only the other stays owed.
    let fin = run_module("acme_finalize", &args(root, json!({"ack": ["main"]})));
    assert_eq!(fin.json["updated"], json!(["wild"]));
    let fin = run_module("acme_finalize", &args(root, json!({"ack": ["wild"]})));
    assert_eq!(fin.json["updated"], json!([]));
    let req = run_module("acme_request", &args(root, json!({})));
    assert_eq!(req.json["unacked"], json!([]));
    assert_eq!(req.json["pending"], json!([]));
    // Same files as before: nothing was reissued.
    assert_eq!(read(&dir.join("cert.pem")), cert);
}

#[test]
fn force_reissues_keeps_previous_and_rollback_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pulse(root, json!({}));
    let dir = root.join("certs/web.example.test");
    let first_cert = read(&dir.join("cert.pem"));
    let first_key = read(&dir.join("privkey.pem"));
    let wild_cert = read(&root.join("certs/s3.example.test/cert.pem"));
    run_module(
        "acme_finalize",
        &args(root, json!({"ack": ["main", "wild"]})),
    );

    let (req, fin) = pulse(root, json!({"force": ["main"]}));
    assert_eq!(req["certs"]["main"]["reason"], "forced");
    assert_eq!(req["certs"]["wild"]["action"], "ok");
    assert_eq!(fin["updated"], json!(["main"]));
    let second_cert = read(&dir.join("cert.pem"));
    assert_ne!(second_cert, first_cert);
    assert_ne!(
        read(&dir.join("privkey.pem")),
        first_key,
        "a reissue gets a new key"
    );
    assert_eq!(
        read(&root.join("certs/s3.example.test/cert.pem")),
        wild_cert
    );
    run_module("acme_finalize", &args(root, json!({"ack": ["main"]})));

    let rb = run_module("acme_finalize", &args(root, json!({"rollback": ["main"]})));
    assert!(!rb.failed(), "{}", rb.json);
    assert!(rb.changed());
    assert_eq!(rb.json["updated"], json!(["main"]));
    assert_eq!(read(&dir.join("cert.pem")), first_cert);
    assert_eq!(read(&dir.join("privkey.pem")), first_key);
    // Check mode of a rollback says it would change and changes nothing.
    let check = run_module(
        "acme_finalize",
        &args(
            root,
            json!({"rollback": ["main"], "_ansible_check_mode": true}),
        ),
    );
    assert!(check.changed());
    assert_eq!(read(&dir.join("cert.pem")), first_cert);
    // The restored certificate is valid, so the next pulse keeps it.
    let req = run_module("acme_request", &args(root, json!({})));
    assert_eq!(req.json["certs"]["main"]["action"], "ok", "{}", req.json);
}

#[test]
fn only_limits_finalize_and_group_sets_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = args(root, json!({"group": "root"}));
    assert!(!run_module("acme_request", &a).failed());
    let fin = run_module(
        "acme_finalize",
        &args(root, json!({"group": "root", "only": ["wild"]})),
    );
    assert!(!fin.failed(), "{}", fin.json);
    assert_eq!(fin.json["updated"], json!(["wild"]));
    assert!(!root.join("certs/web.example.test/cert.pem").exists());
    let req = run_module("acme_request", &a);
    assert_eq!(req.json["pending"], json!(["main"]));
    let fin = run_module("acme_finalize", &a);
    assert_eq!(fin.json["updated"], json!(["main", "wild"]));
    let dir = root.join("certs/web.example.test");
    assert_eq!(mode(&dir.join("privkey.pem")), 0o640);
    assert_eq!(mode(&dir.join("combined.pem")), 0o640);
    assert_eq!(mode(&dir), 0o2750);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dir.join("privkey.pem")).unwrap().gid(), 0);
}

#[test]
fn finalize_refuses_bad_input_before_touching_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (extra, want) in [
        (json!({"only": ["nope"]}), "only: `nope`"),
        (json!({"ack": ["nope"]}), "ack: `nope`"),
        (json!({"rollback": ["nope"]}), "rollback: `nope`"),
        (
            json!({"pending_max_age": 5}),
            "unsupported option `pending_max_age`",
        ),
        (json!({"timeout": 0}), "timeout"),
    ] {
        let run = run_module("acme_finalize", &args(root, extra.clone()));
        assert!(run.failed(), "{extra}");
        assert!(run.msg().contains(want), "{extra}: {}", run.msg());
        assert!(run.elapsed < Duration::from_secs(1));
    }
    assert!(!root.join("certs").exists());
    // Rolling back with nothing to restore fails naming the directory.
    pulse(root, json!({}));
    let rb = run_module("acme_finalize", &args(root, json!({"rollback": ["main"]})));
    assert!(rb.failed());
    assert!(rb.msg().contains("no previous generation"), "{}", rb.msg());
}
