//! `scan` against pymodbus layouts made up here: gaps, a string area in both byte orders,
//! float pairs in both word orders, a counter, a unit that limits reads to 16 registers
//! (exception 03), one that never answers long reads, one that never answers at all. The scan
//! finds every unit and range, sends only read functions, its proposal passes `check` and
//! `once` reads the same values. Over a socat pty bus at 9600 baud, the scan takes at most the
//! wire time of its requests plus one short timeout per absent unit (generous margin).

use crate::rtu::{pty_pair, rtu_server};
use crate::util::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

fn run_of(kind: &str, from: u64, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"kind": kind, "address": from + i, "type": "uint16", "value": 1000 + i}))
        .collect()
}

fn layout() -> Value {
    let one = json!([
        {"kind": "holding", "address": 0, "type": "int16", "value": 215},
        {"kind": "holding", "address": 1, "type": "uint16", "value": 7},
        {"kind": "holding", "address": 10, "type": "string", "length": 4, "value": "BATCH123"},
        {"kind": "holding", "address": 20, "type": "float32", "order": "ABCD", "value": 123.456},
        {"kind": "holding", "address": 22, "type": "float32", "order": "CDAB", "value": -77.5},
        {"kind": "holding", "address": 40, "type": "uint16", "value": 100},
        {"kind": "holding", "address": 150, "type": "string", "length": 4, "string_order": "low_first", "value": "JET-0042"},
        {"kind": "input", "address": 5, "type": "int16", "value": 42},
        {"kind": "coil", "address": 3, "value": true},
        {"kind": "discrete_input", "address": 0, "value": false}
    ]);
    json!({"sparse": true, "ignore_missing": true,
        "counters": {"1": [40]},
        "slaves": {"1": one, "3": run_of("holding", 0, 40), "4": run_of("holding", 0, 40)},
        "max_read": {"3": 16}, "max_read_silent": {"4": 16}})
}

fn fcs(trace: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// "N requests (T timed out) in S s" from the report.
fn figures(report: &str) -> (u64, f64) {
    let line = report
        .lines()
        .find(|l| l.contains(" requests ("))
        .unwrap_or_else(|| panic!("no figures in\n{report}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = words[0].parse().unwrap_or(0);
    let s = words
        .iter()
        .position(|w| *w == "in")
        .and_then(|i| words.get(i + 1))
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    (n, s)
}

#[test]
fn scan_finds_units_and_ranges_never_writes_and_its_proposal_polls() {
    let dir = TempDir::new("scan");
    let trace = dir.path().join("trace");
    let mut spec = layout();
    spec["trace"] = json!(trace);
    let peer = ModbusPeer::start(&dir, &spec, "tcp");
    let target = format!("tcp://127.0.0.1:{}", peer.port);
    let out = gateway(
        &[
            "scan",
            &target,
            "--units",
            "1-4",
            "--max-address",
            "199",
            "--rate",
            "0",
            "--samples",
            "3",
            "--interval",
            "200ms",
            "--timeout",
            "300ms",
            "--propose",
            "--hint",
            "temperature=hr_0000",
        ],
        &[],
    );
    let (proposal, report) = (text(&out.stdout), text(&out.stderr));
    let dump = format!("{report}\n{}", peer.proc.dump());
    assert!(out.status.success(), "{dump}");
    assert!(report.contains("units present: 1, 3, 4"), "{dump}");
    assert!(report.contains("units silent: 2"), "{dump}");
    for want in [
        "holding: 0-1, 10-13, 20-23, 40, 150-153",
        "input: 5",
        "coil: 3",
        "discrete_input: 0",
        "holding: 0-39",
        "reads at most 16 registers",
        "text, 4 registers, high byte first: \"BATCH123\"",
        "text, 4 registers, low byte first: \"JET-0042\"",
        "float32 ABCD: 123.456",
        "float32 CDAB: -77.5",
        "counter (increasing)",
        "exception 03 to a read of",
        "no answer to a read of",
    ] {
        assert!(report.contains(want), "missing `{want}`\n{dump}");
    }
    let (requests, seconds) = figures(&report);
    eprintln!("tcp scan: {requests} requests in {seconds} s");
    assert!(requests > 0 && seconds.is_finite());
    // Only read functions reached the server.
    let seen = fcs(&trace);
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|f| ["1", "2", "3", "4"].contains(&f.as_str())),
        "function codes sent: {seen:?}"
    );
    let sent = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .count() as u64;
    // pymodbus drops the probe of the absent unit 2 before its tracer sees it.
    assert_eq!(
        sent + 1,
        requests,
        "the printed request count is what the server received"
    );

    // The proposal passes `check` and `once` reads the same values.
    let cfg = dir.write("proposed.json", &proposal);
    let cfg = cfg.to_str().unwrap_or_default();
    let check = gateway(&["--config", cfg, "check"], &[]);
    assert!(
        check.status.success(),
        "{proposal}\n{}",
        text(&check.stderr)
    );
    let once = gateway(&["--config", cfg, "once"], &[]);
    let lines = text(&once.stdout);
    assert!(once.status.success(), "{lines}\n{}", text(&once.stderr));
    for want in [
        "temperature=215i",
        "hr_0010=\"BATCH123\"",
        "hr_0150=\"JET-0042\"",
        "hr_0020=123.456",
        "hr_0022=-77.5",
        "ir_0005=42i",
        "co_0003=true",
        "hr_0039=1039i",
    ] {
        assert!(lines.contains(want), "once lacks `{want}`\n{lines}");
    }
    let _ = peer;
}

#[test]
#[cfg_attr(
    target_arch = "arm",
    ignore = "qemu-user 7.2 lacks TCGETS2; serial tests run on x86"
)]
fn rtu_scan_costs_wire_time_plus_one_timeout_per_absent_unit() {
    let dir = TempDir::new("scan-rtu");
    let pair = pty_pair(&dir, "bus");
    let trace = dir.path().join("trace");
    let spec = json!({"sparse": true, "trace": trace, "slaves": {
        "2": run_of("holding", 0, 10), "5": run_of("holding", 20, 4)}});
    let _server = rtu_server(&dir, &spec, &pair.a);
    let target = format!("rtu://{}?baud=9600&parity=N", pair.b.display());
    let started = Instant::now();
    let out = gateway(
        &[
            "scan",
            &target,
            "--units",
            "1-12",
            "--tables",
            "holding",
            "--max-address",
            "63",
            "--rate",
            "0",
            "--samples",
            "1",
            "--timeout",
            "100ms",
        ],
        &[],
    );
    let took = started.elapsed().as_secs_f64();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    assert!(report.contains("units present: 2, 5"), "{report}");
    assert!(report.contains("units silent: 1, 3-4, 6-12"), "{report}");
    assert!(
        report.contains("holding: 0-9") && report.contains("holding: 20-23"),
        "{report}"
    );
    let line = report
        .lines()
        .find(|l| l.contains("= bound"))
        .unwrap_or_else(|| panic!("{report}"));
    let bound: f64 = line
        .rsplit("bound ")
        .next()
        .and_then(|b| b.trim_end_matches(" s").parse().ok())
        .unwrap_or(f64::NAN);
    let (requests, seconds) = figures(&report);
    eprintln!(
        "rtu scan: {requests} requests in {seconds} s (bound {bound} s, process {took:.2} s)"
    );
    // t3.5 between frames and the server's own turnaround come on top of the wire time; allow
    // 10 ms per request and a second for a loaded machine.
    let allowed = bound + 0.010 * requests as f64 + 1.0;
    assert!(seconds <= allowed, "{seconds} s > {allowed} s\n{report}");
    let seen = fcs(&trace);
    assert_eq!(
        seen,
        BTreeSet::from(["3".to_string()]),
        "only function 3 was sent"
    );
}
