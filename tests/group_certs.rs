//! Group certificates (one cert shared by the members of an inventory group) through the real
//! pulse playbook: `ansible-playbook -vvv` on six local members with their own cert roots,
//! Pebble behind the recording CA proxy (with renewal information, so `replaces` is seen),
//! BIND publishing the wildcard's dns-01 values. One order for six members, byte-identical key
//! and chain everywhere, one handler per member; a second pulse changes nothing; a forced
//! renewal is one order naming the certificate it replaces; a member added later gets the
//! bundle without an order; an issuer that is unreachable, or removed from the inventory, is
//! replaced by the next member, and one that comes back converges without an order; an issuer
//! lost between plays after ordering costs one more order at most; a bundle changed by one byte or handed to another member is refused; no key body
//! (certificate or distribution key) appears in any output.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::ca_proxy::{CaProxy, ProxyConfig};
use support::{repo_root, run_module_at, Testbed};

const CERT: &str = "rgw-wildcard";
const DIR: &str = "s3.example.test";

fn venv_bin(tool: &str) -> PathBuf {
    repo_root().join(".venv/bin").join(tool)
}

fn modules_dir() -> PathBuf {
    std::env::var_os("CERTBRIDGE_MODULES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("modules"))
}

/// Fails (never skips) when the tooling is not there.
fn require_tooling() {
    assert!(
        venv_bin("ansible-playbook").is_file(),
        "ansible-playbook is missing: run `make deps modules` first"
    );
    for m in support::MODULES {
        let bin = modules_dir().join(m);
        assert!(
            bin.is_file(),
            "{} is missing: run `make modules` first",
            bin.display()
        );
    }
}

/// A site: members of group `rgws` on the local connection, each with its own cert root.
struct Site {
    dir: tempfile::TempDir,
}

struct Run {
    output: String,
    ok: bool,
}

impl Site {
    fn new() -> Site {
        require_tooling();
        let dir = tempfile::Builder::new()
            .prefix("certbridge-group-")
            .tempdir()
            .unwrap();
        let site = Site { dir };
        // Each handler run appends the member's name: who fired, and how often.
        let handler = json!([{
            "name": format!("letsencrypt updated {CERT}"),
            // It fails where a file named after the member exists in fail/.
            "ansible.builtin.shell": {"cmd": "echo {{ inventory_hostname }} >> \"$HANDLER_LOG\" && test ! -e \"$FAIL_DIR/{{ inventory_hostname }}\""},
            "environment": {"HANDLER_LOG": site.path("handlers.log"), "FAIL_DIR": site.path("fail")},
            "changed_when": true,
        }]);
        write_json(&site.path("handlers.yml"), &handler);
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self, host: &str) -> PathBuf {
        self.path(&format!("hosts/{host}/certs"))
    }

    /// Writes the inventory: `members` (in this order) share the cert through `rgws`; those in
    /// `down` are unreachable (SSH to a closed port).
    fn inventory(&self, bed: &Testbed, proxy: &CaProxy, members: &[&str], down: &[&str]) {
        let downs = down.iter().map(|h| (h.to_string(), json!("ssh"))).collect();
        self.inventory_with(bed, proxy, members, downs)
    }

    /// [`Site::inventory`], with the `ansible_connection` of some members given (SSH goes to a
    /// closed port: unreachable).
    fn inventory_with(
        &self,
        bed: &Testbed,
        proxy: &CaProxy,
        members: &[&str],
        connections: serde_json::Map<String, Value>,
    ) {
        let dns = bed.get("TESTBED_DNS");
        let mut hosts = serde_json::Map::new();
        for m in members {
            let mut vars = json!({
                "letsencrypt_cert_root": self.root(m),
                "letsencrypt_log_dir": self.path(&format!("hosts/{m}/log")),
            });
            if let Some(connection) = connections.get(*m) {
                vars["ansible_connection"] = connection.clone();
                vars["ansible_host"] = json!("127.0.0.1");
                vars["ansible_port"] = json!(1);
            }
            hosts.insert(m.to_string(), vars);
        }
        let group_vars = json!({
            "letsencrypt_certs": {CERT: {"names": [format!("*.{DIR}"), DIR], "shared_by": "rgws"}},
            "letsencrypt_directory": proxy.directory_url(),
            "letsencrypt_ca_file": proxy.ca_file(),
            "letsencrypt_account_email": "hostmaster@example.test",
            "letsencrypt_dns_check": dns,
        });
        let inventory = json!({"all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": venv_bin("python"),
                "letsencrypt_dns_group": "letsencrypt_dns",
                "letsencrypt_key_group": "",
            },
            "children": {
                "letsencrypt_dns": {"hosts": {"ns-primary": {
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
                    "letsencrypt_publish_state_dir": self.path("hosts/ns-primary/state"),
                    // Only this run's values: four renewals of one name would otherwise leave 8
                    // TXT values there, more than a 512-byte UDP answer holds for Pebble.
                    "letsencrypt_txt_keep_seconds": 0,
                }}},
                "letsencrypt": {"children": {"rgws": {}}},
                "rgws": {"hosts": hosts, "vars": group_vars},
            }
        }});
        write_json(&self.path("hosts.yml"), &inventory);
    }

    fn pulse(&self, extra_vars: Value) -> Run {
        self.pulse_args(extra_vars, &[])
    }

    fn pulse_args(&self, extra_vars: Value, args: &[&str]) -> Run {
        let mut vars = json!({"letsencrypt_handlers_file": self.path("handlers.yml")});
        vars.as_object_mut()
            .unwrap()
            .extend(extra_vars.as_object().unwrap().clone());
        let out = Command::new(venv_bin("ansible-playbook"))
            .arg("-vvv")
            .args(args)
            .arg("-i")
            .arg(self.path("hosts.yml"))
            .arg(repo_root().join("playbooks/service-letsencrypt.yaml"))
            .arg("-e")
            .arg(vars.to_string())
            .current_dir(self.dir.path())
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:{}",
                    venv_bin("").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("ANSIBLE_CONFIG", repo_root().join("ansible.cfg"))
            .env(
                "ANSIBLE_LIBRARY",
                format!(
                    "{}:{}",
                    modules_dir().display(),
                    repo_root().join("modules").display()
                ),
            )
            .env("ANSIBLE_ROLES_PATH", repo_root().join("roles"))
            .env("ANSIBLE_STDOUT_CALLBACK", "ansible.builtin.default")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCAL_TEMP", self.path("ansible-tmp"))
            .env("ANSIBLE_KEEP_REMOTE_FILES", "0")
            .output()
            .expect("run ansible-playbook");
        Run {
            output: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            ok: out.status.success(),
        }
    }

    fn file(&self, host: &str, name: &str) -> String {
        let p = self.root(host).join(DIR).join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// Member names in the order their handler ran.
    fn handler_runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("handlers.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn distkey(&self, host: &str) -> PathBuf {
        self.root(host).join(".certbridge/group/distkey")
    }

    /// Every secret of `hosts` that must never be printed: the cert key's body lines and the
    /// distribution private keys.
    fn secrets(&self, hosts: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for h in hosts {
            let key = self.file(h, "privkey.pem");
            out.extend(
                key.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 16)
                    .map(str::to_owned),
            );
            out.push(
                std::fs::read_to_string(self.distkey(h))
                    .unwrap()
                    .trim()
                    .to_owned(),
            );
        }
        out
    }
}

impl Site {
    /// No secret in any file under the members' log dirs or the controller's temp dir.
    fn assert_no_secrets_in_files(&self, secrets: &[String]) {
        let mut stack = vec![self.path("ansible-tmp")];
        stack.extend(SIX.iter().map(|h| self.path(&format!("hosts/{h}/log"))));
        let mut seen = 0;
        while let Some(p) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.extend(
                    std::fs::read_dir(&p)
                        .unwrap()
                        .filter_map(|e| e.ok())
                        .map(|e| e.path()),
                );
            } else if meta.is_file() {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                seen += 1;
                for s in secrets {
                    assert!(!text.contains(s.as_str()), "a secret in {}", p.display());
                }
            }
        }
        assert!(seen > 0, "no decision log was written");
    }
}

impl Run {
    fn assert_ok(&self, what: &str) {
        assert!(self.ok, "{what}: the pulse failed:\n{}", self.tail());
    }
    fn tail(&self) -> String {
        let n = self.output.len();
        self.output[n.saturating_sub(12000)..].to_owned()
    }
    /// `changed=` of `host` in the recap.
    fn changed(&self, host: &str) -> u64 {
        self.count(host, "changed")
    }
    /// A `PLAY RECAP` counter (`changed`, `failed`, ...) of `host`.
    fn count(&self, host: &str, key: &str) -> u64 {
        let recap = self
            .output
            .split_once("PLAY RECAP")
            .map(|(_, r)| r)
            .unwrap_or("");
        let prefix = format!("{key}=");
        recap
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(prefix.as_str()))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no recap for {host}:\n{}", self.tail()))
    }
    fn assert_no_secrets(&self, secrets: &[String], what: &str) {
        for s in secrets {
            assert!(
                !self.output.contains(s.as_str()),
                "{what}: a secret appears in the -vvv output"
            );
        }
        assert!(
            !self.output.contains("PRIVATE KEY-----"),
            "{what}: a PEM private key in the output"
        );
    }
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn orders(proxy: &CaProxy) -> Vec<Value> {
    proxy.new_order_payloads()
}

/// The ARI id (RFC 9773) of `host`'s installed certificate, as the CA proxy computes it.
fn ari_id(site: &Site, host: &str) -> String {
    let pem = site.file(host, "cert.pem");
    let der = certbridge_acme::certinfo::pem_certs(&pem, "cert.pem")
        .unwrap()
        .remove(0);
    certbridge_acme::client::ari_cert_id(&der).unwrap()
}

const SIX: [&str; 6] = ["rgw1", "rgw2", "rgw3", "rgw4", "rgw5", "rgw6"];

#[test]
fn six_members_one_order_one_key_sealed_delivery_join_and_failover() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        ProxyConfig::default().with_ari(),
    );
    let site = Site::new();
    site.inventory(&bed, &proxy, &SIX, &[]);

    // 0. Check mode: the issuer would order; nothing is made anywhere (not even a key pair).
    let check = site.pulse_args(json!({}), &["--check"]);
    check.assert_ok("check mode");
    assert!(orders(&proxy).is_empty(), "check mode orders nothing");
    assert!(
        check.output.contains(
            "would_issue:\n            rgw1:\n                rgw-wildcard: issue (missing)"
        ),
        "{}",
        check.tail()
    );
    for m in SIX {
        assert!(!site.distkey(m).exists(), "{m}: check mode made a key pair");
        assert!(
            !site.root(m).join(DIR).exists(),
            "{m}: check mode installed something"
        );
    }

    // 1. First pulse: one order, six identical sets, six handlers.
    let first = site.pulse(json!({}));
    first.assert_ok("first pulse");
    assert_eq!(
        orders(&proxy).len(),
        1,
        "one order for the group:\n{}",
        first.tail()
    );
    let key = site.file("rgw1", "privkey.pem");
    let chain = site.file("rgw1", "fullchain.pem");
    for m in SIX {
        assert_eq!(site.file(m, "privkey.pem"), key, "{m}: same key as rgw1");
        assert_eq!(
            site.file(m, "fullchain.pem"),
            chain,
            "{m}: same chain as rgw1"
        );
        let mode = std::fs::metadata(site.distkey(m))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{m}: distribution key mode");
    }
    let mut fired = site.handler_runs();
    fired.sort();
    assert_eq!(fired, SIX.to_vec(), "one handler per member");
    let secrets = site.secrets(&SIX);
    first.assert_no_secrets(&secrets, "first pulse");

    // 2. Nothing due: nothing changes anywhere, no order, no handler.
    let second = site.pulse(json!({}));
    second.assert_ok("second pulse");
    for m in SIX {
        assert_eq!(
            second.changed(m),
            0,
            "{m} changed at the second pulse:\n{}",
            second.tail()
        );
    }
    assert_eq!(orders(&proxy).len(), 1);
    assert_eq!(site.handler_runs().len(), 6);
    second.assert_no_secrets(&secrets, "second pulse");

    // 3. Forced renewal: one order, naming the certificate it replaces; every member follows.
    let old_id = ari_id(&site, "rgw1");
    proxy.clear_requests();
    let forced = site.pulse(json!({"letsencrypt_force": true}));
    forced.assert_ok("forced pulse");
    let payloads = orders(&proxy);
    assert_eq!(
        payloads.len(),
        1,
        "one order for the forced renewal: {payloads:?}"
    );
    assert_eq!(payloads[0]["replaces"], json!(old_id));
    let key2 = site.file("rgw1", "privkey.pem");
    assert_ne!(key2, key, "a new key");
    for m in SIX {
        assert_eq!(site.file(m, "privkey.pem"), key2, "{m}: the renewed key");
    }
    assert_eq!(site.handler_runs().len(), 12);
    forced.assert_no_secrets(&site.secrets(&SIX), "forced pulse");
    // Nor in any member's decision log or the controller's temp files.
    site.assert_no_secrets_in_files(&site.secrets(&SIX));

    // 4. A member joins: it gets the bundle, nobody orders, only its handler fires. Its handler
    //    fails the first time: it is notified again at the next pulse, and only it.
    proxy.clear_requests();
    let seven = ["rgw1", "rgw2", "rgw3", "rgw4", "rgw5", "rgw6", "rgw7"];
    site.inventory(&bed, &proxy, &seven, &[]);
    std::fs::create_dir_all(site.path("fail")).unwrap();
    std::fs::write(site.path("fail/rgw7"), "").unwrap();
    let joined = site.pulse(json!({}));
    assert!(!joined.ok, "rgw7's handler failed");
    assert_eq!(joined.count("rgw7", "failed"), 1, "{}", joined.tail());
    assert!(orders(&proxy).is_empty(), "a joining member costs no order");
    assert_eq!(site.file("rgw7", "privkey.pem"), key2);
    assert_eq!(site.handler_runs().last().map(String::as_str), Some("rgw7"));
    assert_eq!(site.handler_runs().len(), 13);
    for m in SIX {
        assert_eq!(joined.changed(m), 0, "{m} changed when rgw7 joined");
        assert_eq!(joined.count(m, "failed"), 0, "{m} failed when rgw7 joined");
    }
    std::fs::remove_file(site.path("fail/rgw7")).unwrap();
    let again = site.pulse(json!({}));
    again.assert_ok("rgw7's handler again");
    assert!(orders(&proxy).is_empty());
    assert_eq!(
        site.handler_runs().len(),
        14,
        "only rgw7's owed handler fires"
    );
    assert_eq!(site.handler_runs().last().map(String::as_str), Some("rgw7"));
    for m in SIX {
        assert_eq!(
            again.changed(m),
            0,
            "{m} changed while rgw7's handler was owed"
        );
    }

    // 5. The issuer is unreachable: the next member holding the same issuance renews, naming
    //    the certificate it replaces, and every reachable member follows.
    proxy.clear_requests();
    let id2 = ari_id(&site, "rgw2");
    let rest = ["rgw2", "rgw3", "rgw4", "rgw5", "rgw6", "rgw7"];
    site.inventory(&bed, &proxy, &seven, &["rgw1"]);
    let failover = site.pulse(json!({"letsencrypt_force": true}));
    assert!(
        failover.output.contains("UNREACHABLE"),
        "{}",
        failover.tail()
    );
    for m in rest {
        assert_eq!(
            failover.count(m, "failed"),
            0,
            "{m} failed:\n{}",
            failover.tail()
        );
    }
    let payloads = orders(&proxy);
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(id2));
    let key3 = site.file("rgw2", "privkey.pem");
    assert_ne!(key3, key2);
    for m in rest {
        assert_eq!(
            site.file(m, "privkey.pem"),
            key3,
            "{m}: the failover issuance"
        );
    }
    assert_eq!(
        site.file("rgw1", "privkey.pem"),
        key2,
        "the unreachable member is untouched"
    );
    assert_eq!(site.handler_runs().len(), 20);

    // 6. It comes back: it converges to the newest issuance without an order (never the
    //    other way round), and only its handler fires.
    proxy.clear_requests();
    site.inventory(&bed, &proxy, &seven, &[]);
    let back = site.pulse(json!({}));
    back.assert_ok("the issuer comes back");
    assert!(
        orders(&proxy).is_empty(),
        "no order when a member comes back"
    );
    assert_eq!(site.file("rgw1", "privkey.pem"), key3);
    assert_eq!(site.handler_runs().len(), 21);
    assert_eq!(site.handler_runs().last().map(String::as_str), Some("rgw1"));
    for m in rest {
        assert_eq!(back.changed(m), 0, "{m} changed when rgw1 came back");
    }

    // 7. It leaves the inventory: a renewal is ordered once, by the next member.
    proxy.clear_requests();
    let id3 = ari_id(&site, "rgw2");
    site.inventory(&bed, &proxy, &rest, &[]);
    let removed = site.pulse(json!({"letsencrypt_force": true}));
    removed.assert_ok("after the issuer left");
    let payloads = orders(&proxy);
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["replaces"], json!(id3));
    let key4 = site.file("rgw2", "privkey.pem");
    assert_ne!(key4, key3);
    for m in rest {
        assert_eq!(
            site.file(m, "privkey.pem"),
            key4,
            "{m}: the issuance after rgw1 left"
        );
    }
    assert_eq!(
        site.file("rgw1", "privkey.pem"),
        key3,
        "the removed member is left alone"
    );

    // 8. Bundles in transit: rgw2 seals to rgw3; one flipped byte, or the bundle handed to
    //    rgw4, is refused with a clear message and nothing is installed.
    let bin = modules_dir().join("acme_group");
    let base = |root: PathBuf, member: &str| {
        json!({
            "certs": {CERT: [format!("*.{DIR}"), DIR]},
            "cert_root": root,
            "directory": proxy.directory_url(),
            "ca_file": proxy.ca_file(),
            "groups": {CERT: "rgws"},
            "member": member,
        })
    };
    let status = |m: &str| {
        let run = run_module_at(
            &bin,
            &support::merged(&base(site.root(m), m), &json!({"op": "status"})),
        );
        support::ok(&run)["public_key"].as_str().unwrap().to_owned()
    };
    let pk3 = status("rgw3");
    let sealed = run_module_at(
        &bin,
        &support::merged(
            &base(site.root("rgw2"), "rgw2"),
            &json!({"op": "seal", "recipients": {CERT: [{"host": "rgw3", "public_key": pk3}]}}),
        ),
    );
    let bundle = support::ok(&sealed)["bundles"][CERT]["rgw3"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!sealed.stdout.contains("PRIVATE KEY"));
    let before = site.file("rgw3", "privkey.pem");
    let mut flipped = bundle.clone().into_bytes();
    let at = flipped.len() - 20;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let open = |m: &str, b: &str| {
        run_module_at(
            &bin,
            &support::merged(
                &base(site.root(m), m),
                &json!({"op": "open", "bundles": {CERT: b}}),
            ),
        )
    };
    let tampered = open("rgw3", &flipped);
    assert!(
        tampered.failed(),
        "a flipped byte must be refused: {}",
        tampered.json
    );
    assert!(
        tampered.msg().contains("does not open"),
        "{}",
        tampered.msg()
    );
    assert!(
        tampered.msg().contains("nothing was installed"),
        "{}",
        tampered.msg()
    );
    assert_eq!(site.file("rgw3", "privkey.pem"), before);
    let replayed = open("rgw4", &bundle);
    assert!(
        replayed.failed(),
        "a bundle for rgw3 must be refused on rgw4: {}",
        replayed.json
    );
    assert!(
        replayed.msg().contains("addressed to rgw3, not to rgw4"),
        "{}",
        replayed.msg()
    );
    // The genuine bundle opens on rgw3 (it holds that issuance already: nothing to do).
    let genuine = open("rgw3", &bundle);
    assert!(!genuine.failed() && !genuine.changed(), "{}", genuine.json);
    for run in [&tampered, &replayed, &genuine, &sealed] {
        for s in site.secrets(&rest) {
            assert!(
                !run.stdout.contains(&s) && !run.stderr.contains(&s),
                "a secret in a module result"
            );
        }
    }
}

#[test]
fn bad_group_declarations_fail_naming_both_before_any_order() {
    require_tooling();
    let site = Site::new();
    let members = json!({
        "rgw1": {"letsencrypt_certs": {CERT: {"names": ["a.example.test"], "shared_by": "rgws"}},
                 "letsencrypt_cert_root": site.root("rgw1")},
        "rgw2": {"letsencrypt_certs": {CERT: {"names": ["b.example.test"], "shared_by": "rgws"}},
                 "letsencrypt_cert_root": site.root("rgw2")},
        "lone": {"letsencrypt_certs": {CERT: {"names": ["a.example.test"], "shared_by": "nosuchgroup"}},
                 "letsencrypt_cert_root": site.root("lone")},
        // In the inventory, but not a member of the group it names.
        "stray": {"letsencrypt_certs": {CERT: {"names": ["a.example.test"], "shared_by": "rgws"}},
                  "letsencrypt_cert_root": site.root("stray")},
        "gw1": {"letsencrypt_certs": {"gw": {"names": ["c.example.test"], "key_type": "ec-p384", "shared_by": "gws"}},
                "letsencrypt_cert_root": site.root("gw1")},
        "gw2": {"letsencrypt_certs": {"gw": {"names": ["c.example.test"], "shared_by": "gws"}},
                "letsencrypt_self_sign_only": true, "letsencrypt_cert_root": site.root("gw2")},
    });
    let inventory = json!({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": venv_bin("python"),
                 // Nothing may be asked of it: any module call would fail to reach it.
                 "letsencrypt_directory": "https://127.0.0.1:9/dir", "letsencrypt_key_group": "",
                 "letsencrypt_log_dir": site.path("log")},
        "children": {
            "letsencrypt": {"children": {"rgws": {}, "gws": {}},
                            "hosts": {"lone": members["lone"], "stray": members["stray"]}},
            "rgws": {"hosts": {"rgw1": members["rgw1"], "rgw2": members["rgw2"]}},
            "gws": {"hosts": {"gw1": members["gw1"], "gw2": members["gw2"]}},
        }
    }});
    write_json(&site.path("hosts.yml"), &inventory);
    let run = site.pulse(json!({}));
    assert!(!run.ok, "bad declarations must fail");
    for needle in [
        "rgw1 declares names ['a.example.test'], rgw2 declares names ['b.example.test']",
        "rgw2 declares names ['b.example.test'], rgw1 declares names ['a.example.test']",
        "shared_by 'nosuchgroup' is not an inventory group",
        "shared_by 'rgws', but stray is not a member of that group (members: rgw1, rgw2)",
        "cert gw (shared_by gws): gw1 declares key type ec-p384, gw2 declares key type ec-p256",
        "cert gw (shared_by gws): gw1 declares self_sign false, gw2 declares self_sign true",
    ] {
        assert!(
            run.output.contains(needle),
            "missing {needle:?} in:\n{}",
            run.tail()
        );
    }
    for h in ["rgw1", "rgw2", "lone", "stray", "gw1", "gw2"] {
        let entries: Vec<_> = std::fs::read_dir(site.root(h))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            entries.is_empty(),
            "{h}: nothing may be written: {entries:?}"
        );
    }
}

/// The issuer is lost between plays, after it ordered (its connection fails from the end of
/// play 1 on, as for a host killed then): nothing is installed anywhere and nothing breaks;
/// once it is gone from the inventory, the next member orders once and the group converges.
#[test]
fn an_issuer_lost_after_ordering_costs_one_more_order_at_most() {
    let bed = Testbed::start(&["--hosts", "4"]);
    let proxy = CaProxy::start(
        bed.get("TESTBED_ACME_DIRECTORY"),
        bed.get("TESTBED_ACME_CA_FILE"),
        ProxyConfig::default(),
    );
    let site = Site::new();
    let three = ["rgw1", "rgw2", "rgw3"];
    let mut lost = serde_json::Map::new();
    lost.insert(
        "rgw1".into(),
        json!("{{ 'ssh' if hostvars['localhost']['letsencrypt_round'] is defined else 'local' }}"),
    );
    site.inventory_with(&bed, &proxy, &three, lost);
    let first = site.pulse(json!({}));
    assert!(first.output.contains("UNREACHABLE"), "{}", first.tail());
    assert_eq!(orders(&proxy).len(), 1, "rgw1 ordered before it was lost");
    for m in ["rgw2", "rgw3"] {
        assert_eq!(first.count(m, "failed"), 0, "{m}:\n{}", first.tail());
        assert!(
            !site.root(m).join(DIR).exists(),
            "{m}: nothing to install yet"
        );
    }
    assert!(site.handler_runs().is_empty());

    site.inventory(&bed, &proxy, &["rgw2", "rgw3"], &[]);
    let second = site.pulse(json!({}));
    second.assert_ok("after the issuer was removed");
    assert_eq!(orders(&proxy).len(), 2, "one more order, by rgw2");
    assert_eq!(
        site.file("rgw2", "privkey.pem"),
        site.file("rgw3", "privkey.pem")
    );
    assert_eq!(
        site.file("rgw2", "fullchain.pem"),
        site.file("rgw3", "fullchain.pem")
    );
    let mut fired = site.handler_runs();
    fired.sort();
    assert_eq!(fired, ["rgw2", "rgw3"]);

    let third = site.pulse(json!({}));
    third.assert_ok("no-op");
    assert_eq!(orders(&proxy).len(), 2);
    for m in ["rgw2", "rgw3"] {
        assert_eq!(third.changed(m), 0, "{m} changed in the no-op pulse");
    }
}
