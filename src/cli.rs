//! The command line: argument parsing and dispatch of `run` (to `app::run`), `check`, `once`,
//! `scan`, `watch`, `simulate`, `demo` (each to its module). Exit codes: 0 success,
//! 1 a runtime failure (a machine did not answer in `once`, a port could not be opened),
//! 2 an invalid configuration or command line. Logs go to stderr (`logging`, `RUST_LOG`);
//! line protocol and summaries go to stdout.

use crate::app;
use crate::config::{self, Config, EndpointKind};
use crate::simulate;
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const EXIT_RUNTIME: i32 = 1;
pub(crate) const EXIT_CONFIG: i32 = 2;

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
    let sig = app::Signals::start().map_err(runtime("signal handling"))?;
    crate::watch::run(&config, machine, count, &|| sig.rx.try_recv().is_ok()).map_err(|e| {
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

fn run(cli: &Cli, duration: Option<f64>) -> Result<(), i32> {
    let config = load(cli)?;
    let ca = app::runnable(&config).map_err(|problem| {
        eprintln!(
            "configuration error in {}:\n  {problem}",
            cli.config.display()
        );
        EXIT_CONFIG
    })?;
    app::run(config, ca, &cli.config, &|| load_config(cli), duration).map_err(|e| {
        log::error!("{e}");
        EXIT_RUNTIME
    })
}

/// `check`: the summary of a valid config whose CA file (if any) can be read.
fn check(cli: &Cli) -> Result<(), i32> {
    let config = load(cli)?;
    app::trusted_roots(&config).map_err(|problem| {
        eprintln!(
            "configuration error in {}:\n  {problem}",
            cli.config.display()
        );
        EXIT_CONFIG
    })?;
    print!("{}", crate::check::summary(&cli.config, &config));
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

fn once(cli: &Cli) -> Result<(), i32> {
    let config = load(cli)?;
    if crate::once::run(&config) {
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
    let sig = app::Signals::start().map_err(runtime("cannot install signal handlers"))?;
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
    sig.wait(duration);
    drop(sim);
    Ok(())
}

fn demo(cli: &Cli, duration: Option<f64>) -> Result<(), i32> {
    let config = if cli.config.exists() && cli.config != Path::new("/etc/machines.json") {
        load(cli)?
    } else {
        crate::demo::builtin_config().map_err(|e| {
            eprintln!("built-in demo config: {e}");
            EXIT_CONFIG
        })?
    };
    crate::demo::run(config, duration).map_err(|e| {
        log::error!("{e}");
        EXIT_RUNTIME
    })
}
