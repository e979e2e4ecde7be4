//! Where points wait for InfluxDB. `Buffer` is the interface the uploader uses; `MemoryBuffer`
//! keeps points in RAM (bounded in bytes, `point_bytes`, and optionally in points: when full
//! the oldest go, counted and logged). The durable spool implements the same interface.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Memory a point costs beyond its line's bytes: the `String` and its slot in a queue (with
/// the queue's spare capacity) and the allocator's own overhead. Measured: about 190 bytes
/// per point for 85-byte lines.
pub(crate) const POINT_OVERHEAD: usize = 104;

/// Default bound of the points waiting in memory for InfluxDB (`influxdb.buffer_max_mb`).
pub(crate) const DEFAULT_BUFFER_BYTES: usize = 12 << 20;

/// Default bound of the points held until the clock is synchronized (`clock.hold_max_mb`).
/// With `DEFAULT_BUFFER_BYTES`, 16 MiB: well inside the unit's `MemoryMax=64M`.
pub(crate) const DEFAULT_HOLD_BYTES: usize = 4 << 20;

/// What one line costs in memory, for the byte bounds.
pub(crate) fn point_bytes(line: &str) -> usize {
    line.len() + POINT_OVERHEAD
}

pub trait Buffer: Send {
    /// Append the lines of one poll, in order.
    fn push(&mut self, lines: Vec<String>);
    /// The oldest `n` (or fewer) lines, without removing them.
    fn peek(&mut self, n: usize) -> &[String];
    /// Remove the oldest `n` lines: they were delivered or set aside.
    fn ack(&mut self, n: usize);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Lines dropped because the buffer was full, since the start.
    fn dropped(&self) -> u64;
    /// Housekeeping (the spool spills old lines to disk and syncs); returns when it is next due.
    fn maintain(&mut self) -> Option<Instant> {
        None
    }
    /// Shutdown: make what is held durable.
    fn close(&mut self) {}
    /// Lines kept on disk.
    fn on_disk(&self) -> u64 {
        0
    }
    /// Why the buffer cannot keep points durably, if it cannot.
    fn problem(&self) -> Option<String> {
        None
    }
    /// How old a line may get before it should be on its way to InfluxDB: the spool writes
    /// lines a window old to disk, so the uploader sends the oldest by half a window (or by
    /// its flush interval, if shorter). `None`: no limit.
    fn deliver_within(&self) -> Option<Duration> {
        None
    }
}

pub struct MemoryBuffer {
    lines: VecDeque<String>,
    max: usize,
    max_bytes: usize,
    bytes: usize,
    dropped: u64,
}

impl MemoryBuffer {
    /// At most `max` points and `DEFAULT_BUFFER_BYTES`.
    pub fn new(max: usize) -> Self {
        MemoryBuffer {
            lines: VecDeque::new(),
            max: max.max(1),
            max_bytes: DEFAULT_BUFFER_BYTES,
            bytes: 0,
            dropped: 0,
        }
    }

    /// Bound the bytes held (`point_bytes`) instead of the default.
    #[cfg(test)]
    pub(crate) fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    fn pop(&mut self, n: usize) {
        let n = n.min(self.lines.len());
        for l in self.lines.drain(..n) {
            self.bytes -= point_bytes(&l);
        }
    }
}

impl Buffer for MemoryBuffer {
    fn push(&mut self, lines: Vec<String>) {
        self.bytes += lines.iter().map(|l| point_bytes(l)).sum::<usize>();
        self.lines.extend(lines);
        let (mut bytes, mut len, mut over) = (self.bytes, self.lines.len(), 0);
        while len > self.max || bytes > self.max_bytes {
            let Some(l) = self.lines.get(over) else {
                break;
            };
            bytes -= point_bytes(l);
            len -= 1;
            over += 1;
        }
        if over > 0 {
            if self.dropped == 0 || (self.dropped + over as u64) / 10_000 != self.dropped / 10_000 {
                log::error!(
                    "point buffer full ({} points, {} MiB): dropping the oldest, {} dropped so far",
                    self.max,
                    self.max_bytes >> 20,
                    self.dropped + over as u64
                );
            }
            self.pop(over);
            self.dropped += over as u64;
        }
    }

    fn peek(&mut self, n: usize) -> &[String] {
        let n = n.min(self.lines.len());
        &self.lines.make_contiguous()[..n]
    }

    fn ack(&mut self, n: usize) {
        self.pop(n);
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_drops_oldest_when_full() {
        let mut b = MemoryBuffer::new(3);
        b.push(vec!["a".into(), "b".into()]);
        b.push(vec!["c".into(), "d".into()]);
        assert_eq!(b.peek(10), ["b", "c", "d"]);
        assert_eq!(b.dropped(), 1);
        b.ack(2);
        assert_eq!(b.peek(10), ["d"]);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest() {
        let line = "x".repeat(100);
        let mut b = MemoryBuffer::new(usize::MAX).with_max_bytes(10 * point_bytes(&line));
        b.push(vec![line.clone(); 25]);
        assert_eq!(b.len(), 10);
        assert_eq!(b.dropped(), 15);
        b.ack(4);
        b.push(vec![line; 4]);
        assert_eq!(b.len(), 10);
        assert_eq!(b.dropped(), 15);
    }
}
