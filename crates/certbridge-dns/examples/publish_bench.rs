//! Benchmark (not a test): publish and verify 1,000 TXT values over 500 per-name owners on a
//! fresh test bed, with each method, then the no-op re-run; prints the times.
//!
//! Run from the repository root: `cargo run -p certbridge-dns --example publish_bench`
//! (needs BIND and Pebble, like the tests).

use certbridge_core::protocol::{parse_options, Invocation};
use certbridge_dns::options::PublishOptions;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const OWNERS: usize = 500;
const VALUES_PER_OWNER: usize = 2;

/// A test bed started with `scripts/testbed`, stopped on drop.
struct Bed {
    script: PathBuf,
    state: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Bed {
    fn start(hosts: usize) -> Result<Bed, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testbed");
        let state = tempfile::Builder::new()
            .prefix("certbridge-bench-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new(&script)
            .args(["up", "--state"])
            .arg(state.path())
            .args(["--hosts", &hosts.to_string()])
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let bed = Bed {
            script,
            env: String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
                .collect(),
            state,
        };
        if !out.status.success() {
            return Err(format!(
                "testbed up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(bed)
    }
    fn get(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or_default()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .arg("--state")
            .arg(self.state.path())
            .output();
    }
}

fn digest(owner: usize, n: usize, round: &str) -> String {
    format!("{round}{owner:05}v{n}")
        .chars()
        .chain(std::iter::repeat('x'))
        .take(43)
        .collect()
}

fn records(prefix: &str, first: usize, round: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for owner in first..first + OWNERS {
        let name = format!("{prefix}{owner}.example.test");
        for n in 0..VALUES_PER_OWNER {
            out.push(json!({"host": format!("{prefix}{owner}"), "cert": format!("c{n}"), "name": name,
                            "record": format!("_acme-challenge.{name}"), "value": digest(owner, n, round)}));
        }
    }
    out
}

fn run(label: &str, args: &Value) -> Result<(), String> {
    let Value::Object(map) = args.clone() else {
        return Err("args".into());
    };
    let opts: PublishOptions = parse_options(map).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let result = certbridge_dns::publish::run_module(opts, &Invocation::default());
    let took = start.elapsed();
    let (changed, fields) = match result {
        Ok(r) => (r.changed, r.fields),
        Err(f) => return Err(format!("{label}: failed: {}", f.msg)),
    };
    let published: usize = fields["published"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_array).map(Vec::len).sum())
        .unwrap_or(0);
    let verify_s: f64 = fields["verified"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v["seconds"].as_f64())
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    println!(
        "{label:<34} {:>8.3} s  changed={changed:<5} values={published} owners={}  verify {:.3} s",
        took.as_secs_f64(),
        fields["published"].as_object().map_or(0, |m| m.len()),
        verify_s
    );
    Ok(())
}

fn main() -> Result<(), String> {
    // host1..host3 use the shared name; host4.. have per-name labels.
    let bed = Bed::start(OWNERS + 3)?;
    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let base = json!({
        "resolver": bed.get("TESTBED_DNS"),
        "nameserver_port": bed.get("TESTBED_DNS_PORT").parse::<u16>().map_err(|e| e.to_string())?,
        "state_dir": state.path().to_str(),
        "timeout": 60,
    });
    let with = |records: Vec<Value>, zone: Value| {
        let mut v = base.clone();
        v["records"] = Value::from(records);
        v["zones"] = json!([zone]);
        v
    };
    let file_zone = json!({
        "origin": "signing.test", "method": "zonefile", "path": bed.get("TESTBED_SIGNING_ZONE_FILE"),
        "ns": ["ns1.signing.test"], "static_records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"}],
        "rndc_conf": bed.get("TESTBED_RNDC_CONF"),
    });
    let dyn_zone = json!({
        "origin": "dyn-signing.test", "method": "rfc2136", "server": bed.get("TESTBED_DNS"),
        "tsig_name": bed.get("TESTBED_TSIG_NAME"), "tsig_secret": bed.get("TESTBED_TSIG_SECRET"),
    });
    println!(
        "acme_txt_publish: {} values over {OWNERS} per-name owners, cname_check authoritative, one named on loopback",
        OWNERS * VALUES_PER_OWNER
    );
    run(
        "zonefile: publish + verify",
        &with(records("host", 4, "a"), file_zone.clone()),
    )?;
    run(
        "zonefile: same values again",
        &with(records("host", 4, "a"), file_zone.clone()),
    )?;
    run(
        "zonefile: 1,000 new values",
        &with(records("host", 4, "b"), file_zone),
    )?;
    run(
        "rfc2136: publish + verify",
        &with(records("dyn", 1, "a"), dyn_zone.clone()),
    )?;
    run(
        "rfc2136: same values again",
        &with(records("dyn", 1, "a"), dyn_zone.clone()),
    )?;
    run(
        "rfc2136: 1,000 new values",
        &with(records("dyn", 1, "b"), dyn_zone),
    )?;
    Ok(())
}
