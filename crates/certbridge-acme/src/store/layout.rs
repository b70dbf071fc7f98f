//! A cert directory's layout: the service-facing names, the generations, reading what is
//! installed and repairing the names the store owns.

use super::*;

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
    pub(super) fn content(self, set: &IssuedSet) -> String {
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
    pub(super) fn private(self) -> bool {
        matches!(self, FileRole::Key | FileRole::Combined)
    }
}

pub(super) fn ensure_nl(s: &str) -> String {
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
    pub(super) fn missing() -> OnDisk {
        OnDisk {
            layout: Layout::Missing,
            leaf: None,
            key_matches: false,
        }
    }
}

impl Store {
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
    pub(super) fn installed_paths(&self, dir_name: &str) -> Option<(PathBuf, PathBuf, Layout)> {
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

pub(super) fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// N of a generation directory's name `gen-N` (decimal digits only).
pub(super) fn gen_number(name: &str) -> Option<u64> {
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
pub(super) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// The certificate and key files of a generation directory: the certbot names, or the
/// acme.sh names in generation 0 migrated from an acme.sh directory. Regular files only.
pub(super) fn gen_files(gen: &Path, dir_name: &str) -> Option<(PathBuf, PathBuf)> {
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
pub(super) fn best_generation(dir: &Path, dir_name: &str, serial: Option<&str>) -> Option<String> {
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
pub(super) fn next_generation(dir: &Path) -> Result<u64, StoreError> {
    let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
    let max = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(gen_number))
        .max();
    Ok(max.map(|m| m + 1).unwrap_or(1))
}

/// Points `dir/name` at `target` in one rename of a fresh temp symlink.
pub(super) fn replace_symlink(dir: &Path, name: &str, target: &Path) -> Result<(), StoreError> {
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
