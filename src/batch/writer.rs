//! Safe write-back of a new batch into one machine, run by the thread that owns the machine's
//! endpoint. Only the configured batch area and batch handshake register are ever written.
//! Each order goes through: validation (length, characters), the optional identity check (a
//! register that must hold a configured value, so a wrong slave id on a shared bus cannot put
//! a batch into the wrong machine), the handshake check (the HMI must have taken the previous
//! batch unless `overwrite_unconsumed`), then: state `writing` persisted, the name written
//! (function 16), the handshake set (function 6 or 16), both read back and compared (the
//! handshake may already be 0 again if the HMI was quick), state `written` persisted, and a
//! confirmation handed to the outbox; `confirmed` once the outbox has stored it. A crash after
//! `writing` is resolved by reading back (the name there means it was written: confirm, do not
//! write again); a crash after `written` leads to a confirmation, not a second write. Every
//! write, refused write and would-be write (shadow mode) goes to the audit log.

use super::{audit, fetch::check_name, new_id, rfc3339, state, BatchOrder, Confirmation};
use crate::clock::Clock;
use crate::config::{BatchWrite, Register};
use crate::modbus::codec::Reply;
use crate::modbus::{Client, ModbusError};
use crate::registers::{self, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How many times a write that does not read back is tried before giving up.
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Writing,
    Written,
    Confirmed,
    Shadow,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Written {
    pub name: String,
    pub entry_id: Option<String>,
    pub phase: Phase,
    /// Idempotency key of the confirmation.
    pub key: String,
    pub time_ms: i64,
    /// The clock was not synchronized at `time_ms`.
    #[serde(default)]
    pub unsynced: bool,
    /// `time_ms` on this process's monotonic clock; `None` after a restart.
    #[serde(skip)]
    pub at: Option<Instant>,
    #[serde(default)]
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WriterState {
    pub last: Option<Written>,
}

/// The batch to write next: from the API (`offer`), or the last one again after a write that
/// did not read back.
#[derive(Debug, Clone)]
struct Wanted {
    name: String,
    entry_id: Option<String>,
}

pub(crate) struct BatchWriter {
    cfg: BatchWrite,
    machine: String,
    endpoint: String,
    unit: u8,
    identity: Option<(Register, i64)>,
    shadow: bool,
    path: PathBuf,
    audit: PathBuf,
    state: WriterState,
    pending: Option<Wanted>,
    /// The API stopped listing this machine after the last confirmation: the same name
    /// listed again is a new batch (a re-dye), not the old one still waiting to be removed.
    unlisted_since_confirm: bool,
    waiting_logged: bool,
    /// Stamps writes and confirmations; made before the clock is synchronized, they carry
    /// `unsynced` and the outbox holds their confirmation for the clock.
    clock: Arc<Clock>,
}

#[derive(Debug)]
enum StepError {
    Device(ModbusError),
    Refused(String),
}

impl From<ModbusError> for StepError {
    fn from(e: ModbusError) -> Self {
        StepError::Device(e)
    }
}

impl BatchWriter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        cfg: BatchWrite,
        machine: &str,
        endpoint: &str,
        unit: u8,
        identity: Option<(Register, i64)>,
        shadow: bool,
        path: PathBuf,
        audit: PathBuf,
        clock: Arc<Clock>,
    ) -> Result<Self, state::Newer> {
        let state = state::load(&path)?.unwrap_or_default();
        Ok(BatchWriter {
            cfg,
            machine: machine.to_string(),
            endpoint: endpoint.to_string(),
            unit,
            identity,
            shadow,
            path,
            audit,
            state,
            pending: None,
            unlisted_since_confirm: false,
            waiting_logged: false,
            clock,
        })
    }

    fn save(&self) {
        if let Err(e) = state::save(&self.path, &self.state) {
            log::error!(
                "machine {}: cannot save the batch writer state to {}: {e}",
                self.machine,
                self.path.display()
            );
        }
    }

    fn audit(&self, action: &str, extra: serde_json::Value) {
        let mut entry = json!({
            "time": rfc3339(crate::clock::wall_ms()),
            "machine": self.machine,
            "endpoint": self.endpoint,
            "unit_id": self.unit,
            "action": action,
        });
        if let (Some(e), Some(x)) = (entry.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                e.insert(k.clone(), v.clone());
            }
        }
        audit::record(&self.audit, &entry);
    }

    /// A new batch from the API; ignored when it is the one already handled or in progress.
    pub(crate) fn offer(&mut self, order: BatchOrder) {
        if let Some(last) = &self.state.last {
            let same = match (&order.entry_id, &last.entry_id) {
                (Some(a), Some(b)) => a == b,
                (None, None) => {
                    order.name == last.name
                        && (last.phase != Phase::Confirmed || !self.unlisted_since_confirm)
                }
                _ => false,
            };
            if same {
                return;
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.name == order.name && p.entry_id == order.entry_id)
        {
            return;
        }
        log::info!(
            "machine {}: new batch `{}` from the API",
            self.machine,
            order.name
        );
        self.waiting_logged = false;
        self.pending = Some(Wanted {
            name: order.name,
            entry_id: order.entry_id,
        });
    }

    /// The API no longer lists a batch for this machine.
    pub(crate) fn not_listed(&mut self) {
        if self
            .state
            .last
            .as_ref()
            .is_some_and(|l| l.phase == Phase::Confirmed)
        {
            self.unlisted_since_confirm = true;
        }
    }

    /// True when `step` has something to do.
    pub(crate) fn has_work(&self) -> bool {
        self.pending.is_some()
            || self
                .state
                .last
                .as_ref()
                .is_some_and(|l| matches!(l.phase, Phase::Writing | Phase::Written))
    }

    /// The confirmation to (re)send, while one is owed.
    pub(crate) fn owed_confirmation(&self) -> Option<Confirmation> {
        let l = self
            .state
            .last
            .as_ref()
            .filter(|l| l.phase == Phase::Written)?;
        Some(Confirmation {
            key: l.key.clone(),
            machine: self.machine.clone(),
            batch: l.name.clone(),
            entry_id: l.entry_id.clone(),
            time_ms: l.time_ms,
            unsynced: l.unsynced,
            at: l.at,
        })
    }

    /// The outbox stored confirmation `key`.
    pub(crate) fn persisted(&mut self, key: &str) {
        if let Some(l) = self.state.last.as_mut() {
            if l.key == key && l.phase == Phase::Written {
                l.phase = Phase::Confirmed;
                self.unlisted_since_confirm = false;
                self.save();
            }
        }
    }

    fn read_area(&self, client: &mut Client) -> Result<(String, u16), ModbusError> {
        let text = match client.read(
            self.unit,
            crate::config::RegisterKind::Holding,
            self.cfg.address,
            self.cfg.registers,
        )? {
            Reply::Words(w) => registers::decode_string(&w, self.cfg.string_order),
            _ => String::new(),
        };
        let hs = match client.read(
            self.unit,
            crate::config::RegisterKind::Holding,
            self.cfg.handshake_address,
            1,
        )? {
            Reply::Words(w) => w.first().copied().unwrap_or(u16::MAX),
            _ => u16::MAX,
        };
        Ok((text, hs))
    }

    fn check_identity(&self, client: &mut Client) -> Result<(), StepError> {
        let Some((reg, want)) = &self.identity else {
            return Ok(());
        };
        let value = match client.read(self.unit, reg.kind, reg.address, reg.quantity())? {
            Reply::Words(w) => registers::decode_words(reg, &w).ok(),
            Reply::Bits(b) => b.first().map(|x| Value::Bool(*x)),
            _ => None,
        };
        let got = value.as_ref().and_then(Value::as_f64);
        if got != Some(*want as f64) {
            return Err(StepError::Refused(format!(
                "identity register `{}` holds {}, expected {want}: this is not the machine the config says",
                reg.name,
                value.map(|v| format!("{v:?}")).unwrap_or_else(|| "nothing readable".into())
            )));
        }
        Ok(())
    }

    /// Do the next step. Returns a confirmation to hand to the outbox when one is owed.
    pub(crate) fn step(&mut self, client: &mut Client) -> Option<Confirmation> {
        match self.try_step(client) {
            Ok(()) => {}
            Err(StepError::Device(e)) => {
                log::warn!("machine {}: batch write postponed: {e}", self.machine);
            }
            Err(StepError::Refused(why)) => {
                let name = self
                    .pending
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                log::error!(
                    "machine {}: batch `{name}` not written: {why}",
                    self.machine
                );
                self.audit("refused", json!({"batch": name, "reason": why}));
                self.pending = None;
            }
        }
        self.owed_confirmation()
    }

    fn try_step(&mut self, client: &mut Client) -> Result<(), StepError> {
        // A write that did not read back (or was cut by a crash): look at what the HMI holds.
        if let Some(last) = self
            .state
            .last
            .clone()
            .filter(|l| l.phase == Phase::Writing)
        {
            let (text, hs) = self.read_area(client)?;
            if text == last.name && (hs == 0 || hs == 1) {
                log::info!(
                    "machine {}: batch `{}` is in the HMI; confirming",
                    self.machine,
                    last.name
                );
                self.set_phase(Phase::Written);
                return Ok(());
            }
            if last.attempts >= MAX_ATTEMPTS {
                log::error!(
                    "machine {}: batch `{}` did not read back after {} attempts (HMI shows `{text}`); giving up",
                    self.machine, last.name, last.attempts
                );
                self.audit("gave_up", json!({"batch": last.name, "read_back": text}));
                self.set_phase(Phase::Failed);
                return Ok(());
            }
            if self.pending.is_none() {
                self.pending = Some(Wanted {
                    name: last.name.clone(),
                    entry_id: last.entry_id.clone(),
                });
            }
        }
        let Some(order) = self.pending.clone() else {
            return Ok(());
        };
        check_name(&order.name, &self.cfg).map_err(StepError::Refused)?;
        let words =
            registers::encode_string(&order.name, self.cfg.registers, self.cfg.string_order);
        let addresses = json!({"batch_area": [self.cfg.address, self.cfg.address + self.cfg.registers - 1],
            "handshake": self.cfg.handshake_address});
        if self.shadow || !self.cfg.enabled {
            log::info!(
                "machine {}: {} would write batch `{}` to holding {}..{} and 1 to holding {}",
                self.machine,
                if self.shadow {
                    "shadow mode"
                } else {
                    "writes disabled:"
                },
                order.name,
                self.cfg.address,
                self.cfg.address + self.cfg.registers - 1,
                self.cfg.handshake_address
            );
            self.audit(
                "write",
                json!({"shadow": true, "batch": order.name, "entry_id": order.entry_id,
                "addresses": addresses, "values": words, "reason": "new batch from the API"}),
            );
            let (time_ms, unsynced) = self.clock.stamp();
            self.state.last = Some(Written {
                name: order.name,
                entry_id: order.entry_id,
                phase: Phase::Shadow,
                key: new_id(),
                time_ms,
                unsynced,
                at: Some(Instant::now()),
                attempts: 0,
            });
            self.save();
            self.pending = None;
            return Ok(());
        }
        self.check_identity(client)?;
        let (_, hs) = self.read_area(client)?;
        // Retrying our own write that did not read back: the handshake may be our own 1.
        let retry = self
            .state
            .last
            .as_ref()
            .is_some_and(|l| l.name == order.name && l.phase == Phase::Writing);
        if hs == 1 && !self.cfg.overwrite_unconsumed && !retry {
            if !self.waiting_logged {
                log::warn!(
                    "machine {}: the HMI has not taken the previous batch yet (handshake still 1); `{}` waits",
                    self.machine, order.name
                );
                self.waiting_logged = true;
            }
            return Ok(());
        }
        let attempts = self
            .state
            .last
            .as_ref()
            .filter(|l| l.name == order.name && l.phase == Phase::Writing)
            .map_or(0, |l| l.attempts)
            + 1;
        let key = new_id();
        let (time_ms, unsynced) = self.clock.stamp();
        self.state.last = Some(Written {
            name: order.name.clone(),
            entry_id: order.entry_id.clone(),
            phase: Phase::Writing,
            key,
            time_ms,
            unsynced,
            at: Some(Instant::now()),
            attempts,
        });
        self.save();
        self.audit("write", json!({"batch": order.name, "entry_id": order.entry_id, "addresses": addresses,
            "values": words, "handshake_value": 1, "attempt": attempts, "reason": "new batch from the API"}));
        client.write_multiple(self.unit, self.cfg.address, &words)?;
        if self.cfg.handshake_fc16 {
            client.write_multiple(self.unit, self.cfg.handshake_address, &[1])?;
        } else {
            client.write_single(self.unit, self.cfg.handshake_address, 1)?;
        }
        let (text, hs) = self.read_area(client)?;
        // The handshake may already be back at 0 if the HMI took the batch at once.
        if text == order.name && (hs == 1 || hs == 0) {
            log::info!(
                "machine {}: batch `{}` written and read back (handshake {hs})",
                self.machine,
                order.name
            );
            self.audit(
                "verified",
                json!({"batch": order.name, "handshake_read_back": hs}),
            );
            self.set_phase(Phase::Written);
            self.pending = None;
        } else {
            log::error!(
                "machine {}: batch `{}` read back as `{text}` with handshake {hs}; will check and retry",
                self.machine, order.name
            );
            self.audit(
                "verify_failed",
                json!({"batch": order.name, "read_back": text, "handshake_read_back": hs}),
            );
        }
        Ok(())
    }

    fn set_phase(&mut self, phase: Phase) {
        if let Some(l) = self.state.last.as_mut() {
            l.phase = phase;
            if phase == Phase::Written {
                (l.time_ms, l.unsynced) = self.clock.stamp();
                l.at = Some(Instant::now());
            }
        }
        if phase != Phase::Writing {
            self.pending = None;
        }
        self.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> BatchWriter {
        let dir = std::env::temp_dir().join(format!(
            "dg-writer-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let cfg = BatchWrite::area(100, 10, 120);
        BatchWriter::load(
            cfg,
            "JET-01",
            "tcp://h:502",
            1,
            None,
            false,
            dir.join("w.json"),
            dir.join("audit.jsonl"),
            Arc::new(crate::clock::Clock::trusted()),
        )
        .expect("state")
    }

    fn order(name: &str, id: Option<&str>) -> BatchOrder {
        BatchOrder {
            machine: crate::batch::MachineId(0),
            name: name.into(),
            entry_id: id.map(String::from),
        }
    }

    #[test]
    fn a_confirmed_name_is_written_again_only_after_the_api_stopped_listing_it() {
        let mut w = writer();
        w.state.last = Some(Written {
            name: "LOT1".into(),
            entry_id: None,
            phase: Phase::Written,
            key: "k".into(),
            time_ms: 0,
            unsynced: false,
            at: None,
            attempts: 1,
        });
        w.offer(order("LOT1", None));
        assert!(
            w.pending.is_none(),
            "written, not yet confirmed: never again"
        );
        w.persisted("k");
        w.offer(order("LOT1", None));
        assert!(
            w.pending.is_none(),
            "still listed after the confirmation: the old batch"
        );
        w.not_listed();
        w.offer(order("LOT1", None));
        assert_eq!(
            w.pending.as_ref().map(|p| p.name.as_str()),
            Some("LOT1"),
            "listed again later: a re-dye"
        );
    }

    #[test]
    fn entry_ids_decide_when_the_api_gives_them() {
        let mut w = writer();
        w.state.last = Some(Written {
            name: "LOT1".into(),
            entry_id: Some("7".into()),
            phase: Phase::Confirmed,
            key: "k".into(),
            time_ms: 0,
            unsynced: false,
            at: None,
            attempts: 1,
        });
        w.offer(order("LOT1", Some("7")));
        assert!(w.pending.is_none());
        w.offer(order("LOT1", Some("8")));
        assert!(w.pending.is_some(), "same name, new entry: a new batch");
    }
}
