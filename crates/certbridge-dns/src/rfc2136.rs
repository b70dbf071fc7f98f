//! The `rfc2136` method: read the zone's TXT records with a TSIG-signed AXFR, then send one
//! TSIG-signed UPDATE adding the wanted values and deleting expired ones. Only TXT records at
//! challenge owners are ever touched (never SOA, NS or other types).
//!
//! How old is a value? DNS carries nothing extra: the bridge keeps a small state file
//! (`<state_dir>/<zone>.rfc2136.json`: owner -> value -> first published, Unix seconds). A
//! digest-shaped value found at a challenge owner but missing from the state file (state lost,
//! or written by hand) counts as first seen now, so it is removed `keep_seconds` later.

use crate::chase::to_name;
use crate::error::{DnsError, PublishError};
use crate::transport::{self, TsigKey};
use certbridge_core::names::{DomainName, TxtDigest};
use hickory_proto::op::{Message, MessageType, OpCode, Query, UpdateMessage};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::time::Instant;

/// Owner -> value -> first-published time (Unix seconds).
pub type Ages = BTreeMap<DomainName, BTreeMap<String, u64>>;

/// The state file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub zone: String,
    pub values: BTreeMap<String, BTreeMap<String, u64>>,
}

pub fn state_path(state_dir: &Path, zone: &DomainName) -> PathBuf {
    state_dir.join(format!("{}.rfc2136.json", zone.as_str()))
}

pub fn lock_path(state_dir: &Path, zone: &DomainName) -> PathBuf {
    state_dir.join(format!("{}.rfc2136.lock", zone.as_str()))
}

/// Reads the state file (a missing file is an empty state).
pub fn read_state(path: &Path, zone: &DomainName) -> Result<Ages, PublishError> {
    let err = |detail: String| PublishError::State {
        zone: zone.as_str().into(),
        path: path.to_path_buf(),
        detail,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ages::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let file: StateFile = serde_json::from_str(&text)
        .map_err(|e| err(format!("not a certbridge state file: {e}")))?;
    let mut ages = Ages::new();
    for (owner, values) in file.values {
        if let Ok(o) = DomainName::parse(&owner) {
            ages.insert(o, values);
        }
    }
    Ok(ages)
}

/// Writes the state file atomically.
pub fn write_state(path: &Path, zone: &DomainName, ages: &Ages) -> Result<(), PublishError> {
    let file = StateFile {
        zone: zone.as_str().into(),
        values: ages
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(o, v)| (o.as_str().to_owned(), v.clone()))
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| PublishError::State {
        zone: zone.as_str().into(),
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let attrs = certbridge_core::fsutil::FileAttrs {
        mode: Some(0o600),
        ..Default::default()
    };
    certbridge_core::fsutil::atomic_write(path, &text, &attrs, None).map_err(|e| {
        PublishError::State {
            zone: zone.as_str().into(),
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

/// The TXT values of the zone, per owner, read with a TSIG-signed AXFR.
pub async fn read_zone_txt(
    server: SocketAddr,
    zone: &DomainName,
    key: &TsigKey,
    deadline: Instant,
) -> Result<BTreeMap<DomainName, BTreeSet<String>>, DnsError> {
    let records = transport::axfr(server, &to_name(zone), key, deadline).await?;
    let mut out: BTreeMap<DomainName, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if let RData::TXT(t) = &r.data {
            let Some(owner) = crate::chase::from_name(&r.name) else {
                continue;
            };
            let value: String = t
                .txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            out.entry(owner).or_default().insert(value);
        }
    }
    Ok(out)
}

/// What one run does to a dynamic zone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    pub add: BTreeMap<DomainName, BTreeSet<String>>,
    pub delete: BTreeMap<DomainName, BTreeSet<String>>,
    /// The ages after the run (what the state file will hold).
    pub ages: Ages,
    /// Owner -> every value it carries after the run.
    pub after: BTreeMap<DomainName, BTreeSet<String>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.delete.is_empty()
    }
}

/// Decides adds and deletes. Challenge owners are this run's owners and those the state file
/// knows; at those, digest-shaped values not wanted now and not kept by `expiry` (too old,
/// or retired) are deleted. Other TXT values (SPF, notes) are never touched.
pub fn plan(
    current: &BTreeMap<DomainName, BTreeSet<String>>,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    ages: &Ages,
    now: u64,
    expiry: &crate::zonefile::Expiry,
) -> Change {
    let mut change = Change::default();
    let owners: BTreeSet<&DomainName> = wanted.keys().chain(ages.keys()).collect();
    for owner in owners {
        let present = current.get(owner).cloned().unwrap_or_default();
        let want: BTreeSet<String> = wanted
            .get(owner)
            .map(|s| s.iter().map(|v| v.as_str().to_owned()).collect())
            .unwrap_or_default();
        let known = ages.get(owner);
        let mut new_ages = BTreeMap::new();
        let mut after = BTreeSet::new();
        for v in &present {
            if TxtDigest::parse(v).is_err() {
                after.insert(v.clone()); // not ours to manage
                continue;
            }
            let first = known.and_then(|k| k.get(v)).copied().unwrap_or(now);
            if want.contains(v) || expiry.keeps(v, first, now) {
                new_ages.insert(v.clone(), first);
                after.insert(v.clone());
            } else {
                change
                    .delete
                    .entry(owner.clone())
                    .or_default()
                    .insert(v.clone());
            }
        }
        for v in &want {
            if !present.contains(v) {
                change
                    .add
                    .entry(owner.clone())
                    .or_default()
                    .insert(v.clone());
                new_ages.insert(v.clone(), now);
                after.insert(v.clone());
            }
        }
        if !new_ages.is_empty() {
            change.ages.insert(owner.clone(), new_ages);
        }
        if !after.is_empty() {
            change.after.insert(owner.clone(), after);
        }
    }
    change
}

/// Update records per message: a TXT update RR with a 43-byte value and an owner of at most
/// 255 bytes takes under 320 bytes, so 200 always fit the 64 KiB DNS message limit.
pub const MAX_UPDATE_RECORDS: usize = 200;

/// The UPDATE messages for `change` (zone section = the zone's SOA, no prerequisites): one,
/// unless more than [`MAX_UPDATE_RECORDS`] records change, which no single DNS message holds.
/// Deletions come first.
pub fn update_messages(zone: &DomainName, change: &Change, ttl: u32) -> Vec<Message> {
    let mut records = Vec::new();
    for (owner, values) in &change.delete {
        for v in values {
            // RFC 2136 2.5.4: delete an RR from an RRset: class NONE, TTL 0, the RDATA.
            let mut r =
                Record::from_rdata(to_name(owner), 0, RData::TXT(TXT::new(vec![v.clone()])));
            r.dns_class = DNSClass::NONE;
            records.push(r);
        }
    }
    for (owner, values) in &change.add {
        for v in values {
            let mut r =
                Record::from_rdata(to_name(owner), ttl, RData::TXT(TXT::new(vec![v.clone()])));
            r.dns_class = DNSClass::IN;
            records.push(r);
        }
    }
    records
        .chunks(MAX_UPDATE_RECORDS)
        .map(|chunk| {
            let mut msg = Message::new(
                Message::query().metadata.id,
                MessageType::Query,
                OpCode::Update,
            );
            msg.metadata.recursion_desired = false;
            let mut zq = Query::query(to_name(zone), RecordType::SOA);
            zq.set_query_class(DNSClass::IN);
            msg.add_zone(zq);
            msg.add_updates(chunk.to_vec());
            msg
        })
        .collect()
}

/// Publishes `wanted` into a dynamic zone: AXFR, plan, one UPDATE, then the state file.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    origin: &DomainName,
    dz: &crate::options::DynZone,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    now: u64,
    expiry: &crate::zonefile::Expiry,
    check_mode: bool,
    state_dir: &Path,
    deadline: Instant,
) -> Result<crate::zonefile::ZoneResult, PublishError> {
    let state = state_path(state_dir, origin);
    let _lock = if check_mode {
        None
    } else {
        std::fs::create_dir_all(state_dir).map_err(|e| PublishError::State {
            zone: origin.as_str().into(),
            path: state_dir.to_path_buf(),
            detail: format!("cannot create the state directory: {e}"),
        })?;
        let wait = deadline.saturating_duration_since(Instant::now());
        Some(
            certbridge_core::fsutil::Lock::acquire(&lock_path(state_dir, origin), wait).map_err(
                |source| PublishError::Lock {
                    zone: origin.as_str().into(),
                    source,
                },
            )?,
        )
    };
    let ages = read_state(&state, origin)?;
    let current = read_zone_txt(dz.server, origin, &dz.key, deadline).await?;
    let change = plan(&current, wanted, &ages, now, expiry);
    if !check_mode {
        if !change.is_empty() {
            for msg in update_messages(origin, &change, dz.ttl) {
                transport::update(dz.server, msg, &dz.key, deadline).await?;
            }
        }
        if change.ages != ages {
            write_state(&state, origin, &change.ages)?;
        }
    }
    let lines = |m: &BTreeMap<DomainName, BTreeSet<String>>| -> String {
        m.iter()
            .flat_map(|(o, vs)| {
                vs.iter()
                    .map(move |v| format!("{} TXT \"{v}\"\n", o.fqdn()))
            })
            .collect()
    };
    let challenge_owners: BTreeSet<&DomainName> = wanted.keys().chain(ages.keys()).collect();
    let before: BTreeMap<DomainName, BTreeSet<String>> = current
        .iter()
        .filter(|(o, _)| challenge_owners.contains(o))
        .map(|(o, v)| (o.clone(), v.clone()))
        .collect();
    let header = format!("{} (rfc2136 {})", origin.fqdn(), dz.server);
    let diff = serde_json::json!({
        "before": lines(&before),
        "after": lines(&change.after),
        "before_header": header,
        "after_header": header,
    });
    Ok(crate::zonefile::ZoneResult {
        changed: !change.is_empty(),
        after: change.after,
        removed: change.delete,
        diff: Some(diff),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn keep_hour() -> crate::zonefile::Expiry {
        crate::zonefile::Expiry {
            keep_seconds: 3600,
            retired: BTreeSet::new(),
        }
    }
    fn dig(c: char) -> String {
        std::iter::repeat_n(c, 43).collect()
    }

    #[test]
    fn plan_adds_wanted_keeps_recent_and_deletes_expired() {
        let owner = dn("a.dyn.test");
        let other = dn("b.dyn.test");
        let (old, recent, wanted, unknown) = (dig('o'), dig('r'), dig('w'), dig('u'));
        let current = BTreeMap::from([
            (
                owner.clone(),
                BTreeSet::from([
                    old.clone(),
                    recent.clone(),
                    unknown.clone(),
                    "v=spf1 -all".to_string(),
                ]),
            ),
            (dn("c.dyn.test"), BTreeSet::from([dig('x')])),
        ]);
        let wanted_map = BTreeMap::from([(
            other.clone(),
            BTreeSet::from([TxtDigest::parse(&wanted).unwrap()]),
        )]);
        let ages = Ages::from([(
            owner.clone(),
            BTreeMap::from([(old.clone(), 1000), (recent.clone(), 9000)]),
        )]);
        let c = plan(&current, &wanted_map, &ages, 10_000, &keep_hour());
        assert_eq!(
            c.delete,
            BTreeMap::from([(owner.clone(), BTreeSet::from([old.clone()]))])
        );
        assert_eq!(
            c.add,
            BTreeMap::from([(other.clone(), BTreeSet::from([wanted.clone()]))])
        );
        // The unknown value is first seen now and kept; the SPF record is untouched; the
        // owner nobody asked about (c.dyn.test) is not a challenge owner of ours.
        assert_eq!(c.ages[&owner].get(&unknown), Some(&10_000));
        assert!(c.after[&owner].contains("v=spf1 -all"));
        assert!(!c.after.contains_key(&dn("c.dyn.test")));
        // Same wanted values again: nothing to do.
        let current2 = BTreeMap::from([(other.clone(), BTreeSet::from([wanted.clone()]))]);
        let c2 = plan(&current2, &wanted_map, &c.ages, 10_001, &keep_hour());
        assert!(c2.is_empty(), "{c2:?}");
    }

    #[test]
    fn update_message_deletes_by_rdata_and_adds_with_ttl() {
        let owner = dn("a.dyn.test");
        let change = Change {
            add: BTreeMap::from([(owner.clone(), BTreeSet::from([dig('a')]))]),
            delete: BTreeMap::from([(owner.clone(), BTreeSet::from([dig('d')]))]),
            ..Default::default()
        };
        let msgs = update_messages(&dn("dyn.test"), &change, 60);
        assert_eq!(msgs.len(), 1, "a small change is one UPDATE");
        let m = &msgs[0];
        assert_eq!(m.metadata.op_code, OpCode::Update);
        let ups = m.updates();
        assert_eq!(ups.len(), 2);
        assert_eq!((ups[0].dns_class, ups[0].ttl), (DNSClass::NONE, 0));
        assert_eq!((ups[1].dns_class, ups[1].ttl), (DNSClass::IN, 60));
        assert!(ups.iter().all(|r| r.record_type() == RecordType::TXT));
    }

    #[test]
    fn large_changes_split_into_messages_that_fit() {
        // Longest owners: every update must survive encoding intact.
        let long = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(60));
        let mut change = Change::default();
        for i in 0..600 {
            let owner = dn(&format!("x{i}.{long}.dyn.test"));
            change
                .add
                .insert(owner, BTreeSet::from([format!("{i:043}")]));
        }
        let msgs = update_messages(&dn("dyn.test"), &change, 60);
        assert_eq!(msgs.len(), 3);
        let mut total = 0;
        for m in &msgs {
            let bytes = m.to_vec().unwrap();
            assert!(bytes.len() < 65_000, "{}", bytes.len());
            let back = Message::from_vec(&bytes).unwrap();
            assert_eq!(back.updates().len(), m.updates().len());
            total += back.updates().len();
        }
        assert_eq!(total, 600);
    }
}
