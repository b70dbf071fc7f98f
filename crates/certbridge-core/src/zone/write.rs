//! Validation and writing: the validator command, the zone file's lock, the atomic replace.

use super::*;

/// A command run on the candidate file before it replaces the zone; `%s` in any argument is
/// replaced by the candidate's path (the argument stays one argument). Never run by a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    pub(super) argv: Vec<String>,
}

impl Validator {
    /// Splits `command` the way a POSIX shell would (quotes, backslashes), without a shell.
    pub fn parse_command(command: &str) -> Result<Validator, ZoneError> {
        let argv = shlex::split(command).ok_or_else(|| {
            ZoneError::BadValidate(format!(
                "`{command}` has an unbalanced quote or a trailing `\\`"
            ))
        })?;
        Validator::from_argv(argv)
    }

    /// An argument vector as is.
    pub fn from_argv(argv: Vec<String>) -> Result<Validator, ZoneError> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(ZoneError::BadValidate("the command is empty".into()));
        }
        if !argv.iter().any(|a| a.contains("%s")) {
            return Err(ZoneError::BadValidate(format!(
                "`{}` must contain `%s`, which is replaced by the candidate file",
                shell_words(&argv)
            )));
        }
        Ok(Validator { argv })
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Runs the validator on `candidate`; a non-zero exit is [`ZoneError::ValidationFailed`]
    /// with its output (stdout, then stderr; capped at 8 KiB).
    pub fn run(&self, candidate: &Path) -> Result<(), ZoneError> {
        let substitute = |arg: &str| -> OsString {
            let mut out = OsString::new();
            for (i, part) in arg.split("%s").enumerate() {
                if i > 0 {
                    out.push(candidate.as_os_str());
                }
                out.push(part);
            }
            out
        };
        let argv: Vec<OsString> = self.argv.iter().map(|a| substitute(a)).collect();
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ZoneError::ValidatorSpawn {
                program: self.argv[0].clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if text.len() > VALIDATOR_OUTPUT_MAX {
            let mut cut = VALIDATOR_OUTPUT_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[output truncated]");
        }
        Err(ZoneError::ValidationFailed {
            argv: argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            status: output.status.to_string(),
            code: output.status.code(),
            output: text.trim_end().to_owned(),
        })
    }
}

/// How and where [`apply`] writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub path: PathBuf,
    pub validate: Option<Validator>,
    /// Mode and ownership to set; unset fields keep the existing file's (new files: 0644).
    pub attrs: FileAttrs,
    /// Compute everything, write nothing.
    pub check_mode: bool,
    /// The clock for the date-based serial (tests inject one).
    pub now: SystemTime,
    /// Serialize writers on `.<file>.lock` beside the zone, waiting at most this long. `None`
    /// when the caller holds its own lock (a second lock on the same file from the same
    /// process would deadlock).
    pub lock_timeout: Option<Duration>,
    /// When `path` is a symbolic link, write its target (which keeps its owner and mode unless
    /// `attrs` sets them) instead of refusing; diffs then do not show the target's content.
    pub follow_symlink: bool,
}

impl WriteOptions {
    /// Defaults: no validator, keep attributes, write, the system clock, a 30 s lock wait.
    pub fn new(path: impl Into<PathBuf>) -> WriteOptions {
        WriteOptions {
            path: path.into(),
            validate: None,
            attrs: FileAttrs::default(),
            check_mode: false,
            now: SystemTime::now(),
            lock_timeout: Some(Duration::from_secs(30)),
            follow_symlink: false,
        }
    }
}

/// What [`apply`] did (or, in check mode, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneOutcome {
    /// Content, mode or ownership changed.
    pub changed: bool,
    /// The content (other than the serial) changed, so a new serial was written.
    pub content_changed: bool,
    /// The serial now in the file (in check mode: that would be).
    pub serial: u32,
    /// Caller records written (see [`Rendered::records`]).
    pub records: usize,
    pub duplicates_removed: usize,
    /// The file's text before (`None`: there was no file). Not for display when
    /// `followed_symlink`: use [`ZoneOutcome::diff`].
    pub before: Option<String>,
    /// The file's text after.
    pub after: String,
    /// The path is a symbolic link that `follow_symlink` let us follow.
    pub followed_symlink: bool,
}

impl ZoneOutcome {
    /// The Ansible diff (`before`/`after`, each capped at [`DIFF_MAX_LINES`]), headed `path`.
    /// The old content of a followed link's target is not shown: the link may point at a
    /// file the user running the module may not read.
    pub fn diff(&self, path: &str) -> Value {
        let before = if self.followed_symlink && self.before.is_some() {
            format!("[not shown: {path} is a symbolic link (follow_symlink), and the content of its target is not disclosed]\n")
        } else {
            cap_lines(self.before.as_deref().unwrap_or(""), DIFF_MAX_LINES)
        };
        json!({
            "before": before,
            "after": cap_lines(&self.after, DIFF_MAX_LINES),
            "before_header": path,
            "after_header": path,
        })
    }
}

/// A zone file's place, checked once: the directory of its path is opened once, and its lock,
/// the old file, the temp file and the rename are all reached relative to that handle; the
/// file name is never followed as a symbolic link (a zone directory is commonly writable by
/// the DNS server's user, who could otherwise aim root's write, chown and diff at any file).
/// A link is refused ([`ZoneError::Symlink`]) unless `follow_symlink`: then its target's
/// directory is opened once the same way, and the lock stays beside the link.
#[derive(Debug)]
pub struct ZoneFile {
    /// The path as configured (what messages and diffs show).
    path: PathBuf,
    /// The path's directory; `None` when it does not exist (check mode reads nothing).
    dir: Option<Dir>,
    name: OsString,
    /// The link's final target, when `follow_symlink` followed one.
    target: Option<(Dir, OsString)>,
}

/// The zone file as read: its text, and the file itself (its metadata and the handle that
/// mode and owner are corrected through).
pub(super) struct Existing {
    pub(super) text: String,
    meta: fs::Metadata,
    file: fs::File,
}

/// Links followed at most, as the kernel allows.
pub(super) const MAX_LINKS: usize = 40;

impl ZoneFile {
    /// Checks the zone path: refused when it is a directory, a FIFO or the like, or a
    /// symbolic link (unless `follow_symlink`); a file that does not exist yet is fine.
    pub fn open(path: &Path, follow_symlink: bool) -> Result<ZoneFile, ZoneError> {
        let Some(name) = path.file_name() else {
            return Err(ZoneError::IsDirectory(path.to_path_buf()));
        };
        let open_err = |source| ZoneError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut zf = ZoneFile {
            path: path.to_path_buf(),
            dir: None,
            name: name.to_owned(),
            target: None,
        };
        let dir = match Dir::open_parent(path) {
            Ok((dir, _)) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(zf),
            Err(e) => return Err(open_err(e)),
        };
        let kind = dir.entry(name).map_err(open_err)?;
        zf.dir = Some(dir);
        match kind {
            None | Some(EntryKind::File) => Ok(zf),
            Some(EntryKind::Symlink) if follow_symlink => {
                zf.target = Some(zf.resolve()?);
                Ok(zf)
            }
            Some(kind) => Err(zf.refused(kind)),
        }
    }

    /// The error for a zone path that is not (or no longer) a file we may write.
    fn refused(&self, kind: EntryKind) -> ZoneError {
        let path = self.path.clone();
        match kind {
            EntryKind::Dir => ZoneError::IsDirectory(path),
            EntryKind::Symlink => ZoneError::Symlink(path),
            EntryKind::Other(what) => ZoneError::NotAFile { path, what },
            EntryKind::File => ZoneError::NotAFile {
                path,
                what: "a regular file",
            },
        }
    }

    /// Follows the link at the path to a name that is not a link (it may not exist yet),
    /// opening each directory on the way once.
    fn resolve(&self) -> Result<(Dir, OsString), ZoneError> {
        let open_err = |source| ZoneError::Open {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .dir
            .as_ref()
            .expect("resolve after the directory was opened");
        let mut link = dir.read_link(&self.name).map_err(open_err)?;
        let mut base = dir.path().to_path_buf();
        for _ in 0..MAX_LINKS {
            let at = base.join(&link);
            let Some(name) = at.file_name() else {
                return Err(ZoneError::IsDirectory(self.path.clone()));
            };
            let (next, name) = (Dir::open_parent(&at).map_err(open_err)?.0, name.to_owned());
            match next.entry(&name).map_err(open_err)? {
                None | Some(EntryKind::File) => return Ok((next, name)),
                Some(EntryKind::Symlink) => {
                    link = next.read_link(&name).map_err(open_err)?;
                    base = next.path().to_path_buf();
                }
                Some(kind) => return Err(self.refused(kind)),
            }
        }
        Err(open_err(io::Error::other(format!(
            "more than {MAX_LINKS} symbolic links to follow"
        ))))
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path is a symbolic link that is followed.
    pub fn is_followed_link(&self) -> bool {
        self.target.is_some()
    }

    /// Where the zone file itself is: the path's directory, or the link target's.
    fn location(&self) -> Option<(&Dir, &OsStr)> {
        match &self.target {
            Some((dir, name)) => Some((dir, name)),
            None => self.dir.as_ref().map(|d| (d, self.name.as_os_str())),
        }
    }

    /// Takes the lock `.<file>.lock` beside the path (see [`lock_path`]), waiting up to
    /// `timeout`; the lock file is never followed as a link.
    pub fn lock(&self, timeout: Duration) -> Result<Lock, LockError> {
        let lock_name = lock_path(&self.path)
            .file_name()
            .map(OsStr::to_owned)
            .unwrap_or_default();
        match &self.dir {
            Some(dir) => Lock::acquire_in(dir, &lock_name, timeout),
            None => Err(LockError::Io {
                path: lock_path(&self.path),
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }

    /// Reads the file (not through a link that appeared since [`ZoneFile::open`]).
    pub(super) fn read(&self) -> Result<Option<Existing>, ZoneError> {
        let Some((dir, name)) = self.location() else {
            return Ok(None);
        };
        let read_err = |source| ZoneError::Read {
            path: self.path.clone(),
            source,
        };
        let mut file = match dir.open_read(name) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(match fsutil::refusal(&e) {
                    Some(Refused::Symlink) => self.refused(EntryKind::Symlink),
                    Some(Refused::NotRegular("a directory")) => self.refused(EntryKind::Dir),
                    Some(Refused::NotRegular(what)) => self.refused(EntryKind::Other(what)),
                    _ => read_err(e),
                })
            }
        };
        let meta = file.metadata().map_err(read_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_err)?;
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(Some(Existing { text, meta, file }))
    }

    /// Reads and parses the file, which this library rendered; `Ok(None)` when it does not
    /// exist.
    pub fn read_rendered(&self) -> Result<Option<RenderedZone>, ZoneError> {
        match self.read()? {
            None => Ok(None),
            Some(old) => parse_rendered(&old.text).map(Some),
        }
    }

    /// Replaces the file with `text` (see [`fsutil::Dir::replace`]); unset `attrs` keep
    /// `old`'s.
    fn write(
        &self,
        text: &str,
        attrs: &FileAttrs,
        old: Option<&Existing>,
        validator: Option<&Validator>,
    ) -> Result<(), ZoneError> {
        let write_err = |source| ZoneError::Write {
            path: self.path.clone(),
            source,
        };
        let Some((dir, name)) = self.location() else {
            return Err(write_err(io::Error::from(io::ErrorKind::NotFound)));
        };
        // The replace hook speaks io::Error; keep the validator's full report aside.
        let refusal = std::cell::RefCell::new(None);
        let check = |candidate: &Path| -> io::Result<()> {
            match validator.map(|v| v.run(candidate)) {
                Some(Err(e)) => {
                    let msg = e.to_string();
                    *refusal.borrow_mut() = Some(e);
                    Err(io::Error::other(msg))
                }
                _ => Ok(()),
            }
        };
        let hook: Option<fsutil::ValidateFn<'_>> = validator.map(|_| &check as _);
        dir.replace(name, text.as_bytes(), attrs, old.map(|o| &o.meta), hook)
            .map_err(|source| refusal.take().unwrap_or_else(|| write_err(source)))
    }
}

/// The lock file that serializes writers of `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "zone".into());
    path.with_file_name(format!(".{name}.lock"))
}

/// Renders the zone and writes it when it differs from the file other than by serial: the
/// serial becomes [`next_serial`] of the file's serial; the file is replaced atomically after
/// `validate` accepted the candidate (a refusal leaves the old file). Unchanged content leaves
/// the file untouched (mode/owner are still corrected when `attrs` asks for others). The path
/// is checked by [`ZoneFile::open`] before the lock is taken.
pub fn apply(
    spec: &ZoneSpec,
    records: &[Record],
    opts: &WriteOptions,
) -> Result<ZoneOutcome, ZoneError> {
    if !opts.path.is_absolute() {
        return Err(ZoneError::RelativePath(opts.path.clone()));
    }
    let rendered = render_zone(spec, records, 0)?;
    let file = ZoneFile::open(&opts.path, opts.follow_symlink)?;
    apply_rendered(&file, rendered, opts)
}

/// As [`apply`], on a zone file the caller opened (and may have locked and read already: one
/// directory handle for the whole run). `opts.path` and `opts.follow_symlink` are those
/// `file` was opened with.
pub fn apply_to(
    file: &ZoneFile,
    spec: &ZoneSpec,
    records: &[Record],
    opts: &WriteOptions,
) -> Result<ZoneOutcome, ZoneError> {
    let rendered = render_zone(spec, records, 0)?;
    apply_rendered(file, rendered, opts)
}

pub(super) fn apply_rendered(
    file: &ZoneFile,
    mut rendered: Rendered,
    opts: &WriteOptions,
) -> Result<ZoneOutcome, ZoneError> {
    let _lock = match (opts.check_mode, opts.lock_timeout) {
        (false, Some(timeout)) => Some(file.lock(timeout)?),
        _ => None,
    };
    crate::crash_point!("zone_locked");
    let existing = file.read()?;
    let old_serial = existing.as_ref().and_then(|old| parse_serial(&old.text));
    let content_same = match (&existing, old_serial) {
        (Some(old), Some(serial)) => {
            rendered.set_serial(serial);
            old.text == rendered.text
        }
        _ => false,
    };
    if !content_same {
        rendered.set_serial(next_serial(old_serial, opts.now));
    }
    let attrs_differ = existing.as_ref().is_some_and(|old| {
        let meta = &old.meta;
        opts.attrs
            .mode
            .is_some_and(|m| meta.permissions().mode() & 0o7777 != m)
            || opts.attrs.uid.is_some_and(|u| meta.uid() != u)
            || opts.attrs.gid.is_some_and(|g| meta.gid() != g)
    });
    if !opts.check_mode {
        if !content_same {
            file.write(
                &rendered.text,
                &opts.attrs,
                existing.as_ref(),
                opts.validate.as_ref(),
            )?;
            crate::crash_point!("zone_written");
        } else if let Some(old) = existing.as_ref().filter(|_| attrs_differ) {
            fix_attrs(file.path(), &old.file, &opts.attrs)?;
        }
    }
    Ok(ZoneOutcome {
        changed: !content_same || attrs_differ,
        content_changed: !content_same,
        serial: rendered.serial,
        records: rendered.records,
        duplicates_removed: rendered.duplicates_removed,
        before: existing.map(|old| old.text),
        after: rendered.text,
        followed_symlink: file.is_followed_link(),
    })
}

/// Sets mode and owner through the handle the file was read by (never by name: the name
/// could be a link by now).
pub(super) fn fix_attrs(path: &Path, file: &fs::File, attrs: &FileAttrs) -> Result<(), ZoneError> {
    let err = |source| ZoneError::Attrs {
        path: path.to_path_buf(),
        source,
    };
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(file, attrs.uid, attrs.gid).map_err(err)?;
    }
    // After chown, which clears set-id bits.
    if let Some(mode) = attrs.mode {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
    }
    Ok(())
}

/// The first `max` lines of `text`, with a note of how many were left out.
pub fn cap_lines(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut lines = text.split_inclusive('\n');
    for line in lines.by_ref().take(max) {
        out.push_str(line);
    }
    let rest = lines.count();
    if rest > 0 {
        let _ = writeln!(out, "[{rest} more lines not shown]");
    }
    out
}
