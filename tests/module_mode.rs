//! The installed module mode (`letsencrypt_module_mode: installed`): the pipelinable
//! `certbridge_exec` module runs an installed binary and returns exactly what the binary
//! returns, and the setup role installs the binaries once (checksum-compared). Real
//! `ansible-playbook` from `.venv`, local connection, pipelining on; the release binaries.
use certbridge_testsupport as support;

use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{repo_root, run_module_at};

/// A TSIG secret in `args`: it must never appear in any output, even at -vvv.
const SECRET: &str = "c2hpbS10ZXN0LXRzaWctc2VjcmV0LTRmOWIyYzE3";
const BINARIES: [&str; 4] = [
    "acme_request",
    "acme_finalize",
    "acme_txt_publish",
    "zone_render",
];

/// The release binaries: `$CERTBRIDGE_MODULES_DIR` or the checkout's `modules/`.
fn modules_dir() -> PathBuf {
    let dir = std::env::var_os("CERTBRIDGE_MODULES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("modules"));
    for m in BINARIES {
        assert!(
            dir.join(m).is_file(),
            "{} is missing: build the release binaries with `make modules` \
             (or point CERTBRIDGE_MODULES_DIR at them)",
            dir.join(m).display()
        );
    }
    dir
}

/// Runs `.venv/bin/ansible-playbook` on localhost (local connection, pipelining on) with the
/// repository's ansible.cfg; returns (success, stdout + stderr).
fn playbook(work: &Path, playbook: &Path, extra: &[&str]) -> (bool, String) {
    let bin = repo_root().join(".venv/bin/ansible-playbook");
    assert!(
        bin.is_file(),
        "{} is missing: run `make deps`",
        bin.display()
    );
    let library = format!(
        "{}:{}",
        modules_dir().display(),
        repo_root().join("modules").display()
    );
    for sub in ["local-tmp", "remote-tmp"] {
        fs::create_dir_all(work.join(sub)).unwrap();
    }
    let out = Command::new(bin)
        .args(["-i", "localhost,", "-c", "local"])
        .arg("-e")
        .arg(format!(
            "ansible_python_interpreter={}",
            repo_root().join(".venv/bin/python3").display()
        ))
        .arg(playbook)
        .args(extra)
        .env("ANSIBLE_CONFIG", repo_root().join("ansible.cfg"))
        .env("ANSIBLE_LIBRARY", library)
        .env("ANSIBLE_ROLES_PATH", repo_root().join("roles"))
        .env("ANSIBLE_PIPELINING", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", work.join("local-tmp"))
        .env("ANSIBLE_REMOTE_TMP", work.join("remote-tmp"))
        .env_remove("ANSIBLE_KEEP_REMOTE_FILES")
        .current_dir(work)
        .output()
        .expect("run ansible-playbook");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Sum of `changed=N` over the PLAY RECAP.
fn recap_changed(output: &str) -> u64 {
    let recap = output
        .split("PLAY RECAP")
        .nth(1)
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{output}"));
    recap
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("changed="))
        .map(|n| n.parse::<u64>().expect("changed=N"))
        .sum()
}

fn zone_args(path: &Path) -> Value {
    json!({
        "path": path,
        "origin": "signing.test",
        "ns": ["ns1.signing.test."],
        "ttl": 60,
        "records": [
            {"name": "ns1", "type": "A", "value": "127.0.0.1"},
            {"name": "web01.example.test.signing.test.", "type": "TXT", "value": "60-value-60"},
        ],
    })
}

/// A registered result, without the key Ansible adds to every failed one (`exception`).
fn module_result(results: &Value, key: &str) -> Value {
    let mut r = results[key].clone();
    r.as_object_mut()
        .unwrap_or_else(|| panic!("no result {key} in {results}"))
        .remove("exception");
    r
}

/// What the binary itself printed, as Ansible registers it: without `invocation` (shown at
/// -vvv, but dropped from registered results, of plain binary modules alike).
fn registered(run: &support::ModuleRun) -> Value {
    let mut r = run.json.clone();
    r.as_object_mut().unwrap().remove("invocation");
    r
}

/// A `certbridge_exec` task registering its result; failures are results to check.
fn task(name: &str, args: Value, reg: &str) -> Value {
    json!({"name": name, "certbridge_exec": args, "register": reg, "ignore_errors": true})
}

/// One playbook (-vvv) with every case of the shim; the registered results go to a file.
#[test]
fn certbridge_exec_returns_what_the_binary_returns() {
    let modules = modules_dir();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let fresh = w.join("fresh.zone");
    let check = w.join("check.zone");
    let missing = w.join("not-installed/zone_render");
    // Binaries that misbehave: no execute bit, output that is not JSON, death by a signal.
    let not_executable = w.join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let chatty = w.join("chatty");
    fs::write(&chatty, "#!/bin/sh\necho 'starting up'\n").unwrap();
    let killed = w.join("killed");
    fs::write(&killed, "#!/bin/sh\nkill -KILL $$\n").unwrap();
    for script in [&chatty, &killed] {
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let results_file = w.join("results.json");
    let exec = |binary: &Path, args: Value| json!({"binary": binary, "args": args});
    let secret_args = json!({
        "zones": [{"origin": "signing.test", "method": "rfc2136", "server": "127.0.0.1:53",
                   "tsig_name": "k", "tsig_algorithm": "hmac-sha256", "tsig_secret": SECRET}],
        "records": [],
        "unknown_option": 1,
    });
    let zr = modules.join("zone_render");
    let txt_publish = modules.join("acme_txt_publish");
    let mut check_task = task("check", exec(&zr, zone_args(&check)), "r_check");
    check_task["check_mode"] = json!(true);
    let play = json!([{
        "hosts": "localhost",
        "gather_facts": false,
        "tasks": [
            task("fresh", exec(&zr, zone_args(&fresh)), "r_fresh"),
            task("again", exec(&zr, zone_args(&fresh)), "r_again"),
            check_task,
            task("rejected", exec(&zr, json!({"path": fresh, "bogus": 1})), "r_rejected"),
            // The same call as a plain binary module (transfer mode), for comparison.
            {"name": "rejected, transfer mode", "zone_render": {"path": fresh, "bogus": 1},
             "register": "r_rejected_plain", "ignore_errors": true},
            task("missing", exec(&missing, zone_args(&fresh)), "r_missing"),
            task("secret", exec(&txt_publish, secret_args), "r_secret"),
            task("not executable", exec(&not_executable, json!({})), "r_not_executable"),
            task("chatty", exec(&chatty, json!({})), "r_chatty"),
            task("killed", exec(&killed, json!({})), "r_killed"),
            {"name": "save", "ansible.builtin.copy": {
                "dest": results_file,
                "mode": "0600",
                "content": "{{ {'fresh': r_fresh, 'again': r_again, 'check': r_check, \
                             'rejected': r_rejected, 'rejected_plain': r_rejected_plain, \
                             'missing': r_missing, 'secret': r_secret, \
                             'not_executable': r_not_executable, 'chatty': r_chatty, \
                             'killed': r_killed} | to_json }}",
            }},
        ],
    }]);
    let pb = w.join("shim.yml");
    fs::write(&pb, serde_json::to_vec_pretty(&play).unwrap()).unwrap();
    let (ok, output) = playbook(w, &pb, &["-vvv"]);
    assert!(ok, "ansible-playbook failed:\n{output}");
    let results: Value = serde_json::from_slice(&fs::read(&results_file).unwrap()).unwrap();

    // Pipelined: the module went to the interpreter's stdin, no AnsiballZ file was written.
    assert!(
        output.contains("Pipelining is enabled") && !output.contains("AnsiballZ_certbridge_exec"),
        "certbridge_exec was not pipelined:\n{output}"
    );
    // The secret: not in the -vvv output, not in any registered result.
    assert!(
        !output.contains(SECRET),
        "the TSIG secret leaked:\n{output}"
    );
    assert!(
        !results.to_string().contains(SECRET),
        "the TSIG secret leaked: {results}"
    );

    // What the binary itself returns for the same calls, in the same order on the same files.
    let r_fresh = module_result(&results, "fresh");
    let r_again = module_result(&results, "again");
    assert_eq!(r_fresh["changed"], true, "{r_fresh}");
    assert_eq!(r_again["changed"], false, "{r_again}");
    let shim_zone = fs::read(&fresh).unwrap();
    fs::remove_file(&fresh).unwrap();
    let direct_fresh = run_module_at(&zr, &zone_args(&fresh));
    assert_eq!(
        shim_zone,
        fs::read(&fresh).unwrap(),
        "the zone files differ"
    );
    let direct_again = run_module_at(&zr, &zone_args(&fresh));
    assert_eq!(r_fresh, registered(&direct_fresh));
    assert_eq!(r_again, registered(&direct_again));

    // Check mode reaches the binary: it says it would write, and writes nothing.
    let r_check = module_result(&results, "check");
    assert!(!check.exists(), "check mode wrote {}", check.display());
    let mut check_args = zone_args(&check);
    check_args["_ansible_check_mode"] = json!(true);
    assert_eq!(r_check, registered(&run_module_at(&zr, &check_args)));
    assert_eq!(r_check["changed"], true, "{r_check}");

    // Options the binary rejects: its own failure, unchanged.
    let r_rejected = module_result(&results, "rejected");
    let direct = run_module_at(&zr, &json!({"path": fresh, "bogus": 1}));
    assert!(direct.failed(), "{}", direct.json);
    assert_eq!(r_rejected, registered(&direct));
    assert_eq!(results["rejected"], results["rejected_plain"]);

    // A binary that is not installed: the path and the fix.
    let r_missing = module_result(&results, "missing");
    let msg = r_missing["msg"].as_str().unwrap_or_default();
    assert_eq!(r_missing["failed"], true, "{r_missing}");
    assert!(
        msg.contains(&missing.display().to_string())
            && msg.contains("letsencrypt_module_mode: installed"),
        "{msg}"
    );

    // Misbehaving binaries: a failure naming the binary and what went wrong.
    for (key, path, what) in [
        (
            "not_executable",
            &not_executable,
            "is not executable (mode 0644)",
        ),
        ("chatty", &chatty, "printed no JSON object (exit status 0"),
        ("killed", &killed, "was killed by SIGKILL"),
    ] {
        let r = module_result(&results, key);
        let msg = r["msg"].as_str().unwrap_or_default();
        assert_eq!(r["failed"], true, "{r}");
        assert!(
            msg.contains(&format!("{} {what}", path.display())),
            "{key}: {msg}"
        );
    }
    assert!(
        module_result(&results, "chatty")["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("starting up"),
        "the output is quoted"
    );

    // The secret's call failed on the unknown option; the invocation shown at -vvv is the
    // binary's, with the secret redacted (the shim adds none with the raw args).
    let r_secret = module_result(&results, "secret");
    assert_eq!(r_secret["failed"], true, "{r_secret}");
    assert!(
        r_secret["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown_option"),
        "{r_secret}"
    );
    assert!(
        output.contains("tsig_secret: VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"),
        "no redacted invocation at -vvv:\n{output}"
    );
    let own_invocation = format!("binary: {}", modules.join("acme_txt_publish").display());
    assert!(
        !output.contains(&own_invocation),
        "an invocation with the shim's own options:\n{output}"
    );
}

/// The setup role in installed mode: check mode writes nothing, the first run installs the four
/// binaries (root, 0755, same bytes), the second changes nothing and sends nothing, and a
/// damaged binary is replaced.
#[test]
fn setup_role_installs_the_binaries_once() {
    let modules = modules_dir();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let lib = w.join("lib/certbridge");
    let pb = w.join("setup.yml");
    fs::write(
        &pb,
        "- hosts: localhost\n  gather_facts: false\n  roles:\n    - letsencrypt-setup\n",
    )
    .unwrap();
    let vars = json!({
        "letsencrypt_module_mode": "installed",
        "letsencrypt_module_dir": lib,
        "letsencrypt_key_group": "",
        "letsencrypt_cert_root": w.join("certs"),
        "letsencrypt_log_dir": w.join("log"),
        "letsencrypt_logrotate_file": "",
    })
    .to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["-e", vars.as_str()];
        args.extend_from_slice(extra);
        let (ok, output) = playbook(w, &pb, &args);
        assert!(ok, "the setup role failed:\n{output}");
        output
    };

    let output = run(&["--check"]);
    assert!(
        recap_changed(&output) > 0,
        "check mode reported nothing:\n{output}"
    );
    assert!(
        !w.join("lib").exists(),
        "check mode created {}",
        lib.display()
    );
    assert!(
        !w.join("certs").exists(),
        "check mode created the cert root"
    );

    let output = run(&[]);
    assert!(recap_changed(&output) >= 2, "first run:\n{output}");
    let mut mtimes = Vec::new();
    for m in BINARIES {
        let installed = lib.join(m);
        let meta = fs::metadata(&installed)
            .unwrap_or_else(|e| panic!("{} not installed: {e}\n{output}", installed.display()));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{m}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{m} not root-owned");
        assert!(
            fs::read(&installed).unwrap() == fs::read(modules.join(m)).unwrap(),
            "{m}: installed bytes differ from {}",
            modules.join(m).display()
        );
        mtimes.push(meta.mtime_nsec() + meta.mtime() * 1_000_000_000);
    }

    let output = run(&[]);
    assert_eq!(
        recap_changed(&output),
        0,
        "second run changed something:\n{output}"
    );
    for (m, before) in BINARIES.iter().zip(&mtimes) {
        let meta = fs::metadata(lib.join(m)).unwrap();
        assert_eq!(
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            *before,
            "{m} was rewritten"
        );
    }

    // Same size, different bytes: only a checksum comparison notices.
    let damaged = lib.join("zone_render");
    let mut bytes = fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&damaged, &bytes).unwrap();
    let output = run(&[]);
    assert_eq!(recap_changed(&output), 1, "damaged binary:\n{output}");
    assert!(fs::read(&damaged).unwrap() == fs::read(modules.join("zone_render")).unwrap());
}

/// `ansible-doc -M modules certbridge_exec` renders the module's page (options, examples,
/// return values).
#[test]
fn certbridge_exec_is_documented() {
    let out = Command::new(repo_root().join(".venv/bin/ansible-doc"))
        .args(["-M", "modules", "certbridge_exec"])
        .current_dir(repo_root())
        .env("ANSIBLE_CONFIG", repo_root().join("ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("run .venv/bin/ansible-doc (make deps)");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{page}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "> MODULE certbridge_exec ",
        "= args",
        "= binary",
        "EXAMPLES",
        "RETURN VALUES",
    ] {
        assert!(page.contains(part), "no {part:?} in:\n{page}");
    }
}
