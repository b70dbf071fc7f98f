//! Every request identifies certbridge (RFC 8555 6.1: clients MUST send a `User-Agent`; current
//! Pebble refuses requests without one, HTTP 400 malformed). The test CA proxy refuses them as
//! current Pebble does, although the bed's Pebble 2.4.0 does not: here the proxy's refusal is
//! checked with a raw request, and renewal information (whose GETs certbridge makes itself,
//! outside instant-acme) is checked through it end to end.
#[path = "support/ca_proxy.rs"]
mod ca_proxy;
mod common;

use bytes::Bytes;
use ca_proxy::{CaProxy, Endpoint, ProxyConfig, Window};
use common::{run_module, ModuleRun, Testbed};
use http_body_util::{BodyExt, Empty};
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

/// One GET with exactly the headers given (hyper adds no `User-Agent` of its own).
async fn raw_get(
    url: &str,
    ca_file: &Path,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, Bytes) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut req = hyper::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("an answer within 30 s")
    .expect("request");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, body)
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
        let (status, headers, body) = raw_get(url, proxy.ca_file(), &[]).await;
        assert_eq!(status, 400, "{url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "urn:ietf:params:acme:error:malformed");
        assert_eq!(
            problem["detail"],
            "All requests MUST include a User-Agent header"
        );
        assert_eq!(problem["status"], 400);
        // An empty one counts as none.
        let (status, _, _) = raw_get(url, proxy.ca_file(), &[("user-agent", "")]).await;
        assert_eq!(status, 400, "{url}");
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
    let (status, _, body) = raw_get(&directory, proxy.ca_file(), &ua).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let dir: Value = serde_json::from_slice(&body).unwrap();
    assert!(dir["newOrder"].is_string(), "{dir}");
    assert_eq!(
        proxy
            .requests_to(Endpoint::Directory)
            .last()
            .and_then(|r| r.upstream_status),
        Some(200)
    );
    let (status, _, body) = raw_get(&ari, proxy.ca_file(), &ua).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(proxy.ari_fetches(), vec!["AAAA.AQ".to_owned()]);
}

fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}", run.json);
    &run.json
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
