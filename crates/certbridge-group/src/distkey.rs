//! A member's long-lived distribution key pair (X25519): made on the member, kept in
//! `<cert root>/.certbridge/group/distkey` (0600, inside the 0700 bookkeeping directory). Only
//! the public key ever leaves the member.

use base64::Engine;
use certbridge_acme::store::Store;
use certbridge_core::fsutil::{self, Dir, FileAttrs};
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, Serializable};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use zeroize::Zeroize;

type Sk = <X25519HkdfSha256 as Kem>::PrivateKey;
type Pk = <X25519HkdfSha256 as Kem>::PublicKey;

const FILE: &str = "distkey";

/// A member's public distribution key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(Pk);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<PublicKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        Pk::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| "not an X25519 public key (32 bytes)".to_owned())
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_bytes())
    }
    pub(crate) fn inner(&self) -> &Pk {
        &self.0
    }
}

/// The key pair (the private half never printed: no Debug).
pub struct DistKey {
    sk: Sk,
    pk: PublicKey,
}

impl DistKey {
    /// A new random key pair (the system's random source).
    pub fn generate() -> DistKey {
        let (sk, pk) = X25519HkdfSha256::gen_keypair();
        DistKey {
            sk,
            pk: PublicKey(pk),
        }
    }
    pub fn public(&self) -> &PublicKey {
        &self.pk
    }
    pub(crate) fn secret(&self) -> &Sk {
        &self.sk
    }

    fn from_secret_bytes(bytes: &[u8]) -> Result<DistKey, String> {
        let sk = Sk::from_bytes(bytes).map_err(|_| "not an X25519 private key".to_owned())?;
        let pk = PublicKey(X25519HkdfSha256::sk_to_pk(&sk));
        Ok(DistKey { sk, pk })
    }
}

/// Where the key of `store` lives.
pub fn path(store: &Store) -> PathBuf {
    store.reserved().join("group").join(FILE)
}

/// Loads this member's key pair without making one (check mode).
pub fn load(store: &Store) -> Result<Option<DistKey>, String> {
    let dir_path = store.reserved().join("group");
    if !dir_path.is_dir() {
        return Ok(None);
    }
    read_or_make(&dir_path, false).map(|k| k.map(|(k, _)| k))
}

/// Loads this member's key pair, making it (once) when there is none. Returns it and whether
/// it was made now. A key file that others may read, or that is not a regular file, is refused.
pub fn load_or_create(store: &Store) -> Result<(DistKey, bool), String> {
    store.ensure_reserved().map_err(|e| e.to_string())?;
    let dir_path = store.reserved().join("group");
    if !dir_path.is_dir() {
        std::fs::create_dir(&dir_path)
            .and_then(|_| {
                std::fs::set_permissions(&dir_path, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot create {}: {e}", dir_path.display()))?;
    }
    read_or_make(&dir_path, true).map(|k| k.expect("made when missing"))
}

fn read_or_make(dir_path: &std::path::Path, make: bool) -> Result<Option<(DistKey, bool)>, String> {
    let dir =
        Dir::open(dir_path).map_err(|e| format!("cannot open {}: {e}", dir_path.display()))?;
    let file_path = dir.join(OsStr::new(FILE));
    match dir.open_read(OsStr::new(FILE)) {
        Ok(Some(mut f)) => {
            let mode = f.metadata().map(|m| m.mode()).unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{} is readable by others (mode {:o}): make it 0600, or remove it to make a new one",
                    file_path.display(),
                    mode & 0o777
                ));
            }
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(|e| format!("cannot read {}: {e}", file_path.display()))?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim());
            text.zeroize();
            let mut bytes =
                bytes.map_err(|_| format!("{} is not a distribution key", file_path.display()))?;
            let key = DistKey::from_secret_bytes(&bytes);
            bytes.zeroize();
            key.map(|k| Some((k, false)))
                .map_err(|e| format!("{}: {e}", file_path.display()))
        }
        Ok(None) if !make => Ok(None),
        Ok(None) => {
            let key = DistKey::generate();
            let mut text = base64::engine::general_purpose::STANDARD.encode(key.sk.to_bytes());
            text.push('\n');
            let attrs = FileAttrs {
                mode: Some(0o600),
                ..Default::default()
            };
            let written = fsutil::atomic_write(&file_path, text.as_bytes(), &attrs, None);
            text.zeroize();
            written.map_err(|e| format!("cannot write {}: {e}", file_path.display()))?;
            Ok(Some((key, true)))
        }
        Err(e) => Err(format!("cannot read {}: {e}", file_path.display())),
    }
}
