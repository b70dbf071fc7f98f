//! Zone-file rendering: deterministic, injection-safe zone files with a monotonic SOA serial,
//! written atomically. The library behind the `zone_render` module and the signing zones that
//! `acme_txt_publish` renders.
//!
//! Split by concern: `record` (the record model), `render` (zone-file text), `serial` (SOA
//! serials), `readback` (a written file read back), `write` (validated atomic write under the
//! zone's lock) and `module` (the zone_render module); all re-exported here.
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

mod module;
mod readback;
mod record;
mod render;
mod serial;
#[cfg(test)]
mod tests;
mod write;

pub use module::*;
pub use readback::*;
pub use record::*;
pub use render::*;
pub use serial::*;
pub use write::*;
