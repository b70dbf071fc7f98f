//! `acme_txt_publish`'s options, and their validation into a [`Plan`] of domain types. Every
//! configuration error is found here, before any disk or network access. A bad record (a
//! value that is not a dns-01 digest, a name that is not a certificate name) is not a
//! configuration error: it is rejected on its own, naming host and cert.

use crate::chase::{self, Lookup};
use crate::zoneopts::{parse_addr, zone_plan};
pub use crate::zoneopts::{ZoneInput, ZonePlan};
use certbridge_core::names::{CertName, DomainName, Identifier, TxtDigest};
use certbridge_core::protocol::{coerce, limits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn yes() -> bool {
    true
}
fn default_port() -> u64 {
    53
}
fn default_keep() -> u64 {
    3600
}
fn default_timeout() -> u64 {
    300
}
/// BIND's default `max-records-per-type` (since 9.18.28): a zone file with a larger RRset
/// is not loaded at all.
pub const DEFAULT_MAX_RECORDS_PER_TYPE: u64 = 100;
fn default_max_records() -> u64 {
    DEFAULT_MAX_RECORDS_PER_TYPE
}
fn default_state_dir() -> String {
    "/var/lib/certbridge".into()
}

/// The module's options, as Ansible passes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishOptions {
    pub records: Vec<RecordInput>,
    pub zones: Vec<ZoneInput>,
    #[serde(default)]
    pub cname_check: CnameCheck,
    #[serde(default)]
    pub resolver: Option<String>,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default = "yes", deserialize_with = "coerce::boolean")]
    pub check_cname: bool,
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default = "default_port", deserialize_with = "coerce::uint")]
    pub nameserver_port: u64,
    /// 0 to 365 days.
    #[serde(
        default = "default_keep",
        deserialize_with = "coerce::seconds::<_, 0, { limits::YEAR }>"
    )]
    pub keep_seconds: u64,
    /// 1 second to one day.
    #[serde(
        default = "default_timeout",
        deserialize_with = "coerce::seconds::<_, 1, { limits::DAY }>"
    )]
    pub timeout: u64,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Values of orders finished or given up since they were published (play 1's
    /// `acme_txt_retired`): removed whatever their age, unless wanted by this run.
    #[serde(default)]
    pub retired: Vec<RetiredInput>,
    /// Most TXT records one owner may carry in a written zone file (0: no limit).
    #[serde(default = "default_max_records", deserialize_with = "coerce::uint")]
    pub max_records_per_type: u64,
}

/// One value to publish, as a host's `acme_request` returned it plus the host's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    pub host: String,
    pub cert: String,
    pub name: String,
    pub record: String,
    pub value: String,
    /// Where acme_request's CNAME check expects the value; informational, the CNAME is
    /// followed here again (it may have changed since).
    #[serde(default)]
    pub owner: Option<String>,
}

/// A value whose order is finished, as a host's `acme_request` reported it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredInput {
    pub value: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub record: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CnameCheck {
    #[default]
    Authoritative,
    Resolver,
}

/// A command: a string split like a shell would (never run through one), or an argv list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommandInput {
    Line(String),
    Argv(Vec<String>),
}

impl CommandInput {
    pub fn argv(&self, option: &str) -> Result<Vec<String>, String> {
        let argv = match self {
            CommandInput::Line(s) => shlex::split(s)
                .ok_or_else(|| format!("option `{option}`: unbalanced quotes in `{s}`"))?,
            CommandInput::Argv(v) => v.clone(),
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(format!("option `{option}` is empty"));
        }
        Ok(argv)
    }
}

/// A record accepted at the edge: every field a domain type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Accepted {
    pub host: String,
    pub cert: CertName,
    pub name: Identifier,
    pub record: DomainName,
    pub value: TxtDigest,
}

/// A record that will not be published, with the reason and the fix.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RejectedRecord {
    pub host: String,
    pub cert: String,
    pub name: String,
    pub reason: String,
    pub fix: String,
}

/// Everything validated: what to publish where, how to check and verify.
#[derive(Debug, Clone)]
pub struct Plan {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<RejectedRecord>,
    pub zones: Vec<ZonePlan>,
    pub managed: chase::ManagedZones,
    /// How CNAMEs are followed; `None` with an alias and `check_cname: false`.
    pub lookup: Option<Lookup>,
    /// The resolver for NS lookups (verification without `nameservers`).
    pub resolver: Option<SocketAddr>,
    pub alias: Option<DomainName>,
    pub nameservers: Option<Vec<SocketAddr>>,
    pub nameserver_port: u16,
    pub keep_seconds: u64,
    /// Values of finished orders (digest-shaped ones only: nothing else can be ours).
    pub retired: BTreeSet<String>,
    pub timeout: Duration,
    pub state_dir: PathBuf,
    /// Most TXT records per owner in a zone file; `None`: no limit.
    pub max_records_per_type: Option<usize>,
}

fn port(option: &str, value: u64) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("option `{option}`: {value} is not a port (1-65535)"))
}

/// Splits records into accepted (all fields parsed) and rejected (naming host and cert).
pub fn parse_records(inputs: &[RecordInput]) -> (Vec<Accepted>, Vec<RejectedRecord>) {
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for r in inputs {
        let reject = |reason: String, fix: String| RejectedRecord {
            host: r.host.clone(),
            cert: r.cert.clone(),
            name: r.name.clone(),
            reason,
            fix,
        };
        let parsed = (|| {
            let cert = CertName::parse(&r.cert)
                .map_err(|e| (format!("host {}: {e}", r.host), String::new()))?;
            let (name, _) = Identifier::parse(&r.name).map_err(|e| {
                (
                    format!("host {} cert {}: name {e}", r.host, r.cert),
                    String::new(),
                )
            })?;
            let record = DomainName::parse(&r.record).map_err(|e| {
                (
                    format!("host {} cert {}: record {e}", r.host, r.cert),
                    String::new(),
                )
            })?;
            let expected = name.challenge_record();
            if record != expected {
                return Err((
                    format!(
                        "host {} cert {}: record `{}` is not the challenge record of `{}` (expected `{}`)",
                        r.host,
                        r.cert,
                        r.record,
                        r.name,
                        expected.as_str()
                    ),
                    String::new(),
                ));
            }
            let value = TxtDigest::parse(&r.value).map_err(|e| {
                (
                    format!("host {} cert {}: {e}", r.host, r.cert),
                    "pass the `value` acme_request returned for this name unchanged".to_string(),
                )
            })?;
            Ok(Accepted {
                host: r.host.clone(),
                cert,
                name,
                record,
                value,
            })
        })();
        match parsed {
            Ok(a) => accepted.push(a),
            Err((reason, fix)) => rejected.push(reject(reason, fix)),
        }
    }
    accepted.sort();
    accepted.dedup();
    (accepted, rejected)
}

impl Plan {
    /// Validates everything; an `Err` names the option at fault. No disk or network access
    /// (except reading /etc/resolv.conf when no `resolver` is given).
    pub fn from_options(o: PublishOptions) -> Result<Plan, String> {
        if o.zones.is_empty() {
            return Err("option `zones` is empty: name at least one managed signing zone".into());
        }
        // Bounded by the parser (1 s to a day): no deadline can overflow.
        let timeout = Duration::from_secs(o.timeout);
        let nameserver_port = port("nameserver_port", o.nameserver_port)?;
        let max_records_per_type = usize::try_from(o.max_records_per_type)
            .ok()
            .filter(|n| *n > 0);
        let mut zones = Vec::new();
        let mut origins = BTreeSet::new();
        for (i, z) in o.zones.iter().enumerate() {
            let zp = zone_plan(i, z, max_records_per_type)?;
            if !origins.insert(zp.origin.clone()) {
                return Err(format!(
                    "option `zones[{i}]`: zone {} is listed twice",
                    zp.origin.fqdn()
                ));
            }
            zones.push(zp);
        }
        let origin_list: Vec<DomainName> = zones.iter().map(|z| z.origin.clone()).collect();
        let managed = chase::ManagedZones::new(&origin_list).ok_or("option `zones` is empty")?;
        let alias = match &o.alias {
            None => None,
            Some(a) => {
                let d = DomainName::parse(a).map_err(|e| format!("option `alias`: {e}"))?;
                if managed.zone_of(&d).is_none() {
                    return Err(format!(
                        "option `alias`: {} is not inside any managed zone ({})",
                        d.fqdn(),
                        origin_list
                            .iter()
                            .map(DomainName::fqdn)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Some(d)
            }
        };
        if !o.check_cname && alias.is_none() {
            return Err("option `check_cname: false` needs `alias`: without an alias the CNAME is what says where a value goes".into());
        }
        let resolver = match &o.resolver {
            Some(r) => Some(parse_addr("resolver", r)?),
            None => None,
        };
        if o.cname_check == CnameCheck::Resolver && resolver.is_none() {
            return Err("option `cname_check: resolver` needs `resolver` (address:port)".into());
        }
        let nameservers = match &o.nameservers {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(
                    "option `nameservers` is empty: leave it out to verify the zones' NS".into(),
                )
            }
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, s)| parse_addr(&format!("nameservers[{i}]"), s))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let needs_resolver = o.check_cname || nameservers.is_none();
        let resolver = match resolver {
            Some(r) => Some(r),
            None if needs_resolver => Some(chase::system_resolver().ok_or(
                "no `resolver` given and /etc/resolv.conf names no nameserver: set `resolver` (address:port)",
            )?),
            None => None,
        };
        let lookup = match (o.check_cname, resolver) {
            (false, _) | (_, None) => None,
            (true, Some(r)) => Some(match o.cname_check {
                CnameCheck::Resolver => Lookup::Resolver(r),
                CnameCheck::Authoritative => Lookup::Authoritative {
                    bootstrap: r,
                    port: nameserver_port,
                },
            }),
        };
        if o.state_dir.is_empty() {
            return Err("option `state_dir` is empty".into());
        }
        // A zone whose backend keeps no ages itself has `<state_dir>/<origin>.<method>.json`
        // (and its lock and temp file): a long origin must fail here, not after publishing.
        let state_dir = PathBuf::from(&o.state_dir);
        for (i, z) in zones.iter().enumerate() {
            if z.backend.uses_state_file() {
                let path =
                    crate::backend::state_file(&state_dir, &z.origin, z.backend.method(), "json");
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                certbridge_core::names::check_made_file(&state_dir, &name).map_err(|e| {
                    format!(
                        "`zones[{i}]` (zone {}): its state file in `state_dir`: {e}",
                        z.origin.fqdn()
                    )
                })?;
            }
        }
        let (accepted, rejected) = parse_records(&o.records);
        Ok(Plan {
            accepted,
            rejected,
            zones,
            managed,
            lookup,
            resolver,
            alias,
            nameservers,
            nameserver_port,
            keep_seconds: o.keep_seconds,
            retired: o
                .retired
                .iter()
                .filter(|r| TxtDigest::parse(&r.value).is_ok())
                .map(|r| r.value.clone())
                .collect(),
            timeout,
            state_dir,
            max_records_per_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: serde_json::Value) -> Result<PublishOptions, String> {
        let serde_json::Value::Object(m) = v else {
            panic!()
        };
        certbridge_core::protocol::parse_options::<PublishOptions>(m).map_err(|e| e.to_string())
    }
    fn digest(c: char) -> String {
        std::iter::repeat_n(c, 43).collect()
    }
    fn base() -> serde_json::Value {
        json!({
            "records": [{"host": "h1", "cert": "main", "name": "host1.example.test",
                          "record": "_acme-challenge.host1.example.test", "value": digest('a')}],
            "zones": [{"origin": "signing.test", "method": "zonefile", "path": "/tmp/x.db", "ns": ["ns1.signing.test"]}],
            "resolver": "127.0.0.1:5300",
        })
    }

    #[test]
    fn a_good_config_becomes_a_plan() {
        let p = Plan::from_options(opts(base()).unwrap()).unwrap();
        assert_eq!(p.accepted.len(), 1);
        assert!(matches!(
            p.lookup,
            Some(Lookup::Authoritative { port: 53, .. })
        ));
        let crate::zones::ZoneBackend::Zonefile(f) = &p.zones[0].backend else {
            panic!()
        };
        assert_eq!(
            f.write.validate.as_ref().unwrap().argv(),
            ["named-checkzone", "signing.test", "%s"]
        );
        assert_eq!(f.reload, ["rndc", "reload", "signing.test"]);
        assert!(f.write.lock_timeout.is_none());
        assert_eq!(p.timeout, Duration::from_secs(300));
        assert_eq!(p.keep_seconds, 3600);
    }

    #[test]
    fn rndc_conf_adds_c_and_strings_split_without_a_shell() {
        let mut v = base();
        v["zones"][0]["rndc_conf"] = json!("/etc/bind/my rndc.conf");
        v["zones"][0]["validate"] = json!("named-checkzone -q 'signing.test' %s");
        let p = Plan::from_options(opts(v).unwrap()).unwrap();
        let crate::zones::ZoneBackend::Zonefile(f) = &p.zones[0].backend else {
            panic!()
        };
        assert_eq!(
            f.reload,
            [
                "rndc",
                "-c",
                "/etc/bind/my rndc.conf",
                "reload",
                "signing.test"
            ]
        );
        assert_eq!(
            f.write.validate.as_ref().unwrap().argv(),
            ["named-checkzone", "-q", "signing.test", "%s"]
        );
    }

    #[test]
    fn config_errors_name_the_option() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (json!({"zones": []}), "`zones` is empty"),
            (
                json!({"zones": [{"origin": "a..b", "method": "zonefile", "path": "/x", "ns": ["n.a"]}]}),
                "zones[0].origin",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "zonefile", "ns": ["n.a"]}]}),
                "missing required option `path` in `zones[0]`",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "zonefile", "path": "rel.db", "ns": ["n.a"]}]}),
                "zones[0]",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "zonefile", "path": "/x.db", "ns": ["n.a"], "soa": {"refresh": "x"}}]}),
                "soa.refresh",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "zonefile", "path": "/x.db", "ns": ["n.a"], "static_records": [{"name": "x", "type": "TXT", "value": "a;b\"c"}]}]}),
                "static_records",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "rfc2136", "server": "127.0.0.1:53", "tsig_name": "k", "tsig_secret": "c2VjcmV0", "path": "/x"}]}),
                "option `zones[0]`: unsupported option `path` for method rfc2136",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "rfc2136", "server": "ns1.a.test", "tsig_name": "k", "tsig_secret": "c2VjcmV0"}]}),
                "zones[0].server",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "rfc2136", "server": "127.0.0.1", "tsig_name": "k", "tsig_secret": "%%%"}]}),
                "tsig_secret is not base64",
            ),
            (
                json!({"cname_check": "resolver", "resolver": null}),
                "needs `resolver`",
            ),
            (
                json!({"alias": "acme.elsewhere.test"}),
                "not inside any managed zone",
            ),
            (json!({"check_cname": false}), "needs `alias`"),
            (json!({"nameservers": ["ns1.example"]}), "nameservers[0]"),
            (json!({"nameserver_port": 70000}), "nameserver_port"),
            (json!({"timeout": 0}), "timeout"),
            (
                json!({"timeout": 18446744073709551615u64}),
                "option `timeout`: expected a whole number of seconds from 1 to 86400",
            ),
            (
                json!({"keep_seconds": "99999999999999999999"}),
                "option `keep_seconds`: expected a whole number of seconds from 0 to 31536000",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "zonefile", "path": "/x.db", "ns": ["n.a"], "mode": 644}]}),
                "\"0644\"",
            ),
            (
                json!({"zones": [{"origin": "a.test", "method": "zonefile", "path": "/x.db", "ns": ["n.a"], "mode": "4755"}]}),
                "set-user-ID",
            ),
            (
                json!({"zones": [{"origin": format!("{}.test", vec!["a".repeat(60); 4].join(".")), "method": "rfc2136", "server": "127.0.0.1", "tsig_name": "k", "tsig_secret": "c2VjcmV0"}]}),
                "its state file in `state_dir`: the file name",
            ),
        ];
        for (patch, want) in cases {
            let mut v = base();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = match opts(v) {
                Err(e) => e,
                Ok(o) => Plan::from_options(o).unwrap_err(),
            };
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn unknown_options_are_refused_by_the_parser() {
        let mut v = base();
        v["zones"][0]["colour"] = json!(1);
        let e = opts(v).unwrap_err();
        assert!(e.contains("`colour`") && e.contains("zones[0]"), "{e}");
        let mut v = base();
        v["records"][0]["extra"] = json!(1);
        assert!(opts(v).unwrap_err().contains("`extra`"));
    }

    #[test]
    fn bad_records_are_rejected_naming_host_and_cert() {
        let mut v = base();
        v["records"] = json!([
            {"host": "h1", "cert": "c1", "name": "host1.example.test", "record": "_acme-challenge.host1.example.test", "value": "not-a-digest"},
            {"host": "h2", "cert": "../x", "name": "host2.example.test", "record": "_acme-challenge.host2.example.test", "value": digest('b')},
            {"host": "h3", "cert": "c3", "name": "host3.example.test", "record": "_acme-challenge.host9.example.test", "value": digest('c')},
            {"host": "h4", "cert": "c4", "name": "*.s3.example.test", "record": "_acme-challenge.s3.example.test", "value": digest('d')},
        ]);
        let p = Plan::from_options(opts(v).unwrap()).unwrap();
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.accepted[0].host, "h4");
        assert_eq!(p.rejected.len(), 3);
        let r = &p.rejected[0];
        assert_eq!((r.host.as_str(), r.cert.as_str()), ("h1", "c1"));
        assert!(
            r.reason.contains("h1") && r.reason.contains("c1") && r.reason.contains("43"),
            "{}",
            r.reason
        );
        assert!(p.rejected[1].reason.contains("../x"));
        assert!(p.rejected[2]
            .reason
            .contains("expected `_acme-challenge.host3.example.test`"));
    }
}
