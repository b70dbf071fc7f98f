//! Secrets and file modes across all four modules. A whole pulse against the test bed with
//! external account binding and a TSIG-signed dynamic zone, plus calls that fail (wrong TSIG
//! key, wrong EAB key, bad input): no EAB HMAC key, TSIG secret, account key or certificate key
//! (nor any `PRIVATE KEY` block) appears in any output, `invocation` or log file, and secret
//! options come back as VALUE_SPECIFIED_IN_NO_LOG_PARAMETER. Key files are 0600 (no group) or
//! 0640 (group) in 2750 directories, zone files keep their `mode`, under umask 000 and 077.

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{module_bin, Testbed};

const REDACTED: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";

/// One module call as Ansible makes it, under `umask`; everything it printed is kept.
struct Call {
    module: &'static str,
    json: Value,
    stdout: String,
    stderr: String,
}

fn call_umask(module: &'static str, args: &Value, umask: &str) -> Call {
    let dir = tempfile::tempdir().unwrap();
    let args_path = dir.path().join("args");
    std::fs::write(&args_path, serde_json::to_vec(args).unwrap()).unwrap();
    // The shell only sets the umask and execs the module (no shell sees the arguments).
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$1\""))
        .arg(module_bin(module))
        .arg(&args_path)
        .output()
        .expect("run module");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{module} did not print one JSON object ({e}): {stdout:?} {stderr:?}")
    });
    Call {
        module,
        json,
        stdout,
        stderr,
    }
}

fn call(module: &'static str, args: &Value) -> Call {
    call_umask(module, args, "022")
}

fn patched(mut base: Value, patch: Value) -> Value {
    let (Value::Object(b), Value::Object(p)) = (&mut base, patch) else {
        panic!("objects expected")
    };
    b.extend(p);
    base
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every regular file under `root` (following no links), with its text.
fn files_under(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.extend(files_under(&p));
        } else if meta.is_file() {
            out.push((
                p.clone(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
            ));
        }
    }
    out
}

/// The base64 body lines of every PEM private key in `text` (each line is long and random, so
/// finding any of them elsewhere means key material leaked).
fn pem_key_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            inside = true;
        } else if line.starts_with("-----END") {
            inside = false;
        } else if inside && line.len() >= 32 {
            out.push(line.to_owned());
        }
    }
    out
}

/// String values of at least 32 characters anywhere in `v` (the account key inside the
/// account file's credentials).
fn long_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() >= 32 => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| long_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| long_strings(x, out)),
        _ => {}
    }
}

#[test]
fn no_secret_reaches_output_invocation_or_logs() {
    let bed = Testbed::start(&["--eab", "--hosts", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let eab_key = bed.get("TESTBED_EAB_HMAC_KEY").to_owned();
    let tsig = bed.get("TESTBED_TSIG_SECRET").to_owned();
    // A well-formed key the server does not know: it is refused, and must not be echoed either.
    let wrong_tsig = "d3JvbmctdHNpZy1zZWNyZXQtdGhhdC1sb29rcy1yZWFsLTEyMzQ=";
    let wrong_eab = "d3JvbmctZWFiLWhtYWMta2V5LXRoYXQtbG9va3MtcmVhbC0xMjM0NTY3OA";
    let host = json!({
        "directory": bed.get("TESTBED_ACME_DIRECTORY"),
        "ca_file": bed.get("TESTBED_ACME_CA_FILE"),
        "cert_root": root.join("certs"),
        "log_file": root.join("log/certbridge.log"),
        "jitter_seed": "secrets-host",
        "eab_kid": bed.get("TESTBED_EAB_KID"),
        "eab_hmac_key": eab_key,
        "timeout": 60,
        "certs": {"one": ["dyn1.example.test"], "two": ["dyn2.example.test"]},
    });
    let zone = json!({
        "origin": bed.get("TESTBED_DYNAMIC_ZONE"), "method": "rfc2136",
        "server": bed.get("TESTBED_DNS"), "tsig_name": bed.get("TESTBED_TSIG_NAME"),
        "tsig_algorithm": bed.get("TESTBED_TSIG_ALGORITHM"), "tsig_secret": tsig,
    });
    let publish = |records: &Value, zone: &Value| {
        json!({
            "records": records, "zones": [zone],
            "resolver": bed.get("TESTBED_DNS"),
            "nameserver_port": bed.get("TESTBED_DNS_PORT").parse::<u16>().unwrap(),
            "state_dir": root.join("publish-state"),
            "timeout": 30,
        })
    };

    let mut calls = Vec::new();
    // The pulse: request (new EAB-bound account, orders), publish (TSIG update), finalize.
    let req = call("acme_request", &host);
    assert!(
        !req.json["failed"].as_bool().unwrap_or(true),
        "{}",
        req.json
    );
    let records: Vec<Value> = req.json["acme_txt_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| patched(t.clone(), json!({"host": "secrets-host"})))
        .collect();
    assert_eq!(records.len(), 2, "{}", req.json);
    let records = Value::Array(records);
    calls.push(req);
    let pubd = call("acme_txt_publish", &publish(&records, &zone));
    assert!(
        !pubd.json["failed"].as_bool().unwrap_or(true),
        "{}",
        pubd.json
    );
    calls.push(pubd);
    let fin = call("acme_finalize", &host);
    assert!(
        !fin.json["failed"].as_bool().unwrap_or(true),
        "{}",
        fin.json
    );
    assert_eq!(
        fin.json["updated"].as_array().map(Vec::len),
        Some(2),
        "{}",
        fin.json
    );
    calls.push(fin);
    // A no-op pulse and the failures: wrong TSIG key, wrong EAB key (fresh cert root, so a
    // new account is attempted), and a bad-input call carrying both kinds of secret.
    calls.push(call("acme_request", &host));
    let bad_tsig = call(
        "acme_txt_publish",
        &publish(
            &records,
            &patched(zone.clone(), json!({"tsig_secret": wrong_tsig})),
        ),
    );
    assert_eq!(bad_tsig.json["failed"], json!(true), "{}", bad_tsig.json);
    calls.push(bad_tsig);
    let bad_eab = call(
        "acme_request",
        &patched(
            host.clone(),
            json!({"eab_hmac_key": wrong_eab, "cert_root": root.join("other-root")}),
        ),
    );
    assert_eq!(bad_eab.json["failed"], json!(true), "{}", bad_eab.json);
    calls.push(bad_eab);
    let bad_input = call(
        "acme_finalize",
        &patched(host.clone(), json!({"only": ["undeclared"]})),
    );
    assert_eq!(bad_input.json["failed"], json!(true));
    calls.push(bad_input);
    calls.push(call(
        "zone_render",
        &json!({"path": root.join("zones/other.zone"), "origin": "other.test", "ns": ["ns1.other.test"]}),
    ));

    // What must never be seen: the secrets given as options, the account key, every
    // certificate key now on disk.
    let mut secrets: Vec<(String, String)> = vec![
        ("EAB HMAC key".into(), eab_key.clone()),
        ("wrong EAB HMAC key".into(), wrong_eab.into()),
        ("TSIG secret".into(), tsig.clone()),
        ("wrong TSIG secret".into(), wrong_tsig.into()),
    ];
    let cert_files = files_under(&root.join("certs"));
    let mut key_files = 0;
    for (path, text) in &cert_files {
        for line in pem_key_lines(text) {
            secrets.push((format!("key line of {}", path.display()), line));
        }
        if path.to_string_lossy().contains("/.certbridge/accounts/") {
            let account: Value = serde_json::from_str(text).unwrap();
            let mut strings = Vec::new();
            long_strings(&account["credentials"], &mut strings);
            strings.retain(|s| !s.starts_with("http"));
            assert!(
                !strings.is_empty(),
                "no account key found in {}",
                path.display()
            );
            secrets.extend(
                strings
                    .into_iter()
                    .map(|s| (format!("account key in {}", path.display()), s)),
            );
        }
        key_files += usize::from(text.contains("PRIVATE KEY"));
    }
    assert!(
        key_files >= 4,
        "expected key files under the cert root, found {key_files}"
    );

    // Everything captured: every call's stdout and stderr, the log file, the publish state.
    let mut captured: Vec<(String, String)> = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        captured.push((format!("call {i} ({}) stdout", c.module), c.stdout.clone()));
        captured.push((format!("call {i} ({}) stderr", c.module), c.stderr.clone()));
    }
    for dir in ["log", "publish-state", "zones"] {
        for (path, text) in files_under(&root.join(dir)) {
            captured.push((path.display().to_string(), text));
        }
    }
    let log = std::fs::read_to_string(root.join("log/certbridge.log")).unwrap();
    assert!(
        log.lines().count() >= 3,
        "the log recorded too little to prove anything:\n{log}"
    );

    let mut leaks = Vec::new();
    for (where_, text) in &captured {
        if text.contains("PRIVATE KEY") {
            leaks.push(format!("a PRIVATE KEY block in {where_}"));
        }
        for (what, secret) in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("the {what} in {where_}"));
            }
        }
    }
    // Secret options are reported redacted in `invocation`.
    let mut redactions = 0;
    for c in &calls {
        let args = &c.json["invocation"]["module_args"];
        for key in ["eab_hmac_key", "tsig_secret"] {
            if let Some(v) = args.get(key) {
                assert_eq!(v, REDACTED, "{} {key}", c.module);
                redactions += 1;
            }
        }
        if let Some(zones) = args["zones"].as_array() {
            for z in zones {
                assert_eq!(z["tsig_secret"], REDACTED, "{}", c.module);
                redactions += 1;
            }
        }
    }
    println!(
        "secrets: {} calls, {} captured texts ({} bytes), {} secret strings checked, {} redactions",
        calls.len(),
        captured.len(),
        captured.iter().map(|(_, t)| t.len()).sum::<usize>(),
        secrets.len(),
        redactions
    );
    assert!(redactions >= calls.len() - 1);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

#[test]
fn key_and_zone_file_modes_hold_under_any_umask() {
    for umask in ["000", "077"] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for (group, key_mode, dir_mode) in [(None, 0o600, 0o755), (Some("0"), 0o640, 0o2750)] {
            let cert_root = root.join(format!("certs-{}", group.unwrap_or("none")));
            let mut args = json!({
                "cert_root": cert_root,
                "log_file": root.join("certbridge.log"),
                "directory": "https://127.0.0.1:9/dir",
                "self_sign": true,
                "jitter_seed": "modes-host",
                "certs": {"main": ["web.example.test"], "wild": ["*.s3.example.test", "s3.example.test"]},
            });
            if let Some(g) = group {
                args["group"] = json!(g);
            }
            for module in ["acme_request", "acme_finalize"] {
                let c = call_umask(module, &args, umask);
                assert!(
                    !c.json["failed"].as_bool().unwrap_or(true),
                    "umask {umask}: {}",
                    c.json
                );
            }
            for dir in ["web.example.test", "s3.example.test"] {
                let d = cert_root.join(dir);
                // The directory services read through, and the generation it points at.
                let real = std::fs::canonicalize(d.join("privkey.pem")).unwrap();
                for p in [d.clone(), real.parent().unwrap().to_path_buf()] {
                    assert_eq!(
                        mode(&p),
                        dir_mode,
                        "umask {umask}, group {group:?}: {}",
                        p.display()
                    );
                }
                for key in ["privkey.pem", "combined.pem", &format!("{dir}.key")] {
                    assert_eq!(
                        mode(&d.join(key)),
                        key_mode,
                        "umask {umask}, group {group:?}: {key}"
                    );
                }
                for public in ["cert.pem", "fullchain.pem", "chain.pem"] {
                    assert_eq!(mode(&d.join(public)), 0o644, "umask {umask}: {public}");
                }
            }
            // Private material in the reserved area (accounts, the self-sign CA key): owner only.
            let mut private = 0;
            for (path, text) in files_under(&cert_root.join(".certbridge")) {
                if text.contains("PRIVATE KEY") || path.to_string_lossy().contains("/accounts/") {
                    assert_eq!(
                        mode(&path) & 0o077,
                        0,
                        "umask {umask}: {} is readable by others",
                        path.display()
                    );
                    private += 1;
                }
            }
            assert!(
                private >= 1,
                "umask {umask}: no private file in the reserved area"
            );
        }
        // Zone files: `mode` is applied, and a new file without it is 0644, whatever the umask.
        let zones = root.join("zones");
        std::fs::create_dir(&zones).unwrap();
        for (name, zone_mode, want) in [("a.zone", Some("0640"), 0o640), ("b.zone", None, 0o644)] {
            let mut args = json!({"path": zones.join(name), "origin": "acme.example.test", "ns": ["ns1.acme.example.test"]});
            if let Some(m) = zone_mode {
                args["mode"] = json!(m);
            }
            let c = call_umask("zone_render", &args, umask);
            assert!(c.json["changed"] == json!(true), "{}", c.json);
            assert_eq!(mode(&zones.join(name)), want, "umask {umask}: {name}");
            // A rewrite keeps the mode.
            args["records"] = json!([{"name": "x", "type": "TXT", "value": "v"}]);
            call_umask("zone_render", &args, umask);
            assert_eq!(
                mode(&zones.join(name)),
                want,
                "umask {umask}: {name} after a rewrite"
            );
        }
        println!("modes checked under umask {umask}: 2 cert roots x 2 certs, 2 zone files");
    }
}
