//! The `zonefile` method: render the signing zone with the zone library (the same code as
//! `zone_render`), validate, replace atomically, reload. When each value first went out is
//! kept in the file itself (`; certbridge published=<ts>`), so `keep_seconds` needs no state.

use crate::error::PublishError;
use crate::loaded::{confirm, LogMark};
use crate::options::FileZone;
use certbridge_core::names::{DomainName, TxtDigest};
use certbridge_core::zone::{self, ZoneError, ZoneFile};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use tokio::time::{timeout_at, Instant};

/// What publishing did to one zone (either method).
#[derive(Debug, Clone, Default)]
pub struct ZoneResult {
    pub changed: bool,
    /// Owner -> every challenge value it carries after the run.
    pub after: BTreeMap<DomainName, BTreeSet<String>>,
    /// Owner -> values removed because they expired.
    pub removed: BTreeMap<DomainName, BTreeSet<String>>,
    pub diff: Option<serde_json::Value>,
    pub warnings: Vec<String>,
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

/// Owner -> value -> first-published time (Unix seconds).
pub type Published = BTreeMap<DomainName, BTreeMap<String, u64>>;
/// Owner -> values.
pub type Values = BTreeMap<DomainName, BTreeSet<String>>;

/// The TXT records the zone should carry: old values still wanted or kept by `expiry`
/// (keeping their first-published time), plus this run's new ones.
pub fn merge_values(
    old: Option<&zone::RenderedZone>,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    now: u64,
    expiry: &Expiry,
) -> (Published, Values) {
    let mut keep = Published::new();
    let mut removed = Values::new();
    if let Some(old) = old {
        for (owner, value, published) in old.txt() {
            // TXT records without a publication time are static records, re-added from options.
            let Some(first) = published else { continue };
            let still_wanted = wanted
                .get(owner)
                .is_some_and(|s| s.iter().any(|v| v.as_str() == value));
            if still_wanted || expiry.keeps(value, first, now) {
                keep.entry(owner.clone())
                    .or_default()
                    .insert(value.to_owned(), first);
            } else {
                removed
                    .entry(owner.clone())
                    .or_default()
                    .insert(value.to_owned());
            }
        }
    }
    for (owner, values) in wanted {
        let at = keep.entry(owner.clone()).or_default();
        for v in values {
            at.entry(v.as_str().to_owned()).or_insert(now);
        }
    }
    (keep, removed)
}

/// Publishes `wanted` (owner -> values, every owner inside this zone) into a zone file.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    origin: &DomainName,
    fz: &FileZone,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    now: u64,
    expiry: &Expiry,
    max_per_owner: Option<usize>,
    check_mode: bool,
    deadline: Instant,
) -> Result<ZoneResult, PublishError> {
    // The path is checked (not a directory; a symbolic link only with `follow_symlink`) and
    // its directory opened once, before the lock beside it is taken; lock, read and write
    // all go through that one handle.
    let file = ZoneFile::open(&fz.write.path, fz.write.follow_symlink).map_err(|e| {
        PublishError::WriteZone {
            zone: origin.as_str().into(),
            detail: e.to_string(),
        }
    })?;
    // One lock per zone, shared with zone_render, held from reading the old values until the
    // server has been told to reload.
    let _lock = if check_mode {
        None
    } else {
        let wait = deadline.saturating_duration_since(Instant::now());
        Some(file.lock(wait).map_err(|source| PublishError::Lock {
            zone: origin.as_str().into(),
            source,
        })?)
    };
    let frozen = fz.freeze && !check_mode;
    if frozen {
        // named writes its journal into the file on freeze: read the file after it.
        run_command(origin, &rndc(fz, "freeze", origin), deadline).await?;
    }
    let written = write_zone(
        origin,
        fz,
        &file,
        wanted,
        now,
        expiry,
        max_per_owner,
        check_mode,
        deadline,
    )
    .await;
    // The server's log before it is told to load: what it logs afterwards is about this file.
    let mark = fz.server_log.as_deref().map(LogMark::at);
    let log = mark.as_ref().map(|m| (m, fz.write.path.as_path()));
    if frozen {
        // Thaw even when writing failed, so the zone takes updates again; thaw reloads it.
        let thawed = run_command(origin, &rndc(fz, "thaw", origin), deadline).await;
        let (result, content_changed, serial) = written?;
        thawed?;
        if content_changed {
            confirm(origin, &fz.rndc, serial, &result.after, log, deadline).await?;
        }
        return Ok(result);
    }
    let (result, content_changed, serial) = written?;
    if content_changed && !check_mode {
        run_command(origin, &fz.reload, deadline).await?;
        if fz.default_reload {
            // A refused file leaves the old zone served: say so now, not at the deadline.
            confirm(origin, &fz.rndc, serial, &result.after, log, deadline).await?;
        }
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
async fn write_zone(
    origin: &DomainName,
    fz: &FileZone,
    file: &ZoneFile,
    wanted: &BTreeMap<DomainName, BTreeSet<TxtDigest>>,
    now: u64,
    expiry: &Expiry,
    max_per_owner: Option<usize>,
    check_mode: bool,
    deadline: Instant,
) -> Result<(ZoneResult, bool, u32), PublishError> {
    let path = &fz.write.path;
    let mut warnings = Vec::new();
    let old = match file.read_rendered() {
        Ok(old) => old,
        Err(ZoneError::NotRendered) => {
            warnings.push(format!(
                "{} was not written by certbridge: it is replaced by a rendered zone (SOA, `ns`, `static_records` and the TXT values)",
                path.display()
            ));
            None
        }
        Err(e) => {
            return Err(PublishError::ReadZone {
                zone: origin.as_str().into(),
                path: path.clone(),
                detail: e.to_string(),
            })
        }
    };
    let (values, removed) = merge_values(old.as_ref(), wanted, now, expiry);
    if let Some(limit) = max_per_owner {
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
    let mut records = fz.static_records.clone();
    for (owner, at) in &values {
        for (value, first) in at {
            let r =
                zone::Record::txt(owner.clone(), value).map_err(|e| PublishError::WriteZone {
                    zone: origin.as_str().into(),
                    detail: e.to_string(),
                })?;
            records.push(r.with_published(*first));
        }
    }
    let mut preview_opts = fz.write.clone();
    preview_opts.check_mode = true;
    let render_err = |e: ZoneError| PublishError::WriteZone {
        zone: origin.as_str().into(),
        detail: e.to_string(),
    };
    let mut outcome =
        zone::apply_to(file, &fz.spec, &records, &preview_opts).map_err(render_err)?;
    if !check_mode && outcome.changed {
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
    let diff = outcome.diff(&path.display().to_string());
    Ok((
        ZoneResult {
            changed: outcome.changed,
            after: values
                .into_iter()
                .map(|(o, at)| (o, at.into_keys().collect()))
                .collect(),
            removed,
            diff: Some(diff),
            warnings,
        },
        outcome.content_changed,
        outcome.serial,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }
    fn dig(c: char) -> String {
        std::iter::repeat_n(c, 43).collect()
    }

    #[test]
    fn merge_keeps_recent_and_wanted_values_with_their_first_time() {
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
        let expiry = Expiry {
            keep_seconds: 3600,
            retired: BTreeSet::from([dig('x')]),
        };
        let (keep, removed) = merge_values(Some(&old), &wanted, 10_000, &expiry);
        let at = &keep[&owner];
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
        assert_eq!(removed[&owner], BTreeSet::from([dig('o'), dig('x')]));
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
