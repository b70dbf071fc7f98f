//! Safe file writes: atomic replace (temp file in the same directory, fsync, rename, fsync the
//! directory), ownership by name without NSS, advisory locks that name their holder, and the
//! test-only crash points.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Who should own a written file, and its mode.
#[derive(Debug, Clone, Default)]
pub struct FileAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A check run on the finished temp file before it replaces the target (see [`atomic_write`]).
pub type ValidateFn<'a> = &'a dyn Fn(&Path) -> io::Result<()>;

/// Writes `data` to `path` atomically. `validate` (if any) runs on the finished temp file
/// before the rename; an `Err` from it leaves the old file untouched.
/// An existing file's mode and ownership are kept unless `attrs` sets them.
pub fn atomic_write(
    path: &Path,
    data: &[u8],
    attrs: &FileAttrs,
    validate: Option<ValidateFn<'_>>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let existing = fs::metadata(path).ok();
    let mode = attrs
        .mode
        .or(existing.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);
    // Owner-only from the open (the umask can only narrow it): a private key is never readable
    // by anyone else, even in a temp file a kill leaves behind. The final mode comes below.
    let (tmp_path, mut tmp) = temp_file(&dir, path, 0o600)?;
    let result = (|| {
        tmp.write_all(data)?;
        crate::crash_point!("temp_written", path);
        let uid = attrs.uid.or(existing.as_ref().map(|m| m.uid()));
        let gid = attrs.gid.or(existing.as_ref().map(|m| m.gid()));
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&tmp, uid, gid)?;
        }
        // Mode after chown: chown clears set-id bits.
        tmp.set_permissions(fs::Permissions::from_mode(mode))?;
        tmp.sync_all()?;
        if let Some(check) = validate {
            check(&tmp_path)?;
        }
        crate::crash_point!("before_rename", path);
        fs::rename(&tmp_path, path)?;
        crate::crash_point!("after_rename", path);
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a new temp file next to `target`, named so it is recognisable and never collides.
pub fn temp_file(dir: &Path, target: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    for attempt in 0..100u32 {
        let name = format!(".{base}.tmp.{}.{attempt}", std::process::id());
        let p = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("cannot create a temporary file in {}", dir.display()),
    ))
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Looks a group up in `/etc/group` by name or number. Static binaries must not call into
/// the host's NSS libraries, so we read the file ourselves (LDAP-only groups: give the gid).
pub fn lookup_gid(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    lookup_id_in("/etc/group", group)
}

/// Looks a user up in `/etc/passwd` by name or number (see [`lookup_gid`]).
pub fn lookup_uid(user: &str) -> io::Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    lookup_id_in("/etc/passwd", user)
}

fn lookup_id_in(file: &str, name: &str) -> io::Result<u32> {
    let text = fs::read_to_string(file)?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let _pw = f.next()?;
            let id = f.next()?.parse::<u32>().ok()?;
            (n == name).then_some(id)
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{name}` is not in {file} (give its numeric id instead)"),
            )
        })
}

/// An exclusive advisory lock on a file, held until dropped. The file holds the holder's pid
/// so a waiter that gives up can name it.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another run holds the lock {path} (pid {holder}); gave up after {waited:?}")]
    Busy {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("cannot open the lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Lock {
    /// Takes the lock, waiting up to `timeout` (polling, so the deadline is honoured).
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Lock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(LockError::Busy {
                            path: path.to_path_buf(),
                            holder: if holder.is_empty() {
                                "unknown".into()
                            } else {
                                holder.into()
                            },
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(delay.min(timeout.saturating_sub(start.elapsed())));
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(Lock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

/// Crash points for the crash-consistency tests: with the `crash-points` feature, a process
/// whose `CERTBRIDGE_CRASH_AT` names this point dies on the spot (SIGKILL-like: no cleanup).
/// Without the feature this expands to nothing. `crash_point!(name, path)` also answers to
/// `name:<file name of path>`, to die at one write among many (`before_rename:alpha.json`).
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {
        #[cfg(feature = "crash-points")]
        {
            $crate::fsutil::maybe_crash($name);
        }
    };
    ($name:expr, $path:expr) => {
        #[cfg(feature = "crash-points")]
        {
            $crate::fsutil::maybe_crash_for($name, $path);
        }
    };
}

#[cfg(feature = "crash-points")]
pub fn maybe_crash(name: &str) {
    if std::env::var("CERTBRIDGE_CRASH_AT").as_deref() == Ok(name) {
        std::process::abort();
    }
}

#[cfg(feature = "crash-points")]
pub fn maybe_crash_for(name: &str, path: &Path) {
    maybe_crash(name);
    if let Some(file) = path.file_name() {
        maybe_crash(&format!("{name}:{}", file.to_string_lossy()));
    }
}

/// True when this build carries crash points (tests check release builds do not).
pub const CRASH_POINTS_ENABLED: bool = cfg!(feature = "crash-points");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_old_file_when_validation_fails() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zone");
        atomic_write(&p, b"old", &FileAttrs::default(), None).unwrap();
        let refuse = |_: &Path| -> io::Result<()> { Err(io::Error::other("bad zone")) };
        let err = atomic_write(&p, b"new", &FileAttrs::default(), Some(&refuse)).unwrap_err();
        assert!(err.to_string().contains("bad zone"));
        assert_eq!(fs::read(&p).unwrap(), b"old");
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_sets_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let attrs = FileAttrs {
            mode: Some(0o640),
            ..Default::default()
        };
        atomic_write(&p, b"a", &attrs, None).unwrap();
        atomic_write(&p, b"b", &FileAttrs::default(), None).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn atomic_write_temp_files_are_owner_only_from_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        // An existing world-readable target: the temp file still starts owner-only.
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let (tmp, f) = temp_file(dir.path(), &p, 0o600).unwrap();
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "temp file created {mode:o}");
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".k.key.tmp."));
        drop(f);
        fs::remove_file(&tmp).unwrap();
        // A private target: the temp file the validator sees is 0600, and so is the result.
        let attrs = FileAttrs {
            mode: Some(0o600),
            ..Default::default()
        };
        let seen = std::cell::Cell::new(0);
        let check = |t: &Path| -> io::Result<()> {
            seen.set(fs::symlink_metadata(t)?.permissions().mode() & 0o7777);
            Ok(())
        };
        atomic_write(&p, b"new", &attrs, Some(&check)).unwrap();
        assert_eq!(seen.get(), 0o600);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn second_lock_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let _held = Lock::acquire(&p, Duration::from_secs(1)).unwrap();
        let err = Lock::acquire(&p, Duration::from_millis(100)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains("lock"), "{msg}");
    }

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(lookup_gid("0").unwrap(), 0);
        assert_eq!(lookup_gid("root").unwrap(), 0);
        assert!(lookup_gid("no-such-group-certbridge").is_err());
    }
}
