//! Benchmark: the crash journal. Runs the gateway (`run`, a separate process) against the
//! simulator and a real influxd and prints:
//! - points lost across 20 SIGKILLs during an InfluxDB outage and 20 without one, with the
//!   journal (and, with `--compare`, without it): a simulated `sequence` register counts the
//!   requests it answers, so a missing value in InfluxDB is a lost point; a single missing
//!   value at a kill is the reply in flight when the process died (answered, never received);
//! - CPU time per poll with and without the journal (50 machines x 40 registers every 0.2 s);
//! - bytes written to the state directory per point in normal operation (the process's
//!   `write_bytes`: block-device writes; the journal is on tmpfs and the log goes to tmpfs).
//!
//! Figures, not assertions: `scripts/bench-crash [--kills 20] [--seconds 20] [--compare]
//! [--seed N]`.

#[path = "../tests/util.rs"]
mod util;

use dyeing_gateway::config;
use dyeing_gateway::simulate;
use dyeing_gateway::status::lock;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use util::*;

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// `write_bytes` of a process: bytes it caused to be written to block devices.
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A fresh directory on tmpfs (for the journal and the gateway's log).
fn shm_dir(tag: &str) -> PathBuf {
    let p = Path::new("/dev/shm").join(format!("dg-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("tmpfs directory");
    p
}

fn spawn(cfg: &Path, journal: Option<&Path>, log: &Path) -> std::process::Child {
    let mut cmd = Command::new(bin());
    cmd.args(["--config", cfg.to_str().unwrap_or_default(), "run"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match journal {
        Some(j) => cmd.env("RUNTIME_DIRECTORY", j),
        // Empty: no runtime directory, and /run/dyeing-gateway is not looked at unless it exists.
        None => cmd.env("RUNTIME_DIRECTORY", ""),
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    cmd.stderr(f).spawn().expect("start the gateway")
}

/// 20 kills during an outage, 20 without: (points produced, missing, gaps longer than one).
fn kill_loops(kills: usize, journal: bool, rng: &mut fastrand::Rng) -> (u64, u64, usize) {
    let mut influx = Influxd::start();
    let dir = TempDir::new("bench-crash");
    let shm = shm_dir(if journal { "kill-j" } else { "kill-n" });
    let port = free_ports(1)[0];
    let cfg_json = json!({
        "state_dir": dir.path().join("state"),
        "status": {"listen": ""},
        "influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "flush_interval_s": 0.2,
                     "fsync_window_s": 1.0, "timeout_s": 2},
        "machines": [{"name": "SEQ", "ip_address": "127.0.0.1", "port": port, "poll_interval_s": 0.2,
            "registers": [{"name": "sequence", "kind": "holding", "address": 0, "type": "uint32", "measurement": "high_frequency_data"}]}]
    });
    let cfg_path = dir.write("machines.json", &cfg_json.to_string());
    let cfg =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    let _sim = simulate::start(&cfg, Some("127.0.0.1"), 5.0).expect("simulator");
    let jdir = shm.join("run");
    let j = journal.then_some(jdir.as_path());
    let log = shm.join("gateway.log");
    for outage in [true, false] {
        if outage {
            influx.stop();
        }
        for _ in 0..kills {
            let mut gw = spawn(&cfg_path, j, &log);
            std::thread::sleep(Duration::from_secs_f64(1.0 + 1.5 * rng.f64()));
            let _ = gw.kill();
            let _ = gw.wait();
        }
        if outage {
            influx.restart();
        }
    }
    let mut gw = spawn(&cfg_path, j, &log);
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status();
    let _ = gw.wait();
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(700));
        let now: BTreeSet<u64> = influx
            .rows("SELECT sequence FROM high_frequency_data")
            .iter()
            .filter_map(|r| r["sequence"].as_u64())
            .collect();
        if !now.is_empty() && now == seen {
            break;
        }
        seen = now;
    }
    let max = seen.iter().next_back().copied().unwrap_or(0);
    let (mut missing, mut long, mut run) = (0, 0, 0u64);
    for v in 1..=max {
        if seen.contains(&v) {
            if run > 1 {
                long += 1;
            }
            run = 0;
        } else {
            missing += 1;
            run += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&shm);
    (max, missing, long)
}

fn registers(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| json!({"name": format!("r{i}"), "kind": "holding", "address": i, "type": "uint16", "measurement": "medium_frequency_data"}))
        .collect()
}

/// CPU per poll and state-directory bytes per point over `seconds` of normal operation.
fn load(seconds: f64, journal: bool) -> (f64, f64, u64, u64) {
    let machines = 50;
    let influx = Influxd::start();
    let dir = TempDir::new("bench-crash-load");
    let shm = shm_dir(if journal { "load-j" } else { "load-n" });
    let ports = free_ports(machines);
    let cfg_json = json!({
        "state_dir": dir.path().join("state"),
        "status": {"listen": ""},
        "heartbeat_s": 1,
        "influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "flush_interval_s": 1},
        "machines": ports.iter().enumerate().map(|(i, p)| json!({"name": format!("M{i:02}"),
            "ip_address": "127.0.0.1", "port": p, "poll_interval_s": 0.2,
            "registers": registers(40)})).collect::<Vec<_>>()
    });
    let cfg_path = dir.write("machines.json", &cfg_json.to_string());
    let cfg =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    // Values change every step, so every poll writes points.
    let sim = simulate::start(&cfg, None, 0.2).expect("simulator");
    let served = |sim: &simulate::Simulator| -> u64 {
        sim.buses
            .iter()
            .map(|b| lock(b).values().map(|m| m.requests).sum::<u64>())
            .sum()
    };
    let jdir = shm.join("run");
    let mut gw = spawn(
        &cfg_path,
        journal.then_some(jdir.as_path()),
        &shm.join("gateway.log"),
    );
    let pid = gw.id();
    std::thread::sleep(Duration::from_secs(3));
    let points = |influx: &Influxd| {
        influx
            .rows("SHOW STATS FOR 'httpd'")
            .first()
            .and_then(|r| r["pointsWrittenOK"].as_u64())
            .unwrap_or(0)
    };
    let (cpu0, wb0, req0, pts0) = (
        proc_stats(pid).0,
        write_bytes(pid),
        served(&sim),
        points(&influx),
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (cpu1, wb1, req1, pts1) = (
        proc_stats(pid).0,
        write_bytes(pid),
        served(&sim),
        points(&influx),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gw.wait();
    let _ = std::fs::remove_dir_all(&shm);
    // 40 consecutive registers are one read request: one request per poll.
    let polls = (req1 - req0).max(1);
    let pts = (pts1 - pts0).max(1);
    (
        1e6 * (cpu1 - cpu0) / polls as f64,
        (wb1 - wb0) as f64 / pts as f64,
        polls,
        pts,
    )
}

fn main() {
    assert!(
        bin().exists(),
        "build the gateway first: cargo build --release ({})",
        bin().display()
    );
    let kills = arg("--kills", 20.0) as usize;
    let seconds = arg("--seconds", 20.0);
    let args: Vec<String> = std::env::args().collect();
    let seed = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("bench_crash: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let modes: &[bool] = if flag("--compare") {
        &[true, false]
    } else {
        &[true]
    };
    for &journal in modes {
        let (produced, missing, long) = kill_loops(kills, journal, &mut rng);
        println!(
            "  {kills} SIGKILLs in an outage + {kills} without, {}: {produced} points produced, {missing} missing, {long} gaps longer than the reply in flight",
            if journal { "with the journal" } else { "WITHOUT the journal" }
        );
    }
    for journal in [false, true] {
        let (us, bpp, polls, pts) = load(seconds, journal);
        println!(
            "  {seconds} s, 50 machines x 40 registers every 0.2 s, {}: {us:.1} us CPU per poll ({polls} polls), {bpp:.3} bytes written to the state directory per point ({pts} points)",
            if journal { "with the journal" } else { "without the journal" }
        );
    }
}
