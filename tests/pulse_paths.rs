//! The pulse playbook's failure paths, run with the real `ansible-playbook` against a real
//! test bed: a missing handler, a failed handler, a rejected cert, staging -> production.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{repo_root, Testbed};

const MODULES: [&str; 4] = [
    "acme_request",
    "acme_txt_publish",
    "acme_finalize",
    "zone_render",
];

/// The Python environment holding ansible-core (`make deps`).
fn venv_bin(tool: &str) -> PathBuf {
    repo_root().join(".venv/bin").join(tool)
}

/// Where Ansible finds the module binaries: `$CERTBRIDGE_MODULES_DIR`, else `modules/`.
fn modules_dir() -> PathBuf {
    std::env::var_os("CERTBRIDGE_MODULES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("modules"))
}

/// Fails (never skips) when the tooling the pulse needs is not there.
fn require_tooling() {
    let playbook = venv_bin("ansible-playbook");
    assert!(
        playbook.is_file(),
        "{} is missing: run `make deps modules` first",
        playbook.display()
    );
    for module in MODULES {
        let bin = modules_dir().join(module);
        assert!(
            bin.is_file(),
            "module binary {} is missing: run `make deps modules` first (or set CERTBRIDGE_MODULES_DIR)",
            bin.display()
        );
    }
}

/// A small bed (the names used here are host4, host5 and nocname), after checking the tooling.
fn start_bed() -> Testbed {
    require_tooling();
    Testbed::start(&["--hosts", "6"])
}

/// One certificate host of a site: its inventory name and `letsencrypt_certs`.
struct HostSpec {
    name: &'static str,
    certs: Value,
}

/// A site: an inventory (one DNS primary, some certificate hosts, all local) pointed at a
/// test bed, a handlers file, and one temp dir holding every host's files.
struct Site<'a> {
    bed: &'a Testbed,
    dir: tempfile::TempDir,
}

/// What one `ansible-playbook` run printed.
struct PulseRun {
    output: String,
    exit_ok: bool,
}

impl<'a> Site<'a> {
    /// Writes the inventory. `directory`: the ACME directory set as `letsencrypt_directory`
    /// for every certificate host (None: the role's staging/production choice applies).
    fn new(bed: &'a Testbed, hosts: &[HostSpec], directory: Option<&str>) -> Site<'a> {
        require_tooling();
        let dir = tempfile::Builder::new()
            .prefix("certbridge-pulse-")
            .tempdir()
            .expect("site dir");
        let site = Site { bed, dir };
        let dns = bed.get("TESTBED_DNS");
        let mut cert_hosts = serde_json::Map::new();
        for host in hosts {
            cert_hosts.insert(
                host.name.to_owned(),
                json!({
                    "letsencrypt_certs": host.certs,
                    "letsencrypt_cert_root": site.cert_root(host.name),
                    "letsencrypt_log_dir": site.host_dir(host.name).join("log"),
                }),
            );
        }
        let inventory = json!({
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": venv_bin("python"),
                    "letsencrypt_dns_group": "letsencrypt_dns",
                    // No key group (keys 0600): the test needs no system group.
                    "letsencrypt_key_group": "",
                },
                "children": {
                    "letsencrypt_dns": {
                        "hosts": {
                            "ns-primary": {
                                "letsencrypt_signing_zones": [{
                                    "origin": bed.get("TESTBED_SIGNING_ZONE"),
                                    "method": "zonefile",
                                    "path": bed.get("TESTBED_SIGNING_ZONE_FILE"),
                                    "ns": [format!("ns1.{}.", bed.get("TESTBED_SIGNING_ZONE"))],
                                    "rndc_conf": bed.get("TESTBED_RNDC_CONF"),
                                    "static_records": [{"name": "ns1", "type": "A", "value": "127.0.0.1"}],
                                }],
                                "letsencrypt_cname_check": "resolver",
                                "letsencrypt_cname_resolver": dns,
                                "letsencrypt_dns_nameservers": [dns],
                                "letsencrypt_publish_state_dir": site.host_dir("ns-primary").join("state"),
                            }
                        }
                    },
                    "letsencrypt": {
                        "vars": {
                            "letsencrypt_directory": directory.unwrap_or_default(),
                            "letsencrypt_ca_file": bed.get("TESTBED_ACME_CA_FILE"),
                            "letsencrypt_account_email": "hostmaster@example.test",
                            "letsencrypt_dns_check": dns,
                        },
                        "hosts": cert_hosts,
                    }
                }
            }
        });
        write_json(&site.path("hosts.yml"), &inventory);
        site.set_handlers(&[]);
        site
    }

    /// Writes the handlers file (a YAML tasks file; JSON is YAML).
    fn set_handlers(&self, handlers: &[Value]) {
        write_json(&self.path("handlers.yml"), &json!(handlers));
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    fn cert_root(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("certs")
    }

    /// A handler `letsencrypt updated <cert>` that appends one line to [`Site::handler_log`]
    /// each time it runs, and then succeeds only when `marker` (if given) exists.
    fn counting_handler(&self, cert: &str, marker: Option<&Path>) -> Value {
        let mut cmd = String::from(r#"echo ran >> "$HANDLER_LOG""#);
        if marker.is_some() {
            cmd.push_str(r#" && test -e "$HANDLER_MARKER""#);
        }
        json!({
            "name": format!("letsencrypt updated {cert}"),
            "ansible.builtin.shell": {"cmd": cmd},
            "environment": {
                "HANDLER_LOG": self.handler_log(cert),
                "HANDLER_MARKER": marker.map(Path::to_path_buf).unwrap_or_default(),
            },
            "changed_when": true,
        })
    }

    fn handler_log(&self, cert: &str) -> PathBuf {
        self.path(&format!("handler-{cert}.log"))
    }

    /// How often the counting handler of `cert` ran.
    fn handler_runs(&self, cert: &str) -> usize {
        std::fs::read_to_string(self.handler_log(cert))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Runs the pulse playbook with the site's handlers and `extra_vars` (typed JSON, so
    /// booleans stay booleans).
    fn pulse(&self, extra_vars: Value) -> PulseRun {
        let library = format!(
            "{}:{}",
            modules_dir().display(),
            repo_root().join("modules").display()
        );
        self.pulse_with_library(extra_vars, &library)
    }

    /// [`Site::pulse`] with Ansible's module path set to `library`.
    fn pulse_with_library(&self, extra_vars: Value, library: &str) -> PulseRun {
        let mut vars = json!({"letsencrypt_handlers_file": self.path("handlers.yml")});
        if let (Some(all), Value::Object(extra)) = (vars.as_object_mut(), extra_vars) {
            all.extend(extra);
        }
        let path = format!(
            "{}:/usr/sbin:{}",
            repo_root().join(".venv/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(venv_bin("ansible-playbook"))
            .arg("-i")
            .arg(self.path("hosts.yml"))
            .arg(repo_root().join("playbooks/service-letsencrypt.yaml"))
            .arg("-e")
            .arg(vars.to_string())
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("ANSIBLE_CONFIG", repo_root().join("ansible.cfg"))
            .env("ANSIBLE_LIBRARY", library)
            .env("ANSIBLE_ROLES_PATH", repo_root().join("roles"))
            .env("ANSIBLE_STDOUT_CALLBACK", "ansible.builtin.default")
            // One JSON object per result, so messages are parsed, not scraped from YAML.
            .env("ANSIBLE_CALLBACK_RESULT_FORMAT", "json")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_LOCAL_TEMP", self.path("ansible-tmp"))
            .output()
            .expect("run ansible-playbook");
        let output = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        PulseRun {
            output,
            exit_ok: out.status.success(),
        }
    }

    /// Entries of `host`'s cert root besides the `.certbridge/` bookkeeping.
    fn installed_entries(&self, host: &str) -> Vec<String> {
        let root = self.cert_root(host);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".certbridge")
            .collect()
    }

    /// Asserts `host` has a certificate for `dir` whose chain verifies against Pebble's root
    /// and whose names include `dir`; returns the leaf PEM.
    fn assert_certificate(&self, host: &str, dir: &str) -> String {
        let cert_dir = self.cert_root(host).join(dir);
        let cert = cert_dir.join("cert.pem");
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(self.bed.get("TESTBED_ISSUER_ROOT"))
            .arg("-untrusted")
            .arg(cert_dir.join("chain.pem"))
            .arg(&cert)
            .output()
            .expect("run openssl verify");
        assert!(
            out.status.success(),
            "{} does not verify against Pebble's root: {}{}",
            cert.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl x509");
        let sans = String::from_utf8_lossy(&text.stdout);
        assert!(
            sans.contains(&format!("DNS:{dir}")),
            "{} lacks {dir}: {sans}",
            cert.display()
        );
        std::fs::read_to_string(&cert).expect("read cert.pem")
    }

    /// The per-cert metadata acme_request / acme_finalize keep (`.certbridge/certs/<cert>.json`).
    fn meta(&self, host: &str, cert: &str) -> Value {
        let path = self
            .cert_root(host)
            .join(".certbridge/certs")
            .join(format!("{cert}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }

    /// The `decision` events acme_request logged for `cert`, oldest first.
    fn decisions(&self, host: &str, cert: &str) -> Vec<Value> {
        let log = self.host_dir(host).join("log/certbridge.log");
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "decision" && e["cert"] == cert)
            .collect()
    }
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("serialize"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl PulseRun {
    /// `PLAY RECAP` counters of `host` (`ok`, `changed`, `failed`, ...).
    fn recap(&self, host: &str) -> HashMap<String, u64> {
        let recap = self
            .output
            .split_once("PLAY RECAP")
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("no PLAY RECAP in the pulse output:\n{}", self.output));
        let line = recap
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no recap line for {host}:\n{}", self.output));
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect()
    }

    fn count(&self, host: &str, counter: &str) -> u64 {
        self.recap(host)
            .get(counter)
            .copied()
            .unwrap_or_else(|| panic!("recap of {host} has no {counter}=:\n{}", self.output))
    }

    /// Whether `host` took part in the run at all.
    fn has_recap(&self, host: &str) -> bool {
        self.output
            .split_once("PLAY RECAP")
            .is_some_and(|(_, r)| r.lines().any(|l| l.split_whitespace().next() == Some(host)))
    }

    /// Every failed result of `host` (`fatal: [host]` / `failed: [host]`), as JSON.
    fn failures(&self, host: &str) -> Vec<Value> {
        let mut found = Vec::new();
        let mut rest = self.output.as_str();
        while let Some(at) = find_failure_start(rest, host) {
            let after = &rest[at..];
            let Some(brace) = after.find("=> {") else {
                break;
            };
            let json_text = &after[brace + 3..];
            let mut stream = serde_json::Deserializer::from_str(json_text).into_iter::<Value>();
            if let Some(Ok(value)) = stream.next() {
                found.push(value);
            }
            rest = &after[brace + 3..];
        }
        found
    }

    /// The failed results of `host` as one searchable text (messages and other fields).
    fn failure_text(&self, host: &str) -> String {
        self.failures(host)
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Offset of the next line starting `fatal: [host` or `failed: [host` (also `[host -> x]`).
fn find_failure_start(text: &str, host: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        for prefix in ["fatal: [", "failed: ["] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name = rest.split([']', ' ']).next().unwrap_or_default();
                if name == host {
                    return Some(offset);
                }
            }
        }
        offset += line.len();
    }
    None
}

fn assert_contains(haystack: &str, needle: &str, what: &str, output: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected {needle:?} in {haystack:?}\n--- pulse output ---\n{output}"
    );
}

/// Issue 6, missing handler: a host whose cert has no `letsencrypt updated <cert>` handler
/// fails alone, naming the handler to define, before anything is installed for it; the other
/// host in the same run gets its certificate and its handler fires once.
#[test]
fn missing_handler_fails_only_its_host() {
    let bed = start_bed();
    let hosts = [
        HostSpec {
            name: "alpha",
            certs: json!({"alpha-main": ["host4.example.test"]}),
        },
        HostSpec {
            name: "beta",
            certs: json!({"beta-main": ["host5.example.test"]}),
        },
    ];
    let site = Site::new(&bed, &hosts, Some(bed.get("TESTBED_ACME_DIRECTORY")));
    site.set_handlers(&[site.counting_handler("alpha-main", None)]);

    let run = site.pulse(json!({}));
    let out = &run.output;
    assert!(!run.exit_ok, "a failed host must fail the run's exit code");
    assert_eq!(run.count("beta", "failed"), 1, "beta fails once:\n{out}");
    assert_contains(
        &run.failure_text("beta"),
        "letsencrypt updated beta-main",
        "beta's failure names the missing handler",
        out,
    );
    assert!(
        site.installed_entries("beta").is_empty(),
        "nothing may be installed for beta: {:?}",
        site.installed_entries("beta")
    );
    assert_eq!(run.count("alpha", "failed"), 0, "alpha completes:\n{out}");
    site.assert_certificate("alpha", "host4.example.test");
    assert_eq!(
        site.handler_runs("alpha-main"),
        1,
        "alpha's handler fires once:\n{out}"
    );
}

/// Issue 6, failed handler: a handler that fails is notified again at the next pulse (the
/// update is acknowledged only after its handler succeeded), without a new certificate;
/// once it succeeded, the next pulse fires nothing and changes nothing.
#[test]
fn failed_handler_is_notified_again() {
    let bed = start_bed();
    let hosts = [HostSpec {
        name: "gamma",
        certs: json!({"gamma-main": ["host4.example.test"]}),
    }];
    let site = Site::new(&bed, &hosts, Some(bed.get("TESTBED_ACME_DIRECTORY")));
    let marker = site.path("service-ready");
    site.set_handlers(&[site.counting_handler("gamma-main", Some(&marker))]);

    let first = site.pulse(json!({}));
    assert_eq!(
        first.count("gamma", "failed"),
        1,
        "pulse 1: the failing handler fails the host:\n{}",
        first.output
    );
    assert_eq!(
        site.handler_runs("gamma-main"),
        1,
        "pulse 1 ran the handler once"
    );
    let leaf = site.assert_certificate("gamma", "host4.example.test");

    std::fs::write(&marker, b"").expect("create marker");
    let second = site.pulse(json!({}));
    assert!(second.exit_ok, "pulse 2 succeeds:\n{}", second.output);
    assert_eq!(
        second.count("gamma", "failed"),
        0,
        "pulse 2:\n{}",
        second.output
    );
    assert_eq!(
        site.handler_runs("gamma-main"),
        2,
        "pulse 2 notifies the handler again:\n{}",
        second.output
    );
    assert_eq!(
        site.assert_certificate("gamma", "host4.example.test"),
        leaf,
        "re-notifying must not reissue the certificate"
    );

    let third = site.pulse(json!({}));
    assert!(third.exit_ok, "pulse 3 succeeds:\n{}", third.output);
    for host in ["gamma", "ns-primary"] {
        if third.has_recap(host) {
            assert_eq!(
                third.count(host, "changed"),
                0,
                "pulse 3 on {host}:\n{}",
                third.output
            );
        }
    }
    assert_eq!(site.handler_runs("gamma-main"), 2, "pulse 3 fires nothing");
}

/// Issue 6, rejected cert: a cert whose `_acme-challenge` CNAME is missing is not published;
/// its host fails with a message naming the cert and name and the CNAME to create, while the
/// host's other cert is issued and its handler fired.
#[test]
fn rejected_cert_fails_its_host_with_the_fix() {
    let bed = start_bed();
    let hosts = [HostSpec {
        name: "delta",
        certs: json!({
            "delta-good": ["host4.example.test"],
            "delta-bad": ["nocname.example.test"],
        }),
    }];
    let site = Site::new(&bed, &hosts, Some(bed.get("TESTBED_ACME_DIRECTORY")));
    site.set_handlers(&[
        site.counting_handler("delta-good", None),
        site.counting_handler("delta-bad", None),
    ]);

    let run = site.pulse(json!({}));
    let out = &run.output;
    assert_eq!(run.count("delta", "failed"), 1, "delta fails:\n{out}");
    let failure = run.failure_text("delta");
    assert_contains(&failure, "delta-bad", "the failure names the cert", out);
    assert_contains(
        &failure,
        "_acme-challenge.nocname.example.test",
        "the failure names the record",
        out,
    );
    assert_contains(&failure, "CNAME", "the failure gives the fix", out);
    assert_contains(
        &failure,
        bed.get("TESTBED_SIGNING_ZONE"),
        "the fix points into the signing zone",
        out,
    );
    site.assert_certificate("delta", "host4.example.test");
    assert_eq!(
        site.handler_runs("delta-good"),
        1,
        "the good cert's handler fires once"
    );
    assert_eq!(
        site.handler_runs("delta-bad"),
        0,
        "the bad cert's handler never fires"
    );
    assert!(
        !site
            .cert_root("delta")
            .join("nocname.example.test")
            .exists(),
        "the rejected cert must have no files: {:?}",
        site.installed_entries("delta")
    );
}

/// Issue 6, `letsencrypt_use_staging` through the roles: a certificate from the staging
/// directory is recorded as staging; switching to production reissues it (reason
/// `directory_changed`, a new certificate, the handler fires again); switching back to
/// staging keeps the production certificate (`production_kept`).
#[test]
fn staging_certificate_is_replaced_by_production() {
    let bed = start_bed();
    let hosts = [HostSpec {
        name: "epsilon",
        certs: json!({"epsilon-main": ["host4.example.test"]}),
    }];
    let site = Site::new(&bed, &hosts, None);
    site.set_handlers(&[site.counting_handler("epsilon-main", None)]);
    let pebble = bed.get("TESTBED_ACME_DIRECTORY");
    // Nothing listens on port 9 here: using it would fail the pulse.
    let unused = "https://127.0.0.1:9/unused-directory";
    // The role's directory URLs are role vars: only extra vars override them.
    let staging = json!({
        "letsencrypt_directory": "",
        "letsencrypt_use_staging": true,
        "letsencrypt_staging_directory": pebble,
        "letsencrypt_production_directory": unused,
    });
    let production = json!({
        "letsencrypt_directory": "",
        "letsencrypt_use_staging": false,
        "letsencrypt_staging_directory": unused,
        "letsencrypt_production_directory": pebble,
    });

    let first = site.pulse(staging.clone());
    assert!(first.exit_ok, "staging pulse:\n{}", first.output);
    let staged_leaf = site.assert_certificate("epsilon", "host4.example.test");
    let meta = site.meta("epsilon", "epsilon-main");
    assert_eq!(meta["staging"], true, "recorded as staging: {meta}");
    assert_eq!(meta["directory"], pebble, "recorded directory: {meta}");
    let staged_serial = meta["serial"].clone();
    assert_eq!(site.handler_runs("epsilon-main"), 1);

    let second = site.pulse(production);
    assert!(second.exit_ok, "production pulse:\n{}", second.output);
    let decisions = site.decisions("epsilon", "epsilon-main");
    let last = decisions.last().expect("acme_request logged a decision");
    assert_eq!(
        (last["action"].as_str(), last["reason"].as_str()),
        (Some("issue"), Some("directory_changed")),
        "the staging certificate must be reissued from production (same directory URL, the \
         recorded `staging` flag differs); decisions: {decisions:?}\n{}",
        second.output
    );
    let meta = site.meta("epsilon", "epsilon-main");
    assert_eq!(meta["staging"], false, "recorded as production: {meta}");
    assert_ne!(meta["serial"], staged_serial, "a new certificate: {meta}");
    assert_ne!(
        site.assert_certificate("epsilon", "host4.example.test"),
        staged_leaf
    );
    assert_eq!(
        site.handler_runs("epsilon-main"),
        2,
        "the handler fires again"
    );

    let third = site.pulse(staging);
    assert!(third.exit_ok, "back to staging:\n{}", third.output);
    let decisions = site.decisions("epsilon", "epsilon-main");
    let last = decisions.last().expect("decision");
    assert_eq!(
        (last["action"].as_str(), last["reason"].as_str()),
        (Some("ok"), Some("production_kept")),
        "a valid production certificate is kept; decisions: {decisions:?}"
    );
    assert_eq!(
        site.meta("epsilon", "epsilon-main")["serial"],
        meta["serial"]
    );
    assert_eq!(site.handler_runs("epsilon-main"), 2, "nothing fired");
}

/// letsencrypt_module_mode: installed, end to end: the pulse runs the binaries installed on the
/// host through certbridge_exec. The module path holds no acme_request/acme_finalize at all, so
/// a task that tried to send them as binary modules would fail; play 2 still sends
/// acme_txt_publish. (tests/module_mode.rs proves the setup role's install itself.)
#[test]
fn installed_mode_pulse_issues_then_is_a_no_op() {
    let bed = start_bed();
    let hosts = [HostSpec {
        name: "zeta",
        certs: json!({"zeta-main": ["host5.example.test"]}),
    }];
    let site = Site::new(&bed, &hosts, Some(bed.get("TESTBED_ACME_DIRECTORY")));
    site.set_handlers(&[site.counting_handler("zeta-main", None)]);

    // What letsencrypt-setup installs on the host (here: a temp dir).
    let installed = site.path("installed");
    std::fs::create_dir_all(&installed).unwrap();
    for module in ["acme_request", "acme_finalize"] {
        std::fs::copy(modules_dir().join(module), installed.join(module)).unwrap();
    }
    // The controller's module path: the shim and play 2's module only.
    let library = site.path("library");
    std::fs::create_dir_all(&library).unwrap();
    std::os::unix::fs::symlink(
        repo_root().join("modules/certbridge_exec.py"),
        library.join("certbridge_exec.py"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        modules_dir().join("acme_txt_publish"),
        library.join("acme_txt_publish"),
    )
    .unwrap();
    let library = library.display().to_string();
    let vars = json!({
        "letsencrypt_module_mode": "installed",
        "letsencrypt_module_dir": installed,
    });

    let first = site.pulse_with_library(vars.clone(), &library);
    assert!(first.exit_ok, "installed-mode pulse:\n{}", first.output);
    site.assert_certificate("zeta", "host5.example.test");
    assert_eq!(site.handler_runs("zeta-main"), 1, "{}", first.output);
    assert_eq!(first.count("zeta", "failed"), 0);

    let second = site.pulse_with_library(vars, &library);
    assert!(second.exit_ok, "installed-mode no-op:\n{}", second.output);
    assert_eq!(second.count("zeta", "changed"), 0, "{}", second.output);
    assert_eq!(site.handler_runs("zeta-main"), 1, "nothing fired");

    // Without the installed binaries the task fails naming the path and the fix.
    std::fs::remove_file(installed.join("acme_request")).unwrap();
    let third = site.pulse_with_library(
        json!({"letsencrypt_module_mode": "installed", "letsencrypt_module_dir": installed}),
        &library,
    );
    assert!(
        !third.exit_ok,
        "must fail without the binary:\n{}",
        third.output
    );
    let text = third.failure_text("zeta");
    assert_contains(
        &text,
        &installed.join("acme_request").display().to_string(),
        "the missing binary",
        &third.output,
    );
    assert_contains(&text, "letsencrypt-setup", "the fix", &third.output);
}

/// Issue 19, values per name and CNAMEs before any order, through the pulse. Four hosts share
/// the signing name acme.signing.test (OpenDev's layout) with letsencrypt_max_values_per_name
/// 2: alpha and beta fit; gamma is deferred to the next pulse with the reason (not failed,
/// not finalized); delta's cert alone needs 3 values there and is refused with the fix
/// (per-name labels); eps's name has no CNAME and fails in play 1 with the record to add,
/// before any order. The next pulse issues gamma's certificate.
#[test]
fn values_per_name_are_capped_and_bad_cnames_fail_before_ordering() {
    let bed = start_bed();
    let hosts = [
        HostSpec {
            name: "alpha",
            certs: json!({"a-main": ["host1.example.test"]}),
        },
        HostSpec {
            name: "beta",
            certs: json!({"b-main": ["host2.example.test"]}),
        },
        HostSpec {
            name: "gamma",
            certs: json!({"g-main": ["host3.example.test"]}),
        },
        HostSpec {
            name: "delta",
            certs: json!({"d-main": ["host1.example.test", "host2.example.test", "host3.example.test"]}),
        },
        HostSpec {
            name: "eps",
            certs: json!({"e-main": ["nocname.example.test"]}),
        },
    ];
    let site = Site::new(&bed, &hosts, Some(bed.get("TESTBED_ACME_DIRECTORY")));
    site.set_handlers(
        &["a-main", "b-main", "g-main", "d-main", "e-main"].map(|c| site.counting_handler(c, None)),
    );
    let cap = json!({"letsencrypt_max_values_per_name": 2});

    let first = site.pulse(cap.clone());
    let out = &first.output;
    for host in ["alpha", "beta", "gamma"] {
        assert_eq!(
            first.count(host, "failed"),
            0,
            "{host} does not fail:\n{out}"
        );
    }
    site.assert_certificate("alpha", "host1.example.test");
    site.assert_certificate("beta", "host2.example.test");
    assert!(
        site.installed_entries("gamma").is_empty(),
        "gamma waits:\n{out}"
    );
    // Ansible wraps warnings: compare with whitespace collapsed.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_contains(
        &flat,
        "gamma cert g-main: deferred to the next pulse: acme.signing.test already gets 2 values",
        "the deferral says why",
        out,
    );
    assert_contains(
        &first.failure_text("delta"),
        "this cert alone puts 3 values at acme.signing.test, more than letsencrypt_max_values_per_name (2)",
        "delta is refused with the fix",
        out,
    );
    assert!(site.installed_entries("delta").is_empty());
    let eps = first.failure_text("eps");
    assert_contains(
        &eps,
        "add: _acme-challenge.nocname.example.test. IN CNAME",
        "eps gets the record to add",
        out,
    );
    let eps_log = std::fs::read_to_string(site.host_dir("eps").join("log/certbridge.log"))
        .unwrap_or_default();
    assert!(
        !eps_log.contains("\"order_created\""),
        "an order was made for eps:\n{eps_log}"
    );

    let second = site.pulse(cap);
    assert_eq!(second.count("gamma", "failed"), 0, "{}", second.output);
    site.assert_certificate("gamma", "host3.example.test");
    assert_eq!(site.handler_runs("g-main"), 1);
    assert_eq!(site.handler_runs("a-main"), 1, "alpha is not issued again");
    println!("cap 2 at one name: 2 issued, 1 deferred then issued at the next pulse, 1 refused with the fix; a missing CNAME failed in play 1 without an order");
}

/// Issue 18, the rate budget against a CA that enforces a limit: Pebble behind the CA proxy,
/// which answers Let's Encrypt's 429 past 2 certificates per registered domain per week. With
/// the budget planning that limit, the first pulse orders 2 of 3 new certificates and defers
/// the third (`rate_budget`): the CA answers no 429. With the budget off, the next pulse
/// orders the third, the CA answers 429 and the cert fails alone with the CA's problem and
/// backs off until the CA's Retry-After: the pulse after that makes no order. The round's
/// metrics file names the deferred cert, the limit and when it fits.
#[test]
fn a_planned_rate_limit_meets_no_429_and_without_the_budget_the_429_backs_off() {
    use support::ca_proxy::{CaProxy, Endpoint, ProxyConfig};
    use support::rate_limits::{Limit, RateLimits};
    let bed = start_bed();
    let mut config = ProxyConfig::default();
    config.strict.rate_limits = RateLimits {
        certs_per_registered_domain: Some(Limit::new(2, std::time::Duration::from_secs(7 * 86400))),
        ..RateLimits::lets_encrypt()
    };
    let proxy = CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        config,
    );
    let hosts = [
        HostSpec {
            name: "alpha",
            certs: json!({"a-main": ["host4.example.test"]}),
        },
        HostSpec {
            name: "beta",
            certs: json!({"b-main": ["host5.example.test"]}),
        },
        HostSpec {
            name: "gamma",
            certs: json!({"g-main": ["host6.example.test"]}),
        },
    ];
    let directory = proxy.directory_url();
    let site = Site::new(&bed, &hosts, Some(&directory));
    site.set_handlers(&["a-main", "b-main", "g-main"].map(|c| site.counting_handler(c, None)));
    let round_metrics = site.path("round.prom");
    let vars = |budget: bool| {
        json!({"letsencrypt_ca_file": proxy.ca_file(), "letsencrypt_rate_budget": budget,
               "letsencrypt_rate_registered_domain": 2, "letsencrypt_round_metrics_file": round_metrics})
    };
    let orders = |status: u16| {
        proxy
            .requests_to(Endpoint::NewOrder)
            .iter()
            .filter(|r| r.status == Some(status))
            .count()
    };

    let planned = site.pulse(vars(true));
    let out = &planned.output;
    assert!(planned.exit_ok, "the planned pulse succeeds:\n{out}");
    assert_eq!(
        (orders(201), orders(429)),
        (2, 0),
        "2 orders, no 429:\n{out}"
    );
    site.assert_certificate("alpha", "host4.example.test");
    site.assert_certificate("beta", "host5.example.test");
    assert!(site.installed_entries("gamma").is_empty(), "{out}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_contains(
        &flat,
        "rate budget: 2 new certificate(s) admitted, 1 deferred (rate_budget)",
        "the round defers the third",
        out,
    );
    assert_contains(
        &flat,
        "rate budget: 1 deferred by registered_domain: 2 per 7 d per registered domain (example.test)",
        "the deferral names the limit",
        out,
    );

    // The round's metrics file (on the controller) names the deferred cert, why, and when.
    let metrics = std::fs::read_to_string(&round_metrics).expect("the round's metrics file");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("certbridge_cert_deferred_until_seconds{host=\"gamma\",cert=\"g-main\",reason=\"rate_budget\",limit=\"registered_domain\"} "))
        .unwrap_or_else(|| panic!("no deferral line for gamma:\n{metrics}"));
    let fits: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3 * 86400..now + 4 * 86400).contains(&fits),
        "gamma fits in 3.5 days (2 per week): {line}"
    );

    let unplanned = site.pulse(vars(false));
    let out = &unplanned.output;
    assert_eq!(
        (orders(201), orders(429)),
        (2, 1),
        "one more order, a 429:\n{out}"
    );
    assert_eq!(unplanned.count("alpha", "failed"), 0, "{out}");
    assert_eq!(unplanned.count("beta", "failed"), 0, "{out}");
    let failure = unplanned.failure_text("gamma");
    assert_contains(
        &failure,
        "urn:ietf:params:acme:error:rateLimited",
        "gamma fails with the CA's problem type",
        out,
    );
    assert_contains(
        &failure,
        "too many certificates (2) already issued for \\\"example.test\\\" in the last 168h0m0s",
        "and Let's Encrypt's detail",
        out,
    );
    let retry_after: i64 = proxy
        .requests_to(Endpoint::NewOrder)
        .iter()
        .find(|r| r.status == Some(429))
        .and_then(|r| r.retry_after.as_deref()?.parse().ok())
        .expect("the 429 carries Retry-After");
    let not_before = site.meta("gamma", "g-main")["retry_not_before"]
        .as_i64()
        .unwrap_or_else(|| panic!("no backoff recorded: {}", site.meta("gamma", "g-main")));
    assert!(
        not_before >= now + retry_after - 600,
        "the backoff honours Retry-After ({retry_after} s): {not_before} vs now {now}"
    );

    let after = site.pulse(vars(false));
    assert_eq!(
        (orders(201), orders(429)),
        (2, 1),
        "in backoff: no order\n{}",
        after.output
    );
    println!("planned: 2 orders, 1 deferred, 0 429s; unplanned: one 429 (Retry-After {retry_after} s), gamma alone failed and backs off; then no order");
}
