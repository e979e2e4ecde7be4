//! The crash journal: a copy, in RAM but outside the process, of the points the uploader holds
//! only in its own memory, so that a process crash (SIGKILL, a panic, a watchdog abort, the OOM
//! killer) loses none of them. It lives on tmpfs in the directory systemd gives the service
//! (`RuntimeDirectory=`, kept across restarts by `RuntimeDirectoryPreserve=restart`). A power
//! cut empties it, which changes nothing there: the spool's fsync-window bound still holds.
//! Nothing of it touches the state directory.
//!
//! Words:
//! - A *record* is the lines of one poll: records appended together (the polls the uploader
//!   took in one wake-up) go out in one `write(2)` at `flush`, with no fsync:
//!   `length (u32 LE) | CRC-32 of the payload (u32 LE) | payload`. The payload starts with a
//!   kind byte: `S` (stamped points, then the lines separated by `\n`) or `H` (points held for
//!   an untrusted clock: `CLOCK_BOOTTIME` of the poll in ns as u64 LE, the boot id as a length
//!   byte and its text, then the lines).
//! - A *segment* is one file `<16 hex digits>.jnl`; appends go to the newest, a new one is
//!   started when it passes an eighth of the size bound.
//! - A point is *settled* once it no longer depends on the process's memory: delivered, set
//!   aside, spilled to the durable spool (written and synced), dropped by a bound, or, for a
//!   held point, stamped (it is then journaled again as stamped). The uploader counts settled
//!   points in the order it journaled them; a segment whose records are all settled is
//!   deleted, and the newest is truncated to zero instead.
//!
//! Replay on open reads every segment in order. A record cut short or failing its checksum
//! ends its segment (a kill in the middle of a write) and is cut off. Held points are replayed
//! only within the same boot: the boot id matches, or, where it cannot be read (the unit's
//! `ProcSubset=pid` hides it), the directory is a tmpfs (which a reboot empties); their poll
//! time is then recovered from `CLOCK_BOOTTIME`, which keeps counting across process restarts.
//! Replayed segments stay in place until their points are settled, so a second crash before
//! that loses nothing either; duplicates after a crash (points delivered or spilled just
//! before it) are absorbed by InfluxDB (same series and timestamp).
//!
//! Bound: at most `max_bytes` of segments; beyond it the oldest segment is deleted and its
//! unsettled points are only in process memory again (logged). A `lock` file held with
//! `flock` keeps a second gateway out of the same directory.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The runtime directory used when systemd gives none (a manual run), if it is there.
pub(crate) const DEFAULT_DIR: &str = "/run/dyeing-gateway";
/// Default size bound of the journal. tmpfs pages count against the unit's `MemoryMax=`.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 8 << 20;

const HEADER: usize = 8;
const KIND_STAMPED: u8 = b'S';
const KIND_HELD: u8 = b'H';
/// Largest record accepted; anything larger in a header means the header is garbage.
const MAX_RECORD: usize = 16 << 20;
const SEGMENT_SUFFIX: &str = ".jnl";

#[derive(Debug, Clone)]
pub struct JournalOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is used by another running gateway", .0.display())]
    Locked(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the journal goes: `$RUNTIME_DIRECTORY` (the first, if systemd gives several), else
/// `/run/dyeing-gateway` if it exists. `None` (logged) means running without a journal.
pub(crate) fn locate() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("RUNTIME_DIRECTORY").filter(|v| !v.is_empty()) {
        let first = v
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return Some(PathBuf::from(first));
    }
    let dir = Path::new(DEFAULT_DIR);
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    log::warn!(
        "no crash journal: RUNTIME_DIRECTORY is not set and {DEFAULT_DIR} does not exist; a crash loses the points not yet in InfluxDB or the spool"
    );
    None
}

/// One poll's lines found by replay.
#[derive(Debug)]
pub(crate) enum Replayed {
    Stamped(Vec<String>),
    /// Held for an untrusted clock; `taken` is the poll time on this process's monotonic clock.
    Held {
        lines: Vec<String>,
        taken: Instant,
    },
}

/// What `open` found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub batches: Vec<Replayed>,
    pub points: usize,
    /// Bytes cut off torn segment tails.
    pub torn_bytes: u64,
    /// Held points from another boot: their poll time is unknown, they are not replayed.
    pub stale_held: usize,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Counts of stamped lines and held batches journaled up to the end of this segment.
    stamped_end: u64,
    held_end: u64,
}

pub(crate) struct Journal {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Append handle of the newest segment, when this process created it.
    file: Option<File>,
    next_id: u64,
    /// Stamped lines and held batches journaled (replayed ones included), and how many of
    /// each are settled.
    stamped: u64,
    held: u64,
    settled_stamped: u64,
    settled_held: u64,
    bytes: u64,
    boot_id: String,
    /// Records appended and not yet written (`flush`).
    record: Vec<u8>,
    problem: Option<String>,
    overflowing: bool,
    _lock: File,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{SEGMENT_SUFFIX}"))
}

/// The kernel's id of this boot; empty when it cannot be read.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `CLOCK_BOOTTIME` in ns: monotonic, counts suspend, restarts at 0 on every boot.
pub(crate) fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether `dir` is on a tmpfs (emptied by a reboot).
fn on_tmpfs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed struct through a valid pointer from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    // The two types differ between targets (armv7 and x86_64), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    let tmpfs = st.f_type as i64 == libc::TMPFS_MAGIC as i64;
    rc == 0 && tmpfs
}

/// Lock `dir` for this process; `Locked` when another process holds it.
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a file descriptor this function owns.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            JournalError::Locked(dir.to_path_buf())
        } else {
            JournalError::Io { path, source: e }
        });
    }
    Ok(f)
}

/// The records of one segment's bytes: (payloads, valid length).
fn parse(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= HEADER {
        let h = &data[at..at + HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len > MAX_RECORD || data.len() - at - HEADER < len {
            break;
        }
        let payload = &data[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        at += HEADER + len;
    }
    (out, at)
}

fn split_lines(b: &[u8]) -> Vec<String> {
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|c| *c == b'\n')
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// What a held record says: (boot id, boottime ns, lines).
fn parse_held(p: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let t = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let n = *p.get(8)? as usize;
    let id = p.get(9..9 + n)?;
    Some((id, t, p.get(9 + n..)?))
}

impl Journal {
    /// Open the journal in `opts.dir`, returning what a previous process left in it.
    pub(crate) fn open(opts: &JournalOptions) -> Result<(Journal, Recovery), JournalError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock_dir(&dir)?;
        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(SEGMENT_SUFFIX)?, 16).ok()
            })
            .collect();
        ids.sort_unstable();
        let max_bytes = opts.max_bytes.max(64 << 10);
        let mut j = Journal {
            segment_bytes: (max_bytes / 8).clamp(16 << 10, 1 << 20),
            max_bytes,
            segments: VecDeque::new(),
            file: None,
            next_id: ids.last().map_or(0, |i| i + 1),
            stamped: 0,
            held: 0,
            settled_stamped: 0,
            settled_held: 0,
            bytes: 0,
            boot_id: boot_id(),
            record: Vec::new(),
            problem: None,
            overflowing: false,
            _lock: lock,
            dir,
        };
        let mut rec = Recovery::default();
        let same_boot_fs = on_tmpfs(&j.dir);
        let now_boot = boottime_ns();
        for id in ids {
            let path = segment_path(&j.dir, id);
            let data = fs::read(&path).map_err(io_err(&path))?;
            let (records, valid) = parse(&data);
            if valid < data.len() {
                rec.torn_bytes += (data.len() - valid) as u64;
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(valid as u64))
                    .map_err(io_err(&path))?;
            }
            for p in records {
                let Some((&kind, body)) = p.split_first() else {
                    continue;
                };
                match kind {
                    KIND_STAMPED => {
                        let lines = split_lines(body);
                        j.stamped += lines.len() as u64;
                        rec.points += lines.len();
                        rec.batches.push(Replayed::Stamped(lines));
                    }
                    KIND_HELD => {
                        let Some((id, t, body)) = parse_held(body) else {
                            continue;
                        };
                        let lines = split_lines(body);
                        let same_boot = if id.is_empty() || j.boot_id.is_empty() {
                            same_boot_fs
                        } else {
                            id == j.boot_id.as_bytes()
                        };
                        let taken = now_boot
                            .checked_sub(t)
                            .filter(|_| same_boot)
                            .and_then(|age| Instant::now().checked_sub(Duration::from_nanos(age)));
                        match taken {
                            Some(taken) => {
                                j.held += 1;
                                rec.points += lines.len();
                                rec.batches.push(Replayed::Held { lines, taken });
                            }
                            None => rec.stale_held += lines.len(),
                        }
                    }
                    _ => {}
                }
            }
            if valid == 0 {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            j.bytes += valid as u64;
            j.segments.push_back(Segment {
                path,
                bytes: valid as u64,
                stamped_end: j.stamped,
                held_end: j.held,
            });
        }
        Ok((j, rec))
    }

    /// Bytes in the journal's segments.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Journal the lines of one stamped poll.
    pub(crate) fn append_stamped(&mut self, lines: &[String]) {
        self.stamped += lines.len() as u64;
        self.append(&[KIND_STAMPED], lines);
    }

    /// Journal the lines of one poll held for an untrusted clock, polled at `taken`.
    pub(crate) fn append_held(&mut self, lines: &[String], taken: Instant) {
        self.held += 1;
        let at = boottime_ns().saturating_sub(taken.elapsed().as_nanos() as u64);
        let id = self.boot_id.as_bytes();
        let id = &id[..id.len().min(255)];
        let mut head = Vec::with_capacity(10 + id.len());
        head.push(KIND_HELD);
        head.extend_from_slice(&at.to_le_bytes());
        head.push(id.len() as u8);
        head.extend_from_slice(id);
        self.append(&head, lines);
    }

    /// Add a record to those `flush` writes.
    fn append(&mut self, head: &[u8], lines: &[String]) {
        let rec = &mut self.record;
        let start = rec.len();
        rec.extend_from_slice(&[0; HEADER]);
        rec.extend_from_slice(head);
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                rec.push(b'\n');
            }
            rec.extend_from_slice(l.as_bytes());
        }
        let len = rec.len() - start - HEADER;
        if len <= MAX_RECORD {
            let crc = crc32fast::hash(&rec[start + HEADER..]);
            rec[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            rec[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        } else {
            rec.truncate(start);
            self.complain(format!("a poll of {len} bytes is too large to journal"));
        }
    }

    /// Write the records appended since the last flush, in one write. The uploader flushes
    /// after taking what is waiting and before it sleeps; settling flushes first.
    pub(crate) fn flush(&mut self) {
        if self.record.is_empty() {
            return;
        }
        let mut recs = std::mem::take(&mut self.record);
        if let Err(e) = self.write(&recs) {
            self.complain(format!("cannot write: {e}"));
        }
        recs.clear();
        self.record = recs;
        self.bound();
    }

    /// One write of whole records at the end of the newest segment.
    fn write(&mut self, rec: &[u8]) -> io::Result<()> {
        let rotate = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if self.file.is_none() || rotate {
            let path = segment_path(&self.dir, self.next_id);
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            self.next_id += 1;
            self.segments.push_back(Segment {
                path,
                bytes: 0,
                stamped_end: self.settled_stamped,
                held_end: self.settled_held,
            });
            self.file = Some(f);
        }
        let (Some(f), Some(seg)) = (self.file.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        if let Err(e) = f.write_all(rec) {
            // Cut off a partial record so the segment stays readable, and start a new one.
            let _ = f.set_len(seg.bytes);
            self.file = None;
            return Err(e);
        }
        seg.bytes += rec.len() as u64;
        seg.stamped_end = self.stamped;
        seg.held_end = self.held;
        self.bytes += rec.len() as u64;
        if self.problem.take().is_some() {
            log::info!("crash journal {}: usable again", self.dir.display());
        }
        Ok(())
    }

    fn complain(&mut self, text: String) {
        if self.problem.as_deref() != Some(text.as_str()) {
            log::error!(
                "crash journal {}: {text}; those points are not kept across a crash",
                self.dir.display()
            );
            self.problem = Some(text);
        }
    }

    /// Keep the segments within the size bound: the oldest go, settled or not.
    fn bound(&mut self) {
        while self.bytes > self.max_bytes && self.segments.len() > 1 {
            if !self.overflowing {
                log::warn!(
                    "crash journal {} full ({} KB): the oldest points not yet in InfluxDB or the spool are no longer kept across a crash",
                    self.dir.display(),
                    self.max_bytes >> 10
                );
                self.overflowing = true;
            }
            self.drop_front();
        }
    }

    fn drop_front(&mut self) {
        if let Some(s) = self.segments.pop_front() {
            if let Err(e) = fs::remove_file(&s.path) {
                self.complain(format!("cannot delete {}: {e}", s.path.display()));
            }
            self.bytes -= s.bytes;
        }
        if self.segments.is_empty() {
            self.file = None;
        }
    }

    /// Say how many stamped lines and held batches, counted in journal order, are settled;
    /// segments holding only settled points are deleted (the newest is truncated).
    pub(crate) fn settle(&mut self, stamped: u64, held: u64) {
        self.flush();
        self.settled_stamped = self.settled_stamped.max(stamped);
        self.settled_held = self.settled_held.max(held);
        while let Some(front) = self.segments.front() {
            if front.stamped_end > self.settled_stamped || front.held_end > self.settled_held {
                break;
            }
            if self.segments.len() == 1 && self.file.is_some() {
                if front.bytes > 0 {
                    let truncated = self.file.as_ref().map(|f| f.set_len(0));
                    match truncated {
                        Some(Ok(())) => {
                            self.bytes -= front.bytes;
                            if let Some(s) = self.segments.front_mut() {
                                s.bytes = 0;
                            }
                        }
                        Some(Err(e)) => self.complain(format!("cannot truncate: {e}")),
                        None => {}
                    }
                }
                break;
            }
            self.drop_front();
        }
        if self.stamped == self.settled_stamped && self.held == self.settled_held {
            self.overflowing = false;
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
