//! Sealing a bundle to one member and opening it there: HPKE (RFC 9180) base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. The header is the AAD and the
//! recipient's public key is in the info, so a bundle changed in transit, or handed to another
//! member, does not open.

use crate::bundle::{Header, Payload, Wire, VERSION};
use crate::distkey::{DistKey, PublicKey};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};

type Kem = X25519HkdfSha256;

const INFO: &[u8] = b"certbridge group bundle v1";

/// HPKE's info: the fixed label and the recipient's public key.
fn info(recipient_key: &[u8]) -> Vec<u8> {
    let mut v = INFO.to_vec();
    v.push(0);
    v.extend_from_slice(recipient_key);
    v
}

/// Why a bundle was not opened. None of them says anything about the key inside.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("{0}")]
    Malformed(String),
    #[error("the bundle is addressed to {got}, not to {want}")]
    WrongRecipient { got: String, want: String },
    #[error("the bundle is sealed to another distribution key than this member's")]
    WrongKey,
    #[error("the bundle is for cert `{got}`, not `{want}`")]
    WrongCert { got: String, want: String },
    #[error("the bundle does not open: it was changed in transit or sealed to another key")]
    Tampered,
    #[error("the bundle's contents do not match its header: {0}")]
    Inconsistent(String),
}

/// Seals `payload` to `recipient` (whose key is `recipient_key`) under `header`'s facts.
pub fn seal(header: &Header, recipient_key: &PublicKey, payload: &Payload) -> Result<Wire, String> {
    let header_bytes = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let mut plain = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let pk_bytes = recipient_key.to_bytes();
    let result = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem>(
        &OpModeS::Base,
        recipient_key.inner(),
        &info(&pk_bytes),
        &plain,
        &header_bytes,
    );
    zeroize::Zeroize::zeroize(&mut plain);
    let (enc, ciphertext) = result.map_err(|e| format!("sealing failed: {e}"))?;
    Ok(Wire {
        header_bytes,
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// Opens `wire` as `me` (inventory name) with `key`, for cert `cert`: checks the header is
/// addressed here, then decrypts. The caller checks the payload against `Header::generation`.
pub fn open(
    wire: &Wire,
    me: &str,
    key: &DistKey,
    cert: &str,
) -> Result<(Header, Payload), OpenError> {
    let header = wire.header().map_err(OpenError::Malformed)?;
    if header.version != VERSION {
        return Err(OpenError::Malformed(format!(
            "bundle version {} is not supported (this module reads version {VERSION})",
            header.version
        )));
    }
    if header.recipient != me {
        return Err(OpenError::WrongRecipient {
            got: header.recipient,
            want: me.to_owned(),
        });
    }
    let mine = key.public().to_base64();
    if header.recipient_key != mine {
        return Err(OpenError::WrongKey);
    }
    if header.cert != cert {
        return Err(OpenError::WrongCert {
            got: header.cert,
            want: cert.to_owned(),
        });
    }
    let enc =
        <Kem as hpke::Kem>::EncappedKey::from_bytes(&wire.enc).map_err(|_| OpenError::Tampered)?;
    let mut plain = hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        key.secret(),
        &enc,
        &info(&key.public().to_bytes()),
        &wire.ciphertext,
        &wire.header_bytes,
    )
    .map_err(|_| OpenError::Tampered)?;
    let payload = serde_json::from_slice::<Payload>(&plain)
        .map_err(|e| OpenError::Inconsistent(format!("the sealed part does not parse: {e}")));
    zeroize::Zeroize::zeroize(&mut plain);
    let payload = payload?;
    let got = crate::bundle::Generation::of_chain(&payload.fullchain_pem)
        .map_err(|e| OpenError::Inconsistent(e.to_string()))?;
    if got != header.generation {
        return Err(OpenError::Inconsistent(format!(
            "it holds serial {}, its header says {}",
            got.serial, header.generation.serial
        )));
    }
    Ok((header, payload))
}
