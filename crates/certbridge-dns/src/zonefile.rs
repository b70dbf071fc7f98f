//! The `zonefile` method: render the signing zone with the zone library (the same code as
//! `zone_render`), validate, replace atomically, reload. When each value first went out is
//! kept in the file itself (`; certbridge published=<ts>`), so ageing needs no state file.

use crate::backend::{Ages, Applied, Backend, ChangeSet, Guard, Servers, Snapshot, Values};
use crate::error::PublishError;
use certbridge_core::names::DomainName;
use certbridge_core::zone::{self, ZoneError, ZoneFile};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// A zonefile zone: the zone library's request (spec, static records, write options, all
/// validated by the same code as `zone_render`), plus how to reload.
#[derive(Debug, Clone)]
pub struct FileZone {
    pub spec: zone::ZoneSpec,
    /// Records written on every run besides the TXT values (`static_records`).
    pub static_records: Vec<zone::Record>,
    pub write: zone::WriteOptions,
    /// The reload argv (default `rndc [-c conf] reload <origin>`).
    pub reload: Vec<String>,
    /// `rndc [-c conf]`, for freeze/thaw/zonestatus.
    pub rndc: Vec<String>,
    /// Write between `rndc freeze` and `rndc thaw` (a zone that takes dynamic updates).
    pub freeze: bool,
    pub default_reload: bool,
    /// Most TXT records per owner (`max_records_per_type`); `None`: no limit.
    pub max_per_owner: Option<usize>,
}

/// Runs `argv` (never through a shell) under the deadline; returns its output.
pub async fn run_command(
    zone: &DomainName,
    argv: &[String],
    deadline: Instant,
) -> Result<String, PublishError> {
    let command = argv.join(" ");
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PublishError::Config(format!("zone {}: an empty command", zone.fqdn())))?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| PublishError::Command {
            zone: zone.as_str().into(),
            command: command.clone(),
            output: format!("cannot start it: {e}"),
        })?;
    let out = match timeout_at(deadline, child.wait_with_output()).await {
        Err(_) => {
            return Err(PublishError::CommandTimeout {
                zone: zone.as_str().into(),
                command,
            })
        }
        Ok(Err(e)) => {
            return Err(PublishError::Command {
                zone: zone.as_str().into(),
                command,
                output: e.to_string(),
            })
        }
        Ok(Ok(out)) => out,
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = text.trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(PublishError::Command {
            zone: zone.as_str().into(),
            command,
            output: if text.is_empty() {
                out.status.to_string()
            } else {
                text
            },
        })
    }
}

fn rndc(fz: &FileZone, verb: &str, zone: &DomainName) -> Vec<String> {
    let mut argv = fz.rndc.clone();
    argv.push(verb.into());
    argv.push(zone.as_str().into());
    argv
}

/// The challenge values of a rendered zone (those with a publication time) and their ages;
/// TXT records without a time are static records, re-added from options.
pub fn snapshot_of(old: Option<&zone::RenderedZone>) -> Snapshot {
    let mut values = Values::new();
    let mut ages = Ages::new();
    for (owner, value, published) in old.iter().flat_map(|o| o.txt()) {
        let Some(first) = published else { continue };
        values
            .entry(owner.clone())
            .or_default()
            .insert(value.to_owned());
        ages.entry(owner.clone())
            .or_default()
            .insert(value.to_owned(), first);
    }
    Snapshot {
        values,
        ages: Some(ages),
    }
}

impl FileZone {
    /// The path is checked (not a directory; a symbolic link only with `follow_symlink`) and
    /// its directory opened once; lock, read and write all go through that one handle.
    fn open(&self, origin: &DomainName) -> Result<ZoneFile, PublishError> {
        ZoneFile::open(&self.write.path, self.write.follow_symlink).map_err(|e| {
            PublishError::WriteZone {
                zone: origin.as_str().into(),
                detail: e.to_string(),
            }
        })
    }

    fn read_old(
        &self,
        origin: &DomainName,
        file: &ZoneFile,
    ) -> Result<(Option<zone::RenderedZone>, Vec<String>), PublishError> {
        match file.read_rendered() {
            Ok(old) => Ok((old, Vec::new())),
            Err(ZoneError::NotRendered) => Ok((None, vec![format!(
                "{} was not written by certbridge: it is replaced by a rendered zone (SOA, `ns`, `static_records` and the TXT values)",
                self.write.path.display()
            )])),
            Err(e) => Err(PublishError::ReadZone {
                zone: origin.as_str().into(),
                path: self.write.path.clone(),
                detail: e.to_string(),
            }),
        }
    }
}

impl Backend for FileZone {
    fn method(&self) -> &'static str {
        "zonefile"
    }
    fn target(&self) -> String {
        self.write.path.display().to_string()
    }
    fn ttl(&self) -> u32 {
        self.spec.ttl
    }
    fn servers(&self) -> Servers {
        Servers::ZoneNs
    }
    /// The zone file's own lock, shared with zone_render, beside the file.
    fn lock(
        &self,
        zone: &DomainName,
        _state_dir: &Path,
        wait: Duration,
    ) -> Result<Guard, PublishError> {
        let lock = self
            .open(zone)?
            .lock(wait)
            .map_err(|source| PublishError::Lock {
                zone: zone.as_str().into(),
                source,
            })?;
        Ok(Box::new(lock))
    }
    async fn read(&self, zone: &DomainName, _deadline: Instant) -> Result<Snapshot, PublishError> {
        let file = self.open(zone)?;
        Ok(snapshot_of(self.read_old(zone, &file)?.0.as_ref()))
    }
    async fn apply(&self, change: &ChangeSet, deadline: Instant) -> Result<Applied, PublishError> {
        let origin = &change.zone;
        let file = self.open(origin)?;
        let frozen = self.freeze && !change.check_mode;
        if frozen {
            // named writes its journal into the file on freeze: read the file after it.
            run_command(origin, &rndc(self, "freeze", origin), deadline).await?;
        }
        let written = write_zone(self, &file, change, deadline).await;
        if frozen {
            // Thaw even when writing failed, so the zone takes updates again; thaw reloads it.
            let thawed = run_command(origin, &rndc(self, "thaw", origin), deadline).await;
            let (applied, after, content_changed, serial) = written?;
            thawed?;
            if content_changed {
                crate::loaded::confirm(origin, &self.rndc, serial, &after, deadline).await?;
            }
            return Ok(applied);
        }
        let (applied, after, content_changed, serial) = written?;
        if content_changed && !change.check_mode {
            run_command(origin, &self.reload, deadline).await?;
            if self.default_reload {
                // A refused file leaves the old zone served: say so now, not at the deadline.
                crate::loaded::confirm(origin, &self.rndc, serial, &after, deadline).await?;
            }
        }
        Ok(applied)
    }
}

/// Renders the file: the old aged values minus the removed plus the added (first published
/// now), with the static records; validates and replaces it unless in check mode.
async fn write_zone(
    fz: &FileZone,
    file: &ZoneFile,
    change: &ChangeSet,
    deadline: Instant,
) -> Result<(Applied, Values, bool, u32), PublishError> {
    let origin = &change.zone;
    let path = &fz.write.path;
    let (old, warnings) = fz.read_old(origin, file)?;
    let mut values: Ages = snapshot_of(old.as_ref()).ages.unwrap_or_default();
    for (owner, gone) in &change.remove {
        if let Some(at) = values.get_mut(owner) {
            at.retain(|v, _| !gone.contains(v));
        }
    }
    for (owner, added) in &change.add {
        let at = values.entry(owner.clone()).or_default();
        for v in added {
            at.entry(v.clone()).or_insert(change.now);
        }
    }
    values.retain(|_, at| !at.is_empty());
    if let Some(limit) = fz.max_per_owner {
        // The server would refuse the whole file and keep serving the old zone: say so now,
        // before writing, instead of waiting for values that will never be served.
        if let Some((owner, at)) = values.iter().find(|(_, at)| at.len() > limit) {
            return Err(PublishError::TooManyRecords {
                zone: origin.as_str().into(),
                owner: owner.fqdn(),
                count: at.len(),
                limit,
            });
        }
    }
    let render_err = |e: ZoneError| PublishError::WriteZone {
        zone: origin.as_str().into(),
        detail: e.to_string(),
    };
    let mut records = fz.static_records.clone();
    for (owner, at) in &values {
        for (value, first) in at {
            let r = zone::Record::txt(owner.clone(), value).map_err(render_err)?;
            records.push(r.with_published(*first));
        }
    }
    let mut preview_opts = fz.write.clone();
    preview_opts.check_mode = true;
    let mut outcome =
        zone::apply_to(file, &fz.spec, &records, &preview_opts).map_err(render_err)?;
    if !change.check_mode && outcome.changed {
        if outcome.content_changed && fz.default_reload && !fz.freeze {
            // `rndc reload` refuses a zone that takes dynamic updates: find out before writing.
            let status = run_command(origin, &rndc(fz, "zonestatus", origin), deadline).await?;
            if status.lines().any(|l| l.trim() == "dynamic: yes") {
                return Err(PublishError::DynamicZone {
                    zone: origin.as_str().into(),
                });
            }
        }
        outcome = zone::apply_to(file, &fz.spec, &records, &fz.write).map_err(|e| match e {
            ZoneError::ValidationFailed { .. } => PublishError::WriteZone {
                zone: origin.as_str().into(),
                detail: format!("{e}; the old zone file is unchanged and still served"),
            },
            other => render_err(other),
        })?;
    }
    let after: Values = values
        .into_iter()
        .map(|(o, at)| (o, at.into_keys().collect()))
        .collect();
    let applied = Applied {
        changed: outcome.changed,
        diff: Some(outcome.diff(&path.display().to_string())),
        warnings,
    };
    Ok((applied, after, outcome.content_changed, outcome.serial))
}

#[cfg(test)]
mod tests {
    use super::*;
    use certbridge_core::names::TxtDigest;
    use std::collections::{BTreeMap, BTreeSet};

    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }
    fn dig(c: char) -> String {
        std::iter::repeat_n(c, 43).collect()
    }

    #[test]
    fn aged_values_stay_until_expiry_and_wanted_ones_keep_their_first_time() {
        let owner = dn("acme.signing.test");
        let spec = zone::ZoneSpec::new(dn("signing.test"), vec![dn("ns1.signing.test")]);
        let records = vec![
            zone::Record::txt(owner.clone(), &dig('o'))
                .unwrap()
                .with_published(100),
            zone::Record::txt(owner.clone(), &dig('r'))
                .unwrap()
                .with_published(9_000),
            zone::Record::txt(owner.clone(), &dig('w'))
                .unwrap()
                .with_published(50),
            zone::Record::txt(owner.clone(), "static note").unwrap(),
            // Recent, but its order finished: retired.
            zone::Record::txt(owner.clone(), &dig('x'))
                .unwrap()
                .with_published(9_500),
        ];
        let text = zone::render(&spec, &records, 1).unwrap();
        let old = zone::parse_rendered(&text).unwrap();
        let wanted = BTreeMap::from([(
            owner.clone(),
            BTreeSet::from([
                TxtDigest::parse(&dig('w')).unwrap(),
                TxtDigest::parse(&dig('n')).unwrap(),
            ]),
        )]);
        let expiry = crate::backend::Expiry {
            keep_seconds: 3600,
            retired: BTreeSet::from([dig('x')]),
        };
        let snap = snapshot_of(Some(&old));
        let p = crate::backend::plan(
            &snap.values,
            &wanted,
            snap.ages.as_ref().unwrap(),
            10_000,
            &expiry,
        );
        let at = &p.ages[&owner];
        assert_eq!(
            at.get(&dig('w')),
            Some(&50),
            "a wanted value keeps its first time"
        );
        assert_eq!(at.get(&dig('r')), Some(&9_000), "a recent value stays");
        assert_eq!(
            at.get(&dig('n')),
            Some(&10_000),
            "a new value is published now"
        );
        assert!(!at.contains_key(&dig('o')) && !at.contains_key("static note"));
        assert_eq!(p.delete[&owner], BTreeSet::from([dig('o'), dig('x')]));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn commands_run_without_a_shell_and_report_failures() {
        let z = dn("signing.test");
        let far = Instant::now() + std::time::Duration::from_secs(5);
        let out = run_command(&z, &["echo".into(), "a;b $HOME".into()], far)
            .await
            .unwrap();
        assert_eq!(out, "a;b $HOME");
        let err = run_command(
            &z,
            &["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()],
            far,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("broken") && err.contains("signing.test"),
            "{err}"
        );
        let start = Instant::now();
        let err = run_command(
            &z,
            &["sleep".into(), "5".into()],
            start + std::time::Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PublishError::CommandTimeout { .. }), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
