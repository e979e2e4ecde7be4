//! The uploader: the only part that talks to InfluxDB. Pollers send each poll's lines as a
//! `Batch` over a bounded channel; the uploader thread appends them to its `Buffer` (memory,
//! or the durable spool) and sends write requests of up to `max_points_per_write` lines when
//! a full request is ready or the oldest line has waited `flush_interval`. The HTTP call runs
//! on a worker (`HttpWorker`, on the `influx-http` thread that `app` spawns), so while a request hangs the uploader keeps taking
//! points, spilling them to disk and checking in with the watchdog.
//!
//! Outcomes: 2xx acknowledged; 413 halves the request size; 401/403/404 keep the data and log
//! loudly; 429/5xx and network errors back off (capped, with jitter; a longer `Retry-After`
//! wins, a shorter one, `0` or a past date does not shorten the wait, which is at least 1 s).
//! 400/422 (`Rejection`): the lines the server refused are set aside with the reason
//! (`rejected.lp` in the state directory, capped and rotated, see `rejected`) and each kind of
//! problem is logged once (a field type conflict once per measurement and field). After a
//! *partial write* the server has stored everything else, so nothing is resent: the refused
//! lines are those it names as unparsable, those whose field type conflicts with one it named
//! (the types it names are remembered), and those that are not line protocol at all; any more
//! it counts as dropped without naming them are noted as a number. Otherwise nothing was
//! stored: the named lines are set aside and the rest resent, and when it names none the
//! request is bisected to isolate them.
//!
//! Batches stamped while the clock was not trusted (`clock`) are held in memory with their
//! monotonic time and stamped once it is. The thread exits when every sender is gone, after a
//! last flush and closing the buffer (the spool syncs what it holds).
//!
//! The thread waits in one place (`next_event`, parked until its timer or its bell): for
//! points, for the outcome of the request in flight, or for its timer (the next flush, the
//! buffer's housekeeping, the watchdog beat); a write request's retries and bisection wait
//! there too. Pollers and the HTTP worker ring the bell (`Bell`) after sending.
//!
//! With a crash journal (`journal`), every poll is journaled as it is taken (what is taken
//! together, in one write, before the thread waits again) and the journal is
//! told after each loop turn how many points are settled (no longer only in this process's
//! memory); at start, before any new point, what a crashed predecessor left is replayed.

pub mod buffer;
pub(crate) mod journal;
pub(crate) mod rejected;
pub mod sink;
pub mod spool;

use crate::backoff::{retry_wait, Backoff};
use crate::clock::unix_ms;
use crate::clock::{wall_ms, Clock};
use crate::lineproto::FieldType;
use crate::status::{lock, Beat, UploaderStatus};
use buffer::Buffer;
use crossbeam_channel::{
    bounded, Receiver, SendError, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use journal::{Journal, JournalOptions, Replayed};
use rejected::RejectedFile;
use sink::{Outcome, Rejection, Sink};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

/// The lines of one poll. `stamped` is false when the clock was not trusted at poll time:
/// then every line ends in the placeholder timestamp ` 0` and `taken` says when it was polled.
#[derive(Debug)]
pub struct PollLines {
    pub lines: Vec<String>,
    pub taken: Instant,
    pub stamped: bool,
}

impl PollLines {
    pub fn stamped(lines: Vec<String>) -> PollLines {
        PollLines {
            lines,
            taken: Instant::now(),
            stamped: true,
        }
    }
}

/// Wakes the uploader thread once something was sent to it. Ringing is `Thread::unpark`: an
/// atomic swap, and one futex wake only when the uploader sleeps; it takes no lock. Waiting
/// in a `select!` instead registers the uploader with the points channel, and fifty pollers
/// that finish a poll together then queue on that registration's lock (futex calls on every
/// poll). Bound to the thread that runs the uploader; before that, a ring does nothing (the
/// uploader looks at its channels before it first sleeps).
#[derive(Clone, Default)]
struct Bell(Arc<OnceLock<Thread>>);

impl Bell {
    fn ring(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }

    /// Bind to the calling thread; once bound, a check and nothing more (it runs before
    /// every wait of the uploader).
    fn bind(&self) {
        if self.0.get().is_none() {
            let _ = self.0.set(std::thread::current());
        }
    }
}

/// The sending side of a bounded channel whose receiver sleeps parked: it rings the
/// receiver's bell after each send, and when it goes (the last sender gone ends the
/// receiver's loop).
pub struct RungTx<T> {
    /// `None` only while dropping: the channel is closed before the ring, so a receiver woken
    /// by the last sender's ring finds it closed.
    tx: Option<Sender<T>>,
    bell: Bell,
}

impl<T> Clone for RungTx<T> {
    fn clone(&self) -> Self {
        RungTx {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> RungTx<T> {
    pub fn send(&self, p: T) -> Result<(), SendError<T>> {
        let Some(tx) = &self.tx else {
            return Err(SendError(p));
        };
        tx.send(p)?;
        self.bell.ring();
        Ok(())
    }

    pub(crate) fn send_timeout(&self, p: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        let Some(tx) = &self.tx else {
            return Err(SendTimeoutError::Disconnected(p));
        };
        tx.send_timeout(p, timeout)?;
        self.bell.ring();
        Ok(())
    }

    /// Send without waiting and without ringing: a sender with several items at once sends
    /// them all, then rings once (`ring`), so the receiver wakes once for them. A full
    /// channel hands `p` back (ring, then wait with `send_timeout`).
    pub(crate) fn try_send_quiet(&self, p: T) -> Result<(), TrySendError<T>> {
        match &self.tx {
            Some(tx) => tx.try_send(p),
            None => Err(TrySendError::Disconnected(p)),
        }
    }

    pub(crate) fn ring(&self) {
        self.bell.ring();
    }
}

impl<T> Drop for RungTx<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.bell.ring();
    }
}

/// The receiving side: the channel (a `Receiver` for tests and benchmarks too), and the bell
/// its thread binds before it first sleeps.
pub struct RungRx<T> {
    rx: Receiver<T>,
    bell: Bell,
}

impl<T> std::ops::Deref for RungRx<T> {
    type Target = Receiver<T>;
    fn deref(&self) -> &Receiver<T> {
        &self.rx
    }
}

/// A bounded channel whose senders ring `bell` (one bell may serve several channels of one
/// receiving thread).
fn rung_channel<T>(cap: usize, bell: Bell) -> (RungTx<T>, RungRx<T>) {
    let (tx, rx) = bounded(cap);
    (
        RungTx {
            tx: Some(tx),
            bell: bell.clone(),
        },
        RungRx { rx, bell },
    )
}

/// The pollers' side of the points channel.
pub type PointsTx = RungTx<PollLines>;
/// The uploader's side of the points channel.
pub type PointsRx = RungRx<PollLines>;

/// The bounded channel from the pollers to the uploader.
pub fn points_channel(cap: usize) -> (PointsTx, PointsRx) {
    rung_channel(cap, Bell::default())
}

pub struct UploaderSettings {
    pub max_points_per_write: usize,
    pub flush_interval: Duration,
    /// Where rejected lines are kept (capped at `rejected::MAX_BYTES`); `None` drops them.
    pub rejected_file: Option<PathBuf>,
    /// How long the last flush may take on shutdown.
    pub shutdown_grace: Duration,
    /// Points held while the clock is not trusted, at most (deprecated count bound).
    pub hold_max_points: usize,
    /// Bytes of points held while the clock is not trusted, at most (`buffer::point_bytes`).
    pub hold_max_bytes: usize,
    /// The crash journal (on tmpfs); `None` runs without one.
    pub journal: Option<JournalOptions>,
}

/// What a held batch costs in memory (`buffer::point_bytes` per line).
fn batch_bytes(b: &PollLines) -> usize {
    b.lines.iter().map(|l| buffer::point_bytes(l)).sum()
}

/// At most this many remembered field types and logged problems (then they start afresh).
const REMEMBERED_MAX: usize = 1000;

/// The longest wait without a watchdog beat (and without checking the clock).
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// What wakes the uploader thread.
enum Event {
    /// A poll's lines, or `None` once every sender is gone.
    Points(Option<PollLines>),
    /// The HTTP worker's answer to the request in flight.
    Outcome(Outcome),
    /// The timer: a flush, the buffer's housekeeping or a beat is due.
    Timer,
}

fn worker_stopped() -> Outcome {
    Outcome::Retry {
        after: None,
        reason: "the HTTP worker has stopped".into(),
    }
}

/// Result of sending one prefix of the buffer.
enum Sent {
    /// This many leading lines are done (stored or set aside).
    Done(usize),
    /// This many are done; the rest must wait (back off).
    Partial(usize, Outcome),
}

pub struct Uploader {
    settings: UploaderSettings,
    buffer: Box<dyn Buffer>,
    status: Arc<Mutex<UploaderStatus>>,
    clock: Arc<Clock>,
    held: VecDeque<PollLines>,
    held_points: usize,
    held_bytes: usize,
    batch: usize,
    backoff: Backoff,
    retry_at: Option<Instant>,
    oldest_since: Option<Instant>,
    last_problem: Option<String>,
    rejected: Option<RejectedFile>,
    /// Field types InfluxDB named in field type conflicts: (measurement, field) -> stored type.
    stored_types: HashMap<(String, String), FieldType>,
    /// The rejection problems already logged (logged once each).
    reported: HashSet<String>,
    /// Lines set aside during the current write request.
    set_aside_now: usize,
    /// The worker that makes the HTTP calls.
    /// Request bodies to the HTTP worker (parked between requests, rung after each).
    http: RungTx<String>,
    outcomes: Receiver<Outcome>,
    /// Rung by the HTTP worker after each outcome.
    bell: Bell,
    /// Incoming batches; `None` once every sender is gone.
    points: Option<PointsRx>,
    beat: Option<Arc<Beat>>,
    journal: Option<Journal>,
    /// Stamped lines given to the buffer, and held batches that left `held` (stamped or
    /// dropped), since start: what the journal's settled counts are computed from.
    pushed: u64,
    held_left: u64,
}

/// The `influx-http` worker: makes the write requests the uploader hands it, one at a time, so
/// a hanging server never stops the uploader's loop. The wiring function runs it on a thread
/// of its own; it ends when the uploader drops its sender.
pub struct HttpWorker {
    sink: Box<dyn Sink>,
    bodies: RungRx<String>,
    /// Rings the uploader's bell after each outcome, and when the worker is gone.
    outcomes: RungTx<Outcome>,
}

impl HttpWorker {
    pub fn run(mut self) {
        // Parked between requests and rung by the uploader: a blocking channel receive
        // spins and yields the CPU a few times before it sleeps, on every request.
        self.bodies.bell.bind();
        loop {
            let body = match self.bodies.try_recv() {
                Ok(body) => body,
                Err(TryRecvError::Empty) => {
                    std::thread::park();
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            };
            if self.outcomes.send(self.sink.write(&body)).is_err() {
                break;
            }
        }
        // Gone (`outcomes` dropped, and rung): the uploader sees it if it waits for one.
    }
}

impl Uploader {
    /// The uploader and its HTTP worker, which the caller runs on a thread of its own.
    pub fn new(
        settings: UploaderSettings,
        sink: Box<dyn Sink>,
        buffer: Box<dyn Buffer>,
        status: Arc<Mutex<UploaderStatus>>,
        clock: Arc<Clock>,
    ) -> (Self, HttpWorker) {
        {
            let mut st = lock(&status);
            st.sink = sink.describe();
            st.clock_synced = clock.is_synced();
        }
        let batch = settings.max_points_per_write.max(1);
        let (http, bodies) = rung_channel::<String>(1, Bell::default());
        let bell = Bell::default();
        let (outcome_tx, outcomes) = rung_channel::<Outcome>(1, bell.clone());
        let worker = HttpWorker {
            sink,
            bodies,
            outcomes: outcome_tx,
        };
        let rejected = settings
            .rejected_file
            .clone()
            .map(|p| RejectedFile::new(p, rejected::MAX_BYTES));
        let uploader = Uploader {
            settings,
            rejected,
            stored_types: HashMap::new(),
            reported: HashSet::new(),
            set_aside_now: 0,
            buffer,
            status,
            clock,
            held: VecDeque::new(),
            held_points: 0,
            held_bytes: 0,
            batch,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            retry_at: None,
            oldest_since: None,
            last_problem: None,
            http,
            outcomes: outcomes.rx,
            bell,
            points: None,
            beat: None,
            journal: None,
            pushed: 0,
            held_left: 0,
        };
        (uploader, worker)
    }

    fn push(&mut self, batch: PollLines) {
        if batch.lines.is_empty() {
            return;
        }
        if let Some(j) = self.journal.as_mut() {
            if batch.stamped {
                j.append_stamped(&batch.lines);
            } else {
                j.append_held(&batch.lines, batch.taken);
            }
        }
        self.take(batch);
    }

    /// Keep a batch (already journaled).
    fn take(&mut self, batch: PollLines) {
        if !batch.stamped {
            self.held_points += batch.lines.len();
            self.held_bytes += batch_bytes(&batch);
            self.held.push_back(batch);
            while self.held_points > self.settings.hold_max_points
                || self.held_bytes > self.settings.hold_max_bytes
            {
                let Some(b) = self.held.pop_front() else {
                    break;
                };
                self.held_points -= b.lines.len();
                self.held_bytes -= batch_bytes(&b);
                self.held_left += 1;
                lock(&self.status).dropped_unstamped += b.lines.len() as u64;
            }
            return;
        }
        if self.buffer.is_empty() {
            self.oldest_since = Some(Instant::now());
        }
        self.pushed += batch.lines.len() as u64;
        self.buffer.push(batch.lines);
    }

    /// Open the crash journal and take back what a crashed predecessor left, before any new
    /// point. Without a usable journal the gateway runs on (logged).
    fn open_journal(&mut self) {
        let Some(opts) = self.settings.journal.clone() else {
            return;
        };
        match Journal::open(&opts) {
            Ok((j, rec)) => {
                if rec.points > 0 || rec.torn_bytes > 0 || rec.stale_held > 0 {
                    log::info!(
                        "crash journal {}: {} points from before the restart taken back{}{}",
                        opts.dir.display(),
                        rec.points,
                        if rec.torn_bytes > 0 {
                            format!("; {} bytes of a write cut short dropped", rec.torn_bytes)
                        } else {
                            String::new()
                        },
                        if rec.stale_held > 0 {
                            format!(
                                "; {} points held for the clock before a reboot cannot be stamped and are dropped",
                                rec.stale_held
                            )
                        } else {
                            String::new()
                        }
                    );
                } else {
                    log::info!("crash journal in {}", opts.dir.display());
                }
                for b in rec.batches {
                    let batch = match b {
                        Replayed::Stamped(lines) => PollLines::stamped(lines),
                        Replayed::Held { lines, taken } => PollLines {
                            lines,
                            taken,
                            stamped: false,
                        },
                    };
                    self.take(batch);
                }
                self.journal = Some(j);
            }
            Err(e) => log::error!(
                "no crash journal ({e}): a crash loses the points not yet in InfluxDB or the spool"
            ),
        }
    }

    /// Tell the journal what is settled: the buffer lets lines go in order, from its memory
    /// to InfluxDB, the rejected file or the spool (written and synced within `maintain`),
    /// so every pushed line no longer in its memory is settled.
    fn settle_journal(&mut self) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let in_memory = self
            .buffer
            .len()
            .saturating_sub(self.buffer.on_disk() as usize) as u64;
        j.settle(self.pushed.saturating_sub(in_memory), self.held_left);
    }

    /// Stamp held batches once the clock is trusted: poll time = now - age on the monotonic
    /// clock.
    fn release_held(&mut self) {
        if self.held.is_empty() || !self.clock.is_synced() {
            return;
        }
        let now_ms = wall_ms();
        let n = self.held_points;
        while let Some(b) = self.held.pop_front() {
            let ts = now_ms - b.taken.elapsed().as_millis() as i64;
            let lines = b
                .lines
                .into_iter()
                .map(|l| match l.rsplit_once(' ') {
                    Some((head, _)) => format!("{head} {ts}"),
                    None => l,
                })
                .collect();
            // Journaled again as stamped before the held record counts as settled.
            self.push(PollLines::stamped(lines));
            self.held_left += 1;
        }
        self.held_points = 0;
        self.held_bytes = 0;
        log::info!(
            "clock synchronized: {n} points polled before were stamped from the monotonic clock"
        );
    }

    /// When the next write request is due, if any.
    fn next_flush(&self) -> Option<Instant> {
        if self.buffer.is_empty() {
            return None;
        }
        let due = if self.buffer.len() >= self.batch {
            Instant::now()
        } else {
            // Points of unknown age (recovered from the spool at start) are due at once. The
            // oldest goes out before the spool would write it to disk: with the defaults (a
            // flush interval of 1 s, a fsync window of 1 s) a flush at 1 s raced the spill and
            // wrote points to the SD card in normal operation.
            let wait = match self.buffer.deliver_within() {
                Some(d) => self.settings.flush_interval.min(d),
                None => self.settings.flush_interval,
            };
            self.oldest_since.map_or_else(Instant::now, |t| t + wait)
        };
        Some(match self.retry_at {
            Some(r) => due.max(r),
            None => due,
        })
    }

    /// Keep `lines` (each with its reason) in `rejected.lp`; log the problem `key` once.
    fn set_aside(&mut self, key: &str, problem: &str, lines: &[(&str, &str)]) {
        let when = unix_ms(SystemTime::now());
        let mut entry = String::new();
        for (line, reason) in lines {
            entry.push_str(&format!("# {when} {}\n{line}\n", reason.replace('\n', " ")));
        }
        self.keep(key, problem, lines.len(), &entry);
    }

    /// Points the server dropped without saying which: noted in `rejected.lp` as a number.
    fn note_unnamed(&mut self, n: usize, message: &str) {
        let when = unix_ms(SystemTime::now());
        let message = message.replace('\n', " ");
        let entry = format!(
            "# {when} InfluxDB dropped {n} more point(s) of a write request without naming them: {message}\n"
        );
        let problem = format!("InfluxDB dropped points without naming them ({message})");
        let key = message
            .rsplit_once(" dropped=")
            .map_or(message.as_str(), |(k, _)| k)
            .to_string();
        self.keep(&format!("unnamed: {key}"), &problem, n, &entry);
    }

    fn keep(&mut self, key: &str, problem: &str, n: usize, entry: &str) {
        if n == 0 {
            return;
        }
        // A rejection's message can be long (it names every unparsable line).
        let mut problem = problem.to_string();
        crate::http::cut(&mut problem, 500);
        let kept = self.rejected.as_mut().map(|f| {
            f.append(entry)
                .map(|()| f.path().display().to_string())
                .map_err(|e| format!("{}: {e}", f.path().display()))
        });
        let whereto = match kept {
            Some(Ok(p)) => format!("set aside in {p}"),
            Some(Err(e)) => format!("dropped (cannot write {e})"),
            None => "dropped".into(),
        };
        if self.reported.len() >= REMEMBERED_MAX {
            self.reported.clear();
        }
        if self.reported.insert(key.to_string()) {
            log::error!(
                "InfluxDB rejected {n} point(s): {problem}; {whereto}. Logged once: later points refused for the same reason are only counted (`rejected` on the status page)"
            );
        } else {
            log::debug!("InfluxDB rejected {n} point(s): {problem}; {whereto}");
        }
        self.set_aside_now += n;
        lock(&self.status).rejected += n as u64;
    }

    /// A 400/422 answer to `lines`: set aside what the server refused, resend only what it
    /// did not store.
    fn rejected(&mut self, lines: &[String], r: Rejection) -> Sent {
        // The types to check lines against: after a partial write, every type InfluxDB named
        // so far (a wrong guess only copies a stored line into rejected.lp); otherwise only
        // the one named now, since a line set aside then is never sent again.
        let mut now_named = HashMap::new();
        if let Some(c) = &r.conflict {
            if self.stored_types.len() >= REMEMBERED_MAX {
                self.stored_types.clear();
            }
            let k = (c.measurement.clone(), c.field.clone());
            self.stored_types.insert(k.clone(), c.stored);
            now_named.insert(k, c.stored);
        }
        let types = if r.partial {
            std::mem::take(&mut self.stored_types)
        } else {
            now_named
        };
        // Index -> (problem key, reason).
        let mut bad: BTreeMap<usize, (String, String)> = BTreeMap::new();
        for (i, why) in r.unparsable(lines) {
            bad.insert(
                i,
                (
                    format!("lines it cannot parse ({why})"),
                    format!("unable to parse: {why}"),
                ),
            );
        }
        let mut conflicts = 0;
        for (i, l) in lines.iter().enumerate() {
            if bad.contains_key(&i) {
                continue;
            }
            match crate::lineproto::read(l) {
                None if r.partial => {
                    bad.insert(
                        i,
                        (
                            "lines that are not valid line protocol".into(),
                            "not stored by a partial write: not valid line protocol".into(),
                        ),
                    );
                }
                None => {}
                Some(read) => {
                    let conflict = read.fields.iter().find_map(|(f, t)| {
                        types
                            .get(&(read.measurement.clone(), f.clone()))
                            .filter(|s| *s != t)
                            .map(|s| (f, t, s))
                    });
                    if let Some((f, t, s)) = conflict {
                        conflicts += 1;
                        let m = &read.measurement;
                        bad.insert(
                            i,
                            (
                                format!("field type conflict: field \"{f}\" of measurement \"{m}\" is {} in InfluxDB", s.name()),
                                format!("field type conflict: field \"{f}\" of measurement \"{m}\" is {} here, {} in InfluxDB", t.name(), s.name()),
                            ),
                        );
                    }
                }
            }
        }
        if r.partial {
            self.stored_types = types;
        }
        let mut groups: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (i, (key, reason)) in &bad {
            groups
                .entry(key.as_str())
                .or_default()
                .push((lines[*i].as_str(), reason.as_str()));
        }
        for (key, group) in &groups {
            self.set_aside(key, key, group);
        }
        if r.partial {
            let unnamed = r.dropped.unwrap_or(0).saturating_sub(conflicts);
            self.note_unnamed(unnamed, &r.message);
            return Sent::Done(lines.len());
        }
        if bad.is_empty() {
            return self.bisect(lines, r);
        }
        // Nothing was stored: send the rest again.
        let rest: Vec<String> = (0..lines.len())
            .filter(|i| !bad.contains_key(i))
            .map(|i| lines[i].clone())
            .collect();
        let sent = if rest.is_empty() {
            Sent::Done(0)
        } else {
            self.send(&rest)
        };
        match sent {
            Sent::Done(_) => Sent::Done(lines.len()),
            Sent::Partial(k, o) => {
                // Done from the front: set aside, or among the first k of the rest.
                let mut left = k;
                let done = (0..lines.len())
                    .take_while(|i| {
                        bad.contains_key(i)
                            || (left > 0 && {
                                left -= 1;
                                true
                            })
                    })
                    .count();
                Sent::Partial(done, o)
            }
        }
    }

    /// A rejection that names no line: split the request in two until each refused line is
    /// alone.
    fn bisect(&mut self, lines: &[String], r: Rejection) -> Sent {
        if lines.len() == 1 {
            let key = format!("{} (a point sent alone)", r.message.replace('\n', " "));
            self.set_aside(&key, &key, &[(&lines[0], &r.message)]);
            return Sent::Done(1);
        }
        let mid = lines.len() / 2;
        match self.send(&lines[..mid]) {
            Sent::Done(a) => match self.send(&lines[mid..]) {
                Sent::Done(b) => Sent::Done(a + b),
                Sent::Partial(b, o) => Sent::Partial(a + b, o),
            },
            p => p,
        }
    }

    /// The one wait of the thread: for points, the HTTP worker's outcome (only while a
    /// request is `in_flight`) or the timer, set to the earliest of `until`, the buffer's
    /// next housekeeping and the next watchdog beat. The housekeeping runs and the beat is
    /// given before each wait.
    fn next_event(&mut self, until: Instant, in_flight: bool) -> Event {
        if let Some(b) = &self.beat {
            b.check_in();
        }
        let mut timer = until.min(Instant::now() + BEAT_EVERY);
        if let Some(t) = self.buffer.maintain() {
            timer = timer.min(t);
        }
        // Nothing taken stays unjournaled while the thread waits.
        if let Some(j) = self.journal.as_mut() {
            j.flush();
        }
        // Senders ring the bell after sending; a ring while awake leaves a token, so the
        // park after a look that found nothing returns at once.
        self.bell.bind();
        loop {
            if in_flight {
                match self.outcomes.try_recv() {
                    Ok(o) => return Event::Outcome(o),
                    Err(TryRecvError::Disconnected) => return Event::Outcome(worker_stopped()),
                    Err(TryRecvError::Empty) => {}
                }
            }
            let now = Instant::now();
            if now >= timer {
                return Event::Timer;
            }
            if let Some(rx) = &self.points {
                rx.bell.bind();
                match rx.try_recv() {
                    Ok(b) => return Event::Points(Some(b)),
                    Err(TryRecvError::Disconnected) => return Event::Points(None),
                    Err(TryRecvError::Empty) => {}
                }
            }
            std::thread::park_timeout(timer - now);
        }
    }

    /// Points from a poller, or `None` once every sender is gone.
    fn points(&mut self, batch: Option<PollLines>) {
        let Some(b) = batch else {
            self.points = None;
            return;
        };
        self.push(b);
        // Take what else is waiting (bounded, to keep beating): a poll is in the crash
        // journal only once taken.
        for _ in 0..1024 {
            match self.points.as_ref().map(|rx| rx.try_recv()) {
                Some(Ok(b)) => self.push(b),
                _ => break,
            }
        }
        // What was taken together is journaled in one write.
        if let Some(j) = self.journal.as_mut() {
            j.flush();
        }
    }

    /// One HTTP call on the worker; points keep being taken and the buffer kept while it
    /// runs.
    fn call(&mut self, body: String) -> Outcome {
        if self.http.send(body).is_err() {
            return worker_stopped();
        }
        loop {
            let far = Instant::now() + BEAT_EVERY;
            match self.next_event(far, true) {
                Event::Outcome(o) => return o,
                Event::Points(b) => self.points(b),
                Event::Timer => {}
            }
        }
    }

    /// Send `lines`; on 400/422, set aside what the server refused (see `rejected`).
    fn send(&mut self, lines: &[String]) -> Sent {
        let outcome = self.call(lines.join("\n"));
        lock(&self.status).write_requests += 1;
        match outcome {
            Outcome::Accepted => Sent::Done(lines.len()),
            Outcome::Rejected(r) => self.rejected(lines, r),
            Outcome::TooLarge if lines.len() == 1 => {
                let why = "413 request too large for a single point";
                self.set_aside(why, why, &[(&lines[0], why)]);
                Sent::Done(1)
            }
            Outcome::TooLarge => {
                self.batch = (lines.len() / 2).max(1);
                log::warn!(
                    "InfluxDB answered 413 (request too large): sending at most {} points per request from now on",
                    self.batch
                );
                Sent::Partial(0, Outcome::TooLarge)
            }
            other => Sent::Partial(0, other),
        }
    }

    /// Send one write request from the front of the buffer.
    fn flush_once(&mut self) {
        let n = self.batch.min(self.buffer.len());
        let lines: Vec<String> = self.buffer.peek(n).to_vec();
        self.set_aside_now = 0;
        let (done, problem) = match self.send(&lines) {
            Sent::Done(d) => (d, None),
            Sent::Partial(d, o) => (d, Some(o)),
        };
        self.buffer.ack(done);
        let now = Instant::now();
        let text = match problem {
            None => {
                self.backoff.reset();
                self.retry_at = None;
                lock(&self.status).last_ok_ms = Some(unix_ms(SystemTime::now()));
                if let Some(p) = self.last_problem.take() {
                    log::info!(
                        "InfluxDB writes work again (after: {p}); {} points waiting",
                        self.buffer.len()
                    );
                }
                match self.set_aside_now {
                    0 => format!("ok: {done} points"),
                    n => format!("ok: {} points, {n} rejected", done.saturating_sub(n)),
                }
            }
            Some(Outcome::TooLarge) => "413: request size halved".into(),
            Some(o) => {
                let (text, wait) = match &o {
                    Outcome::Refused(code, body) => (
                        format!("HTTP {code} {body}: check the URL, token/credentials, org and bucket/database; points are kept"),
                        self.backoff.next_delay().max(Duration::from_secs(5)),
                    ),
                    Outcome::Retry { after, reason } => {
                        (reason.clone(), retry_wait(*after, &mut self.backoff))
                    }
                    _ => ("unexpected answer".into(), retry_wait(None, &mut self.backoff)),
                };
                if self.last_problem.as_deref() != Some(text.as_str()) {
                    if matches!(o, Outcome::Refused(..)) {
                        log::error!("InfluxDB refuses writes: {text}");
                    } else {
                        log::warn!(
                            "InfluxDB write failed: {text}; retrying, {} points waiting",
                            self.buffer.len()
                        );
                    }
                    self.last_problem = Some(text.clone());
                }
                self.retry_at = Some(now + wait);
                text
            }
        };
        if self.buffer.is_empty() {
            self.oldest_since = None;
        }
        let mut st = lock(&self.status);
        st.points_written += done.saturating_sub(self.set_aside_now) as u64;
        st.last_result = text;
    }

    fn update_status(&self) {
        let mut st = lock(&self.status);
        st.buffered = self.buffer.len();
        st.spooled = self.buffer.on_disk();
        st.dropped = self.buffer.dropped();
        st.spool_problem = self.buffer.problem();
        st.clock_synced = self.clock.is_synced();
        st.held_unstamped = self.held_points;
    }

    /// The thread's loop. Returns when every sender is gone and the last flush is done.
    pub fn run(mut self, rx: PointsRx, beat: Arc<Beat>) {
        self.open_journal();
        self.points = Some(rx);
        self.beat = Some(beat);
        let mut clock_checked = Instant::now();
        let mut synced = self.clock.is_synced();
        if !synced {
            log::warn!(
                "the clock is not synchronized ({}): points are held and stamped once it is",
                self.clock.describe()
            );
        }
        while self.points.is_some() {
            if clock_checked.elapsed() >= Duration::from_secs(1) {
                clock_checked = Instant::now();
                if self.clock.refresh() != synced {
                    synced = !synced;
                    if !synced {
                        log::warn!("the clock lost synchronization: new points are held");
                    }
                }
            }
            self.release_held();
            let now = Instant::now();
            let until = self
                .next_flush()
                .unwrap_or(now + BEAT_EVERY)
                .min(now + BEAT_EVERY);
            match self.next_event(until, false) {
                Event::Points(b) => self.points(b),
                Event::Outcome(_) | Event::Timer => {}
            }
            if self.next_flush().is_some_and(|t| t <= Instant::now()) {
                self.flush_once();
            }
            self.update_status();
            self.settle_journal();
        }
        self.finish();
    }

    /// Last flush on shutdown, bounded by the grace period, then make the rest durable.
    fn finish(&mut self) {
        let deadline = Instant::now() + self.settings.shutdown_grace;
        self.release_held();
        if self.last_problem.is_none() {
            self.retry_at = None;
            while !self.buffer.is_empty() && Instant::now() < deadline {
                self.flush_once();
                if self.retry_at.is_some() {
                    break;
                }
            }
        }
        self.buffer.close();
        self.update_status();
        self.settle_journal();
        if self.held_points > 0 {
            if self.journal.is_some() {
                log::warn!(
                    "shutting down with {} points that were polled before the clock was synchronized: kept in the crash journal for a restart within this boot",
                    self.held_points
                );
            } else {
                log::error!(
                    "shutting down with {} points that were polled before the clock was synchronized: they cannot be stamped and are lost",
                    self.held_points
                );
            }
        }
        if !self.buffer.is_empty() {
            log::info!(
                "shutting down with {} points not yet in InfluxDB ({} kept in the spool)",
                self.buffer.len(),
                self.buffer.on_disk()
            );
        }
    }
}

#[cfg(test)]
mod tests;
