//! Is the wall clock right? A Raspberry Pi has no real-time clock: after a power cut it boots
//! with a wrong time (1970, or the last shutdown time restored by fake-hwclock) until NTP
//! syncs. No point may be stored with such a timestamp, so pollers ask `Clock::now_ms` for the
//! poll time and get `None` while the clock is not known to be right; the uploader holds those
//! points, with their monotonic time, and stamps them once the clock is synchronized.
//!
//! How synchronization is known (`clock.sync_check` in the config):
//! - `timesyncd`: the file `/run/systemd/timesync/synchronized` exists (systemd-timesyncd
//!   creates it on its first sync). Reading the kernel's `adjtimex` state would need the unit's
//!   `ProtectClock=` to be off, so the file is used.
//! - `file`: the same test on another path (`clock.sync_file`).
//! - `off`: trust the clock.
//! - `auto` (default): `timesyncd` when `/run/systemd/timesync` exists, else `off`.
//!
//! In every mode a time before `FLOOR_MS` (2026-01-01) is never trusted. The time helpers
//! (`unix_ms`, `wall_ms`) live here too, below everything that stamps.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z: no point from this gateway can be older than its release.
pub(crate) const FLOOR_MS: i64 = 1_767_225_600_000;

pub(crate) const TIMESYNCD_FILE: &str = "/run/systemd/timesync/synchronized";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncCheck {
    Off,
    File(PathBuf),
}

impl SyncCheck {
    /// `auto`: the timesyncd file when timesyncd runs here, else trust the clock.
    pub(crate) fn auto() -> SyncCheck {
        if std::path::Path::new("/run/systemd/timesync").is_dir() {
            SyncCheck::File(PathBuf::from(TIMESYNCD_FILE))
        } else {
            SyncCheck::Off
        }
    }
}

#[derive(Debug)]
pub struct Clock {
    check: SyncCheck,
    synced: AtomicBool,
}

/// Milliseconds since the Unix epoch (0 for a time before it).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn wall_ms() -> i64 {
    unix_ms(SystemTime::now())
}

impl Clock {
    pub fn new(check: SyncCheck) -> Clock {
        let c = Clock {
            check,
            synced: AtomicBool::new(false),
        };
        c.refresh();
        c
    }

    /// A clock that is always trusted (above the floor), for unit tests. Production code
    /// passes the clock it built from the config (`Clock::new`) to every constructor.
    #[cfg(test)]
    pub(crate) fn trusted() -> Clock {
        Clock::new(SyncCheck::Off)
    }

    /// Look again; returns whether the clock is now trusted. Called by the uploader.
    pub(crate) fn refresh(&self) -> bool {
        let ok = wall_ms() >= FLOOR_MS
            && match &self.check {
                SyncCheck::Off => true,
                SyncCheck::File(p) => p.exists(),
            };
        self.synced.store(ok, Ordering::Relaxed);
        ok
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The wall time in ms, or `None` while it is not trusted.
    pub(crate) fn now_ms(&self) -> Option<i64> {
        self.is_synced().then(wall_ms)
    }

    /// The wall time in ms and whether it is *not* trusted: for events that cannot wait for
    /// the clock (finish reports, confirmations), which carry the flag to the outbox.
    pub(crate) fn stamp(&self) -> (i64, bool) {
        match self.now_ms() {
            Some(t) => (t, false),
            None => (wall_ms(), true),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.check {
            SyncCheck::Off => "trusted (no synchronization check)".into(),
            SyncCheck::File(p) => format!("synchronized when {} exists", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sync_file_means_not_synchronized() {
        let p = std::env::temp_dir().join(format!("dg-sync-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let c = Clock::new(SyncCheck::File(p.clone()));
        assert!(!c.is_synced());
        assert_eq!(c.now_ms(), None);
        std::fs::write(&p, b"").expect("write");
        assert!(c.refresh());
        assert!(c.now_ms().is_some_and(|t| t >= FLOOR_MS));
        let _ = std::fs::remove_file(&p);
    }
}
