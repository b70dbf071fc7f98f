//! One zone's publication, the same for every backend: lock, read what is published, age the
//! values (a backend's own ages or the shared state file), decide the change set, apply it
//! (or only preview it in check mode), record the ages. Backends differ only behind
//! [`Backend`].

use crate::backend::{plan, state_file, Ages, Backend, ChangeSet, Expiry, Guard, Servers, Values};
use crate::error::PublishError;
use crate::exec::ExecZone;
use crate::powerdns::PdnsZone;
use crate::rfc2136::DynZone;
use crate::zonefile::FileZone;
use certbridge_core::names::{DomainName, TxtDigest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tokio::time::Instant;

/// A zone's backend, one variant per `method`.
#[derive(Debug, Clone)]
pub enum ZoneBackend {
    Zonefile(Box<FileZone>),
    Rfc2136(Box<DynZone>),
    Exec(Box<ExecZone>),
    Powerdns(Box<PdnsZone>),
}

/// Calls `$body` with `$b` bound to the variant's backend (static dispatch).
macro_rules! with_backend {
    ($zb:expr, $b:ident => $body:expr) => {
        match $zb {
            ZoneBackend::Zonefile($b) => $body,
            ZoneBackend::Rfc2136($b) => $body,
            ZoneBackend::Exec($b) => $body,
            ZoneBackend::Powerdns($b) => $body,
        }
    };
}

impl ZoneBackend {
    pub fn method(&self) -> &'static str {
        with_backend!(self, b => b.method())
    }
    pub fn target(&self) -> String {
        with_backend!(self, b => b.target())
    }
    pub fn servers(&self) -> Servers {
        with_backend!(self, b => b.servers())
    }
    /// The backend keeps no ages itself: the shared state file does.
    pub fn uses_state_file(&self) -> bool {
        !matches!(self, ZoneBackend::Zonefile(_))
    }
    /// Publishes `wanted` into the zone; an error names zone, method and target.
    pub async fn publish(
        &self,
        origin: &DomainName,
        wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
        run: &Run<'_>,
    ) -> Result<ZoneResult, String> {
        with_backend!(self, b => publish_zone(b.as_ref(), origin, wanted, run).await)
            .map_err(|e| format!("method {} ({}): {e}", self.method(), self.target()))
    }
}

/// What is the same for every zone of one run.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub now: u64,
    pub expiry: &'a Expiry,
    pub check_mode: bool,
    pub state_dir: &'a Path,
    pub deadline: Instant,
}

/// What publishing did to one zone.
#[derive(Debug, Clone, Default)]
pub struct ZoneResult {
    pub changed: bool,
    /// Owner -> every challenge value it carries after the run.
    pub after: Values,
    /// Owner -> values removed because they expired or were retired.
    pub removed: Values,
    pub diff: Option<serde_json::Value>,
    pub warnings: Vec<String>,
}

/// The shared part of publishing into one zone.
pub async fn publish_zone<B: Backend>(
    b: &B,
    origin: &DomainName,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    run: &Run<'_>,
) -> Result<ZoneResult, PublishError> {
    let _lock: Option<Guard> = if run.check_mode {
        None
    } else {
        let wait = run.deadline.saturating_duration_since(Instant::now());
        Some(b.lock(origin, run.state_dir, wait)?)
    };
    let snapshot = b.read(origin, run.deadline).await?;
    let state = state_file(run.state_dir, origin, b.method(), "json");
    let (ages, own_ages) = match snapshot.ages {
        Some(a) => (a, true),
        None => (read_state(&state, origin)?, false),
    };
    let p = plan(&snapshot.values, wanted, &ages, run.now, run.expiry);
    let change = ChangeSet {
        zone: origin.clone(),
        ttl: b.ttl(),
        add: p.add.clone(),
        remove: p.delete.clone(),
        now: run.now,
        check_mode: run.check_mode,
    };
    let applied = b.apply(&change, run.deadline).await?;
    if !run.check_mode && !own_ages && p.ages != ages {
        write_state(&state, origin, &p.ages)?;
    }
    let diff = applied.diff.unwrap_or_else(|| {
        let challenge_owners: BTreeSet<&DomainName> = wanted.keys().chain(ages.keys()).collect();
        let before: Values = snapshot
            .values
            .iter()
            .filter(|(o, _)| challenge_owners.contains(o))
            .map(|(o, v)| (o.clone(), v.clone()))
            .collect();
        let header = format!("{} ({} {})", origin.fqdn(), b.method(), b.target());
        serde_json::json!({
            "before": lines(&before),
            "after": lines(&p.after),
            "before_header": header,
            "after_header": header,
        })
    });
    Ok(ZoneResult {
        changed: applied.changed,
        after: p.after,
        removed: p.delete,
        diff: Some(diff),
        warnings: applied.warnings,
    })
}

fn lines(m: &Values) -> String {
    m.iter()
        .flat_map(|(o, vs)| {
            vs.iter()
                .map(move |v| format!("{} TXT \"{v}\"\n", o.fqdn()))
        })
        .collect()
}

/// The state file's content: owner -> value -> first published (Unix seconds).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub zone: String,
    pub values: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Reads the state file (a missing file is an empty state).
pub fn read_state(path: &Path, zone: &DomainName) -> Result<Ages, PublishError> {
    let err = |detail: String| PublishError::State {
        zone: zone.as_str().into(),
        path: path.to_path_buf(),
        detail,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ages::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let file: StateFile = serde_json::from_str(&text)
        .map_err(|e| err(format!("not a certbridge state file: {e}")))?;
    let mut ages = Ages::new();
    for (owner, values) in file.values {
        if let Ok(o) = DomainName::parse(&owner) {
            ages.insert(o, values);
        }
    }
    Ok(ages)
}

/// Writes the state file atomically (0600).
pub fn write_state(path: &Path, zone: &DomainName, ages: &Ages) -> Result<(), PublishError> {
    let err = |detail: String| PublishError::State {
        zone: zone.as_str().into(),
        path: path.to_path_buf(),
        detail,
    };
    let file = StateFile {
        zone: zone.as_str().into(),
        values: ages
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(o, v)| (o.as_str().to_owned(), v.clone()))
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
    let attrs = certbridge_core::fsutil::FileAttrs {
        mode: Some(0o600),
        ..Default::default()
    };
    certbridge_core::fsutil::atomic_write(path, &text, &attrs, None).map_err(|e| err(e.to_string()))
}
