//! The durable spool against a real influxd: a record damaged on disk while points wait
//! for InfluxDB is skipped once and counted; everything else arrives.

use crate::util::*;
use dyeing_gateway::config;
use dyeing_gateway::status::{lock, Liveness, UploaderStatus};
use dyeing_gateway::uploader::buffer::Buffer;
use dyeing_gateway::uploader::sink::InfluxSink;
use dyeing_gateway::uploader::spool::{Spool, SpoolOptions};
use dyeing_gateway::uploader::{Batch, Settings, Uploader};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn sink(influx: &Influxd) -> InfluxSink {
    let cfg = config::validate_raw(
        config::parse(
            &json!({"influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "timeout_s": 10},
                "machines": [{"name": "m", "ip_address": "h", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]})
            .to_string(),
        )
        .expect("parse"),
    )
    .expect("valid");
    InfluxSink::new(cfg.influx.as_ref().expect("influx"), None)
}

fn settings() -> Settings {
    Settings {
        max_points_per_write: 100,
        flush_interval: Duration::from_millis(50),
        rejected_file: None,
        shutdown_grace: Duration::from_secs(5),
        hold_max_points: 1000,
    }
}

/// The byte offset of record `index` in a segment file (records: u32 length, u32 CRC, payload).
fn record_offset(bytes: &[u8], index: usize) -> usize {
    let mut at = 0;
    for _ in 0..index {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        at += 8 + len as usize;
    }
    at
}

#[test]
fn a_damaged_record_is_skipped_counted_and_logged_once_and_the_rest_arrives() {
    let logs = capture_logs();
    let mut influx = Influxd::start();
    influx.stop();
    let state = TempDir::new("spool-damaged");
    let dir = state.path().join("spool");
    // InfluxDB is down: every poll's points go to disk (window zero).
    let mut spool = Spool::open(SpoolOptions {
        dir: dir.clone(),
        window: Duration::ZERO,
        max_bytes: 1 << 20,
        max_memory: 10_000,
    });
    let run = fastrand::u32(..);
    let base = dyeing_gateway::clock::wall_ms() - 10_000;
    let n = 374;
    for poll in 0..(n / 11 + 1) {
        let lines: Vec<String> = (poll * 11..(poll * 11 + 11).min(n))
            .map(|i| format!("spooltest,run={run} v={i}i {}", base + i as i64))
            .collect();
        spool.push(lines);
        spool.maintain();
    }
    assert_eq!(spool.on_disk(), n as u64);
    // Damage record 150 (a checksum that no longer matches) while the gateway runs.
    let seg = std::fs::read_dir(&dir)
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let at = record_offset(&bytes, 150);
    bytes[at + 10] ^= 0x5A;
    std::fs::write(&seg, &bytes).expect("write segment");
    let lost_value = 150;

    influx.restart();
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let up = Uploader::new(
        settings(),
        Box::new(sink(&influx)),
        Box::new(spool),
        status.clone(),
    );
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(1);
    let live = Liveness::default();
    let beat = live.register("uploader");
    let h = std::thread::spawn(move || up.run(rx, beat));
    let done = wait_until(Duration::from_secs(30), || {
        let st = lock(&status);
        st.points_written + st.dropped >= n as u64 || st.write_requests > 200
    });
    drop(tx);
    let _ = h.join();
    let st = lock(&status).clone();
    let rows = influx.rows(&format!("SELECT v FROM spooltest WHERE run = '{run}'"));
    let values: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.get("v").and_then(|v| v.as_i64()))
        .collect();
    let errors = logs.count("unreadable");
    println!(
        "damaged record: {} of {n} points arrived, dropped {}, {} write requests, {errors} log lines",
        values.len(),
        st.dropped,
        st.write_requests
    );
    assert!(done, "not finished: {st:?}\n{}", logs.dump("spool"));
    let want: Vec<i64> = (0..n as i64).filter(|i| *i != lost_value).collect();
    assert_eq!(values, want, "{}", logs.dump("unreadable"));
    assert_eq!(st.dropped, 1);
    assert_eq!(errors, 1, "{}", logs.dump("unreadable"));
}
