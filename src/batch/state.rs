//! Small state files that must survive a power cut: written to a temporary file, synced, then
//! renamed over the old one (and the directory synced), so a reader finds the old or the new
//! content, never a mix. Used for the finish detectors and batch writers, once per change.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

pub fn save<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let mut f = File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The stored value, or `None` when there is none or it cannot be read (logged).
pub fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            log::error!(
                "{}: unreadable state ({e}); starting from a clean state",
                path.display()
            );
            None
        }
    }
}

/// A file name for a machine name (anything but letters, digits, `-`, `_` becomes `_`).
/// Two names can map to one file; config validation refuses such pairs of machines.
pub fn file_name(machine: &str) -> String {
    machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
