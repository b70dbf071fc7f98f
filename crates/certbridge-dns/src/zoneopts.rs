//! A managed zone's options, tagged by `method`: each method has its own option set, so an
//! option that does not apply to the chosen method is refused by the parser (naming the valid
//! ones), and validation turns each into its backend.

use crate::exec::{ExecZone, DEFAULT_EXEC_DEADLINE};
use crate::options::CommandInput;
use crate::rfc2136::DynZone;
use crate::transport::TsigKey;
use crate::zonefile::FileZone;
use crate::zones::ZoneBackend;
use certbridge_core::names::{DomainName, ServerAddr};
use certbridge_core::protocol::{coerce, limits};
use certbridge_core::zone;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

type Raw = Option<serde_json::Value>;

/// A managed signing zone; `method` chooses the variant (and so the valid options).
#[derive(Debug, Clone)]
pub enum ZoneInput {
    Zonefile(Box<FileZoneInput>),
    Rfc2136(Rfc2136Input),
    Exec(ExecInput),
    Powerdns(PowerdnsInput),
}

const METHODS: &str = "zonefile, rfc2136, exec or powerdns";

/// Like `#[serde(tag = "method")]`, but an error inside the variant names the option and
/// the method (serde's buffered tagged enums lose the option's path).
impl<'de> Deserialize<'de> for ZoneInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let method = match map.remove("method") {
            Some(serde_json::Value::String(m)) => m,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`method` {other} is not one of {METHODS}"
                )))
            }
            None => return Err(D::Error::missing_field("method")),
        };
        let rest = serde_json::Value::Object(map);
        let parsed = match method.as_str() {
            "zonefile" => variant(rest).map(|z| ZoneInput::Zonefile(Box::new(z))),
            "rfc2136" => variant(rest).map(ZoneInput::Rfc2136),
            "exec" => variant(rest).map(ZoneInput::Exec),
            "powerdns" => variant(rest).map(ZoneInput::Powerdns),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown `method` `{other}`: expected {METHODS}"
                )))
            }
        };
        parsed.map_err(|(path, inner)| D::Error::custom(reword(&method, &path, &inner)))
    }
}

fn variant<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    })
}

/// serde's wording in Ansible's vocabulary, naming the method.
fn reword(method: &str, path: &str, inner: &str) -> String {
    if let Some(rest) = inner.strip_prefix("unknown field ") {
        let (name, valid) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let valid = valid.trim_start_matches("one of ").replace('`', "");
        return format!(
            "unsupported option {name} for method {method}; valid options: method, {valid}"
        );
    }
    if let Some(rest) = inner.strip_prefix("missing field ") {
        return format!("missing required option {rest} for method {method}");
    }
    format!("`{path}` (method {method}): {inner}")
}

/// `method: zonefile`: most options go to zone_render's own option parser (one
/// implementation), so they stay raw here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileZoneInput {
    pub origin: String,
    // Required; Option so that null reads as missing, as Ansible's own modules do.
    #[serde(default)]
    pub path: Raw,
    #[serde(default)]
    pub ns: Raw,
    #[serde(default)]
    pub ttl: Raw,
    #[serde(default)]
    pub soa: Raw,
    #[serde(default)]
    pub static_records: Raw,
    #[serde(default)]
    pub validate: Raw,
    #[serde(default)]
    pub mode: Raw,
    #[serde(default)]
    pub owner: Raw,
    #[serde(default)]
    pub group: Raw,
    #[serde(default)]
    pub follow_symlink: Raw,
    #[serde(default)]
    pub reload: Option<CommandInput>,
    #[serde(default)]
    pub rndc_conf: Option<String>,
    #[serde(default, deserialize_with = "coerce::boolean")]
    pub freeze: bool,
    #[serde(default)]
    pub server_log: Option<String>,
}

/// `method: rfc2136`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Input {
    pub origin: String,
    // Required; Option so that null reads as missing.
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub tsig_name: Option<String>,
    #[serde(default)]
    pub tsig_secret: Option<String>,
    #[serde(default = "default_algorithm")]
    pub tsig_algorithm: String,
    #[serde(default)]
    pub ttl: Raw,
}

/// `method: exec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecInput {
    pub origin: String,
    /// argv, never run through a shell (required).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Variables the command gets besides PATH, HOME and LANG (values never printed).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds one run of the command may take; it is killed after.
    #[serde(
        default = "default_exec_deadline",
        deserialize_with = "coerce::seconds::<_, 1, { limits::DAY }>"
    )]
    pub deadline: u64,
    /// The servers that must serve the values (default: the zone's NS, or the module's
    /// `nameservers`).
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default)]
    pub ttl: Raw,
}

/// `method: powerdns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerdnsInput {
    pub origin: String,
    /// `http://` host and port of the API (a path prefix before `/api/v1` allowed).
    pub api_url: String,
    /// Secret (no_log).
    pub api_key: String,
    #[serde(default = "default_server_id")]
    pub server_id: String,
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default)]
    pub ttl: Raw,
}

fn default_server_id() -> String {
    "localhost".into()
}
fn default_algorithm() -> String {
    "hmac-sha256".into()
}
fn default_exec_deadline() -> u64 {
    DEFAULT_EXEC_DEADLINE
}

impl ZoneInput {
    pub fn method(&self) -> &'static str {
        match self {
            ZoneInput::Zonefile(_) => "zonefile",
            ZoneInput::Rfc2136(_) => "rfc2136",
            ZoneInput::Exec(_) => "exec",
            ZoneInput::Powerdns(_) => "powerdns",
        }
    }
    pub fn origin(&self) -> &str {
        match self {
            ZoneInput::Zonefile(z) => &z.origin,
            ZoneInput::Rfc2136(z) => &z.origin,
            ZoneInput::Exec(z) => &z.origin,
            ZoneInput::Powerdns(z) => &z.origin,
        }
    }
}

/// A validated zone: its origin and its backend.
#[derive(Debug, Clone)]
pub struct ZonePlan {
    pub origin: DomainName,
    pub backend: ZoneBackend,
}

pub(crate) fn parse_addr(option: &str, value: &str) -> Result<SocketAddr, String> {
    ServerAddr::parse(value, 53)
        .map(|a| a.0)
        .map_err(|e| format!("option `{option}`: {e}"))
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

/// Validates zone `i` into its backend; an `Err` names the option.
pub fn zone_plan(
    i: usize,
    z: &ZoneInput,
    max_records_per_type: Option<usize>,
) -> Result<ZonePlan, String> {
    let at = format!("zones[{i}]");
    let origin = DomainName::parse(z.origin()).map_err(|e| format!("option `{at}.origin`: {e}"))?;
    let in_zone = |e: String| format!("`{at}` (zone {}): {e}", origin.fqdn());
    let required = |name: &str| {
        format!(
            "missing required option `{name}` in `{at}` (zone {}, method {})",
            origin.fqdn(),
            z.method()
        )
    };
    let backend = match z {
        ZoneInput::Zonefile(z) => {
            let (Some(path), Some(ns)) = (&z.path, &z.ns) else {
                let name = if z.path.is_none() { "path" } else { "ns" };
                return Err(required(name));
            };
            let fz = file_zone(&at, &origin, z, path, ns, max_records_per_type)?;
            ZoneBackend::Zonefile(Box::new(fz))
        }
        ZoneInput::Rfc2136(z) => {
            let server = z.server.as_deref().ok_or_else(|| required("server"))?;
            let server = parse_addr(&format!("{at}.server"), server)?;
            let name = z
                .tsig_name
                .as_deref()
                .ok_or_else(|| required("tsig_name"))?;
            let secret = z
                .tsig_secret
                .as_deref()
                .ok_or_else(|| required("tsig_secret"))?;
            let key = TsigKey::new(name, &z.tsig_algorithm, secret).map_err(in_zone)?;
            ZoneBackend::Rfc2136(Box::new(DynZone {
                server,
                key,
                ttl: ttl_u32(&at, z.ttl.as_ref())?,
            }))
        }
        ZoneInput::Exec(z) => {
            let command = z.command.clone().ok_or_else(|| required("command"))?;
            let command = CommandInput::Argv(command).argv(&format!("{at}.command"))?;
            for name in z.env.keys() {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    return Err(format!(
                        "option `{at}.env`: `{name}` is not an environment variable name"
                    ));
                }
            }
            let nameservers = zone_nameservers(&at, z.nameservers.as_deref())?;
            ZoneBackend::Exec(Box::new(ExecZone {
                command,
                env: z.env.clone(),
                deadline: Duration::from_secs(z.deadline),
                nameservers,
                ttl: ttl_u32(&at, z.ttl.as_ref())?,
            }))
        }
        ZoneInput::Powerdns(z) => powerdns_zone(&at, z).map_err(in_zone)?,
    };
    Ok(ZonePlan { origin, backend })
}

/// A zone's own `nameservers`, if given (not empty).
fn zone_nameservers(at: &str, list: Option<&[String]>) -> Result<Option<Vec<SocketAddr>>, String> {
    match list {
        None => Ok(None),
        Some([]) => Err(format!(
            "option `{at}.nameservers` is empty: leave it out to verify the zone's NS"
        )),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(j, s)| parse_addr(&format!("{at}.nameservers[{j}]"), s))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
}

fn powerdns_zone(at: &str, z: &PowerdnsInput) -> Result<ZoneBackend, String> {
    use crate::powerdns::{ApiKey, ApiUrl, PdnsZone};
    let api = ApiUrl::parse(&z.api_url).map_err(|e| format!("option `api_url`: {e}"))?;
    let key = ApiKey::new(&z.api_key)?;
    let id = &z.server_id;
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "option `server_id`: `{id}` is not a PowerDNS server id (letters, digits, `-`, `_`, `.`)"
        ));
    }
    Ok(ZoneBackend::Powerdns(Box::new(PdnsZone {
        api,
        server_id: id.clone(),
        key,
        nameservers: zone_nameservers(at, z.nameservers.as_deref())?,
        ttl: ttl_u32(at, z.ttl.as_ref())?,
    })))
}

fn file_zone(
    at: &str,
    origin: &DomainName,
    z: &FileZoneInput,
    path: &serde_json::Value,
    ns: &serde_json::Value,
    max_records_per_type: Option<usize>,
) -> Result<FileZone, String> {
    let mut render = serde_json::Map::new();
    render.insert(
        "origin".into(),
        serde_json::Value::String(origin.as_str().to_owned()),
    );
    render.insert("path".into(), path.clone());
    render.insert("ns".into(), ns.clone());
    for (key, value) in [
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
    let render: zone::ZoneRenderOptions =
        certbridge_core::protocol::parse_options(render).map_err(|e| in_zone(e.to_string()))?;
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
    let server_log = match &z.server_log {
        None => None,
        Some(p) if std::path::Path::new(p).is_absolute() => Some(p.into()),
        Some(p) => {
            return Err(format!(
                "`{at}.server_log` must be an absolute path, not {p:?}"
            ))
        }
    };
    let (reload, default_reload) = match &z.reload {
        Some(c) => (c.argv(&format!("{at}.reload"))?, false),
        None => {
            let mut r = rndc.clone();
            r.push("reload".into());
            r.push(origin.as_str().to_owned());
            (r, true)
        }
    };
    Ok(FileZone {
        spec,
        static_records,
        write,
        reload,
        rndc,
        freeze: z.freeze,
        default_reload,
        server_log,
        max_per_owner: max_records_per_type,
    })
}
