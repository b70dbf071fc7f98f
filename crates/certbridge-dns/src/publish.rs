//! The publish step as a whole (play 2 of the pulse): follow every record's CNAME, put each
//! value on its owner in the managed zones, then wait until every authoritative server answers
//! every value. One bad record never blocks the others: it goes to `rejected` with the fix.
//! The step fails only when nothing could be published or on a systemic fault (server down,
//! TSIG refused, zone invalid, verification incomplete at the deadline).

use crate::backend::{Expiry, Servers};
use crate::chase::{Chaser, Lookup, Outcome};
use crate::error::PublishError;
use crate::options::{Accepted, Plan, PublishOptions, RejectedRecord};
use crate::verify::{self, Expected, ServerResult};
use crate::zones::Run;
use certbridge_core::names::{DomainName, Identifier, TxtDigest};
use certbridge_core::protocol::{Failure, Invocation, Reply};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Most TXT values one owner can carry and still fit a 512-byte UDP answer without EDNS
/// (what Pebble's validator reads; it never retries over TCP).
pub const MAX_VALUES_PER_OWNER: usize = 7;
/// Let's Encrypt issues at most 5 certificates per exact name set per week.
pub const MAX_HOSTS_PER_NAME_SET: usize = 5;
/// CNAME chains followed at once.
const CHASE_CONCURRENCY: usize = 32;

/// Everything the module returns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub changed: bool,
    /// Owner -> this run's values published there.
    pub published: BTreeMap<String, Vec<String>>,
    pub rejected: Vec<RejectedRecord>,
    /// Server -> its verdict.
    pub verified: BTreeMap<String, ServerResult>,
    /// Owner -> values removed: older than `keep_seconds`, or of finished orders (`retired`).
    pub removed: BTreeMap<String, Vec<String>>,
    /// Seconds the whole call took.
    pub elapsed: f64,
    #[serde(skip)]
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub diffs: Vec<serde_json::Value>,
    /// Systemic faults; any makes the call fail.
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// The module: options in, Ansible reply out.
pub fn run_module(opts: PublishOptions, inv: &Invocation) -> Result<Reply, Failure> {
    let started = std::time::Instant::now();
    let plan = Plan::from_options(opts).map_err(Failure::new)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(publish(&plan, inv.check_mode, started));
    into_reply(report, inv)
}

fn into_reply(report: Report, inv: &Invocation) -> Result<Reply, Failure> {
    let mut reply = Reply::changed(report.changed);
    reply.set("published", &report.published);
    reply.set("rejected", &report.rejected);
    reply.set("verified", &report.verified);
    reply.set("removed", &report.removed);
    reply.set("elapsed", report.elapsed);
    reply.warnings = report.warnings.clone();
    if inv.diff && !report.diffs.is_empty() {
        reply.diff = Some(serde_json::Value::Array(report.diffs.clone()));
    }
    if report.errors.is_empty() {
        return Ok(reply);
    }
    Err(Failure::from_reply(report.errors.join("; "), reply))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the whole step. Never panics on outside data; faults land in `errors`.
pub async fn publish(plan: &Plan, check_mode: bool, started: std::time::Instant) -> Report {
    let deadline = Instant::from_std(started + plan.timeout);
    let mut report = Report {
        rejected: plan.rejected.clone(),
        ..Report::default()
    };
    let finish = |mut r: Report| {
        r.elapsed = started.elapsed().as_secs_f64();
        r
    };
    if plan.accepted.is_empty() {
        if !report.rejected.is_empty() {
            report.errors.push(nothing_published(&report.rejected));
        }
        return finish(report);
    }
    report.warnings.extend(name_set_warnings(&plan.accepted));

    let chaser = plan
        .lookup
        .or(plan.resolver.map(Lookup::Resolver))
        .map(|l| Chaser::new(l, plan.nameserver_port, deadline));
    let outcomes = owners(plan, chaser.as_ref()).await;

    // Zone -> owner -> values; and what each owner gets this run.
    let mut wanted: BTreeMap<DomainName, BTreeMap<DomainName, BTreeSet<TxtDigest>>> =
        BTreeMap::new();
    for a in &plan.accepted {
        match outcomes.get(&a.record) {
            Some(Outcome::Owner { owner, .. }) => {
                if let Some(zone) = plan.managed.zone_of(owner) {
                    wanted
                        .entry(zone.clone())
                        .or_default()
                        .entry(owner.clone())
                        .or_default()
                        .insert(a.value.clone());
                    report
                        .published
                        .entry(owner.as_str().to_owned())
                        .or_default()
                        .push(a.value.as_str().to_owned());
                }
            }
            Some(Outcome::Rejected(r)) => report.rejected.push(RejectedRecord {
                host: a.host.clone(),
                cert: a.cert.as_str().to_owned(),
                name: a.name.as_str().to_owned(),
                reason: r.reason.clone(),
                fix: r.fix.clone(),
            }),
            None => {}
        }
    }
    for values in report.published.values_mut() {
        values.sort();
        values.dedup();
    }
    if wanted.is_empty() {
        report.errors.push(nothing_published(&report.rejected));
        return finish(report);
    }

    // Publish, zone by zone (each under its own lock).
    let expiry = Expiry {
        keep_seconds: plan.keep_seconds,
        retired: plan.retired.clone(),
    };
    let run = Run {
        now: unix_now(),
        expiry: &expiry,
        check_mode,
        state_dir: &plan.state_dir,
        deadline,
    };
    let mut published_zones = Vec::new();
    for zp in &plan.zones {
        let Some(zone_wanted) = wanted.get(&zp.origin) else {
            continue;
        };
        let result = zp.backend.publish(&zp.origin, zone_wanted, &run).await;
        match result {
            Ok(r) => {
                report.changed |= r.changed;
                report.warnings.extend(r.warnings);
                for (owner, values) in &r.after {
                    if values.len() > MAX_VALUES_PER_OWNER {
                        report.warnings.push(crowded_owner_warning(
                            owner,
                            values.len(),
                            &zp.origin,
                        ));
                    }
                }
                for (owner, values) in r.removed {
                    report
                        .removed
                        .insert(owner.as_str().to_owned(), values.into_iter().collect());
                }
                report.diffs.extend(r.diff);
                published_zones.push(zp);
            }
            Err(e) => report.errors.push(e),
        }
    }

    if !check_mode && !published_zones.is_empty() {
        let mut per_server: BTreeMap<SocketAddr, Expected> = BTreeMap::new();
        for zp in &published_zones {
            let zone = &zp.origin;
            let servers = match (zp.backend.servers(), &plan.nameservers, &chaser) {
                (Servers::Listed(list), _, _) => Ok(list),
                (Servers::ZoneNs, Some(list), _) => Ok(list.clone()),
                (Servers::ZoneNs, None, Some(c)) => c.zone_servers(zone).await,
                (Servers::ZoneNs, None, None) => {
                    Err("no resolver to find its NS with: set `nameservers`".to_string())
                }
            };
            let servers = match servers {
                Ok(s) => s,
                Err(detail) => {
                    report.errors.push(
                        PublishError::Servers {
                            zone: zone.as_str().into(),
                            detail,
                        }
                        .to_string(),
                    );
                    continue;
                }
            };
            let expected: Expected = wanted[zone]
                .iter()
                .map(|(o, vs)| {
                    (
                        o.clone(),
                        vs.iter().map(|v| v.as_str().to_owned()).collect(),
                    )
                })
                .collect();
            for s in servers {
                let e = per_server.entry(s).or_default();
                for (o, vs) in &expected {
                    e.entry(o.clone()).or_default().extend(vs.iter().cloned());
                }
            }
        }
        report.verified = verify::verify_all(per_server, deadline).await;
        let failures = verify::describe_failures(&report.verified);
        if !failures.is_empty() {
            report.errors.push(format!(
                "not every authoritative server serves every value: {}",
                failures.join("; ")
            ));
        }
    }
    finish(report)
}

/// Where each distinct record's values go.
async fn owners(plan: &Plan, chaser: Option<&Chaser>) -> BTreeMap<DomainName, Outcome> {
    let records: BTreeSet<DomainName> = plan.accepted.iter().map(|a| a.record.clone()).collect();
    match (plan.lookup.is_some(), chaser, &plan.alias) {
        (true, Some(chaser), alias) => {
            let managed = &plan.managed;
            stream::iter(records)
                .map(|record| async move {
                    let outcome = chaser.follow(&record, managed, alias.as_ref()).await;
                    (record, outcome)
                })
                .buffer_unordered(CHASE_CONCURRENCY)
                .collect()
                .await
        }
        // `check_cname: false` with an alias: every value goes to the alias, unchecked.
        (_, _, Some(alias)) => records
            .into_iter()
            .map(|r| {
                (
                    r,
                    Outcome::Owner {
                        owner: alias.clone(),
                        chain: Vec::new(),
                    },
                )
            })
            .collect(),
        // Plan::from_options refuses this combination.
        _ => BTreeMap::new(),
    }
}

fn nothing_published(rejected: &[RejectedRecord]) -> String {
    let mut lines: Vec<String> = rejected
        .iter()
        .take(10)
        .map(|r| {
            if r.fix.is_empty() {
                format!("{} {} {}: {}", r.host, r.cert, r.name, r.reason)
            } else {
                format!(
                    "{} {} {}: {} (fix: {})",
                    r.host, r.cert, r.name, r.reason, r.fix
                )
            }
        })
        .collect();
    if rejected.len() > 10 {
        lines.push(format!("and {} more (see `rejected`)", rejected.len() - 10));
    }
    format!(
        "nothing could be published: all {} record(s) were rejected: {}",
        rejected.len(),
        lines.join("; ")
    )
}

fn crowded_owner_warning(owner: &DomainName, count: usize, zone: &DomainName) -> String {
    format!(
        "{} carries {count} TXT values: a 512-byte UDP answer holds at most {MAX_VALUES_PER_OWNER}, so a validator that does not retry over TCP misses some; give each name its own label (_acme-challenge.<name> CNAME <name>.{})",
        owner.fqdn(),
        zone.fqdn()
    )
}

/// Warns when more than [`MAX_HOSTS_PER_NAME_SET`] hosts request certificates for one exact
/// set of names (each host's cert counted once).
pub fn name_set_warnings(accepted: &[Accepted]) -> Vec<String> {
    let mut sets: BTreeMap<(&str, &str), BTreeSet<&Identifier>> = BTreeMap::new();
    for a in accepted {
        sets.entry((a.host.as_str(), a.cert.as_str()))
            .or_default()
            .insert(&a.name);
    }
    let mut hosts_by_set: BTreeMap<BTreeSet<&Identifier>, BTreeSet<&str>> = BTreeMap::new();
    for ((host, _), names) in sets {
        hosts_by_set.entry(names).or_default().insert(host);
    }
    hosts_by_set
        .into_iter()
        .filter(|(_, hosts)| hosts.len() > MAX_HOSTS_PER_NAME_SET)
        .map(|(names, hosts)| {
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            let hosts: Vec<&str> = hosts.into_iter().collect();
            format!(
                "{} hosts ({}) request certificates for the same names [{}]: Let's Encrypt issues at most {MAX_HOSTS_PER_NAME_SET} certificates per exact name set per week; issue one certificate and share it (see the README)",
                hosts.len(),
                hosts.join(", "),
                names.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use certbridge_core::names::CertName;

    fn acc(host: &str, cert: &str, name: &str) -> Accepted {
        let (id, _) = Identifier::parse(name).unwrap();
        Accepted {
            host: host.into(),
            cert: CertName::parse(cert).unwrap(),
            record: id.challenge_record(),
            name: id,
            value: TxtDigest::parse(&"a".repeat(43)).unwrap(),
        }
    }

    #[test]
    fn six_hosts_with_one_name_set_warn_five_do_not() {
        let five: Vec<Accepted> = (1..=5)
            .map(|i| acc(&format!("h{i}"), "web", "www.example.org"))
            .collect();
        assert!(name_set_warnings(&five).is_empty());
        let mut six = five.clone();
        six.push(acc("h6", "web", "www.example.org"));
        // Another name set on the same hosts does not count towards this one.
        six.push(acc("h1", "other", "api.example.org"));
        let w = name_set_warnings(&six);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("6 hosts") && w[0].contains("www.example.org"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn nothing_published_lists_each_record_with_its_fix() {
        let r = vec![RejectedRecord {
            host: "h1".into(),
            cert: "c".into(),
            name: "nocname.example.test".into(),
            reason: "no CNAME".into(),
            fix: "_acme-challenge.nocname.example.test. IN CNAME x.".into(),
        }];
        let m = nothing_published(&r);
        assert!(
            m.contains("h1 c nocname.example.test: no CNAME (fix: _acme-challenge"),
            "{m}"
        );
    }
}
