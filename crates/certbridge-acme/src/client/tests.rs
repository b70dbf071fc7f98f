//! Unit tests of the ACME client that need no CA: errors, account files, identifiers.

use super::*;

fn problem(kind: &str, status: u16) -> ProblemDoc {
    ProblemDoc {
        kind: Some(format!("{ERR_PREFIX}{kind}")),
        detail: Some("some detail".into()),
        status: Some(status),
        subproblems: vec![],
    }
}

#[test]
fn problems_render_type_detail_status_and_each_subproblem() {
    let mut p = problem("rejectedIdentifier", 400);
    p.subproblems = vec![
        SubProblemDoc {
            identifier: Some("bad.example.test".into()),
            kind: Some(format!("{ERR_PREFIX}rejectedIdentifier")),
            detail: Some("policy forbids".into()),
        },
        SubProblemDoc {
            identifier: Some("*.w.example.test".into()),
            kind: Some(format!("{ERR_PREFIX}caa")),
            detail: Some("CAA forbids".into()),
        },
    ];
    let text = AcmeError::Problem {
        what: "create an order".into(),
        problem: p,
        retry_after: None,
    }
    .to_string();
    for needle in [
        "create an order",
        "some detail",
        "urn:ietf:params:acme:error:rejectedIdentifier",
        "HTTP 400",
        "bad.example.test: policy forbids",
        "*.w.example.test: CAA forbids [urn:ietf:params:acme:error:caa]",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
}

#[test]
fn rate_limits_are_recognised_and_carry_retry_after() {
    assert!(problem("rateLimited", 429).is_rate_limited());
    assert!(ProblemDoc {
        status: Some(429),
        ..ProblemDoc::default()
    }
    .is_rate_limited());
    assert!(!problem("malformed", 400).is_rate_limited());
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let e = AcmeError::RateLimited {
        what: "create an order".into(),
        problem: problem("rateLimited", 429),
        retry_after: Some(at),
    };
    assert_eq!(e.retry_after(), Some(at));
    assert!(e.to_string().contains("2027-01-15T08:00:00Z"), "{e}");
}

#[test]
fn unknown_orders_are_recognised() {
    assert!(problem("malformed", 404).means_unknown());
    assert!(problem("unauthorized", 403).means_unknown());
    assert!(problem("accountDoesNotExist", 400).means_unknown());
    assert!(!problem("serverInternal", 500).means_unknown());
}

#[test]
fn account_paths_hash_the_exact_directory_spelling() {
    let store = AccountStore::new(Path::new("/etc/letsencrypt-certs"));
    let a = store.path_for("https://127.0.0.1:14000/dir");
    let b = store.path_for("https://localhost:14000/dir");
    assert_ne!(a, b);
    assert!(a.starts_with("/etc/letsencrypt-certs/.certbridge/accounts"));
    let name = a.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.len(), 64 + 5);
    assert!(name.ends_with(".json"));
}

#[test]
fn config_is_checked_before_any_access() {
    let deadline = Instant::now();
    let bad = ClientConfig::new("http://ca.example/dir", deadline);
    assert!(matches!(
        bad.validate(),
        Err(AcmeError::BadDirectory { .. })
    ));
    let mut cfg = ClientConfig::new("https://ca.example/dir", deadline);
    assert!(cfg.validate().is_ok());
    cfg.proxy = Some("socks5://proxy:1080".into());
    assert!(matches!(cfg.validate(), Err(AcmeError::BadProxy { .. })));
    cfg.proxy = None;
    cfg.ca_file = Some("/nonexistent/ca.pem".into());
    match cfg.http_client() {
        Err(e @ AcmeError::BadCaFile { .. }) => {
            assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}")
        }
        other => panic!("expected BadCaFile, got {:?}", other.err()),
    }
}

#[test]
fn emails_become_mailto_contacts() {
    assert_eq!(contact_for("a@b.example").unwrap(), "mailto:a@b.example");
    assert_eq!(
        contact_for("mailto:a@b.example").unwrap(),
        "mailto:a@b.example"
    );
    assert!(contact_for("nobody").is_err());
    assert!(contact_for("a b@c.example").is_err());
    assert!(contact_for("a@b.example,c@d.example").is_err());
}

#[test]
fn deadlines_and_retry_after_map_to_their_variants() {
    let stats = HttpStats::default();
    let soon = Instant::now() + Duration::from_secs(3600);
    let e = map_error(
        "wait for validation",
        instant_acme::Error::Timeout(Some(soon)),
        &stats,
        Duration::from_secs(60),
    );
    let at = e.retry_after().expect("retry time");
    let ahead = at.duration_since(SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600));
    assert!(matches!(e, AcmeError::RetryAfterPastDeadline { .. }), "{e}");
    assert!(e.to_string().contains("after this call's deadline"), "{e}");
    let e = map_error(
        "wait for validation",
        instant_acme::Error::Timeout(None),
        &stats,
        Duration::from_secs(60),
    );
    assert!(e.to_string().contains("within 60.0 s"), "{e}");
    let rate: instant_acme::Problem = serde_json::from_str(
        r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
    )
    .unwrap();
    let e = map_error("create an order", rate.into(), &stats, Duration::ZERO);
    assert!(matches!(e, AcmeError::RateLimited { .. }), "{e}");
    assert!(e.to_string().contains("too many"), "{e}");
}

#[test]
fn debug_output_hides_proxy_credentials() {
    let mut cfg = ClientConfig::new("https://ca.example/dir", Instant::now());
    cfg.proxy = Some("http://user:hunter2@proxy:3128".into());
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let e = cfg.validate();
    assert!(e.is_ok());
    cfg.proxy = Some("ftp://user:hunter2@proxy:3128".into());
    let e = cfg.validate().unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn eab_keys_decode_without_showing_them() {
    assert_eq!(decode_eab_key("AQID").unwrap(), vec![1, 2, 3]);
    assert_eq!(decode_eab_key("_-8=").unwrap(), vec![0xff, 0xef]);
    let err = decode_eab_key("secret+key/with$junk").unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(decode_eab_key("").is_err());
}

#[test]
fn replaces_ids_are_checked() {
    let id = parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
    assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    assert!(parse_cert_id("no-dot").is_err());
    assert!(parse_cert_id("a.b.c").is_err());
    assert!(parse_cert_id("a+b.c").is_err());
}

#[test]
fn ari_ids_come_from_aki_and_serial() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1, 2, 3, 4]);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["a.example.test".into()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, 0x02]));
    params.use_authority_key_identifier_extension = true;
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
    assert_eq!(ari_cert_id(leaf.der()).unwrap(), "AQIDBA.AQI");
    let _ = ca_cert;
    assert!(ari_cert_id(b"junk").is_err());
}
