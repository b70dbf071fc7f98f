//! The cert root: `<root>/.certbridge/` (accounts, the lock, per-cert metadata, keys of orders
//! in flight, the self-sign test CA) and one real directory per cert whose service-facing files
//! switch between issuances in one atomic step.
//!
//! A cert directory looks like this:
//! ```text
//! privkey.pem -> current/privkey.pem      (and cert.pem, chain.pem, fullchain.pem, combined.pem,
//! <dir>.key   -> current/<dir>.key         <dir>.cer, ca.cer, fullchain.cer: all stable symlinks)
//! current     -> gen-7                    swapped by renaming a temp symlink over it
//! previous    -> gen-6                    kept for `rollback`
//! gen-6/ gen-7/                           complete, fsynced file sets
//! ```
//! A reader following `privkey.pem` and `cert.pem` at any instant sees one generation, old or
//! new, never a mix. acme.sh-era directories (real files) are migrated without a gap: their files
//! first become generation `gen-0`, then each name becomes a symlink to identical content.

use crate::certinfo::{self, IssuedSet, KeyType, LeafInfo};
use certbridge_core::crash_point;
use certbridge_core::fsutil::{self, FileAttrs, Lock, LockError};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The reserved bookkeeping directory under the cert root.
pub const RESERVED: &str = ".certbridge";

/// Errors of the cert store; each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the metadata file {path} is damaged ({detail}); remove it to start that cert afresh")]
    BadMeta { path: PathBuf, detail: String },
    #[error("{0} is not a directory (a cert directory must be a real directory)")]
    NotADirectory(PathBuf),
    #[error("no previous generation to roll back to in {0}")]
    NoPrevious(PathBuf),
    #[error(transparent)]
    Cert(#[from] certinfo::CertError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// The order in flight for one cert (written by acme_request, consumed by acme_finalize).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingOrder {
    /// None for `self_sign` (no CA, nothing to resume).
    pub url: Option<String>,
    pub created_at: i64,
    pub directory: String,
    pub account_url: Option<String>,
    pub names: Vec<String>,
    pub key_type: KeyType,
    pub staging: bool,
    pub self_sign: bool,
    /// The dns-01 values this order needs (empty when every authorization was valid).
    #[serde(default)]
    pub challenges: Vec<ChallengeRecord>,
    /// The profile asked for (None: the CA's default).
    #[serde(default)]
    pub profile: Option<String>,
    /// The ARI id of the certificate this order replaces, when the CA accepted `replaces`.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// One dns-01 value to publish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub name: String,
    pub record: String,
    pub value: String,
}

/// What the decision needs about one cert, kept across runs (JSON, 0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The installed generation's facts (None before the first issuance).
    pub names: Vec<String>,
    pub key_type: Option<KeyType>,
    pub directory: Option<String>,
    #[serde(default)]
    pub staging: bool,
    #[serde(default)]
    pub self_signed: bool,
    pub account_url: Option<String>,
    pub profile: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<i64>,
    pub issuer: Option<String>,
    pub issued_at: Option<i64>,
    pub pending: Option<PendingOrder>,
    /// Backoff after failures.
    #[serde(default)]
    pub failures: u32,
    pub retry_not_before: Option<i64>,
    pub last_failure: Option<i64>,
    pub last_problem: Option<String>,
    /// Files changed and the handler has not acknowledged it yet.
    #[serde(default)]
    pub handler_owed: bool,
    /// The CA's renewal information (RFC 9773) about the installed certificate.
    #[serde(default)]
    pub ari: Option<AriState>,
    /// dns-01 values of finished or abandoned orders, reported until published away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<crate::retired::RetiredValue>,
}

/// What the last renewal-information check found for one installed certificate, and when to
/// check again. Kept so that pulses between checks need no network call, and so that the
/// random point chosen inside a window is chosen once, not at every pulse.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AriState {
    /// Serial of the certificate this is about (a new certificate starts afresh).
    pub serial: String,
    /// Its ARI id, `base64url(AKI).base64url(serial)`.
    pub cert_id: Option<String>,
    /// The directory offered `renewalInfo` at the last check.
    pub supported: bool,
    pub checked_at: i64,
    /// No check before this: the CA's Retry-After. None: `ari_interval` after `checked_at`
    /// (within the hour after a failure), with the interval of the run that looks.
    pub next_check: Option<i64>,
    /// The suggested window (unix seconds) and the point chosen inside it.
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub renew_at: Option<i64>,
    pub explanation_url: Option<String>,
    /// Set when the last check failed (the lifetime rule then applies).
    pub last_error: Option<String>,
}

impl Meta {
    /// Records `pending`'s certificate (`leaf`) as installed at `now`: what a successful
    /// acme_finalize records, whether it saw the install through or a later run finds it.
    pub fn record_issued(&mut self, pending: &PendingOrder, leaf: &LeafInfo, now: i64) {
        self.names = pending.names.clone();
        self.key_type = Some(pending.key_type);
        self.directory = Some(pending.directory.clone());
        self.staging = pending.staging;
        self.self_signed = pending.self_sign;
        self.account_url = pending.account_url.clone();
        self.profile = pending.profile.clone();
        // Renewal information was about the replaced certificate.
        self.ari = None;
        self.serial = Some(leaf.serial.clone());
        self.not_after = Some(leaf.not_after);
        self.issuer = Some(leaf.issuer.clone());
        self.issued_at = Some(now);
        crate::retired::retire(&mut self.retired, pending, now);
        self.pending = None;
        self.failures = 0;
        self.retry_not_before = None;
        self.last_problem = None;
        self.handler_owed = true;
    }

    /// Records the facts of an installed certificate that no order of this metadata explains
    /// (a rollback, or a generation whose order was forgotten), and owes the handler.
    pub fn adopt_installed(&mut self, leaf: &LeafInfo) {
        if self.serial.as_deref() != Some(leaf.serial.as_str()) {
            self.ari = None;
        }
        self.serial = Some(leaf.serial.clone());
        self.not_after = Some(leaf.not_after);
        self.issuer = Some(leaf.issuer.clone());
        self.names = leaf.names.iter().cloned().collect();
        self.key_type = leaf.key_type;
        self.handler_owed = true;
    }
}

/// What [`Store::reconcile`] found when it compared a cert's metadata with its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The metadata records what is installed.
    InStep,
    /// The installed certificate is the pending order's (a run was killed between the swap
    /// and saving the metadata): recorded as that order's success, the order is done.
    OrderInstalled { serial: String },
    /// Another certificate is installed than recorded (a killed rollback, or an install whose
    /// order is not the pending one): its facts are adopted.
    Adopted { serial: String },
}

/// The service-facing file names, given the directory's name (`<dir>.key`, `<dir>.cer`).
pub fn service_files(dir_name: &str) -> Vec<(String, FileRole)> {
    vec![
        ("privkey.pem".into(), FileRole::Key),
        ("cert.pem".into(), FileRole::Cert),
        ("chain.pem".into(), FileRole::Chain),
        ("fullchain.pem".into(), FileRole::FullChain),
        ("combined.pem".into(), FileRole::Combined),
        (format!("{dir_name}.key"), FileRole::Key),
        (format!("{dir_name}.cer"), FileRole::Cert),
        ("ca.cer".into(), FileRole::Chain),
        ("fullchain.cer".into(), FileRole::FullChain),
    ]
}

/// What a service-facing file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    Key,
    Cert,
    Chain,
    FullChain,
    Combined,
}

impl FileRole {
    fn content(self, set: &IssuedSet) -> String {
        match self {
            FileRole::Key => set.key_pem.clone(),
            FileRole::Cert => set.cert_pem.clone(),
            FileRole::Chain => set.chain_pem.clone(),
            FileRole::FullChain => format!("{}{}", set.cert_pem, set.chain_pem),
            FileRole::Combined => format!(
                "{}{}{}",
                ensure_nl(&set.key_pem),
                set.cert_pem,
                set.chain_pem
            ),
        }
    }
    fn private(self) -> bool {
        matches!(self, FileRole::Key | FileRole::Combined)
    }
}

fn ensure_nl(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// How a cert directory is laid out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Nothing usable there.
    Missing,
    /// Our generations (`current` link).
    Managed,
    /// acme.sh-era real files `<dir>.cer` / `<dir>.key`.
    AcmeSh,
}

/// What is installed in a cert directory.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub layout: Layout,
    pub leaf: Option<LeafInfo>,
    pub key_matches: bool,
}

impl OnDisk {
    fn missing() -> OnDisk {
        OnDisk {
            layout: Layout::Missing,
            leaf: None,
            key_matches: false,
        }
    }
}

/// The cert root and how key files are owned.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    /// Group of key files (0640) and cert dirs (2750); None: keys 0600, dirs 0755.
    pub gid: Option<u32>,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>, gid: Option<u32>) -> Store {
        Store {
            root: root.into(),
            gid,
        }
    }

    pub fn reserved(&self) -> PathBuf {
        self.root.join(RESERVED)
    }
    pub fn lock_path(&self) -> PathBuf {
        self.reserved().join("lock")
    }
    pub fn meta_path(&self, cert: &str) -> PathBuf {
        self.reserved().join("certs").join(format!("{cert}.json"))
    }
    pub fn pending_key_path(&self, cert: &str) -> PathBuf {
        self.reserved().join("pending").join(format!("{cert}.key"))
    }
    pub fn selfsign_dir(&self) -> PathBuf {
        self.reserved().join("selfsign")
    }
    pub fn cert_dir(&self, dir_name: &str) -> PathBuf {
        self.root.join(dir_name)
    }

    /// Creates the cert root and `.certbridge/` (0700) with its subdirectories.
    pub fn ensure_reserved(&self) -> Result<(), StoreError> {
        if !self.root.exists() {
            fs::create_dir_all(&self.root)
                .map_err(io_err("cannot create the cert root", &self.root))?;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
                .map_err(io_err("cannot set the mode of", &self.root))?;
        }
        for sub in ["", "certs", "pending", "accounts"] {
            let p = self.reserved().join(sub);
            if !p.is_dir() {
                fs::create_dir_all(&p).map_err(io_err("cannot create", &p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("cannot set the mode of", &p))?;
            }
        }
        Ok(())
    }

    /// Takes the one lock of this cert root, waiting up to `timeout`.
    pub fn lock(&self, timeout: Duration) -> Result<Lock, StoreError> {
        self.ensure_reserved()?;
        Ok(Lock::acquire(&self.lock_path(), timeout)?)
    }

    pub fn load_meta(&self, cert: &str) -> Result<Option<Meta>, StoreError> {
        let path = self.meta_path(cert);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::BadMeta {
                    path,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    pub fn save_meta(&self, cert: &str, meta: &Meta) -> Result<(), StoreError> {
        let path = self.meta_path(cert);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let text = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::BadMeta {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let attrs = FileAttrs {
            mode: Some(0o600),
            ..Default::default()
        };
        fsutil::atomic_write(&path, &text, &attrs, None).map_err(io_err("cannot write", &path))
    }

    /// The DER of the installed leaf (for its ARI id), if any.
    pub fn installed_leaf_der(&self, dir_name: &str) -> Option<Vec<u8>> {
        let (cert_path, _, _) = self.installed_paths(dir_name)?;
        let pem = fs::read_to_string(cert_path).ok()?;
        certinfo::pem_certs(&pem, "the installed certificate")
            .ok()?
            .into_iter()
            .next()
    }

    /// Where the installed certificate and key are: in the generation `current` names (never
    /// through a `current` that points anywhere else), or acme.sh's real files.
    fn installed_paths(&self, dir_name: &str) -> Option<(PathBuf, PathBuf, Layout)> {
        let dir = self.cert_dir(dir_name);
        if is_symlink(&dir.join("current")) {
            let gen = dir.join(gen_link(&dir, "current")?);
            Some(match gen_files(&gen, dir_name) {
                Some((cert, key)) => (cert, key, Layout::Managed),
                None => (
                    gen.join("cert.pem"),
                    gen.join("privkey.pem"),
                    Layout::Managed,
                ),
            })
        } else {
            Some((
                dir.join(format!("{dir_name}.cer")),
                dir.join(format!("{dir_name}.key")),
                Layout::AcmeSh,
            ))
        }
    }

    /// Reads what is installed in `<root>/<dir_name>/`: our layout, or acme.sh's real files.
    pub fn read_installed(&self, dir_name: &str) -> OnDisk {
        let Some((cert_path, key_path, layout)) = self.installed_paths(dir_name) else {
            return OnDisk::missing();
        };
        let (Ok(cert_pem), Ok(key_pem)) = (
            fs::read_to_string(&cert_path),
            fs::read_to_string(&key_path),
        ) else {
            return OnDisk::missing();
        };
        let Ok(leaf) = certinfo::leaf_info_pem(&cert_pem, "the installed certificate") else {
            return OnDisk::missing();
        };
        OnDisk {
            layout,
            key_matches: certinfo::key_matches(&key_pem, &leaf),
            leaf: Some(leaf),
        }
    }

    /// Makes `meta` (loaded under the lock) agree with what is installed in `dir_name`. The
    /// swap of `current` and the save of the metadata cannot be one step: a run killed between
    /// them leaves a new certificate that the metadata does not record. When the installed
    /// serial is not the recorded one, the installed certificate is the truth: if its key is
    /// the pending order's key it is that order's result (recorded exactly as acme_finalize
    /// records a success; the caller removes the pending key once `meta` is saved), else its
    /// facts are adopted. Either way the handler is owed: services may have read new files.
    /// `on_disk` is [`Store::read_installed`] of `dir_name`.
    pub fn reconcile(
        &self,
        cert: &str,
        dir_name: &str,
        meta: &mut Meta,
        on_disk: &OnDisk,
        now: i64,
    ) -> Reconciled {
        let Some(leaf) = on_disk.leaf.as_ref() else {
            return Reconciled::InStep;
        };
        if on_disk.layout != Layout::Managed || meta.serial.as_deref() == Some(&leaf.serial) {
            return Reconciled::InStep;
        }
        // acme.sh's files moved into generation 0 by a run killed before its swap: the same
        // certificate services read before, which no metadata recorded.
        let gen = gen_link(&self.cert_dir(dir_name), "current");
        if meta.serial.is_none() && gen.as_deref() == Some("gen-0") {
            return Reconciled::InStep;
        }
        let serial = leaf.serial.clone();
        let order_key = meta.pending.as_ref().and_then(|_| {
            fs::read_to_string(self.pending_key_path(cert))
                .ok()
                .filter(|pem| certinfo::key_matches(pem, leaf))
        });
        match (meta.pending.clone(), order_key) {
            (Some(pending), Some(_)) => {
                meta.record_issued(&pending, leaf, now);
                Reconciled::OrderInstalled { serial }
            }
            _ => {
                meta.adopt_installed(leaf);
                Reconciled::Adopted { serial }
            }
        }
    }

    /// Checks the names this store owns in a managed cert directory (one with a `current`
    /// link) and repairs what is wrong, never following what it replaces. `current` must be
    /// a link to a `gen-N` directory of the cert dir; when it is not, it is pointed at the
    /// complete generation whose certificate has `serial` (the recorded one), else at the
    /// newest complete generation, else removed (the cert then reads as missing and is issued
    /// again). Every service-facing name must be a symlink to `current/<name>`; anything else
    /// (a real file, a link elsewhere, a dangling one) is replaced by that link. Returns the
    /// names repaired; a name that cannot be replaced (a directory) is an error naming it.
    pub fn repair_layout(
        &self,
        dir_name: &str,
        serial: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let dir = self.cert_dir(dir_name);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
            || !is_symlink(&dir.join("current"))
        {
            return Ok(Vec::new());
        }
        let mut repaired = Vec::new();
        if gen_link(&dir, "current").is_none() {
            match best_generation(&dir, dir_name, serial) {
                Some(gen) => replace_symlink(&dir, "current", Path::new(&gen))?,
                None => {
                    let p = dir.join("current");
                    fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
                }
            }
            repaired.push("current".to_owned());
        }
        for (name, _) in service_files(dir_name) {
            let want = PathBuf::from("current").join(&name);
            if fs::read_link(dir.join(&name)).ok().as_deref() != Some(want.as_path()) {
                replace_symlink(&dir, &name, &want)?;
                repaired.push(name);
            }
        }
        if !repaired.is_empty() {
            fsutil::sync_dir(&dir).map_err(io_err("cannot sync", &dir))?;
        }
        Ok(repaired)
    }

    /// Removes what killed runs leave behind (call under the lock, when no other run can be
    /// writing): temp files of atomic writes in `.certbridge/` (metadata, order keys,
    /// accounts, the test CA), and in each of `dir_names` temp symlinks and generations that
    /// neither `current` nor `previous` names (only when `current` is sound). Returns what was
    /// removed.
    pub fn remove_leftovers<'a>(
        &self,
        dir_names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let mut removed = Vec::new();
        for sub in ["certs", "pending", "accounts", "selfsign"] {
            let d = self.reserved().join(sub);
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if is_temp_name(&entry.file_name().to_string_lossy())
                    && fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir())
                {
                    fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
                    removed.push(p);
                }
            }
        }
        for dir_name in dir_names {
            let dir = self.cert_dir(dir_name);
            if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                removed.extend(self.prune(&dir)?);
            }
        }
        Ok(removed)
    }

    fn dir_mode(&self) -> u32 {
        if self.gid.is_some() {
            0o2750
        } else {
            0o755
        }
    }

    fn make_dir(&self, path: &Path) -> Result<(), StoreError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(StoreError::NotADirectory(path.to_path_buf())),
            Err(_) => fs::create_dir(path).map_err(io_err("cannot create", path))?,
        }
        if let Some(gid) = self.gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(io_err("cannot set the group of", path))?;
        }
        // After chown, which may clear the set-gid bit.
        fs::set_permissions(path, fs::Permissions::from_mode(self.dir_mode()))
            .map_err(io_err("cannot set the mode of", path))
    }

    fn write_file(&self, path: &Path, data: &[u8], private: bool) -> Result<(), StoreError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err("cannot create", path))?;
        let mode = match (private, self.gid) {
            (true, Some(gid)) => {
                std::os::unix::fs::fchown(&f, None, Some(gid))
                    .map_err(io_err("cannot set the group of", path))?;
                0o640
            }
            (true, None) => 0o600,
            (false, _) => 0o644,
        };
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set the mode of", path))?;
        f.write_all(data).map_err(io_err("cannot write", path))?;
        f.sync_all().map_err(io_err("cannot sync", path))
    }

    /// Installs `set` as the new generation of `<root>/<dir_name>/` in one atomic swap,
    /// keeping the previous generation and pruning older ones. Returns the generation name.
    pub fn install(&self, dir_name: &str, set: &IssuedSet) -> Result<String, StoreError> {
        let dir = self.cert_dir(dir_name);
        self.make_dir(&dir)?;
        let files = service_files(dir_name);
        // acme.sh-era or otherwise real files: make them generation 0 first (same content).
        self.migrate_real_files(&dir, &files)?;

        let gen = format!("gen-{}", next_generation(&dir)?);
        let gen_dir = dir.join(&gen);
        self.make_dir(&gen_dir)?;
        for (name, role) in &files {
            self.write_file(
                &gen_dir.join(name),
                role.content(set).as_bytes(),
                role.private(),
            )?;
            if *role == FileRole::Key {
                crash_point!("after_key_written");
            }
        }
        fsutil::sync_dir(&gen_dir).map_err(io_err("cannot sync", &gen_dir))?;
        crash_point!("after_generation_fsynced");

        // Stable names: symlinks through `current`, whatever stood there (a link elsewhere, a
        // dangling one, a real file: replaced, never followed). Absent names get theirs now;
        // they dangle only while `current` does not have them yet, i.e. before the first swap.
        for (name, _) in &files {
            let want = PathBuf::from("current").join(name);
            if fs::read_link(dir.join(name)).ok().as_deref() != Some(want.as_path()) {
                replace_symlink(&dir, name, &want)?;
            }
        }
        // Only a sound `current` becomes `previous` (a link planted elsewhere is dropped).
        if let Some(old) = gen_link(&dir, "current") {
            replace_symlink(&dir, "previous", Path::new(&old))?;
        }
        crash_point!("before_swap");
        replace_symlink(&dir, "current", Path::new(&gen))?;
        fsutil::sync_dir(&dir).map_err(io_err("cannot sync", &dir))?;
        // From here until the caller saves the metadata, the metadata lags behind the files;
        // `reconcile` at the next run catches up.
        crash_point!("after_swap");
        crash_point!("before_prune");
        self.prune(&dir)?;
        crash_point!("after_prune");
        Ok(gen)
    }

    /// Turns real service files (acme.sh layout) into generation 0 plus symlinks, one name at
    /// a time, each step serving the same content as before.
    fn migrate_real_files(
        &self,
        dir: &Path,
        files: &[(String, FileRole)],
    ) -> Result<(), StoreError> {
        let real: Vec<&String> = files
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                fs::symlink_metadata(dir.join(n))
                    .map(|m| m.is_file())
                    .unwrap_or(false)
            })
            .collect();
        if real.is_empty() {
            return Ok(());
        }
        let gen0 = dir.join("gen-0");
        if dir.join("current").is_symlink() {
            // A managed dir with stray real files: those names take the managed content at the
            // next swap; keep nothing of them.
        } else {
            if gen0.exists() {
                fs::remove_dir_all(&gen0).map_err(io_err("cannot remove", &gen0))?;
            }
            self.make_dir(&gen0)?;
            for name in &real {
                let dst = gen0.join(name);
                fs::copy(dir.join(name), &dst).map_err(io_err("cannot copy", &dst))?;
                fs::File::open(&dst)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("cannot sync", &dst))?;
            }
            fsutil::sync_dir(&gen0).map_err(io_err("cannot sync", &gen0))?;
            replace_symlink(dir, "current", Path::new("gen-0"))?;
        }
        for name in real {
            replace_symlink(dir, name, &PathBuf::from("current").join(name))?;
        }
        fsutil::sync_dir(dir).map_err(io_err("cannot sync", dir))
    }

    /// Removes every generation but `current` and `previous`, and leftovers of crashed runs
    /// (temp symlinks `.<name>.tmp.<pid>`). Generations are removed only while `current` names
    /// one (else nothing tells which one services need). Returns what was removed.
    fn prune(&self, dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let current = gen_link(dir, "current");
        let keep: Vec<String> = [current.clone(), gen_link(dir, "previous")]
            .into_iter()
            .flatten()
            .collect();
        let mut removed = Vec::new();
        let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            let p = entry.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if gen_number(&name_str).is_some() && m.is_dir() {
                if current.is_some() && !keep.iter().any(|k| *k == name_str) {
                    fs::remove_dir_all(&p).map_err(io_err("cannot remove", &p))?;
                    removed.push(p);
                }
            } else if is_temp_name(&name_str) && !m.is_dir() {
                fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
                removed.push(p);
            }
        }
        Ok(removed)
    }

    /// Swaps `current` back to `previous` (and `previous` to what was current). Both must be
    /// generations of the directory.
    pub fn rollback(&self, dir_name: &str) -> Result<(), StoreError> {
        let dir = self.cert_dir(dir_name);
        let prev = gen_link(&dir, "previous")
            .filter(|p| gen_link(&dir, "current").as_ref() != Some(p))
            .ok_or_else(|| StoreError::NoPrevious(dir.clone()))?;
        let cur = gen_link(&dir, "current");
        crash_point!("before_swap");
        replace_symlink(&dir, "current", Path::new(&prev))?;
        // Until the caller saves the metadata, `reconcile` at the next run catches up.
        crash_point!("after_swap");
        if let Some(cur) = cur {
            replace_symlink(&dir, "previous", Path::new(&cur))?;
        }
        fsutil::sync_dir(&dir).map_err(io_err("cannot sync", &dir))
    }

    /// The key for `cert`'s order in flight: the persisted one when it exists and has the
    /// wanted type (a rerun finalizing the same order must use the same key), else a new one,
    /// persisted (0600, fsynced) before it is used.
    pub fn pending_key(&self, cert: &str, key_type: KeyType) -> Result<String, StoreError> {
        let path = self.pending_key_path(cert);
        if let Ok(pem) = fs::read_to_string(&path) {
            if let Ok(k) = certinfo::load_key(&pem) {
                if key_type_of(&k) == Some(key_type) {
                    return Ok(pem);
                }
            }
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let pem = key_type.generate()?.serialize_pem();
        let attrs = FileAttrs {
            mode: Some(0o600),
            ..Default::default()
        };
        fsutil::atomic_write(&path, pem.as_bytes(), &attrs, None)
            .map_err(io_err("cannot write", &path))?;
        crash_point!("after_key_written");
        Ok(pem)
    }

    /// Forgets the key of an order in flight (after install, or when a new order starts).
    pub fn clear_pending_key(&self, cert: &str) -> Result<(), StoreError> {
        let path = self.pending_key_path(cert);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("cannot remove", &path)(e))
            }
            _ => Ok(()),
        }
    }
}

/// The key type of a loaded key, by its signature algorithm and public key size.
pub fn key_type_of(key: &rcgen::KeyPair) -> Option<KeyType> {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        Some(KeyType::EcP256)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Some(KeyType::EcP384)
    } else {
        // RSA: the modulus length in the SPKI tells the size (the DER grows with it).
        let spki = rcgen::PublicKeyData::subject_public_key_info(key);
        match spki.len() {
            280..=300 => Some(KeyType::Rsa2048),
            400..=430 => Some(KeyType::Rsa3072),
            530..=560 => Some(KeyType::Rsa4096),
            _ => None,
        }
    }
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// N of a generation directory's name `gen-N` (decimal digits only).
fn gen_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("gen-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The generation `dir/<link>` points at: a plain `gen-N` that is a real directory of `dir`.
/// None for anything else (absent, not a symlink, a target elsewhere), never followed.
pub fn gen_link(dir: &Path, link: &str) -> Option<String> {
    let target = fs::read_link(dir.join(link)).ok()?;
    let name = target.to_str()?;
    gen_number(name)?;
    fs::symlink_metadata(dir.join(name))
        .is_ok_and(|m| m.is_dir())
        .then(|| name.to_owned())
}

/// A name of a temp file or temp symlink this crate's writes make (`.<name>.tmp.<pid>...`).
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// The certificate and key files of a generation directory: the certbot names, or the
/// acme.sh names in generation 0 migrated from an acme.sh directory. Regular files only.
fn gen_files(gen: &Path, dir_name: &str) -> Option<(PathBuf, PathBuf)> {
    let is_file = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
    [
        ("cert.pem".to_owned(), "privkey.pem".to_owned()),
        (format!("{dir_name}.cer"), format!("{dir_name}.key")),
    ]
    .into_iter()
    .map(|(c, k)| (gen.join(c), gen.join(k)))
    .find(|(c, k)| is_file(c) && is_file(k))
}

/// The generation to point a broken `current` at: the one holding a complete set (every
/// service file, a key matching the certificate) with serial `serial`, else the newest
/// complete one.
fn best_generation(dir: &Path, dir_name: &str, serial: Option<&str>) -> Option<String> {
    let mut gens: Vec<(u64, String)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let n = gen_number(&name)?;
            fs::symlink_metadata(e.path())
                .is_ok_and(|m| m.is_dir())
                .then_some((n, name))
        })
        .collect();
    gens.sort();
    let complete = |name: &str| -> Option<String> {
        let gen = dir.join(name);
        let all = service_files(dir_name)
            .iter()
            .all(|(f, _)| fs::symlink_metadata(gen.join(f)).is_ok_and(|m| m.is_file()));
        if !all {
            return None;
        }
        let cert = fs::read_to_string(gen.join("cert.pem")).ok()?;
        let key = fs::read_to_string(gen.join("privkey.pem")).ok()?;
        let leaf = certinfo::leaf_info_pem(&cert, "cert.pem").ok()?;
        certinfo::key_matches(&key, &leaf).then_some(leaf.serial)
    };
    let mut newest = None;
    for (_, name) in gens.iter().rev() {
        let Some(found) = complete(name) else {
            continue;
        };
        if serial == Some(found.as_str()) {
            return Some(name.clone());
        }
        newest.get_or_insert_with(|| name.clone());
    }
    newest
}

/// The next generation number: one above every `gen-N` present (crashed leftovers included).
fn next_generation(dir: &Path) -> Result<u64, StoreError> {
    let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
    let max = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(gen_number))
        .max();
    Ok(max.map(|m| m + 1).unwrap_or(1))
}

/// Points `dir/name` at `target` in one rename of a fresh temp symlink.
fn replace_symlink(dir: &Path, name: &str, target: &Path) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err("cannot create the symlink", &tmp))?;
    let dst = dir.join(name);
    crash_point!("temp_link", &dst);
    fs::rename(&tmp, &dst).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("cannot replace", &dst)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfsign::TestCa;

    fn issue(store: &Store, names: &[&str]) -> IssuedSet {
        let ca = TestCa::open_or_create(&store.selfsign_dir()).unwrap();
        let key = KeyType::EcP256.generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let chain = ca.sign(&key, &names, now).unwrap();
        certinfo::verify_issued(&chain, &key.serialize_pem(), &names, now).unwrap()
    }

    fn read(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn generations_swap_keep_previous_prune_older_and_roll_back() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), None);
        store.ensure_reserved().unwrap();
        let sets: Vec<IssuedSet> = (0..3).map(|_| issue(&store, &["a.example.test"])).collect();
        for s in &sets {
            store.install("a.example.test", s).unwrap();
        }
        let dir = store.cert_dir("a.example.test");
        assert_eq!(read(&dir, "privkey.pem"), sets[2].key_pem);
        assert_eq!(read(&dir, "a.example.test.key"), sets[2].key_pem);
        assert_eq!(read(&dir, "cert.pem"), sets[2].cert_pem);
        assert_eq!(
            read(&dir, "fullchain.cer"),
            format!("{}{}", sets[2].cert_pem, sets[2].chain_pem)
        );
        assert!(read(&dir, "combined.pem").starts_with(sets[2].key_pem.trim_end()));
        let gens: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gen-"))
            .collect();
        assert_eq!(gens.len(), 2, "{gens:?}");
        let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("privkey.pem"), 0o600);
        assert_eq!(mode("combined.pem"), 0o600);
        assert_eq!(mode("cert.pem"), 0o644);
        let on_disk = store.read_installed("a.example.test");
        assert_eq!(on_disk.layout, Layout::Managed);
        assert!(on_disk.key_matches);
        store.rollback("a.example.test").unwrap();
        assert_eq!(read(&dir, "privkey.pem"), sets[1].key_pem);
        assert_eq!(read(&dir, "cert.pem"), sets[1].cert_pem);
        store.rollback("a.example.test").unwrap();
        assert_eq!(read(&dir, "cert.pem"), sets[2].cert_pem);
    }

    #[test]
    fn acme_sh_directory_is_read_then_migrated() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), Some(0));
        store.ensure_reserved().unwrap();
        let old = issue(&store, &["b.example.test"]);
        let dir = store.cert_dir("b.example.test");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("b.example.test.key"), &old.key_pem).unwrap();
        fs::write(dir.join("b.example.test.cer"), &old.cert_pem).unwrap();
        fs::write(dir.join("ca.cer"), &old.chain_pem).unwrap();
        let on_disk = store.read_installed("b.example.test");
        assert_eq!(on_disk.layout, Layout::AcmeSh);
        assert!(on_disk.key_matches);
        let new = issue(&store, &["b.example.test"]);
        store.install("b.example.test", &new).unwrap();
        assert!(fs::symlink_metadata(dir.join("b.example.test.cer"))
            .unwrap()
            .is_symlink());
        assert_eq!(read(&dir, "b.example.test.cer"), new.cert_pem);
        assert_eq!(read(&dir, "privkey.pem"), new.key_pem);
        let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("privkey.pem"), 0o640);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
            0o2750
        );
        // The acme.sh generation is kept as previous and can be restored.
        store.rollback("b.example.test").unwrap();
        assert_eq!(read(&dir, "b.example.test.cer"), old.cert_pem);
    }

    #[test]
    fn pending_key_is_persisted_and_reused_for_the_same_type() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), None);
        store.ensure_reserved().unwrap();
        let k1 = store.pending_key("c", KeyType::EcP384).unwrap();
        assert_eq!(store.pending_key("c", KeyType::EcP384).unwrap(), k1);
        let k2 = store.pending_key("c", KeyType::EcP256).unwrap();
        assert_ne!(k1, k2);
        store.clear_pending_key("c").unwrap();
        assert!(!store.pending_key_path("c").exists());
        let rsa = KeyType::Rsa2048.generate().unwrap();
        assert_eq!(key_type_of(&rsa), Some(KeyType::Rsa2048));
    }

    fn pending_for(names: &[&str]) -> PendingOrder {
        PendingOrder {
            url: None,
            created_at: 0,
            directory: "self-sign".into(),
            account_url: None,
            names: names.iter().map(|s| s.to_string()).collect(),
            key_type: KeyType::EcP256,
            staging: true,
            self_sign: true,
            challenges: Vec::new(),
            profile: None,
            replaces: None,
        }
    }

    #[test]
    fn reconcile_records_an_unrecorded_install_as_its_orders_and_adopts_a_rollback() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), None);
        store.ensure_reserved().unwrap();
        let names = ["r.example.test"];
        let a = issue(&store, &names);
        store.install("r.example.test", &a).unwrap();
        let mut meta = Meta::default();
        meta.record_issued(&pending_for(&names), &a.leaf, 1);
        meta.handler_owed = false;
        let on_disk = store.read_installed("r.example.test");
        assert_eq!(
            store.reconcile("r", "r.example.test", &mut meta, &on_disk, 2),
            Reconciled::InStep
        );
        assert!(!meta.handler_owed);

        // An order in flight whose key is persisted; its certificate is installed, then the
        // run dies before saving the metadata.
        let b = issue(&store, &names);
        meta.pending = Some(pending_for(&names));
        let key_path = store.pending_key_path("r");
        fs::write(&key_path, &b.key_pem).unwrap();
        store.install("r.example.test", &b).unwrap();
        let on_disk = store.read_installed("r.example.test");
        assert_eq!(
            store.reconcile("r", "r.example.test", &mut meta, &on_disk, 3),
            Reconciled::OrderInstalled {
                serial: b.leaf.serial.clone()
            }
        );
        let mut want = Meta::default();
        want.record_issued(&pending_for(&names), &b.leaf, 3);
        assert_eq!(meta, want, "exactly what a successful finalize records");

        // A rollback whose metadata save was lost: the installed facts are adopted, the
        // pending order (another key) is kept.
        meta.handler_owed = false;
        meta.pending = Some(pending_for(&names));
        store.rollback("r.example.test").unwrap();
        let on_disk = store.read_installed("r.example.test");
        assert_eq!(
            store.reconcile("r", "r.example.test", &mut meta, &on_disk, 4),
            Reconciled::Adopted {
                serial: a.leaf.serial.clone()
            }
        );
        assert_eq!(meta.serial.as_deref(), Some(a.leaf.serial.as_str()));
        assert!(meta.handler_owed && meta.pending.is_some());
    }

    #[test]
    fn broken_stable_names_and_current_are_repaired_without_following_them() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), None);
        store.ensure_reserved().unwrap();
        let names = ["s.example.test"];
        let sets: Vec<IssuedSet> = (0..2).map(|_| issue(&store, &names)).collect();
        for set in &sets {
            store.install("s.example.test", set).unwrap();
        }
        let dir = store.cert_dir("s.example.test");
        assert_eq!(
            store.repair_layout("s.example.test", None).unwrap(),
            Vec::<String>::new()
        );
        let other = root.path().join("other.pem");
        fs::write(&other, "not ours").unwrap();
        fs::remove_file(dir.join("privkey.pem")).unwrap();
        std::os::unix::fs::symlink(&other, dir.join("privkey.pem")).unwrap();
        fs::remove_file(dir.join("cert.pem")).unwrap();
        fs::write(dir.join("cert.pem"), "a real file").unwrap();
        fs::remove_file(dir.join("chain.pem")).unwrap();
        std::os::unix::fs::symlink("nowhere/chain.pem", dir.join("chain.pem")).unwrap();
        fs::remove_file(dir.join("fullchain.pem")).unwrap();
        // `current` planted outside the directory: never read, pointed back at the generation
        // the metadata records (the older one here, not the newest).
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("cert.pem"), &sets[0].cert_pem).unwrap();
        fs::write(elsewhere.join("privkey.pem"), &sets[0].key_pem).unwrap();
        fs::remove_file(dir.join("current")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("current")).unwrap();
        assert_eq!(
            store.read_installed("s.example.test").layout,
            Layout::Missing
        );
        assert!(store.installed_leaf_der("s.example.test").is_none());
        let mut fixed = store
            .repair_layout("s.example.test", Some(&sets[0].leaf.serial))
            .unwrap();
        fixed.sort();
        assert_eq!(
            fixed,
            [
                "cert.pem",
                "chain.pem",
                "current",
                "fullchain.pem",
                "privkey.pem"
            ]
        );
        assert_eq!(fs::read_to_string(&other).unwrap(), "not ours");
        assert_eq!(read(&dir, "privkey.pem"), sets[0].key_pem);
        assert_eq!(read(&dir, "cert.pem"), sets[0].cert_pem);
        assert_eq!(
            read(&dir, "fullchain.pem"),
            format!("{}{}", sets[0].cert_pem, sets[0].chain_pem)
        );
        let on_disk = store.read_installed("s.example.test");
        assert_eq!(on_disk.leaf.unwrap().serial, sets[0].leaf.serial);
        // Without a recorded serial: the newest complete generation.
        fs::remove_file(dir.join("current")).unwrap();
        std::os::unix::fs::symlink("gen-../..", dir.join("current")).unwrap();
        assert_eq!(
            store.repair_layout("s.example.test", None).unwrap(),
            ["current"]
        );
        assert_eq!(read(&dir, "cert.pem"), sets[1].cert_pem);
        // A name that is a directory cannot be replaced: the error names it.
        fs::remove_file(dir.join("ca.cer")).unwrap();
        fs::create_dir(dir.join("ca.cer")).unwrap();
        fs::write(dir.join("ca.cer/x"), "x").unwrap();
        let err = store
            .repair_layout("s.example.test", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&dir.join("ca.cer").display().to_string()),
            "{err}"
        );
        // An install replaces whatever stands at a stable name, too.
        fs::remove_dir_all(dir.join("ca.cer")).unwrap();
        std::os::unix::fs::symlink(&other, dir.join("ca.cer")).unwrap();
        let next = issue(&store, &names);
        store.install("s.example.test", &next).unwrap();
        assert_eq!(read(&dir, "ca.cer"), next.chain_pem);
        assert_eq!(fs::read_to_string(&other).unwrap(), "not ours");
    }

    #[test]
    fn leftovers_of_killed_runs_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), None);
        store.ensure_reserved().unwrap();
        let names = ["t.example.test"];
        for _ in 0..2 {
            let set = issue(&store, &names);
            store.install("t.example.test", &set).unwrap();
        }
        let dir = store.cert_dir("t.example.test");
        let planted = [
            store.reserved().join("pending/.t.key.tmp.4242.0"),
            store.reserved().join("certs/.t.json.tmp.4242.0"),
            store.reserved().join("accounts/.x.json.tmp.4242.1"),
        ];
        for p in &planted {
            fs::write(p, "left by a kill").unwrap();
        }
        std::os::unix::fs::symlink("gen-9", dir.join(".current.tmp.4242")).unwrap();
        std::os::unix::fs::symlink("current/cert.pem", dir.join(".cert.pem.tmp.4242")).unwrap();
        // A complete generation a killed install never swapped in.
        fs::create_dir(dir.join("gen-9")).unwrap();
        fs::write(dir.join("gen-9/privkey.pem"), "key").unwrap();
        let kept = [
            store.reserved().join("certs/t.json"),
            store.pending_key_path("t"),
        ];
        for p in &kept {
            fs::write(p, "{}").unwrap();
        }
        let mut removed = store.remove_leftovers(["t.example.test"]).unwrap();
        removed.sort();
        let mut want: Vec<PathBuf> = planted.to_vec();
        want.extend([
            dir.join(".cert.pem.tmp.4242"),
            dir.join(".current.tmp.4242"),
            dir.join("gen-9"),
        ]);
        want.sort();
        assert_eq!(removed, want);
        for p in &kept {
            assert!(p.exists(), "{}", p.display());
        }
        assert!(dir.join("gen-1").is_dir() && dir.join("gen-2").is_dir());
        assert!(!read(&dir, "cert.pem").is_empty());
        // A `current` that names no generation: no generation is removed.
        fs::create_dir(dir.join("gen-10")).unwrap();
        fs::remove_file(dir.join("current")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("current")).unwrap();
        assert_eq!(
            store.remove_leftovers(["t.example.test"]).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert!(dir.join("gen-10").is_dir());
    }

    #[test]
    fn meta_round_trips() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path(), None);
        assert_eq!(store.load_meta("x").unwrap(), None);
        let meta = Meta {
            names: vec!["a.example.test".into()],
            key_type: Some(KeyType::Rsa3072),
            handler_owed: true,
            ..Default::default()
        };
        store.ensure_reserved().unwrap();
        store.save_meta("x", &meta).unwrap();
        assert_eq!(store.load_meta("x").unwrap(), Some(meta));
    }
}
