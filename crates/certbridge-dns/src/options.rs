//! `acme_txt_publish`'s options, and their validation into a [`Plan`] of domain types. Every
//! configuration error is found here, before any disk or network access. A bad record (a
//! value that is not a dns-01 digest, a name that is not a certificate name) is not a
//! configuration error: it is rejected on its own, naming host and cert.

use crate::chase::{self, Lookup};
use crate::transport::TsigKey;
use certbridge_core::names::{CertName, DomainName, Identifier, ServerAddr, TxtDigest};
use certbridge_core::protocol::{coerce, limits};
use certbridge_core::zone;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A managed signing zone, either method; which options apply depends on `method`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneInput {
    pub origin: String,
    pub method: Method,
    // zonefile: these go to zone_render's own option parser (one implementation)
    #[serde(default)]
    pub path: Option<serde_json::Value>,
    #[serde(default)]
    pub ns: Option<serde_json::Value>,
    #[serde(default)]
    pub ttl: Option<serde_json::Value>,
    #[serde(default)]
    pub soa: Option<serde_json::Value>,
    #[serde(default)]
    pub static_records: Option<serde_json::Value>,
    #[serde(default)]
    pub validate: Option<serde_json::Value>,
    #[serde(default)]
    pub mode: Option<serde_json::Value>,
    #[serde(default)]
    pub owner: Option<serde_json::Value>,
    #[serde(default)]
    pub group: Option<serde_json::Value>,
    #[serde(default)]
    pub follow_symlink: Option<serde_json::Value>,
    #[serde(default)]
    pub reload: Option<CommandInput>,
    #[serde(default)]
    pub rndc_conf: Option<String>,
    #[serde(default, deserialize_with = "coerce::opt_boolean")]
    pub freeze: Option<bool>,
    // rfc2136
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub tsig_name: Option<String>,
    #[serde(default)]
    pub tsig_algorithm: Option<String>,
    #[serde(default)]
    pub tsig_secret: Option<String>,
    // powerdns
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub server_id: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Zonefile,
    Rfc2136,
    Powerdns,
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

/// A zonefile zone: the zone library's request (spec, static records, write options, all
/// validated by the same code as `zone_render`), plus how to reload.
#[derive(Debug, Clone)]
pub struct FileZone {
    pub spec: zone::ZoneSpec,
    /// Records written on every run besides the TXT values (`static_records`).
    pub static_records: Vec<zone::Record>,
    pub write: zone::WriteOptions,
    /// The reload argv (default `rndc [-c conf] reload <origin>`).
    pub reload: Vec<String>,
    /// `rndc [-c conf]`, for freeze/thaw/zonestatus.
    pub rndc: Vec<String>,
    /// Write between `rndc freeze` and `rndc thaw` (a zone that takes dynamic updates).
    pub freeze: bool,
    pub default_reload: bool,
}

/// A dynamic zone updated with RFC 2136.
#[derive(Debug, Clone)]
pub struct DynZone {
    pub server: SocketAddr,
    pub key: TsigKey,
    pub ttl: u32,
}

#[derive(Debug, Clone)]
pub enum ZoneKind {
    File(Box<FileZone>),
    Dynamic(Box<DynZone>),
    PowerDns(Box<crate::powerdns::PdnsZone>),
}

#[derive(Debug, Clone)]
pub struct ZonePlan {
    pub origin: DomainName,
    pub kind: ZoneKind,
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

fn parse_addr(option: &str, value: &str) -> Result<SocketAddr, String> {
    ServerAddr::parse(value, 53)
        .map(|a| a.0)
        .map_err(|e| format!("option `{option}`: {e}"))
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
        let mut zones = Vec::new();
        let mut origins = BTreeSet::new();
        for (i, z) in o.zones.iter().enumerate() {
            let zp = zone_plan(i, z)?;
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
        // Each dynamic zone keeps `<state_dir>/<origin>.rfc2136.json` (and its lock and temp
        // file): a long origin must fail here, not after the UPDATE was sent.
        let state_dir = PathBuf::from(&o.state_dir);
        for (i, z) in zones.iter().enumerate() {
            let path = match z.kind {
                ZoneKind::Dynamic(_) => Some(crate::rfc2136::state_path(&state_dir, &z.origin)),
                ZoneKind::PowerDns(_) => Some(crate::powerdns::state_path(&state_dir, &z.origin)),
                ZoneKind::File(_) => None,
            };
            if let Some(path) = path {
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
            max_records_per_type: usize::try_from(o.max_records_per_type)
                .ok()
                .filter(|n| *n > 0),
        })
    }
}

fn ttl_u32(at: &str, ttl: Option<&serde_json::Value>) -> Result<u32, String> {
    let t = match ttl {
        None | Some(serde_json::Value::Null) => 60,
        Some(v) => coerce::uint(v.clone()).map_err(|e| format!("option `{at}.ttl`: {e}"))?,
    };
    u32::try_from(t)
        .ok()
        .filter(|t| *t <= zone::MAX_TTL)
        .ok_or_else(|| format!("option `{at}.ttl`: {t} is too large"))
}

fn zone_plan(i: usize, z: &ZoneInput) -> Result<ZonePlan, String> {
    let at = format!("zones[{i}]");
    let origin = DomainName::parse(&z.origin).map_err(|e| format!("option `{at}.origin`: {e}"))?;
    let not_for = |name: &str, present: bool, method: &str| {
        if present {
            Err(format!(
                "option `{at}.{name}` does not apply to method {method} (zone {})",
                origin.fqdn()
            ))
        } else {
            Ok(())
        }
    };
    let required = |name: &str, method: &str| {
        format!(
            "missing required option `{name}` in `{at}` (zone {}, method {method})",
            origin.fqdn()
        )
    };
    match z.method {
        Method::Zonefile => {
            for (name, present) in [
                ("server", z.server.is_some()),
                ("tsig_name", z.tsig_name.is_some()),
                ("tsig_algorithm", z.tsig_algorithm.is_some()),
                ("tsig_secret", z.tsig_secret.is_some()),
                ("api_url", z.api_url.is_some()),
                ("server_id", z.server_id.is_some()),
                ("api_key", z.api_key.is_some()),
                ("ca_file", z.ca_file.is_some()),
            ] {
                not_for(name, present, "zonefile")?;
            }
            if z.path.is_none() {
                return Err(required("path", "zonefile"));
            }
            if z.ns.is_none() {
                return Err(required("ns", "zonefile"));
            }
            let mut render = serde_json::Map::new();
            render.insert(
                "origin".into(),
                serde_json::Value::String(origin.as_str().to_owned()),
            );
            for (key, value) in [
                ("path", &z.path),
                ("ns", &z.ns),
                ("ttl", &z.ttl),
                ("soa", &z.soa),
                ("records", &z.static_records),
                ("validate", &z.validate),
                ("mode", &z.mode),
                ("owner", &z.owner),
                ("group", &z.group),
                ("follow_symlink", &z.follow_symlink),
            ] {
                if let Some(v) = value {
                    render.insert(key.into(), v.clone());
                }
            }
            if z.validate.is_none() {
                render.insert(
                    "validate".into(),
                    serde_json::json!(["named-checkzone", origin.as_str(), "%s"]),
                );
            }
            let in_zone = |e: String| {
                format!(
                    "`{at}` (zone {}): {}",
                    origin.fqdn(),
                    e.replace("`records", "`static_records")
                        .replace("records[", "static_records[")
                )
            };
            let render: zone::ZoneRenderOptions = certbridge_core::protocol::parse_options(render)
                .map_err(|e| in_zone(e.to_string()))?;
            let (spec, static_records, mut write) = render
                .into_request(false)
                .map_err(|e| in_zone(e.to_string()))?;
            // We hold the zone's lock ourselves, from reading the old values to the reload.
            write.lock_timeout = None;
            let mut rndc = vec!["rndc".to_string()];
            if let Some(conf) = &z.rndc_conf {
                rndc.push("-c".into());
                rndc.push(conf.clone());
            }
            let (reload, default_reload) = match &z.reload {
                Some(c) => (c.argv(&format!("{at}.reload"))?, false),
                None => {
                    let mut r = rndc.clone();
                    r.push("reload".into());
                    r.push(origin.as_str().to_owned());
                    (r, true)
                }
            };
            Ok(ZonePlan {
                origin,
                kind: ZoneKind::File(Box::new(FileZone {
                    spec,
                    static_records,
                    write,
                    reload,
                    rndc,
                    freeze: z.freeze.unwrap_or(false),
                    default_reload,
                })),
            })
        }
        Method::Rfc2136 => {
            for (name, present) in [
                ("path", z.path.is_some()),
                ("ns", z.ns.is_some()),
                ("soa", z.soa.is_some()),
                ("static_records", z.static_records.is_some()),
                ("validate", z.validate.is_some()),
                ("mode", z.mode.is_some()),
                ("owner", z.owner.is_some()),
                ("group", z.group.is_some()),
                ("follow_symlink", z.follow_symlink.is_some()),
                ("reload", z.reload.is_some()),
                ("rndc_conf", z.rndc_conf.is_some()),
                ("freeze", z.freeze.is_some()),
                ("api_url", z.api_url.is_some()),
                ("server_id", z.server_id.is_some()),
                ("api_key", z.api_key.is_some()),
                ("ca_file", z.ca_file.is_some()),
            ] {
                not_for(name, present, "rfc2136")?;
            }
            let server = z
                .server
                .as_ref()
                .ok_or_else(|| required("server", "rfc2136"))?;
            let server = parse_addr(&format!("{at}.server"), server)?;
            let name = z
                .tsig_name
                .as_ref()
                .ok_or_else(|| required("tsig_name", "rfc2136"))?;
            let secret = z
                .tsig_secret
                .as_ref()
                .ok_or_else(|| required("tsig_secret", "rfc2136"))?;
            let algorithm = z.tsig_algorithm.as_deref().unwrap_or("hmac-sha256");
            let key = TsigKey::new(name, algorithm, secret)
                .map_err(|e| format!("`{at}` (zone {}): {e}", origin.fqdn()))?;
            Ok(ZonePlan {
                origin,
                kind: ZoneKind::Dynamic(Box::new(DynZone {
                    server,
                    key,
                    ttl: ttl_u32(&at, z.ttl.as_ref())?,
                })),
            })
        }
        Method::Powerdns => {
            for (name, present) in [
                ("path", z.path.is_some()),
                ("ns", z.ns.is_some()),
                ("soa", z.soa.is_some()),
                ("static_records", z.static_records.is_some()),
                ("validate", z.validate.is_some()),
                ("mode", z.mode.is_some()),
                ("owner", z.owner.is_some()),
                ("group", z.group.is_some()),
                ("follow_symlink", z.follow_symlink.is_some()),
                ("reload", z.reload.is_some()),
                ("rndc_conf", z.rndc_conf.is_some()),
                ("freeze", z.freeze.is_some()),
                ("server", z.server.is_some()),
                ("tsig_name", z.tsig_name.is_some()),
                ("tsig_algorithm", z.tsig_algorithm.is_some()),
                ("tsig_secret", z.tsig_secret.is_some()),
            ] {
                not_for(name, present, "powerdns")?;
            }
            let in_zone =
                |e: String| format!("`{at}` (zone {}, method powerdns): {e}", origin.fqdn());
            let api = z
                .api_url
                .as_deref()
                .ok_or_else(|| required("api_url", "powerdns"))?;
            let api = crate::powerdns::ApiUrl::parse(api)
                .map_err(|e| in_zone(format!("`api_url` {e}")))?;
            let key = z
                .api_key
                .as_deref()
                .ok_or_else(|| required("api_key", "powerdns"))?;
            let key = crate::powerdns::ApiKey::new(key).map_err(in_zone)?;
            let server_id = z.server_id.clone().unwrap_or_else(|| "localhost".into());
            if server_id.is_empty()
                || !server_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(in_zone(format!(
                    "`server_id` `{server_id}` is not a PowerDNS server id (letters, digits, `-`, `_`, `.`)"
                )));
            }
            let ca_file = match &z.ca_file {
                None => None,
                Some(f) if !api.tls => {
                    return Err(in_zone(format!(
                        "`ca_file` {f} given, but `api_url` {api} is plain http"
                    )))
                }
                Some(f) if !Path::new(f).is_absolute() => {
                    return Err(in_zone(format!("`ca_file` {f} is not an absolute path")))
                }
                Some(f) => Some(PathBuf::from(f)),
            };
            Ok(ZonePlan {
                origin,
                kind: ZoneKind::PowerDns(Box::new(crate::powerdns::PdnsZone {
                    api,
                    server_id,
                    key,
                    ca_file,
                    ttl: ttl_u32(&at, z.ttl.as_ref())?,
                })),
            })
        }
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
        let ZoneKind::File(f) = &p.zones[0].kind else {
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
        let ZoneKind::File(f) = &p.zones[0].kind else {
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
                "`zones[0].path` does not apply to method rfc2136",
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
