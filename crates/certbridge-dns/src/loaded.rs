//! Did the server load the zone file it was told to reload? `rndc reload` answers "zone
//! reload queued" before loading; a file the server then refuses (BIND 9.18.28+: an RRset over
//! `max-records-per-type`) leaves the old zone served, and waiting for the new values would
//! only end at the deadline. So after an `rndc` reload (or thaw) the serial `rndc zonestatus`
//! reports must reach the rendered one within a short grace; otherwise the publish fails at
//! once, saying what the server still has and why the file was likely refused. The server
//! that was reloaded is asked, not the zone's NS (secondaries take their own time).
//!
//! BIND gives its reason only in its log (`rndc reload` has answered before loading, and
//! neither `named-checkzone` nor `named-checkconf -z` applies `max-records-per-type`), so with
//! `server_log` the lines named logged about the zone since the reload are read back: a
//! refusal there ends the wait at once and its text is the reason reported.

use crate::error::PublishError;
use crate::options::DEFAULT_MAX_RECORDS_PER_TYPE;
use crate::zonefile::run_command;
use certbridge_core::fsutil::Dir;
use certbridge_core::names::DomainName;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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

/// Most of a server log read back after a refusal (the end of it, when more was written).
const LOG_READ_LIMIT: u64 = 1 << 20;
/// Lines of the server's own reason quoted at most (BIND logs 3 to 4 per refused file).
const LOG_LINES: usize = 8;

/// The server's log as it was before the reload: what is written after `offset` is new.
#[derive(Debug, Clone)]
pub struct LogMark {
    path: PathBuf,
    offset: u64,
}

impl LogMark {
    /// Marks the end of `path` (an unreadable or missing log marks 0: all of it is new).
    pub fn at(path: &Path) -> LogMark {
        let offset = open_log(path)
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        LogMark {
            path: path.to_owned(),
            offset,
        }
    }

    /// Lines logged since the mark about `zone` (its name as BIND writes it, `<zone>/IN`) or
    /// its `file`; the log is opened without following a symbolic link. A log shorter than
    /// the mark was rotated: all of it is new.
    pub fn lines_since(&self, zone: &DomainName, file: &Path) -> Vec<String> {
        let Some(mut f) = open_log(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let from = if len < self.offset { 0 } else { self.offset };
        let from = from.max(len.saturating_sub(LOG_READ_LIMIT));
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err()
            || f.take(LOG_READ_LIMIT).read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        let file = file.to_string_lossy();
        let lines: Vec<String> = String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| names_zone(l, zone.as_str()) || (!file.is_empty() && l.contains(&*file)))
            .map(|l| l.trim().to_owned())
            .collect();
        lines[lines.len().saturating_sub(LOG_LINES)..].to_vec()
    }
}

fn open_log(path: &Path) -> Option<std::fs::File> {
    let (dir, name) = Dir::open_parent(path).ok()?;
    dir.open_read(&name).ok().flatten()
}

/// `line` names `zone` as BIND does (`zone z/IN:`, `'z/IN'`), not a zone ending in it.
fn names_zone(line: &str, zone: &str) -> bool {
    let needle = format!("{zone}/IN");
    line.match_indices(&needle)
        .any(|(i, _)| i == 0 || matches!(line.as_bytes()[i - 1], b' ' | b'\'' | b'"'))
}

/// A logged line that says the load failed (BIND 9.18: "loading from master file ... failed:
/// ...", "not loaded due to errors").
fn says_refused(line: &str) -> bool {
    line.contains("not loaded due to errors")
        || (line.contains("loading from") && line.contains("failed"))
}

/// Polls `<rndc> zonestatus <zone>` until the loaded serial is `serial` or later, at most
/// [`LOAD_GRACE`]. `after` (owner -> values the file carries) explains a refusal; with `log`
/// (the server's log, marked before the reload) a refusal logged there ends the wait and the
/// server's own lines are the reason given.
#[allow(clippy::too_many_arguments)]
pub async fn confirm(
    zone: &DomainName,
    rndc: &[String],
    serial: u32,
    after: &BTreeMap<DomainName, BTreeSet<String>>,
    log: Option<(&LogMark, &Path)>,
    deadline: Instant,
) -> Result<(), PublishError> {
    let started = Instant::now();
    let until = deadline.min(started + LOAD_GRACE);
    let mut argv = rndc.to_vec();
    argv.push("zonestatus".into());
    argv.push(zone.as_str().into());
    let mut last;
    let mut logged = Vec::new();
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
        if let Some((mark, file)) = log {
            logged = mark.lines_since(zone, file);
            if logged.iter().any(|l| says_refused(l)) {
                break;
            }
        }
        let next = Instant::now() + POLL;
        if next >= until {
            break;
        }
        sleep_until(next).await;
    }
    let waited = started.elapsed().as_secs_f64();
    let detail = match log {
        Some((mark, _)) if !logged.is_empty() => format!(
            "after {waited:.1} s {last}; the server logged (in {}): {}; {}",
            mark.path.display(),
            logged.join(" | "),
            why_refused(after, true)
        ),
        Some((mark, _)) => format!(
            "after {waited:.1} s {last}; {} holds no line about the zone since the reload; {}",
            mark.path.display(),
            why_refused(after, false)
        ),
        None => format!("after {waited:.1} s {last}; {}", why_refused(after, false)),
    };
    Err(PublishError::NotLoaded {
        zone: zone.as_str().into(),
        rendered: serial,
        detail,
    })
}

/// The likely reason a server refused the file, from what it carries (`logged`: the server's
/// own lines are already shown).
pub fn why_refused(after: &BTreeMap<DomainName, BTreeSet<String>>, logged: bool) -> String {
    let limit = DEFAULT_MAX_RECORDS_PER_TYPE as usize;
    match after.iter().max_by_key(|(_, v)| v.len()) {
        Some((owner, values)) if values.len() > limit => format!(
            "{} carries {} TXT records: BIND 9.18.28 and later refuse a zone with more than `max-records-per-type` ({limit} by default) records of one type at one name (named logs \"too many records\"); give each name its own label (_acme-challenge.<name> CNAME <name>.<signing zone>)",
            owner.fqdn(),
            values.len()
        ),
        _ if logged => "the server kept the old zone".into(),
        _ => "the server kept the old zone: its log says why (named: \"loading from master file ... failed\"; set the zone's `server_log` to quote it here); check the file with named-checkzone".into(),
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
        let why = why_refused(&BTreeMap::from([(owner.clone(), many)]), false);
        assert!(
            why.contains("acme.signing.test. carries 101") && why.contains("max-records-per-type"),
            "{why}"
        );
        let few = BTreeSet::from(["v".to_string()]);
        assert!(why_refused(&BTreeMap::from([(owner, few)]), false).contains("its log"));
    }

    #[test]
    fn the_servers_lines_about_the_zone_since_the_mark_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("named.log");
        std::fs::write(
            &log,
            "zone signing.test/IN: loading from master file old failed: earlier\n",
        )
        .unwrap();
        let mark = LogMark::at(&log);
        let zone = DomainName::parse("signing.test").unwrap();
        let file = Path::new("/srv/signing.test.db");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        use std::io::Write;
        writeln!(f, "29-Nov-2026 error updating 'acme.signing.test/TXT' in 'signing.test/IN' (zone): too many records (must not exceed 100)").unwrap();
        writeln!(f, "29-Nov-2026 dns_master_load: /srv/signing.test.db:107: acme.signing.test: too many records").unwrap();
        writeln!(f, "29-Nov-2026 zone dyn-signing.test/IN: loaded serial 4").unwrap();
        writeln!(
            f,
            "29-Nov-2026 zone signing.test/IN: not loaded due to errors."
        )
        .unwrap();
        let lines = mark.lines_since(&zone, file);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("too many records (must not exceed 100)"));
        assert!(lines[1].contains("dns_master_load"));
        assert!(says_refused(&lines[2]) && !lines.iter().any(|l| l.contains("dyn-signing")));
        // Rotated (shorter than the mark): read from its start.
        std::fs::write(&log, "zone signing.test/IN: loaded serial 9\n").unwrap();
        assert_eq!(mark.lines_since(&zone, file).len(), 1);
    }
}
