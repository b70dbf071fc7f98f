//! CA faults against the real module binaries: Pebble stopped between acme_request and
//! acme_finalize, rate limits and outages with Retry-After inside and beyond the deadline, a
//! rate-limited newAccount on one of two hosts, and connections that hang. Faults come from
//! the fault-injecting proxy in front of Pebble (certbridge-testsupport's `ca_proxy`); values
//! are published by TSIG-signed nsupdate into the bed's dynamic signing zone.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::time::Duration;
use support::ca_proxy::{CaProxy, Endpoint, Fault, ProxyConfig};
use support::{ok, ports_in_flux, publish, stop_pebble, Host, PebbleCommand, Testbed};

/// acme_request (must succeed), publish, acme_finalize (must succeed).
fn pulse(bed: &Testbed, host: &Host, extra: &Value) -> (Value, Value) {
    let req = host.request(extra);
    let req = ok(&req).clone();
    publish(bed, &req["acme_txt_required"]);
    let fin = host.finalize(extra);
    (req, ok(&fin).clone())
}

fn proxy_for(bed: &Testbed) -> CaProxy {
    CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        ProxyConfig::default(),
    )
}

fn retry_not_before(host: &Host, cert: &str) -> Option<i64> {
    host.cert_meta(cert)["retry_not_before"].as_i64()
}

#[test]
fn pebble_stopped_between_request_and_finalize_changes_nothing_and_the_next_pulse_completes() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let host = Host::on_bed(&bed).with(json!({"jitter_seed": "fault-host"}));
    let certs = json!({"certs": {"main": ["dyn1.example.test", "dyn2.example.test"]}});
    let (_, fin) = pulse(&bed, &host, &certs);
    assert_eq!(fin["updated"], json!(["main"]));
    let first_serial = host.serial("dyn1.example.test");

    // A reissue is ordered and its values published; then the CA goes away.
    let forced = json!({"certs": certs["certs"], "force": true});
    let req = host.request(&forced);
    publish(&bed, &ok(&req)["acme_txt_required"]);
    let pebble = PebbleCommand::of(&bed);
    let before = host.cert_files("dyn1.example.test");
    // Pebble's port stays free until it restarts below: no bed of another test may take it.
    let ports = ports_in_flux();
    stop_pebble(&bed);
    let down = host.finalize(json!({"certs": certs["certs"], "timeout": 20}));
    assert!(down.failed(), "{}", down.json);
    let msg = down.msg();
    assert!(
        msg.contains("cert main: cannot reach the ACME server"),
        "{msg}"
    );
    assert!(msg.contains(bed.get("TESTBED_ACME_DIRECTORY")), "{msg}");
    assert!(down.elapsed < Duration::from_secs(20), "{:?}", down.elapsed);
    assert_eq!(
        host.cert_files("dyn1.example.test"),
        before,
        "cert files changed"
    );
    host.assert_complete(
        "dyn1.example.test",
        &["dyn1.example.test", "dyn2.example.test"],
    );
    // The failure is remembered (a backoff); the next pulse here is forced, which overrides it.
    assert!(retry_not_before(&host, "main").is_some_and(|t| t > certbridge_acme::now()));

    // The CA comes back (a new CA: accounts and orders gone); the next forced pulse completes.
    let _pebble = pebble.start();
    drop(ports);
    let (req, fin) = pulse(&bed, &host, &forced);
    assert_eq!(req["certs"]["main"]["reason"], "forced");
    assert!(req["changed"].as_bool().unwrap(), "a new order: {req}");
    assert_eq!(fin["updated"], json!(["main"]));
    assert_ne!(host.serial("dyn1.example.test"), first_serial);
    host.assert_complete(
        "dyn1.example.test",
        &["dyn1.example.test", "dyn2.example.test"],
    );
    println!(
        "pebble stopped after request: finalize failed in {:.1} s naming the CA, {} cert files \
         unchanged; restarted CA: the next pulse made a new order and installed",
        down.elapsed.as_secs_f64(),
        before.len()
    );
}

#[test]
fn retry_after_inside_the_deadline_is_waited_out_and_beyond_it_backs_off() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = proxy_for(&bed);
    let host = Host::via(&proxy, "fault-host");
    let certs = json!({"certs": {"main": ["dyn1.example.test"]}});

    // newOrder rate-limited for 2 s, finalize unavailable for 2 s: both waited out, issued.
    proxy.inject(Fault::rate_limited(Endpoint::NewOrder, 1, 2));
    let req = host.request(&certs);
    let req_json = ok(&req).clone();
    assert!(req.elapsed >= Duration::from_secs(2), "{:?}", req.elapsed);
    publish(&bed, &req_json["acme_txt_required"]);
    proxy.inject(Fault::unavailable(Endpoint::Finalize, 1, 2));
    let fin = host.finalize(&certs);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert!(fin.elapsed >= Duration::from_secs(2), "{:?}", fin.elapsed);
    assert_eq!(proxy.faults_left(), 0, "both faults acted");
    let answered = |e: Endpoint| -> Vec<Option<u16>> {
        proxy.requests_to(e).iter().map(|r| r.status).collect()
    };
    assert_eq!(answered(Endpoint::NewOrder), vec![Some(429), Some(201)]);
    assert_eq!(answered(Endpoint::Finalize), vec![Some(503), Some(200)]);
    host.assert_complete("dyn1.example.test", &["dyn1.example.test"]);
    let installed = host.cert_files("dyn1.example.test");
    let _ = host.finalize(json!({"certs": certs["certs"], "ack": ["main"]}));

    // The names change, and newOrder is rate-limited for an hour: a clear failure saying when,
    // and a stored backoff the next pulse reports.
    let certs = json!({"certs": {"main": ["dyn1.example.test", "dyn2.example.test"]}});
    let forced = json!({"certs": certs["certs"], "force": true});
    proxy.inject(Fault::rate_limited(Endpoint::NewOrder, 1, 3600));
    let limited = host.request(&certs);
    assert!(limited.failed(), "{}", limited.json);
    let msg = limited.msg();
    assert!(
        msg.contains("cert main: create an order: rate limited by the CA"),
        "{msg}"
    );
    assert!(msg.contains("; retry after 20"), "{msg}");
    assert!(
        limited.elapsed < Duration::from_secs(30),
        "failed at once: {:?}",
        limited.elapsed
    );
    assert!(limited.json["problems"]["main"]["type"]
        .as_str()
        .unwrap_or("")
        .ends_with("rateLimited"));
    let backoff = host.request(&certs);
    assert_eq!(
        ok(&backoff)["certs"]["main"]["reason"],
        "backoff",
        "{}",
        backoff.json
    );
    assert_eq!(backoff.json["changed"], false);
    let retry_at = backoff.json["certs"]["main"]["retry_not_before"]
        .as_i64()
        .unwrap();
    let now = certbridge_acme::now();
    assert!(
        retry_at > now + 3500 && retry_at <= now + 3600,
        "{retry_at} vs {now}"
    );
    assert_eq!(host.cert_files("dyn1.example.test"), installed);

    // Forced past the backoff, then an outage for an hour on finalize: the order stays
    // pending, the files unchanged, a backoff stored.
    let req = host.request(&forced);
    publish(&bed, &ok(&req)["acme_txt_required"]);
    proxy.inject(Fault::unavailable(Endpoint::Finalize, 1, 3600));
    let down = host.finalize(&certs);
    assert!(down.failed(), "{}", down.json);
    let msg = down.msg();
    assert!(msg.contains("cert main: finalize order"), "{msg}");
    assert!(msg.contains("(retry after 20"), "{msg}");
    assert_eq!(
        host.cert_files("dyn1.example.test"),
        installed,
        "cert files changed"
    );
    let retry_at = retry_not_before(&host, "main").expect("backoff stored");
    assert!(retry_at > certbridge_acme::now() + 3500, "{retry_at}");
    let next = host.request(&certs);
    assert_eq!(
        ok(&next)["certs"]["main"]["reason"],
        "backoff",
        "{}",
        next.json
    );
    // Backing off, the host forgets the order (nothing pending, no value to publish); a
    // forced pulse once the CA is back orders again and completes.
    assert_eq!(next.json["pending"], json!([]), "{}", next.json);
    let (_, fin) = pulse(&bed, &host, &forced);
    assert_eq!(fin["updated"], json!(["main"]));
    assert_ne!(host.cert_files("dyn1.example.test"), installed);
    host.assert_complete(
        "dyn1.example.test",
        &["dyn1.example.test", "dyn2.example.test"],
    );
    assert_eq!(ok(&host.request(&certs))["certs"]["main"]["action"], "ok");
    println!(
        "retry-after: 429 newOrder (2 s) and 503 finalize (2 s) waited out and issued; 429 (1 h) \
         failed in {:.1} s stating the time, backoff until {retry_at}; 503 finalize (1 h) left \
         the files alone and backed off; a forced pulse completed afterwards",
        limited.elapsed.as_secs_f64()
    );
}

#[test]
fn a_rate_limited_new_account_fails_only_that_host() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = proxy_for(&bed);
    let limited = Host::via(&proxy, "host-a");
    let other = Host::via(&proxy, "host-b");
    let certs_a = json!({"certs": {"a": ["dyn1.example.test"]}});
    let certs_b = json!({"certs": {"b": ["dyn2.example.test"]}});
    // Many hosts behind one address: the CA refuses this host's registration.
    proxy.inject(Fault::rate_limited(Endpoint::NewAccount, 1, 3600));
    let refused = limited.request(&certs_a);
    assert!(refused.failed(), "{}", refused.json);
    assert!(refused.msg().contains("cert a:"), "{}", refused.msg());
    assert!(refused.msg().contains("rate limited"), "{}", refused.msg());
    assert!(refused.msg().contains("retry after"), "{}", refused.msg());
    assert_eq!(refused.json["pending"], json!([]));
    assert!(!limited
        .root
        .join("certs/dyn1.example.test/cert.pem")
        .exists());
    // The other host registers and is issued in the same pulse.
    let (req, fin) = pulse(&bed, &other, &certs_b);
    assert_eq!(req["pending"], json!(["b"]));
    assert_eq!(fin["updated"], json!(["b"]));
    other.assert_complete("dyn2.example.test", &["dyn2.example.test"]);
    let again = limited.request(&certs_a);
    assert_eq!(
        ok(&again)["certs"]["a"]["reason"],
        "backoff",
        "{}",
        again.json
    );
    let statuses: Vec<Option<u16>> = proxy
        .requests_to(Endpoint::NewAccount)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[0], Some(429), "{statuses:?}");
    assert!(
        statuses[1..].iter().all(|s| matches!(s, Some(200 | 201))),
        "one refused registration, no retry within the hour: {statuses:?}"
    );
    println!("rateLimited newAccount: host a failed and backs off, host b issued");
}

#[test]
fn a_hanging_connection_fails_at_the_per_request_deadline() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = proxy_for(&bed);
    let host = Host::via(&proxy, "fault-host");
    let certs = json!({"certs": {"main": ["dyn1.example.test"]}});
    let quick = json!({"certs": certs["certs"], "request_timeout": 3, "timeout": 120});

    // newOrder never answered: acme_request fails after its 3 s request deadline, not 120 s.
    proxy.inject(Fault::hang(Endpoint::NewOrder, 1));
    let hung = host.request(&quick);
    assert!(hung.failed(), "{}", hung.json);
    let msg = hung.msg();
    assert!(
        msg.contains("cert main: create an order (request to "),
        "{msg}"
    );
    assert!(msg.contains("/order-plz): no result within 3.0 s"), "{msg}");
    assert!(hung.elapsed >= Duration::from_secs(3), "{:?}", hung.elapsed);
    assert!(hung.elapsed < Duration::from_secs(60), "{:?}", hung.elapsed);

    // Issued later; then a reissue whose finalize hangs: fails at the request deadline, files
    // unchanged, and the next finalize completes the same order.
    let (_, fin) = pulse(
        &bed,
        &host,
        &json!({"certs": certs["certs"], "force": true}),
    );
    assert_eq!(fin["updated"], json!(["main"]));
    let installed = host.cert_files("dyn1.example.test");
    let req = host.request(json!({"certs": certs["certs"], "force": true}));
    publish(&bed, &ok(&req)["acme_txt_required"]);
    proxy.inject(Fault::hang(Endpoint::Finalize, 1));
    let stuck = host.finalize(&quick);
    assert!(stuck.failed(), "{}", stuck.json);
    assert!(
        stuck.msg().contains("no result within 3.0 s"),
        "{}",
        stuck.msg()
    );
    assert!(
        stuck.elapsed < Duration::from_secs(60),
        "{:?}",
        stuck.elapsed
    );
    assert_eq!(host.cert_files("dyn1.example.test"), installed);
    let fin = host.finalize(&quick);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert_ne!(host.cert_files("dyn1.example.test"), installed);
    host.assert_complete("dyn1.example.test", &["dyn1.example.test"]);

    // A bad value is refused before any network access.
    let bad = host.request(json!({"certs": certs["certs"], "request_timeout": 0}));
    assert!(
        bad.failed() && bad.msg().contains("request_timeout"),
        "{}",
        bad.msg()
    );
    println!(
        "hangs: newOrder failed after {:.1} s, finalize after {:.1} s (request_timeout 3, \
         timeout 120); the order completed at the next run",
        hung.elapsed.as_secs_f64(),
        stuck.elapsed.as_secs_f64()
    );
}
