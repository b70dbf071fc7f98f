//! Errors of the DNS client layer (queries, zone transfers, updates) and of publishing.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What went wrong talking to one DNS server. Every variant names the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    #[error("{server}: no answer to {what} before the deadline")]
    Timeout { server: SocketAddr, what: String },
    #[error("{server}: cannot reach it for {what}: {detail}")]
    Unreachable {
        server: SocketAddr,
        what: String,
        detail: String,
    },
    #[error("{server}: answered {what} with {rcode}")]
    Rcode {
        server: SocketAddr,
        what: String,
        rcode: String,
    },
    #[error("{server}: refused the TSIG key `{key}` for {what} ({error}): check tsig_name, tsig_algorithm and tsig_secret against the server's key")]
    TsigRejected {
        server: SocketAddr,
        key: String,
        what: String,
        error: String,
    },
    #[error(
        "{server}: the answer to {what} is not correctly signed with TSIG key `{key}`: {detail}"
    )]
    TsigVerify {
        server: SocketAddr,
        key: String,
        what: String,
        detail: String,
    },
    #[error("{server}: malformed answer to {what}: {detail}")]
    Malformed {
        server: SocketAddr,
        what: String,
        detail: String,
    },
    #[error("cannot build the DNS message for {what}: {detail}")]
    Encode { what: String, detail: String },
}

/// A failure of the publish step as a whole (configuration, zone files, commands, locks).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("zone {zone}: {source}")]
    Lock {
        zone: String,
        source: certbridge_core::fsutil::LockError,
    },
    #[error("zone {zone}: cannot read {path}: {detail}")]
    ReadZone {
        zone: String,
        path: PathBuf,
        detail: String,
    },
    #[error("zone {zone}: {detail}")]
    WriteZone { zone: String, detail: String },
    #[error("zone {zone}: `{command}` failed: {output}")]
    Command {
        zone: String,
        command: String,
        output: String,
    },
    #[error("zone {zone}: `{command}` did not finish before the deadline")]
    CommandTimeout { zone: String, command: String },
    #[error("zone {zone} takes dynamic updates, so `rndc reload` would refuse it: set `freeze: true` to write it between `rndc freeze` and `rndc thaw`, or use `method: rfc2136`")]
    DynamicZone { zone: String },
    #[error("zone {zone}: state file {path}: {detail}")]
    State {
        zone: String,
        path: PathBuf,
        detail: String,
    },
    #[error("zone {zone}: {owner} would carry {count} TXT records, more than a server holds at one name (max_records_per_type {limit}: BIND 9.18.28 and later refuse to load a zone file with more than `max-records-per-type`, 100 by default, and keep serving the old zone); the zone file is unchanged. Fewer values per name: give each name its own label (_acme-challenge.<name> CNAME <name>.<signing zone>), or let the pulse defer certs (letsencrypt_max_values_per_name)")]
    TooManyRecords {
        zone: String,
        owner: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "zone {zone}: the server did not load the new zone file (serial {rendered}): {detail}"
    )]
    NotLoaded {
        zone: String,
        rendered: u32,
        detail: String,
    },
    #[error("zone {zone}: exec `{command}` {detail}")]
    Exec {
        zone: String,
        command: String,
        detail: String,
    },
    /// An HTTP DNS API failed (the method and the API's URL, never its key, are added by
    /// `zones::ZoneBackend::publish`).
    #[error("zone {zone}: {detail}")]
    Api { zone: String, detail: String },
    #[error("zone {zone}: cannot find its authoritative servers: {detail}")]
    Servers { zone: String, detail: String },
}
