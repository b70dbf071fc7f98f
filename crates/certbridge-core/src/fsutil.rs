//! Safe file writes: atomic replace (temp file in the same directory, fsync, rename, fsync the
//! directory), ownership by name without NSS, advisory locks that name their holder, and the
//! test-only crash points.
//!
//! Files in directories that a less privileged user can write (a zone directory writable by
//! the DNS server's user, a log directory) are reached through a [`Dir`]: the directory is
//! opened once, and every file in it is opened, created, renamed and checked relative to that
//! handle, never through a symbolic link in its last component (`O_NOFOLLOW`; new files with
//! `O_CREAT|O_EXCL`). A file that root writes in place (a lock, a log) must moreover be a
//! regular file with a single link, so a planted hard link cannot aim the write elsewhere.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

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

/// Why a file in a [`Dir`] was not opened: it is not the plain file certbridge expects there.
/// Carried inside an [`io::Error`] (see [`refusal`]); the message names no path, as the
/// caller's does ("cannot open the lock file /x: it is a symbolic link ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("it is a symbolic link, which is not followed (whoever can write its directory could point it at any file); remove it")]
    Symlink,
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it has {0} hard links, and a file written in place must have exactly one (another link could be any file of that filesystem); remove it")]
    HardLinks(u64),
}

impl From<Refused> for io::Error {
    fn from(r: Refused) -> io::Error {
        io::Error::other(r)
    }
}

/// The [`Refused`] reason inside `e`, when that is why an open failed.
pub fn refusal(e: &io::Error) -> Option<&Refused> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
}

/// What a directory entry is, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device: what it is, in words.
    Other(&'static str),
}

fn kind_words(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "an unknown kind of file",
    }
}

fn std_kind_words(t: fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "an unknown kind of file"
    }
}

/// A directory opened once. Files in it are reached relative to this handle (`openat` and
/// friends), so swapping the directory's path for another between two steps does not split
/// one operation across two directories, and the file name itself is never followed as a
/// symbolic link. The directory's own path is followed as given (it is the administrator's).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` (one we may search but not list is opened as a path
    /// handle, which serves everything but [`Dir::sync`] and [`Dir::set_mode`]).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty()) {
            Err(Errno::ACCESS) => {
                rustix::fs::openat(rustix::fs::CWD, path, flags | OFlags::PATH, Mode::empty())?
            }
            other => other?,
        };
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory that holds `file`; returns it with `file`'s name in it. A path
    /// without a file name (`/`, `x/..`) is an `InvalidInput` error.
    pub fn open_parent(file: &Path) -> io::Result<(Dir, OsString)> {
        let name = file.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not end in a file name",
            )
        })?;
        Ok((Dir::open(&parent_dir(file))?, name.to_owned()))
    }

    /// Opens the directory `name` in this one, not through a symbolic link.
    pub fn subdir(&self, name: &OsStr) -> io::Result<Dir> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(Refused::Symlink.into()),
            Err(e) => return Err(e.into()),
        };
        Ok(Dir {
            fd,
            path: self.join(name),
        })
    }

    /// Opens the directory `name` in this one, creating it with `mode` (exactly, whatever the
    /// umask) when missing; never through a symbolic link.
    pub fn subdir_or_create(&self, name: &OsStr, mode: u32) -> io::Result<Dir> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) => {
                let dir = self.subdir(name)?;
                dir.set_mode(mode)?;
                self.sync()?;
                Ok(dir)
            }
            Err(Errno::EXIST) => self.subdir(name),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the file (or symbolic link) `name` in this directory, never what a link points
    /// at; `Ok(false)` when there was none.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets this directory's mode (through its handle).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))?)
    }

    /// The path this directory was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name`'s path in this directory (for messages, and for programs that take a path).
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, without following it; `Ok(None)` when there is no such entry.
    pub fn entry(&self, name: &OsStr) -> io::Result<Option<EntryKind>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => EntryKind::File,
                FileType::Directory => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                other => EntryKind::Other(kind_words(other)),
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The target of the symbolic link `name`, as written in the link.
    pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let target = rustix::fs::readlinkat(&self.fd, name, Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    /// Opens `name` without following a symbolic link (which is [`Refused::Symlink`]); it
    /// must be a regular file, and when `in_place` (we write into it) have one link.
    fn open_checked(
        &self,
        name: &OsStr,
        flags: OFlags,
        mode: u32,
        in_place: bool,
    ) -> io::Result<File> {
        // NONBLOCK: opening a planted FIFO must not hang (it is refused just below).
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(Refused::Symlink.into()),
            Err(Errno::ISDIR) => return Err(Refused::NotRegular("a directory").into()),
            Err(e) => return Err(e.into()),
        };
        let file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(Refused::NotRegular(std_kind_words(meta.file_type())).into());
        }
        if in_place && meta.nlink() > 1 {
            return Err(Refused::HardLinks(meta.nlink()).into());
        }
        Ok(file)
    }

    /// Opens `name` for reading, not through a symbolic link; `Ok(None)` when it does not
    /// exist. Its metadata (`File::metadata`) is that of the file read.
    pub fn open_read(&self, name: &OsStr) -> io::Result<Option<File>> {
        match self.open_checked(name, OFlags::RDONLY, 0, false) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens (creating with `mode`) `name` for reading and writing in place: never through a
    /// symbolic link, only a regular file with one link.
    pub fn open_rw(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        self.open_checked(name, OFlags::RDWR | OFlags::CREATE, mode, true)
    }

    /// Opens (creating with `mode`) `name` for appending: never through a symbolic link,
    /// only a regular file with one link.
    pub fn open_append(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        self.open_checked(
            name,
            OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
            mode,
            true,
        )
    }

    /// Creates a new temp file for `target` in this directory (`O_CREAT|O_EXCL`: never an
    /// existing file or link), named like [`temp_file`]'s.
    fn create_temp(&self, target: &OsStr, mode: u32) -> io::Result<(OsString, File)> {
        let base = target.to_string_lossy();
        for attempt in 0..100u32 {
            let name = OsString::from(format!(".{base}.tmp.{}.{attempt}", std::process::id()));
            match rustix::fs::openat(
                &self.fd,
                &*name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("cannot create a temporary file in {}", self.path.display()),
        ))
    }

    /// fsyncs the directory so a rename in it is durable.
    pub fn sync(&self) -> io::Result<()> {
        match rustix::fs::fsync(&self.fd) {
            // A path handle (see [`Dir::open`]): the directory itself, opened to read.
            Err(Errno::BADF) => {
                let fd = rustix::fs::openat(
                    &self.fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                Ok(rustix::fs::fsync(&fd)?)
            }
            other => Ok(other?),
        }
    }

    /// Replaces `name` atomically with `data`, like [`atomic_write`] but relative to this
    /// handle: a new temp file (`O_CREAT|O_EXCL`), chowned and chmoded through its own
    /// descriptor, fsynced, checked by `validate` (given its path), renamed over `name` (a
    /// rename replaces a symbolic link itself, never its target), and the directory fsynced.
    /// Unset `attrs` fields keep those of `keep` (the file being replaced, as the caller
    /// opened it without following a link; never looked up again by name), else mode 0644.
    pub fn replace(
        &self,
        name: &OsStr,
        data: &[u8],
        attrs: &FileAttrs,
        keep: Option<&fs::Metadata>,
        validate: Option<ValidateFn<'_>>,
    ) -> io::Result<()> {
        let mode = attrs
            .mode
            .or(keep.map(|m| m.permissions().mode() & 0o7777))
            .unwrap_or(0o644);
        let (tmp_name, mut tmp) = self.create_temp(name, 0o600)?;
        let result = (|| {
            tmp.write_all(data)?;
            crate::crash_point!("temp_written");
            let uid = attrs.uid.or(keep.map(|m| m.uid()));
            let gid = attrs.gid.or(keep.map(|m| m.gid()));
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::fchown(&tmp, uid, gid)?;
            }
            // Mode after chown: chown clears set-id bits.
            tmp.set_permissions(fs::Permissions::from_mode(mode))?;
            tmp.sync_all()?;
            if let Some(check) = validate {
                check(&self.join(&tmp_name))?;
            }
            crate::crash_point!("before_rename");
            rustix::fs::renameat(&self.fd, &*tmp_name, &self.fd, name)?;
            crate::crash_point!("after_rename");
            self.sync()
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &*tmp_name, AtFlags::empty());
        }
        result
    }
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
/// so a waiter that gives up can say who held it. The lock file is opened relative to its
/// directory, never through a symbolic link, and only as a regular file with one link: it is
/// truncated and written, so a link planted in its place must not aim that at another file.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the lock {path} is held by another process; gave up after {waited:.1?}. {holder}")]
    Busy {
        path: PathBuf,
        /// What is known of the holder, in words (see [`Lock::acquire`]).
        holder: String,
        waited: Duration,
    },
    #[error("cannot open the lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Lock {
    /// Takes the lock, waiting up to `timeout` (polling, so the deadline is honoured). When
    /// it gives up, [`LockError::Busy`] says what is known of the holder, and only that: the
    /// pid `/proc/locks` names as the lock's holder, and the pid recorded in the file by the
    /// last certbridge run that took it, with whether that process still runs (a holder that
    /// is not certbridge writes no pid, so the recorded one may be stale).
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Lock, LockError> {
        let (dir, name) = Dir::open_parent(path).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Lock::acquire_in(&dir, &name, timeout)
    }

    /// As [`Lock::acquire`], for the file `name` of an open directory.
    pub fn acquire_in(dir: &Dir, name: &OsStr, timeout: Duration) -> Result<Lock, LockError> {
        let path = dir.join(name);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = dir.open_rw(name, 0o600).map_err(io_err)?;
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        return Err(LockError::Busy {
                            holder: describe_holder(&mut file, &path),
                            path,
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
        Ok(Lock { _file: file, path })
    }
}

/// What a process is: `Some(Some(comm))` running, `Some(None)` not running, `None` unknown
/// (no `/proc`).
fn process_state(pid: u32) -> Option<Option<String>> {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => Some(Some(comm.trim_end().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No such process, or no /proc at all.
            Path::new("/proc/self").exists().then_some(None)
        }
        Err(_) => None,
    }
}

/// The pids `/proc/locks` shows holding an flock on the file `meta` describes (empty when
/// it cannot tell: no `/proc`, a holder outside our pid namespace, an overlay filesystem).
fn flock_holders(meta: &fs::Metadata) -> Vec<u32> {
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let (major, minor) = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
    let mut pids = Vec::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5703913 0 EOF"; waiters have "->" after "1:".
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 6 || t[1] != "FLOCK" {
            continue;
        }
        let mut id = t[5].split(':');
        let (Some(maj), Some(min), Some(ino)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let same = u32::from_str_radix(maj, 16) == Ok(major)
            && u32::from_str_radix(min, 16) == Ok(minor)
            && ino.parse::<u64>() == Ok(meta.ino());
        match t[4].parse::<u32>() {
            Ok(pid) if same && pid != 0 && !pids.contains(&pid) => pids.push(pid),
            _ => {}
        }
    }
    pids
}

/// What is known of the holder of the lock `file`, in a sentence or two.
fn describe_holder(file: &mut File, path: &Path) -> String {
    let running = |pid: u32| match process_state(pid) {
        Some(Some(comm)) => format!("pid {pid} (`{comm}`)"),
        Some(None) => format!("pid {pid} (which has exited since)"),
        None => format!("pid {pid}"),
    };
    let holders = file
        .metadata()
        .map(|m| flock_holders(&m))
        .unwrap_or_default();
    let mut recorded = String::new();
    let _ = file.read_to_string(&mut recorded);
    let recorded = recorded.trim();
    let mut out = Vec::new();
    if !holders.is_empty() {
        let names: Vec<String> = holders.iter().map(|&p| running(p)).collect();
        out.push(format!(
            "/proc/locks names {} as its holder.",
            names.join(", ")
        ));
    }
    match recorded.parse::<u32>() {
        Ok(pid) if holders.contains(&pid) => {}
        Ok(pid) => {
            let state = match process_state(pid) {
                Some(Some(comm)) => format!("is still running (`{comm}`)"),
                Some(None) => "is no longer running, so the holder is another process".into(),
                None => "may or may not still run (no /proc to tell)".into(),
            };
            out.push(format!(
                "Pid {pid} (as recorded in {} by the last certbridge run to take the lock) {state}.",
                path.display()
            ));
        }
        Err(_) if recorded.is_empty() => {
            out.push(format!("No pid is recorded in {}.", path.display()))
        }
        Err(_) => out.push(format!(
            "{} does not hold a pid, so its holder is not certbridge.",
            path.display()
        )),
    }
    out.join(" ")
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
    fn a_stale_pid_in_the_lock_file_is_not_named_as_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        // Someone that is not certbridge holds the flock; the file still carries the pid of
        // a certbridge run long gone (above any pid_max, so never running).
        fs::write(&p, "999999999").unwrap();
        let holder = File::open(&p).unwrap();
        holder.lock().unwrap();
        let err = Lock::acquire(&p, Duration::from_millis(50)).unwrap_err();
        let msg = err.to_string();
        println!("{msg}");
        assert!(matches!(err, LockError::Busy { .. }), "{msg}");
        assert!(
            msg.contains(&format!(
                "the lock {} is held by another process",
                p.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "Pid 999999999 (as recorded in {} by the last certbridge run to take the lock) is no longer running",
                p.display()
            )),
            "{msg}"
        );
        // When /proc/locks could tell (not on every filesystem), it names the real holder.
        if msg.contains("/proc/locks") {
            assert!(
                msg.contains(&format!("/proc/locks names pid {} (", std::process::id())),
                "{msg}"
            );
        }
        // The file was not rewritten by the run that gave up.
        assert_eq!(fs::read_to_string(&p).unwrap(), "999999999");
    }

    #[test]
    fn lock_files_are_never_followed_or_written_through_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let msg = Lock::acquire(&link, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("cannot open the lock file {}", link.display()))
                && msg.contains("symbolic link"),
            "{msg}"
        );
        // A dangling link is not created through either.
        let dangling = dir.path().join("lock2");
        std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
        assert!(Lock::acquire(&dangling, Duration::from_secs(1)).is_err());
        assert!(!dir.path().join("created").exists());

        let hard = dir.path().join("lock3");
        fs::hard_link(&target, &hard).unwrap();
        let msg = Lock::acquire(&hard, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("2 hard links"), "{msg}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn dir_refuses_links_fifos_and_directories_and_replaces_links_not_targets() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::open(dir.path()).unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "secret").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o604)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        fs::create_dir(dir.path().join("sub")).unwrap();

        let refused = |r: io::Result<Option<File>>| refusal(&r.unwrap_err()).cloned();
        assert_eq!(
            refused(d.open_read("link".as_ref())),
            Some(Refused::Symlink)
        );
        assert_eq!(
            refused(d.open_read("fifo".as_ref())),
            Some(Refused::NotRegular("a FIFO"))
        );
        assert_eq!(
            refused(d.open_read("sub".as_ref())),
            Some(Refused::NotRegular("a directory"))
        );
        assert!(d.open_read("absent".as_ref()).unwrap().is_none());
        assert_eq!(d.entry("link".as_ref()).unwrap(), Some(EntryKind::Symlink));
        assert_eq!(d.entry("sub".as_ref()).unwrap(), Some(EntryKind::Dir));
        assert_eq!(
            d.entry("fifo".as_ref()).unwrap(),
            Some(EntryKind::Other("a FIFO"))
        );
        assert_eq!(d.entry("absent".as_ref()).unwrap(), None);
        let err = d.open_append("link".as_ref(), 0o640).unwrap_err();
        assert_eq!(refusal(&err), Some(&Refused::Symlink));

        // replace() swaps the link itself for a new file (mode 0644, not the target's).
        d.replace("link".as_ref(), b"new", &FileAttrs::default(), None, None)
            .unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "secret");
        let m = fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read_to_string(dir.path().join("link")).unwrap(), "new");
        assert!(!fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp.")));
    }

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(lookup_gid("0").unwrap(), 0);
        assert_eq!(lookup_gid("root").unwrap(), 0);
        assert!(lookup_gid("no-such-group-certbridge").is_err());
    }
}
