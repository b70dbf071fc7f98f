//! Following `_acme-challenge` CNAME chains to the owner in a managed signing zone, and
//! finding a zone's authoritative servers. Two views: a resolver's (one address, recursion),
//! or the authoritative one (find the zone cut with SOA queries, ask that zone's own servers),
//! so a resolver's cache or split view cannot mislead the check.

use crate::transport;
use certbridge_core::names::DomainName;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// The longest CNAME chain we follow (resolvers stop at about 8-16 too).
const MAX_CHAIN: usize = 8;

/// How CNAMEs are looked up.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// Ask this recursive resolver (RD set) for each CNAME.
    Resolver(SocketAddr),
    /// Find each name's zone through `bootstrap` (a resolver), then ask that zone's NS
    /// addresses at `port` without recursion.
    Authoritative { bootstrap: SocketAddr, port: u16 },
}

impl Lookup {
    /// The resolver used for SOA/NS/A lookups in either mode.
    pub fn resolver(&self) -> SocketAddr {
        match self {
            Lookup::Resolver(a) => *a,
            Lookup::Authoritative { bootstrap, .. } => *bootstrap,
        }
    }
}

/// The first `nameserver` of /etc/resolv.conf (read in-process: no NSS), port 53.
pub fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|w| w.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// The managed signing zones, most specific first.
#[derive(Debug, Clone)]
pub struct ManagedZones {
    by_specificity: Vec<DomainName>,
    first: DomainName,
}

impl ManagedZones {
    /// `zones` in the user's order (the first one is suggested in fixes); must not be empty.
    pub fn new(zones: &[DomainName]) -> Option<ManagedZones> {
        let first = zones.first()?.clone();
        let mut by_specificity = zones.to_vec();
        by_specificity.sort_by_key(|z| std::cmp::Reverse(z.as_str().len()));
        Some(ManagedZones {
            by_specificity,
            first,
        })
    }
    /// The managed zone holding `name`, if any (the most specific one).
    pub fn zone_of(&self, name: &DomainName) -> Option<&DomainName> {
        self.by_specificity.iter().find(|z| name.is_subdomain_of(z))
    }
    pub fn first(&self) -> &DomainName {
        &self.first
    }
}

/// Why a record cannot be published, and the exact zone line that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub fix: String,
}

/// Where a record's values go, or why they cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Publish at `owner` (inside a managed zone); `chain` lists the CNAME targets followed.
    Owner {
        owner: DomainName,
        chain: Vec<DomainName>,
    },
    Rejected(Rejection),
}

/// The CNAME target we suggest for `record` (`_acme-challenge.<base>`).
pub fn suggested_target(
    record: &DomainName,
    zones: &ManagedZones,
    alias: Option<&DomainName>,
) -> DomainName {
    if let Some(a) = alias {
        return a.clone();
    }
    let base = record
        .as_str()
        .strip_prefix("_acme-challenge.")
        .unwrap_or(record.as_str());
    DomainName::parse(&format!("{base}.{}", zones.first().as_str()))
        .unwrap_or_else(|_| zones.first().clone())
}

/// The zone line that makes `record` a correct CNAME.
pub fn fix_line(record: &DomainName, target: &DomainName) -> String {
    format!("{} IN CNAME {}", record.fqdn(), target.fqdn())
}

pub fn to_name(d: &DomainName) -> Name {
    // DomainName is validated LDH (+ `_`), always a valid DNS name.
    Name::from_ascii(d.fqdn()).unwrap_or_else(|_| Name::root())
}

pub fn from_name(n: &Name) -> Option<DomainName> {
    let text = n.to_ascii();
    if text == "." {
        return Some(DomainName::root());
    }
    DomainName::parse(&text).ok()
}

type Shared<T> = Rc<OnceCell<Result<T, String>>>;

/// Follows CNAME chains and finds authoritative servers, with per-run caches (one lookup per
/// zone however many records share it, also when they run concurrently).
pub struct Chaser {
    lookup: Lookup,
    deadline: Instant,
    zone_cuts: RefCell<HashMap<DomainName, Shared<DomainName>>>,
    servers: RefCell<HashMap<DomainName, Shared<Vec<SocketAddr>>>>,
    ns_port: u16,
}

impl Chaser {
    /// `ns_port` is the port of the zones' NS addresses (`nameserver_port`).
    pub fn new(lookup: Lookup, ns_port: u16, deadline: Instant) -> Chaser {
        Chaser {
            lookup,
            deadline,
            zone_cuts: RefCell::new(HashMap::new()),
            servers: RefCell::new(HashMap::new()),
            ns_port,
        }
    }

    async fn ask_resolver(&self, name: &DomainName, rtype: RecordType) -> Result<Message, String> {
        let server = self.lookup.resolver();
        let msg = transport::query(server, &to_name(name), rtype, true, self.deadline)
            .await
            .map_err(|e| e.to_string())?;
        match msg.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(msg),
            rc => Err(format!(
                "{server}: answered {rtype} {} with {}",
                name.fqdn(),
                rc.to_string().to_uppercase()
            )),
        }
    }

    /// The zone (apex) holding `name`, from SOA queries walking up the tree.
    pub async fn zone_cut(&self, name: &DomainName) -> Result<DomainName, String> {
        let cell = self
            .zone_cuts
            .borrow_mut()
            .entry(name.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| async { self.find_zone_cut(name).await })
            .await
            .clone()
    }

    async fn find_zone_cut(&self, name: &DomainName) -> Result<DomainName, String> {
        let mut current = name.clone();
        let server = self.lookup.resolver();
        loop {
            let msg = transport::query(
                server,
                &to_name(&current),
                RecordType::SOA,
                true,
                self.deadline,
            )
            .await
            .map_err(|e| e.to_string())?;
            if msg.metadata.response_code == ResponseCode::ServFail {
                // A resolver fails names whose CNAME chain loops or dangles: the zone cut is
                // further up, and the zone's own servers will show the CNAME itself.
                match current.parent() {
                    Some(p) => {
                        current = p;
                        continue;
                    }
                    None => {
                        return Err(format!(
                            "{server}: SERVFAIL for every name up to the root from {}",
                            name.fqdn()
                        ))
                    }
                }
            }
            let wanted = to_name(&current);
            if msg
                .answers
                .iter()
                .any(|r| r.record_type() == RecordType::SOA && r.name == wanted)
            {
                return Ok(current);
            }
            let has_cname = msg
                .answers
                .iter()
                .any(|r| r.record_type() == RecordType::CNAME);
            if !has_cname {
                // NODATA / NXDOMAIN carry the enclosing zone's SOA in the authority section.
                if let Some(apex) = msg
                    .authorities
                    .iter()
                    .filter(|r| r.record_type() == RecordType::SOA)
                    .find_map(|r| from_name(&r.name))
                    .filter(|apex| current.is_subdomain_of(apex))
                {
                    return Ok(apex);
                }
            }
            match current.parent() {
                Some(p) => current = p,
                None => return Err(format!("no zone holds {}", name.fqdn())),
            }
        }
    }

    /// The addresses (at `nameserver_port`) of `zone`'s NS names, via the resolver.
    pub async fn zone_servers(&self, zone: &DomainName) -> Result<Vec<SocketAddr>, String> {
        let cell = self
            .servers
            .borrow_mut()
            .entry(zone.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| async { self.find_zone_servers(zone).await })
            .await
            .clone()
    }

    async fn find_zone_servers(&self, zone: &DomainName) -> Result<Vec<SocketAddr>, String> {
        let msg = self.ask_resolver(zone, RecordType::NS).await?;
        let ns_names: Vec<Name> = msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        if ns_names.is_empty() {
            return Err(format!("{} has no NS records", zone.fqdn()));
        }
        let mut addrs = Vec::new();
        for ns in &ns_names {
            let glue: Vec<IpAddr> = msg
                .additionals
                .iter()
                .filter(|r| &r.name == ns)
                .filter_map(address)
                .collect();
            let ips = if glue.is_empty() {
                let Some(ns_dn) = from_name(ns) else { continue };
                let mut ips = Vec::new();
                for rtype in [RecordType::A, RecordType::AAAA] {
                    if let Ok(m) = self.ask_resolver(&ns_dn, rtype).await {
                        ips.extend(m.answers.iter().filter_map(address));
                    }
                }
                ips
            } else {
                glue
            };
            for ip in ips {
                let sa = SocketAddr::new(ip, self.ns_port);
                if !addrs.contains(&sa) {
                    addrs.push(sa);
                }
            }
        }
        if addrs.is_empty() {
            let names: Vec<String> = ns_names.iter().map(|n| n.to_string()).collect();
            return Err(format!(
                "no address for {}'s NS {}",
                zone.fqdn(),
                names.join(", ")
            ));
        }
        Ok(addrs)
    }

    /// Records of `rtype` at `name` (exactly that owner), from the configured view.
    async fn lookup(&self, name: &DomainName, rtype: RecordType) -> Result<Vec<RData>, String> {
        let msg = match self.lookup {
            Lookup::Resolver(_) => self.ask_resolver(name, rtype).await?,
            Lookup::Authoritative { .. } => {
                let zone = self.zone_cut(name).await?;
                let servers = self.zone_servers(&zone).await?;
                let mut last = String::new();
                let mut answer = None;
                for server in servers {
                    match transport::query(server, &to_name(name), rtype, false, self.deadline)
                        .await
                    {
                        Ok(m)
                            if matches!(
                                m.metadata.response_code,
                                ResponseCode::NoError | ResponseCode::NXDomain
                            ) =>
                        {
                            answer = Some(m);
                            break;
                        }
                        Ok(m) => {
                            last = format!(
                                "{server}: answered {rtype} {} with {}",
                                name.fqdn(),
                                m.metadata.response_code.to_string().to_uppercase()
                            )
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                answer.ok_or(last)?
            }
        };
        let owner = to_name(name);
        Ok(msg
            .answers
            .into_iter()
            .filter(|r| r.name == owner && r.record_type() == rtype)
            .map(|r| r.data)
            .collect())
    }

    async fn cname_at(&self, name: &DomainName) -> Result<Option<DomainName>, String> {
        let data = self.lookup(name, RecordType::CNAME).await?;
        match data.into_iter().next() {
            Some(RData::CNAME(c)) => from_name(&c.0).map(Some).ok_or_else(|| {
                format!(
                    "{} is a CNAME to `{}`, which is not a usable name",
                    name.fqdn(),
                    c.0
                )
            }),
            _ => Ok(None),
        }
    }

    /// Follows `record`'s CNAME chain to its owner in a managed zone.
    pub async fn follow(
        &self,
        record: &DomainName,
        zones: &ManagedZones,
        alias: Option<&DomainName>,
    ) -> Outcome {
        let target = suggested_target(record, zones, alias);
        let reject = |reason: String| {
            Outcome::Rejected(Rejection {
                reason,
                fix: fix_line(record, &target),
            })
        };
        if zones.zone_of(record).is_some() && alias.is_none() {
            // The challenge record itself lives in a managed zone: publish there directly.
            return Outcome::Owner {
                owner: record.clone(),
                chain: Vec::new(),
            };
        }
        let mut chain: Vec<DomainName> = Vec::new();
        let mut current = record.clone();
        loop {
            let next = match self.cname_at(&current).await {
                Ok(n) => n,
                Err(e) if chain.is_empty() => return reject(format!("cannot look up the CNAME at {}: {e}", record.fqdn())),
                Err(e) => {
                    return reject(format!(
                        "{} is a CNAME chain to {}, outside every managed zone ({}); looking further failed: {e}",
                        record.fqdn(),
                        current.fqdn(),
                        zones_list(zones)
                    ))
                }
            };
            let Some(next) = next else {
                if chain.is_empty() {
                    return match self.lookup(record, RecordType::TXT).await {
                        Ok(txt) if !txt.is_empty() => reject(format!(
                            "{} has TXT records of its own instead of a CNAME into the signing zone: delete them and add the CNAME",
                            record.fqdn()
                        )),
                        _ => reject(format!("{} has no CNAME into the signing zone", record.fqdn())),
                    };
                }
                return reject(format!(
                    "{} points to {}, which is outside every managed zone ({})",
                    record.fqdn(),
                    current.fqdn(),
                    zones_list(zones)
                ));
            };
            if next == *record || chain.contains(&next) {
                let mut names: Vec<String> = vec![record.fqdn()];
                names.extend(chain.iter().map(DomainName::fqdn));
                names.push(next.fqdn());
                return reject(format!(
                    "{} is part of a CNAME loop: {}",
                    record.fqdn(),
                    names.join(" -> ")
                ));
            }
            chain.push(next.clone());
            if zones.zone_of(&next).is_some() {
                if let Some(a) = alias {
                    if &next != a {
                        return reject(format!(
                            "{} points to {}, not to the alias {}",
                            record.fqdn(),
                            next.fqdn(),
                            a.fqdn()
                        ));
                    }
                }
                return Outcome::Owner { owner: next, chain };
            }
            if chain.len() >= MAX_CHAIN {
                return reject(format!(
                    "{}'s CNAME chain is longer than {MAX_CHAIN} steps without reaching a managed zone",
                    record.fqdn()
                ));
            }
            current = next;
        }
    }
}

fn zones_list(zones: &ManagedZones) -> String {
    let mut v: Vec<String> = zones.by_specificity.iter().map(DomainName::fqdn).collect();
    v.sort();
    v.join(", ")
}

fn address(r: &hickory_proto::rr::Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    #[test]
    fn managed_zones_pick_the_most_specific() {
        let z = ManagedZones::new(&[dn("signing.test"), dn("sub.signing.test")]).unwrap();
        assert_eq!(
            z.zone_of(&dn("a.sub.signing.test")).unwrap(),
            &dn("sub.signing.test")
        );
        assert_eq!(
            z.zone_of(&dn("a.signing.test")).unwrap(),
            &dn("signing.test")
        );
        assert!(z.zone_of(&dn("xsigning.test")).is_none());
        assert_eq!(z.first(), &dn("signing.test"));
    }

    #[test]
    fn fixes_name_the_exact_cname_line() {
        let z = ManagedZones::new(&[dn("acme.example.net")]).unwrap();
        let rec = dn("_acme-challenge.web01.example.org");
        let t = suggested_target(&rec, &z, None);
        assert_eq!(
            fix_line(&rec, &t),
            "_acme-challenge.web01.example.org. IN CNAME web01.example.org.acme.example.net."
        );
        let alias = dn("acme.example.net");
        assert_eq!(suggested_target(&rec, &z, Some(&alias)), alias);
    }

    #[test]
    fn names_convert_both_ways() {
        let d = dn("_acme-challenge.host1.example.test");
        assert_eq!(from_name(&to_name(&d)).unwrap(), d);
        assert_eq!(from_name(&Name::root()).unwrap(), DomainName::root());
    }
}
