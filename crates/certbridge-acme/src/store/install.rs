//! Installing a new generation in one atomic swap, and rolling back to the previous one.

use super::*;

impl Store {
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
    pub(super) fn prune(&self, dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
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
}
