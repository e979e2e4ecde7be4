//! Benchmark: batch workflow latencies with the real gateway process. A simulated HMI (1 s
//! poll interval) finishes a batch at a known moment: the time until the plant API receives
//! the report (spec: one poll interval + 0.5 s). The API offers a new batch: the time from the
//! first GET that lists it until the confirmation arrives (write, read back, confirm; the API
//! is polled every second here). Run with `cargo build --release && cargo run --release
//! --example bench_batch`.

#[path = "../tests/util.rs"]
mod util;

use dyeing_gateway::config;
use dyeing_gateway::simulate;
use dyeing_gateway::status::lock;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::*;

/// The batch the API offers, and when a GET first listed it.
type Offer = Option<(String, Option<Instant>)>;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let rounds = 10;
    let port = free_ports(1)[0];
    let dir = TempDir::new("bench-batch");
    let offer: Arc<Mutex<Offer>> = Arc::default();
    let confirmed: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let finished: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (o, c, f) = (offer.clone(), confirmed.clone(), finished.clone());
    let api = FakeInflux2::start(move |r, _| match r.path.as_str() {
        "/strings" => {
            let mut off = o.lock().expect("lock");
            let list = match off.as_mut() {
                Some((name, first)) => {
                    first.get_or_insert_with(Instant::now);
                    json!([{"machine": "JET-01", "batch": name}])
                }
                None => json!([]),
            };
            (200, vec![], list.to_string())
        }
        "/strings/confirm" => {
            let b: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            c.lock()
                .expect("lock")
                .push((b["batch"].as_str().unwrap_or("").to_string(), r.at));
            *o.lock().expect("lock") = None;
            (200, vec![], "{}".into())
        }
        "/batch/finish" => {
            f.lock().expect("lock").push(r.at);
            (200, vec![], "{}".into())
        }
        _ => (200, vec![], "{}".into()),
    });
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let cfg_json = json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": influx.url(), "org": "o", "bucket": "b", "token": "t"},
        "api": {"batch_url": format!("{}/batch/finish", api.url()), "strings_url": format!("{}/strings", api.url()),
                "strings_conf_url": format!("{}/strings/confirm", api.url()), "poll_interval_s": 1},
        "machines": [{"name": "JET-01", "ip_address": "127.0.0.1", "port": port, "poll_interval_s": 1,
            "registers": [
                {"name": "process", "kind": "holding", "address": 6, "type": "uint16", "measurement": "medium_frequency_data"},
                {"name": "batch", "kind": "holding", "address": 10, "type": "string", "length": 8, "measurement": "cycle_context_data"}],
            "finish": {"register": "process", "finish_code": 305, "batch_register": "batch"},
            "batch_write": {"address": 100, "registers": 10, "handshake_address": 120}}]
    });
    let cfg_path = dir.write("machines.json", &cfg_json.to_string());
    let cfg =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    let sim = simulate::start(&cfg, None, 3600.0).expect("simulator");
    let set = |v: f64| {
        if let Some(m) = lock(&sim.buses[0]).get_mut(&1) {
            m.set_override("process", v);
        }
    };
    set(101.0);
    let mut gw = Proc::spawn(
        "gateway",
        std::process::Command::new(bin())
            .args(["--config", cfg_path.to_str().unwrap_or_default(), "run"])
            .env("RUST_LOG", "warn"),
        dir.path(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (mut finish_lat, mut write_lat) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Finish at a random phase of the poll cycle.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..1000)));
        let t = Instant::now();
        set(305.0);
        let n = finished.lock().expect("lock").len();
        if wait_until(Duration::from_secs(10), || {
            finished.lock().map(|v| v.len() > n).unwrap_or(false)
        }) {
            let at = finished.lock().expect("lock")[n];
            finish_lat.push(at.duration_since(t).as_secs_f64());
        }
        *offer.lock().expect("lock") = Some((format!("LOT{r:03}"), None));
        let name = format!("LOT{r:03}");
        let first_get = loop {
            if let Some((_, Some(t))) = offer.lock().expect("lock").clone() {
                break Some(t);
            }
            if confirmed
                .lock()
                .expect("lock")
                .iter()
                .any(|(b, _)| *b == name)
            {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if wait_until(Duration::from_secs(10), || {
            confirmed
                .lock()
                .map(|v| v.iter().any(|(b, _)| *b == name))
                .unwrap_or(false)
        }) {
            let at = confirmed
                .lock()
                .expect("lock")
                .iter()
                .find(|(b, _)| *b == name)
                .map(|(_, t)| *t);
            if let (Some(at), Some(g)) = (at, first_get) {
                write_lat.push(at.duration_since(g).as_secs_f64());
            }
        }
        set(101.0);
        std::thread::sleep(Duration::from_millis(2500));
    }
    gw.terminate(Duration::from_secs(10));
    println!("bench_batch: {rounds} rounds, machine polled every 1 s");
    println!(
        "  finish -> API received   n={} median {:.3} s, max {:.3} s (budget: poll interval + 0.5 s = 1.5 s)",
        finish_lat.len(), pct(&mut finish_lat, 0.5), pct(&mut finish_lat, 1.0)
    );
    println!(
        "  batch listed -> confirm  n={} median {:.3} s, max {:.3} s (write, read back, confirm; waits for the next poll of the machine)",
        write_lat.len(), pct(&mut write_lat, 0.5), pct(&mut write_lat, 1.0)
    );
}
