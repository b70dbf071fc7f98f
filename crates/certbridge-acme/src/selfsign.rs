//! The local test CA for `self_sign` (OpenDev's `letsencrypt_self_sign_only`): no CA is
//! contacted; a CA kept under `<cert_root>/.certbridge/selfsign/` signs leaves whose every name
//! is a SAN, and is delivered as `chain.pem`, so the service-facing layout is the same.

use crate::certinfo::{self, CertError, KeyType};
use certbridge_core::fsutil::{self, FileAttrs};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The test CA's common name; leaves it signed are recognised by it (reason `self_signed`).
pub const CA_COMMON_NAME: &str = "certbridge self-sign test CA";

/// Lifetime of leaves the test CA signs (like a Let's Encrypt certificate).
pub const LEAF_LIFETIME_SECS: i64 = 90 * 86_400;

/// True when a certificate with this issuer name came from the local test CA.
pub fn is_local_ca(issuer: &str) -> bool {
    issuer == CA_COMMON_NAME
}

/// Errors of the test CA.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignError {
    #[error("cannot write the self-sign test CA under {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the self-sign test CA under {0} is damaged (remove that directory to make a new one)"
    )]
    Damaged(PathBuf),
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// The test CA: its key and certificate (PEM).
pub struct TestCa {
    key: KeyPair,
    pub cert_pem: String,
}

fn ca_dn() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_dn();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // SystemRandom only fails when the OS has no randomness at all; a fixed-but-unique
    // fallback from the clock keeps serials distinct then.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let t = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes.copy_from_slice(&t.to_be_bytes());
    }
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero octet to strip
    SerialNumber::from_slice(&bytes)
}

impl TestCa {
    /// Loads the CA from `dir`, or creates it (key 0600) on first use.
    pub fn open_or_create(dir: &Path) -> Result<TestCa, SelfSignError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SelfSignError::Io { path, source }
        };
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key =
                certinfo::load_key(&key_pem).map_err(|_| SelfSignError::Damaged(dir.into()))?;
            let leaf = certinfo::leaf_info_pem(&cert_pem, "the test CA")
                .map_err(|_| SelfSignError::Damaged(dir.into()))?;
            if !certinfo::key_matches(&key_pem, &leaf) {
                return Err(SelfSignError::Damaged(dir.into()));
            }
            return Ok(TestCa { key, cert_pem });
        }
        // Owner only, whatever the umask (like the rest of `.certbridge/`).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(io(dir))?;
        let key = KeyType::EcP256.generate()?;
        let mut params = ca_params();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| CertError::Sign(e.to_string()))?;
        let cert_pem = cert.pem();
        let private = FileAttrs {
            mode: Some(0o600),
            ..Default::default()
        };
        // Key first: a CA certificate without its key would be useless.
        fsutil::atomic_write(&key_path, key.serialize_pem().as_bytes(), &private, None)
            .map_err(io(&key_path))?;
        let public = FileAttrs {
            mode: Some(0o644),
            ..Default::default()
        };
        fsutil::atomic_write(&cert_path, cert_pem.as_bytes(), &public, None)
            .map_err(io(&cert_path))?;
        Ok(TestCa { key, cert_pem })
    }

    /// Signs a leaf for `names` (all SANs; the first also the CN) with `leaf_key`, valid from
    /// `now` for [`LEAF_LIFETIME_SECS`]. Returns the PEM chain: leaf, then the test CA.
    pub fn sign(
        &self,
        leaf_key: &KeyPair,
        names: &[String],
        now: i64,
    ) -> Result<String, CertError> {
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|e| CertError::Sign(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        let start =
            OffsetDateTime::from_unix_timestamp(now).map_err(|e| CertError::Sign(e.to_string()))?;
        params.not_before = start;
        params.not_after = start + time::Duration::seconds(LEAF_LIFETIME_SECS);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::new(ca_params(), &self.key);
        let leaf = params
            .signed_by(leaf_key, &issuer)
            .map_err(|e| CertError::Sign(e.to_string()))?;
        Ok(format!("{}{}", leaf.pem(), self.cert_pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_signs_verifiable_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("selfsign");
        let ca = TestCa::open_or_create(&ca_dir).unwrap();
        let again = TestCa::open_or_create(&ca_dir).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem);
        let key = KeyType::EcP384.generate().unwrap();
        let names = vec![
            "*.s3.example.test".to_string(),
            "s3.example.test".to_string(),
        ];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let chain = again.sign(&key, &names, now).unwrap();
        let set = certinfo::verify_issued(&chain, &key.serialize_pem(), &names, now).unwrap();
        assert!(is_local_ca(&set.leaf.issuer));
        assert_eq!(set.leaf.not_after - set.leaf.not_before, LEAF_LIFETIME_SECS);
        assert_eq!(set.chain_pem.trim(), ca.cert_pem.trim());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
