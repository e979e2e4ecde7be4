//! The uploader's handling of each write outcome, against a scripted sink.

use super::buffer::MemoryBuffer;
use super::rejected::RejectedFile;
use super::sink::{Outcome, Rejection, Sink};
use super::*;
use std::sync::{Arc, Mutex};

type Script = Box<dyn FnMut(&str, usize) -> Outcome + Send>;
type Shared<T> = Arc<Mutex<T>>;

/// A sink that answers from a script and records every body it was sent.
struct Scripted {
    answer: Script,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Sink for Scripted {
    fn write(&mut self, body: &str) -> Outcome {
        let n = {
            let mut b = lock(&self.bodies);
            b.push(body.to_string());
            b.len()
        };
        (self.answer)(body, n)
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn uploader(
    batch: usize,
    answer: impl FnMut(&str, usize) -> Outcome + Send + 'static,
) -> (Uploader, Shared<Vec<String>>, Shared<UploaderStatus>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let (u, http_worker) = Uploader::new(
        UploaderSettings {
            max_points_per_write: batch,
            flush_interval: Duration::from_millis(10),
            rejected_file: None,
            shutdown_grace: Duration::from_secs(1),
            hold_max_points: 1000,
            hold_max_bytes: 1 << 20,
            journal: None,
        },
        Box::new(Scripted {
            answer: Box::new(answer),
            bodies: bodies.clone(),
        }),
        Box::new(MemoryBuffer::new(1000)),
        status.clone(),
        Arc::new(crate::clock::Clock::trusted()),
    );
    std::thread::spawn(move || http_worker.run());
    (u, bodies, status)
}

fn lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m v={i}i {i}")).collect()
}

#[test]
fn write_requests_hold_at_most_the_configured_points_in_order() {
    let (mut u, bodies, st) = uploader(4, |_, _| Outcome::Accepted);
    u.push(PollLines::stamped(lines(10)));
    while !u.buffer.is_empty() {
        u.flush_once();
    }
    let b = lock(&bodies).clone();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0], "m v=0i 0\nm v=1i 1\nm v=2i 2\nm v=3i 3");
    assert_eq!(b[2], "m v=8i 8\nm v=9i 9");
    assert_eq!(lock(&st).points_written, 10);
}

#[test]
fn a_rejected_line_is_found_by_bisection_and_the_rest_delivered() {
    let delivered = Arc::new(Mutex::new(Vec::<String>::new()));
    let d = delivered.clone();
    let (mut u, bodies, st) = uploader(100, move |body, _| {
        if body.contains("v=5i") {
            // A rejection that names no line.
            Outcome::Rejected(Rejection::parse("unable to parse"))
        } else {
            lock(&d).extend(body.lines().map(String::from));
            Outcome::Accepted
        }
    });
    u.push(PollLines::stamped(lines(8)));
    u.flush_once();
    assert!(u.buffer.is_empty());
    assert_eq!(lock(&st).rejected, 1);
    let mut got = lock(&delivered).clone();
    got.sort();
    let mut want: Vec<String> = lines(8)
        .into_iter()
        .filter(|l| !l.contains("v=5i"))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // 8 -> 4+4 -> (2+2) -> (1+1): a bisection, not one request per line.
    assert!(lock(&bodies).len() <= 7, "{:?}", lock(&bodies));
}

/// Lines whose field `v` is a float.
fn floats(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m v={i}.5 {i}")).collect()
}

/// What InfluxDB 1.x answers when `v` holds floats and strings arrive: it stored the rest.
fn conflict(dropped: usize) -> Outcome {
    Outcome::Rejected(Rejection::parse(&format!(
        r#"{{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type string, already exists as type float dropped={dropped}"}}"#
    )))
}

#[test]
fn a_partial_write_is_not_resent_and_only_the_conflicting_lines_are_set_aside() {
    let dir = std::env::temp_dir().join(format!(
        "dg-up-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let (mut u, bodies, st) = uploader(100, |body, _| {
        let n = body.lines().filter(|l| l.contains("v=\"")).count();
        if n > 0 {
            conflict(n)
        } else {
            Outcome::Accepted
        }
    });
    u.rejected = Some(RejectedFile::new(dir.join("rejected.lp"), 1 << 20));
    for round in 0..5 {
        let mut ls = floats(10);
        ls[3] = format!("m v=\"text\" {round}");
        ls[7] = format!("m,t=x v=\"more\",w=1i {round}");
        u.push(PollLines::stamped(ls));
        u.flush_once();
        assert!(u.buffer.is_empty());
    }
    assert_eq!(
        lock(&bodies).len(),
        5,
        "one write request per flush, no bisection"
    );
    let s = lock(&st).clone();
    assert_eq!(s.rejected, 10);
    assert_eq!(s.points_written, 40);
    assert!(s.last_result.contains("2 rejected"), "{}", s.last_result);
    let aside = std::fs::read_to_string(dir.join("rejected.lp")).unwrap_or_default();
    let kept: Vec<&str> = aside.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(kept.len(), 10, "{aside}");
    assert!(kept.iter().all(|l| l.contains("v=\"")), "{aside}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn points_a_partial_write_drops_without_naming_are_counted() {
    // The answer names the conflict of `v` only; a `w` conflict is in its count alone.
    let (mut u, bodies, st) = uploader(100, |_, _| conflict(3));
    let mut ls = floats(6);
    ls[1] = "m v=\"a\" 1".into();
    ls[2] = "m v=true 2".into();
    ls[4] = "m w=\"b\" 4".into();
    u.push(PollLines::stamped(ls));
    u.flush_once();
    assert!(u.buffer.is_empty());
    assert_eq!(lock(&bodies).len(), 1);
    assert_eq!(lock(&st).rejected, 3);
    assert_eq!(lock(&st).points_written, 3);
}

#[test]
fn lines_named_as_unparsable_are_set_aside_and_the_rest_resent_once() {
    // InfluxDB 2 refuses the whole request when a line does not parse, naming it.
    let (mut u, bodies, st) = uploader(100, |body, _| {
        match body.lines().find(|l| l.starts_with("BAD")) {
            Some(l) => Outcome::Rejected(Rejection::parse(&format!(
                r#"{{"code":"invalid","message":"unable to parse '{l}': missing fields"}}"#
            ))),
            None => Outcome::Accepted,
        }
    });
    let mut ls = lines(8);
    ls[5] = "BAD line".into();
    u.push(PollLines::stamped(ls));
    u.flush_once();
    assert!(u.buffer.is_empty());
    let b = lock(&bodies).clone();
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[1].lines().count(), 7);
    assert_eq!(lock(&st).rejected, 1);
    assert_eq!(lock(&st).points_written, 7);
}

#[test]
fn a_413_halves_the_request_size_and_keeps_it() {
    let (mut u, bodies, _) = uploader(16, |body, _| {
        if body.lines().count() > 4 {
            Outcome::TooLarge
        } else {
            Outcome::Accepted
        }
    });
    u.push(PollLines::stamped(lines(16)));
    for _ in 0..20 {
        if u.buffer.is_empty() {
            break;
        }
        u.flush_once();
    }
    assert!(u.buffer.is_empty());
    assert_eq!(u.batch, 4);
    let sizes: Vec<usize> = lock(&bodies).iter().map(|b| b.lines().count()).collect();
    assert_eq!(sizes, vec![16, 8, 4, 4, 4, 4]);
}

#[test]
fn retryable_and_refused_answers_keep_every_point_and_back_off() {
    let (mut u, _, st) = uploader(100, |_, n| match n {
        1 => Outcome::Retry {
            after: Some(Duration::from_secs(7)),
            reason: "HTTP 429".into(),
        },
        2 => Outcome::Refused(401, "unauthorized".into()),
        _ => Outcome::Accepted,
    });
    u.push(PollLines::stamped(lines(5)));
    let before = Instant::now();
    u.flush_once();
    assert_eq!(u.buffer.len(), 5, "nothing is dropped on 429");
    let retry = u.retry_at.expect("a retry time");
    assert!(
        retry >= before + Duration::from_secs(7),
        "Retry-After is honoured"
    );
    u.flush_once();
    assert_eq!(u.buffer.len(), 5, "nothing is dropped on 401");
    assert!(lock(&st).last_result.contains("401"));
    u.flush_once();
    assert!(u.buffer.is_empty());
    assert!(u.retry_at.is_none());
}

#[test]
fn the_loop_delivers_everything_sent_before_the_channel_closes() {
    let (u, bodies, st) = uploader(3, |_, _| Outcome::Accepted);
    let (tx, rx) = super::points_channel(2);
    let live = crate::status::Liveness::default();
    let beat = live.register("uploader");
    let h = std::thread::spawn(move || u.run(rx, beat));
    for chunk in lines(7).chunks(2) {
        tx.send(PollLines::stamped(chunk.to_vec())).expect("send");
    }
    drop(tx);
    h.join().expect("join");
    assert_eq!(lock(&st).points_written, 7);
    let all: Vec<String> = lock(&bodies)
        .iter()
        .flat_map(|b| b.lines().map(String::from).collect::<Vec<_>>())
        .collect();
    assert_eq!(all, lines(7));
}

#[test]
fn points_found_in_the_buffer_at_start_are_sent_without_waiting_for_new_ones() {
    // After a restart the spool holds points from before it; fewer than a full write request,
    // and no new point arrives (the machines are down): they must still go out.
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let mut recovered = MemoryBuffer::new(1000);
    recovered.push(lines(5));
    let (u, http_worker) = Uploader::new(
        UploaderSettings {
            max_points_per_write: 100,
            flush_interval: Duration::from_millis(10),
            rejected_file: None,
            shutdown_grace: Duration::from_secs(1),
            hold_max_points: 1000,
            hold_max_bytes: 1 << 20,
            journal: None,
        },
        Box::new(Scripted {
            answer: Box::new(|_, _| Outcome::Accepted),
            bodies: bodies.clone(),
        }),
        Box::new(recovered),
        status.clone(),
        Arc::new(crate::clock::Clock::trusted()),
    );
    std::thread::spawn(move || http_worker.run());
    let (tx, rx) = super::points_channel(1);
    let live = crate::status::Liveness::default();
    let beat = live.register("uploader");
    let h = std::thread::spawn(move || u.run(rx, beat));
    // The channel stays open: the shutdown flush must not be what delivers them.
    let end = Instant::now() + Duration::from_secs(20);
    while lock(&status).points_written < 5 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = lock(&status).points_written;
    drop(tx);
    h.join().expect("join");
    assert_eq!(
        written, 5,
        "recovered points were not sent while the gateway ran"
    );
    assert_eq!(
        lock(&bodies).first().map(String::as_str),
        Some(lines(5).join("\n").as_str())
    );
}

#[test]
fn points_held_for_the_clock_are_bounded_in_bytes_and_the_oldest_dropped_counted() {
    let (mut u, _, st) = uploader(4, |_, _| Outcome::Accepted);
    u.settings.hold_max_points = usize::MAX;
    u.settings.hold_max_bytes = 10 * buffer::point_bytes("m v=0i 0");
    for _ in 0..5 {
        u.push(PollLines {
            lines: lines(4),
            taken: Instant::now(),
            stamped: false,
        });
    }
    assert_eq!(u.held_points, 8, "two whole polls fit");
    assert!(u.held_bytes <= u.settings.hold_max_bytes);
    assert_eq!(lock(&st).dropped_unstamped, 12);
}

/// Run an uploader on `journal` until `until` holds (or 20 s), then stop it cleanly.
fn run_on_journal(
    journal: &std::path::Path,
    clock: crate::clock::Clock,
    answer: impl FnMut(&str, usize) -> Outcome + Send + 'static,
    batches: Vec<PollLines>,
    until: impl Fn(&UploaderStatus) -> bool,
) -> (Vec<String>, UploaderStatus) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(UploaderStatus::default()));
    let (u, http_worker) = Uploader::new(
        UploaderSettings {
            max_points_per_write: 100,
            flush_interval: Duration::from_millis(10),
            rejected_file: None,
            shutdown_grace: Duration::from_millis(200),
            hold_max_points: 1000,
            hold_max_bytes: 1 << 20,
            journal: Some(journal::JournalOptions {
                dir: journal.to_path_buf(),
                max_bytes: 1 << 20,
            }),
        },
        Box::new(Scripted {
            answer: Box::new(answer),
            bodies: bodies.clone(),
        }),
        Box::new(MemoryBuffer::new(1000)),
        status.clone(),
        Arc::new(clock),
    );
    std::thread::spawn(move || http_worker.run());
    let (tx, rx) = super::points_channel(16);
    let live = crate::status::Liveness::default();
    let beat = live.register("uploader");
    let h = std::thread::spawn(move || u.run(rx, beat));
    for b in batches {
        tx.send(b).expect("send");
    }
    let end = Instant::now() + Duration::from_secs(20);
    while !until(&lock(&status)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(tx);
    h.join().expect("join");
    let bodies = lock(&bodies).clone();
    let st = lock(&status).clone();
    (bodies, st)
}

#[test]
fn points_only_in_memory_and_held_points_come_back_from_the_journal() {
    let dir = std::env::temp_dir().join(format!(
        "dg-uploader-journal-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    // First run: InfluxDB is down and the clock not synchronized; the buffer is memory only,
    // so what it holds at the end would be gone without the journal.
    let unsynced =
        crate::clock::Clock::new(crate::clock::SyncCheck::File(dir.join("no-such-flag")));
    let held = PollLines {
        lines: vec!["m v=7i 0".into(), "m v=8i 0".into()],
        taken: Instant::now() - Duration::from_secs(2),
        stamped: false,
    };
    let down = || Outcome::Retry {
        after: None,
        reason: "down".into(),
    };
    let (_, st) = run_on_journal(
        &dir,
        unsynced,
        move |_, _| down(),
        vec![PollLines::stamped(lines(3)), held],
        |s| s.held_unstamped == 2 && s.buffered == 3,
    );
    assert_eq!((st.held_unstamped, st.buffered), (2, 3));
    // Second run: InfluxDB is back and the clock is trusted.
    let before = crate::clock::wall_ms();
    let (bodies, st) = run_on_journal(
        &dir,
        crate::clock::Clock::trusted(),
        |_, _| Outcome::Accepted,
        vec![],
        |s| s.points_written == 5,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let sent: Vec<String> = bodies
        .iter()
        .flat_map(|b| b.lines())
        .map(String::from)
        .collect();
    assert_eq!(st.points_written, 5, "{sent:?}");
    assert_eq!(&sent[..3], lines(3).as_slice());
    // The held points are stamped with their poll time, about 2 s before the restart.
    for l in &sent[3..] {
        let ts: i64 = l
            .rsplit_once(' ')
            .and_then(|(_, t)| t.parse().ok())
            .unwrap_or(0);
        assert!(
            ts <= before - 1500 && ts >= before - 30_000,
            "{l}: {ts} vs {before}"
        );
    }
}
