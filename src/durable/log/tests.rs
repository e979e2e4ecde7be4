//! The durable log: order, acknowledgement, recovery from torn tails, the size bound.

use super::*;

fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "dg-log-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = fs::remove_dir_all(&p);
    p
}

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 256,
        max_bytes: 1 << 20,
    }
}

fn read_all(log: &mut Log) -> Vec<String> {
    let mut out = Vec::new();
    log.read(log.acked(), usize::MAX, &mut out).expect("read");
    out.into_iter()
        .map(|b| String::from_utf8(b).expect("utf8"))
        .collect()
}

#[test]
fn records_come_back_in_order_across_segments_and_reopen() {
    let dir = tmp("order");
    let (mut log, rec) = Log::open(&dir, small()).expect("open");
    assert_eq!(rec, Recovery::default());
    for i in 0..100 {
        log.append(format!("record {i}").as_bytes())
            .expect("append");
    }
    log.sync().expect("sync");
    assert!(log.segments.len() > 3, "small segments rotate");
    let all = read_all(&mut log);
    assert_eq!(all.len(), 100);
    assert_eq!(all[0], "record 0");
    assert_eq!(all[99], "record 99");
    drop(log);
    let (mut log, rec) = Log::open(&dir, small()).expect("reopen");
    assert_eq!(rec.pending, 100);
    assert_eq!(read_all(&mut log)[57], "record 57");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn acknowledged_records_are_not_replayed_once_the_ack_is_persisted() {
    let dir = tmp("ack");
    let (mut log, _) = Log::open(&dir, small()).expect("open");
    for i in 0..50 {
        log.append(format!("r{i}").as_bytes()).expect("append");
    }
    log.sync().expect("sync");
    log.ack(30).expect("ack");
    assert_eq!(log.pending(), 20);
    // Not persisted yet: a crash now replays from the last persisted position (0).
    drop(log);
    let (mut log, rec) = Log::open(&dir, small()).expect("reopen");
    // Segments wholly below the ack are gone, but the rest of the unpersisted ack is replayed:
    // duplicates, never losses.
    assert!(rec.pending > 20 && rec.pending < 50, "{rec:?}");
    let first = read_all(&mut log)[0].clone();
    assert!(
        first
            .trim_start_matches('r')
            .parse::<u32>()
            .is_ok_and(|n| n <= 30),
        "{first}"
    );
    log.ack(30).expect("ack");
    log.persist_ack().expect("persist");
    drop(log);
    let (mut log, rec) = Log::open(&dir, small()).expect("reopen");
    assert_eq!(rec.pending, 20);
    assert_eq!(read_all(&mut log)[0], "r30");
    // Fully acknowledged segments are deleted.
    let segs = fs::read_dir(&dir)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
        })
        .count();
    assert!(segs < 8, "{segs} segments left");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_truncated_and_counted_never_fatal() {
    let dir = tmp("torn");
    let (mut log, _) = Log::open(&dir, LogOptions::default()).expect("open");
    for i in 0..10 {
        log.append(format!("point {i}").as_bytes()).expect("append");
    }
    log.sync().expect("sync");
    let seg = log.segments.back().expect("segment").path.clone();
    drop(log);
    // A power cut in the middle of a record: a header promising 100 bytes, 3 present.
    let mut f = OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open seg");
    f.write_all(&100u32.to_le_bytes()).expect("w");
    f.write_all(&[1, 2, 3, 4, 5, 6, 7]).expect("w");
    drop(f);
    let (mut log, rec) = Log::open(&dir, LogOptions::default()).expect("reopen");
    assert_eq!(rec.torn_segments, 1);
    assert_eq!(rec.torn_bytes, 11);
    assert_eq!(rec.pending, 10);
    log.append(b"after the cut").expect("append");
    let all = read_all(&mut log);
    assert_eq!(all.len(), 11);
    assert_eq!(all[10], "after the cut");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_record_with_a_bad_checksum_in_the_middle_is_skipped_on_reopen_and_the_rest_kept() {
    let dir = tmp("crc");
    let (mut log, _) = Log::open(&dir, LogOptions::default()).expect("open");
    for i in 0..5 {
        log.append(format!("p{i}").as_bytes()).expect("append");
    }
    log.sync().expect("sync");
    let seg = log.segments.back().expect("segment").path.clone();
    drop(log);
    // Flip a byte in the payload of record 3 (each record is 8 + 2 bytes).
    let mut bytes = fs::read(&seg).expect("read");
    bytes[3 * 10 + 8] ^= 0xFF;
    fs::write(&seg, &bytes).expect("write");
    let (mut log, rec) = Log::open(&dir, LogOptions::default()).expect("reopen");
    assert_eq!(
        rec.pending, 5,
        "the unreadable record still takes its place"
    );
    assert_eq!(rec.torn_bytes, 0, "not a torn tail: a valid record follows");
    assert_eq!(rec.unreadable, 1);
    assert_eq!(read_all(&mut log), vec!["p0", "p1", "p2", "p4"]);
    assert_eq!(log.unreadable, 1);
    let _ = fs::remove_dir_all(&dir);
}

/// Corrupt record `index` of the only segment of `log` in place (while it is open).
fn corrupt(log: &Log, index: usize, record: usize, how: fn(&mut [u8])) {
    let seg = log.segments.back().expect("segment").path.clone();
    let mut bytes = fs::read(&seg).expect("read");
    let at = index * record;
    how(&mut bytes[at..at + record]);
    fs::write(&seg, &bytes).expect("write");
}

#[test]
fn an_unreadable_record_is_skipped_once_counted_and_nothing_after_it_lost() {
    type Damage = fn(&mut [u8]);
    let damages: [(&str, Damage); 3] = [
        ("checksum", |r| r[9] ^= 0x55),
        ("garbage length", |r| {
            r[..4].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("length too short", |r| r[0] = 1),
    ];
    for (what, how) in damages {
        let dir = tmp("midcrc");
        let (mut log, _) = Log::open(&dir, LogOptions::default()).expect("open");
        for i in 0..20 {
            log.append(format!("p{i:02}").as_bytes()).expect("append");
        }
        log.sync().expect("sync");
        // Each record is 8 + 3 bytes.
        corrupt(&log, 7, 11, how);
        let mut got = Vec::new();
        let mut next = log.acked();
        // Read in small steps, as the spool does, acknowledging what was read.
        for _ in 0..20 {
            let mut out = Vec::new();
            next = log.read_records(next, 3, &mut out).expect("read");
            got.extend(
                out.iter()
                    .map(|(_, b)| String::from_utf8_lossy(b).into_owned()),
            );
            log.ack(next).expect("ack");
        }
        let want: Vec<String> = (0..20)
            .filter(|i| *i != 7)
            .map(|i| format!("p{i:02}"))
            .collect();
        assert_eq!(got, want, "{what}");
        assert_eq!(log.unreadable, 1, "{what}");
        assert_eq!(log.pending(), 0, "{what}");
        let _ = fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_size_bound_drops_the_oldest_segments_and_counts_them() {
    let dir = tmp("bound");
    let (mut log, _) = Log::open(
        &dir,
        LogOptions {
            segment_bytes: 100,
            max_bytes: 400,
        },
    )
    .expect("open");
    for i in 0..100 {
        log.append(format!("{i:04}").as_bytes()).expect("append");
    }
    assert!(log.bytes() <= 400 + 100);
    assert!(log.dropped > 0);
    assert_eq!(log.pending() + log.dropped, 100);
    let all = read_all(&mut log);
    assert_eq!(
        all.last().map(String::as_str),
        Some("0099"),
        "the newest survive"
    );
    assert_eq!(all.len() as u64, log.pending());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn reading_continues_where_it_stopped_while_appends_go_on() {
    let dir = tmp("stream");
    let (mut log, _) = Log::open(&dir, small()).expect("open");
    let mut seen = Vec::new();
    let mut next = 0;
    for round in 0..20 {
        for i in 0..7 {
            log.append(format!("{round}-{i}").as_bytes())
                .expect("append");
        }
        let mut out = Vec::new();
        log.read(next, 5, &mut out).expect("read");
        next += out.len() as u64;
        log.ack(next).expect("ack");
        seen.extend(out.into_iter().map(|b| String::from_utf8(b).expect("utf8")));
    }
    let rest = read_all(&mut log);
    seen.extend(rest);
    let want: Vec<String> = (0..20)
        .flat_map(|r| (0..7).map(move |i| format!("{r}-{i}")))
        .collect();
    assert_eq!(seen, want);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_in_a_newer_format_is_refused_and_left_as_it_is() {
    let dir = tmp("newer");
    {
        let (mut log, _) = Log::open(&dir, small()).expect("open");
        assert_eq!(
            fs::read_to_string(dir.join("FORMAT")).ok().as_deref(),
            Some("1\n"),
            "a new log is marked"
        );
        log.append(b"one").expect("append");
        log.sync().expect("sync");
    }
    // A newer gateway's log, with bytes this one would take for a torn tail.
    fs::write(dir.join("FORMAT"), "2\n").expect("write");
    let seg = segment_path(&dir, 0);
    let mut f = OpenOptions::new().append(true).open(&seg).expect("seg");
    f.write_all(b"\x01\x02\x03").expect("tail");
    drop(f);
    let before: Vec<(String, Vec<u8>)> = {
        let mut v: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| {
                let p = e.path();
                (p.display().to_string(), fs::read(&p).unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    };
    let e = Log::open(&dir, small()).err().expect("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("format 2"), "{e}");
    let mut after: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            (p.display().to_string(), fs::read(&p).unwrap_or_default())
        })
        .collect();
    after.sort();
    assert_eq!(before, after, "nothing changed");
    let _ = fs::remove_dir_all(&dir);
}
