//! The endpoint owner. One `Poller` per endpoint (a TCP HMI, a TCP-to-RTU gateway, a serial
//! bus) owns its connection and polls every machine (unit id) behind it when its `schedule`
//! says a group is due, so no two requests ever overlap on one connection and no lock is
//! needed. A poll is a sequence of steps (`begin`, `next_request`, `on_reply`, `finish`):
//! `run` walks them blocking, on a thread of the endpoint's own (serial lines, RTU over TCP,
//! host names); `mux` walks them for every Modbus TCP endpoint on one readiness loop. After
//! a poll that answered it runs the machine's `batch` part; it reports what each poll did to
//! the machine's entry on the status board (`status::machine`).
//!
//! The own thread's loop is one closed `Event` type and one handler: a group due, a command
//! from another thread (a batch to write, an outbox receipt), a wake for the watchdog,
//! shutdown. It sleeps until the next due time or a command, and turns at least every
//! `BEAT_EVERY` for the watchdog. Commands are taken before polls but at most
//! `COMMANDS_PER_TURN` between two, so a saturated endpoint, where a poll is always due,
//! still handles them.
//!
//! Failures: a connection that cannot be opened backs off (capped, jittered) for the whole
//! endpoint; a machine that times out backs off alone, so a dead unit costs only its timeout;
//! a block refused with exception 02 is split and the split kept; a register that cannot be
//! read or decoded is skipped. Gateway exceptions: 0x0B (target failed to respond) is a timeout
//! of that unit only (the link to the gateway is fine), 0x0A (path unavailable) takes the unit
//! offline as a configuration problem, 0x06 (busy) is asked again after a short backoff. Each
//! state change is logged once, not once per poll.

use crate::batch::{MachineId, OutboxItem, OwnerCommand};
use crate::change::Detector;
use crate::clock::unix_ms;
use crate::clock::Clock;
use crate::config::{Config, Endpoint, Machine};
use crate::modbus::codec::{self, exception, Reply};
use crate::modbus::transport::{Transport, TransportError};
use crate::modbus::{Client, ModbusError};
use crate::registers::plan::{self, ReadBlock};
use crate::registers::{self, Value};
use crate::status::machine::{MachineEntry, Polled};
use crate::status::{Beat, MachineStatus};
use crate::uploader::{PointsTx, PollLines};
use crate::watchdog;
use batch::MachineBatch;
use crossbeam_channel::{select, Receiver, SendTimeoutError, Sender, TryRecvError, TrySendError};
use schedule::{Group, Schedule};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most commands handled between two polls.
const COMMANDS_PER_TURN: usize = 16;

/// A block answered with exception 06 (busy) is asked again this many times, after
/// `BUSY_BACKOFF`, then twice that, ...; then it is lost for this poll.
const BUSY_RETRIES: u32 = 3;
const BUSY_BACKOFF: Duration = Duration::from_millis(100);

/// The longest sleep between two turns of the loop when nothing is due: the watchdog calls a
/// thread stuck after `watchdog::MIN_STUCK` without a turn.
const BEAT_EVERY: Duration = Duration::from_millis(watchdog::MIN_STUCK.as_millis() as u64 / 2);

/// How often each machine's one-line summary is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(15 * 60);

/// What the loop waits for.
enum Event {
    /// A group of a machine (indices in `Poller::units` and its `groups`) is due.
    Due(usize, usize),
    /// A command from another thread (batch orders, outbox receipts).
    Command(OwnerCommand),
    /// A wait ended with nothing to do: the next due time is not reached yet, or the loop
    /// turns for the watchdog.
    Wake,
    Shutdown,
}

/// What the requests of one poll came to.
#[derive(Default)]
struct Reads {
    /// The machine answered at least one request (data or an exception of its own).
    answered: bool,
    /// What ended the poll early: a timeout, a broken connection, a gateway exception.
    fatal: Option<ModbusError>,
    /// The last garbled or misdirected reply.
    last_problem: Option<String>,
}

/// Where a poll is: reading the read-once registers (block index), the group's blocks, done.
#[derive(Clone, Copy)]
enum Stage {
    Once(usize),
    Group(usize),
    Done,
}

/// What a poll in progress does next (`Poller::next_request`).
pub(crate) enum Step {
    /// Read this block of this unit id, then hand the outcome to `Poller::on_reply`.
    Read(u8, Arc<ReadBlock>),
    /// Wait this long first (between blocks, or after a busy reply).
    Wait(Duration),
}

/// One poll of one group in progress. The blocking driver (`Poller::poll_group`) and the
/// readiness loop (`mux`) move it through the same steps.
pub(crate) struct PollRun {
    ui: usize,
    gi: usize,
    now: Instant,
    at: SystemTime,
    ts_ms: i64,
    started: Instant,
    requests_before: u64,
    reads: Reads,
    connected: bool,
    stage: Stage,
    /// Busy replies to the current block so far.
    busy: u32,
    /// Every read-once block read (none garbled).
    once_ok: bool,
    /// A wait asked for by the last reply (busy backoff).
    wait: Option<Duration>,
    /// The pause between blocks was taken for the current block.
    paused: bool,
    /// The block asked and not answered yet.
    asking: Option<Arc<ReadBlock>>,
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
    entry: MachineEntry,
    online: Option<bool>,
    /// Per register: the problem it has now, so each change is logged once.
    register_problem: Vec<Option<String>>,
    id: MachineId,
    batch: MachineBatch,
    /// The online state last written to InfluxDB, and when.
    state_written: Option<(Instant, bool)>,
}

pub struct Poller {
    endpoint: Endpoint,
    client: Client,
    units: Vec<Unit>,
    schedule: Schedule,
    connect_problem: Option<String>,
    consecutive_timeouts: u32,
    /// Connections opened so far: read-once registers are read again on each new one.
    connections: u64,
    out: PointsTx,
    beat: Option<Arc<Beat>>,
    clock: Arc<Clock>,
    /// Whether the lines of the current poll carry a real timestamp.
    stamped: bool,
    heartbeat: Duration,
    commands: Receiver<OwnerCommand>,
    /// Commands taken since the last poll.
    commands_in_turn: usize,
    outbox: Option<Sender<OutboxItem>>,
    /// When the machines' one-line summaries are logged next, and the counts at the last.
    summary_at: Instant,
    summary_counts: Vec<(u64, u64)>,
}

impl Poller {
    pub fn new(
        config: &Config,
        endpoint_index: usize,
        transport: Box<dyn Transport>,
        statuses: &[Arc<Mutex<MachineStatus>>],
        out: PointsTx,
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
            .map(|(index, (m, st))| Unit {
                groups: schedule::groups_for(m),
                once_blocks: schedule::once_blocks(m),
                once_read_on: None,
                detector: Detector::new(m, &config.tags, config.heartbeat),
                entry: MachineEntry::new(st.clone(), m, &endpoint.describe()),
                online: None,
                register_problem: vec![None; m.registers.len()],
                machine: m.clone(),
                id: MachineId(index),
                batch: MachineBatch::off(MachineId(index)),
                state_written: None,
            })
            .collect::<Vec<Unit>>();
        let schedule = Schedule::new(
            units
                .iter()
                .map(|u| u.groups.iter().map(|g| g.interval).collect()),
            start,
            endpoint.backoff_initial,
            endpoint.backoff_max,
        );
        Poller {
            client: Client::new(transport),
            endpoint,
            schedule,
            connect_problem: None,
            consecutive_timeouts: 0,
            connections: 0,
            out,
            beat: None,
            clock,
            stamped: true,
            heartbeat: config.heartbeat,
            commands: crossbeam_channel::never(),
            commands_in_turn: 0,
            outbox: None,
            summary_at: start + SUMMARY_EVERY,
            summary_counts: vec![(0, 0); units.len()],
            units,
        }
    }

    /// Run the batch workflow for this endpoint's machines: finish detection, safe batch
    /// write-back, with state files under `state_dir` and items for the outbox.
    pub(crate) fn with_batch(
        mut self,
        config: &Config,
        commands: Receiver<OwnerCommand>,
        outbox: Sender<OutboxItem>,
    ) -> Self {
        let endpoint = self.endpoint.describe();
        for u in &mut self.units {
            u.batch = MachineBatch::load(config, &u.machine, u.id, &endpoint, &self.clock);
        }
        self.commands = commands;
        self.outbox = Some(outbox);
        self
    }

    /// A command from another thread: for the batch part of the machine it names.
    fn command(&mut self, cmd: OwnerCommand) {
        let machine = match &cmd {
            OwnerCommand::Write(order) => order.machine,
            OwnerCommand::NotListed { machine } | OwnerCommand::Persisted { machine, .. } => {
                *machine
            }
        };
        let Some(u) = self.units.iter_mut().find(|u| u.id == machine) else {
            return;
        };
        match cmd {
            OwnerCommand::Write(order) => u.batch.offer(order),
            OwnerCommand::NotListed { .. } => u.batch.not_listed(),
            OwnerCommand::Persisted { id, .. } => u.batch.persisted(&id),
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

    /// After a successful poll: the machine's batch workflow (`batch`).
    fn batch_work(&mut self, ui: usize, gi: usize) {
        let u = &mut self.units[ui];
        let client = if self.client.is_open() {
            Some(&mut self.client)
        } else {
            None
        };
        let items = u.batch.after_poll(
            &u.machine,
            &u.detector,
            &u.groups[gi].measurements,
            client,
            &self.clock,
            Instant::now(),
        );
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
        self.schedule.next(self.client.is_open())
    }

    /// Make sure the connection is open; on failure, back off the whole endpoint.
    fn connect(&mut self, now: Instant) -> bool {
        if self.client.is_open() {
            return true;
        }
        let opened = self.client.transport().open();
        self.connect_outcome(now, opened)
    }

    /// How opening the connection went: log a change, back off the whole endpoint on failure.
    fn connect_outcome(&mut self, now: Instant, opened: std::io::Result<()>) -> bool {
        match opened {
            Ok(()) => {
                self.connections += 1;
                if let Some(p) = self.connect_problem.take() {
                    log::info!("{}: connected again (was: {p})", self.endpoint.describe());
                } else {
                    log::debug!("{}: connected", self.endpoint.describe());
                }
                self.schedule.connected();
                true
            }
            Err(e) => {
                self.schedule.connect_failed(now);
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
        u.entry.online(online);
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

    /// Start a poll of one group of one machine; `connected` says whether the endpoint's
    /// connection is open (when it is not, the poll only records the machine's state).
    pub(crate) fn begin(&mut self, ui: usize, gi: usize, now: Instant, connected: bool) -> PollRun {
        // While the clock is not trusted, lines carry the placeholder timestamp 0 and the
        // uploader stamps them later from the monotonic clock.
        let at = SystemTime::now();
        let ts_ms = self.clock.now_ms();
        self.stamped = ts_ms.is_some();
        let stage = if !connected {
            Stage::Done
        } else if self.units[ui].once_read_on != Some(self.connections) {
            Stage::Once(0)
        } else {
            Stage::Group(0)
        };
        let mut run = PollRun {
            ui,
            gi,
            now,
            at,
            ts_ms: ts_ms.unwrap_or(0),
            started: Instant::now(),
            requests_before: self.client.requests,
            reads: Reads::default(),
            connected,
            stage,
            busy: 0,
            once_ok: true,
            wait: None,
            paused: false,
            asking: None,
        };
        if matches!(run.stage, Stage::Group(_)) {
            self.enter_group(&mut run);
        }
        run
    }

    fn enter_group(&self, run: &mut PollRun) {
        if self.units[run.ui].groups[run.gi].blocks.is_empty() {
            // Only read-once registers in this group: nothing to ask, their values go out
            // with the group's points.
            run.reads.answered = true;
        }
    }

    /// What the poll asks next: a block to read, a pause first (between blocks, after a busy
    /// reply), or nothing more (`None`: call `finish`).
    pub(crate) fn next_request(&mut self, run: &mut PollRun) -> Option<Step> {
        if let Some(d) = run.wait.take() {
            return Some(Step::Wait(d));
        }
        loop {
            match run.stage {
                Stage::Done => return None,
                Stage::Once(i) => {
                    if let Some(b) = self.units[run.ui].once_blocks.get(i) {
                        let b = Arc::clone(b);
                        run.asking = Some(b.clone());
                        return Some(Step::Read(self.units[run.ui].machine.unit_id, b));
                    }
                    if run.once_ok {
                        self.units[run.ui].once_read_on = Some(self.connections);
                    }
                    run.stage = Stage::Group(0);
                    self.enter_group(run);
                }
                Stage::Group(i) => {
                    let u = &self.units[run.ui];
                    let Some(b) = u.groups[run.gi].blocks.get(i) else {
                        run.stage = Stage::Done;
                        return None;
                    };
                    if i > 0 && !self.endpoint.request_pause.is_zero() && !run.paused {
                        run.paused = true;
                        return Some(Step::Wait(self.endpoint.request_pause));
                    }
                    let b = Arc::clone(b);
                    run.asking = Some(b.clone());
                    return Some(Step::Read(u.machine.unit_id, b));
                }
            }
        }
    }

    /// What came back for the block `next_request` asked.
    pub(crate) fn on_reply(&mut self, run: &mut PollRun, result: Result<Reply, ModbusError>) {
        let Some(b) = run.asking.take() else { return };
        run.paused = false;
        let ui = run.ui;
        match run.stage {
            Stage::Once(i) => {
                match result {
                    Ok(reply) => {
                        run.reads.answered = true;
                        self.apply(ui, &b, &reply);
                    }
                    Err(ModbusError::Exception(e)) => {
                        run.reads.answered = true;
                        for &r in &b.members {
                            self.register_problem(ui, r, Some(e.to_string()));
                        }
                    }
                    Err(
                        e @ ModbusError::Transport(
                            TransportError::Timeout(_) | TransportError::Io(_),
                        ),
                    ) => {
                        run.reads.fatal = Some(e);
                        run.stage = Stage::Done;
                        return;
                    }
                    Err(e) => {
                        self.count_error(ui, e.kind(), &e.to_string());
                        run.once_ok = false;
                    }
                }
                run.stage = Stage::Once(i + 1);
            }
            Stage::Group(i) => self.on_group_reply(run, i, &b, result),
            Stage::Done => {}
        }
    }

    /// A group block's outcome: a refused block is split, a busy one asked again after a
    /// backoff, a fatal one ends the poll.
    fn on_group_reply(
        &mut self,
        run: &mut PollRun,
        i: usize,
        b: &ReadBlock,
        result: Result<Reply, ModbusError>,
    ) {
        let (ui, gi) = (run.ui, run.gi);
        match result {
            Ok(reply) => {
                run.reads.answered = true;
                self.apply(ui, b, &reply);
            }
            Err(ModbusError::Exception(e))
                if e.code == exception::SERVER_DEVICE_BUSY && run.busy < BUSY_RETRIES =>
            {
                run.wait = Some(BUSY_BACKOFF * 2u32.pow(run.busy));
                run.busy += 1;
                return;
            }
            Err(
                e @ ModbusError::Exception(codec::Exception {
                    code: exception::GATEWAY_TARGET_FAILED | exception::GATEWAY_PATH_UNAVAILABLE,
                    ..
                }),
            ) => {
                run.reads.fatal = Some(e);
                run.stage = Stage::Done;
                return;
            }
            Err(ModbusError::Exception(e))
                if e.code == exception::ILLEGAL_DATA_ADDRESS && b.members.len() > 1 =>
            {
                run.reads.answered = true;
                let u = &mut self.units[ui];
                if let Some(pieces) = plan::split(&u.machine.registers, b, &u.machine.limits) {
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
                    return;
                }
            }
            Err(ModbusError::Exception(e)) => {
                run.reads.answered = true;
                self.count_error(ui, "exception", &e.to_string());
                for &r in &b.members {
                    self.units[ui].detector.update(r, None);
                    self.register_problem(ui, r, Some(e.to_string()));
                }
            }
            Err(e @ ModbusError::Transport(TransportError::Timeout(_) | TransportError::Io(_))) => {
                run.reads.fatal = Some(e);
                run.stage = Stage::Done;
                return;
            }
            Err(e) => {
                // A garbled or misdirected reply: the block is lost for this poll. Over TCP
                // the stream is no longer trusted.
                self.count_error(ui, e.kind(), &e.to_string());
                for &r in &b.members {
                    self.units[ui].detector.update(r, None);
                }
                run.reads.last_problem = Some(e.to_string());
                if self.client.transport().close_after_bad_reply() {
                    self.client.transport().close();
                    run.stage = Stage::Done;
                    return;
                }
            }
        }
        run.stage = Stage::Group(i + 1);
        run.busy = 0;
    }

    /// End a poll: the machine's health, its lines and batch workflow, its status entry.
    pub(crate) fn finish(&mut self, run: PollRun) -> Vec<String> {
        let mut lines = Vec::new();
        let (ui, gi, now, ts_ms) = (run.ui, run.gi, run.now, run.ts_ms);
        if !run.connected {
            self.record_state(ui, now, ts_ms, &mut lines);
            return lines;
        }
        let answered = run.reads.answered;
        let latency = run.started.elapsed();
        let requests = self.client.requests - run.requests_before;
        self.conclude(ui, gi, run.reads, now, ts_ms, &mut lines);
        self.record_state(ui, now, ts_ms, &mut lines);
        let u = &mut self.units[ui];
        let poll = Polled {
            fresh: &u.groups[gi].measurements,
            answered,
            requests,
            latency,
            points: lines.len(),
            at: run.at,
        };
        let detector = &u.detector;
        u.entry.polled(&u.machine, poll, |r| detector.latest(r));
        if self.endpoint.close_after_poll {
            self.client.transport().close();
        }
        lines
    }

    /// Poll one group of one machine, blocking: every read block, decode, change detection.
    /// Returns the lines produced.
    fn poll_group(&mut self, ui: usize, gi: usize, now: Instant) -> Vec<String> {
        let connected = self.connect(now);
        let mut run = self.begin(ui, gi, now, connected);
        while let Some(step) = self.next_request(&mut run) {
            match step {
                Step::Wait(d) => std::thread::sleep(d),
                Step::Read(unit, b) => {
                    let result = self.client.read(unit, b.kind, b.address, b.quantity);
                    self.on_reply(&mut run, result);
                }
            }
        }
        self.finish(run)
    }

    /// After the requests: the machine's health (online, backoff, reconnect after a dead
    /// link) and, when it answered, its lines and batch workflow.
    fn conclude(
        &mut self,
        ui: usize,
        gi: usize,
        reads: Reads,
        now: Instant,
        ts_ms: i64,
        lines: &mut Vec<String>,
    ) {
        match reads.fatal {
            Some(e) => {
                let timeout = matches!(&e, ModbusError::Transport(TransportError::Timeout(_)));
                let io = matches!(&e, ModbusError::Transport(TransportError::Io(_)));
                let mut text = e.to_string();
                let mut answered = reads.answered;
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
                    self.schedule.connect_failed(now);
                }
                self.schedule.machine_failed(ui, Instant::now());
                self.count_error(ui, e.kind(), &text);
                self.set_online(ui, answered, Some(text));
            }
            None if !reads.answered => {
                // Only garbled replies: the machine (or the bus) is there but gives no data.
                self.set_online(ui, false, reads.last_problem);
            }
            None => {
                self.consecutive_timeouts = 0;
                self.schedule.machine_ok(ui);
                let u = &mut self.units[ui];
                let g = &u.groups[gi];
                u.detector.emit(&g.measurements, now, ts_ms, lines);
                self.set_online(ui, true, None);
                self.batch_work(ui, gi);
            }
        }
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

    fn count_error(&mut self, ui: usize, kind: &'static str, text: &str) {
        self.units[ui].entry.error(kind, text);
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
        self.schedule.advance(ui, gi, now);
    }

    /// Hand one poll's lines to the uploader, waiting while its channel is full. `quiet`: do
    /// not ring it (the caller rings once for all it sent together); returns whether
    /// anything was sent unrung.
    fn send(&self, lines: Vec<String>, quiet: bool) -> bool {
        if lines.is_empty() {
            return false;
        }
        let mut msg = PollLines {
            lines,
            taken: Instant::now(),
            stamped: self.stamped,
        };
        if quiet {
            match self.out.try_send_quiet(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    // What was sent unrung must be taken before there is room.
                    self.out.ring();
                    msg = m;
                }
            }
        }
        let mut warned = false;
        loop {
            match self.out.send_timeout(msg, Duration::from_secs(1)) {
                Ok(()) => return false,
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
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// The thread's loop: wait for the next event, handle it, until shutdown.
    pub fn run(mut self, shutdown: Receiver<()>, beat: Arc<Beat>) {
        self.beat = Some(beat.clone());
        loop {
            beat.check_in();
            self.summary(Instant::now());
            match self.next_event(&shutdown) {
                Event::Shutdown => break,
                event => self.handle(event),
            }
        }
        self.client.transport().close();
    }

    /// Sleep until the next event: a command, or the next due time (at most `BEAT_EVERY`),
    /// or shutdown. Commands come first but at most `COMMANDS_PER_TURN` between two polls:
    /// on a saturated endpoint a poll is always due, and a flood of commands must not stop
    /// polling either.
    fn next_event(&mut self, shutdown: &Receiver<()>) -> Event {
        if self.commands_in_turn < COMMANDS_PER_TURN {
            if let Ok(cmd) = self.commands.try_recv() {
                self.commands_in_turn += 1;
                return Event::Command(cmd);
            }
        }
        let now = Instant::now();
        let wait = match self.next_due() {
            Some((ui, gi, due)) if due <= now => {
                if !matches!(shutdown.try_recv(), Err(TryRecvError::Empty)) {
                    return Event::Shutdown;
                }
                self.commands_in_turn = 0;
                return Event::Due(ui, gi);
            }
            Some((_, _, due)) => (due - now).min(BEAT_EVERY),
            None => BEAT_EVERY,
        };
        select! {
            recv(shutdown) -> _ => Event::Shutdown,
            recv(self.commands) -> cmd => match cmd {
                Ok(cmd) => Event::Command(cmd),
                Err(_) => {
                    // Every sender is gone: no more commands (and no busy loop on them).
                    self.commands = crossbeam_channel::never();
                    Event::Wake
                }
            },
            default(wait) => Event::Wake,
        }
    }

    /// The one handler of the loop's events (`Shutdown` ends the loop before it).
    fn handle(&mut self, event: Event) {
        match event {
            Event::Due(ui, gi) => {
                let now = Instant::now();
                let lines = self.poll_group(ui, gi, now);
                self.advance(ui, gi, now);
                self.send(lines, false);
            }
            Event::Command(cmd) => self.command(cmd),
            Event::Wake | Event::Shutdown => {}
        }
    }

    /// One line per machine at a low rate (when due), instead of a line per poll.
    fn summary(&mut self, now: Instant) {
        if now < self.summary_at {
            return;
        }
        self.summary_at += SUMMARY_EVERY;
        for (u, last) in self.units.iter().zip(self.summary_counts.iter_mut()) {
            let (online, polls, errors) = u.entry.counts();
            log::info!(
                "machine {}: {}; {} polls and {} errors in the last {} min",
                u.machine.name,
                match online {
                    Some(true) => "online",
                    Some(false) => "offline",
                    None => "not polled yet",
                },
                polls - last.0,
                errors - last.1,
                SUMMARY_EVERY.as_secs() / 60
            );
            *last = (polls, errors);
        }
    }

    /// Poll every group of every machine once and return all current values as lines
    /// (the `once` command). Machines that did not answer are reported by the status board.
    pub fn poll_all_once(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for ui in 0..self.units.len() {
            for gi in 0..self.units[ui].groups.len() {
                let now = Instant::now();
                self.schedule.connect_now(now);
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

pub(crate) mod batch;
pub(crate) mod mux;
pub(crate) mod schedule;

#[cfg(test)]
mod tests;
