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

mod install;
mod layout;
mod meta;
mod reconcile;
#[cfg(test)]
mod tests;

pub use layout::*;
pub use meta::*;

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
