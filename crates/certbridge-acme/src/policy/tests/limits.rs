//! Let's Encrypt's profiles and their limits.

use super::*;

#[test]
fn lets_encrypt_profiles_and_their_limits() {
    for d in [
        LE_PRODUCTION,
        LE_STAGING,
        "https://ACME-v02.api.letsencrypt.org:443/directory/",
    ] {
        assert!(is_letsencrypt(d), "{d}");
    }
    for d in [
        "https://acme-v02.api.letsencrypt.org.example.test/directory",
        "https://example.test/acme-v02.api.letsencrypt.org/directory",
        "http://acme-v02.api.letsencrypt.org/directory",
        "https://127.0.0.1:14000/dir",
        SELF_SIGN_DIRECTORY,
    ] {
        assert!(!is_letsencrypt(d), "{d}");
    }
    let limits = |p: Option<&str>| profile_limits(LE_PRODUCTION, p).unwrap();
    for p in ["tlsserver", "shortlived"] {
        let l = limits(Some(p));
        assert_eq!((l.max_names, l.pending_order_lifetime()), (25, 3600), "{p}");
        assert_eq!(l.order_lifetime, 8 * 3600);
    }
    assert_eq!(limits(Some("classic")), limits(None));
    assert_eq!(
        (
            limits(None).max_names,
            limits(None).pending_order_lifetime()
        ),
        (100, 7 * DAY)
    );
    assert_eq!(profile_limits(LE_STAGING, Some("brandnew")), None);
    assert_eq!(
        profile_limits("https://ca.example.test/dir", Some("tlsserver")),
        None
    );

    let tls = limits(Some("tlsserver"));
    assert_eq!(too_many_names(&tls, 25, Some("tlsserver")), None);
    let msg = too_many_names(&tls, 26, Some("tlsserver")).unwrap();
    assert!(
        msg.starts_with("26 names, but Let's Encrypt's `tlsserver` profile allows at most 25")
            && msg.contains("`classic` allows 100"),
        "{msg}"
    );
    let msg = too_many_names(&limits(None), 101, None).unwrap();
    assert!(
        msg.contains("default profile (`classic`) allows at most 100")
            && msg.ends_with("split the names over several certs"),
        "{msg}"
    );
    assert_eq!(human_duration(3600), "1 h");
    assert_eq!(human_duration(7 * DAY), "7 d");
    assert_eq!(human_duration(90 * 60), "90 min");
    assert_eq!(human_duration(3700), "3700 s");
}
