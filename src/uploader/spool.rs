//! The durable spool: a `Buffer` that keeps points in memory while InfluxDB takes them and
//! spills to the durable log on the state directory only what could not be delivered within
//! the fsync window. In normal operation nothing is written to the SD card; during an outage
//! every point older than the window is on disk and synced, so a crash or power cut loses at
//! most the last window of points. Order is kept: everything on disk is older than everything
//! in memory, and replay reads the disk first.
//!
//! Delivery reads the disk in order; a record that cannot be read (damaged on disk) is skipped
//! by the log, counted as dropped and logged once. `ack(n)` acknowledges exactly the records
//! `peek` handed out (by seq, remembered at `peek`), never more, even when memory lines were
//! spilled to disk while the request was out.
//!
//! Memory is bounded in bytes (`max_memory_bytes`, `buffer::point_bytes`): past it, lines go
//! to disk before the window is over. When the state directory cannot be written (read-only,
//! disk full), the spool says so, keeps what it can in memory (within the same bound; the
//! oldest go, counted) and retries the disk every 30 s. A failed write or sync loses nothing:
//! lines leave memory only once synced, and the log takes back what it had buffered; the log
//! stays open, so what is already on disk is still delivered and counted as spooled.

use super::buffer::{point_bytes, Buffer};
use crate::durable::{Log, LogOptions};
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct SpoolOptions {
    pub dir: PathBuf,
    pub window: Duration,
    pub max_bytes: u64,
    /// Most lines kept in memory (deprecated count bound; `usize::MAX` for none).
    pub max_memory: usize,
    /// Most bytes of lines kept in memory (`buffer::point_bytes`). Beyond it the lines go to
    /// disk early; when the disk cannot be used the oldest are dropped and counted.
    pub max_memory_bytes: usize,
}

/// The lines of the last `peek`: first records from disk, then lines from memory.
#[derive(Default)]
struct Inflight {
    /// Seqs of the disk records handed out.
    disk: Vec<u64>,
    /// When the peek reached memory: every disk record below this seq was handed out or
    /// skipped.
    disk_end: Option<u64>,
    /// Id (see `mem_popped`) of the first memory line handed out, and how many.
    mem_first: u64,
    mem_count: usize,
    /// Memory lines spilled since the peek: (first id, first seq, count).
    spilled: Vec<(u64, u64, usize)>,
}

impl SpoolOptions {
    /// The defaults of the configuration, for tests.
    #[cfg(test)]
    pub(crate) fn defaults_for_test() -> SpoolOptions {
        SpoolOptions {
            dir: PathBuf::new(),
            window: Duration::from_secs(1),
            max_bytes: 1 << 30,
            max_memory: usize::MAX,
            max_memory_bytes: super::buffer::DEFAULT_BUFFER_BYTES,
        }
    }
}

pub struct Spool {
    opts: SpoolOptions,
    log: Option<Log>,
    mem: VecDeque<(Instant, String)>,
    /// Lines ever removed from the front of `mem` (spilled, delivered or dropped): the id of
    /// `mem.front()`.
    mem_popped: u64,
    /// `point_bytes` of the lines in `mem`.
    mem_bytes: usize,
    /// Records read from disk, with their seqs, in order; all at or above the log's `acked`.
    cache: VecDeque<(u64, String)>,
    /// The next seq to read from the log: every record below it is in `cache`, acknowledged,
    /// or was skipped as unreadable.
    read_next: u64,
    peek_buf: Vec<String>,
    /// What the last `peek` handed out, for `ack`.
    inflight: Inflight,
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
            mem_popped: 0,
            mem_bytes: 0,
            cache: VecDeque::new(),
            read_next: 0,
            peek_buf: Vec::new(),
            inflight: Inflight::default(),
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
                self.read_next = log.acked();
                self.log = Some(log);
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: io::Error) {
        let text = format!(
            "spool {} unusable: {e}; keeping points in memory (at most {} MiB)",
            self.opts.dir.display(),
            self.opts.max_memory_bytes >> 20
        );
        if self.problem.as_deref() != Some(text.as_str()) {
            log::error!("{text}");
            self.problem = Some(text);
        }
        self.log = None;
        self.reopen_at = Instant::now() + Duration::from_secs(30);
    }

    /// Records on disk still to deliver: read into the cache, or not read yet (records
    /// already skipped as unreadable are not counted).
    fn disk_pending(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| {
            self.cache.len() as u64 + l.next_seq().saturating_sub(self.read_next.max(l.acked()))
        })
    }

    /// Drop cached records the log no longer has (acknowledged, or dropped by its bound).
    fn trim_cache(&mut self) {
        let Some(acked) = self.log.as_ref().map(|l| l.acked()) else {
            return;
        };
        while self.cache.front().is_some_and(|(seq, _)| *seq < acked) {
            self.cache.pop_front();
        }
        self.read_next = self.read_next.max(acked);
    }

    /// Remove `n` lines from the front of memory.
    fn pop_mem(&mut self, n: usize) {
        let n = n.min(self.mem.len());
        for (_, l) in self.mem.drain(..n) {
            self.mem_bytes -= point_bytes(&l);
        }
        self.mem_popped += n as u64;
    }

    /// Move lines older than `age` to disk and sync. Lines leave memory only once the sync
    /// succeeded; on a write error the log takes back what it had buffered (see
    /// `durable::log`), so nothing is lost or written twice, and the disk is tried again
    /// after 30 s (`force`: now, on shutdown).
    fn spill(&mut self, age: Duration, force: bool) {
        let now = Instant::now();
        if self.problem.is_some() && now < self.reopen_at && !force {
            return;
        }
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let mut wrote = 0;
        let mut first_seq = None;
        let mut result = Ok(());
        while let Some((t, line)) = self.mem.get(wrote) {
            if now.duration_since(*t) < age {
                break;
            }
            match log.append(line.as_bytes()) {
                Ok(seq) => {
                    first_seq.get_or_insert(seq);
                    wrote += 1;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if wrote > 0 && result.is_ok() {
            result = log.sync();
            self.last_sync = now;
        }
        match result {
            Ok(()) => {
                if let Some(seq) = first_seq {
                    self.inflight.spilled.push((self.mem_popped, seq, wrote));
                }
                self.pop_mem(wrote);
                if wrote == 0 {
                    // Nothing was there to try: try again later.
                    self.reopen_at = now + Duration::from_secs(30);
                } else if self.problem.take().is_some() {
                    log::info!("spool {}: writable again", self.opts.dir.display());
                }
            }
            Err(e) => self.write_failed(e),
        }
        self.trim_cache();
    }

    /// The log could not be written (a full disk): it is kept for delivering what it holds,
    /// new points stay in memory, and the disk is tried again later.
    fn write_failed(&mut self, e: io::Error) {
        let text = format!(
            "spool {} cannot be written: {e}; its {} points are still delivered, new points are kept in memory (at most {} MiB) and the disk is tried again every 30 s",
            self.opts.dir.display(),
            self.disk_pending(),
            self.opts.max_memory_bytes >> 20
        );
        if self.problem.is_none() {
            log::error!("{text}");
        }
        self.problem = Some(text);
        self.reopen_at = Instant::now() + Duration::from_secs(30);
    }

    /// Bytes written to the spool since start (flash wear).
    pub fn bytes_written(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.bytes_written)
    }
}

impl Buffer for Spool {
    fn deliver_within(&self) -> Option<Duration> {
        Some(self.opts.window / 2)
    }

    fn push(&mut self, lines: Vec<String>) {
        let now = Instant::now();
        for l in lines {
            self.mem_bytes += point_bytes(&l);
            self.mem.push_back((now, l));
        }
        let full =
            |s: &Spool| s.mem_bytes > s.opts.max_memory_bytes || s.mem.len() > s.opts.max_memory;
        if full(self) && self.log.is_some() && self.problem.is_none() {
            // Memory is full before the window is over: to disk now.
            self.spill(Duration::ZERO, false);
        }
        let (mut bytes, mut len, mut over) = (self.mem_bytes, self.mem.len(), 0);
        while bytes > self.opts.max_memory_bytes || len > self.opts.max_memory {
            let Some((_, l)) = self.mem.get(over) else {
                break;
            };
            bytes -= point_bytes(l);
            len -= 1;
            over += 1;
        }
        if over > 0 {
            self.pop_mem(over);
            self.dropped_mem += over as u64;
            if self.dropped_mem == over as u64 || self.dropped_mem % 10_000 < over as u64 {
                log::error!(
                    "spool {} unusable and memory full ({} MiB): the oldest points were dropped, {} so far",
                    self.opts.dir.display(),
                    self.opts.max_memory_bytes >> 20,
                    self.dropped_mem
                );
            }
        }
    }

    fn peek(&mut self, n: usize) -> &[String] {
        self.trim_cache();
        if self.cache.len() < n {
            if let Some(log) = self.log.as_mut() {
                let mut out = Vec::new();
                match log.read_records(self.read_next, n - self.cache.len(), &mut out) {
                    Ok(next) => {
                        self.read_next = next;
                        self.cache.extend(
                            out.into_iter()
                                .map(|(seq, b)| (seq, String::from_utf8_lossy(&b).into_owned())),
                        );
                    }
                    // Only what was read is handed out; the next peek tries again.
                    Err(e) => log::error!("spool {}: {e}", self.opts.dir.display()),
                }
            }
        }
        let mut inflight = Inflight::default();
        self.peek_buf.clear();
        for (seq, line) in self.cache.iter().take(n) {
            inflight.disk.push(*seq);
            self.peek_buf.push(line.clone());
        }
        // Memory comes after the disk: only once every disk record has been read.
        let disk_done = self
            .log
            .as_ref()
            .is_none_or(|l| self.read_next >= l.next_seq());
        if self.peek_buf.len() < n && disk_done {
            inflight.disk_end = Some(self.read_next);
            inflight.mem_first = self.mem_popped;
            let rest = n - self.peek_buf.len();
            for (_, l) in self.mem.iter().take(rest) {
                self.peek_buf.push(l.clone());
                inflight.mem_count += 1;
            }
        }
        self.inflight = inflight;
        &self.peek_buf
    }

    fn ack(&mut self, n: usize) {
        let inflight = std::mem::take(&mut self.inflight);
        let k = n.min(inflight.disk.len());
        let mut to = None;
        if k > 0 {
            to = Some(inflight.disk[k - 1] + 1);
        }
        let m = (n - k).min(inflight.mem_count);
        if k == inflight.disk.len() {
            // Every disk record handed out was done: so were the unreadable ones among them.
            if let Some(end) = inflight.disk_end {
                to = Some(to.map_or(end, |t| t.max(end)));
            }
        }
        // Memory lines handed out and since spilled: acknowledge their records.
        let ids = inflight.mem_first..inflight.mem_first + m as u64;
        for (first_id, first_seq, count) in &inflight.spilled {
            let run = *first_id..*first_id + *count as u64;
            let last = ids.end.min(run.end);
            if last > run.start.max(ids.start) {
                let seq = first_seq + (last - first_id);
                to = Some(to.map_or(seq, |t| t.max(seq)));
            }
        }
        if let (Some(to), Some(log)) = (to, self.log.as_mut()) {
            if let Err(e) = log.ack(to) {
                log::error!("spool: cannot delete delivered segments: {e}");
            }
        }
        self.trim_cache();
        // Those still in memory are at its front.
        let still = ids.end.saturating_sub(self.mem_popped.max(ids.start));
        self.pop_mem(still as usize);
    }

    fn len(&self) -> usize {
        self.disk_pending() as usize + self.mem.len()
    }

    fn dropped(&self) -> u64 {
        self.dropped_mem + self.log.as_ref().map_or(0, |l| l.dropped + l.unreadable)
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
        let retry = self.problem.is_some() && self.log.is_some() && now >= self.reopen_at;
        if retry
            || self
                .mem
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            self.spill(window / 2, false);
        }
        if now.duration_since(self.last_ack_persist) >= window {
            if let Some(log) = self.log.as_mut() {
                if let Err(e) = log.persist_ack() {
                    log::warn!("spool: cannot record the replay position: {e}");
                }
            }
            self.last_ack_persist = now;
        }
        if self.problem.is_some() {
            // Nothing to do before the disk is tried again.
            return Some(self.reopen_at);
        }
        self.mem.front().map(|(t, _)| *t + window)
    }

    fn close(&mut self) {
        self.spill(Duration::ZERO, true);
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
