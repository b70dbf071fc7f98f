//! Running a module binary the way Ansible does (an args file as argv[1]) and reading the one
//! JSON object it prints.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The module binaries of the `certbridge` package.
pub const MODULES: [&str; 6] = [
    "zone_render",
    "acme_txt_publish",
    "acme_http_publish",
    "acme_request",
    "acme_finalize",
    "acme_group",
];

/// The module binary to test: `$CERTBRIDGE_MODULES_DIR/<name>` when set (e.g. the release
/// build in `modules/`), else the one cargo built for this test run. Cargo puts an integration
/// test's executable in `<target>/<profile>/deps/` and the package's binaries one level up.
pub fn module_bin(name: &str) -> PathBuf {
    assert!(MODULES.contains(&name), "unknown module {name}");
    if let Ok(dir) = std::env::var("CERTBRIDGE_MODULES_DIR") {
        return Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("test executable directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("cargo profile directory")
    } else {
        deps
    };
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} missing: cargo builds it for the certbridge package's integration tests",
        bin.display()
    );
    bin
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

/// The reply of a run that must have succeeded; panics with the reply otherwise.
pub fn ok(run: &ModuleRun) -> &Value {
    assert!(!run.failed(), "module failed: {}", run.json);
    &run.json
}

/// `base` with the keys of `extra` added (or replaced); both are JSON objects.
pub fn merged(base: &Value, extra: &Value) -> Value {
    let mut v = base.clone();
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b.clone());
    }
    v
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
