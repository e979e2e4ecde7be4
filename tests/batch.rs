//! The batch workflow against real peers: pymodbus as the HMI (its registers driven and read
//! back through a second Modbus connection) and a strict recording HTTP server as the plant
//! API. Finishes are reported once per idempotency key; new batches are written, verified and
//! confirmed once; bad input never reaches the machine.

use crate::util::*;
use dyeing_gateway::batch::rfc3339;
use dyeing_gateway::clock::wall_ms;
use dyeing_gateway::config::RegisterKind;
use dyeing_gateway::config::StringOrder;
use dyeing_gateway::modbus::codec::Reply;
use dyeing_gateway::modbus::transport::TcpTransport;
use dyeing_gateway::modbus::Client;
use dyeing_gateway::registers;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const PROCESS: u16 = 6;
pub(crate) const BATCH: u16 = 10;
pub(crate) const AREA: u16 = 100;
pub(crate) const HANDSHAKE: u16 = 120;
const IDENTITY: u16 = 50;

/// The test's own Modbus connection to the HMI.
pub(crate) fn hmi(port: u16) -> Client {
    let mut t = TcpTransport::new("127.0.0.1", port, Duration::from_secs(2));
    dyeing_gateway::modbus::transport::Transport::open(&mut t).expect("connect to pymodbus");
    Client::new(Box::new(t))
}

pub(crate) fn set(c: &mut Client, address: u16, words: &[u16]) {
    c.write_multiple(1, address, words)
        .expect("write to pymodbus");
}

pub(crate) fn read_area(c: &mut Client) -> (String, u16) {
    let text = match c
        .read(1, RegisterKind::Holding, AREA, 10)
        .expect("read area")
    {
        Reply::Words(w) => registers::decode_string(&w, StringOrder::HighFirst),
        _ => String::new(),
    };
    let hs = match c
        .read(1, RegisterKind::Holding, HANDSHAKE, 1)
        .expect("read handshake")
    {
        Reply::Words(w) => w[0],
        _ => u16::MAX,
    };
    (text, hs)
}

pub(crate) fn hmi_peer(dir: &TempDir) -> ModbusPeer {
    // A plain (non-sparse) map: every address 0..1000 exists and is writable.
    let regs = json!([
        {"kind": "holding", "address": PROCESS, "type": "uint16", "value": 0},
        {"kind": "holding", "address": IDENTITY, "type": "uint16", "value": 1234}
    ]);
    ModbusPeer::start(dir, &json!({"slaves": {"1": regs}}), "tcp")
}

fn config(
    dir: &TempDir,
    hmi: u16,
    api: &FakeInflux2,
    influx: &FakeInflux2,
    extra: Value,
) -> String {
    let base = api.url();
    let mut machine = json!({"name": "JET-01", "ip_address": "127.0.0.1", "port": hmi, "poll_interval_s": 0.3,
        "registers": [
            {"name": "process", "kind": "holding", "address": PROCESS, "type": "uint16", "measurement": "medium_frequency_data"},
            {"name": "batch", "kind": "holding", "address": BATCH, "type": "string", "length": 8, "measurement": "cycle_context_data"},
            {"name": "machine_id", "kind": "holding", "address": IDENTITY, "type": "uint16", "measurement": "cycle_context_data"}
        ],
        "finish": {"register": "process", "finish_code": 305, "batch_register": "batch"},
        "batch_write": {"address": AREA, "registers": 10, "handshake_address": HANDSHAKE}});
    let mut cfg = json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": influx.url(), "org": "o", "bucket": "b", "token": "t"},
        "api": {"batch_url": format!("{base}/batch/finish"), "trigger_url": format!("{base}/trigger"),
                "strings_url": format!("{base}/strings"), "strings_conf_url": format!("{base}/strings/confirm"),
                "poll_interval_s": 0.5, "timeout_s": 1},
        "machines": [machine.clone()]
    });
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            if k == "batch_write" {
                for (bk, bv) in v.as_object().cloned().unwrap_or_default() {
                    machine["batch_write"][bk] = bv;
                }
                cfg["machines"][0] = machine.clone();
            } else {
                cfg[k] = v.clone();
            }
        }
    }
    dir.write("machines.json", &cfg.to_string())
        .to_str()
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn header(r: &Received, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn run(dir: &TempDir, cfg: &str) -> Proc {
    Proc::spawn(
        "gateway",
        Command::new(bin()).args(["--config", cfg, "run"]),
        dir.path(),
    )
}

/// The HMI runs batch `name` (process 101), and the gateway has been watching it for 2 s.
fn run_batch(dir: &TempDir, cfg: &str, port: u16, name: &str) -> (Client, Proc) {
    let mut c = hmi(port);
    set(
        &mut c,
        BATCH,
        &registers::encode_string(name, 8, StringOrder::HighFirst),
    );
    set(&mut c, PROCESS, &[101]);
    let gw = run(dir, cfg);
    std::thread::sleep(Duration::from_secs(2));
    (c, gw)
}

#[test]
fn a_finish_is_reported_once_per_key_to_both_urls_even_across_an_api_outage() {
    let dir = TempDir::new("finish");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let api_up = Arc::new(AtomicUsize::new(0));
    let up = api_up.clone();
    let api = FakeInflux2::start(move |r, _| {
        if r.path.starts_with("/strings") {
            return (200, vec![], "[]".into());
        }
        if up.load(Ordering::Relaxed) == 0 {
            (503, vec![], json!({"error": "maintenance"}).to_string())
        } else {
            (200, vec![], json!({"ok": true}).to_string())
        }
    });
    let cfg = config(&dir, peer.port, &api, &influx, json!({}));
    let (mut c, mut gw) = run_batch(&dir, &cfg, peer.port, "B-4711");
    // The HMI shows the next batch at the moment it finishes; the finish is held, the HMI
    // reboots (finish -> 0 -> finish): one event.
    set(&mut c, PROCESS, &[305]);
    set(
        &mut c,
        BATCH,
        &registers::encode_string("B-4712", 8, StringOrder::HighFirst),
    );
    std::thread::sleep(Duration::from_secs(2));
    set(&mut c, PROCESS, &[0]);
    std::thread::sleep(Duration::from_millis(800));
    set(&mut c, PROCESS, &[305]);
    std::thread::sleep(Duration::from_secs(1));
    // The API comes back; the report arrives, once.
    api_up.store(1, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let log = gw.output();
            log.contains("delivered to ")
                && log.contains("/batch/finish")
                && log.matches("delivered to ").count() >= 2
        }),
        "{}",
        gw.dump()
    );
    // A gateway restart at the finish does not report again.
    assert_eq!(gw.terminate(Duration::from_secs(10)), Some(0));
    let before = api.requests().len();
    let mut gw = run(&dir, &cfg);
    std::thread::sleep(Duration::from_secs(3));
    gw.terminate(Duration::from_secs(10));
    let reqs = api.requests();
    let finish: Vec<&Received> = reqs
        .iter()
        .filter(|r| r.path == "/batch/finish" || r.path == "/trigger")
        .collect();
    let keys: BTreeSet<String> = finish
        .iter()
        .filter_map(|r| header(r, "idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 1, "one event, one key: {keys:?}\n{}", gw.dump());
    let after: Vec<String> = reqs[before..]
        .iter()
        .filter(|r| !r.path.starts_with("/strings"))
        .map(|r| format!("{} {:?} {}", r.path, header(r, "idempotency-key"), r.body))
        .collect();
    assert!(
        after.is_empty(),
        "nothing reported after the restart: {after:?}\n{}",
        gw.dump()
    );
    for r in &finish {
        let body: Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(
            body["batch"], "B-4711",
            "the batch seen while running, not the next one"
        );
        assert_eq!(body["machine"], "JET-01");
        assert_eq!(body["process_code"], 305);
    }
}

#[test]
fn a_finish_before_the_clock_sync_is_reported_after_it_with_the_time_it_happened() {
    let dir = TempDir::new("finish-unsynced");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let api = FakeInflux2::start(|r, _| {
        if r.path.starts_with("/strings") {
            (200, vec![], "[]".into())
        } else {
            (200, vec![], json!({"ok": true}).to_string())
        }
    });
    let sync = dir.path().join("synchronized");
    let cfg = config(
        &dir,
        peer.port,
        &api,
        &influx,
        json!({"clock": {"sync_check": "file", "sync_file": sync}}),
    );
    let (mut c, mut gw) = run_batch(&dir, &cfg, peer.port, "B-9");
    let finished = wall_ms();
    set(&mut c, PROCESS, &[305]);
    let finishes = || {
        api.requests()
            .iter()
            .filter(|r| r.path == "/batch/finish")
            .map(|r| r.body.clone())
            .collect::<Vec<_>>()
    };
    // Detected, stored, but not posted while the clock is not synchronized.
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .output()
            .contains("queued for 2 URL(s)")),
        "{}",
        gw.dump()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        finishes().is_empty(),
        "posted before the clock sync: {:?}",
        finishes()
    );
    std::fs::write(&sync, b"").expect("sync flag");
    let synced = wall_ms();
    assert!(
        wait_until(Duration::from_secs(15), || !finishes().is_empty()),
        "{}",
        gw.dump()
    );
    gw.terminate(Duration::from_secs(10));
    let body: Value = serde_json::from_str(&finishes()[0]).expect("JSON body");
    let at = body["finished_at"].as_str().unwrap_or_default().to_string();
    // When the finish was polled (within a poll interval), not when the clock was synced.
    assert!(
        at >= rfc3339(finished - 100) && at <= rfc3339(finished + 1000) && at < rfc3339(synced),
        "finished_at {at}: finish at {}, clock synced at {}\n{}",
        rfc3339(finished),
        rfc3339(synced),
        gw.dump()
    );
}

/// An API that offers batches from `offers` (a closure over the request count) and records
/// confirmations; once a batch is confirmed it is no longer listed.
fn strings_api(
    offer: impl Fn(usize) -> (u16, String) + Send + Sync + 'static,
) -> (FakeInflux2, Arc<Mutex<Vec<String>>>) {
    let confirmed = Arc::new(Mutex::new(Vec::<String>::new()));
    let conf = confirmed.clone();
    let gets = AtomicUsize::new(0);
    let api = FakeInflux2::start(move |r, _| {
        if r.path == "/strings/confirm" {
            let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if let Ok(mut c) = conf.lock() {
                c.push(v["batch"].as_str().unwrap_or("").to_string());
            }
            return (200, vec![], "{}".into());
        }
        if r.path == "/strings" {
            let n = gets.fetch_add(1, Ordering::Relaxed);
            let (status, body) = offer(n);
            let done = conf.lock().map(|c| c.clone()).unwrap_or_default();
            // Drop confirmed entries, as the plant API would.
            if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&body) {
                let left: Vec<Value> = items
                    .into_iter()
                    .filter(|i| !done.contains(&i["batch"].as_str().unwrap_or("").to_string()))
                    .collect();
                return (status, vec![], Value::from(left).to_string());
            }
            return (status, vec![], body);
        }
        (200, vec![], "{}".into())
    });
    (api, confirmed)
}

#[test]
fn a_new_batch_is_written_verified_confirmed_and_audited_once() {
    let dir = TempDir::new("write");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let (api, confirmed) = strings_api(|_| {
        (
            200,
            json!([{"machine": "JET-01", "batch": "LOT777", "id": 5}]).to_string(),
        )
    });
    let cfg = config(&dir, peer.port, &api, &influx, json!({}));
    let mut gw = run(&dir, &cfg);
    let mut c = hmi(peer.port);
    assert!(
        wait_until(Duration::from_secs(15), || !confirmed
            .lock()
            .map(|v| v.is_empty())
            .unwrap_or(true)),
        "{}",
        gw.dump()
    );
    std::thread::sleep(Duration::from_secs(2));
    gw.terminate(Duration::from_secs(10));
    assert_eq!(read_area(&mut c), ("LOT777".to_string(), 1));
    assert_eq!(
        confirmed.lock().map(|v| v.clone()).unwrap_or_default(),
        vec!["LOT777"],
        "confirmed once"
    );
    let confirms: Vec<Received> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/strings/confirm")
        .collect();
    let body: Value = serde_json::from_str(&confirms[0].body).expect("json");
    assert_eq!(body["id"], "5");
    assert!(header(&confirms[0], "idempotency-key").is_some());
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap_or_default();
    let writes: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["action"] == "write")
        .collect();
    assert_eq!(writes.len(), 1, "{audit}");
    assert_eq!(writes[0]["batch"], "LOT777");
    assert_eq!(writes[0]["unit_id"], 1);
    assert_eq!(writes[0]["addresses"]["handshake"], HANDSHAKE);
}

#[test]
fn bad_input_never_reaches_the_machine_and_the_next_good_batch_goes_through() {
    let dir = TempDir::new("bad");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let (api, confirmed) = strings_api(|n| match n {
        0 => (200, "{not json".into()),
        1 => (500, json!({"error": "db down"}).to_string()),
        2 => {
            std::thread::sleep(Duration::from_secs(3));
            (200, "[]".into())
        }
        3 => (
            200,
            json!([
                {"machine": "JET-01", "batch": "THIS-NAME-IS-FAR-TOO-LONG-FOR-THE-AREA"},
                {"machine": "JET-01", "batch": "LÖT-1"},
                {"machine": "JET-01", "batch": "LOT\u{0007}1"},
                {"machine": "JET-99", "batch": "LOT-9"}
            ])
            .to_string(),
        ),
        _ => (
            200,
            json!([{"machine": "JET-01", "batch": "GOOD-1"}]).to_string(),
        ),
    });
    let cfg = config(&dir, peer.port, &api, &influx, json!({}));
    let mut c = hmi(peer.port);
    let mut gw = run(&dir, &cfg);
    // Until the good batch, the area stays empty (read back directly from the HMI).
    while api
        .requests()
        .iter()
        .filter(|r| r.path == "/strings")
        .count()
        < 5
    {
        assert_eq!(
            read_area(&mut c),
            (String::new(), 0),
            "something was written\n{}",
            gw.dump()
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(api.requests().len() < 1000);
    }
    assert!(wait_until(Duration::from_secs(10), || confirmed
        .lock()
        .map(|v| v.contains(&"GOOD-1".to_string()))
        .unwrap_or(false)));
    gw.terminate(Duration::from_secs(10));
    assert_eq!(read_area(&mut c).0, "GOOD-1");
    let log = gw.output();
    for needle in [
        "malformed JSON",
        "HTTP 500",
        "holds 20",
        "which the HMI cannot show",
        "unknown machine `JET-99`",
    ] {
        assert!(
            log.contains(needle),
            "no clear log line for {needle}:\n{log}"
        );
    }
}

#[test]
fn control_characters_from_the_api_cannot_forge_log_lines() {
    let dir = TempDir::new("forge");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let forged = "[2020-01-01T00:00:00Z ERROR dyeing_gateway::poller] FORGED";
    let (api, _) = strings_api(move |_| {
        (
            200,
            json!([{"machine": format!("JET-77\n{forged}\r\u{1b}[2J"), "batch": "B1"}]).to_string(),
        )
    });
    let cfg = config(&dir, peer.port, &api, &influx, json!({}));
    let mut gw = run(&dir, &cfg);
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .output()
            .contains("unknown machine")),
        "{}",
        gw.dump()
    );
    gw.terminate(Duration::from_secs(10));
    let out = gw.output();
    // The whole API value stays on the line that says what is wrong with it.
    let forged_lines = out
        .lines()
        .filter(|l| l.contains("FORGED") && !l.contains("unknown machine"))
        .count();
    assert_eq!(forged_lines, 0, "a forged line:\n{out}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\r'),
        "a raw control character:\n{out}"
    );
    assert!(
        out.contains(&format!("JET-77\\n{forged}\\r\\u{{1b}}[2J")),
        "shown escaped on one line:\n{out}"
    );
}

#[test]
fn a_new_batch_reaches_a_machine_on_a_saturated_shared_endpoint() {
    // Three units behind one HMI gateway, each read answered 150 ms late, polled every 0.2 s:
    // a poll is always due. The batch command must still be taken and written.
    let dir = TempDir::new("saturated");
    let regs = json!([{"kind": "holding", "address": PROCESS, "type": "uint16", "value": 0}]);
    let peer = ModbusPeer::start(
        &dir,
        &json!({"slaves": {"1": regs, "2": regs, "3": regs}, "read_delay_s": 0.15}),
        "tcp",
    );
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let (api, confirmed) = strings_api(|_| {
        (
            200,
            json!([{"machine": "JET-01", "batch": "LOT-SAT", "id": 9}]).to_string(),
        )
    });
    let base = api.url();
    let machine = |name: &str, unit: u8| {
        json!({"name": name, "ip_address": "127.0.0.1", "port": peer.port, "slave_id": unit,
            "poll_interval_s": 0.2,
            "registers": [{"name": "process", "kind": "holding", "address": PROCESS, "type": "uint16", "measurement": "high_frequency_data"}]})
    };
    let mut first = machine("JET-01", 1);
    first["batch_write"] =
        json!({"address": AREA, "registers": 10, "handshake_address": HANDSHAKE});
    let cfg = dir.write(
        "machines.json",
        &json!({
            "state_dir": dir.path().join("state"),
            "status": {"listen": ""},
            "influxdb": {"url": influx.url(), "org": "o", "bucket": "b", "token": "t"},
            "api": {"strings_url": format!("{base}/strings"), "strings_conf_url": format!("{base}/strings/confirm"),
                    "poll_interval_s": 0.5, "timeout_s": 1},
            "machines": [first, machine("JET-02", 2), machine("JET-03", 3)]
        })
        .to_string(),
    );
    let mut gw = run(&dir, cfg.to_str().unwrap_or_default());
    let mut c = hmi(peer.port);
    let start = std::time::Instant::now();
    let landed = wait_until(Duration::from_secs(20), || read_area(&mut c).0 == "LOT-SAT");
    let took = start.elapsed();
    let gets = api
        .requests()
        .iter()
        .filter(|r| r.path == "/strings")
        .count();
    println!(
        "saturated endpoint: batch landed={landed} after {took:?}, {gets} GETs of the strings URL"
    );
    assert!(
        landed,
        "not written within 20 s ({gets} GETs)\n{}",
        gw.dump()
    );
    assert!(
        wait_until(Duration::from_secs(15), || confirmed
            .lock()
            .map(|v| v.contains(&"LOT-SAT".to_string()))
            .unwrap_or(false)),
        "{}",
        gw.dump()
    );
    gw.terminate(Duration::from_secs(10));
}

#[test]
fn identity_mismatch_shadow_mode_and_an_unconsumed_batch_write_nothing() {
    let offer = || {
        strings_api(|_| {
            (
                200,
                json!([{"machine": "JET-01", "batch": "LOT-X"}]).to_string(),
            )
        })
    };
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    // 1. The identity register says this is another machine.
    let dir = TempDir::new("identity");
    let peer = hmi_peer(&dir);
    let (api, _) = offer();
    let cfg = config(
        &dir,
        peer.port,
        &api,
        &influx,
        json!({"batch_write": {"identity": {"register": "machine_id", "value": 999}}}),
    );
    let mut gw = run(&dir, &cfg);
    std::thread::sleep(Duration::from_secs(3));
    gw.terminate(Duration::from_secs(10));
    let mut c = hmi(peer.port);
    assert_eq!(read_area(&mut c), (String::new(), 0), "{}", gw.dump());
    assert!(
        gw.output().contains("identity register `machine_id` holds"),
        "{}",
        gw.dump()
    );
    // 2. Shadow mode: nothing written or posted, the audit log says what would have been.
    let dir = TempDir::new("shadow");
    let peer = hmi_peer(&dir);
    let (api, confirmed) = offer();
    let cfg = config(&dir, peer.port, &api, &influx, json!({"shadow_mode": true}));
    let mut c = hmi(peer.port);
    set(&mut c, PROCESS, &[101]);
    let mut gw = run(&dir, &cfg);
    std::thread::sleep(Duration::from_secs(1));
    set(&mut c, PROCESS, &[305]);
    std::thread::sleep(Duration::from_secs(3));
    gw.terminate(Duration::from_secs(10));
    assert_eq!(read_area(&mut c), (String::new(), 0));
    assert!(confirmed.lock().map(|v| v.is_empty()).unwrap_or(false));
    assert!(
        api.requests().iter().all(|r| r.path == "/strings"),
        "shadow mode posted something"
    );
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap_or_default();
    assert!(
        audit.contains("\"shadow\":true")
            && audit.contains("LOT-X")
            && audit.contains("\"action\":\"post\""),
        "{audit}"
    );
    // 3. The HMI has not taken the previous batch (handshake still 1): no overwrite.
    let dir = TempDir::new("unconsumed");
    let peer = hmi_peer(&dir);
    let (api, confirmed) = offer();
    let cfg = config(&dir, peer.port, &api, &influx, json!({}));
    let mut c = hmi(peer.port);
    set(
        &mut c,
        AREA,
        &registers::encode_string("OLD-1", 10, StringOrder::HighFirst),
    );
    set(&mut c, HANDSHAKE, &[1]);
    let mut gw = run(&dir, &cfg);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        read_area(&mut c),
        ("OLD-1".to_string(), 1),
        "overwritten\n{}",
        gw.dump()
    );
    assert!(gw.output().contains("has not taken the previous batch"));
    // Once the HMI takes it, the new batch goes in.
    set(&mut c, HANDSHAKE, &[0]);
    assert!(wait_until(Duration::from_secs(10), || read_area(&mut c).0 == "LOT-X"));
    assert!(wait_until(Duration::from_secs(10), || confirmed
        .lock()
        .map(|v| v.len() == 1)
        .unwrap_or(false)));
    gw.terminate(Duration::from_secs(10));
}

/// The idempotency keys of every POST to `path` about `batch`.
fn keys_for(reqs: &[Received], path: &str, batch: &str) -> BTreeSet<String> {
    reqs.iter()
        .filter(|q| {
            q.path == path
                && serde_json::from_str::<Value>(&q.body).is_ok_and(|b| b["batch"] == batch)
        })
        .filter_map(|q| header(q, "idempotency-key"))
        .collect()
}

#[test]
fn sigkill_at_random_moments_never_doubles_a_finish_key_or_a_write() {
    let seed = std::env::var("DG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("DG_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let rounds = std::env::var("DG_BATCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6usize);
    let dir = TempDir::new("batchkill");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let offer = Arc::new(Mutex::new(String::new()));
    let o = offer.clone();
    let (api, confirmed) = strings_api(move |_| {
        let name = o.lock().map(|n| n.clone()).unwrap_or_default();
        let list = if name.is_empty() {
            json!([])
        } else {
            json!([{"machine": "JET-01", "batch": name}])
        };
        (200, list.to_string())
    });
    let cfg = config(&dir, peer.port, &api, &influx, json!({}));
    let mut c = hmi(peer.port);
    let mut gw = run(&dir, &cfg);
    let mut kills = 0;
    for r in 0..rounds {
        // A batch runs and finishes; a new batch is offered; the gateway dies somewhere in
        // between and is restarted at once.
        let kill_at = rng.u64(0..2500);
        let started = std::time::Instant::now();
        let mut killed = false;
        let mut maybe_kill = |gw: &mut Proc| {
            if !killed && started.elapsed() >= Duration::from_millis(kill_at) {
                gw.signal("KILL");
                let _ = gw.child.wait();
                *gw = run(&dir, &cfg);
                killed = true;
                kills += 1;
            }
        };
        set(
            &mut c,
            BATCH,
            &registers::encode_string(&format!("B-{r}"), 8, StringOrder::HighFirst),
        );
        set(&mut c, PROCESS, &[101]);
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(150));
            maybe_kill(&mut gw);
        }
        set(&mut c, PROCESS, &[305]);
        if let Ok(mut n) = offer.lock() {
            *n = format!("LOT-{r}");
        }
        // Wait for the write, let the "HMI" take it, and for the confirmation.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            maybe_kill(&mut gw);
            let (text, hs) = read_area(&mut c);
            if text == format!("LOT-{r}") && hs == 1 {
                set(&mut c, HANDSHAKE, &[0]);
            }
            if confirmed
                .lock()
                .map(|v| v.contains(&format!("LOT-{r}")))
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        maybe_kill(&mut gw);
    }
    // Let everything owed be delivered, then stop cleanly.
    std::thread::sleep(Duration::from_secs(4));
    gw.terminate(Duration::from_secs(10));
    let reqs = api.requests();
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap_or_default();
    for r in 0..rounds {
        let batch = format!("B-{r}");
        let keys = keys_for(&reqs, "/batch/finish", &batch);
        assert_eq!(
            keys.len(),
            1,
            "finish of {batch}: keys {keys:?} (seed {seed}, {kills} kills)"
        );
        let lot = format!("LOT-{r}");
        let ckeys = keys_for(&reqs, "/strings/confirm", &lot);
        assert_eq!(
            ckeys.len(),
            1,
            "confirmation of {lot}: keys {ckeys:?} (seed {seed})"
        );
        let verified = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["action"] == "verified" && v["batch"] == lot)
            .count();
        assert!(
            verified <= 1,
            "{lot} written and verified {verified} times (seed {seed})\n{audit}"
        );
    }
    println!("batch SIGKILL test: {rounds} rounds, {kills} kills, seed {seed}: every finish and confirmation under one key");
}

#[test]
#[cfg_attr(
    target_arch = "arm",
    ignore = "qemu-user 7.2 lacks TCGETS2; serial tests run on x86"
)]
fn over_rs485_a_finish_is_reported_and_a_new_batch_written_to_the_right_slave() {
    let dir = TempDir::new("batch-rtu");
    let pair = crate::rtu::pty_pair(&dir, "bus");
    // Two package machines on one bus: slave 1 sits at its finish code, slave 2 is running.
    let regs = |process: u16, batch: &str| {
        json!([
            {"kind": "holding", "address": PROCESS, "type": "uint16", "value": process},
            {"kind": "holding", "address": BATCH, "type": "string", "length": 8, "value": batch}
        ])
    };
    let server = crate::rtu::rtu_server(
        &dir,
        &json!({"slaves": {"1": regs(305, "PKG1-B"), "2": regs(101, "PKG2-B")}}),
        &pair.a,
    );
    let b = pair.b.clone();
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let (api, confirmed) = strings_api(|_| {
        (
            200,
            json!([{"machine": "PKG-02", "batch": "RTU-LOT", "id": 9}]).to_string(),
        )
    });
    let base = api.url();
    let machine = |name: &str, unit: u8| {
        json!({"name": name, "endpoint": "bus", "slave_id": unit, "poll_interval_s": 0.3,
        "registers": [
            {"name": "process", "kind": "holding", "address": PROCESS, "type": "uint16", "measurement": "medium_frequency_data"},
            {"name": "batch", "kind": "holding", "address": BATCH, "type": "string", "length": 8, "measurement": "cycle_context_data"}],
        "finish": {"register": "process", "finish_code": 355, "batch_register": "batch"},
        "batch_write": {"address": AREA, "registers": 10, "handshake_address": HANDSHAKE}})
    };
    let cfg = dir.write("machines.json", &json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": influx.url(), "org": "o", "bucket": "b"},
        "api": {"batch_url": format!("{base}/batch/finish"), "strings_url": format!("{base}/strings"),
                "strings_conf_url": format!("{base}/strings/confirm"), "poll_interval_s": 0.5},
        "endpoints": [{"name": "bus", "transport": "rtu", "serial_port": b, "baudrate": 19200, "timeout_s": 0.5}],
        "machines": [machine("PKG-01", 1), machine("PKG-02", 2)]
    }).to_string());
    let mut gw = run(&dir, cfg.to_str().unwrap_or_default());
    assert!(
        wait_until(Duration::from_secs(20), || confirmed
            .lock()
            .map(|v| v.contains(&"RTU-LOT".to_string()))
            .unwrap_or(false)),
        "{}\n{}",
        gw.dump(),
        server.dump()
    );
    gw.terminate(Duration::from_secs(10));
    let log = gw.output();
    assert!(
        log.contains("machine PKG-02: batch `RTU-LOT` written and read back"),
        "{log}"
    );
    // Slave 1 sits at its finish code from the start: never seen running, so nothing reported.
    assert!(
        api.requests().iter().all(|r| r.path != "/batch/finish"),
        "{log}"
    );
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap_or_default();
    let writes: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["action"] == "write")
        .collect();
    assert_eq!(writes.len(), 1, "{audit}");
    assert_eq!(
        writes[0]["unit_id"], 2,
        "written to the right slave on the shared bus"
    );
}

/// A plant API that accepts every connection and never answers; returns its base URL. The
/// connections are held until the test ends.
fn silent_api() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_silent_api_never_stops_the_watchdog_pings_the_offers_or_a_quick_stop() {
    use dyeing_gateway::batch::outbox::{Outbox, OutboxSettings, Payload};
    use dyeing_gateway::batch::FinishEvent;
    use dyeing_gateway::status::OutboxStatus;
    use std::os::unix::net::UnixDatagram;
    use std::time::Instant;
    let dir = TempDir::new("silent-api");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let silent = silent_api();
    let finish_urls = vec![
        format!("{silent}/batch/finish"),
        format!("{silent}/trigger"),
    ];
    // 12 reports left pending by an earlier run: all due at once after the restart.
    {
        // Only stored here: its HTTP worker is not run.
        let (mut o, _worker) = Outbox::open(
            OutboxSettings {
                dir: dir.path().join("state/outbox"),
                finish_urls: finish_urls.clone(),
                confirm_url: None,
                finish_body: json!({"batch": "{batch}"}),
                confirm_body: json!({}),
                timeout: Duration::from_secs(1),
                ca: None,
                shadow: false,
                audit: dir.path().join("state/audit.jsonl"),
                clock: Arc::new(dyeing_gateway::clock::Clock::new(
                    dyeing_gateway::clock::SyncCheck::Off,
                )),
                clock_wait: Duration::ZERO,
            },
            Arc::new(Mutex::new(OutboxStatus::default())),
        );
        for i in 0..12 {
            let id = dyeing_gateway::batch::new_id();
            let event = FinishEvent {
                id,
                machine: "JET-01".into(),
                batch: format!("OLD-{i}"),
                code: 305,
                time_ms: wall_ms(),
                unsynced: false,
                at: None,
            };
            assert!(o.add(Payload::Finish(event)).is_some());
        }
    }
    let cfg = config(
        &dir,
        peer.port,
        &influx,
        &influx,
        json!({"api": {"batch_url": finish_urls[0], "trigger_url": finish_urls[1], "timeout_s": 1}}),
    );
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut c = hmi(peer.port);
    set(
        &mut c,
        BATCH,
        &registers::encode_string("NEW-1", 8, StringOrder::HighFirst),
    );
    set(&mut c, PROCESS, &[101]);
    let started = Instant::now();
    let mut gw = Proc::spawn(
        "gateway",
        Command::new(bin())
            .args(["--config", &cfg, "run"])
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "2000000"),
        dir.path(),
    );
    // Pings every second while every loop turns; a thread is stuck after 5 s without a turn.
    let mut pings = Vec::new();
    let mut buf = [0u8; 512];
    let mut finished = false;
    while started.elapsed() < Duration::from_secs(12) {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                pings.push(started.elapsed());
            }
        }
        if !finished && started.elapsed() > Duration::from_secs(3) {
            // A batch finishes while the API hangs: the poller's offer must be taken.
            set(&mut c, PROCESS, &[305]);
            finished = true;
        }
    }
    let stop = Instant::now();
    let code = gw.terminate(Duration::from_secs(30));
    let stopped_in = stop.elapsed();
    let log = gw.output();
    let dump = format!("pings at {pings:?}\n{}", gw.dump());
    println!(
        "{} watchdog pings in 12 s; stopped in {stopped_in:?}",
        pings.len()
    );
    assert!(log.contains("12 reports waiting"), "{dump}");
    let last = pings.last().copied().unwrap_or_default();
    assert!(
        pings.len() >= 6 && last > Duration::from_secs(9),
        "the watchdog pings stopped: {} pings, the last at {last:?}\n{dump}",
        pings.len()
    );
    assert!(
        log.contains("batch `NEW-1` on JET-01 (code 305): queued for 2 URL(s)"),
        "the poller's report was not taken\n{dump}"
    );
    assert_eq!(code, Some(0), "{dump}");
    assert!(
        stopped_in < Duration::from_secs(5),
        "stop took {stopped_in:?}\n{dump}"
    );
}

#[test]
fn a_confirmation_made_before_the_clock_sync_is_held_until_it() {
    let dir = TempDir::new("confirm-unsynced");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let (api, confirmed) = strings_api(|_| {
        (
            200,
            json!([{"machine": "JET-01", "batch": "LOT-EARLY", "id": 9}]).to_string(),
        )
    });
    let sync = dir.path().join("synchronized");
    let cfg = config(
        &dir,
        peer.port,
        &api,
        &influx,
        json!({"clock": {"sync_check": "file", "sync_file": sync}}),
    );
    let mut gw = run(&dir, &cfg);
    let mut c = hmi(peer.port);
    // Written while the clock is not synchronized: the batch goes in (it cannot wait)...
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .output()
            .contains("batch `LOT-EARLY` written and read back")),
        "{}",
        gw.dump()
    );
    assert_eq!(read_area(&mut c).0, "LOT-EARLY");
    // ...its confirmation carries the untrusted marker and is not posted before the sync.
    let state = dir.path().join("state/batch/JET-01.json");
    let kept: Value = std::fs::read_to_string(&state)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert_eq!(kept["last"]["unsynced"], true, "{kept}\n{}", gw.dump());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        confirmed.lock().map(|v| v.is_empty()).unwrap_or(false),
        "confirmed before the clock sync\n{}",
        gw.dump()
    );
    std::fs::write(&sync, b"").expect("sync flag");
    assert!(
        wait_until(Duration::from_secs(15), || confirmed
            .lock()
            .map(|v| v.len() == 1)
            .unwrap_or(false)),
        "{}",
        gw.dump()
    );
    gw.terminate(Duration::from_secs(10));
    assert!(
        gw.output()
            .contains("confirmation of batch `LOT-EARLY` written to JET-01: happened before the clock was synchronized"),
        "{}",
        gw.dump()
    );
}

#[test]
fn credentials_inside_urls_are_shown_nowhere() {
    const API_PASS: &str = "Ap1-Pa55w0rd";
    const API_KEY: &str = "K3y-0f-Th3-Plant";
    const INFLUX_PASS: &str = "1nflux-Pa55";
    let dir = TempDir::new("urlsecrets");
    let peer = hmi_peer(&dir);
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    // Delivered to one URL, refused by the other, the batch list unavailable: each is logged
    // with its URL and shown on the status page.
    let api = FakeInflux2::start(|r, _| {
        if r.path.starts_with("/strings") {
            (503, vec![], json!({"error": "maintenance"}).to_string())
        } else if r.path.starts_with("/trigger") {
            (400, vec![], json!({"error": "unknown machine"}).to_string())
        } else {
            (200, vec![], json!({"ok": true}).to_string())
        }
    });
    let status_port = free_ports(1)[0];
    let base = format!("http://gw:{API_PASS}@127.0.0.1:{}", api.port);
    let cfg = config(
        &dir,
        peer.port,
        &api,
        &influx,
        json!({
            "influxdb": {"url": format!("http://writer:{INFLUX_PASS}@127.0.0.1:{}", influx.port),
                "org": "o", "bucket": "b", "token": "t"},
            "api": {"batch_url": format!("{base}/batch/finish?api_key={API_KEY}"),
                "trigger_url": format!("{base}/trigger?api_key={API_KEY}&site=2"),
                "strings_url": format!("{base}/strings?api_key={API_KEY}"),
                "strings_conf_url": format!("{base}/strings/confirm?api_key={API_KEY}"),
                "poll_interval_s": 0.5, "timeout_s": 1},
            "status": {"listen": format!("127.0.0.1:{status_port}")}
        }),
    );
    let mut c = hmi(peer.port);
    set(&mut c, PROCESS, &[101]);
    let mut gw = Proc::spawn(
        "gateway",
        Command::new(bin())
            .args(["--config", &cfg, "run"])
            .env("RUST_LOG", "trace"),
        dir.path(),
    );
    std::thread::sleep(Duration::from_secs(2));
    set(&mut c, PROCESS, &[305]);
    let reported = wait_until(Duration::from_secs(30), || {
        let log = gw.output();
        log.contains("delivered to") && log.contains("refused it")
    });
    let status = ureq::get(&format!("http://127.0.0.1:{status_port}/status.json"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    gw.terminate(Duration::from_secs(10));
    let check = gateway(&["--config", &cfg, "check"], &[]);
    let shown = format!(
        "{}\n--- status.json ---\n{status}\n--- check ---\n{}{}",
        gw.output(),
        text(&check.stdout),
        text(&check.stderr)
    );
    assert!(reported, "the finish was not reported\n{shown}");
    assert!(status.contains("uploader"), "no status page\n{shown}");
    for secret in [API_PASS, API_KEY, INFLUX_PASS] {
        assert!(!shown.contains(secret), "{secret} is shown:\n{shown}");
    }
    // The URLs are still shown, redacted.
    assert!(shown.contains("http://***@127.0.0.1"), "{shown}");
    assert!(shown.contains("api_key=***"), "{shown}");
    // The API did receive the key: it goes on the wire, only there.
    assert!(api.requests().iter().any(|r| r.path.contains(API_KEY)));
}
