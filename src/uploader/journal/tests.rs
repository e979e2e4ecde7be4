//! The crash journal on its own: append, replay, trim as points settle, torn tails, the size
//! bound, one process per directory, and held points from another boot.

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "dg-journal-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        Dir(p)
    }
    fn opts(&self, max_bytes: u64) -> JournalOptions {
        JournalOptions {
            dir: self.0.clone(),
            max_bytes,
        }
    }
    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.0)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn poll(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("m,machine=A v={i}i 17000000{i:05}"))
        .collect()
}

fn stamped_lines(rec: &Recovery) -> Vec<String> {
    rec.batches
        .iter()
        .flat_map(|b| match b {
            Replayed::Stamped(l) => l.clone(),
            Replayed::Held { .. } => Vec::new(),
        })
        .collect()
}

#[test]
fn appended_polls_are_replayed_in_order_after_a_crash() {
    let d = Dir::new("replay");
    let taken = Instant::now() - Duration::from_secs(3);
    {
        let (mut j, rec) = Journal::open(&d.opts(1 << 20)).expect("open");
        assert_eq!(rec.points, 0);
        j.append_stamped(&poll(0, 3));
        j.append_held(&["m v=1i 0".to_string()], taken);
        j.append_stamped(&poll(3, 2));
        // Dropped without settling: the process died.
    }
    let (_j, rec) = Journal::open(&d.opts(1 << 20)).expect("reopen");
    assert_eq!(rec.points, 6);
    assert_eq!(rec.torn_bytes, 0);
    assert_eq!(stamped_lines(&rec), poll(0, 5));
    let held: Vec<_> = rec
        .batches
        .iter()
        .filter_map(|b| match b {
            Replayed::Held { lines, taken } => Some((lines.clone(), taken.elapsed())),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, ["m v=1i 0"]);
    // The poll's age survives the restart (within a generous bound for a loaded machine).
    let age = held[0].1;
    assert!(
        age >= Duration::from_secs(3) && age < Duration::from_secs(30),
        "{age:?}"
    );
}

#[test]
fn polls_taken_together_are_written_together_at_the_flush() {
    let d = Dir::new("group");
    let (mut j, _) = Journal::open(&d.opts(1 << 20)).expect("open");
    j.append_stamped(&poll(0, 2));
    j.append_stamped(&poll(2, 3));
    let written = |d: &Dir| -> Vec<u8> {
        d.segments()
            .iter()
            .flat_map(|p| fs::read(p).unwrap_or_default())
            .collect()
    };
    assert!(
        written(&d).is_empty(),
        "nothing is written before the flush"
    );
    j.flush();
    let data = written(&d);
    let (records, valid) = parse(&data);
    assert_eq!(records.len(), 2, "one record per poll");
    assert_eq!(valid, data.len());
    assert_eq!(j.bytes(), data.len() as u64);
    // Settling flushes first: a poll appended since is written, then settled with the rest
    // (were it written after the trim, a settled poll would stay in the journal).
    j.append_stamped(&poll(5, 1));
    j.settle(6, 0);
    assert!(written(&d).is_empty(), "everything settled: nothing kept");
    assert_eq!(j.bytes(), 0);
}

#[test]
fn settled_points_are_trimmed_and_not_replayed() {
    let d = Dir::new("trim");
    {
        let (mut j, _) = Journal::open(&d.opts(1 << 20)).expect("open");
        j.append_stamped(&poll(0, 2));
        j.append_stamped(&poll(2, 2));
        j.settle(2, 0);
        // The newest segment still holds an unsettled poll.
        assert!(j.bytes() > 0);
        j.settle(4, 0);
        assert_eq!(j.bytes(), 0, "everything settled: the segment is truncated");
        j.append_stamped(&poll(4, 1));
    }
    let (_j, rec) = Journal::open(&d.opts(1 << 20)).expect("reopen");
    assert_eq!(stamped_lines(&rec), poll(4, 1));
}

#[test]
fn whole_segments_go_once_settled_and_replayed_segments_are_kept_until_then() {
    let d = Dir::new("segments");
    // 64 KiB bound: 16 KiB segments; each poll is about 500 bytes.
    let per = 16;
    {
        let (mut j, _) = Journal::open(&d.opts(64 << 10)).expect("open");
        for k in 0..100 {
            j.append_stamped(&poll(k * per, per));
            j.flush();
        }
        assert!(d.segments().len() >= 3, "{:?}", d.segments());
        j.settle((60 * per) as u64, 0);
    }
    let (mut j, rec) = Journal::open(&d.opts(64 << 10)).expect("reopen");
    let got = stamped_lines(&rec);
    // Every unsettled point is there; settled ones only from a partly settled segment.
    assert!(got.ends_with(&poll(60 * per, 40 * per)), "{}", got.len());
    // A segment holds about 32 polls: at most one partly settled segment comes back.
    assert!(got.len() <= (40 + 34) * per, "{}", got.len());
    // A second crash before the replayed points settle loses nothing either.
    let replayed = got.len() as u64;
    j.append_stamped(&poll(100 * per, 1));
    j.settle(replayed - 1, 0);
    drop(j);
    let (mut j, rec) = Journal::open(&d.opts(64 << 10)).expect("third open");
    let got = stamped_lines(&rec);
    assert!(got.ends_with(&poll(100 * per - 1, 2)), "{}", got.len());
    j.settle(got.len() as u64, 0);
    drop(j);
    let (_j, rec) = Journal::open(&d.opts(64 << 10)).expect("fourth open");
    assert_eq!(rec.points, 0);
    assert!(d.segments().len() <= 1);
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_rest_replayed() {
    let d = Dir::new("torn");
    {
        let (mut j, _) = Journal::open(&d.opts(1 << 20)).expect("open");
        j.append_stamped(&poll(0, 2));
        j.append_stamped(&poll(2, 2));
    }
    let seg = d.segments().pop().expect("a segment");
    let len = fs::metadata(&seg).expect("meta").len();
    // Killed in the middle of the second write.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(len - 5))
        .expect("tear");
    {
        let (mut j, rec) = Journal::open(&d.opts(1 << 20)).expect("reopen");
        assert_eq!(stamped_lines(&rec), poll(0, 2));
        assert!(rec.torn_bytes > 0);
        j.append_stamped(&poll(4, 1));
    }
    // Garbage at the end of a segment (a corrupt header) is tolerated the same way.
    let seg = d.segments().pop().expect("a segment");
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .and_then(|mut f| f.write_all(&[0xff; 11]))
        .expect("garbage");
    let (_j, rec) = Journal::open(&d.opts(1 << 20)).expect("third open");
    let mut want = poll(0, 2);
    want.extend(poll(4, 1));
    assert_eq!(stamped_lines(&rec), want);
    assert_eq!(rec.torn_bytes, 11);
}

#[test]
fn the_size_is_bounded() {
    let d = Dir::new("bound");
    let (mut j, _) = Journal::open(&d.opts(64 << 10)).expect("open");
    for k in 0..1000 {
        j.append_stamped(&poll(k * 10, 10));
        j.flush();
    }
    let on_disk: u64 = d
        .segments()
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    assert_eq!(on_disk, j.bytes());
    assert!(j.bytes() <= 64 << 10, "{}", j.bytes());
    assert!(j.bytes() >= 32 << 10, "{}", j.bytes());
}

#[test]
fn a_second_process_cannot_share_the_directory() {
    let d = Dir::new("lock");
    let (_j, _) = Journal::open(&d.opts(1 << 20)).expect("open");
    // flock is per open file description: a second open in this process conflicts too.
    assert!(matches!(
        Journal::open(&d.opts(1 << 20)),
        Err(JournalError::Locked(_))
    ));
}

#[test]
fn held_points_from_another_boot_are_not_replayed() {
    let d = Dir::new("boot");
    {
        let (mut j, _) = Journal::open(&d.opts(1 << 20)).expect("open");
        if j.boot_id.is_empty() {
            // No boot id to compare (a sandbox hiding /proc/sys): nothing to test here.
            return;
        }
        j.boot_id = "00000000-0000-0000-0000-000000000000".into();
        j.append_held(&["m v=1i 0".to_string()], Instant::now());
        j.append_stamped(&poll(0, 1));
    }
    let (_j, rec) = Journal::open(&d.opts(1 << 20)).expect("reopen");
    assert_eq!(rec.stale_held, 1);
    assert_eq!(rec.points, 1);
    assert_eq!(stamped_lines(&rec), poll(0, 1));
}
