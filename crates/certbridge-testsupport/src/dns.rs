//! DNS against the test bed: `dig` at a bed's (or any loopback) nameserver port, TSIG-signed
//! `nsupdate`, and publishing dns-01 values through the bed's `_acme-challenge` CNAMEs.

use crate::bed::Testbed;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A nameserver on 127.0.0.1: a bed (its `TESTBED_DNS_PORT`) or a port.
pub trait DnsServer {
    fn dns_port(&self) -> String;
}

impl DnsServer for Testbed {
    fn dns_port(&self) -> String {
        self.get("TESTBED_DNS_PORT").to_owned()
    }
}

impl DnsServer for str {
    fn dns_port(&self) -> String {
        self.to_owned()
    }
}

impl DnsServer for String {
    fn dns_port(&self) -> String {
        self.clone()
    }
}

impl DnsServer for u16 {
    fn dns_port(&self) -> String {
        self.to_string()
    }
}

/// `dig +short` answer lines for `name rtype` asked at `server` (empty on no answer), as dig
/// prints them: TXT values quoted, names with their trailing dot.
pub fn dig<S: DnsServer + ?Sized>(server: &S, name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args(["+short", "+tries=1", "+time=2", "-p"])
        .arg(server.dns_port())
        .args(["@127.0.0.1", name, rtype])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
        .collect()
}

/// The response status (`NOERROR`, `NXDOMAIN`, ...) for `name rtype` at `server`.
pub fn dig_status<S: DnsServer + ?Sized>(server: &S, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args(["+tries=1", "+time=2", "-p"])
        .arg(server.dns_port())
        .args(["@127.0.0.1", name, rtype])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_owned()
}

/// The TXT values (unquoted) at `name`, following a CNAME.
pub fn txt_values<S: DnsServer + ?Sized>(server: &S, name: &str) -> Vec<String> {
    dig(server, name, "TXT")
        .into_iter()
        .filter(|l| l.starts_with('"'))
        .map(|l| l.trim_matches('"').to_owned())
        .collect()
}

/// The CNAME target of `name` without its trailing dot, if it has one.
pub fn cname_target<S: DnsServer + ?Sized>(server: &S, name: &str) -> Option<String> {
    dig(server, name, "CNAME")
        .first()
        .map(|t| t.trim_end_matches('.').to_owned())
}

/// Runs `nsupdate` with `script`, signed with the bed's TSIG key.
pub fn nsupdate(bed: &Testbed, script: &str) -> Output {
    nsupdate_signed(bed, bed.get("TESTBED_TSIG_SECRET"), script)
}

/// As [`nsupdate`], signed with the bed's TSIG key name and algorithm and `secret`.
pub fn nsupdate_signed(bed: &Testbed, secret: &str, script: &str) -> Output {
    let mut child = Command::new("nsupdate")
        .arg("-y")
        .arg(format!(
            "{}:{}:{secret}",
            bed.get("TESTBED_TSIG_ALGORITHM"),
            bed.get("TESTBED_TSIG_NAME")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nsupdate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write nsupdate script");
    child.wait_with_output().expect("nsupdate output")
}

/// dns-01 values to publish: (`_acme-challenge` record, value) pairs.
pub trait ToPublish {
    fn values(&self) -> Vec<(String, String)>;
}

/// acme_request's `acme_txt_required` list.
impl ToPublish for Value {
    fn values(&self) -> Vec<(String, String)> {
        self.as_array()
            .expect("acme_txt_required")
            .iter()
            .map(|t| {
                (
                    t["record"].as_str().unwrap().to_owned(),
                    t["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// The ACME client's pending challenges.
impl ToPublish for [certbridge_acme::client::PendingChallenge] {
    fn values(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|c| (c.record.as_str().to_owned(), c.value.to_string()))
            .collect()
    }
}

impl ToPublish for Vec<certbridge_acme::client::PendingChallenge> {
    fn values(&self) -> Vec<(String, String)> {
        self.as_slice().values()
    }
}

/// Publishes the values through each record's CNAME: into the bed's dynamic signing zone by
/// TSIG-signed nsupdate, or into the static signing zone's file (serial bumped) followed by
/// `rndc reload`; then waits until the bed's resolver answers every value at its record.
pub fn publish<T: ToPublish + ?Sized>(bed: &Testbed, what: &T) {
    let dynamic_zone = bed.get("TESTBED_DYNAMIC_ZONE");
    let static_zone = bed.get("TESTBED_SIGNING_ZONE");
    let mut dynamic = String::new();
    let mut static_lines = String::new();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (record, value) in what.values() {
        let target = cname_target(bed, &record)
            .unwrap_or_else(|| panic!("{record} has no CNAME in the bed"));
        if target.ends_with(&format!(".{dynamic_zone}")) {
            dynamic.push_str(&format!("update add {target}. 60 TXT \"{value}\"\n"));
        } else if target.ends_with(&format!(".{static_zone}")) {
            static_lines.push_str(&format!("{target}. 60 IN TXT \"{value}\"\n"));
        } else {
            panic!("{record} -> {target} is outside the signing zones");
        }
        wanted.entry(record).or_default().push(value);
    }
    if !dynamic.is_empty() {
        let script = format!(
            "server 127.0.0.1 {}\nzone {dynamic_zone}\n{dynamic}send\n",
            bed.get("TESTBED_DNS_PORT")
        );
        let out = nsupdate(bed, &script);
        assert!(
            out.status.success(),
            "nsupdate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !static_lines.is_empty() {
        let path = bed.get("TESTBED_SIGNING_ZONE_FILE");
        let zone = std::fs::read_to_string(path).unwrap();
        // Bump the SOA serial (the third field after SOA) so named reloads the file.
        let mut out = String::new();
        for line in zone.lines() {
            if line.contains(" SOA ") {
                let mut f: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
                let i = f.iter().position(|x| x == "SOA").unwrap() + 3;
                f[i] = (f[i].parse::<u64>().unwrap() + 1).to_string();
                out.push_str(&f.join(" "));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out.push_str(&static_lines);
        std::fs::write(path, out).unwrap();
        let st = Command::new("rndc")
            .args(["-c", bed.get("TESTBED_RNDC_CONF"), "reload", static_zone])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "rndc reload: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (record, values) in wanted {
        loop {
            let seen = txt_values(bed, &record);
            if values.iter().all(|v| seen.contains(v)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{record}: {values:?} not visible, saw {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
