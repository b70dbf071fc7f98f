//! certbridge-core: what every certbridge module shares and nothing that needs TLS or async.
//! - [`protocol`]: the Ansible binary-module protocol shim.
//! - [`names`]: domain types parsed once at the edge.
//! - [`zone`]: deterministic zone-file rendering (the library behind `zone_render`).
//! - [`fsutil`]: atomic writes, locks, crash points.
//! - [`webroot`]: http-01 token files in webroots (the library behind `acme_http_publish`).

pub mod fsutil;
pub mod names;
pub mod protocol;
pub mod webroot;
pub mod zone;
