//! Rendering: records sorted into deterministic, injection-safe zone-file text.

use super::*;

/// One line of the zone, ready to sort.
pub(super) struct Line {
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

pub(super) fn owner_key(relative: &str) -> Vec<u8> {
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
pub(super) fn prepare(
    spec: &ZoneSpec,
    records: &[Record],
) -> Result<(Vec<Line>, usize), ZoneError> {
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
