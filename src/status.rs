//! The shared status snapshot and thread liveness. Each thread owns and updates its own entry
//! (a poller its machines, the uploader its own); readers (the status page, `demo`'s summary,
//! the systemd watchdog) only look. There is no global: the board is created by the wiring
//! function and handed to the threads that need it.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lock, ignoring poisoning: a panicked writer leaves counters that are still worth showing.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct MachineStatus {
    pub name: String,
    pub endpoint: String,
    pub unit_id: u8,
    /// `None` until the first poll.
    pub online: Option<bool>,
    pub polls: u64,
    pub requests: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub last_error: Option<String>,
    pub last_ok_ms: Option<i64>,
    pub last_latency_ms: f64,
    pub points: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct UploaderStatus {
    pub sink: String,
    pub buffered: usize,
    pub points_written: u64,
    pub write_requests: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub last_result: String,
    pub last_ok_ms: Option<i64>,
    /// Points waiting on disk (the spool).
    pub spooled: u64,
    pub spool_problem: Option<String>,
    pub clock_synced: bool,
    /// Points held until the clock is synchronized.
    pub held_unstamped: usize,
    /// Held points dropped because too many piled up before the clock was synchronized.
    pub dropped_unstamped: u64,
}

#[derive(Default)]
pub struct Board {
    pub machines: Vec<Arc<Mutex<MachineStatus>>>,
    pub uploader: Arc<Mutex<UploaderStatus>>,
}

#[derive(Serialize)]
pub struct Snapshot {
    pub machines: Vec<MachineStatus>,
    pub uploader: UploaderStatus,
}

impl Board {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            machines: self.machines.iter().map(|m| lock(m).clone()).collect(),
            uploader: lock(&self.uploader).clone(),
        }
    }
}

/// One thread's check-in: the time its loop last turned.
pub struct Beat {
    pub name: String,
    last_ms: AtomicU64,
    start: Instant,
}

impl Beat {
    pub fn check_in(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Every thread's `Beat`. The watchdog pings systemd only while all are younger than a limit.
#[derive(Default)]
pub struct Liveness {
    beats: Mutex<Vec<Arc<Beat>>>,
}

impl Liveness {
    pub fn register(&self, name: &str) -> Arc<Beat> {
        let beat = Arc::new(Beat {
            name: name.to_string(),
            last_ms: AtomicU64::new(0),
            start: Instant::now(),
        });
        beat.check_in();
        lock(&self.beats).push(beat.clone());
        beat
    }

    /// Threads whose loop has not turned within `max_age`.
    pub fn stuck(&self, max_age: Duration) -> Vec<String> {
        lock(&self.beats)
            .iter()
            .filter(|b| b.age() > max_age)
            .map(|b| b.name.clone())
            .collect()
    }
}
