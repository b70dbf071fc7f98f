//! Did the server load the zone file it was told to reload? `rndc reload` answers "zone
//! reload queued" before loading; a file the server then refuses (BIND 9.18.28+: an RRset over
//! `max-records-per-type`) leaves the old zone served, and waiting for the new values would
//! only end at the deadline. So after a reload, the served SOA serial must reach the rendered
//! one within a short grace; otherwise the publish fails at once, saying what is served.

use crate::chase::to_name;
use crate::options::DEFAULT_MAX_RECORDS_PER_TYPE;
use crate::transport;
use certbridge_core::names::DomainName;
use hickory_proto::rr::{RData, RecordType};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// How long a server may take to serve a reloaded zone (measured on loopback: 30-60 ms; a
/// large zone on a busy server takes longer, a refused one never comes).
pub const LOAD_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Each SOA query's own deadline (the last one may end after the grace).
const QUERY_WAIT: Duration = Duration::from_secs(2);

/// `a` is `b` or later in RFC 1982 serial arithmetic (an inline-signed zone may serve a
/// signed serial above the file's).
pub fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}

/// The SOA serial `server` serves for `zone`.
pub async fn served_serial(
    server: SocketAddr,
    zone: &DomainName,
    deadline: Instant,
) -> Result<u32, String> {
    let msg = transport::query(server, &to_name(zone), RecordType::SOA, false, deadline)
        .await
        .map_err(|e| e.to_string())?;
    msg.answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "{server}: no SOA for {} ({})",
                zone.fqdn(),
                msg.metadata.response_code
            )
        })
}

/// Waits until one of `servers` serves `serial` (or later) for `zone`, at most
/// [`LOAD_GRACE`]. `after` (owner -> values the file carries) explains a refusal.
pub async fn confirm(
    zone: &DomainName,
    serial: u32,
    servers: &[SocketAddr],
    after: &BTreeMap<DomainName, BTreeSet<String>>,
    deadline: Instant,
) -> Result<(), String> {
    let until = deadline.min(Instant::now() + LOAD_GRACE);
    let mut last: BTreeMap<SocketAddr, Result<u32, String>> = BTreeMap::new();
    loop {
        for s in servers {
            let got = served_serial(*s, zone, deadline.min(Instant::now() + QUERY_WAIT)).await;
            if matches!(got, Ok(n) if serial_at_least(n, serial)) {
                return Ok(());
            }
            last.insert(*s, got);
        }
        let next = Instant::now() + POLL;
        if next >= until {
            break;
        }
        sleep_until(next).await;
    }
    let served: Vec<String> = last
        .iter()
        .map(|(s, r)| match r {
            Ok(n) => format!("{s} still serves serial {n}"),
            Err(e) => e.clone(),
        })
        .collect();
    Err(format!(
        "after {} s {}; {}",
        LOAD_GRACE.as_secs(),
        served.join(", "),
        why_refused(after)
    ))
}

/// The likely reason a server refused the file, from what it carries.
pub fn why_refused(after: &BTreeMap<DomainName, BTreeSet<String>>) -> String {
    let limit = DEFAULT_MAX_RECORDS_PER_TYPE as usize;
    match after.iter().max_by_key(|(_, v)| v.len()) {
        Some((owner, values)) if values.len() > limit => format!(
            "{} carries {} TXT records: BIND 9.18.28 and later refuse a zone with more than `max-records-per-type` ({limit} by default) records of one type at one name (named logs \"too many records\"); give each name its own label (_acme-challenge.<name> CNAME <name>.<signing zone>)",
            owner.fqdn(),
            values.len()
        ),
        _ => "the server kept the old zone: its log says why (named: \"loading from master file ... failed\"); check the file with named-checkzone".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_in_rfc1982_arithmetic() {
        assert!(serial_at_least(5, 5));
        assert!(serial_at_least(6, 5));
        assert!(!serial_at_least(4, 5));
        assert!(serial_at_least(2, u32::MAX - 1), "wrapped forward");
        assert!(!serial_at_least(u32::MAX - 1, 2));
    }

    #[test]
    fn a_crowded_owner_is_named_as_the_reason() {
        let owner = DomainName::parse("acme.signing.test").unwrap();
        let many: BTreeSet<String> = (0..101).map(|i| format!("v{i}")).collect();
        let why = why_refused(&BTreeMap::from([(owner.clone(), many)]));
        assert!(
            why.contains("acme.signing.test. carries 101") && why.contains("max-records-per-type"),
            "{why}"
        );
        let few = BTreeSet::from(["v".to_string()]);
        assert!(why_refused(&BTreeMap::from([(owner, few)])).contains("its log"));
    }
}
