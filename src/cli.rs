//! The command line: `run`, `check`, `once`, `scan`, `watch`, `simulate`, `demo`. Exit codes: 0 success,
//! 1 a runtime failure (a machine did not answer in `once`, a port could not be opened),
//! 2 an invalid configuration or command line. Logs go to stderr (`logging`, `RUST_LOG`);
//! line protocol and summaries go to stdout.

use crate::app;
use crate::clock::Clock;
use crate::config::{
    self, Config, ConfigError, EndpointKind, InfluxApi, InfluxSetting, Measurement,
};
use crate::poller::{transport_for, Poller};
use crate::simulate;
use crate::status::lock;
use crate::uploader::buffer::MemoryBuffer;
use crate::uploader::sink::{InfluxSink, StdoutSink};
use crate::uploader::spool::{Spool, SpoolOptions};
use clap::{Parser, Subcommand};
use crossbeam_channel::{bounded, select, Receiver};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::Certificate;

/// The certificates trusted for https://; `None`: Mozilla's roots.
type Roots = Option<Vec<Certificate<'static>>>;

pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;

#[derive(Parser)]
#[command(
    name = "dyeing-gateway",
    version,
    about = "Dyeing machines (Modbus TCP/RTU) to InfluxDB and the plant's batch API"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "/etc/machines.json")]
    config: PathBuf,
    /// `.env` file with INFLUX_URL, INFLUX_TOKEN, ... (default: `.env` beside the config).
    #[arg(long, global = true)]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the daemon; stops on SIGTERM or SIGINT).
    Run {
        /// Stop after this many seconds (for tests and benchmarks).
        #[arg(long, value_parser = seconds)]
        duration: Option<f64>,
    },
    /// Validate the config and environment and print a summary, the write map and where each
    /// value came from.
    Check,
    /// Poll every machine once and print line protocol (for commissioning).
    Once,
    /// Find and describe the Modbus devices at TARGET (only reads; never writes):
    /// tcp://HOST[:PORT], rtu-over-tcp://HOST:PORT or rtu:///dev/ttyUSB0?baud=9600&parity=E
    /// (baud=auto tries the common rates and parities).
    Scan {
        target: String,
        /// Unit ids to probe (default: 1-247 on serial, 1 and 255 on TCP).
        #[arg(long)]
        units: Option<String>,
        /// Tables to map.
        #[arg(long, default_value = "holding,input,coil,discrete_input")]
        tables: String,
        /// Highest address tried in each table.
        #[arg(long, default_value_t = 9999)]
        max_address: u16,
        /// Most requests per second (0: no limit).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Rounds of reading what was found, for the classification.
        #[arg(long, default_value_t = 5)]
        samples: u32,
        /// Time between rounds (`1s`, `500ms` or seconds).
        #[arg(long, default_value = "1s", value_parser = interval)]
        interval: Duration,
        /// Reply timeout per request (default: 0.1 s on serial, 0.5 s on TCP).
        #[arg(long, value_parser = interval)]
        timeout: Option<Duration>,
        /// Most requests spent mapping one table of one unit (a strict device refuses a block
        /// with any absent address: mapping an empty area costs about one request per address).
        #[arg(long, default_value_t = 2000)]
        max_requests: u32,
        /// Print a config proposal (JSON) on stdout; the report goes to stderr.
        #[arg(long)]
        propose: bool,
        /// NAME=REGISTER[@MEASUREMENT]: name a scanned register in the proposal.
        #[arg(long)]
        hint: Vec<String>,
    },
    /// A live view of one configured machine: every register raw (hex) and decoded, changes
    /// highlighted, refreshed at its poll interval (plain terminal output; Ctrl-C ends).
    Watch {
        machine: String,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Serve simulated dyeing machines for the machines in the config.
    Simulate {
        /// Listen on this host instead of each endpoint's ip_address (e.g. 127.0.0.1).
        #[arg(long)]
        bind_host: Option<String>,
        /// Seconds per step of the simulated process.
        #[arg(long, default_value_t = 20.0, value_parser = positive_seconds)]
        step: f64,
        /// Stop after this many seconds.
        #[arg(long, value_parser = seconds)]
        duration: Option<f64>,
    },
    /// Read a password on standard input and print the `password_hash` value (PBKDF2-SHA256)
    /// for the status page's login.
    HashPassword,
    /// Run the gateway against its own simulated machines, printing each write request.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_parser = seconds)]
        duration: Option<f64>,
    },
}

/// The longest time a seconds option takes (about 31 years): any `Duration` arithmetic with
/// it stays far from overflowing.
const MAX_SECONDS: f64 = 1e9;

/// A seconds option: a finite number from 0 to `MAX_SECONDS` (a bad value is a command-line
/// error, exit code 2, before anything starts).
fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=MAX_SECONDS).contains(&s) => Ok(s),
        _ => Err(format!(
            "expected a number of seconds from 0 to {MAX_SECONDS:e}"
        )),
    }
}

/// A seconds option that must be more than 0.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match seconds(text) {
        Ok(s) if s > 0.0 => Ok(s),
        _ => Err(format!(
            "expected a number of seconds above 0, at most {MAX_SECONDS:e}"
        )),
    }
}

/// A duration option: `1s`, `250ms` or a number of seconds.
fn interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 3600.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err("expected a duration such as 1s, 250ms or 0.5 (at most an hour)".into()),
    }
}

fn watch(cli: &Cli, machine: &str, count: Option<u64>) -> Result<(), i32> {
    let config = load(cli)?;
    let sig = signals().map_err(runtime("signal handling"))?;
    crate::watch::run(&config, machine, count, &|| sig.try_recv().is_ok()).map_err(|e| {
        eprintln!("watch: {e}");
        EXIT_CONFIG
    })
}

#[allow(clippy::too_many_arguments)]
fn scan(
    target: &str,
    units: Option<&str>,
    tables: &str,
    max_address: u16,
    rate: f64,
    samples: u32,
    interval: Duration,
    timeout: Option<Duration>,
    table_budget: u32,
    propose: bool,
    hints: &[String],
) -> Result<(), i32> {
    use crate::scan;
    let usage = |e: String| {
        eprintln!("scan: {e}");
        EXIT_CONFIG
    };
    let target = scan::target::parse(target).map_err(usage)?;
    let serial = target.is_serial();
    let units = match units {
        Some(u) => scan::parse_units(u).map_err(usage)?,
        None if serial => (1..=247).collect(),
        None => vec![1, 255],
    };
    let hints = hints
        .iter()
        .map(|h| scan::propose::parse_hint(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(usage(
            "--rate must be a number of requests per second (0: no limit)".into(),
        ));
    }
    let opts = scan::Options {
        target,
        units,
        tables: scan::parse_tables(tables).map_err(usage)?,
        max_address,
        rate,
        samples: samples.max(1),
        interval,
        timeout: timeout.unwrap_or(if serial {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        }),
        table_budget,
    };
    let report = scan::run(&opts).map_err(|e| {
        eprintln!("scan: {e}");
        EXIT_RUNTIME
    })?;
    let text = scan::human(&report);
    if propose {
        eprint!("{text}");
        let json = scan::propose::propose(&report, &hints);
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string())
        );
    } else {
        print!("{text}");
    }
    Ok(())
}

/// SIGTERM, SIGINT (and later SIGHUP) arrive on this channel.
fn signals() -> std::io::Result<Receiver<i32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = bounded(4);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Wait for SIGTERM/SIGINT or the duration.
fn wait(sig: &Receiver<i32>, duration: Option<f64>) {
    let timeout = duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::MAX);
    select! {
        recv(sig) -> s => log::info!("signal {} received: shutting down", s.unwrap_or(0)),
        default(timeout) => log::info!("duration reached: shutting down"),
    }
}

fn load_config(cli: &Cli) -> Result<Config, config::ConfigErrors> {
    let environment: HashMap<String, String> = std::env::vars().collect();
    config::load(&config::Sources {
        config: &cli.config,
        env_file: cli.env_file.as_deref(),
        environment: &environment,
    })
}

fn load(cli: &Cli) -> Result<Config, i32> {
    load_config(cli).map_err(|e| {
        eprintln!("configuration error in {}:", cli.config.display());
        for err in &e.0 {
            eprintln!("  {err}");
        }
        EXIT_CONFIG
    })
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    crate::logging::init();
    let result = match &cli.command {
        Command::Run { duration } => run(&cli, *duration),
        Command::Check => check(&cli),
        Command::Once => once(&cli),
        Command::Simulate {
            bind_host,
            step,
            duration,
        } => simulate_cmd(&cli, bind_host.as_deref(), *step, *duration),
        Command::Demo { duration } => demo(&cli, *duration),
        Command::HashPassword => hash_password(),
        Command::Watch { machine, count } => watch(&cli, machine, *count),
        Command::Scan {
            target,
            units,
            tables,
            max_address,
            rate,
            samples,
            interval,
            timeout,
            max_requests,
            propose,
            hint,
        } => scan(
            target,
            units.as_deref(),
            tables,
            *max_address,
            *rate,
            *samples,
            *interval,
            *timeout,
            *max_requests,
            *propose,
            hint,
        ),
    };
    match result {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn runtime<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> i32 + '_ {
    move |e| {
        log::error!("{what}: {e}");
        EXIT_RUNTIME
    }
}

/// The threads of one configuration: the gateway's and the watchdog's.
struct Generation {
    running: app::Running,
    watchdog: Option<std::thread::JoinHandle<()>>,
    watchdog_stop: crossbeam_channel::Sender<()>,
}

impl Generation {
    fn stop(self) {
        self.running.shutdown();
        drop(self.watchdog_stop);
        if let Some(h) = self.watchdog {
            let _ = h.join();
        }
    }
}

/// The certificates trusted for https:// (`None`: Mozilla's roots), read from `tls.ca_file`
/// at start-up, where the HTTP clients are built (validation only checks the name). A file
/// that cannot be read or holds no certificate is a configuration error at its JSON path.
pub fn trusted_roots(config: &Config) -> Result<Roots, ConfigError> {
    config
        .tls_ca_file
        .as_deref()
        .map(crate::http::load_ca)
        .transpose()
        .map_err(|message| ConfigError {
            path: "$.tls.ca_file".into(),
            message,
        })
}

/// What `run` needs beyond a valid config: an InfluxDB to write to, and the trusted roots.
fn runnable(config: &Config) -> Result<Roots, ConfigError> {
    config.influx.configured().map_err(Clone::clone)?;
    trusted_roots(config)
}

/// Start every thread for `config` (which has an InfluxDB), trusting `ca` for https://.
fn start_generation(
    config: &Config,
    ca: Option<&[Certificate<'static>]>,
) -> Result<Generation, String> {
    let influx = config.influx.configured().map_err(|p| p.to_string())?;
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        log::warn!(
            "state directory {} is not usable: {e}",
            config.state_dir.display()
        );
    }
    let sink = InfluxSink::new(influx, ca);
    log::info!(
        "dyeing-gateway {} starting: {} machines on {} endpoints, writing to {}{}",
        env!("CARGO_PKG_VERSION"),
        config.machines.len(),
        config.endpoints.len(),
        crate::uploader::sink::Sink::describe(&sink),
        if config.shadow_mode {
            "; SHADOW MODE: nothing is written to machines or posted to the API"
        } else {
            ""
        }
    );
    let spool = Spool::open(SpoolOptions {
        dir: config.state_dir.join("spool"),
        window: influx.fsync_window,
        max_bytes: influx.spool_max_bytes,
        max_memory: influx.buffer_max_points,
        max_memory_bytes: influx.buffer_max_bytes,
    });
    let clock = Arc::new(Clock::new(config.clock.check.clone()));
    let running = app::start(
        config,
        Box::new(sink),
        Box::new(spool),
        app::Settings {
            journal: app::journal_options(),
            ..app::uploader_settings(config)
        },
        clock,
        ca,
    )
    .map_err(|e| format!("cannot start threads: {e}"))?;
    let (watchdog_stop, watchdog_rx) = bounded::<()>(0);
    let watchdog = crate::watchdog::spawn(running.liveness.clone(), watchdog_rx)
        .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
    Ok(Generation {
        running,
        watchdog,
        watchdog_stop,
    })
}

/// The status page's thread and the sender whose drop stops it.
type StatusThread = (std::thread::JoinHandle<()>, crossbeam_channel::Sender<()>);

/// Start the status page; returns its thread and the sender whose drop stops it.
fn start_status(
    config: &Config,
    shared: &crate::status_http::Shared,
) -> Result<Option<StatusThread>, i32> {
    let Some(sp) = &config.status else {
        return Ok(None);
    };
    // The page is secondary: a port in use is logged and the gateway runs without it.
    let server = match crate::status_http::Server::bind(sp.listen, Default::default()) {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "status page: cannot listen on {}: {e}; running without it",
                sp.listen
            );
            return Ok(None);
        }
    };
    let addr = server
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| sp.listen.to_string());
    log::info!("status page on http://{addr}/ (also /status.json and /metrics)");
    eprintln!("status page: http://{addr}/");
    let (stop, stop_rx) = bounded::<()>(0);
    warn_legacy(&sp.auth);
    lock(&shared.login).set_login(sp.auth.clone());
    let shared = shared.clone();
    let h = std::thread::Builder::new()
        .name("status-http".into())
        .spawn(move || crate::status_http::run(server, shared, stop_rx))
        .map_err(runtime("cannot start the status page"))?;
    Ok(Some((h, stop)))
}

/// Take the page's login from a reloaded config. The page keeps the address it was started
/// on (`listen`), so a config without a login does not open a page that listens beyond
/// loopback: the old login stays.
fn reload_login(shared: &crate::status_http::Shared, listen: Option<SocketAddr>, new: &Config) {
    let login = new.status.as_ref().and_then(|s| s.auth.clone());
    match listen {
        Some(addr) if login.is_none() && !addr.ip().is_loopback() => log::warn!(
            "status page: the new configuration has no login; {addr} keeps the previous one until a restart"
        ),
        _ => {
            warn_legacy(&login);
            lock(&shared.login).set_login(login);
        }
    }
}

fn warn_legacy(login: &Option<crate::status_http::login::Login>) {
    if login.as_ref().is_some_and(|l| l.hash.is_legacy()) {
        log::warn!(
            "status page: the password hash is the old fast salted SHA-256; make a new one with `dyeing-gateway hash-password` and put it in status.password_hash"
        );
    }
}

/// Start the last good configuration again after a new one failed to start. Threads of the
/// failed attempt may still be ending, so a few tries, a second apart.
fn restart_last_good(
    config: &Config,
    ca: Option<&[Certificate<'static>]>,
) -> Result<Generation, String> {
    let mut tries = 0;
    loop {
        match start_generation(config, ca) {
            Ok(g) => return Ok(g),
            Err(e) if tries >= 4 => return Err(e),
            Err(e) => {
                tries += 1;
                log::warn!("cannot restart the last good configuration yet ({e}); retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn run(cli: &Cli, duration: Option<f64>) -> Result<(), i32> {
    let mut config = load(cli)?;
    let mut ca = runnable(&config).map_err(|problem| {
        eprintln!(
            "configuration error in {}:\n  {problem}",
            cli.config.display()
        );
        EXIT_CONFIG
    })?;
    let sig = signals().map_err(runtime("cannot install signal handlers"))?;
    let mut generation =
        start_generation(&config, ca.as_deref()).map_err(runtime("cannot start"))?;
    let shared = crate::status_http::Shared::new(generation.running.board.clone());
    let status = start_status(&config, &shared)?;
    // Only the page and the log use the slots; the thread is not watched by the watchdog (a
    // hanging `rauc` is killed by the thread itself).
    let update_status =
        crate::update::start(shared.update.clone()).map_err(runtime("cannot start"))?;
    // The page's address is kept until a restart.
    let listen = status
        .as_ref()
        .and(config.status.as_ref())
        .map(|sp| sp.listen);
    crate::watchdog::ready(&format!(
        "polling {} machines on {} endpoints",
        config.machines.len(),
        config.endpoints.len()
    ));
    let deadline = duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(|d| std::time::Instant::now() + Duration::from_secs_f64(d));
    loop {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(std::time::Instant::now())
        });
        let signal = select! {
            recv(sig) -> s => s.unwrap_or(0),
            default(left) => {
                log::info!("duration reached: shutting down");
                break;
            }
        };
        if signal != signal_hook::consts::SIGHUP {
            log::info!("signal {signal} received: shutting down");
            break;
        }
        // SIGHUP: reload. A config that fails validation is refused; the last good one runs on.
        log::info!("SIGHUP: reloading {}", cli.config.display());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let loaded = load_config(cli)
            .map_err(|e| e.to_string().replace('\n', "; "))
            .and_then(|new| match runnable(&new) {
                Ok(new_ca) => Ok((new, new_ca)),
                Err(p) => Err(p.to_string()),
            });
        let refused = match loaded {
            Err(e) => Some(e),
            Ok((new, new_ca)) => {
                generation.stop();
                match start_generation(&new, new_ca.as_deref()) {
                    Ok(g) => {
                        generation = g;
                        *lock(&shared.board) = generation.running.board.clone();
                        reload_login(&shared, listen, &new);
                        log::info!("configuration reloaded: {} machines", new.machines.len());
                        // The last good configuration, for the next reload that fails to start.
                        config = new;
                        ca = new_ca;
                        None
                    }
                    Err(e) => {
                        log::error!("cannot start with the new configuration ({e}); restarting with the last good one");
                        generation = restart_last_good(&config, ca.as_deref())
                            .map_err(runtime("cannot restart"))?;
                        *lock(&shared.board) = generation.running.board.clone();
                        Some(e)
                    }
                }
            }
        };
        {
            let mut r = lock(&shared.reload);
            r.last_reload_ms = Some(crate::clock::wall_ms());
            if let Some(e) = &refused {
                log::error!(
                    "configuration reload refused, still running on the last good one: {e}"
                );
            }
            r.last_error = refused;
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    crate::watchdog::stopping();
    generation.stop();
    for (h, stop) in status.into_iter().chain(update_status) {
        drop(stop);
        let _ = h.join();
    }
    log::info!("stopped");
    Ok(())
}

fn hash_password() -> Result<(), i32> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(runtime("cannot read the password"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("no password given on standard input");
        return Err(EXIT_CONFIG);
    }
    println!(
        "{}",
        crate::status_http::login::PasswordHash::new(password).encode()
    );
    Ok(())
}

fn check(cli: &Cli) -> Result<(), i32> {
    let config = load(cli)?;
    trusted_roots(&config).map_err(|problem| {
        eprintln!(
            "configuration error in {}:\n  {problem}",
            cli.config.display()
        );
        EXIT_CONFIG
    })?;
    print!("{}", summary(cli.config.as_path(), &config));
    Ok(())
}

/// The `check` summary: what will be polled, written, and where each value came from.
pub fn summary(path: &Path, c: &Config) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "config {}: valid", path.display());
    let _ = writeln!(o, "state directory: {}", c.state_dir.display());
    if c.shadow_mode {
        let _ = writeln!(
            o,
            "SHADOW MODE: writes to machines and posts to the API are only logged and audited"
        );
    }
    let _ = writeln!(
        o,
        "clock: {}",
        match &c.clock.check {
            crate::clock::SyncCheck::Off => "trusted (no synchronization check)".to_string(),
            crate::clock::SyncCheck::File(p) => format!("synchronized when {} exists", p.display()),
        }
    );
    match &c.status {
        Some(sp) => {
            let _ = writeln!(
                o,
                "status page: http://{}/{}",
                sp.listen,
                if sp.auth.is_some() {
                    " (login required)"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(o, "status page: off");
        }
    }
    match &c.influx {
        InfluxSetting::Configured(i) => {
            let api = match &i.api {
                InfluxApi::V2 { org, bucket, token } => {
                    format!("v2 API, org {org}, bucket {bucket}, token {token}")
                }
                InfluxApi::V1 {
                    database, username, ..
                } => format!(
                    "1.x API, database {database}{}",
                    username
                        .as_ref()
                        .map(|u| format!(", user {u}, password [redacted]"))
                        .unwrap_or_default()
                ),
            };
            let _ = writeln!(o, "influxdb: {} ({api})", crate::http::redact_url(&i.url));
        }
        InfluxSetting::Missing(p) => {
            let _ = writeln!(
                o,
                "influxdb: not configured ({p}); `run` will refuse to start"
            );
        }
    }
    let _ = writeln!(o, "values that the environment can set:");
    for p in &c.provenance {
        let from = match &p.source {
            config::Source::Unset => "(not set)".to_string(),
            other => format!("from {other}"),
        };
        let _ = writeln!(o, "  {:<28} {:<40} {from}", p.key, p.shown);
    }
    let _ = writeln!(o, "endpoints:");
    for e in &c.endpoints {
        let _ = writeln!(
            o,
            "  {:<16} {} (timeout {:?}{}{})",
            e.name,
            e.describe(),
            e.timeout,
            if e.close_after_poll {
                ", closed after each poll"
            } else {
                ""
            },
            if e.request_pause.is_zero() {
                String::new()
            } else {
                format!(", {:?} between requests", e.request_pause)
            }
        );
    }
    let _ = writeln!(o, "machines:");
    let (tx, _rx) = bounded(1);
    for (ei, e) in c.endpoints.iter().enumerate() {
        let poller = Poller::new(
            c,
            ei,
            transport_for(e),
            &vec![Default::default(); c.machines.len()],
            tx.clone(),
            Arc::new(Clock::new(c.clock.check.clone())),
        );
        for (name, groups) in poller.plan_summary() {
            let Some(m) = c.machines.iter().find(|m| m.name == name) else {
                continue;
            };
            let groups: Vec<String> = groups
                .iter()
                .map(|(iv, n)| format!("{n} read block(s) every {:?}", iv))
                .collect();
            let _ = writeln!(
                o,
                "  {:<12} unit {:>3} on {:<16} {} registers; {}",
                m.name,
                m.unit_id,
                e.name,
                m.registers.len(),
                groups.join(", ")
            );
            for meas in Measurement::ALL {
                let names: Vec<&str> = m
                    .registers
                    .iter()
                    .filter(|r| r.measurement == meas)
                    .map(|r| r.name.as_str())
                    .collect();
                if !names.is_empty() {
                    let _ = writeln!(o, "      {:<22} {}", meas.as_str(), names.join(", "));
                }
            }
        }
    }
    let _ = writeln!(o, "write map (the only registers the gateway ever writes):");
    let mut any = false;
    for m in &c.machines {
        if let Some(b) = &m.batch_write {
            any = true;
            let _ = writeln!(
                o,
                "  {:<12} holding {}..={} (batch name, {} chars), holding {} (batch handshake, function {}){}{}",
                m.name,
                b.address,
                b.address + b.registers - 1,
                b.registers * 2,
                b.handshake_address,
                if b.handshake_fc16 { 16 } else { 6 },
                b.identity
                    .map(|(r, v)| format!(", only while `{}` holds {v}", m.registers[r].name))
                    .unwrap_or_default(),
                if !b.enabled || c.shadow_mode { "  [writes disabled]" } else { "" }
            );
        }
    }
    if !any {
        let _ = writeln!(o, "  (none: no machine has batch_write)");
    }
    o
}

fn once(cli: &Cli) -> Result<(), i32> {
    let config = load(cli)?;
    let statuses: Vec<_> = config
        .machines
        .iter()
        .map(|_| std::sync::Arc::new(std::sync::Mutex::new(Default::default())))
        .collect();
    let (tx, _rx) = bounded(1);
    let mut all_online = true;
    let clock = Arc::new(Clock::new(config.clock.check.clone()));
    for (ei, ep) in config.endpoints.iter().enumerate() {
        let mut poller = Poller::new(
            &config,
            ei,
            transport_for(ep),
            &statuses,
            tx.clone(),
            clock.clone(),
        );
        for line in poller.poll_all_once() {
            println!("{line}");
        }
    }
    for st in &statuses {
        let st: crate::status::MachineStatus = lock(st).clone();
        if st.online != Some(true) {
            all_online = false;
            eprintln!(
                "machine {} did not answer: {}",
                st.name,
                st.last_error.unwrap_or_default()
            );
        }
    }
    if all_online {
        Ok(())
    } else {
        Err(EXIT_RUNTIME)
    }
}

fn simulate_cmd(
    cli: &Cli,
    bind_host: Option<&str>,
    step: f64,
    duration: Option<f64>,
) -> Result<(), i32> {
    let config = load(cli)?;
    let sig = signals().map_err(runtime("cannot install signal handlers"))?;
    let sim =
        simulate::start(&config, bind_host, step).map_err(runtime("cannot start the simulator"))?;
    for (name, addr) in &sim.addresses {
        println!("simulating endpoint {name} on {addr}");
    }
    for e in &config.endpoints {
        if let EndpointKind::Rtu(s) = &e.kind {
            println!("simulating endpoint {} on serial {}", e.name, s.path);
        }
    }
    wait(&sig, duration);
    drop(sim);
    Ok(())
}

/// The built-in demo configuration: two jet-dyeing HMIs on loopback Modbus TCP and two package
/// machines on a simulated RS-485 bus.
pub const DEMO_CONFIG: &str = include_str!("demo.json");

fn demo(cli: &Cli, duration: Option<f64>) -> Result<(), i32> {
    let mut config = if cli.config.exists() && cli.config != Path::new("/etc/machines.json") {
        load(cli)?
    } else {
        let raw = config::parse(DEMO_CONFIG).map_err(|e| {
            eprintln!("built-in demo config: {e}");
            EXIT_CONFIG
        })?;
        config::validate_raw(raw).map_err(|e| {
            eprintln!("built-in demo config: {e}");
            EXIT_CONFIG
        })?
    };
    // Serial buses are simulated on a pty pair linked into a private temporary directory.
    let tmp = std::env::temp_dir().join(format!("dyeing-gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(runtime("cannot create the demo directory"))?;
    for ep in &mut config.endpoints {
        if let EndpointKind::Rtu(s) = &mut ep.kind {
            if !Path::new(&s.path).exists() {
                std::fs::create_dir_all(&tmp)
                    .map_err(runtime("cannot create the demo directory"))?;
                s.path = tmp.join(&ep.name).display().to_string();
            }
        }
    }
    // The plant API stand-in: finish reports, new batches, confirmations, all printed.
    let api = crate::plant_api::start().map_err(runtime("cannot start the plant API stand-in"))?;
    let base = format!("http://{}", api.addr);
    config.api.batch_url = Some(format!("{base}/batch/finish"));
    config.api.trigger_url = Some(format!("{base}/trigger"));
    config.api.strings_url = Some(format!("{base}/strings"));
    config.api.strings_conf_url = Some(format!("{base}/strings/confirm"));
    config.api.poll_interval = Duration::from_secs(3);
    config.state_dir = tmp.join("state");
    let sig = signals().map_err(runtime("cannot install signal handlers"))?;
    let sim = simulate::start(&config, Some("127.0.0.1"), 5.0)
        .map_err(runtime("cannot start the simulator"))?;
    // Point the gateway at the ports the simulator actually got.
    for ep in &mut config.endpoints {
        if let (
            EndpointKind::Tcp { host, port } | EndpointKind::RtuOverTcp { host, port },
            Some(addr),
        ) = (&mut ep.kind, sim.addresses.get(&ep.name))
        {
            *host = addr.ip().to_string();
            *port = addr.port();
        }
    }
    eprintln!(
        "demo: {} simulated machines; each InfluxDB write request and each plant API call is printed below (Ctrl-C stops)",
        config.machines.len()
    );
    let mut settings = app::uploader_settings(&config);
    settings.rejected_file = None;
    let running = app::start(
        &config,
        Box::new(StdoutSink { requests: 0 }),
        Box::new(MemoryBuffer::new(100_000)),
        settings,
        // Simulated machines printed to the terminal: no clock synchronization to wait for.
        Arc::new(Clock::new(crate::clock::SyncCheck::Off)),
        // The stand-in plant API is plain HTTP on loopback.
        None,
    )
    .map_err(runtime("cannot start threads"))?;
    let status = start_status(
        &config,
        &crate::status_http::Shared::new(running.board.clone()),
    )?;
    wait(&sig, duration);
    let board = running.board.clone();
    if let Some((h, stop)) = status {
        drop(stop);
        let _ = h.join();
    }
    running.shutdown();
    drop(sim);
    drop(api);
    let _ = std::fs::remove_dir_all(&tmp);
    for m in board.snapshot().machines {
        eprintln!(
            "{}: online {:?}, {} polls, {} requests, {} points, errors {:?}",
            m.name, m.online, m.polls, m.requests, m.points, m.errors
        );
    }
    Ok(())
}
