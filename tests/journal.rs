//! The crash journal against the real binary, a real influxd and the built-in simulator: the
//! gateway is SIGKILLed again and again, during an InfluxDB outage and without one, and every
//! point it had polled must reach InfluxDB. The simulated machine's `sequence` register counts
//! the requests it answers, so each poll writes a new value and a missing value is a lost point.
//! The one loss a journal cannot prevent is the reply in flight when the process dies (answered
//! by the machine, never received): at most one value per kill, at the kill.
//!
//! `DG_JOURNAL_KILLS` sets the kills of each phase (default 3); `DG_SEED` the randomness.

use crate::util::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const INTERVAL: f64 = 0.2;

struct Rig {
    influx: Influxd,
    dir: TempDir,
    cfg: String,
    runtime: std::path::PathBuf,
    _sim: Proc,
}

fn rig() -> Rig {
    let influx = Influxd::start();
    let dir = TempDir::new("journal");
    let port = free_ports(1)[0];
    let runtime = dir.path().join("run");
    let cfg = dir.write(
        "machines.json",
        &json!({
            "state_dir": dir.path().join("state"),
            "influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "flush_interval_s": 0.2,
                         "fsync_window_s": 1.0, "timeout_s": 2},
            "machines": [{"name": "SEQ", "ip_address": "127.0.0.1", "port": port, "poll_interval_s": INTERVAL,
                "registers": [{"name": "sequence", "kind": "holding", "address": 0, "type": "uint32", "measurement": "high_frequency_data"}]}]
        })
        .to_string(),
    );
    let cfg = cfg.to_str().unwrap_or_default().to_string();
    let sim = simulator(&cfg, port, dir.path(), &["--bind-host", "127.0.0.1"]);
    Rig {
        influx,
        dir,
        cfg,
        runtime,
        _sim: sim,
    }
}

fn gateway(r: &Rig, n: usize) -> Proc {
    Proc::spawn(
        &format!("gateway-{n}"),
        Command::new(bin())
            .args(["--config", &r.cfg, "run"])
            .env("RUNTIME_DIRECTORY", &r.runtime),
        r.dir.path(),
    )
}

#[test]
fn sigkill_with_and_without_an_outage_loses_no_polled_point() {
    let kills = std::env::var("DG_JOURNAL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let seed = std::env::var("DG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("DG_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut r = rig();
    let mut logs = String::new();
    let mut n = 0;
    for outage in [true, false] {
        if outage {
            r.influx.stop();
        }
        for _ in 0..kills {
            let mut gw = gateway(&r, n);
            n += 1;
            // Runs of 1 to 2.5 s: kills land inside and after the first fsync window.
            std::thread::sleep(Duration::from_secs_f64(1.0 + 1.5 * rng.f64()));
            gw.signal("KILL");
            let _ = gw.child.wait();
            logs.push_str(&gw.dump());
        }
        if outage {
            r.influx.restart();
        }
    }
    let mut gw = gateway(&r, n);
    std::thread::sleep(Duration::from_secs(2));
    let code = gw.terminate(Duration::from_secs(15));
    logs.push_str(&gw.dump());
    // Wait until InfluxDB holds everything and nothing new arrives.
    let mut seen = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(700));
        let now = stored_sequence(&r.influx);
        if !now.is_empty() && now == seen {
            break;
        }
        seen = now;
    }
    let g = gaps(&seen);
    let lost: u64 = g.iter().map(|(a, b)| b - a + 1).sum();
    let produced = seen.iter().next_back().copied().unwrap_or(0);
    println!(
        "crash journal: {} kills ({kills} during an outage), {produced} points produced, {lost} missing in {} gaps (replies in flight at a kill): {g:?}",
        2 * kills,
        g.len()
    );
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        produced as f64 >= 0.4 * (2 * kills) as f64 / INTERVAL,
        "too few polls: {produced}\n{logs}"
    );
    assert!(
        logs.contains("taken back"),
        "nothing was replayed from the journal\n{logs}"
    );
    // Only the reply in flight at each kill may be missing: one value per gap, one gap per kill.
    assert!(
        g.len() <= 2 * kills && g.iter().all(|(a, b)| a == b),
        "points lost: {g:?}\n{logs}"
    );
    // Nothing is left behind once everything is delivered and the gateway stopped cleanly.
    let left: u64 = std::fs::read_dir(&r.runtime)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "journal not trimmed after a clean stop");
}
