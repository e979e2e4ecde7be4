//! Modbus RTU against pymodbus on a socat pty pair (two or more slave ids on one bus), with a
//! fault injector in between for garbage, bad CRCs and replies from the wrong slave id; and
//! RTU framed over TCP against pymodbus's RTU-framed TCP server.
//!
//! Serial tests cannot run under qemu-user (its 7.2 release lacks the TCGETS2 ioctl that
//! serialport uses), so they are skipped on 32-bit ARM and run on x86.

use crate::tcp::{all_types, assert_decoded};
use crate::util::*;
use dyeing_gateway::config::{self, Config};
use dyeing_gateway::modbus::transport_for;
use dyeing_gateway::poller::Poller;
use dyeing_gateway::status::{lock, Liveness, MachineStatus};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A socat pty pair: two linked serial devices.
pub(crate) struct PtyPair {
    _proc: Proc,
    pub(crate) a: PathBuf,
    pub(crate) b: PathBuf,
}

pub(crate) fn pty_pair(dir: &TempDir, name: &str) -> PtyPair {
    let (a, b) = (
        dir.path().join(format!("{name}-a")),
        dir.path().join(format!("{name}-b")),
    );
    let proc = Proc::spawn(
        &format!("socat-{name}"),
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display())),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || a.exists() && b.exists()),
        "{}",
        proc.dump()
    );
    PtyPair { _proc: proc, a, b }
}

pub(crate) fn rtu_server(dir: &TempDir, spec: &Value, device: &Path) -> Proc {
    let spec_path = dir.write(
        &format!("spec-{}.json", fastrand::u32(..)),
        &spec.to_string(),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_server.py");
    let p = Proc::spawn(
        "pymodbus-rtu",
        Command::new(python())
            .arg(script)
            .args(["--mode", "rtu", "--spec"])
            .arg(&spec_path)
            .arg("--device")
            .arg(device),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || p.output().contains("ready")),
        "{}",
        p.dump()
    );
    // The server opens the port right after printing "ready".
    std::thread::sleep(Duration::from_millis(500));
    p
}

fn register_config(regs: &[Value]) -> Vec<Value> {
    regs.iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("value");
            }
            r
        })
        .collect()
}

#[test]
#[cfg_attr(
    target_arch = "arm",
    ignore = "qemu-user 7.2 lacks TCGETS2; serial tests run on x86"
)]
fn every_type_decodes_from_two_slaves_on_one_bus() {
    let dir = TempDir::new("rtu-types");
    let pair = pty_pair(&dir, "bus");
    let regs = all_types();
    let server = rtu_server(&dir, &json!({"slaves": {"1": regs, "7": regs}}), &pair.a);
    let cfg = json!({
        "endpoints": [{"name": "bus", "transport": "rtu", "serial_port": pair.b, "baudrate": 19200, "parity": "none", "timeout_s": 1}],
        "machines": [
            {"name": "PKG-01", "endpoint": "bus", "slave_id": 1, "registers": register_config(&regs)},
            {"name": "PKG-07", "endpoint": "bus", "slave_id": 7, "registers": register_config(&regs)}
        ]
    });
    let path = dir.write("m.json", &cfg.to_string());
    let out = gateway(
        &["--config", path.to_str().unwrap_or_default(), "once"],
        &[],
    );
    let stdout = text(&out.stdout);
    let dump = format!("{stdout}\n{}\n{}", text(&out.stderr), server.dump());
    assert!(out.status.success(), "{dump}");
    for m in ["PKG-01", "PKG-07"] {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains(&format!("machine={m}")))
            .collect();
        assert_decoded(&lines, &regs, &dump);
    }
}

fn machine(name: &str, unit: u8, address: u16) -> Value {
    json!({"name": name, "endpoint": "bus", "slave_id": unit, "registers": [
        {"name": "temperature", "kind": "holding", "address": address, "type": "int16", "scale": 0.1, "measurement": "high_frequency_data"}
    ]})
}

#[test]
#[cfg_attr(
    target_arch = "arm",
    ignore = "qemu-user 7.2 lacks TCGETS2; serial tests run on x86"
)]
fn bus_faults_are_counted_and_healthy_slaves_keep_their_schedule() {
    let logs = capture_logs();
    let dir = TempDir::new("rtu-faults");
    let gw_side = pty_pair(&dir, "gw");
    let srv_side = pty_pair(&dir, "srv");
    let reg = |v: i64| json!([{"kind": "holding", "address": 0, "type": "int16", "value": v}]);
    // Unit 3 is not served at all (a switched-off machine); unit 4 is asked for an address
    // pymodbus does not have (exception 02 on a single register).
    let server = rtu_server(
        &dir,
        &json!({"slaves": {"1": reg(215), "2": reg(300), "4": reg(1)}}),
        &srv_side.a,
    );
    let mangler = Proc::spawn(
        "mangler",
        Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rtu_mangler.py"))
            .arg("--gateway")
            .arg(&gw_side.a)
            .arg("--server")
            .arg(&srv_side.b)
            .arg("--faults")
            .arg(json!({"2": ["garbage", "crc", "wrong_unit", "ok"]}).to_string()),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || mangler
            .output()
            .contains("ready")),
        "{}",
        mangler.dump()
    );
    let interval = 0.5;
    let cfg_json = json!({
        "endpoints": [{"name": "bus", "transport": "rtu", "serial_port": gw_side.b, "baudrate": 38400,
                       "timeout_s": 0.3, "backoff_initial_s": 1, "backoff_max_s": 4}],
        "profiles": {},
        "machines": [machine("RTU-OK", 1, 0), machine("RTU-NOISY", 2, 0), machine("RTU-DEAD", 3, 0), machine("RTU-EXC", 4, 1500)]
    });
    let mut cfg: Config =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    for m in &mut cfg.machines {
        m.intervals = [Duration::from_secs_f64(interval); 4];
    }
    let st: Vec<Arc<Mutex<MachineStatus>>> = cfg.machines.iter().map(|_| Arc::default()).collect();
    let (tx, rx) = dyeing_gateway::uploader::points_channel(1024);
    let poller = Poller::new(
        &cfg,
        0,
        transport_for(&cfg.endpoints[0].kind, cfg.endpoints[0].timeout),
        &st,
        tx,
        std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let live = Liveness::default();
    let beat = live.register("poller");
    let run_for = Duration::from_secs(8);
    let started = Instant::now();
    let h = std::thread::spawn(move || poller.run(stop_rx, beat));
    std::thread::sleep(run_for);
    drop(stop_tx);
    h.join().expect("poller thread");
    let elapsed = started.elapsed().as_secs_f64();
    let dump = format!(
        "{}\n{}\n{}",
        server.dump(),
        mangler.dump(),
        logs.dump("RTU-")
    );
    let s: Vec<MachineStatus> = st.iter().map(|m| lock(m).clone()).collect();
    let ok = &s[0];
    let cycle = elapsed / ok.polls.max(1) as f64;
    println!("healthy slave: {} polls in {elapsed:.1} s, cycle {cycle:.3} s (interval {interval} s) with one slave dead", ok.polls);
    assert_eq!(ok.online, Some(true), "{dump}");
    assert!(ok.errors.is_empty(), "{:?}\n{dump}", ok.errors);
    // The dead slave costs one 0.3 s timeout per backoff period, so the healthy one keeps
    // (nearly) its 0.5 s schedule: at least 80 % of its polls happen.
    assert!(
        ok.polls as f64 >= 0.8 * elapsed / interval,
        "only {} polls\n{dump}",
        ok.polls
    );
    let noisy = &s[1];
    for kind in ["bad_frame", "crc", "wrong_unit"] {
        assert!(
            noisy.errors.get(kind).copied().unwrap_or(0) >= 1,
            "{kind} not counted: {:?}\n{dump}",
            noisy.errors
        );
    }
    let dead = &s[2];
    assert_eq!(dead.online, Some(false));
    assert!(
        dead.errors.get("timeout").copied().unwrap_or(0) >= 2,
        "{:?}",
        dead.errors
    );
    assert!(
        dead.polls < ok.polls / 2,
        "the dead slave is backed off: {} vs {}",
        dead.polls,
        ok.polls
    );
    let exc = &s[3];
    assert!(
        exc.errors.get("exception").copied().unwrap_or(0) >= 1,
        "{:?}\n{dump}",
        exc.errors
    );
    // Logged once per state change, not once per poll.
    assert_eq!(logs.count("machine RTU-DEAD (unit 3"), 1, "{dump}");
    assert_eq!(
        logs.count("machine RTU-EXC: register `temperature`"),
        1,
        "{dump}"
    );
    // Healthy data reached the uploader channel.
    let lines: Vec<String> = rx.try_iter().flat_map(|b| b.lines).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("machine=RTU-OK") && l.contains("temperature=21.5")),
        "{lines:?}"
    );
}

#[test]
fn rtu_framed_over_tcp_against_pymodbus() {
    let dir = TempDir::new("rtu-tcp");
    let regs = all_types();
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"3": regs}}), "rtu-tcp");
    let cfg = json!({"machines": [{"name": "BRIDGE-03", "ip_address": "127.0.0.1", "port": peer.port,
        "transport": "rtu_over_tcp", "slave_id": 3, "registers": register_config(&regs)}]});
    let path = dir.write("m.json", &cfg.to_string());
    let out = gateway(
        &["--config", path.to_str().unwrap_or_default(), "once"],
        &[],
    );
    let stdout = text(&out.stdout);
    let dump = format!("{stdout}\n{}\n{}", text(&out.stderr), peer.proc.dump());
    assert!(out.status.success(), "{dump}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_decoded(&lines, &regs, &dump);
}

#[test]
#[cfg_attr(
    target_arch = "arm",
    ignore = "qemu-user 7.2 lacks TCGETS2; serial tests run on x86"
)]
fn a_serial_port_that_disappears_and_comes_back_is_reopened() {
    let dir = TempDir::new("rtu-unplug");
    let regs = vec![
        json!({"name": "level", "kind": "holding", "address": 0, "type": "uint16", "value": 42, "measurement": "medium_frequency_data"}),
    ];
    let spec = json!({"slaves": {"1": regs}});
    let pair = pty_pair(&dir, "usb");
    let server = rtu_server(&dir, &spec, &pair.a);
    let cfg_json = json!({
        "endpoints": [{"name": "usb", "transport": "rtu", "serial_port": pair.b, "baudrate": 19200, "timeout_s": 0.5}],
        "machines": [{"name": "PKG-09", "endpoint": "usb", "slave_id": 1, "registers": register_config(&regs)}]
    });
    let cfg: Config =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    let st: Vec<Arc<Mutex<MachineStatus>>> = vec![Arc::default()];
    let (tx, _rx) = dyeing_gateway::uploader::points_channel(64);
    let mut poller = Poller::new(
        &cfg,
        0,
        transport_for(&cfg.endpoints[0].kind, cfg.endpoints[0].timeout),
        &st,
        tx,
        std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    assert!(poller
        .poll_all_once()
        .iter()
        .any(|l| l.contains("level=42i")));
    // "Unplug": the pty pair and the server go away, and with them the device node.
    drop(server);
    drop(pair);
    poller.poll_all_once();
    assert_eq!(lock(&st[0]).online, Some(false));
    poller.poll_all_once();
    assert!(lock(&st[0])
        .last_error
        .as_deref()
        .is_some_and(|e| !e.is_empty()));
    // "Plug in again": the same path reappears.
    let pair = pty_pair(&dir, "usb");
    let _server = rtu_server(&dir, &spec, &pair.a);
    let lines = poller.poll_all_once();
    assert_eq!(
        lock(&st[0]).online,
        Some(true),
        "{:?}",
        lock(&st[0]).last_error
    );
    assert!(lines.iter().any(|l| l.contains("level=42i")), "{lines:?}");
}

#[test]
#[cfg_attr(
    target_arch = "arm",
    ignore = "qemu-user 7.2 lacks TCGETS2; serial tests run on x86"
)]
fn kernel_rs485_mode_on_a_port_without_it_is_a_clear_error() {
    let dir = TempDir::new("rs485");
    let pair = pty_pair(&dir, "hat");
    let cfg = json!({
        "endpoints": [{"name": "hat", "transport": "rtu", "serial_port": pair.b, "rs485": {"delay_before_send_ms": 1}}],
        "machines": [{"name": "PKG-01", "endpoint": "hat", "slave_id": 1, "registers": [
            {"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}]}]
    });
    let path = dir.write("m.json", &cfg.to_string());
    let out = gateway(
        &["--config", path.to_str().unwrap_or_default(), "once"],
        &[],
    );
    let err = text(&out.stderr);
    // A pty has no RS-485 mode: the port is refused with the reason, nothing is polled.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TIOCSRS485") && err.contains("PKG-01"),
        "{err}"
    );
}
