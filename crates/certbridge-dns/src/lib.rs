//! certbridge-dns: follow `_acme-challenge` CNAMEs, publish TXT values, verify every
//! authoritative server answers them. No ACME client and no TLS: `acme_txt_publish` links
//! only this and certbridge-core.
//! - [`transport`]: queries (UDP, TCP on truncation), TSIG-signed AXFR and UPDATE.
//! - [`chase`]: CNAME chains to the owner in a managed zone; a zone's servers.
//! - [`rfc2136`]: the dynamic-update method and its first-published state file.
//! - [`verify`]: polling every authoritative server until it serves every value.
//! - [`zonefile`]: the zone-file method over certbridge-core's zone library; [`loaded`]: did
//!   the server load the file it was told to reload.
//! - [`backend`]: the interface every method implements; [`zones`]: the shared per-zone
//!   step over it (locking, ageing, check mode); [`zoneopts`]: zone options tagged by method.
//! - [`exec`]: the method that hands the change set to a command of the user's.
//! - [`powerdns`]: the PowerDNS HTTP API method.
//! - [`options`], [`publish`]: the `acme_txt_publish` module's options and the step itself.

pub mod backend;
pub mod chase;
pub mod error;
pub mod exec;
pub mod loaded;
pub mod options;
pub mod powerdns;
pub mod publish;
pub mod rfc2136;
pub mod transport;
pub mod verify;
pub mod zonefile;
pub mod zoneopts;
pub mod zones;

pub use error::{DnsError, PublishError};
