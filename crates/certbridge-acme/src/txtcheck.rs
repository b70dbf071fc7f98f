//! `dns_check` of acme_finalize: before asking the CA to validate, wait until every dns-01
//! value of a cert is visible at its `_acme-challenge` record (the resolver follows the CNAME)
//! on the resolver the host is told to use. A validation that fails costs rate limit; a value
//! that was never published (a `--limit` run) must not reach the CA. The polling is
//! certbridge-dns's propagation checker, the one acme_txt_publish verifies with.

use crate::store::ChallengeRecord;
use certbridge_core::names::DomainName;
use certbridge_dns::verify::{self, Expected, TxtSource};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A resolver that asks exactly `server` (UDP, TCP when truncated), without caching.
pub fn resolver(server: SocketAddr) -> Result<TokioResolver, String> {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let ns = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(2);
    builder
        .build()
        .map_err(|e| format!("cannot set up the resolver {server}: {e}"))
}

async fn txt_values(resolver: &TokioResolver, record: &str) -> Vec<String> {
    let Ok(lookup) = resolver.txt_lookup(format!("{record}.")).await else {
        return Vec::new();
    };
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

/// The host's resolver as a source of the shared propagation checker: it follows the
/// `_acme-challenge` CNAME itself, so the values at the end of the chain are what count.
struct ResolverSource<'a>(&'a TokioResolver);

impl TxtSource for ResolverSource<'_> {
    async fn txt(
        &self,
        owner: &DomainName,
        deadline: tokio::time::Instant,
    ) -> Result<BTreeSet<String>, String> {
        match tokio::time::timeout_at(deadline, txt_values(self.0, owner.as_str())).await {
            Ok(values) => Ok(values.into_iter().collect()),
            Err(_) => Err(format!(
                "no answer for {} before the deadline",
                owner.fqdn()
            )),
        }
    }
}

/// Waits until every value is visible, polling with certbridge-dns's propagation checker
/// (the one acme_txt_publish verifies with) until `deadline`; returns the ones still missing
/// then (empty: all visible). A record that is not a domain name can never be visible.
pub async fn wait_visible(
    resolver: &TokioResolver,
    challenges: &[ChallengeRecord],
    deadline: Instant,
) -> Vec<ChallengeRecord> {
    let mut expected = Expected::new();
    let mut missing = Vec::new();
    let mut named = Vec::new();
    for c in challenges {
        match DomainName::parse(&c.record) {
            Ok(record) => {
                expected
                    .entry(record.clone())
                    .or_default()
                    .insert(c.value.clone());
                named.push((record, c));
            }
            Err(_) => missing.push(c.clone()),
        }
    }
    let deadline = tokio::time::Instant::from_std(deadline);
    let result = verify::verify_server(&ResolverSource(resolver), &expected, deadline).await;
    missing.extend(
        named
            .into_iter()
            .filter(|(record, c)| {
                result
                    .missing
                    .get(record.as_str())
                    .is_some_and(|vs| vs.contains(&c.value))
            })
            .map(|(_, c)| c.clone()),
    );
    missing
}
