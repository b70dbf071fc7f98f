//! Zone-file rendering: deterministic, injection-safe zone files with a monotonic SOA serial,
//! written atomically. The library behind the `zone_render` module and the signing zones that
//! `acme_txt_publish` renders.
//!
//! # Use from other modules
//! ```no_run
//! use certbridge_core::names::DomainName;
//! use certbridge_core::zone::{self, Record, WriteOptions, ZoneSpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let origin = DomainName::parse("signing.test")?;
//! let spec = ZoneSpec::new(origin.clone(), vec![DomainName::parse("ns1.signing.test")?]);
//! // What is published now, and since when (a file this library wrote earlier):
//! let published = zone::read_rendered("/var/lib/bind/signing.test.zone".as_ref())?;
//! let mut records = vec![
//!     Record::txt(DomainName::parse("acme.signing.test")?, "DRwHgzN8...")?.with_published(1_700_000_000),
//! ];
//! records.push(Record::parse("ns1", "A", "127.0.0.1", None, &origin)?);
//! let outcome = zone::apply(&spec, &records, &WriteOptions::new("/var/lib/bind/signing.test.zone"))?;
//! println!("changed={} serial={}", outcome.changed, outcome.serial);
//! # let _ = published;
//! # Ok(()) }
//! ```
//!
//! # The file format
//! One record per line, tab-separated: relative owner (`@` for the apex), TTL, `IN`, type,
//! data, and optionally `; certbridge published=<unix seconds>`. The SOA is on one line. Every
//! value is checked when a [`Record`] is built, so no value can carry zone syntax (`;`,
//! `$INCLUDE`, parentheses, newlines) outside a quoted string, and quoted strings cannot
//! contain `"` or `\`.

use crate::fsutil::{self, Dir, EntryKind, FileAttrs, Lock, LockError, Refused};
use crate::names::{DomainName, NameError};
use crate::protocol::limits::DAY;
use crate::protocol::{coerce, Failure, Invocation, Reply};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, Read as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default TTL of every record (`ttl` option).
pub const DEFAULT_TTL: u32 = 60;
/// SOA refresh: secondaries also get NOTIFY, so an hourly poll is only the fallback.
pub const DEFAULT_REFRESH: u32 = 3600;
/// SOA retry after a failed refresh: 10 minutes.
pub const DEFAULT_RETRY: u32 = 600;
/// SOA expire: two weeks (RFC 1912 suggests 2-4 weeks).
pub const DEFAULT_EXPIRE: u32 = 1_209_600;
/// SOA minimum (negative-caching TTL): short, so a new `_acme-challenge` name is seen soon.
pub const DEFAULT_MINIMUM: u32 = 60;
/// Largest TTL DNS allows (RFC 2181 section 8).
pub const MAX_TTL: u32 = 2_147_483_647;
/// Longest TXT value accepted: its strings (255 bytes each plus a length byte) must fit the
/// 65,535-byte RDATA limit.
pub const MAX_TXT_BYTES: usize = 65_000;
/// Longest single character-string in a TXT record.
pub const TXT_CHUNK_BYTES: usize = 255;
/// Lines kept of each side of a diff.
pub const DIFF_MAX_LINES: usize = 1000;
/// Every file this library writes starts with this; [`parse_rendered`] insists on it.
pub const HEADER_PREFIX: &str = "; certbridge zone file for ";
/// The comment that carries when a record was first published.
const PUBLISHED_PREFIX: &str = "certbridge published=";
/// Longest validator output kept in an error.
const VALIDATOR_OUTPUT_MAX: usize = 8 * 1024;

/// Everything that can go wrong rendering, reading or writing a zone.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A name (origin, name server, owner, target, SOA field) breaks the DNS name rules.
    #[error("{what}: {source}")]
    BadName { what: String, source: NameError },
    /// An owner name given as absolute lies outside the zone.
    #[error("record `{name}` is outside the zone {origin}: give a name relative to the origin, `@` for the apex, or an absolute name ending in `.{origin}`")]
    OutsideOrigin { name: String, origin: String },
    /// A record type this library does not render.
    #[error(
        "record `{name}`: unsupported type `{rtype}`; supported: A, AAAA, CNAME, NS, TXT, CAA"
    )]
    UnknownType { name: String, rtype: String },
    /// A record value that is malformed or could inject zone syntax.
    #[error("record `{name}` {rtype}: {reason}")]
    BadValue {
        name: String,
        rtype: RecordType,
        reason: String,
    },
    /// A TTL or SOA timer outside 0..=2^31-1.
    #[error("{what}: {value} is out of range (0 to 2147483647)")]
    BadTtl { what: String, value: u64 },
    /// The zone has no name server.
    #[error("`ns` must list at least one name server")]
    NoNameservers,
    /// A CNAME shares its owner with other data (or sits at the apex).
    #[error(
        "`{owner}` has a CNAME and other records (or is the zone apex): a CNAME must stand alone"
    )]
    CnameConflict { owner: String },
    /// Records of one RRset (owner + type) with different TTLs.
    #[error("`{owner}` {rtype}: records of one owner and type must share one TTL (found {first} and {second})")]
    TtlMismatch {
        owner: String,
        rtype: RecordType,
        first: u32,
        second: u32,
    },
    /// `soa.rname` is neither a mailbox domain name nor a simple e-mail address.
    #[error("soa.rname: `{0}` is not a mailbox (give `hostmaster.example.org` or `hostmaster@example.org`, with no dot before the `@`)")]
    BadRname(String),
    /// The `validate` command is empty, unbalanced or lacks `%s`.
    #[error("validate: {0}")]
    BadValidate(String),
    /// The `mode` option is not an octal mode.
    #[error("mode: {0}")]
    BadMode(String),
    /// `owner`/`group` name not found (without NSS only /etc/passwd and /etc/group are read).
    #[error("{what} `{name}`: {source}")]
    UnknownAccount {
        what: &'static str,
        name: String,
        source: io::Error,
    },
    /// The zone path is relative.
    #[error("path `{0}` must be absolute")]
    RelativePath(PathBuf),
    /// The zone path names a directory (refused before any lock file is made beside it).
    #[error("path `{0}` is a directory: give the path of the zone file in it (e.g. `{0}/<origin>.zone`)")]
    IsDirectory(PathBuf),
    /// The zone path is a symbolic link and `follow_symlink` is off.
    #[error("path `{0}` is a symbolic link, which is not followed: whoever can write its directory could point it at any file, which would be replaced (and shown by diff). Replace the link by the zone file, or set `follow_symlink: true` if the link and its directory are writable only by root")]
    Symlink(PathBuf),
    /// The zone path is a FIFO, socket or device.
    #[error("path `{path}` is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    /// The zone file's directory (or, with `follow_symlink`, its link target's) cannot be opened.
    #[error("cannot open the directory of {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The existing zone file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// The zone file could not be written (old file left in place).
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// Mode or ownership of an unchanged file could not be set.
    #[error("cannot set the mode or owner of {path}: {source}")]
    Attrs { path: PathBuf, source: io::Error },
    /// The validator program could not be started.
    #[error("validate: cannot run `{program}`: {source}")]
    ValidatorSpawn { program: String, source: io::Error },
    /// The validator refused the candidate file; the old file was left in place.
    #[error(
        "validate: `{}` failed ({status}); the old zone file was left in place. Output:\n{output}",
        shell_words(argv)
    )]
    ValidationFailed {
        argv: Vec<String>,
        status: String,
        code: Option<i32>,
        output: String,
    },
    /// Another run holds the zone's lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// [`parse_rendered`] was given a file this library did not write.
    #[error("not a zone file written by certbridge (it lacks the `{HEADER_PREFIX}` header)")]
    NotRendered,
    /// A line of a certbridge-written file does not parse (it was edited by hand).
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: String },
    /// An error about the `index`-th record of the module's `records` option.
    #[error("records[{index}]: {source}")]
    InRecord {
        index: usize,
        source: Box<ZoneError>,
    },
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            shlex::try_quote(a)
                .map(|q| q.into_owned())
                .unwrap_or_else(|_| a.clone())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_ttl(what: impl FnOnce() -> String, value: u64) -> Result<u32, ZoneError> {
    match u32::try_from(value) {
        Ok(v) if v <= MAX_TTL => Ok(v),
        _ => Err(ZoneError::BadTtl {
            what: what(),
            value,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The zone and its records

/// The SOA fields; `mname` defaults to the first name server, `rname` to `hostmaster.<origin>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaSpec {
    pub mname: Option<DomainName>,
    pub rname: Option<DomainName>,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

impl Default for SoaSpec {
    fn default() -> Self {
        SoaSpec {
            mname: None,
            rname: None,
            refresh: DEFAULT_REFRESH,
            retry: DEFAULT_RETRY,
            expire: DEFAULT_EXPIRE,
            minimum: DEFAULT_MINIMUM,
        }
    }
}

/// Parses an SOA `rname`: a domain name (`hostmaster.example.org`) or an e-mail address whose
/// local part has no dot (`hostmaster@example.org`).
pub fn parse_rname(input: &str) -> Result<DomainName, ZoneError> {
    let as_name = match input.split_once('@') {
        Some((local, domain)) if !local.contains('.') && !local.is_empty() => {
            format!("{local}.{domain}")
        }
        Some(_) => return Err(ZoneError::BadRname(input.into())),
        None => input.to_owned(),
    };
    DomainName::parse(&as_name).map_err(|_| ZoneError::BadRname(input.into()))
}

/// A zone: its origin, apex name servers, default TTL and SOA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    pub origin: DomainName,
    pub ns: Vec<DomainName>,
    pub ttl: u32,
    pub soa: SoaSpec,
}

impl ZoneSpec {
    /// A zone with the default TTL and SOA timers.
    pub fn new(origin: DomainName, ns: Vec<DomainName>) -> Self {
        ZoneSpec {
            origin,
            ns,
            ttl: DEFAULT_TTL,
            soa: SoaSpec::default(),
        }
    }

    /// Checks the spec; returns the effective SOA `mname` and `rname`.
    fn soa_names(&self) -> Result<(DomainName, DomainName), ZoneError> {
        let first_ns = self.ns.first().ok_or(ZoneError::NoNameservers)?;
        check_ttl(|| "ttl".into(), self.ttl.into())?;
        for (what, v) in [
            ("soa.refresh", self.soa.refresh),
            ("soa.retry", self.soa.retry),
            ("soa.expire", self.soa.expire),
            ("soa.minimum", self.soa.minimum),
        ] {
            check_ttl(|| what.into(), v.into())?;
        }
        let mname = self.soa.mname.clone().unwrap_or_else(|| first_ns.clone());
        let rname = match &self.soa.rname {
            Some(r) => r.clone(),
            None => DomainName::parse(&format!("hostmaster.{}", self.origin.as_str())).map_err(
                |source| ZoneError::BadName {
                    what: "soa.rname (default hostmaster.<origin>)".into(),
                    source,
                },
            )?,
        };
        Ok((mname, rname))
    }
}

/// The record types this library renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    Ns,
    A,
    Aaaa,
    Cname,
    Txt,
    Caa,
}

impl RecordType {
    /// Case-insensitive; `None` for a type this library does not render.
    pub fn parse(s: &str) -> Option<RecordType> {
        Some(match s.to_ascii_uppercase().as_str() {
            "NS" => RecordType::Ns,
            "A" => RecordType::A,
            "AAAA" => RecordType::Aaaa,
            "CNAME" => RecordType::Cname,
            "TXT" => RecordType::Txt,
            "CAA" => RecordType::Caa,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Ns => "NS",
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Txt => "TXT",
            RecordType::Caa => "CAA",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string cannot go inside a quoted zone-file string, if it cannot.
fn quoted_string_problem(value: &str) -> Option<String> {
    value.chars().find_map(|c| match c {
        '"' => Some("contains `\"`, which would end the quoted string".to_owned()),
        '\\' => Some("contains `\\`, which zone files treat as an escape".to_owned()),
        '\n' | '\r' => Some("contains a line break".to_owned()),
        c if c.is_control() => Some(format!("contains the control character {c:?}")),
        _ => None,
    })
}

/// A TXT value that can be written inside quotes as is: no control characters, line breaks,
/// `"` or `\`, at most [`MAX_TXT_BYTES`]. Rendered split into strings of at most 255 bytes
/// (at character boundaries); [`parse_rendered`] joins them again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxtValue(String);

impl TxtValue {
    /// The error is the reason only; callers name the record.
    pub fn parse(value: &str) -> Result<TxtValue, String> {
        if let Some(problem) = quoted_string_problem(value) {
            return Err(problem);
        }
        if value.len() > MAX_TXT_BYTES {
            return Err(format!(
                "is {} bytes long; at most {MAX_TXT_BYTES} fit in one TXT record",
                value.len()
            ));
        }
        Ok(TxtValue(value.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The value cut into strings of at most 255 bytes, never inside a character.
    pub fn chunks(&self) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.0.len() / TXT_CHUNK_BYTES + 1);
        let mut rest = self.0.as_str();
        loop {
            if rest.len() <= TXT_CHUNK_BYTES {
                out.push(rest);
                return out;
            }
            let mut cut = TXT_CHUNK_BYTES;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            out.push(head);
            rest = tail;
        }
    }
}

/// A CAA record: `flags tag "value"` (RFC 8659), parsed strictly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaaValue {
    pub flags: u8,
    /// Lower-case ASCII letters and digits, 1 to 15 characters.
    pub tag: String,
    pub value: String,
}

impl CaaValue {
    /// Parses `0 issue "letsencrypt.org"` (the value may also be given unquoted when it has no
    /// spaces). The error is the reason only.
    pub fn parse(input: &str) -> Result<CaaValue, String> {
        const FORM: &str = "expected `flags tag \"value\"`, e.g. `0 issue \"letsencrypt.org\"`";
        let (flags, rest) = input.split_once(' ').ok_or_else(|| FORM.to_owned())?;
        let flags: u8 = flags
            .parse()
            .map_err(|_| format!("flags `{flags}` is not a number from 0 to 255; {FORM}"))?;
        let (tag, value) = rest
            .trim_start_matches(' ')
            .split_once(' ')
            .ok_or_else(|| FORM.to_owned())?;
        if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "tag `{tag}` must be 1 to 15 ASCII letters or digits; {FORM}"
            ));
        }
        let value = value.trim_start_matches(' ');
        let inner = match value.strip_prefix('"') {
            Some(v) => v
                .strip_suffix('"')
                .ok_or_else(|| format!("the value must end with its closing `\"`; {FORM}"))?,
            None => {
                if value.is_empty() || value.contains([' ', '\t', '"', ';', '(', ')']) {
                    return Err(format!(
                        "an unquoted value must be one word without `;` or parentheses; {FORM}"
                    ));
                }
                value
            }
        };
        if let Some(problem) = quoted_string_problem(inner) {
            return Err(format!("the value {problem}"));
        }
        if inner.len() > MAX_TXT_BYTES {
            return Err("the value is too long".into());
        }
        Ok(CaaValue {
            flags,
            tag: tag.to_ascii_lowercase(),
            value: inner.to_owned(),
        })
    }
}

/// The data of a record, parsed: nothing here can carry zone syntax.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Always an absolute name.
    Cname(DomainName),
    /// Always an absolute name.
    Ns(DomainName),
    Txt(TxtValue),
    Caa(CaaValue),
}

impl RData {
    /// Parses `value` as data of type `rtype`. CNAME and NS targets are absolute names (a
    /// trailing dot is optional). The error is the reason only.
    pub fn parse(rtype: RecordType, value: &str) -> Result<RData, String> {
        Ok(match rtype {
            RecordType::A => RData::A(
                value
                    .parse()
                    .map_err(|_| format!("`{value}` is not an IPv4 address"))?,
            ),
            RecordType::Aaaa => RData::Aaaa(
                value
                    .parse()
                    .map_err(|_| format!("`{value}` is not an IPv6 address"))?,
            ),
            RecordType::Cname => RData::Cname(DomainName::parse(value).map_err(|e| e.to_string())?),
            RecordType::Ns => RData::Ns(DomainName::parse(value).map_err(|e| e.to_string())?),
            RecordType::Txt => RData::Txt(TxtValue::parse(value)?),
            RecordType::Caa => RData::Caa(CaaValue::parse(value)?),
        })
    }
    pub fn rtype(&self) -> RecordType {
        match self {
            RData::A(_) => RecordType::A,
            RData::Aaaa(_) => RecordType::Aaaa,
            RData::Cname(_) => RecordType::Cname,
            RData::Ns(_) => RecordType::Ns,
            RData::Txt(_) => RecordType::Txt,
            RData::Caa(_) => RecordType::Caa,
        }
    }
    /// The data as it appears in the zone file.
    pub fn to_zone_text(&self) -> String {
        let mut s = String::new();
        self.write_zone_text(&mut s);
        s
    }
    fn write_zone_text(&self, out: &mut String) {
        match self {
            RData::A(ip) => {
                let _ = write!(out, "{ip}");
            }
            RData::Aaaa(ip) => {
                let _ = write!(out, "{ip}");
            }
            RData::Cname(n) | RData::Ns(n) => {
                out.push_str(n.as_str());
                out.push('.');
            }
            RData::Txt(t) => {
                for (i, chunk) in t.chunks().into_iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push('"');
                    out.push_str(chunk);
                    out.push('"');
                }
            }
            RData::Caa(c) => {
                let _ = write!(out, "{} {} \"{}\"", c.flags, c.tag, c.value);
            }
        }
    }
}

/// Resolves a record name against `origin`: `@` is the apex, a name ending in `.` is absolute
/// (and must lie inside the zone), anything else is relative to the origin.
pub fn resolve_owner(name: &str, origin: &DomainName) -> Result<DomainName, ZoneError> {
    let bad = |source| ZoneError::BadName {
        what: format!("record `{name}`"),
        source,
    };
    if name == "@" {
        return Ok(origin.clone());
    }
    if name.ends_with('.') {
        let owner = DomainName::parse(name).map_err(bad)?;
        if !owner.is_subdomain_of(origin) {
            return Err(ZoneError::OutsideOrigin {
                name: name.into(),
                origin: origin.fqdn(),
            });
        }
        return Ok(owner);
    }
    // Check the relative part alone first, so errors quote what the user wrote.
    let relative = DomainName::parse(name).map_err(bad)?;
    if origin.as_str().is_empty() {
        return Ok(relative);
    }
    DomainName::parse(&format!("{}.{}", relative.as_str(), origin.as_str())).map_err(bad)
}

/// One resource record. `ttl: None` takes the zone's TTL; `published` (unix seconds) is
/// written as a trailing `; certbridge published=<n>` comment and read back by
/// [`parse_rendered`], so a caller can remember when a value first went out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// Absolute; must lie inside the zone.
    pub owner: DomainName,
    pub ttl: Option<u32>,
    pub data: RData,
    pub published: Option<u64>,
}

impl Record {
    pub fn new(owner: DomainName, data: RData) -> Record {
        Record {
            owner,
            ttl: None,
            data,
            published: None,
        }
    }

    /// A TXT record at an absolute owner name.
    pub fn txt(owner: DomainName, value: &str) -> Result<Record, ZoneError> {
        let data = TxtValue::parse(value).map_err(|reason| ZoneError::BadValue {
            name: owner.fqdn(),
            rtype: RecordType::Txt,
            reason,
        })?;
        Ok(Record::new(owner, RData::Txt(data)))
    }

    /// Parses a record as users write it: `name` relative to `origin` (`@`, relative, or
    /// absolute with a trailing dot), `rtype` case-insensitive, `value` in zone-file
    /// presentation (TXT without quotes). Errors name the record.
    pub fn parse(
        name: &str,
        rtype: &str,
        value: &str,
        ttl: Option<u64>,
        origin: &DomainName,
    ) -> Result<Record, ZoneError> {
        let owner = resolve_owner(name, origin)?;
        let rtype_parsed = RecordType::parse(rtype).ok_or_else(|| ZoneError::UnknownType {
            name: name.into(),
            rtype: rtype.into(),
        })?;
        let data = RData::parse(rtype_parsed, value).map_err(|reason| ZoneError::BadValue {
            name: name.into(),
            rtype: rtype_parsed,
            reason,
        })?;
        let ttl = ttl
            .map(|t| check_ttl(|| format!("record `{name}` {rtype_parsed}: ttl"), t))
            .transpose()?;
        Ok(Record {
            owner,
            ttl,
            data,
            published: None,
        })
    }

    pub fn with_ttl(mut self, ttl: u32) -> Record {
        self.ttl = Some(ttl);
        self
    }

    pub fn with_published(mut self, unix_seconds: u64) -> Record {
        self.published = Some(unix_seconds);
        self
    }

    pub fn rtype(&self) -> RecordType {
        self.data.rtype()
    }

    /// The TXT value, for TXT records.
    pub fn txt_value(&self) -> Option<&str> {
        match &self.data {
            RData::Txt(t) => Some(t.as_str()),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// One line of the zone, ready to sort.
struct Line {
    /// The owner's labels, right to left, NUL-separated: DNS canonical order, apex first.
    key: Vec<u8>,
    rtype: RecordType,
    rdata: String,
    owner: String,
    ttl: u32,
    published: Option<u64>,
    from_user: bool,
}

/// A rendered zone and what went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub serial: u32,
    /// Records written from the caller's list (duplicates removed; SOA and `ns` not counted).
    pub records: usize,
    /// Caller records dropped as duplicates (same owner, type and data).
    pub duplicates_removed: usize,
    /// Where the serial's digits are in `text`.
    serial_at: (usize, usize),
}

impl Rendered {
    /// Replaces the serial in the text (the rest of the zone is unchanged).
    pub fn set_serial(&mut self, serial: u32) {
        let digits = serial.to_string();
        self.text
            .replace_range(self.serial_at.0..self.serial_at.1, &digits);
        self.serial_at.1 = self.serial_at.0 + digits.len();
        self.serial = serial;
    }
}

fn owner_key(relative: &str) -> Vec<u8> {
    if relative == "@" {
        return Vec::new();
    }
    let mut key = Vec::with_capacity(relative.len());
    for (i, label) in relative.rsplit('.').enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(label.as_bytes());
    }
    key
}

/// Checks, sorts and de-duplicates the records into zone lines.
fn prepare(spec: &ZoneSpec, records: &[Record]) -> Result<(Vec<Line>, usize), ZoneError> {
    let apex_ns: Vec<Record> = spec
        .ns
        .iter()
        .map(|n| Record::new(spec.origin.clone(), RData::Ns(n.clone())))
        .collect();
    let mut lines = Vec::with_capacity(records.len() + apex_ns.len());
    for (rec, from_user) in records
        .iter()
        .map(|r| (r, true))
        .chain(apex_ns.iter().map(|r| (r, false)))
    {
        let owner =
            rec.owner
                .relative_to(&spec.origin)
                .ok_or_else(|| ZoneError::OutsideOrigin {
                    name: rec.owner.fqdn(),
                    origin: spec.origin.fqdn(),
                })?;
        let ttl = match rec.ttl {
            Some(t) => check_ttl(|| format!("record `{}` ttl", rec.owner.fqdn()), t.into())?,
            None => spec.ttl,
        };
        lines.push(Line {
            key: owner_key(&owner),
            rtype: rec.rtype(),
            rdata: rec.data.to_zone_text(),
            owner,
            ttl,
            published: rec.published,
            from_user,
        });
    }
    lines.sort_unstable_by(|a, b| {
        (&a.key, a.rtype, &a.rdata)
            .cmp(&(&b.key, b.rtype, &b.rdata))
            .then(b.from_user.cmp(&a.from_user))
    });
    // Merge duplicates: the earliest known publication time wins.
    let mut merged: Vec<Line> = Vec::with_capacity(lines.len());
    for line in lines {
        if let Some(last) = merged.last_mut() {
            if last.key == line.key && last.rtype == line.rtype && last.rdata == line.rdata {
                if last.ttl != line.ttl {
                    return Err(ZoneError::TtlMismatch {
                        owner: line.owner,
                        rtype: line.rtype,
                        first: last.ttl,
                        second: line.ttl,
                    });
                }
                last.published = match (last.published, line.published) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                last.from_user |= line.from_user;
                continue;
            }
        }
        merged.push(line);
    }
    // RRsets share one TTL; a CNAME stands alone and never at the apex.
    for pair in merged.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.key == b.key {
            if a.rtype == b.rtype && a.ttl != b.ttl {
                return Err(ZoneError::TtlMismatch {
                    owner: b.owner.clone(),
                    rtype: b.rtype,
                    first: a.ttl,
                    second: b.ttl,
                });
            }
            if a.rtype == RecordType::Cname || b.rtype == RecordType::Cname {
                return Err(ZoneError::CnameConflict {
                    owner: b.owner.clone(),
                });
            }
        }
    }
    if let Some(l) = merged
        .iter()
        .find(|l| l.key.is_empty() && l.rtype == RecordType::Cname)
    {
        return Err(ZoneError::CnameConflict {
            owner: l.owner.clone(),
        });
    }
    let written = merged.iter().filter(|l| l.from_user).count();
    Ok((merged, records.len() - written))
}

/// Renders the zone with all counts; see [`render`].
pub fn render_zone(
    spec: &ZoneSpec,
    records: &[Record],
    serial: u32,
) -> Result<Rendered, ZoneError> {
    let (mname, rname) = spec.soa_names()?;
    let (lines, duplicates_removed) = prepare(spec, records)?;
    let body_len: usize = lines
        .iter()
        .map(|l| l.owner.len() + l.rdata.len() + 24)
        .sum();
    let mut text = String::with_capacity(body_len + 512);
    let origin = spec.origin.fqdn();
    let _ = writeln!(
        text,
        "{HEADER_PREFIX}{origin} (rendered by certbridge; local edits are replaced)"
    );
    let _ = writeln!(text, "$ORIGIN {origin}");
    let _ = writeln!(text, "$TTL {}", spec.ttl);
    let _ = write!(
        text,
        "@\t{}\tIN\tSOA\t{} {} ",
        spec.ttl,
        mname.fqdn(),
        rname.fqdn()
    );
    let serial_start = text.len();
    let _ = write!(text, "{serial}");
    let serial_end = text.len();
    let soa = &spec.soa;
    let _ = writeln!(
        text,
        " {} {} {} {}",
        soa.refresh, soa.retry, soa.expire, soa.minimum
    );
    let mut records_written = 0;
    for l in &lines {
        records_written += usize::from(l.from_user);
        let _ = write!(text, "{}\t{}\tIN\t{}\t{}", l.owner, l.ttl, l.rtype, l.rdata);
        if let Some(p) = l.published {
            let _ = write!(text, "\t; {PUBLISHED_PREFIX}{p}");
        }
        text.push('\n');
    }
    Ok(Rendered {
        text,
        serial,
        records: records_written,
        duplicates_removed,
        serial_at: (serial_start, serial_end),
    })
}

/// Renders the zone file text: header, `$ORIGIN`, `$TTL`, SOA, then the apex NS records and
/// `records`, sorted (owner in DNS order, type, data) with duplicates removed. The same input
/// always gives the same bytes.
pub fn render(spec: &ZoneSpec, records: &[Record], serial: u32) -> Result<String, ZoneError> {
    render_zone(spec, records, serial).map(|r| r.text)
}

// ---------------------------------------------------------------------------------------------
// Serials

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm): UTC without timezone files.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYYMMDD00` for the UTC date of `now`; `None` before 1970 or past year 42949.
pub fn date_serial(now: SystemTime) -> Option<u32> {
    let secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).ok()?);
    let serial = y.checked_mul(1_000_000)? + i64::from(m) * 10_000 + i64::from(d) * 100;
    u32::try_from(serial).ok()
}

/// The serial after `old`: the date-based `YYYYMMDD00` of `now` when that is greater,
/// else `old + 1` (wrapping as RFC 1982 allows). Without an old serial, the date-based one.
pub fn next_serial(old: Option<u32>, now: SystemTime) -> u32 {
    let date = date_serial(now);
    match (old, date) {
        (None, Some(d)) => d,
        (None, None) => 1,
        (Some(o), Some(d)) if d > o => d,
        (Some(o), _) => o.wrapping_add(1),
    }
}

/// Finds the SOA serial in any zone-file text (not only ours): comments, quotes and
/// parenthesised multi-line records are understood. `None` when there is no readable SOA.
pub fn parse_serial(text: &str) -> Option<u32> {
    fn soa_serial(tokens: &[String]) -> Option<u32> {
        if tokens.first().is_some_and(|t| t.starts_with('$')) {
            return None;
        }
        let at = tokens.iter().position(|t| t.eq_ignore_ascii_case("SOA"))?;
        tokens.get(at + 3)?.parse().ok()
    }
    let mut tokens: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let (mut quoted, mut escape, mut comment) = (false, false, false);
    let mut depth = 0u32;
    let flush = |tokens: &mut Vec<String>, cur: &mut String, in_token: &mut bool| {
        if *in_token {
            tokens.push(std::mem::take(cur));
            *in_token = false;
        }
    };
    for c in text.chars() {
        if comment {
            if c != '\n' {
                continue;
            }
            comment = false;
        }
        if escape {
            cur.push(c);
            escape = false;
            continue;
        }
        if quoted {
            match c {
                '"' => quoted = false,
                '\\' => escape = true,
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            '\\' => {
                escape = true;
                in_token = true;
            }
            '"' => {
                quoted = true;
                in_token = true;
            }
            ';' => {
                flush(&mut tokens, &mut cur, &mut in_token);
                comment = true;
            }
            '(' => {
                flush(&mut tokens, &mut cur, &mut in_token);
                depth += 1;
            }
            ')' => {
                flush(&mut tokens, &mut cur, &mut in_token);
                depth = depth.saturating_sub(1);
            }
            '\n' => {
                flush(&mut tokens, &mut cur, &mut in_token);
                if depth == 0 {
                    if let Some(s) = soa_serial(&tokens) {
                        return Some(s);
                    }
                    tokens.clear();
                }
            }
            c if c.is_whitespace() => flush(&mut tokens, &mut cur, &mut in_token),
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    flush(&mut tokens, &mut cur, &mut in_token);
    soa_serial(&tokens)
}

/// The SOA serial of the zone file at `path`: `Ok(None)` when the file does not exist or has
/// no readable SOA (then a fresh serial is used). A symbolic link is not followed.
pub fn read_serial(path: &Path) -> Result<Option<u32>, ZoneError> {
    Ok(ZoneFile::open(path, false)?
        .read()?
        .and_then(|old| parse_serial(&old.text)))
}

// ---------------------------------------------------------------------------------------------
// Reading back what we wrote

/// A zone file this library wrote, parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedZone {
    pub origin: DomainName,
    pub serial: u32,
    /// Every record but the SOA (the apex NS records included), in file order, each with its
    /// TTL and `published` time when the file carried one.
    pub records: Vec<Record>,
}

impl RenderedZone {
    /// The TXT records: `(owner, value, published)`.
    pub fn txt(&self) -> impl Iterator<Item = (&DomainName, &str, Option<u64>)> {
        self.records
            .iter()
            .filter_map(|r| r.txt_value().map(|v| (&r.owner, v, r.published)))
    }
}

/// Splits `rdata ; comment` at the first `;` outside quotes.
fn split_comment(rest: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return (rest[..i].trim_end(), Some(rest[i + 1..].trim())),
            _ => {}
        }
    }
    (rest.trim_end(), None)
}

/// Joins `"a" "b"` back into `ab`; strict: only quoted strings separated by single spaces.
fn unquote_chunks(rdata: &str) -> Result<String, String> {
    let mut out = String::with_capacity(rdata.len());
    let mut rest = rdata;
    loop {
        let body = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("TXT data `{rdata}` is not a list of quoted strings"))?;
        let end = body
            .find('"')
            .ok_or_else(|| format!("TXT data `{rdata}` has an unterminated string"))?;
        out.push_str(&body[..end]);
        rest = &body[end + 1..];
        if rest.is_empty() {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("TXT data `{rdata}` is not a list of quoted strings"))?;
    }
}

/// Parses a zone file this library rendered (it must start with the certbridge header); a
/// hand-edited line that no longer parses is an error naming the line.
pub fn parse_rendered(text: &str) -> Result<RenderedZone, ZoneError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, first)) if first.starts_with(HEADER_PREFIX) => {}
        _ => return Err(ZoneError::NotRendered),
    }
    let mut origin: Option<DomainName> = None;
    let mut serial = None;
    let mut records = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let err = |reason: String| ZoneError::Parse {
            line: line_no,
            reason,
        };
        if line.trim().is_empty() || line.starts_with(';') || line.starts_with("$TTL ") {
            continue;
        }
        if let Some(o) = line.strip_prefix("$ORIGIN ") {
            origin = Some(DomainName::parse(o).map_err(|e| err(e.to_string()))?);
            continue;
        }
        let origin = origin
            .as_ref()
            .ok_or_else(|| err("a record before `$ORIGIN`".into()))?;
        let fields: Vec<&str> = line.splitn(5, '\t').collect();
        let [owner, ttl, class, rtype, rest] = fields[..] else {
            return Err(err(
                "expected `owner<TAB>ttl<TAB>IN<TAB>type<TAB>data`".into()
            ));
        };
        if class != "IN" {
            return Err(err(format!("class `{class}` is not IN")));
        }
        let ttl: u64 = ttl
            .parse()
            .map_err(|_| err(format!("TTL `{ttl}` is not a number")))?;
        let (rdata, comment) = split_comment(rest);
        if rtype == "SOA" {
            let s = rdata.split(' ').nth(2).and_then(|s| s.parse().ok());
            serial = Some(s.ok_or_else(|| err("the SOA has no serial".into()))?);
            continue;
        }
        let value = if rtype == "TXT" {
            unquote_chunks(rdata).map_err(err)?
        } else {
            rdata.to_owned()
        };
        let mut record = Record::parse(owner, rtype, &value, Some(ttl), origin)
            .map_err(|e| err(e.to_string()))?;
        record.published = comment
            .and_then(|c| c.strip_prefix(PUBLISHED_PREFIX))
            .and_then(|n| n.parse().ok());
        records.push(record);
    }
    Ok(RenderedZone {
        origin: origin.ok_or_else(|| ZoneError::Parse {
            line: 0,
            reason: "no `$ORIGIN`".into(),
        })?,
        serial: serial.ok_or_else(|| ZoneError::Parse {
            line: 0,
            reason: "no SOA".into(),
        })?,
        records,
    })
}

/// Reads and parses a zone file this library rendered; `Ok(None)` when it does not exist.
/// A symbolic link is not followed (see [`ZoneFile`]).
pub fn read_rendered(path: &Path) -> Result<Option<RenderedZone>, ZoneError> {
    ZoneFile::open(path, false)?.read_rendered()
}

// ---------------------------------------------------------------------------------------------
// Validation and writing

/// A command run on the candidate file before it replaces the zone; `%s` in any argument is
/// replaced by the candidate's path (the argument stays one argument). Never run by a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    argv: Vec<String>,
}

impl Validator {
    /// Splits `command` the way a POSIX shell would (quotes, backslashes), without a shell.
    pub fn parse_command(command: &str) -> Result<Validator, ZoneError> {
        let argv = shlex::split(command).ok_or_else(|| {
            ZoneError::BadValidate(format!(
                "`{command}` has an unbalanced quote or a trailing `\\`"
            ))
        })?;
        Validator::from_argv(argv)
    }

    /// An argument vector as is.
    pub fn from_argv(argv: Vec<String>) -> Result<Validator, ZoneError> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(ZoneError::BadValidate("the command is empty".into()));
        }
        if !argv.iter().any(|a| a.contains("%s")) {
            return Err(ZoneError::BadValidate(format!(
                "`{}` must contain `%s`, which is replaced by the candidate file",
                shell_words(&argv)
            )));
        }
        Ok(Validator { argv })
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Runs the validator on `candidate`; a non-zero exit is [`ZoneError::ValidationFailed`]
    /// with its output (stdout, then stderr; capped at 8 KiB).
    pub fn run(&self, candidate: &Path) -> Result<(), ZoneError> {
        let substitute = |arg: &str| -> OsString {
            let mut out = OsString::new();
            for (i, part) in arg.split("%s").enumerate() {
                if i > 0 {
                    out.push(candidate.as_os_str());
                }
                out.push(part);
            }
            out
        };
        let argv: Vec<OsString> = self.argv.iter().map(|a| substitute(a)).collect();
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ZoneError::ValidatorSpawn {
                program: self.argv[0].clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if text.len() > VALIDATOR_OUTPUT_MAX {
            let mut cut = VALIDATOR_OUTPUT_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[output truncated]");
        }
        Err(ZoneError::ValidationFailed {
            argv: argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            status: output.status.to_string(),
            code: output.status.code(),
            output: text.trim_end().to_owned(),
        })
    }
}

/// How and where [`apply`] writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub path: PathBuf,
    pub validate: Option<Validator>,
    /// Mode and ownership to set; unset fields keep the existing file's (new files: 0644).
    pub attrs: FileAttrs,
    /// Compute everything, write nothing.
    pub check_mode: bool,
    /// The clock for the date-based serial (tests inject one).
    pub now: SystemTime,
    /// Serialize writers on `.<file>.lock` beside the zone, waiting at most this long. `None`
    /// when the caller holds its own lock (a second lock on the same file from the same
    /// process would deadlock).
    pub lock_timeout: Option<Duration>,
    /// When `path` is a symbolic link, write its target (which keeps its owner and mode unless
    /// `attrs` sets them) instead of refusing; diffs then do not show the target's content.
    pub follow_symlink: bool,
}

impl WriteOptions {
    /// Defaults: no validator, keep attributes, write, the system clock, a 30 s lock wait.
    pub fn new(path: impl Into<PathBuf>) -> WriteOptions {
        WriteOptions {
            path: path.into(),
            validate: None,
            attrs: FileAttrs::default(),
            check_mode: false,
            now: SystemTime::now(),
            lock_timeout: Some(Duration::from_secs(30)),
            follow_symlink: false,
        }
    }
}

/// What [`apply`] did (or, in check mode, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneOutcome {
    /// Content, mode or ownership changed.
    pub changed: bool,
    /// The content (other than the serial) changed, so a new serial was written.
    pub content_changed: bool,
    /// The serial now in the file (in check mode: that would be).
    pub serial: u32,
    /// Caller records written (see [`Rendered::records`]).
    pub records: usize,
    pub duplicates_removed: usize,
    /// The file's text before (`None`: there was no file). Not for display when
    /// `followed_symlink`: use [`ZoneOutcome::diff`].
    pub before: Option<String>,
    /// The file's text after.
    pub after: String,
    /// The path is a symbolic link that `follow_symlink` let us follow.
    pub followed_symlink: bool,
}

impl ZoneOutcome {
    /// The Ansible diff (`before`/`after`, each capped at [`DIFF_MAX_LINES`]), headed `path`.
    /// The old content of a followed link's target is not shown: the link may point at a
    /// file the user running the module may not read.
    pub fn diff(&self, path: &str) -> Value {
        let before = if self.followed_symlink && self.before.is_some() {
            format!("[not shown: {path} is a symbolic link (follow_symlink), and the content of its target is not disclosed]\n")
        } else {
            cap_lines(self.before.as_deref().unwrap_or(""), DIFF_MAX_LINES)
        };
        json!({
            "before": before,
            "after": cap_lines(&self.after, DIFF_MAX_LINES),
            "before_header": path,
            "after_header": path,
        })
    }
}

/// A zone file's place, checked once: the directory of its path is opened once, and its lock,
/// the old file, the temp file and the rename are all reached relative to that handle; the
/// file name is never followed as a symbolic link (a zone directory is commonly writable by
/// the DNS server's user, who could otherwise aim root's write, chown and diff at any file).
/// A link is refused ([`ZoneError::Symlink`]) unless `follow_symlink`: then its target's
/// directory is opened once the same way, and the lock stays beside the link.
#[derive(Debug)]
pub struct ZoneFile {
    /// The path as configured (what messages and diffs show).
    path: PathBuf,
    /// The path's directory; `None` when it does not exist (check mode reads nothing).
    dir: Option<Dir>,
    name: OsString,
    /// The link's final target, when `follow_symlink` followed one.
    target: Option<(Dir, OsString)>,
}

/// The zone file as read: its text, and the file itself (its metadata and the handle that
/// mode and owner are corrected through).
struct Existing {
    text: String,
    meta: fs::Metadata,
    file: fs::File,
}

/// Links followed at most, as the kernel allows.
const MAX_LINKS: usize = 40;

impl ZoneFile {
    /// Checks the zone path: refused when it is a directory, a FIFO or the like, or a
    /// symbolic link (unless `follow_symlink`); a file that does not exist yet is fine.
    pub fn open(path: &Path, follow_symlink: bool) -> Result<ZoneFile, ZoneError> {
        let Some(name) = path.file_name() else {
            return Err(ZoneError::IsDirectory(path.to_path_buf()));
        };
        let open_err = |source| ZoneError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut zf = ZoneFile {
            path: path.to_path_buf(),
            dir: None,
            name: name.to_owned(),
            target: None,
        };
        let dir = match Dir::open_parent(path) {
            Ok((dir, _)) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(zf),
            Err(e) => return Err(open_err(e)),
        };
        let kind = dir.entry(name).map_err(open_err)?;
        zf.dir = Some(dir);
        match kind {
            None | Some(EntryKind::File) => Ok(zf),
            Some(EntryKind::Symlink) if follow_symlink => {
                zf.target = Some(zf.resolve()?);
                Ok(zf)
            }
            Some(kind) => Err(zf.refused(kind)),
        }
    }

    /// The error for a zone path that is not (or no longer) a file we may write.
    fn refused(&self, kind: EntryKind) -> ZoneError {
        let path = self.path.clone();
        match kind {
            EntryKind::Dir => ZoneError::IsDirectory(path),
            EntryKind::Symlink => ZoneError::Symlink(path),
            EntryKind::Other(what) => ZoneError::NotAFile { path, what },
            EntryKind::File => ZoneError::NotAFile {
                path,
                what: "a regular file",
            },
        }
    }

    /// Follows the link at the path to a name that is not a link (it may not exist yet),
    /// opening each directory on the way once.
    fn resolve(&self) -> Result<(Dir, OsString), ZoneError> {
        let open_err = |source| ZoneError::Open {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .dir
            .as_ref()
            .expect("resolve after the directory was opened");
        let mut link = dir.read_link(&self.name).map_err(open_err)?;
        let mut base = dir.path().to_path_buf();
        for _ in 0..MAX_LINKS {
            let at = base.join(&link);
            let Some(name) = at.file_name() else {
                return Err(ZoneError::IsDirectory(self.path.clone()));
            };
            let (next, name) = (Dir::open_parent(&at).map_err(open_err)?.0, name.to_owned());
            match next.entry(&name).map_err(open_err)? {
                None | Some(EntryKind::File) => return Ok((next, name)),
                Some(EntryKind::Symlink) => {
                    link = next.read_link(&name).map_err(open_err)?;
                    base = next.path().to_path_buf();
                }
                Some(kind) => return Err(self.refused(kind)),
            }
        }
        Err(open_err(io::Error::other(format!(
            "more than {MAX_LINKS} symbolic links to follow"
        ))))
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path is a symbolic link that is followed.
    pub fn is_followed_link(&self) -> bool {
        self.target.is_some()
    }

    /// Where the zone file itself is: the path's directory, or the link target's.
    fn location(&self) -> Option<(&Dir, &OsStr)> {
        match &self.target {
            Some((dir, name)) => Some((dir, name)),
            None => self.dir.as_ref().map(|d| (d, self.name.as_os_str())),
        }
    }

    /// Takes the lock `.<file>.lock` beside the path (see [`lock_path`]), waiting up to
    /// `timeout`; the lock file is never followed as a link.
    pub fn lock(&self, timeout: Duration) -> Result<Lock, LockError> {
        let lock_name = lock_path(&self.path)
            .file_name()
            .map(OsStr::to_owned)
            .unwrap_or_default();
        match &self.dir {
            Some(dir) => Lock::acquire_in(dir, &lock_name, timeout),
            None => Err(LockError::Io {
                path: lock_path(&self.path),
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }

    /// Reads the file (not through a link that appeared since [`ZoneFile::open`]).
    fn read(&self) -> Result<Option<Existing>, ZoneError> {
        let Some((dir, name)) = self.location() else {
            return Ok(None);
        };
        let read_err = |source| ZoneError::Read {
            path: self.path.clone(),
            source,
        };
        let mut file = match dir.open_read(name) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(match fsutil::refusal(&e) {
                    Some(Refused::Symlink) => self.refused(EntryKind::Symlink),
                    Some(Refused::NotRegular("a directory")) => self.refused(EntryKind::Dir),
                    Some(Refused::NotRegular(what)) => self.refused(EntryKind::Other(what)),
                    _ => read_err(e),
                })
            }
        };
        let meta = file.metadata().map_err(read_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_err)?;
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(Some(Existing { text, meta, file }))
    }

    /// Reads and parses the file, which this library rendered; `Ok(None)` when it does not
    /// exist.
    pub fn read_rendered(&self) -> Result<Option<RenderedZone>, ZoneError> {
        match self.read()? {
            None => Ok(None),
            Some(old) => parse_rendered(&old.text).map(Some),
        }
    }

    /// Replaces the file with `text` (see [`fsutil::Dir::replace`]); unset `attrs` keep
    /// `old`'s.
    fn write(
        &self,
        text: &str,
        attrs: &FileAttrs,
        old: Option<&Existing>,
        validator: Option<&Validator>,
    ) -> Result<(), ZoneError> {
        let write_err = |source| ZoneError::Write {
            path: self.path.clone(),
            source,
        };
        let Some((dir, name)) = self.location() else {
            return Err(write_err(io::Error::from(io::ErrorKind::NotFound)));
        };
        // The replace hook speaks io::Error; keep the validator's full report aside.
        let refusal = std::cell::RefCell::new(None);
        let check = |candidate: &Path| -> io::Result<()> {
            match validator.map(|v| v.run(candidate)) {
                Some(Err(e)) => {
                    let msg = e.to_string();
                    *refusal.borrow_mut() = Some(e);
                    Err(io::Error::other(msg))
                }
                _ => Ok(()),
            }
        };
        let hook: Option<fsutil::ValidateFn<'_>> = validator.map(|_| &check as _);
        dir.replace(name, text.as_bytes(), attrs, old.map(|o| &o.meta), hook)
            .map_err(|source| refusal.take().unwrap_or_else(|| write_err(source)))
    }
}

/// The lock file that serializes writers of `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "zone".into());
    path.with_file_name(format!(".{name}.lock"))
}

/// Renders the zone and writes it when it differs from the file other than by serial: the
/// serial becomes [`next_serial`] of the file's serial; the file is replaced atomically after
/// `validate` accepted the candidate (a refusal leaves the old file). Unchanged content leaves
/// the file untouched (mode/owner are still corrected when `attrs` asks for others). The path
/// is checked by [`ZoneFile::open`] before the lock is taken.
pub fn apply(
    spec: &ZoneSpec,
    records: &[Record],
    opts: &WriteOptions,
) -> Result<ZoneOutcome, ZoneError> {
    if !opts.path.is_absolute() {
        return Err(ZoneError::RelativePath(opts.path.clone()));
    }
    let rendered = render_zone(spec, records, 0)?;
    let file = ZoneFile::open(&opts.path, opts.follow_symlink)?;
    apply_rendered(&file, rendered, opts)
}

/// As [`apply`], on a zone file the caller opened (and may have locked and read already: one
/// directory handle for the whole run). `opts.path` and `opts.follow_symlink` are those
/// `file` was opened with.
pub fn apply_to(
    file: &ZoneFile,
    spec: &ZoneSpec,
    records: &[Record],
    opts: &WriteOptions,
) -> Result<ZoneOutcome, ZoneError> {
    let rendered = render_zone(spec, records, 0)?;
    apply_rendered(file, rendered, opts)
}

fn apply_rendered(
    file: &ZoneFile,
    mut rendered: Rendered,
    opts: &WriteOptions,
) -> Result<ZoneOutcome, ZoneError> {
    let _lock = match (opts.check_mode, opts.lock_timeout) {
        (false, Some(timeout)) => Some(file.lock(timeout)?),
        _ => None,
    };
    crate::crash_point!("zone_locked");
    let existing = file.read()?;
    let old_serial = existing.as_ref().and_then(|old| parse_serial(&old.text));
    let content_same = match (&existing, old_serial) {
        (Some(old), Some(serial)) => {
            rendered.set_serial(serial);
            old.text == rendered.text
        }
        _ => false,
    };
    if !content_same {
        rendered.set_serial(next_serial(old_serial, opts.now));
    }
    let attrs_differ = existing.as_ref().is_some_and(|old| {
        let meta = &old.meta;
        opts.attrs
            .mode
            .is_some_and(|m| meta.permissions().mode() & 0o7777 != m)
            || opts.attrs.uid.is_some_and(|u| meta.uid() != u)
            || opts.attrs.gid.is_some_and(|g| meta.gid() != g)
    });
    if !opts.check_mode {
        if !content_same {
            file.write(
                &rendered.text,
                &opts.attrs,
                existing.as_ref(),
                opts.validate.as_ref(),
            )?;
            crate::crash_point!("zone_written");
        } else if let Some(old) = existing.as_ref().filter(|_| attrs_differ) {
            fix_attrs(file.path(), &old.file, &opts.attrs)?;
        }
    }
    Ok(ZoneOutcome {
        changed: !content_same || attrs_differ,
        content_changed: !content_same,
        serial: rendered.serial,
        records: rendered.records,
        duplicates_removed: rendered.duplicates_removed,
        before: existing.map(|old| old.text),
        after: rendered.text,
        followed_symlink: file.is_followed_link(),
    })
}

/// Sets mode and owner through the handle the file was read by (never by name: the name
/// could be a link by now).
fn fix_attrs(path: &Path, file: &fs::File, attrs: &FileAttrs) -> Result<(), ZoneError> {
    let err = |source| ZoneError::Attrs {
        path: path.to_path_buf(),
        source,
    };
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(file, attrs.uid, attrs.gid).map_err(err)?;
    }
    // After chown, which clears set-id bits.
    if let Some(mode) = attrs.mode {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
    }
    Ok(())
}

/// The first `max` lines of `text`, with a note of how many were left out.
pub fn cap_lines(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut lines = text.split_inclusive('\n');
    for line in lines.by_ref().take(max) {
        out.push_str(line);
    }
    let rest = lines.count();
    if rest > 0 {
        let _ = writeln!(out, "[{rest} more lines not shown]");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The zone_render module

fn nullable_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => coerce::uint(v).map(Some).map_err(serde::de::Error::custom),
    }
}

fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("expected a string")),
    }
}

fn validate_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Validator::parse_command(&s)
            .map(|v| Some(v.argv))
            .map_err(|e| D::Error::custom(e.to_string())),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(D::Error::custom(
                    "expected a command string or a list of strings",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(D::Error::custom(
            "expected a command string or a list of strings",
        )),
    }
}

/// Parses a file mode with the modules' one mode parser ([`crate::protocol::parse_mode`]:
/// octal strings, numbers as Ansible takes them, no set-id or sticky bits).
pub fn parse_mode(v: &Value) -> Result<u32, ZoneError> {
    crate::protocol::parse_mode(v).map_err(ZoneError::BadMode)
}

/// The `soa` option.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaOptions {
    #[serde(default)]
    pub mname: Option<DomainName>,
    #[serde(default)]
    pub rname: Option<String>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub refresh: Option<u64>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub retry: Option<u64>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub expire: Option<u64>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub minimum: Option<u64>,
}

/// One entry of the `records` option.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(deserialize_with = "string_like")]
    pub value: String,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub ttl: Option<u64>,
}

/// The `zone_render` module's options (see `modules/zone_render.yml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRenderOptions {
    pub path: PathBuf,
    pub origin: DomainName,
    pub ns: Vec<DomainName>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub ttl: Option<u64>,
    #[serde(default)]
    pub soa: Option<SoaOptions>,
    #[serde(default)]
    pub records: Option<Vec<RecordOptions>>,
    #[serde(default, deserialize_with = "validate_option")]
    pub validate: Option<Vec<String>>,
    #[serde(default, deserialize_with = "coerce::opt_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Seconds to wait for the zone's lock (0 to one day).
    #[serde(default, deserialize_with = "coerce::opt_seconds::<_, 0, DAY>")]
    pub lock_timeout: Option<u64>,
    #[serde(default, deserialize_with = "coerce::opt_boolean")]
    pub follow_symlink: Option<bool>,
}

impl ZoneRenderOptions {
    /// Turns the options into a zone, records and write options; every input error is found
    /// here, before the zone file is touched.
    pub fn into_request(
        self,
        check_mode: bool,
    ) -> Result<(ZoneSpec, Vec<Record>, WriteOptions), ZoneError> {
        if !self.path.is_absolute() {
            return Err(ZoneError::RelativePath(self.path));
        }
        // The zone file, its lock and its temp file are made beside it: fit them now.
        if let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) {
            crate::names::check_made_file(dir, &name.to_string_lossy()).map_err(|source| {
                ZoneError::BadName {
                    what: "path".into(),
                    source,
                }
            })?;
        }
        let mut spec = ZoneSpec::new(self.origin, self.ns);
        if let Some(ttl) = self.ttl {
            spec.ttl = check_ttl(|| "ttl".into(), ttl)?;
        }
        if let Some(soa) = self.soa {
            spec.soa.mname = soa.mname;
            spec.soa.rname = soa.rname.as_deref().map(parse_rname).transpose()?;
            for (what, given, field) in [
                ("soa.refresh", soa.refresh, &mut spec.soa.refresh),
                ("soa.retry", soa.retry, &mut spec.soa.retry),
                ("soa.expire", soa.expire, &mut spec.soa.expire),
                ("soa.minimum", soa.minimum, &mut spec.soa.minimum),
            ] {
                if let Some(v) = given {
                    *field = check_ttl(|| what.into(), v)?;
                }
            }
        }
        spec.soa_names()?;
        let records = self
            .records
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(index, r)| {
                Record::parse(&r.name, &r.rtype, &r.value, r.ttl, &spec.origin).map_err(|e| {
                    ZoneError::InRecord {
                        index,
                        source: Box::new(e),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let validate = self.validate.map(Validator::from_argv).transpose()?;
        let uid = self
            .owner
            .map(|name| {
                fsutil::lookup_uid(&name).map_err(|source| ZoneError::UnknownAccount {
                    what: "owner",
                    name,
                    source,
                })
            })
            .transpose()?;
        let gid = self
            .group
            .map(|name| {
                fsutil::lookup_gid(&name).map_err(|source| ZoneError::UnknownAccount {
                    what: "group",
                    name,
                    source,
                })
            })
            .transpose()?;
        let mut write = WriteOptions::new(self.path);
        write.validate = validate;
        write.attrs = FileAttrs {
            mode: self.mode,
            uid,
            gid,
        };
        write.check_mode = check_mode;
        if let Some(t) = self.lock_timeout {
            write.lock_timeout = Some(Duration::from_secs(t));
        }
        write.follow_symlink = self.follow_symlink.unwrap_or(false);
        Ok((spec, records, write))
    }
}

/// The `zone_render` module: options in, Ansible reply out.
pub fn zone_render(opts: ZoneRenderOptions, inv: &Invocation) -> Result<Reply, Failure> {
    let (spec, records, write) = opts.into_request(inv.check_mode)?;
    let path = write.path.display().to_string();
    let outcome = match apply(&spec, &records, &write) {
        Ok(o) => o,
        Err(ZoneError::ValidationFailed {
            argv,
            status,
            code,
            output,
        }) => {
            let err = ZoneError::ValidationFailed {
                argv: argv.clone(),
                status,
                code,
                output: output.clone(),
            };
            return Err(Failure::new(err.to_string())
                .with("path", &path)
                .with("validate_argv", argv)
                .with("validate_rc", code)
                .with("validate_output", output));
        }
        Err(e) => return Err(Failure::new(e.to_string()).with("path", &path)),
    };
    let mut reply = Reply::changed(outcome.changed)
        .with("serial", outcome.serial)
        .with("path", &path)
        .with("records", outcome.records);
    if outcome.duplicates_removed > 0 {
        reply.warn(format!(
            "{} duplicate record(s) removed",
            outcome.duplicates_removed
        ));
    }
    if inv.diff {
        reply.diff = Some(outcome.diff(&path));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn spec() -> ZoneSpec {
        ZoneSpec::new(name("acme.example.net"), vec![name("ns1.example.net.")])
    }

    fn rec(n: &str, t: &str, v: &str) -> Record {
        Record::parse(n, t, v, None, &name("acme.example.net")).unwrap()
    }

    /// 2026-03-14 15:09:26 UTC.
    fn pi_day() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_773_500_966)
    }

    #[test]
    fn renders_header_soa_ns_and_every_type() {
        let text = render(
            &spec(),
            &[
                rec("@", "TXT", "apex value"),
                rec("www", "A", "192.0.2.1"),
                rec("www", "AAAA", "2001:DB8:0:0::1"),
                rec("alias", "CNAME", "www.acme.example.net"),
                rec("sub", "NS", "ns.other.org."),
                rec("@", "CAA", "0 issue \"letsencrypt.org\""),
            ],
            2026031400,
        )
        .unwrap();
        let expected = "; certbridge zone file for acme.example.net. (rendered by certbridge; local edits are replaced)\n\
$ORIGIN acme.example.net.\n\
$TTL 60\n\
@\t60\tIN\tSOA\tns1.example.net. hostmaster.acme.example.net. 2026031400 3600 600 1209600 60\n\
@\t60\tIN\tNS\tns1.example.net.\n\
@\t60\tIN\tTXT\t\"apex value\"\n\
@\t60\tIN\tCAA\t0 issue \"letsencrypt.org\"\n\
alias\t60\tIN\tCNAME\twww.acme.example.net.\n\
sub\t60\tIN\tNS\tns.other.org.\n\
www\t60\tIN\tA\t192.0.2.1\n\
www\t60\tIN\tAAAA\t2001:db8::1\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn rendering_is_deterministic_and_removes_duplicates() {
        let a = vec![
            rec("b", "TXT", "2"),
            rec("a", "TXT", "1"),
            rec("b", "TXT", "1"),
            rec("a", "TXT", "1"),
            rec("x.a", "TXT", "1"),
        ];
        let mut b = a.clone();
        b.reverse();
        let ra = render_zone(&spec(), &a, 1).unwrap();
        let rb = render_zone(&spec(), &b, 1).unwrap();
        assert_eq!(ra.text, rb.text, "input order must not matter");
        assert_eq!(ra.records, 4);
        assert_eq!(ra.duplicates_removed, 1);
        // Owners in DNS order: a parent before its children, labels compared right to left.
        let owners: Vec<&str> = ra
            .text
            .lines()
            .skip(5)
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert_eq!(owners, ["a", "x.a", "b", "b"]);
    }

    #[test]
    fn duplicate_of_an_apex_ns_is_merged() {
        let r = render_zone(&spec(), &[rec("@", "NS", "ns1.example.net")], 1).unwrap();
        assert_eq!(r.text.matches("\tNS\t").count(), 1);
        assert_eq!(r.records, 1);
    }

    #[test]
    fn injection_and_bad_values_are_refused_naming_the_record() {
        let origin = name("acme.example.net");
        let cases = [
            ("www", "TXT", "a\"b"),
            ("www", "TXT", "a\\b"),
            ("www", "TXT", "line\nbreak"),
            ("www", "TXT", "tab\there"),
            ("www", "TXT", "nul\0"),
            ("www", "A", "192.0.2.1 ; $INCLUDE /etc/passwd"),
            ("www", "A", "192.0.2.1\n$INCLUDE /etc/passwd"),
            ("www", "AAAA", "192.0.2.1"),
            ("www", "CNAME", "x.example.org. ; comment"),
            ("www", "CNAME", "x.example.org ( 1"),
            ("www", "NS", "$INCLUDE"),
            ("www", "CAA", "0 issue \"a\" ; x"),
            ("www", "CAA", "0 issue \"a\"b\""),
            ("www", "CAA", "256 issue \"a\""),
            ("www", "CAA", "0 is-sue \"a\""),
            ("www", "CAA", "0 issue a;b"),
            ("www", "CAA", "0 issue \"a\nb\""),
        ];
        for (n, t, v) in cases {
            let e = Record::parse(n, t, v, None, &origin).unwrap_err();
            assert!(
                matches!(e, ZoneError::BadValue { .. }),
                "{t} {v:?} gave {e:?}"
            );
            assert!(e.to_string().contains("record `www`"), "{e}");
        }
        for bad_name in ["$INCLUDE", "a;b", "a b", "(x", "a..b", "x.*", "-a"] {
            let e = Record::parse(bad_name, "TXT", "v", None, &origin).unwrap_err();
            assert!(matches!(e, ZoneError::BadName { .. }), "{bad_name}: {e:?}");
            assert!(e.to_string().contains(bad_name), "{e}");
        }
        let e = Record::parse("www.other.org.", "TXT", "v", None, &origin).unwrap_err();
        assert!(matches!(e, ZoneError::OutsideOrigin { .. }), "{e:?}");
        assert!(e.to_string().contains("www.other.org."), "{e}");
        let e = Record::parse("www", "MX", "10 mx", None, &origin).unwrap_err();
        assert!(e.to_string().contains("unsupported type `MX`"), "{e}");
        let e = Record::parse("www", "TXT", "v", Some(1 << 31), &origin).unwrap_err();
        assert!(matches!(e, ZoneError::BadTtl { .. }), "{e:?}");
    }

    #[test]
    fn harmless_syntax_inside_quotes_is_kept_verbatim() {
        let v = "v=spf1 ; $INCLUDE /etc/passwd ( ) @ *";
        let text = render(&spec(), &[rec("www", "TXT", v)], 1).unwrap();
        assert!(text.contains(&format!("\"{v}\"")), "{text}");
        let back = parse_rendered(&text).unwrap();
        assert_eq!(back.txt().map(|t| t.1).collect::<Vec<_>>(), [v]);
    }

    #[test]
    fn names_resolve_relative_apex_absolute_and_wildcard() {
        let origin = name("acme.example.net");
        assert_eq!(resolve_owner("@", &origin).unwrap(), origin);
        assert_eq!(
            resolve_owner("_acme-challenge.Web01", &origin)
                .unwrap()
                .as_str(),
            "_acme-challenge.web01.acme.example.net"
        );
        assert_eq!(
            resolve_owner("x.acme.example.net.", &origin)
                .unwrap()
                .as_str(),
            "x.acme.example.net"
        );
        assert_eq!(resolve_owner("acme.example.net.", &origin).unwrap(), origin);
        assert_eq!(
            resolve_owner("*", &origin).unwrap().as_str(),
            "*.acme.example.net"
        );
        assert!(resolve_owner("*.x", &origin).is_ok());
        assert!(resolve_owner("x.*", &origin).is_err());
        assert!(resolve_owner(&"a".repeat(64), &origin).is_err());
        let long = vec!["a".repeat(60); 4].join(".");
        assert!(matches!(
            resolve_owner(&long, &origin),
            Err(ZoneError::BadName {
                source: NameError::TooLong { .. },
                ..
            })
        ));
    }

    #[test]
    fn long_txt_values_split_into_255_byte_strings() {
        let v = "x".repeat(600);
        let text = render(&spec(), &[rec("long", "TXT", &v)], 1).unwrap();
        let line = text.lines().find(|l| l.starts_with("long")).unwrap();
        let data = line.split('\t').nth(4).unwrap();
        assert_eq!(
            data,
            format!(
                "\"{}\" \"{}\" \"{}\"",
                "x".repeat(255),
                "x".repeat(255),
                "x".repeat(90)
            )
        );
        // Never inside a multi-byte character.
        let u = format!("{}é{}", "a".repeat(254), "b".repeat(10));
        let t = TxtValue::parse(&u).unwrap();
        assert_eq!(
            t.chunks(),
            [&"a".repeat(254), &format!("é{}", "b".repeat(10))]
        );
        assert_eq!(TxtValue::parse(&"x".repeat(255)).unwrap().chunks().len(), 1);
        assert_eq!(TxtValue::parse("").unwrap().chunks(), [""]);
        assert!(TxtValue::parse(&"x".repeat(MAX_TXT_BYTES + 1)).is_err());
    }

    #[test]
    fn dates_are_utc_without_timezone_files() {
        assert_eq!(date_serial(UNIX_EPOCH), Some(1970010100));
        assert_eq!(date_serial(pi_day()), Some(2026031400));
        // Leap day and the last second of a year.
        assert_eq!(
            date_serial(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            Some(2000022900)
        );
        assert_eq!(
            date_serial(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
            Some(2026123100)
        );
        assert_eq!(date_serial(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    #[test]
    fn serials_only_go_forward() {
        let now = pi_day();
        assert_eq!(next_serial(None, now), 2026031400);
        assert_eq!(next_serial(Some(2026031300), now), 2026031400);
        assert_eq!(next_serial(Some(2026031400), now), 2026031401);
        assert_eq!(next_serial(Some(2026031499), now), 2026031500);
        assert_eq!(next_serial(Some(7), now), 2026031400);
        // A serial ahead of the date (e.g. unix-time serials) only grows by one.
        assert_eq!(next_serial(Some(4_000_000_000), now), 4_000_000_001);
        assert_eq!(next_serial(Some(u32::MAX), now), 0, "RFC 1982 wrap");
        assert_eq!(next_serial(None, UNIX_EPOCH - Duration::from_secs(5)), 1);
    }

    #[test]
    fn serial_is_found_in_foreign_zone_files() {
        let multi = "$TTL 3600 ; default\n; SOA in a comment 99\n@ IN SOA ns1.x. root.x. (\n  2024010203 ; serial\n  3600 600 86400 60 )\nsoa IN A 192.0.2.1\n";
        assert_eq!(parse_serial(multi), Some(2024010203));
        assert_eq!(
            parse_serial("x. 60 IN TXT \"SOA a b 5\"\nx. 60 in soa a. b. 42 1 2 3 4\n"),
            Some(42)
        );
        assert_eq!(parse_serial("garbage\n"), None);
        assert_eq!(parse_serial(""), None);
        let ours = render(&spec(), &[], 2026031405).unwrap();
        assert_eq!(parse_serial(&ours), Some(2026031405));
    }

    #[test]
    fn apply_writes_then_is_idempotent_then_bumps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        let mut opts = WriteOptions::new(&path);
        opts.now = pi_day();
        let first = apply(&spec(), &[rec("a", "TXT", "1")], &opts).unwrap();
        assert!(first.changed && first.before.is_none());
        assert_eq!(first.serial, 2026031400);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let again = apply(&spec(), &[rec("a", "TXT", "1")], &opts).unwrap();
        assert!(!again.changed);
        assert_eq!(again.serial, 2026031400);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let bumped = apply(&spec(), &[rec("a", "TXT", "2")], &opts).unwrap();
        assert!(bumped.changed);
        assert_eq!(bumped.serial, 2026031401);
        // The next day the date wins again.
        opts.now = pi_day() + Duration::from_secs(86_400);
        let next_day = apply(&spec(), &[rec("a", "TXT", "3")], &opts).unwrap();
        assert_eq!(next_day.serial, 2026031500);
        assert_eq!(read_serial(&path).unwrap(), Some(2026031500));
    }

    #[test]
    fn apply_never_goes_back_from_a_foreign_file_and_check_mode_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        fs::write(&path, "@ IN SOA a. b. ( 2030010100 1 2 3 4 )\n").unwrap();
        let mut opts = WriteOptions::new(&path);
        opts.now = pi_day();
        opts.check_mode = true;
        let o = apply(&spec(), &[], &opts).unwrap();
        assert!(o.changed);
        assert_eq!(o.serial, 2030010101);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "@ IN SOA a. b. ( 2030010100 1 2 3 4 )\n"
        );
        assert!(
            !lock_path(&path).exists(),
            "check mode must not even create the lock"
        );
        opts.check_mode = false;
        assert_eq!(apply(&spec(), &[], &opts).unwrap().serial, 2030010101);
    }

    #[test]
    fn refused_validation_keeps_the_old_file_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        fs::write(&path, "old").unwrap();
        let mut opts = WriteOptions::new(&path);
        opts.validate =
            Some(Validator::parse_command("sh -c 'echo refusing \"$1\"; exit 3' sh %s").unwrap());
        let e = apply(&spec(), &[], &opts).unwrap_err();
        let ZoneError::ValidationFailed {
            argv, code, output, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(*code, Some(3));
        assert!(
            output.starts_with("refusing ") && output.contains(".zone.tmp."),
            "{output}"
        );
        assert_eq!(argv[0], "sh");
        assert!(e.to_string().contains("refusing"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
    }

    #[test]
    fn validators_are_argv_with_the_candidate_as_one_argument() {
        let v = Validator::parse_command("check --file=%s 'two words'").unwrap();
        assert_eq!(v.argv(), ["check", "--file=%s", "two words"]);
        assert!(matches!(
            Validator::parse_command("check 'open"),
            Err(ZoneError::BadValidate(_))
        ));
        assert!(matches!(
            Validator::parse_command("check file"),
            Err(ZoneError::BadValidate(_))
        ));
        assert!(matches!(
            Validator::from_argv(vec![]),
            Err(ZoneError::BadValidate(_))
        ));
        // A path with spaces and shell metacharacters stays one argument, unexpanded.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a b;$(touch x)");
        fs::write(&odd, "").unwrap();
        let v = Validator::from_argv(vec!["test".into(), "-f".into(), "%s".into()]).unwrap();
        v.run(&odd).unwrap();
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn published_times_round_trip_and_merge_to_the_earliest() {
        let origin = name("acme.example.net");
        let digest = "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-";
        let records = vec![
            Record::txt(name("acme.example.net"), digest)
                .unwrap()
                .with_published(1_700_000_100),
            Record::txt(name("acme.example.net"), digest)
                .unwrap()
                .with_published(1_700_000_000),
            Record::txt(name("h1.example.org.acme.example.net"), &"y".repeat(300)).unwrap(),
            rec("www", "A", "192.0.2.7").with_ttl(300),
            rec("@", "CAA", "128 iodef \"mailto:x@example.org\""),
        ];
        let text = render(&spec(), &records, 9).unwrap();
        assert!(
            text.contains("\t; certbridge published=1700000000\n"),
            "{text}"
        );
        let back = parse_rendered(&text).unwrap();
        assert_eq!(back.origin, origin);
        assert_eq!(back.serial, 9);
        let txt: Vec<_> = back.txt().collect();
        assert_eq!(txt.len(), 2);
        assert_eq!(txt[0], (&origin, digest, Some(1_700_000_000)));
        assert_eq!(txt[1].1, "y".repeat(300));
        assert_eq!(txt[1].2, None);
        // Rendering what was read back gives the same file.
        assert_eq!(render(&spec(), &back.records, 9).unwrap(), text);
        // A comment that is not ours is ignored, never trusted.
        let edited = text.replace("published=1700000000", "published=soon");
        assert_eq!(
            parse_rendered(&edited).unwrap().txt().next().unwrap().2,
            None
        );
        assert!(matches!(
            parse_rendered("@ IN SOA a. b. 1 2 3 4 5\n"),
            Err(ZoneError::NotRendered)
        ));
        let broken = format!("{text}www\t60\tIN\tA\tnot-an-ip\n");
        assert!(
            matches!(
                parse_rendered(&broken),
                Err(ZoneError::Parse { line: 10, .. })
            ),
            "{:?}",
            parse_rendered(&broken)
        );
    }

    #[test]
    fn zone_level_conflicts_are_refused() {
        let e = render(
            &spec(),
            &[rec("x", "CNAME", "y.org"), rec("x", "TXT", "v")],
            1,
        )
        .unwrap_err();
        assert!(matches!(e, ZoneError::CnameConflict { .. }), "{e:?}");
        let e = render(&spec(), &[rec("@", "CNAME", "y.org")], 1).unwrap_err();
        assert!(matches!(e, ZoneError::CnameConflict { .. }), "{e:?}");
        let e = render(
            &spec(),
            &[rec("x", "TXT", "a").with_ttl(5), rec("x", "TXT", "b")],
            1,
        )
        .unwrap_err();
        assert!(matches!(e, ZoneError::TtlMismatch { .. }), "{e:?}");
        let outside = Record::txt(name("other.org"), "v").unwrap();
        assert!(matches!(
            render(&spec(), &[outside], 1),
            Err(ZoneError::OutsideOrigin { .. })
        ));
        let no_ns = ZoneSpec::new(name("acme.example.net"), vec![]);
        assert!(matches!(
            render(&no_ns, &[], 1),
            Err(ZoneError::NoNameservers)
        ));
    }

    #[test]
    fn soa_names_default_and_accept_mailboxes() {
        assert_eq!(
            parse_rname("hostmaster@example.org").unwrap().as_str(),
            "hostmaster.example.org"
        );
        assert_eq!(
            parse_rname("dns.example.org.").unwrap().as_str(),
            "dns.example.org"
        );
        assert!(parse_rname("first.last@example.org").is_err());
        let mut s = spec();
        s.soa.mname = Some(name("primary.example.net"));
        s.soa.rname = Some(name("dns.example.net"));
        s.soa.minimum = 30;
        let text = render(&s, &[], 5).unwrap();
        assert!(
            text.contains("SOA\tprimary.example.net. dns.example.net. 5 3600 600 1209600 30\n"),
            "{text}"
        );
    }

    #[test]
    fn modes_parse_from_octal_strings_and_integers() {
        assert_eq!(parse_mode(&json!("0644")).unwrap(), 0o644);
        assert_eq!(parse_mode(&json!("640")).unwrap(), 0o640);
        assert_eq!(parse_mode(&json!(420)).unwrap(), 0o644);
        for bad in [
            json!("u=rw"),
            json!("0999"),
            json!("17777"),
            json!(true),
            json!(-1),
            json!(644),
            json!("4755"),
            json!("01777"),
        ] {
            assert!(parse_mode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_bound_lock_timeout_and_refuse_setid_modes() {
        let parse = |extra: Value| {
            let mut v = json!({"path": "/tmp/z.zone", "origin": "a.test", "ns": ["ns1.a.test"]});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let Value::Object(m) = v else { panic!() };
            crate::protocol::parse_options::<ZoneRenderOptions>(m).map_err(|e| e.to_string())
        };
        let e = parse(json!({"lock_timeout": 18446744073709551615u64})).unwrap_err();
        assert!(
            e.starts_with("option `lock_timeout`:") && e.contains("from 0 to 86400"),
            "{e}"
        );
        assert_eq!(
            parse(json!({"lock_timeout": "0"})).unwrap().lock_timeout,
            Some(0)
        );
        let e = parse(json!({"mode": 644})).unwrap_err();
        assert!(
            e.starts_with("option `mode`:") && e.contains("\"0644\""),
            "{e}"
        );
        let e = parse(json!({"mode": "4755"})).unwrap_err();
        assert!(e.contains("set-user-ID"), "{e}");
        assert_eq!(parse(json!({"mode": 420})).unwrap().mode, Some(0o644));
        assert_eq!(parse(json!({"mode": null})).unwrap().mode, None);
    }

    #[test]
    fn diffs_are_capped() {
        let text: String = (0..1500).map(|i| format!("{i}\n")).collect();
        let capped = cap_lines(&text, DIFF_MAX_LINES);
        assert_eq!(capped.lines().count(), 1001);
        assert!(capped.ends_with("[500 more lines not shown]\n"));
        assert_eq!(cap_lines("a\nb\n", 10), "a\nb\n");
    }
}
