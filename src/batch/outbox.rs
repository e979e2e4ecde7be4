//! The outbox thread: the only place that POSTs to the plant API. Finish reports go to every
//! finish URL (`API_URL_BATCH`, `API_TRIGGER_URL`), batch confirmations to
//! `API_URL_STRINGS_CONF`, each URL tracked separately, all with the item's id as the
//! `Idempotency-Key` header. An item is appended to the durable log (and synced) before its
//! first POST; every delivery is recorded there too, so after a crash only a POST whose answer
//! came in the instant before its record can be repeated (and the key makes it harmless).
//! Retries: 408, 429 (honouring `Retry-After`), 5xx and network errors back off, capped; any
//! other 4xx is set aside with the response body and never retried.
//!
//! Records in the log: `new` (the item and its URLs), `sent` (one URL done) and `failed` (one
//! URL set aside). On start the log is replayed to rebuild what is still pending; the log is
//! acknowledged up to the oldest unfinished item.

use super::{rfc3339, Command, Confirmation, FinishEvent, OutboxItem};
use crate::backoff::Backoff;
use crate::durable::{Log, LogOptions};
use crate::status::Beat;
use crossbeam_channel::{select, Receiver, Sender};
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
}

struct Entry {
    payload: Payload,
    seq: u64,
    /// URLs still to deliver.
    urls: Vec<String>,
    next_try: Instant,
    backoff: Backoff,
    last_problem: Option<String>,
}

impl Entry {
    /// A new item, due at once; retries back off from 1 s to 5 min.
    fn new(payload: Payload, seq: u64, urls: Vec<String>) -> Entry {
        Entry {
            payload,
            seq,
            urls,
            next_try: Instant::now(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            last_problem: None,
        }
    }
}

pub struct Settings {
    pub dir: PathBuf,
    pub finish_urls: Vec<String>,
    pub confirm_url: Option<String>,
    pub finish_body: Value,
    pub confirm_body: Value,
    pub timeout: Duration,
    pub ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    pub shadow: bool,
    pub audit: PathBuf,
}

/// What the status page shows of the outbox.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStatus {
    pub pending: usize,
    pub delivered: u64,
    pub set_aside: u64,
    pub last_result: String,
}

pub struct Outbox {
    s: Settings,
    agent: ureq::Agent,
    log: Option<Log>,
    entries: BTreeMap<String, Entry>,
    recent_done: VecDeque<String>,
    pub status: Arc<Mutex<OutboxStatus>>,
}

/// Fill a body template: a string that is exactly a placeholder takes the value's JSON type
/// (`"{code}"` becomes a number); placeholders inside longer strings are replaced as text.
pub fn fill(template: &Value, vars: &[(&str, Value)]) -> Value {
    match template {
        Value::String(s) => {
            if let Some((_, v)) = vars.iter().find(|(k, _)| s == &format!("{{{k}}}")) {
                return v.clone();
            }
            let mut out = s.clone();
            for (k, v) in vars {
                let text = match v {
                    Value::String(t) => t.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                out = out.replace(&format!("{{{k}}}"), &text);
            }
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
    pub fn id(&self) -> &str {
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
    pub fn open(s: Settings, status: Arc<Mutex<OutboxStatus>>) -> Outbox {
        let agent = crate::http::agent(s.timeout, s.ca.as_deref());
        let mut o = Outbox {
            agent,
            log: None,
            entries: BTreeMap::new(),
            recent_done: VecDeque::new(),
            status,
            s,
        };
        if o.s.shadow {
            return o;
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
        o
    }

    fn apply(&mut self, rec: Record, seq: u64) {
        match rec {
            Record::New { id, payload, urls } => {
                self.entries.insert(id, Entry::new(payload, seq, urls));
            }
            Record::Sent { id, url } | Record::Failed { id, url, .. } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.urls.retain(|u| *u != url);
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
        let log = self.log.as_mut()?;
        let bytes = serde_json::to_vec(rec).ok()?;
        match log.append(&bytes).and_then(|seq| log.sync().map(|()| seq)) {
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
            for url in &urls {
                log::info!("shadow mode: would POST {body} to {url} (Idempotency-Key {id})");
            }
            super::audit::record(
                &self.s.audit,
                &serde_json::json!({"time": rfc3339(crate::clock::wall_ms()), "action": "post", "shadow": true,
                    "machine": payload.machine(), "urls": urls, "body": body, "idempotency_key": id}),
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

    fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.urls.is_empty())
            .map(|e| e.next_try)
            .min()
    }

    /// POST what is due.
    pub fn deliver_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next_try <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            let body = self.body(&entry.payload).to_string();
            let urls = entry.urls.clone();
            let what = entry.payload.describe();
            for url in urls {
                let result = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", &id)
                    .send(body.as_str());
                let (status, text, after) = match result {
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        let after = crate::http::retry_after(r.headers());
                        let mut t = r
                            .body_mut()
                            .with_config()
                            .limit(64 * 1024)
                            .read_to_string()
                            .unwrap_or_default();
                        t.truncate(1000);
                        (Some(status), t, after)
                    }
                    Err(e) => (None, e.to_string(), None),
                };
                let record = match status {
                    Some(200..=299) => {
                        log::info!("{what}: delivered to {url}");
                        if let Ok(mut st) = self.status.lock() {
                            st.delivered += 1;
                            st.last_result = format!("{url}: HTTP {}", status.unwrap_or(0));
                        }
                        Some(Record::Sent {
                            id: id.clone(),
                            url: url.clone(),
                        })
                    }
                    Some(s @ 400..=499) if s != 408 && s != 429 => {
                        log::error!("{what}: {url} refused it with HTTP {s}: {text}; set aside, not retried");
                        if let Ok(mut st) = self.status.lock() {
                            st.set_aside += 1;
                            st.last_result = format!("{url}: HTTP {s} (set aside)");
                        }
                        Some(Record::Failed {
                            id: id.clone(),
                            url: url.clone(),
                            status: s,
                            body: text.clone(),
                        })
                    }
                    _ => {
                        let problem = match status {
                            Some(s) => format!("HTTP {s}: {text}"),
                            None => text.clone(),
                        };
                        if let Some(e) = self.entries.get_mut(&id) {
                            let wait = after.unwrap_or_else(|| e.backoff.next_delay());
                            e.next_try = Instant::now() + wait;
                            if e.last_problem.as_deref() != Some(problem.as_str()) {
                                log::warn!(
                                    "{what}: {url} failed ({problem}); retrying in {wait:?}"
                                );
                                e.last_problem = Some(problem.clone());
                            }
                        }
                        if let Ok(mut st) = self.status.lock() {
                            st.last_result = format!("{url}: {problem}");
                        }
                        None
                    }
                };
                if let Some(rec) = record {
                    self.store(&rec);
                    let seq = self.log.as_ref().map_or(0, |l| l.next_seq());
                    self.apply(rec, seq);
                }
            }
        }
        self.compact();
        self.update_status();
    }

    /// The thread's loop: take items in, tell the owning poller when each is stored, POST what
    /// is due. `reply[m]` reaches the owner of machine `m`.
    pub fn run(
        mut self,
        rx: Receiver<OutboxItem>,
        reply: Vec<Sender<Command>>,
        shutdown: Receiver<()>,
        beat: Arc<Beat>,
    ) {
        loop {
            beat.check_in();
            let wait = self
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            select! {
                recv(rx) -> item => match item {
                    Ok(item) => {
                        let (machine, payload) = match item {
                            OutboxItem::Finish { machine, event } => (machine, Payload::Finish(event)),
                            OutboxItem::Confirm { machine, confirmation } => (machine, Payload::Confirm(confirmation)),
                        };
                        if let Some(id) = self.add(payload) {
                            if let Some(tx) = reply.get(machine) {
                                let _ = tx.send_timeout(Command::Persisted { machine, id }, Duration::from_secs(1));
                            }
                        }
                    }
                    Err(_) => break,
                },
                recv(shutdown) -> _ => break,
                default(wait) => {}
            }
            self.deliver_due();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
