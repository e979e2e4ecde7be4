//! Finish detection: a machine's `process` register moving INTO its finish code reports the
//! batch, once. The detector is armed only when the process has been seen running (a running
//! code, by default any code that is neither idle nor finish) and disarmed when it fires, so
//! there is no event while the code stays at finish, after a gateway restart, after an HMI
//! reboot (finish -> 0 -> finish) or after a failed read. The batch reported is the last
//! non-empty batch name seen while the process was running (at the finish the HMI may already
//! show the next one). State is persisted only when it changes.

use super::{new_id, state, FinishEvent};
use crate::config::Finish;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FinishState {
    pub armed: bool,
    /// Last non-empty batch name seen while running.
    pub batch: String,
    /// An event fired but not yet confirmed stored by the outbox.
    pub pending: Option<FinishEvent>,
}

pub(crate) struct FinishDetector {
    cfg: Finish,
    machine: String,
    path: PathBuf,
    state: FinishState,
}

impl FinishDetector {
    /// Refused (nothing changed) when the state file is in a newer format.
    pub(crate) fn load(cfg: Finish, machine: &str, path: PathBuf) -> Result<Self, state::Newer> {
        let state = state::load(&path)?.unwrap_or_default();
        Ok(FinishDetector {
            cfg,
            machine: machine.to_string(),
            path,
            state,
        })
    }

    pub(crate) fn register(&self) -> usize {
        self.cfg.register
    }

    pub(crate) fn batch_register(&self) -> Option<usize> {
        self.cfg.batch_register
    }

    pub(crate) fn state(&self) -> &FinishState {
        &self.state
    }

    fn is_running(&self, code: i64) -> bool {
        match &self.cfg.running_codes {
            Some(codes) => codes.contains(&code),
            None => code != self.cfg.finish_code && !self.cfg.idle_codes.contains(&code),
        }
    }

    fn save(&self) {
        if let Err(e) = state::save(&self.path, &self.state) {
            log::error!(
                "machine {}: cannot save the finish detector state to {}: {e}",
                self.machine,
                self.path.display()
            );
        }
    }

    /// Feed one poll: `process` is the process code just read (`None`: not read this poll or
    /// the read failed), `batch` the latest batch name. Returns the event when a finish fires.
    pub(crate) fn observe(
        &mut self,
        process: Option<i64>,
        batch: Option<&str>,
        time_ms: i64,
        unsynced: bool,
    ) -> Option<FinishEvent> {
        let code = process?;
        let before = self.state.clone();
        let running = self.is_running(code);
        if running {
            self.state.armed = true;
            if let Some(b) = batch.map(str::trim).filter(|b| !b.is_empty()) {
                self.state.batch = b.to_string();
            }
        }
        let mut fired = None;
        if code == self.cfg.finish_code && self.state.armed {
            let event = FinishEvent {
                id: new_id(),
                machine: self.machine.clone(),
                batch: self.state.batch.clone(),
                code,
                time_ms,
                unsynced,
                at: Some(Instant::now()),
            };
            self.state.armed = false;
            self.state.pending = Some(event.clone());
            fired = Some(event);
        }
        if self.state != before {
            self.save();
        }
        fired
    }

    /// The outbox stored event `id`: nothing is pending any more.
    pub(crate) fn persisted(&mut self, id: &str) {
        if self.state.pending.as_ref().is_some_and(|e| e.id == id) {
            self.state.pending = None;
            self.save();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(tag: &str) -> FinishDetector {
        let path = std::env::temp_dir().join(format!(
            "dg-finish-{tag}-{}-{}.json",
            std::process::id(),
            fastrand::u64(..)
        ));
        FinishDetector::load(
            Finish {
                register: 0,
                finish_code: 305,
                batch_register: Some(1),
                idle_codes: vec![0],
                running_codes: None,
            },
            "JET-01",
            path,
        )
        .expect("state")
    }

    fn run(d: &mut FinishDetector, codes: &[Option<i64>], batch: &str) -> usize {
        codes
            .iter()
            .filter(|c| d.observe(**c, Some(batch), 1, false).is_some())
            .count()
    }

    #[test]
    fn one_event_per_finish_even_when_held_rebooted_or_unreadable() {
        let mut d = detector("once");
        // Running, then finish held for many polls, a failed read at the finish, an HMI reboot.
        let codes = [
            Some(101),
            Some(102),
            Some(305),
            Some(305),
            None,
            Some(305),
            Some(0),
            Some(305),
            Some(305),
        ];
        assert_eq!(run(&mut d, &codes, "B1"), 1);
        // Running again re-arms.
        assert_eq!(run(&mut d, &[Some(201), Some(305)], "B2"), 1);
    }

    #[test]
    fn a_restart_at_the_finish_does_not_report_again() {
        let mut d = detector("restart");
        assert_eq!(run(&mut d, &[Some(101), Some(305)], "B1"), 1);
        let path = d.path.clone();
        let cfg = d.cfg.clone();
        let mut again = FinishDetector::load(cfg, "JET-01", path).expect("state");
        assert_eq!(run(&mut again, &[Some(305), Some(305)], "B1"), 0);
        assert!(
            again.state().pending.is_some(),
            "the unconfirmed event survives the restart"
        );
    }

    #[test]
    fn a_fresh_gateway_seeing_a_finish_first_does_not_report() {
        let mut d = detector("fresh");
        assert_eq!(run(&mut d, &[Some(305), Some(0), Some(305)], "B1"), 0);
    }

    #[test]
    fn the_batch_is_the_last_one_seen_while_running() {
        let mut d = detector("batch");
        d.observe(Some(101), Some("BATCH-7"), 1, false);
        d.observe(Some(101), Some(""), 2, false);
        // At the finish the HMI already shows the next batch.
        let e = d
            .observe(Some(305), Some("BATCH-8"), 3, false)
            .expect("fires");
        assert_eq!(e.batch, "BATCH-7");
        assert_eq!(e.machine, "JET-01");
        d.persisted(&e.id);
        assert!(d.state().pending.is_none());
    }

    #[test]
    fn configured_running_codes_are_the_only_ones_that_arm() {
        let mut d = detector("codes");
        d.cfg.running_codes = Some(vec![101]);
        assert_eq!(
            run(&mut d, &[Some(999), Some(305)], "B"),
            0,
            "999 is not a running code"
        );
        assert_eq!(run(&mut d, &[Some(101), Some(305)], "B"), 1);
    }
}
