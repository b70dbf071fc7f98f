//! `dns_check` of acme_finalize: before asking the CA to validate, wait until every dns-01
//! value of a cert is visible at its `_acme-challenge` record (the resolver follows the CNAME)
//! on the resolver the host is told to use. A validation that fails costs rate limit; a value
//! that was never published (a `--limit` run) must not reach the CA.

use crate::store::ChallengeRecord;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
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

/// Waits until every value is visible, polling until `deadline`; returns the ones still
/// missing then (empty: all visible).
pub async fn wait_visible(
    resolver: &TokioResolver,
    challenges: &[ChallengeRecord],
    deadline: Instant,
) -> Vec<ChallengeRecord> {
    let mut delay = Duration::from_millis(100);
    loop {
        let mut missing = Vec::new();
        for c in challenges {
            if !txt_values(resolver, &c.record).await.contains(&c.value) {
                missing.push(c.clone());
            }
        }
        if missing.is_empty() || Instant::now() + delay >= deadline {
            return missing;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
