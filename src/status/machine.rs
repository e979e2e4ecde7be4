//! One machine's entry on the status board as its poller writes it. The poller reports facts
//! (a poll: answered or not, requests, latency, points; an error; the online state); this
//! module turns them into what the page shows: counters, the latency histogram, the last
//! value of every register, the process code and batch, and the sparkline samples
//! (temperature and level, one per `SPARK_EVERY`).

use super::{lock, MachineStatus, HISTORY_LEN};
use crate::clock::unix_ms;
use crate::config::{Machine, Measurement};
use crate::registers::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often a sparkline sample is taken.
const SPARK_EVERY: Duration = Duration::from_secs(10);

/// What one poll of one group did.
pub(crate) struct Polled<'a> {
    /// The measurements of the group polled: their registers' values are fresh.
    pub fresh: &'a [Measurement],
    /// The machine answered at least one request.
    pub answered: bool,
    pub requests: u64,
    pub latency: Duration,
    /// Lines produced.
    pub points: usize,
    /// When the poll began.
    pub at: SystemTime,
}

/// A poller's handle on one machine's entry.
pub(crate) struct MachineEntry {
    status: Arc<Mutex<MachineStatus>>,
    /// Registers shown as sparklines (temperature, level), and when the last sample was taken.
    spark: (Option<usize>, Option<usize>),
    spark_at: Option<Instant>,
}

impl MachineEntry {
    /// Take the entry `status` for `machine` polled through `endpoint`.
    pub(crate) fn new(
        status: Arc<Mutex<MachineStatus>>,
        machine: &Machine,
        endpoint: &str,
    ) -> Self {
        {
            let mut s = lock(&status);
            s.name = machine.name.clone();
            s.endpoint = endpoint.to_string();
            s.unit_id = machine.unit_id;
        }
        let named = |word: &str| {
            machine
                .registers
                .iter()
                .position(|r| r.name.to_ascii_lowercase().contains(word))
        };
        MachineEntry {
            status,
            spark: (named("temp"), named("level")),
            spark_at: None,
        }
    }

    /// After a poll: counters, histogram and, when it answered, the values (`latest` gives a
    /// register's last value by index).
    pub(crate) fn polled<'v>(
        &mut self,
        machine: &Machine,
        poll: Polled<'_>,
        latest: impl Fn(usize) -> Option<&'v Value>,
    ) {
        let mut st = lock(&self.status);
        st.polls += 1;
        st.requests += poll.requests;
        st.last_latency_ms = poll.latency.as_secs_f64() * 1000.0;
        st.observe_latency(poll.latency.as_secs_f64());
        st.points += poll.points as u64;
        if !poll.answered {
            return;
        }
        st.last_ok_ms = Some(unix_ms(poll.at));
        for (r, reg) in machine.registers.iter().enumerate() {
            if poll.fresh.contains(&reg.measurement) {
                let v = latest(r).map(value_json).unwrap_or(serde_json::Value::Null);
                // Replace in place: no key allocation per register per poll.
                match st.values.get_mut(&reg.name) {
                    Some(slot) => *slot = v,
                    None => {
                        st.values.insert(reg.name.clone(), v);
                    }
                }
            }
        }
        if let Some(f) = &machine.finish {
            st.process_code = latest(f.register)
                .and_then(Value::as_f64)
                .map(|v| v.round() as i64);
            if let Some(Value::Str(b)) = f.batch_register.and_then(&latest) {
                st.batch = Some(b.clone());
            }
        }
        let now = Instant::now();
        if self
            .spark_at
            .is_none_or(|t| now.duration_since(t) >= SPARK_EVERY)
        {
            let get = |i: Option<usize>| i.and_then(&latest).and_then(Value::as_f64);
            st.history
                .push_back((unix_ms(poll.at), get(self.spark.0), get(self.spark.1)));
            while st.history.len() > HISTORY_LEN {
                st.history.pop_front();
            }
            self.spark_at = Some(now);
        }
    }

    /// An error of `kind` (a `ModbusError::kind`, or "connection").
    pub(crate) fn error(&self, kind: &'static str, text: &str) {
        let mut st = lock(&self.status);
        *st.errors.entry(kind).or_insert(0) += 1;
        st.last_error = Some(text.to_string());
    }

    pub(crate) fn online(&self, online: bool) {
        lock(&self.status).online = Some(online);
    }

    /// The online state, polls and errors so far (for the poller's periodic summary).
    pub(crate) fn counts(&self) -> (Option<bool>, u64, u64) {
        let st = lock(&self.status);
        (st.online, st.polls, st.errors.values().sum())
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Float(f) => serde_json::Value::from(*f),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::Str(s) => serde_json::Value::from(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn machine() -> Machine {
        let text = r#"{"machines": [{"name": "A", "ip_address": "gw", "slave_id": 1,
            "registers": [
              {"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"},
              {"name": "level", "kind": "holding", "address": 1, "type": "int16", "measurement": "medium_frequency_data"}]}]}"#;
        let cfg = config::validate_raw(config::parse(text).expect("parse")).expect("valid");
        cfg.machines[0].clone()
    }

    #[test]
    fn a_poll_updates_counters_fresh_values_and_one_sparkline_sample_per_interval() {
        let m = machine();
        let status = Arc::new(Mutex::new(MachineStatus::default()));
        let mut e = MachineEntry::new(status.clone(), &m, "tcp://gw:502");
        let values = [Some(Value::Float(71.5)), Some(Value::Int(40))];
        let poll = |fresh, answered| Polled {
            fresh,
            answered,
            requests: 1,
            latency: Duration::from_millis(3),
            points: 1,
            at: SystemTime::now(),
        };
        let hf = [Measurement::HighFrequency];
        e.polled(&m, poll(&hf, true), |r| values[r].as_ref());
        e.polled(&m, poll(&hf, false), |r| values[r].as_ref());
        let st = lock(&status).clone();
        assert_eq!((st.name.as_str(), st.unit_id, st.polls), ("A", 1, 2));
        assert_eq!(st.latency_buckets[0], 2, "3 ms is in the first bucket");
        assert_eq!(st.values.get("temperature"), Some(&serde_json::json!(71.5)));
        assert_eq!(st.values.get("level"), None, "not in the group polled");
        assert_eq!(st.history.len(), 1);
        assert_eq!((st.history[0].1, st.history[0].2), (Some(71.5), Some(40.0)));
        e.error("timeout", "no answer");
        e.online(false);
        assert_eq!(e.counts(), (Some(false), 2, 1));
    }
}
