//! The audit log of writes to machines: one JSON line per write (or would-be write in shadow
//! mode, or refused write), appended and synced before the result is acted on. Lines are short
//! and written with O_APPEND, so several endpoint threads can share the file.

use serde_json::Value;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

pub fn record(path: &Path, entry: &Value) {
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        let mut line = entry.to_string();
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_data()
    })();
    if let Err(e) = result {
        log::error!("audit log {}: {e}; entry: {entry}", path.display());
    }
}
