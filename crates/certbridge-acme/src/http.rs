//! The HTTP client under the ACME client: rustls on the ring provider (never a process default,
//! since aws-lc-rs is linked too), trusting a given PEM bundle or the system bundle file, names
//! resolved in-process by hickory-resolver (/etc/hosts, /etc/resolv.conf; a static glibc must
//! never reach NSS), an optional HTTP CONNECT proxy, and a deadline on every request (hyper has
//! none).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use http::header::RETRY_AFTER;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use tokio::net::TcpStream;

/// System CA bundle files, in the order the common distributions place them.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL 7+
    "/etc/ssl/ca-bundle.pem",             // openSUSE, SLES
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/ssl/cert.pem",                  // Alpine, macOS-like layouts
];

/// Longest wait for one address while other addresses of the host remain to be tried.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Why a proxy setting was rejected.
#[derive(Debug)]
pub struct BadProxy {
    pub proxy: String,
    pub reason: String,
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

/// A parsed HTTP CONNECT proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host name or IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// `Basic <base64>` when the URL carried user:password. Never printed.
    authorization: Option<String>,
    /// The URL as shown to users: without credentials.
    shown: String,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Proxy {
    /// Parses `http://[user:pass@]host[:port][/]` or `host:port`. Only plain-HTTP proxies
    /// (CONNECT tunnels to the HTTPS server) are supported.
    pub fn parse(input: &str) -> Result<Proxy, BadProxy> {
        let bad = |reason: &str| BadProxy {
            proxy: redact_userinfo(input),
            reason: reason.into(),
        };
        let s = input.trim();
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "scheme {scheme}:// is not supported; use an http:// (CONNECT) proxy"
                )))
            }
            None => s,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("a proxy URL has no path"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport, 3128).map_err(|r| bad(&r))?;
        let authorization = userinfo.map(|u| {
            let decoded = percent_decode(u);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded)
            )
        });
        let shown = if host.contains(':') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        };
        Ok(Proxy {
            host,
            port,
            authorization,
            shown,
        })
    }
}

/// `host[:port]` or `[v6][:port]` -> (host without brackets, port).
fn split_host_port(hostport: &str, default_port: u16) -> Result<(String, u16), String> {
    if hostport.is_empty() {
        return Err("no host".into());
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed [")?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err("junk after ]".into()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {p:?}"))?,
        None => default_port,
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!("bad host {host:?}"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => url.to_owned(),
    }
}

/// Which proxy (if any) to use for `https://host`: an explicit `proxy` option applies to every
/// request; otherwise `https_proxy`/`HTTPS_PROXY` unless `no_proxy`/`NO_PROXY` matches.
#[derive(Clone, Debug, Default)]
pub struct ProxyPolicy {
    proxy: Option<Proxy>,
    /// Lower-case suffixes / literals from NO_PROXY (empty for an explicit proxy).
    no_proxy: Vec<String>,
}

impl ProxyPolicy {
    /// `explicit` is the `proxy` option; `env` looks up an environment variable (injectable so
    /// tests need not change the process environment).
    pub fn from_settings(
        explicit: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProxyPolicy, BadProxy> {
        if let Some(p) = explicit {
            return Ok(ProxyPolicy {
                proxy: Some(Proxy::parse(p)?),
                no_proxy: Vec::new(),
            });
        }
        let pick = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| env(n))
                .find(|v| !v.trim().is_empty())
        };
        let Some(from_env) = pick(&["https_proxy", "HTTPS_PROXY"]) else {
            return Ok(ProxyPolicy::default());
        };
        let no_proxy = pick(&["no_proxy", "NO_PROXY"])
            .unwrap_or_default()
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        Ok(ProxyPolicy {
            proxy: Some(Proxy::parse(&from_env)?),
            no_proxy,
        })
    }

    /// The proxy for a request to `host` (no brackets), if any.
    pub fn proxy_for(&self, host: &str) -> Option<&Proxy> {
        let proxy = self.proxy.as_ref()?;
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let bypass = self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            // Entries may carry a port (ignored) or a leading dot / "*.".
            let entry = match split_host_port(entry, 0) {
                Ok((h, _)) => h,
                Err(_) => entry.clone(),
            };
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            if let (Ok(net), Ok(ip)) = (parse_cidr(entry), host.parse::<IpAddr>()) {
                return net.contains(ip);
            }
            host == entry || host.ends_with(&format!(".{entry}"))
        });
        (!bypass).then_some(proxy)
    }

    pub fn configured(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }
}

struct Cidr {
    net: IpAddr,
    bits: u32,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits.min(32)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits.min(128)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, ()> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().map_err(|_| ())?),
        None => (s, 128),
    };
    let net: IpAddr = addr.parse().map_err(|_| ())?;
    let bits = match net {
        IpAddr::V4(_) => bits.min(32),
        IpAddr::V6(_) => bits.min(128),
    };
    Ok(Cidr { net, bits })
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
    for (index, item) in rustls_pemfile::certs(&mut data.as_slice()).enumerate() {
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
    client: HyperClient<hyper_rustls::HttpsConnector<TunnelConnector>, BodyWrapper<Bytes>>,
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
        let connector = TunnelConnector {
            inner: Arc::new(ConnectorInner {
                proxy: settings.proxy.clone(),
                resolver: OnceLock::new(),
            }),
        };
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
        let (head, body) = req.into_parts();
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
    let format = time::format_description::well_known::Rfc2822;
    // HTTP-date (IMF-fixdate) parses as RFC 2822 once "GMT" is spelled "+0000".
    let rfc2822 = value.strip_suffix("GMT").map(|v| format!("{v}+0000"))?;
    let parsed = time::OffsetDateTime::parse(&rfc2822, &format).ok()?;
    Some(SystemTime::from(parsed))
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

/// Why the connector could not open a stream (seen by callers only inside [`HttpFailure`]).
#[derive(Debug)]
pub enum ConnectFailure {
    Unreachable(String),
    Proxy { proxy: String, reason: String },
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Unreachable(r) => f.write_str(r),
            ConnectFailure::Proxy { proxy, reason } => write!(f, "proxy {proxy}: {reason}"),
        }
    }
}

impl StdError for ConnectFailure {}

/// The TCP connector: in-process resolution, then a direct connection or a CONNECT tunnel.
#[derive(Clone)]
pub struct TunnelConnector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    proxy: ProxyPolicy,
    /// Built on first use (it needs the runtime); an error (e.g. no /etc/resolv.conf) is kept.
    resolver: OnceLock<Result<TokioResolver, String>>,
}

impl tower_service::Service<Uri> for TunnelConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.connect(dst).await.map(TokioIo::new) })
    }
}

impl ConnectorInner {
    fn resolver(&self) -> Result<&TokioResolver, ConnectFailure> {
        self.resolver
            .get_or_init(build_resolver)
            .as_ref()
            .map_err(|e| ConnectFailure::Unreachable(e.clone()))
    }

    async fn connect(&self, dst: Uri) -> Result<TcpStream, ConnectFailure> {
        let host = dst
            .host()
            .ok_or_else(|| ConnectFailure::Unreachable("URL has no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        match self.proxy.proxy_for(host) {
            None => self.connect_direct(host, port).await,
            Some(proxy) => {
                let shown = proxy.to_string();
                let fail = |reason: String| ConnectFailure::Proxy {
                    proxy: shown.clone(),
                    reason,
                };
                let mut stream = self
                    .connect_direct(&proxy.host, proxy.port)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                tunnel(&mut stream, host, port, proxy.authorization.as_deref())
                    .await
                    .map_err(fail)?;
                Ok(stream)
            }
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectFailure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self
            .resolver()?
            .lookup_ip(host)
            .await
            .map_err(|e| ConnectFailure::Unreachable(format!("cannot resolve {host}: {e}")))?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(ConnectFailure::Unreachable(format!(
                "{host} has no address"
            )));
        }
        Ok(addrs)
    }

    async fn connect_direct(&self, host: &str, port: u16) -> Result<TcpStream, ConnectFailure> {
        let addrs = self.resolve(host, port).await?;
        let mut errors = Vec::new();
        let last = addrs.len().saturating_sub(1);
        for (index, addr) in addrs.into_iter().enumerate() {
            // An address that swallows SYNs (e.g. unrouted IPv6) must not use up the request's
            // whole deadline while others remain; the last one gets what is left.
            let attempt = TcpStream::connect(addr);
            let result = if index < last {
                match tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                }
            } else {
                attempt.await
            };
            match result {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(ConnectFailure::Unreachable(format!(
            "cannot connect to {}",
            errors.join("; ")
        )))
    }
}

/// The system resolver configuration (/etc/resolv.conf), or hosts-file-only resolution when
/// there is none (names from /etc/hosts and IP literals still work).
fn build_resolver() -> Result<TokioResolver, String> {
    match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => Ok(r),
        Err(system) => {
            let config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .build()
                .map_err(|e| format!("no usable resolver ({system}; {e})"))
        }
    }
}

/// Sends `CONNECT host:port` and reads the proxy's answer head.
async fn tunnel(
    stream: &mut TcpStream,
    host: &str,
    port: u16,
    authorization: Option<&str>,
) -> Result<(), String> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    write_all(stream, head.as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        stream
            .readable()
            .await
            .map_err(|e| format!("reading the CONNECT answer: {e}"))?;
        match stream.try_read(&mut buf) {
            Ok(0) => return Err("closed the connection during CONNECT".into()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("reading the CONNECT answer: {e}")),
        }
        if let Some(end) = find_head_end(&answer) {
            if end != answer.len() {
                return Err("sent data after its CONNECT answer".into());
            }
            break;
        }
        if answer.len() > 16 * 1024 {
            return Err("CONNECT answer head too large".into());
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP proxy (answered {status_line:?})"));
    }
    if !code.starts_with('2') {
        return Err(format!("refused CONNECT to {authority}: {status_line}"));
    }
    Ok(())
}

fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn proxy_urls_parse_and_hide_credentials() {
        let p = Proxy::parse("http://user:s%40cret@proxy.example:8080/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.example", 8080));
        assert_eq!(p.to_string(), "http://proxy.example:8080");
        assert!(!format!("{p:?}").contains("cret"));
        let expected = base64::engine::general_purpose::STANDARD.encode("user:s@cret");
        assert_eq!(
            p.authorization.as_deref(),
            Some(format!("Basic {expected}").as_str())
        );
        let p = Proxy::parse("10.0.0.1:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", 3128));
        let p = Proxy::parse("http://[::1]:81").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 81));
        let e = Proxy::parse("https://u:topsecret@proxy:443").unwrap_err();
        assert!(e.reason.contains("http://"), "{}", e.reason);
        assert!(!e.proxy.contains("topsecret"), "{}", e.proxy);
        assert!(Proxy::parse("http://proxy:0").is_err());
        assert!(Proxy::parse("http://proxy:8080/path").is_err());
    }

    #[test]
    fn env_proxy_honours_no_proxy() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            (
                "NO_PROXY",
                "localhost, .internal.test,example.org:443,10.0.0.0/8",
            ),
        ]);
        let p = ProxyPolicy::from_settings(None, &env).unwrap();
        assert!(p.proxy_for("acme-v02.api.letsencrypt.org").is_some());
        assert!(p.proxy_for("localhost").is_none());
        assert!(p.proxy_for("ca.internal.test").is_none());
        assert!(p.proxy_for("example.org").is_none());
        assert!(p.proxy_for("www.example.org").is_none());
        assert!(p.proxy_for("notexample.org").is_some());
        assert!(p.proxy_for("10.1.2.3").is_none());
        assert!(p.proxy_for("11.1.2.3").is_some());
        // Lower-case variables win, as in curl.
        let env = env_of(&[("https_proxy", "http://a:1"), ("HTTPS_PROXY", "http://b:2")]);
        let p = ProxyPolicy::from_settings(None, &env).unwrap();
        assert_eq!(p.proxy_for("x.test").unwrap().host, "a");
        // NO_PROXY=* disables; no variable means no proxy.
        let env = env_of(&[("HTTPS_PROXY", "http://a:1"), ("no_proxy", "*")]);
        assert!(ProxyPolicy::from_settings(None, &env)
            .unwrap()
            .proxy_for("x.test")
            .is_none());
        let none = ProxyPolicy::from_settings(None, &env_of(&[])).unwrap();
        assert!(none.proxy_for("x.test").is_none());
        // An explicit option applies to everything, NO_PROXY notwithstanding.
        let env = env_of(&[("NO_PROXY", "*")]);
        let p = ProxyPolicy::from_settings(Some("http://p:8"), &env).unwrap();
        assert!(p.proxy_for("localhost").is_some());
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
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), None);
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
