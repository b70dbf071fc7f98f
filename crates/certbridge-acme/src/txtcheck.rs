//! `dns_check` of acme_finalize: before asking the CA to validate, wait until every dns-01
//! value of a cert is visible at its `_acme-challenge` record (the resolver follows the CNAME)
//! on the resolver the host is told to use. A validation that fails costs rate limit; a value
//! that was never published (a `--limit` run) must not reach the CA. The polling is
//! certbridge-dns's propagation checker, the one acme_txt_publish verifies with.

use crate::store::ChallengeRecord;
use certbridge_core::names::DomainName;
use certbridge_dns::verify::{self, Ask, Expected};
use std::net::SocketAddr;
use std::time::Instant;

/// Waits until every value is visible on `server`, polling until `deadline`; returns the
/// ones still missing then (empty: all visible). A record that is not a domain name can
/// never be visible.
pub async fn wait_visible(
    server: SocketAddr,
    challenges: &[ChallengeRecord],
    deadline: Instant,
) -> Vec<ChallengeRecord> {
    let mut expected = Expected::new();
    let mut unnamed = Vec::new();
    for c in challenges {
        match DomainName::parse(&c.record) {
            Ok(record) => {
                expected.entry(record).or_default().insert(c.value.clone());
            }
            Err(_) => unnamed.push(c.clone()),
        }
    }
    let deadline = tokio::time::Instant::from_std(deadline);
    let result = verify::verify_server(server, &expected, Ask::Resolver, deadline).await;
    let mut missing = unnamed;
    missing.extend(
        challenges
            .iter()
            .filter(|c| {
                result
                    .missing
                    .get(
                        DomainName::parse(&c.record)
                            .map(|d| d.as_str().to_owned())
                            .unwrap_or_default()
                            .as_str(),
                    )
                    .is_some_and(|vs| vs.contains(&c.value))
            })
            .cloned(),
    );
    missing
}
