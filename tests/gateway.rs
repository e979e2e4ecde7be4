//! Modbus gateway exceptions (a TCP-to-RTU gateway answering for the serial unit behind it),
//! raised by pymodbus: 0x0B counts as a timeout of that unit only, 0x0A is a configuration
//! problem logged once with unit and endpoint, 0x06 (busy) is retried after a backoff.

use crate::util::*;
use dyeing_gateway::config::{self, Config};
use dyeing_gateway::modbus::transport::TcpTransport;
use dyeing_gateway::poller::Poller;
use dyeing_gateway::status::{lock, MachineStatus};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Machines `names[i]` at unit `i + 1` behind one TCP gateway, each with two registers far
/// apart (two read blocks per poll).
fn config(port: u16, names: &[&str]) -> Config {
    let regs = json!([
        {"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"},
        {"name": "b", "kind": "holding", "address": 500, "type": "uint16", "measurement": "medium_frequency_data"}
    ]);
    let machines: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"name": n, "ip_address": "127.0.0.1", "port": port, "slave_id": i + 1,
            "registers": regs})
        })
        .collect();
    let raw = config::parse(&json!({"machines": machines}).to_string()).expect("parse");
    config::validate_raw(raw).unwrap_or_else(|e| panic!("config: {e}"))
}

fn served(units: usize) -> Value {
    let regs = json!([
        {"kind": "holding", "address": 0, "type": "uint16", "value": 11},
        {"kind": "holding", "address": 500, "type": "uint16", "value": 12}
    ]);
    let slaves: serde_json::Map<String, Value> =
        (1..=units).map(|u| (u.to_string(), regs.clone())).collect();
    json!({ "slaves": slaves })
}

type Statuses = Vec<Arc<Mutex<MachineStatus>>>;

fn poller(cfg: &Config, port: u16) -> (Poller, Statuses) {
    let st: Statuses = cfg
        .machines
        .iter()
        .map(|_| Arc::new(Mutex::new(MachineStatus::default())))
        .collect();
    let (tx, _rx) = dyeing_gateway::uploader::points_channel(16);
    let p = Poller::new(
        cfg,
        0,
        Box::new(TcpTransport::new("127.0.0.1", port, Duration::from_secs(2))),
        &st,
        tx,
        Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    (p, st)
}

#[test]
fn exception_0b_is_a_timeout_of_that_unit_only() {
    let dir = TempDir::new("gw0b");
    let mut spec = served(3);
    spec["exceptions"] = json!({"2": {"code": 11}, "3": {"code": 11}});
    let peer = ModbusPeer::start(&dir, &spec, "tcp");
    let cfg = config(peer.port, &["GW0B-1", "GW0B-2", "GW0B-3"]);
    let (mut p, st) = poller(&cfg, peer.port);
    let lines = p.poll_all_once();
    let dump = peer.proc.dump();
    assert_eq!(lock(&st[0]).online, Some(true), "{dump}");
    for s in &st[1..] {
        let s = lock(s);
        assert_eq!(s.online, Some(false), "{}: {:?}", s.name, s.last_error);
        assert_eq!(s.errors.get("timeout"), Some(&1), "{:?}", s.errors);
        assert_eq!(s.requests, 1, "the unit's poll ends at its first 0x0B");
    }
    assert!(lines.iter().any(|l| l.contains("a=11i,b=12i")), "{lines:?}");
    // Two units failing in a row with 0x0B do not make the endpoint look dead: unit 1 polled
    // after them in one connection (a dead link would be reconnected).
    let mut cfg2 = cfg.clone();
    cfg2.machines.rotate_left(1);
    let (mut p, st) = poller(&cfg2, peer.port);
    p.poll_all_once();
    assert_eq!(lock(&st[2]).online, Some(true), "{dump}");
    assert_eq!(lock(&st[2]).errors.values().sum::<u64>(), 0);
}

#[test]
fn exception_0a_is_a_configuration_problem_logged_once() {
    let logs = capture_logs();
    let dir = TempDir::new("gw0a");
    let mut spec = served(2);
    spec["exceptions"] = json!({"2": {"code": 10}});
    let peer = ModbusPeer::start(&dir, &spec, "tcp");
    let cfg = config(peer.port, &["GW0A-1", "GW0A-2"]);
    let (mut p, st) = poller(&cfg, peer.port);
    for _ in 0..3 {
        p.poll_all_once();
    }
    let needle = "GW0A-2 (unit 2 on";
    let logged = logs.count("gateway path unavailable");
    let ours = logs.dump("GW0A-2");
    assert_eq!(logs.count(needle), 1, "{ours}");
    assert!(logged >= 1, "{ours}");
    assert!(
        ours.lines()
            .filter(|l| l.contains("gateway path"))
            .all(|l| l.contains(needle)),
        "logged with unit and endpoint\n{ours}"
    );
    assert_eq!(lock(&st[1]).online, Some(false));
    assert_eq!(lock(&st[1]).errors.get("gateway_path"), Some(&3));
    assert_eq!(lock(&st[0]).online, Some(true));
}

#[test]
fn exception_06_busy_is_retried_after_a_backoff() {
    let dir = TempDir::new("gw06");
    let mut spec = served(1);
    spec["exceptions"] = json!({"1": {"code": 6, "times": 2}});
    let peer = ModbusPeer::start(&dir, &spec, "tcp");
    let cfg = config(peer.port, &["GW06-1"]);
    let (mut p, st) = poller(&cfg, peer.port);
    let lines = p.poll_all_once();
    let s = lock(&st[0]);
    assert!(
        lines.iter().any(|l| l.contains("a=11i,b=12i")),
        "{lines:?} {:?}\n{}",
        s.last_error,
        peer.proc.dump()
    );
    assert_eq!(s.requests, 4, "two busy answers, then the two blocks");
    assert_eq!(s.online, Some(true));
}
