//! The `acme_http_publish` module: http-01 token files in webroots. Each token goes only to
//! `<webroot>/.well-known/acme-challenge/<token>` (mode 0644, written atomically), reached
//! through directory handles that never follow a symbolic link; what was written is remembered
//! in `<state_dir>/http-01.json`, so tokens of finished or abandoned orders are removed later
//! (`retired` at once, any other once older than `keep_seconds`). One bad entry never blocks the
//! others: it goes to `rejected` with the reason.

use crate::fsutil::{self, Dir, EntryKind, FileAttrs, Lock};
use crate::protocol::{coerce, limits, Failure, Invocation, Reply};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Default of `keep_seconds`: tokens this module wrote that no pulse lists any more are removed
/// once older than this (younger ones may belong to a pulse still running).
pub const DEFAULT_KEEP_SECONDS: u64 = 3600;
/// Where the token files live under a webroot.
pub const CHALLENGE_DIRS: [&str; 2] = [".well-known", "acme-challenge"];
const STATE_FILE: &str = "http-01.json";
const LOCK_FILE: &str = ".http-01.lock";
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

fn default_state_dir() -> String {
    "/var/lib/certbridge".into()
}

/// One token to serve, as `acme_request` listed it in `acme_http_required` (plus `host`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub token: String,
    pub key_authorization: String,
    pub webroot: String,
    #[serde(default)]
    pub cert: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub host: String,
}

/// A token file to remove now (an order finished).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct TokenPlace {
    pub token: String,
    pub webroot: String,
}

/// The module's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPublishOptions {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    #[serde(default)]
    pub retired: Vec<TokenPlace>,
    /// 0 to a year.
    #[serde(
        default,
        deserialize_with = "coerce::opt_seconds::<_, 0, { limits::YEAR }>"
    )]
    pub keep_seconds: Option<u64>,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
}

/// A token not written, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejected {
    pub token: String,
    pub cert: String,
    pub name: String,
    pub host: String,
    pub reason: String,
}

/// What the module remembers of each token file it wrote: `<webroot>\0<token>` -> written at.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    written: BTreeMap<String, Written>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Written {
    webroot: String,
    token: String,
    at: i64,
}

fn key(webroot: &str, token: &str) -> String {
    format!("{webroot}\0{token}")
}

/// An http-01 token as RFC 8555 8.3 has it: base64url, at least 128 bits of entropy (22
/// characters); at most 256, so it is always a short file name.
pub fn check_token(token: &str) -> Result<(), String> {
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if token.len() < 22 || token.len() > 256 || !b64url(token) {
        return Err(format!(
            "`{token}` is not an http-01 token (22 to 256 base64url characters)"
        ));
    }
    Ok(())
}

/// `<token>.<thumbprint>` with a base64url SHA-256 thumbprint (43 characters).
fn check_key_authorization(token: &str, ka: &str) -> Result<(), String> {
    match ka.strip_prefix(token).and_then(|r| r.strip_prefix('.')) {
        Some(t) if t.len() == 43 && check_token(t).is_ok() => Ok(()),
        _ => Err(format!(
            "the key authorization is not `{token}.<43 base64url characters>`"
        )),
    }
}

/// A webroot as given: absolute, without `.`/`..` components.
pub fn check_webroot_path(webroot: &str) -> Result<PathBuf, String> {
    let p = Path::new(webroot);
    if !p.is_absolute() {
        return Err(format!("webroot `{webroot}` is not an absolute path"));
    }
    if p.components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(format!("webroot `{webroot}` has `.` or `..` components"));
    }
    Ok(p.to_path_buf())
}

/// The webroot as acme_http_publish will use it: an absolute directory, not a link, and
/// `.well-known` / `acme-challenge` (when there) no links either. Writes nothing.
pub fn check_webroot_dir(webroot: &str) -> Result<(), String> {
    challenge_dir(&check_webroot_path(webroot)?, false).map(|_| ())
}

/// Opens `<webroot>/.well-known/acme-challenge`, creating the two directories (0755) when
/// `create`; None when they are missing and not created. The webroot must be a directory, not
/// a symbolic link itself; `.well-known` and `acme-challenge` are never followed as links (one
/// there may lead anywhere: the token would be written outside the webroot).
fn challenge_dir(webroot: &Path, create: bool) -> Result<Option<Dir>, String> {
    let (parent, name) =
        Dir::open_parent(webroot).map_err(|e| format!("webroot {}: {e}", webroot.display()))?;
    match parent.entry(&name) {
        Ok(Some(EntryKind::Dir)) => {}
        Ok(Some(EntryKind::Symlink)) => {
            return Err(format!(
                "webroot {} is a symbolic link: give the directory it points at",
                webroot.display()
            ))
        }
        Ok(Some(_)) => return Err(format!("webroot {} is not a directory", webroot.display())),
        Ok(None) => return Err(format!("webroot {} does not exist", webroot.display())),
        Err(e) => return Err(format!("webroot {}: {e}", webroot.display())),
    }
    let mut dir = parent
        .subdir(&name)
        .map_err(|e| format!("webroot {}: {e}", webroot.display()))?;
    for sub in CHALLENGE_DIRS {
        let sub = OsStr::new(sub);
        let shown = dir.join(sub);
        let symlink = || {
            format!(
                "{} is a symbolic link, which is not followed (it could lead outside the webroot {}); make it a directory",
                shown.display(),
                webroot.display()
            )
        };
        let next = match dir.entry(sub) {
            Ok(Some(EntryKind::Symlink)) => return Err(symlink()),
            Ok(None) if !create => return Ok(None),
            Ok(None) => dir.subdir_or_create(sub, 0o755),
            _ => dir.subdir(sub),
        };
        dir = next.map_err(|e| match fsutil::refusal(&e) {
            Some(fsutil::Refused::Symlink) => symlink(),
            _ => format!("{}: {e}", shown.display()),
        })?;
    }
    Ok(Some(dir))
}

/// The token file's current content (None: missing, or not a plain file to keep).
fn current(dir: &Dir, token: &str) -> Option<Vec<u8>> {
    let mut f = dir.open_read(OsStr::new(token)).ok()??;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Everything the module reports.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub changed: bool,
    pub written: Vec<TokenPlace>,
    pub removed: Vec<TokenPlace>,
    pub rejected: Vec<Rejected>,
    #[serde(skip)]
    pub in_place: usize,
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// The module: options in, Ansible reply out.
pub fn run_module(opts: HttpPublishOptions, inv: &Invocation) -> Result<Reply, Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let report = publish(&opts, inv.check_mode, now)?;
    let mut reply = Reply::changed(report.changed);
    if inv.diff {
        let list = |v: &[TokenPlace]| {
            v.iter()
                .map(|t| format!("{}/.well-known/acme-challenge/{}\n", t.webroot, t.token))
                .collect::<String>()
        };
        reply.diff = Some(json!({
            "before": list(&report.removed),
            "after": list(&report.written),
            "before_header": "token files removed",
            "after_header": "token files written",
        }));
    }
    reply.set("written", &report.written);
    reply.set("removed", &report.removed);
    reply.set("rejected", &report.rejected);
    let fail = if !report.errors.is_empty() {
        Some(report.errors.join("; "))
    } else if !report.rejected.is_empty() && report.in_place == 0 {
        Some(format!(
            "no token could be written: {}",
            report
                .rejected
                .iter()
                .map(|r| format!(
                    "host {} cert {} name {}: {}",
                    r.host, r.cert, r.name, r.reason
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    } else {
        None
    };
    match fail {
        Some(msg) => Err(Failure::from_reply(msg, reply)),
        None => {
            for r in &report.rejected {
                reply.warn(format!(
                    "host {} cert {} name {}: token not written: {}",
                    r.host, r.cert, r.name, r.reason
                ));
            }
            Ok(reply)
        }
    }
}

/// Writes, removes and remembers; `now` is injected for tests.
pub fn publish(opts: &HttpPublishOptions, check_mode: bool, now: i64) -> Result<Report, Failure> {
    let keep = opts.keep_seconds.unwrap_or(DEFAULT_KEEP_SECONDS) as i64;
    let state_dir = check_webroot_path(&opts.state_dir).map_err(|_| {
        Failure::new(format!(
            "state_dir `{}` is not an absolute path",
            opts.state_dir
        ))
    })?;
    let mut report = Report::default();
    // Validate every place first: a bad entry is rejected (tokens) or fails the call (retired).
    let mut accepted = Vec::new();
    for t in &opts.tokens {
        let checked = check_token(&t.token)
            .and_then(|_| check_key_authorization(&t.token, &t.key_authorization))
            .and_then(|_| check_webroot_path(&t.webroot));
        match checked {
            Ok(root) => accepted.push((t, root)),
            Err(reason) => report.rejected.push(rejected(t, reason)),
        }
    }
    for r in &opts.retired {
        check_token(&r.token)
            .and_then(|_| check_webroot_path(&r.webroot))
            .map_err(|e| Failure::new(format!("retired: {e}")))?;
    }
    // The state directory is made on first use (root's, 0700); check mode only reads it.
    let state_root = if check_mode {
        Dir::open(&state_dir).ok()
    } else {
        std::fs::create_dir_all(&state_dir)
            .and_then(|_| Dir::open(&state_dir))
            .map(Some)
            .map_err(|e| Failure::new(format!("state_dir {}: {e}", state_dir.display())))?
    };
    let _lock = match (&state_root, check_mode) {
        (Some(d), false) => Some(
            Lock::acquire_in(d, OsStr::new(LOCK_FILE), LOCK_TIMEOUT)
                .map_err(|e| Failure::new(e.to_string()))?,
        ),
        _ => None,
    };
    let mut state: State = match state_root
        .as_ref()
        .and_then(|d| d.open_read(OsStr::new(STATE_FILE)).transpose())
    {
        None => State::default(),
        Some(Ok(f)) => serde_json::from_reader(f).unwrap_or_default(),
        Some(Err(e)) => {
            return Err(Failure::new(format!(
                "cannot read {}: {e}",
                state_dir.join(STATE_FILE).display()
            )))
        }
    };
    let before = serde_json::to_value(&state).unwrap_or_default();

    // Write (one webroot directory opened once per entry; a handful of tokens per pulse).
    for (t, root) in accepted {
        let dir = match challenge_dir(&root, !check_mode) {
            Ok(d) => d,
            Err(reason) => {
                report.rejected.push(rejected(t, reason));
                continue;
            }
        };
        let same = dir
            .as_ref()
            .and_then(|d| current(d, &t.token))
            .is_some_and(|c| c == t.key_authorization.as_bytes());
        let place = TokenPlace {
            token: t.token.clone(),
            webroot: t.webroot.clone(),
        };
        if !same {
            if let Some(d) = dir.as_ref().filter(|_| !check_mode) {
                let attrs = FileAttrs {
                    mode: Some(0o644),
                    ..FileAttrs::default()
                };
                // A rename replaces a symbolic link at the token path itself, never its target.
                if let Err(e) = d.replace(
                    OsStr::new(&t.token),
                    t.key_authorization.as_bytes(),
                    &attrs,
                    None,
                    None,
                ) {
                    let reason = format!(
                        "cannot write {}: {e}",
                        d.join(OsStr::new(&t.token)).display()
                    );
                    report.rejected.push(rejected(t, reason));
                    continue;
                }
            }
            if !report.written.contains(&place) {
                report.written.push(place);
            }
        }
        report.in_place += 1;
        state
            .written
            .entry(key(&t.webroot, &t.token))
            .or_insert(Written {
                webroot: t.webroot.clone(),
                token: t.token.clone(),
                at: now,
            });
    }

    // Remove: retired now; any other this module wrote, once older than keep_seconds.
    let wanted: Vec<String> = opts
        .tokens
        .iter()
        .map(|t| key(&t.webroot, &t.token))
        .collect();
    let mut to_remove: Vec<TokenPlace> = opts.retired.clone();
    for w in state.written.values() {
        if !wanted.contains(&key(&w.webroot, &w.token)) && now.saturating_sub(w.at) >= keep {
            to_remove.push(TokenPlace {
                token: w.token.clone(),
                webroot: w.webroot.clone(),
            });
        }
    }
    to_remove.sort();
    to_remove.dedup();
    for place in to_remove {
        if wanted.contains(&key(&place.webroot, &place.token)) {
            continue;
        }
        let k = key(&place.webroot, &place.token);
        let dir = match challenge_dir(Path::new(&place.webroot), false) {
            Ok(Some(d)) => d,
            // Gone with its webroot, or never made: nothing to remove.
            Ok(None) | Err(_) => {
                state.written.remove(&k);
                continue;
            }
        };
        let present = matches!(dir.entry(OsStr::new(&place.token)), Ok(Some(_)));
        if present {
            if !check_mode {
                if let Err(e) = dir.remove_file(OsStr::new(&place.token)) {
                    report.errors.push(format!(
                        "cannot remove {}: {e}",
                        dir.join(OsStr::new(&place.token)).display()
                    ));
                    continue;
                }
            }
            report.removed.push(place);
        }
        state.written.remove(&k);
    }

    report.changed = !report.written.is_empty() || !report.removed.is_empty();
    if !check_mode && serde_json::to_value(&state).unwrap_or_default() != before {
        if let Some(d) = &state_root {
            let data = serde_json::to_vec_pretty(&state).unwrap_or_default();
            let attrs = FileAttrs {
                mode: Some(0o600),
                ..FileAttrs::default()
            };
            if let Err(e) = d.replace(OsStr::new(STATE_FILE), &data, &attrs, None, None) {
                report.errors.push(format!(
                    "cannot write {}: {e}",
                    state_dir.join(STATE_FILE).display()
                ));
            }
        }
    }
    Ok(report)
}

fn rejected(t: &TokenEntry, reason: String) -> Rejected {
    Rejected {
        token: t.token.clone(),
        cert: t.cert.clone(),
        name: t.name.clone(),
        host: t.host.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests;
