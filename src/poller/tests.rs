//! The endpoint owner's scheduling, against simulated machines reached through an in-memory
//! transport (the simulator's own request handler), so timing is in the test's hands.

use super::*;
use crate::batch::MachineId;
use crate::config;
use crate::modbus::codec::{Framing, Request};
use crate::simulate::{self, Bus, SimMachine};
use crate::status::lock;
use std::collections::BTreeMap;

/// Answers through the simulator; units listed in `dead` never answer (a timeout).
struct InMemory {
    bus: Bus,
    dead: Vec<u8>,
    open: bool,
    pub log: Arc<Mutex<Vec<u8>>>,
}

impl Transport for InMemory {
    fn framing(&self) -> Framing {
        Framing::Tcp
    }
    fn reconnect_after_timeouts(&self) -> Option<u32> {
        Some(crate::modbus::transport::HALF_OPEN_TIMEOUTS)
    }
    fn close_after_bad_reply(&self) -> bool {
        true
    }
    fn is_open(&self) -> bool {
        self.open
    }
    fn open(&mut self) -> std::io::Result<()> {
        self.open = true;
        Ok(())
    }
    fn close(&mut self) {
        self.open = false;
    }
    fn exchange(&mut self, req: &Request) -> Result<Vec<u8>, TransportError> {
        lock(&self.log).push(req.unit);
        if self.dead.contains(&req.unit) {
            return Err(TransportError::Timeout(Duration::from_millis(500)));
        }
        simulate::answer(&self.bus, &req.adu, rmodbus::ModbusProto::TcpUdp)
            .ok_or(TransportError::Timeout(Duration::from_millis(500)))
    }
}

fn two_machines() -> Config {
    let regs = r#"[{"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "scale": 0.1, "measurement": "high_frequency_data"},
                   {"name": "batch", "kind": "holding", "address": 10, "type": "string", "length": 4, "measurement": "cycle_context_data"}]"#;
    let text = format!(
        r#"{{"profiles": {{"p": {{"poll_interval_s": 5, "intervals_s": {{"high_frequency_data": 1}}, "registers": {regs}}}}},
            "machines": [{{"name": "A", "ip_address": "gw", "slave_id": 1, "profile": "p"}},
                         {{"name": "B", "ip_address": "gw", "slave_id": 2, "profile": "p"}}]}}"#
    );
    config::validate_raw(config::parse(&text).expect("parse")).expect("valid")
}

type Shared<T> = Arc<Mutex<T>>;

fn poller(cfg: &Config, dead: Vec<u8>) -> (Poller, Shared<Vec<u8>>, Vec<Shared<MachineStatus>>) {
    let bus: Bus = Arc::new(Mutex::new(
        cfg.machines
            .iter()
            .map(|m| (m.unit_id, SimMachine::new(m.clone(), 20.0)))
            .collect::<BTreeMap<_, _>>(),
    ));
    let log = Arc::new(Mutex::new(Vec::new()));
    let t = InMemory {
        bus,
        dead,
        open: false,
        log: log.clone(),
    };
    let st: Vec<_> = cfg
        .machines
        .iter()
        .map(|_| Arc::new(Mutex::new(MachineStatus::default())))
        .collect();
    let (tx, _rx) = crate::uploader::points_channel(64);
    (
        Poller::new(
            cfg,
            0,
            Box::new(t),
            &st,
            tx,
            Arc::new(crate::clock::Clock::trusted()),
        ),
        log,
        st,
    )
}

#[test]
fn machines_on_one_endpoint_share_it_and_groups_follow_their_intervals() {
    let cfg = two_machines();
    assert_eq!(
        cfg.endpoints.len(),
        1,
        "same ip_address:port means one endpoint"
    );
    let (p, _, _) = poller(&cfg, vec![]);
    let plan = p.plan_summary();
    assert_eq!(plan.len(), 2);
    // high_frequency_data every 1 s, cycle_context_data every 5 s: two groups of one block.
    assert_eq!(
        plan[0].1,
        vec![(Duration::from_secs(1), 1), (Duration::from_secs(5), 1)]
    );
}

#[test]
fn a_dead_unit_costs_one_timeout_then_backs_off_while_the_other_keeps_its_schedule() {
    let cfg = two_machines();
    let (mut p, log, st) = poller(&cfg, vec![2]);
    // Drive the loop by hand for 20 simulated due slots.
    for _ in 0..20 {
        let (ui, gi, due) = p.next_due().expect("something is due");
        let lines = p.poll_group(ui, gi, due);
        p.advance(ui, gi, due);
        if ui == 0 {
            assert!(lock(&st[0]).online == Some(true));
            let _ = lines;
        }
    }
    let asked: Vec<u8> = lock(&log).clone();
    let dead = asked.iter().filter(|&&u| u == 2).count();
    let alive = asked.iter().filter(|&&u| u == 1).count();
    assert_eq!(lock(&st[1]).online, Some(false));
    assert!(lock(&st[1]).errors.get("timeout").copied().unwrap_or(0) >= 1);
    // The dead unit is retried only after its backoff, so most requests go to the live one.
    assert!(alive > dead, "alive {alive}, dead {dead}: {asked:?}");
    assert!(p.schedule.backing_off(1));
}

#[test]
fn a_timeout_is_followed_by_a_reconnect_when_every_unit_times_out() {
    let cfg = two_machines();
    let (mut p, _, _) = poller(&cfg, vec![1, 2]);
    let now = Instant::now();
    p.poll_group(0, 0, now);
    assert!(
        p.client.is_open(),
        "one timeout keeps the connection (a late reply is discarded by id)"
    );
    p.poll_group(1, 0, now);
    assert!(
        !p.client.is_open(),
        "two units timing out in a row: the link is reopened"
    );
}

#[test]
fn a_read_once_register_is_read_per_connection_and_written_with_its_measurement() {
    let text = r#"{"machines": [{"name": "A", "ip_address": "gw", "slave_id": 1, "intervals_s": {"high_frequency_data": 1},
        "registers": [
            {"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"},
            {"name": "serial_no", "kind": "holding", "address": 10, "type": "uint16", "measurement": "high_frequency_data", "read_once": true}]}]}"#;
    let cfg = config::validate_raw(config::parse(text).expect("parse")).expect("valid");
    let (mut p, log, _st) = poller(&cfg, vec![]);
    let mut lines = Vec::new();
    for _ in 0..4 {
        let (ui, gi, due) = p.next_due().expect("due");
        lines.extend(p.poll_group(ui, gi, due));
        p.advance(ui, gi, due);
    }
    assert_eq!(
        lock(&log).len(),
        5,
        "one read of the identity, then one block per poll"
    );
    let first = lines
        .iter()
        .find(|l| l.starts_with("high_frequency_data"))
        .expect("a line");
    assert!(first.contains("serial_no="), "{first}");
    // A new connection reads it again.
    p.client.transport().close();
    let (ui, gi, due) = p.next_due().expect("due");
    p.poll_group(ui, gi, due);
    assert_eq!(lock(&log).len(), 7);
}

#[test]
fn the_loop_takes_commands_first_but_polls_between_floods_and_sleeps_until_due() {
    let cfg = two_machines();
    let (mut p, _, _) = poller(&cfg, vec![]);
    let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(64);
    p.commands = cmd_rx;
    for _ in 0..COMMANDS_PER_TURN + 2 {
        cmd_tx
            .send(OwnerCommand::NotListed {
                machine: MachineId(0),
            })
            .expect("send");
    }
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let mut kinds = String::new();
    for _ in 0..COMMANDS_PER_TURN + 6 {
        let event = p.next_event(&stop);
        kinds.push(match event {
            Event::Command(_) => 'c',
            Event::Due(..) => 'd',
            Event::Wake => 'w',
            Event::Shutdown => 's',
        });
        if let Event::Due(ui, gi) = event {
            // Polled: the group's next slot is a second away.
            p.advance(ui, gi, Instant::now());
        }
    }
    // Both machines' two groups are due at the start: 16 commands, a poll, the last two
    // commands, then the other three due groups.
    assert_eq!(kinds, format!("{}dccddd", "c".repeat(COMMANDS_PER_TURN)));
    // Nothing due for a second: the wait ends with the next due time, not before.
    let started = Instant::now();
    assert!(matches!(p.next_event(&stop), Event::Wake));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // A command wakes it at once.
    cmd_tx
        .send(OwnerCommand::NotListed {
            machine: MachineId(0),
        })
        .expect("send");
    assert!(matches!(p.next_event(&stop), Event::Command(_)));
    drop(stop_tx);
    assert!(matches!(p.next_event(&stop), Event::Shutdown));
}
