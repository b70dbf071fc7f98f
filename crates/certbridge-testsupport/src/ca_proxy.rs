//! A fault-injecting ACME proxy for the integration tests: it sits in front of Pebble, adds
//! what Pebble 2.4.0 lacks (renewal information, RFC 9773, and `meta.profiles`), refuses what
//! current Pebble refuses (a request without `User-Agent`), records every request and answers
//! chosen requests with rate limits, outages, custom problems, hangs or dropped connections.
//!
//! Start one with [`CaProxy::start`] in front of a bed's Pebble. It runs on its own thread
//! with its own tokio runtime, so blocking and async tests can both use it; it stops on drop.
//!
//! How requests reach Pebble: the client's `Host` header (the proxy's `127.0.0.1:<port>`) is
//! forwarded unchanged. Pebble builds every URL it returns from that header and checks JWS
//! `url`/`kid` values against it, so clients only ever see the proxy's origin; any
//! `https://127.0.0.1:<pebble port>` left in a body or a `Location`/`Link` header is rewritten
//! as well. JWS bodies are forwarded byte for byte (the proxy holds no account key and cannot
//! re-sign): Pebble 2.4.0 ignores the `profile` and `replaces` fields of a newOrder, so the
//! proxy reflects them into the order objects it returns, as RFC 9773 and profile-aware CAs do.
//!
//! Strict by default ([`StrictRules`]): it refuses, with the problem documents Let's Encrypt
//! sends, what real CAs refuse and Pebble 2.4.0 lets through or never sees — a request without a
//! `User-Agent`, a POST without `Content-Type: application/jose+json`, a GET where POST-as-GET
//! is required, a nonce used twice, a `replaces` naming a certificate that already has a live
//! replacement order, and more names than the order's profile allows. docs/testbed.md lists each rule with its source.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const ACME_ERROR: &str = "urn:ietf:params:acme:error:";
const ARI_PATH: &str = "/renewal-info";
/// Order fields Pebble 2.4.0 ignores and the proxy reflects (RFC 9773 4.2, profiles draft).
const REFLECTED_ORDER_FIELDS: [&str; 2] = ["replaces", "profile"];

/// The kind of ACME resource a request addresses, from Pebble 2.4.0's URL layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Directory,
    NewNonce,
    NewAccount,
    NewOrder,
    /// An order object (`/my-order/<id>`).
    Order,
    Authz,
    Challenge,
    Finalize,
    Certificate,
    /// An account object (`/my-account/<id>`).
    Account,
    KeyChange,
    Revoke,
    /// The proxy's own ARI resource (`/renewal-info/<cert id>`).
    RenewalInfo,
    Other,
    /// Only as a fault target: every request.
    Any,
}

impl Endpoint {
    pub fn of(path: &str) -> Endpoint {
        let path = path.split('?').next().unwrap_or(path);
        let exact = [
            ("/dir", Endpoint::Directory),
            ("/nonce-plz", Endpoint::NewNonce),
            ("/sign-me-up", Endpoint::NewAccount),
            ("/order-plz", Endpoint::NewOrder),
            ("/rollover-account-key", Endpoint::KeyChange),
            ("/revoke-cert", Endpoint::Revoke),
        ];
        let prefixed = [
            ("/my-order/", Endpoint::Order),
            ("/authZ/", Endpoint::Authz),
            ("/chalZ/", Endpoint::Challenge),
            ("/finalize-order/", Endpoint::Finalize),
            ("/certZ/", Endpoint::Certificate),
            ("/my-account/", Endpoint::Account),
            ("/renewal-info/", Endpoint::RenewalInfo),
        ];
        exact
            .iter()
            .find(|(p, _)| *p == path)
            .or_else(|| prefixed.iter().find(|(p, _)| path.starts_with(p)))
            .map_or(Endpoint::Other, |(_, e)| *e)
    }

    fn matches(self, actual: Endpoint) -> bool {
        self == Endpoint::Any || self == actual
    }
}

/// What a fault does to a matching request.
#[derive(Clone, Debug)]
pub enum FaultAction {
    /// Answer without asking Pebble: `status`, an ACME problem document of type `problem`
    /// (a full URN, or a short name such as `rateLimited` under `urn:ietf:params:acme:error:`)
    /// and, when set, a `Retry-After` header (seconds or an HTTP date, sent verbatim).
    Respond {
        status: u16,
        problem: String,
        detail: String,
        retry_after: Option<String>,
    },
    /// Read the request, never answer (until the proxy is dropped).
    Hang,
    /// Read the request, close the connection without an answer; Pebble never sees it.
    Drop,
    /// Forward the request to Pebble, then close the connection: the CA acted, the client
    /// never learns it.
    DropAfterForward,
    /// Wait, then forward as usual.
    Delay(Duration),
}

/// A fault for the next `times` requests to `endpoint` (`usize::MAX`: every one).
#[derive(Clone, Debug)]
pub struct Fault {
    pub endpoint: Endpoint,
    pub times: usize,
    pub action: FaultAction,
    /// Only requests whose JWS payload has this top-level field (e.g. `replaces`).
    pub payload_field: Option<String>,
}

impl Fault {
    pub fn new(endpoint: Endpoint, times: usize, action: FaultAction) -> Fault {
        Fault {
            endpoint,
            times,
            action,
            payload_field: None,
        }
    }

    /// 429 `rateLimited` with `Retry-After: <secs>`.
    pub fn rate_limited(endpoint: Endpoint, times: usize, retry_after_secs: u64) -> Fault {
        let detail = format!("injected rate limit, retry after {retry_after_secs} s");
        Fault::problem(endpoint, times, 429, "rateLimited", &detail)
            .retry_after(&retry_after_secs.to_string())
    }

    /// 503 `serverInternal` with `Retry-After: <secs>` (a CA in maintenance).
    pub fn unavailable(endpoint: Endpoint, times: usize, retry_after_secs: u64) -> Fault {
        Fault::problem(endpoint, times, 503, "serverInternal", "injected outage")
            .retry_after(&retry_after_secs.to_string())
    }

    /// Any problem, e.g. `Fault::problem(Endpoint::NewOrder, 1, 409, "alreadyReplaced", "..")`.
    pub fn problem(
        endpoint: Endpoint,
        times: usize,
        status: u16,
        problem: &str,
        detail: &str,
    ) -> Fault {
        let action = FaultAction::Respond {
            status,
            problem: problem.to_owned(),
            detail: detail.to_owned(),
            retry_after: None,
        };
        Fault::new(endpoint, times, action)
    }

    pub fn hang(endpoint: Endpoint, times: usize) -> Fault {
        Fault::new(endpoint, times, FaultAction::Hang)
    }

    pub fn drop_connection(endpoint: Endpoint, times: usize) -> Fault {
        Fault::new(endpoint, times, FaultAction::Drop)
    }

    pub fn drop_after_forward(endpoint: Endpoint, times: usize) -> Fault {
        Fault::new(endpoint, times, FaultAction::DropAfterForward)
    }

    pub fn delay(endpoint: Endpoint, times: usize, by: Duration) -> Fault {
        Fault::new(endpoint, times, FaultAction::Delay(by))
    }

    /// Sets (or replaces) the `Retry-After` value of a `Respond` fault.
    pub fn retry_after(mut self, value: &str) -> Fault {
        if let FaultAction::Respond { retry_after, .. } = &mut self.action {
            *retry_after = Some(value.to_owned());
        }
        self
    }

    /// Restricts the fault to requests whose payload carries `field`.
    pub fn when_payload_has(mut self, field: &str) -> Fault {
        self.payload_field = Some(field.to_owned());
        self
    }
}

/// An RFC 9773 suggested renewal window (RFC 3339 times, sent verbatim).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: String,
    pub end: String,
    pub explanation_url: Option<String>,
}

impl Window {
    pub fn new(start: &str, end: &str) -> Window {
        Window {
            start: start.to_owned(),
            end: end.to_owned(),
            explanation_url: None,
        }
    }

    /// A window from `start_secs` to `end_secs` relative to now (negative: in the past).
    pub fn from_now(start_secs: i64, end_secs: i64) -> Window {
        let at = |secs: i64| {
            (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
                .replace_nanosecond(0)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default()
        };
        Window::new(&at(start_secs), &at(end_secs))
    }
}

/// What the proxy adds to Pebble.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Add `renewalInfo` to the directory and serve `GET /renewal-info/<cert id>`.
    pub renewal_info: bool,
    /// `Retry-After` (seconds) sent with every renewal-information answer.
    pub ari_retry_after_secs: u64,
    /// `meta.profiles` to add (name, description); empty: none. A newOrder naming another
    /// profile gets 400 `invalidProfile`.
    pub profiles: Vec<(String, String)>,
    /// Reflect a newOrder's `replaces`/`profile` into the order objects Pebble returns.
    pub reflect_order_fields: bool,
    /// How long one forwarded request may take before the proxy drops the client's connection.
    pub upstream_timeout: Duration,
    /// What the proxy refuses on its own, as real CAs do (all on by default).
    pub strict: StrictRules,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            renewal_info: false,
            ari_retry_after_secs: 21600,
            profiles: Vec::new(),
            reflect_order_fields: true,
            upstream_timeout: Duration::from_secs(30),
            strict: StrictRules::default(),
        }
    }
}

impl ProxyConfig {
    pub fn with_ari(mut self) -> ProxyConfig {
        self.renewal_info = true;
        self
    }

    pub fn with_profiles(mut self, profiles: &[(&str, &str)]) -> ProxyConfig {
        self.profiles = profiles
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect();
        self
    }

    /// Let's Encrypt's profiles, with their name limits: `classic` 100, `tlsserver` and
    /// `shortlived` 25 (an order without a profile gets classic's).
    pub fn with_le_profiles(mut self) -> ProxyConfig {
        self = self.with_profiles(&LE_PROFILES.map(|(n, d, _)| (n, d)));
        self.strict.profile_max_names = LE_PROFILES
            .iter()
            .map(|(n, _, max)| (n.to_string(), *max))
            .collect();
        self.strict.max_names = Some(LE_CLASSIC_MAX_NAMES);
        self
    }

    /// Only the faults and extensions: none of the strict rules.
    pub fn lenient(mut self) -> ProxyConfig {
        self.strict = StrictRules::none();
        self
    }
}

/// Let's Encrypt's default (`classic`) profile's limit on names per order.
pub const LE_CLASSIC_MAX_NAMES: usize = 100;
/// Let's Encrypt's profiles (letsencrypt.org/docs/profiles): name, description, names per order.
pub const LE_PROFILES: [(&str, &str, usize); 3] = [
    (
        "classic",
        "90-day certificates, up to 100 names",
        LE_CLASSIC_MAX_NAMES,
    ),
    (
        "tlsserver",
        "45-day server certificates, up to 25 names",
        25,
    ),
    ("shortlived", "160-hour certificates, up to 25 names", 25),
];

/// The ids of the strict rules, as [`Recorded::strict`] names them (docs/testbed.md has a row
/// for each).
pub const STRICT_RULES: [&str; 6] = [
    "user_agent",
    "post_as_get",
    "content_type",
    "nonce",
    "already_replaced",
    "max_names",
];

/// The requests the proxy refuses itself, as Let's Encrypt (Boulder) and current Pebble do,
/// before any fault or forwarding. Each rejection is recorded ([`Recorded::strict`]).
#[derive(Clone, Debug)]
pub struct StrictRules {
    /// A request without a (non-empty) `User-Agent`: 400 `malformed` (RFC 8555 6.1; Pebble
    /// after 2.4.0, PR #530).
    pub user_agent: bool,
    /// A POST without `Content-Type: application/jose+json`: 400 `malformed` (RFC 8555 6.2).
    pub content_type: bool,
    /// GET/HEAD of anything but the directory, newNonce and renewalInfo: 405 `malformed` with
    /// `Allow: POST` (RFC 8555 6.3, POST-as-GET).
    pub post_as_get: bool,
    /// A JWS nonce the proxy has seen before: 400 `badNonce` with a fresh `Replay-Nonce`
    /// (RFC 8555 6.5).
    pub nonces: bool,
    /// A newOrder whose `replaces` names a certificate that already has a replacement order
    /// which is neither invalid nor expired (or was finalized): 409 `alreadyReplaced`
    /// (RFC 9773 5).
    pub replaced: bool,
    /// At most this many names in an order without a profile (or with one not listed in
    /// `profile_max_names`): 400 `malformed`; `None`: no limit.
    pub max_names: Option<usize>,
    /// Per profile name, at most this many names in its orders.
    pub profile_max_names: Vec<(String, usize)>,
}

impl Default for StrictRules {
    fn default() -> StrictRules {
        StrictRules {
            user_agent: true,
            content_type: true,
            post_as_get: true,
            nonces: true,
            replaced: true,
            max_names: Some(LE_CLASSIC_MAX_NAMES),
            profile_max_names: Vec::new(),
        }
    }
}

impl StrictRules {
    pub fn none() -> StrictRules {
        StrictRules {
            user_agent: false,
            content_type: false,
            post_as_get: false,
            nonces: false,
            replaced: false,
            max_names: None,
            profile_max_names: Vec::new(),
        }
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/order-plz`.
    pub path: String,
    pub endpoint: Endpoint,
    /// Decoded JWS protected header (`alg`, `nonce`, `url`, `kid` or `jwk`) of a POST.
    pub protected: Option<Value>,
    /// Decoded JWS payload; `None` for GETs and POST-as-GET (empty payload).
    pub payload: Option<Value>,
    /// The body as received (a signed JWS for POSTs), e.g. to replay it.
    pub body: Bytes,
    /// Status the client got; `None` while pending, for a hang or a dropped connection.
    pub status: Option<u16>,
    /// Status Pebble answered; `None` when the request was not (yet) forwarded.
    pub upstream_status: Option<u16>,
    /// Whether a fault acted on this request.
    pub faulted: bool,
    /// The strict rule that refused it (`content_type`, `post_as_get`, `nonce`,
    /// `already_replaced`, `max_names`), if one did.
    pub strict: Option<&'static str>,
    pub at: Instant,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Upstream {
    /// `https://127.0.0.1:<pebble port>`
    origin: String,
    client: HttpsClient,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    requests: Vec<Recorded>,
    windows: HashMap<String, Window>,
    default_window: Option<Window>,
    ari_fetches: Vec<String>,
    /// finalize URL -> fields to reflect into that order's objects.
    orders: HashMap<String, Map<String, Value>>,
    /// What the strict rules remember.
    strict: StrictState,
}

struct Shared {
    origin: String,
    config: Mutex<ProxyConfig>,
    upstream: Mutex<Arc<Upstream>>,
    state: Mutex<State>,
}

/// Poisoning only means a test panicked elsewhere; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running proxy; stops on drop (hanging connections are closed then).
pub struct CaProxy {
    shared: Arc<Shared>,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CaProxy {
    /// Starts a proxy for the ACME directory `upstream_directory_url` (Pebble's, e.g. the bed's
    /// `TESTBED_ACME_DIRECTORY`), trusting `upstream_ca_file` for Pebble's HTTPS certificate.
    /// Panics when it cannot start (test setup).
    pub fn start(
        upstream_directory_url: &str,
        upstream_ca_file: impl AsRef<Path>,
        config: ProxyConfig,
    ) -> CaProxy {
        let upstream = Upstream::new(upstream_directory_url, upstream_ca_file.as_ref());
        let dir = tempfile::Builder::new()
            .prefix("certbridge-proxy-")
            .tempdir()
            .expect("proxy temp dir");
        let (tls, ca_pem) = tls_identity();
        let ca_file = dir.path().join("proxy-ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write proxy CA");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            origin: format!("https://127.0.0.1:{port}"),
            config: Mutex::new(config),
            upstream: Mutex::new(Arc::new(upstream)),
            state: Mutex::new(State::default()),
        });

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ca-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, acceptor, serving) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task, hanging ones included.
            })
            .expect("proxy thread");
        CaProxy {
            shared,
            ca_file,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:<port>`
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// `https://127.0.0.1:<port>/dir`: give clients this, never Pebble's.
    pub fn directory_url(&self) -> String {
        format!("{}/dir", self.shared.origin)
    }

    /// PEM of the throw-away CA that signed the proxy's 127.0.0.1/localhost certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Points the proxy at another Pebble (e.g. after a restart on new ports); clients keep
    /// their directory URL.
    pub fn set_upstream(&self, directory_url: &str, ca_file: impl AsRef<Path>) {
        *lock(&self.shared.upstream) = Arc::new(Upstream::new(directory_url, ca_file.as_ref()));
        // Another CA knows none of the orders: nothing it has is replaced (nonces stay used).
        lock(&self.shared.state).strict.forget_orders();
    }

    pub fn set_config(&self, config: ProxyConfig) {
        *lock(&self.shared.config) = config;
    }

    pub fn config(&self) -> ProxyConfig {
        lock(&self.shared.config).clone()
    }

    /// Adds a fault; the first matching fault with uses left acts on a request.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.state).faults.push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.state).faults.clear();
    }

    /// Uses left over all faults (`usize::MAX` when one never runs out).
    pub fn faults_left(&self) -> usize {
        let state = lock(&self.shared.state);
        state
            .faults
            .iter()
            .fold(0, |sum, f| sum.saturating_add(f.times))
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.state).requests.clone()
    }

    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<Recorded> {
        let state = lock(&self.shared.state);
        state
            .requests
            .iter()
            .filter(|r| endpoint.matches(r.endpoint))
            .cloned()
            .collect()
    }

    /// The decoded payloads of every newOrder, oldest first (also faulted ones).
    pub fn new_order_payloads(&self) -> Vec<Value> {
        self.requests_to(Endpoint::NewOrder)
            .into_iter()
            .filter_map(|r| r.payload)
            .collect()
    }

    pub fn clear_requests(&self) {
        let mut state = lock(&self.shared.state);
        state.requests.clear();
        state.ari_fetches.clear();
    }

    /// Serves `window` for the certificate `cert_id` (`base64url(AKI).base64url(serial)`).
    pub fn set_window(&self, cert_id: &str, window: Window) {
        lock(&self.shared.state)
            .windows
            .insert(cert_id.to_owned(), window);
    }

    /// Serves `window` for every certificate without its own; `None`: those get 404.
    pub fn set_default_window(&self, window: Option<Window>) {
        lock(&self.shared.state).default_window = window;
    }

    pub fn set_ari_retry_after(&self, secs: u64) {
        lock(&self.shared.config).ari_retry_after_secs = secs;
    }

    /// The certificate ids of every renewal-information GET, oldest first (also faulted ones).
    pub fn ari_fetches(&self) -> Vec<String> {
        lock(&self.shared.state).ari_fetches.clone()
    }

    /// Every request a strict rule refused, oldest first.
    pub fn strict_rejections(&self) -> Vec<Recorded> {
        let state = lock(&self.shared.state);
        state
            .requests
            .iter()
            .filter(|r| r.strict.is_some())
            .cloned()
            .collect()
    }

    /// The certificate ids the proxy counts as replaced now (a live or finalized replacement
    /// order names them), sorted.
    pub fn replaced_cert_ids(&self) -> Vec<String> {
        let state = lock(&self.shared.state);
        let mut ids: Vec<String> = state
            .strict
            .replacements
            .keys()
            .filter(|id| state.strict.replacement_of(id).is_some())
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

impl Drop for CaProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Upstream {
    fn new(directory_url: &str, ca_file: &Path) -> Upstream {
        let origin = directory_url
            .strip_suffix("/dir")
            .unwrap_or_else(|| panic!("upstream directory {directory_url} does not end in /dir"))
            .to_owned();
        let connector = crate::raw_http::https_connector(ca_file);
        Upstream {
            origin,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

/// A throw-away CA and a leaf for 127.0.0.1/localhost signed by it: (server config, CA PEM).
fn tls_identity() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "certbridge test proxy CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("sign leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), ca_cert.pem())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            // A failed handshake or a closed connection only ends this connection.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
struct DropConnection(String);

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection dropped: {}", self.0)
    }
}

impl std::error::Error for DropConnection {}

type Answer = Result<Response<Full<Bytes>>, DropConnection>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(DropConnection(format!("reading the request: {e}"))),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let endpoint = Endpoint::of(&path);
    let (protected, payload) = decode_jws(&body);
    let refused = strict_check(
        &shared,
        &parts,
        endpoint,
        protected.as_ref(),
        payload.as_ref(),
    );
    let (index, fault) = {
        let mut state = lock(&shared.state);
        let fault = state
            .faults
            .iter_mut()
            .filter(|_| refused.is_none())
            .find(|f| {
                f.times > 0
                    && f.endpoint.matches(endpoint)
                    && f.payload_field.as_ref().is_none_or(|field| {
                        payload.as_ref().is_some_and(|p| p.get(field).is_some())
                    })
            })
            .map(|f| {
                f.times = f.times.saturating_sub(usize::from(f.times != usize::MAX));
                f.action.clone()
            });
        // A refused request is answered by the proxy's rule alone: it fetches nothing.
        if endpoint == Endpoint::RenewalInfo && refused.is_none() {
            let id = path
                .trim_start_matches("/renewal-info/")
                .split('?')
                .next()
                .unwrap_or("");
            state.ari_fetches.push(id.to_owned());
        }
        state.requests.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            endpoint,
            protected,
            payload: payload.clone(),
            body: body.clone(),
            status: None,
            upstream_status: None,
            faulted: fault.is_some(),
            strict: refused.as_ref().map(|r| r.rule),
            at: Instant::now(),
        });
        (state.requests.len() - 1, fault)
    };
    if let Some(refusal) = refused {
        let rsp = strict_answer(&shared, refusal, parts.method == hyper::Method::POST).await;
        shared.update(index, |r| r.status = Some(rsp.status().as_u16()));
        return Ok(rsp);
    }

    let call = Call {
        parts,
        body,
        path,
        endpoint,
        payload,
        index,
    };
    let answer = answer(&shared, call, fault).await;
    if let Ok(rsp) = &answer {
        shared.update(index, |r| r.status = Some(rsp.status().as_u16()));
    }
    answer
}

/// One request being answered.
struct Call {
    parts: hyper::http::request::Parts,
    body: Bytes,
    path: String,
    endpoint: Endpoint,
    payload: Option<Value>,
    /// Its index in the recorded requests.
    index: usize,
}

impl Shared {
    fn update(&self, index: usize, change: impl FnOnce(&mut Recorded)) {
        // Requests may have been cleared meanwhile; then there is nothing to update.
        if let Some(r) = lock(&self.state).requests.get_mut(index) {
            change(r);
        }
    }
}

async fn answer(shared: &Shared, call: Call, fault: Option<FaultAction>) -> Answer {
    let Call {
        parts,
        body,
        path,
        endpoint,
        payload,
        index,
    } = call;
    let mut drop_after = false;
    match fault {
        Some(FaultAction::Respond {
            status,
            problem: kind,
            detail,
            retry_after,
        }) => {
            let mut rsp = problem(status, &kind, &detail);
            if let Some(value) = retry_after.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
                rsp.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Ok(rsp);
        }
        Some(FaultAction::Hang) => std::future::pending::<()>().await,
        Some(FaultAction::Drop) => return Err(DropConnection("injected".into())),
        Some(FaultAction::DropAfterForward) => drop_after = true,
        Some(FaultAction::Delay(by)) => tokio::time::sleep(by).await,
        None => {}
    }
    let config = lock(&shared.config).clone();
    if endpoint == Endpoint::RenewalInfo && config.renewal_info {
        return Ok(renewal_info(shared, &path, &config));
    }
    if endpoint == Endpoint::NewOrder && !config.profiles.is_empty() {
        if let Some(wanted) = payload
            .as_ref()
            .and_then(|p| p.get("profile"))
            .and_then(Value::as_str)
        {
            if !config.profiles.iter().any(|(name, _)| name == wanted) {
                return Ok(problem(
                    400,
                    "invalidProfile",
                    &format!("profile {wanted:?} is not offered"),
                ));
            }
        }
    }

    let upstream = lock(&shared.upstream).clone();
    let (mut head, body) = match tokio::time::timeout(
        config.upstream_timeout,
        forward(&upstream, parts, body, &path),
    )
    .await
    {
        Ok(Ok(rsp)) => rsp,
        Ok(Err(e)) => return Err(DropConnection(format!("upstream: {e}"))),
        Err(_) => return Err(DropConnection("upstream timed out".into())),
    };
    shared.update(index, |r| r.upstream_status = Some(head.status.as_u16()));
    if drop_after {
        return Err(DropConnection("injected after forwarding".into()));
    }
    let body = rewrite(
        shared,
        &upstream,
        &mut head,
        body,
        endpoint,
        payload.as_ref(),
        &config,
    );
    strict_observe(
        shared,
        endpoint,
        &path,
        payload.as_ref(),
        head.status,
        &body,
    );
    Ok(Response::from_parts(head, Full::new(body)))
}

async fn forward(
    upstream: &Upstream,
    parts: hyper::http::request::Parts,
    body: Bytes,
    path: &str,
) -> Result<(hyper::http::response::Parts, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let mut req = Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", upstream.origin));
    for (name, value) in &parts.headers {
        // The Host header stays the proxy's: Pebble derives its URLs and JWS checks from it.
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            req = req.header(name, value);
        }
    }
    let rsp = upstream.client.request(req.body(Full::new(body))?).await?;
    let (mut parts, body) = rsp.into_parts();
    let body = body.collect().await?.to_bytes();
    for hop in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ] {
        parts.headers.remove(hop);
    }
    Ok((parts, body))
}

/// Replaces Pebble's origin by the proxy's and adds the proxy's extensions to the directory
/// and to order objects.
fn rewrite(
    shared: &Shared,
    upstream: &Upstream,
    head: &mut hyper::http::response::Parts,
    body: Bytes,
    endpoint: Endpoint,
    payload: Option<&Value>,
    config: &ProxyConfig,
) -> Bytes {
    let swap = |s: &str| s.replace(&upstream.origin, &shared.origin);
    for name in [header::LOCATION, header::LINK] {
        let values: Vec<_> = head
            .headers
            .get_all(&name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(swap)
            .collect();
        if !values.is_empty() {
            head.headers.remove(&name);
            for v in values
                .iter()
                .filter_map(|v| header::HeaderValue::from_str(v).ok())
            {
                head.headers.append(&name, v);
            }
        }
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    let text = swap(text);
    let mut json = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(json)) => json,
        _ => return Bytes::from(text),
    };
    if endpoint == Endpoint::Directory {
        if config.renewal_info {
            json.insert(
                "renewalInfo".into(),
                json!(format!("{}{ARI_PATH}", shared.origin)),
            );
        }
        if !config.profiles.is_empty() {
            let profiles: Map<String, Value> = config
                .profiles
                .iter()
                .map(|(n, d)| (n.clone(), json!(d)))
                .collect();
            let meta = json.entry("meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("profiles".into(), Value::Object(profiles));
            }
        }
    }
    if let Some(finalize) = json
        .get("finalize")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        let mut state = lock(&shared.state);
        if endpoint == Endpoint::NewOrder && config.reflect_order_fields {
            let fields: Map<String, Value> = REFLECTED_ORDER_FIELDS
                .iter()
                .filter_map(|f| Some((f.to_string(), payload?.get(*f)?.clone())))
                .collect();
            if !fields.is_empty() {
                state.orders.insert(finalize.clone(), fields);
            }
        }
        if let Some(fields) = state.orders.get(&finalize) {
            json.extend(fields.clone());
        }
    }
    Bytes::from(Value::Object(json).to_string())
}

fn renewal_info(shared: &Shared, path: &str, config: &ProxyConfig) -> Response<Full<Bytes>> {
    let id = path
        .trim_start_matches("/renewal-info/")
        .split('?')
        .next()
        .unwrap_or("");
    let window = {
        let state = lock(&shared.state);
        state
            .windows
            .get(id)
            .or(state.default_window.as_ref())
            .cloned()
    };
    let Some(window) = window else {
        return problem(
            404,
            "malformed",
            &format!("no renewal information for {id:?}"),
        );
    };
    let mut info = json!({"suggestedWindow": {"start": window.start, "end": window.end}});
    if let Some(url) = window.explanation_url {
        info["explanationURL"] = json!(url);
    }
    let mut rsp = Response::new(Full::new(Bytes::from(info.to_string())));
    let headers = rsp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(config.ari_retry_after_secs),
    );
    rsp
}

fn problem(status: u16, kind: &str, detail: &str) -> Response<Full<Bytes>> {
    let kind = if kind.starts_with("urn:") {
        kind.to_owned()
    } else {
        format!("{ACME_ERROR}{kind}")
    };
    let body = json!({"type": kind, "detail": detail, "status": status});
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    rsp
}

/// The decoded protected header and payload of a flattened JWS body, where present.
fn decode_jws(body: &[u8]) -> (Option<Value>, Option<Value>) {
    let Ok(Value::Object(jws)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let part = |name: &str| {
        let text = jws.get(name)?.as_str()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    (part("protected"), part("payload"))
}

// Strict rules: what Let's Encrypt (Boulder) and current Pebble refuse. Kept apart from the
// forwarding above; docs/testbed.md lists each rule with its source.

const JOSE_JSON: &str = "application/jose+json";

/// Why a strict rule refuses a request, and the answer.
#[derive(Debug)]
struct Refusal {
    rule: &'static str,
    status: u16,
    kind: &'static str,
    detail: String,
}

/// What the strict rules remember between requests.
#[derive(Default)]
struct StrictState {
    /// Every JWS nonce seen in a POST (used once, even when the proxy answered itself).
    nonces: HashSet<String>,
    /// Certificate id (`replaces`) -> finalize URL of its latest replacement order.
    replacements: HashMap<String, String>,
    /// Finalize URL -> what the proxy last saw of that order.
    orders: HashMap<String, SeenOrder>,
    /// Authorization path -> its last status seen.
    authzs: HashMap<String, String>,
}

struct SeenOrder {
    status: String,
    /// Paths of its authorizations.
    authzs: Vec<String>,
    expires: Option<time::OffsetDateTime>,
}

impl StrictState {
    fn forget_orders(&mut self) {
        self.replacements.clear();
        self.orders.clear();
        self.authzs.clear();
    }

    /// The finalize URL of the replacement order that makes `cert_id` replaced, if any:
    /// Boulder's `ReplacementOrderExists` — a finalized one, or one neither invalid nor
    /// expired. An order with a failed, deactivated or expired authorization is invalid.
    fn replacement_of(&self, cert_id: &str) -> Option<&str> {
        let finalize = self.replacements.get(cert_id)?;
        let order = self.orders.get(finalize)?;
        let live = match order.status.as_str() {
            "valid" => true,
            "invalid" => false,
            _ => {
                let failed = order.authzs.iter().any(|a| {
                    matches!(
                        self.authzs.get(a).map(String::as_str),
                        Some("invalid" | "deactivated" | "expired" | "revoked")
                    )
                });
                let expired = order
                    .expires
                    .is_some_and(|e| e <= time::OffsetDateTime::now_utc());
                !failed && !expired
            }
        };
        live.then_some(finalize.as_str())
    }
}

/// Endpoints only POST (POST-as-GET included) may reach.
fn post_only(endpoint: Endpoint) -> bool {
    !matches!(
        endpoint,
        Endpoint::Directory | Endpoint::NewNonce | Endpoint::RenewalInfo | Endpoint::Other
    )
}

/// The serial of an ARI certificate id (`base64url(AKI).base64url(serial)`) in hex, as
/// Let's Encrypt names it in `alreadyReplaced`; the id itself when it does not parse.
fn serial_hex(cert_id: &str) -> String {
    cert_id
        .split_once('.')
        .and_then(|(_, serial)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(serial)
                .ok()
        })
        .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_else(|| cert_id.to_owned())
}

/// The first strict rule `request` breaks, in the order Boulder checks them (method,
/// Content-Type, nonce, then the newOrder's `replaces` and its names). A POST's nonce counts
/// as used once the Content-Type passed, whatever happens to the request afterwards.
fn strict_check(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    endpoint: Endpoint,
    protected: Option<&Value>,
    payload: Option<&Value>,
) -> Option<Refusal> {
    let rules = lock(&shared.config).strict.clone();
    let post = parts.method == hyper::Method::POST;
    if rules.user_agent
        && parts
            .headers
            .get(header::USER_AGENT)
            .is_none_or(|ua| ua.is_empty())
    {
        return Some(Refusal {
            rule: "user_agent",
            status: 400,
            kind: "malformed",
            detail: "All requests MUST include a User-Agent header".into(),
        });
    }
    if rules.post_as_get && !post && post_only(endpoint) {
        return Some(Refusal {
            rule: "post_as_get",
            status: 405,
            kind: "malformed",
            detail: "Method not allowed".into(),
        });
    }
    if !post {
        return None;
    }
    if rules.content_type {
        let wrong = match parts.headers.get(header::CONTENT_TYPE) {
            None => Some("No Content-Type header on POST"),
            Some(v) if v.as_bytes() != JOSE_JSON.as_bytes() => {
                Some("Invalid Content-Type header on POST")
            }
            Some(_) => None,
        };
        if let Some(what) = wrong {
            return Some(Refusal {
                rule: "content_type",
                status: 400,
                kind: "malformed",
                detail: format!(
                    "Unable to validate JWS :: {what}. Content-Type must be {JOSE_JSON:?}"
                ),
            });
        }
    }
    let mut state = lock(&shared.state);
    let nonce = protected
        .and_then(|p| p.get("nonce"))
        .and_then(Value::as_str);
    if let (true, Some(nonce)) = (rules.nonces, nonce) {
        if !state.strict.nonces.insert(nonce.to_owned()) {
            return Some(Refusal {
                rule: "nonce",
                status: 400,
                kind: "badNonce",
                detail: format!(
                    "Unable to validate JWS :: JWS has an invalid anti-replay nonce: {nonce:?}"
                ),
            });
        }
    }
    if endpoint != Endpoint::NewOrder {
        return None;
    }
    let payload = payload?;
    if let (true, Some(id)) = (
        rules.replaced,
        payload.get("replaces").and_then(Value::as_str),
    ) {
        if state.strict.replacement_of(id).is_some() {
            return Some(Refusal {
                rule: "already_replaced",
                status: 409,
                kind: "alreadyReplaced",
                detail: format!(
                    "Could not validate ARI 'replaces' field :: cannot indicate an order replaces certificate with serial {:?}, which already has a replacement order",
                    serial_hex(id)
                ),
            });
        }
    }
    let profile = payload.get("profile").and_then(Value::as_str);
    let limit = profile
        .and_then(|p| {
            rules
                .profile_max_names
                .iter()
                .find(|(name, _)| name == p)
                .map(|(_, max)| *max)
        })
        .or(rules.max_names)?;
    // Boulder counts distinct lower-cased names.
    let names: HashSet<String> = payload
        .get("identifiers")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| i.get("value").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    (names.len() > limit).then(|| Refusal {
        rule: "max_names",
        status: 400,
        kind: "malformed",
        detail: format!(
            "Error creating new order :: Order cannot contain more than {limit} DNS names"
        ),
    })
}

/// The problem document for a refusal; a refused POST carries a fresh nonce from Pebble (as
/// every CA's answer to a POST does), a refused GET `Allow: POST`.
async fn strict_answer(shared: &Shared, refusal: Refusal, post: bool) -> Response<Full<Bytes>> {
    let mut rsp = problem(refusal.status, refusal.kind, &refusal.detail);
    if refusal.rule == "post_as_get" {
        rsp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    }
    if post {
        if let Some(nonce) = fresh_nonce(shared)
            .await
            .and_then(|n| header::HeaderValue::from_str(&n).ok())
        {
            rsp.headers_mut().insert("replay-nonce", nonce);
        }
    }
    rsp
}

/// A new nonce from Pebble's newNonce (HEAD), `None` when it does not answer in time.
async fn fresh_nonce(shared: &Shared) -> Option<String> {
    let upstream = lock(&shared.upstream).clone();
    let req = Request::builder()
        .method(hyper::Method::HEAD)
        .uri(format!("{}/nonce-plz", upstream.origin))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let rsp = tokio::time::timeout(Duration::from_secs(10), upstream.client.request(req))
        .await
        .ok()?
        .ok()?;
    let nonce = rsp.headers().get("replay-nonce")?.to_str().ok()?;
    Some(nonce.to_owned())
}

/// Remembers what the answers say about orders and authorizations, and which certificate a
/// successful newOrder replaces.
fn strict_observe(
    shared: &Shared,
    endpoint: Endpoint,
    path: &str,
    payload: Option<&Value>,
    status: StatusCode,
    body: &[u8],
) {
    if !status.is_success() {
        return;
    }
    let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let to_path = |url: &str| {
        url.strip_prefix(shared.origin.as_str())
            .unwrap_or(url)
            .to_owned()
    };
    let status_of = |json: &Map<String, Value>| {
        json.get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut state = lock(&shared.state);
    if let Some(finalize) = json.get("finalize").and_then(Value::as_str) {
        let seen = SeenOrder {
            status: status_of(&json),
            authzs: json
                .get("authorizations")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(to_path).collect())
                .unwrap_or_default(),
            expires: json.get("expires").and_then(Value::as_str).and_then(|t| {
                // `parsing` is on through instant-acme's `time` feature.
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            }),
        };
        state.strict.orders.insert(finalize.to_owned(), seen);
        if endpoint == Endpoint::NewOrder {
            if let Some(id) = payload
                .and_then(|p| p.get("replaces"))
                .and_then(Value::as_str)
            {
                state
                    .strict
                    .replacements
                    .insert(id.to_owned(), finalize.to_owned());
            }
        }
    } else if endpoint == Endpoint::Authz && json.contains_key("status") {
        let path = path.split('?').next().unwrap_or(path).to_owned();
        state.strict.authzs.insert(path, status_of(&json));
    }
}
