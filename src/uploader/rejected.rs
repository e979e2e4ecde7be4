//! `rejected.lp`: the points InfluxDB refused, each after a `# <unix ms> <reason>` comment
//! line, so they can be fixed and written again by hand. The file is capped: when an append
//! would take it past `max_bytes` it is renamed to `rejected.lp.1` (replacing the older one)
//! and a new one is started, so the two together never hold more than twice the cap.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The cap of `rejected.lp` used by the gateway.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;

pub struct RejectedFile {
    path: PathBuf,
    max_bytes: u64,
    /// The file's size, learnt at the first append.
    size: Option<u64>,
}

impl RejectedFile {
    pub fn new(path: PathBuf, max_bytes: u64) -> RejectedFile {
        RejectedFile {
            path,
            max_bytes: max_bytes.max(1),
            size: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotated file beside it (`rejected.lp.1`).
    pub fn older(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Append `entry` (whole lines, each ending in `\n`), rotating first when it would not
    /// fit. An entry longer than the cap is cut to it at a line boundary where there is one.
    pub fn append(&mut self, entry: &str) -> std::io::Result<()> {
        let mut entry = entry;
        if entry.len() as u64 > self.max_bytes {
            let mut at = self.max_bytes as usize;
            while !entry.is_char_boundary(at) {
                at -= 1;
            }
            let cut = &entry[..at];
            entry = cut.rfind('\n').map_or(cut, |n| &cut[..=n]);
        }
        let size = match self.size {
            Some(s) => s,
            None => std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        };
        let size = if size > 0 && size + entry.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, self.older())?;
            0
        } else {
            size
        };
        self.size = None;
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(entry.as_bytes())?;
        self.size = Some(size + entry.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_capped_and_rotated_once() {
        let dir = std::env::temp_dir().join(format!(
            "dg-rejected-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut f = RejectedFile::new(dir.join("rejected.lp"), 1000);
        let entry = format!("# 1 field type conflict\n{}\n", "m v=1.5 1".repeat(5));
        let mut written = 0;
        for _ in 0..200 {
            f.append(&entry).expect("append");
            written += entry.len();
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(written > 10_000);
        assert!(size(f.path()) <= 1000, "{}", size(f.path()));
        assert!(size(&f.older()) <= 1000 && size(&f.older()) > 900);
        // Every file holds whole entries.
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert!(text.starts_with("# ") && text.ends_with("1\n"), "{text}");
        // An entry larger than the cap is cut to it on a line boundary.
        f.append(&entry.repeat(30)).expect("append");
        assert!(size(f.path()) <= 1000);
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert!(text.ends_with('\n'));
        // A new writer finds the size on disk.
        let mut g = RejectedFile::new(dir.join("rejected.lp"), 1000);
        g.append(&entry).expect("append");
        assert!(size(g.path()) <= 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
