//! One managed host of a test: its own cert root and log in a temporary directory, and the
//! module arguments of acme_request and acme_finalize against a bed's Pebble or a CA proxy.

use crate::bed::Testbed;
use crate::ca_proxy::CaProxy;
use crate::certset;
use crate::module::{merged, run_module, ModuleRun};
use crate::tree;
use serde_json::{json, Value};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Host {
    _tmp: tempfile::TempDir,
    /// The host's directory: `certs/` (the cert root) and `certbridge.log`.
    pub root: PathBuf,
    /// The arguments of every call (directory, ca_file, cert_root, log_file, jitter_seed, ...).
    pub base: Value,
    /// Arguments of acme_finalize only.
    finalize_only: Value,
}

impl Host {
    /// A host ordering from the ACME server at `directory` (trusting `ca_file`).
    pub fn new(directory: &str, ca_file: impl AsRef<Path>, seed: &str) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let base = json!({
            "directory": directory,
            "ca_file": ca_file.as_ref(),
            "cert_root": root.join("certs"),
            "log_file": root.join("certbridge.log"),
            "jitter_seed": seed,
        });
        Host {
            _tmp: tmp,
            root,
            base,
            finalize_only: json!({}),
        }
    }

    /// A host ordering from the bed's Pebble.
    pub fn on_bed(bed: &Testbed) -> Host {
        Host::new(
            bed.get("TESTBED_ACME_DIRECTORY"),
            bed.get("TESTBED_ACME_CA_FILE"),
            "test-host",
        )
    }

    /// A host ordering through `proxy`.
    pub fn via(proxy: &CaProxy, seed: &str) -> Host {
        Host::new(&proxy.directory_url(), proxy.ca_file(), seed)
    }

    /// Adds `extra` to the arguments of every call.
    pub fn with(mut self, extra: Value) -> Host {
        self.base = merged(&self.base, &extra);
        self
    }

    /// Adds `extra` to the arguments of acme_finalize only (e.g. `dns_check`).
    pub fn with_finalize(mut self, extra: Value) -> Host {
        self.finalize_only = merged(&self.finalize_only, &extra);
        self
    }

    /// The common arguments with `extra` (an object, or anything else for none) added.
    pub fn args(&self, extra: impl Borrow<Value>) -> Value {
        merged(&self.base, extra.borrow())
    }

    pub fn request(&self, extra: impl Borrow<Value>) -> ModuleRun {
        run_module("acme_request", &self.args(extra))
    }

    pub fn finalize(&self, extra: impl Borrow<Value>) -> ModuleRun {
        let args = merged(&self.args(&self.finalize_only), extra.borrow());
        run_module("acme_finalize", &args)
    }

    pub fn cert_root(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// A file of the cert dir `dir`.
    pub fn cert_file(&self, dir: &str, file: &str) -> String {
        std::fs::read_to_string(self.cert_root().join(dir).join(file)).unwrap()
    }

    /// The serial number of the installed leaf of `dir`.
    pub fn serial(&self, dir: &str) -> String {
        certbridge_acme::certinfo::leaf_info_pem(&self.cert_file(dir, "cert.pem"), "cert.pem")
            .unwrap()
            .serial
    }

    /// The bookkeeping file of cert `cert` (`.certbridge/certs/<cert>.json`).
    pub fn cert_meta_path(&self, cert: &str) -> PathBuf {
        self.cert_root()
            .join(format!(".certbridge/certs/{cert}.json"))
    }

    pub fn cert_meta(&self, cert: &str) -> Value {
        let text = std::fs::read_to_string(self.cert_meta_path(cert)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Every entry under the cert dir `dir` with its content (links as their targets): what
    /// services could read.
    pub fn cert_files(&self, dir: &str) -> BTreeMap<String, tree::Kind> {
        tree::contents(&self.cert_root().join(dir))
    }

    /// Every regular file and link under the cert root with its content, bookkeeping files
    /// under `.certbridge/` left out.
    pub fn files(&self) -> BTreeMap<String, tree::Kind> {
        tree::contents(&self.cert_root())
            .into_iter()
            .filter(|(path, kind)| match kind {
                tree::Kind::Dir => false,
                tree::Kind::File { .. } => !path.contains(".certbridge/"),
                tree::Kind::Symlink(_) => true,
            })
            .collect()
    }

    /// The installed set of `dir` is complete and covers `names`.
    pub fn assert_complete(&self, dir: &str, names: &[&str]) {
        let seen = certset::read_set(&self.cert_root().join(dir), dir, names)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(
            matches!(seen, certset::Seen::Complete(_)),
            "{dir}: nothing installed"
        );
    }

    /// Everything the host wrote that could leak a key: the log must not, and it is JSON lines.
    pub fn assert_log_clean(&self) {
        let log = std::fs::read_to_string(self.root.join("certbridge.log")).unwrap_or_default();
        assert!(!log.contains("PRIVATE KEY"), "key material in the log");
        assert!(log
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }
}
