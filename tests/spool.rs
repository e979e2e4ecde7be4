//! The durable spool against a real influxd: a record damaged on disk while points wait
//! for InfluxDB is skipped once and counted; everything else arrives.

use crate::util::*;
use dyeing_gateway::config;
use dyeing_gateway::status::{lock, Liveness, UploaderStatus};
use dyeing_gateway::uploader::buffer::Buffer;
use dyeing_gateway::uploader::sink::InfluxSink;
use dyeing_gateway::uploader::spool::{Spool, SpoolOptions};
use dyeing_gateway::uploader::{PointsTx, Uploader, UploaderSettings};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn sink(influx: &Influxd) -> InfluxSink {
    InfluxSink::new(
        minimal_config(influx).influx.configured().expect("influx"),
        None,
    )
}

/// A config with nothing but the InfluxDB URL and database set: the product's defaults.
fn minimal_config(influx: &Influxd) -> config::Config {
    config::validate_raw(
        config::parse(
            &json!({"influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "timeout_s": 10},
                "machines": [{"name": "m", "ip_address": "h", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]})
            .to_string(),
        )
        .expect("parse"),
    )
    .expect("valid")
}

fn settings() -> UploaderSettings {
    UploaderSettings {
        max_points_per_write: 100,
        flush_interval: Duration::from_millis(50),
        rejected_file: None,
        shutdown_grace: Duration::from_secs(5),
        hold_max_points: 1000,
        hold_max_bytes: 1 << 20,
        journal: None,
    }
}

/// An uploader over `spool` writing to `influx`, on threads of its own (with its HTTP worker):
/// the points channel, the thread (it ends once the channel is dropped) and its status.
fn start_uploader(
    settings: UploaderSettings,
    spool: Spool,
    influx: &Influxd,
) -> (
    PointsTx,
    std::thread::JoinHandle<()>,
    Arc<Mutex<UploaderStatus>>,
) {
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let (up, http_worker) = Uploader::new(
        settings,
        Box::new(sink(influx)),
        Box::new(spool),
        status.clone(),
        Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    std::thread::spawn(move || http_worker.run());
    let (tx, rx) = dyeing_gateway::uploader::points_channel(16);
    let h = std::thread::spawn(move || {
        let live = Liveness::default();
        let beat = live.register("uploader");
        up.run(rx, beat)
    });
    (tx, h, status)
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
        max_memory_bytes: 64 << 20,
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
    let (tx, h, status) = start_uploader(settings(), spool, &influx);
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

/// Records in the segment files of `dir`, counted from the files themselves.
fn records_on_disk(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(|e| e.ok())
    {
        if e.path().extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let b = std::fs::read(e.path()).expect("segment");
        let mut at = 0;
        while at + 8 <= b.len() {
            let len = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
            if at + 8 + len > b.len() {
                break;
            }
            at += 8 + len;
            n += 1;
        }
    }
    n
}

/// A 64 KiB tmpfs mounted for the test, unmounted on drop.
struct SmallDisk(TempDir);

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let t = TempDir::new("small-disk");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(t.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk(t))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .output();
    }
}

#[test]
fn a_full_disk_loses_nothing_from_the_write_buffer_and_the_spooled_count_is_what_is_on_disk() {
    let Some(disk) = SmallDisk::mount() else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = disk.0.path().join("spool");
    let mut spool = Spool::open(SpoolOptions {
        dir: dir.clone(),
        window: Duration::ZERO,
        max_bytes: 16 << 20,
        max_memory: 100_000,
        max_memory_bytes: 64 << 20,
    });
    let n = 2000;
    let all: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "fulldisk,machine=JET-01 temperature=61.5,seq={i}i {}",
                1_800_000_000_000i64 + i
            )
        })
        .collect();
    for poll in all.chunks(20) {
        spool.push(poll.to_vec());
        spool.maintain();
    }
    let on_disk = records_on_disk(&dir);
    println!(
        "full disk: {n} pushed, spooled {} (records in the files: {on_disk}), in memory {}, dropped {}, problem {:?}",
        spool.on_disk(),
        spool.len() as u64 - spool.on_disk(),
        spool.dropped(),
        spool.problem()
    );
    assert!(spool.problem().is_some(), "the full disk is reported");
    assert!(on_disk > 0);
    assert_eq!(
        spool.on_disk(),
        on_disk,
        "the spooled count is what is on disk"
    );
    assert_eq!(
        spool.len() as u64 + spool.dropped(),
        n as u64,
        "every point kept or counted"
    );
    // Deliver everything: disk first, then memory, in order, nothing missing.
    let mut got = Vec::new();
    for _ in 0..1000 {
        let batch = spool.peek(100).to_vec();
        if batch.is_empty() {
            break;
        }
        got.extend(batch.iter().cloned());
        spool.ack(batch.len());
    }
    println!("full disk: {} of {n} delivered afterwards", got.len());
    assert_eq!(got.len() as u64 + spool.dropped(), n as u64);
    assert_eq!(got, all, "in order, none lost");
}

/// Normal operation writes nothing to the SD card: with the defaults (a flush interval of
/// 1 s, a fsync window of 1 s) and InfluxDB keeping up, every point goes from memory to
/// InfluxDB and the spool's segments stay empty. (A flush when the oldest point was a window
/// old raced the spill and wrote about one record a second.)
#[test]
fn with_the_defaults_and_influxdb_keeping_up_nothing_is_written_to_the_spool() {
    let influx = Influxd::start();
    let cfg = minimal_config(&influx);
    let defaults = cfg.influx.configured().expect("influx");
    let state = TempDir::new("spool-quiet");
    let dir = state.path().join("spool");
    let spool = Spool::open(SpoolOptions {
        dir: dir.clone(),
        window: defaults.fsync_window,
        max_bytes: defaults.spool_max_bytes,
        max_memory: defaults.buffer_max_points,
        max_memory_bytes: defaults.buffer_max_bytes,
    });
    let settings = UploaderSettings {
        rejected_file: None,
        ..dyeing_gateway::app::uploader_settings(&cfg)
    };
    let (tx, h, status) = start_uploader(settings, spool, &influx);
    // Five machines polled every 200 ms for 6 s.
    let run = fastrand::u32(..);
    let base = dyeing_gateway::clock::wall_ms() - 60_000;
    let mut n = 0;
    for _ in 0..30 {
        let lines: Vec<String> = (0..5)
            .map(|m| {
                n += 1;
                format!("quiet,run={run},m={m} v={n}i {}", base + n)
            })
            .collect();
        tx.send(dyeing_gateway::uploader::PollLines::stamped(lines))
            .expect("send");
        std::thread::sleep(Duration::from_millis(200));
    }
    let delivered = wait_until(Duration::from_secs(10), || {
        lock(&status).points_written >= n as u64
    });
    let on_disk = records_on_disk(&dir);
    drop(tx);
    let _ = h.join();
    let st = lock(&status).clone();
    println!(
        "defaults (flush {:?}, fsync window {:?}): {n} points, {} written in {} requests, {on_disk} records on disk",
        defaults.flush_interval, defaults.fsync_window, st.points_written, st.write_requests
    );
    assert!(delivered, "not all delivered: {st:?}");
    assert_eq!(
        on_disk, 0,
        "points were written to the spool in normal operation"
    );
    let rows = influx.rows(&format!("SELECT v FROM quiet WHERE run = '{run}'"));
    assert_eq!(rows.len(), n as usize);
}
