//! A segmented append-only log of records. Each record is `length (u32 LE) | CRC-32 of the
//! payload (u32 LE) | payload`. Records are numbered by a sequence number (`seq`) that never
//! repeats; a segment file is named by the seq of its first record (16 hex digits, `.seg`).
//!
//! - **Append** goes through a buffer; `sync` flushes and `fdatasync`s. The caller chooses the
//!   fsync policy (the spool syncs once per window, the outbox after every record).
//! - **Write errors** (a full disk): when an append, a flush or a sync fails, every record
//!   appended since the last successful `sync` is taken back: the buffer is discarded, the
//!   segment truncated to its synced length and the sequence numbers reused. The log is then
//!   exactly as at that sync, so the caller still holding those records (the spool keeps its
//!   lines until `sync` succeeds) loses nothing and writes nothing twice.
//! - **Recovery** on open: every segment is scanned. A record that is cut short or fails its
//!   checksum with no valid record after it is a torn tail (a power cut mid-write): the file
//!   is truncated there, and the lost bytes are counted, never fatal.
//! - **Unreadable records**: a damaged record with valid records after it (a bad checksum, a
//!   garbage length, a bad sector) is skipped: reading searches for the next valid record
//!   (`resync`), the damaged stretch keeps its sequence numbers (counted in `unreadable`, logged
//!   once when skipped) and everything after it is read as usual. A reader never stalls on one.
//! - **Acknowledgement**: `ack(seq)` says every record below `seq` is done. Whole segments
//!   below it are deleted; the ack position is kept in the file `ack` (written to a temporary
//!   file and renamed, so it is always whole), at most as often as the caller persists it.
//!   After a crash, records acknowledged but not yet persisted are replayed again: consumers
//!   must tolerate duplicates (InfluxDB does; the outbox uses idempotency keys).
//! - **Bound**: when the segments exceed `max_bytes`, the oldest segment is deleted even if
//!   not acknowledged; its records are counted as dropped.
//! - **Format**: the directory's `FORMAT` file (see `durable::format`); a newer one is
//!   refused by `open`, and nothing in the directory is changed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// Largest payload accepted; anything larger in a header means the header is garbage.
pub(crate) const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub segment_bytes: u64,
    pub max_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 8 << 20,
            max_bytes: 1 << 30,
        }
    }
}

/// What `open` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovery {
    /// Records found after the acknowledged position.
    pub pending: u64,
    /// Bytes cut off torn or corrupt segment tails.
    pub torn_bytes: u64,
    /// Segments with a torn tail.
    pub torn_segments: u64,
    /// Damaged stretches found in the middle of segments (each one takes one sequence number
    /// and is skipped when read).
    pub unreadable: u64,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    records: u64,
    bytes: u64,
    path: PathBuf,
}

/// Position of the reader: the next record to read.
#[derive(Debug, Clone, Copy)]
struct ReadPos {
    seq: u64,
    segment: u64,
    offset: u64,
}

pub struct Log {
    dir: PathBuf,
    opts: LogOptions,
    segments: VecDeque<Segment>,
    writer: Option<BufWriter<File>>,
    next_seq: u64,
    acked: u64,
    persisted_ack: u64,
    read: Option<ReadPos>,
    unsynced: bool,
    /// State at the last successful sync (or open), restored after a write error:
    /// (next seq, first seq of the last segment, its length).
    mark: (u64, u64, u64),
    /// Records deleted by the size bound before they were acknowledged.
    pub dropped: u64,
    /// Records skipped by `read` because they could not be read (damaged on disk).
    pub unreadable: u64,
    /// Bytes appended since open (for the flash-wear figures).
    pub bytes_written: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:016x}.seg"))
}

/// What `read_record` found at the current position.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rec {
    /// A whole record with a good checksum, this many bytes long on disk.
    Good(u64),
    /// A clean end of the file.
    End,
    /// Cut short, a garbage length or a bad checksum.
    Bad,
}

/// Scan a segment: (records, valid length, file size, unreadable stretches). A damaged record
/// followed by a valid one is counted as one unreadable record and passed over; one with
/// nothing valid after it ends the segment (the valid length stops there: a torn tail).
fn scan(path: &Path) -> io::Result<(u64, u64, u64, u64)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let (mut records, mut offset, mut unreadable) = (0u64, 0u64, 0u64);
    let mut payload = Vec::new();
    loop {
        match read_record(&mut r, &mut payload)? {
            Rec::Good(n) => {
                records += 1;
                offset += n;
            }
            Rec::End => break,
            Rec::Bad => match resync(path, offset + 1, size)? {
                Some(next) => {
                    records += 1;
                    unreadable += 1;
                    offset = next;
                    r.seek(SeekFrom::Start(next))?;
                }
                None => break,
            },
        }
    }
    Ok((records, offset, size, unreadable))
}

/// Read one record into `payload`. Returns its size on disk, a clean end, or `Bad` when it is
/// cut short, its length is garbage or its checksum fails.
fn read_record<R: Read>(r: &mut R, payload: &mut Vec<u8>) -> io::Result<Rec> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            return Ok(if got == 0 { Rec::End } else { Rec::Bad });
        }
        got += n;
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_RECORD {
        return Ok(Rec::Bad);
    }
    payload.resize(len, 0);
    if r.read_exact(payload).is_err() {
        return Ok(Rec::Bad);
    }
    if crc32fast::hash(payload) != crc {
        return Ok(Rec::Bad);
    }
    Ok(Rec::Good((HEADER + len) as u64))
}

/// The offset of the first valid record at or after `from` in the file at `path` (of `size`
/// bytes), if any: a header with a plausible, non-zero length whose payload has the right
/// checksum. Reads windows of at most two records' worth, so memory stays bounded.
fn resync(path: &Path, from: u64, size: u64) -> io::Result<Option<u64>> {
    let mut f = File::open(path)?;
    let span = MAX_RECORD + HEADER;
    let mut start = from;
    let mut buf = Vec::new();
    while start + HEADER as u64 <= size {
        let want = ((size - start) as usize).min(2 * span);
        let at_end = start + want as u64 == size;
        buf.resize(want, 0);
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        // Every candidate below `limit` has its whole record inside the window.
        let limit = if at_end { want } else { span };
        for i in 0..limit {
            let Some(h) = buf.get(i..i + HEADER) else {
                break;
            };
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            if len == 0 || len > MAX_RECORD {
                continue;
            }
            if let Some(p) = buf.get(i + HEADER..i + HEADER + len) {
                if crc32fast::hash(p) == crc {
                    return Ok(Some(start + i as u64));
                }
            }
        }
        if at_end {
            break;
        }
        start += limit as u64;
    }
    Ok(None)
}

impl Log {
    /// Open (or create) the log in `dir`, recovering from a crash.
    /// A directory in a newer format (see `durable::format`) is refused before anything in it
    /// is touched.
    pub fn open(dir: &Path, opts: LogOptions) -> io::Result<(Log, Recovery)> {
        super::format::check_dir(dir)?;
        fs::create_dir_all(dir)?;
        super::format::mark_dir(dir)?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let hex = name.strip_suffix(".seg")?;
                u64::from_str_radix(hex, 16).ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        for first in firsts {
            let path = segment_path(dir, first);
            let (records, valid, size, unreadable) = scan(&path)?;
            recovery.unreadable += unreadable;
            if valid < size {
                recovery.torn_bytes += size - valid;
                recovery.torn_segments += 1;
                OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
            }
            // A gap in numbering (a segment lost) is tolerated: seqs stay increasing.
            segments.push_back(Segment {
                first,
                records,
                bytes: valid,
                path,
            });
        }
        let next_seq = segments.back().map_or(0, |s| s.first + s.records);
        let first_seq = segments.front().map_or(next_seq, |s| s.first);
        let acked = read_ack(dir)
            .unwrap_or(first_seq)
            .clamp(first_seq, next_seq);
        recovery.pending = next_seq - acked;
        let mut log = Log {
            dir: dir.to_path_buf(),
            opts,
            segments,
            writer: None,
            next_seq,
            acked,
            persisted_ack: acked,
            read: None,
            unsynced: false,
            mark: (0, 0, 0),
            dropped: 0,
            unreadable: 0,
            bytes_written: 0,
        };
        log.delete_acked_segments()?;
        log.set_mark();
        Ok((log, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records appended but not acknowledged.
    pub fn pending(&self) -> u64 {
        self.next_seq - self.acked
    }

    /// The seq of the first unacknowledged record.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes on disk in all segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        let rotate = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.opts.segment_bytes);
        if rotate {
            self.flush()?;
            self.writer = None;
            let first = self.next_seq;
            let path = segment_path(&self.dir, first);
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            self.segments.push_back(Segment {
                first,
                records: 0,
                bytes: 0,
                path,
            });
            self.writer = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        if self.writer.is_none() {
            let path = self
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let f = OpenOptions::new().append(true).open(path)?;
            self.writer = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::other("no segment open"))
    }

    /// Remember the current state as the one to return to after a write error.
    fn set_mark(&mut self) {
        let (first, bytes) = self.segments.back().map_or((0, 0), |s| (s.first, s.bytes));
        self.mark = (self.next_seq, first, bytes);
    }

    /// Take back every record appended since the last successful sync (see the module
    /// comment). Truncating frees space, so it works on a full disk; its own errors leave at
    /// worst a torn tail, which recovery cuts off.
    fn rollback(&mut self) {
        let (next_seq, first, bytes) = self.mark;
        // Discard what is buffered without writing it.
        if let Some(w) = self.writer.take() {
            let _ = w.into_parts();
        }
        while self
            .segments
            .back()
            .is_some_and(|s| s.first >= next_seq && s.first != first)
        {
            if let Some(s) = self.segments.pop_back() {
                let _ = fs::remove_file(&s.path);
            }
        }
        if let Some(s) = self.segments.back_mut() {
            if s.first == first && s.bytes > bytes {
                s.records = next_seq.saturating_sub(s.first);
                s.bytes = bytes;
                let _ = OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .and_then(|f| f.set_len(bytes));
            }
        }
        self.next_seq = self.next_seq.min(next_seq.max(self.acked));
        self.acked = self.acked.min(self.next_seq);
        self.unsynced = false;
        self.read = None;
    }

    /// Append one record; returns its seq. Durable only after `sync`. On an error, the
    /// records appended since the last sync are taken back.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        let r = self.append_buffered(payload);
        if r.is_err() {
            self.rollback();
        }
        r
    }

    fn append_buffered(&mut self, payload: &[u8]) -> io::Result<u64> {
        if payload.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record too large",
            ));
        }
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let w = self.writer()?;
        w.write_all(&h)?;
        w.write_all(payload)?;
        let size = (HEADER + payload.len()) as u64;
        if let Some(s) = self.segments.back_mut() {
            s.records += 1;
            s.bytes += size;
        }
        self.bytes_written += size;
        self.unsynced = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.enforce_bound()?;
        Ok(seq)
    }

    /// Write the buffer to the file; on an error, take back what was not synced.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.flush() {
                self.rollback();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Flush and fdatasync what was appended. On an error, every record appended since the
    /// last successful sync is taken back (the caller still has them).
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.unsynced {
            self.set_mark();
            return Ok(());
        }
        self.flush()?;
        if let Some(w) = self.writer.as_ref() {
            if let Err(e) = w.get_ref().sync_data() {
                self.rollback();
                return Err(e);
            }
        }
        self.unsynced = false;
        self.set_mark();
        Ok(())
    }

    /// Delete the oldest segments while over the size bound (never the one being written).
    fn enforce_bound(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 && self.bytes() > self.opts.max_bytes {
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            let end = s.first + s.records;
            if end > self.acked {
                self.dropped += end - self.acked.max(s.first);
                self.acked = end;
            }
            fs::remove_file(&s.path)?;
            if self.read.is_some_and(|r| r.seq < end) {
                self.read = None;
            }
        }
        Ok(())
    }

    /// Read up to `max` records starting at `from` (at least `acked`), in order. Unreadable
    /// records are skipped (see `read_records`).
    pub fn read(&mut self, from: u64, max: usize, out: &mut Vec<Vec<u8>>) -> io::Result<()> {
        let mut recs = Vec::new();
        self.read_records(from, max, &mut recs)?;
        out.extend(recs.into_iter().map(|(_, p)| p));
        Ok(())
    }

    /// Read up to `max` readable records starting at `from` (at least `acked`), in order, with
    /// their seqs. Returns the seq to read next: every record below it was either returned or
    /// skipped as unreadable (counted in `unreadable` and logged once here). A damaged record
    /// never stops the reader: it searches for the next valid record in the segment; if there
    /// is none, the rest of the segment's records are unreadable.
    pub fn read_records(
        &mut self,
        from: u64,
        max: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> io::Result<u64> {
        let from = from.max(self.acked);
        if from >= self.next_seq || max == 0 {
            return Ok(from);
        }
        self.flush()?;
        // Continue from the last position when it matches, else find the segment and skip.
        let mut pos = match self.read {
            Some(p) if p.seq == from => p,
            _ => {
                let Some(seg) = self.segments.iter().rev().find(|s| s.first <= from) else {
                    return Ok(from);
                };
                ReadPos {
                    seq: seg.first,
                    segment: seg.first,
                    offset: 0,
                }
            }
        };
        let mut payload = Vec::new();
        let mut taken = 0;
        while taken < max && pos.seq < self.next_seq {
            let Some(seg) = self.segments.iter().find(|s| s.first == pos.segment) else {
                break;
            };
            if pos.seq >= seg.first + seg.records {
                // Next segment.
                match self.segments.iter().find(|s| s.first > pos.segment) {
                    Some(n) => {
                        pos = ReadPos {
                            seq: n.first,
                            segment: n.first,
                            offset: 0,
                        }
                    }
                    None => break,
                }
                continue;
            }
            let (path, end, bytes) = (seg.path.clone(), seg.first + seg.records, seg.bytes);
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(pos.offset))?;
            let mut r = BufReader::with_capacity(64 * 1024, f);
            while pos.seq < end && taken < max {
                match read_record(&mut r, &mut payload)? {
                    Rec::Good(n) => {
                        if pos.seq >= from {
                            out.push((pos.seq, payload.clone()));
                            taken += 1;
                        }
                        pos.seq += 1;
                        pos.offset += n;
                    }
                    bad => {
                        let next = match bad {
                            Rec::Bad => resync(&path, pos.offset + 1, bytes)?,
                            _ => None,
                        };
                        // One record for the damaged stretch, or all the rest of the segment
                        // when nothing valid follows.
                        let skipped = if next.is_some() { 1 } else { end - pos.seq };
                        if pos.seq + skipped > from {
                            self.unreadable += pos.seq + skipped - pos.seq.max(from);
                            log::error!(
                                "{}: {} record(s) from seq {} unreadable (damaged at byte {}); skipped, counted as dropped",
                                path.display(),
                                skipped,
                                pos.seq,
                                pos.offset
                            );
                        }
                        pos.seq += skipped;
                        match next {
                            Some(o) => {
                                pos.offset = o;
                                r.seek(SeekFrom::Start(o))?;
                            }
                            None => pos.offset = bytes,
                        }
                    }
                }
            }
        }
        self.read = Some(pos);
        Ok(pos.seq.max(from))
    }

    /// Every record below `seq` is done.
    pub fn ack(&mut self, seq: u64) -> io::Result<()> {
        let seq = seq.min(self.next_seq);
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        self.delete_acked_segments()
    }

    fn delete_acked_segments(&mut self) -> io::Result<()> {
        while let Some(s) = self.segments.front() {
            let end = s.first + s.records;
            // Keep the segment being written to, even when fully acknowledged, unless empty
            // of pending records and not the only one.
            if end > self.acked || self.segments.len() == 1 {
                break;
            }
            let s = self
                .segments
                .pop_front()
                .ok_or_else(|| io::Error::other("empty"))?;
            fs::remove_file(&s.path)?;
        }
        // A fully acknowledged last segment: start afresh so the directory stays small.
        if self.segments.len() == 1 && self.pending() == 0 {
            if let Some(s) = self.segments.front() {
                if s.records > 0 && s.bytes >= self.opts.segment_bytes / 8 {
                    let s = self
                        .segments
                        .pop_front()
                        .ok_or_else(|| io::Error::other("empty"))?;
                    self.writer = None;
                    fs::remove_file(&s.path)?;
                }
            }
        }
        Ok(())
    }

    /// Persist the acknowledged position if it moved (atomic: temporary file, then rename).
    pub fn persist_ack(&mut self) -> io::Result<()> {
        if self.persisted_ack == self.acked {
            return Ok(());
        }
        let tmp = self.dir.join("ack.tmp");
        let mut f = File::create(&tmp)?;
        let mut rec = [0u8; 12];
        rec[..8].copy_from_slice(&self.acked.to_le_bytes());
        let crc = crc32fast::hash(&rec[..8]);
        rec[8..].copy_from_slice(&crc.to_le_bytes());
        f.write_all(&rec)?;
        f.sync_data()?;
        fs::rename(&tmp, self.dir.join("ack"))?;
        self.persisted_ack = self.acked;
        Ok(())
    }
}

fn read_ack(dir: &Path) -> Option<u64> {
    let b = fs::read(dir.join("ack")).ok()?;
    if b.len() != 12 {
        return None;
    }
    let seq = u64::from_le_bytes(b[..8].try_into().ok()?);
    let crc = u32::from_le_bytes(b[8..].try_into().ok()?);
    (crc32fast::hash(&b[..8]) == crc).then_some(seq)
}

#[cfg(test)]
mod tests;
