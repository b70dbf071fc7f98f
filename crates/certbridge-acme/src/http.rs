//! The HTTP client under the ACME client: rustls on the ring provider (never a process default,
//! since aws-lc-rs is linked too), trusting a given PEM bundle or the system bundle file, names
//! resolved in-process ([`connect`]), an optional HTTP CONNECT proxy ([`proxy`]), a
//! `User-Agent` on every request, and a deadline on every request (hyper has none).

mod connect;
mod proxy;

pub use connect::ConnectFailure;
pub use proxy::{BadProxy, Proxy, ProxyPolicy};

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER, USER_AGENT as USER_AGENT_HEADER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use connect::Connector;

/// The `User-Agent` of every request: certbridge, then the ACME library (RFC 8555 6.1: clients
/// MUST send one; current Pebble refuses requests without). The library token names the
/// instant-acme version pinned in Cargo.toml (a unit test checks it against Cargo.lock).
pub const USER_AGENT: &str = concat!(
    "certbridge/",
    env!("CARGO_PKG_VERSION"),
    " instant-acme/0.8.5"
);

/// System CA bundle files, in the order the common distributions place them.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL 7+
    "/etc/ssl/ca-bundle.pem",             // openSUSE, SLES
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/ssl/cert.pem",                  // Alpine, macOS-like layouts
];

/// Largest response body accepted (certificate chains and problem documents are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Why trust roots could not be set up.
#[derive(Debug)]
pub enum RootsError {
    /// The given `ca_file` is unreadable or holds no usable certificate.
    BadCaFile { path: PathBuf, reason: String },
    /// No `ca_file` given and no system bundle found.
    NoSystemRoots { tried: Vec<String> },
}

/// A failed HTTP request, carried inside `instant_acme::Error::Other` up to the client, which
/// turns it into an `AcmeError`.
#[derive(Debug)]
pub enum HttpFailure {
    /// The request (connect, TLS, request, body) did not finish within its deadline.
    Timeout { url: String, after: Duration },
    /// Name resolution or TCP connect failed.
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed (e.g. a certificate not signed by a trusted root).
    Tls { url: String, reason: String },
    /// The proxy could not be reached or refused the tunnel.
    Proxy {
        url: String,
        proxy: String,
        reason: String,
    },
    /// Anything else on the wire (connection reset mid-response, body too large, ...).
    Other { url: String, reason: String },
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpFailure::Timeout { url, after } => {
                write!(f, "no answer from {url} within {}s", after.as_secs_f32())
            }
            HttpFailure::Unreachable { url, reason } => write!(f, "cannot reach {url}: {reason}"),
            HttpFailure::Tls { url, reason } => write!(f, "TLS with {url} failed: {reason}"),
            HttpFailure::Proxy { url, proxy, reason } => {
                write!(f, "proxy {proxy} failed for {url}: {reason}")
            }
            HttpFailure::Other { url, reason } => write!(f, "request to {url} failed: {reason}"),
        }
    }
}

impl StdError for HttpFailure {}

/// What the HTTP layer saw, shared by every clone of one client: badNonce rejections (each one
/// makes a retry) and the last Retry-After of an error answer (instant-acme drops headers of
/// error answers; the client needs it for rate limits).
#[derive(Debug, Default)]
pub struct HttpStats {
    requests: AtomicU64,
    bad_nonces: AtomicU64,
    error_retry_after: Mutex<Option<SystemTime>>,
}

impl HttpStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn bad_nonces(&self) -> u64 {
        self.bad_nonces.load(Ordering::Relaxed)
    }
    /// Takes the Retry-After of the latest error answer (if any), so it is used once.
    pub fn take_error_retry_after(&self) -> Option<SystemTime> {
        self.error_retry_after
            .lock()
            .ok()
            .and_then(|mut g| g.take())
    }
}

/// Reads every certificate of a PEM bundle into a root store.
pub fn load_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, RootsError> {
    if let Some(path) = ca_file {
        return roots_from_file(path).map_err(|reason| RootsError::BadCaFile {
            path: path.to_owned(),
            reason,
        });
    }
    let mut tried = Vec::new();
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if path.is_file() {
            if let Ok(roots) = roots_from_file(&path) {
                return Ok(roots);
            }
        }
        tried.push(path.display().to_string());
    }
    Err(RootsError::NoSystemRoots { tried })
}

fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0usize;
    for (index, item) in CertificateDer::pem_slice_iter(&data).enumerate() {
        let der = item.map_err(|e| format!("certificate {}: bad PEM: {e}", index + 1))?;
        roots
            .add(der)
            .map_err(|e| format!("certificate {}: {e}", index + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(roots)
}

/// Settings of one client.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub ca_file: Option<PathBuf>,
    pub request_timeout: Duration,
    pub proxy: ProxyPolicy,
}

/// The HTTP client handed to instant-acme. Cheap to clone; clones share the connection pool,
/// the resolver and the [`HttpStats`].
#[derive(Clone)]
pub struct AcmeHttpClient {
    client: HyperClient<hyper_rustls::HttpsConnector<Connector>, BodyWrapper<Bytes>>,
    timeout: Duration,
    stats: Arc<HttpStats>,
}

impl AcmeHttpClient {
    /// Builds the client; reads the trust roots now (fails naming the file), resolves nothing yet.
    pub fn new(settings: &HttpSettings) -> Result<AcmeHttpClient, RootsError> {
        let roots = load_roots(settings.ca_file.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RootsError::BadCaFile {
                path: settings.ca_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = Connector::new(settings.proxy.clone());
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        // Idle connections are dropped before servers usually close them (a reused connection
        // the server already closed costs a retry, see `send`).
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(15))
            .build(https);
        Ok(AcmeHttpClient {
            client,
            timeout: settings.request_timeout,
            stats: Arc::new(HttpStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }

    /// One GET, for callers outside instant-acme (and tests): status and body.
    pub async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), HttpFailure> {
        let req = Request::get(url)
            .body(BodyWrapper::<Bytes>::default())
            .map_err(|e| HttpFailure::Other {
                url: url.into(),
                reason: e.to_string(),
            })?;
        let (parts, body) = self.send(req).await?;
        Ok((parts.status, body))
    }

    /// Sends a request, retrying once when a pooled connection turns out to be closed by the
    /// server (e.g. a restarted CA). Replaying is safe in ACME: GETs are idempotent and a
    /// replayed signed POST carries a used nonce, which the CA rejects without acting.
    async fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), HttpFailure> {
        let (mut head, body) = req.into_parts();
        // Also over instant-acme's own `instant-acme/<version>`.
        head.headers
            .insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        let rebuild = || {
            let mut req = Request::new(BodyWrapper::from(body.to_vec()));
            *req.method_mut() = head.method.clone();
            *req.uri_mut() = head.uri.clone();
            *req.version_mut() = head.version;
            *req.headers_mut() = head.headers.clone();
            req
        };
        match self.send_once(rebuild()).await {
            Err(HttpFailure::Other { .. }) => self.send_once(rebuild()).await,
            other => other,
        }
    }

    async fn send_once(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), HttpFailure> {
        let url = req.uri().to_string();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let fut = self.client.request(req);
        let work = async {
            let rsp = fut.await.map_err(|e| classify(&url, &e))?;
            let (parts, body) = rsp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpFailure::Other {
                    url: url.clone(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(HttpFailure::Timeout {
                    url,
                    after: self.timeout,
                })
            }
        };
        if parts.status == StatusCode::BAD_REQUEST && is_bad_nonce(&body) {
            self.stats.bad_nonces.fetch_add(1, Ordering::Relaxed);
        }
        if !parts.status.is_success() {
            if let Some(at) = parse_retry_after(&parts.headers, SystemTime::now()) {
                if let Ok(mut slot) = self.stats.error_retry_after.lock() {
                    *slot = Some(at);
                }
            }
        }
        Ok((parts, body))
    }
}

impl HttpClient for AcmeHttpClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = this
                .send(req)
                .await
                .map_err(|f| instant_acme::Error::Other(Box::new(f)))?;
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

fn is_bad_nonce(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<TypeOnly>(body)
        .ok()
        .and_then(|t| t.kind)
        .is_some_and(|k| k == "urn:ietf:params:acme:error:badNonce")
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return now.checked_add(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(value).ok()
}

/// Turns hyper-util's error into a failure naming the URL and the cause users can act on.
fn classify(url: &str, err: &hyper_util::client::legacy::Error) -> HttpFailure {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectFailure>() {
            return match c {
                ConnectFailure::Unreachable(reason) => HttpFailure::Unreachable {
                    url: url.into(),
                    reason: reason.clone(),
                },
                ConnectFailure::Proxy { proxy, reason } => HttpFailure::Proxy {
                    url: url.into(),
                    proxy: proxy.clone(),
                    reason: reason.clone(),
                },
            };
        }
        if let Some(t) = find_rustls(e) {
            return HttpFailure::Tls {
                url: url.into(),
                reason: t.to_string(),
            };
        }
        source = e.source();
    }
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        reason.push_str(": ");
        reason.push_str(&e.to_string());
        source = e.source();
    }
    if err.is_connect() {
        HttpFailure::Unreachable {
            url: url.into(),
            reason,
        }
    } else {
        HttpFailure::Other {
            url: url.into(),
            reason,
        }
    }
}

/// The rustls error inside `e`, also when wrapped in io::Errors (hyper-rustls wraps
/// tokio-rustls's io::Error in another one, and io::Error::source skips the wrapped error).
fn find_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    let inner = e.downcast_ref::<io::Error>()?.get_ref()?;
    find_rustls(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library token of the User-Agent names the instant-acme of Cargo.lock.
    #[test]
    fn user_agent_names_certbridge_and_the_locked_instant_acme() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .expect("Cargo.lock of the workspace");
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"instant-acme\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"').to_owned())
            .expect("instant-acme in Cargo.lock");
        assert_eq!(
            USER_AGENT,
            format!(
                "certbridge/{} instant-acme/{version}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(HeaderValue::from_str(USER_AGENT).is_ok());
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = http::HeaderMap::new();
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(
            parse_retry_after(&h, now),
            Some(now + Duration::from_secs(120))
        );
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            parse_retry_after(&h, now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        // RFC 9110 5.6.7: the two obsolete date forms are read too.
        for obsolete in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            h.insert(RETRY_AFTER, obsolete.parse().unwrap());
            assert_eq!(
                parse_retry_after(&h, now),
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)),
                "{obsolete}"
            );
        }
        for bad in ["soon", "-5", "Sun, 06 Nov 1994 08:49:37 +0200"] {
            h.insert(RETRY_AFTER, bad.parse().unwrap());
            assert_eq!(parse_retry_after(&h, now), None, "{bad}");
        }
    }

    #[test]
    fn ca_bundle_loads_every_certificate_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut pem = String::new();
        for _ in 0..3 {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            pem.push_str(&params.self_signed(&key).unwrap().pem());
        }
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, &pem).unwrap();
        assert_eq!(load_roots(Some(&bundle)).unwrap().len(), 3);

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        match load_roots(Some(&empty)) {
            Err(RootsError::BadCaFile { path, reason }) => {
                assert_eq!(path, empty);
                assert!(reason.contains("no PEM certificate"), "{reason}");
            }
            other => panic!("expected BadCaFile, got {other:?}"),
        }
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            load_roots(Some(&missing)),
            Err(RootsError::BadCaFile { .. })
        ));
    }

    #[test]
    fn bad_nonce_bodies_are_recognised() {
        assert!(is_bad_nonce(
            br#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"x","status":400}"#
        ));
        assert!(!is_bad_nonce(
            br#"{"type":"urn:ietf:params:acme:error:malformed"}"#
        ));
        assert!(!is_bad_nonce(b"<html>"));
    }
}
