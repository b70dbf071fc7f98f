//! The `rfc2136` method: read the zone's TXT records with a TSIG-signed AXFR, then send one
//! TSIG-signed UPDATE adding the wanted values and deleting expired ones. Only TXT records at
//! challenge owners are ever touched (never SOA, NS or other types).
//!
//! How old is a value? DNS carries nothing extra: the bridge keeps a small state file
//! (`<state_dir>/<zone>.rfc2136.json`, shared with every backend that keeps no ages: owner ->
//! value -> first published, Unix seconds). A
//! digest-shaped value found at a challenge owner but missing from the state file (state lost,
//! or written by hand) counts as first seen now, so it is removed `keep_seconds` later.

use crate::backend::{Applied, Backend, ChangeSet, Servers, Snapshot, Values};
use crate::chase::to_name;
use crate::error::{DnsError, PublishError};
use crate::transport::{self, TsigKey};
use certbridge_core::names::DomainName;
use hickory_proto::op::{Message, MessageType, OpCode, Query, UpdateMessage};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use std::net::SocketAddr;
use tokio::time::Instant;

/// A dynamic zone updated with RFC 2136.
#[derive(Debug, Clone)]
pub struct DynZone {
    pub server: SocketAddr,
    pub key: TsigKey,
    pub ttl: u32,
}

impl Backend for DynZone {
    fn method(&self) -> &'static str {
        "rfc2136"
    }
    fn target(&self) -> String {
        self.server.to_string()
    }
    fn ttl(&self) -> u32 {
        self.ttl
    }
    fn servers(&self) -> Servers {
        Servers::ZoneNs
    }
    async fn read(&self, zone: &DomainName, deadline: Instant) -> Result<Snapshot, PublishError> {
        Ok(Snapshot {
            values: read_zone_txt(self.server, zone, &self.key, deadline).await?,
            ages: None,
        })
    }
    /// One UPDATE (more only when one message cannot hold the change). The server applies
    /// each message atomically, so a refused one leaves the zone as it was.
    async fn apply(&self, change: &ChangeSet, deadline: Instant) -> Result<Applied, PublishError> {
        if !change.check_mode && !change.is_empty() {
            for msg in update_messages(&change.zone, change) {
                transport::update(self.server, msg, &self.key, deadline).await?;
            }
        }
        Ok(Applied {
            changed: !change.is_empty(),
            ..Applied::default()
        })
    }
}

/// The TXT values of the zone, per owner, read with a TSIG-signed AXFR.
pub async fn read_zone_txt(
    server: SocketAddr,
    zone: &DomainName,
    key: &TsigKey,
    deadline: Instant,
) -> Result<Values, DnsError> {
    let records = transport::axfr(server, &to_name(zone), key, deadline).await?;
    let mut out = Values::new();
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

/// Update records per message: a TXT update RR with a 43-byte value and an owner of at most
/// 255 bytes takes under 320 bytes, so 200 always fit the 64 KiB DNS message limit.
pub const MAX_UPDATE_RECORDS: usize = 200;

/// The UPDATE messages for `change` (zone section = the zone's SOA, no prerequisites): one,
/// unless more than [`MAX_UPDATE_RECORDS`] records change, which no single DNS message holds.
/// Deletions come first.
pub fn update_messages(zone: &DomainName, change: &ChangeSet) -> Vec<Message> {
    let ttl = change.ttl;
    let mut records = Vec::new();
    for (owner, values) in &change.remove {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{plan, Ages, Expiry};
    use certbridge_core::names::TxtDigest;
    use std::collections::{BTreeMap, BTreeSet};

    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn keep_hour() -> Expiry {
        Expiry {
            keep_seconds: 3600,
            retired: BTreeSet::new(),
        }
    }
    fn change_set(add: Values, remove: Values) -> ChangeSet {
        ChangeSet {
            zone: dn("dyn.test"),
            ttl: 60,
            add,
            remove,
            now: 0,
            check_mode: false,
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
        let change = change_set(
            BTreeMap::from([(owner.clone(), BTreeSet::from([dig('a')]))]),
            BTreeMap::from([(owner.clone(), BTreeSet::from([dig('d')]))]),
        );
        let msgs = update_messages(&dn("dyn.test"), &change);
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
        let mut change = change_set(Values::new(), Values::new());
        for i in 0..600 {
            let owner = dn(&format!("x{i}.{long}.dyn.test"));
            change
                .add
                .insert(owner, BTreeSet::from([format!("{i:043}")]));
        }
        let msgs = update_messages(&dn("dyn.test"), &change);
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
