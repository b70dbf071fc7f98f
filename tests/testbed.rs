//! The test bed itself (scripts/testbed): zone updates reach both CNAME layouts and the
//! secondary, the dynamic zone takes TSIG-signed updates only, Pebble answers over HTTPS,
//! beds run side by side, and `down` leaves no process behind.
use certbridge_testsupport as support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{dig, dig_status, nsupdate_signed, repo_root, Testbed};

const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns true or `DEADLINE` passes; returns the time it took.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    start.elapsed()
}

fn soa_serial(port: &str, zone: &str) -> Option<u32> {
    dig(port, zone, "SOA")
        .first()
        .and_then(|soa| soa.split_whitespace().nth(2).and_then(|s| s.parse().ok()))
}

/// `/usr/sbin/<tool>` when present: an unprivileged user's PATH may lack /usr/sbin.
fn sbin(tool: &str) -> std::path::PathBuf {
    let path = Path::new("/usr/sbin").join(tool);
    if path.exists() {
        path
    } else {
        tool.into()
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

fn testbed(args: &[&str], state: &Path) -> Output {
    run(Command::new(repo_root().join("scripts/testbed"))
        .args(args)
        .arg("--state")
        .arg(state))
}

/// Writes `signing.test` with `serial` and `txt` (owner relative to the zone, value) records.
fn write_signing_zone(bed: &Testbed, serial: u32, with_ns2: bool, txt: &[(&str, &str)]) {
    let mut zone = format!(
        "$TTL 5\n$ORIGIN signing.test.\n\
         @ IN SOA ns1.signing.test. hostmaster.signing.test. {serial} 3600 60 86400 1\n\
         @ IN NS ns1.signing.test.\nns1 IN A 127.0.0.1\n"
    );
    if with_ns2 {
        zone.push_str("@ IN NS ns2.signing.test.\nns2 IN A 127.0.0.1\n");
    }
    for (owner, value) in txt {
        zone.push_str(&format!("{owner} IN TXT \"{value}\"\n"));
    }
    let path = Path::new(bed.get("TESTBED_SIGNING_ZONE_FILE"));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, zone).expect("write zone");
    let check = run(Command::new("named-checkzone")
        .arg("signing.test")
        .arg(&tmp));
    assert!(check.status.success(), "named-checkzone: {check:?}");
    std::fs::rename(&tmp, path).expect("rename zone");
}

fn pid_alive(pid: &str) -> bool {
    // A zombie (exited, not yet reaped by init) is no longer a running process.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn start_timed(opts: &[&str]) -> Testbed {
    let start = Instant::now();
    let bed = Testbed::start(opts);
    println!(
        "bed {opts:?} started in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    bed
}

#[test]
fn static_zone_update_reaches_both_layouts_and_the_secondary() {
    let bed = start_timed(&["--hosts", "6", "--secondary"]);
    let dns = bed.get("TESTBED_DNS_PORT");
    let secondary = bed.get("TESTBED_DNS_SECONDARY").rsplit(':').next().unwrap();
    assert_ne!(dns, secondary);
    assert_eq!(soa_serial(dns, "signing.test"), Some(1));

    let values = [
        ("acme", "shared-value-1"),
        ("acme", "shared-value-2"),
        ("host5.example.test", "per-name-value-5"),
        ("s3.example.test", "wildcard-value"),
        ("s3.example.test", "apex-value"),
    ];
    write_signing_zone(&bed, 2, true, &values);
    let reload = run(Command::new(sbin("rndc"))
        .arg("-c")
        .arg(bed.get("TESTBED_RNDC_CONF"))
        .args(["reload", "signing.test"]));
    assert!(reload.status.success(), "rndc reload: {reload:?}");
    let took = wait_for("primary serial 2", || {
        soa_serial(dns, "signing.test") == Some(2)
    });
    println!(
        "primary served serial 2 {} ms after rndc reload",
        took.as_millis()
    );

    let shared = dig(dns, "_acme-challenge.host1.example.test", "TXT");
    assert_eq!(shared[0], "acme.signing.test.", "shared layout: {shared:?}");
    assert!(
        shared.contains(&"\"shared-value-1\"".to_owned()),
        "{shared:?}"
    );
    assert!(
        shared.contains(&"\"shared-value-2\"".to_owned()),
        "{shared:?}"
    );
    let per_name = dig(dns, "_acme-challenge.host5.example.test", "TXT");
    assert_eq!(
        per_name,
        ["host5.example.test.signing.test.", "\"per-name-value-5\""],
        "per-name layout"
    );
    let s3 = dig(dns, "_acme-challenge.s3.example.test", "TXT");
    assert_eq!(s3[0], "s3.example.test.signing.test.");
    assert_eq!(s3.len(), 3, "wildcard + apex share one record: {s3:?}");
    println!("through CNAMEs: shared {shared:?}, per-name {per_name:?}, s3 {s3:?}");

    let took = wait_for("secondary serial 2 after NOTIFY", || {
        soa_serial(secondary, "signing.test") == Some(2)
    });
    let mut on_secondary = dig(secondary, "acme.signing.test", "TXT");
    on_secondary.sort();
    assert_eq!(on_secondary, ["\"shared-value-1\"", "\"shared-value-2\""]);
    assert_eq!(
        dig(secondary, "host5.example.test.signing.test", "TXT"),
        ["\"per-name-value-5\""]
    );
    println!(
        "secondary served serial 2 {} ms after the primary",
        took.as_millis()
    );
}

#[test]
fn dynamic_zone_takes_tsig_updates_only() {
    let bed = start_timed(&["--hosts", "3", "--secondary"]);
    let dns = bed.get("TESTBED_DNS_PORT");
    let secondary = bed.get("TESTBED_DNS_SECONDARY").rsplit(':').next().unwrap();
    let secret = bed.get("TESTBED_TSIG_SECRET");
    let update = |owner: &str, value: &str| {
        format!(
            "server 127.0.0.1 {dns}\nzone dyn-signing.test\n\
             update add {owner}.dyn-signing.test. 5 TXT \"{value}\"\nsend\n"
        )
    };

    let ok = nsupdate_signed(&bed, secret, &update("dyn2.example.test", "signed-value"));
    assert!(ok.status.success(), "signed update refused: {ok:?}");
    let answer = dig(dns, "_acme-challenge.dyn2.example.test", "TXT");
    assert_eq!(
        answer,
        ["dyn2.example.test.dyn-signing.test.", "\"signed-value\""]
    );
    println!("TSIG update accepted, served through the CNAME: {answer:?}");

    // Same name, same length, other bytes: a wrong key.
    let wrong_secret = match secret.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", &secret[1..]),
    };
    let wrong = nsupdate_signed(&bed, &wrong_secret, &update("acme", "forged-value"));
    assert!(!wrong.status.success(), "update with a wrong key accepted");
    let unsigned = run(Command::new("sh").arg("-c").arg(format!(
        "printf '%s' '{}' | nsupdate",
        update("acme", "unsigned-value")
    )));
    assert!(!unsigned.status.success(), "unsigned update accepted");
    let non_txt = nsupdate_signed(
        &bed,
        secret,
        &format!(
            "server 127.0.0.1 {dns}\nzone dyn-signing.test\n\
             update add x.dyn-signing.test. 5 A 192.0.2.1\nsend\n"
        ),
    );
    assert!(!non_txt.status.success(), "non-TXT update accepted");
    assert!(dig(dns, "acme.dyn-signing.test", "TXT").is_empty());
    assert!(dig(dns, "x.dyn-signing.test", "A").is_empty());
    println!(
        "refused: wrong key ({}), unsigned, non-TXT",
        String::from_utf8_lossy(&wrong.stderr).trim()
    );

    let axfr = |key: Option<&str>| {
        let mut cmd = Command::new("dig");
        cmd.args(["-p", dns, "@127.0.0.1", "dyn-signing.test", "AXFR"]);
        if let Some(k) = key {
            cmd.arg("-y").arg(format!(
                "{}:{}:{k}",
                bed.get("TESTBED_TSIG_ALGORITHM"),
                bed.get("TESTBED_TSIG_NAME")
            ));
        }
        String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned()
    };
    assert!(axfr(Some(secret)).contains("signed-value"), "TSIG AXFR");
    assert!(axfr(None).contains("Transfer failed"), "AXFR without key");
    println!("AXFR with the TSIG key works, without it is refused");

    let rndc = |args: &[&str]| {
        run(Command::new(sbin("rndc"))
            .arg("-c")
            .arg(bed.get("TESTBED_RNDC_CONF"))
            .args(args))
    };
    assert!(!rndc(&["reload", "dyn-signing.test"]).status.success());
    assert!(rndc(&["freeze", "dyn-signing.test"]).status.success());
    assert!(rndc(&["thaw", "dyn-signing.test"]).status.success());

    let took = wait_for("secondary has the dynamic update", || {
        dig(secondary, "dyn2.example.test.dyn-signing.test", "TXT") == ["\"signed-value\""]
    });
    println!(
        "rndc reload refused on the dynamic zone, freeze/thaw work; secondary caught up in {} ms",
        took.as_millis()
    );
}

#[test]
fn production_zone_has_the_documented_names() {
    let bed = start_timed(&["--hosts", "5"]);
    let dns = bed.get("TESTBED_DNS_PORT");
    assert_eq!(bed.get("TESTBED_HOSTS"), "5");
    assert_eq!(bed.get("TESTBED_PROD_ZONE"), "example.test");
    assert_eq!(bed.get("TESTBED_SHARED_ALIAS"), "acme.signing.test");
    let cname = |name: &str| dig(dns, &format!("_acme-challenge.{name}"), "CNAME");
    for i in 1..=5 {
        let want = if i <= 3 {
            "acme.signing.test.".to_owned()
        } else {
            format!("host{i}.example.test.signing.test.")
        };
        assert_eq!(cname(&format!("host{i}.example.test")), [want]);
        assert_eq!(
            dig(dns, &format!("host{i}.example.test"), "A"),
            ["127.0.0.1"]
        );
        assert_eq!(
            cname(&format!("dyn{i}.example.test")),
            [format!("dyn{i}.example.test.dyn-signing.test.")]
        );
    }
    assert_eq!(dig_status(dns, "host6.example.test", "A"), "NXDOMAIN");
    assert_eq!(dig_status(dns, "dyn6.example.test", "A"), "NXDOMAIN");
    assert_eq!(cname("dynshared.example.test"), ["acme.dyn-signing.test."]);
    assert_eq!(cname("s3.example.test"), ["s3.example.test.signing.test."]);
    assert_eq!(dig(dns, "any.s3.example.test", "A"), ["127.0.0.1"]);
    assert!(cname("nocname.example.test").is_empty());
    assert_eq!(dig(dns, "nocname.example.test", "A"), ["127.0.0.1"]);
    assert_eq!(
        cname("wrong.example.test"),
        ["wrong.example.test.elsewhere.test."]
    );
    assert_eq!(
        cname("loop.example.test"),
        ["_acme-challenge.loop2.example.test."]
    );
    assert_eq!(
        cname("loop2.example.test"),
        ["_acme-challenge.loop.example.test."]
    );
    assert!(cname("direct.example.test").is_empty());
    assert_eq!(
        dig(dns, "_acme-challenge.direct.example.test", "TXT").len(),
        1
    );
    // Nothing outside the bed's zones resolves: recursion stays on the machine.
    assert_eq!(dig_status(dns, "example.com", "A"), "NXDOMAIN");
    println!("checked 5 hosts x 3 names, the s3/nocname/wrong/loop/direct cases, NXDOMAIN outside");
}

#[test]
fn pebble_answers_over_https_with_the_bed_ca_and_eab() {
    let bed = start_timed(&[
        "--eab",
        "--validity",
        "120",
        "--blocklist",
        "blocked.example.test",
    ]);
    let dir = bed.get("TESTBED_ACME_DIRECTORY");
    assert!(
        dir.starts_with("https://127.0.0.1:") && dir.ends_with("/dir"),
        "{dir}"
    );
    let curl = |url: &str, ca: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "5"]);
        if let Some(ca) = ca {
            cmd.arg("--cacert").arg(ca);
        }
        run(cmd.arg(url))
    };
    let ca = bed.get("TESTBED_ACME_CA_FILE");
    let out = curl(dir, Some(ca));
    assert!(out.status.success(), "{out:?}");
    let directory: serde_json::Value = serde_json::from_slice(&out.stdout).expect("directory JSON");
    assert!(directory["newOrder"]
        .as_str()
        .unwrap_or("")
        .starts_with(dir.trim_end_matches("/dir")));
    assert_eq!(directory["meta"]["externalAccountRequired"], true);
    assert!(
        !curl(dir, None).status.success(),
        "verified without the bed CA"
    );

    let kid = bed.get("TESTBED_EAB_KID");
    let key = bed.get("TESTBED_EAB_HMAC_KEY");
    assert!(!kid.is_empty());
    assert!(
        key.len() >= 43
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "EAB key is not base64url"
    );
    for var in ["TESTBED_ISSUER_ROOT", "TESTBED_ISSUER_INTERMEDIATES"] {
        let pem = std::fs::read_to_string(bed.get(var)).expect(var);
        assert!(pem.contains("BEGIN CERTIFICATE"), "{var}");
    }
    let root = curl(
        &format!("{}/roots/0", bed.get("TESTBED_PEBBLE_MGMT")),
        Some(ca),
    );
    assert_eq!(
        root.stdout,
        std::fs::read(bed.get("TESTBED_ISSUER_ROOT")).expect("root")
    );
    let log = std::fs::read_to_string(bed.get("TESTBED_PEBBLE_LOG")).expect("pebble log");
    assert!(log.contains("120 seconds"), "validity not applied: {log}");
    let config = std::fs::read(bed.state.path().join("pebble/pebble-config.json")).expect("config");
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
    assert_eq!(
        config["pebble"]["domainBlocklist"],
        serde_json::json!(["blocked.example.test"])
    );
    println!("directory verified with the bed CA (refused without), EAB kid {kid}, issuer root matches mgmt");
}

#[test]
fn two_beds_side_by_side_then_down_leaves_nothing() {
    let first = start_timed(&["--hosts", "4", "--secondary"]);
    let second = start_timed(&["--hosts", "4"]);
    let ports = |bed: &Testbed| {
        let mut p: Vec<String> = [
            "TESTBED_ACME_DIRECTORY",
            "TESTBED_PEBBLE_MGMT",
            "TESTBED_DNS",
        ]
        .iter()
        .map(|k| bed.get(k).to_owned())
        .collect();
        if let Some(s) = bed.env.get("TESTBED_DNS_SECONDARY") {
            p.push(s.clone());
        }
        p
    };
    for a in ports(&first) {
        for b in ports(&second) {
            assert_ne!(a, b);
        }
    }
    for bed in [&first, &second] {
        let dns = bed.get("TESTBED_DNS_PORT");
        assert_eq!(
            dig(dns, "_acme-challenge.host4.example.test", "CNAME"),
            ["host4.example.test.signing.test."]
        );
        assert_eq!(dig_status(dns, "host5.example.test", "A"), "NXDOMAIN");
    }
    // env prints the same lines again.
    let env = testbed(&["env"], first.state.path());
    assert!(env.status.success());
    assert_eq!(
        support::parse_env(&String::from_utf8_lossy(&env.stdout)),
        first.env
    );

    // A test may leave the secondary paused: down must still stop it.
    let pids: Vec<String> = [
        "TESTBED_PEBBLE_PID",
        "TESTBED_NAMED_PID",
        "TESTBED_SECONDARY_PID",
    ]
    .iter()
    .map(|k| first.get(k).to_owned())
    .collect();
    assert!(pids.iter().all(|p| pid_alive(p)));
    let stop = run(Command::new("kill")
        .arg("-STOP")
        .arg(first.get("TESTBED_SECONDARY_PID")));
    assert!(stop.status.success());
    let start = Instant::now();
    let down = testbed(&["down"], first.state.path());
    assert!(down.status.success(), "{down:?}");
    println!("down took {} ms", start.elapsed().as_millis());
    for p in &pids {
        assert!(!pid_alive(p), "pid {p} still running after down");
    }
    assert_eq!(
        std::fs::read_dir(first.state.path())
            .expect("state")
            .count(),
        0
    );
    assert!(!testbed(&["env"], first.state.path()).status.success());
    // The other bed is untouched.
    assert_eq!(
        soa_serial(second.get("TESTBED_DNS_PORT"), "signing.test"),
        Some(1)
    );
    println!("two beds on distinct ports both answered; down stopped {pids:?} (one SIGSTOPped)");
}

#[test]
fn failed_start_reports_the_log_and_stops_what_started() {
    let fake = tempfile::tempdir().expect("tempdir");
    // Written by a child process, so no descriptor of this (threaded) process holds it open
    // when it is executed (ETXTBSY).
    let made = run(Command::new("sh").arg("-c").arg(format!(
        "printf '#!/bin/sh\\necho \"fake pebble: cannot start (test)\" >&2\\nexit 3\\n' > {0}/pebble && chmod 755 {0}/pebble",
        fake.path().display()
    )));
    assert!(made.status.success(), "{made:?}");
    let state = tempfile::tempdir().expect("state");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(Command::new(repo_root().join("scripts/testbed"))
        .args(["up", "--state"])
        .arg(state.path())
        .env("PATH", path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pebble exited"), "{stderr}");
    assert!(
        stderr.contains("fake pebble: cannot start (test)"),
        "log tail missing: {stderr}"
    );
    assert!(out.stdout.is_empty(), "printed variables for a failed bed");
    let pids = std::fs::read_to_string(state.path().join("pids")).expect("pids file");
    let named = pids
        .lines()
        .find_map(|l| l.strip_prefix("named "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("named pid recorded");
    assert!(
        !pid_alive(named),
        "named {named} left running after a failed start"
    );
    assert!(testbed(&["down"], state.path()).status.success());
    assert_eq!(std::fs::read_dir(state.path()).expect("state").count(), 0);

    // `down` refuses a dir that is not a bed's; `up` refuses a non-empty dir.
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("precious"), "keep").expect("write");
    assert!(!testbed(&["down"], other.path()).status.success());
    assert!(!testbed(&["up"], other.path()).status.success());
    assert!(other.path().join("precious").exists());
    println!(
        "failed start: exit {:?}, log tail shown, named stopped; down/up refuse foreign dirs",
        out.status.code()
    );
}
