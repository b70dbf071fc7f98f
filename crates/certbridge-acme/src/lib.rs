//! certbridge-acme: the host side of DNS-01 issuance.
//! - [`client`], [`http`]: the ACME client (accounts, orders, finalize) over an HTTP client that
//!   resolves names in-process.
//! - [`store`]: the cert root layout, metadata, atomic generation swaps.
//! - [`policy`]: the renewal decision.
//! - [`certinfo`]: parsing and checking keys, certificates and chains.
//! - [`selfsign`]: the local test CA for `self_sign`.
//! - [`request`], [`finalize`]: what the `acme_request` and `acme_finalize` modules do;
//!   [`cnamecheck`]: acme_request's CNAME check before ordering (certbridge-dns's chaser);
//!   [`retired`]: values of finished orders, reported so the next publish removes them.

pub mod acme;
pub mod budget;
pub mod ca;
pub mod certinfo;
pub mod client;
pub mod cnamecheck;
pub mod config;
pub mod eventlog;
pub mod finalize;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod retired;
pub mod selfsign;
pub mod store;
pub mod txtcheck;

/// Unix time now, in seconds (the one clock the modules read; the policy takes it as input).
pub fn now() -> i64 {
    unix(std::time::SystemTime::now())
}

/// A point in time as unix seconds (0 before the epoch).
pub(crate) fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
