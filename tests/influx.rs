//! Against a real influxd 1.x: `run` polls the simulator and what lands in the database has
//! the four measurements with the right tags, field types and escaping; a write request with
//! a malformed line is split until the bad line is isolated and set aside, the rest stored.

use crate::util::*;
use dyeing_gateway::config;
use dyeing_gateway::status::UploaderStatus;
use dyeing_gateway::uploader::buffer::MemoryBuffer;
use dyeing_gateway::uploader::sink::InfluxSink;
use dyeing_gateway::uploader::{PollLines, Uploader, UploaderSettings};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A machine name, a tag and a string register full of characters line protocol must escape.
const MACHINE: &str = "JET 01,A=1";
const NOTE: &str = "note \"x\"=y, z";

fn plant_config(influx: &Influxd, ports: [u16; 2], state: &TempDir) -> serde_json::Value {
    let registers = json!([
        {"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "scale": 0.1, "measurement": "high_frequency_data"},
        {"name": "seam", "kind": "holding", "address": 1, "type": "uint16", "measurement": "high_frequency_data"},
        {"name": "level", "kind": "holding", "address": 2, "type": "float32", "order": "CDAB", "measurement": "medium_frequency_data"},
        {"name": "ph", "kind": "holding", "address": 4, "type": "uint16", "scale": 0.01, "measurement": "medium_frequency_data"},
        {"name": "status", "kind": "coil", "address": 0, "type": "bool", "measurement": "medium_frequency_data"},
        {"name": "process", "kind": "holding", "address": 6, "type": "uint16", "measurement": "medium_frequency_data"},
        {"name": "batch", "kind": "holding", "address": 10, "type": "string", "length": 8, "measurement": "cycle_context_data"},
        {"name": NOTE, "kind": "holding", "address": 20, "type": "string", "length": 12, "measurement": "cycle_context_data"},
        {"name": "shift", "kind": "holding", "address": 40, "type": "uint16", "measurement": "cycle_context_data"},
        {"name": "reset_counter", "kind": "holding", "address": 50, "type": "uint32", "measurement": "maintenance_events"}
    ]);
    json!({
        "state_dir": state.path(),
        "heartbeat_s": 2,
        "tags": {"site": "Mill 2, east"},
        "influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "flush_interval_s": 0.2},
        "profiles": {"jet": {
            "poll_interval_s": 0.5,
            "registers": registers,
            "maintenance": [{"register": "reset_counter", "edge": "decrease"}],
            "finish": {"register": "process", "finish_code": 305, "batch_register": "batch"}
        }},
        "machines": [
            {"name": MACHINE, "ip_address": "127.0.0.1", "port": ports[0], "profile": "jet", "tags": {"line": "A"}},
            {"name": "JET-02", "ip_address": "127.0.0.1", "port": ports[1], "profile": "jet"}
        ]
    })
}

#[test]
fn run_writes_the_four_measurements_with_types_tags_and_escaping() {
    let influx = Influxd::start();
    let dir = TempDir::new("run");
    let p = free_ports(2);
    let ports = [p[0], p[1]];
    let cfg = dir.write(
        "machines.json",
        &plant_config(&influx, ports, &dir).to_string(),
    );
    let cfg_s = cfg.to_str().unwrap_or_default().to_string();
    let sim = Proc::spawn(
        "simulate",
        std::process::Command::new(bin()).args(["--config", &cfg_s, "simulate", "--step", "0.5"]),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || ports
            .iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())),
        "{}",
        sim.dump()
    );
    let mut gw = Proc::spawn(
        "gateway",
        std::process::Command::new(bin()).args(["--config", &cfg_s, "run"]),
        dir.path(),
    );
    // Long enough for two simulated cycles (3 s each), so the reset counter falls twice.
    let ready = wait_until(Duration::from_secs(30), || {
        influx
            .query("SELECT count(*) FROM maintenance_events")
            .len()
            == 1
            && influx.rows("SELECT * FROM cycle_context_data").len() >= 2
    });
    let code = gw.terminate(Duration::from_secs(10));
    let dump = format!("{}\n{}", gw.dump(), sim.dump());
    assert!(ready, "points did not arrive\n{dump}");
    assert_eq!(
        code,
        Some(0),
        "SIGTERM must end the gateway cleanly\n{dump}"
    );

    let measurements: Vec<String> = influx
        .rows("SHOW MEASUREMENTS")
        .iter()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect();
    for m in [
        "high_frequency_data",
        "medium_frequency_data",
        "cycle_context_data",
        "maintenance_events",
    ] {
        assert!(
            measurements.contains(&m.to_string()),
            "{m} missing: {measurements:?}\n{dump}"
        );
    }
    // The online state, so a dashboard can tell "flat" from "offline".
    let online = influx.rows("SELECT * FROM machine_state");
    assert!(
        online
            .iter()
            .any(|r| r["online"] == true && r["machine"] == MACHINE),
        "{online:?}"
    );
    // Field types as InfluxDB stored them.
    let types = |m: &str| -> Vec<(String, String)> {
        influx
            .rows(&format!("SHOW FIELD KEYS FROM {m}"))
            .iter()
            .map(|r| {
                (
                    r["fieldKey"].as_str().unwrap_or("").to_string(),
                    r["fieldType"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let hf = types("high_frequency_data");
    assert!(
        hf.contains(&("temperature".into(), "float".into())),
        "{hf:?}"
    );
    assert!(hf.contains(&("seam".into(), "integer".into())), "{hf:?}");
    let mf = types("medium_frequency_data");
    assert!(mf.contains(&("status".into(), "boolean".into())), "{mf:?}");
    assert!(mf.contains(&("level".into(), "float".into())), "{mf:?}");
    let cc = types("cycle_context_data");
    assert!(
        cc.contains(&(NOTE.into(), "string".into())),
        "escaped field key: {cc:?}"
    );
    // Tags, including the escaped machine name and the static site tag.
    let rows = influx.rows(&format!(
        "SELECT * FROM cycle_context_data WHERE machine = '{}'",
        MACHINE
    ));
    assert!(!rows.is_empty(), "no rows for machine {MACHINE}\n{dump}");
    let r = &rows[0];
    assert_eq!(r["site"], "Mill 2, east");
    assert_eq!(r["line"], "A");
    let note = r[NOTE].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&NOTE[..12]),
        "string value with quotes and commas: {note:?}"
    );
    assert!(
        r["batch"].as_str().unwrap_or_default().starts_with("BATCH"),
        "{r:?}"
    );
    // The maintenance event names the previous counter value and is never a heartbeat.
    let ev = influx.rows("SELECT * FROM maintenance_events");
    assert!(
        ev.iter()
            .all(|e| e["reset_counter_previous"].as_f64().unwrap_or(0.0)
                > e["reset_counter"].as_f64().unwrap_or(f64::MAX)),
        "{ev:?}"
    );
}

#[test]
fn a_malformed_line_is_isolated_and_the_rest_is_stored() {
    let influx = Influxd::start();
    let dir = TempDir::new("partial");
    let cfg = config::validate_raw(
        config::parse(
            &json!({"influxdb": {"url": influx.url(), "api": "v1", "database": influx.db},
                "machines": [{"name": "m", "ip_address": "127.0.0.1",
                  "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]})
            .to_string(),
        )
        .expect("parse"),
    )
    .expect("valid");
    let influx_cfg = cfg.influx.configured().expect("influx").clone();
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let rejected = dir.path().join("rejected.lp");
    let (up, http_worker) = Uploader::new(
        UploaderSettings {
            max_points_per_write: 1000,
            flush_interval: Duration::from_millis(100),
            rejected_file: Some(rejected.clone()),
            shutdown_grace: Duration::from_secs(10),
            hold_max_points: 1000,
            hold_max_bytes: 1 << 20,
            journal: None,
        },
        Box::new(InfluxSink::new(&influx_cfg, None)),
        Box::new(MemoryBuffer::new(10_000)),
        status.clone(),
        std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    std::thread::spawn(move || http_worker.run());
    let mut lines: Vec<String> = (0..40)
        .map(|i| format!("good,machine=m v={i}i {}", 1_700_000_000_000i64 + i))
        .collect();
    // An unparsable line and a field type conflict (v is an integer field).
    lines.insert(13, "good,machine=m v=\"text\" 1700000000500".to_string());
    lines.insert(29, "broken line without fields".to_string());
    let (tx, rx) = dyeing_gateway::uploader::points_channel(4);
    let liveness = dyeing_gateway::status::Liveness::default();
    let beat = liveness.register("uploader");
    let h = std::thread::spawn(move || up.run(rx, beat));
    tx.send(PollLines::stamped(lines)).expect("send");
    drop(tx);
    h.join().expect("uploader thread");
    let stored = influx.rows("SELECT count(v) FROM good");
    assert_eq!(
        stored.first().and_then(|r| r["count"].as_u64()),
        Some(40),
        "{stored:?}\n{}",
        influx.proc.dump()
    );
    let set_aside = std::fs::read_to_string(&rejected).unwrap_or_default();
    assert!(
        set_aside.contains("broken line without fields"),
        "{set_aside}"
    );
    assert!(set_aside.contains("v=\"text\""), "{set_aside}");
    let st = status.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(st.rejected, 2);
    assert_eq!(st.buffered, 0);
}

#[test]
fn retry_after_zero_or_a_past_date_does_not_turn_the_backoff_off() {
    for (status, after) in [(503, "0"), (429, "Wed, 21 Oct 2015 07:28:00 GMT")] {
        let fake = FakeInflux2::start(move |_, _| {
            (
                status,
                vec![("Retry-After".to_string(), after.to_string())],
                r#"{"code":"unavailable","message":"busy"}"#.to_string(),
            )
        });
        let cfg = config::validate_raw(
            config::parse(
                &json!({"influxdb": {"url": fake.url(), "org": "o", "bucket": "b", "token": "t"},
                    "machines": [{"name": "m", "ip_address": "127.0.0.1",
                      "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]})
                .to_string(),
            )
            .expect("parse"),
        )
        .expect("valid");
        let influx_cfg = cfg.influx.configured().expect("influx").clone();
        let (up, http_worker) = Uploader::new(
            UploaderSettings {
                max_points_per_write: 1000,
                flush_interval: Duration::from_millis(10),
                rejected_file: None,
                shutdown_grace: Duration::from_secs(1),
                hold_max_points: 1000,
                hold_max_bytes: 1 << 20,
                journal: None,
            },
            Box::new(InfluxSink::new(&influx_cfg, None)),
            Box::new(MemoryBuffer::new(10_000)),
            Arc::new(Mutex::new(UploaderStatus::default())),
            std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
                dyeing_gateway::clock::SyncCheck::Off,
            )),
        );
        std::thread::spawn(move || http_worker.run());
        let (tx, rx) = dyeing_gateway::uploader::points_channel(4);
        let liveness = dyeing_gateway::status::Liveness::default();
        let beat = liveness.register("uploader");
        let h = std::thread::spawn(move || up.run(rx, beat));
        tx.send(PollLines::stamped(vec!["m v=1i 1700000000000".to_string()]))
            .expect("send");
        std::thread::sleep(Duration::from_secs(4));
        let n = fake.requests().len();
        drop(tx);
        h.join().expect("uploader thread");
        println!("HTTP {status} with Retry-After `{after}`: {n} write requests in 4 s");
        // Waits of at least 1 s, doubling: 0, 1, 2..3 s (and perhaps 3..4 s).
        assert!(
            (2..=4).contains(&n),
            "{n} write requests in 4 s answered {status}, Retry-After {after}"
        );
    }
}

/// influxd's own counters (`/debug/vars`, the `httpd` entry): write requests received.
fn influx_write_requests(influx: &Influxd) -> u64 {
    let text = ureq::get(&format!("{}/debug/vars", influx.url()))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v.as_object()
        .into_iter()
        .flat_map(|o| o.iter())
        .filter(|(k, _)| k.starts_with("httpd"))
        .filter_map(|(_, s)| s["values"]["writeReq"].as_u64())
        .sum()
}

#[test]
fn a_field_type_conflict_is_set_aside_once_without_flooding_influxdb() {
    let influx = Influxd::start();
    let dir = TempDir::new("conflict");
    let port = free_ports(1)[0];
    // `temperature` is a float for the gateway; InfluxDB already holds it as a string in the
    // current shard, so every high_frequency_data point of this run conflicts.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let pre = ureq::post(&format!(
        "{}/write?db={}&precision=ms",
        influx.url(),
        influx.db
    ))
    .send(format!(
        "high_frequency_data,machine=JET temperature=\"hot\" {now_ms}"
    ));
    assert!(
        pre.is_ok_and(|r| r.status().as_u16() == 204),
        "pre-write failed"
    );
    let cfg = json!({
        "state_dir": dir.path(),
        "influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "flush_interval_s": 1},
        "machines": [{"name": "JET", "ip_address": "127.0.0.1", "port": port, "poll_interval_s": 0.2,
            "registers": [
                {"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "scale": 0.1, "measurement": "high_frequency_data"},
                {"name": "seam", "kind": "holding", "address": 1, "type": "uint16", "measurement": "high_frequency_data"}
            ]}]
    });
    let path = dir.write("machines.json", &cfg.to_string());
    let c = path.to_str().unwrap_or_default().to_string();
    let sim = simulator(&c, port, dir.path(), &["--step", "0.5"]);
    let before = influx_write_requests(&influx);
    let run_s = 6.0;
    let out = gateway(
        &["--config", &c, "run", "--duration", &run_s.to_string()],
        &[],
    );
    let requests = influx_write_requests(&influx) - before;
    let log = text(&out.stderr);
    let dump = format!("{log}\n{}", sim.dump());
    // The uploader's (other tests may hold the default status page's port meanwhile).
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("uploader"))
        .count();
    let aside = std::fs::read_to_string(dir.path().join("rejected.lp")).unwrap_or_default();
    let aside_points = aside
        .lines()
        .filter(|l| l.starts_with("high_frequency_data"))
        .count();
    eprintln!(
        "field type conflict over {run_s} s: {requests} write requests, {errors} ERROR lines, \
         {aside_points} points set aside ({} bytes)",
        aside.len()
    );
    // One write request per flush (1 s) and the last one on shutdown, not a bisection.
    assert!(
        requests <= run_s as u64 + 4,
        "{requests} write requests in {run_s} s\n{dump}"
    );
    assert_eq!(errors, 1, "one ERROR line for the one conflict\n{dump}");
    assert!(
        log.contains("temperature") && log.contains("high_frequency_data"),
        "the ERROR line names the measurement and field\n{dump}"
    );
    assert!(aside_points >= 5, "conflicting points set aside\n{aside}");
    // The other measurement in the same requests was stored (a partial write).
    assert!(
        !influx.rows("SELECT * FROM machine_state").is_empty(),
        "{dump}"
    );
}
