//! The ordering decisions against a fake CA that records every call: Let's Encrypt's
//! per-profile limits before any order, and stored orders the CA has let expire.

use super::*;
use crate::ca::{CreatedOrder, OrderView, RenewalWindow};
use crate::policy::{LE_PRODUCTION, LE_STAGING};
use std::path::Path;
use std::sync::{Arc, Mutex};

const NOW: i64 = 1_800_000_000;
const ACCOUNT: &str = "https://ca.example.test/acct/1";
const STORED: &str = "https://ca.example.test/order/stored";

#[derive(Default, Debug)]
struct Calls {
    opened: usize,
    /// (names, profile) of every newOrder.
    new_orders: Vec<(Vec<String>, Option<String>)>,
    order_states: Vec<String>,
    deactivated: Vec<String>,
}

/// A CA offering Let's Encrypt's profile names. `refuse_over`: it answers a newOrder with
/// more names than this with Boulder's problem document.
#[derive(Clone, Default)]
struct FakeCa {
    calls: Arc<Mutex<Calls>>,
    refuse_over: Option<usize>,
}

impl FakeCa {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap()
    }
}

impl CaConnector for FakeCa {
    type Account = FakeCa;
    async fn open(&self, _cfg: &Config, _deadline: Instant) -> Result<FakeCa, CaFailure> {
        self.calls().opened += 1;
        Ok(self.clone())
    }
    async fn renewal_info(
        &self,
        _cfg: &Config,
        _deadline: Instant,
        _ids: &[String],
    ) -> Result<Option<Vec<Result<RenewalWindow, CaFailure>>>, CaFailure> {
        Ok(None)
    }
}

impl CaAccount for FakeCa {
    fn account_url(&self) -> String {
        ACCOUNT.into()
    }
    fn retries(&self) -> u64 {
        0
    }
    fn profiles(&self) -> Vec<String> {
        policy::LE_PROFILES
            .iter()
            .map(|l| l.profile.to_owned())
            .collect()
    }
    async fn new_order(
        &self,
        names: &[certbridge_core::names::Identifier],
        _replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<CreatedOrder, CaFailure> {
        let names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
        let count = names.len();
        let mut calls = self.calls();
        calls.new_orders.push((names, profile.map(str::to_owned)));
        if let Some(max) = self.refuse_over.filter(|max| count > *max) {
            let detail = format!(
                "Error creating new order :: Order cannot contain more than {max} DNS names"
            );
            return Err(CaFailure {
                message: format!("create an order: malformed: {detail}"),
                problem: Some(json!({"type": "urn:ietf:params:acme:error:malformed",
                                     "detail": detail, "status": 400})),
                retry_after: None,
            });
        }
        Ok(CreatedOrder {
            url: format!("https://ca.example.test/order/{}", calls.new_orders.len()),
            challenges: Vec::new(),
            replaces: None,
            replaces_dropped: None,
        })
    }
    async fn order_state(&self, url: &str) -> Result<Option<OrderView>, CaFailure> {
        self.calls().order_states.push(url.to_owned());
        Ok(Some(OrderView {
            status: OrderStatus::Pending,
            identifiers: vec!["main.example.test".into()],
            challenges: Vec::new(),
        }))
    }
    async fn deactivate_pending(&self, url: &str) -> Result<(), CaFailure> {
        self.calls().deactivated.push(url.to_owned());
        Ok(())
    }
    async fn finalize(
        &self,
        _url: &str,
        _csr: &[u8],
        _deadline: Instant,
    ) -> Result<String, CaFailure> {
        unreachable!("acme_request never finalizes")
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}.example.test")).collect()
}

fn config(root: &Path, directory: &str, certs: Value) -> Config {
    let v = json!({"certs": certs, "directory": directory, "cert_root": root.join("certs"),
                   "jitter_seed": "h"});
    let Value::Object(m) = v else { unreachable!() };
    let (common, _own): (config::CommonOptions, RequestOptions) =
        config::split_options(m, OWN_KEYS).unwrap();
    config::validate(common, 60).unwrap()
}

fn run_at(cfg: &Config, ca: &FakeCa, check_mode: bool, pending_max_age: i64) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = EventLog::disabled("acme_request");
    rt.block_on(run(
        cfg,
        check_mode,
        pending_max_age,
        policy::DEFAULT_ARI_INTERVAL,
        None,
        ca,
        &log,
        NOW,
    ))
    .unwrap()
}

fn failure<'a>(out: &'a Outcome, cert: &str) -> Option<&'a CaFailure> {
    out.failures.iter().find(|(c, _)| c == cert).map(|(_, f)| f)
}

#[test]
fn lets_encrypt_name_limits_fail_before_ordering_without_backoff() {
    for directory in [
        LE_PRODUCTION,
        LE_STAGING,
        "https://ACME-v02.api.letsencrypt.org/directory/",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let certs = json!({
            "big": {"names": names(26), "profile": "tlsserver"},
            "short": {"names": names(30).into_iter().map(|n| format!("s{n}")).collect::<Vec<_>>(), "profile": "shortlived"},
            "small": {"names": ["small.example.test"], "profile": "tlsserver"},
            "classic": names(26).into_iter().map(|n| format!("c{n}")).collect::<Vec<_>>(),
            "edge": {"names": names(25).into_iter().map(|n| format!("e{n}")).collect::<Vec<_>>(), "profile": "tlsserver"},
        });
        let cfg = config(tmp.path(), directory, certs);
        let ca = FakeCa::default();
        let out = run_at(&cfg, &ca, false, 3600);
        let big = failure(&out, "big").expect("big refused").message.clone();
        assert!(
            big.contains("26 names")
                && big.contains("`tlsserver` profile allows at most 25")
                && big.contains("`classic` allows 100"),
            "{big}"
        );
        let short = failure(&out, "short")
            .expect("short refused")
            .message
            .clone();
        assert!(
            short.contains("30 names") && short.contains("`shortlived` profile allows at most 25"),
            "{short}"
        );
        assert_eq!(out.failures.len(), 2, "{:?}", out.failures);
        let ordered: Vec<usize> = ca.calls().new_orders.iter().map(|(n, _)| n.len()).collect();
        let mut ordered = ordered;
        ordered.sort();
        assert_eq!(
            ordered,
            vec![1, 25, 26],
            "{directory}: the others are ordered"
        );
        for cert in ["big", "short"] {
            let meta = cfg.store.load_meta(cert).unwrap().unwrap_or_default();
            assert_eq!(meta.retry_not_before, None, "{cert}: no backoff");
            assert_eq!(meta.failures, 0);
            assert!(meta.pending.is_none());
        }
        assert_eq!(out.certs["big"].action, Action::Issue);
    }
}

#[test]
fn the_limit_check_needs_no_ca_and_holds_in_check_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        LE_PRODUCTION,
        json!({"big": {"names": names(26), "profile": "tlsserver"}}),
    );
    let ca = FakeCa::default();
    let out = run_at(&cfg, &ca, true, 3600);
    assert!(failure(&out, "big").is_some());
    let out = run_at(&cfg, &ca, false, 3600);
    assert!(failure(&out, "big").is_some());
    let calls = ca.calls();
    assert_eq!(
        (calls.opened, calls.new_orders.len()),
        (0, 0),
        "no account, no order: {calls:?}"
    );
}

#[test]
fn other_cas_are_asked_and_their_answer_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"big": {"names": names(26), "profile": "tlsserver"}}),
    );
    let ca = FakeCa {
        refuse_over: Some(25),
        ..Default::default()
    };
    let out = run_at(&cfg, &ca, false, 3600);
    let f = failure(&out, "big").expect("the CA refused");
    assert!(
        f.message.contains("more than 25 DNS names"),
        "{}",
        f.message
    );
    assert_eq!(f.problem.as_ref().unwrap()["status"], 400);
    assert_eq!(ca.calls().new_orders.len(), 1);
    // The CA said no: that is a CA failure, with the usual backoff.
    let meta = cfg.store.load_meta("big").unwrap().unwrap();
    assert_eq!(meta.retry_not_before, Some(NOW + 60));
}

fn store_pending(cfg: &Config, cert: &str, names: &[&str], age: i64) {
    let spec = cfg.cert(cert).unwrap();
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    let meta = Meta {
        pending: Some(PendingOrder {
            url: Some(STORED.into()),
            created_at: NOW - age,
            directory: cfg.directory.clone(),
            account_url: Some(ACCOUNT.into()),
            names: sorted,
            key_type: spec.key_type,
            staging: cfg.untrusted_target(),
            self_sign: false,
            challenges: Vec::new(),
            profile: spec.profile.clone(),
            replaces: None,
        }),
        ..Default::default()
    };
    cfg.store.save_meta(cert, &meta).unwrap();
}

/// (resumed, deactivated, order_reason) after one run with a stored order `age` s old.
fn with_stored(
    directory: &str,
    profile: Option<&str>,
    age: i64,
    pending_max_age: i64,
) -> (bool, bool, Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let cert = match profile {
        Some(p) => json!({"names": ["main.example.test"], "profile": p}),
        None => json!(["main.example.test"]),
    };
    let cfg = config(tmp.path(), directory, json!({ "main": cert }));
    store_pending(&cfg, "main", &["main.example.test"], age);
    let ca = FakeCa::default();
    let out = run_at(&cfg, &ca, false, pending_max_age);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let calls = ca.calls();
    let resumed = calls.new_orders.is_empty();
    assert_eq!(
        resumed,
        !calls.order_states.is_empty() && calls.deactivated.is_empty()
    );
    assert_eq!(out.orders_created, usize::from(!resumed));
    (
        resumed,
        calls.deactivated == vec![STORED.to_owned()],
        out.certs["main"].order_reason.clone(),
    )
}

#[test]
fn a_stored_order_past_its_profiles_lifetime_is_not_resumed() {
    // tlsserver / shortlived: pending authorizations live 1 h at Let's Encrypt, whatever
    // pending_max_age allows.
    for profile in ["tlsserver", "shortlived"] {
        let (resumed, deactivated, why) = with_stored(LE_PRODUCTION, Some(profile), 3700, 86_400);
        assert!(!resumed && deactivated, "{profile}");
        let why = why.unwrap();
        assert!(
            why.contains("3700 s old")
                && why.contains(&format!("`{profile}` profile"))
                && why.contains("1 h")
                && why.contains("8 h"),
            "{why}"
        );
        let (resumed, _, why) = with_stored(LE_STAGING, Some(profile), 1800, 86_400);
        assert!(resumed && why.is_none(), "{profile}: younger than 1 h");
    }
    // classic (named or Let's Encrypt's default): 7 days.
    for profile in [Some("classic"), None] {
        let (resumed, _, _) = with_stored(LE_PRODUCTION, profile, 3 * 86_400, 30 * 86_400);
        assert!(resumed, "{profile:?}");
        let (resumed, _, why) = with_stored(LE_PRODUCTION, profile, 8 * 86_400, 30 * 86_400);
        assert!(!resumed, "{profile:?}");
        assert!(why.unwrap().contains("7 d"));
    }
    // Another CA: only pending_max_age counts.
    let (resumed, _, _) = with_stored(
        "https://ca.example.test/dir",
        Some("tlsserver"),
        3700,
        86_400,
    );
    assert!(resumed);
    let (resumed, deactivated, why) =
        with_stored("https://ca.example.test/dir", Some("tlsserver"), 3700, 3600);
    assert!(!resumed && deactivated);
    assert!(why.unwrap().contains("pending_max_age (3600 s)"));
}

#[test]
fn an_order_no_longer_needed_is_deactivated_before_it_is_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"main": ["main.example.test"]}),
    );
    store_pending(&cfg, "main", &["main.example.test"], 60);
    // Installed and valid: nothing to issue (the same state a moved ARI window leaves).
    let now = crate::now();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["main.example.test".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 86_400).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 80 * 86_400).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = cfg.store.cert_dir("main.example.test");
    std::fs::create_dir_all(dir.join("gen-1")).unwrap();
    std::fs::write(dir.join("gen-1/cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("gen-1/privkey.pem"), key.serialize_pem()).unwrap();
    std::os::unix::fs::symlink("gen-1", dir.join("current")).unwrap();
    let ca = FakeCa::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = EventLog::disabled("acme_request");
    let out = rt
        .block_on(run(&cfg, false, 3600, 21_600, None, &ca, &log, now))
        .unwrap();
    assert_eq!(out.certs["main"].action, Action::Ok, "{:?}", out.certs);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let calls = ca.calls();
    assert_eq!(calls.deactivated, vec![STORED.to_owned()]);
    assert!(calls.new_orders.is_empty());
    drop(calls);
    let meta = cfg.store.load_meta("main").unwrap().unwrap();
    assert!(meta.pending.is_none());
    // Nothing left to abandon: the next pulse asks nothing.
    let out = rt
        .block_on(run(&cfg, false, 3600, 21_600, None, &ca, &log, now))
        .unwrap();
    assert_eq!(out.certs["main"].action, Action::Ok);
    assert_eq!(ca.calls().opened, 1);
}

#[test]
fn a_stored_order_for_other_names_is_deactivated_before_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "https://ca.example.test/dir",
        json!({"main": ["main.example.test", "www.example.test"]}),
    );
    store_pending(&cfg, "main", &["main.example.test"], 60);
    let ca = FakeCa::default();
    let out = run_at(&cfg, &ca, false, 3600);
    let calls = ca.calls();
    assert_eq!(calls.deactivated, vec![STORED.to_owned()]);
    assert!(calls.order_states.is_empty());
    assert_eq!(calls.new_orders.len(), 1);
    let why = out.certs["main"].order_reason.clone().unwrap();
    assert!(why.contains("other names"), "{why}");
}
