//! One thread serving many Modbus TCP endpoints: a readiness loop (`ppoll(2)`) over their
//! sockets. Each endpoint is still one `Poller`, which owns its connection, its schedule and
//! its machines, and a poll still goes through the poller's own steps (`begin`,
//! `next_request`, `on_reply`, `finish`); only the waiting is shared. A thread per endpoint
//! slept twice per poll (until due, then for the reply) and most of its cost was the kernel
//! switching threads; here one wake-up sends every request that is due and takes every reply
//! that has come, so a poll costs one send and one receive, plus a share of one `ppoll`.
//!
//! Only endpoints whose transport has a readiness side (Modbus TCP to an IP address:
//! connecting needs no name lookup) are served here; the others (serial lines,
//! RTU over TCP, host names) keep a thread of their own. What still blocks this thread, as it
//! blocked an endpoint's own: a batch write-back after a poll (a few exchanges with a machine
//! that just answered) and a full points channel (backpressure from the uploader). A deadline
//! that passed meanwhile is checked against the socket first: a reply (or connection) that
//! came in time is taken, not counted as a timeout.

use super::{PollRun, Poller, Step, BEAT_EVERY, COMMANDS_PER_TURN};
use crate::modbus::codec::Request;
use crate::modbus::transport::TransportError;
use crate::modbus::ModbusError;
use crate::status::Beat;
use crossbeam_channel::{Receiver, TryRecvError};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wakes the loop from another thread: a command was queued for one of its pollers, or it is
/// to stop. A byte on a socket pair; the loop drains it.
pub(crate) struct Bell {
    tx: UnixStream,
}

impl Bell {
    /// A bell and the end a `Mux` waits on.
    pub(crate) fn pair() -> io::Result<(Arc<Bell>, UnixStream)> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((Arc::new(Bell { tx }), rx))
    }

    pub(crate) fn ring(&self) {
        // A full pipe already rings; nothing else can go wrong that the loop would not see.
        let _ = (&self.tx).write(&[1]);
    }
}

/// What an endpoint waits for.
enum State {
    /// Nothing in flight: its next poll is due at a time its schedule knows.
    Idle,
    /// Opening the connection for the poll of (machine, group) due at `due`.
    Connecting {
        ui: usize,
        gi: usize,
        due: Instant,
        deadline: Instant,
    },
    /// The reply to `req`, until `deadline`.
    Asking {
        run: PollRun,
        req: Request,
        deadline: Instant,
    },
    /// A pause (between blocks, after a busy reply) until `until`.
    Pausing { run: PollRun, until: Instant },
}

struct Slot {
    poller: Poller,
    state: State,
}

pub(crate) struct Mux {
    slots: Vec<Slot>,
    bell: UnixStream,
    /// Polls sent to the uploader without ringing it: it is rung once per turn of the loop.
    unrung: bool,
}

impl Mux {
    /// A loop for these pollers (each one's transport must have a readiness side), woken by
    /// the `Bell` whose other end is `bell`.
    pub(crate) fn new(pollers: Vec<Poller>, bell: UnixStream) -> Mux {
        let slots = pollers
            .into_iter()
            .map(|poller| Slot {
                poller,
                state: State::Idle,
            })
            .collect();
        Mux {
            slots,
            bell,
            unrung: false,
        }
    }

    /// The loop: start what is due, wait for sockets, the bell or the next time, handle what
    /// is ready; until `shutdown` (ring the bell after dropping its sender).
    pub(crate) fn run(mut self, shutdown: Receiver<()>, beat: Arc<Beat>) {
        for s in &mut self.slots {
            s.poller.beat = Some(beat.clone());
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.slots.len() + 1);
        // For each entry of `fds` after the bell's: the slot it belongs to.
        let mut owners: Vec<usize> = Vec::with_capacity(self.slots.len());
        loop {
            beat.check_in();
            if !matches!(shutdown.try_recv(), Err(TryRecvError::Empty)) {
                break;
            }
            let now = Instant::now();
            let mut wake = now + BEAT_EVERY;
            fds.clear();
            owners.clear();
            fds.push(pollfd(self.bell.as_raw_fd(), libc::POLLIN));
            for i in 0..self.slots.len() {
                if let Some(at) = self.turn(i, now) {
                    wake = wake.min(at);
                }
                let slot = &mut self.slots[i];
                let events = match &slot.state {
                    State::Connecting { .. } => libc::POLLOUT,
                    State::Asking { .. } => libc::POLLIN,
                    State::Idle | State::Pausing { .. } => 0,
                };
                if events != 0 {
                    if let Some(fd) = slot.poller.client.readiness().ok().and_then(|r| r.fd()) {
                        fds.push(pollfd(fd, events));
                        owners.push(i);
                    }
                }
            }
            if std::mem::take(&mut self.unrung) {
                if let Some(s) = self.slots.first() {
                    s.poller.out.ring();
                }
            }
            // Zero when something is due already: then only what is ready now is taken.
            let wait = wake.saturating_duration_since(Instant::now());
            if let Err(e) = wait_ready(&mut fds, wait) {
                log::error!("TCP pollers: waiting for sockets failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if fds[0].revents != 0 {
                self.drain_bell();
            }
            for (fd, &i) in fds[1..].iter().zip(&owners) {
                if fd.revents != 0 {
                    self.ready(i);
                }
            }
        }
        for s in &mut self.slots {
            s.poller.client.transport().close();
        }
    }

    fn drain_bell(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.bell).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// What is due for slot `i` at `now`: its commands and next poll when idle, the end of a
    /// pause, a deadline passed. Returns when it next needs a turn.
    fn turn(&mut self, i: usize, now: Instant) -> Option<Instant> {
        let slot = &mut self.slots[i];
        let p = &mut slot.poller;
        match std::mem::replace(&mut slot.state, State::Idle) {
            State::Idle => {
                p.summary(now);
                for _ in 0..COMMANDS_PER_TURN {
                    match p.commands.try_recv() {
                        Ok(cmd) => p.command(cmd),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            p.commands = crossbeam_channel::never();
                            break;
                        }
                    }
                }
                match p.next_due() {
                    Some((ui, gi, due)) if due <= now => self.start(i, ui, gi, now),
                    next => return idle_until(p, next, now),
                }
            }
            // A deadline passed. The thread may have been held up (a write-back, a full
            // uploader queue) while the socket got ready: what is there by now counts.
            State::Connecting {
                ui,
                gi,
                due,
                deadline,
            } if now >= deadline => {
                let how = match p.client.readiness().and_then(|r| r.connected()) {
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection timed out",
                    )),
                    how => how,
                };
                if how.is_err() {
                    p.client.transport().close();
                }
                self.opened(i, ui, gi, due, how);
            }
            State::Asking {
                mut run,
                req,
                deadline,
            } if now >= deadline => {
                let result = match p.client.try_reply(&req) {
                    Ok(Some(reply)) => Ok(reply),
                    Ok(None) => {
                        if let Ok(r) = p.client.readiness() {
                            r.timed_out();
                        }
                        let timeout = p.endpoint.timeout;
                        Err(ModbusError::Transport(TransportError::Timeout(timeout)))
                    }
                    Err(e) => Err(e),
                };
                p.on_reply(&mut run, result);
                self.drive(i, run);
            }
            State::Pausing { run, until } if now >= until => self.drive(i, run),
            other => slot.state = other,
        }
        let slot = &self.slots[i];
        match &slot.state {
            State::Idle => idle_until(&slot.poller, slot.poller.next_due(), now),
            State::Connecting { deadline, .. } | State::Asking { deadline, .. } => Some(*deadline),
            State::Pausing { until, .. } => Some(*until),
        }
    }

    /// Start the poll of (machine `ui`, group `gi`), due now: open the connection first when
    /// it is closed.
    fn start(&mut self, i: usize, ui: usize, gi: usize, due: Instant) {
        let p = &mut self.slots[i].poller;
        if p.client.is_open() {
            let run = p.begin(ui, gi, due, true);
            return self.drive(i, run);
        }
        match p.client.readiness().and_then(|r| r.start_open()) {
            Ok(()) => {
                self.slots[i].state = State::Connecting {
                    ui,
                    gi,
                    due,
                    deadline: Instant::now() + p.endpoint.timeout,
                }
            }
            Err(e) => self.opened(i, ui, gi, due, Err(e)),
        }
    }

    /// The connection for a due poll opened, or did not: poll, or record that it could not.
    fn opened(&mut self, i: usize, ui: usize, gi: usize, due: Instant, how: io::Result<()>) {
        let p = &mut self.slots[i].poller;
        let connected = p.connect_outcome(due, how);
        let run = p.begin(ui, gi, due, connected);
        self.drive(i, run);
    }

    /// Slot `i`'s socket is ready: a connection opened (or failed), or a reply (part) came.
    fn ready(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let p = &mut slot.poller;
        match std::mem::replace(&mut slot.state, State::Idle) {
            State::Connecting { ui, gi, due, .. } => {
                let how = p.client.readiness().and_then(|r| r.connected());
                self.opened(i, ui, gi, due, how);
            }
            State::Asking {
                mut run,
                req,
                deadline,
            } => match p.client.try_reply(&req) {
                Ok(None) => slot.state = State::Asking { run, req, deadline },
                Ok(Some(reply)) => {
                    p.on_reply(&mut run, Ok(reply));
                    self.drive(i, run);
                }
                Err(e) => {
                    p.on_reply(&mut run, Err(e));
                    self.drive(i, run);
                }
            },
            other => slot.state = other,
        }
    }

    /// Take a poll as far as it goes without waiting: send its next request, or start its
    /// pause, or finish it (its lines to the uploader, the schedule moved on).
    fn drive(&mut self, i: usize, mut run: PollRun) {
        let slot = &mut self.slots[i];
        let p = &mut slot.poller;
        loop {
            match p.next_request(&mut run) {
                None => {
                    let (ui, gi, due) = (run.ui, run.gi, run.now);
                    let lines = p.finish(run);
                    p.advance(ui, gi, due);
                    self.unrung |= p.send(lines, true);
                    slot.state = State::Idle;
                    return;
                }
                Some(Step::Wait(d)) => {
                    slot.state = State::Pausing {
                        run,
                        until: Instant::now() + d,
                    };
                    return;
                }
                Some(Step::Read(unit, b)) => {
                    match p.client.send_read(unit, b.kind, b.address, b.quantity) {
                        Ok(req) => {
                            slot.state = State::Asking {
                                run,
                                req,
                                deadline: Instant::now() + p.endpoint.timeout,
                            };
                            return;
                        }
                        Err(e) => p.on_reply(&mut run, Err(e)),
                    }
                }
            }
        }
    }
}

/// When an idle endpoint next needs a turn: at its next due time (`next`), or now when
/// commands are left (more than a turn takes, or queued while it polled), without waiting for
/// the bell.
fn idle_until(p: &Poller, next: Option<(usize, usize, Instant)>, now: Instant) -> Option<Instant> {
    if p.commands.is_empty() {
        next.map(|(_, _, due)| due)
    } else {
        Some(now)
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `ppoll(2)` on `fds` for at most `wait` (to the nanosecond: a poll is not late by a
/// millisecond's rounding).
fn wait_ready(fds: &mut [libc::pollfd], wait: Duration) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: wait.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid, writable slice of pollfd of the length given; `ts` lives
    // through the call; no signal mask.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::{self, Config};
    use crate::modbus::transport_for;
    use crate::simulate;
    use crate::status::{lock, Liveness, MachineStatus};
    use std::net::TcpListener;
    use std::sync::Mutex;

    fn config(live: u16, silent: u16) -> Config {
        let text = format!(
            r#"{{"defaults": {{"timeout_s": 0.3, "backoff_initial_s": 0.5, "backoff_max_s": 1}},
                "machines": [
                  {{"name": "LIVE", "ip_address": "127.0.0.1", "port": {live}, "poll_interval_s": 0.2,
                    "registers": [{{"name": "level", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}}]}},
                  {{"name": "SILENT", "ip_address": "127.0.0.1", "port": {silent}, "poll_interval_s": 0.2,
                    "registers": [{{"name": "level", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}}]}}]}}"#
        );
        config::validate_raw(config::parse(&text).expect("parse")).expect("valid")
    }

    /// The loop held up past a connection's and then a reply's deadline (a write-back, a full
    /// uploader queue): what came meanwhile counts, nothing is taken for a timeout.
    #[test]
    fn what_came_while_the_loop_was_held_up_counts_though_its_deadline_passed() {
        let cfg = config(0, 1);
        let mut one = cfg.clone();
        one.endpoints.truncate(1);
        one.machines.truncate(1);
        let sim = simulate::start(&one, Some("127.0.0.1"), 1.0).expect("simulator");
        let port = sim.addresses.values().next().expect("address").port();
        let mut cfg = config(port, 1);
        cfg.endpoints.truncate(1);
        cfg.machines.truncate(1);
        let status = vec![Arc::new(Mutex::new(MachineStatus::default()))];
        let (tx, rx) = crate::uploader::points_channel(16);
        let ep = &cfg.endpoints[0];
        let p = Poller::new(
            &cfg,
            0,
            transport_for(&ep.kind, ep.timeout),
            &status,
            tx,
            Arc::new(Clock::trusted()),
        );
        let (_bell, bell_rx) = Bell::pair().expect("bell");
        let mut mux = Mux::new(vec![p], bell_rx);
        let held_up = ep.timeout + Duration::from_millis(200);
        mux.turn(0, Instant::now());
        assert!(matches!(mux.slots[0].state, State::Connecting { .. }));
        std::thread::sleep(held_up);
        mux.turn(0, Instant::now());
        assert!(
            matches!(mux.slots[0].state, State::Asking { .. }),
            "connected, and the request sent: {:?}",
            lock(&status[0]).last_error
        );
        std::thread::sleep(held_up);
        mux.turn(0, Instant::now());
        assert!(matches!(mux.slots[0].state, State::Idle));
        let st = lock(&status[0]).clone();
        assert_eq!(
            (st.online, st.polls),
            (Some(true), 1),
            "{:?}",
            st.last_error
        );
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        assert!(rx
            .try_iter()
            .any(|p| p.lines.iter().any(|l| l.contains("level="))));
    }

    /// A live machine and one that accepts the connection but never answers, on one loop:
    /// the live one keeps its schedule while the other times out, and the bell stops it.
    #[test]
    fn a_silent_endpoint_costs_only_its_own_timeouts_and_the_bell_stops_the_loop() {
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        let held = std::thread::spawn(move || {
            // Hold every connection open, unanswered, until the test ends.
            let mut conns = Vec::new();
            for s in silent.incoming().take(4) {
                conns.push(s);
            }
        });
        let sim_cfg = config(0, silent_port);
        let mut sim_only = sim_cfg.clone();
        sim_only.endpoints.truncate(1);
        sim_only.machines.truncate(1);
        let sim = simulate::start(&sim_only, Some("127.0.0.1"), 1.0).expect("simulator");
        let live_port = sim.addresses.values().next().expect("address").port();
        let cfg = config(live_port, silent_port);
        let statuses: Vec<_> = cfg
            .machines
            .iter()
            .map(|_| Arc::new(Mutex::new(MachineStatus::default())))
            .collect();
        let (tx, rx) = crate::uploader::points_channel(1024);
        let pollers = (0..cfg.endpoints.len())
            .map(|i| {
                let ep = &cfg.endpoints[i];
                let mut t = transport_for(&ep.kind, ep.timeout);
                assert!(
                    t.readiness().is_some(),
                    "an IP literal is served by the loop"
                );
                Poller::new(
                    &cfg,
                    i,
                    t,
                    &statuses,
                    tx.clone(),
                    Arc::new(Clock::trusted()),
                )
            })
            .collect();
        drop(tx);
        let (bell, bell_rx) = Bell::pair().expect("bell");
        let mux = Mux::new(pollers, bell_rx);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let beat = Liveness::default().register("test");
        let started = Instant::now();
        let h = std::thread::spawn(move || mux.run(stop_rx, beat));
        std::thread::sleep(Duration::from_secs(2));
        drop(stop_tx);
        bell.ring();
        let stopping = Instant::now();
        h.join().expect("loop");
        let stop_took = stopping.elapsed();
        let elapsed = started.elapsed().as_secs_f64();
        let live = lock(&statuses[0]).clone();
        let dead = lock(&statuses[1]).clone();
        let lines: Vec<String> = rx.try_iter().flat_map(|p| p.lines).collect();
        println!(
            "live polls {} in {elapsed:.1} s; silent: online {:?}, errors {:?}; stop took {stop_took:?}",
            live.polls, dead.online, dead.last_error
        );
        assert_eq!(live.online, Some(true));
        assert!(
            live.polls as f64 >= 0.7 * elapsed / 0.2,
            "the live machine fell behind: {} polls",
            live.polls
        );
        assert!(lines.iter().any(|l| l.contains("machine=LIVE")));
        assert!(!lines
            .iter()
            .any(|l| l.contains("machine=SILENT") && l.contains("level=")));
        assert_eq!(dead.online, Some(false));
        assert!(
            dead.last_error
                .as_deref()
                .is_some_and(|e| e.contains("no reply")),
            "{:?}",
            dead.last_error
        );
        // Woken by the bell, not by its longest sleep.
        assert!(stop_took < BEAT_EVERY, "stop took {stop_took:?}");
        drop(sim);
        drop(held);
    }
}
