//! systemd integration of the real binary, with a notify socket of our own: READY=1 once
//! running, WATCHDOG=1 pings while every loop turns, even with a switched-off machine whose
//! poller is backing off, and STOPPING=1 on SIGTERM. The unit's hardening is scored by
//! `systemd-analyze security --offline=yes` (budget: exposure at most 2.0).

use crate::util::*;
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn ready_watchdog_pings_with_a_machine_switched_off_and_stopping() {
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let fake = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let closed = free_ports(1)[0];
    let cfg = dir.write("m.json", &json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": fake.url(), "org": "o", "bucket": "b"},
        "defaults": {"backoff_initial_s": 0.2, "backoff_max_s": 1},
        "machines": [{"name": "SWITCHED-OFF", "ip_address": "127.0.0.1", "port": closed,
            "registers": [{"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}]}]
    }).to_string());
    let mut gw = Proc::spawn(
        "gateway",
        Command::new(bin())
            .args(["--config", cfg.to_str().unwrap_or_default(), "run"])
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000"),
        dir.path(),
    );
    let mut messages = Vec::new();
    let end = Instant::now() + Duration::from_secs(4);
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    gw.signal("TERM");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !messages.iter().any(|m| m.contains("STOPPING=1")) {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let code = gw.terminate(Duration::from_secs(10));
    let dump = format!("{messages:?}\n{}", gw.dump());
    assert!(
        messages.first().is_some_and(|m| m.contains("READY=1")),
        "{dump}"
    );
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 4,
        "a poller backing off is alive: {pings} pings in 4 s\n{dump}"
    );
    assert!(messages.iter().any(|m| m.contains("STOPPING=1")), "{dump}");
    assert_eq!(code, Some(0));
    assert!(gw.output().contains("is offline"), "{dump}");
}

/// The health check that lets a new release commit counts on the watchdog (see
/// image/rauc/health): a plant-wide outage (no machine, no InfluxDB, no plant API answers)
/// must not stop the pings, or an outage during a trial boot would roll a good release back.
#[test]
fn watchdog_pings_through_a_plant_wide_outage() {
    let dir = TempDir::new("outage");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let closed = free_ports(3);
    let cfg = dir.write("m.json", &json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": format!("http://127.0.0.1:{}", closed[0]), "org": "o", "bucket": "b", "fsync_window_s": 0.2},
        "api": {"batch_url": format!("http://127.0.0.1:{}/finish", closed[1])},
        "defaults": {"backoff_initial_s": 0.2, "backoff_max_s": 1},
        "machines": [{"name": "DARK", "ip_address": "127.0.0.1", "port": closed[2],
            "registers": [
                {"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"},
                {"name": "process", "kind": "holding", "address": 6, "type": "uint16", "measurement": "medium_frequency_data"}],
            "finish": {"register": "process", "finish_code": 305}}]
    }).to_string());
    let mut gw = Proc::spawn(
        "gateway",
        Command::new(bin())
            .args(["--config", cfg.to_str().unwrap_or_default(), "run"])
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000"),
        dir.path(),
    );
    let mut messages = Vec::new();
    let end = Instant::now() + Duration::from_secs(6);
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let code = gw.terminate(Duration::from_secs(10));
    let dump = format!("{messages:?}\n{}", gw.dump());
    assert!(
        messages.first().is_some_and(|m| m.contains("READY=1")),
        "{dump}"
    );
    // 500 ms apart: about 12 in 6 s; the last seconds count as much as the first.
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 8, "{pings} pings in 6 s of outage\n{dump}");
    assert_eq!(code, Some(0), "{dump}");
}

#[test]
fn the_unit_is_hardened_within_budget() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dyeing-gateway.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = text(&out.stdout);
    let level: f64 = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::MAX);
    println!("systemd-analyze security: exposure {level}");
    assert!(
        level <= 2.0,
        "exposure {level}:\n{text}{}",
        crate::util::text(&out.stderr)
    );
    let unit_text = std::fs::read_to_string(&unit).expect("unit");
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "SupplementaryGroups=dialout",
        "DevicePolicy=closed",
        "ProtectSystem=strict",
        "StateDirectory=",
        // The crash journal's directory (tmpfs), kept across restarts.
        "RuntimeDirectory=dyeing-gateway",
        "RuntimeDirectoryPreserve=restart",
        "EnvironmentFile=-/etc/default/dyeing-gateway",
        "Restart=on-failure",
        "StartLimitIntervalSec=0",
    ] {
        assert!(unit_text.contains(needed), "{needed} missing");
    }
    assert!(!unit_text.contains("PrivateDevices=yes") && !unit_text.contains("DynamicUser=yes"));
}
