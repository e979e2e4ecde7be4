//! The endpoint's schedule, pure: no I/O, no channels, time passed in. A machine's registers
//! are grouped by poll interval (a *group*), each group pre-planned into read blocks
//! (`groups_for`, also what `check` prints). `Schedule` keeps when each (machine, group) is
//! due next, on a fixed grid from the start (missed slots are skipped, never drift), when a
//! machine that failed may be asked again (its own backoff), and when the endpoint may try to
//! connect again (the endpoint's backoff). Machines are numbered by their position among the
//! endpoint's machines.

use crate::backoff::Backoff;
use crate::config::{Machine, Measurement};
use crate::registers::plan::{self, ReadBlock};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Registers of one machine polled at one interval.
pub(crate) struct Group {
    pub measurements: Vec<Measurement>,
    pub interval: Duration,
    /// Shared so a poll can hold a block while the group's list may be split (no per-request
    /// allocation).
    pub blocks: Vec<Arc<ReadBlock>>,
}

/// A machine's groups, in measurement order, each planned into read blocks. Read-once
/// registers are in none of them (see `once_blocks`).
pub(crate) fn groups_for(m: &Machine) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for meas in Measurement::ALL {
        if !m.registers.iter().any(|r| r.measurement == meas) {
            continue;
        }
        let interval = m.intervals[meas.index()];
        match groups.iter_mut().find(|g| g.interval == interval) {
            Some(g) => g.measurements.push(meas),
            None => groups.push(Group {
                measurements: vec![meas],
                interval,
                blocks: Vec::new(),
            }),
        }
    }
    for g in &mut groups {
        let members: Vec<usize> = (0..m.registers.len())
            .filter(|&i| {
                g.measurements.contains(&m.registers[i].measurement) && !m.registers[i].read_once
            })
            .collect();
        g.blocks = shared(plan::plan(&m.registers, &members, &m.limits));
    }
    groups
}

/// The read blocks of a machine's read-once registers (identity, firmware), read once per
/// connection.
pub(crate) fn once_blocks(m: &Machine) -> Vec<Arc<ReadBlock>> {
    let once: Vec<usize> = (0..m.registers.len())
        .filter(|&i| m.registers[i].read_once)
        .collect();
    shared(plan::plan(&m.registers, &once, &m.limits))
}

fn shared(blocks: Vec<ReadBlock>) -> Vec<Arc<ReadBlock>> {
    blocks.into_iter().map(Arc::new).collect()
}

/// One machine's due times.
struct Slots {
    /// Per group: its interval and when it is due next.
    groups: Vec<(Duration, Instant)>,
    backoff: Backoff,
    /// After a failure: not asked again before this.
    resume_at: Option<Instant>,
}

/// When each (machine, group) of one endpoint is due, with the backoffs.
pub(crate) struct Schedule {
    machines: Vec<Slots>,
    connect_backoff: Backoff,
    next_connect: Instant,
}

impl Schedule {
    /// Every group of every machine is due at `start`. `intervals` are each machine's group
    /// intervals; both backoffs run from `backoff_initial` to `backoff_max`.
    pub(crate) fn new(
        intervals: impl IntoIterator<Item = Vec<Duration>>,
        start: Instant,
        backoff_initial: Duration,
        backoff_max: Duration,
    ) -> Self {
        Schedule {
            machines: intervals
                .into_iter()
                .map(|groups| Slots {
                    groups: groups.into_iter().map(|i| (i, start)).collect(),
                    backoff: Backoff::new(backoff_initial, backoff_max),
                    resume_at: None,
                })
                .collect(),
            connect_backoff: Backoff::new(backoff_initial, backoff_max),
            next_connect: start,
        }
    }

    /// The earliest (machine, group) due, and when: not before its machine's backoff, nor,
    /// while the endpoint is not `connected`, before the next connection attempt.
    pub(crate) fn next(&self, connected: bool) -> Option<(usize, usize, Instant)> {
        let mut best: Option<(usize, usize, Instant)> = None;
        for (mi, m) in self.machines.iter().enumerate() {
            for (gi, &(_, next_due)) in m.groups.iter().enumerate() {
                let mut due = next_due;
                if let Some(r) = m.resume_at {
                    due = due.max(r);
                }
                if !connected {
                    due = due.max(self.next_connect);
                }
                if best.is_none_or(|(_, _, b)| due < b) {
                    best = Some((mi, gi, due));
                }
            }
        }
        best
    }

    /// When the group is due next (ignoring backoffs).
    #[cfg(test)]
    pub(crate) fn due(&self, machine: usize, group: usize) -> Instant {
        self.machines[machine].groups[group].1
    }

    /// The group was polled at `now`: its next slot on its grid after `now`.
    pub(crate) fn advance(&mut self, machine: usize, group: usize, now: Instant) {
        let (interval, next_due) = &mut self.machines[machine].groups[group];
        *next_due += *interval;
        if *next_due <= now {
            // Missed slots are skipped, keeping the schedule on its grid (no drift).
            let behind = now.duration_since(*next_due).as_nanos() / interval.as_nanos().max(1);
            *next_due += *interval * (behind as u32 + 1);
        }
    }

    /// The machine answered: no backoff.
    pub(crate) fn machine_ok(&mut self, machine: usize) {
        let m = &mut self.machines[machine];
        m.backoff.reset();
        m.resume_at = None;
    }

    /// The machine failed at `now`: it is asked again after its next backoff delay.
    pub(crate) fn machine_failed(&mut self, machine: usize, now: Instant) {
        let m = &mut self.machines[machine];
        m.resume_at = Some(now + m.backoff.next_delay());
    }

    /// Whether the machine is backing off.
    #[cfg(test)]
    pub(crate) fn backing_off(&self, machine: usize) -> bool {
        self.machines[machine].resume_at.is_some()
    }

    /// The connection was opened.
    pub(crate) fn connected(&mut self) {
        self.connect_backoff.reset();
    }

    /// The connection failed (or broke) at `now`: the endpoint tries again after its next
    /// backoff delay.
    pub(crate) fn connect_failed(&mut self, now: Instant) {
        self.next_connect = now + self.connect_backoff.next_delay();
    }

    /// Allow a connection attempt at once (`once` asks every machine regardless).
    pub(crate) fn connect_now(&mut self, now: Instant) {
        self.next_connect = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn two_machines(t0: Instant) -> Schedule {
        // Machine 0: groups every 1 s and 5 s; machine 1: one group every 2 s.
        Schedule::new([vec![S, 5 * S], vec![2 * S]], t0, S, 8 * S)
    }

    #[test]
    fn every_group_is_due_at_the_start_then_on_its_interval() {
        let t0 = Instant::now();
        let mut s = two_machines(t0);
        assert_eq!(s.next(true), Some((0, 0, t0)));
        s.advance(0, 0, t0);
        s.advance(0, 1, t0);
        assert_eq!(s.next(true), Some((1, 0, t0)));
        s.advance(1, 0, t0);
        assert_eq!(s.next(true), Some((0, 0, t0 + S)));
        assert_eq!(s.due(0, 1), t0 + 5 * S);
        assert_eq!(s.due(1, 0), t0 + 2 * S);
    }

    #[test]
    fn the_schedule_skips_missed_slots_without_drifting() {
        let t0 = Instant::now();
        let mut s = two_machines(t0);
        s.advance(0, 0, t0);
        assert_eq!(s.due(0, 0), t0 + S);
        // Polled 3.5 s late: the next slot is on the original 1 s grid, at t0 + 4 s.
        s.advance(0, 0, t0 + Duration::from_millis(3500));
        assert_eq!(s.due(0, 0), t0 + 4 * S);
    }

    #[test]
    fn a_failed_machine_waits_for_its_backoff_alone() {
        let t0 = Instant::now();
        let mut s = two_machines(t0);
        s.machine_failed(0, t0);
        assert!(s.backing_off(0));
        // Machine 1 goes first; machine 0 comes back after at least half the initial delay.
        let (m, _, at) = s.next(true).expect("due");
        assert_eq!((m, at), (1, t0));
        s.advance(1, 0, t0);
        let (m, _, at) = s.next(true).expect("due");
        assert_eq!(m, 0);
        assert!(at >= t0 + S / 2 && at <= t0 + S, "{:?}", at - t0);
        // Failing again doubles the delay (within jitter); an answer ends the backoff.
        s.machine_failed(0, t0);
        let (_, _, at) = s.next(true).expect("due");
        assert!(at >= t0 + S, "{:?}", at - t0);
        s.machine_ok(0);
        assert!(!s.backing_off(0));
        assert_eq!(s.next(true), Some((0, 0, t0)));
    }

    #[test]
    fn while_disconnected_nothing_is_due_before_the_next_connection_attempt() {
        let t0 = Instant::now();
        let mut s = two_machines(t0);
        s.connect_failed(t0);
        let (_, _, at) = s.next(false).expect("due");
        assert!(at >= t0 + S / 2, "{:?}", at - t0);
        // Connected, the machines' own times count again.
        assert_eq!(s.next(true), Some((0, 0, t0)));
        s.connect_now(t0);
        assert_eq!(s.next(false), Some((0, 0, t0)));
        s.connected();
        s.connect_failed(t0);
        let (_, _, at) = s.next(false).expect("due");
        assert!(at <= t0 + S, "the backoff starts over after a connection");
    }

    #[test]
    fn an_endpoint_without_machines_has_nothing_due() {
        let s = Schedule::new(Vec::<Vec<Duration>>::new(), Instant::now(), S, S);
        assert_eq!(s.next(true), None);
    }
}
