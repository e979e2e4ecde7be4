//! Test fixtures: temporary directories, free loopback ports, the gateway binary, a pymodbus
//! server, a real influxd, and a fake InfluxDB 2 write endpoint.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The gateway binary: cargo names it for tests; a benchmark (an example) finds it beside
/// its own `examples/` directory.
pub fn bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_dyeing-gateway") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("dyeing-gateway")))
        .unwrap_or_default()
}

/// The Python interpreter that has pymodbus: `DG_TEST_PYTHON`, else `.venv/bin/python` in the
/// repository (what `.ci/run` creates).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("DG_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run .ci/run once (it creates the venv with the pinned pymodbus) or set DG_TEST_PYTHON",
        p.display()
    );
    p
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "dg-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `n` distinct free ports (the listeners are held until all are chosen).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).expect("port"))
        .collect()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

fn wait_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// A child process killed on drop, its output kept in a file for failure messages.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn dump(&self) -> String {
        format!("--- {} output ---\n{}", self.name, self.output())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// pymodbus serving the register spec (see tests/peers/modbus_server.py).
pub struct ModbusPeer {
    pub proc: Proc,
    pub port: u16,
    pub spec: PathBuf,
}

impl ModbusPeer {
    pub fn start(dir: &TempDir, spec: &serde_json::Value, mode: &str) -> ModbusPeer {
        let spec_path = dir.write(
            &format!("spec-{}.json", fastrand::u32(..)),
            &spec.to_string(),
        );
        Self::start_at(dir, &spec_path, mode, free_port())
    }

    pub fn start_at(dir: &TempDir, spec: &Path, mode: &str, port: u16) -> ModbusPeer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_server.py");
        let proc = Proc::spawn(
            &format!("pymodbus-{port}"),
            Command::new(python())
                .arg(script)
                .arg("--spec")
                .arg(spec)
                .arg("--mode")
                .arg(mode)
                .arg("--port")
                .arg(port.to_string()),
            dir.path(),
        );
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "pymodbus did not listen on {port}\n{}",
            proc.dump()
        );
        ModbusPeer {
            proc,
            port,
            spec: spec.to_path_buf(),
        }
    }
}

/// A real influxd (1.x) on a free loopback port, data in a temporary directory. It can be
/// stopped and started again on the same port and data (an outage).
pub struct Influxd {
    pub proc: Proc,
    pub port: u16,
    pub db: String,
    conf: PathBuf,
    dir: TempDir,
}

impl Influxd {
    pub fn start() -> Influxd {
        let dir = TempDir::new("influxd");
        let p = free_ports(2);
        let (port, rpc) = (p[0], p[1]);
        let d = dir.path().display();
        let conf = dir.write(
            "influxd.conf",
            &format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n"
            ),
        );
        let proc = Self::spawn(&conf, dir.path());
        let mut i = Influxd {
            proc,
            port,
            db: "dyeing".to_string(),
            conf,
            dir,
        };
        i.wait_ready();
        i
    }

    fn spawn(conf: &Path, dir: &Path) -> Proc {
        Proc::spawn(
            "influxd",
            Command::new("influxd").arg("-config").arg(conf),
            dir,
        )
    }

    fn wait_ready(&mut self) {
        let (port, db) = (self.port, self.db.clone());
        let ok = wait_until(Duration::from_secs(30), || {
            ureq::post(&format!("http://127.0.0.1:{port}/query"))
                .send_form([("q", format!("CREATE DATABASE {db}").as_str())])
                .is_ok()
        });
        assert!(ok, "influxd did not start\n{}", self.proc.dump());
    }

    /// Kill it (an outage).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) {
        self.proc = Self::spawn(&self.conf, self.dir.path());
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Run an InfluxQL query; returns the first result's series.
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let mut resp = ureq::get(&format!("{}/query", self.url()))
            .query("db", &self.db)
            .query("q", q)
            .query("epoch", "ms")
            .call()
            .unwrap_or_else(|e| panic!("query {q}: {e}"));
        let v: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
                .expect("query JSON");
        v["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Rows of `SELECT * FROM m` as (column -> value) maps.
    pub fn rows(&self, q: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        for s in self.query(q) {
            let cols: Vec<String> = s["columns"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|x| x.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            for row in s["values"].as_array().cloned().unwrap_or_default() {
                let mut m = serde_json::Map::new();
                for (c, v) in cols.iter().zip(row.as_array().cloned().unwrap_or_default()) {
                    m.insert(c.clone(), v);
                }
                out.push(m);
            }
        }
        out
    }
}

/// One request received by the fake InfluxDB 2.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

/// The fake's answer to a request: status, extra headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// A fake InfluxDB 2 write endpoint: `respond` decides each answer from the request, the way
/// InfluxDB 2 documents them (204 on success; JSON `{"code","message"}` bodies on errors).
pub struct FakeInflux2 {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeInflux2 {
    pub fn start(
        respond: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> FakeInflux2 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rec, st) = (received.clone(), stop.clone());
        let respond = Arc::new(respond);
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                // One thread per connection: a hanging answer does not block the next client.
                let (rec, respond) = (rec.clone(), respond.clone());
                std::thread::spawn(move || serve_http(s, &rec, &*respond));
            }
        });
        FakeInflux2 {
            port,
            received,
            stop,
        }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FakeInflux2 {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve_http(
    s: TcpStream,
    rec: &Arc<Mutex<Vec<Received>>>,
    respond: &dyn Fn(&Received, usize) -> Answer,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let r = Received {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        };
        let n = {
            let mut v = rec.lock().expect("lock");
            v.push(r.clone());
            v.len()
        };
        let (status, extra, body) = respond(&r, n);
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
            body.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(body.as_bytes())?;
        w.flush()?;
    }
}

/// Run the gateway binary to completion.
pub fn gateway(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("RUST_LOG");
    for var in [
        "INFLUX_URL",
        "INFLUX_TOKEN",
        "INFLUX_ORG",
        "INFLUX_BUCKET",
        "API_URL_BATCH",
        "API_TRIGGER_URL",
        "API_URL_STRINGS",
        "API_URL_STRINGS_CONF",
        "SERIAL_PORT",
        "BAUDRATE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run the gateway")
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Parse `measurement,tags fields ts` lines (no escaped spaces in the test data's fields
/// except inside quoted strings) into (measurement+tags, field map).
pub fn parse_fields(line: &str) -> (String, Vec<(String, String)>) {
    // Split at the first unescaped space outside quotes, twice.
    let mut parts = Vec::new();
    let (mut cur, mut quoted, mut esc) = (String::new(), false, false);
    for c in line.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                esc = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let mut fields = Vec::new();
    let (mut key, mut val, mut in_val, mut quoted, mut esc) =
        (String::new(), String::new(), false, false, false);
    for c in parts.get(1).cloned().unwrap_or_default().chars() {
        if esc {
            if in_val {
                val.push(c)
            } else {
                key.push(c)
            }
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '"' => quoted = !quoted,
            '=' if !in_val && !quoted => in_val = true,
            ',' if !quoted => {
                fields.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                in_val = false;
            }
            _ => {
                if in_val {
                    val.push(c)
                } else {
                    key.push(c)
                }
            }
        }
    }
    fields.push((key, val));
    (parts[0].clone(), fields)
}

/// Log lines of the library, captured for assertions ("logged once per state change").
pub struct Logs(&'static Mutex<Vec<String>>);

struct CaptureLogger(&'static Mutex<Vec<String>>);

impl log::Log for CaptureLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("{} {}", r.level(), r.args()));
            }
        }
    }
    fn flush(&self) {}
}

/// Install the capturing logger (once per test binary) and return a handle to its lines.
pub fn capture_logs() -> Logs {
    static LINES: std::sync::OnceLock<&'static Mutex<Vec<String>>> = std::sync::OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines: &'static Mutex<Vec<String>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        if log::set_boxed_logger(Box::new(CaptureLogger(lines))).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
        lines
    });
    Logs(lines)
}

impl Logs {
    /// How many captured lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .map(|v| v.iter().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }
    /// The captured lines that contain `filter`, for failure messages.
    pub fn dump(&self, filter: &str) -> String {
        let lines = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        let kept: Vec<String> = lines.into_iter().filter(|l| l.contains(filter)).collect();
        format!("--- log ---\n{}", kept.join("\n"))
    }
}

/// `dyeing-gateway simulate` for the config `cfg` (plus `args`), once the machine on `port`
/// accepts connections.
pub fn simulator(cfg: &str, port: u16, dir: &Path, args: &[&str]) -> Proc {
    let sim = Proc::spawn(
        "simulate",
        Command::new(bin())
            .args(["--config", cfg, "simulate"])
            .args(args),
        dir,
    );
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "{}",
        sim.dump()
    );
    sim
}

/// The `sequence` values of the simulated machine `SEQ` stored in InfluxDB (the simulator's
/// `sequence` register counts the requests it answers, so a missing value is a lost point).
pub fn stored_sequence(influx: &Influxd) -> std::collections::BTreeSet<u64> {
    influx
        .rows("SELECT sequence FROM high_frequency_data WHERE machine = 'SEQ'")
        .iter()
        .filter_map(|r| r["sequence"].as_u64())
        .collect()
}

/// Runs of missing values in 1..=max.
pub fn gaps(seen: &std::collections::BTreeSet<u64>) -> Vec<(u64, u64)> {
    let max = seen.iter().next_back().copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut start = None;
    for v in 1..=max {
        match (seen.contains(&v), start) {
            (false, None) => start = Some(v),
            (true, Some(s)) => {
                out.push((s, v - 1));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// A benchmark's numeric option `name VALUE`, or `default`.
pub fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (utime + stime) in seconds, VmRSS and VmHWM in KiB, of a process.
pub fn proc_stats(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the name.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    (cpu, proc_status(pid, "VmRSS:"), proc_status(pid, "VmHWM:"))
}

/// A number from `/proc/PID/status` (`key` with its colon, e.g. `RssAnon:` in KiB or
/// `Threads:`), 0 when it cannot be read.
pub fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The benchmarks' register map: a dyeing machine's usual registers, then `uint16` parameters
/// every other address up to `n` registers.
pub fn bench_registers(n: usize) -> Vec<serde_json::Value> {
    let mut regs = vec![
        serde_json::json!({"name": "marker", "kind": "holding", "address": 0, "type": "uint16", "measurement": "high_frequency_data"}),
        serde_json::json!({"name": "temperature", "kind": "holding", "address": 1, "type": "int16", "scale": 0.1, "deadband": 0.2, "measurement": "high_frequency_data"}),
        serde_json::json!({"name": "level", "kind": "holding", "address": 2, "type": "float32", "deadband": 0.5, "measurement": "medium_frequency_data"}),
        serde_json::json!({"name": "ph", "kind": "holding", "address": 4, "type": "uint16", "scale": 0.01, "deadband": 0.05, "measurement": "medium_frequency_data"}),
        serde_json::json!({"name": "status", "kind": "holding", "address": 5, "type": "uint16", "measurement": "medium_frequency_data"}),
        serde_json::json!({"name": "process", "kind": "holding", "address": 6, "type": "uint16", "measurement": "medium_frequency_data"}),
        serde_json::json!({"name": "batch", "kind": "holding", "address": 8, "type": "string", "length": 8, "measurement": "cycle_context_data"}),
        serde_json::json!({"name": "operator_nik", "kind": "holding", "address": 16, "type": "string", "length": 5, "measurement": "cycle_context_data"}),
        serde_json::json!({"name": "shift", "kind": "holding", "address": 21, "type": "uint16", "measurement": "cycle_context_data"}),
        serde_json::json!({"name": "reset_counter", "kind": "holding", "address": 22, "type": "uint32", "measurement": "maintenance_events"}),
    ];
    let mut addr = 30;
    while regs.len() < n {
        regs.push(serde_json::json!({"name": format!("param_{addr}"), "kind": "holding", "address": addr, "type": "uint16", "measurement": "medium_frequency_data"}));
        addr += 2;
    }
    regs
}

/// The benchmarks' configuration: machines `M00`, `M01`, ... on loopback `ports`, each with
/// `nregs` registers polled every `interval` seconds, writing to `influx`.
pub fn bench_config(
    state_dir: &Path,
    influx: &Influxd,
    ports: &[u16],
    nregs: usize,
    interval: f64,
) -> serde_json::Value {
    serde_json::json!({
        "state_dir": state_dir,
        "status": {"listen": format!("127.0.0.1:{}", free_port())},
        "influxdb": {"url": influx.url(), "api": "v1", "database": influx.db, "flush_interval_s": 1},
        "profiles": {"jet": {"poll_interval_s": interval, "registers": bench_registers(nregs),
            "maintenance": [{"register": "reset_counter", "edge": "decrease"}]}},
        "machines": ports.iter().enumerate().map(|(i, p)| serde_json::json!({"name": format!("M{i:02}"),
            "ip_address": "127.0.0.1", "port": p, "profile": "jet"})).collect::<Vec<_>>()
    })
}
