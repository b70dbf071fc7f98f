//! The decision log (`log_file`): one JSON object per line for each decision, order URL,
//! install and CA problem document. It never receives key material: callers pass only names,
//! URLs, reasons and problem documents.

use certbridge_core::fsutil::Dir;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

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
            let mut f = open_log(path)?;
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

/// Opens the log for appending, relative to its directory and never through a symbolic link
/// or into a file with other hard links: the log's directory may be writable by others, and a
/// link planted as the log would have root append to any file. A missing directory is made
/// (mode 0750, set through its handle, not by name).
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    let (dir, name) = match Dir::open_parent(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)?;
            let (above, sub) = Dir::open_parent(parent)?;
            let dir = above.subdir(&sub)?;
            dir.set_mode(0o750)?;
            let name = path.file_name().unwrap_or_default().to_owned();
            (dir, name)
        }
        other => other?,
    };
    dir.open_append(&name, 0o640)
}
