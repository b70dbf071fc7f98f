//! The ACME client layer (certbridge_acme::client) against the real test bed: accounts, orders
//! and their dns-01 values, resuming in a new "process", finalizing, CA restarts, flaky nonces,
//! the CA's problem documents, and the HTTP layer's failures (unreachable, timeout, TLS, proxy).

use certbridge_testsupport as support;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use certbridge_acme::client::{
    decode_eab_key, runtime, AccountStore, AcmeError, ClientConfig, OrderStatus,
};
use certbridge_core::names::Identifier;
use support::{publish, restart_pebble, ConnectProxy, Testbed};

fn ids(names: &[&str]) -> Vec<Identifier> {
    names
        .iter()
        .map(|n| Identifier::parse(n).expect("test name").0)
        .collect()
}

fn bed_config(bed: &Testbed, budget: Duration) -> ClientConfig {
    let mut cfg = ClientConfig::new(bed.get("TESTBED_ACME_DIRECTORY"), Instant::now() + budget);
    cfg.ca_file = Some(PathBuf::from(bed.get("TESTBED_ACME_CA_FILE")));
    cfg
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CSR (DER) for the names, with a fresh P-256 key made by openssl.
fn make_csr(dir: &Path, names: &[&str]) -> Vec<u8> {
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let csr = dir.join(format!("csr-{}.der", names[0].replace('*', "w")));
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-keyout"])
        .arg(dir.join("key.pem"))
        .args(["-subj", "/", "-outform", "DER", "-out"])
        .arg(&csr)
        .arg("-addext")
        .arg(format!("subjectAltName={}", san.join(","))));
    fs::read(csr).expect("csr")
}

/// The chain verifies up to the bed's issuing root, and the leaf carries every name.
fn verify_chain(bed: &Testbed, dir: &Path, chain_pem: &str, names: &[&str]) {
    let blocks: Vec<&str> = chain_pem
        .split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|b| b.starts_with("-----BEGIN CERTIFICATE-----"))
        .collect();
    assert!(blocks.len() >= 2, "chain has {} certificates", blocks.len());
    let leaf = dir.join("leaf.pem");
    let rest = dir.join("intermediates.pem");
    fs::write(&leaf, format!("{}\n", blocks[0])).unwrap();
    fs::write(&rest, format!("{}\n", blocks[1..].join("\n"))).unwrap();
    let out = run(Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            bed.get("TESTBED_ISSUER_ROOT"),
            "-untrusted",
        ])
        .arg(&rest)
        .arg(&leaf));
    assert!(out.contains(": OK"), "openssl verify: {out}");
    let san = run(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf));
    for n in names {
        assert!(san.contains(&format!("DNS:{n}")), "{n} not in {san}");
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The whole client against one bed: account creation and reuse, an order with a wildcard and
/// its apex, values published, a "new process" resuming and finalizing, re-download of a valid
/// order, an invalid order, a blocklisted name, deactivation, TLS/ca_file errors, `localhost`
/// through in-process resolution, a CONNECT proxy, and finally a CA restart.
#[test]
fn client_against_the_test_bed() {
    let bed = Testbed::start(&["--hosts", "6", "--blocklist", "blocked.example.test"]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("certs");
    let rt = runtime().unwrap();
    let budget = Duration::from_secs(120);

    // Account: created with a file 0600 in a 0700 dir, reused with the same URL.
    let store = AccountStore::new(&root);
    let cfg = bed_config(&bed, budget);
    let account = rt
        .block_on(store.open_or_create(&cfg, Some("ops@example.test"), true, None))
        .expect("create account");
    let account_url = account.url().to_owned();
    let file = store.path_for(&cfg.directory);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let again = rt
        .block_on(store.open_or_create(&cfg, Some("ops@example.test"), true, None))
        .expect("reopen account");
    assert_eq!(again.url(), account_url);
    // A changed email updates the contact (same account).
    let changed = rt
        .block_on(store.open_or_create(&cfg, Some("new@example.test"), true, None))
        .expect("update contact");
    assert_eq!(changed.url(), account_url);
    let info = store
        .stored(&cfg.directory)
        .unwrap()
        .expect("stored account");
    assert_eq!(info.email.as_deref(), Some("new@example.test"));
    assert_eq!(info.account_url, account_url);
    // load_only finds it and writes nothing.
    let before = fs::read(&file).unwrap();
    let loaded = rt
        .block_on(store.load_only(&cfg))
        .unwrap()
        .expect("load only");
    assert_eq!(loaded.url(), account_url);
    assert_eq!(fs::read(&file).unwrap(), before);

    // Order: wildcard + apex give two values at one record, plus one more name.
    let names = [
        "dyn1.example.test",
        "*.dyn1.example.test",
        "dyn2.example.test",
    ];
    let order = rt
        .block_on(account.new_order(&ids(&names), None, None))
        .expect("new order");
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.challenges.len(), 3, "{:?}", order.challenges);
    assert_eq!(order.identifiers.len(), 3);
    for c in &order.challenges {
        assert_eq!(c.value.as_str().len(), 43);
        assert_eq!(c.record, c.identifier.challenge_record());
    }
    let at_dyn1: Vec<_> = order
        .challenges
        .iter()
        .filter(|c| c.record.as_str() == "_acme-challenge.dyn1.example.test")
        .collect();
    assert_eq!(at_dyn1.len(), 2);
    assert_ne!(at_dyn1[0].value, at_dyn1[1].value);
    publish(&bed, &order.challenges);
    drop((account, again, changed, loaded));

    // "Process restart": a new store and account from the file resume the order by URL.
    let resumed_store = AccountStore::new(&root);
    let cfg = bed_config(&bed, budget);
    let resumed = rt
        .block_on(resumed_store.open_or_create(&cfg, Some("new@example.test"), true, None))
        .expect("resume account");
    assert_eq!(resumed.url(), account_url);
    let snapshot = rt
        .block_on(resumed.order_state(&order.url))
        .unwrap()
        .expect("order still known");
    assert_eq!(snapshot.status, OrderStatus::Pending);
    assert_eq!(snapshot.challenges, order.challenges);
    let csr = make_csr(work.path(), &names);
    let chain = rt
        .block_on(resumed.finalize(
            &order.url,
            &csr,
            Instant::now() + budget,
            certbridge_acme::ca::ChallengeKind::Dns01,
        ))
        .expect("finalize");
    verify_chain(&bed, work.path(), &chain, &names);
    let done = rt
        .block_on(resumed.order_state(&order.url))
        .unwrap()
        .expect("order known");
    assert_eq!(done.status, OrderStatus::Valid);
    assert!(done.challenges.is_empty());
    // A rerun on the valid order downloads the same chain (no second issuance).
    let again = rt
        .block_on(resumed.finalize(
            &order.url,
            &csr,
            Instant::now() + budget,
            certbridge_acme::ca::ChallengeKind::Dns01,
        ))
        .expect("re-download");
    assert_eq!(again, chain);

    // A value never published: the order turns invalid, the error names the identifier.
    let unpublished = rt
        .block_on(resumed.new_order(&ids(&["dyn3.example.test"]), None, None))
        .unwrap();
    let csr3 = make_csr(work.path(), &["dyn3.example.test"]);
    let err = rt
        .block_on(resumed.finalize(
            &unpublished.url,
            &csr3,
            Instant::now() + budget,
            certbridge_acme::ca::ChallengeKind::Dns01,
        ))
        .expect_err("unpublished value must fail");
    assert!(matches!(err, AcmeError::OrderInvalid { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("dyn3.example.test"), "{text}");
    assert!(text.contains("urn:ietf:params:acme:error:"), "{text}");

    // A name the CA refuses: its problem document, with type and detail.
    let err = rt
        .block_on(resumed.new_order(&ids(&["blocked.example.test"]), None, None))
        .expect_err("blocklisted name");
    let problem = err.problem().expect("a problem document").clone();
    assert_eq!(
        problem.kind.as_deref(),
        Some("urn:ietf:params:acme:error:rejectedIdentifier"),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("rejectedIdentifier"), "{text}");
    assert!(text.contains(problem.detail.as_deref().unwrap()), "{text}");

    // Abandoning a pending order deactivates its authorizations.
    let abandoned = rt
        .block_on(resumed.new_order(&ids(&["dyn4.example.test"]), None, None))
        .unwrap();
    let n = rt
        .block_on(resumed.deactivate_pending_authorizations(&abandoned.url))
        .unwrap();
    assert_eq!(n, 1);
    // Pebble then reports the order `deactivated` (not an RFC 8555 status): unusable, None.
    let after = rt
        .block_on(resumed.order_state(&abandoned.url))
        .expect("no error");
    assert!(
        after
            .as_ref()
            .is_none_or(|o| o.challenges.is_empty() && o.status != OrderStatus::Pending),
        "{after:?}"
    );

    // A ca_file that did not sign the server's certificate: a TLS error naming the URL.
    let mut wrong = bed_config(&bed, Duration::from_secs(20));
    wrong.ca_file = Some(PathBuf::from(bed.get("TESTBED_ISSUER_ROOT")));
    let err = rt
        .block_on(
            AccountStore::new(&work.path().join("other")).open_or_create(&wrong, None, true, None),
        )
        .expect_err("wrong CA");
    assert!(matches!(err, AcmeError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains(&cfg.directory), "{err}");
    assert!(err.to_string().contains("ca_file"), "{err}");

    // `localhost` resolves in-process (hickory reading /etc/hosts): a separate account, since
    // the directory URL is spelled differently.
    let mut by_name = bed_config(&bed, budget);
    by_name.directory = cfg.directory.replace("127.0.0.1", "localhost");
    let named = rt
        .block_on(store.open_or_create(&by_name, None, true, None))
        .expect("account via localhost");
    assert_ne!(named.url(), account_url);
    assert!(
        named.url().starts_with("https://localhost:"),
        "{}",
        named.url()
    );
    assert_ne!(
        store.path_for(&by_name.directory),
        store.path_for(&cfg.directory)
    );

    // Through a CONNECT proxy: every connection is tunnelled; a refusing proxy is named.
    let acme_port: u16 = cfg
        .directory
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let proxy = ConnectProxy::allowing(acme_port);
    let mut proxied = bed_config(&bed, budget);
    proxied.proxy = Some(format!("http://127.0.0.1:{}", proxy.port));
    let via_proxy = rt
        .block_on(AccountStore::new(&root).open_or_create(&proxied, None, true, None))
        .expect("account through the proxy");
    assert_eq!(via_proxy.url(), account_url);
    let order = rt
        .block_on(via_proxy.new_order(&ids(&["dyn5.example.test"]), None, None))
        .expect("order through the proxy");
    assert_eq!(order.challenges.len(), 1);
    assert!(proxy.tunnels.load(Ordering::SeqCst) >= 1);
    let refusing = ConnectProxy::allowing(1);
    let mut refused = bed_config(&bed, Duration::from_secs(20));
    refused.proxy = Some(format!("http://127.0.0.1:{}", refusing.port));
    let err = rt
        .block_on(AccountStore::new(&root).open_or_create(&refused, None, true, None))
        .expect_err("refusing proxy");
    assert!(matches!(err, AcmeError::Proxy { .. }), "{err:?}");
    assert!(err.to_string().contains("403"), "{err}");

    // CA restarted with an order pending: the order is unknown (None, not an error), and the
    // account is registered anew.
    let pending = rt
        .block_on(resumed.new_order(&ids(&["dyn6.example.test"]), None, None))
        .unwrap();
    let _pebble = restart_pebble(&bed);
    let cfg = bed_config(&bed, budget);
    let gone = rt
        .block_on(resumed.order_state(&pending.url))
        .expect("no error");
    assert!(gone.is_none(), "{gone:?}");
    let err = rt
        .block_on(resumed.finalize(
            &pending.url,
            &csr,
            Instant::now() + budget,
            certbridge_acme::ca::ChallengeKind::Dns01,
        ))
        .expect_err("finalize on a forgotten order");
    assert!(matches!(err, AcmeError::OrderGone { .. }), "{err:?}");
    let fresh = rt
        .block_on(AccountStore::new(&root).open_or_create(&cfg, None, true, None))
        .expect("new account after restart");
    assert_ne!(fresh.url(), account_url);
    assert_eq!(
        store.stored(&cfg.directory).unwrap().unwrap().account_url,
        fresh.url()
    );
}

/// Pebble rejecting half of all nonces: issuance still completes, and the retries are counted.
#[test]
fn flaky_nonces_are_retried_until_issued() {
    let bed = Testbed::start_env(&["--hosts", "2"], &[("PEBBLE_WFE_NONCEREJECT", "50")]);
    let work = tempfile::tempdir().unwrap();
    let rt = runtime().unwrap();
    let cfg = bed_config(&bed, Duration::from_secs(180));
    let account = rt
        .block_on(AccountStore::new(work.path()).open_or_create(&cfg, None, true, None))
        .expect("account despite bad nonces");
    let names = ["dyn1.example.test", "*.dyn1.example.test"];
    let order = rt
        .block_on(account.new_order(&ids(&names), None, None))
        .expect("order despite bad nonces");
    publish(&bed, &order.challenges);
    let csr = make_csr(work.path(), &names);
    let chain = rt
        .block_on(account.finalize(
            &order.url,
            &csr,
            cfg.deadline,
            certbridge_acme::ca::ChallengeKind::Dns01,
        ))
        .expect("issued despite bad nonces");
    verify_chain(&bed, work.path(), &chain, &names);
    println!(
        "badNonce retries: {} of {} requests",
        account.retries(),
        account.requests()
    );
    assert!(account.retries() > 0);
}

/// A CA that requires external account binding: registration without it fails with the CA's
/// problem; with the bed's key id and HMAC key it succeeds and issues.
#[test]
fn external_account_binding_is_required_and_used() {
    let bed = Testbed::start(&["--hosts", "2", "--eab"]);
    let work = tempfile::tempdir().unwrap();
    let rt = runtime().unwrap();
    let cfg = bed_config(&bed, Duration::from_secs(120));
    let store = AccountStore::new(work.path());
    let err = rt
        .block_on(store.open_or_create(&cfg, None, true, None))
        .expect_err("binding required");
    let problem = err.problem().expect("problem document");
    assert_eq!(
        problem.short_kind(),
        Some("externalAccountRequired"),
        "{err}"
    );
    assert!(store.stored(&cfg.directory).unwrap().is_none());
    let key = decode_eab_key(bed.get("TESTBED_EAB_HMAC_KEY")).unwrap();
    let account = rt
        .block_on(store.open_or_create(
            &cfg,
            Some("ops@example.test"),
            true,
            Some((bed.get("TESTBED_EAB_KID"), &key)),
        ))
        .expect("account with binding");
    // Reopening needs no binding: the CA knows the key.
    let again = rt
        .block_on(store.open_or_create(&cfg, Some("ops@example.test"), true, None))
        .expect("reopen");
    assert_eq!(again.url(), account.url());
    let names = ["dyn1.example.test"];
    let order = rt
        .block_on(account.new_order(&ids(&names), None, None))
        .unwrap();
    publish(&bed, &order.challenges);
    let csr = make_csr(work.path(), &names);
    let chain = rt
        .block_on(account.finalize(
            &order.url,
            &csr,
            cfg.deadline,
            certbridge_acme::ca::ChallengeKind::Dns01,
        ))
        .expect("issued with binding");
    verify_chain(&bed, work.path(), &chain, &names);
}

/// A free port with nothing listening: `Unreachable` naming the URL, well within the deadline.
#[test]
fn unreachable_directory_is_named_within_the_deadline() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{port}/dir");
    let rt = runtime().unwrap();
    let started = Instant::now();
    let cfg = ClientConfig::new(url.clone(), started + Duration::from_secs(10));
    let mut cfg = cfg;
    cfg.ca_file = Some(write_any_ca(work.path()));
    let err = rt
        .block_on(AccountStore::new(work.path()).open_or_create(&cfg, None, true, None))
        .expect_err("nothing listens");
    assert!(matches!(err, AcmeError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing was written.
    assert!(!work.path().join(".certbridge").exists());
}

/// A server that accepts and never answers: the request's own deadline ends it.
#[test]
fn silent_server_times_out_per_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = thread::spawn(move || {
        // Keep the first connection open without a word, until the client gives up.
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let work = tempfile::tempdir().unwrap();
    let rt = runtime().unwrap();
    let started = Instant::now();
    let mut cfg = ClientConfig::new(
        format!("https://127.0.0.1:{port}/dir"),
        started + Duration::from_secs(30),
    );
    cfg.ca_file = Some(write_any_ca(work.path()));
    cfg.request_timeout = Duration::from_millis(1500);
    let err = rt
        .block_on(AccountStore::new(work.path()).open_or_create(&cfg, None, true, None))
        .expect_err("silent server");
    let elapsed = started.elapsed();
    assert!(matches!(err, AcmeError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    drop(rt);
    let _ = holder.join();
}

/// A `ca_file` that holds no certificate fails naming the file, before any network access.
#[test]
fn bad_ca_file_is_named_before_any_network_access() {
    let work = tempfile::tempdir().unwrap();
    let garbage = work.path().join("garbage.pem");
    fs::write(&garbage, "-----BEGIN NOTHING-----\n").unwrap();
    let rt = runtime().unwrap();
    for ca in [garbage.clone(), work.path().join("missing.pem")] {
        // The directory would be unreachable: a BadCaFile proves the file was checked first.
        let mut cfg = ClientConfig::new(
            "https://127.0.0.1:9/dir",
            Instant::now() + Duration::from_secs(10),
        );
        cfg.ca_file = Some(ca.clone());
        let err = rt
            .block_on(AccountStore::new(work.path()).open_or_create(&cfg, None, true, None))
            .expect_err("bad ca_file");
        assert!(matches!(err, AcmeError::BadCaFile { .. }), "{err:?}");
        assert!(err.to_string().contains(&ca.display().to_string()), "{err}");
        assert!(err.to_string().starts_with("ca_file "), "{err}");
    }
}

/// Any valid CA certificate (for tests that never get as far as a TLS handshake).
fn write_any_ca(dir: &Path) -> PathBuf {
    let key = dir.join("ca.key");
    let pem = dir.join("ca.pem");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=unrelated test CA",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&pem));
    pem
}
