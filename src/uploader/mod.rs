//! The uploader thread: the only thread that talks to InfluxDB. Pollers send the lines of each
//! poll over a bounded channel; the uploader appends them to its `Buffer` and sends write
//! requests of up to `max_points_per_write` lines when a full request is ready or the oldest
//! line has waited `flush_interval`. Outcomes: 2xx acknowledged; 413 halves the request size;
//! 400/422 bisect the request to isolate the bad lines, which are set aside with the reason
//! (`rejected.lp` in the state directory) while the rest is resent; 401/403/404 keep the data
//! and log loudly; 429/5xx/network errors back off (capped, with jitter; `Retry-After` wins).
//! It exits when every sender is gone, after a last flush.

pub mod buffer;
pub mod sink;

use crate::backoff::Backoff;
use crate::status::{lock, unix_ms, Beat, UploaderStatus};
use buffer::Buffer;
use crossbeam_channel::{select, Receiver};
use sink::{Outcome, Sink};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub struct Settings {
    pub max_points_per_write: usize,
    pub flush_interval: Duration,
    /// Where rejected lines are kept; `None` logs them instead.
    pub rejected_file: Option<PathBuf>,
    /// How long the last flush may take on shutdown.
    pub shutdown_grace: Duration,
}

/// Result of sending one prefix of the buffer.
enum Sent {
    /// This many leading lines are done (stored or set aside).
    Done(usize),
    /// This many are done; the rest must wait (back off).
    Partial(usize, Outcome),
}

pub struct Uploader {
    settings: Settings,
    sink: Box<dyn Sink>,
    buffer: Box<dyn Buffer>,
    status: Arc<Mutex<UploaderStatus>>,
    batch: usize,
    backoff: Backoff,
    retry_at: Option<Instant>,
    oldest_since: Option<Instant>,
    last_problem: Option<String>,
}

impl Uploader {
    pub fn new(
        settings: Settings,
        sink: Box<dyn Sink>,
        buffer: Box<dyn Buffer>,
        status: Arc<Mutex<UploaderStatus>>,
    ) -> Self {
        lock(&status).sink = sink.describe();
        let batch = settings.max_points_per_write.max(1);
        Uploader {
            settings,
            sink,
            buffer,
            status,
            batch,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            retry_at: None,
            oldest_since: None,
            last_problem: None,
        }
    }

    fn push(&mut self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        if self.buffer.is_empty() {
            self.oldest_since = Some(Instant::now());
        }
        self.buffer.push(lines);
    }

    /// When the next write request is due, if any.
    fn next_flush(&self) -> Option<Instant> {
        if self.buffer.is_empty() {
            return None;
        }
        let due = if self.buffer.len() >= self.batch {
            Instant::now()
        } else {
            self.oldest_since.unwrap_or_else(Instant::now) + self.settings.flush_interval
        };
        Some(match self.retry_at {
            Some(r) => due.max(r),
            None => due,
        })
    }

    fn set_aside(&mut self, line: &str, reason: &str) {
        let when = unix_ms(SystemTime::now());
        let kept = self.settings.rejected_file.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| writeln!(f, "# {when} {}\n{line}", reason.replace('\n', " ")))
                .ok()
                .map(|()| p.display().to_string())
        });
        match kept {
            Some(p) => {
                log::error!("InfluxDB rejected a point ({reason}); set aside in {p}: {line}")
            }
            None => log::error!("InfluxDB rejected a point ({reason}); dropped: {line}"),
        }
        lock(&self.status).rejected += 1;
    }

    /// Send `lines`; on 400, bisect to find the bad ones.
    fn send(&mut self, lines: &[String]) -> Sent {
        let body = lines.join("\n");
        let outcome = self.sink.write(&body);
        {
            let mut st = lock(&self.status);
            st.write_requests += 1;
        }
        match outcome {
            Outcome::Accepted => Sent::Done(lines.len()),
            Outcome::Rejected(reason) if lines.len() == 1 => {
                self.set_aside(&lines[0], &reason);
                Sent::Done(1)
            }
            Outcome::Rejected(_) => {
                let mid = lines.len() / 2;
                match self.send(&lines[..mid]) {
                    Sent::Done(a) => match self.send(&lines[mid..]) {
                        Sent::Done(b) => Sent::Done(a + b),
                        Sent::Partial(b, o) => Sent::Partial(a + b, o),
                    },
                    p => p,
                }
            }
            Outcome::TooLarge if lines.len() == 1 => {
                self.set_aside(&lines[0], "413 request too large for a single point");
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
        let sent = self.send(&lines);
        let (done, problem) = match sent {
            Sent::Done(d) => (d, None),
            Sent::Partial(d, o) => (d, Some(o)),
        };
        self.buffer.ack(done);
        let now = Instant::now();
        let mut st = lock(&self.status);
        st.points_written += done as u64;
        st.buffered = self.buffer.len();
        st.dropped = self.buffer.dropped();
        match problem {
            None => {
                self.backoff.reset();
                self.retry_at = None;
                st.last_ok_ms = Some(unix_ms(SystemTime::now()));
                st.last_result = format!("ok: {done} points");
                if let Some(p) = self.last_problem.take() {
                    log::info!(
                        "InfluxDB writes work again (after: {p}); {} points waiting",
                        self.buffer.len()
                    );
                }
            }
            Some(Outcome::TooLarge) => {}
            Some(o) => {
                let (text, wait) = match &o {
                    Outcome::Refused(code, body) => (
                        format!("HTTP {code} {body}: check the URL, token/credentials, org and bucket/database; points are kept"),
                        self.backoff.next_delay().max(Duration::from_secs(10)),
                    ),
                    Outcome::Retry { after, reason } => {
                        (reason.clone(), after.unwrap_or_else(|| self.backoff.next_delay()))
                    }
                    _ => ("unexpected".into(), self.backoff.next_delay()),
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
                st.last_result = text;
                self.retry_at = Some(now + wait);
            }
        }
        if self.buffer.is_empty() {
            self.oldest_since = None;
        } else if done > 0 {
            self.oldest_since = Some(now.min(self.oldest_since.unwrap_or(now)));
        }
    }

    /// The thread's loop. Returns when every sender is gone and the last flush is done.
    pub fn run(mut self, rx: Receiver<Vec<String>>, beat: Arc<Beat>) {
        loop {
            beat.check_in();
            let now = Instant::now();
            let wait = self
                .next_flush()
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            select! {
                recv(rx) -> msg => match msg {
                    Ok(lines) => { self.push(lines); continue; }
                    Err(_) => break,
                },
                default(wait) => {}
            }
            if self.next_flush().is_some_and(|t| t <= Instant::now()) {
                self.flush_once();
            }
        }
        self.finish();
    }

    /// Last flush on shutdown, bounded by the grace period.
    fn finish(&mut self) {
        let deadline = Instant::now() + self.settings.shutdown_grace;
        self.retry_at = None;
        while !self.buffer.is_empty() && Instant::now() < deadline {
            self.flush_once();
            if self.retry_at.is_some() {
                break;
            }
        }
        if !self.buffer.is_empty() {
            log::warn!(
                "shutting down with {} points not delivered to InfluxDB",
                self.buffer.len()
            );
        }
    }
}

#[cfg(test)]
mod tests;
