//! Benchmark: the durable spool. Prints the append (spill) rate and bytes per point, the bytes
//! written in normal operation (points delivered within the window), and the replay rate
//! through the real uploader into a sink that answers at once (so the gateway is measured,
//! spec: at least 50,000 points/s) and into Debian's influxd 1.x.
//! Run with `cargo run --release --example bench_spool [-- --points N]`.

#[path = "../tests/util.rs"]
mod util;

use dyeing_gateway::config;
use dyeing_gateway::status::{lock, Liveness, UploaderStatus};
use dyeing_gateway::uploader::buffer::Buffer;
use dyeing_gateway::uploader::sink::InfluxSink;
use dyeing_gateway::uploader::spool::{Spool, SpoolOptions};
use dyeing_gateway::uploader::{Uploader, UploaderSettings};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::*;

fn points(n: usize) -> Vec<String> {
    let base = dyeing_gateway::clock::wall_ms() - n as i64;
    (0..n)
        .map(|i| {
            format!(
                "high_frequency_data,machine=JET-{:02},site=mill-1 temperature={}.{},seam={}i {}",
                i % 50,
                60 + i % 40,
                i % 10,
                i % 7,
                base + i as i64
            )
        })
        .collect()
}

fn spool(dir: &std::path::Path, window: Duration) -> Spool {
    Spool::open(SpoolOptions {
        dir: dir.to_path_buf(),
        window,
        max_bytes: 4 << 30,
        max_memory: 1_000_000,
        max_memory_bytes: 64 << 20,
    })
}

/// Replay a filled spool through the uploader into `url` (v1 API), returning points/s.
fn replay(dir: &std::path::Path, url: &str, db: &str) -> f64 {
    let cfg = config::validate_raw(
        config::parse(&json!({"influxdb": {"url": url, "api": "v1", "database": db, "timeout_s": 30},
            "machines": [{"name": "m", "ip_address": "h", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]}).to_string())
        .expect("parse"),
    )
    .expect("valid");
    let sp = spool(dir, Duration::from_secs(1));
    let total = sp.len();
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let (up, http_worker) = Uploader::new(
        UploaderSettings {
            max_points_per_write: 5000,
            flush_interval: Duration::from_millis(100),
            rejected_file: None,
            shutdown_grace: Duration::from_secs(5),
            hold_max_points: 1000,
            hold_max_bytes: 1 << 20,
            journal: None,
        },
        Box::new(InfluxSink::new(
            cfg.influx.configured().expect("influx"),
            None,
        )),
        Box::new(sp),
        status.clone(),
        std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    std::thread::spawn(move || http_worker.run());
    let (tx, rx) = dyeing_gateway::uploader::points_channel(1);
    let live = Liveness::default();
    let beat = live.register("uploader");
    let started = Instant::now();
    let h = std::thread::spawn(move || up.run(rx, beat));
    while lock(&status).points_written < total as u64 {
        std::thread::sleep(Duration::from_millis(5));
        if started.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(tx);
    let _ = h.join();
    total as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--points")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let lines = points(n);
    let avg_line = lines.iter().map(|l| l.len()).sum::<usize>() as f64 / n as f64;
    println!("bench_spool: {n} points of {avg_line:.0} bytes of line protocol");

    // Normal operation: delivered within the window, so nothing touches the disk.
    let dir = TempDir::new("spool-normal");
    let mut s = spool(&dir.0, Duration::from_secs(1));
    for chunk in lines.chunks(150) {
        s.push(chunk.to_vec());
        s.maintain();
        let k = s.peek(5000).len();
        s.ack(k);
    }
    println!(
        "  normal operation       {} bytes written to the spool for {n} points",
        s.bytes_written()
    );

    // Outage: everything spilled and synced (window 0 forces the spill of each batch).
    let dir = TempDir::new("spool-outage");
    let mut s = spool(&dir.0, Duration::ZERO);
    let t = Instant::now();
    for chunk in lines.chunks(150) {
        s.push(chunk.to_vec());
        s.maintain();
    }
    s.close();
    let secs = t.elapsed().as_secs_f64();
    let written = s.bytes_written();
    drop(s);
    println!(
        "  append during outage   {:.0} points/s, one fsync per 150-point poll batch; {:.1} bytes per point on disk ({:.1} of them framing)",
        n as f64 / secs,
        written as f64 / n as f64,
        written as f64 / n as f64 - avg_line
    );

    // Replay into a sink that answers at once.
    let fake = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let rate = replay(&dir.0, &fake.url(), "x");
    println!("  replay, instant sink   {rate:.0} points/s (budget >= 50000)");
    drop(fake);

    // Replay into Debian's influxd.
    let dir = TempDir::new("spool-influx");
    let mut s = spool(&dir.0, Duration::ZERO);
    let m = n.min(200_000);
    for chunk in lines[..m].chunks(5000) {
        s.push(chunk.to_vec());
        s.maintain();
    }
    s.close();
    drop(s);
    let influx = Influxd::start();
    let rate = replay(&dir.0, &influx.url(), &influx.db);
    println!("  replay into influxd    {rate:.0} points/s ({m} points)");
}
