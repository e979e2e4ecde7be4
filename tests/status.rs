//! The operator view against a running gateway: `/status.json` and `/metrics` show what the
//! (pymodbus) machine serves, metrics parse as Prometheus text, basic auth is enforced on a
//! non-loopback address, the page renders in a real headless Chromium (DOM checked, screenshot
//! kept in target/artifacts), SIGHUP reloads a valid config and refuses an invalid one.

use crate::util::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

struct Setup {
    dir: TempDir,
    gw: Proc,
    status_port: u16,
    _peer: ModbusPeer,
    _influx: FakeInflux2,
    cfg: std::path::PathBuf,
    cfg_json: Value,
}

fn setup(status: Value) -> Setup {
    setup_with(status, &[])
}

fn setup_with(status: Value, env: &[(&str, &std::ffi::OsStr)]) -> Setup {
    let dir = TempDir::new("status");
    let regs = json!([
        {"kind": "holding", "address": 0, "type": "int16", "value": 853},
        {"kind": "holding", "address": 1, "type": "uint16", "value": 42},
        {"kind": "holding", "address": 6, "type": "uint16", "value": 101},
        {"kind": "holding", "address": 10, "type": "string", "length": 4, "value": "LOT-9"}
    ]);
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}}), "tcp");
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let status_port = free_ports(1)[0];
    let mut status = status;
    if status.get("listen").is_none() {
        status["listen"] = json!(format!("127.0.0.1:{status_port}"));
    }
    let cfg_json = json!({
        "state_dir": dir.path().join("state"),
        "influxdb": {"url": influx.url(), "org": "o", "bucket": "b"},
        "status": status,
        "machines": [{"name": "JET <01>", "ip_address": "127.0.0.1", "port": peer.port, "poll_interval_s": 0.5,
            "registers": [
                {"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "scale": 0.1, "measurement": "high_frequency_data"},
                {"name": "level", "kind": "holding", "address": 1, "type": "uint16", "measurement": "medium_frequency_data"},
                {"name": "process", "kind": "holding", "address": 6, "type": "uint16", "measurement": "medium_frequency_data"},
                {"name": "batch", "kind": "holding", "address": 10, "type": "string", "length": 4, "measurement": "cycle_context_data"}],
            "finish": {"register": "process", "finish_code": 305, "batch_register": "batch"}}]
    });
    let cfg = dir.write("machines.json", &cfg_json.to_string());
    let gw = Proc::spawn(
        "gateway",
        Command::new(bin())
            .args(["--config", cfg.to_str().unwrap_or_default(), "run"])
            .envs(env.iter().copied()),
        dir.path(),
    );
    Setup {
        dir,
        gw,
        status_port,
        _peer: peer,
        _influx: influx,
        cfg,
        cfg_json,
    }
}

fn get(port: u16, path: &str, auth: Option<&str>) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut req = agent.get(&format!("http://127.0.0.1:{port}{path}"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    match req.call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

fn status_json(s: &Setup) -> Value {
    serde_json::from_str(&get(s.status_port, "/status.json", None).1).unwrap_or(Value::Null)
}

/// The A/B slots from RAUC: a fake `rauc` answers `status --detailed --output-format=json`
/// with the captured output of a system updated into slot B.
#[test]
fn the_page_shows_the_booted_slot_and_the_other_one() {
    let fake = TempDir::new("fake-rauc");
    let capture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rauc-status-1.8.json");
    let script = fake.write(
        "rauc",
        &format!(
            "#!/bin/sh\n[ \"$*\" = \"status --detailed --output-format=json\" ] || exit 1\nexec cat '{}'\n",
            capture.display()
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s = setup_with(json!({}), &[("DYEING_GATEWAY_RAUC", script.as_os_str())]);
    assert!(
        wait_until(Duration::from_secs(15), || !status_json(&s)["update"]
            .is_null()),
        "{}",
        s.gw.dump()
    );
    let st = status_json(&s);
    let u = &st["update"];
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(u["booted"], "rootfs.1", "{st}");
    assert_eq!(u["rolled_back"], false);
    assert_eq!(u["slots"][0]["version"], "0.2.0+g1a2b3c4d");
    assert_eq!(u["slots"][1]["name"], "rootfs.0");
    assert_eq!(u["slots"][1]["boot_status"], "good");
    let (code, page) = get(s.status_port, "/", None);
    assert_eq!(code, 200);
    assert!(
        page.contains("booted slot: rootfs.1 (B) &middot; 0.2.0+g1a2b3c4d"),
        "{page}"
    );
    assert!(
        page.contains("other slot: rootfs.0 (A) &middot; as flashed"),
        "{page}"
    );
    assert!(
        s.gw.dump().contains("booted slot rootfs.1 (B)"),
        "{}",
        s.gw.dump()
    );
}

/// Without RAUC the page has no slot section, and /status.json no `update` key.
#[test]
fn without_rauc_only_the_version() {
    let s = setup_with(
        json!({}),
        &[("DYEING_GATEWAY_RAUC", std::ffi::OsStr::new(""))],
    );
    assert!(
        wait_until(Duration::from_secs(15), || status_json(&s)["version"]
            .is_string()),
        "{}",
        s.gw.dump()
    );
    let st = status_json(&s);
    assert!(st.get("update").is_none(), "{st}");
    assert!(!get(s.status_port, "/", None).1.contains("id=\"update\""));
}

#[test]
fn json_and_metrics_show_what_the_machine_serves() {
    let mut s = setup(json!({}));
    assert!(
        wait_until(Duration::from_secs(15), || status_json(&s)["machines"][0]
            ["values"]["batch"]
            == "LOT-9"),
        "{}",
        s.gw.dump()
    );
    let st = status_json(&s);
    let m = &st["machines"][0];
    assert_eq!(m["online"], true);
    assert_eq!(m["values"]["temperature"], 85.3);
    assert_eq!(m["values"]["level"], 42);
    assert_eq!(m["process_code"], 101);
    assert_eq!(m["batch"], "LOT-9");
    assert_eq!(st["uploader"]["clock_synced"], true);
    let (code, text) = get(s.status_port, "/metrics", None);
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|x| x.metric == name && x.labels.get("machine") == Some("JET <01>"))
            .map(|x| x.value.clone())
    };
    assert!(
        matches!(value("dyeing_gateway_machine_online"), Some(prometheus_parse::Value::Gauge(v)) if v == 1.0),
        "{text}"
    );
    assert!(
        matches!(value("dyeing_gateway_polls_total"), Some(prometheus_parse::Value::Counter(v)) if v >= 1.0),
        "{text}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|x| x.metric == "dyeing_gateway_poll_duration_seconds"),
        "histogram missing:\n{text}"
    );
    // Read-only: nothing but GET.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let r = agent
        .post(&format!("http://127.0.0.1:{}/status.json", s.status_port))
        .send("x");
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 405);
    s.gw.terminate(Duration::from_secs(10));
}

#[test]
fn a_lan_address_needs_a_login() {
    // The config is refused without one.
    let dir = TempDir::new("lan");
    let cfg = dir.write("m.json", &json!({"status": {"listen": "0.0.0.0:9999"},
        "machines": [{"name": "M", "ip_address": "127.0.0.1", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]}).to_string());
    let out = gateway(
        &["--config", cfg.to_str().unwrap_or_default(), "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("$.status.listen"),
        "{}",
        text(&out.stderr)
    );
    // With one, requests without it are refused (401) and with it served.
    // The old hash format (salted SHA-256) is still accepted, with a warning.
    let hash = dyeing_gateway::status_http::legacy_hash("0011223344556677", "geheim");
    let port = free_ports(1)[0];
    let mut s = setup(
        json!({"listen": format!("0.0.0.0:{port}"), "user": "tech", "password_sha256": hash}),
    );
    s.status_port = port;
    assert!(
        wait_until(Duration::from_secs(10), || get(port, "/", None).0 == 401),
        "{}",
        s.gw.dump()
    );
    // "tech:geheim" and "tech:wrong" in base64.
    assert_eq!(
        get(port, "/status.json", Some("Basic dGVjaDpnZWhlaW0=")).0,
        200
    );
    assert_eq!(
        get(port, "/status.json", Some("Basic dGVjaDp3cm9uZw==")).0,
        401
    );
    assert!(
        s.gw.output().contains("old fast salted SHA-256"),
        "{}",
        s.gw.dump()
    );
    s.gw.terminate(Duration::from_secs(10));
}

#[test]
fn the_page_renders_in_a_headless_browser() {
    let mut s = setup(json!({}));
    assert!(wait_until(Duration::from_secs(15), || status_json(&s)
        ["machines"][0]["online"]
        == true));
    // Let the sparklines collect a second sample.
    std::thread::sleep(Duration::from_secs(11));
    let profile = TempDir::new("chromium");
    let url = format!("http://127.0.0.1:{}/", s.status_port);
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
    ];
    let dom = Command::new("chromium")
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium (Debian package chromium)");
    let html = text(&dom.stdout);
    assert!(
        html.contains("id=\"machine-JET &lt;01&gt;\"")
            || html.contains("machine-JET <01>")
            || html.contains("JET &lt;01&gt;"),
        "machine row missing:\n{html}\n{}",
        text(&dom.stderr)
    );
    assert!(html.contains("online") && html.contains("<svg"), "{html}");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("status-page.png");
    let out = Command::new("chromium")
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--window-size=1280,600",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .expect("chromium");
    assert!(shot.exists(), "no screenshot: {}", text(&out.stderr));
    s.gw.terminate(Duration::from_secs(10));
}

#[test]
fn sighup_reloads_a_valid_config_and_refuses_an_invalid_one() {
    let mut s = setup(json!({}));
    assert!(
        wait_until(Duration::from_secs(15), || status_json(&s)["machines"][0]
            ["online"]
            == true),
        "{}",
        s.gw.dump()
    );
    // Invalid: refused, the old config keeps running, the page says why.
    std::fs::write(&s.cfg, r#"{"machines": [{"name": "X", "ip_address": "h", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "flaot", "measurement": "high_frequency_data"}]}]}"#).expect("write");
    s.gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || status_json(&s)["reload"]
            ["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("registers[0].type"))),
        "{}",
        s.gw.dump()
    );
    assert_eq!(status_json(&s)["machines"][0]["name"], "JET <01>");
    let polls = status_json(&s)["machines"][0]["polls"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(5), || status_json(&s)["machines"][0]
            ["polls"]
            .as_u64()
            .unwrap_or(0)
            > polls),
        "still polling"
    );
    // Valid: a renamed machine appears.
    let mut cfg = s.cfg_json.clone();
    cfg["machines"][0]["name"] = json!("JET-01-NEW");
    std::fs::write(&s.cfg, cfg.to_string()).expect("write");
    s.gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || status_json(&s)["machines"][0]
            ["name"]
            == "JET-01-NEW"),
        "{}",
        s.gw.dump()
    );
    assert!(wait_until(Duration::from_secs(10), || status_json(&s)
        ["machines"][0]["online"]
        == true));
    assert_eq!(status_json(&s)["reload"]["last_error"], Value::Null);
    assert_eq!(s.gw.terminate(Duration::from_secs(10)), Some(0));
    let _ = &s.dir;
}

/// Threads of a process, from /proc/<pid>/status.
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A client that sends a request head one byte every 200 ms; returns the seconds until the
/// server closed the connection (or `limit` when it never did).
fn slowloris(port: u16, limit: Duration) -> std::thread::JoinHandle<f64> {
    use std::io::Write;
    std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return 0.0;
        };
        // A valid head that never ends: a header value that grows forever.
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let mut i = 0usize;
        while t0.elapsed() < limit {
            let b = head.get(i).copied().unwrap_or(b'a');
            if c.write_all(&[b]).is_err() {
                return t0.elapsed().as_secs_f64();
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        limit.as_secs_f64()
    })
}

#[test]
fn idle_connections_and_a_slow_client_neither_stop_the_page_nor_grow_threads() {
    let mut s = setup(json!({}));
    assert!(
        wait_until(Duration::from_secs(15), || status_json(&s)["machines"][0]
            ["online"]
            == true),
        "{}",
        s.gw.dump()
    );
    let pid = s.gw.child.id();
    let before = threads(pid);
    let idle: Vec<_> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", s.status_port)).ok())
        .collect();
    let slow = slowloris(s.status_port, Duration::from_secs(40));
    std::thread::sleep(Duration::from_millis(500));
    let during = threads(pid);
    // Another client is still answered, at once (one try, a generous bound).
    let t0 = std::time::Instant::now();
    let (code, _) = get(s.status_port, "/status.json", None);
    let took = t0.elapsed();
    assert_eq!(code, 200, "{}", s.gw.dump());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Polling went on meanwhile.
    let polls = status_json(&s)["machines"][0]["polls"]
        .as_u64()
        .unwrap_or(0);
    assert!(wait_until(Duration::from_secs(5), || status_json(&s)
        ["machines"][0]["polls"]
        .as_u64()
        .unwrap_or(0)
        > polls));
    let slow_s = slow.join().unwrap_or(0.0);
    eprintln!(
        "{} idle connections: threads {before} -> {during}; other client answered in {took:?}; slow client dropped after {slow_s:.1} s",
        idle.len()
    );
    assert!(during <= before + 2, "threads {before} -> {during}");
    assert!(slow_s < 30.0, "the slow client was kept {slow_s} s");
    drop(idle);
    assert_eq!(
        s.gw.child.try_wait().ok().flatten(),
        None,
        "{}",
        s.gw.dump()
    );
    assert_eq!(s.gw.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn connections_under_a_process_limit_do_not_abort_the_gateway() {
    // As an unprivileged user (root is not held to RLIMIT_NPROC), 60 tasks at most.
    let dir = TempDir::new("nproc");
    let regs = json!([{"kind": "holding", "address": 0, "type": "int16", "value": 853}]);
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}}), "tcp");
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let port = free_ports(1)[0];
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
    let cfg = dir.write("m.json", &json!({
        "state_dir": state,
        "influxdb": {"url": influx.url(), "org": "o", "bucket": "b"},
        "status": {"listen": format!("127.0.0.1:{port}")},
        "machines": [{"name": "M", "ip_address": "127.0.0.1", "port": peer.port, "poll_interval_s": 0.5,
            "registers": [{"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}]}]
    }).to_string());
    let mut gw = Proc::spawn(
        "gateway",
        Command::new("prlimit")
            .args([
                "--nproc=60",
                "--",
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ])
            .arg(bin())
            .args(["--config", cfg.to_str().unwrap_or_default(), "run"]),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(15), || get(port, "/status.json", None)
            .0
            == 200),
        "{}",
        gw.dump()
    );
    let conns: Vec<_> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let exited = gw.child.try_wait().ok().flatten();
    eprintln!(
        "{} connections under nproc 60: exit {exited:?}",
        conns.len()
    );
    assert_eq!(exited, None, "{}", gw.dump());
    drop(conns);
    assert!(
        wait_until(Duration::from_secs(10), || get(port, "/status.json", None)
            .0
            == 200),
        "{}",
        gw.dump()
    );
    assert_eq!(
        gw.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        gw.dump()
    );
}

#[test]
fn sighup_reloads_the_login() {
    let hash = |pw: &str| dyeing_gateway::status_http::login::PasswordHash::new(pw).encode();
    let mut s = setup(json!({"user": "tech", "password_hash": hash("geheim")}));
    let port = s.status_port;
    // "tech:geheim" and "tech:neu-2024" in base64.
    let (old, new) = ("Basic dGVjaDpnZWhlaW0=", "Basic dGVjaDpuZXUtMjAyNA==");
    assert!(
        wait_until(Duration::from_secs(10), || get(port, "/", Some(old)).0
            == 200),
        "{}",
        s.gw.dump()
    );
    let mut cfg = s.cfg_json.clone();
    cfg["status"]["password_hash"] = json!(hash("neu-2024"));
    std::fs::write(&s.cfg, cfg.to_string()).expect("write");
    s.gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || get(port, "/", Some(new)).0
            == 200),
        "the new login is refused\n{}",
        s.gw.dump()
    );
    assert_eq!(
        get(port, "/", Some(old)).0,
        401,
        "the old login still works"
    );
    assert_eq!(s.gw.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_config_that_fails_to_start_falls_back_to_the_last_good_one() {
    // A config passes validation but cannot start when its threads cannot be created: as an
    // unprivileged user (its own uid, so no other test shares the count) under nproc 60, 80
    // endpoints with a thread each cannot (RTU over TCP: Modbus TCP endpoints share one).
    let uid = "61234";
    let dir = TempDir::new("fallback");
    let regs = json!([{"kind": "holding", "address": 0, "type": "int16", "value": 853}]);
    let peer = ModbusPeer::start(&dir, &json!({"slaves": {"1": regs}}), "tcp");
    let influx = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let port = free_ports(1)[0];
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::os::unix::fs::chown(&state, Some(61234), Some(61234)).expect("chown");
    let machine = |name: &str, port: u16| {
        json!({"name": name, "ip_address": "127.0.0.1", "port": port, "poll_interval_s": 0.5,
            "registers": [{"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}]})
    };
    let config = |machines: Vec<Value>| {
        json!({
            "state_dir": state,
            "influxdb": {"url": influx.url(), "org": "o", "bucket": "b"},
            "status": {"listen": format!("127.0.0.1:{port}")},
            "machines": machines
        })
        .to_string()
    };
    let cfg = dir.write("m.json", &config(vec![machine("FIRST", peer.port)]));
    let mut gw = Proc::spawn(
        "gateway",
        Command::new("prlimit")
            .args(["--nproc=60", "--", "setpriv"])
            .args([format!("--reuid={uid}"), format!("--regid={uid}")])
            .args(["--clear-groups", "--"])
            .arg(bin())
            .args(["--config", cfg.to_str().unwrap_or_default(), "run"]),
        dir.path(),
    );
    let json = || -> Value {
        serde_json::from_str(&get(port, "/status.json", None).1).unwrap_or(Value::Null)
    };
    let online = |name: &str| {
        let st = json();
        st["machines"][0]["name"] == name && st["machines"][0]["online"] == true
    };
    assert!(
        wait_until(Duration::from_secs(15), || online("FIRST")),
        "{}",
        gw.dump()
    );
    // A good reload.
    std::fs::write(&cfg, config(vec![machine("SECOND", peer.port)])).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || online("SECOND")),
        "{}",
        gw.dump()
    );
    // One that cannot start: the gateway goes back to SECOND, the last good one.
    let many = (0..80)
        .map(|i| {
            let mut m = machine(&format!("M{i}"), 20000 + i);
            m["transport"] = json!("rtu_over_tcp");
            m
        })
        .collect();
    std::fs::write(&cfg, config(many)).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || json()["reload"]["last_error"]
            .as_str()
            .is_some()),
        "{}",
        gw.dump()
    );
    assert!(
        wait_until(Duration::from_secs(15), || online("SECOND")),
        "running on {} instead of SECOND\n{}",
        json()["machines"][0]["name"],
        gw.dump()
    );
    assert_eq!(gw.child.try_wait().ok().flatten(), None, "{}", gw.dump());
    assert_eq!(
        gw.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.dump()
    );
}

/// A GET from another loopback source address (127.0.0.2), through Python's socket module:
/// returns the status code.
fn get_from_other_client(port: u16, auth: &str) -> u16 {
    let script = "import socket,sys\n\
        s=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=20,source_address=('127.0.0.2',0))\n\
        s.sendall(('GET /status.json HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: '+sys.argv[2]+'\\r\\n\\r\\n').encode())\n\
        print(s.recv(64).split(b' ')[1].decode())\n";
    let out = Command::new(python())
        .args(["-c", script, &port.to_string(), auth])
        .output()
        .expect("python");
    text(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn wrong_passwords_are_delayed_and_hash_password_makes_a_slow_hash() {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("hash-password");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"geheim\n").expect("stdin");
    }
    let out = child.wait_with_output().expect("hash-password");
    let hash = text(&out.stdout).trim().to_string();
    assert!(hash.starts_with("pbkdf2-sha256$100000$"), "{hash}");
    let mut s = setup(json!({"user": "tech", "password_hash": hash}));
    let port = s.status_port;
    // "tech:geheim" and "tech:wrong" in base64.
    let (good, bad) = ("Basic dGVjaDpnZWhlaW0=", "Basic dGVjaDp3cm9uZw==");
    assert!(
        wait_until(Duration::from_secs(10), || get(port, "/", None).0 == 401),
        "{}",
        s.gw.dump()
    );
    // 20 wrong passwords in a row: the first is checked, the next ones wait (429).
    let codes: Vec<u16> = (0..20).map(|_| get(port, "/", Some(bad)).0).collect();
    let checked = codes.iter().filter(|c| **c == 401).count();
    let waiting = codes.iter().filter(|c| **c == 429).count();
    eprintln!("20 wrong passwords: {checked} checked (401), {waiting} told to wait (429)");
    assert!(checked <= 3 && waiting >= 15, "{codes:?}");
    // Meanwhile another client logs in, and this one only after its wait.
    assert_eq!(get_from_other_client(port, good), 200);
    assert!(
        wait_until(Duration::from_secs(70), || get(port, "/", Some(good)).0
            == 200),
        "{}",
        s.gw.dump()
    );
    assert_eq!(s.gw.terminate(Duration::from_secs(10)), Some(0));
}
