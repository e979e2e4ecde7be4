//! State across versions (issue 13, item 5): an update or a rollback hands one version's state
//! directory to another. LONG TEST: about 40 s, plus, on a fresh clone, one build of the
//! previous release (`scripts/old-release`, about a minute, cached in `target/old-release/`;
//! `DG_OLD_GATEWAY` names another binary instead).
//!
//! The first version runs with InfluxDB down and the plant API answering 503: points are
//! spooled, a finish report and a batch confirmation wait in the outbox, a batch written into
//! the HMI is in the batch state. Then the other version runs on the same state directory with
//! a real influxd and the API up: every spooled point reaches influxd with its values, each
//! report is delivered once under the key the first version used, the batch state is kept and
//! nothing is written to the HMI again. Both ways: previous release to this one (update), this
//! one to the previous release (rollback).

use crate::batch::{header, hmi, hmi_peer, read_area, set, BATCH, PROCESS};
use crate::util::*;
use dyeing_gateway::config::StringOrder;
use dyeing_gateway::durable::{Log, LogOptions};
use dyeing_gateway::registers;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The previous release's binary: built once from git history, then reused.
fn old_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DG_OLD_GATEWAY") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/old-release");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/old-release failed:\n{}",
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

/// The plant API: new batch LOT777 offered until confirmed; every POST answered 503 until
/// `up`.
struct Api {
    server: FakeInflux2,
    up: Arc<AtomicBool>,
}

impl Api {
    fn start() -> Api {
        let up = Arc::new(AtomicBool::new(false));
        let confirmed = Arc::new(Mutex::new(false));
        let (u, c) = (up.clone(), confirmed.clone());
        let server = FakeInflux2::start(move |r, _| {
            let up = u.load(Ordering::Relaxed);
            if r.path == "/strings" {
                let done = c.lock().map(|c| *c).unwrap_or(false);
                let offer = if done {
                    json!([])
                } else {
                    json!([{"machine": "JET-01", "batch": "LOT777", "id": 5}])
                };
                return (200, vec![], offer.to_string());
            }
            if !up {
                return (503, vec![], json!({"error": "maintenance"}).to_string());
            }
            if r.path == "/strings/confirm" {
                if let Ok(mut c) = c.lock() {
                    *c = true;
                }
            }
            (200, vec![], "{}".into())
        });
        Api { server, up }
    }
}

fn config(dir: &TempDir, name: &str, hmi: u16, api: &Api, influx: &str) -> String {
    let base = api.server.url();
    let cfg = json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": influx, "api": "v1", "database": "dyeing", "flush_interval_s": 0.2},
        "clock": {"sync_check": "off"},
        "status": {"listen": ""},
        "api": {"batch_url": format!("{base}/batch/finish"), "trigger_url": format!("{base}/trigger"),
                "strings_url": format!("{base}/strings"), "strings_conf_url": format!("{base}/strings/confirm"),
                "poll_interval_s": 0.5, "timeout_s": 1},
        "machines": [{"name": "JET-01", "ip_address": "127.0.0.1", "port": hmi, "poll_interval_s": 0.3,
            "registers": [
                {"name": "process", "kind": "holding", "address": PROCESS, "type": "uint16", "measurement": "medium_frequency_data"},
                {"name": "batch", "kind": "holding", "address": BATCH, "type": "string", "length": 8, "measurement": "cycle_context_data"},
                {"name": "temperature", "kind": "holding", "address": 20, "type": "int16", "scale": 0.1, "measurement": "high_frequency_data"}
            ],
            "finish": {"register": "process", "finish_code": 305, "batch_register": "batch"},
            "batch_write": {"address": crate::batch::AREA, "registers": 10, "handshake_address": crate::batch::HANDSHAKE}}]
    });
    dir.write(name, &cfg.to_string())
        .to_str()
        .unwrap_or_default()
        .to_string()
}

fn run(dir: &TempDir, name: &str, exe: &Path, cfg: &str) -> Proc {
    // Each run has its own runtime directory (tmpfs is empty after the reboot of an update).
    let runtime = dir.path().join(format!("run-{name}"));
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    Proc::spawn(
        name,
        Command::new(exe)
            .args(["--config", cfg, "run"])
            .env("RUNTIME_DIRECTORY", &runtime)
            .env("RUST_LOG", "info"),
        dir.path(),
    )
}

/// The idempotency keys of the POSTs to `path`, with whether each was answered 2xx.
fn keys(reqs: &[Received], path: &str) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.path == path)
        .map(|r| header(r, "idempotency-key").unwrap_or_default())
        .collect()
}

/// The spool's pending lines, read from a copy of its directory (the original stays as the
/// version that wrote it left it).
fn spooled(state: &Path, scratch: &Path) -> Vec<String> {
    let copy = scratch.join("spool-copy");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("copy dir");
    for e in std::fs::read_dir(state.join("spool"))
        .expect("spool dir")
        .filter_map(|e| e.ok())
    {
        std::fs::copy(e.path(), copy.join(e.file_name())).expect("copy");
    }
    let (mut log, _) = Log::open(&copy, LogOptions::default()).expect("open the copy");
    let mut recs = Vec::new();
    log.read(log.acked(), usize::MAX, &mut recs).expect("read");
    recs.iter()
        .flat_map(|r| {
            String::from_utf8_lossy(r)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// Does influxd hold `line` (same measurement, machine, time, and field values)?
fn stored(points: &BTreeMap<(String, i64), serde_json::Map<String, Value>>, line: &str) -> bool {
    let (head, fields) = parse_fields(line);
    let measurement = head.split(',').next().unwrap_or("").to_string();
    let Some(ts) = line.rsplit(' ').next().and_then(|t| t.parse::<i64>().ok()) else {
        return false;
    };
    let Some(row) = points.get(&(measurement, ts)) else {
        return false;
    };
    fields.iter().all(|(k, v)| {
        let got = &row[k.as_str()];
        if let Some(i) = v.strip_suffix('i') {
            i.parse::<i64>().ok() == got.as_i64()
        } else if v == "true" || v == "false" {
            got.as_bool() == Some(v == "true")
        } else if v.starts_with('"') {
            got.as_str() == Some(v.trim_matches('"'))
        } else {
            v.parse::<f64>().ok() == got.as_f64()
        }
    })
}

/// The points of machine JET-01 in influxd, by (measurement, time), for the measurements of
/// `lines`.
fn influx_points(
    influx: &Influxd,
    lines: &[String],
) -> BTreeMap<(String, i64), serde_json::Map<String, Value>> {
    let measurements: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split([',', ' ']).next())
        .collect();
    let mut out = BTreeMap::new();
    for m in measurements {
        for row in influx.rows(&format!("SELECT * FROM \"{m}\" WHERE machine = 'JET-01'")) {
            if let Some(t) = row.get("time").and_then(Value::as_i64) {
                out.insert((m.to_string(), t), row);
            }
        }
    }
    out
}

fn audit_writes(state: &Path) -> usize {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["action"] == "write")
        .count()
}

fn batch_state(state: &Path) -> Value {
    let text = std::fs::read(state.join("batch/JET-01.json")).unwrap_or_default();
    serde_json::from_slice::<Value>(&text).unwrap_or(Value::Null)["last"].clone()
}

/// One hand-over: `first` leaves its state, `second` takes it.
fn hand_over(tag: &str, first: &Path, second: &Path) {
    let t0 = Instant::now();
    let dir = TempDir::new(tag);
    let state = dir.path().join("state");
    let peer = hmi_peer(&dir);
    let mut c = hmi(peer.port);
    set(&mut c, 20, &[215]);
    set(
        &mut c,
        BATCH,
        &registers::encode_string("B-4711", 8, StringOrder::HighFirst),
    );
    set(&mut c, PROCESS, &[101]);
    let api = Api::start();

    // The first version: InfluxDB down, the API answering 503.
    let down = format!("http://127.0.0.1:{}", free_port());
    let cfg = config(&dir, "first.json", peer.port, &api, &down);
    let mut gw = run(&dir, "first", first, &cfg);
    assert!(
        wait_until(Duration::from_secs(20), || batch_state(&state)["name"]
            == "LOT777"
            && !keys(&api.server.requests(), "/strings/confirm").is_empty()),
        "the new batch written, its confirmation tried\n{}",
        gw.dump()
    );
    set(&mut c, PROCESS, &[305]);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let r = api.server.requests();
            !keys(&r, "/batch/finish").is_empty() && !keys(&r, "/trigger").is_empty()
        }),
        "the finish report tried\n{}",
        gw.dump()
    );
    for t in 0..10 {
        set(&mut c, 20, &[220 + t * 3]);
        std::thread::sleep(Duration::from_millis(350));
    }
    assert_eq!(
        gw.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.dump()
    );
    let reqs = api.server.requests();
    let finish: BTreeSet<String> = keys(&reqs, "/batch/finish").into_iter().collect();
    let trigger: BTreeSet<String> = keys(&reqs, "/trigger").into_iter().collect();
    let confirm: BTreeSet<String> = keys(&reqs, "/strings/confirm").into_iter().collect();
    assert_eq!(finish.len(), 1, "{finish:?}");
    assert_eq!(finish, trigger);
    assert_eq!(confirm.len(), 1, "{confirm:?}");
    let lines = spooled(&state, dir.path());
    assert!(
        lines.len() >= 5,
        "points spooled while InfluxDB was down: {lines:?}\n{}",
        gw.dump()
    );
    let written = batch_state(&state);
    assert_eq!(audit_writes(&state), 1);
    let markers: Vec<PathBuf> = ["spool/FORMAT", "outbox/FORMAT"]
        .iter()
        .map(|m| state.join(m))
        .filter(|p| p.exists())
        .collect();
    // This release marks its logs (`durable::format`); the previous one knows no markers.
    let this_first = first == bin().as_path();
    assert_eq!(markers.len(), if this_first { 2 } else { 0 }, "{markers:?}");
    if this_first {
        let v: Value = serde_json::from_slice(
            &std::fs::read(state.join("batch/JET-01.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        assert_eq!(v["format"], 1, "{v}");
    }
    let seen = api.server.requests().len();

    // The second version: InfluxDB and the API up.
    let influx = Influxd::start();
    api.up.store(true, Ordering::Relaxed);
    let cfg = config(&dir, "second.json", peer.port, &api, &influx.url());
    let mut gw = run(&dir, "second", second, &cfg);
    let missing = |points: &BTreeMap<_, _>| -> Vec<String> {
        lines
            .iter()
            .filter(|l| !stored(points, l))
            .cloned()
            .collect()
    };
    let delivered = |path: &str| {
        api.server.requests()[seen..]
            .iter()
            .filter(|r| r.path == path)
            .count()
    };
    let ok = wait_until(Duration::from_secs(30), || {
        missing(&influx_points(&influx, &lines)).is_empty()
            && delivered("/batch/finish") >= 1
            && delivered("/trigger") >= 1
            && delivered("/strings/confirm") >= 1
    });
    // Time for a repeat to show up, if there were one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.dump()
    );
    let log = gw.dump();
    assert!(
        ok,
        "not all delivered; missing points: {:?}\n{log}",
        missing(&influx_points(&influx, &lines))
    );
    assert!(
        !log.contains("unreadable") && !log.contains("newer gateway"),
        "every state file read\n{log}"
    );
    let after = &api.server.requests()[seen..];
    for (path, key) in [
        ("/batch/finish", &finish),
        ("/trigger", &finish),
        ("/strings/confirm", &confirm),
    ] {
        let sent: Vec<String> = keys(after, path);
        assert_eq!(sent.len(), 1, "{path} posted once: {sent:?}\n{log}");
        assert!(
            key.contains(&sent[0]),
            "{path}: the same key {key:?}, not {sent:?}"
        );
    }
    for r in after.iter().filter(|r| r.path == "/batch/finish") {
        let body: Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(body["batch"], "B-4711");
        assert_eq!(body["process_code"], 305);
    }
    // The batch state kept: same batch, same confirmation key, not written again.
    let kept = batch_state(&state);
    assert_eq!(kept["name"], written["name"], "{kept} / {written}");
    assert_eq!(kept["key"], written["key"], "{kept} / {written}");
    assert_eq!(kept["entry_id"], written["entry_id"]);
    assert_eq!(audit_writes(&state), 1, "no second write\n{log}");
    assert_eq!(read_area(&mut c), ("LOT777".to_string(), 1));
    for m in &markers {
        assert!(m.exists(), "{} left in place", m.display());
    }
    eprintln!(
        "{tag}: {} spooled points, 3 reports handed over in {:.1} s",
        lines.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn the_previous_release_state_is_taken_over_by_this_one() {
    hand_over("update", &old_bin(), &bin());
}

#[test]
fn this_release_state_is_taken_over_by_the_previous_one_after_a_rollback() {
    let old = old_bin();
    hand_over("rollback", &bin(), &old);
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn state_in_a_newer_format_is_refused_loudly_and_left_untouched() {
    let dir = TempDir::new("newer");
    let state = dir.path().join("state");
    // What a later release might leave: its logs, state files and rejected.lp, format 2.
    for (name, text) in [
        ("spool/FORMAT", "2\n"),
        ("spool/0000000000000000.seg", "not a format 1 record"),
        ("outbox/FORMAT", "2\n"),
        ("outbox/0000000000000000.seg", "not a format 1 record"),
        (
            "batch/JET-01.json",
            r#"{"format": 2, "last": {"batches": ["LOT1"]}}"#,
        ),
        ("finish/JET-01.json", r#"{"format": 2, "armed": "yes"}"#),
        (
            "rejected.lp",
            "# dyeing-gateway rejected.lp format 2\nm v=1 1\n",
        ),
    ] {
        let p = state.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(&p, text).expect("write");
    }
    let before = snapshot(&state);
    let peer = hmi_peer(&dir);
    let mut c = hmi(peer.port);
    set(&mut c, PROCESS, &[101]);
    let api = Api::start();
    let down = format!("http://127.0.0.1:{}", free_port());
    let cfg = config(&dir, "gw.json", peer.port, &api, &down);
    let mut gw = run(&dir, "gw", &bin(), &cfg);
    // The gateway runs on (it polls), the finish and the offered batch are left alone.
    std::thread::sleep(Duration::from_secs(2));
    set(&mut c, PROCESS, &[305]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.dump()
    );
    let log = gw.output();
    for part in [
        "spool/FORMAT: format 2",
        "outbox/FORMAT: format 2",
        "batch writing off",
        "finish detection off",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains(part) && l.contains("newer gateway")),
            "refused loudly: {part}\n{log}"
        );
    }
    let after = snapshot(&state);
    for (p, b) in &before {
        assert_eq!(after.get(p), Some(b), "{} untouched\n{log}", p.display());
    }
    assert!(
        !api.server.requests().iter().any(|r| r.path != "/strings"),
        "nothing posted\n{log}"
    );
    assert_eq!(read_area(&mut c).0, "", "nothing written to the HMI");
}
