//! The record model: zone and SOA specs, record types, checked values (TXT, CAA), records.

use super::*;

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
    pub(super) fn soa_names(&self) -> Result<(DomainName, DomainName), ZoneError> {
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
pub(super) fn quoted_string_problem(value: &str) -> Option<String> {
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
