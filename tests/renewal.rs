//! Renewal the way CAs now ask for it, through the modules against the test bed: renewal
//! information (RFC 9773) and `replaces` through the fault-injecting proxy (Pebble 2.4.0 has
//! neither), profiles, external account binding (the bed's `--eab`), and an HTTP CONNECT
//! proxy. Pebble validates every challenge here (`PEBBLE_VA_ALWAYS_VALID`): DNS publication is
//! proven by the issuance tests; these tests are about what is ordered, when and how.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use support::ca_proxy::{CaProxy, Endpoint, Fault, ProxyConfig, Window};
use support::{ok, run_module_env, ConnectProxy, Host, ModuleRun, Testbed};

fn bed(opts: &[&str]) -> Testbed {
    Testbed::start_env(opts, &[("PEBBLE_VA_ALWAYS_VALID", "1")])
}

/// A host ordering the one cert `main` (dyn1.example.test) from `directory`.
fn main_host(directory: &str, ca_file: &str) -> Host {
    Host::new(directory, ca_file, "test-host")
        .with(json!({"certs": {"main": ["dyn1.example.test"]}}))
}

/// What these tests do with a host's one cert `main`.
trait MainCert {
    fn issue(&self, extra: Value, reason: &str) -> Value;
    fn leaf_der(&self) -> Vec<u8>;
    fn cert_id(&self) -> String;
    fn meta_path(&self) -> PathBuf;
    fn meta(&self) -> Value;
    fn expire_ari_check(&self);
}

impl MainCert for Host {
    /// Orders (asserting the reason) and installs a certificate for `main`.
    fn issue(&self, extra: Value, reason: &str) -> Value {
        let req = self.request(extra.clone());
        let r = ok(&req);
        assert_eq!(r["certs"]["main"]["reason"], reason, "{r}");
        assert_eq!(r["pending"], json!(["main"]), "{r}");
        // `ari_interval` is acme_request's own option.
        let mut extra = extra;
        if let Value::Object(m) = &mut extra {
            m.remove("ari_interval");
        }
        let fin = self.finalize(extra);
        let f = ok(&fin);
        assert_eq!(f["updated"], json!(["main"]), "{f}");
        let _ = self.finalize(json!({"ack": ["main"]}));
        req.json
    }

    fn leaf_der(&self) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.root.join("certs/dyn1.example.test/cert.pem"))
            .expect("installed certificate");
        certbridge_acme::certinfo::pem_certs(&pem, "leaf").unwrap()[0].clone()
    }

    fn cert_id(&self) -> String {
        certbridge_acme::client::ari_cert_id(&self.leaf_der()).unwrap()
    }

    fn meta_path(&self) -> PathBuf {
        self.root.join("certs/.certbridge/certs/main.json")
    }

    fn meta(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.meta_path()).unwrap()).unwrap()
    }

    /// Lets the stored renewal-information check fall due (as if `next_check` had passed).
    fn expire_ari_check(&self) {
        let mut m = self.meta();
        m["ari"]["next_check"] = json!(1);
        std::fs::write(self.meta_path(), m.to_string()).unwrap();
    }
}

fn now() -> i64 {
    certbridge_acme::now()
}

fn warnings(run: &ModuleRun) -> Vec<String> {
    run.json["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn proxied(bed: &Testbed, config: ProxyConfig) -> (CaProxy, Host) {
    let proxy = CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        config,
    );
    let host = main_host(
        &proxy.directory_url(),
        &proxy.ca_file().display().to_string(),
    );
    (proxy, host)
}

/// Windows in the future, in the past and around now; the CA's Retry-After stored; no
/// network call between checks; `replaces` naming the replaced certificate; `alreadyReplaced`
/// answered by ordering once more without it; a CA that cannot answer leaves the lifetime rule.
#[test]
fn renewal_information_decides_and_renewals_name_what_they_replace() {
    let bed = bed(&["--hosts", "2"]);
    let (proxy, host) = proxied(&bed, ProxyConfig::default().with_ari());
    let check_now = json!({"ari_interval": 0});
    host.issue(check_now.clone(), "missing");
    let first_id = host.cert_id();
    assert!(
        proxy.new_order_payloads()[0].get("replaces").is_none(),
        "a first issuance replaces nothing"
    );

    // Future window: kept; the window, the chosen point and the CA's Retry-After are stored.
    proxy.set_window(&first_id, Window::from_now(10 * 86_400, 11 * 86_400));
    proxy.set_ari_retry_after(3600);
    proxy.clear_requests();
    let t0 = now();
    let run = host.request(check_now.clone());
    let r = ok(&run);
    assert!(!run.changed(), "{r}");
    let main = &r["certs"]["main"];
    assert_eq!(main["reason"], "valid", "{r}");
    let ari = &main["ari"];
    let (start, end) = (
        ari["window_start"].as_i64().unwrap(),
        ari["window_end"].as_i64().unwrap(),
    );
    let chosen = ari["renew_at"].as_i64().unwrap();
    assert!((start..=end).contains(&chosen), "{ari}");
    assert_eq!(main["renew_at"].as_i64(), Some(chosen), "{r}");
    let next = ari["next_check"].as_i64().unwrap();
    assert!(
        (t0 + 3600..=now() + 3600).contains(&next),
        "Retry-After: {ari}"
    );
    assert_eq!(proxy.ari_fetches(), vec![first_id.clone()]);
    assert_eq!(host.meta()["ari"]["next_check"].as_i64(), Some(next));
    assert_eq!(host.meta()["ari"]["renew_at"].as_i64(), Some(chosen));
    assert_eq!(
        proxy.requests_to(Endpoint::NewAccount).len() + proxy.requests_to(Endpoint::NewNonce).len(),
        0,
        "a renewal-information check needs no account"
    );

    // Between checks: no network call at all (not even the directory), same point.
    proxy.clear_requests();
    let run = host.request(check_now.clone());
    assert_eq!(
        ok(&run)["certs"]["main"]["ari"]["renew_at"].as_i64(),
        Some(chosen)
    );
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // Checked again with the same window: the point is not re-rolled.
    host.expire_ari_check();
    let run = host.request(check_now.clone());
    assert_eq!(
        ok(&run)["certs"]["main"]["ari"]["renew_at"].as_i64(),
        Some(chosen)
    );
    assert_eq!(proxy.ari_fetches().len(), 1);

    // The window moved into the past (a revocation is coming): renewed now, naming the
    // certificate it replaces.
    proxy.set_window(&first_id, Window::from_now(-2 * 86_400, -86_400));
    host.expire_ari_check();
    proxy.clear_requests();
    host.issue(check_now.clone(), "ari_window");
    let payloads = proxy.new_order_payloads();
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(first_id), "{payloads:?}");
    let second_id = host.cert_id();
    assert_ne!(second_id, first_id);
    assert!(
        host.meta()["ari"].is_null(),
        "a new certificate starts afresh"
    );

    // A window around now (its chosen point has passed); the CA refuses `replaces` with
    // alreadyReplaced: ordered once more without it, with a warning.
    let t = now();
    proxy.set_window(&second_id, Window::from_now(-7200, 0));
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
    proxy.clear_requests();
    let run = host.request(check_now.clone());
    let r = ok(&run);
    assert_eq!(r["certs"]["main"]["reason"], "ari_window", "{r}");
    assert!(r["certs"]["main"]["renew_at"].as_i64().unwrap() <= t, "{r}");
    let payloads = proxy.new_order_payloads();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(second_id));
    assert!(payloads[1].get("replaces").is_none(), "{payloads:?}");
    assert!(
        warnings(&run)
            .iter()
            .any(|w| w.contains("replaces") && w.contains("alreadyReplaced")),
        "{:?}",
        warnings(&run)
    );
    assert_eq!(proxy.faults_left(), 0);
    let fin = host.finalize(json!({}));
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    let _ = host.finalize(json!({"ack": ["main"]}));

    // The CA cannot answer (no window for this certificate: 404): a warning, the lifetime
    // rule decides, the module does not fail, and the failure is recorded.
    let t = now();
    let run = host.request(check_now.clone());
    let r = ok(&run);
    assert_eq!(r["certs"]["main"]["reason"], "valid", "{r}");
    assert!(r["certs"]["main"].get("ari").is_none(), "{r}");
    assert!(
        warnings(&run).iter().any(|w| w.contains("lifetime rule")),
        "{:?}",
        warnings(&run)
    );
    let m = host.meta();
    assert!(
        m["ari"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("404"),
        "{m}"
    );
    assert!(m["ari"]["checked_at"].as_i64().unwrap() >= t, "{m}");
    // The log records the checks and what each order replaced.
    let log = std::fs::read_to_string(host.root.join("certbridge.log")).unwrap();
    assert!(log.contains("\"renewal_info\"") && log.contains(&first_id));
}

/// The CA's profiles: a profile it does not offer fails naming those it does (no order, no
/// backoff); a chosen one is sent and recorded; changing it reissues.
#[test]
fn profiles_are_listed_chosen_recorded_and_changes_reissue() {
    let bed = bed(&["--hosts", "2"]);
    let config =
        ProxyConfig::default().with_profiles(&[("classic", "90 days"), ("tlsserver", "45 days")]);
    let (proxy, host) = proxied(&bed, config);
    let run = host.request(json!({"profile": "shortlived"}));
    assert!(run.failed(), "{}", run.json);
    let msg = run.msg();
    assert!(
        msg.contains("`shortlived`") && msg.contains("classic, tlsserver"),
        "{msg}"
    );
    assert!(proxy.new_order_payloads().is_empty());
    assert!(
        !host.meta_path().exists() || host.meta()["retry_not_before"].is_null(),
        "no backoff for a configuration error"
    );

    host.issue(json!({"profile": "classic"}), "missing");
    assert_eq!(proxy.new_order_payloads()[0]["profile"], "classic");
    assert_eq!(host.meta()["profile"], "classic");
    let run = host.request(json!({"profile": "classic"}));
    let r = ok(&run);
    assert_eq!(r["certs"]["main"]["reason"], "valid", "{r}");
    assert_eq!(r["certs"]["main"]["profile"], "classic", "{r}");

    // Per cert, overriding the default: a change reissues with the new profile.
    let per_cert = json!({"profile": "classic",
        "certs": {"main": {"names": ["dyn1.example.test"], "profile": "tlsserver"}}});
    proxy.clear_requests();
    host.issue(per_cert.clone(), "profile_changed");
    assert_eq!(proxy.new_order_payloads()[0]["profile"], "tlsserver");
    assert_eq!(host.meta()["profile"], "tlsserver");
    let run = host.request(per_cert);
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "valid");
}

/// A CA without renewal information (the proxy adds none): the lifetime rule decides, the
/// directory is read once per `ari_interval` at most, renewals carry no `replaces`, and
/// nothing is warned about.
#[test]
fn a_ca_without_renewal_information_behaves_as_before() {
    let bed = bed(&["--hosts", "2"]);
    let (proxy, host) = proxied(&bed, ProxyConfig::default());
    host.issue(json!({}), "missing");
    // Right after issuance the default interval has not passed: no network call.
    proxy.clear_requests();
    let run = host.request(json!({}));
    assert_eq!(ok(&run)["certs"]["main"]["reason"], "valid");
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    // Due for a check: one directory read, nothing else; then quiet for the interval.
    let run = host.request(json!({"ari_interval": 0}));
    let r = ok(&run);
    assert_eq!(r["certs"]["main"]["reason"], "valid", "{r}");
    assert!(r["certs"]["main"].get("ari").is_none(), "{r}");
    assert!(warnings(&run).is_empty(), "{:?}", warnings(&run));
    let seen: Vec<Endpoint> = proxy.requests().iter().map(|q| q.endpoint).collect();
    assert_eq!(seen, vec![Endpoint::Directory]);
    assert_eq!(host.meta()["ari"]["supported"], false);
    proxy.clear_requests();
    let run = host.request(json!({"ari_interval": 3600}));
    assert!(!run.failed());
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    // A forced renewal names nothing it replaces (the CA has no ARI).
    host.issue(json!({"force": true}), "forced");
    let payloads = proxy.new_order_payloads();
    assert_eq!(payloads.len(), 1);
    assert!(payloads[0].get("replaces").is_none(), "{payloads:?}");
}

/// External account binding through the modules: without it the account cannot be created
/// (the CA's problem, clearly); with the bed's key id and HMAC key issuance works, and the
/// key never appears in any output.
#[test]
fn external_account_binding_through_the_modules() {
    let bed = bed(&["--hosts", "2", "--eab"]);
    let host = main_host(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
    );
    let run = host.request(json!({}));
    assert!(run.failed(), "{}", run.json);
    assert!(
        run.msg().contains("externalAccountRequired"),
        "{}",
        run.msg()
    );
    let accounts = host.root.join("certs/.certbridge/accounts");
    assert_eq!(
        std::fs::read_dir(&accounts).map(|d| d.count()).unwrap_or(0),
        0,
        "no account file without binding"
    );
    let hmac = bed.get("TESTBED_EAB_HMAC_KEY").to_owned();
    let eab = json!({"eab_kid": bed.get("TESTBED_EAB_KID"), "eab_hmac_key": hmac,
                     "force": true});
    let req = host.request(eab.clone());
    let r = ok(&req);
    assert_eq!(r["pending"], json!(["main"]), "{r}");
    assert!(!req.stdout.contains(&hmac) && !req.stderr.contains(&hmac));
    let fin = host.finalize(eab);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert!(!fin.stdout.contains(&hmac));
    let log = std::fs::read_to_string(host.root.join("certbridge.log")).unwrap();
    assert!(!log.contains(&hmac));
}

/// `proxy` and `https_proxy` carry every request of both modules (the CA is reachable only
/// through the proxy); `no_proxy` sends requests past it.
#[test]
fn every_request_goes_through_the_configured_proxy() {
    let bed = bed(&["--hosts", "2"]);
    let ca_port = bed.acme_port();
    // A port nothing listens on: Pebble builds its URLs from the Host header, so every URL it
    // returns points there too.
    let public_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let directory = format!("https://127.0.0.1:{public_port}/dir");
    let proxy = ConnectProxy::rewriting(public_port, ca_port);
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let host = main_host(&directory, bed.get("TESTBED_ACME_CA_FILE"));

    let direct = host.request(json!({"timeout": 20}));
    assert!(direct.failed(), "{}", direct.json);
    assert!(
        direct.msg().contains(&public_port.to_string()),
        "{}",
        direct.msg()
    );

    // (The failure above set a backoff: `force` overrides it.)
    host.issue(json!({"proxy": proxy_url, "force": true}), "forced");
    let via_option = proxy.tunnels.load(Ordering::SeqCst);
    assert!(via_option >= 2, "{via_option} tunnels");
    assert!(!host.cert_id().is_empty());

    // From the environment, as `https_proxy`, for both modules.
    let env = [("https_proxy", proxy_url.as_str())];
    let args = host.args(json!({"force": true}));
    let req = run_module_env("acme_request", &args, &env);
    assert_eq!(ok(&req)["pending"], json!(["main"]));
    let fin = run_module_env("acme_finalize", &host.args(json!({})), &env);
    assert_eq!(ok(&fin)["updated"], json!(["main"]));
    assert!(proxy.tunnels.load(Ordering::SeqCst) > via_option);

    // `no_proxy` naming the CA's host: requests go direct, and cannot reach it.
    let before = proxy.tunnels.load(Ordering::SeqCst);
    let env = [
        ("https_proxy", proxy_url.as_str()),
        ("no_proxy", "127.0.0.1"),
    ];
    let args = host.args(json!({"force": true, "timeout": 20}));
    let bypass = run_module_env("acme_request", &args, &env);
    assert!(bypass.failed(), "{}", bypass.json);
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), before);
}

/// Writes what acme.sh leaves for `first`: its key and certificate (self-signed by openssl,
/// an RSA key of `bits`, valid `days`) under the names acme.sh uses.
fn acme_sh_cert(dir: &std::path::Path, first: &str, bits: u32, days: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", &format!("rsa:{bits}"), "-nodes"])
        .args(["-days", &days.to_string(), "-subj", &format!("/CN={first}")])
        .args(["-addext", &format!("subjectAltName=DNS:{first}")])
        .arg("-keyout")
        .arg(dir.join(format!("{first}.key")))
        .arg("-out")
        .arg(dir.join(format!("{first}.cer")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(dir.join(format!("{first}.cer")), dir.join("ca.cer")).unwrap();
}

fn installed_key_type(host: &Host) -> String {
    let pem = host.cert_file("dyn1.example.test", "cert.pem");
    let leaf = certbridge_acme::certinfo::leaf_info_pem(&pem, "cert.pem").unwrap();
    leaf.key_type.map(|k| k.to_string()).unwrap_or_default()
}

/// A drop-in renewal keeps the key type the certificate has: an adopted acme.sh RSA-3072
/// certificate renews with RSA-3072, not the default EC P-256. A key type the user sets wins
/// (a `key_type_changed` reissue), and is then kept when the setting is removed again.
#[test]
fn renewals_keep_the_certificates_key_type_unless_one_is_set() {
    let bed = bed(&["--hosts", "2"]);
    let host = main_host(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
    );
    acme_sh_cert(
        &host.cert_root().join("dyn1.example.test"),
        "dyn1.example.test",
        3072,
        90,
    );
    let adopted = host.request(json!({}));
    assert_eq!(
        ok(&adopted)["certs"]["main"]["reason"],
        "adopted",
        "{}",
        adopted.json
    );
    // Renewed (forced: openssl cannot backdate a certificate to make it due), with the
    // adopted certificate's key type.
    host.issue(json!({"force": true}), "forced");
    assert_eq!(installed_key_type(&host), "rsa-3072");
    assert_eq!(host.meta()["key_type"], "rsa-3072", "{}", host.meta());

    // Not due any more, nothing set: kept as it is.
    let again = host.request(json!({}));
    assert_eq!(
        ok(&again)["certs"]["main"]["action"],
        "ok",
        "{}",
        again.json
    );

    // The user sets a type: reissued with it.
    host.issue(json!({"key_type": "ec-p256"}), "key_type_changed");
    assert_eq!(installed_key_type(&host), "ec-p256");
    // The cert's own key_type is a setting too.
    host.issue(
        json!({"certs": {"main": {"names": ["dyn1.example.test"], "key_type": "rsa-2048"}}}),
        "key_type_changed",
    );
    assert_eq!(installed_key_type(&host), "rsa-2048");

    // Setting removed: the certificate keeps its type (no reissue).
    let kept = host.request(json!({}));
    let k = ok(&kept);
    assert_eq!(k["certs"]["main"]["action"], "ok", "{k}");
    assert_eq!(k["pending"], json!([]), "{k}");
    println!("adopted rsa-3072 renewed as rsa-3072; set ec-p256 and rsa-2048 reissued; unset kept rsa-2048");
}
