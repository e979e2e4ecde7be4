//! Benchmark: the RS-485 bus cycle against the wire time. A simulated slave on a pty paces its
//! bytes at the configured baud rate (a pty alone has no wire time): it takes a request as
//! having lasted `bytes x character time` from its first byte, answers at once (no turnaround),
//! and writes each reply byte when that byte's stop bit would end. The gateway's own poller
//! and serial transport poll 10 slaves x 40 registers back to back. Printed per baud rate: the
//! bus cycle against the time the frames and the mandatory 3.5-character silences take on the
//! wire (budget: at most 3 % longer), and how many requests started before the silence had
//! passed (budget: none). Run with `cargo run --release --example bench_rtu`.

use dyeing_gateway::config;
use dyeing_gateway::modbus::serial::{char_time, t35};
use dyeing_gateway::modbus::transport_for;
use dyeing_gateway::poller::Poller;
use dyeing_gateway::simulate::{self, Bus, SimMachine};
use dyeing_gateway::status::{Liveness, MachineStatus};
use rmodbus::ModbusProto;
use serde_json::json;
use serialport::{SerialPort, TTYPort};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sleep until `t`: coarse sleep, then spin the last stretch for accuracy.
fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > Duration::from_micros(400) {
            std::thread::sleep(left - Duration::from_micros(300));
        } else {
            std::hint::spin_loop();
        }
    }
}

struct Transaction {
    first: Instant,
    reply_end: Instant,
    bytes: usize,
    lag: Duration,
}

/// The paced slave: answers every request for the bus's unit ids at wire speed.
fn paced_slave(
    mut port: TTYPort,
    bus: Bus,
    ct: Duration,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Transaction>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let n = match port.read(&mut chunk) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let first = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        // The rest of the request (it was written at once; it is here or nearly).
        let len = loop {
            match rmodbus::guess_request_frame_len(&buf, ModbusProto::Rtu) {
                Ok(l) if buf.len() >= usize::from(l) => break usize::from(l),
                Ok(_) | Err(rmodbus::ErrorKind::OOB) => {
                    if let Ok(n) = port.read(&mut chunk) {
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
                Err(_) => {
                    buf.clear();
                    break 0;
                }
            }
        };
        if len == 0 {
            continue;
        }
        let request: Vec<u8> = buf.drain(..len).collect();
        buf.clear();
        let Some(reply) = simulate::answer(&bus, &request, ModbusProto::Rtu) else {
            continue;
        };
        // The request occupies the wire for len character times from its first byte.
        let request_end = first + ct * len as u32;
        let mut last = request_end;
        for (k, b) in reply.iter().enumerate() {
            let due = request_end + ct * (k as u32 + 1);
            sleep_until(due);
            let _ = port.write_all(&[*b]);
            last = due;
        }
        let reply_end = Instant::now();
        if let Ok(mut l) = log.lock() {
            l.push(Transaction {
                first,
                reply_end,
                bytes: len + reply.len(),
                lag: reply_end.saturating_duration_since(last),
            });
        }
    }
}

fn run(baud: u32, parity: &str, transactions: usize) {
    let (master, slave) = TTYPort::pair().expect("pty pair");
    let path = slave.name().expect("pty name");
    let regs: Vec<_> = (0..40)
        .map(|i| json!({"name": format!("param_{i}"), "kind": "holding", "address": i, "type": "uint16", "measurement": "medium_frequency_data"}))
        .collect();
    let cfg_json = json!({
        "endpoints": [{"name": "bus", "transport": "rtu", "serial_port": path, "baudrate": baud, "parity": parity, "timeout_s": 1}],
        "profiles": {"p": {"poll_interval_s": 0.001, "registers": regs}},
        "machines": (1..=10).map(|u| json!({"name": format!("S{u:02}"), "endpoint": "bus", "slave_id": u, "profile": "p"})).collect::<Vec<_>>()
    });
    let cfg =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    let settings = match &cfg.endpoints[0].kind {
        config::EndpointKind::Rtu(s) => s.clone(),
        _ => unreachable!("the config has one RTU endpoint"),
    };
    let (ct, silence) = (char_time(&settings), t35(&settings));
    let bus: Bus = Arc::new(Mutex::new(
        cfg.machines
            .iter()
            .map(|m| (m.unit_id, SimMachine::new(m.clone(), 60.0)))
            .collect::<BTreeMap<_, _>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut master = master;
    master
        .set_timeout(Duration::from_millis(100))
        .expect("timeout");
    let slave_thread = {
        let (bus, stop, log) = (bus.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || paced_slave(master, bus, ct, stop, log))
    };
    let st: Vec<Arc<Mutex<MachineStatus>>> = cfg.machines.iter().map(|_| Arc::default()).collect();
    let (tx, rx) = dyeing_gateway::uploader::points_channel(64);
    let drain = std::thread::spawn(move || for _ in rx.iter() {});
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
    let gw = std::thread::spawn(move || poller.run(stop_rx, beat));
    let warmup = 20;
    while log.lock().map(|l| l.len()).unwrap_or(0) < warmup + transactions + 1 {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stop_tx);
    let _ = gw.join();
    stop.store(true, Ordering::Relaxed);
    let _ = slave_thread.join();
    let _ = drain.join();
    drop(slave);
    let log = log
        .lock()
        .map(|l| {
            l.iter()
                .map(|t| (t.first, t.reply_end, t.bytes, t.lag))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let w = &log[warmup..warmup + transactions + 1];
    let measured = w[transactions].0 - w[0].0;
    let lag: Duration = w[..transactions].iter().map(|t| t.3).sum();
    let wire: Duration = w[..transactions]
        .iter()
        .map(|t| ct * t.2 as u32 + silence)
        .sum();
    let early = w.windows(2).filter(|p| p[1].0 - p[0].1 < silence).count();
    let min_gap = w
        .windows(2)
        .map(|p| p[1].0 - p[0].1)
        .min()
        .unwrap_or_default();
    let cycle = |d: Duration| d.as_secs_f64() * 1000.0 / (transactions as f64 / 10.0);
    println!(
        "{baud:>6} 8{}1: bus cycle (10 slaves x 40 registers) {:.2} ms vs wire time {:.2} ms = {:.4}x; \
         {} requests measured, {} started before t3.5 ({:.3} ms; shortest silence seen {:.3} ms); slave pacing lag excluded {:.3} ms/cycle",
        if parity == "even" { "E" } else { "N" },
        cycle(measured - lag),
        cycle(wire),
        (measured - lag).as_secs_f64() / wire.as_secs_f64(),
        transactions,
        early,
        silence.as_secs_f64() * 1000.0,
        min_gap.as_secs_f64() * 1000.0,
        cycle(lag),
    );
}

fn main() {
    println!("bench_rtu: paced simulated slaves on a pty; budget: cycle <= 1.03x wire time, no early request");
    run(9600, "even", 100);
    run(115200, "none", 500);
}
