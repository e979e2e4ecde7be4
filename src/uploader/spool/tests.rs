//! The spool: nothing on disk while deliveries keep up; spilled and synced once points are a
//! window old; order kept across disk and memory; survives reopening; a state directory that
//! cannot be written is not fatal.

use super::*;

fn tmp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dg-spool-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

fn spool(dir: &std::path::Path, window_ms: u64) -> Spool {
    Spool::open(SpoolOptions {
        dir: dir.to_path_buf(),
        window: Duration::from_millis(window_ms),
        max_bytes: 1 << 20,
        max_memory: 1000,
        max_memory_bytes: 64 << 20,
    })
}

fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("m v={i}i {i}")).collect()
}

#[test]
fn delivered_within_the_window_means_nothing_written() {
    let dir = tmp("quiet");
    let mut s = spool(&dir, 1000);
    for round in 0..10 {
        s.push(lines(round * 5, 5));
        s.maintain();
        let n = s.peek(100).len();
        s.ack(n);
    }
    assert_eq!(s.bytes_written(), 0);
    assert!(s.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn points_older_than_the_window_go_to_disk_in_order_and_survive_a_restart() {
    let dir = tmp("spill");
    let mut s = spool(&dir, 50);
    s.push(lines(0, 10));
    std::thread::sleep(Duration::from_millis(60));
    s.maintain();
    assert_eq!(s.on_disk(), 10);
    s.push(lines(10, 5));
    // Disk first, then memory: the global order is kept.
    assert_eq!(s.peek(100), lines(0, 15).as_slice());
    s.ack(3);
    assert_eq!(s.peek(2), lines(3, 2).as_slice());
    s.close();
    drop(s);
    let mut s = spool(&dir, 50);
    assert_eq!(
        s.len(),
        12,
        "memory was spilled on close; 3 were acknowledged"
    );
    assert_eq!(s.peek(100), lines(3, 12).as_slice());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lines_spilled_while_in_flight_are_acknowledged_correctly() {
    let dir = tmp("inflight");
    let mut s = spool(&dir, 20);
    s.push(lines(0, 4));
    std::thread::sleep(Duration::from_millis(30));
    s.maintain();
    s.push(lines(4, 4));
    let inflight = s.peek(6).to_vec();
    assert_eq!(inflight, lines(0, 6));
    // While the request is out, the memory part ages and is spilled.
    std::thread::sleep(Duration::from_millis(30));
    s.maintain();
    assert_eq!(s.on_disk(), 8);
    s.ack(6);
    assert_eq!(s.peek(100), lines(6, 2).as_slice());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unusable_state_directory_keeps_points_in_memory() {
    // A regular file where the directory should be: the log cannot be created.
    let base = tmp("ro");
    std::fs::create_dir_all(&base).expect("mkdir");
    let blocker = base.join("spool");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let mut s = Spool::open(SpoolOptions {
        dir: blocker.clone(),
        window: Duration::from_millis(10),
        max_bytes: 1 << 20,
        max_memory: 8,
        max_memory_bytes: 64 << 20,
    });
    assert!(s.problem().is_some_and(|p| p.contains("unusable")));
    s.push(lines(0, 5));
    std::thread::sleep(Duration::from_millis(20));
    s.maintain();
    assert_eq!(s.len(), 5, "kept in memory");
    s.push(lines(5, 5));
    assert_eq!(s.len(), 8, "bounded");
    assert_eq!(s.dropped(), 2);
    assert_eq!(s.peek(1), lines(2, 1).as_slice(), "the oldest went");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_damaged_record_is_skipped_counted_once_and_the_rest_delivered_in_order() {
    let dir = tmp("damaged");
    let mut s = spool(&dir, 0);
    for poll in 0..10 {
        s.push(lines(poll * 10, 10));
        s.maintain();
    }
    assert_eq!(s.on_disk(), 100);
    // Damage the checksum of record 42 while the spool is open.
    let seg = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let mut at = 0;
    for _ in 0..42 {
        at += 8 + u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            as usize;
    }
    bytes[at + 9] ^= 0x55;
    std::fs::write(&seg, &bytes).expect("write");
    s.push(lines(100, 5));
    let mut got = Vec::new();
    for _ in 0..50 {
        let batch = s.peek(15).to_vec();
        if batch.is_empty() {
            break;
        }
        got.extend(batch.iter().cloned());
        s.ack(batch.len());
    }
    let want: Vec<String> = lines(0, 105)
        .into_iter()
        .filter(|l| !l.starts_with("m v=42i"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(s.dropped(), 1);
    assert!(s.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partial_acknowledgement_never_acknowledges_more_than_was_handed_out() {
    let dir = tmp("partial");
    let mut s = spool(&dir, 0);
    s.push(lines(0, 10));
    s.maintain();
    s.push(lines(10, 10));
    assert_eq!(s.peek(15), lines(0, 15).as_slice());
    // Everything left in memory is spilled while the request is out.
    s.maintain();
    s.ack(12);
    assert_eq!(s.peek(100), lines(12, 8).as_slice());
    assert_eq!(s.len(), 8);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn memory_is_bounded_in_bytes_with_defaults_that_fit_the_unit() {
    // The disk cannot be used: everything stays in memory, as in the worst case.
    let base = tmp("rss");
    std::fs::create_dir_all(&base).expect("mkdir");
    let blocker = base.join("spool");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let mut s = Spool::open(SpoolOptions {
        dir: blocker.clone(),
        window: Duration::from_secs(1),
        max_bytes: 1 << 30,
        ..SpoolOptions::defaults_for_test()
    });
    let before = rss_kib();
    let n = 600_000;
    let mut pushed = 0;
    while pushed < n {
        let poll: Vec<String> = (pushed..pushed + 150)
            .map(|i| {
                format!(
                    "high_frequency_data,machine=JET-{:02},site=mill-1 temperature={}.5,seam={}i {}",
                    i % 50,
                    60 + i % 40,
                    i % 7,
                    1_800_000_000_000u64 + i as u64
                )
            })
            .collect();
        s.push(poll);
        pushed += 150;
    }
    let grew = rss_kib().saturating_sub(before);
    println!(
        "memory bound: {n} points pushed, {} kept, {} dropped, RSS grew {} KiB ({} bytes per pushed point)",
        s.len(),
        s.dropped(),
        grew,
        grew * 1024 / n as u64
    );
    assert_eq!(
        s.len() as u64 + s.dropped(),
        n as u64,
        "every point kept or counted"
    );
    assert!(s.dropped() > 0, "the oldest were dropped");
    assert!(grew < 40 << 10, "RSS grew {grew} KiB");
    let _ = std::fs::remove_dir_all(&base);
}
