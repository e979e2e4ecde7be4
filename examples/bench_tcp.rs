//! Benchmark: the gateway (`run`, a separate process) against N simulated Modbus TCP machines
//! x R registers polled every second, writing to a real influxd. Prints the gateway's CPU time
//! and share of one core, resident memory over time (peak and growth), Modbus requests per
//! machine per cycle against the planned minimum, write requests and points as influxd counted
//! them, and the time from a register change on a simulated HMI to its point being queryable
//! in InfluxDB. Figures, not assertions: run it with `scripts/bench-tcp [--duration 600]`.

#[path = "../tests/util.rs"]
mod util;

use dyeing_gateway::config;
use dyeing_gateway::simulate;
use dyeing_gateway::status::lock;
use std::time::{Duration, Instant};
use util::*;

fn main() {
    let machines = arg("--machines", 50.0) as usize;
    let nregs = arg("--registers", 40.0) as usize;
    let duration = arg("--duration", 60.0);
    let interval = 1.0;
    let gw_bin = bin();
    assert!(
        gw_bin.exists(),
        "build the gateway first: cargo build --release ({})",
        gw_bin.display()
    );
    let influx = Influxd::start();
    let dir = TempDir::new("bench");
    let ports = free_ports(machines);
    let cfg_json = bench_config(dir.path(), &influx, &ports, nregs, interval);
    let cfg_path = dir.write("machines.json", &cfg_json.to_string());
    let cfg =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    let (tx, _rx) = dyeing_gateway::uploader::points_channel(1);
    let planned: usize = {
        let p = dyeing_gateway::poller::Poller::new(
            &cfg,
            0,
            dyeing_gateway::modbus::transport_for(&cfg.endpoints[0].kind, cfg.endpoints[0].timeout),
            &vec![Default::default(); cfg.machines.len()],
            tx,
            std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
                dyeing_gateway::clock::SyncCheck::Off,
            )),
        );
        p.plan_summary()
            .iter()
            .flat_map(|(_, g)| g.iter().map(|(_, n)| *n))
            .sum()
    };
    // A slow process cycle (60 s steps) so values move like a real dyeing machine's.
    let sim = simulate::start(&cfg, None, 60.0).expect("simulator");
    let mut gw = Proc::spawn(
        "gateway",
        std::process::Command::new(&gw_bin)
            .args(["--config", cfg_path.to_str().unwrap_or_default(), "run"])
            .env("RUST_LOG", "warn"),
        dir.path(),
    );
    let pid = gw.child.id();
    let served = |sim: &simulate::Simulator| -> u64 {
        sim.buses
            .iter()
            .map(|b| lock(b).values().map(|m| m.requests).sum::<u64>())
            .sum()
    };
    // Warm up: every machine connected and polled.
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, _, _) = proc_stats(pid);
    let req0 = served(&sim);
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut rss_samples = Vec::new();
    let mut marker = 1000u32;
    let mut next_sample = Instant::now();
    while t0.elapsed().as_secs_f64() < duration {
        if Instant::now() >= next_sample {
            rss_samples.push((t0.elapsed().as_secs(), proc_stats(pid).1));
            next_sample += Duration::from_secs_f64((duration / 10.0).max(1.0));
        }
        // Change a register on machine M00 and time its arrival in InfluxDB.
        marker += 1;
        let changed = Instant::now();
        if let Some(m) = lock(&sim.buses[0]).get_mut(&1) {
            m.set_override("marker", f64::from(marker));
        }
        let q = format!(
            "SELECT marker FROM high_frequency_data WHERE machine = 'M00' AND marker = {marker}"
        );
        let deadline = changed + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !influx.rows(&q).is_empty() {
                latencies.push(changed.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    let window = t0.elapsed().as_secs_f64();
    let (cpu1, rss, hwm) = proc_stats(pid);
    let req1 = served(&sim);
    let code = gw.terminate(Duration::from_secs(10));
    let stats = influx.rows("SHOW STATS FOR 'httpd'");
    let (write_req, points) = stats
        .first()
        .map(|r| {
            (
                r["writeReq"].as_u64().unwrap_or(0),
                r["pointsWrittenOK"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let cycles = window / interval;
    println!("bench_tcp: {machines} machines x {nregs} registers every {interval} s, {window:.0} s measured (after 3 s warm-up)");
    println!(
        "  gateway CPU            {:.3} s = {:.3} % of one core (budget < 1 %)",
        cpu1 - cpu0,
        100.0 * (cpu1 - cpu0) / window
    );
    println!(
        "  resident memory        {} KiB now, peak {} KiB (budget < 12288 KiB)",
        rss, hwm
    );
    println!(
        "  RSS over time (s:KiB)  {}",
        rss_samples
            .iter()
            .map(|(t, r)| format!("{t}:{r}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  Modbus requests        {:.3} per machine per cycle; planned minimum {}",
        (req1 - req0) as f64 / machines as f64 / cycles,
        planned
    );
    println!("  InfluxDB (whole run)   {write_req} write requests, {points} points");
    println!("  change -> InfluxDB     n={} median {:.3} s, p90 {:.3} s, max {:.3} s (budget: interval + 1.5 s = {:.1} s)", latencies.len(), pct(0.5), pct(0.9), pct(1.0), interval + 1.5);
    println!("  gateway exit on SIGTERM: {code:?}");
    drop(sim);
}
