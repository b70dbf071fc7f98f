//! Seal/open and the acme_group module on real cert roots (temp dirs) with the local test CA.

use crate::bundle::{Facts, Generation, Header, Payload, Wire, VERSION};
use crate::distkey::DistKey;
use crate::seal::{self, OpenError};
use certbridge_acme::certinfo::{self, KeyType};
use certbridge_acme::selfsign::TestCa;
use certbridge_acme::store::Store;
use certbridge_core::protocol::Invocation;
use serde_json::{json, Map, Value};

const NAMES: [&str; 2] = ["*.cog.example.org", "cog.example.org"];

fn names() -> Vec<String> {
    NAMES.iter().map(|s| s.to_string()).collect()
}

/// A key and full chain from a test CA in `ca_dir`, valid from `now`.
fn issue(ca_dir: &std::path::Path, now: i64) -> (String, String) {
    let ca = TestCa::open_or_create(ca_dir).unwrap();
    let key = KeyType::EcP256.generate().unwrap();
    let chain = ca.sign(&key, &names(), now).unwrap();
    (key.serialize_pem(), chain)
}

fn header_for(to: &str, key: &DistKey, chain: &str) -> Header {
    Header {
        version: VERSION,
        group: "rgws".into(),
        cert: "rgw-wildcard".into(),
        recipient: to.into(),
        recipient_key: key.public().to_base64(),
        sender: "rgw1".into(),
        generation: Generation::of_chain(chain).unwrap(),
    }
}

fn payload(key_pem: &str, chain: &str) -> Payload {
    Payload {
        key_pem: key_pem.into(),
        fullchain_pem: chain.into(),
        facts: Facts {
            directory: Some("self-sign".into()),
            staging: false,
            self_signed: true,
            profile: None,
        },
    }
}

#[test]
fn a_sealed_bundle_opens_only_for_its_member_and_only_untouched() {
    let ca = tempfile::tempdir().unwrap();
    let (key_pem, chain) = issue(ca.path(), certbridge_acme::now());
    let b = DistKey::generate();
    let c = DistKey::generate();
    let wire = seal::seal(
        &header_for("rgw2", &b, &chain),
        b.public(),
        &payload(&key_pem, &chain),
    )
    .unwrap();
    // The key is nowhere in the clear part.
    let text = wire.encode();
    assert!(!text.contains("PRIVATE"));
    let decoded = Wire::decode(&text).unwrap();
    let (_, opened) = seal::open(&decoded, "rgw2", &b, "rgw-wildcard").unwrap();
    assert_eq!(opened.key_pem, key_pem);
    assert_eq!(opened.fullchain_pem, chain);

    // One flipped byte anywhere in the ciphertext, the encapsulated key or the header.
    for (part, index) in [(2usize, 5usize), (1, 3), (0, 40)] {
        let mut w = decoded.clone();
        let bytes = match part {
            0 => &mut w.header_bytes,
            1 => &mut w.enc,
            _ => &mut w.ciphertext,
        };
        bytes[index] ^= 0x01;
        let got = seal::open(&w, "rgw2", &b, "rgw-wildcard");
        // A flip in the header may already fail its own checks; elsewhere only HPKE sees it.
        assert!(
            got.is_err() && (part == 0 || got.as_ref().err() == Some(&OpenError::Tampered)),
            "part {part} flipped: {:?}",
            got.err()
        );
    }
    // Replayed to another member: its header names rgw2.
    assert_eq!(
        seal::open(&decoded, "rgw3", &c, "rgw-wildcard").err(),
        Some(OpenError::WrongRecipient {
            got: "rgw2".into(),
            want: "rgw3".into()
        })
    );
    // ... and with the header rewritten for rgw3 and its key, the AAD no longer matches.
    let mut forged = decoded.clone();
    forged.header_bytes = serde_json::to_vec(&header_for("rgw3", &c, &chain)).unwrap();
    assert_eq!(
        seal::open(&forged, "rgw3", &c, "rgw-wildcard").err(),
        Some(OpenError::Tampered)
    );
    // A flip deep in the header's generation (not caught by any clear check).
    let mut w = decoded.clone();
    let at = w.header_bytes.len() - 10;
    w.header_bytes[at] ^= 0x01;
    assert!(seal::open(&w, "rgw2", &b, "rgw-wildcard").is_err());
    // ... or opened as rgw2 by a member holding another key.
    assert_eq!(
        seal::open(&decoded, "rgw2", &c, "rgw-wildcard").err(),
        Some(OpenError::WrongKey)
    );
    // For another cert of the same member.
    assert!(matches!(
        seal::open(&decoded, "rgw2", &b, "other"),
        Err(OpenError::WrongCert { .. })
    ));
}

#[test]
fn a_header_that_lies_about_its_generation_is_refused() {
    let ca = tempfile::tempdir().unwrap();
    let (key_pem, chain) = issue(ca.path(), certbridge_acme::now());
    let (_, other_chain) = issue(ca.path(), certbridge_acme::now() - 3600);
    let b = DistKey::generate();
    // The sender claims another issuance than it seals.
    let header = header_for("rgw2", &b, &other_chain);
    let wire = seal::seal(&header, b.public(), &payload(&key_pem, &chain)).unwrap();
    assert!(matches!(
        seal::open(&wire, "rgw2", &b, "rgw-wildcard"),
        Err(OpenError::Inconsistent(_))
    ));
}

/// Runs acme_group on `root` as `member`.
fn run(
    root: &std::path::Path,
    member: &str,
    op: &str,
    extra: Value,
) -> Result<Map<String, Value>, String> {
    let mut args = json!({
        "certs": {"rgw-wildcard": NAMES},
        "cert_root": root.to_str().unwrap(),
        "self_sign": true,
        "op": op,
        "member": member,
        "groups": {"rgw-wildcard": "rgws"},
    });
    for (k, v) in extra.as_object().unwrap() {
        args[k] = v.clone();
    }
    let raw = args.as_object().unwrap().clone();
    match crate::module(raw, &Invocation::default()) {
        Ok(reply) => {
            let mut m = reply.fields;
            m.insert("changed".into(), json!(reply.changed));
            Ok(m)
        }
        Err(f) => Err(f.msg),
    }
}

fn install(root: &std::path::Path, key_pem: &str, chain: &str) {
    let store = Store::new(root, None);
    let set = certinfo::verify_issued(chain, key_pem, &names(), certbridge_acme::now()).unwrap();
    store.install("cog.example.org", &set).unwrap();
}

fn file(root: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(root.join("cog.example.org").join(name)).unwrap()
}

#[test]
fn members_install_what_the_issuer_seals_and_never_go_back() {
    let ca = tempfile::tempdir().unwrap();
    let issuer = tempfile::tempdir().unwrap();
    let member = tempfile::tempdir().unwrap();
    let now = certbridge_acme::now();
    let (old_key, old_chain) = issue(ca.path(), now - 7200);
    install(issuer.path(), &old_key, &old_chain);

    let status = run(member.path(), "rgw2", "status", json!({})).unwrap();
    assert_eq!(
        status["changed"],
        json!(true),
        "the first status makes the key"
    );
    let pk = status["public_key"].as_str().unwrap().to_owned();
    assert_eq!(status["held"]["rgw-wildcard"], Value::Null);
    let key_file = member.path().join(".certbridge/group/distkey");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(member.path(), "rgw2", "status", json!({})).unwrap();
    assert_eq!(again["changed"], json!(false));
    assert_eq!(
        again["public_key"].as_str().unwrap(),
        pk,
        "the key pair is long-lived"
    );

    let recipients = json!({"recipients": {"rgw-wildcard": [
        {"host": "rgw2", "public_key": pk}, {"host": "rgw1", "public_key": pk}]}});
    let sealed = run(issuer.path(), "rgw1", "seal", recipients.clone()).unwrap();
    let old_bundle = sealed["bundles"]["rgw-wildcard"]["rgw2"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        sealed["bundles"]["rgw-wildcard"].get("rgw1").is_none(),
        "never to itself"
    );

    let opened = run(
        member.path(),
        "rgw2",
        "open",
        json!({"bundles": {"rgw-wildcard": old_bundle}}),
    )
    .unwrap();
    assert_eq!(opened["updated"], json!(["rgw-wildcard"]));
    assert_eq!(file(member.path(), "privkey.pem"), old_key);
    assert_eq!(
        file(member.path(), "combined.pem"),
        file(issuer.path(), "combined.pem")
    );
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(member.path().join(".certbridge/certs/rgw-wildcard.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["handler_owed"], json!(true));
    // The same bundle again: nothing to do.
    let same = run(
        member.path(),
        "rgw2",
        "open",
        json!({"bundles": {"rgw-wildcard": old_bundle}}),
    )
    .unwrap();
    assert_eq!(same["changed"], json!(false));

    // A renewal on the issuer reaches the member; the old bundle replayed afterwards is refused.
    let (new_key, new_chain) = issue(ca.path(), now);
    install(issuer.path(), &new_key, &new_chain);
    let sealed = run(issuer.path(), "rgw1", "seal", recipients).unwrap();
    let new_bundle = sealed["bundles"]["rgw-wildcard"]["rgw2"]
        .as_str()
        .unwrap()
        .to_owned();
    let opened = run(
        member.path(),
        "rgw2",
        "open",
        json!({"bundles": {"rgw-wildcard": new_bundle}}),
    )
    .unwrap();
    assert_eq!(opened["updated"], json!(["rgw-wildcard"]));
    let err = run(
        member.path(),
        "rgw2",
        "open",
        json!({"bundles": {"rgw-wildcard": old_bundle}}),
    )
    .unwrap_err();
    assert!(err.contains("older than the installed"), "{err}");
    assert!(err.contains("nothing was installed"), "{err}");
    assert_eq!(
        file(member.path(), "privkey.pem"),
        new_key,
        "still the newer key"
    );
    assert!(!err.contains("PRIVATE KEY"));

    // A bundle for rgw2 handed to rgw3 (another root, another key) is refused.
    let third = tempfile::tempdir().unwrap();
    run(third.path(), "rgw3", "status", json!({})).unwrap();
    let err = run(
        third.path(),
        "rgw3",
        "open",
        json!({"bundles": {"rgw-wildcard": new_bundle}}),
    )
    .unwrap_err();
    assert!(err.contains("addressed to rgw2, not to rgw3"), "{err}");
    assert!(
        !third.path().join("cog.example.org").exists(),
        "nothing installed on rgw3"
    );
}

#[test]
fn a_readable_distribution_key_is_refused() {
    let member = tempfile::tempdir().unwrap();
    run(member.path(), "rgw2", "status", json!({})).unwrap();
    let key_file = member.path().join(".certbridge/group/distkey");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = run(member.path(), "rgw2", "status", json!({})).unwrap_err();
    assert!(err.contains("readable by others"), "{err}");
}
