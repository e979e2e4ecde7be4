//! The audit log of writes to machines: one JSON line per write (or would-be write in shadow
//! mode, or refused write), appended and synced before the result is acted on. Lines are short
//! and written with O_APPEND, so several endpoint threads can share the file. Every line
//! carries `"format"` (see `durable::format`; lines without it are format 1): the gateway only
//! appends, so lines of different versions can follow each other and each says what it is.

use serde_json::Value;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

pub(crate) fn record(path: &Path, entry: &Value) {
    let result = (|| -> std::io::Result<()> {
        let open = || OpenOptions::new().create(true).append(true).open(path);
        // The directory is made only when it is missing: no mkdir per line.
        let mut f = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                open()?
            }
            f => f?,
        };
        let mut entry = entry.clone();
        crate::durable::format::stamp_json(&mut entry);
        let mut line = entry.to_string();
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_data()
    })();
    if let Err(e) = result {
        log::error!("audit log {}: {e}; entry: {entry}", path.display());
    }
}
