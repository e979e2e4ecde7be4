//! Modbus TCP against pymodbus: every type and order decodes as served, read blocks are the
//! minimum, exception 02 on a bridged block splits it (and the split is kept), a restarted
//! server is reconnected to.

use crate::util::*;
use dyeing_gateway::config::{self, Config};
use dyeing_gateway::modbus::transport::TcpTransport;
use dyeing_gateway::poller::Poller;
use dyeing_gateway::status::{lock, MachineStatus};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn quantity(ty: &str) -> u64 {
    match ty {
        "int32" | "uint32" | "float32" => 2,
        "int64" | "uint64" | "float64" => 4,
        _ => 1,
    }
}

/// Register entries (with the value pymodbus serves) covering every type, order, kind and
/// string layout.
pub(crate) fn all_types() -> Vec<Value> {
    let mut regs = Vec::new();
    let mut addr = 0u64;
    let samples = [
        ("int16", json!(-1234)),
        ("uint16", json!(54321)),
        ("int32", json!(-123456789)),
        ("uint32", json!(3000000000u64)),
        ("int64", json!(-1234567890123i64)),
        ("uint64", json!(12345678901234u64)),
        ("float32", json!(123.456)),
        ("float64", json!(-9876.54321)),
    ];
    for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
        for (ty, v) in &samples {
            regs.push(
                json!({"name": format!("{ty}_{order}"), "kind": "holding", "address": addr,
                "type": ty, "order": order, "value": v, "measurement": "medium_frequency_data"}),
            );
            addr += quantity(ty);
        }
    }
    regs.push(
        json!({"name": "batch_hi", "kind": "holding", "address": addr, "type": "string",
        "length": 5, "value": "BATCH123", "measurement": "cycle_context_data"}),
    );
    addr += 5;
    regs.push(json!({"name": "batch_lo", "kind": "holding", "address": addr, "type": "string",
        "length": 4, "string_order": "low_first", "value": "B-77", "measurement": "cycle_context_data"}));
    addr += 4;
    regs.push(
        json!({"name": "alarm_bit", "kind": "holding", "address": addr, "type": "bit",
        "bit": 3, "value": true, "measurement": "medium_frequency_data"}),
    );
    addr += 1;
    regs.push(
        json!({"name": "temp_scaled", "kind": "input", "address": 0, "type": "int16",
        "scale": 0.1, "value": 304, "measurement": "high_frequency_data"}),
    );
    regs.push(
        json!({"name": "level_offset", "kind": "input", "address": 1, "type": "uint16",
        "scale": 0.5, "offset": -10.0, "value": 100, "measurement": "high_frequency_data"}),
    );
    regs.push(
        json!({"name": "door", "kind": "coil", "address": 5, "type": "bool",
        "value": true, "measurement": "medium_frequency_data"}),
    );
    regs.push(
        json!({"name": "pump", "kind": "discrete_input", "address": 7, "type": "bool",
        "value": false, "measurement": "medium_frequency_data"}),
    );
    let _ = addr;
    regs
}

/// The gateway's config entry for a spec entry: everything but the served value.
fn config_register(spec: &Value) -> Value {
    let mut r = spec.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("value");
    }
    r
}

fn config_for(port: u16, regs: &[Value], extra: Value) -> Value {
    let mut m = json!({"name": "JET-01", "ip_address": "127.0.0.1", "port": port, "slave_id": 1,
        "registers": regs.iter().map(config_register).collect::<Vec<_>>()});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({"machines": [m]})
}

fn load(v: &Value) -> Config {
    let raw = config::parse(&v.to_string()).expect("parse");
    config::validate_raw(raw).unwrap_or_else(|e| panic!("config: {e}"))
}

fn poller(cfg: &Config) -> (Poller, Arc<Mutex<MachineStatus>>) {
    let st = Arc::new(Mutex::new(MachineStatus::default()));
    let (tx, _rx) = dyeing_gateway::uploader::points_channel(16);
    let ep = &cfg.endpoints[0];
    let (host, port) = match &ep.kind {
        config::EndpointKind::Tcp { host, port } => (host.clone(), *port),
        other => panic!("not tcp: {other:?}"),
    };
    let p = Poller::new(
        cfg,
        0,
        Box::new(TcpTransport::new(&host, port, Duration::from_secs(2))),
        std::slice::from_ref(&st),
        tx,
        std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    (p, st)
}

#[test]
fn every_type_and_order_decodes_as_pymodbus_serves_it() {
    let dir = TempDir::new("types");
    let regs = all_types();
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}}), "tcp");
    let cfg = dir.write(
        "m.json",
        &config_for(peer.port, &regs, json!({})).to_string(),
    );
    let out = gateway(&["--config", cfg.to_str().unwrap_or_default(), "once"], &[]);
    let stdout = text(&out.stdout);
    let dump = format!(
        "stdout:\n{stdout}\nstderr:\n{}\n{}",
        text(&out.stderr),
        peer.proc.dump()
    );
    assert!(out.status.success(), "once failed\n{dump}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_decoded(&lines, &regs, &dump);
}

/// Every register of `regs` appears in `lines` with the value pymodbus serves, typed right.
pub(crate) fn assert_decoded(lines: &[&str], regs: &[Value], dump: &str) {
    let mut fields = std::collections::HashMap::new();
    for line in lines {
        for (k, v) in parse_fields(line).1 {
            fields.insert(k, v);
        }
    }
    for r in regs {
        let name = r["name"].as_str().unwrap_or_default();
        let got = fields
            .get(name)
            .unwrap_or_else(|| panic!("field {name} missing\n{dump}"));
        let ty = r["type"].as_str().unwrap_or_default();
        let scaled = r.get("scale").is_some();
        match ty {
            "string" => assert_eq!(got, r["value"].as_str().unwrap_or_default(), "{name}"),
            "bit" | "bool" => assert_eq!(got, &r["value"].to_string(), "{name}"),
            "float32" | "float64" => {
                let want = r["value"].as_f64().unwrap_or(f64::NAN);
                let g: f64 = got.parse().unwrap_or(f64::NAN);
                assert!(
                    (g - want).abs() <= want.abs() * 1e-6,
                    "{name}: got {got}, want {want}"
                );
            }
            _ if scaled => {
                let raw = r["value"].as_f64().unwrap_or(f64::NAN);
                let want =
                    raw * r["scale"].as_f64().unwrap_or(1.0) + r["offset"].as_f64().unwrap_or(0.0);
                assert!(
                    !got.ends_with('i'),
                    "{name}: scaled values are floats, got {got}"
                );
                let g: f64 = got.parse().unwrap_or(f64::NAN);
                assert!((g - want).abs() < 1e-9, "{name}: got {got}, want {want}");
            }
            _ => assert_eq!(got, &format!("{}i", r["value"]), "{name}"),
        }
    }
}

#[test]
fn read_blocks_are_the_minimum_the_limits_allow() {
    let dir = TempDir::new("blocks");
    // 41 uint16 registers every 6 addresses: a span of 241 registers with gaps of 5. With the
    // TCP limit of 123 registers per request, two requests are the least that can cover it.
    let regs: Vec<Value> = (0..41)
        .map(|i| {
            json!({"name": format!("r{i}"), "kind": "holding", "address": i * 6,
            "type": "uint16", "value": i, "measurement": "medium_frequency_data"})
        })
        .collect();
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}}), "tcp");
    let cfg = load(&config_for(peer.port, &regs, json!({})));
    let (mut p, st) = poller(&cfg);
    let lines = p.poll_all_once();
    assert_eq!(lines.len(), 1, "{lines:?}\n{}", peer.proc.dump());
    assert_eq!(
        lock(&st).requests,
        2,
        "two requests cover 241 registers at 123 per request"
    );
    // Narrower gaps allowed: max_gap 4 < 5 means no bridging, one request per register.
    let cfg = load(&config_for(peer.port, &regs, json!({"max_gap": 4})));
    let (mut p, st) = poller(&cfg);
    p.poll_all_once();
    assert_eq!(lock(&st).requests, 41);
    // A device that accepts only 60 registers per read needs ceil(241 / 60) = 5 requests.
    let cfg = load(&config_for(
        peer.port,
        &regs,
        json!({"max_registers_per_read": 60}),
    ));
    let (mut p, st) = poller(&cfg);
    p.poll_all_once();
    assert_eq!(lock(&st).requests, 5);
}

#[test]
fn exception_02_on_a_bridged_block_splits_it_and_the_split_is_kept() {
    let dir = TempDir::new("split");
    let regs = vec![
        json!({"name": "a", "kind": "holding", "address": 0, "type": "uint16", "value": 11, "measurement": "medium_frequency_data"}),
        json!({"name": "b", "kind": "holding", "address": 1, "type": "uint16", "value": 12, "measurement": "medium_frequency_data"}),
        json!({"name": "c", "kind": "holding", "address": 6, "type": "uint16", "value": 13, "measurement": "medium_frequency_data"}),
    ];
    // Sparse: addresses 2..=5 do not exist, so the bridged block 0..=6 is refused with 02.
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}, "sparse": true}), "tcp");
    let cfg = load(&config_for(peer.port, &regs, json!({})));
    let (mut p, st) = poller(&cfg);
    let lines = p.poll_all_once();
    assert_eq!(lock(&st).requests, 3, "one refused block, then two runs");
    assert!(lines[0].contains("a=11i,b=12i,c=13i"), "{lines:?}");
    p.poll_all_once();
    assert_eq!(
        lock(&st).requests,
        5,
        "the second poll reads the two runs directly"
    );
    assert_eq!(
        lock(&st).errors.get("exception"),
        None,
        "a split is not an error"
    );
}

#[test]
fn a_restarted_server_is_reconnected_to() {
    let dir = TempDir::new("restart");
    let regs = vec![
        json!({"name": "a", "kind": "holding", "address": 0, "type": "uint16",
        "value": 7, "measurement": "medium_frequency_data"}),
    ];
    let mut peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}}), "tcp");
    let cfg = load(&config_for(peer.port, &regs, json!({})));
    let (mut p, st) = poller(&cfg);
    p.poll_all_once();
    assert_eq!(lock(&st).online, Some(true));
    let (spec, port) = (peer.spec.clone(), peer.port);
    peer.proc.kill();
    p.poll_all_once();
    assert_eq!(
        lock(&st).online,
        Some(false),
        "a stopped server makes the machine offline"
    );
    let errors_while_down = lock(&st).errors.values().sum::<u64>();
    assert!(errors_while_down >= 1);
    let _peer = ModbusPeer::start_at(&dir, &spec, "tcp", port);
    let lines = p.poll_all_once();
    assert_eq!(lock(&st).online, Some(true), "{:?}", lock(&st).last_error);
    assert!(lines.iter().any(|l| l.contains("a=7i")), "{lines:?}");
}
