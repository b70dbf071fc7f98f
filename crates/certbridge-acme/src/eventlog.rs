//! The decision log (`log_file`): one JSON object per line for each decision, order URL,
//! install and CA problem document. It never receives key material: callers pass only names,
//! URLs, reasons and problem documents.

use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// Appends events to the log file, if one is configured. Write errors do not fail the run;
/// they become one warning.
#[derive(Debug)]
pub struct EventLog {
    path: Option<PathBuf>,
    module: &'static str,
    failed: std::sync::Mutex<Option<String>>,
}

impl EventLog {
    pub fn new(path: Option<PathBuf>, module: &'static str) -> EventLog {
        EventLog {
            path,
            module,
            failed: std::sync::Mutex::new(None),
        }
    }

    /// A log that writes nothing (check mode).
    pub fn disabled(module: &'static str) -> EventLog {
        Self::new(None, module)
    }

    /// Appends `{"ts", "module", "pid", "event", ...fields}`.
    pub fn event(&self, event: &str, fields: Value) {
        let Some(path) = &self.path else { return };
        let mut obj = json!({
            "ts": crate::now(),
            "module": self.module,
            "pid": std::process::id(),
            "event": event,
        });
        if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        let line = format!("{obj}\n");
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                if !parent.exists() {
                    std::fs::create_dir_all(parent)?;
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o750))?;
                }
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)?;
            // One write per line: concurrent writers' lines do not interleave.
            f.write_all(line.as_bytes())
        })();
        if let Err(e) = result {
            if let Ok(mut failed) = self.failed.lock() {
                failed.get_or_insert_with(|| {
                    format!("cannot write the log file {}: {e}", path.display())
                });
            }
        }
    }

    /// A warning for the reply when logging failed.
    pub fn warning(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}
