//! Reading back a zone file this library wrote: records and their publication times.

use super::*;

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
pub(super) fn split_comment(rest: &str) -> (&str, Option<&str>) {
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
pub(super) fn unquote_chunks(rdata: &str) -> Result<String, String> {
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
