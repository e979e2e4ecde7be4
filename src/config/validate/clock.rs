//! `$.clock`: how the wall clock is known to be synchronized, and the bounds of the points
//! held while it is not.

use super::{mebibytes, Check};
use crate::config::raw::RawClock;
use crate::config::ClockSettings;

pub(super) fn validate_clock(c: &mut Check, r: &RawClock) -> ClockSettings {
    use crate::clock::{SyncCheck, TIMESYNCD_FILE};
    let check = match (r.sync_check.as_deref().unwrap_or("auto"), &r.sync_file) {
        ("auto", None) => SyncCheck::auto(),
        ("timesyncd", None) => SyncCheck::File(TIMESYNCD_FILE.into()),
        ("off", None) => SyncCheck::Off,
        ("file", Some(f)) if !f.is_empty() => SyncCheck::File(f.into()),
        ("file", _) => {
            c.err(
                "$.clock.sync_file",
                "missing (sync_check `file` needs a path)",
            );
            SyncCheck::Off
        }
        ("auto" | "timesyncd" | "off", Some(_)) => {
            c.err("$.clock.sync_file", "only used with sync_check `file`");
            SyncCheck::Off
        }
        (other, _) => {
            c.err(
                "$.clock.sync_check",
                format!("unknown check `{other}` (expected auto, timesyncd, file or off)"),
            );
            SyncCheck::Off
        }
    };
    ClockSettings {
        check,
        hold_max_points: r.hold_max_points.unwrap_or(usize::MAX),
        hold_max_bytes: mebibytes(
            c,
            "$.clock.hold_max_mb",
            r.hold_max_mb,
            crate::uploader::buffer::DEFAULT_HOLD_BYTES,
        ),
    }
}
