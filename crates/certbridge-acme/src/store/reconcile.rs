//! Catching up with killed runs: metadata against the installed generation, leftovers.

use super::*;

impl Store {
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
}
