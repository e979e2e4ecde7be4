//! The InfluxDB 2 write API against a fake that answers as InfluxDB 2 documents
//! (`POST /api/v2/write?org=&bucket=&precision=`, `Authorization: Token`, 204 on success,
//! `{"code","message"}` JSON on errors). No InfluxDB 2 server is available here, so only the
//! answers are faked; the uploader and its HTTP client are the real ones.

use crate::util::*;
use dyeing_gateway::config;
use dyeing_gateway::status::{Liveness, UploaderStatus};
use dyeing_gateway::uploader::buffer::MemoryBuffer;
use dyeing_gateway::uploader::sink::InfluxSink;
use dyeing_gateway::uploader::{PollLines, Uploader, UploaderSettings};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cr3t-t0ken==";

/// Run an uploader against `fake` with `lines`, until it has delivered or `give_up` passes.
fn upload(fake: &FakeInflux2, lines: Vec<String>, batch: usize, dir: &TempDir) -> UploaderStatus {
    upload_with_timeout(fake, lines, batch, dir, 10.0)
}

fn upload_with_timeout(
    fake: &FakeInflux2,
    lines: Vec<String>,
    batch: usize,
    dir: &TempDir,
    timeout_s: f64,
) -> UploaderStatus {
    let cfg = config::validate_raw(
        config::parse(
            &json!({"influxdb": {"url": fake.url(), "org": "tti mill", "bucket": "dyeing", "token": TOKEN, "timeout_s": timeout_s},
                "machines": [{"name": "m", "ip_address": "127.0.0.1",
                  "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]})
            .to_string(),
        )
        .expect("parse"),
    )
    .expect("valid");
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let (up, http_worker) = Uploader::new(
        UploaderSettings {
            max_points_per_write: batch,
            flush_interval: Duration::from_millis(50),
            rejected_file: Some(dir.path().join("rejected.lp")),
            shutdown_grace: Duration::from_secs(20),
            hold_max_points: 1000,
            hold_max_bytes: 1 << 20,
            journal: None,
        },
        Box::new(InfluxSink::new(
            cfg.influx.configured().expect("influx"),
            None,
        )),
        Box::new(MemoryBuffer::new(100_000)),
        status.clone(),
        std::sync::Arc::new(dyeing_gateway::clock::Clock::new(
            dyeing_gateway::clock::SyncCheck::Off,
        )),
    );
    std::thread::spawn(move || http_worker.run());
    let (tx, rx) = dyeing_gateway::uploader::points_channel(4);
    let live = Liveness::default();
    let beat = live.register("uploader");
    let h = std::thread::spawn(move || up.run(rx, beat));
    tx.send(PollLines::stamped(lines)).expect("send");
    // Keep the channel open until everything is delivered, so retries run in the loop.
    let total = status.clone();
    wait_until(Duration::from_secs(40), || {
        let s = total.lock().map(|s| s.clone()).unwrap_or_default();
        s.points_written > 0 && s.buffered == 0
    });
    drop(tx);
    h.join().expect("join");
    let s = status.lock().map(|s| s.clone()).unwrap_or_default();
    s
}

fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("m,machine=x v={i}i {}", 1_700_000_000_000u64 + i as u64))
        .collect()
}

fn stored(fake: &FakeInflux2) -> Vec<String> {
    // Lines the fake accepted: bodies of 204 answers, plus the good lines of partial writes.
    let mut out = Vec::new();
    for r in fake.requests() {
        for l in r.body.lines() {
            if !l.contains("BAD") && !out.contains(&l.to_string()) {
                out.push(l.to_string());
            }
        }
    }
    out
}

#[test]
fn writes_use_the_v2_path_query_and_token() {
    let dir = TempDir::new("v2ok");
    let fake = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let st = upload(&fake, lines(10), 1000, &dir);
    assert_eq!(st.points_written, 10);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "ten points go in one write request");
    let r = &reqs[0];
    assert_eq!(
        r.path,
        "/api/v2/write?org=tti%20mill&bucket=dyeing&precision=ms"
    );
    assert!(
        r.headers
            .contains(&("authorization".into(), format!("Token {TOKEN}"))),
        "{:?}",
        r.headers
    );
    assert_eq!(r.body.lines().count(), 10);
}

#[test]
fn a_400_naming_a_bad_line_is_isolated_by_splitting() {
    let dir = TempDir::new("v2bad");
    // InfluxDB 2 answers 400 for a request containing an unparsable line.
    let fake = FakeInflux2::start(|r, _| match r.body.lines().find(|l| l.contains("BAD")) {
        Some(l) => (
            400,
            vec![],
            json!({"code": "invalid", "message": format!("unable to parse '{l}': missing fields")})
                .to_string(),
        ),
        None => (204, vec![], String::new()),
    });
    let mut ls = lines(20);
    ls.insert(7, "BAD line".into());
    let st = upload(&fake, ls, 1000, &dir);
    assert_eq!(st.rejected, 1);
    assert_eq!(stored(&fake).len(), 20, "every good line is stored");
    let aside = std::fs::read_to_string(dir.path().join("rejected.lp")).unwrap_or_default();
    assert!(
        aside.contains("BAD line") && aside.contains("unable to parse"),
        "{aside}"
    );
}

#[test]
fn a_422_partial_write_is_not_resent() {
    // InfluxDB 2 stores the points it can and answers 422 for a field type conflict, naming
    // the field and counting the points it dropped.
    let dir = TempDir::new("v2partial");
    let fake = FakeInflux2::start(|r, _| {
        let dropped = r.body.lines().filter(|l| l.contains("BAD")).count();
        if dropped == 0 {
            return (204, vec![], String::new());
        }
        let message = format!(
            "failure writing points to database: partial write: field type conflict: input field \"v\" on measurement \"m\" is type string, already exists as type integer dropped={dropped}"
        );
        (
            422,
            vec![],
            json!({"code": "unprocessable entity", "message": message}).to_string(),
        )
    });
    let mut ls = lines(20);
    ls.insert(4, "m,machine=x v=\"BAD\" 1700000000004".into());
    ls.insert(15, "m,machine=x v=\"BAD too\" 1700000000015".into());
    let st = upload(&fake, ls, 1000, &dir);
    assert_eq!(fake.requests().len(), 1, "a partial write is not resent");
    assert_eq!(st.rejected, 2);
    assert_eq!(st.points_written, 20);
    let aside = std::fs::read_to_string(dir.path().join("rejected.lp")).unwrap_or_default();
    assert_eq!(
        aside.lines().filter(|l| l.contains("BAD")).count(),
        2,
        "{aside}"
    );
}

#[test]
fn a_413_makes_write_requests_smaller() {
    let dir = TempDir::new("v2big");
    let fake = FakeInflux2::start(|r, _| {
        if r.body.lines().count() > 8 {
            (
                413,
                vec![],
                json!({"code": "request too large", "message": "too large"}).to_string(),
            )
        } else {
            (204, vec![], String::new())
        }
    });
    let st = upload(&fake, lines(30), 32, &dir);
    assert_eq!(st.points_written, 30);
    assert_eq!(st.rejected, 0);
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.body.lines().count() <= 8)
            .count()
            >= 4
    );
}

#[test]
fn a_429_with_retry_after_is_honoured_and_nothing_is_lost() {
    let dir = TempDir::new("v2429");
    let fake = FakeInflux2::start(|_, n| {
        if n == 1 {
            (
                429,
                vec![("Retry-After".into(), "2".into())],
                json!({"code": "too many requests", "message": "slow down"}).to_string(),
            )
        } else {
            (204, vec![], String::new())
        }
    });
    let st = upload(&fake, lines(5), 1000, &dir);
    assert_eq!(st.points_written, 5);
    let reqs = fake.requests();
    assert!(reqs.len() >= 2);
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, Retry-After said 2 s"
    );
}

#[test]
fn a_503_and_401_keep_the_points_until_the_server_accepts() {
    let dir = TempDir::new("v2down");
    let started = Instant::now();
    let fake = FakeInflux2::start(|_, n| match n {
        1 => (
            503,
            vec![],
            json!({"code": "unavailable", "message": "service unavailable"}).to_string(),
        ),
        2 => (
            401,
            vec![],
            json!({"code": "unauthorized", "message": "unauthorized access"}).to_string(),
        ),
        3 => (
            404,
            vec![],
            json!({"code": "not found", "message": "bucket \"dyeing\" not found"}).to_string(),
        ),
        _ => (204, vec![], String::new()),
    });
    let st = upload(&fake, lines(12), 1000, &dir);
    assert_eq!(st.points_written, 12, "after {:?}", started.elapsed());
    assert_eq!(st.rejected, 0);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter().all(|r| r.body.lines().count() == 12),
        "the same points are resent whole"
    );
}

#[test]
fn a_500_and_a_hanging_server_are_retried_and_nothing_is_lost() {
    let dir = TempDir::new("v2hang");
    // First a 500, then a request that hangs far beyond the client timeout, then success.
    let fake = FakeInflux2::start(|_, n| match n {
        1 => (
            500,
            vec![],
            json!({"code": "internal error", "message": "engine: cache full"}).to_string(),
        ),
        2 => {
            std::thread::sleep(Duration::from_secs(15));
            (204, vec![], String::new())
        }
        _ => (204, vec![], String::new()),
    });
    let started = Instant::now();
    let st = upload_with_timeout(&fake, lines(9), 1000, &dir, 2.0);
    assert_eq!(st.points_written, 9, "after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "the hang was cut by the timeout"
    );
    assert!(fake.requests().len() >= 3);
}
