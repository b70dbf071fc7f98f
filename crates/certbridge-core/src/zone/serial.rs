//! SOA serials: date-based, monotonic, read back from an existing file.

use super::*;

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm): UTC without timezone files.
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
