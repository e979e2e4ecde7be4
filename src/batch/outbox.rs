//! The outbox thread: the only place that POSTs to the plant API. Finish reports go to every
//! finish URL (`API_URL_BATCH`, `API_TRIGGER_URL`), batch confirmations to
//! `API_URL_STRINGS_CONF`, each URL tracked separately, all with the item's id as the
//! `Idempotency-Key` header. An item is appended to the durable log (and synced) before its
//! first POST; every delivery is recorded there too, so after a crash only a POST whose answer
//! came in the instant before its record can be repeated (and the key makes it harmless).
//! Retries: 408, 429, 5xx and network errors back off, capped; a `Retry-After` can lengthen
//! the wait, never shorten it below the backoff (at least 1 s). Any other 4xx is set aside
//! with the response body and never retried.
//!
//! The POSTs run on a worker thread (`outbox-http`), one at a time, so however long the API
//! takes to answer, the outbox's loop turns at least every second: it checks in with the
//! watchdog, takes the pollers' items and sees shutdown. Items recovered after a restart, all
//! due at once, therefore go out one after another, never as a burst. On shutdown a POST still
//! in flight is waited for at most a second, then left to the worker; its answer is lost, so it
//! may be posted again after the restart, under the same key.
//!
//! Records in the log: `new` (the item and its URLs), `sent` (one URL done), `failed` (one
//! URL set aside) and `restamp` (the item's time, settled before its first POST). On start the
//! log is replayed to rebuild what is still pending; the log is acknowledged up to the oldest
//! unfinished item.
//!
//! Time: an item that happened while the clock was not synchronized (`unsynced`) carries the
//! system's time as it was, which after a power cut can be months off. Its first POST waits
//! for the clock, at most `clock_wait`: once the clock is right the time becomes now minus the
//! item's age on the monotonic clock; after `clock_wait`, or for an item recovered after a
//! restart (its age is gone), it keeps the system's time and the log says so. The settled time
//! is stored before the POST, so every retry sends the same body under the same key.

use super::{rfc3339, Confirmation, FinishEvent, MachineId, OutboxItem, OwnerCommand, OwnerTx};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::durable::{Log, LogOptions};
use crate::status::{Beat, OutboxStatus};
use crossbeam_channel::{bounded, select, Receiver, Sender};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    Finish(FinishEvent),
    Confirm(Confirmation),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    New {
        id: String,
        payload: Payload,
        urls: Vec<String>,
    },
    Sent {
        id: String,
        url: String,
    },
    Failed {
        id: String,
        url: String,
        status: u16,
        body: String,
    },
    Restamp {
        id: String,
        time_ms: i64,
    },
}

/// One URL of an item still to deliver, with its own retry schedule.
struct Target {
    url: String,
    next_try: Instant,
    backoff: Backoff,
    last_problem: Option<String>,
}

struct Entry {
    payload: Payload,
    seq: u64,
    /// URLs still to deliver.
    urls: Vec<Target>,
}

impl Entry {
    /// A new item, due at once; retries back off from 1 s to 5 min.
    fn new(payload: Payload, seq: u64, urls: Vec<String>) -> Entry {
        let now = Instant::now();
        Entry {
            payload,
            seq,
            urls: urls
                .into_iter()
                .map(|url| Target {
                    url,
                    next_try: now,
                    backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
                    last_problem: None,
                })
                .collect(),
        }
    }
}

/// One POST for the worker.
struct Post {
    id: String,
    url: String,
    body: String,
}

/// The worker's answer to a `Post`: the status (`None`: no answer, with the error in
/// `text`), the start of the body, and `Retry-After`.
struct Answer {
    id: String,
    url: String,
    status: Option<u16>,
    text: String,
    after: Option<Duration>,
}

/// How long shutdown waits for the answer to a POST in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// How long an item that happened while the clock was not synchronized waits for it.
pub(crate) const CLOCK_WAIT: Duration = Duration::from_secs(120);

pub struct OutboxSettings {
    pub dir: PathBuf,
    pub finish_urls: Vec<String>,
    pub confirm_url: Option<String>,
    pub finish_body: Value,
    pub confirm_body: Value,
    pub timeout: Duration,
    pub ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    pub shadow: bool,
    pub audit: PathBuf,
    pub clock: Arc<Clock>,
    pub clock_wait: Duration,
}

pub struct Outbox {
    s: OutboxSettings,
    /// The worker that makes the POSTs; `None` in shadow mode or when it could not start.
    http: Option<Sender<Post>>,
    answers: Receiver<Answer>,
    /// The (id, URL) the worker is posting now.
    in_flight: Option<(String, String)>,
    log: Option<Log>,
    entries: BTreeMap<String, Entry>,
    recent_done: VecDeque<String>,
    /// Appends wait for one sync at the end of a group (see `add_group`).
    defer_sync: bool,
    pub status: Arc<Mutex<OutboxStatus>>,
}

/// Fill a body template: a string that is exactly a placeholder takes the value's JSON type
/// (`"{code}"` becomes a number); placeholders inside longer strings are replaced as text, in
/// one pass over the template, so a value that itself reads `{event_id}` is kept as it is.
pub(crate) fn fill(template: &Value, vars: &[(&str, Value)]) -> Value {
    match template {
        Value::String(s) => {
            if let Some((_, v)) = vars.iter().find(|(k, _)| s == &format!("{{{k}}}")) {
                return v.clone();
            }
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                let var = after.find('}').and_then(|close| {
                    vars.iter()
                        .find(|(k, _)| *k == &after[..close])
                        .map(|(_, v)| (close, v))
                });
                match var {
                    Some((close, v)) => {
                        match v {
                            Value::String(t) => out.push_str(t),
                            Value::Null => {}
                            other => out.push_str(&other.to_string()),
                        }
                        rest = &after[close + 1..];
                    }
                    None => {
                        out.push('{');
                        rest = after;
                    }
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, vars)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), fill(v, vars))).collect())
        }
        other => other.clone(),
    }
}

impl Payload {
    pub(crate) fn id(&self) -> &str {
        match self {
            Payload::Finish(e) => &e.id,
            Payload::Confirm(c) => &c.key,
        }
    }
    fn machine(&self) -> &str {
        match self {
            Payload::Finish(e) => &e.machine,
            Payload::Confirm(c) => &c.machine,
        }
    }
    /// The time, whether it is unsynchronized, and when it was on the monotonic clock.
    fn time(&mut self) -> (&mut i64, &mut bool, Option<Instant>) {
        match self {
            Payload::Finish(e) => (&mut e.time_ms, &mut e.unsynced, e.at),
            Payload::Confirm(c) => (&mut c.time_ms, &mut c.unsynced, c.at),
        }
    }
    fn describe(&self) -> String {
        match self {
            Payload::Finish(e) => format!(
                "finish of batch `{}` on {} (code {})",
                e.batch, e.machine, e.code
            ),
            Payload::Confirm(c) => format!(
                "confirmation of batch `{}` written to {}",
                c.batch, c.machine
            ),
        }
    }
}

impl Outbox {
    /// The outbox and, unless in shadow mode, its HTTP worker, which the caller runs on a
    /// thread of its own (`outbox-http`).
    pub fn open(
        s: OutboxSettings,
        status: Arc<Mutex<OutboxStatus>>,
    ) -> (Outbox, Option<PostWorker>) {
        let (http, answers, worker) = if s.shadow {
            (None, crossbeam_channel::never(), None)
        } else {
            let (post_tx, posts) = bounded::<Post>(1);
            let (answer_tx, answers) = bounded::<Answer>(1);
            let worker = PostWorker {
                agent: crate::http::agent(s.timeout, s.ca.as_deref()),
                posts,
                answers: answer_tx,
            };
            (Some(post_tx), answers, Some(worker))
        };
        let mut o = Outbox {
            http,
            answers,
            in_flight: None,
            log: None,
            entries: BTreeMap::new(),
            recent_done: VecDeque::new(),
            defer_sync: false,
            status,
            s,
        };
        if o.s.shadow {
            return (o, worker);
        }
        match Log::open(
            &o.s.dir,
            LogOptions {
                segment_bytes: 1 << 20,
                max_bytes: 64 << 20,
            },
        ) {
            Ok((mut log, rec)) => {
                if rec.torn_bytes > 0 {
                    log::warn!(
                        "outbox: {} bytes of a torn tail cut off after a power cut",
                        rec.torn_bytes
                    );
                }
                let mut records = Vec::new();
                if let Err(e) = log.read(log.acked(), usize::MAX, &mut records) {
                    log::error!("outbox: {e}");
                }
                let first = log.acked();
                for (i, r) in records.iter().enumerate() {
                    match serde_json::from_slice::<Record>(r) {
                        Ok(rec) => o.apply(rec, first + i as u64),
                        Err(e) => {
                            log::error!("outbox: unreadable record {}: {e}", first + i as u64)
                        }
                    }
                }
                if !o.entries.is_empty() {
                    log::info!(
                        "outbox: {} reports waiting from before the restart",
                        o.entries.len()
                    );
                }
                o.log = Some(log);
                o.compact();
            }
            Err(e) => log::error!(
                "outbox {} unusable: {e}; reports are kept in memory only until it is",
                o.s.dir.display()
            ),
        }
        o.update_status();
        (o, worker)
    }

    fn apply(&mut self, rec: Record, seq: u64) {
        match rec {
            Record::New { id, payload, urls } => {
                self.entries.insert(id, Entry::new(payload, seq, urls));
            }
            Record::Restamp { id, time_ms } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    let (t, unsynced, _) = e.payload.time();
                    (*t, *unsynced) = (time_ms, false);
                }
            }
            Record::Sent { id, url } | Record::Failed { id, url, .. } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.urls.retain(|t| t.url != url);
                }
            }
        }
        let done: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.urls.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for id in done {
            self.entries.remove(&id);
            self.remember_done(id);
        }
    }

    fn remember_done(&mut self, id: String) {
        self.recent_done.push_back(id);
        if self.recent_done.len() > 1000 {
            self.recent_done.pop_front();
        }
    }

    /// Append and sync a record; false if it could not be stored.
    fn store(&mut self, rec: &Record) -> Option<u64> {
        let defer = self.defer_sync;
        let log = self.log.as_mut()?;
        let bytes = serde_json::to_vec(rec).ok()?;
        let stored = log.append(&bytes).and_then(|seq| {
            if defer {
                Ok(seq)
            } else {
                log.sync().map(|()| seq)
            }
        });
        match stored {
            Ok(seq) => Some(seq),
            Err(e) => {
                log::error!("outbox: cannot store a record: {e}");
                None
            }
        }
    }

    fn compact(&mut self) {
        let Some(log) = self.log.as_mut() else { return };
        let oldest = self
            .entries
            .values()
            .map(|e| e.seq)
            .min()
            .unwrap_or(log.next_seq());
        if log.ack(oldest).and_then(|()| log.persist_ack()).is_err() {
            log::warn!("outbox: cannot trim delivered records");
        }
    }

    fn update_status(&self) {
        if let Ok(mut st) = self.status.lock() {
            st.pending = self.entries.len();
        }
    }

    fn body(&self, p: &Payload) -> Value {
        match p {
            Payload::Finish(e) => fill(
                &self.s.finish_body,
                &[
                    ("machine", Value::from(e.machine.clone())),
                    ("batch", Value::from(e.batch.clone())),
                    ("code", Value::from(e.code)),
                    ("time", Value::from(rfc3339(e.time_ms))),
                    ("event_id", Value::from(e.id.clone())),
                ],
            ),
            Payload::Confirm(c) => fill(
                &self.s.confirm_body,
                &[
                    ("machine", Value::from(c.machine.clone())),
                    ("batch", Value::from(c.batch.clone())),
                    (
                        "entry_id",
                        c.entry_id.clone().map(Value::from).unwrap_or(Value::Null),
                    ),
                    ("time", Value::from(rfc3339(c.time_ms))),
                    ("event_id", Value::from(c.key.clone())),
                ],
            ),
        }
    }

    /// Take an item in: store it before anything is posted. Returns the item's id once it is
    /// safe (stored, already known, or handled in shadow mode).
    pub fn add(&mut self, payload: Payload) -> Option<String> {
        let id = payload.id().to_string();
        if self.entries.contains_key(&id) || self.recent_done.contains(&id) {
            return Some(id);
        }
        let urls: Vec<String> = match &payload {
            Payload::Finish(_) => self.s.finish_urls.clone(),
            Payload::Confirm(_) => self.s.confirm_url.iter().cloned().collect(),
        };
        if urls.is_empty() {
            log::warn!(
                "{}: no API URL is configured for it; not reported",
                payload.describe()
            );
            return Some(id);
        }
        if self.s.shadow {
            let body = self.body(&payload);
            let shown: Vec<String> = urls.iter().map(|u| crate::http::redact_url(u)).collect();
            for url in &shown {
                log::info!("shadow mode: would POST {body} to {url} (Idempotency-Key {id})");
            }
            super::audit::record(
                &self.s.audit,
                &serde_json::json!({"time": rfc3339(crate::clock::wall_ms()), "action": "post", "shadow": true,
                    "machine": payload.machine(), "urls": shown, "body": body, "idempotency_key": id}),
            );
            return Some(id);
        }
        let seq = match self.store(&Record::New {
            id: id.clone(),
            payload: payload.clone(),
            urls: urls.clone(),
        }) {
            Some(seq) => seq,
            // Not durable: keep it in memory and say so; the poller keeps its pending copy.
            None if self.log.is_none() => u64::MAX,
            None => return None,
        };
        log::info!(
            "{}: queued for {} URL(s) (Idempotency-Key {id})",
            payload.describe(),
            urls.len()
        );
        self.entries
            .insert(id.clone(), Entry::new(payload, seq, urls));
        self.update_status();
        (seq != u64::MAX).then_some(id)
    }

    /// Take in items that arrived together, `(machine, payload)`: each is appended, then one
    /// sync stores them all, before any of them can be posted. Returns `(machine, id)` of each
    /// item that is safe; an item whose record could not be stored is left out (its poller
    /// keeps its pending copy), and so is every item of the group not yet synced then, because
    /// a failed append or sync takes back all records since the last sync.
    pub(crate) fn add_group(
        &mut self,
        items: Vec<(MachineId, Payload)>,
    ) -> Vec<(MachineId, String)> {
        let mut safe = Vec::new();
        let mut unsynced: Vec<(MachineId, String)> = Vec::new();
        self.defer_sync = true;
        for (machine, payload) in items {
            let new = !self.entries.contains_key(payload.id());
            match self.add(payload) {
                // Stored just now, or earlier in this group: safe only after the sync.
                Some(id)
                    if unsynced.iter().any(|(_, u)| *u == id)
                        || (new && self.entries.get(&id).is_some_and(|e| e.seq != u64::MAX)) =>
                {
                    unsynced.push((machine, id))
                }
                Some(id) => safe.push((machine, id)),
                None if self.log.is_some() => self.forget(&mut unsynced),
                None => {}
            }
        }
        self.defer_sync = false;
        if !unsynced.is_empty() {
            match self.log.as_mut().map_or(Ok(()), |l| l.sync()) {
                Ok(()) => safe.append(&mut unsynced),
                Err(e) => {
                    log::error!("outbox: cannot store {} record(s): {e}", unsynced.len());
                    self.forget(&mut unsynced);
                }
            }
        }
        safe
    }

    /// Drop entries whose records were taken back.
    fn forget(&mut self, items: &mut Vec<(MachineId, String)>) {
        for (_, id) in items.drain(..) {
            self.entries.remove(&id);
        }
        self.update_status();
    }

    /// When the next POST is due (none while one is in flight or without a worker).
    fn next_due(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.http.is_none() {
            return None;
        }
        self.entries
            .values()
            .flat_map(|e| e.urls.iter().map(|t| t.next_try))
            .min()
    }

    /// Settle the time of an item that happened while the clock was not synchronized (see the
    /// module comment). False: not yet, it waits for the clock.
    fn settle_time(&mut self, id: &str) -> bool {
        let synced = self.s.clock.is_synced();
        let wait = self.s.clock_wait;
        let Some(e) = self.entries.get_mut(id) else {
            return false;
        };
        let (time_ms, unsynced, at) = e.payload.time();
        if !*unsynced {
            return true;
        }
        let recorded = *time_ms;
        let age = at.map(|at| at.elapsed());
        let settled = match age {
            Some(age) if synced => {
                let t = crate::clock::wall_ms() - age.as_millis() as i64;
                log::info!(
                    "{}: happened before the clock was synchronized; its time is now {}",
                    e.payload.describe(),
                    rfc3339(t)
                );
                t
            }
            Some(age) if age < wait => {
                // Look again in a second (the clock is checked every second), or when the
                // wait is over.
                let next = Instant::now() + Duration::from_secs(1).min(wait - age);
                for t in &mut e.urls {
                    t.next_try = next;
                }
                return false;
            }
            _ => {
                log::warn!(
                    "{}: happened while the clock was not synchronized; reported with the system's time {}, which may be wrong",
                    e.payload.describe(),
                    rfc3339(recorded)
                );
                recorded
            }
        };
        let rec = Record::Restamp {
            id: id.to_string(),
            time_ms: settled,
        };
        self.store(&rec);
        self.apply(rec, 0);
        true
    }

    /// Take the worker's answer if it has come, then hand it the next due POST if it is idle:
    /// the URL waiting longest, once its item's time is settled. Never waits for the API.
    pub(crate) fn deliver_due(&mut self) {
        if let Ok(a) = self.answers.try_recv() {
            self.answered(a);
        }
        if self.in_flight.is_some() || self.http.is_none() {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<(Instant, String, String)> = self
            .entries
            .iter()
            .flat_map(|(id, e)| {
                e.urls
                    .iter()
                    .filter(|t| t.next_try <= now)
                    .map(move |t| (t.next_try, id.clone(), t.url.clone()))
            })
            .collect();
        due.sort();
        for (_, id, url) in due {
            if !self.settle_time(&id) {
                continue;
            }
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            let body = self.body(&entry.payload).to_string();
            let Some(http) = &self.http else {
                return;
            };
            match http.try_send(Post {
                id: id.clone(),
                url: url.clone(),
                body,
            }) {
                Ok(()) => self.in_flight = Some((id, url)),
                Err(_) => {
                    log::error!("outbox: the HTTP worker has stopped; reports wait in the outbox");
                    self.http = None;
                }
            }
            return;
        }
    }

    /// Act on the answer to a POST: record a delivery or a refusal, or schedule a retry.
    fn answered(&mut self, a: Answer) {
        if self.in_flight.as_ref() == Some(&(a.id.clone(), a.url.clone())) {
            self.in_flight = None;
        }
        let Answer {
            id,
            url,
            status,
            text,
            after,
        } = a;
        let Some(what) = self.entries.get(&id).map(|e| e.payload.describe()) else {
            return;
        };
        // The URL as logged and shown (it may hold credentials).
        let shown = crate::http::redact_url(&url);
        let record = match status {
            Some(s @ 200..=299) => {
                log::info!("{what}: delivered to {shown}");
                if let Ok(mut st) = self.status.lock() {
                    st.delivered += 1;
                    st.last_result = format!("{shown}: HTTP {s}");
                }
                Some(Record::Sent { id, url })
            }
            Some(s @ 400..=499) if s != 408 && s != 429 => {
                log::error!(
                    "{what}: {shown} refused it with HTTP {s}: {text}; set aside, not retried"
                );
                if let Ok(mut st) = self.status.lock() {
                    st.set_aside += 1;
                    st.last_result = format!("{shown}: HTTP {s} (set aside)");
                }
                Some(Record::Failed {
                    id,
                    url,
                    status: s,
                    body: text,
                })
            }
            _ => {
                let problem = match status {
                    Some(s) => format!("HTTP {s}: {text}"),
                    None => text,
                };
                if let Some(t) = self
                    .entries
                    .get_mut(&id)
                    .and_then(|e| e.urls.iter_mut().find(|t| t.url == url))
                {
                    let wait = crate::backoff::retry_wait(after, &mut t.backoff);
                    t.next_try = Instant::now() + wait;
                    if t.last_problem.as_deref() != Some(problem.as_str()) {
                        log::warn!("{what}: {shown} failed ({problem}); retrying in {wait:?}");
                        t.last_problem = Some(problem.clone());
                    }
                }
                if let Ok(mut st) = self.status.lock() {
                    st.last_result = format!("{shown}: {problem}");
                }
                None
            }
        };
        if let Some(rec) = record {
            self.store(&rec);
            let seq = self.log.as_ref().map_or(0, |l| l.next_seq());
            self.apply(rec, seq);
            self.compact();
        }
        self.update_status();
    }

    /// The thread's loop: take items in, tell the owning poller when each is stored, POST what
    /// is due. `reply[m]` reaches the owner of machine `m`.
    pub(crate) fn run(
        mut self,
        rx: Receiver<OutboxItem>,
        reply: Vec<OwnerTx>,
        shutdown: Receiver<()>,
        beat: Arc<Beat>,
    ) {
        loop {
            beat.check_in();
            self.deliver_due();
            let wait = self
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let answers = self.answers.clone();
            select! {
                recv(rx) -> item => match item {
                    Ok(item) => {
                        // What is ready together is stored under one sync.
                        let items = std::iter::once(item)
                            .chain(rx.try_iter().take(GROUP_MAX))
                            .map(|item| match item {
                                OutboxItem::Finish { machine, event } => (machine, Payload::Finish(event)),
                                OutboxItem::Confirm { machine, confirmation } => (machine, Payload::Confirm(confirmation)),
                            })
                            .collect();
                        for (machine, id) in self.add_group(items) {
                            if let Some(tx) = reply.get(machine.0) {
                                let _ = tx.send_timeout(OwnerCommand::Persisted { machine, id }, Duration::from_secs(1));
                            }
                        }
                    }
                    Err(_) => break,
                },
                recv(answers) -> a => match a {
                    Ok(a) => self.answered(a),
                    Err(_) => {
                        // The worker is gone (it never is while `http` is kept).
                        self.answers = crossbeam_channel::never();
                        self.in_flight = None;
                    }
                },
                recv(shutdown) -> _ => break,
                default(wait) => {}
            }
        }
        // Record the answer to a POST in flight if it comes at once; never wait for the API.
        if self.in_flight.is_some() {
            if let Ok(a) = self.answers.recv_timeout(SHUTDOWN_WAIT) {
                self.answered(a);
            }
        }
    }
}

/// The most items stored under one sync.
const GROUP_MAX: usize = 64;

/// The `outbox-http` worker: makes the POSTs the outbox hands it, one at a time, so the
/// outbox thread never waits on the API. It ends when the outbox drops its sender.
pub struct PostWorker {
    agent: ureq::Agent,
    posts: Receiver<Post>,
    answers: Sender<Answer>,
}

impl PostWorker {
    pub(crate) fn run(self) {
        for p in &self.posts {
            let result = self
                .agent
                .post(&p.url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", &p.id)
                .send(p.body.as_str());
            let (status, text, after) = match result {
                Ok(mut r) => {
                    let (status, t, after) = crate::http::read_answer(&mut r, 1000);
                    (Some(status), t, after)
                }
                Err(e) => (None, e.to_string(), None),
            };
            let answer = Answer {
                id: p.id,
                url: p.url,
                status,
                text,
                after,
            };
            if self.answers.send(answer).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::new_id;
    use crate::clock::SyncCheck;
    use serde_json::json;
    use std::path::Path;

    /// A plant API on loopback that answers 200 and keeps every body it was sent.
    fn api() -> (String, Arc<Mutex<Vec<Value>>>) {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/finish", server.server_addr());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let mut text = String::new();
                let _ = req.as_reader().read_to_string(&mut text);
                if let (Ok(v), Ok(mut b)) = (serde_json::from_str(&text), kept.lock()) {
                    b.push(v);
                }
                let _ = req.respond(tiny_http::Response::from_string("{}"));
            }
        });
        (url, bodies)
    }

    /// The clock as the gateway sees it: synchronized once the flag file exists.
    fn flag_clock(dir: &Path) -> (Arc<Clock>, PathBuf) {
        let flag = dir.join("synchronized");
        (Arc::new(Clock::new(SyncCheck::File(flag.clone()))), flag)
    }

    fn outbox(dir: &Path, url: &str, clock: Arc<Clock>, wait: Duration) -> Outbox {
        let (o, worker) = Outbox::open(
            OutboxSettings {
                dir: dir.join("outbox"),
                finish_urls: vec![url.to_string()],
                confirm_url: None,
                finish_body: json!({"time": "{time}", "batch": "{batch}"}),
                confirm_body: json!({}),
                timeout: Duration::from_secs(5),
                ca: None,
                shadow: false,
                audit: dir.join("audit.jsonl"),
                clock,
                clock_wait: wait,
            },
            Arc::new(Mutex::new(OutboxStatus::default())),
        );
        if let Some(w) = worker {
            std::thread::spawn(move || w.run());
        }
        o
    }

    /// 2026-04-27: where systemd puts the clock of a Pi that lost its time.
    const WRONG_MS: i64 = 1_777_300_000_000;

    fn unsynced_finish(at: Option<Instant>) -> Payload {
        Payload::Finish(FinishEvent {
            id: new_id(),
            machine: "JET-01".into(),
            batch: "B-1".into(),
            code: 305,
            time_ms: WRONG_MS,
            unsynced: true,
            at,
        })
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dg-outbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    fn posted(bodies: &Arc<Mutex<Vec<Value>>>, n: usize) -> Vec<Value> {
        let end = Instant::now() + Duration::from_secs(10);
        while lock_len(bodies) < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn lock_len(bodies: &Arc<Mutex<Vec<Value>>>) -> usize {
        bodies.lock().map(|b| b.len()).unwrap_or(0)
    }

    #[test]
    fn a_finish_from_before_the_clock_sync_waits_for_it_and_gets_its_real_time() {
        let dir = tmp("restamp");
        let (url, bodies) = api();
        let (clock, flag) = flag_clock(&dir);
        let mut o = outbox(&dir, &url, clock.clone(), Duration::from_secs(600));
        let happened = crate::clock::wall_ms();
        assert!(o.add(unsynced_finish(Some(Instant::now()))).is_some());
        std::thread::sleep(Duration::from_millis(300));
        o.deliver_due();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            lock_len(&bodies),
            0,
            "posted before the clock was synchronized"
        );
        std::fs::write(&flag, b"").expect("flag");
        assert!(clock.refresh());
        // It looks at the clock again a second after it last did.
        std::thread::sleep(Duration::from_millis(1100));
        o.deliver_due();
        let sent = posted(&bodies, 1);
        assert_eq!(sent.len(), 1);
        // Now minus its age: when it happened, not when the clock was set, nor April.
        let time = sent[0]["time"].as_str().unwrap_or_default().to_string();
        assert!(
            time >= rfc3339(happened - 50) && time <= rfc3339(happened + 250),
            "{time} is not about {}",
            rfc3339(happened)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn items_ready_together_are_stored_under_one_sync_and_survive_a_restart() {
        let dir = tmp("group");
        let clock = Arc::new(Clock::new(SyncCheck::Off));
        let url = "http://127.0.0.1:9/finish";
        let mut o = outbox(&dir, url, clock.clone(), Duration::from_secs(1));
        let (a, b) = (unsynced_finish(None), unsynced_finish(None));
        let again = a.clone();
        let ids: Vec<String> = [&a, &b].iter().map(|p| p.id().to_string()).collect();
        let (m0, m1) = (MachineId(0), MachineId(1));
        let safe = o.add_group(vec![(m0, a), (m1, b), (m0, again)]);
        let mut want = vec![
            (m0, ids[0].clone()),
            (m1, ids[1].clone()),
            (m0, ids[0].clone()),
        ];
        let mut got = safe.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        drop(o);
        let o = outbox(&dir, url, clock, Duration::from_secs(1));
        let mut stored: Vec<String> = o.entries.keys().cloned().collect();
        stored.sort();
        let mut ids = ids;
        ids.sort();
        assert_eq!(stored, ids);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_finish_waits_for_the_clock_only_so_long_then_goes_with_the_system_time() {
        let dir = tmp("give-up");
        let (url, bodies) = api();
        let (clock, _flag) = flag_clock(&dir);
        let mut o = outbox(&dir, &url, clock, Duration::from_millis(200));
        assert!(o.add(unsynced_finish(Some(Instant::now()))).is_some());
        o.deliver_due();
        std::thread::sleep(Duration::from_millis(300));
        o.deliver_due();
        let sent = posted(&bodies, 1);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["time"], json!(rfc3339(WRONG_MS)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn after_a_restart_an_unsynced_finish_goes_at_once_and_a_settled_time_is_kept() {
        let dir = tmp("restart");
        let (url, bodies) = api();
        // Refused (nothing listens): the item is stored, its time settled, the POST fails.
        let dead = "http://127.0.0.1:9/finish";
        let (clock, flag) = flag_clock(&dir);
        let mut o = outbox(&dir, dead, clock.clone(), Duration::from_secs(600));
        let happened = crate::clock::wall_ms();
        assert!(o.add(unsynced_finish(Some(Instant::now()))).is_some());
        std::fs::write(&flag, b"").expect("flag");
        assert!(clock.refresh());
        o.deliver_due();
        assert_eq!(o.entries.len(), 1);
        drop(o);
        // Restart: the settled time is in the log, and that is what is posted.
        let mut o = outbox(&dir, dead, clock, Duration::from_secs(600));
        o.s.finish_urls = vec![url.clone()];
        for e in o.entries.values_mut() {
            for t in &mut e.urls {
                t.url = url.clone();
            }
        }
        o.deliver_due();
        let sent = posted(&bodies, 1);
        let time = sent[0]["time"].as_str().unwrap_or_default().to_string();
        assert!(
            time >= rfc3339(happened - 50) && time <= rfc3339(happened + 1000),
            "{time}"
        );

        // An item recovered from the log before its time was settled has no age left: it is
        // posted at once with the system's time, although the clock is still not synchronized.
        let dir2 = tmp("restart-unsettled");
        let (clock2, _) = flag_clock(&dir2);
        let mut o = outbox(&dir2, &url, clock2.clone(), Duration::from_secs(600));
        assert!(o.add(unsynced_finish(Some(Instant::now()))).is_some());
        drop(o);
        let mut o = outbox(&dir2, &url, clock2, Duration::from_secs(600));
        o.deliver_due();
        let sent = posted(&bodies, 2);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1]["time"], json!(rfc3339(WRONG_MS)));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }

    /// An API on loopback that answers every POST with `status` and `Retry-After: {after}`;
    /// returns its URL and the number of requests it has had.
    fn refusing_api(status: u16, after: &'static str) -> (String, Arc<Mutex<usize>>) {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/finish", server.server_addr());
        let count = Arc::new(Mutex::new(0usize));
        let seen = count.clone();
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                if let Ok(mut n) = seen.lock() {
                    *n += 1;
                }
                let header = tiny_http::Header::from_bytes("Retry-After", after);
                let mut resp = tiny_http::Response::from_string("busy").with_status_code(status);
                if let Ok(h) = header {
                    resp.add_header(h);
                }
                let _ = req.respond(resp);
            }
        });
        (url, count)
    }

    #[test]
    fn retry_after_zero_or_a_past_date_does_not_turn_the_backoff_off() {
        for (status, after) in [(503, "0"), (429, "Wed, 21 Oct 2015 07:28:00 GMT")] {
            let dir = tmp(&format!("retry-after-{status}"));
            let (url, count) = refusing_api(status, after);
            let (clock, flag) = flag_clock(&dir);
            std::fs::write(&flag, b"").expect("flag");
            assert!(clock.refresh());
            let mut o = outbox(&dir, &url, clock, Duration::from_secs(600));
            let mut event = unsynced_finish(None);
            if let Payload::Finish(e) = &mut event {
                e.unsynced = false;
            }
            assert!(o.add(event).is_some());
            let (_tx, rx) = crossbeam_channel::bounded::<OutboxItem>(1);
            let (stop, shutdown) = crossbeam_channel::bounded::<()>(0);
            let live = crate::status::Liveness::default();
            let beat = live.register("outbox");
            let h = std::thread::spawn(move || o.run(rx, Vec::new(), shutdown, beat));
            std::thread::sleep(Duration::from_secs(4));
            drop(stop);
            h.join().expect("join");
            let n = count.lock().map(|n| *n).unwrap_or(0);
            println!("HTTP {status} with Retry-After `{after}`: {n} POSTs in 4 s");
            // Waits of at least 1 s, doubling: 0, 1, 2..3 s (and perhaps 3..4 s).
            assert!(
                (2..=4).contains(&n),
                "{n} POSTs in 4 s for one item answered {status}, Retry-After {after}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn templates_keep_types_for_whole_placeholders_and_substitute_inside_strings() {
        let t = json!({"m": "{machine}", "code": "{code}", "note": "batch {batch} on {machine}", "list": ["{code}"], "fixed": 3});
        let v = fill(
            &t,
            &[
                ("machine", json!("JET-01")),
                ("code", json!(305)),
                ("batch", json!("B7")),
            ],
        );
        assert_eq!(
            v,
            json!({"m": "JET-01", "code": 305, "note": "batch B7 on JET-01", "list": [305], "fixed": 3})
        );
    }

    #[test]
    fn placeholders_inside_substituted_values_are_left_as_they_are() {
        // A batch named `{event_id}` (the name comes from the HMI or the API) stays that name.
        let t = json!({"note": "batch {batch} ({event_id}) {unknown} {", "b": "{batch}"});
        let v = fill(
            &t,
            &[
                ("batch", json!("{event_id}{machine}")),
                ("event_id", json!("ev-1")),
                ("machine", json!("JET-01")),
            ],
        );
        assert_eq!(
            v,
            json!({"note": "batch {event_id}{machine} (ev-1) {unknown} {", "b": "{event_id}{machine}"})
        );
    }
}
