//! One machine's part of the batch workflow, run by its endpoint's poller after each poll that
//! answered (only the poller may touch the device): the finish detector, the batch writer, and
//! the offering of what the outbox still has to store (every `OFFER_AGAIN` until it says it
//! has, through an `OwnerCommand::Persisted`). Without `Poller::with_batch` both parts are absent
//! and it does nothing.

use crate::batch::finish::FinishDetector;
use crate::batch::writer::BatchWriter;
use crate::batch::{self, BatchOrder, MachineId, OutboxItem};
use crate::change::Detector;
use crate::clock::Clock;
use crate::config::{Config, Machine, Measurement};
use crate::modbus::Client;
use crate::registers::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often items the outbox has not confirmed storing are offered again.
const OFFER_AGAIN: Duration = Duration::from_secs(10);

/// The finish detector and batch writer of one machine.
pub(crate) struct MachineBatch {
    id: MachineId,
    finish: Option<FinishDetector>,
    writer: Option<BatchWriter>,
    /// When pending outbox items were last offered (they are offered again until stored).
    offered_at: Option<Instant>,
}

impl MachineBatch {
    /// No batch workflow for this machine.
    pub(crate) fn off(id: MachineId) -> Self {
        MachineBatch {
            id,
            finish: None,
            writer: None,
            offered_at: None,
        }
    }

    /// The machine's finish detector and batch writer as configured, with their state files
    /// under the state directory. A part whose state file is of a newer format stays off
    /// (logged).
    pub(crate) fn load(
        config: &Config,
        machine: &Machine,
        id: MachineId,
        endpoint: &str,
        clock: &Arc<Clock>,
    ) -> Self {
        let name = &machine.name;
        let refused = |what: &str, e: batch::state::Newer| {
            log::error!("{name}: {what} off: {e}");
        };
        let finish = machine.finish.clone().and_then(|f| {
            FinishDetector::load(f, &machine.name, config.state().finish_state(&machine.name))
                .map_err(|e| refused("finish detection", e))
                .ok()
        });
        let writer = machine.batch_write.clone().and_then(|bw| {
            let identity = bw.identity.map(|(r, v)| (machine.registers[r].clone(), v));
            BatchWriter::load(
                bw,
                &machine.name,
                endpoint,
                machine.unit_id,
                identity,
                config.shadow_mode,
                config.state().batch_state(&machine.name),
                config.state().audit(),
                clock.clone(),
            )
            .map_err(|e| refused("batch writing", e))
            .ok()
        });
        MachineBatch {
            id,
            finish,
            writer,
            offered_at: None,
        }
    }

    /// A new batch from the API, to write when the machine is ready for it.
    pub(crate) fn offer(&mut self, order: BatchOrder) {
        if let Some(w) = self.writer.as_mut() {
            w.offer(order);
        }
    }

    /// The API no longer lists this machine.
    pub(crate) fn not_listed(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            w.not_listed();
        }
    }

    /// The outbox has stored the item `id`.
    pub(crate) fn persisted(&mut self, id: &str) {
        if let Some(f) = self.finish.as_mut() {
            f.persisted(id);
        }
        if let Some(w) = self.writer.as_mut() {
            w.persisted(id);
        }
    }

    /// After a poll that answered: finish detection on the values just read (`fresh` are the
    /// measurements of the group polled), pending outbox items, and one step of the batch
    /// writer when it has work and the connection is open (`client`). Returns what to give
    /// to the outbox.
    pub(crate) fn after_poll(
        &mut self,
        machine: &Machine,
        values: &Detector,
        fresh: &[Measurement],
        client: Option<&mut Client>,
        clock: &Clock,
        now: Instant,
    ) -> Vec<OutboxItem> {
        let id = self.id;
        let mut items = Vec::new();
        if let Some(f) = self.finish.as_mut() {
            let (time_ms, unsynced) = clock.stamp();
            let reg = f.register();
            let process = fresh
                .contains(&machine.registers[reg].measurement)
                .then(|| values.latest(reg).and_then(Value::as_f64))
                .flatten()
                .map(|v| v.round() as i64);
            let batch = f.batch_register().and_then(|b| match values.latest(b) {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            });
            if let Some(event) = f.observe(process, batch.as_deref(), time_ms, unsynced) {
                log::info!(
                    "machine {}: batch `{}` finished (process code {})",
                    machine.name,
                    event.batch,
                    event.code
                );
                self.offered_at = Some(now);
                items.push(OutboxItem::Finish { machine: id, event });
            }
        }
        // Offer again what the outbox has not confirmed storing.
        if self
            .offered_at
            .is_none_or(|t| now.duration_since(t) >= OFFER_AGAIN)
        {
            let mut offered = false;
            if let Some(e) = self.finish.as_ref().and_then(|f| f.state().pending.clone()) {
                items.push(OutboxItem::Finish {
                    machine: id,
                    event: e,
                });
                offered = true;
            }
            if let Some(c) = self.writer.as_ref().and_then(|w| w.owed_confirmation()) {
                items.push(OutboxItem::Confirm {
                    machine: id,
                    confirmation: c,
                });
                offered = true;
            }
            if offered {
                self.offered_at = Some(now);
            }
        }
        if let (Some(w), Some(client)) = (self.writer.as_mut(), client) {
            if w.has_work() {
                let before = w.owed_confirmation();
                if let Some(c) = w.step(client) {
                    if before.as_ref() != Some(&c) {
                        self.offered_at = Some(now);
                        items.push(OutboxItem::Confirm {
                            machine: id,
                            confirmation: c,
                        });
                    }
                }
            }
        }
        items
    }
}
