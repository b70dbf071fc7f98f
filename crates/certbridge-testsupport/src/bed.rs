//! The test bed (scripts/testbed: Pebble + BIND, optionally Knot, on loopback, see
//! docs/testbed.md): starting and stopping one per test, its `TESTBED_*` values, and stopping
//! or restarting its Pebble.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The repository root (the workspace root, where `scripts/testbed` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Held while ports are being chosen or handed back: by every bed start, and by a test that
/// stops a daemon and starts it again on the same port, so a bed starting in a parallel test
/// cannot take the port in between. Test binaries run side by side (scripts/test-rust), so the
/// guard is a lock file shared by every process as well as a mutex within one.
pub static PORTS_IN_FLUX: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What [`ports_in_flux`] holds: the process's mutex and the machine-wide lock file.
pub struct PortsGuard {
    _file: std::fs::File,
    _local: std::sync::MutexGuard<'static, ()>,
}

/// Waits for [`PORTS_IN_FLUX`] in this process and in every other test process.
pub fn ports_in_flux() -> PortsGuard {
    let local = PORTS_IN_FLUX
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = std::env::temp_dir().join("certbridge-test-ports.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // Released by the kernel when the file is closed, also when a test process dies.
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    PortsGuard {
        _file: file,
        _local: local,
    }
}

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
        let _ports = ports_in_flux();
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

    /// The port of the bed's ACME server (from `TESTBED_ACME_DIRECTORY`).
    pub fn acme_port(&self) -> u16 {
        self.get("TESTBED_ACME_DIRECTORY")
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("TESTBED_ACME_DIRECTORY names a port")
    }

    /// The TSIG keys the bed's knotd (`--knot`) accepts for `TESTBED_KNOT_ZONE`: hmac-sha256
    /// and hmac-sha512, in that order.
    pub fn knot_keys(&self) -> [BedTsig; 2] {
        ["SHA256", "SHA512"].map(|tag| BedTsig {
            name: self
                .get(&format!("TESTBED_KNOT_TSIG_{tag}_NAME"))
                .to_owned(),
            algorithm: self
                .get(&format!("TESTBED_KNOT_TSIG_{tag}_ALGORITHM"))
                .to_owned(),
            secret: self
                .get(&format!("TESTBED_KNOT_TSIG_{tag}_SECRET"))
                .to_owned(),
        })
    }

    /// The TSIG keys BIND accepts for its dynamic zone (`TESTBED_DYNAMIC_ZONE`): hmac-sha256
    /// (`TESTBED_TSIG_*`) and hmac-sha512 (`TESTBED_TSIG_SHA512_*`), in that order.
    pub fn bind_keys(&self) -> [BedTsig; 2] {
        ["TESTBED_TSIG", "TESTBED_TSIG_SHA512"].map(|prefix| BedTsig {
            name: self.get(&format!("{prefix}_NAME")).to_owned(),
            algorithm: self.get(&format!("{prefix}_ALGORITHM")).to_owned(),
            secret: self.get(&format!("{prefix}_SECRET")).to_owned(),
        })
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

/// A TSIG key of the bed: name, algorithm in BIND's spelling, base64 secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedTsig {
    pub name: String,
    pub algorithm: String,
    pub secret: String,
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

/// How to start the bed's Pebble again (same argv, environment, working directory and so the
/// same ports and TLS certificate): a new CA that has forgotten every account and order.
pub struct PebbleCommand {
    argv: Vec<String>,
    environ: Vec<(String, String)>,
    cwd: PathBuf,
    port: u16,
    log: PathBuf,
}

/// The NUL-separated list `/proc/<pid>/<what>` (`cmdline`, `environ`).
fn proc_list(pid: &str, what: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{what}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e}"))
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

impl PebbleCommand {
    /// Reads the command of the bed's running Pebble.
    pub fn of(bed: &Testbed) -> PebbleCommand {
        let pid = bed.get("TESTBED_PEBBLE_PID");
        PebbleCommand {
            argv: proc_list(pid, "cmdline"),
            environ: proc_list(pid, "environ")
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect(),
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).expect("pebble cwd"),
            port: bed.acme_port(),
            log: Path::new(bed.get("TESTBED_STATE_DIR")).join("pebble-restarted.log"),
        }
    }

    /// Starts Pebble (output in the bed's state dir) and waits until it listens.
    pub fn start(&self) -> RunningPebble {
        let log = std::fs::File::create(&self.log).expect("pebble log");
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.environ.clone())
            .current_dir(&self.cwd)
            .stdout(log.try_clone().expect("pebble log"))
            .stderr(log)
            .spawn()
            .expect("restart pebble");
        let running = RunningPebble(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "restarted pebble never listened: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }
}

/// Stops the bed's Pebble by pid and waits until it is gone (a zombie counts as gone).
pub fn stop_pebble(bed: &Testbed) {
    let pid = bed.get("TESTBED_PEBBLE_PID");
    let killed = Command::new("kill").arg(pid).status().expect("run kill");
    assert!(killed.success(), "kill {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "pebble {pid} did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Pebble the test started; killed on drop.
pub struct RunningPebble(Child);

impl Drop for RunningPebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the bed's Pebble and starts it again: a restarted CA that has forgotten every account
/// and order. No bed of a parallel test may pick Pebble's ports until it listens again.
pub fn restart_pebble(bed: &Testbed) -> RunningPebble {
    let command = PebbleCommand::of(bed);
    let _ports = ports_in_flux();
    stop_pebble(bed);
    command.start()
}
