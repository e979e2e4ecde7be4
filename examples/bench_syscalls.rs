//! Benchmark: what one poll costs the kernel. The release gateway (`run`, a separate process)
//! polls N simulated Modbus TCP machines x R registers every second (the simulator runs in this
//! process, so it is not counted) and writes to a real influxd. After a warm-up it measures, in
//! two windows of `--duration` seconds each: first CPU time (utime + stime from /proc, no
//! tracer attached; per thread, CPU time and times scheduled in from `schedstat`) and peak
//! RSS; then syscalls by kind and by thread, and threads created (`clone`/`clone3`), with
//! `strace -f` attached by pid, so start-up is not counted. Then the Python baseline
//! (tests/peers/block_poller.py: the original's thread per machine, one pymodbus
//! read_holding_registers per planned block) polls the same simulator for the same time, and
//! its CPU is measured the same way; then once more reading each register on its own, as the
//! original does. Then a floor: a loop that only sends each request and takes its reply
//! (`floor_loop`), what any poller pays here. Prints the figures, the ratios and the goals of
//! issue 14.
//! Figures, not assertions: `scripts/bench-syscalls [--duration 60]`.

#[path = "../tests/util.rs"]
mod util;

use dyeing_gateway::config;
use dyeing_gateway::registers::plan;
use dyeing_gateway::simulate;
use dyeing_gateway::status::lock;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

const WARM_UP: Duration = Duration::from_secs(5);

fn served(sim: &simulate::Simulator) -> u64 {
    sim.buses
        .iter()
        .map(|b| lock(b).values().map(|m| m.requests).sum::<u64>())
        .sum()
}

/// A thread's role from its name in `task_dir/comm`, numbers dropped ("poll M07" and
/// "status-worker-1" count as "poll" and "status-worker").
fn thread_role(task_dir: &std::path::Path) -> String {
    let comm = std::fs::read_to_string(task_dir.join("comm")).unwrap_or_else(|_| "(gone)".into());
    comm.trim()
        .split(' ')
        .next()
        .unwrap_or_default()
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_string()
}

/// Calls per syscall kind, and per thread (by its name, numbers dropped: "poll M07" counts
/// as "poll"), from `strace -f -o` output ("TID name(args) = ret" lines; a call interrupted
/// and resumed counts once, at its start).
/// Modbus TCP read requests in an `strace` trace: the 12-byte sends (MBAP header and a
/// read PDU), whether the call was traced whole or `<unfinished ...>`.
fn modbus_requests(trace: &str) -> u64 {
    trace
        .lines()
        .filter(|l| l.contains(" sendto(") && l.contains(", 12, MSG_NOSIGNAL"))
        .count() as u64
}

fn strace_counts(
    text: &str,
    pid: u32,
) -> (
    BTreeMap<String, u64>,
    BTreeMap<String, BTreeMap<String, u64>>,
) {
    let mut kinds = BTreeMap::new();
    let mut threads: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.splitn(2, char::is_whitespace);
        let (Some(tid), Some(rest)) = (f.next(), f.next()) else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<...") || rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let Some(name) = rest
            .split('(')
            .next()
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            continue;
        };
        // futex by operation: a wait (a sleep) and a wake (waking another thread) differ.
        let name = match name {
            "futex" => match rest.split(", ").nth(1) {
                Some(op) if op.contains("WAKE") => "futex wake",
                Some(op) if op.contains("WAIT") => "futex wait",
                _ => name,
            },
            _ => name,
        };
        *kinds.entry(name.to_string()).or_insert(0) += 1;
        let thread = names.entry(tid.to_string()).or_insert_with(|| {
            thread_role(std::path::Path::new(&format!("/proc/{pid}/task/{tid}")))
        });
        *threads
            .entry(thread.clone())
            .or_default()
            .entry(name.to_string())
            .or_insert(0) += 1;
    }
    (kinds, threads)
}

/// CPU time (ns) and times scheduled in, by thread name (numbers dropped, as in
/// `strace_counts`), from `/proc/PID/task/*/schedstat` (exact, unlike the 10 ms ticks of
/// `stat`).
fn schedstats(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let path = t.path();
        let name = thread_role(&path);
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let f: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if let (Some(ns), Some(slices)) = (f.first(), f.get(2)) {
            let e = out.entry(name).or_default();
            e.0 += ns;
            e.1 += slices;
        }
    }
    out
}

/// Share of one core (CPU seconds per second) and peak RSS (KiB) of `pid` over `window`.
fn cpu_over(pid: u32, window: Duration) -> (f64, u64) {
    let (cpu0, _, _) = proc_stats(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (cpu1, _, hwm) = proc_stats(pid);
    ((cpu1 - cpu0) / t0.elapsed().as_secs_f64(), hwm)
}

fn goal(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

/// The floor (`--floor-loop ADDRESS QUANTITY PORT...`, run as a child of this benchmark): a
/// poller that does nothing but the I/O each poll must do, on one thread: every second one
/// read request per machine, then `ppoll` and a receive until every reply is whole. Its CPU
/// is what the kernel's TCP path costs here for one send and one receive per poll; no
/// poller can cost less, so it bounds the ratio to the Python baseline.
fn floor_loop(args: &[String]) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let num = |i: usize| args.get(i).and_then(|v| v.parse::<u16>().ok()).unwrap_or(0);
    let (address, quantity) = (num(0), num(1));
    let mut socks: Vec<std::net::TcpStream> = args[2.min(args.len())..]
        .iter()
        .filter_map(|p| std::net::TcpStream::connect(("127.0.0.1", p.parse::<u16>().ok()?)).ok())
        .collect();
    for s in &socks {
        let _ = s.set_nodelay(true);
        let _ = s.set_nonblocking(true);
    }
    let want = 9 + 2 * usize::from(quantity);
    let [ah, al] = address.to_be_bytes();
    let [qh, ql] = quantity.to_be_bytes();
    println!("ready");
    let mut next = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut t: u16 = 0;
    loop {
        t = t.wrapping_add(1);
        let [th, tl] = t.to_be_bytes();
        let req = [th, tl, 0, 0, 0, 6, 1, 3, ah, al, qh, ql];
        for s in &mut socks {
            let _ = s.write_all(&req);
        }
        let mut got = vec![0usize; socks.len()];
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.iter().any(|&g| g < want) && Instant::now() < deadline {
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .zip(&got)
                .filter(|(_, &g)| g < want)
                .map(|(s, _)| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let ts = libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            // SAFETY: `fds` is a valid slice of pollfd of the length given; `ts` outlives the call.
            unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    &ts,
                    std::ptr::null(),
                )
            };
            for (s, g) in socks.iter_mut().zip(got.iter_mut()) {
                if *g < want {
                    if let Ok(n) = s.read(&mut buf) {
                        *g += n;
                    }
                }
            }
        }
        next += Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--floor-loop") {
        return floor_loop(&argv[i + 1..]);
    }
    let machines = arg("--machines", 50.0) as usize;
    let nregs = arg("--registers", 40.0) as usize;
    let duration = Duration::from_secs_f64(arg("--duration", 60.0));
    let interval = 1.0;
    // DG_BENCH_GATEWAY: another build to measure (an older release, for before/after figures).
    let gw_bin = std::env::var_os("DG_BENCH_GATEWAY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(bin);
    assert!(
        gw_bin.exists(),
        "build the gateway first: cargo build --release ({})",
        gw_bin.display()
    );
    let influx = Influxd::start();
    let dir = TempDir::new("bench-syscalls");
    let ports = free_ports(machines);
    let cfg_json = bench_config(dir.path(), &influx, &ports, nregs, interval);
    let cfg_path = dir.write("machines.json", &cfg_json.to_string());
    let cfg =
        config::validate_raw(config::parse(&cfg_json.to_string()).expect("parse")).expect("valid");
    let m0 = &cfg.machines[0];
    let all: Vec<usize> = (0..m0.registers.len()).collect();
    let blocks = plan::plan(&m0.registers, &all, &m0.limits);
    let sim = simulate::start(&cfg, None, 60.0).expect("simulator");

    let shm = std::path::Path::new("/dev/shm");
    let runtime = if shm.is_dir() { shm } else { dir.path() }
        .join(format!("bench-syscalls-run-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&runtime);
    // The gateway: warm-up, a CPU window without a tracer, then a window under strace.
    let mut gw = Proc::spawn(
        "gateway",
        Command::new(&gw_bin)
            .args(["--config", cfg_path.to_str().unwrap_or_default(), "run"])
            .env("RUST_LOG", "warn")
            // With its crash journal, as under systemd (RuntimeDirectory=, a tmpfs).
            .env("RUNTIME_DIRECTORY", &runtime),
        dir.path(),
    );
    let pid = gw.child.id();
    std::thread::sleep(WARM_UP);
    let req0 = served(&sim);
    let sched0 = schedstats(pid);
    let (gw_cpu, gw_hwm) = cpu_over(pid, duration);
    let sched1 = schedstats(pid);
    let (anon, file) = (proc_status(pid, "RssAnon:"), proc_status(pid, "RssFile:"));
    let polls_cpu = served(&sim) - req0;
    let summary = dir.path().join("strace.txt");
    let mut strace = Proc::spawn(
        "strace",
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&summary)
            .args(["-p", &pid.to_string()]),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(500)); // attached to every thread
    let req1 = served(&sim);
    let t1 = Instant::now();
    std::thread::sleep(duration);
    strace.signal("INT");
    let served_traced = served(&sim) - req1;
    let traced = t1.elapsed().as_secs_f64();
    let _ = strace.child.wait();
    // DG_BENCH_STRACE: keep the raw trace there (every call, by thread id) to look into.
    if let Some(keep) = std::env::var_os("DG_BENCH_STRACE") {
        if let Err(e) = std::fs::copy(&summary, &keep) {
            eprintln!("cannot keep the trace: {e}");
        }
    }
    let trace = std::fs::read_to_string(&summary).unwrap_or_default();
    let (counts, by_thread) = strace_counts(&trace, pid);
    // Syscalls per poll are counted over the trace, so the polls are too: the Modbus read
    // requests the trace shows sent (the simulator's count covers a slightly shorter window,
    // from after strace attached; dividing by it overstated every figure by up to 5 %).
    let polls = match modbus_requests(&trace) {
        0 => served_traced.max(1),
        n => n,
    };
    let threads_now = proc_status(pid, "Threads:");
    let code = gw.terminate(Duration::from_secs(10));

    // The Python baselines on the same simulator: one read per planned block, then (the
    // original's way) one read per register.
    let per_block: Vec<[u16; 2]> = blocks.iter().map(|b| [b.address, b.quantity]).collect();
    let per_field: Vec<[u16; 2]> = m0
        .registers
        .iter()
        .map(|r| [r.address, r.quantity()])
        .collect();
    let baseline = |tag: &str, reads: &[[u16; 2]]| {
        let spec = serde_json::json!({
            "influx": influx.url(), "db": influx.db, "interval_s": interval, "blocks": reads,
            "registers": cfg_json["profiles"]["jet"]["registers"],
            "machines": ports.iter().enumerate().map(|(i, p)| serde_json::json!({
                "name": format!("M{i:02}"), "host": "127.0.0.1", "port": p, "unit": 1})).collect::<Vec<_>>(),
        });
        let spec_path = dir.write(&format!("{tag}.json"), &spec.to_string());
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/block_poller.py");
        let py = Proc::spawn(
            tag,
            Command::new(python()).arg(&script).arg(&spec_path),
            dir.path(),
        );
        if !wait_until(Duration::from_secs(60), || py.output().contains("ready")) {
            println!("  {tag} did not start:\n{}", py.dump());
            return (f64::NAN, 0, 0);
        }
        std::thread::sleep(WARM_UP);
        let req = served(&sim);
        let (cpu, hwm) = cpu_over(py.child.id(), duration);
        (cpu, hwm, served(&sim) - req)
    };
    let (py_cpu, py_hwm, py_polls) = baseline("python-blocks", &per_block);
    let (pf_cpu, pf_hwm, pf_polls) = baseline("python-fields", &per_field);
    // The floor: only the I/O of each poll (the first planned block), measured the same way.
    let floor_cpu = {
        let exe = std::env::current_exe().unwrap_or_default();
        let mut cmd = Command::new(exe);
        cmd.arg("--floor-loop")
            .arg(blocks[0].address.to_string())
            .arg(blocks[0].quantity.to_string())
            .args(ports.iter().map(|p| p.to_string()));
        let fl = Proc::spawn("floor", &mut cmd, dir.path());
        if wait_until(Duration::from_secs(10), || fl.output().contains("ready")) {
            std::thread::sleep(WARM_UP);
            cpu_over(fl.child.id(), duration).0
        } else {
            println!("  the floor loop did not start:\n{}", fl.dump());
            f64::NAN
        }
    };
    drop(sim);

    let secs = duration.as_secs_f64();
    let total: u64 = counts.values().sum();
    let clones =
        counts.get("clone").copied().unwrap_or(0) + counts.get("clone3").copied().unwrap_or(0);
    let per_poll = total as f64 / polls as f64;
    // CPU time comes in clock ticks (10 ms): a ratio never divides by less than one.
    let gw_floor = gw_cpu.max(0.01 / duration.as_secs_f64());
    // Thread sleeps and channel wake-ups: a poller sleeping until its next due time costs one.
    let waits = ["futex", "futex wait", "futex wake", "sched_yield"]
        .iter()
        .map(|k| counts.get(*k).copied().unwrap_or(0))
        .sum::<u64>();
    let per_poll_io = (total - waits) as f64 / polls as f64;
    let per_min = clones as f64 * 60.0 / traced;
    println!(
        "bench_syscalls: {machines} machines x {nregs} registers every {interval} s, {} blocks per machine, windows of {secs:.0} s after {} s warm-up",
        blocks.len(),
        WARM_UP.as_secs()
    );
    println!(
        "  gateway polls (Modbus requests)  {polls_cpu} in the CPU window, {polls} sent in the trace ({:.2} per machine per s; {served_traced} counted by the simulator)",
        polls as f64 / machines as f64 / traced
    );
    println!("  syscalls per poll by kind (strace -f, {traced:.0} s):");
    let mut kinds: Vec<(&String, &u64)> = counts.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (name, n) in kinds {
        println!("    {name:<18} {:>8.3}  ({n})", *n as f64 / polls as f64);
    }
    println!("    {:<18} {per_poll:>8.3}  ({total})", "total");
    println!("  syscalls per poll by thread (the three most frequent kinds each):");
    let mut roles: Vec<(&String, u64)> = by_thread
        .iter()
        .map(|(t, k)| (t, k.values().sum::<u64>()))
        .collect();
    roles.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (thread, n) in roles {
        let mut top: Vec<(&String, &u64)> = by_thread[thread].iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = top
            .iter()
            .take(3)
            .map(|(k, c)| format!("{k} {:.3}", **c as f64 / polls as f64))
            .collect();
        println!(
            "    {thread:<18} {:>8.3}  ({n}: {})",
            n as f64 / polls as f64,
            top.join(", ")
        );
    }
    println!(
        "    {:<18} {per_poll_io:>8.3}  ({})",
        "without futex, sched_yield",
        total - waits
    );
    println!("  CPU and wake-ups per poll by thread (schedstat, the CPU window):");
    let mut cpu_rows: Vec<(String, f64, f64)> = sched1
        .iter()
        .map(|(name, (ns, slices))| {
            let (ns0, slices0) = sched0.get(name).copied().unwrap_or((0, 0));
            let n = polls_cpu.max(1) as f64;
            (
                name.clone(),
                ns.saturating_sub(ns0) as f64 / 1000.0 / n,
                slices.saturating_sub(slices0) as f64 / n,
            )
        })
        .collect();
    cpu_rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (mut us_all, mut runs_all) = (0.0, 0.0);
    for (name, us, runs) in &cpu_rows {
        us_all += us;
        runs_all += runs;
        println!("    {name:<18} {us:>8.1} us  {runs:>6.2} runs");
    }
    println!("    {:<18} {us_all:>8.1} us  {runs_all:>6.2} runs", "total");
    println!("  threads created                  {per_min:.1} per minute ({clones} clone/clone3); {threads_now} threads at the end");
    println!(
        "  gateway CPU                      {:.3} % of one core; RSS peak {gw_hwm} KiB (now {anon} KiB anonymous, {file} KiB mapped files)",
        100.0 * gw_cpu
    );
    println!(
        "  Python baseline CPU              {:.3} % of one core ({py_polls} reads, {:.2} per machine per s); RSS peak {py_hwm} KiB",
        100.0 * py_cpu,
        py_polls as f64 / machines as f64 / secs
    );
    println!(
        "  Python per field (the original)  {:.3} % of one core ({pf_polls} reads, {:.2} per machine per s); RSS peak {pf_hwm} KiB; {:.1}x the gateway",
        100.0 * pf_cpu,
        pf_polls as f64 / machines as f64 / secs,
        pf_cpu / gw_floor
    );
    let ratio = py_cpu / gw_floor;
    println!("  ratio Python / gateway           {ratio:.1}x");
    println!(
        "  floor (send + receive only)      {:.3} % of one core: Python / floor {:.1}x, gateway / floor {:.1}x",
        100.0 * floor_cpu,
        py_cpu / floor_cpu.max(0.01 / duration.as_secs_f64()),
        gw_cpu / floor_cpu.max(0.01 / duration.as_secs_f64())
    );
    println!("  goals (issue 14):");
    println!(
        "    <= 2.5 syscalls per poll       {per_poll:.2}: {}",
        goal(per_poll <= 2.5)
    );
    println!(
        "    0 threads created              {clones}: {}",
        goal(clones == 0)
    );
    println!(
        "    CPU < 0.3 % of one core        {:.3} %: {}",
        100.0 * gw_cpu,
        goal(gw_cpu < 0.003)
    );
    println!(
        "    >= 30x below Python            {ratio:.1}x: {}",
        goal(ratio >= 30.0)
    );
    println!(
        "    RSS < 8 MB                     {gw_hwm} KiB: {}",
        goal(gw_hwm < 8192)
    );
    println!("  gateway exit on SIGTERM: {code:?}");
    let _ = std::fs::remove_dir_all(&runtime);
}
