//! http-01 end to end against the bed with `--http` (Pebble validating through the bed's
//! nginx, no always-valid shortcut): acme_request lists the tokens, acme_http_publish writes
//! them where nginx serves them (the host webroot, or both backends behind the load
//! balancer), acme_finalize pre-checks each over HTTP and lets Pebble validate; the tokens are
//! removed afterwards as the pulse would (acme_http_done -> retired, or keep_seconds).
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::{ok, publish, run_module, Host, Testbed};

fn bed() -> Testbed {
    Testbed::start(&["--http", "--hosts", "6"])
}

/// A host whose finalize pre-checks against the bed's nginx and DNS.
fn host(bed: &Testbed) -> Host {
    Host::on_bed(bed).with_finalize(json!({
        "http_check_port": bed.get("TESTBED_HTTP_PORT").parse::<u16>().unwrap(),
        "http_check_resolver": bed.get("TESTBED_DNS"),
    }))
}

fn http_cert(names: &[&str], webroot: &str) -> Value {
    json!({"names": names, "challenge": "http-01", "webroot": webroot})
}

/// acme_http_publish on one "host" (its own state dir), as the pulse's publish step runs it.
fn http_publish(state: &Path, tokens: &Value, retired: &Value, keep: u64) -> support::ModuleRun {
    run_module(
        "acme_http_publish",
        &json!({"tokens": tokens, "retired": retired, "keep_seconds": keep, "state_dir": state}),
    )
}

fn token_file(webroot: &str, token: &str) -> PathBuf {
    Path::new(webroot)
        .join(".well-known/acme-challenge")
        .join(token)
}

fn with_webroot(tokens: &Value, webroot: &str) -> Value {
    Value::Array(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t["webroot"] = json!(webroot);
                t["host"] = json!("test-host");
                t
            })
            .collect(),
    )
}

fn names_of(host: &Host, dir: &str) -> Vec<String> {
    let pem = std::fs::read_to_string(host.cert_root().join(dir).join("cert.pem")).unwrap();
    certbridge_acme::certinfo::leaf_info_pem(&pem, "t")
        .unwrap()
        .names
        .into_iter()
        .collect()
}

fn log(bed: &Testbed, file: &str) -> String {
    std::fs::read_to_string(Path::new(bed.get("TESTBED_NGINX_LOG_DIR")).join(file))
        .unwrap_or_default()
}

/// A two-name http-01 cert and a dns-01 cert on one host in one pulse: each lists only its own
/// kind of challenge; the tokens are served from the host webroot through nginx, pre-checked,
/// validated by Pebble (its requests are in nginx's log), and removed after issuance.
#[test]
fn http01_and_dns01_certs_issue_in_one_pulse_and_tokens_go_afterwards() {
    let bed = bed();
    let host = host(&bed);
    let webroot = bed.get("TESTBED_HTTP_WEBROOT");
    let state = tempfile::tempdir().unwrap();
    let certs = json!({"certs": {
        "web": http_cert(&["host1.example.test", "host2.example.test"], webroot),
        "dns": ["host3.example.test"],
    }});
    let req = ok(&host.request(&certs)).clone();
    let http = req["acme_http_required"].as_array().unwrap().clone();
    assert_eq!(http.len(), 2, "{req}");
    assert!(http
        .iter()
        .all(|t| t["cert"] == "web" && t["webroot"] == webroot));
    let txt = req["acme_txt_required"].as_array().unwrap();
    assert!(
        txt.iter().all(|t| t["cert"] == "dns") && txt.len() == 1,
        "{req}"
    );
    publish(&bed, &req["acme_txt_required"]);

    let tokens = with_webroot(&req["acme_http_required"], webroot);
    let pub1 = http_publish(state.path(), &tokens, &json!([]), 3600);
    assert!(ok(&pub1)["changed"].as_bool().unwrap());
    for t in &http {
        let f = token_file(webroot, t["token"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), t["key_authorization"]);
    }
    // The same tokens again: nothing changes.
    assert!(!http_publish(state.path(), &tokens, &json!([]), 3600).changed());

    let fin = ok(&host.finalize(&certs)).clone();
    assert!(
        fin["certs"]["web"]["serial"].is_string() && fin["certs"]["dns"]["serial"].is_string(),
        "{fin}"
    );
    let mut names = names_of(&host, "host1.example.test");
    names.sort();
    assert_eq!(names, vec!["host1.example.test", "host2.example.test"]);
    // Pebble's validation went through nginx (the pre-check's requests carry certbridge's UA).
    let host_log = log(&bed, "host.log");
    for t in &http {
        let token = t["token"].as_str().unwrap();
        let lines: Vec<&str> = host_log.lines().filter(|l| l.contains(token)).collect();
        assert!(
            lines.iter().any(|l| l.contains("certbridge/")),
            "pre-check of {token}: {host_log}"
        );
        assert!(
            lines
                .iter()
                .any(|l| !l.contains("certbridge/") && l.contains(" 200 ")),
            "CA fetch of {token}: {host_log}"
        );
    }
    let done = fin["acme_http_done"].clone();
    assert_eq!(done.as_array().unwrap().len(), 2, "{fin}");
    let gone = http_publish(state.path(), &json!([]), &done, 3600);
    assert_eq!(ok(&gone)["removed"].as_array().unwrap().len(), 2);
    for t in &http {
        assert!(!token_file(webroot, t["token"].as_str().unwrap()).exists());
    }
    // Nothing due: no order, no token.
    let again = ok(&host.request(&certs)).clone();
    assert!(
        again["acme_http_required"].as_array().unwrap().is_empty(),
        "{again}"
    );
}

/// The load-balancer case: the tokens go to both backends' webroots (as on every member of
/// `webroot_hosts`); nginx routes lbN names round-robin, so the CA's requests land on either.
#[test]
fn load_balancer_with_two_backends() {
    let bed = bed();
    let host = host(&bed);
    let (b1, b2) = (
        bed.get("TESTBED_HTTP_BACKEND1_WEBROOT"),
        bed.get("TESTBED_HTTP_BACKEND2_WEBROOT"),
    );
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cert = http_cert(&["lb1.example.test", "lb2.example.test"], b1);
    cert["webroot_hosts"] = json!("backends");
    let certs = json!({"certs": {"lb": cert}});
    let req = ok(&host.request(&certs)).clone();
    let http = req["acme_http_required"].clone();
    assert_eq!(http.as_array().unwrap().len(), 2, "{req}");
    // Two backends: in the bed they differ in path; in a fleet the webroot is the same path on
    // each member of the group.
    ok(&http_publish(
        s1.path(),
        &with_webroot(&http, b1),
        &json!([]),
        3600,
    ));
    ok(&http_publish(
        s2.path(),
        &with_webroot(&http, b2),
        &json!([]),
        3600,
    ));
    let fin = ok(&host.finalize(&certs)).clone();
    assert!(fin["certs"]["lb"]["serial"].is_string(), "{fin}");
    let (l1, l2) = (log(&bed, "backend1.log"), log(&bed, "backend2.log"));
    let lb = log(&bed, "lb.log");
    for t in http.as_array().unwrap() {
        let token = t["token"].as_str().unwrap();
        assert!(
            lb.contains(token),
            "the balancer saw no request for {token}: {lb}"
        );
        assert!(
            l1.contains(token) || l2.contains(token),
            "no backend served {token}"
        );
    }
    let done = fin["acme_http_done"].clone();
    for (s, w) in [(&s1, b1), (&s2, b2)] {
        let retired = with_webroot(&done, w)
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!({"token": t["token"], "webroot": t["webroot"]}))
            .collect::<Vec<_>>();
        ok(&http_publish(s.path(), &json!([]), &json!(retired), 3600));
        for t in http.as_array().unwrap() {
            assert!(!token_file(w, t["token"].as_str().unwrap()).exists());
        }
    }
}

/// IP certificates (RFC 8738): 127.0.0.1 (and ::1 when the bed listens there) as ip
/// identifiers, validated by http-01, with iPAddress SANs in canonical form, in a directory
/// named by the first address.
#[test]
fn ip_certificate_for_loopback_addresses() {
    let bed = bed();
    let host = host(&bed);
    let webroot = bed.get("TESTBED_HTTP_WEBROOT");
    let v6 = bed.get("TESTBED_HTTP_IPV6") == "1";
    let mut names = vec!["127.0.0.1"];
    if v6 {
        names.push("0:0:0:0:0:0:0:1");
    }
    let certs = json!({"certs": {"ip": http_cert(&names, webroot)}});
    let state = tempfile::tempdir().unwrap();
    let req = ok(&host.request(&certs)).clone();
    assert_eq!(
        req["certs"]["ip"]["dir"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next(),
        Some("127.0.0.1")
    );
    let tokens = with_webroot(&req["acme_http_required"], webroot);
    assert_eq!(tokens.as_array().unwrap().len(), names.len(), "{req}");
    ok(&http_publish(state.path(), &tokens, &json!([]), 3600));
    let fin = ok(&host.finalize(&certs)).clone();
    assert!(fin["certs"]["ip"]["serial"].is_string(), "{fin}");
    let mut got = names_of(&host, "127.0.0.1");
    got.sort();
    let mut want: Vec<&str> = vec!["127.0.0.1"];
    if v6 {
        want.push("::1");
    }
    want.sort();
    assert_eq!(got, want);
}

/// The pre-check finds a token written to the wrong webroot (the name is served from the host
/// webroot, the token went to a backend's): the cert fails naming host, cert, name and URL, the
/// CA is not asked; once the token is where it belongs, the same order validates (so its
/// authorization was still pending). A CA refusal (a wrong token served, pre-check off) ends
/// the order: its tokens are in acme_http_done and removed. A pulse killed between publish
/// and finalize leaves tokens that the next publish removes once older than keep_seconds.
#[test]
fn misrouted_refused_and_interrupted_orders() {
    let bed = bed();
    let host = host(&bed);
    let webroot = bed.get("TESTBED_HTTP_WEBROOT");
    let wrong = bed.get("TESTBED_HTTP_BACKEND1_WEBROOT");
    let state = tempfile::tempdir().unwrap();

    let certs = json!({"certs": {"mis": http_cert(&["host4.example.test"], webroot)}});
    let req = ok(&host.request(&certs)).clone();
    let http = req["acme_http_required"].clone();
    ok(&http_publish(
        state.path(),
        &with_webroot(&http, wrong),
        &json!([]),
        3600,
    ));
    let fin = host.finalize(&certs);
    assert!(fin.failed(), "{}", fin.json);
    let msg = fin.msg();
    for part in [
        "cert mis",
        "name host4.example.test",
        "http-01 pre-check failed on host",
        "/.well-known/acme-challenge/",
        "HTTP 404",
        "load balancer",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
    let token = http[0]["token"].as_str().unwrap();
    assert!(
        !log(&bed, "host.log")
            .lines()
            .any(|l| l.contains(token) && !l.contains("certbridge/")),
        "the CA fetched {token}"
    );
    // The next pulse resumes the order and lists the same token again.
    let again = ok(&host.request(&certs)).clone();
    assert_eq!(again["acme_http_required"], http, "{again}");
    // Fixed: the same order (still pending at the CA) validates.
    ok(&http_publish(
        state.path(),
        &with_webroot(&http, webroot),
        &json!([]),
        3600,
    ));
    let fin = ok(&host.finalize(&certs)).clone();
    assert!(fin["certs"]["mis"]["serial"].is_string(), "{fin}");
    ok(&http_publish(
        state.path(),
        &json!([]),
        &fin["acme_http_done"],
        3600,
    ));
    assert!(!token_file(webroot, token).exists());

    // A CA refusal: the wrong key authorization served, the pre-check off.
    let certs = json!({"certs": {"bad": http_cert(&["host5.example.test"], webroot)}});
    let req = ok(&host.request(&certs)).clone();
    let mut bad = with_webroot(&req["acme_http_required"], webroot);
    let t = bad[0]["token"].as_str().unwrap().to_owned();
    bad[0]["key_authorization"] = json!(format!("{t}.{}", "A".repeat(43)));
    ok(&http_publish(state.path(), &bad, &json!([]), 3600));
    let fin = host.finalize(json!({"certs": certs["certs"], "http_check": false}));
    assert!(fin.failed(), "{}", fin.json);
    let done = fin.json["acme_http_done"].clone();
    assert_eq!(done[0]["token"], json!(t), "{}", fin.json);
    ok(&http_publish(state.path(), &json!([]), &done, 3600));
    assert!(!token_file(webroot, &t).exists());

    // Killed between publish and finalize: the next publish (no tokens listed, keep_seconds 0)
    // removes what the killed pulse wrote.
    let certs = json!({"certs": {"killed": http_cert(&["host6.example.test"], webroot)}});
    let req = ok(&host.request(&certs)).clone();
    let tokens = with_webroot(&req["acme_http_required"], webroot);
    ok(&http_publish(state.path(), &tokens, &json!([]), 3600));
    let f = token_file(webroot, tokens[0]["token"].as_str().unwrap());
    assert!(f.exists());
    // (It also removes the misrouted copy of the first token, which no order retired.)
    let next = ok(&http_publish(state.path(), &json!([]), &json!([]), 0)).clone();
    let removed = next["removed"].as_array().unwrap();
    assert!(
        removed.iter().any(|r| r["token"] == tokens[0]["token"]),
        "{next}"
    );
    assert!(!f.exists() && !token_file(wrong, token).exists());
    for w in [webroot, wrong] {
        let left = std::fs::read_dir(Path::new(w).join(".well-known/acme-challenge"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "token files left in {w}");
    }
}

/// Each refused input fails acme_request before any order, naming cert and name: nothing is
/// written in the cert root (no account, no metadata). A `.well-known` planted as a symbolic
/// link makes acme_http_publish refuse the token and write nothing outside the webroot.
#[test]
fn refused_inputs_and_planted_links_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let host = Host::new("https://127.0.0.1:9/dir", tmp.path().join("none.pem"), "h");
    // ca_file must exist for the options to validate that far.
    std::fs::write(tmp.path().join("none.pem"), "").unwrap();
    let host = host.with(json!({"ca_file": null}));
    let cases = [
        (
            json!({"w": {"names": ["*.example.test"], "challenge": "http-01", "webroot": "/srv"}}),
            "certs.w: `*.example.test` is a wildcard",
        ),
        (
            json!({"ip": ["127.0.0.1"]}),
            "certs.ip: `127.0.0.1` is an IP address",
        ),
        (
            json!({"r": {"names": ["r.example.test"], "challenge": "http-01", "webroot": "srv/acme"}}),
            "certs.r: `r.example.test`: webroot `srv/acme` is not an absolute path",
        ),
        (
            json!({"n": {"names": ["n.example.test"], "challenge": "http-01"}}),
            "certs.n: `n.example.test`: challenge http-01 needs `webroot`",
        ),
    ];
    for (certs, want) in cases {
        let run = host.request(json!({"certs": certs}));
        assert!(
            run.failed() && run.msg().contains(want),
            "{want}: {}",
            run.json
        );
        assert!(
            !host.cert_root().exists(),
            "{want}: the cert root was touched"
        );
    }

    let web = tmp.path().join("www");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("acme-challenge")).unwrap();
    std::fs::create_dir(&web).unwrap();
    std::os::unix::fs::symlink(&elsewhere, web.join(".well-known")).unwrap();
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    let tokens = json!([{"token": token, "key_authorization": format!("{token}.{}", "B".repeat(43)),
        "webroot": web, "cert": "www", "name": "www.example.test", "host": "web01"}]);
    let run = http_publish(&tmp.path().join("state"), &tokens, &json!([]), 3600);
    assert!(run.failed(), "{}", run.json);
    let r = &run.json["rejected"][0];
    assert_eq!(
        (r["cert"].as_str(), r["name"].as_str(), r["host"].as_str()),
        (Some("www"), Some("www.example.test"), Some("web01"))
    );
    assert!(
        r["reason"].as_str().unwrap().contains("symbolic link"),
        "{r}"
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.join("acme-challenge"))
            .unwrap()
            .count(),
        0
    );
}

/// One http-01 round as the pulse runs it: request, publish the tokens, finalize, retire the
/// tokens. Returns the replies of acme_request and acme_finalize.
fn http_round(host: &Host, state: &Path, webroot: &str, extra: &Value) -> (Value, Value) {
    let req = ok(&host.request(extra)).clone();
    let tokens = with_webroot(&req["acme_http_required"], webroot);
    ok(&http_publish(state, &tokens, &json!([]), 3600));
    let fin = ok(&host.finalize(extra)).clone();
    ok(&http_publish(
        state,
        &json!([]),
        &fin["acme_http_done"],
        3600,
    ));
    (req, fin)
}

/// Issue 16 point 6: an http-01 cert made self-signed (no CA asked, no token listed) is
/// replaced by a CA certificate through the http-01 flow on the next run without
/// `self_sign`; the same cert then moves staging -> production (the same Pebble under another
/// spelling of its URL plays the staging directory), each step a new certificate.
#[test]
fn self_signed_and_staging_http01_certs_upgrade_to_production() {
    let bed = bed();
    let host = host(&bed);
    let webroot = bed.get("TESTBED_HTTP_WEBROOT");
    let state = tempfile::tempdir().unwrap();
    let certs = json!({"certs": {"web": http_cert(&["host4.example.test"], webroot)}});
    let issuer = || {
        let pem = host.cert_file("host4.example.test", "cert.pem");
        certbridge_acme::certinfo::leaf_info_pem(&pem, "t")
            .unwrap()
            .issuer
    };

    let ss = json!({"certs": certs["certs"], "self_sign": true});
    let (req, fin) = http_round(&host, state.path(), webroot, &ss);
    assert_eq!(req["acme_http_required"], json!([]), "{req}");
    assert_eq!(fin["updated"], json!(["web"]), "{fin}");
    let self_signed = issuer();
    assert!(
        certbridge_acme::selfsign::is_local_ca(&self_signed),
        "{self_signed}"
    );

    let (req, fin) = http_round(&host, state.path(), webroot, &certs);
    assert_eq!(req["certs"]["web"]["reason"], "self_signed", "{req}");
    assert_eq!(
        req["acme_http_required"].as_array().unwrap().len(),
        1,
        "{req}"
    );
    assert_eq!(fin["updated"], json!(["web"]), "{fin}");
    let from_ca = issuer();
    assert!(
        !certbridge_acme::selfsign::is_local_ca(&from_ca),
        "still self-signed: {from_ca}"
    );
    assert!(
        log(&bed, "host.log")
            .lines()
            .any(|l| l.contains("/.well-known/acme-challenge/") && !l.contains("certbridge/")),
        "the CA did not fetch a token through nginx"
    );

    // Staging, forced (a production certificate is otherwise kept), then production again.
    let staging_dir = bed
        .get("TESTBED_ACME_DIRECTORY")
        .replace("127.0.0.1", "localhost");
    let staging = json!({"certs": certs["certs"], "directory": staging_dir, "staging": true,
                         "force": true});
    let production_cert = host.cert_file("host4.example.test", "cert.pem");
    let (req, fin) = http_round(&host, state.path(), webroot, &staging);
    assert_eq!(req["certs"]["web"]["reason"], "forced", "{req}");
    assert_eq!(fin["updated"], json!(["web"]), "{fin}");
    let staging_cert = host.cert_file("host4.example.test", "cert.pem");
    assert_ne!(staging_cert, production_cert);

    let (req, fin) = http_round(&host, state.path(), webroot, &certs);
    assert_eq!(req["certs"]["web"]["reason"], "directory_changed", "{req}");
    // The production account validated this name in the first step: Pebble reuses a valid
    // authorization half the time (PEBBLE_AUTHZREUSE), and then no token is asked for.
    assert!(
        req["acme_http_required"].as_array().unwrap().len() <= 1,
        "{req}"
    );
    assert_eq!(fin["updated"], json!(["web"]), "{fin}");
    assert_ne!(
        host.cert_file("host4.example.test", "cert.pem"),
        staging_cert
    );
    // Every token is gone once its order ended.
    let challenge_dir = Path::new(webroot).join(".well-known/acme-challenge");
    let left: Vec<_> = std::fs::read_dir(&challenge_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "tokens left: {left:?}");
}
