//! Unit tests of the cert store: layout, metadata, installs, rollbacks, repairs.

use super::*;
use crate::selfsign::TestCa;

fn issue(store: &Store, names: &[&str]) -> IssuedSet {
    let ca = TestCa::open_or_create(&store.selfsign_dir()).unwrap();
    let key = KeyType::EcP256.generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let chain = ca.sign(&key, &names, now).unwrap();
    certinfo::verify_issued(&chain, &key.serialize_pem(), &names, now).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn generations_swap_keep_previous_prune_older_and_roll_back() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    let sets: Vec<IssuedSet> = (0..3).map(|_| issue(&store, &["a.example.test"])).collect();
    for s in &sets {
        store.install("a.example.test", s).unwrap();
    }
    let dir = store.cert_dir("a.example.test");
    assert_eq!(read(&dir, "privkey.pem"), sets[2].key_pem);
    assert_eq!(read(&dir, "a.example.test.key"), sets[2].key_pem);
    assert_eq!(read(&dir, "cert.pem"), sets[2].cert_pem);
    assert_eq!(
        read(&dir, "fullchain.cer"),
        format!("{}{}", sets[2].cert_pem, sets[2].chain_pem)
    );
    assert!(read(&dir, "combined.pem").starts_with(sets[2].key_pem.trim_end()));
    let gens: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    assert_eq!(gens.len(), 2, "{gens:?}");
    let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("privkey.pem"), 0o600);
    assert_eq!(mode("combined.pem"), 0o600);
    assert_eq!(mode("cert.pem"), 0o644);
    let on_disk = store.read_installed("a.example.test");
    assert_eq!(on_disk.layout, Layout::Managed);
    assert!(on_disk.key_matches);
    store.rollback("a.example.test").unwrap();
    assert_eq!(read(&dir, "privkey.pem"), sets[1].key_pem);
    assert_eq!(read(&dir, "cert.pem"), sets[1].cert_pem);
    store.rollback("a.example.test").unwrap();
    assert_eq!(read(&dir, "cert.pem"), sets[2].cert_pem);
}

#[test]
fn acme_sh_directory_is_read_then_migrated() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), Some(0));
    store.ensure_reserved().unwrap();
    let old = issue(&store, &["b.example.test"]);
    let dir = store.cert_dir("b.example.test");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("b.example.test.key"), &old.key_pem).unwrap();
    fs::write(dir.join("b.example.test.cer"), &old.cert_pem).unwrap();
    fs::write(dir.join("ca.cer"), &old.chain_pem).unwrap();
    let on_disk = store.read_installed("b.example.test");
    assert_eq!(on_disk.layout, Layout::AcmeSh);
    assert!(on_disk.key_matches);
    let new = issue(&store, &["b.example.test"]);
    store.install("b.example.test", &new).unwrap();
    assert!(fs::symlink_metadata(dir.join("b.example.test.cer"))
        .unwrap()
        .is_symlink());
    assert_eq!(read(&dir, "b.example.test.cer"), new.cert_pem);
    assert_eq!(read(&dir, "privkey.pem"), new.key_pem);
    let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("privkey.pem"), 0o640);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o2750
    );
    // The acme.sh generation is kept as previous and can be restored.
    store.rollback("b.example.test").unwrap();
    assert_eq!(read(&dir, "b.example.test.cer"), old.cert_pem);
}

#[test]
fn pending_key_is_persisted_and_reused_for_the_same_type() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    let k1 = store.pending_key("c", KeyType::EcP384).unwrap();
    assert_eq!(store.pending_key("c", KeyType::EcP384).unwrap(), k1);
    let k2 = store.pending_key("c", KeyType::EcP256).unwrap();
    assert_ne!(k1, k2);
    store.clear_pending_key("c").unwrap();
    assert!(!store.pending_key_path("c").exists());
    let rsa = KeyType::Rsa2048.generate().unwrap();
    assert_eq!(key_type_of(&rsa), Some(KeyType::Rsa2048));
}

fn pending_for(names: &[&str]) -> PendingOrder {
    PendingOrder {
        created_at: 0,
        directory: "self-sign".into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        key_type: KeyType::EcP256,
        staging: true,
        at: OrderAt::SelfSign,
    }
}

#[test]
fn reconcile_records_an_unrecorded_install_as_its_orders_and_adopts_a_rollback() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    let names = ["r.example.test"];
    let a = issue(&store, &names);
    store.install("r.example.test", &a).unwrap();
    let mut meta = Meta::default();
    meta.record_issued(&pending_for(&names), &a.leaf, 1);
    meta.handler_owed = false;
    let on_disk = store.read_installed("r.example.test");
    assert_eq!(
        store.reconcile("r", "r.example.test", &mut meta, &on_disk, 2),
        Reconciled::InStep
    );
    assert!(!meta.handler_owed);

    // An order in flight whose key is persisted; its certificate is installed, then the
    // run dies before saving the metadata.
    let b = issue(&store, &names);
    meta.pending = Some(pending_for(&names));
    let key_path = store.pending_key_path("r");
    fs::write(&key_path, &b.key_pem).unwrap();
    store.install("r.example.test", &b).unwrap();
    let on_disk = store.read_installed("r.example.test");
    assert_eq!(
        store.reconcile("r", "r.example.test", &mut meta, &on_disk, 3),
        Reconciled::OrderInstalled {
            serial: b.leaf.serial.clone()
        }
    );
    let mut want = Meta::default();
    want.record_issued(&pending_for(&names), &b.leaf, 3);
    assert_eq!(meta, want, "exactly what a successful finalize records");

    // A rollback whose metadata save was lost: the installed facts are adopted, the
    // pending order (another key) is kept.
    meta.handler_owed = false;
    meta.pending = Some(pending_for(&names));
    store.rollback("r.example.test").unwrap();
    let on_disk = store.read_installed("r.example.test");
    assert_eq!(
        store.reconcile("r", "r.example.test", &mut meta, &on_disk, 4),
        Reconciled::Adopted {
            serial: a.leaf.serial.clone()
        }
    );
    assert_eq!(meta.serial.as_deref(), Some(a.leaf.serial.as_str()));
    assert!(meta.handler_owed && meta.pending.is_some());
}

#[test]
fn broken_stable_names_and_current_are_repaired_without_following_them() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    let names = ["s.example.test"];
    let sets: Vec<IssuedSet> = (0..2).map(|_| issue(&store, &names)).collect();
    for set in &sets {
        store.install("s.example.test", set).unwrap();
    }
    let dir = store.cert_dir("s.example.test");
    assert_eq!(
        store.repair_layout("s.example.test", None).unwrap(),
        Vec::<String>::new()
    );
    let other = root.path().join("other.pem");
    fs::write(&other, "not ours").unwrap();
    fs::remove_file(dir.join("privkey.pem")).unwrap();
    std::os::unix::fs::symlink(&other, dir.join("privkey.pem")).unwrap();
    fs::remove_file(dir.join("cert.pem")).unwrap();
    fs::write(dir.join("cert.pem"), "a real file").unwrap();
    fs::remove_file(dir.join("chain.pem")).unwrap();
    std::os::unix::fs::symlink("nowhere/chain.pem", dir.join("chain.pem")).unwrap();
    fs::remove_file(dir.join("fullchain.pem")).unwrap();
    // `current` planted outside the directory: never read, pointed back at the generation
    // the metadata records (the older one here, not the newest).
    let elsewhere = root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("cert.pem"), &sets[0].cert_pem).unwrap();
    fs::write(elsewhere.join("privkey.pem"), &sets[0].key_pem).unwrap();
    fs::remove_file(dir.join("current")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("current")).unwrap();
    assert_eq!(
        store.read_installed("s.example.test").layout,
        Layout::Missing
    );
    assert!(store.installed_leaf_der("s.example.test").is_none());
    let mut fixed = store
        .repair_layout("s.example.test", Some(&sets[0].leaf.serial))
        .unwrap();
    fixed.sort();
    assert_eq!(
        fixed,
        [
            "cert.pem",
            "chain.pem",
            "current",
            "fullchain.pem",
            "privkey.pem"
        ]
    );
    assert_eq!(fs::read_to_string(&other).unwrap(), "not ours");
    assert_eq!(read(&dir, "privkey.pem"), sets[0].key_pem);
    assert_eq!(read(&dir, "cert.pem"), sets[0].cert_pem);
    assert_eq!(
        read(&dir, "fullchain.pem"),
        format!("{}{}", sets[0].cert_pem, sets[0].chain_pem)
    );
    let on_disk = store.read_installed("s.example.test");
    assert_eq!(on_disk.leaf.unwrap().serial, sets[0].leaf.serial);
    // Without a recorded serial: the newest complete generation.
    fs::remove_file(dir.join("current")).unwrap();
    std::os::unix::fs::symlink("gen-../..", dir.join("current")).unwrap();
    assert_eq!(
        store.repair_layout("s.example.test", None).unwrap(),
        ["current"]
    );
    assert_eq!(read(&dir, "cert.pem"), sets[1].cert_pem);
    // A name that is a directory cannot be replaced: the error names it.
    fs::remove_file(dir.join("ca.cer")).unwrap();
    fs::create_dir(dir.join("ca.cer")).unwrap();
    fs::write(dir.join("ca.cer/x"), "x").unwrap();
    let err = store
        .repair_layout("s.example.test", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&dir.join("ca.cer").display().to_string()),
        "{err}"
    );
    // An install replaces whatever stands at a stable name, too.
    fs::remove_dir_all(dir.join("ca.cer")).unwrap();
    std::os::unix::fs::symlink(&other, dir.join("ca.cer")).unwrap();
    let next = issue(&store, &names);
    store.install("s.example.test", &next).unwrap();
    assert_eq!(read(&dir, "ca.cer"), next.chain_pem);
    assert_eq!(fs::read_to_string(&other).unwrap(), "not ours");
}

#[test]
fn leftovers_of_killed_runs_are_removed_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    let names = ["t.example.test"];
    for _ in 0..2 {
        let set = issue(&store, &names);
        store.install("t.example.test", &set).unwrap();
    }
    let dir = store.cert_dir("t.example.test");
    let planted = [
        store.reserved().join("pending/.t.key.tmp.4242.0"),
        store.reserved().join("certs/.t.json.tmp.4242.0"),
        store.reserved().join("accounts/.x.json.tmp.4242.1"),
    ];
    for p in &planted {
        fs::write(p, "left by a kill").unwrap();
    }
    std::os::unix::fs::symlink("gen-9", dir.join(".current.tmp.4242")).unwrap();
    std::os::unix::fs::symlink("current/cert.pem", dir.join(".cert.pem.tmp.4242")).unwrap();
    // A complete generation a killed install never swapped in.
    fs::create_dir(dir.join("gen-9")).unwrap();
    fs::write(dir.join("gen-9/privkey.pem"), "key").unwrap();
    let kept = [
        store.reserved().join("certs/t.json"),
        store.pending_key_path("t"),
    ];
    for p in &kept {
        fs::write(p, "{}").unwrap();
    }
    let mut removed = store.remove_leftovers(["t.example.test"]).unwrap();
    removed.sort();
    let mut want: Vec<PathBuf> = planted.to_vec();
    want.extend([
        dir.join(".cert.pem.tmp.4242"),
        dir.join(".current.tmp.4242"),
        dir.join("gen-9"),
    ]);
    want.sort();
    assert_eq!(removed, want);
    for p in &kept {
        assert!(p.exists(), "{}", p.display());
    }
    assert!(dir.join("gen-1").is_dir() && dir.join("gen-2").is_dir());
    assert!(!read(&dir, "cert.pem").is_empty());
    // A `current` that names no generation: no generation is removed.
    fs::create_dir(dir.join("gen-10")).unwrap();
    fs::remove_file(dir.join("current")).unwrap();
    std::os::unix::fs::symlink("/", dir.join("current")).unwrap();
    assert_eq!(
        store.remove_leftovers(["t.example.test"]).unwrap(),
        Vec::<PathBuf>::new()
    );
    assert!(dir.join("gen-10").is_dir());
}

#[test]
fn meta_round_trips() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    assert_eq!(store.load_meta("x").unwrap(), None);
    let meta = Meta {
        names: vec!["a.example.test".into()],
        key_type: Some(KeyType::Rsa3072),
        handler_owed: true,
        ..Default::default()
    };
    store.ensure_reserved().unwrap();
    store.save_meta("x", &meta).unwrap();
    assert_eq!(store.load_meta("x").unwrap(), Some(meta));
}

/// Metadata files as every release so far wrote them: read into the typed order states and
/// written back byte for byte.
#[test]
fn metadata_of_earlier_releases_reads_into_typed_orders_and_writes_back_unchanged() {
    let ca_text = include_str!("fixtures/meta-ca-order.json");
    let meta: Meta = serde_json::from_str(ca_text).unwrap();
    let pending = meta.pending.as_ref().unwrap();
    let OrderAt::Ca(order) = &pending.at else {
        panic!("an order at a CA: {pending:?}")
    };
    assert_eq!(
        order.url,
        "https://acme-v02.api.letsencrypt.org/acme/order/123/456"
    );
    assert_eq!(
        order.account_url,
        "https://acme-v02.api.letsencrypt.org/acme/acct/123"
    );
    assert_eq!(order.challenges.len(), 1);
    assert_eq!(order.profile.as_deref(), Some("tlsserver"));
    assert_eq!(
        order.replaces.as_deref(),
        Some("aYhba4dGQEHhs3uEe6CuLN4ByNQ.BKoX")
    );
    assert_eq!(meta.ari.as_ref().unwrap().renew_at, Some(1796950000));
    let self_text = include_str!("fixtures/meta-self-sign.json");
    let self_meta: Meta = serde_json::from_str(self_text).unwrap();
    assert_eq!(self_meta.pending.as_ref().unwrap().at, OrderAt::SelfSign);
    assert!(self_meta.pending.as_ref().unwrap().challenges().is_empty());
    for (text, meta) in [(ca_text, &meta), (self_text, &self_meta)] {
        let written = String::from_utf8(serde_json::to_vec_pretty(meta).unwrap()).unwrap();
        assert_eq!(written, text.trim_end(), "the on-disk format is unchanged");
    }
    // Through the store, as the modules read it.
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    std::fs::write(store.meta_path("main"), ca_text).unwrap();
    assert_eq!(store.load_meta("main").unwrap().as_ref(), Some(&meta));
}

#[test]
fn orders_written_before_challenges_profiles_and_replaces_still_read() {
    let text = r#"{"names":[],"key_type":null,"directory":null,"account_url":null,
        "profile":null,"serial":null,"not_after":null,"issuer":null,"issued_at":null,
        "pending":{"url":"https://ca.example.test/order/1","created_at":1,
          "directory":"https://ca.example.test/dir","account_url":"https://ca.example.test/acct/1",
          "names":["a.example.test"],"key_type":"ec-p384","staging":false,"self_sign":false},
        "retry_not_before":null,"last_failure":null,"last_problem":null}"#;
    let meta: Meta = serde_json::from_str(text).unwrap();
    let order = meta.pending.as_ref().unwrap().ca().unwrap();
    assert!(order.challenges.is_empty() && order.profile.is_none() && order.replaces.is_none());
}

#[test]
fn an_order_at_a_ca_without_its_url_or_account_is_refused_naming_what_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::new(root.path(), None);
    store.ensure_reserved().unwrap();
    let base = include_str!("fixtures/meta-ca-order.json");
    for (from, to, missing) in [
        (
            r#""url": "https://acme-v02.api.letsencrypt.org/acme/order/123/456""#,
            r#""url": null"#,
            "without its URL",
        ),
        (
            r#""account_url": "https://acme-v02.api.letsencrypt.org/acme/acct/123",
    "names""#,
            r#""account_url": null,
    "names""#,
            "without its account",
        ),
    ] {
        assert!(base.contains(from));
        std::fs::write(store.meta_path("main"), base.replacen(from, to, 1)).unwrap();
        let err = store.load_meta("main").unwrap_err().to_string();
        assert!(err.contains(missing) && err.contains("remove it"), "{err}");
    }
}
