//! Keys, certificates and chains: generate keys, parse what is on disk or came from the CA,
//! and check that a leaf, its key and its chain belong together before anything is installed.

use rcgen::{KeyPair, PublicKeyData};
use rsa::pkcs8::der::{oid::ObjectIdentifier, zeroize::Zeroizing, Encode};
use rsa::pkcs8::AlgorithmIdentifierRef;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use x509_parser::prelude::*;

/// The certificate key types a user may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum KeyType {
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    #[serde(rename = "ec-p384")]
    EcP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// Generates a new private key of this type (PKCS#8 PEM inside the returned pair).
    pub fn generate(self) -> Result<KeyPair, CertError> {
        let ec = |alg| {
            KeyPair::generate_for(alg)
                .map_err(|e| CertError::KeyGeneration(format!("{}: {e}", self.as_str())))
        };
        match self {
            KeyType::EcP256 => ec(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcP384 => ec(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => self.generate_rsa(2048),
            KeyType::Rsa3072 => self.generate_rsa(3072),
            KeyType::Rsa4096 => self.generate_rsa(4096),
        }
    }

    /// ring signs with RSA keys but cannot make them: the rsa crate generates the key (and
    /// does nothing else), ring takes it over as PKCS#8.
    fn generate_rsa(self, bits: usize) -> Result<KeyPair, CertError> {
        use rsa::pkcs8::EncodePrivateKey;
        let fail = |e: String| CertError::KeyGeneration(format!("{}: {e}", self.as_str()));
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
            .map_err(|e| fail(e.to_string()))?;
        let der = key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
        KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der.as_bytes()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| fail(e.to_string()))
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown key type `{s}`; valid: {}",
                    KeyType::ALL.map(|k| k.as_str()).join(", ")
                )
            })
    }
}

/// Why a key, certificate or chain was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a {0} key")]
    KeyGeneration(String),
    #[error("the private key does not parse (its content is not shown)")]
    BadKey,
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    #[error("a certificate in {what} does not parse: {detail}")]
    BadCertificate { what: String, detail: String },
    #[error("the certificate covers {got:?}, expected exactly {want:?}")]
    NamesDiffer { got: Vec<String>, want: Vec<String> },
    #[error("the certificate does not match its private key")]
    KeyMismatch,
    #[error("the chain has no issuer certificate after the leaf")]
    NoChain,
    #[error("the certificate expired at {0} (unix time)")]
    Expired(i64),
    #[error("cannot build a CSR: {0}")]
    Csr(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// What the decision and the reply need to know about one leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// DNS SANs, lower-cased.
    pub names: BTreeSet<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, colon-separated (as x509-parser prints it).
    pub serial: String,
    pub issuer: String,
    /// Subject == issuer (also true for leaves signed by the local self-sign CA? no: those
    /// carry that CA's name as issuer, see [`crate::selfsign::is_local_ca`]).
    pub self_issued: bool,
    pub key_type: Option<KeyType>,
    /// DER SubjectPublicKeyInfo, to match against a private key.
    pub spki: Vec<u8>,
}

impl LeafInfo {
    pub fn lifetime(&self) -> i64 {
        (self.not_after - self.not_before).max(1)
    }
}

/// The PEM blocks of every certificate in `pem` as DER, in order.
pub fn pem_certs(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| CertError::BadCertificate {
            what: what.into(),
            detail: e.to_string(),
        })?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(CertError::NoCertificate(what.into()));
    }
    Ok(out)
}

fn name_string(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| name.to_string())
}

/// Parses one DER certificate.
pub fn leaf_info(der: &[u8], what: &str) -> Result<LeafInfo, CertError> {
    let bad = |detail: String| CertError::BadCertificate {
        what: what.into(),
        detail,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let mut names = BTreeSet::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) => {
                    names.insert(s.to_ascii_lowercase());
                }
                // RFC 8738 identifiers, in the canonical text form the config uses.
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let spki = cert.public_key();
    let key_type = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(p)) => match p.key_size() {
            256 => Some(KeyType::EcP256),
            384 => Some(KeyType::EcP384),
            _ => None,
        },
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => match r.key_size() {
            2048 => Some(KeyType::Rsa2048),
            3072 => Some(KeyType::Rsa3072),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        },
        _ => None,
    };
    Ok(LeafInfo {
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
        issuer: name_string(cert.issuer()),
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        key_type,
        spki: spki.raw.to_vec(),
    })
}

/// Parses the first certificate of a PEM file (leaf first, as CAs deliver chains).
pub fn leaf_info_pem(pem: &str, what: &str) -> Result<LeafInfo, CertError> {
    let ders = pem_certs(pem, what)?;
    leaf_info(&ders[0], what)
}

/// Loads a PEM private key: PKCS#8, or SEC1 (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE
/// KEY`) as acme.sh left them, which are wrapped into PKCS#8 first (ring reads only that).
/// The first private-key block counts (OpenSSL may put `EC PARAMETERS` before it).
pub fn load_key(pem: &str) -> Result<KeyPair, CertError> {
    let blocks = ::pem::parse_many(pem).map_err(|_| CertError::BadKey)?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or(CertError::BadKey)?;
    match PrivateKeyDer::try_from(block.contents()).map_err(|_| CertError::BadKey)? {
        PrivateKeyDer::Pkcs8(der) => KeyPair::try_from(&der).map_err(|_| CertError::BadKey),
        PrivateKeyDer::Pkcs1(der) => {
            pkcs8_wrapped(rsa::pkcs1::ALGORITHM_ID, der.secret_pkcs1_der())
        }
        PrivateKeyDer::Sec1(der) => {
            // The curve is in the key's own parameters, which ring checks against the
            // wrapper's: the one that loads is the right one.
            pkcs8_wrapped(ec_algorithm(&SECP256R1), der.secret_sec1_der())
                .or_else(|_| pkcs8_wrapped(ec_algorithm(&SECP384R1), der.secret_sec1_der()))
        }
        _ => Err(CertError::BadKey),
    }
}

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

fn ec_algorithm(curve: &ObjectIdentifier) -> AlgorithmIdentifierRef<'_> {
    AlgorithmIdentifierRef {
        oid: EC_PUBLIC_KEY,
        parameters: Some(curve.into()),
    }
}

/// A key pair from a bare private key (SEC1 or PKCS#1 DER) put into a PKCS#8 envelope.
fn pkcs8_wrapped(algorithm: AlgorithmIdentifierRef<'_>, key: &[u8]) -> Result<KeyPair, CertError> {
    let info = rsa::pkcs8::PrivateKeyInfo::new(algorithm, key);
    let der = Zeroizing::new(info.to_der().map_err(|_| CertError::BadKey)?);
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(der.as_slice())).map_err(|_| CertError::BadKey)
}

/// True when `key_pem` is the private key of the certificate described by `leaf`.
pub fn key_matches(key_pem: &str, leaf: &LeafInfo) -> bool {
    load_key(key_pem)
        .map(|k| k.subject_public_key_info() == leaf.spki)
        .unwrap_or(false)
}

/// A DER CSR for `names` signed by `key` (empty subject: the names are SANs).
pub fn csr_der(key: &KeyPair, names: &[String]) -> Result<Vec<u8>, CertError> {
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| CertError::Csr(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|e| CertError::Csr(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// A certificate set ready to install: the leaf, its issuer chain, the key, and what they say.
#[derive(Debug, Clone)]
pub struct IssuedSet {
    pub key_pem: String,
    pub cert_pem: String,
    pub chain_pem: String,
    pub leaf: LeafInfo,
}

/// Splits a PEM chain (leaf first) and checks it before installing: the leaf covers exactly
/// `names`, matches `key_pem`, has at least one issuer certificate after it that parses, and
/// has not expired at `now`.
pub fn verify_issued(
    chain: &str,
    key_pem: &str,
    names: &[String],
    now: i64,
) -> Result<IssuedSet, CertError> {
    let ders = pem_certs(chain, "the issued chain")?;
    let leaf = leaf_info(&ders[0], "the issued certificate")?;
    let want: BTreeSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    if leaf.names != want {
        return Err(CertError::NamesDiffer {
            got: leaf.names.iter().cloned().collect(),
            want: want.into_iter().collect(),
        });
    }
    if !key_matches(key_pem, &leaf) {
        return Err(CertError::KeyMismatch);
    }
    if ders.len() < 2 {
        return Err(CertError::NoChain);
    }
    for der in &ders[1..] {
        leaf_info(der, "the issuer chain")?;
    }
    if leaf.not_after <= now {
        return Err(CertError::Expired(leaf.not_after));
    }
    let to_pem = |der: &Vec<u8>| {
        let p = ::pem::Pem::new("CERTIFICATE", der.clone());
        ::pem::encode_config(
            &p,
            ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
        )
    };
    Ok(IssuedSet {
        key_pem: key_pem.to_owned(),
        cert_pem: to_pem(&ders[0]),
        chain_pem: ders[1..].iter().map(to_pem).collect(),
        leaf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str], key: &KeyPair) -> String {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(key).unwrap().pem()
    }

    #[test]
    fn key_types_round_trip_and_are_detected() {
        for kt in KeyType::ALL {
            let key = kt.generate().unwrap();
            let pem = self_signed(&["a.example.test"], &key);
            let info = leaf_info_pem(&pem, "test").unwrap();
            assert_eq!(info.key_type, Some(kt));
            assert!(key_matches(&key.serialize_pem(), &info));
            assert_eq!(kt.as_str().parse::<KeyType>().unwrap(), kt);
        }
        assert!("ec-p521"
            .parse::<KeyType>()
            .unwrap_err()
            .contains("rsa-4096"));
    }

    fn openssl(args: &[&str]) -> String {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn acme_sh_era_sec1_and_pkcs1_keys_load_and_match_their_certificates() {
        let keys = [
            // acme.sh: `openssl ecparam -genkey` (EC PARAMETERS before the key, unless -noout).
            (
                openssl(&["ecparam", "-name", "prime256v1", "-genkey"]),
                KeyType::EcP256,
                "EC PRIVATE KEY",
            ),
            (
                openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-noout"]),
                KeyType::EcP384,
                "EC PRIVATE KEY",
            ),
            (
                openssl(&["genrsa", "-traditional", "2048"]),
                KeyType::Rsa2048,
                "RSA PRIVATE KEY",
            ),
        ];
        for (pem, kt, label) in keys {
            assert!(pem.contains(label), "openssl made no {label}");
            let key = load_key(&pem).unwrap();
            assert_eq!(crate::store::key_type_of(&key), Some(kt));
            let info = leaf_info_pem(&self_signed(&["a.example.test"], &key), "test").unwrap();
            assert_eq!(info.key_type, Some(kt));
            assert!(key_matches(&pem, &info));
            // What is stored from now on is PKCS#8.
            assert!(key_matches(&key.serialize_pem(), &info));
            assert!(key
                .serialize_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert!(matches!(load_key("not a key"), Err(CertError::BadKey)));
        let cert = self_signed(&["a.example.test"], &KeyType::EcP256.generate().unwrap());
        assert!(matches!(load_key(&cert), Err(CertError::BadKey)));
    }

    #[test]
    fn verify_refuses_wrong_names_key_and_missing_chain() {
        let key = KeyType::EcP256.generate().unwrap();
        let other = KeyType::EcP256.generate().unwrap();
        let leaf = self_signed(&["a.example.test", "b.example.test"], &key);
        let ca = self_signed(&["ca.example.test"], &other);
        let chain = format!("{leaf}{ca}");
        let names = vec!["b.example.test".to_string(), "a.example.test".to_string()];
        let now = 0;
        let set = verify_issued(&chain, &key.serialize_pem(), &names, now).unwrap();
        assert_eq!(set.leaf.names.len(), 2);
        assert!(set.chain_pem.contains("BEGIN CERTIFICATE"));
        assert!(matches!(
            verify_issued(&chain, &other.serialize_pem(), &names, now),
            Err(CertError::KeyMismatch)
        ));
        assert!(matches!(
            verify_issued(&chain, &key.serialize_pem(), &names[..1], now),
            Err(CertError::NamesDiffer { .. })
        ));
        assert!(matches!(
            verify_issued(&leaf, &key.serialize_pem(), &names, now),
            Err(CertError::NoChain)
        ));
        assert!(matches!(
            verify_issued(&chain, &key.serialize_pem(), &names, i64::MAX),
            Err(CertError::Expired(_))
        ));
    }
}
