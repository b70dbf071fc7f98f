//! The support layer of certbridge's integration tests (tests/*.rs): compiled once, used by
//! every test binary with `use certbridge_testsupport::*;` (or `as support`).
//!
//! - [`module`]: run a module binary the way Ansible does and read its JSON reply.
//! - [`bed`]: start and stop a test bed (Pebble + BIND, optionally Knot, on loopback), restart
//!   its Pebble.
//! - [`host`]: one managed host (cert root, log, acme_request/acme_finalize arguments).
//! - [`dns`]: `dig`, TSIG-signed `nsupdate`, publishing dns-01 values in the bed.
//! - [`tree`]: snapshots of a directory tree, to compare before and after a run.
//! - [`certset`]: the service-facing files of a cert dir, checked to be one matching set.
//! - [`ca_proxy`]: the fault-injecting ACME proxy in front of Pebble.
//! - [`connect_proxy`]: a minimal HTTP CONNECT proxy that counts its tunnels.

pub mod bed;
pub mod ca_proxy;
pub mod certset;
pub mod connect_proxy;
pub mod dns;
pub mod host;
pub mod module;
pub mod raw_http;
pub mod tree;

pub use bed::{
    parse_env, ports_in_flux, repo_root, restart_pebble, stop_pebble, BedTsig, PebbleCommand,
    PortsGuard, RunningPebble, Testbed, PORTS_IN_FLUX,
};
pub use ca_proxy::{CaProxy, Endpoint, Fault, FaultAction, ProxyConfig, Window};
pub use certset::{read_set, service_files, CertSet, Seen};
pub use connect_proxy::ConnectProxy;
pub use dns::{dig, dig_status, nsupdate, nsupdate_signed, publish};
pub use host::Host;
pub use module::{
    merged, module_bin, ok, run_module, run_module_at, run_module_env, ModuleRun, MODULES,
};
pub use raw_http::{raw_get, raw_request, RawAnswer};
