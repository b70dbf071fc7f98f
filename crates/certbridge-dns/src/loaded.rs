//! Did the server load the zone file it was told to reload? `rndc reload` answers "zone
//! reload queued" before loading; a file the server then refuses (BIND 9.18.28+: an RRset over
//! `max-records-per-type`) leaves the old zone served, and waiting for the new values would
//! only end at the deadline. So after an `rndc` reload (or thaw) the serial `rndc zonestatus`
//! reports must reach the rendered one within a short grace; otherwise the publish fails at
//! once, saying what the server still has and why the file was likely refused. The server
//! that was reloaded is asked, not the zone's NS (secondaries take their own time).

use crate::error::PublishError;
use crate::options::DEFAULT_MAX_RECORDS_PER_TYPE;
use crate::zonefile::run_command;
use certbridge_core::names::DomainName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// How long a server may take to load a reloaded zone (measured on loopback: 30-60 ms; a
/// large zone on a busy server takes longer, a refused one never comes).
pub const LOAD_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// `a` is `b` or later in RFC 1982 serial arithmetic.
pub fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}

/// The loaded serial in `rndc zonestatus` output (`serial: N`; not `signed serial:`).
pub fn zonestatus_serial(output: &str) -> Option<u32> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("serial:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Polls `<rndc> zonestatus <zone>` until the loaded serial is `serial` or later, at most
/// [`LOAD_GRACE`]. `after` (owner -> values the file carries) explains a refusal.
pub async fn confirm(
    zone: &DomainName,
    rndc: &[String],
    serial: u32,
    after: &BTreeMap<DomainName, BTreeSet<String>>,
    deadline: Instant,
) -> Result<(), PublishError> {
    let until = deadline.min(Instant::now() + LOAD_GRACE);
    let mut argv = rndc.to_vec();
    argv.push("zonestatus".into());
    argv.push(zone.as_str().into());
    let mut last;
    loop {
        let shown = run_command(zone, &argv, deadline)
            .await
            .map(|out| zonestatus_serial(&out));
        last = match shown {
            Ok(Some(n)) if serial_at_least(n, serial) => return Ok(()),
            Ok(Some(n)) => format!("`{}` still shows serial {n}", argv.join(" ")),
            Ok(None) => format!("`{}` shows no serial", argv.join(" ")),
            Err(e) => e.to_string(),
        };
        let next = Instant::now() + POLL;
        if next >= until {
            break;
        }
        sleep_until(next).await;
    }
    Err(PublishError::NotLoaded {
        zone: zone.as_str().into(),
        rendered: serial,
        detail: format!(
            "after {} s {last}; {}",
            LOAD_GRACE.as_secs(),
            why_refused(after)
        ),
    })
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
    fn the_loaded_serial_is_read_from_zonestatus() {
        let out = "name: signing.test\ntype: primary\nserial: 7\nsigned serial: 9\nnodes: 2\n";
        assert_eq!(zonestatus_serial(out), Some(7));
        assert_eq!(zonestatus_serial("name: x\n"), None);
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
