//! Where points wait for InfluxDB. `Buffer` is the interface the uploader uses; `MemoryBuffer`
//! keeps points in RAM (bounded: when full the oldest go, counted and logged). The durable
//! spool implements the same interface.

use std::collections::VecDeque;
use std::time::Instant;

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
}

pub struct MemoryBuffer {
    lines: VecDeque<String>,
    max: usize,
    dropped: u64,
}

impl MemoryBuffer {
    pub fn new(max: usize) -> Self {
        MemoryBuffer {
            lines: VecDeque::new(),
            max: max.max(1),
            dropped: 0,
        }
    }
}

impl Buffer for MemoryBuffer {
    fn push(&mut self, lines: Vec<String>) {
        self.lines.extend(lines);
        let over = self.lines.len().saturating_sub(self.max);
        if over > 0 {
            if self.dropped == 0 || (self.dropped + over as u64) / 10_000 != self.dropped / 10_000 {
                log::error!(
                    "point buffer full ({} points): dropping the oldest, {} dropped so far",
                    self.max,
                    self.dropped + over as u64
                );
            }
            self.lines.drain(..over);
            self.dropped += over as u64;
        }
    }

    fn peek(&mut self, n: usize) -> &[String] {
        let n = n.min(self.lines.len());
        &self.lines.make_contiguous()[..n]
    }

    fn ack(&mut self, n: usize) {
        let n = n.min(self.lines.len());
        self.lines.drain(..n);
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
}
