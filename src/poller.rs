//! The endpoint owner thread. One `Poller` per endpoint (a TCP HMI, a TCP-to-RTU gateway, a
//! serial bus) owns its connection and schedules every machine (unit id) behind it by due time,
//! so no two requests ever overlap on one connection and no lock is needed. Each machine's
//! registers are grouped by poll interval (a *group*), each group pre-planned into read blocks.
//!
//! Failures: a connection that cannot be opened backs off (capped, jittered) for the whole
//! endpoint; a machine that times out backs off alone, so a dead unit costs only its timeout;
//! a block refused with exception 02 is split and the split kept; a register that cannot be
//! read or decoded is skipped. Gateway exceptions: 0x0B (target failed to respond) is a timeout
//! of that unit only (the link to the gateway is fine), 0x0A (path unavailable) takes the unit
//! offline as a configuration problem, 0x06 (busy) is asked again after a short backoff. Each state change is logged once, not once per poll.
//! Commands from other threads (a batch to write, an outbox receipt) are taken on every loop
//! turn, so a saturated endpoint, where a poll is always due, still handles them.

use crate::backoff::Backoff;
use crate::batch::finish::FinishDetector;
use crate::batch::writer::BatchWriter;
use crate::batch::{self, Command, OutboxItem};
use crate::change::Detector;
use crate::clock::unix_ms;
use crate::clock::Clock;
use crate::config::{Config, Endpoint, Machine, Measurement};
use crate::modbus::codec::{self, exception, Reply};
use crate::modbus::transport::{Transport, TransportError};
use crate::modbus::{Client, ModbusError};
use crate::registers::plan::{self, ReadBlock};
use crate::registers::{self, Value};
use crate::status::{lock, Beat, MachineStatus};
use crate::uploader::Batch;
use crossbeam_channel::{select, Receiver, SendTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most commands handled between two polls.
const COMMANDS_PER_TURN: usize = 16;

/// A block answered with exception 06 (busy) is asked again this many times, after
/// `BUSY_BACKOFF`, then twice that, ...; then it is lost for this poll.
const BUSY_RETRIES: u32 = 3;
const BUSY_BACKOFF: Duration = Duration::from_millis(100);

/// How often each machine's one-line summary is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(15 * 60);

/// Registers of one machine polled at one interval.
struct Group {
    measurements: Vec<Measurement>,
    interval: Duration,
    /// Shared so a poll can hold a block while the group's list may be split (no per-request
    /// allocation).
    blocks: Vec<Arc<ReadBlock>>,
    next_due: Instant,
}

/// One machine behind the endpoint.
struct Unit {
    machine: Machine,
    groups: Vec<Group>,
    /// The read-once registers (identity, firmware), read when a connection is established.
    once_blocks: Vec<Arc<ReadBlock>>,
    /// The connection (`Poller::connections`) they were last read on.
    once_read_on: Option<u64>,
    detector: Detector,
    status: Arc<Mutex<MachineStatus>>,
    backoff: Backoff,
    resume_at: Option<Instant>,
    online: Option<bool>,
    /// Per register: the problem it has now, so each change is logged once.
    register_problem: Vec<Option<String>>,
    /// Index in `Config::machines`.
    index: usize,
    finish: Option<FinishDetector>,
    writer: Option<BatchWriter>,
    /// When pending outbox items were last offered (they are offered again until stored).
    offered_at: Option<Instant>,
    /// The online state last written to InfluxDB, and when.
    state_written: Option<(Instant, bool)>,
    /// Registers shown as sparklines (temperature, level), and when the last sample was taken.
    spark: (Option<usize>, Option<usize>),
    spark_at: Option<Instant>,
}

pub struct Poller {
    endpoint: Endpoint,
    client: Client,
    units: Vec<Unit>,
    connect_backoff: Backoff,
    next_connect: Instant,
    connect_problem: Option<String>,
    consecutive_timeouts: u32,
    /// Connections opened so far: read-once registers are read again on each new one.
    connections: u64,
    out: Sender<Batch>,
    beat: Option<Arc<Beat>>,
    clock: Arc<Clock>,
    /// Whether the lines of the current poll carry a real timestamp.
    stamped: bool,
    heartbeat: Duration,
    commands: Receiver<Command>,
    outbox: Option<Sender<OutboxItem>>,
}

fn groups_for(m: &Machine, start: Instant) -> Vec<Group> {
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
                next_due: start,
            }),
        }
    }
    for g in &mut groups {
        // Read-once registers are read per connection (`once_blocks`), not with their group.
        let members: Vec<usize> = (0..m.registers.len())
            .filter(|&i| {
                g.measurements.contains(&m.registers[i].measurement) && !m.registers[i].read_once
            })
            .collect();
        g.blocks = plan::plan(&m.registers, &members, &m.limits)
            .into_iter()
            .map(Arc::new)
            .collect();
    }
    groups
}

impl Poller {
    pub fn new(
        config: &Config,
        endpoint_index: usize,
        transport: Box<dyn Transport>,
        statuses: &[Arc<Mutex<MachineStatus>>],
        out: Sender<Batch>,
        clock: Arc<Clock>,
    ) -> Self {
        let endpoint = config.endpoints[endpoint_index].clone();
        let start = Instant::now();
        let units = config
            .machines
            .iter()
            .zip(statuses)
            .enumerate()
            .filter(|(_, (m, _))| m.endpoint == endpoint_index)
            .map(|(index, (m, st))| {
                {
                    let mut s = lock(st);
                    s.name = m.name.clone();
                    s.endpoint = endpoint.describe();
                    s.unit_id = m.unit_id;
                }
                let once: Vec<usize> = (0..m.registers.len())
                    .filter(|&i| m.registers[i].read_once)
                    .collect();
                Unit {
                    groups: groups_for(m, start),
                    once_blocks: plan::plan(&m.registers, &once, &m.limits)
                        .into_iter()
                        .map(Arc::new)
                        .collect(),
                    once_read_on: None,
                    detector: Detector::new(m, &config.tags, config.heartbeat),
                    status: st.clone(),
                    backoff: Backoff::new(endpoint.backoff_initial, endpoint.backoff_max),
                    resume_at: None,
                    online: None,
                    register_problem: vec![None; m.registers.len()],
                    machine: m.clone(),
                    index,
                    finish: None,
                    writer: None,
                    offered_at: None,
                    state_written: None,
                    spark: (
                        m.registers
                            .iter()
                            .position(|r| r.name.to_ascii_lowercase().contains("temp")),
                        m.registers
                            .iter()
                            .position(|r| r.name.to_ascii_lowercase().contains("level")),
                    ),
                    spark_at: None,
                }
            })
            .collect();
        Poller {
            connect_backoff: Backoff::new(endpoint.backoff_initial, endpoint.backoff_max),
            client: Client::new(transport),
            endpoint,
            units,
            next_connect: start,
            connect_problem: None,
            consecutive_timeouts: 0,
            connections: 0,
            out,
            beat: None,
            clock,
            stamped: true,
            heartbeat: config.heartbeat,
            commands: crossbeam_channel::never(),
            outbox: None,
        }
    }

    /// Run the batch workflow for this endpoint's machines: finish detection, safe batch
    /// write-back, with state files under `state_dir` and items for the outbox.
    pub fn with_batch(
        mut self,
        config: &Config,
        commands: Receiver<Command>,
        outbox: Sender<OutboxItem>,
    ) -> Self {
        let audit = config.state_dir.join("audit.jsonl");
        let endpoint = self.endpoint.describe();
        for u in &mut self.units {
            let file = batch::state::file_name(&u.machine.name);
            let name = u.machine.name.clone();
            let refused = |what: &str, e: batch::state::Newer| {
                log::error!("{name}: {what} off: {e}");
            };
            u.finish = u.machine.finish.clone().and_then(|f| {
                FinishDetector::load(
                    f,
                    &u.machine.name,
                    config.state_dir.join("finish").join(format!("{file}.json")),
                )
                .map_err(|e| refused("finish detection", e))
                .ok()
            });
            u.writer = u.machine.batch_write.clone().and_then(|bw| {
                let identity = bw
                    .identity
                    .map(|(r, v)| (u.machine.registers[r].clone(), v));
                BatchWriter::load(
                    bw,
                    &u.machine.name,
                    &endpoint,
                    u.machine.unit_id,
                    identity,
                    config.shadow_mode,
                    config.state_dir.join("batch").join(format!("{file}.json")),
                    audit.clone(),
                    self.clock.clone(),
                )
                .map_err(|e| refused("batch writing", e))
                .ok()
            });
        }
        self.commands = commands;
        self.outbox = Some(outbox);
        self
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Write(order) => {
                if let Some(w) = self
                    .units
                    .iter_mut()
                    .find(|u| u.index == order.machine)
                    .and_then(|u| u.writer.as_mut())
                {
                    w.offer(order);
                }
            }
            Command::NotListed { machine } => {
                if let Some(w) = self
                    .units
                    .iter_mut()
                    .find(|u| u.index == machine)
                    .and_then(|u| u.writer.as_mut())
                {
                    w.not_listed();
                }
            }
            Command::Persisted { machine, id } => {
                if let Some(u) = self.units.iter_mut().find(|u| u.index == machine) {
                    if let Some(f) = u.finish.as_mut() {
                        f.persisted(&id);
                    }
                    if let Some(w) = u.writer.as_mut() {
                        w.persisted(&id);
                    }
                }
            }
        }
    }

    fn to_outbox(&self, item: OutboxItem) {
        if let Some(tx) = &self.outbox {
            if tx.send_timeout(item, Duration::from_secs(1)).is_err() {
                log::warn!(
                    "{}: the outbox is busy; the report will be offered again",
                    self.endpoint.describe()
                );
            }
        }
    }

    /// After a successful poll: finish detection, pending outbox items, batch write-back.
    fn batch_work(&mut self, ui: usize, gi: usize) {
        let now = Instant::now();
        let (time_ms, unsynced) = self.clock.stamp();
        let mut items = Vec::new();
        {
            let u = &mut self.units[ui];
            let index = u.index;
            if let Some(f) = u.finish.as_mut() {
                let reg = f.register();
                let fresh = u.groups[gi]
                    .measurements
                    .contains(&u.machine.registers[reg].measurement);
                let process = fresh
                    .then(|| u.detector.latest(reg).and_then(Value::as_f64))
                    .flatten()
                    .map(|v| v.round() as i64);
                let batch = f.batch_register().and_then(|b| match u.detector.latest(b) {
                    Some(Value::Str(s)) => Some(s.clone()),
                    _ => None,
                });
                if let Some(event) = f.observe(process, batch.as_deref(), time_ms, unsynced) {
                    log::info!(
                        "machine {}: batch `{}` finished (process code {})",
                        u.machine.name,
                        event.batch,
                        event.code
                    );
                    u.offered_at = Some(now);
                    items.push(OutboxItem::Finish {
                        machine: index,
                        event,
                    });
                }
            }
            // Offer again what the outbox has not confirmed storing (every 10 s).
            if u.offered_at
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
            {
                let mut offered = false;
                if let Some(e) = u.finish.as_ref().and_then(|f| f.state().pending.clone()) {
                    items.push(OutboxItem::Finish {
                        machine: index,
                        event: e,
                    });
                    offered = true;
                }
                if let Some(c) = u.writer.as_ref().and_then(|w| w.owed_confirmation()) {
                    items.push(OutboxItem::Confirm {
                        machine: index,
                        confirmation: c,
                    });
                    offered = true;
                }
                if offered {
                    u.offered_at = Some(now);
                }
            }
        }
        let has_work = self.units[ui].writer.as_ref().is_some_and(|w| w.has_work());
        if has_work && self.client.is_open() {
            let index = self.units[ui].index;
            let before = self.units[ui]
                .writer
                .as_ref()
                .and_then(|w| w.owed_confirmation());
            let owed = self.units[ui]
                .writer
                .as_mut()
                .and_then(|w| w.step(&mut self.client));
            if let Some(c) = owed {
                if before.as_ref() != Some(&c) {
                    self.units[ui].offered_at = Some(now);
                    items.push(OutboxItem::Confirm {
                        machine: index,
                        confirmation: c,
                    });
                }
            }
        }
        for item in items {
            self.to_outbox(item);
        }
    }

    /// Read blocks per machine and group, for `check` and the benchmark.
    pub fn plan_summary(&self) -> Vec<(String, Vec<(Duration, usize)>)> {
        self.units
            .iter()
            .map(|u| {
                (
                    u.machine.name.clone(),
                    u.groups
                        .iter()
                        .map(|g| (g.interval, g.blocks.len()))
                        .collect(),
                )
            })
            .collect()
    }

    /// The earliest (unit, group) due, and when.
    fn next_due(&self) -> Option<(usize, usize, Instant)> {
        let connected = self.client.is_open();
        let mut best: Option<(usize, usize, Instant)> = None;
        for (ui, u) in self.units.iter().enumerate() {
            for (gi, g) in u.groups.iter().enumerate() {
                let mut due = g.next_due;
                if let Some(r) = u.resume_at {
                    due = due.max(r);
                }
                if !connected {
                    due = due.max(self.next_connect);
                }
                if best.is_none_or(|(_, _, b)| due < b) {
                    best = Some((ui, gi, due));
                }
            }
        }
        best
    }

    /// Make sure the connection is open; on failure, back off the whole endpoint.
    fn connect(&mut self, now: Instant) -> bool {
        if self.client.is_open() {
            return true;
        }
        match self.client.transport().open() {
            Ok(()) => {
                self.connections += 1;
                if let Some(p) = self.connect_problem.take() {
                    log::info!("{}: connected again (was: {p})", self.endpoint.describe());
                } else {
                    log::debug!("{}: connected", self.endpoint.describe());
                }
                self.connect_backoff.reset();
                true
            }
            Err(e) => {
                let delay = self.connect_backoff.next_delay();
                self.next_connect = now + delay;
                let text = format!("cannot connect to {}: {e}", self.endpoint.describe());
                if self.connect_problem.as_deref() != Some(text.as_str()) {
                    log::warn!(
                        "{text}; retrying with backoff (up to {:?})",
                        self.endpoint.backoff_max
                    );
                    self.connect_problem = Some(text.clone());
                }
                for ui in 0..self.units.len() {
                    self.count_error(ui, "connection", &text);
                    self.set_online(ui, false, Some(text.clone()));
                }
                false
            }
        }
    }

    /// Record the machine's online state; log only when it changes.
    fn set_online(&mut self, ui: usize, online: bool, error: Option<String>) {
        let u = &mut self.units[ui];
        let mut st = lock(&u.status);
        if u.online != Some(online) {
            let who = format!(
                "machine {} (unit {} on {})",
                u.machine.name,
                u.machine.unit_id,
                self.endpoint.describe()
            );
            match (online, &error) {
                (true, _) => log::info!("{who} is online"),
                (false, Some(text)) => log::warn!("{who} is offline: {text}"),
                (false, None) => log::warn!("{who} is offline"),
            }
            u.online = Some(online);
        }
        if !online {
            // A unit that went away may come back as another device (or new firmware).
            u.once_read_on = None;
        }
        st.online = Some(online);
    }

    fn register_problem(&mut self, ui: usize, r: usize, problem: Option<String>) {
        let u = &mut self.units[ui];
        if u.register_problem[r] == problem {
            return;
        }
        let name = &u.machine.registers[r].name;
        match &problem {
            Some(p) => log::warn!("machine {}: register `{name}`: {p}", u.machine.name),
            None => log::info!("machine {}: register `{name}` reads again", u.machine.name),
        }
        u.register_problem[r] = problem;
    }

    /// Poll one group of one machine: every read block, decode, change detection. Returns the
    /// lines produced.
    fn poll_group(&mut self, ui: usize, gi: usize, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.connect(now) {
            let ts_ms = self.clock.now_ms();
            self.stamped = ts_ms.is_some();
            self.record_state(ui, now, ts_ms.unwrap_or(0), &mut lines);
            return lines;
        }
        let ts = SystemTime::now();
        // While the clock is not trusted, lines carry the placeholder timestamp 0 and the
        // uploader stamps them later from the monotonic clock.
        let ts_ms = self.clock.now_ms();
        self.stamped = ts_ms.is_some();
        let ts_ms = ts_ms.unwrap_or(0);
        let started = Instant::now();
        let unit_id = self.units[ui].machine.unit_id;
        let mut fatal: Option<ModbusError> = None;
        let mut answered = false;
        let mut last_problem: Option<String> = None;
        let mut i = 0;
        let mut busy = 0u32;
        let requests_before = self.client.requests;
        let connection = self.connections;
        if self.units[ui].once_read_on != Some(connection) {
            let blocks = self.units[ui].once_blocks.clone();
            let mut done = true;
            for b in blocks {
                match self.client.read(unit_id, b.kind, b.address, b.quantity) {
                    Ok(reply) => {
                        answered = true;
                        self.apply(ui, &b, &reply);
                    }
                    Err(ModbusError::Exception(e)) => {
                        answered = true;
                        for &r in &b.members {
                            self.register_problem(ui, r, Some(e.to_string()));
                        }
                    }
                    Err(
                        e @ ModbusError::Transport(
                            TransportError::Timeout(_) | TransportError::Io(_),
                        ),
                    ) => {
                        fatal = Some(e);
                        done = false;
                        break;
                    }
                    Err(e) => {
                        self.count_error(ui, e.kind(), &e.to_string());
                        done = false;
                    }
                }
            }
            if done {
                self.units[ui].once_read_on = Some(connection);
            }
        }
        if fatal.is_none() && self.units[ui].groups[gi].blocks.is_empty() {
            // Only read-once registers in this group: nothing to ask, their values go out
            // with the group's points.
            answered = true;
        }
        while fatal.is_none() && i < self.units[ui].groups[gi].blocks.len() {
            if i > 0 && !self.endpoint.request_pause.is_zero() {
                std::thread::sleep(self.endpoint.request_pause);
            }
            let b = Arc::clone(&self.units[ui].groups[gi].blocks[i]);
            match self.client.read(unit_id, b.kind, b.address, b.quantity) {
                Ok(reply) => {
                    answered = true;
                    self.apply(ui, &b, &reply);
                }
                Err(ModbusError::Exception(e))
                    if e.code == exception::SERVER_DEVICE_BUSY && busy < BUSY_RETRIES =>
                {
                    std::thread::sleep(BUSY_BACKOFF * 2u32.pow(busy));
                    busy += 1;
                    continue;
                }
                Err(
                    e @ ModbusError::Exception(codec::Exception {
                        code: exception::GATEWAY_TARGET_FAILED | exception::GATEWAY_PATH_UNAVAILABLE,
                        ..
                    }),
                ) => {
                    fatal = Some(e);
                    break;
                }
                Err(ModbusError::Exception(e))
                    if e.code == exception::ILLEGAL_DATA_ADDRESS && b.members.len() > 1 =>
                {
                    answered = true;
                    let u = &mut self.units[ui];
                    if let Some(pieces) = plan::split(&u.machine.registers, &b, &u.machine.limits) {
                        log::info!(
                            "machine {}: {} {}+{} refused with exception 02; reading it as {} blocks from now on",
                            u.machine.name,
                            b.kind.as_str(),
                            b.address,
                            b.quantity,
                            pieces.len()
                        );
                        u.groups[gi]
                            .blocks
                            .splice(i..=i, pieces.into_iter().map(Arc::new));
                        continue;
                    }
                }
                Err(ModbusError::Exception(e)) => {
                    answered = true;
                    self.count_error(ui, "exception", &e.to_string());
                    for &r in &b.members {
                        self.units[ui].detector.update(r, None);
                        self.register_problem(ui, r, Some(e.to_string()));
                    }
                }
                Err(
                    e @ ModbusError::Transport(TransportError::Timeout(_) | TransportError::Io(_)),
                ) => {
                    fatal = Some(e);
                    break;
                }
                Err(e) => {
                    // A garbled or misdirected reply: the block is lost for this poll. Over TCP
                    // the stream is no longer trusted.
                    self.count_error(ui, e.kind(), &e.to_string());
                    for &r in &b.members {
                        self.units[ui].detector.update(r, None);
                    }
                    last_problem = Some(e.to_string());
                    if self.client.transport().close_after_bad_reply() {
                        self.client.transport().close();
                        break;
                    }
                }
            }
            i += 1;
            busy = 0;
        }
        let latency = started.elapsed();
        let requests = self.client.requests - requests_before;
        match fatal {
            Some(e) => {
                let timeout = matches!(&e, ModbusError::Transport(TransportError::Timeout(_)));
                let io = matches!(&e, ModbusError::Transport(TransportError::Io(_)));
                let mut text = e.to_string();
                let mut answered = answered;
                if let ModbusError::Exception(x) = &e {
                    answered = false;
                    // The gateway answered: the link is alive, only the unit behind it is not.
                    self.consecutive_timeouts = 0;
                    if x.code == exception::GATEWAY_PATH_UNAVAILABLE {
                        text.push_str(
                            ": the gateway has no path to this unit id (check its routing \
                             configuration and the machine's slave_id)",
                        );
                    }
                }
                if timeout {
                    self.consecutive_timeouts += 1;
                    // Several units timing out in a row: the link itself is dead (a half-open
                    // socket after a power cut); reconnect.
                    let limit = self.client.transport().reconnect_after_timeouts();
                    if limit.is_some_and(|n| self.consecutive_timeouts >= n) {
                        self.client.transport().close();
                    }
                }
                if io {
                    self.client.transport().close();
                    self.next_connect = now + self.connect_backoff.next_delay();
                }
                let u = &mut self.units[ui];
                let delay = u.backoff.next_delay();
                u.resume_at = Some(Instant::now() + delay);
                self.count_error(ui, e.kind(), &text);
                self.set_online(ui, answered, Some(text));
            }
            None if !answered => {
                // Only garbled replies: the machine (or the bus) is there but gives no data.
                self.set_online(ui, false, last_problem);
            }
            None => {
                self.consecutive_timeouts = 0;
                let u = &mut self.units[ui];
                u.backoff.reset();
                u.resume_at = None;
                let g = &u.groups[gi];
                u.detector.emit(&g.measurements, now, ts_ms, &mut lines);
                self.set_online(ui, true, None);
                self.batch_work(ui, gi);
            }
        }
        self.record_state(ui, now, ts_ms, &mut lines);
        self.publish(ui, gi, answered, requests, latency, &lines, ts);
        if self.endpoint.close_after_poll {
            self.client.transport().close();
        }
        lines
    }

    /// Write the machine's online state to InfluxDB on change and with the heartbeat.
    fn record_state(&mut self, ui: usize, now: Instant, ts_ms: i64, lines: &mut Vec<String>) {
        let heartbeat = self.heartbeat;
        let u = &mut self.units[ui];
        let Some(online) = u.online else { return };
        let due = match u.state_written {
            None => true,
            Some((at, was)) => was != online || now.duration_since(at) >= heartbeat,
        };
        if due {
            lines.push(u.detector.state_line(online, ts_ms));
            u.state_written = Some((now, online));
        }
    }

    /// Update the machine's entry on the status board after a poll.
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        ui: usize,
        gi: usize,
        answered: bool,
        requests: u64,
        latency: Duration,
        lines: &[String],
        ts: SystemTime,
    ) {
        let u = &mut self.units[ui];
        let mut st = lock(&u.status);
        st.polls += 1;
        st.requests += requests;
        st.last_latency_ms = latency.as_secs_f64() * 1000.0;
        st.observe_latency(latency.as_secs_f64());
        st.points += lines.len() as u64;
        if !answered {
            return;
        }
        st.last_ok_ms = Some(unix_ms(ts));
        let g = &u.groups[gi];
        for (r, reg) in u.machine.registers.iter().enumerate() {
            if g.measurements.contains(&reg.measurement) {
                let v = u
                    .detector
                    .latest(r)
                    .map(value_json)
                    .unwrap_or(serde_json::Value::Null);
                // Replace in place: no key allocation per register per poll.
                match st.values.get_mut(&reg.name) {
                    Some(slot) => *slot = v,
                    None => {
                        st.values.insert(reg.name.clone(), v);
                    }
                }
            }
        }
        if let Some(f) = &u.machine.finish {
            st.process_code = u
                .detector
                .latest(f.register)
                .and_then(Value::as_f64)
                .map(|v| v.round() as i64);
            if let Some(Value::Str(b)) = f.batch_register.and_then(|b| u.detector.latest(b)) {
                st.batch = Some(b.clone());
            }
        }
        let now = Instant::now();
        if u.spark_at
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            let get =
                |i: Option<usize>| i.and_then(|i| u.detector.latest(i)).and_then(Value::as_f64);
            st.history
                .push_back((unix_ms(ts), get(u.spark.0), get(u.spark.1)));
            while st.history.len() > crate::status::HISTORY_LEN {
                st.history.pop_front();
            }
            u.spark_at = Some(now);
        }
    }

    fn count_error(&mut self, ui: usize, kind: &'static str, text: &str) {
        let mut st = lock(&self.units[ui].status);
        *st.errors.entry(kind).or_insert(0) += 1;
        st.last_error = Some(text.to_string());
    }

    /// Decode a block's reply into the machine's registers.
    fn apply(&mut self, ui: usize, b: &ReadBlock, reply: &Reply) {
        for &r in &b.members {
            let reg = &self.units[ui].machine.registers[r];
            let offset = usize::from(reg.address - b.address);
            let decoded = match reply {
                Reply::Words(w) => registers::decode_words(reg, &w[offset.min(w.len())..]),
                Reply::Bits(bits) => match bits.get(offset) {
                    Some(&bit) => Ok(registers::decode_bit(bit)),
                    None => Err(registers::DecodeError::Short {
                        got: bits.len(),
                        need: offset + 1,
                    }),
                },
                _ => continue,
            };
            let (value, problem): (Option<Value>, Option<String>) = match decoded {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e.to_string())),
            };
            self.units[ui].detector.update(r, value);
            self.register_problem(ui, r, problem);
        }
    }

    fn advance(&mut self, ui: usize, gi: usize, now: Instant) {
        let g = &mut self.units[ui].groups[gi];
        g.next_due += g.interval;
        if g.next_due <= now {
            // Missed slots are skipped, keeping the schedule on its grid (no drift).
            let behind = now.duration_since(g.next_due).as_nanos() / g.interval.as_nanos().max(1);
            g.next_due += g.interval * (behind as u32 + 1);
        }
    }

    fn send(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let mut msg = Batch {
            lines,
            taken: Instant::now(),
            stamped: self.stamped,
        };
        let mut warned = false;
        loop {
            match self.out.send_timeout(msg, Duration::from_secs(1)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(m)) => {
                    // Backpressure: the uploader is behind. Waiting delays polls; dropping
                    // would lose data.
                    if !warned {
                        log::warn!("{}: uploader queue full; waiting", self.endpoint.describe());
                        warned = true;
                    }
                    if let Some(b) = &self.beat {
                        b.check_in();
                    }
                    msg = m;
                }
                Err(SendTimeoutError::Disconnected(_)) => return,
            }
        }
    }

    /// The thread's loop: poll what is due, wait for the next due time or shutdown.
    pub fn run(mut self, shutdown: Receiver<()>, beat: Arc<Beat>) {
        self.beat = Some(beat.clone());
        let mut summary_at = Instant::now() + SUMMARY_EVERY;
        let mut last_counts: Vec<(u64, u64)> = vec![(0, 0); self.units.len()];
        loop {
            beat.check_in();
            if Instant::now() >= summary_at {
                summary_at += SUMMARY_EVERY;
                self.summary(&mut last_counts);
            }
            // Commands are taken on every turn: on a saturated endpoint a poll is always due
            // and the wait below, which also takes them, is never reached. Bounded, so a
            // flood of commands cannot stop polling.
            for cmd in self
                .commands
                .try_iter()
                .take(COMMANDS_PER_TURN)
                .collect::<Vec<_>>()
            {
                self.handle(cmd);
            }
            let Some((ui, gi, due)) = self.next_due() else {
                break;
            };
            let now = Instant::now();
            if due > now {
                let wait = (due - now).min(Duration::from_secs(1));
                let commands = self.commands.clone();
                select! {
                    recv(shutdown) -> _ => break,
                    recv(commands) -> cmd => {
                        if let Ok(cmd) = cmd {
                            self.handle(cmd);
                        }
                        continue;
                    }
                    default(wait) => continue,
                }
            }
            if matches!(shutdown.try_recv(), Err(TryRecvError::Disconnected)) {
                break;
            }
            let lines = self.poll_group(ui, gi, now);
            self.advance(ui, gi, now);
            self.send(lines);
        }
        self.client.transport().close();
    }

    /// One line per machine at a low rate, instead of a line per poll.
    fn summary(&self, last: &mut [(u64, u64)]) {
        for (u, last) in self.units.iter().zip(last.iter_mut()) {
            let st = lock(&u.status);
            let errors: u64 = st.errors.values().sum();
            log::info!(
                "machine {}: {}; {} polls and {} errors in the last {} min",
                u.machine.name,
                match st.online {
                    Some(true) => "online",
                    Some(false) => "offline",
                    None => "not polled yet",
                },
                st.polls - last.0,
                errors - last.1,
                SUMMARY_EVERY.as_secs() / 60
            );
            *last = (st.polls, errors);
        }
    }

    /// Poll every group of every machine once and return all current values as lines
    /// (the `once` command). Machines that did not answer are reported by the status board.
    pub fn poll_all_once(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for ui in 0..self.units.len() {
            for gi in 0..self.units[ui].groups.len() {
                let now = Instant::now();
                self.next_connect = now;
                self.poll_group(ui, gi, now);
            }
            self.units[ui]
                .detector
                .snapshot(unix_ms(SystemTime::now()), &mut lines);
        }
        self.client.transport().close();
        lines
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
mod tests;
