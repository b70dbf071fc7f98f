//! The `exec` method: a command of the user's (argv, never a shell) speaks a small JSON
//! protocol (docs/dns-backends.md): one request on stdin (`read` what is published, or
//! `apply` a change set), one answer on stdout. A non-zero exit, a malformed answer or the
//! deadline fails the zone, with the command's stderr tail (bounded, secrets blanked). The
//! command's environment is empty but PATH, HOME, LANG and the variables the user lists.

use crate::backend::{Applied, Backend, ChangeSet, Servers, Snapshot, Values};
use crate::error::PublishError;
use certbridge_core::names::DomainName;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout_at, Instant};

/// The protocol version this side speaks (`version` in requests and answers).
pub const PROTOCOL_VERSION: u64 = 1;
/// Seconds one run of the command may take by default.
pub const DEFAULT_EXEC_DEADLINE: u64 = 60;
/// Bytes of stderr quoted in a failure.
const STDERR_TAIL: usize = 2048;
/// Variables passed through from certbridge's own environment.
const PASSED: [&str; 3] = ["PATH", "HOME", "LANG"];

/// An exec zone: the command and what it may see.
#[derive(Clone)]
pub struct ExecZone {
    pub command: Vec<String>,
    /// Extra environment (may hold secrets: never printed, blanked in stderr tails).
    pub env: BTreeMap<String, String>,
    pub deadline: Duration,
    pub nameservers: Option<Vec<SocketAddr>>,
    pub ttl: u32,
}

impl std::fmt::Debug for ExecZone {
    // The environment's values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecZone")
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("deadline", &self.deadline)
            .field("nameservers", &self.nameservers)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(Deserialize)]
struct ReadAnswer {
    version: u64,
    /// Owner -> TXT values.
    txt: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct ApplyAnswer {
    version: u64,
    #[serde(default)]
    warnings: Vec<String>,
}

fn records(values: &Values, ttl: Option<u32>) -> Vec<serde_json::Value> {
    values
        .iter()
        .flat_map(|(owner, vs)| {
            vs.iter().map(move |v| match ttl {
                Some(ttl) => json!({"owner": owner.as_str(), "value": v, "ttl": ttl}),
                None => json!({"owner": owner.as_str(), "value": v}),
            })
        })
        .collect()
}

impl ExecZone {
    fn error(&self, zone: &DomainName, detail: String) -> PublishError {
        PublishError::Exec {
            zone: zone.as_str().into(),
            command: self.command[0].clone(),
            detail,
        }
    }

    /// Blanks every listed variable's value (a script may echo its secret in an error).
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in self.env.values().filter(|v| v.len() >= 3) {
            out = out.replace(v.as_str(), "<redacted>");
        }
        out
    }

    /// Runs the command with `request` on stdin; its stdout parsed as `T`.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        zone: &DomainName,
        request: &serde_json::Value,
        deadline: Instant,
    ) -> Result<T, PublishError> {
        let deadline = deadline.min(Instant::now() + self.deadline);
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a deadline kills what it started too.
            .process_group(0);
        for name in PASSED {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(&self.env);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.error(zone, format!("cannot start it: {e}")))?;
        let pid = child.id();
        let mut stdin = child.stdin.take();
        let body = serde_json::to_vec(request).unwrap_or_default();
        let run = async move {
            if let Some(mut s) = stdin.take() {
                // A command that answers without reading its request closes the pipe early.
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            }
            child.wait_with_output().await
        };
        let out = match timeout_at(deadline, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(self.error(zone, format!("cannot run it: {e}"))),
            Err(_) => {
                // The child itself dies with its handle (kill_on_drop); what it started is
                // in its process group. kill(1) rather than a system-call crate: this is
                // the rare path, and the module binaries count their bytes.
                if let Some(pgid) = pid {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-s", "KILL", "--", &format!("-{pgid}")])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .await;
                }
                return Err(self.error(
                    zone,
                    format!(
                        "did not answer within {}s (the deadline): killed",
                        self.deadline.as_secs()
                    ),
                ));
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let tail = if stderr.len() > STDERR_TAIL {
            let mut cut = stderr.len() - STDERR_TAIL;
            while !stderr.is_char_boundary(cut) {
                cut += 1;
            }
            format!("...{}", &stderr[cut..])
        } else {
            stderr.to_owned()
        };
        let tail = self.redact(&tail);
        let with_tail = |what: String| {
            if tail.is_empty() {
                what
            } else {
                format!("{what}; stderr: {tail}")
            }
        };
        if !out.status.success() {
            return Err(self.error(zone, with_tail(format!("failed ({})", out.status))));
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            self.error(
                zone,
                with_tail(format!("answered something that is not JSON ({e})")),
            )
        })?;
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(PROTOCOL_VERSION) {
            return Err(self.error(
                zone,
                format!(
                    "answered protocol version {}, certbridge speaks {PROTOCOL_VERSION}",
                    version.map_or("none".to_string(), |v| v.to_string())
                ),
            ));
        }
        serde_json::from_value(value)
            .map_err(|e| self.error(zone, with_tail(format!("malformed answer: {e}"))))
    }
}

impl Backend for ExecZone {
    fn method(&self) -> &'static str {
        "exec"
    }
    fn target(&self) -> String {
        self.command[0].clone()
    }
    fn ttl(&self) -> u32 {
        self.ttl
    }
    fn servers(&self) -> Servers {
        match &self.nameservers {
            Some(list) => Servers::Listed(list.clone()),
            None => Servers::ZoneNs,
        }
    }
    async fn read(&self, zone: &DomainName, deadline: Instant) -> Result<Snapshot, PublishError> {
        let request = json!({"version": PROTOCOL_VERSION, "action": "read", "zone": zone.as_str()});
        let answer: ReadAnswer = self.call(zone, &request, deadline).await?;
        debug_assert_eq!(answer.version, PROTOCOL_VERSION);
        let mut values = Values::new();
        for (owner, vs) in answer.txt {
            let o = DomainName::parse(&owner)
                .map_err(|e| self.error(zone, format!("malformed answer: owner `{owner}`: {e}")))?;
            values.entry(o).or_default().extend(vs);
        }
        Ok(Snapshot { values, ages: None })
    }
    async fn apply(&self, change: &ChangeSet, deadline: Instant) -> Result<Applied, PublishError> {
        let changed = !change.is_empty();
        if change.check_mode || !changed {
            return Ok(Applied {
                changed,
                ..Applied::default()
            });
        }
        let request = json!({
            "version": PROTOCOL_VERSION,
            "action": "apply",
            "zone": change.zone.as_str(),
            "ttl": change.ttl,
            "add": records(&change.add, Some(change.ttl)),
            "remove": records(&change.remove, None),
        });
        let answer: ApplyAnswer = self.call(&change.zone, &request, deadline).await?;
        debug_assert_eq!(answer.version, PROTOCOL_VERSION);
        Ok(Applied {
            changed,
            diff: None,
            warnings: answer
                .warnings
                .iter()
                .map(|w| format!("zone {} (exec): {}", change.zone.fqdn(), self.redact(w)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(script: &str, env: &[(&str, &str)], deadline: u64) -> ExecZone {
        ExecZone {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            deadline: Duration::from_secs(deadline),
            nameservers: None,
            ttl: 60,
        }
    }
    fn dn(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn read_gets_the_request_and_a_clean_environment() {
        // The script answers with what it saw: its request and its environment.
        let z = zone(
            r#"req=$(cat); printf '{"version":1,"txt":{"a.z.test":["%s","%s"]}}' "$(echo "$req" | tr -d '"{}' | tr ',' ' ')" "$(env | grep -v '^PWD=\|^SHLVL=\|^_=' | cut -d= -f1 | sort | tr '\n' ' ')""#,
            &[("API_TOKEN", "s3cret-token")],
            5,
        );
        std::env::set_var("CERTBRIDGE_LEAK_CHECK", "x");
        let snap = z.read(&dn("z.test"), far()).await.unwrap();
        let got: Vec<&String> = snap.values[&dn("a.z.test")].iter().collect();
        let joined = format!("{got:?}");
        assert!(
            joined.contains("action:read") && joined.contains("zone:z.test"),
            "{joined}"
        );
        assert!(
            joined.contains("API_TOKEN") && joined.contains("PATH"),
            "{joined}"
        );
        assert!(!joined.contains("CERTBRIDGE_LEAK_CHECK"), "{joined}");
        assert!(snap.ages.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failures_name_zone_and_command_and_hide_secrets() {
        let z = zone(
            "echo \"denied for $API_TOKEN\" >&2; exit 1",
            &[("API_TOKEN", "s3cret-token")],
            5,
        );
        let e = z.read(&dn("z.test"), far()).await.unwrap_err().to_string();
        assert!(
            e.contains("z.test") && e.contains("`sh`") && e.contains("denied for <redacted>"),
            "{e}"
        );
        assert!(!e.contains("s3cret-token"), "{e}");

        let e = zone("echo garbage", &[], 5)
            .read(&dn("z.test"), far())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = zone(r#"echo '{"version":2,"txt":{}}'"#, &[], 5)
            .read(&dn("z.test"), far())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("protocol version 2"), "{e}");

        let mut missing = zone("", &[], 5);
        missing.command = vec!["/nonexistent/certbridge-dns-hook".into()];
        let e = missing.read(&dn("z.test"), far()).await.unwrap_err();
        assert!(e.to_string().contains("cannot start it"), "{e}");

        let start = Instant::now();
        let e = zone("sleep 30", &[], 1)
            .read(&dn("z.test"), far())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("within 1s"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
