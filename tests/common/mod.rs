//! Shared helpers for the integration tests: run a module binary the way Ansible does
//! (an args file as argv[1]) and start/stop a test bed (Pebble + BIND on loopback).
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The module binary to test: `$CERTBRIDGE_MODULES_DIR/<name>` when set (e.g. the release
/// build in `modules/`), else the one cargo built for this test run.
pub fn module_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("CERTBRIDGE_MODULES_DIR") {
        return Path::new(&dir).join(name);
    }
    let built = match name {
        "zone_render" => env!("CARGO_BIN_EXE_zone_render"),
        "acme_txt_publish" => env!("CARGO_BIN_EXE_acme_txt_publish"),
        "acme_request" => env!("CARGO_BIN_EXE_acme_request"),
        "acme_finalize" => env!("CARGO_BIN_EXE_acme_finalize"),
        other => panic!("unknown module {other}"),
    };
    PathBuf::from(built)
}

/// What one module call printed.
#[derive(Debug)]
pub struct ModuleRun {
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
    pub exit_ok: bool,
    pub elapsed: std::time::Duration,
}

impl ModuleRun {
    pub fn failed(&self) -> bool {
        self.json["failed"].as_bool().unwrap_or(false)
    }
    pub fn changed(&self) -> bool {
        self.json["changed"].as_bool().unwrap_or(false)
    }
    pub fn msg(&self) -> String {
        self.json["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// Runs module `name` with `args` (a JSON object; `_ansible_*` keys may be included) and
/// parses its one JSON object. Panics when the output is not exactly one JSON object.
pub fn run_module(name: &str, args: &Value) -> ModuleRun {
    run_module_env(name, args, &[])
}

pub fn run_module_env(name: &str, args: &Value, env: &[(&str, &str)]) -> ModuleRun {
    run_binary_env(&module_bin(name), args, env)
}

/// As [`run_module`], for the module binary at `bin` (e.g. an installed copy).
pub fn run_module_at(bin: &Path, args: &Value) -> ModuleRun {
    run_binary_env(bin, args, &[])
}

fn run_binary_env(bin: &Path, args: &Value, env: &[(&str, &str)]) -> ModuleRun {
    let name = bin.display();
    let dir = tempfile::tempdir().expect("tempdir");
    let args_path = dir.path().join("args");
    std::fs::write(&args_path, serde_json::to_vec(args).unwrap()).unwrap();
    let start = std::time::Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg(&args_path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run module");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{name} did not print one JSON object ({e}): stdout={stdout:?} stderr={stderr:?}")
    });
    assert!(json.is_object(), "{name} printed {json}");
    ModuleRun {
        json,
        stdout,
        stderr,
        exit_ok: out.status.success(),
        elapsed,
    }
}

/// The repository root (where `scripts/testbed` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Held while ports are being chosen or handed back: by every bed start in this test binary,
/// and by a test that stops a daemon and starts it again on the same port, so a bed starting
/// in a parallel test cannot take the port in between.
pub static PORTS_IN_FLUX: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running test bed; stopped (exactly what it started) when dropped, also on panic.
pub struct Testbed {
    pub state: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Testbed {
    /// Starts a bed with `scripts/testbed up` and the given options (e.g. `["--hosts", "5"]`).
    pub fn start(opts: &[&str]) -> Testbed {
        Self::start_env(opts, &[])
    }

    /// As [`Testbed::start`], with environment for Pebble's knobs (`PEBBLE_AUTHZREUSE`, ...).
    pub fn start_env(opts: &[&str], env: &[(&str, &str)]) -> Testbed {
        // A bed picks free ports when it starts: not while a test restarts a daemon on a port
        // it just freed (see [`PORTS_IN_FLUX`]).
        let _ports = PORTS_IN_FLUX
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = tempfile::Builder::new()
            .prefix("certbridge-bed-")
            .tempdir()
            .expect("state dir");
        let mut cmd = Command::new(repo_root().join("scripts/testbed"));
        cmd.arg("up").arg("--state").arg(state.path()).args(opts);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run scripts/testbed up");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // Best effort: stop whatever did start.
            let _ = Command::new(repo_root().join("scripts/testbed"))
                .arg("down")
                .arg("--state")
                .arg(state.path())
                .output();
            panic!(
                "testbed up failed: {}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = parse_env(&stdout);
        Testbed { state, env }
    }

    /// A `TESTBED_*` value; panics naming the key when the bed did not print it.
    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("testbed printed no {key}"))
    }

    pub fn stop(&self) {
        let _ = Command::new(repo_root().join("scripts/testbed"))
            .arg("down")
            .arg("--state")
            .arg(self.state.path())
            .output();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses `KEY=value` lines (values may be single-quoted shell words).
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("TESTBED_"))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.to_owned(), v.to_owned())
        })
        .collect()
}
