//! The batch workflow: finished batches reported once to the plant API (`finish`, `outbox`),
//! new batches fetched from it (`fetch`) and written into the HMIs safely (`writer`), every
//! write recorded (`audit`). State that must survive restarts is kept in small JSON files
//! written atomically (`state`), only when it changes.
//!
//! Who does what: the endpoint owner thread (`poller`) runs the finish detector and the batch
//! writer of each of its machines, because only it may touch the device; the `outbox` thread
//! owns the durable outbox and every POST; the `fetch` thread only GETs and hands orders to
//! the owning poller over its command channel. REST threads never touch a device.

pub(crate) mod audit;
pub mod fetch;
pub(crate) mod finish;
pub mod outbox;
pub(crate) mod state;
pub(crate) mod writer;

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// A finished batch, reported once under `id` (the `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishEvent {
    pub id: String,
    pub machine: String,
    pub batch: String,
    pub code: i64,
    pub time_ms: i64,
    /// The clock was not synchronized at `time_ms`: the outbox restamps it (see `outbox`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unsynced: bool,
    /// When it happened on this process's monotonic clock; not stored, so `None` after a
    /// restart.
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// A confirmation that a batch was written into a machine, posted once under `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub key: String,
    pub machine: String,
    pub batch: String,
    pub entry_id: Option<String>,
    pub time_ms: i64,
    /// As for `FinishEvent`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unsynced: bool,
    #[serde(skip)]
    pub at: Option<Instant>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A machine as the threads name it to each other: its index in `Config::machines` (the
/// status board's `machines` follow the same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MachineId(pub usize);

/// What the outbox is asked to deliver; `machine` lets the outbox tell the owning poller once
/// the item is on disk.
#[derive(Debug, Clone)]
pub(crate) enum OutboxItem {
    Finish {
        machine: MachineId,
        event: FinishEvent,
    },
    Confirm {
        machine: MachineId,
        confirmation: Confirmation,
    },
}

/// A new batch for a machine, from the API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchOrder {
    pub machine: MachineId,
    pub name: String,
    pub entry_id: Option<String>,
}

/// Commands to the thread that owns a machine's endpoint (its poller): the only way the batch
/// workflow's other threads reach a machine.
#[derive(Debug, Clone)]
pub(crate) enum OwnerCommand {
    /// Write this batch into the machine (after every safety check).
    Write(BatchOrder),
    /// The outbox has stored item `id` of machine `machine` durably.
    Persisted { machine: MachineId, id: String },
    /// The API's latest answer lists no batch for this machine.
    NotListed { machine: MachineId },
}

/// The sending side of an owner's command channel. An owner that waits on its sockets rather
/// than on the channel (`poller::mux`) gives a ring, called after each command is queued.
#[derive(Clone)]
pub(crate) struct OwnerTx {
    tx: crossbeam_channel::Sender<OwnerCommand>,
    ring: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl OwnerTx {
    pub(crate) fn new(
        tx: crossbeam_channel::Sender<OwnerCommand>,
        ring: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    ) -> Self {
        OwnerTx { tx, ring }
    }

    /// Queue a command (waiting at most `timeout` for room), then wake the owner.
    pub(crate) fn send_timeout(
        &self,
        cmd: OwnerCommand,
        timeout: std::time::Duration,
    ) -> Result<(), crossbeam_channel::SendTimeoutError<OwnerCommand>> {
        self.tx.send_timeout(cmd, timeout)?;
        if let Some(ring) = &self.ring {
            ring();
        }
        Ok(())
    }
}

/// A random identifier in the UUID v4 layout.
pub fn new_id() -> String {
    let v = fastrand::u128(..);
    let v = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// RFC 3339 UTC time of `ms` since the epoch, for API bodies.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_777_187_224), "2026-11-27T10:59:47.224Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ids_look_like_uuid_v4_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
