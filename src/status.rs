//! The shared status snapshot, its types, and thread liveness. Each thread owns and updates
//! its own entry (a poller its machines, the uploader and the outbox theirs; `update-status`
//! its `UpdateStatus` cell); readers (the status page, `demo`'s summary, the systemd watchdog)
//! only look. There is no global: the board is created by the wiring function and handed to
//! the threads that need it. A poller writes its machines' entries through
//! `machine::MachineEntry`, from the facts of each poll.

pub(crate) mod machine;

use crate::clock::unix_ms;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Lock, ignoring poisoning: a panicked writer leaves counters that are still worth showing.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// The last value read of every register (by name).
    pub values: BTreeMap<String, serde_json::Value>,
    pub process_code: Option<i64>,
    pub batch: Option<String>,
    /// Recent (time ms, temperature, level) samples for the sparklines, one per 10 s.
    pub history: std::collections::VecDeque<(i64, Option<f64>, Option<f64>)>,
    /// Poll duration histogram: counts per upper bound in `LATENCY_BUCKETS`, then +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_s: f64,
}

/// Upper bounds (seconds) of the poll duration histogram.
pub(crate) const LATENCY_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How many sparkline samples are kept (10 minutes at one per 10 s).
pub(crate) const HISTORY_LEN: usize = 60;

impl MachineStatus {
    pub(crate) fn observe_latency(&mut self, seconds: f64) {
        if self.latency_buckets.len() != LATENCY_BUCKETS.len() + 1 {
            self.latency_buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i] += 1;
        self.latency_sum_s += seconds;
    }
}

/// The last configuration reload, for the status page.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct ReloadStatus {
    pub last_reload_ms: Option<i64>,
    pub last_error: Option<String>,
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

/// What the status page shows of the outbox (written by the outbox thread).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStatus {
    pub pending: usize,
    pub delivered: u64,
    pub set_aside: u64,
    pub last_result: String,
}

/// What the status page shows of the A/B root slots (written by the `update-status` thread,
/// read from RAUC).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub(crate) struct SlotStatus {
    pub name: String,
    pub bootname: Option<String>,
    /// `booted`, `inactive` or `active` (RAUC's slot state).
    pub state: String,
    /// `good` or `bad`, when the bootloader backend tells.
    pub boot_status: Option<String>,
    /// The version of the bundle installed into the slot.
    pub version: Option<String>,
    /// When that bundle was installed (ISO 8601, the device's clock at the time).
    pub installed: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub(crate) struct UpdateStatus {
    /// The root slot this system runs from (`rootfs.1`), when RAUC knows.
    pub booted: Option<String>,
    /// The slot the bootloader will try first at the next boot.
    pub primary: Option<String>,
    /// Root slots only (class `rootfs`), in RAUC's order.
    pub slots: Vec<SlotStatus>,
    /// An update was installed into the other slot after the booted one and failed to boot
    /// or to prove itself healthy: the bootloader came back to this slot.
    pub rolled_back: bool,
    /// When RAUC last answered (ms since the epoch).
    pub checked_ms: i64,
    /// Why the last try failed, if it did (the previous answer is kept).
    pub error: Option<String>,
}

impl UpdateStatus {
    pub(crate) fn booted_slot(&self) -> Option<&SlotStatus> {
        let name = self.booted.as_deref()?;
        self.slots.iter().find(|s| s.name == name)
    }

    /// The root slot that is not booted (the one an install writes).
    pub(crate) fn other_slot(&self) -> Option<&SlotStatus> {
        let booted = self.booted.as_deref()?;
        self.slots.iter().find(|s| s.name != booted)
    }
}

#[derive(Default)]
pub struct Board {
    pub machines: Vec<Arc<Mutex<MachineStatus>>>,
    pub uploader: Arc<Mutex<UploaderStatus>>,
    pub outbox: Arc<Mutex<OutboxStatus>>,
}

#[derive(Serialize)]
pub(crate) struct Snapshot {
    pub version: &'static str,
    pub time_ms: i64,
    pub machines: Vec<MachineStatus>,
    pub uploader: UploaderStatus,
    pub outbox: OutboxStatus,
    pub reload: ReloadStatus,
    /// The A/B root slots as RAUC reports them; absent without RAUC (only `version` then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,
}

impl Board {
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            time_ms: unix_ms(SystemTime::now()),
            machines: self.machines.iter().map(|m| lock(m).clone()).collect(),
            uploader: lock(&self.uploader).clone(),
            outbox: lock(&self.outbox).clone(),
            reload: ReloadStatus::default(),
            update: None,
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
    pub(crate) fn check_in(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(crate) fn age(&self) -> Duration {
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
    pub(crate) fn stuck(&self, max_age: Duration) -> Vec<String> {
        lock(&self.beats)
            .iter()
            .filter(|b| b.age() > max_age)
            .map(|b| b.name.clone())
            .collect()
    }
}
