//! Unit tests of acme_http_publish's writes, removals and refusals on real directories.

use super::*;
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const TOKEN2: &str = "1XOVjbYSZwWGBB9f0jHxWqFKIoQBkXQ-ikcXRp7yRz4";
const THUMB: &str = "nysa8iAz6OEbHk7uGr1rw3e7oTdXGqM6z7xFzK2WZqg";

fn entry(token: &str, webroot: &Path) -> TokenEntry {
    TokenEntry {
        token: token.into(),
        key_authorization: format!("{token}.{THUMB}"),
        webroot: webroot.display().to_string(),
        cert: "web".into(),
        name: "web.example.test".into(),
        host: "web01".into(),
    }
}

fn opts(tokens: Vec<TokenEntry>, state: &Path) -> HttpPublishOptions {
    HttpPublishOptions {
        tokens,
        retired: vec![],
        keep_seconds: None,
        state_dir: state.display().to_string(),
    }
}

fn token_path(webroot: &Path, token: &str) -> PathBuf {
    webroot.join(".well-known/acme-challenge").join(token)
}

#[test]
fn writes_tokens_0644_once_and_removes_them_when_retired() {
    let tmp = tempfile::tempdir().unwrap();
    let (web, state) = (tmp.path().join("www"), tmp.path().join("state"));
    std::fs::create_dir(&web).unwrap();
    let o = opts(vec![entry(TOKEN, &web)], &state);
    let r = publish(&o, false, 1000).unwrap();
    assert!(r.changed && r.rejected.is_empty(), "{r:?}");
    let p = token_path(&web, TOKEN);
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("{TOKEN}.{THUMB}")
    );
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o644
    );
    for d in [
        web.join(".well-known"),
        web.join(".well-known/acme-challenge"),
    ] {
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
    // The same tokens again: nothing to do.
    let again = publish(&o, false, 1001).unwrap();
    assert!(!again.changed && again.written.is_empty(), "{again:?}");
    // Retired: removed at once, whatever its age.
    let mut gone = opts(vec![], &state);
    gone.retired = vec![TokenPlace {
        token: TOKEN.into(),
        webroot: web.display().to_string(),
    }];
    let r = publish(&gone, false, 1002).unwrap();
    assert!(r.changed && r.removed.len() == 1, "{r:?}");
    assert!(!p.exists());
}

#[test]
fn tokens_no_longer_listed_go_once_older_than_keep_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let (web, state) = (tmp.path().join("www"), tmp.path().join("state"));
    std::fs::create_dir(&web).unwrap();
    publish(&opts(vec![entry(TOKEN, &web)], &state), false, 1000).unwrap();
    let mut next = opts(vec![entry(TOKEN2, &web)], &state);
    next.keep_seconds = Some(60);
    // Younger than keep_seconds: another pulse may still need it.
    let r = publish(&next, false, 1030).unwrap();
    assert!(r.removed.is_empty() && token_path(&web, TOKEN).exists());
    let r = publish(&next, false, 1060).unwrap();
    assert_eq!(r.removed.len(), 1, "{r:?}");
    assert!(!token_path(&web, TOKEN).exists() && token_path(&web, TOKEN2).exists());
}

#[test]
fn check_mode_writes_nothing_but_tells_what_it_would() {
    let tmp = tempfile::tempdir().unwrap();
    let (web, state) = (tmp.path().join("www"), tmp.path().join("state"));
    std::fs::create_dir(&web).unwrap();
    let r = publish(&opts(vec![entry(TOKEN, &web)], &state), true, 1000).unwrap();
    assert!(r.changed && r.written.len() == 1);
    assert!(!web.join(".well-known").exists() && !state.exists());
}

#[test]
fn bad_entries_are_rejected_one_by_one_naming_cert_and_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (web, state) = (tmp.path().join("www"), tmp.path().join("state"));
    std::fs::create_dir(&web).unwrap();
    let mut relative = entry(TOKEN2, &web);
    relative.webroot = "www".into();
    let mut bad_token = entry("../../etc/passwd", &web);
    bad_token.key_authorization = format!("../../etc/passwd.{THUMB}");
    let mut bad_ka = entry(TOKEN2, &web);
    bad_ka.key_authorization = "other".into();
    let missing = entry(TOKEN2, &tmp.path().join("nowhere"));
    let o = opts(
        vec![entry(TOKEN, &web), relative, bad_token, bad_ka, missing],
        &state,
    );
    let r = publish(&o, false, 1000).unwrap();
    assert_eq!(r.written.len(), 1);
    assert_eq!(r.rejected.len(), 4, "{r:?}");
    let reasons: Vec<&str> = r.rejected.iter().map(|x| x.reason.as_str()).collect();
    assert!(reasons[0].contains("not an absolute path"), "{reasons:?}");
    assert!(reasons[1].contains("not an http-01 token"), "{reasons:?}");
    assert!(reasons[2].contains("key authorization"), "{reasons:?}");
    assert!(reasons[3].contains("does not exist"), "{reasons:?}");
    assert!(r
        .rejected
        .iter()
        .all(|x| x.cert == "web" && x.name == "web.example.test"));
    assert!(!tmp.path().join("nowhere").exists());
}

#[test]
fn a_planted_symlink_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (web, state, elsewhere) = (
        tmp.path().join("www"),
        tmp.path().join("state"),
        tmp.path().join("elsewhere"),
    );
    std::fs::create_dir_all(elsewhere.join("acme-challenge")).unwrap();
    std::fs::create_dir(&web).unwrap();
    std::os::unix::fs::symlink(&elsewhere, web.join(".well-known")).unwrap();
    let r = publish(&opts(vec![entry(TOKEN, &web)], &state), false, 1000).unwrap();
    assert!(r.written.is_empty() && r.rejected.len() == 1, "{r:?}");
    assert!(r.rejected[0].reason.contains("symbolic link"), "{r:?}");
    assert_eq!(
        std::fs::read_dir(elsewhere.join("acme-challenge"))
            .unwrap()
            .count(),
        0
    );

    // A webroot that is itself a link is refused too.
    let linked = tmp.path().join("linked");
    std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
    let r = publish(&opts(vec![entry(TOKEN, &linked)], &state), false, 1000).unwrap();
    assert!(r.rejected[0].reason.contains("is a symbolic link"), "{r:?}");

    // A link at the token path is replaced, its target left alone.
    std::fs::remove_file(web.join(".well-known")).unwrap();
    std::fs::create_dir_all(web.join(".well-known/acme-challenge")).unwrap();
    let target = tmp.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, token_path(&web, TOKEN)).unwrap();
    let r = publish(&opts(vec![entry(TOKEN, &web)], &state), false, 1000).unwrap();
    assert_eq!(r.written.len(), 1, "{r:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(!std::fs::symlink_metadata(token_path(&web, TOKEN))
        .unwrap()
        .file_type()
        .is_symlink());
}
