//! acme_request's orchestration against the fake CA ([`crate::ca::fake`]), without a network:
//! the decisions, Let's Encrypt's per-profile limits before any order, resuming or replacing a
//! stored order, CA failures with their problem documents, the backoff, renewal information
//! and its fallbacks, and the `replaces` fallback.

use super::*;
use crate::ca::fake::{
    ca_problem, install_issued, problem_with, FakeAri, FakeCa, FakeOrder, ACCOUNT,
};
use crate::ca::RenewalWindow;
use crate::client::SubProblemDoc;
use crate::policy::{LE_PRODUCTION, LE_STAGING};
use std::path::Path;

mod ari;
mod failures;
mod limits;
mod orders;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;
const STORED: &str = "https://ca.example.test/order/stored";
const OTHER_CA: &str = "https://ca.example.test/dir";

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

/// One cert, `main` (main.example.test), at a CA that is not Let's Encrypt.
fn main_config(root: &Path) -> Config {
    config(root, OTHER_CA, json!({"main": ["main.example.test"]}))
}

fn run_when(
    cfg: &Config,
    ca: &FakeCa,
    check_mode: bool,
    pending_max_age: i64,
    now: i64,
) -> Outcome {
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
        None,
        None,
        ca,
        &log,
        now,
    ))
    .unwrap()
}

fn run_at(cfg: &Config, ca: &FakeCa, check_mode: bool, pending_max_age: i64) -> Outcome {
    run_when(cfg, ca, check_mode, pending_max_age, NOW)
}

fn failure<'a>(out: &'a Outcome, cert: &str) -> Option<&'a CaFailure> {
    out.failures.iter().find(|(c, _)| c == cert).map(|(_, f)| f)
}

fn meta(cfg: &Config, cert: &str) -> Meta {
    cfg.store.load_meta(cert).unwrap().expect("metadata saved")
}

/// A certificate for `main` valid from 10 days ago for 90 days: not due by the lifetime rule.
fn install_valid(ca: &FakeCa, cfg: &Config) -> crate::certinfo::LeafInfo {
    install_issued(ca, cfg, "main", NOW - 10 * DAY, NOW + 80 * DAY)
}

/// The ARI id of what is installed for `main`.
fn installed_id(cfg: &Config) -> String {
    let der = cfg.store.installed_leaf_der("main.example.test").unwrap();
    crate::client::ari_cert_id(&der).unwrap()
}

fn window(start: i64, end: i64) -> RenewalWindow {
    RenewalWindow {
        start,
        end,
        retry_after: None,
        explanation_url: None,
    }
}

fn store_pending(cfg: &Config, ca: &FakeCa, cert: &str, names: &[&str], age: i64) {
    let spec = cfg.cert(cert).unwrap();
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    ca.script()
        .orders
        .insert(STORED.into(), FakeOrder::pending(&sorted));
    let meta = Meta {
        pending: Some(PendingOrder {
            created_at: NOW - age,
            directory: cfg.directory.clone(),
            names: sorted,
            key_type: spec.key_type.resolve(None),
            staging: cfg.untrusted_target(),
            at: OrderAt::Ca(CaOrder {
                url: STORED.into(),
                account_url: ACCOUNT.into(),
                challenges: Vec::new(),
                profile: spec.profile.clone(),
                replaces: None,
                kind: Default::default(),
                http: Vec::new(),
            }),
        }),
        ..Default::default()
    };
    cfg.store.save_meta(cert, &meta).unwrap();
}
