//! Hand-made HTTPS requests to a CA (or the CA proxy) with exactly the headers a test gives:
//! what a non-conforming client would send, to check how strict the test CA is.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the server answered.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl RawAnswer {
    /// The body as JSON (a problem document, a directory); panics naming the body otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTPS-only HTTP/1 connector on the ring provider trusting only the PEM roots in
/// `ca_file` (the bed's or the proxy's CA).
pub fn https_connector(ca_file: &Path) -> HttpsConnector<HttpConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("read the CA file") {
        roots.add(cert.expect("a PEM certificate")).expect("a root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build()
}

/// One request with exactly `headers` (hyper adds no `User-Agent` or `Content-Type` of its
/// own), trusting the PEM roots in `ca_file`; an answer within 30 s or a panic.
pub async fn raw_request(
    method: &str,
    url: &str,
    ca_file: &Path,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawAnswer {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(https_connector(ca_file));
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("an answer within 30 s")
        .expect("request");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    RawAnswer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A GET with exactly `headers`.
pub async fn raw_get(url: &str, ca_file: &Path, headers: &[(&str, &str)]) -> RawAnswer {
    raw_request("GET", url, ca_file, headers, b"").await
}
