//! Self-tests of the fault-injecting ACME proxy (certbridge-testsupport's `ca_proxy`) against a real
//! test bed, driven by instant-acme: URL rewriting, recording, injected faults, renewal
//! information and profiles, and each strict rule refusing a crafted request the way
//! Let's Encrypt does.

use certbridge_testsupport as support;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, Error,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::time::Duration;
use support::ca_proxy::{CaProxy, Endpoint, Fault, ProxyConfig, Recorded, Window};
use support::rate_limits::{Limit, RateLimits};
use support::Testbed;

/// Every ACME exchange here must finish well within this, else the test fails (never hangs).
const STEP: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// A bed whose validator accepts every challenge: the proxy tests need issuance, not DNS.
fn bed() -> Testbed {
    Testbed::start_env(&["--hosts", "3"], &[("PEBBLE_VA_ALWAYS_VALID", "1")])
}

fn proxy(bed: &Testbed, config: ProxyConfig) -> CaProxy {
    CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        config,
    )
}

async fn account(proxy: &CaProxy) -> (Account, AccountCredentials) {
    account_with(proxy)
        .await
        .expect("account through the proxy")
}

/// A new account (a new key) through the proxy, or the CA's refusal.
async fn account_with(proxy: &CaProxy) -> Result<(Account, AccountCredentials), Error> {
    let builder = Account::builder_with_root(proxy.ca_file()).expect("client with the proxy's CA");
    let new = NewAccount {
        contact: &[],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    within(
        "newAccount",
        builder.create(&new, proxy.directory_url(), None),
    )
    .await
}

fn dns(name: &str) -> Vec<Identifier> {
    vec![Identifier::Dns(name.to_owned())]
}

/// Drives `order` to a certificate (the bed accepts every challenge) and returns the leaf.
async fn issue(order: &mut Order) -> CertificateDer<'static> {
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.expect("authorization");
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Dns01)
            .expect("dns-01 challenge");
        within("challenge", challenge.set_ready())
            .await
            .expect("set_ready");
    }
    let retry = RetryPolicy::new().timeout(STEP);
    let status = within("order ready", order.poll_ready(&retry))
        .await
        .expect("poll_ready");
    assert_eq!(status, OrderStatus::Ready);
    within("finalize", order.finalize())
        .await
        .expect("finalize");
    let chain = within("certificate", order.poll_certificate(&retry))
        .await
        .expect("certificate");
    CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .expect("a certificate in the chain")
        .expect("PEM certificate")
}

fn problem_type(err: &Error) -> Option<&str> {
    match err {
        Error::Api(problem) => problem.r#type.as_deref(),
        _ => None,
    }
}

#[tokio::test]
async fn account_and_order_go_through_the_proxy_with_urls_rewritten() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default());
    let (account, _) = account(&proxy).await;
    assert!(
        account.id().starts_with(proxy.origin()),
        "account URL {} is not the proxy's",
        account.id()
    );

    let mut order = within(
        "newOrder",
        account.new_order(&NewOrder::new(&dns("host1.example.test"))),
    )
    .await
    .expect("order through the proxy");
    assert!(
        order.url().starts_with(proxy.origin()),
        "order URL {}",
        order.url()
    );
    let cert = issue(&mut order).await;
    assert!(!cert.is_empty());

    let requests = proxy.requests();
    for r in &requests {
        assert!(
            r.status.is_some_and(|s| s < 400) && r.status == r.upstream_status && !r.faulted,
            "{} {} got {:?} from Pebble {:?}",
            r.method,
            r.path,
            r.status,
            r.upstream_status
        );
    }
    let endpoints: Vec<Endpoint> = requests.iter().map(|r| r.endpoint).collect();
    let expected = [
        Endpoint::Directory,
        Endpoint::NewNonce,
        Endpoint::NewAccount,
        Endpoint::NewOrder,
        Endpoint::Authz,
        Endpoint::Challenge,
        Endpoint::Order,
        Endpoint::Finalize,
        Endpoint::Certificate,
    ];
    for wanted in expected {
        assert!(
            endpoints.contains(&wanted),
            "no {wanted:?} request among {endpoints:?}"
        );
    }
    assert!(
        !endpoints.contains(&Endpoint::Other),
        "unclassified request among {endpoints:?}"
    );

    let new_account = &proxy.requests_to(Endpoint::NewAccount)[0];
    assert_eq!(
        new_account.payload.as_ref().unwrap()["termsOfServiceAgreed"],
        true
    );
    assert!(new_account.protected.as_ref().unwrap().get("jwk").is_some());
    let new_order = &proxy.requests_to(Endpoint::NewOrder)[0];
    let protected = new_order.protected.as_ref().unwrap();
    assert_eq!(protected["kid"], account.id());
    assert_eq!(protected["url"], format!("{}/order-plz", proxy.origin()));
    assert_eq!(
        proxy.new_order_payloads()[0]["identifiers"][0]["value"],
        "host1.example.test"
    );
    println!(
        "issued through the proxy with {} recorded requests over {} endpoints; every URL on the proxy's origin",
        requests.len(),
        expected.len()
    );
}

#[tokio::test]
async fn injected_rate_limit_and_outage_reach_the_client() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default());
    let (account, _) = account(&proxy).await;

    proxy.inject(Fault::rate_limited(Endpoint::NewOrder, 1, 7));
    let err = within(
        "newOrder",
        account.new_order(&NewOrder::new(&dns("host2.example.test"))),
    )
    .await
    .err()
    .expect("the injected 429 fails the newOrder");
    assert_eq!(
        problem_type(&err),
        Some("urn:ietf:params:acme:error:rateLimited"),
        "{err:?}"
    );
    if let Error::Api(problem) = &err {
        assert_eq!(problem.status, Some(429));
    }
    assert_eq!(proxy.faults_left(), 0);
    let order = within(
        "newOrder",
        account.new_order(&NewOrder::new(&dns("host2.example.test"))),
    )
    .await
    .expect("the fault was used up: the next newOrder reaches Pebble");
    assert!(order.url().starts_with(proxy.origin()));
    let statuses: Vec<_> = proxy
        .requests_to(Endpoint::NewOrder)
        .iter()
        .map(|r| (r.status, r.faulted))
        .collect();
    assert_eq!(statuses, vec![(Some(429), true), (Some(201), false)]);

    // On the wire: status, Retry-After and the problem document, twice, then Pebble again.
    proxy.inject(Fault::unavailable(Endpoint::Directory, 2, 5));
    let fetch = || {
        std::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "--cacert"])
            .arg(proxy.ca_file())
            .arg(proxy.directory_url())
            .output()
            .expect("run curl")
    };
    for _ in 0..2 {
        let out = String::from_utf8_lossy(&fetch().stdout).to_lowercase();
        assert!(out.starts_with("http/1.1 503"), "{out}");
        assert!(out.contains("retry-after: 5\r\n"), "{out}");
        assert!(
            out.contains("urn:ietf:params:acme:error:serverinternal"),
            "{out}"
        );
    }
    let out = String::from_utf8_lossy(&fetch().stdout).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains(&format!("\"newOrder\":\"{}/order-plz\"", proxy.origin())),
        "{out}"
    );
    println!("429 rateLimited on newOrder seen by instant-acme, then a 201; 503 + Retry-After: 5 twice on the wire, then 200");
}

#[tokio::test]
async fn renewal_info_windows_and_replaces_are_served_and_recorded() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default().with_ari());
    proxy.set_ari_retry_after(3600);
    let (account, _) = account(&proxy).await;
    let mut order = within(
        "newOrder",
        account.new_order(&NewOrder::new(&dns("host3.example.test"))),
    )
    .await
    .expect("order");
    let cert = issue(&mut order).await;
    let id = CertificateIdentifier::try_from(&cert).expect("ARI id of the issued certificate");

    // No window configured: 404, recorded all the same.
    let err = within("renewalInfo", account.renewal_info(&id))
        .await
        .expect_err("no window yet");
    let fetched = proxy.requests_to(Endpoint::RenewalInfo);
    assert_eq!(fetched.last().and_then(|r| r.status), Some(404), "{err:?}");

    let window = Window::from_now(-3600, 7200);
    proxy.set_window(&id.to_string(), window.clone());
    let (info, retry) = within("renewalInfo", account.renewal_info(&id))
        .await
        .expect("window served");
    let rfc3339 = time::format_description::well_known::Rfc3339;
    assert_eq!(
        info.suggested_window.start.format(&rfc3339).unwrap(),
        window.start
    );
    assert_eq!(
        info.suggested_window.end.format(&rfc3339).unwrap(),
        window.end
    );
    assert!(
        retry > Duration::from_secs(3500) && retry <= Duration::from_secs(3600),
        "{retry:?}"
    );

    // A default window answers for every other certificate.
    let other = CertificateIdentifier {
        authority_key_identifier: "AAAA".into(),
        serial: "AQ".into(),
    };
    proxy.set_default_window(Some(Window::new(
        "2030-01-01T00:00:00Z",
        "2030-01-02T00:00:00Z",
    )));
    let (info, _) = within("renewalInfo", account.renewal_info(&other))
        .await
        .expect("default window");
    assert_eq!(info.suggested_window.start.year(), 2030);
    assert_eq!(
        proxy.ari_fetches(),
        vec![id.to_string(), id.to_string(), "AAAA.AQ".to_owned()]
    );

    // The renewal names what it replaces; the proxy records it and reflects it in the order.
    let ids = dns("host3.example.test");
    let renewal = NewOrder::new(&ids).replaces(id.clone());
    let mut order = within("newOrder", account.new_order(&renewal))
        .await
        .expect("renewal order");
    assert_eq!(
        order.state().replaces.as_ref().map(|r| r.to_string()),
        Some(id.to_string())
    );
    let refreshed = within("order", order.refresh())
        .await
        .expect("order refresh");
    assert_eq!(
        refreshed.replaces.as_ref().map(|r| r.to_string()),
        Some(id.to_string())
    );
    assert_eq!(
        proxy.new_order_payloads().last().unwrap()["replaces"],
        id.to_string()
    );

    // An injected fault only for orders that name a certificate (here one nothing replaced,
    // which the strict rules let through).
    proxy.inject(
        Fault::problem(
            Endpoint::NewOrder,
            1,
            409,
            "alreadyReplaced",
            "already replaced",
        )
        .when_payload_has("replaces"),
    );
    let plain = within("newOrder", account.new_order(&NewOrder::new(&ids))).await;
    assert!(
        plain.is_ok(),
        "an order without replaces is untouched: {:?}",
        plain.err()
    );
    let err = within(
        "newOrder",
        account.new_order(&NewOrder::new(&ids).replaces(other.clone())),
    )
    .await
    .err()
    .expect("alreadyReplaced");
    assert_eq!(
        problem_type(&err),
        Some("urn:ietf:params:acme:error:alreadyReplaced")
    );
    assert_eq!(proxy.faults_left(), 0);
    assert!(proxy.strict_rejections().is_empty());
    println!(
        "ARI: 404 without a window, window {}..{} with Retry-After 3600 s, default window, {} fetches recorded; replaces {id} recorded and reflected; alreadyReplaced only with replaces",
        window.start,
        window.end,
        proxy.ari_fetches().len()
    );
}

#[tokio::test]
async fn profiles_are_listed_recorded_and_checked() {
    let bed = bed();
    let profiles = [
        ("classic", "the default profile"),
        ("tlsserver", "45-day server certificates"),
        ("shortlived", "160-hour certificates"),
    ];
    let proxy = proxy(&bed, ProxyConfig::default().with_profiles(&profiles));
    let (account, _) = account(&proxy).await;
    let mut listed: Vec<(String, String)> = account
        .profiles()
        .map(|p| (p.name.to_owned(), p.description.to_owned()))
        .collect();
    listed.sort();
    let mut wanted: Vec<(String, String)> = profiles
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    wanted.sort();
    assert_eq!(listed, wanted);

    let ids = dns("host1.example.test");
    let mut order = within(
        "newOrder",
        account.new_order(&NewOrder::new(&ids).profile("shortlived")),
    )
    .await
    .expect("order with a profile");
    assert_eq!(order.state().profile.as_deref(), Some("shortlived"));
    let cert = issue(&mut order).await;
    assert!(!cert.is_empty());
    assert_eq!(
        order.state().profile.as_deref(),
        Some("shortlived"),
        "finalize/order objects keep the profile"
    );

    let err = within(
        "newOrder",
        account.new_order(&NewOrder::new(&ids).profile("nosuch")),
    )
    .await
    .err()
    .expect("unknown profile refused");
    assert_eq!(
        problem_type(&err),
        Some("urn:ietf:params:acme:error:invalidProfile")
    );
    let recorded: Vec<_> = proxy
        .new_order_payloads()
        .iter()
        .map(|p| p["profile"].clone())
        .collect();
    assert_eq!(
        recorded,
        vec![serde_json::json!("shortlived"), serde_json::json!("nosuch")]
    );
    println!("profiles listed: {listed:?}; shortlived ordered, issued and recorded; unknown profile -> invalidProfile");
}

#[tokio::test]
async fn hanging_and_dropped_requests_give_no_answer() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default());
    let (account, _) = account(&proxy).await;
    let ids = dns("host2.example.test");

    proxy.inject(Fault::hang(Endpoint::NewOrder, 1));
    let started = std::time::Instant::now();
    let hung = tokio::time::timeout(
        Duration::from_secs(2),
        account.new_order(&NewOrder::new(&ids)),
    )
    .await;
    assert!(
        hung.is_err(),
        "a hanging newOrder answered: {:?}",
        hung.map(|r| r.map(|o| o.url().to_owned()))
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let hanging = proxy.requests_to(Endpoint::NewOrder);
    assert_eq!(hanging.len(), 1);
    assert_eq!((hanging[0].status, hanging[0].faulted), (None, true));

    proxy.inject(Fault::drop_connection(Endpoint::NewOrder, 1));
    let err = within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .err()
        .expect("dropped");
    assert!(
        !matches!(err, Error::Api(_)),
        "a dropped connection is not a problem document: {err:?}"
    );

    let order = within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .expect("faults used up");
    assert!(order.url().starts_with(proxy.origin()));

    // Pebble creates the order, the client never hears of it.
    proxy.inject(Fault::drop_after_forward(Endpoint::NewOrder, 1));
    let lost = within("newOrder", account.new_order(&NewOrder::new(&ids))).await;
    assert!(lost.is_err(), "the answer was dropped");
    let last = proxy.requests_to(Endpoint::NewOrder).pop().unwrap();
    assert_eq!((last.status, last.upstream_status), (None, Some(201)));

    proxy.inject(Fault::delay(
        Endpoint::NewOrder,
        1,
        Duration::from_millis(1500),
    ));
    let started = std::time::Instant::now();
    within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .expect("a delayed newOrder still succeeds");
    let delayed = started.elapsed();
    assert!(delayed >= Duration::from_millis(1500), "{delayed:?}");
    println!(
        "hang: no answer within 2 s; drop: transport error {err}; drop after forward: Pebble 201, client error; delay 1.5 s: answered after {delayed:?}"
    );
}

/// One answer as curl saw it: status, head (lower-cased, values too), body (JSON, or null).
struct Raw {
    status: u16,
    head: String,
    body: serde_json::Value,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .map(|v| v.trim_end_matches('\r'))
        })
    }

    fn problem(&self) -> (&str, u64, &str) {
        (
            self.body["type"].as_str().unwrap_or(""),
            self.body["status"].as_u64().unwrap_or(0),
            self.body["detail"].as_str().unwrap_or(""),
        )
    }
}

/// Sends `method url` to the proxy with curl: `content_type` None sends no Content-Type at all.
fn raw(proxy: &CaProxy, method: &str, url: &str, content_type: Option<&str>, body: &[u8]) -> Raw {
    use std::io::Write;
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "20", "-H", "Expect:", "--cacert"])
        .arg(proxy.ca_file());
    match method {
        "HEAD" => {
            cmd.arg("-I");
        }
        m => {
            cmd.args(["-X", m]);
        }
    }
    if method == "POST" {
        let ct = content_type.map_or("Content-Type:".to_owned(), |c| format!("Content-Type: {c}"));
        cmd.args(["-H", &ct, "--data-binary", "@-"]);
    }
    cmd.arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run curl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status from curl: {text}"));
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

/// The last request the proxy recorded.
fn last(proxy: &CaProxy) -> Recorded {
    proxy.requests().pop().expect("a recorded request")
}

/// Content-Type, POST-as-GET and nonce rules: each crafted request gets Let's Encrypt's
/// problem document from the proxy itself (Pebble never sees it), while instant-acme's own
/// requests pass.
#[tokio::test]
async fn strict_rules_refuse_wrong_content_type_plain_gets_and_replayed_nonces() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default().with_ari());
    let (account, _) = account(&proxy).await;
    let mut order = within(
        "newOrder",
        account.new_order(&NewOrder::new(&dns("host1.example.test"))),
    )
    .await
    .expect("order");
    let cert = issue(&mut order).await;
    assert!(
        proxy.strict_rejections().is_empty(),
        "instant-acme broke a rule: {:?}",
        proxy.strict_rejections()
    );
    let order_url = order.url().to_owned();
    let state = order.state();
    let resources = [
        ("order", order_url),
        ("authorization", state.authorizations[0].url.clone()),
        (
            "certificate",
            state.certificate.clone().expect("certificate URL"),
        ),
        ("finalize", state.finalize.clone()),
        ("account", account.id().to_owned()),
        ("newOrder", format!("{}/order-plz", proxy.origin())),
    ];

    // POST-as-GET: a plain GET (or HEAD) of a resource is refused with 405 and Allow: POST.
    for (what, url) in &resources {
        for method in ["GET", "HEAD"] {
            let got = raw(&proxy, method, url, None, b"");
            assert_eq!(got.status, 405, "{method} {what}");
            assert_eq!(got.header("allow"), Some("post"), "{method} {what}");
            if method == "GET" {
                assert_eq!(
                    got.problem(),
                    (
                        "urn:ietf:params:acme:error:malformed",
                        405,
                        "Method not allowed"
                    ),
                    "{what}"
                );
            }
            let r = last(&proxy);
            assert_eq!(
                (r.strict, r.upstream_status),
                (Some("post_as_get"), None),
                "{method} {what}"
            );
        }
    }
    // ...but the directory, newNonce and renewalInfo are read with GET.
    assert_eq!(
        raw(&proxy, "GET", &proxy.directory_url(), None, b"").status,
        200
    );
    let nonce = raw(
        &proxy,
        "HEAD",
        &format!("{}/nonce-plz", proxy.origin()),
        None,
        b"",
    );
    assert_eq!(nonce.status, 200);
    assert!(nonce.header("replay-nonce").is_some());
    proxy.set_default_window(Some(Window::from_now(3600, 7200)));
    let id = CertificateIdentifier::try_from(&cert).unwrap();
    let info = raw(
        &proxy,
        "GET",
        &format!("{}/renewal-info/{id}", proxy.origin()),
        None,
        b"",
    );
    assert_eq!(info.status, 200, "{}", info.body);

    // A replayed request (instant-acme's own signed newOrder): badNonce with a fresh nonce.
    let sent = proxy.requests_to(Endpoint::NewOrder)[0].clone();
    let used = sent.protected.as_ref().unwrap()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/order-plz", proxy.origin());
    let replay = raw(
        &proxy,
        "POST",
        &url,
        Some("application/jose+json"),
        &sent.body,
    );
    let (kind, status, detail) = replay.problem();
    assert_eq!(
        (replay.status, kind, status),
        (400, "urn:ietf:params:acme:error:badNonce", 400)
    );
    assert!(detail.contains(&used), "{detail}");
    let fresh = replay.header("replay-nonce").expect("a fresh nonce");
    assert!(!fresh.is_empty() && fresh != used.to_ascii_lowercase());
    let r = last(&proxy);
    assert_eq!((r.strict, r.upstream_status), (Some("nonce"), None));

    // A nonce counts as used even when the proxy answered without asking Pebble (a fault).
    proxy.inject(Fault::rate_limited(Endpoint::NewOrder, 1, 1));
    let ids = dns("host2.example.test");
    assert!(within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .is_err());
    let faulted = proxy.requests_to(Endpoint::NewOrder).pop().unwrap();
    assert!(faulted.faulted && faulted.upstream_status.is_none());
    let replay = raw(
        &proxy,
        "POST",
        &url,
        Some("application/jose+json"),
        &faulted.body,
    );
    assert_eq!(replay.problem().0, "urn:ietf:params:acme:error:badNonce");

    // Content-Type: anything but application/jose+json, or none, is malformed (400).
    for (ct, what) in [
        (
            Some("application/json"),
            "Invalid Content-Type header on POST",
        ),
        (
            Some("application/jose+json; charset=utf-8"),
            "Invalid Content-Type header on POST",
        ),
        (None, "No Content-Type header on POST"),
    ] {
        let got = raw(&proxy, "POST", &url, ct, &sent.body);
        let (kind, status, detail) = got.problem();
        assert_eq!(
            (got.status, kind, status),
            (400, "urn:ietf:params:acme:error:malformed", 400),
            "{ct:?}"
        );
        assert!(
            detail.contains(what) && detail.contains("\"application/jose+json\""),
            "{detail}"
        );
        assert!(got.header("replay-nonce").is_some());
        assert_eq!(last(&proxy).strict, Some("content_type"));
    }

    // instant-acme goes on unhindered: it never reuses a nonce.
    within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .expect("a fresh request passes");
    let refused: Vec<_> = proxy
        .strict_rejections()
        .iter()
        .map(|r| r.strict.unwrap())
        .collect();
    assert_eq!(
        refused.len(),
        2 * resources.len() + 1 + 1 + 3,
        "{refused:?}"
    );
    println!(
        "strict: {} GET/HEAD of POST-only resources -> 405 Allow: POST; replayed nonce -> badNonce + fresh Replay-Nonce; 3 wrong Content-Types -> 400 malformed; instant-acme untouched",
        2 * resources.len()
    );
}

/// RFC 9773 5 as Let's Encrypt applies it: a certificate with a replacement order that is
/// neither invalid nor expired, or that was finalized, cannot be named in `replaces` again.
#[tokio::test]
async fn replaces_is_refused_while_a_replacement_order_is_live_or_finalized() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default().with_ari());
    let (account, _) = account(&proxy).await;
    let ids = dns("host2.example.test");
    let mut first = within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .expect("order");
    let cert = issue(&mut first).await;
    let id = CertificateIdentifier::try_from(&cert).unwrap();
    let renewal = NewOrder::new(&ids).replaces(id.clone());

    let mut pending = within("newOrder", account.new_order(&renewal))
        .await
        .expect("the first replacement order");
    assert_eq!(proxy.replaced_cert_ids(), vec![id.to_string()]);
    let refused = |err: Error| {
        let Error::Api(p) = &err else {
            panic!("not a problem: {err:?}")
        };
        assert_eq!(
            (p.r#type.as_deref(), p.status),
            (
                Some("urn:ietf:params:acme:error:alreadyReplaced"),
                Some(409)
            ),
            "{p:?}"
        );
        p.detail.clone().unwrap_or_default()
    };
    let detail = refused(
        within("newOrder", account.new_order(&renewal))
            .await
            .err()
            .expect("a second replacement while the first is pending"),
    );
    // Let's Encrypt names the serial in hex.
    let serial_hex: String = cert_serial(&cert);
    assert!(
        detail.contains(&format!("serial \"{serial_hex}\""))
            && detail.contains("already has a replacement order"),
        "{detail}"
    );
    let r = last(&proxy);
    assert_eq!(
        (r.strict, r.upstream_status),
        (Some("already_replaced"), None)
    );
    // Another certificate, or no `replaces`, is not affected.
    within("newOrder", account.new_order(&NewOrder::new(&ids)))
        .await
        .expect("an order without replaces");

    // Deactivating the pending order's authorization makes it invalid: replaces is free again.
    let mut authzs = pending.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.expect("authorization");
        within("deactivate", authz.deactivate())
            .await
            .expect("deactivate");
    }
    assert!(proxy.replaced_cert_ids().is_empty());
    let mut second = within("newOrder", account.new_order(&renewal))
        .await
        .expect("a replacement order after the first turned invalid");
    issue(&mut second).await;

    // A finalized replacement counts for good.
    assert_eq!(proxy.replaced_cert_ids(), vec![id.to_string()]);
    refused(
        within("newOrder", account.new_order(&renewal))
            .await
            .err()
            .expect("replaced for good"),
    );
    let rules: Vec<_> = proxy
        .strict_rejections()
        .iter()
        .map(|r| r.strict.unwrap())
        .collect();
    assert_eq!(rules, vec!["already_replaced", "already_replaced"]);
    println!("alreadyReplaced 409 while pending ({detail}); accepted after deactivation; refused again once finalized");
}

/// Let's Encrypt's rate limits, made small: 429 `rateLimited` with `Retry-After` and Boulder's
/// detail for a third account from one IP, a second certificate under one registered domain and
/// a third for one exact set of names; a renewal of an issued set skips the registered-domain
/// limit but not the exact-set one, and one naming the certificate it `replaces` skips all.
#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_exempt_ari_renewals() {
    let bed = bed();
    let mut config = ProxyConfig::default().with_ari();
    let week = Duration::from_secs(7 * 86400);
    config.strict.rate_limits = RateLimits {
        new_accounts_per_ip: Some(Limit::new(2, Duration::from_secs(3 * 3600))),
        certs_per_registered_domain: Some(Limit::new(1, week)),
        certs_per_exact_set: Some(Limit::new(2, week)),
        ..RateLimits::lets_encrypt()
    };
    let proxy = proxy(&bed, config);
    let limited = |err: Error| {
        let Error::Api(p) = &err else {
            panic!("not a problem: {err:?}")
        };
        assert_eq!(
            (p.r#type.as_deref(), p.status),
            (Some("urn:ietf:params:acme:error:rateLimited"), Some(429)),
            "{p:?}"
        );
        let r = last(&proxy);
        assert_eq!((r.strict, r.upstream_status), (Some("rate_limit"), None));
        let secs: u64 = r.retry_after.as_deref().unwrap_or("").parse().unwrap_or(0);
        (p.detail.clone().unwrap_or_default(), secs)
    };

    let (account, _) = account(&proxy).await;
    let _second = account_with(&proxy).await.expect("a second account");
    let (detail, secs) = limited(account_with(&proxy).await.err().expect("a third account"));
    assert!(
        detail.starts_with(
            "too many new registrations (2) from this IP address in the last 3h0m0s, retry after "
        ) && detail.ends_with(
            " UTC: see https://letsencrypt.org/docs/rate-limits/#new-registrations-per-ip-address"
        ),
        "{detail}"
    );
    assert!(
        (5300..=5400).contains(&secs),
        "Retry-After {secs}: one account back per 90 min"
    );

    let host1 = dns("host1.example.test");
    let mut first = within("newOrder", account.new_order(&NewOrder::new(&host1)))
        .await
        .expect("the first certificate under example.test");
    let cert = issue(&mut first).await;
    let (detail, secs) = limited(
        within(
            "newOrder",
            account.new_order(&NewOrder::new(&dns("host2.example.test"))),
        )
        .await
        .err()
        .expect("a second name under example.test"),
    );
    assert!(
        detail.starts_with("too many certificates (1) already issued for \"example.test\" in the last 168h0m0s, retry after ")
            && detail.ends_with(": see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain"),
        "{detail}"
    );
    assert!(secs > 7 * 86400 - 120, "Retry-After {secs}");

    // The same set again is a renewal: no registered-domain limit, but the exact set counts.
    within("newOrder", account.new_order(&NewOrder::new(&host1)))
        .await
        .expect("a renewal of host1 (second of its exact set)");
    let (detail, _) = limited(
        within("newOrder", account.new_order(&NewOrder::new(&host1)))
            .await
            .err()
            .expect("a third certificate for one exact set"),
    );
    assert!(
        detail.starts_with("too many certificates (2) already issued for this exact set of identifiers in the last 168h0m0s, retry after ")
            && detail.ends_with(": see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers"),
        "{detail}"
    );
    // An ARI renewal naming the certificate it replaces is exempt from every limit.
    let id = CertificateIdentifier::try_from(&cert).unwrap();
    within(
        "newOrder",
        account.new_order(&NewOrder::new(&host1).replaces(id)),
    )
    .await
    .expect("an ARI renewal over every limit");
    let rules: Vec<_> = proxy
        .strict_rejections()
        .iter()
        .map(|r| (r.strict.unwrap(), r.status))
        .collect();
    assert_eq!(rules, vec![("rate_limit", Some(429)); 3]);
    println!("429 rateLimited with Retry-After for accounts per IP, registered domain and exact set; renewal and replaces exemptions hold");
}

/// The serial of a DER certificate in lower-case hex (as in Let's Encrypt's problem details).
fn cert_serial(cert: &CertificateDer<'_>) -> String {
    let id = CertificateIdentifier::try_from(cert).unwrap().to_string();
    let serial = id.split_once('.').unwrap().1;
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(serial)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Let's Encrypt's profiles and their name limits: 25 for tlsserver and shortlived, 100 for
/// classic and for orders naming no profile.
#[tokio::test]
async fn orders_over_the_profile_name_limit_are_refused_as_lets_encrypt_does() {
    let bed = bed();
    let proxy = proxy(&bed, ProxyConfig::default().with_le_profiles());
    let (account, _) = account(&proxy).await;
    let mut offered: Vec<String> = account.profiles().map(|p| p.name.to_owned()).collect();
    offered.sort();
    assert_eq!(offered, ["classic", "shortlived", "tlsserver"]);
    let names = |n: usize| -> Vec<Identifier> {
        (0..n)
            .map(|i| Identifier::Dns(format!("n{i}.example.test")))
            .collect()
    };
    let (n25, n26, n100, n101) = (names(25), names(26), names(100), names(101));
    let cases: [(&[Identifier], Option<&str>, Option<usize>); 7] = [
        (&n26, Some("tlsserver"), Some(25)),
        (&n26, Some("shortlived"), Some(25)),
        (&n25, Some("tlsserver"), None),
        (&n26, Some("classic"), None),
        (&n100, None, None),
        (&n101, None, Some(100)),
        (&n101, Some("classic"), Some(100)),
    ];
    for (ids, profile, refused_at) in cases {
        let mut req = NewOrder::new(ids);
        if let Some(p) = profile {
            req = req.profile(p);
        }
        let got = within("newOrder", account.new_order(&req)).await;
        match (refused_at, got) {
            (None, Ok(order)) => assert!(order.url().starts_with(proxy.origin())),
            (Some(max), Err(Error::Api(p))) => {
                assert_eq!(
                    (p.r#type.as_deref(), p.status),
                    (Some("urn:ietf:params:acme:error:malformed"), Some(400))
                );
                let detail = p.detail.unwrap_or_default();
                assert!(
                    detail.ends_with(&format!("Order cannot contain more than {max} DNS names")),
                    "{detail}"
                );
                let r = last(&proxy);
                assert_eq!((r.strict, r.upstream_status), (Some("max_names"), None));
            }
            (want, got) => panic!(
                "{} names, {profile:?}: wanted refusal at {want:?}, got {:?}",
                ids.len(),
                got.map(|o| o.url().to_owned())
            ),
        }
    }
    println!(
        "26 names: tlsserver/shortlived refused at 25, classic accepted; 101 names refused at 100"
    );
}

/// docs/testbed.md has a row for every strict rule, and the name limits the proxy emulates are
/// the ones certbridge knows (`policy::LE_PROFILES`), with the lifetimes the doc states.
#[test]
fn the_documented_rules_match_the_code() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/testbed.md"),
    )
    .expect("docs/testbed.md");
    for rule in support::ca_proxy::STRICT_RULES {
        assert!(
            doc.contains(&format!("| `{rule}`: ")),
            "docs/testbed.md has no row for the strict rule `{rule}`"
        );
    }
    use certbridge_acme::policy::{human_duration, LE_PROFILES};
    let proxy: Vec<(String, usize)> = support::ca_proxy::LE_PROFILES
        .iter()
        .map(|(n, _, max)| (n.to_string(), *max))
        .collect();
    let client: Vec<(String, usize)> = LE_PROFILES
        .iter()
        .map(|l| (l.profile.to_owned(), l.max_names))
        .collect();
    assert_eq!(
        proxy, client,
        "the proxy's and certbridge's Let's Encrypt limits differ"
    );
    assert_eq!(
        support::ca_proxy::LE_CLASSIC_MAX_NAMES,
        certbridge_acme::config::MAX_NAMES
    );
    for l in LE_PROFILES {
        assert!(
            doc.contains(&format!("`{}` {}", l.profile, l.max_names)),
            "docs/testbed.md does not give {}'s {} names",
            l.profile,
            l.max_names
        );
        for d in [l.pending_authz_lifetime, l.order_lifetime] {
            assert!(doc.contains(&human_duration(d)), "{}: {d} s", l.profile);
        }
    }
}
