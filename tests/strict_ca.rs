//! The modules against the strict test CA (certbridge-testsupport's `ca_proxy`, strict rules on
//! and Let's Encrypt's profiles): issuance, ARI renewals, stale and changed pending orders pass
//! without one refused request; a cert over its profile's name limit gets the CA's answer, or,
//! at Let's Encrypt's own directories, fails before anything is ordered. Pebble validates every
//! challenge here (`PEBBLE_VA_ALWAYS_VALID`): these tests are about what is asked of the CA.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use support::{ok, run_module, CaProxy, Endpoint, Host, ModuleRun, ProxyConfig, Testbed, Window};

/// A host ordering `dyn1.example.test` under Let's Encrypt's `tlsserver` profile through `proxy`.
fn host_via(proxy: &CaProxy) -> Host {
    Host::via(proxy, "test-host").with(json!({
        "profile": "tlsserver",
        "certs": {"main": ["dyn1.example.test"]},
    }))
}

/// acme_finalize with the same options, less acme_request's own; the handler's ack follows.
fn finalize(host: &Host, extra: Value) -> ModuleRun {
    let mut args = host.args(&extra);
    for own in ["ari_interval", "pending_max_age"] {
        args.as_object_mut().unwrap().remove(own);
    }
    let run = run_module("acme_finalize", &args);
    let _ = Host::finalize(host, json!({"ack": ["main"]}));
    run
}

fn cert_id(host: &Host) -> String {
    let pem = host.cert_file("dyn1.example.test", "cert.pem");
    let der = certbridge_acme::certinfo::pem_certs(&pem, "leaf").unwrap()[0].clone();
    certbridge_acme::client::ari_cert_id(&der).unwrap()
}

/// The bookkeeping of `cert`, or null before there is any.
fn meta(host: &Host, cert: &str) -> Value {
    std::fs::read_to_string(host.cert_meta_path(cert))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null)
}

/// Lets the stored renewal-information check fall due (as if `next_check` had passed).
fn expire_ari_check(host: &Host) {
    let mut m = meta(host, "main");
    m["ari"]["next_check"] = json!(1);
    std::fs::write(host.cert_meta_path("main"), m.to_string()).unwrap();
}

fn log(host: &Host) -> String {
    std::fs::read_to_string(host.root.join("certbridge.log")).unwrap_or_default()
}

fn warnings(run: &ModuleRun) -> Vec<String> {
    run.json["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn strict_proxy(bed: &Testbed) -> CaProxy {
    CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        ProxyConfig::default().with_ari().with_le_profiles(),
    )
}

fn assert_nothing_refused(proxy: &CaProxy) {
    let refused: Vec<String> = proxy
        .strict_rejections()
        .iter()
        .map(|r| format!("{} {} -> {:?}", r.method, r.path, r.strict))
        .collect();
    assert!(refused.is_empty(), "the strict CA refused: {refused:?}");
}

/// Issuance, an ARI renewal naming what it replaces, a stale replacement order replaced by a
/// new one that names the same certificate, and a names change while a replacement order is
/// pending: the strict CA refuses nothing, and every renewal order keeps its `replaces`
/// (an abandoned order of the account is deactivated first, so the certificate is not
/// "already replaced" by it).
#[test]
fn the_modules_pass_the_strict_ca_and_keep_replaces_across_abandoned_orders() {
    let bed = Testbed::start_env(&["--hosts", "2"], &[("PEBBLE_VA_ALWAYS_VALID", "1")]);
    let proxy = strict_proxy(&bed);
    let host = host_via(&proxy);
    let check_now = json!({"ari_interval": 0});

    let run = host.request(check_now.clone());
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "missing");
    assert_eq!(ok(&finalize(&host, json!({})))["updated"], json!(["main"]));
    assert_eq!(proxy.new_order_payloads()[0]["profile"], "tlsserver");
    let id = cert_id(&host);

    // The CA's window has passed: a renewal order naming the certificate.
    proxy.set_window(&id, Window::from_now(-7200, -3600));
    proxy.clear_requests();
    let run = host.request(check_now.clone());
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "ari_window");
    assert_eq!(proxy.new_order_payloads().len(), 1);
    assert_eq!(proxy.new_order_payloads()[0]["replaces"], json!(id));
    assert_eq!(proxy.replaced_cert_ids(), vec![id.clone()]);

    // The next pulse resumes it (read by POST-as-GET), and orders nothing.
    proxy.clear_requests();
    let run = host.request(check_now.clone());
    assert!(ok(&run)["certs"]["main"].get("order_reason").is_none());
    assert!(proxy.new_order_payloads().is_empty());
    assert!(!proxy.requests_to(Endpoint::Order).is_empty());
    assert!(log(&host).contains("\"order_reused\""));

    // The next pulse finds it stale (pending_max_age 0): deactivated, then a new order that
    // names the certificate again, which the CA accepts (the old order is invalid now).
    proxy.clear_requests();
    let run = host.request(json!({"ari_interval": 0, "pending_max_age": 0}));
    let r = ok(&run);
    let why = r["certs"]["main"]["order_reason"].as_str().unwrap_or("");
    assert!(why.contains("pending_max_age (0 s)"), "{r}");
    assert!(
        proxy.requests_to(Endpoint::Authz).iter().any(|q| q
            .payload
            .as_ref()
            .is_some_and(|p| p["status"] == "deactivated")),
        "the stale order's authorization was deactivated"
    );
    let payloads = proxy.new_order_payloads();
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(id));
    assert!(
        warnings(&run).iter().all(|w| !w.contains("replaces")),
        "{:?}",
        warnings(&run)
    );
    assert_eq!(meta(&host, "main")["pending"]["replaces"], json!(id));

    // A name is added while that order is pending: the order for the old names is abandoned
    // (deactivated), and the new one still names the certificate it replaces.
    proxy.clear_requests();
    let two = json!({"ari_interval": 0,
        "certs": {"main": ["dyn1.example.test", "dyn2.example.test"]}});
    let run = host.request(two.clone());
    let r = ok(&run);
    assert_eq!(r["certs"]["main"]["reason"], "names_changed", "{r}");
    let why = r["certs"]["main"]["order_reason"].as_str().unwrap_or("");
    assert!(why.contains("other names"), "{r}");
    let payloads = proxy.new_order_payloads();
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(id));
    assert!(
        warnings(&run).iter().all(|w| !w.contains("replaces")),
        "{:?}",
        warnings(&run)
    );
    assert_eq!(
        ok(&finalize(&host, two.clone()))["updated"],
        json!(["main"])
    );
    assert_ne!(cert_id(&host), id);
    let log = log(&host);
    assert!(log.contains("stored_order_not_reused"), "{log}");
    assert_nothing_refused(&proxy);
    println!(
        "strict CA: issuance, ARI renewal, stale and changed replacement orders: {} requests, none refused; replaces kept ({id})",
        proxy.requests().len()
    );
}

/// 26 names under `tlsserver`: a CA that is not Let's Encrypt is asked and its refusal is
/// reported as it comes (problem document, backoff); at Let's Encrypt's directories the module
/// knows the limit and fails before any request, naming both numbers, without a backoff.
#[test]
fn too_many_names_for_the_profile() {
    let bed = Testbed::start_env(&["--hosts", "2"], &[("PEBBLE_VA_ALWAYS_VALID", "1")]);
    let proxy = strict_proxy(&bed);
    let host = host_via(&proxy);
    let names: Vec<String> = (0..26).map(|i| format!("n{i}.example.test")).collect();
    let big = json!({"certs": {"big": names.clone(), "main": ["dyn1.example.test"]}});

    let run = host.request(big.clone());
    assert!(run.failed(), "{}", run.json);
    let msg = run.msg();
    assert!(
        msg.contains("cert big:") && msg.contains("Order cannot contain more than 25 DNS names"),
        "{msg}"
    );
    assert!(!msg.contains("cert main"), "{msg}");
    assert_eq!(
        run.json["problems"]["big"]["type"],
        "urn:ietf:params:acme:error:malformed"
    );
    assert_eq!(
        run.json["acme_txt_required"].as_array().map(Vec::len),
        Some(1)
    );
    let refused = proxy.strict_rejections();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].strict, Some("max_names"));
    assert!(
        meta(&host, "big")["retry_not_before"].is_i64(),
        "the CA said no: backoff"
    );

    // The same configuration at Let's Encrypt's staging directory: refused before any request.
    for directory in [
        certbridge_acme::policy::LE_STAGING,
        certbridge_acme::policy::LE_PRODUCTION,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let args = json!({
            "directory": directory,
            "cert_root": tmp.path().join("certs"),
            "log_file": tmp.path().join("certbridge.log"),
            "jitter_seed": "test-host",
            "profile": "tlsserver",
            "timeout": 20,
            "certs": {"big": names},
        });
        let started = std::time::Instant::now();
        let run = run_module("acme_request", &args);
        assert!(run.failed(), "{}", run.json);
        let msg = run.msg();
        assert!(
            msg.contains(
                "cert big: 26 names, but Let's Encrypt's `tlsserver` profile allows at most 25"
            ),
            "{msg}"
        );
        assert!(run.json["problems"]["big"].is_null(), "{}", run.json);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let meta_path = tmp.path().join("certs/.certbridge/certs/big.json");
        let meta: Value = std::fs::read_to_string(meta_path)
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null);
        assert!(meta["retry_not_before"].is_null(), "no backoff: {meta}");
        assert!(meta["pending"].is_null());
        let log = std::fs::read_to_string(tmp.path().join("certbridge.log")).unwrap();
        assert!(log.contains("\"order_refused\""), "{log}");
        assert!(!log.contains("account"), "no account was opened: {log}");
    }
}

/// The CA moves a passed window back into the future while a renewal order is pending: the
/// order is no longer needed and is deactivated before it is forgotten, so when the window
/// passes again the renewal can still name the certificate it replaces.
#[test]
fn an_abandoned_replacement_order_does_not_block_the_real_renewal() {
    let bed = Testbed::start_env(&["--hosts", "2"], &[("PEBBLE_VA_ALWAYS_VALID", "1")]);
    let proxy = strict_proxy(&bed);
    let host = host_via(&proxy);
    let check_now = json!({"ari_interval": 0});
    let run = host.request(check_now.clone());
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "missing");
    assert_eq!(ok(&finalize(&host, json!({})))["updated"], json!(["main"]));
    let id = cert_id(&host);

    proxy.set_window(&id, Window::from_now(-7200, -3600));
    let run = host.request(check_now.clone());
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "ari_window");
    assert_eq!(proxy.replaced_cert_ids(), vec![id.clone()]);

    // The window moves ahead: kept, the pending order deactivated and forgotten.
    proxy.set_window(&id, Window::from_now(10 * 86_400, 11 * 86_400));
    expire_ari_check(&host);
    proxy.clear_requests();
    let run = host.request(check_now.clone());
    let r = ok(&run);
    assert_eq!(r["certs"]["main"]["reason"], "valid", "{r}");
    assert_eq!(r["pending"], json!([]), "{r}");
    assert!(warnings(&run).is_empty(), "{:?}", warnings(&run));
    assert!(
        proxy.replaced_cert_ids().is_empty(),
        "the order was deactivated"
    );
    assert!(meta(&host, "main")["pending"].is_null());
    assert!(log(&host).contains("\"order_abandoned\""));

    // It passes again: the renewal names the certificate, and the CA takes it.
    proxy.set_window(&id, Window::from_now(-7200, -3600));
    expire_ari_check(&host);
    proxy.clear_requests();
    let run = host.request(check_now.clone());
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "ari_window");
    let payloads = proxy.new_order_payloads();
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(id));
    assert!(
        warnings(&run).iter().all(|w| !w.contains("replaces")),
        "{:?}",
        warnings(&run)
    );
    assert_nothing_refused(&proxy);
}
