//! One snapshot of a directory tree: every file, directory and link under a root with its kind,
//! content hash, link target, mode, owner and mtime. Tests compare snapshots taken before and
//! after a module run; those that care about less compare through the adapters below.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What an entry is, and what a reader of it gets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    /// A regular file: its size and a hash of its bytes.
    File {
        len: u64,
        hash: u64,
    },
    /// A symbolic link and its target (not followed).
    Symlink(PathBuf),
}

/// One entry of a snapshot. Any change (rewritten, re-moded, re-owned, touched) changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
}

/// Paths relative to the snapshot's root.
pub type Tree = BTreeMap<String, Entry>;

/// Every entry under `root` (not `root` itself), keyed by its path relative to `root`; empty
/// when `root` does not exist.
pub fn snapshot(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.is_symlink() {
                Kind::Symlink(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                walk(root, &path, out);
                Kind::Dir
            } else {
                let data = std::fs::read(&path).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                data.hash(&mut h);
                Kind::File {
                    len: data.len() as u64,
                    hash: h.finish(),
                }
            };
            let entry = Entry {
                kind,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
            };
            out.insert(rel, entry);
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// What readers see under `root`: each entry's kind, content and link target, no metadata.
pub fn contents(root: &Path) -> BTreeMap<String, Kind> {
    snapshot(root)
        .into_iter()
        .map(|(path, e)| (path, e.kind))
        .collect()
}

/// An entry as far as writes go: its content, and for files when they were last written.
pub type Written = (Kind, Option<(i64, i64)>);

/// What was written under `root`: contents, plus each file's mtime, so a file rewritten with
/// the same bytes shows too. Directory and permission changes do not show.
pub fn written(root: &Path) -> BTreeMap<String, Written> {
    snapshot(root)
        .into_iter()
        .map(|(path, e)| {
            let mtime = matches!(e.kind, Kind::File { .. }).then_some(e.mtime);
            (path, (e.kind, mtime))
        })
        .collect()
}
