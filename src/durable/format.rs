//! Format versions of what the gateway keeps in its state directory, so that a gateway updated
//! (or rolled back) on the same data partition never misreads what another version wrote.
//!
//! - **Record logs** (`spool/`, `outbox/`): a file `FORMAT` in the directory holds the format
//!   number (`1\n`). A directory without it was written before formats were numbered and is
//!   format 1. `Log::open` checks it before touching anything and writes it when missing.
//! - **JSON state files** (`batch/*.json`, `finish/*.json`): a `"format"` field; missing means 1.
//! - **Audit log** (`audit.jsonl`): every line carries `"format"`; missing means 1.
//! - **`rejected.lp`**: a first comment line `# dyeing-gateway rejected.lp format 1`.
//!
//! A format newer than `FORMAT` is refused loudly and left exactly as it is: the part that
//! owns it does not start (the spool keeps points in memory, the outbox keeps reports in
//! memory, a machine's finish detection or batch writing is off) and says why in the log.
//!
//! Rules for changing a format (the previous release has to read what this one writes, since a
//! rollback hands it the same data partition): adding JSON fields that older versions may
//! ignore keeps the format number. Anything an older version would misread (a new record kind
//! in the outbox, a different encoding, a field whose meaning changes) takes a new number; and
//! because releases from before the numbering (up to ae5dee6) do not look at it, such a change
//! must also use a new file or directory name, so those releases find nothing rather than
//! something they misread.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The format this gateway reads and writes.
pub(crate) const FORMAT: u64 = 1;

/// The name of the marker file in a log directory.
pub(crate) const MARKER: &str = "FORMAT";

/// A state file or directory in a format this gateway does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Newer {
    pub path: PathBuf,
    /// The format found (`None`: the marker cannot be read as a number).
    pub found: Option<u64>,
}

impl fmt::Display for Newer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.found {
            Some(n) => write!(
                f,
                "{}: format {n}, written by a newer gateway (this one reads format {FORMAT}); left untouched",
                self.path.display()
            ),
            None => write!(
                f,
                "{}: unknown format marker (this one reads format {FORMAT}); left untouched",
                self.path.display()
            ),
        }
    }
}

impl std::error::Error for Newer {}

impl From<Newer> for io::Error {
    fn from(e: Newer) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The format of a log directory: `Ok` when this gateway can use it (no marker, or one at
/// most `FORMAT`). Reads only.
pub(crate) fn check_dir(dir: &Path) -> Result<u64, Newer> {
    let path = dir.join(MARKER);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(1);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n <= FORMAT => Ok(n),
        Ok(n) => Err(Newer {
            path,
            found: Some(n),
        }),
        Err(_) => Err(Newer { path, found: None }),
    }
}

/// Write the marker of the current format into `dir` when it has none (atomically: a
/// temporary file renamed into place).
pub(crate) fn mark_dir(dir: &Path) -> io::Result<()> {
    let path = dir.join(MARKER);
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join("FORMAT.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{FORMAT}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// The `"format"` of a JSON state value: missing means 1.
pub(crate) fn of_json(v: &serde_json::Value) -> Option<u64> {
    match v.get("format") {
        None => Some(1),
        Some(f) => f.as_u64(),
    }
}

/// Check a JSON state value read from `path`.
pub(crate) fn check_json(path: &Path, v: &serde_json::Value) -> Result<(), Newer> {
    match of_json(v) {
        Some(n) if n <= FORMAT => Ok(()),
        found => Err(Newer {
            path: path.to_path_buf(),
            found,
        }),
    }
}

/// Add `"format": FORMAT` to a JSON object (other values are left as they are).
pub(crate) fn stamp_json(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("format".into(), FORMAT.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dg-format-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_directory_without_marker_is_format_1_and_gets_one() {
        let d = tmp("mark");
        assert_eq!(check_dir(&d), Ok(1));
        mark_dir(&d).expect("mark");
        assert_eq!(
            fs::read_to_string(d.join(MARKER)).ok().as_deref(),
            Some("1\n")
        );
        assert_eq!(check_dir(&d), Ok(1));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_newer_or_unreadable_marker_is_refused_and_kept() {
        let d = tmp("newer");
        fs::write(d.join(MARKER), "2\n").expect("write");
        let e = check_dir(&d).expect_err("newer");
        assert_eq!(e.found, Some(2));
        assert!(e.to_string().contains("newer gateway"), "{e}");
        assert!(mark_dir(&d).is_ok());
        assert_eq!(
            fs::read_to_string(d.join(MARKER)).ok().as_deref(),
            Some("2\n")
        );
        fs::write(d.join(MARKER), "two").expect("write");
        assert_eq!(check_dir(&d).map_err(|e| e.found), Err(None));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn json_without_format_is_1_and_newer_is_refused() {
        let p = Path::new("x.json");
        assert!(check_json(p, &json!({"armed": true})).is_ok());
        assert!(check_json(p, &json!({"format": 1})).is_ok());
        assert_eq!(
            check_json(p, &json!({"format": 2})).map_err(|e| e.found),
            Err(Some(2))
        );
        assert_eq!(
            check_json(p, &json!({"format": "x"})).map_err(|e| e.found),
            Err(None)
        );
        let mut v = json!({"a": 1});
        stamp_json(&mut v);
        assert_eq!(v, json!({"a": 1, "format": 1}));
    }
}
