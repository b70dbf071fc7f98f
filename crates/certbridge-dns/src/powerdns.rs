//! The `powerdns` method: PowerDNS Authoritative's HTTP API. Read the zone's TXT RRsets
//! (`GET /api/v1/servers/{id}/zones/{zone}`), then send every change as one `PATCH` of RRsets
//! (`REPLACE` with the owner's whole new value set, `DELETE` when nothing is left). PowerDNS
//! applies one PATCH in one backend transaction, so a refused change leaves the zone as it was;
//! the SOA serial is the server's business (the zone's SOA-EDIT-API), never touched here.
//!
//! Value ages live in the shared state file (`<zone>.powerdns.json`, see [`crate::zones`]).
//! The API key is sent in `X-API-Key` only; no error text ever carries it.

use crate::backend::{Applied, Backend, ChangeSet, Servers, Snapshot, Values};
use crate::error::PublishError;
use certbridge_core::names::DomainName;
use hickory_proto::rr::{Name, RData, RecordType};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest API answer read: a zone of 10,000 RRsets is about 2 MiB of JSON.
const MAX_BODY: usize = 64 << 20;

/// Where the API is: `http://` host, port and path prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiUrl {
    pub host: String,
    pub port: u16,
    /// Path before `/api/v1`, without a trailing slash (empty for the usual root).
    pub prefix: String,
}

impl ApiUrl {
    pub fn parse(s: &str) -> Result<ApiUrl, String> {
        if s.starts_with("https://") {
            // A TLS stack (rustls) would take acme_txt_publish past its 3 MiB size budget
            // (measured 3.36 MiB): HTTPS is for a local TLS tunnel to terminate.
            return Err(format!(
                "`{s}`: https is not supported: reach the API over http on loopback or a private network, or through a local TLS tunnel (stunnel, a reverse proxy) listening on http://127.0.0.1"
            ));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{s}`: the scheme must be http"))?;
        if s.contains(['?', '#', '@']) || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "`{s}`: no query, fragment, user part or spaces, please"
            ));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{s}` names no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{s}`: `{p}` is not a port"))?,
        };
        let prefix = path.trim_end_matches('/');
        let prefix = prefix.strip_suffix("/api/v1").unwrap_or(prefix).to_owned();
        Ok(ApiUrl {
            host: host.to_owned(),
            port,
            prefix,
        })
    }
}

impl std::fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = "http";
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.prefix)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.prefix)
        }
    }
}

impl std::fmt::Debug for ApiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The API key: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: &str) -> Result<ApiKey, String> {
        if key.is_empty() {
            return Err("`api_key` is empty".into());
        }
        // It goes into a header: no control characters.
        if key.bytes().any(|b| b.is_ascii_control()) || !key.is_ascii() {
            return Err("`api_key` holds characters an HTTP header cannot carry".into());
        }
        Ok(ApiKey(key.to_owned()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<secret>)")
    }
}

/// One zone published through the API.
#[derive(Debug, Clone)]
pub struct PdnsZone {
    pub api: ApiUrl,
    pub server_id: String,
    pub key: ApiKey,
    /// The servers that must serve the values (default: the zone's NS).
    pub nameservers: Option<Vec<SocketAddr>>,
    pub ttl: u32,
}

/// Why an API call failed; shown with zone, method and server around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    Unreachable(String),
    Timeout(&'static str),
    /// 401/403: the key is wrong (PowerDNS answers 401 without a body worth showing).
    Unauthorized(u16),
    NoZone,
    /// 422 and the like: PowerDNS's own `error` text.
    Refused {
        status: u16,
        error: String,
    },
    Malformed(String),
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Unreachable(e) => write!(f, "cannot reach the API: {e}"),
            ApiFailure::Timeout(what) => write!(f, "no answer to {what} before the deadline"),
            ApiFailure::Unauthorized(s) => write!(
                f,
                "the API refused the key (HTTP {s}): check `api_key` against the server's `api-key` setting"
            ),
            ApiFailure::NoZone => write!(
                f,
                "the server has no such zone (HTTP 404): check the zone's origin and `server_id`"
            ),
            ApiFailure::Refused { status, error } => {
                write!(f, "PowerDNS refused the request (HTTP {status}): {error}")
            }
            ApiFailure::Malformed(e) => write!(f, "unexpected answer: {e}"),
        }
    }
}

fn api_error(origin: &DomainName, failure: ApiFailure) -> PublishError {
    PublishError::Api {
        zone: origin.fqdn(),
        detail: failure.to_string(),
    }
}

/// A TXT record as PowerDNS holds it: presentation-format content.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct PdnsRecord {
    pub content: String,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Deserialize)]
struct ZoneDoc {
    #[serde(default)]
    rrsets: Vec<RrsetDoc>,
}

#[derive(Debug, Deserialize)]
struct RrsetDoc {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    records: Vec<PdnsRecord>,
}

/// The zone's TXT RRsets: owner -> records as stored.
pub type TxtRrsets = BTreeMap<DomainName, Vec<PdnsRecord>>;

/// A TXT content's value: its character-strings joined (`"a" "b"` -> `ab`), escapes undone.
/// None for content that is not quoted strings.
pub fn unquote(content: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut it = content.trim().bytes().peekable();
    let mut any = false;
    while let Some(b) = it.next() {
        match b {
            b' ' | b'\t' => continue,
            b'"' => any = true,
            _ => return None,
        }
        loop {
            match it.next()? {
                b'"' => break,
                b'\\' => {
                    let c = it.next()?;
                    if c.is_ascii_digit() {
                        let d2 = it.next().filter(u8::is_ascii_digit)?;
                        let d3 = it.next().filter(u8::is_ascii_digit)?;
                        let n = u32::from(c - b'0') * 100
                            + u32::from(d2 - b'0') * 10
                            + u32::from(d3 - b'0');
                        out.push(u8::try_from(n).ok()?);
                    } else {
                        out.push(c);
                    }
                }
                c => out.push(c),
            }
        }
    }
    any.then(|| String::from_utf8_lossy(&out).into_owned())
}

/// A value as PowerDNS content: one quoted string with `"` and `\` escaped.
pub fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Values of enabled records, per owner (what the DNS serves).
pub fn current_values(rrsets: &TxtRrsets) -> Values {
    rrsets
        .iter()
        .map(|(o, recs)| {
            let vs = recs
                .iter()
                .filter(|r| !r.disabled)
                .filter_map(|r| unquote(&r.content))
                .collect();
            (o.clone(), vs)
        })
        .collect()
}

/// The PATCH body for `change`: per changed owner, `REPLACE` with every record it keeps (as
/// stored, other TXT records included) plus the new values, or `DELETE` when none is left.
pub fn patch_body(rrsets: &TxtRrsets, change: &ChangeSet) -> serde_json::Value {
    let owners: BTreeSet<&DomainName> = change.add.keys().chain(change.remove.keys()).collect();
    let mut out = Vec::new();
    for owner in owners {
        let gone = change.remove.get(owner);
        let mut records: Vec<PdnsRecord> = rrsets
            .get(owner)
            .map(|recs| {
                recs.iter()
                    .filter(|r| {
                        !unquote(&r.content).is_some_and(|v| gone.is_some_and(|g| g.contains(&v)))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for v in change.add.get(owner).into_iter().flatten() {
            records.push(PdnsRecord {
                content: quote(v),
                disabled: false,
            });
        }
        let name = owner.fqdn();
        out.push(if records.is_empty() {
            serde_json::json!({"name": name, "type": "TXT", "changetype": "DELETE"})
        } else {
            serde_json::json!({"name": name, "type": "TXT", "ttl": change.ttl, "changetype": "REPLACE", "records": records})
        });
    }
    serde_json::json!({ "rrsets": out })
}

/// The API's address without the C library's resolver (the modules are static binaries and
/// must not link NSS lookups): an IP literal or `localhost` as is, a name through the first
/// nameserver of /etc/resolv.conf (A record).
async fn api_addr(pz: &PdnsZone) -> Result<SocketAddr, ApiFailure> {
    let host = pz.api.host.as_str();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, pz.api.port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), pz.api.port));
    }
    let unresolved = |why: String| ApiFailure::Unreachable(format!("cannot resolve {host}: {why}"));
    let resolver = crate::chase::system_resolver()
        .ok_or_else(|| unresolved("no nameserver in /etc/resolv.conf".into()))?;
    let name = Name::from_ascii(format!("{}.", host.trim_end_matches('.')))
        .map_err(|e| unresolved(e.to_string()))?;
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let msg = crate::transport::query(resolver, &name, RecordType::A, true, deadline)
        .await
        .map_err(|e| unresolved(e.to_string()))?;
    msg.answers
        .iter()
        .find_map(|r| match &r.data {
            RData::A(a) => Some(SocketAddr::new(IpAddr::V4(a.0), pz.api.port)),
            _ => None,
        })
        .ok_or_else(|| unresolved(format!("no A record at {resolver}")))
}

/// One request on its own connection (PowerDNS's web server closes it after each answer
/// anyway): (status, body). hyper's low-level HTTP/1 client, no pool and no proxy.
async fn call(
    pz: &PdnsZone,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), ApiFailure> {
    let lost = |e: hyper::Error| {
        if e.is_parse() || e.is_parse_status() || e.is_incomplete_message() {
            ApiFailure::Malformed(format!("not an HTTP answer: {e}"))
        } else {
            ApiFailure::Unreachable(e.to_string())
        }
    };
    let tcp = TcpStream::connect(api_addr(pz).await?)
        .await
        .map_err(|e| ApiFailure::Unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(lost)?;
    // The connection's task ends when `send` is dropped or the server closes.
    tokio::spawn(conn);
    let host = if pz.api.host.contains(':') {
        format!("[{}]:{}", pz.api.host, pz.api.port)
    } else {
        format!("{}:{}", pz.api.host, pz.api.port)
    };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", pz.api.prefix))
        .header(header::HOST, host)
        .header("x-api-key", pz.key.0.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close")
        .header(
            header::USER_AGENT,
            concat!("certbridge/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    // Header values were checked when the options were read; the error never shows the key.
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|_| ApiFailure::Malformed("the request could not be built".into()))?;
    let resp = send.send_request(req).await.map_err(lost)?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                ApiFailure::Malformed(format!("an answer over {MAX_BODY} bytes"))
            } else {
                ApiFailure::Unreachable(format!("reading the answer: {e}"))
            }
        })?
        .to_bytes();
    Ok((status, body))
}

/// Turns a non-success answer into its failure (PowerDNS's `{"error": ...}` kept).
fn refusal(status: u16, body: &[u8], missing_zone: bool) -> ApiFailure {
    match status {
        s @ (401 | 403) => ApiFailure::Unauthorized(s),
        404 if missing_zone => ApiFailure::NoZone,
        s => {
            let error = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(body);
                    let t: String = text.chars().take(300).collect();
                    if t.trim().is_empty() {
                        "no reason given".to_owned()
                    } else {
                        t
                    }
                });
            ApiFailure::Refused { status: s, error }
        }
    }
}

fn zone_path(pz: &PdnsZone, origin: &DomainName) -> String {
    // Zone ids are the zone's name with its trailing dot; a DomainName holds only letters,
    // digits, `-` and `_`, nothing to escape.
    format!("/api/v1/servers/{}/zones/{}", pz.server_id, origin.fqdn())
}

async fn within<T>(
    deadline: Instant,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, ApiFailure>>,
) -> Result<T, ApiFailure> {
    tokio::time::timeout_at(deadline, f)
        .await
        .map_err(|_| ApiFailure::Timeout(what))?
}

/// Reads the zone's TXT RRsets.
async fn read(pz: &PdnsZone, origin: &DomainName) -> Result<TxtRrsets, ApiFailure> {
    let (status, body) = call(pz, Method::GET, &zone_path(pz, origin), None).await?;
    if !(200..300).contains(&status) {
        return Err(refusal(status, &body, true));
    }
    let doc: ZoneDoc = serde_json::from_slice(&body)
        .map_err(|e| ApiFailure::Malformed(format!("the zone document: {e}")))?;
    let mut out = TxtRrsets::new();
    for rr in doc.rrsets {
        if rr.rtype != "TXT" {
            continue;
        }
        let Ok(owner) = DomainName::parse(rr.name.trim_end_matches('.')) else {
            continue;
        };
        out.entry(owner).or_default().extend(rr.records);
    }
    Ok(out)
}

impl Backend for PdnsZone {
    fn method(&self) -> &'static str {
        "powerdns"
    }
    fn target(&self) -> String {
        format!("{} server_id {}", self.api, self.server_id)
    }
    fn ttl(&self) -> u32 {
        self.ttl
    }
    fn servers(&self) -> Servers {
        match &self.nameservers {
            Some(list) => Servers::Listed(list.clone()),
            None => Servers::ZoneNs,
        }
    }
    async fn read(&self, zone: &DomainName, deadline: Instant) -> Result<Snapshot, PublishError> {
        let rrsets = within(deadline, "the zone's GET", read(self, zone))
            .await
            .map_err(|f| api_error(zone, f))?;
        Ok(Snapshot {
            values: current_values(&rrsets),
            ages: None,
        })
    }
    /// One PATCH: PowerDNS applies all of its RRsets in one transaction or none. The RRsets
    /// are read again first (under the zone's lock), since a REPLACE carries each owner's
    /// whole record set, other records included.
    async fn apply(&self, change: &ChangeSet, deadline: Instant) -> Result<Applied, PublishError> {
        if !change.check_mode && !change.is_empty() {
            let zone = &change.zone;
            let rrsets = within(deadline, "the zone's GET", read(self, zone))
                .await
                .map_err(|f| api_error(zone, f))?;
            let body = patch_body(&rrsets, change).to_string().into_bytes();
            let path = zone_path(self, zone);
            within(deadline, "the PATCH of RRsets", async {
                let (status, text) = call(self, Method::PATCH, &path, Some(body)).await?;
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(refusal(status, &text, true))
                }
            })
            .await
            .map_err(|f| api_error(zone, f))?;
        }
        Ok(Applied {
            changed: !change.is_empty(),
            ..Applied::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    #[test]
    fn txt_content_round_trips_powerdns_quoting() {
        assert_eq!(unquote(r#""abc""#).as_deref(), Some("abc"));
        assert_eq!(unquote(r#""a" "b""#).as_deref(), Some("ab"));
        assert_eq!(
            unquote(r#""say \"hi\" \\ \065""#).as_deref(),
            Some(r#"say "hi" \ A"#)
        );
        assert_eq!(unquote("abc"), None, "PowerDNS stores TXT content quoted");
        assert_eq!(unquote(r#""open"#), None);
        for v in ["plain", r#"q"u\o"#, "v=spf1 -all"] {
            assert_eq!(unquote(&quote(v)).as_deref(), Some(v));
        }
    }

    #[test]
    fn api_url_takes_http_and_nothing_else() {
        let u = ApiUrl::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 8081, "")
        );
        let u = ApiUrl::parse("http://[::1]/pdns/api/v1/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("::1", 80, "/pdns")
        );
        assert_eq!(u.to_string(), "http://[::1]:80/pdns");
        let e = ApiUrl::parse("https://dns.example.org").unwrap_err();
        assert!(
            e.contains("https is not supported") && e.contains("tunnel"),
            "{e}"
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:8081",
            "http://",
            "http://u:p@h/",
            "http://h/?q",
            "http://h:0",
            "http://h:x",
        ] {
            assert!(ApiUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patch_replaces_whole_sets_keeps_foreign_records_and_deletes_empty_owners() {
        let (a, b) = (dn("a.z.test"), dn("b.z.test"));
        let rec = |c: &str, disabled| PdnsRecord {
            content: c.into(),
            disabled,
        };
        let rrsets = TxtRrsets::from([
            (
                a.clone(),
                vec![
                    rec(r#""old""#, false),
                    rec(r#""v=spf1" " -all""#, false),
                    rec(r#""off""#, true),
                ],
            ),
            (b.clone(), vec![rec(r#""gone""#, false)]),
        ]);
        let change = ChangeSet {
            zone: dn("z.test"),
            ttl: 60,
            add: BTreeMap::from([(a.clone(), BTreeSet::from(["new".to_string()]))]),
            remove: BTreeMap::from([
                (a.clone(), BTreeSet::from(["old".to_string()])),
                (b.clone(), BTreeSet::from(["gone".to_string()])),
            ]),
            now: 0,
            check_mode: false,
        };
        let body = patch_body(&rrsets, &change);
        let sets = body["rrsets"].as_array().unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0]["name"], "a.z.test.");
        assert_eq!(sets[0]["changetype"], "REPLACE");
        assert_eq!(sets[0]["ttl"], 60);
        let contents: Vec<&str> = sets[0]["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents, [r#""v=spf1" " -all""#, r#""off""#, r#""new""#]);
        assert_eq!(sets[1]["changetype"], "DELETE");
        assert_eq!(sets[1]["name"], "b.z.test.");
    }

    #[test]
    fn refusals_keep_powerdns_error_text_and_name_the_key_problem() {
        let f = refusal(
            422,
            br#"{"error": "RRset x. IN TXT: Conflicts with pre-existing RRset"}"#,
            true,
        );
        assert!(
            f.to_string().contains("HTTP 422")
                && f.to_string().contains("Conflicts with pre-existing RRset"),
            "{f}"
        );
        assert_eq!(
            refusal(401, b"Unauthorized", true),
            ApiFailure::Unauthorized(401)
        );
        assert_eq!(refusal(404, b"", true), ApiFailure::NoZone);
        assert!(format!("{:?}", ApiKey::new("s3cret").unwrap())
            .find("s3cret")
            .is_none());
    }
}
