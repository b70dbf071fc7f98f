//! The backend interface of `acme_txt_publish`: a backend reads what a zone publishes, applies
//! a change set (TXT values added and removed at owners) and names the servers that must
//! answer. Everything else is shared (publish.rs): CNAME following, value ageing
//! (`keep_seconds`, `retired`), idempotence, locking, check/diff mode and verification.
//!
//! Adding a method: a variant in `options::ZoneInput` (its own options, unknown ones refused by
//! the parser), a type implementing [`Backend`], and a variant in `zones::ZoneBackend`.

use crate::error::PublishError;
use certbridge_core::names::{DomainName, TxtDigest};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Held while one run reads and changes a zone; dropping it unlocks.
pub type Guard = Box<dyn std::any::Any>;

/// Owner -> TXT values.
pub type Values = BTreeMap<DomainName, BTreeSet<String>>;
/// Owner -> value -> first-published time (Unix seconds).
pub type Ages = BTreeMap<DomainName, BTreeMap<String, u64>>;

/// What a zone publishes now, as its backend reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Owner -> every TXT value there (values that are not digests are never touched).
    pub values: Values,
    /// When each value was first published, if the backend stores that itself (a zone file's
    /// `; certbridge published=` comments). `None`: the shared state file keeps the ages.
    pub ages: Option<Ages>,
}

/// One run's change to one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    pub zone: DomainName,
    /// TTL of added records.
    pub ttl: u32,
    pub add: Values,
    pub remove: Values,
    /// This run's time: the first-published time of every added value.
    pub now: u64,
    /// Only say what would change (Ansible's check mode): nothing is written.
    pub check_mode: bool,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// What applying did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Something changed (or would, in check mode). A backend may change more than the change
    /// set (a zone file's static records and SOA), so it says so itself.
    pub changed: bool,
    /// The backend's own diff (a zone file's text); `None`: the shared owner/value diff.
    pub diff: Option<serde_json::Value>,
    pub warnings: Vec<String>,
}

/// The servers that must serve the values before the step succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// The zone's NS, found through the resolver (or the module's `nameservers`).
    ZoneNs,
    /// Exactly these (a zone's own `nameservers` option).
    Listed(Vec<SocketAddr>),
}

/// One method of publishing TXT values into a zone.
///
/// Errors name the zone, the method and the server/file/command at fault.
#[allow(async_fn_in_trait)] // static dispatch only (zones::ZoneBackend): no Send bound needed
pub trait Backend {
    /// The `method` option's value ("zonefile", "rfc2136", "exec").
    fn method(&self) -> &'static str;
    /// Where changes go, for messages and diff headers ("127.0.0.1:53", a path, a command).
    fn target(&self) -> String;
    /// TTL of added values.
    fn ttl(&self) -> u32;
    /// Which servers must answer.
    fn servers(&self) -> Servers;
    /// Takes the lock that serialises runs on this zone, held from reading to the end of
    /// applying. Default: `<state_dir>/<zone>.<method>.lock`.
    fn lock(
        &self,
        zone: &DomainName,
        state_dir: &Path,
        wait: Duration,
    ) -> Result<Guard, PublishError> {
        state_lock(self.method(), zone, state_dir, wait)
    }
    /// Reads what the zone publishes (called under the zone's lock, except in check mode).
    async fn read(&self, zone: &DomainName, deadline: Instant) -> Result<Snapshot, PublishError>;
    /// Applies `change` (under the zone's lock, except in check mode, where nothing may be
    /// written). An empty change set is still passed, for backends that own more than TXT
    /// values. On error the zone must still publish what it did before.
    async fn apply(&self, change: &ChangeSet, deadline: Instant) -> Result<Applied, PublishError>;
}

/// Which published values may leave the zone: those first published `keep_seconds` ago or
/// earlier, and those of finished orders (`retired`, reported by their hosts) whatever their
/// age. A value wanted by this run always stays.
#[derive(Debug, Clone, Default)]
pub struct Expiry {
    pub keep_seconds: u64,
    pub retired: BTreeSet<String>,
}

impl Expiry {
    /// An old value (not wanted now), first published at `first`, stays.
    pub fn keeps(&self, value: &str, first: u64, now: u64) -> bool {
        !self.retired.contains(value) && now.saturating_sub(first) < self.keep_seconds
    }
}

/// What one run does to a zone, decided by the shared code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub add: Values,
    pub delete: Values,
    /// The ages after the run.
    pub ages: Ages,
    /// Owner -> every value it carries after the run.
    pub after: Values,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.delete.is_empty()
    }
}

/// Decides adds and deletes. Challenge owners are this run's owners and those with known
/// ages; at those, digest-shaped values not wanted now and not kept by `expiry` (too old, or
/// retired) are deleted. A digest-shaped value without a known age counts as first seen now.
/// Other TXT values (SPF, notes) are never touched.
pub fn plan(
    current: &Values,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    ages: &Ages,
    now: u64,
    expiry: &Expiry,
) -> Plan {
    let mut change = Plan::default();
    let owners: BTreeSet<&DomainName> = wanted.keys().chain(ages.keys()).collect();
    for owner in owners {
        let present = current.get(owner).cloned().unwrap_or_default();
        let want: BTreeSet<String> = wanted
            .get(owner)
            .map(|s| s.iter().map(|v| v.as_str().to_owned()).collect())
            .unwrap_or_default();
        let known = ages.get(owner);
        let mut new_ages = BTreeMap::new();
        let mut after = BTreeSet::new();
        for v in &present {
            if TxtDigest::parse(v).is_err() {
                after.insert(v.clone()); // not ours to manage
                continue;
            }
            let first = known.and_then(|k| k.get(v)).copied().unwrap_or(now);
            if want.contains(v) || expiry.keeps(v, first, now) {
                new_ages.insert(v.clone(), first);
                after.insert(v.clone());
            } else {
                change
                    .delete
                    .entry(owner.clone())
                    .or_default()
                    .insert(v.clone());
            }
        }
        for v in &want {
            if !present.contains(v) {
                change
                    .add
                    .entry(owner.clone())
                    .or_default()
                    .insert(v.clone());
                new_ages.insert(v.clone(), now);
                after.insert(v.clone());
            }
        }
        if !new_ages.is_empty() {
            change.ages.insert(owner.clone(), new_ages);
        }
        if !after.is_empty() {
            change.after.insert(owner.clone(), after);
        }
    }
    change
}

/// `<state_dir>/<zone>.<method>.<ext>`: a backend's files beside the shared state.
pub fn state_file(state_dir: &Path, zone: &DomainName, method: &str, ext: &str) -> PathBuf {
    state_dir.join(format!("{}.{method}.{ext}", zone.as_str()))
}

/// The default lock: a file in `state_dir` (created if missing).
pub fn state_lock(
    method: &str,
    zone: &DomainName,
    state_dir: &Path,
    wait: Duration,
) -> Result<Guard, PublishError> {
    std::fs::create_dir_all(state_dir).map_err(|e| PublishError::State {
        zone: zone.as_str().into(),
        path: state_dir.to_path_buf(),
        detail: format!("cannot create the state directory: {e}"),
    })?;
    let lock =
        certbridge_core::fsutil::Lock::acquire(&state_file(state_dir, zone, method, "lock"), wait)
            .map_err(|source| PublishError::Lock {
                zone: zone.as_str().into(),
                source,
            })?;
    Ok(Box::new(lock))
}
