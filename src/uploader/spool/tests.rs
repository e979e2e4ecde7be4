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
