//! Self-tests of the fault-injecting ACME proxy (certbridge-testsupport's `ca_proxy`) against
//! a real test bed, driven by instant-acme: URL rewriting, recording, injected faults, renewal
//! information and profiles.

use certbridge_testsupport as support;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, Error,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::time::Duration;
use support::ca_proxy::{CaProxy, Endpoint, Fault, ProxyConfig, Window};
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
    .expect("account through the proxy")
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

    // alreadyReplaced only for orders that name a replaced certificate.
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
    let err = within("newOrder", account.new_order(&renewal))
        .await
        .err()
        .expect("alreadyReplaced");
    assert_eq!(
        problem_type(&err),
        Some("urn:ietf:params:acme:error:alreadyReplaced")
    );
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
