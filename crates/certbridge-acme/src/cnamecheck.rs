//! `cname_check` of acme_request: before a cert is ordered, each of its names'
//! `_acme-challenge` CNAMEs is followed into the signing zones, with the same code as
//! acme_txt_publish (certbridge-dns `chase`). A missing or wrong CNAME fails that cert with
//! the exact record to add, and no order is made (an order whose value cannot be published
//! only costs the CA's limits); otherwise the owner each value will land on is reported, so
//! the pulse can count values per owner before publishing.

use certbridge_core::names::DomainName;
use certbridge_core::protocol::coerce;
use certbridge_dns::chase::{self, Chaser, Lookup, ManagedZones, Outcome};
use certbridge_dns::options::CnameCheck as LookupKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

/// The option as Ansible passes it (the DNS host's view of the signing zones).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnameCheckInput {
    /// Origins of the managed signing zones.
    pub zones: Vec<String>,
    #[serde(default)]
    pub lookup: LookupKind,
    #[serde(default)]
    pub resolver: Option<String>,
    #[serde(default, deserialize_with = "coerce::opt_uint")]
    pub nameserver_port: Option<u64>,
    #[serde(default)]
    pub alias: Option<String>,
}

/// Validated: where CNAMEs must lead and how they are looked up.
#[derive(Debug, Clone)]
pub struct CnameCheck {
    zones: ManagedZones,
    lookup: Lookup,
    ns_port: u16,
    alias: Option<DomainName>,
}

/// Challenge record -> the owner its values go to.
pub type Owners = BTreeMap<String, String>;

impl CnameCheck {
    /// Validates the option; an `Err` names the field (no network access: /etc/resolv.conf is
    /// read only when no `resolver` is given).
    pub fn parse(input: CnameCheckInput) -> Result<CnameCheck, String> {
        let field = |f: &str, e: String| format!("option `cname_check.{f}`: {e}");
        let origins = input
            .zones
            .iter()
            .map(|z| DomainName::parse(z).map_err(|e| field("zones", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let zones = ManagedZones::new(&origins)
            .ok_or_else(|| field("zones", "is empty: name the signing zones".into()))?;
        let ns_port = match input.nameserver_port {
            None => 53,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| field("nameserver_port", format!("{p} is not a port")))?,
        };
        let resolver: SocketAddr = match &input.resolver {
            Some(r) => certbridge_core::names::ServerAddr::parse(r, 53)
                .map(|a| a.0)
                .map_err(|e| field("resolver", e.to_string()))?,
            None => chase::system_resolver().ok_or_else(|| {
                field(
                    "resolver",
                    "not given and /etc/resolv.conf names no nameserver".into(),
                )
            })?,
        };
        let alias = match &input.alias {
            None => None,
            Some(a) => {
                let d = DomainName::parse(a).map_err(|e| field("alias", e.to_string()))?;
                if zones.zone_of(&d).is_none() {
                    return Err(field(
                        "alias",
                        format!("{} is not inside a signing zone", d.fqdn()),
                    ));
                }
                Some(d)
            }
        };
        let lookup = match input.lookup {
            LookupKind::Resolver => Lookup::Resolver(resolver),
            LookupKind::Authoritative => Lookup::Authoritative {
                bootstrap: resolver,
                port: ns_port,
            },
        };
        Ok(CnameCheck {
            zones,
            lookup,
            ns_port,
            alias,
        })
    }

    /// Follows every challenge record of `certs` (cert -> its names); per cert, in the order
    /// given, the owner of each name, or why it cannot be published with the records to add.
    /// (A list, not a map by cert name: one map type less in acme_request, whose size budget is
    /// tight.)
    pub async fn check(
        &self,
        certs: &[(String, Vec<certbridge_core::names::Identifier>)],
        deadline: Instant,
    ) -> Vec<Result<Owners, String>> {
        let chaser = Chaser::new(
            self.lookup,
            self.ns_port,
            tokio::time::Instant::from_std(deadline),
        );
        let records: Vec<DomainName> = {
            let mut r: Vec<DomainName> = certs
                .iter()
                .flat_map(|(_, names)| names.iter().map(|n| n.challenge_record()))
                .collect();
            r.sort();
            r.dedup();
            r
        };
        // One after another: a host has a few names, and acme_request's size budget is tight
        // (the chaser's per-zone caches make repeated zones cheap).
        let mut outcomes: Vec<(DomainName, Outcome)> = Vec::new();
        for record in records {
            let o = chaser
                .follow(&record, &self.zones, self.alias.as_ref())
                .await;
            outcomes.push((record, o));
        }
        certs
            .iter()
            .map(|(_, names)| {
                let mut owners = Owners::new();
                let mut problems = Vec::new();
                for n in names {
                    let record = n.challenge_record();
                    match outcomes.iter().find(|(r, _)| *r == record).map(|(_, o)| o) {
                        Some(Outcome::Owner { owner, .. }) => {
                            owners.insert(
                                n.challenge_record().as_str().to_owned(),
                                owner.as_str().to_owned(),
                            );
                        }
                        Some(Outcome::Rejected(r)) => {
                            problems.push(format!("{}: {}; add: {}", n.as_str(), r.reason, r.fix))
                        }
                        None => {}
                    }
                }
                if problems.is_empty() {
                    Ok(owners)
                } else {
                    Err(format!(
                        "not ordered, a dns-01 value could not be published: {}",
                        problems.join("; ")
                    ))
                }
            })
            .collect()
    }
}
