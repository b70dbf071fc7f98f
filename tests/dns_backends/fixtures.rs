//! The backends of tests/dns_backends.rs: what each needs from the bed, and how to break it.
//! A new backend adds its fixture here and one `#[test]` in dns_backends.rs.

use super::{support, Fixture};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use support::{repo_root, Testbed};

pub struct ZoneFile(pub Testbed);

impl Fixture for ZoneFile {
    fn label(&self) -> String {
        "zonefile on BIND".into()
    }
    fn bed(&self) -> &Testbed {
        &self.0
    }
    fn host(&self, n: u32) -> String {
        format!("host{}", n + 3) // host4.. have per-name labels
    }
    fn owner(&self, n: u32) -> String {
        format!(
            "{}.example.test.{}",
            self.host(n),
            self.0.get("TESTBED_SIGNING_ZONE")
        )
    }
    fn zone(&self) -> Value {
        json!({
            "origin": self.0.get("TESTBED_SIGNING_ZONE"), "method": "zonefile",
            "path": self.0.get("TESTBED_SIGNING_ZONE_FILE"), "ns": ["ns1.signing.test"],
            "static_records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"}],
            "rndc_conf": self.0.get("TESTBED_RNDC_CONF"),
        })
    }
    fn broken_zone(&self) -> (Value, Vec<String>) {
        let mut z = self.zone();
        z["validate"] = json!(["false", "%s"]);
        (
            z,
            vec![
                self.0.get("TESTBED_SIGNING_ZONE_FILE").to_owned(),
                "unchanged".into(),
            ],
        )
    }
    fn servers(&self) -> Vec<String> {
        vec![self.0.get("TESTBED_DNS").to_owned()]
    }
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// rfc2136 on the bed's BIND (`dyn-signing.test`) or Knot (`knot-signing.test`).
pub struct Rfc2136 {
    pub bed: Testbed,
    pub knot: bool,
}

impl Rfc2136 {
    fn key(&self) -> support::BedTsig {
        if self.knot {
            self.bed.knot_keys()[0].clone()
        } else {
            self.bed.bind_keys()[0].clone()
        }
    }
    fn server(&self) -> String {
        self.bed
            .get(if self.knot {
                "TESTBED_KNOT"
            } else {
                "TESTBED_DNS"
            })
            .to_owned()
    }
}

impl Fixture for Rfc2136 {
    fn label(&self) -> String {
        format!("rfc2136 on {}", if self.knot { "Knot" } else { "BIND" })
    }
    fn bed(&self) -> &Testbed {
        &self.bed
    }
    fn host(&self, n: u32) -> String {
        format!("{}{n}", if self.knot { "knot" } else { "dyn" })
    }
    fn owner(&self, n: u32) -> String {
        format!("{}.example.test.{}", self.host(n), self.origin())
    }
    fn zone(&self) -> Value {
        let key = self.key();
        let origin = self.bed.get(if self.knot {
            "TESTBED_KNOT_ZONE"
        } else {
            "TESTBED_DYNAMIC_ZONE"
        });
        json!({
            "origin": origin, "method": "rfc2136", "server": self.server(),
            "tsig_name": key.name, "tsig_algorithm": key.algorithm, "tsig_secret": key.secret,
        })
    }
    fn broken_zone(&self) -> (Value, Vec<String>) {
        let mut z = self.zone();
        let len = self.key().secret.len();
        z["tsig_secret"] = json!(format!("{}=", "A".repeat(len - 1)));
        (z, vec![self.server(), "TSIG".into(), self.key().name])
    }
    fn servers(&self) -> Vec<String> {
        vec![self.server()]
    }
    fn secrets(&self) -> Vec<String> {
        vec![self.key().secret]
    }
}

/// A stand-in API server (tests/dns_api_standin.py) in front of the bed's dynamic zone.
pub struct StandIn {
    child: Child,
    port: u16,
    calls: PathBuf,
    _dir: tempfile::TempDir,
}

const API_PASSWORD: &str = "wapi-password-Zq81x";
const API_TOKEN: &str = "designate-token-Kx77p";

impl StandIn {
    pub fn start(bed: &Testbed) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls.jsonl");
        let tsig = format!(
            "{}:{}:{}",
            bed.get("TESTBED_TSIG_ALGORITHM"),
            bed.get("TESTBED_TSIG_NAME"),
            bed.get("TESTBED_TSIG_SECRET")
        );
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/dns_api_standin.py"))
            .args([
                "--zone",
                bed.get("TESTBED_DYNAMIC_ZONE"),
                "--server",
                bed.get("TESTBED_DNS"),
            ])
            .args([
                "--tsig",
                &tsig,
                "--user",
                "certbridge",
                "--password",
                API_PASSWORD,
            ])
            .args(["--token", API_TOKEN, "--calls", calls.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the API stand-in");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("stand-in did not start: {line:?}"));
        StandIn {
            child,
            port,
            calls,
            _dir: dir,
        }
    }

    /// The calls made, as "METHOD path-without-query status".
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let c: Value = serde_json::from_str(l).unwrap();
                let path = c["path"]
                    .as_str()
                    .unwrap()
                    .split('?')
                    .next()
                    .unwrap()
                    .to_owned();
                format!("{} {path} {}", c["method"].as_str().unwrap(), c["status"])
            })
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// exec with one of the docs/examples/ scripts and its stand-in.
pub struct Exec {
    pub bed: Testbed,
    pub api: StandIn,
    pub designate: bool,
}

impl Exec {
    fn zone_with(&self, secret: &str) -> Value {
        let url = format!("http://127.0.0.1:{}", self.api.port);
        let (script, env) = if self.designate {
            (
                "designate.py",
                json!({"DESIGNATE_URL": url, "OS_TOKEN": secret}),
            )
        } else {
            (
                "infoblox-wapi.py",
                json!({"INFOBLOX_URL": format!("{url}/wapi/v2.12"), "INFOBLOX_USER": "certbridge",
                       "INFOBLOX_PASSWORD": secret}),
            )
        };
        json!({
            "origin": self.bed.get("TESTBED_DYNAMIC_ZONE"), "method": "exec",
            "command": ["python3", repo_root().join("docs/examples").join(script).to_str().unwrap()],
            "env": env, "deadline": 30, "nameservers": [self.bed.get("TESTBED_DNS")],
        })
    }
    fn secret(&self) -> &'static str {
        if self.designate {
            API_TOKEN
        } else {
            API_PASSWORD
        }
    }
}

impl Fixture for Exec {
    fn label(&self) -> String {
        format!(
            "exec with {}",
            if self.designate {
                "designate.py"
            } else {
                "infoblox-wapi.py"
            }
        )
    }
    fn bed(&self) -> &Testbed {
        &self.bed
    }
    fn host(&self, n: u32) -> String {
        format!("dyn{n}")
    }
    fn owner(&self, n: u32) -> String {
        format!("dyn{n}.example.test.{}", self.origin())
    }
    fn zone(&self) -> Value {
        self.zone_with(self.secret())
    }
    fn broken_zone(&self) -> (Value, Vec<String>) {
        // A wrong credential: the API refuses, the script exits 1 with the API's answer.
        (
            self.zone_with("wrong-credential-00"),
            vec!["python3".into(), "401".into()],
        )
    }
    fn servers(&self) -> Vec<String> {
        vec![self.bed.get("TESTBED_DNS").to_owned()]
    }
    fn secrets(&self) -> Vec<String> {
        vec![self.secret().to_owned()]
    }
}

/// `method: powerdns` on the bed's pdns_server (`--pdns`), through its HTTP API.
pub struct PowerDns(pub Testbed);

impl Fixture for PowerDns {
    fn label(&self) -> String {
        "powerdns on PowerDNS".into()
    }
    fn bed(&self) -> &Testbed {
        &self.0
    }
    fn host(&self, n: u32) -> String {
        format!("pdns{n}")
    }
    fn owner(&self, n: u32) -> String {
        format!("{}.example.test.{}", self.host(n), self.origin())
    }
    fn zone(&self) -> Value {
        json!({
            "origin": self.0.get("TESTBED_PDNS_ZONE"), "method": "powerdns",
            "api_url": self.0.get("TESTBED_PDNS_API_URL"), "api_key": self.0.get("TESTBED_PDNS_API_KEY"),
        })
    }
    fn broken_zone(&self) -> (Value, Vec<String>) {
        let mut z = self.zone();
        z["api_key"] = json!("certbridge-not-the-key");
        (
            z,
            vec![
                self.0.get("TESTBED_PDNS_API_URL").to_owned(),
                "HTTP 401".into(),
            ],
        )
    }
    fn servers(&self) -> Vec<String> {
        vec![self.0.get("TESTBED_PDNS").to_owned()]
    }
    fn secrets(&self) -> Vec<String> {
        vec![self.0.get("TESTBED_PDNS_API_KEY").to_owned()]
    }
}
