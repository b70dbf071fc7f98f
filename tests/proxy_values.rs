//! A malformed proxy value (issue 13 hole 4): whether it comes from the `proxy` option or from
//! `https_proxy`/`HTTPS_PROXY`, `acme_request` and `acme_finalize` refuse it before any network
//! access, naming what is wrong, and never print its credentials or any part that could be
//! them (the value may not even split into user, password and host as its author meant).

use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::net::TcpListener;
use support::{run_module, run_module_env, ModuleRun};

/// The four shapes of the issue, and a few more; "PASSWORD" marks what must never show.
const VALUES: &[&str] = &[
    "http://user:PASSWORD:127.0.0.1:1",
    "http://user:PASSWORD",
    "user:PASSWORD@127.0.0.1:bad",
    "user:PASSWORD@",
    "http://[user:PASSWORD]:1",
    "http://user:PASSWORD@proxy.test:1/path",
    "socks5://user:PASSWORD@proxy.test:1080",
    "http://user:pass word PASSWORD@proxy.test:1",
    "PASSWORD://proxy.test:1",
];

fn args(root: &std::path::Path, directory: &str, extra: Value) -> Value {
    let mut v = json!({
        "directory": directory,
        "cert_root": root.join("certs"),
        "log_file": root.join("certbridge.log"),
        "jitter_seed": "proxy-host",
        "certs": {"main": ["web.example.test"]},
        "timeout": 5,
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

fn check(run: &ModuleRun, what: &str, source: &str, root: &std::path::Path) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.to_ascii_lowercase().contains("password"),
            "{what}: {stream} shows the password: {text}"
        );
    }
    let log = std::fs::read_to_string(root.join("certbridge.log")).unwrap_or_default();
    assert!(
        !log.to_ascii_lowercase().contains("password"),
        "{what}: the log shows the password: {log}"
    );
    assert!(run.failed(), "{what}: {}", run.json);
    let msg = run.msg();
    assert!(msg.contains("proxy"), "{what}: {msg}");
    assert!(
        msg.contains(source),
        "{what}: names where it came from: {msg}"
    );
}

#[test]
fn malformed_proxy_values_never_show_their_credentials() {
    // The CA: a port that must see no connection (the value is refused before any access).
    let ca = TcpListener::bind("127.0.0.1:0").unwrap();
    ca.set_nonblocking(true).unwrap();
    let directory = format!("https://{}/dir", ca.local_addr().unwrap());
    let mut runs = 0;
    for value in VALUES {
        for module in ["acme_request", "acme_finalize"] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let what = format!("{module} with proxy {value:?}");
            let run = run_module(module, &args(root, &directory, json!({"proxy": value})));
            check(&run, &what, "`proxy` option", root);
            for var in ["HTTPS_PROXY", "https_proxy"] {
                let what = format!("{module} with {var}={value:?}");
                let run =
                    run_module_env(module, &args(root, &directory, json!({})), &[(var, value)]);
                check(&run, &what, var, root);
                runs += 1;
            }
            runs += 1;
        }
    }
    assert!(ca.accept().is_err(), "a module reached the CA");
    let example = run_module(
        "acme_request",
        &args(
            tempfile::tempdir().unwrap().path(),
            &directory,
            json!({"proxy": "http://user:PASSWORD"}),
        ),
    );
    println!(
        "{runs} module calls with malformed proxy values, none printed them; e.g. {}",
        example.msg()
    );
}
