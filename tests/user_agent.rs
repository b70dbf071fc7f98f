//! Every request identifies certbridge (RFC 8555 6.1: clients MUST send a `User-Agent`; current
//! Pebble refuses requests without one, HTTP 400 malformed). The test CA proxy refuses them as
//! current Pebble does, although the bed's Pebble 2.4.0 does not: here the proxy's refusal is
//! checked with a raw request, and renewal information (whose GETs certbridge makes itself,
//! outside instant-acme) is checked through it end to end.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use support::{ok, raw_get, run_module, CaProxy, Endpoint, ProxyConfig, Testbed, Window};

fn bed() -> Testbed {
    Testbed::start_env(&["--hosts", "1"], &[("PEBBLE_VA_ALWAYS_VALID", "1")])
}

fn strict_proxy(bed: &Testbed, config: ProxyConfig) -> CaProxy {
    CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        config,
    )
}

/// Requests the proxy refused the way current Pebble does (never forwarded, no fault).
fn refused(proxy: &CaProxy) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .filter(|r| r.status == Some(400) && r.upstream_status.is_none() && !r.faulted)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn the_proxy_refuses_a_request_without_user_agent_as_current_pebble_does() {
    let bed = bed();
    let proxy = strict_proxy(&bed, ProxyConfig::default().with_ari());
    proxy.set_default_window(Some(Window::new(
        "2030-01-01T00:00:00Z",
        "2030-01-02T00:00:00Z",
    )));
    let directory = proxy.directory_url();
    let ari = format!("{}/renewal-info/AAAA.AQ", proxy.origin());

    for url in [&directory, &ari] {
        let answer = raw_get(url, proxy.ca_file(), &[]).await;
        assert_eq!(answer.status, 400, "{url}: {:?}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        let problem = answer.json();
        assert_eq!(problem["type"], "urn:ietf:params:acme:error:malformed");
        assert_eq!(
            problem["detail"],
            "All requests MUST include a User-Agent header"
        );
        assert_eq!(problem["status"], 400);
        // An empty one counts as none.
        let empty = raw_get(url, proxy.ca_file(), &[("user-agent", "")]).await;
        assert_eq!(empty.status, 400, "{url}");
    }
    let seen = proxy.requests();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen
        .iter()
        .all(|r| r.status == Some(400) && r.upstream_status.is_none() && !r.faulted));
    assert!(
        proxy.ari_fetches().is_empty(),
        "a refused GET serves nothing"
    );

    // With one, the same requests go through (the directory to Pebble, ARI to the proxy).
    let ua = [("user-agent", "raw-probe/1")];
    let answer = raw_get(&directory, proxy.ca_file(), &ua).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let dir = answer.json();
    assert!(dir["newOrder"].is_string(), "{dir}");
    assert_eq!(
        proxy
            .requests_to(Endpoint::Directory)
            .last()
            .and_then(|r| r.upstream_status),
        Some(200)
    );
    let answer = raw_get(&ari, proxy.ca_file(), &ua).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(proxy.ari_fetches(), vec!["AAAA.AQ".to_owned()]);
}

/// The renewal-information check of `acme_request` (the directory GET and the ARI GET, both
/// outside instant-acme) gets the CA's window through the strict proxy, as does everything
/// the modules send to order and finalize. Without a `User-Agent` on those GETs the check
/// failed and the lifetime rule decided, with a warning.
#[test]
fn renewal_information_reaches_a_ca_that_requires_user_agent() {
    let bed = bed();
    let proxy = strict_proxy(&bed, ProxyConfig::default().with_ari());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let args = |extra: Value| {
        let mut v = json!({
            "directory": proxy.directory_url(),
            "ca_file": proxy.ca_file(),
            "cert_root": root.join("certs"),
            "log_file": root.join("certbridge.log"),
            "jitter_seed": "ua-host",
            "certs": {"main": ["dyn1.example.test"]},
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
            a.extend(b);
        }
        v
    };

    let req = run_module("acme_request", &args(json!({"ari_interval": 0})));
    assert_eq!(ok(&req)["pending"], json!(["main"]), "{}", req.json);
    let fin = run_module("acme_finalize", &args(json!({})));
    assert_eq!(ok(&fin)["updated"], json!(["main"]), "{}", fin.json);
    let _ = run_module("acme_finalize", &args(json!({"ack": ["main"]})));
    assert_eq!(refused(&proxy), Vec::<String>::new());

    let pem = std::fs::read_to_string(root.join("certs/dyn1.example.test/cert.pem")).unwrap();
    let leaf = certbridge_acme::certinfo::pem_certs(&pem, "leaf").unwrap()[0].clone();
    let id = certbridge_acme::client::ari_cert_id(&leaf).unwrap();
    let window = Window::from_now(10 * 86_400, 11 * 86_400);
    proxy.set_window(&id, window.clone());
    proxy.clear_requests();

    let run = run_module("acme_request", &args(json!({"ari_interval": 0})));
    let r = ok(&run);
    let main = &r["certs"]["main"];
    assert_eq!(main["reason"], "valid", "{r}");
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let unix = |t: &str| {
        time::OffsetDateTime::parse(t, rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    assert_eq!(
        main["ari"]["window_start"].as_i64(),
        Some(unix(&window.start)),
        "{r}"
    );
    assert_eq!(
        main["ari"]["window_end"].as_i64(),
        Some(unix(&window.end)),
        "{r}"
    );
    assert!(r["warnings"].as_array().is_none_or(|w| w.is_empty()), "{r}");
    assert_eq!(proxy.ari_fetches(), vec![id]);
    assert_eq!(refused(&proxy), Vec::<String>::new());
    println!(
        "strict proxy: issuance and the renewal-information check went through, window {}..{}",
        window.start, window.end
    );
}
