//! Change detection: which points a poll produces. Each measurement of a machine is written
//! when one of its fields changed since the last written point (beyond the register's
//! deadband) or when the heartbeat interval has passed; `maintenance_events` is written only
//! when one of the machine's triggers fires (an edge on a register), never as a heartbeat.
//! Values compare against the last *written* value, so a slow drift is still recorded once it
//! exceeds the deadband.

use crate::config::{Edge, Machine, Measurement, Trigger};
use crate::lineproto;
use crate::registers::Value;
use std::time::{Duration, Instant};

struct Written {
    at: Instant,
    values: Vec<Option<Value>>,
}

pub(crate) struct Detector {
    prefixes: [String; 4],
    /// `machine_state,machine=...`: the machine's online state, so dashboards can tell a
    /// flat line from an offline machine.
    state_prefix: String,
    keys: Vec<String>,
    deadbands: Vec<f64>,
    by_measurement: [Vec<usize>; 4],
    latest: Vec<Option<Value>>,
    written: [Option<Written>; 4],
    heartbeat: Duration,
    triggers: Vec<Trigger>,
    trigger_prev: Vec<Option<Value>>,
    /// Maintenance events waiting for the next `emit`: (trigger register, previous value).
    fired: Vec<(usize, Value)>,
}

impl Detector {
    pub(crate) fn new(m: &Machine, global_tags: &[(String, String)], heartbeat: Duration) -> Self {
        let mut tags: Vec<(String, String)> = global_tags.to_vec();
        for (k, v) in &m.tags {
            tags.retain(|(gk, _)| gk != k);
            tags.push((k.clone(), v.clone()));
        }
        let prefixes =
            Measurement::ALL.map(|meas| lineproto::series_prefix(meas.as_str(), &m.name, &tags));
        let state_prefix = lineproto::series_prefix(STATE_MEASUREMENT, &m.name, &tags);
        let by_measurement = Measurement::ALL.map(|meas| {
            (0..m.registers.len())
                .filter(|&i| m.registers[i].measurement == meas)
                .collect()
        });
        Detector {
            prefixes,
            state_prefix,
            keys: m
                .registers
                .iter()
                .map(|r| lineproto::escape_key(&r.name))
                .collect(),
            deadbands: m.registers.iter().map(|r| r.deadband).collect(),
            by_measurement,
            latest: vec![None; m.registers.len()],
            written: [None, None, None, None],
            heartbeat,
            triggers: m.triggers.clone(),
            trigger_prev: vec![None; m.triggers.len()],
            fired: Vec::new(),
        }
    }

    /// The last value read of a register (`None` if its last read failed).
    pub(crate) fn latest(&self, register: usize) -> Option<&Value> {
        self.latest[register].as_ref()
    }

    /// Record this poll's value of `register` (`None`: it could not be read).
    pub(crate) fn update(&mut self, register: usize, value: Option<Value>) {
        if let Some(v) = &value {
            for (t, trig) in self.triggers.iter().enumerate() {
                if trig.register != register {
                    continue;
                }
                if let Some(prev) = &self.trigger_prev[t] {
                    if fires(trig.edge, prev, v) {
                        self.fired.push((register, prev.clone()));
                    }
                }
                self.trigger_prev[t] = Some(v.clone());
            }
        }
        self.latest[register] = value;
    }

    /// Append the lines due for `measurements` (those just polled) to `out`.
    pub(crate) fn emit(
        &mut self,
        measurements: &[Measurement],
        now: Instant,
        ts_ms: i64,
        out: &mut Vec<String>,
    ) {
        for &meas in measurements {
            if meas == Measurement::Maintenance {
                continue;
            }
            let i = meas.index();
            let members = &self.by_measurement[i];
            let due = match &self.written[i] {
                None => true,
                Some(w) => {
                    now.duration_since(w.at) >= self.heartbeat
                        || members.iter().enumerate().any(|(k, &r)| {
                            match (&self.latest[r], &w.values[k]) {
                                (Some(v), Some(old)) => v.changed_from(old, self.deadbands[r]),
                                (Some(_), None) => true,
                                (None, _) => false,
                            }
                        })
                }
            };
            if !due {
                continue;
            }
            let fields = members
                .iter()
                .filter_map(|&r| self.latest[r].as_ref().map(|v| (self.keys[r].as_str(), v)));
            if let Some(line) = lineproto::line(&self.prefixes[i], fields, ts_ms) {
                out.push(line);
                let values = members
                    .iter()
                    .enumerate()
                    .map(|(k, &r)| {
                        self.latest[r]
                            .clone()
                            .or_else(|| self.written[i].as_ref().and_then(|w| w.values[k].clone()))
                    })
                    .collect();
                self.written[i] = Some(Written { at: now, values });
            }
        }
        for (register, prev) in std::mem::take(&mut self.fired) {
            let i = Measurement::Maintenance.index();
            let prev_key = format!("{}_previous", self.keys[register]);
            let mut fields: Vec<(&str, &Value)> = Vec::new();
            if let Some(v) = &self.latest[register] {
                fields.push((self.keys[register].as_str(), v));
            }
            fields.push((prev_key.as_str(), &prev));
            for &r in &self.by_measurement[i] {
                if r != register {
                    if let Some(v) = &self.latest[r] {
                        fields.push((self.keys[r].as_str(), v));
                    }
                }
            }
            if let Some(line) = lineproto::line(&self.prefixes[i], fields.into_iter(), ts_ms) {
                out.push(line);
            }
        }
    }

    /// Every measurement's current values as lines, regardless of change (for `once`).
    pub(crate) fn snapshot(&self, ts_ms: i64, out: &mut Vec<String>) {
        for meas in Measurement::ALL {
            let i = meas.index();
            let fields = self.by_measurement[i]
                .iter()
                .filter_map(|&r| self.latest[r].as_ref().map(|v| (self.keys[r].as_str(), v)));
            if let Some(line) = lineproto::line(&self.prefixes[i], fields, ts_ms) {
                out.push(line);
            }
        }
    }
}

/// The measurement of the machines' online state.
pub(crate) const STATE_MEASUREMENT: &str = "machine_state";

impl Detector {
    /// `machine_state,... online=true <ts>`.
    pub(crate) fn state_line(&self, online: bool, ts_ms: i64) -> String {
        let v = Value::Bool(online);
        lineproto::line(&self.state_prefix, [("online", &v)].into_iter(), ts_ms).unwrap_or_default()
    }
}

fn fires(edge: Edge, prev: &Value, now: &Value) -> bool {
    let (p, n) = (prev.as_f64().unwrap_or(0.0), now.as_f64().unwrap_or(0.0));
    match edge {
        Edge::Decrease => n < p,
        Edge::Rise => p == 0.0 && n != 0.0,
        Edge::Change => now != prev,
    }
}

#[cfg(test)]
mod tests;
