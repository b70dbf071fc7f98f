//! certbridge-group: group certificates: one member of an inventory group orders a cert, every other member gets
//! the same key and chain sealed to its own distribution key, so whoever relays the bundles
//! (the controller) sees only ciphertext. What the `acme_group` module does:
//! - `status` (play 1, every member): make the distribution key once, report its public key
//!   and which issuance of each group cert this member holds;
//! - `seal` (play 3, the member holding the newest issuance): seal it to the members that lack it;
//! - `open` (the delivery play, those members): open, check, and install it through the
//!   store's generation swap, owing the cert's handler as acme_finalize does.
//!
//! The issuer itself orders and finalizes with acme_request and acme_finalize as for any cert.

pub mod bundle;
pub mod distkey;
pub mod seal;

use bundle::{Facts, Generation, Header, Payload, Wire, VERSION};
use certbridge_acme::certinfo;
use certbridge_acme::config::{self, CertSpec, Config, KeyChoice};
use certbridge_acme::store::{gen_link, Meta};
use certbridge_core::fsutil::Dir;
use certbridge_core::protocol::{Failure, Invocation, Reply};
use distkey::{DistKey, PublicKey};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;

/// Default of `timeout` (seconds): how long to wait for the cert root's lock.
pub const DEFAULT_TIMEOUT: u64 = 60;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Status,
    Seal,
    Open,
}

/// One member a bundle is sealed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub host: String,
    pub public_key: String,
    /// The fingerprint of what it holds (nothing is sealed to a member that holds this issuance).
    #[serde(default)]
    pub holds: Option<String>,
}

/// acme_group's own options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOptions {
    pub op: Op,
    /// This member's inventory name (bundles name their recipient by it).
    pub member: String,
    /// The inventory group of each cert of `certs`.
    pub groups: BTreeMap<String, String>,
    /// seal: per cert, the members to seal to.
    #[serde(default)]
    pub recipients: BTreeMap<String, Vec<Recipient>>,
    /// open: per cert, the bundle addressed to this member.
    #[serde(default)]
    pub bundles: BTreeMap<String, String>,
}

pub const OWN_KEYS: &[&str] = &["op", "member", "groups", "recipients", "bundles"];

/// The module: parse and validate everything before touching the disk, then run `op`.
pub fn module(raw: Map<String, Value>, inv: &Invocation) -> Result<Reply, Failure> {
    let (common, own): (config::CommonOptions, GroupOptions) =
        config::split_options(raw, OWN_KEYS).map_err(|e| Failure::new(e.to_string()))?;
    let cfg = config::validate(common, DEFAULT_TIMEOUT).map_err(|e| Failure::new(e.to_string()))?;
    if own.member.trim().is_empty() {
        return Err(Failure::new(
            "member: the inventory name of this host is required",
        ));
    }
    for spec in &cfg.certs {
        if !own.groups.contains_key(spec.name.as_str()) {
            return Err(Failure::new(format!(
                "groups: cert `{}` has no group (every cert given to acme_group is shared by one)",
                spec.name.as_str()
            )));
        }
    }
    for (option, keys) in [
        ("groups", own.groups.keys().collect::<Vec<_>>()),
        ("recipients", own.recipients.keys().collect()),
        ("bundles", own.bundles.keys().collect()),
    ] {
        if let Some(unknown) = keys.into_iter().find(|c| cfg.cert(c).is_none()) {
            return Err(Failure::new(format!(
                "{option}: `{unknown}` is not a declared cert"
            )));
        }
    }
    for (cert, list) in &own.recipients {
        for r in list {
            PublicKey::from_base64(&r.public_key).map_err(|e| {
                Failure::new(format!("recipients: {cert}: {}: public_key is {e}", r.host))
            })?;
        }
    }
    let wires = own
        .bundles
        .iter()
        .map(|(cert, text)| {
            Wire::decode(text)
                .map(|w| (cert.clone(), w))
                .map_err(|e| Failure::new(format!("bundles: {cert}: {e}; nothing was installed")))
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    if inv.check_mode && own.op != Op::Status {
        return Ok(Reply::unchanged().with("msg", "check mode: nothing sealed or installed"));
    }
    if inv.check_mode {
        // Status only: what is held, and the public key if there is one (none is made).
        let key = distkey::load(&cfg.store).map_err(Failure::new)?;
        return Ok(status(&cfg, key.as_ref(), false));
    }
    let _lock = cfg
        .store
        .lock(cfg.timeout)
        .map_err(|e| Failure::new(e.to_string()))?;
    let (key, made) = distkey::load_or_create(&cfg.store).map_err(Failure::new)?;
    match own.op {
        Op::Status => Ok(status(&cfg, Some(&key), made)),
        Op::Seal => seal_all(&cfg, &own),
        Op::Open => open_all(&cfg, &own, &key, &wires),
    }
}

/// This member's public key, and per cert what it holds and whether a handler is owed.
fn status(cfg: &Config, key: Option<&DistKey>, made: bool) -> Reply {
    let mut held = Map::new();
    let mut owed = Vec::new();
    for spec in &cfg.certs {
        let gen = read_current(cfg, spec).and_then(|(_, chain)| Generation::of_chain(&chain).ok());
        held.insert(spec.name.as_str().to_owned(), json!(gen));
        let meta = cfg.store.load_meta(spec.name.as_str()).ok().flatten();
        if meta.is_some_and(|m| m.handler_owed) {
            owed.push(spec.name.as_str().to_owned());
        }
    }
    Reply::changed(made)
        .with("public_key", key.map(|k| k.public().to_base64()))
        .with("held", held)
        .with("owed", owed)
}

/// The key and full chain of the generation `current` names (never through a link planted
/// elsewhere, never following a file that is a link).
fn read_current(cfg: &Config, spec: &CertSpec) -> Option<(String, String)> {
    let dir = cfg.store.cert_dir(&spec.dir);
    let gen = gen_link(&dir, "current")?;
    let gen_dir = Dir::open(&dir).ok()?.subdir(OsStr::new(&gen)).ok()?;
    let read = |name: &str| -> Option<String> {
        let mut f = gen_dir.open_read(OsStr::new(name)).ok()??;
        let mut s = String::new();
        f.read_to_string(&mut s).ok()?;
        Some(s)
    };
    Some((read("privkey.pem")?, read("fullchain.pem")?))
}

fn seal_all(cfg: &Config, own: &GroupOptions) -> Result<Reply, Failure> {
    let mut bundles: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut generations = BTreeMap::new();
    for (cert, recipients) in &own.recipients {
        let spec = cfg.cert(cert).expect("checked above");
        let Some((key_pem, fullchain_pem)) = read_current(cfg, spec) else {
            return Err(Failure::new(format!(
                "cert `{cert}` is not installed on {}: nothing to seal",
                own.member
            )));
        };
        let generation = Generation::of_chain(&fullchain_pem)
            .map_err(|e| Failure::new(format!("cert `{cert}`: {e}")))?;
        let meta = cfg.store.load_meta(cert).ok().flatten().unwrap_or_default();
        let payload = Payload {
            key_pem,
            fullchain_pem,
            facts: Facts {
                directory: meta.directory.clone(),
                staging: meta.staging,
                self_signed: meta.self_signed,
                profile: meta.profile.clone(),
            },
        };
        let mut sealed = BTreeMap::new();
        for r in recipients {
            if r.host == own.member || r.holds.as_deref() == Some(generation.fingerprint.as_str()) {
                continue;
            }
            let pk = PublicKey::from_base64(&r.public_key).map_err(Failure::new)?;
            let header = Header {
                version: VERSION,
                group: own.groups[cert].clone(),
                cert: cert.clone(),
                recipient: r.host.clone(),
                recipient_key: pk.to_base64(),
                sender: own.member.clone(),
                generation: generation.clone(),
            };
            let wire = seal::seal(&header, &pk, &payload).map_err(Failure::new)?;
            sealed.insert(r.host.clone(), wire.encode());
        }
        bundles.insert(cert.clone(), sealed);
        generations.insert(cert.clone(), generation);
    }
    Ok(Reply::unchanged()
        .with("bundles", bundles)
        .with("generations", generations))
}

fn open_all(
    cfg: &Config,
    own: &GroupOptions,
    key: &DistKey,
    wires: &BTreeMap<String, Wire>,
) -> Result<Reply, Failure> {
    let mut updated = Vec::new();
    let mut refused = Vec::new();
    let mut installed = Map::new();
    for (cert, wire) in wires {
        let spec = cfg.cert(cert).expect("checked above");
        match open_one(cfg, own, key, spec, wire) {
            Ok(Some(gen)) => {
                updated.push(cert.clone());
                installed.insert(cert.clone(), json!(gen));
            }
            Ok(None) => {}
            Err(e) => refused.push(format!("{cert}: {e}; nothing was installed")),
        }
    }
    let reply = Reply::changed(!updated.is_empty())
        .with("updated", &updated)
        .with("certs", installed);
    if refused.is_empty() {
        Ok(reply)
    } else {
        Err(Failure::from_reply(
            format!("group bundle refused: {}", refused.join("; ")),
            reply,
        ))
    }
}

/// Opens and installs one bundle; `Ok(None)` when this member already holds its issuance.
fn open_one(
    cfg: &Config,
    own: &GroupOptions,
    key: &DistKey,
    spec: &CertSpec,
    wire: &Wire,
) -> Result<Option<Generation>, String> {
    let cert = spec.name.as_str();
    let (header, payload) = seal::open(wire, &own.member, key, cert).map_err(|e| e.to_string())?;
    if header.group != own.groups[cert] {
        return Err(format!(
            "the bundle is for group {}, this member shares the cert with group {}",
            header.group, own.groups[cert]
        ));
    }
    let held = read_current(cfg, spec).and_then(|(_, chain)| Generation::of_chain(&chain).ok());
    if let Some(held) = &held {
        if held.fingerprint == header.generation.fingerprint {
            return Ok(None);
        }
        if header.generation.older_than(held) {
            return Err(format!(
                "the bundle holds serial {} (valid from {}), older than the installed serial {} (valid from {})",
                header.generation.serial, header.generation.not_before, held.serial, held.not_before
            ));
        }
    }
    let now = certbridge_acme::now();
    let names = spec.sorted_names();
    let set = certinfo::verify_issued(&payload.fullchain_pem, &payload.key_pem, &names, now)
        .map_err(|e| {
            format!("the sealed certificate does not fit this member's declaration: {e}")
        })?;
    // A key type left unset (kept) is the issuer's to choose; a set one must match.
    if let KeyChoice::Set(declared) = spec.key_type {
        if set.leaf.key_type != Some(declared) {
            return Err(format!(
                "the sealed key is {}, this member declares {}",
                set.leaf
                    .key_type
                    .map_or("of an unknown type", |k| k.as_str()),
                declared.as_str()
            ));
        }
    }
    cfg.store
        .install(&spec.dir, &set)
        .map_err(|e| format!("install failed, the previous files are in place: {e}"))?;
    let mut meta: Meta = cfg.store.load_meta(cert).ok().flatten().unwrap_or_default();
    meta.adopt_installed(&set.leaf);
    meta.directory = payload.facts.directory.clone();
    meta.staging = payload.facts.staging;
    meta.self_signed = payload.facts.self_signed;
    meta.profile = payload.facts.profile.clone();
    meta.issued_at = Some(now);
    meta.pending = None;
    meta.failures = 0;
    meta.retry_not_before = None;
    meta.last_problem = None;
    cfg.store.save_meta(cert, &meta).map_err(|e| {
        format!("installed, but the metadata was not saved (the next run catches up): {e}")
    })?;
    let _ = cfg.store.clear_pending_key(cert);
    Ok(Some(header.generation))
}

#[cfg(test)]
mod tests;
