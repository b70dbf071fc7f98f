//! Split-phase issuance end to end against the test bed (Pebble + BIND): acme_request, the
//! values published by the bed's own means (TSIG-signed nsupdate into the dynamic signing zone,
//! or the static signing zone file + `rndc reload`), then acme_finalize in another process.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use support::tree;
use support::{ok, publish, restart_pebble, run_module, run_module_env, Host, Testbed};

/// Verifies `fullchain.pem` of a cert dir against Pebble's issuing root with openssl.
fn verify_chain(bed: &Testbed, host: &Host, dir: &str) {
    let d = host.root.join("certs").join(dir);
    let out = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            bed.get("TESTBED_ISSUER_ROOT"),
            "-untrusted",
        ])
        .arg(d.join("chain.pem"))
        .arg(d.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn names_of(pem: &str) -> Vec<String> {
    certbridge_acme::certinfo::leaf_info_pem(pem, "t")
        .unwrap()
        .names
        .into_iter()
        .collect()
}

/// One full pulse for `certs`: request, publish, finalize; returns both replies.
fn issue(bed: &Testbed, host: &Host, extra: Value) -> (Value, Value) {
    let req = host.request(extra.clone());
    let req = ok(&req).clone();
    publish(bed, &req["acme_txt_required"]);
    let fin = host.finalize(extra);
    (req, ok(&fin).clone())
}

#[test]
fn several_certs_at_once_then_a_noop_with_pebble_stopped() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let host = Host::on_bed(&bed);
    let certs = json!({"certs": {
        "one": ["dyn1.example.test"],
        "multi": ["dyn2.example.test", "dyn3.example.test", "dynshared.example.test"],
        "wild": ["*.s3.example.test", "s3.example.test"],
    }});
    let (req, fin) = issue(&bed, &host, certs.clone());
    assert!(req["changed"].as_bool().unwrap());
    assert_eq!(req["pending"], json!(["multi", "one", "wild"]));
    let txt = req["acme_txt_required"].as_array().unwrap();
    assert_eq!(txt.len(), 6, "one value per name: {txt:?}");
    // Wildcard and apex: two values on one record, `name` as requested.
    let s3: Vec<&Value> = txt
        .iter()
        .filter(|t| t["record"] == "_acme-challenge.s3.example.test")
        .collect();
    assert_eq!(s3.len(), 2);
    assert!(s3.iter().any(|t| t["name"] == "*.s3.example.test"));
    assert!(txt.iter().all(|t| t["value"].as_str().unwrap().len() == 43));
    assert_eq!(fin["updated"], json!(["multi", "one", "wild"]));
    assert_eq!(
        fin["certs"]["wild"]["dir"],
        host.root
            .join("certs/s3.example.test")
            .display()
            .to_string()
    );
    for dir in ["dyn1.example.test", "dyn2.example.test", "s3.example.test"] {
        verify_chain(&bed, &host, dir);
    }
    assert_eq!(
        names_of(&host.cert_file("s3.example.test", "cert.pem")),
        vec!["*.s3.example.test", "s3.example.test"]
    );
    let fin = host.finalize(json!({"certs": certs["certs"], "ack": ["multi", "one", "wild"]}));
    assert_eq!(ok(&fin)["updated"], json!([]));

    // Stop the CA: a pulse over valid certificates needs no network.
    let pid = bed.get("TESTBED_PEBBLE_PID");
    assert!(Command::new("kill").arg(pid).status().unwrap().success());
    let before = tree::written(&host.root.join("certs"));
    let noop = host.request(certs.clone());
    let j = ok(&noop);
    assert_eq!(j["changed"], false);
    assert_eq!(j["acme_txt_required"], json!([]));
    assert_eq!(j["pending"], json!([]));
    assert_eq!(j["unacked"], json!([]));
    assert_eq!(j["certs"]["wild"]["action"], "ok");
    let after = tree::written(&host.root.join("certs"));
    let files = |t: &BTreeMap<String, tree::Written>| {
        t.iter().filter(|(k, _)| !k.ends_with("/lock")).count()
    };
    assert_eq!(files(&before), files(&after));
    assert_eq!(
        before
            .iter()
            .filter(|(k, _)| !k.ends_with("/lock"))
            .collect::<Vec<_>>(),
        after
            .iter()
            .filter(|(k, _)| !k.ends_with("/lock"))
            .collect::<Vec<_>>()
    );
    host.assert_log_clean();
}

#[test]
fn names_change_force_check_mode_and_staging_rules() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let host = Host::on_bed(&bed);
    let (_, fin) = issue(
        &bed,
        &host,
        json!({"certs": {"main": ["dyn1.example.test"]}}),
    );
    assert_eq!(fin["updated"], json!(["main"]));
    let first = host.cert_file("dyn1.example.test", "cert.pem");

    // Check mode: reports the decision, touches nothing, contacts nobody.
    let changed_names = json!({"certs": {"main": ["dyn1.example.test", "dyn2.example.test"]}});
    let before = tree::written(&host.root);
    let check = run_module(
        "acme_request",
        &host.args(json!({"certs": changed_names["certs"], "_ansible_check_mode": true})),
    );
    assert_eq!(ok(&check)["certs"]["main"]["reason"], "names_changed");
    assert_eq!(check.json["acme_txt_required"], json!([]));
    assert_eq!(
        tree::written(&host.root),
        before,
        "check mode changed files"
    );

    let (req, _) = issue(&bed, &host, changed_names.clone());
    assert_eq!(req["certs"]["main"]["reason"], "names_changed");
    let second = host.cert_file("dyn1.example.test", "cert.pem");
    assert_eq!(
        names_of(&second),
        vec!["dyn1.example.test", "dyn2.example.test"]
    );

    let (req, fin) = issue(
        &bed,
        &host,
        json!({"certs": changed_names["certs"], "force": true}),
    );
    assert_eq!(req["certs"]["main"]["reason"], "forced");
    assert_eq!(fin["updated"], json!(["main"]));
    assert_ne!(host.cert_file("dyn1.example.test", "cert.pem"), second);
    assert_ne!(first, second);

    // Production -> staging: the trusted certificate is kept (the same CA under another
    // spelling of its URL plays the staging directory).
    let staging_dir = bed
        .get("TESTBED_ACME_DIRECTORY")
        .replace("127.0.0.1", "localhost");
    let staging =
        json!({"certs": changed_names["certs"], "directory": staging_dir, "staging": true});
    let kept = host.request(staging.clone());
    assert_eq!(ok(&kept)["certs"]["main"]["reason"], "production_kept");
    assert_eq!(kept.json["changed"], false);
    // Forced, it does issue from staging; then back to production reissues.
    let (req, _) = issue(
        &bed,
        &host,
        json!({"certs": changed_names["certs"], "directory": staging_dir, "staging": true, "force": true}),
    );
    assert_eq!(req["certs"]["main"]["reason"], "forced");
    let back = host.request(changed_names.clone());
    assert_eq!(ok(&back)["certs"]["main"]["reason"], "directory_changed");
    let meta_path = host.root.join("certs/.certbridge/certs/main.json");
    let account_of = || -> String {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
        meta["pending"]["account_url"].as_str().unwrap().to_owned()
    };
    let first_account = account_of();
    // A lost account file: a new account, and the pending order (of the old one) is replaced.
    std::fs::remove_dir_all(host.root.join("certs/.certbridge/accounts")).unwrap();
    let fresh = host.request(changed_names.clone());
    assert!(ok(&fresh)["changed"].as_bool().unwrap(), "{}", fresh.json);
    assert_ne!(account_of(), first_account);
    host.assert_log_clean();
}

#[test]
fn interrupted_runs_resume_and_a_forgotten_order_means_a_new_one() {
    let bed = Testbed::start(&["--hosts", "6"]);
    let host = Host::on_bed(&bed);
    let certs = json!({"certs": {"main": ["dyn4.example.test"]}});
    let req1 = host.request(certs.clone());
    let req1 = ok(&req1).clone();
    // Interrupted before publishing: the next pulse reuses the same order and values.
    let req2 = host.request(certs.clone());
    assert_eq!(ok(&req2)["changed"], false, "{}", req2.json);
    assert_eq!(req2.json["acme_txt_required"], req1["acme_txt_required"]);
    // Not published yet: dns_check refuses to let the CA validate (which would fail the order).
    let dns = json!({"certs": certs["certs"], "dns_check": bed.get("TESTBED_DNS"), "dns_check_timeout": 1});
    let early = host.finalize(dns.clone());
    assert!(early.failed());
    assert!(
        early.msg().contains("cert main: TXT not published"),
        "{}",
        early.msg()
    );
    assert!(
        early.msg().contains("_acme-challenge.dyn4.example.test"),
        "{}",
        early.msg()
    );
    assert!(early.elapsed < Duration::from_secs(5));
    publish(&bed, &req1["acme_txt_required"]);
    let key_path = host.root.join("certs/.certbridge/pending/main.key");
    let fin = host.finalize(dns);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert!(
        !key_path.exists(),
        "the order's key is cleared after install"
    );

    // A stored order the CA no longer knows (as after a CA restart) -> a new order, no failure.
    let req = host.request(json!({"certs": certs["certs"], "force": true}));
    let old_values = ok(&req)["acme_txt_required"].clone();
    let meta_path = host.root.join("certs/.certbridge/certs/main.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let url = meta["pending"]["url"].as_str().unwrap().to_owned();
    let gone = format!("{}-gone", url);
    meta["pending"]["url"] = json!(gone);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let req = host.request(json!({"certs": certs["certs"], "force": true}));
    assert!(ok(&req)["changed"].as_bool().unwrap(), "{}", req.json);
    assert_ne!(req.json["acme_txt_required"], old_values);
    // pending_max_age 0: even a live order is replaced.
    let again = host.request(json!({"certs": certs["certs"], "force": true, "pending_max_age": 0}));
    assert!(ok(&again)["changed"].as_bool().unwrap());
    publish(&bed, &again.json["acme_txt_required"]);
    let fin = host.finalize(certs.clone());
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    verify_chain(&bed, &host, "dyn4.example.test");
    let log = std::fs::read_to_string(host.root.join("certbridge.log")).unwrap();
    assert!(log.contains("order_reused") && log.contains("order_created") && log.contains(&url));

    // The CA restarts with an order pending (accounts and orders gone): a new order, no failure.
    let forced = json!({"certs": certs["certs"], "force": true});
    let before = host.request(forced.clone());
    let before_url = {
        ok(&before);
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
        meta["pending"]["url"].as_str().unwrap().to_owned()
    };
    let _pebble = restart_pebble(&bed);
    let after = host.request(forced.clone());
    assert!(ok(&after)["changed"].as_bool().unwrap(), "{}", after.json);
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert_ne!(meta["pending"]["url"].as_str().unwrap(), before_url);
    publish(&bed, &after.json["acme_txt_required"]);
    let fin = host.finalize(certs.clone());
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
}

#[test]
fn a_blocklisted_name_fails_alone_with_the_problem_and_backs_off() {
    let bed = Testbed::start(&["--hosts", "6", "--blocklist", "dyn5.example.test"]);
    let host = Host::on_bed(&bed);
    let certs = json!({"certs": {"good": ["dyn1.example.test"], "bad": ["dyn5.example.test"]}});
    let req = host.request(certs.clone());
    assert!(req.failed());
    assert!(req.msg().contains("cert bad"), "{}", req.msg());
    assert!(!req.msg().contains("cert good"), "{}", req.msg());
    assert!(
        req.json["problems"]["bad"]["type"]
            .as_str()
            .unwrap_or("")
            .contains("rejectedIdentifier"),
        "{}",
        req.json
    );
    // The other cert's values are still returned and it completes.
    assert_eq!(req.json["pending"], json!(["good"]));
    publish(&bed, &req.json["acme_txt_required"]);
    let fin = host.finalize(certs.clone());
    assert_eq!(ok(&fin)["updated"], json!(["good"]));
    // Backoff stored: the next pulse does not ask the CA for `bad` again.
    let next = host.request(certs.clone());
    assert!(!next.failed(), "{}", next.json);
    assert_eq!(next.json["certs"]["bad"]["reason"], "backoff");
    let retry = next.json["certs"]["bad"]["retry_not_before"]
        .as_i64()
        .unwrap();
    assert!(retry > certbridge_acme::now() && retry <= certbridge_acme::now() + 60);
    // force overrides the backoff (and fails again, at the CA).
    let forced = host.request(json!({"certs": certs["certs"], "force": ["bad"]}));
    assert!(forced.failed() && forced.msg().contains("cert bad"));
    host.assert_log_clean();
}

#[test]
fn nonce_rejections_are_retried_and_reused_authorizations_need_no_value() {
    let bed = Testbed::start_env(
        &["--hosts", "6"],
        &[
            ("PEBBLE_WFE_NONCEREJECT", "50"),
            ("PEBBLE_AUTHZREUSE", "100"),
        ],
    );
    let host = Host::on_bed(&bed);
    let certs = json!({"certs": {"a": ["dyn1.example.test"], "b": {"names": ["dyn2.example.test"], "key_type": "rsa-2048"}}});
    let (_, fin) = issue(&bed, &host, certs.clone());
    assert_eq!(fin["updated"], json!(["a", "b"]));
    assert!(fin["acme_retries"].as_u64().unwrap() > 0, "{fin}");
    let rsa = certbridge_acme::certinfo::leaf_info_pem(
        &host.cert_file("dyn2.example.test", "cert.pem"),
        "b",
    )
    .unwrap();
    assert_eq!(
        rsa.key_type,
        Some(certbridge_acme::certinfo::KeyType::Rsa2048)
    );
    // The CA reuses the valid authorizations: the reissue needs no value at all.
    let req = host.request(json!({"certs": certs["certs"], "force": true}));
    assert_eq!(ok(&req)["acme_txt_required"], json!([]));
    let fin = host.finalize(certs.clone());
    assert_eq!(ok(&fin)["updated"], json!(["a", "b"]));
    verify_chain(&bed, &host, "dyn1.example.test");
}

#[test]
fn a_short_lifetime_is_kept_right_after_issuance_and_renewed_when_due() {
    let bed = Testbed::start(&["--hosts", "6", "--validity", "40"]);
    let host = Host::on_bed(&bed);
    let certs = json!({"certs": {"short": ["dyn6.example.test"]}});
    let (_, fin) = issue(&bed, &host, certs.clone());
    let not_after = fin["certs"]["short"]["not_after"].as_i64().unwrap();
    let now_run = host.request(certs.clone());
    let j = ok(&now_run);
    assert_eq!(j["changed"], false);
    assert_eq!(j["certs"]["short"]["reason"], "valid");
    let renew_at = j["certs"]["short"]["renew_at"].as_i64().unwrap();
    // Lifetime under 10 days: due at half the lifetime, at most 10% earlier for jitter.
    assert!(
        renew_at <= not_after - 20 && renew_at >= not_after - 24,
        "{renew_at} vs {not_after}"
    );
    // Three quarters of the lifetime: wait for that moment (a time condition, not a race).
    let three_quarters = not_after - 10;
    while certbridge_acme::now() < three_quarters {
        std::thread::sleep(Duration::from_millis(200));
    }
    let due = host.request(certs.clone());
    assert_eq!(ok(&due)["certs"]["short"]["reason"], "due");
    assert_eq!(due.json["certs"]["short"]["action"], "issue");
    publish(&bed, &due.json["acme_txt_required"]);
    let fin = host.finalize(certs.clone());
    assert_eq!(ok(&fin)["updated"], json!(["short"]));
    assert!(fin.json["certs"]["short"]["not_after"].as_i64().unwrap() > not_after);
}

#[test]
fn secrets_stay_out_of_output_and_a_dead_ca_fails_per_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let args = json!({
        "certs": {"a": ["dyn1.example.test"]},
        "directory": "https://127.0.0.1:9/dir",
        "cert_root": tmp.path().join("certs"),
        "log_file": tmp.path().join("log"),
        "eab_kid": "kid-1",
        "eab_hmac_key": "c2VjcmV0LWhtYWMta2V5LXZhbHVl",
        "timeout": 5,
    });
    let run = run_module_env("acme_request", &args, &[]);
    assert!(run.failed());
    assert!(run.msg().contains("cert a"), "{}", run.msg());
    assert!(!run.stdout.contains("c2VjcmV0LWhtYWMta2V5LXZhbHVl"));
    assert_eq!(
        run.json["invocation"]["module_args"]["eab_hmac_key"],
        "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    );
    let log = std::fs::read_to_string(tmp.path().join("log")).unwrap();
    assert!(!log.contains("c2VjcmV0LWhtYWMta2V5LXZhbHVl"));
    assert!(log.contains("account_failed"));
}
