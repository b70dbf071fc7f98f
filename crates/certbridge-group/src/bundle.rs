//! What a group bundle says in the clear (its header, bound as HPKE's AAD) and what it carries
//! sealed (key and chain), and its wire form.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Wire format version; a member refuses any other.
pub const VERSION: u32 = 1;

/// Which issuance a member holds or a bundle carries. Issuances of one group cert are ordered
/// by `not_before` (then serial): a newer order always starts later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, colon-separated, as [`certbridge_acme::certinfo::LeafInfo`] has it.
    pub serial: String,
    /// SHA-256 of the leaf certificate's DER, hex.
    pub fingerprint: String,
}

impl Generation {
    /// The leaf of `fullchain_pem` (its first certificate) as a generation.
    pub fn of_chain(
        fullchain_pem: &str,
    ) -> Result<Generation, certbridge_acme::certinfo::CertError> {
        let ders = certbridge_acme::certinfo::pem_certs(fullchain_pem, "the certificate")?;
        let leaf = certbridge_acme::certinfo::leaf_info(&ders[0], "the certificate")?;
        Ok(Generation {
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial: leaf.serial,
            fingerprint: hex(ring::digest::digest(&ring::digest::SHA256, &ders[0]).as_ref()),
        })
    }

    /// True when `self` is an older issuance than `other`.
    pub fn older_than(&self, other: &Generation) -> bool {
        (self.not_before, &self.serial) < (other.not_before, &other.serial)
    }
}

/// The clear header: who the bundle is for and what it holds. Serialized once by the sender
/// and authenticated as the AAD, so none of it can be changed in transit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub version: u32,
    /// The inventory group that shares the cert.
    pub group: String,
    /// The cert name (the key in `letsencrypt_certs`).
    pub cert: String,
    /// The member this is sealed to (inventory name) and its distribution public key (base64).
    pub recipient: String,
    pub recipient_key: String,
    /// The member that sealed it.
    pub sender: String,
    pub generation: Generation,
}

/// The sealed part: what the member installs, and what its metadata records.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub key_pem: String,
    /// Leaf first, then the issuer chain.
    pub fullchain_pem: String,
    pub facts: Facts,
}

/// The issuance's facts the renewal decision needs on whichever member issues next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub directory: Option<String>,
    pub staging: bool,
    pub self_signed: bool,
    pub profile: Option<String>,
}

impl std::fmt::Debug for Payload {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("facts", &self.facts)
            .finish()
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key_pem.zeroize();
    }
}

/// A bundle as relayed: `cbg1.<header>.<encapsulated key>.<ciphertext>`, each part base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// The header exactly as serialized by the sender (the AAD).
    pub header_bytes: Vec<u8>,
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

const PREFIX: &str = "cbg1";

impl Wire {
    pub fn encode(&self) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{PREFIX}.{}.{}.{}",
            b.encode(&self.header_bytes),
            b.encode(&self.enc),
            b.encode(&self.ciphertext)
        )
    }

    pub fn decode(text: &str) -> Result<Wire, String> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = text.trim().split('.').collect();
        let [prefix, header, enc, ct] = parts[..] else {
            return Err("not a certbridge group bundle (expected 4 dot-separated parts)".into());
        };
        if prefix != PREFIX {
            return Err(format!("not a certbridge group bundle (prefix `{prefix}`)"));
        }
        let part = |name: &str, s: &str| {
            b.decode(s)
                .map_err(|e| format!("the bundle's {name} is not base64url: {e}"))
        };
        Ok(Wire {
            header_bytes: part("header", header)?,
            enc: part("encapsulated key", enc)?,
            ciphertext: part("ciphertext", ct)?,
        })
    }

    pub fn header(&self) -> Result<Header, String> {
        serde_json::from_slice(&self.header_bytes)
            .map_err(|e| format!("the bundle's header does not parse: {e}"))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
