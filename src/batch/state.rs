//! Small state files that must survive a power cut: written to a temporary file, synced, then
//! renamed over the old one (and the directory synced), so a reader finds the old or the new
//! content, never a mix. Used for the finish detectors and batch writers, once per change.
//! The directory is made only when the temporary file cannot be created without it, so a
//! write costs no `mkdir` or `stat`.
//!
//! Each file carries `"format"` (see `durable::format`; a file without it is format 1). A file
//! in a newer format is refused (`Newer`): its owner stays off and never writes over it.

use crate::durable::format;
pub(crate) use crate::durable::format::Newer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut v = serde_json::to_value(value).map_err(io::Error::other)?;
    format::stamp_json(&mut v);
    let text = serde_json::to_vec_pretty(&v).map_err(io::Error::other)?;
    let mut f = match File::create(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            File::create(&tmp)?
        }
        f => f?,
    };
    f.write_all(&text)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The stored value; `Ok(None)` when there is none or it cannot be read (logged), `Err` when
/// it is in a newer format (nothing is changed).
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Newer> {
    let Ok(text) = fs::read(path) else {
        return Ok(None);
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(&text);
    if let Ok(v) = &parsed {
        format::check_json(path, v)?;
    }
    match parsed.and_then(serde_json::from_value::<T>) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            log::error!(
                "{}: unreadable state ({e}); starting from a clean state",
                path.display()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct S {
        armed: bool,
    }

    #[test]
    fn files_carry_their_format_and_a_newer_one_is_refused_untouched() {
        let dir = std::env::temp_dir().join(format!(
            "dg-state-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let p = dir.join("m.json");
        // The first save makes the directory, the next one finds it.
        save(&p, &S { armed: false }).expect("save");
        save(&p, &S { armed: true }).expect("save");
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(&p).expect("read")).expect("json");
        assert_eq!(v["format"], 1);
        assert_eq!(load::<S>(&p), Ok(Some(S { armed: true })));
        // Written before formats were numbered: format 1.
        fs::write(&p, r#"{"armed": true}"#).expect("write");
        assert_eq!(load::<S>(&p), Ok(Some(S { armed: true })));
        // A newer gateway's file, even one this version could not parse anyway.
        for text in [
            r#"{"format": 2, "armed": true}"#,
            r#"{"format": 3, "armed": "maybe"}"#,
        ] {
            fs::write(&p, text).expect("write");
            let e = load::<S>(&p).expect_err("newer");
            assert_eq!(e.path, p);
            assert_eq!(fs::read_to_string(&p).ok().as_deref(), Some(text));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
