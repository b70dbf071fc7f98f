//! Unit tests of option parsing and validation.

use super::*;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default)]
    #[allow(dead_code)]
    only: Option<Vec<String>>,
}

fn check(v: Value) -> Result<Config, String> {
    let Value::Object(m) = v else { panic!() };
    let (common, _own): (CommonOptions, Own) =
        split_options(m, &["only"]).map_err(|e| e.to_string())?;
    validate(common, 60).map_err(|e| e.to_string())
}

#[test]
fn accepts_lists_maps_ports_and_normalises() {
    let c = check(json!({"certs": {
        "main": ["WWW.Example.test.", "example.test:443"],
        "rsa": {"names": ["*.s3.example.test", "s3.example.test"], "key_type": "rsa-2048"}},
        "jitter_seed": "h"}))
    .unwrap();
    let main = c.cert("main").unwrap();
    assert_eq!(
        main.name_strings(),
        vec!["www.example.test", "example.test"]
    );
    assert_eq!(main.dir, "www.example.test");
    assert_eq!(c.cert("rsa").unwrap().dir, "s3.example.test");
    assert_eq!(
        c.cert("rsa").unwrap().key_type,
        KeyChoice::Set(KeyType::Rsa2048)
    );
    // Not set: the installed certificate's type, else the default.
    assert_eq!(main.key_type, KeyChoice::Keep);
    assert_eq!(
        main.key_type.resolve(Some(KeyType::Rsa3072)),
        KeyType::Rsa3072
    );
    assert_eq!(main.key_type.resolve(None), KeyType::EcP256);
    assert_eq!(c.directory, LE_PRODUCTION);
    assert_eq!(c.notes.len(), 1);
    assert_eq!(c.timeout, Duration::from_secs(60));
}

#[test]
fn refuses_bad_input_naming_cert_and_name() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"certs": {}}), "empty"),
        (
            json!({"certs": {"a": ["a.example.test"]}, "colour": 1}),
            "unsupported option `colour`",
        ),
        (
            json!({"certs": {"a": ["A.example.test", "a.example.test"]}}),
            "certs.a: `a.example.test` appears more than once",
        ),
        (
            json!({"certs": {"a": ["*.*.x.test"]}}),
            "certs.a: `*.*.x.test`",
        ),
        (json!({"certs": {"a": ["a..b"]}}), "certs.a: `a..b`"),
        (json!({"certs": {"a": ["a_b.example.test"]}}), "`_`"),
        (json!({"certs": {"a": ["single"]}}), "single label"),
        (json!({"certs": {"../x": ["a.example.test"]}}), "`../x`"),
        (
            json!({"certs": {".certbridge": ["a.example.test"]}}),
            "`.certbridge`",
        ),
        (
            json!({"certs": {"a": ["x.example.test"], "b": ["*.x.example.test"]}}),
            "both map to the directory `x.example.test`",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "key_type": "dsa"}),
            "key_type: unknown key type `dsa`",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "force": ["b"]}),
            "force: `b`",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "cert_root": "rel"}),
            "cert_root",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "directory": "http://x"}),
            "directory",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "timeout": "soon"}),
            "timeout",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k"}),
            "eab_kid",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k", "eab_hmac_key": "not base64!"}),
            "eab_hmac_key",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "group": "no-such-group-x"}),
            "group",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "ca_file": "/nonexistent"}),
            "ca_file",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "account_email": "nobody"}),
            "account_email",
        ),
        (
            json!({"certs": {"a": ["a.example.test"]}, "profile": "no spaces"}),
            "profile: `no spaces`",
        ),
        (
            json!({"certs": {"a": {"names": ["a.example.test"], "profile": "x/y"}}}),
            "certs.a.profile",
        ),
    ];
    for (input, want) in cases {
        let err = check(input.clone()).expect_err(&input.to_string());
        assert!(err.contains(want), "{input}: {err}");
    }
    let many: Vec<String> = (0..101).map(|i| format!("n{i}.example.test")).collect();
    let err = check(json!({"certs": {"big": many}})).unwrap_err();
    assert!(err.contains("certs.big: 101 names"), "{err}");
    let err = check(
        json!({"certs": {"a": ["a.example.test"]}, "eab_kid": "k", "eab_hmac_key": "c2VjcmV0!!"}),
    )
    .unwrap_err();
    assert!(!err.contains("c2VjcmV0"), "{err}");
}

/// A valid name of `len` octets (labels of up to 63 octets).
fn long_name(len: usize) -> String {
    let mut body = String::new();
    while body.len() + ".test".len() < len {
        if !body.is_empty() {
            body.push('.');
        }
        let room = len - ".test".len() - body.len();
        // Never leave exactly one octet: it would need a dot and an empty label.
        let take = if room > 63 && room - 63 == 1 {
            62
        } else {
            room.min(63)
        };
        body.push_str(&"a".repeat(take));
    }
    format!("{body}.test")
}

#[test]
fn durations_are_bounded_naming_option_and_range() {
    let base = |k: &str, v: Value| {
        let mut o = json!({"certs": {"a": ["a.example.test"]}, "jitter_seed": "h"});
        o[k] = v;
        o
    };
    for (k, v, want) in [
        ("timeout", json!(18446744073709551615u64), "option `timeout`: expected a whole number of seconds from 1 to 86400 (1 day), found 18446744073709551615"),
        ("timeout", json!(0), "from 1 to 86400"),
        ("timeout", json!("86401"), "found 86401"),
        ("request_timeout", json!(1e20), "option `request_timeout`: expected a whole number of seconds from 1 to 3600 (1 hour)"),
        ("renew_days", json!(18446744073709551615u64), "option `renew_days`: expected a whole number of days from 0 to 3650"),
    ] {
        let err = check(base(k, v.clone())).unwrap_err();
        assert!(err.contains(want), "{k}={v}: {err}");
    }
    let c = check(base("timeout", json!("86400"))).unwrap();
    assert_eq!(c.timeout, Duration::from_secs(86_400));
}

#[test]
fn names_whose_files_cannot_be_made_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("certs");
    let with = |first: &str| {
        check(json!({"certs": {"big": [first, "www.example.test"]},
            "cert_root": root, "jitter_seed": "h"}))
    };
    // 253 and 251 octets are valid names, but `<dir>.key`'s temp names are too long.
    for len in [253, 251, 233] {
        let name = long_name(len);
        assert_eq!(name.len(), len);
        let err = with(&name).unwrap_err();
        assert!(
            err.starts_with("certs.big: the file name `")
                && err.contains(&format!("`{name}.key` would be"))
                && err.contains("over the 255-octet file-name limit")
                && err.contains("at most 232 octets first"),
            "{len}: {err}"
        );
        // As a wildcard the base is what names the directory.
        let err = with(&format!("*.{name}")).unwrap_err();
        assert!(err.contains("certs.big"), "{err}");
    }
    with(&long_name(232)).unwrap();
    // Only the first name names a directory.
    check(json!({"certs": {"big": ["a.example.test", long_name(253)]},
        "cert_root": root, "jitter_seed": "h"}))
    .unwrap();
    assert!(!root.exists(), "validation made the cert root");
    // A cert root so deep that no cert directory fits in PATH_MAX.
    let deep = format!("/{}", vec!["d".repeat(200); 20].join("/"));
    let err =
        check(json!({"certs": {"a": ["a.example.test"]}, "cert_root": deep, "jitter_seed": "h"}))
            .unwrap_err();
    assert!(
        err.contains("certs.a: the path") && err.contains("cert_root"),
        "{err}"
    );
}

#[test]
fn ca_file_and_eab_are_checked_before_any_lock() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let base = || json!({"certs": {"a": ["a.example.test"]}, "jitter_seed": "h"});
    let mut o = base();
    o["ca_file"] = json!(not_pem);
    let err = check(o).unwrap_err();
    assert!(
        err.starts_with("ca_file: ") && err.contains("no PEM certificate"),
        "{err}"
    );
    for (kid, key, want) in [
        (
            json!("kid-1"),
            json!(""),
            "eab_hmac_key: is missing or empty",
        ),
        (
            json!("kid-1"),
            json!("  "),
            "eab_hmac_key: is missing or empty",
        ),
        (
            json!("kid-1"),
            json!("===="),
            "eab_hmac_key: is not base64url, or decodes to nothing",
        ),
        (json!(""), json!("c2VjcmV0"), "eab_kid: is missing or empty"),
    ] {
        let mut o = base();
        o["eab_kid"] = kid;
        o["eab_hmac_key"] = key;
        let err = check(o).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    // Both empty: not given (what a role passes for unset variables).
    let mut o = base();
    o["eab_kid"] = json!("");
    o["eab_hmac_key"] = json!("");
    assert!(check(o).unwrap().eab.is_none());
}

#[test]
fn unknown_keys_of_a_cert_map_are_named_with_the_cert() {
    for (entry, want) in [
        (
            json!({"names": ["a.example.test"], "kye_type": "rsa-2048"}),
            "option `certs.main`: unsupported key `kye_type` in the cert's map; valid keys: names, key_type, profile",
        ),
        (json!({"key_type": "rsa-2048"}), "option `certs.main`: the cert's map has no `names`"),
        (json!({"names": "a.example.test"}), "option `certs.main`: `names`:"),
        (json!({"names": ["a.example.test"], "key_type": 2048}), "option `certs.main`: `key_type`: expected a string"),
        (json!(["a.example.test", 7]), "option `certs.main`: name 2: expected a string"),
        (json!("a.example.test"), "option `certs.main`: expected a list of names"),
    ] {
        let err = check(json!({"certs": {"main": entry}})).unwrap_err();
        assert!(err.contains(want), "{entry}: {err}");
        assert!(!err.contains("untagged"), "{err}");
    }
    let c = check(json!({"certs": {"main": {"names": ["a.example.test"], "key_type": null, "profile": "x"}}, "jitter_seed": "h"})).unwrap();
    assert_eq!(c.cert("main").unwrap().profile.as_deref(), Some("x"));
}

#[test]
fn profile_per_cert_overrides_the_default_and_proxy_is_kept() {
    let c = check(json!({"certs": {
        "a": ["a.example.test"],
        "b": {"names": ["b.example.test"], "profile": "shortlived"}},
        "profile": "tlsserver", "proxy": "http://127.0.0.1:3128"}))
    .unwrap();
    assert_eq!(c.cert("a").unwrap().profile.as_deref(), Some("tlsserver"));
    assert_eq!(c.cert("b").unwrap().profile.as_deref(), Some("shortlived"));
    assert_eq!(c.proxy.as_deref(), Some("http://127.0.0.1:3128"));
    let c = check(json!({"certs": {"a": ["a.example.test"]}, "profile": ""})).unwrap();
    assert_eq!(c.cert("a").unwrap().profile, None);
}

#[test]
fn force_accepts_bool_string_and_list() {
    let c = check(json!({"certs": {"a": ["a.example.test"]}, "force": "yes"})).unwrap();
    assert!(c.forced("a"));
    let c =
        check(json!({"certs": {"a": ["a.example.test"], "b": ["b.example.test"]}, "force": ["b"]}))
            .unwrap();
    assert!(!c.forced("a") && c.forced("b"));
}

#[test]
fn http01_options_per_cert_and_as_defaults() {
    let c = check(json!({"certs": {
        "web": {"names": ["web.example.test", "www.example.test"], "challenge": "http-01",
                "webroot": "/var/www/acme", "webroot_hosts": "backends"},
        "ip": {"names": ["0:0:0:0:0:0:0:1", "127.0.0.1"]},
        "dns": {"names": ["*.example.test"], "challenge": "dns-01"}},
        "challenge": "http-01", "webroot": "/srv/acme", "jitter_seed": "h"}))
    .unwrap();
    let web = c.cert("web").unwrap();
    assert_eq!(
        web.challenge,
        Challenge::Http01 {
            webroot: "/var/www/acme".into(),
            served_here: false
        }
    );
    let ip = c.cert("ip").unwrap();
    assert_eq!(ip.challenge.webroot(), Some("/srv/acme"));
    assert_eq!(ip.name_strings(), vec!["::1", "127.0.0.1"]);
    assert_eq!(ip.dir, "0--1");
    assert_eq!(c.cert("dns").unwrap().challenge, Challenge::Dns01);
}

#[test]
fn http01_refusals_name_cert_and_name() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"certs": {"w": {"names": ["*.example.test"], "challenge": "http-01", "webroot": "/w"}}}),
            "certs.w: `*.example.test` is a wildcard",
        ),
        (
            json!({"certs": {"ip": ["192.0.2.7"]}}),
            "certs.ip: `192.0.2.7` is an IP address",
        ),
        (
            json!({"certs": {"r": {"names": ["r.example.test"], "challenge": "http-01", "webroot": "www"}}}),
            "certs.r: `r.example.test`: webroot `www` is not an absolute path",
        ),
        (
            json!({"certs": {"n": {"names": ["n.example.test"], "challenge": "http-01"}}}),
            "certs.n: `n.example.test`: challenge http-01 needs `webroot`",
        ),
        (
            json!({"certs": {"t": {"names": ["t.example.test"], "challenge": "tls-alpn-01"}}}),
            "certs.t.challenge: `tls-alpn-01` is not a challenge",
        ),
    ];
    for (v, want) in cases {
        let e = check(v.clone()).expect_err(&v.to_string());
        assert!(e.contains(want), "{v}: {e}");
    }
}
