//! The durable spool: a `Buffer` that keeps points in memory while InfluxDB takes them and
//! spills to the durable log on the state directory only what could not be delivered within
//! the fsync window. In normal operation nothing is written to the SD card; during an outage
//! every point older than the window is on disk and synced, so a crash or power cut loses at
//! most the last window of points. Order is kept: everything on disk is older than everything
//! in memory, and replay reads the disk first.
//!
//! When the state directory cannot be written (read-only, disk full), the spool says so,
//! keeps what it can in memory (bounded; the oldest go, counted) and retries the disk later.

use super::buffer::Buffer;
use crate::durable::{Log, LogOptions};
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct SpoolOptions {
    pub dir: PathBuf,
    pub window: Duration,
    pub max_bytes: u64,
    /// Lines kept in memory when the disk cannot be used.
    pub max_memory: usize,
}

pub struct Spool {
    opts: SpoolOptions,
    log: Option<Log>,
    mem: VecDeque<(Instant, String)>,
    /// Records read from disk, starting at `cache_start`.
    cache: VecDeque<String>,
    cache_start: u64,
    peek_buf: Vec<String>,
    dropped_mem: u64,
    /// Log drops already reported.
    dropped_logged: u64,
    last_sync: Instant,
    last_ack_persist: Instant,
    problem: Option<String>,
    reopen_at: Instant,
}

impl Spool {
    /// Open the spool, replaying what a previous run left. A state directory that cannot be
    /// used is not fatal: the spool runs in memory and says why.
    pub fn open(opts: SpoolOptions) -> Spool {
        let mut s = Spool {
            opts,
            log: None,
            mem: VecDeque::new(),
            cache: VecDeque::new(),
            cache_start: 0,
            peek_buf: Vec::new(),
            dropped_mem: 0,
            dropped_logged: 0,
            last_sync: Instant::now(),
            last_ack_persist: Instant::now(),
            problem: None,
            reopen_at: Instant::now(),
        };
        s.try_open();
        s
    }

    fn try_open(&mut self) {
        let opts = LogOptions {
            segment_bytes: (self.opts.max_bytes / 16).clamp(64 << 10, 16 << 20),
            max_bytes: self.opts.max_bytes,
        };
        match Log::open(&self.opts.dir, opts) {
            Ok((log, rec)) => {
                if rec.pending > 0 || rec.torn_bytes > 0 {
                    log::info!(
                        "spool {}: {} points waiting from before the restart{}",
                        self.opts.dir.display(),
                        rec.pending,
                        if rec.torn_bytes > 0 {
                            format!(
                                "; {} bytes of a torn tail (power cut mid-write) cut off",
                                rec.torn_bytes
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                if self.problem.take().is_some() {
                    log::info!("spool {}: usable again", self.opts.dir.display());
                }
                self.cache.clear();
                self.cache_start = log.acked();
                self.log = Some(log);
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: io::Error) {
        let text = format!(
            "spool {} unusable: {e}; keeping points in memory (at most {})",
            self.opts.dir.display(),
            self.opts.max_memory
        );
        if self.problem.as_deref() != Some(text.as_str()) {
            log::error!("{text}");
            self.problem = Some(text);
        }
        self.log = None;
        self.reopen_at = Instant::now() + Duration::from_secs(30);
    }

    fn disk_pending(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.pending())
    }

    /// Drop cached records the log no longer has (acknowledged, or dropped by its bound).
    fn trim_cache(&mut self) {
        let acked = self.log.as_ref().map_or(self.cache_start, |l| l.acked());
        if acked > self.cache_start {
            let n = ((acked - self.cache_start) as usize).min(self.cache.len());
            self.cache.drain(..n);
            self.cache_start = acked;
        }
    }

    /// Move lines older than `age` to disk and sync.
    fn spill(&mut self, age: Duration) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut wrote = false;
        let mut err = None;
        while let Some((t, _)) = self.mem.front() {
            if now.duration_since(*t) < age {
                break;
            }
            let Some((_, line)) = self.mem.front() else {
                break;
            };
            if let Err(e) = log.append(line.as_bytes()) {
                err = Some(e);
                break;
            }
            self.mem.pop_front();
            wrote = true;
        }
        if wrote && err.is_none() {
            if let Err(e) = log.sync() {
                err = Some(e);
            }
            self.last_sync = now;
        }
        if let Some(e) = err {
            self.fail(e);
        }
        self.trim_cache();
    }

    /// Bytes written to the spool since start (flash wear).
    pub fn bytes_written(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.bytes_written)
    }
}

impl Buffer for Spool {
    fn push(&mut self, lines: Vec<String>) {
        let now = Instant::now();
        self.mem.extend(lines.into_iter().map(|l| (now, l)));
        if self.log.is_none() {
            let over = self.mem.len().saturating_sub(self.opts.max_memory);
            if over > 0 {
                self.mem.drain(..over);
                self.dropped_mem += over as u64;
                if self.dropped_mem == over as u64 || self.dropped_mem % 10_000 < over as u64 {
                    log::error!(
                        "spool unusable and memory full: {} points dropped so far",
                        self.dropped_mem
                    );
                }
            }
        }
    }

    fn peek(&mut self, n: usize) -> &[String] {
        self.trim_cache();
        let from_disk = (self.disk_pending() as usize).min(n);
        if self.cache.len() < from_disk {
            if let Some(log) = self.log.as_mut() {
                let mut out = Vec::new();
                let next = self.cache_start + self.cache.len() as u64;
                match log.read(next, from_disk - self.cache.len(), &mut out) {
                    Ok(()) => self.cache.extend(
                        out.into_iter()
                            .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    ),
                    Err(e) => log::error!("spool: {e}"),
                }
            }
        }
        self.peek_buf.clear();
        self.peek_buf
            .extend(self.cache.iter().take(from_disk).cloned());
        let rest = n - self.peek_buf.len().min(n);
        self.peek_buf
            .extend(self.mem.iter().take(rest).map(|(_, l)| l.clone()));
        &self.peek_buf
    }

    fn ack(&mut self, n: usize) {
        let k = (self.disk_pending() as usize).min(n);
        if k > 0 {
            if let Some(log) = self.log.as_mut() {
                let to = log.acked() + k as u64;
                if let Err(e) = log.ack(to) {
                    log::error!("spool: cannot delete delivered segments: {e}");
                }
            }
            self.trim_cache();
        }
        let m = (n - k).min(self.mem.len());
        self.mem.drain(..m);
    }

    fn len(&self) -> usize {
        self.disk_pending() as usize + self.mem.len()
    }

    fn dropped(&self) -> u64 {
        self.dropped_mem + self.log.as_ref().map_or(0, |l| l.dropped)
    }

    fn maintain(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let dropped = self.log.as_ref().map_or(0, |l| l.dropped);
        if dropped > self.dropped_logged {
            log::error!(
                "spool {} full ({} MB): the oldest points were dropped, {dropped} so far",
                self.opts.dir.display(),
                self.opts.max_bytes >> 20
            );
            self.dropped_logged = dropped;
        }
        if self.log.is_none() && now >= self.reopen_at {
            self.try_open();
        }
        // Spill in batches: once the oldest line is a window old, everything older than half
        // a window goes, so the disk sees about two syncs per window during an outage.
        let window = self.opts.window;
        if self
            .mem
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            self.spill(window / 2);
        }
        if now.duration_since(self.last_ack_persist) >= window {
            if let Some(log) = self.log.as_mut() {
                if let Err(e) = log.persist_ack() {
                    log::warn!("spool: cannot record the replay position: {e}");
                }
            }
            self.last_ack_persist = now;
        }
        let mut next = self.mem.front().map(|(t, _)| *t + window);
        if self.log.is_none() && self.problem.is_some() {
            next = Some(next.map_or(self.reopen_at, |n| n.min(self.reopen_at)));
        }
        next
    }

    fn close(&mut self) {
        self.spill(Duration::ZERO);
        if let Some(log) = self.log.as_mut() {
            let _ = log.sync();
            let _ = log.persist_ack();
        }
        if !self.mem.is_empty() {
            log::error!(
                "{} points could not be saved to the spool on shutdown",
                self.mem.len()
            );
        }
    }

    fn on_disk(&self) -> u64 {
        self.disk_pending()
    }

    fn problem(&self) -> Option<String> {
        self.problem.clone()
    }
}

#[cfg(test)]
mod tests;
