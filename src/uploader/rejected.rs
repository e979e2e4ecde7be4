//! `rejected.lp`: the points InfluxDB refused, each after a `# <unix ms> <reason>` comment
//! line, so they can be fixed and written again by hand. The file is capped: when an append
//! would take it past `max_bytes` it is renamed to `rejected.lp.1` (replacing the older one)
//! and a new one is started, so the two together never hold more than twice the cap.
//!
//! A new file starts with the comment line `HEADER`, which names its format (see
//! `durable::format`; a file without it is format 1). A file in a newer format is not appended
//! to, rotated or changed: `append` fails and the uploader logs it.

use crate::durable::format::{Newer, FORMAT};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The first line of a new file (format 1).
pub(crate) const HEADER: &str = "# dyeing-gateway rejected.lp format 1\n";
const HEADER_PREFIX: &str = "# dyeing-gateway rejected.lp format ";

/// The cap of `rejected.lp` used by the gateway.
pub(crate) const MAX_BYTES: u64 = 10 * 1024 * 1024;

pub(crate) struct RejectedFile {
    path: PathBuf,
    max_bytes: u64,
    /// The file's size, learnt at the first append.
    size: Option<u64>,
    /// The file's format was checked (at the first append).
    checked: bool,
}

impl RejectedFile {
    pub(crate) fn new(path: PathBuf, max_bytes: u64) -> RejectedFile {
        RejectedFile {
            path,
            max_bytes: max_bytes.max(HEADER.len() as u64 + 1),
            size: None,
            checked: false,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The rotated file beside it (`rejected.lp.1`).
    pub(crate) fn older(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Append `entry` (whole lines, each ending in `\n`), rotating first when it would not
    /// fit. An entry longer than the cap is cut to it at a line boundary where there is one.
    pub(crate) fn append(&mut self, entry: &str) -> std::io::Result<()> {
        if !self.checked {
            self.check_format()?;
            self.checked = true;
        }
        let mut entry = entry;
        let room = self.max_bytes - HEADER.len() as u64;
        if entry.len() as u64 > room {
            let mut at = room as usize;
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
        let text = if size == 0 {
            format!("{HEADER}{entry}")
        } else {
            entry.to_string()
        };
        f.write_all(text.as_bytes())?;
        self.size = Some(size + text.len() as u64);
        Ok(())
    }

    /// Refuse a file whose first line names a newer format.
    fn check_format(&self) -> std::io::Result<()> {
        let Ok(f) = File::open(&self.path) else {
            return Ok(());
        };
        let mut head = Vec::new();
        f.take(HEADER.len() as u64 + 20).read_to_end(&mut head)?;
        let head = String::from_utf8_lossy(&head);
        let Some(rest) = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(HEADER_PREFIX))
        else {
            return Ok(());
        };
        match rest.trim().parse::<u64>() {
            Ok(n) if n <= FORMAT => Ok(()),
            found => Err(Newer {
                path: self.path.clone(),
                found: found.ok(),
            }
            .into()),
        }
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

    #[test]
    fn the_file_names_its_format_and_a_newer_one_is_left_alone() {
        assert_eq!(HEADER, format!("{HEADER_PREFIX}{FORMAT}\n"));
        let dir = std::env::temp_dir().join(format!(
            "dg-rejected-fmt-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("rejected.lp");
        let mut f = RejectedFile::new(path.clone(), 1000);
        f.append("# 1 x\nm v=1 1\n").expect("append");
        f.append("# 2 x\nm v=2 2\n").expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("{HEADER}# 1 x\nm v=1 1\n# 2 x\nm v=2 2\n"));
        // A file from before the header (format 1) is appended to as it is.
        std::fs::write(&path, "# 1 x\nm v=1 1\n").expect("write");
        let mut f = RejectedFile::new(path.clone(), 1000);
        f.append("# 2 x\nm v=2 2\n").expect("append");
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .starts_with("# 1 x\n"));
        // A newer one is not touched, not even rotated.
        let newer = format!("{HEADER_PREFIX}2\n{}", "m v=1 1\n".repeat(200));
        std::fs::write(&path, &newer).expect("write");
        let mut f = RejectedFile::new(path.clone(), 1000);
        let e = f.append("# 3 x\nm v=3 3\n").expect_err("refused");
        assert!(e.to_string().contains("format 2"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).ok(), Some(newer));
        assert!(!f.older().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
