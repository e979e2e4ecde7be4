//! The typed configuration. `load` reads `machines.json`, overlays the environment and `.env`
//! (`env.rs`), and `validate` turns the raw file (`raw.rs`) into `Config`, collecting every
//! problem with its JSON path (`machines[2].registers[0].type: ...`). A `Config` that exists is
//! valid: the rest of the program never re-checks it.
//!
//! Words: an *endpoint* is one Modbus connection (a serial port or a `host:port`); a *machine* is
//! one unit id behind an endpoint; a *profile* is a register map shared by machines of one model.

mod env;
pub mod raw;

pub use env::{Provenance, Source};
// Types owned by the layers below, which validation builds: a register's `kind` is its Modbus
// table; serial settings, endpoint kinds and spec limits are the Modbus layer's, data types,
// word orders and read limits the decoder's and the read planner's.
pub use crate::modbus::codec::Table as RegisterKind;
pub use crate::modbus::serial::{Parity, Rs485, SerialSettings};
pub use crate::modbus::EndpointKind;
pub use crate::registers::plan::DeviceLimits;
pub use crate::registers::{DataType, StringOrder, WordOrder};

use crate::modbus::codec::{SPEC_MAX_BITS, SPEC_MAX_REGISTERS, TCP_MAX_REGISTERS};
use crate::secret::Secret;
use raw::*;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default poll interval of a machine (spec: 5 s).
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);
/// Default heartbeat: an unchanged measurement is still written this often.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measurement {
    HighFrequency,
    MediumFrequency,
    CycleContext,
    Maintenance,
}

impl Measurement {
    pub const ALL: [Measurement; 4] = [
        Measurement::HighFrequency,
        Measurement::MediumFrequency,
        Measurement::CycleContext,
        Measurement::Maintenance,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Measurement::HighFrequency => "high_frequency_data",
            Measurement::MediumFrequency => "medium_frequency_data",
            Measurement::CycleContext => "cycle_context_data",
            Measurement::Maintenance => "maintenance_events",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Measurement::ALL.into_iter().find(|m| m.as_str() == s)
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub name: String,
    pub kind: RegisterKind,
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub measurement: Measurement,
    pub deadband: f64,
    /// Read only when the connection is (re)established (serial number, firmware version);
    /// its value goes out with the machine's next points of its measurement.
    pub read_once: bool,
}

impl Register {
    /// How many registers (or bits, for coils and discrete inputs) the value occupies.
    pub fn quantity(&self) -> u16 {
        self.data_type.quantity()
    }
    /// Scaled values are always floats, so a scale change never changes the field's type.
    pub fn is_scaled(&self) -> bool {
        self.scale.is_some() || self.offset.is_some()
    }
}

/// The decoder and the read planner see a register through `Field`.
impl crate::registers::Field for Register {
    fn table(&self) -> RegisterKind {
        self.kind
    }
    fn address(&self) -> u16 {
        self.address
    }
    fn data_type(&self) -> DataType {
        self.data_type
    }
    fn order(&self) -> WordOrder {
        self.order
    }
    fn scale(&self) -> Option<f64> {
        self.scale
    }
    fn offset(&self) -> Option<f64> {
        self.offset
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// A counter that goes down (reset).
    Decrease,
    /// A bit or value that goes from 0 to non-zero.
    Rise,
    /// Any change.
    Change,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Index into `Machine::registers`.
    pub register: usize,
    pub edge: Edge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub register: usize,
    pub finish_code: i64,
    pub batch_register: Option<usize>,
    pub idle_codes: Vec<i64>,
    /// Codes that count as running; `None`: any code that is neither idle nor finish.
    pub running_codes: Option<Vec<i64>>,
}

/// The only area of a machine the gateway may write: the batch-input string and its handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchWrite {
    pub address: u16,
    pub registers: u16,
    pub string_order: StringOrder,
    pub handshake_address: u16,
    pub enabled: bool,
    /// Set the handshake with function 16 instead of 6.
    pub handshake_fc16: bool,
    pub overwrite_unconsumed: bool,
    /// Allowed characters; `None`: printable ASCII.
    pub charset: Option<String>,
    /// (register index, required value) checked before any write.
    pub identity: Option<(usize, i64)>,
}

impl BatchWrite {
    /// An enabled area with every option at its default (high-byte-first string, handshake
    /// set with function 6, no overwrite of an unconsumed batch, printable ASCII, no identity
    /// check).
    pub fn area(address: u16, registers: u16, handshake_address: u16) -> BatchWrite {
        BatchWrite {
            address,
            registers,
            string_order: StringOrder::HighFirst,
            handshake_address,
            enabled: true,
            handshake_fc16: false,
            overwrite_unconsumed: false,
            charset: None,
            identity: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub name: String,
    /// Index into `Config::endpoints`.
    pub endpoint: usize,
    pub unit_id: u8,
    pub registers: Vec<Register>,
    /// Poll interval per measurement, indexed by `Measurement::index`.
    pub intervals: [Duration; 4],
    pub limits: DeviceLimits,
    pub tags: Vec<(String, String)>,
    pub triggers: Vec<Trigger>,
    pub finish: Option<Finish>,
    pub batch_write: Option<BatchWrite>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub kind: EndpointKind,
    pub timeout: Duration,
    pub close_after_poll: bool,
    pub request_pause: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Endpoint {
    pub fn describe(&self) -> String {
        match &self.kind {
            EndpointKind::Tcp { host, port } => format!("tcp://{host}:{port}"),
            EndpointKind::RtuOverTcp { host, port } => format!("rtu-over-tcp://{host}:{port}"),
            EndpointKind::Rtu(s) => format!("rtu://{}@{}", s.path, s.baudrate),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InfluxApi {
    V1 {
        database: String,
        username: Option<String>,
        password: Secret,
    },
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Influx {
    pub url: String,
    pub api: InfluxApi,
    pub max_points_per_write: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
    /// Points kept in memory at most (deprecated count bound; `usize::MAX` when not set).
    pub buffer_max_points: usize,
    /// Bytes of points kept in memory at most (`uploader::buffer::point_bytes`).
    pub buffer_max_bytes: usize,
    pub spool_max_bytes: u64,
    /// Points not delivered within this window are written to the spool and synced: the most
    /// a crash or power cut can lose.
    pub fsync_window: Duration,
}

/// Where the status page listens, and the basic-auth login it requires (always on a
/// non-loopback address).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPage {
    pub listen: std::net::SocketAddr,
    pub auth: Option<crate::status_http::login::Login>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClockSettings {
    pub check: crate::clock::SyncCheck,
    /// Deprecated count bound; `usize::MAX` when not set.
    pub hold_max_points: usize,
    /// Bytes of points held at most (`uploader::buffer::point_bytes`).
    pub hold_max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Api {
    pub batch_url: Option<String>,
    pub trigger_url: Option<String>,
    pub strings_url: Option<String>,
    pub strings_conf_url: Option<String>,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub finish_body: serde_json::Value,
    pub confirm_body: serde_json::Value,
    pub field_machine: String,
    pub field_batch: String,
    pub field_id: String,
}

/// The default finish report: what a plant API most likely expects.
pub fn default_finish_body() -> serde_json::Value {
    serde_json::json!({"machine": "{machine}", "batch": "{batch}", "process_code": "{code}",
        "finished_at": "{time}", "event_id": "{event_id}"})
}

/// The default batch confirmation.
pub fn default_confirm_body() -> serde_json::Value {
    serde_json::json!({"machine": "{machine}", "batch": "{batch}", "id": "{entry_id}",
        "written_at": "{time}"})
}

#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    /// Log and audit writes and API posts without doing them.
    pub shadow_mode: bool,
    pub heartbeat: Duration,
    pub tags: Vec<(String, String)>,
    /// `None` when no InfluxDB is configured: `run` refuses that, `once` and `demo` do not care.
    pub influx: Option<Influx>,
    pub influx_problem: Option<ConfigError>,
    pub clock: ClockSettings,
    /// The status page; `None`: off.
    pub status: Option<StatusPage>,
    /// Trusted CAs for https:// URLs; `None`: Mozilla's roots.
    pub tls_ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    pub api: Api,
    pub endpoints: Vec<Endpoint>,
    pub machines: Vec<Machine>,
    /// Where each value that can come from several places came from, for `check`.
    pub provenance: Vec<Provenance>,
}

/// One problem in the configuration, at a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one configuration; the program refuses to start on any of them.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where to find the configuration and the environment that overrides it.
pub struct Sources<'a> {
    pub config: &'a Path,
    /// `.env` file; `None` means `.env` beside the config file, if it exists.
    pub env_file: Option<&'a Path>,
    /// The process environment (passed in so tests need not mutate the real one).
    pub environment: &'a HashMap<String, String>,
}

/// Read, overlay and validate. Every error names a JSON path (or the file itself).
pub fn load(src: &Sources) -> Result<Config, ConfigErrors> {
    let file = src.config.display().to_string();
    let text = std::fs::read_to_string(src.config).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: file.clone(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let mut raw = parse(&text)?;
    let dotenv_path = match src.env_file {
        Some(p) => Some(p.to_path_buf()),
        None => src
            .config
            .parent()
            .map(|d| d.join(".env"))
            .filter(|p| p.exists()),
    };
    let dotenv = match &dotenv_path {
        Some(p) => env::read_dotenv(p).map_err(|m| {
            ConfigErrors(vec![ConfigError {
                path: p.display().to_string(),
                message: m,
            }])
        })?,
        None => Vec::new(),
    };
    let provenance = env::overlay(
        &mut raw,
        src.environment,
        &dotenv,
        dotenv_path.as_deref(),
        &file,
    )
    .map_err(ConfigErrors)?;
    let mut config = validate(raw)?;
    config.provenance = provenance;
    Ok(config)
}

/// Parse the JSON text; a syntax or type error names its path, line and column.
pub fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigErrors(vec![ConfigError {
            path: if path == "." {
                "$".into()
            } else {
                format!("$.{path}")
            },
            message: inner.to_string(),
        }])
    })
}

/// Collects errors while walking the raw config.
struct Check {
    errors: Vec<ConfigError>,
}

impl Check {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A positive, finite duration in seconds.
    fn secs(&mut self, path: &str, v: Option<f64>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) if s.is_finite() && s > 0.0 && s < 1e7 => Duration::from_secs_f64(s),
            Some(s) => {
                self.err(
                    path,
                    format!("must be a positive number of seconds, got {s}"),
                );
                default
            }
        }
    }

    /// A non-negative duration in seconds (0 allowed).
    fn secs0(&mut self, path: &str, v: Option<f64>, default: Duration) -> Duration {
        match v {
            Some(0.0) => Duration::ZERO,
            other => self.secs(path, other, default),
        }
    }

    /// A name written into line protocol (machine, register, tag key or value): a trailing
    /// `\` would escape the separator after it and break every point of the machine.
    fn line_protocol_name(&mut self, path: &str, name: &str) {
        if name.ends_with('\\') {
            self.err(
                path,
                format!(
                    "`{name}` ends in a backslash, which would escape the separator after it in InfluxDB line protocol"
                ),
            );
        }
    }

    fn tags(&mut self, path: &str, tags: &BTreeMap<String, String>) -> Vec<(String, String)> {
        for (k, v) in tags {
            self.line_protocol_name(&format!("{path}.{k}"), k);
            self.line_protocol_name(&format!("{path}.{k}"), v);
            if k.is_empty() || v.is_empty() {
                self.err(
                    format!("{path}.{k}"),
                    "tag keys and values must not be empty",
                );
            }
            if k == "machine" {
                self.err(
                    format!("{path}.{k}"),
                    "the tag `machine` is set by the gateway",
                );
            }
        }
        tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Validate a parsed config without any environment overlay (the built-in demo config).
pub fn validate_raw(raw: RawConfig) -> Result<Config, ConfigErrors> {
    validate(raw)
}

fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut c = Check { errors: Vec::new() };
    let heartbeat = c.secs("$.heartbeat_s", raw.heartbeat_s, DEFAULT_HEARTBEAT);
    let tags = c.tags("$.tags", &raw.tags);
    let (influx, influx_problem) = validate_influx(&mut c, &raw.influxdb);
    let api = validate_api(&mut c, &raw.api);
    let clock = validate_clock(&mut c, &raw.clock);
    let status = validate_status(&mut c, &raw.status);
    let tls_ca = match raw.tls.ca_file.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => match crate::http::load_ca(Path::new(f)) {
            Ok(certs) => Some(certs),
            Err(m) => {
                c.err("$.tls.ca_file", m);
                None
            }
        },
        None => None,
    };
    let mut endpoints = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, e) in raw.endpoints.iter().enumerate() {
        let path = format!("$.endpoints[{i}]");
        if let Some(ep) = validate_endpoint(&mut c, &path, e, &raw.defaults) {
            if by_name.insert(ep.name.clone(), endpoints.len()).is_some() {
                c.err(
                    format!("{path}.name"),
                    format!("endpoint `{}` is defined twice", ep.name),
                );
            }
            endpoints.push(ep);
        }
    }
    for (name, p) in &raw.profiles {
        if let Some(regs) = &p.registers {
            // Validated once here so an error in a shared map is reported at its own path.
            validate_registers(&mut c, &format!("$.profiles.{name}.registers"), regs);
        }
    }
    let mut machines: Vec<Machine> = Vec::new();
    // The index in `$.machines` of each validated machine, for messages.
    let mut raw_index: Vec<usize> = Vec::new();
    for (i, m) in raw.machines.iter().enumerate() {
        let path = format!("$.machines[{i}]");
        if let Some(machine) =
            validate_machine(&mut c, &path, m, &raw, &mut endpoints, &mut by_name)
        {
            if machines.iter().any(|o| o.name == machine.name) {
                c.err(
                    format!("{path}.name"),
                    format!("machine `{}` is defined twice", machine.name),
                );
            }
            if let Some(o) = machines
                .iter()
                .find(|o| o.endpoint == machine.endpoint && o.unit_id == machine.unit_id)
            {
                c.err(
                    format!("{path}.slave_id"),
                    format!(
                        "machine `{}` uses the same endpoint and slave_id {} as `{}`: one of them would read (and write) the other",
                        machine.name, machine.unit_id, o.name
                    ),
                );
            }
            shared_state_file(&mut c, &path, &machine, &machines, &raw_index);
            machines.push(machine);
            raw_index.push(i);
        }
    }
    if raw.machines.is_empty() {
        c.err("$.machines", "no machines configured");
    }
    if !c.errors.is_empty() {
        let mut unique: Vec<ConfigError> = Vec::new();
        for e in c.errors {
            if !unique.contains(&e) {
                unique.push(e);
            }
        }
        return Err(ConfigErrors(unique));
    }
    // Endpoints no machine uses are dropped: no thread is started for them.
    let used: Vec<bool> = (0..endpoints.len())
        .map(|i| machines.iter().any(|m| m.endpoint == i))
        .collect();
    let mut remap = vec![usize::MAX; endpoints.len()];
    let mut kept = Vec::new();
    for (i, ep) in endpoints.into_iter().enumerate() {
        if used[i] {
            remap[i] = kept.len();
            kept.push(ep);
        } else {
            log::warn!("endpoint `{}` has no machines and is not opened", ep.name);
        }
    }
    for m in &mut machines {
        m.endpoint = remap[m.endpoint];
    }
    Ok(Config {
        shadow_mode: raw.shadow_mode.unwrap_or(false),
        state_dir: PathBuf::from(
            raw.state_dir
                .unwrap_or_else(|| "/var/lib/dyeing-gateway".to_string()),
        ),
        heartbeat,
        tags,
        influx,
        influx_problem,
        clock,
        status,
        tls_ca,
        api,
        endpoints: kept,
        machines,
        provenance: Vec::new(),
    })
}

/// State files are named after the machine with every other character mapped to `_`
/// (`batch::state::file_name`), so two names can meet in one file (`JET 1`, `JET_1`): one
/// machine's half-written batch would then be confirmed on the other. Refused here.
fn shared_state_file(
    c: &mut Check,
    path: &str,
    machine: &Machine,
    before: &[Machine],
    raw_index: &[usize],
) {
    let file = crate::batch::state::file_name(&machine.name);
    let kinds = |m: &Machine| {
        [
            ("finish", m.finish.is_some()),
            ("batch", m.batch_write.is_some()),
        ]
    };
    for (o, i) in before.iter().zip(raw_index) {
        if o.name == machine.name || crate::batch::state::file_name(&o.name) != file {
            continue;
        }
        let shared = kinds(machine)
            .into_iter()
            .zip(kinds(o))
            .find(|((_, a), (_, b))| *a && *b);
        if let Some(((dir, _), _)) = shared {
            c.err(
                format!("{path}.name"),
                format!(
                    "machine `{}` would share the state file {dir}/{file}.json with `{}` ($.machines[{i}]); rename one of them",
                    machine.name, o.name
                ),
            );
        }
    }
}

fn validate_url(c: &mut Check, path: &str, url: &str) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        c.err(
            path,
            format!(
                "`{}` is not an http:// or https:// URL",
                crate::http::redact_url(url)
            ),
        );
    }
}

fn validate_influx(c: &mut Check, r: &RawInflux) -> (Option<Influx>, Option<ConfigError>) {
    let Some(url) = r.url.as_deref().filter(|u| !u.is_empty()) else {
        return (
            None,
            Some(ConfigError {
                path: "$.influxdb.url".into(),
                message: "missing (set it in the config or as INFLUX_URL)".into(),
            }),
        );
    };
    validate_url(c, "$.influxdb.url", url);
    let version = match r.api.as_deref() {
        Some("v1") => 1,
        Some("v2") => 2,
        None if r.database.is_some() && r.bucket.is_none() => 1,
        None => 2,
        Some(other) => {
            c.err(
                "$.influxdb.api",
                format!("unknown API `{other}` (expected `v1` or `v2`)"),
            );
            2
        }
    };
    let api = if version == 1 {
        let Some(database) = r.database.clone().filter(|d| !d.is_empty()) else {
            c.err(
                "$.influxdb.database",
                "missing (the v1 API needs a database)",
            );
            return (None, None);
        };
        InfluxApi::V1 {
            database,
            username: r.username.clone(),
            password: r.password.clone().unwrap_or_default(),
        }
    } else {
        let mut need = |field: &str, v: &Option<String>, env: &str| match v {
            Some(s) if !s.is_empty() => s.clone(),
            _ => {
                c.err(
                    format!("$.influxdb.{field}"),
                    format!("missing (the v2 API needs it; set it in the config or as {env})"),
                );
                String::new()
            }
        };
        let org = need("org", &r.org, "INFLUX_ORG");
        let bucket = need("bucket", &r.bucket, "INFLUX_BUCKET");
        InfluxApi::V2 {
            org,
            bucket,
            token: r.token.clone().unwrap_or_default(),
        }
    };
    let max_points_per_write = r.max_points_per_write.unwrap_or(5000);
    if max_points_per_write == 0 {
        c.err("$.influxdb.max_points_per_write", "must be at least 1");
    }
    let buffer_max_points = r.buffer_max_points.unwrap_or(usize::MAX);
    if buffer_max_points < max_points_per_write {
        c.err(
            "$.influxdb.buffer_max_points",
            "must be at least max_points_per_write",
        );
    }
    let influx = Influx {
        url: url.trim_end_matches('/').to_string(),
        api,
        max_points_per_write,
        flush_interval: c.secs(
            "$.influxdb.flush_interval_s",
            r.flush_interval_s,
            Duration::from_secs(1),
        ),
        timeout: c.secs("$.influxdb.timeout_s", r.timeout_s, Duration::from_secs(10)),
        buffer_max_points,
        buffer_max_bytes: mebibytes(
            c,
            "$.influxdb.buffer_max_mb",
            r.buffer_max_mb,
            crate::uploader::buffer::DEFAULT_BUFFER_BYTES,
        ),
        spool_max_bytes: match r.spool_max_mb {
            Some(0) => {
                c.err("$.influxdb.spool_max_mb", "must be at least 1");
                0
            }
            Some(mb) => mb.saturating_mul(1 << 20),
            None => 1 << 30,
        },
        fsync_window: c.secs(
            "$.influxdb.fsync_window_s",
            r.fsync_window_s,
            Duration::from_secs(1),
        ),
    };
    (Some(influx), None)
}

fn validate_status(c: &mut Check, r: &RawStatus) -> Option<StatusPage> {
    let listen = r
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9180".to_string());
    if listen.is_empty() {
        return None;
    }
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => {
            c.err(
                "$.status.listen",
                format!("`{listen}` is not an address:port such as 127.0.0.1:9180"),
            );
            return None;
        }
    };
    use crate::status_http::login::{Login, PasswordHash};
    // `password_sha256` is the field's old name; either takes either format.
    let (path, hash) = match (&r.password_hash, &r.password_sha256) {
        (Some(h), None) => ("$.status.password_hash", Some(h)),
        (None, Some(h)) => ("$.status.password_sha256", Some(h)),
        (None, None) => ("$.status.password_hash", None),
        (Some(_), Some(_)) => {
            c.err(
                "$.status",
                "give `password_hash` or its old name `password_sha256`, not both",
            );
            return None;
        }
    };
    let auth = match (&r.user, hash) {
        (Some(u), Some(h)) => match PasswordHash::parse(h) {
            Some(hash) => Some(Login {
                user: u.clone(),
                hash,
            }),
            None => {
                c.err(
                    path,
                    "must be a hash as printed by `dyeing-gateway hash-password`",
                );
                None
            }
        },
        (None, None) => None,
        _ => {
            c.err(
                "$.status",
                "give both `user` and `password_hash`, or neither",
            );
            None
        }
    };
    if !addr.ip().is_loopback() && auth.is_none() {
        c.err(
            "$.status.listen",
            format!("{addr} is reachable from the network: set `user` and `password_hash` (a technician's laptop must log in)"),
        );
    }
    Some(StatusPage { listen: addr, auth })
}

fn validate_clock(c: &mut Check, r: &RawClock) -> ClockSettings {
    use crate::clock::{SyncCheck, TIMESYNCD_FILE};
    let check = match (r.sync_check.as_deref().unwrap_or("auto"), &r.sync_file) {
        ("auto", None) => SyncCheck::auto(),
        ("timesyncd", None) => SyncCheck::File(TIMESYNCD_FILE.into()),
        ("off", None) => SyncCheck::Off,
        ("file", Some(f)) if !f.is_empty() => SyncCheck::File(f.into()),
        ("file", _) => {
            c.err(
                "$.clock.sync_file",
                "missing (sync_check `file` needs a path)",
            );
            SyncCheck::Off
        }
        ("auto" | "timesyncd" | "off", Some(_)) => {
            c.err("$.clock.sync_file", "only used with sync_check `file`");
            SyncCheck::Off
        }
        (other, _) => {
            c.err(
                "$.clock.sync_check",
                format!("unknown check `{other}` (expected auto, timesyncd, file or off)"),
            );
            SyncCheck::Off
        }
    };
    ClockSettings {
        check,
        hold_max_points: r.hold_max_points.unwrap_or(usize::MAX),
        hold_max_bytes: mebibytes(
            c,
            "$.clock.hold_max_mb",
            r.hold_max_mb,
            crate::uploader::buffer::DEFAULT_HOLD_BYTES,
        ),
    }
}

/// A memory bound in MiB (fractions allowed), at least 0.1 MiB, as bytes.
fn mebibytes(c: &mut Check, at: &str, v: Option<f64>, default: usize) -> usize {
    match v {
        None => default,
        Some(mb) if mb.is_finite() && (0.1..=4096.0).contains(&mb) => {
            (mb * (1 << 20) as f64) as usize
        }
        Some(_) => {
            c.err(at, "must be between 0.1 and 4096 (MiB)");
            default
        }
    }
}

fn validate_api(c: &mut Check, r: &RawApi) -> Api {
    let mut url = |field: &str, v: &Option<String>| {
        let v = v.clone().filter(|s| !s.is_empty());
        if let Some(u) = &v {
            validate_url(c, &format!("$.api.{field}"), u);
        }
        v
    };
    let batch_url = url("batch_url", &r.batch_url);
    let trigger_url = url("trigger_url", &r.trigger_url);
    let strings_url = url("strings_url", &r.strings_url);
    let strings_conf_url = url("strings_conf_url", &r.strings_conf_url);
    let fields = r.fields.clone().unwrap_or_default();
    let name = |c: &mut Check, field: &str, v: Option<String>, default: &str| match v {
        Some(s) if s.is_empty() => {
            c.err(format!("$.api.fields.{field}"), "must not be empty");
            default.to_string()
        }
        Some(s) => s,
        None => default.to_string(),
    };
    let field_machine = name(c, "machine", fields.machine, "machine");
    let field_batch = name(c, "batch", fields.batch, "batch");
    let field_id = name(c, "id", fields.id, "id");
    for (field, v) in [
        ("finish_body", &r.finish_body),
        ("confirm_body", &r.confirm_body),
    ] {
        if v.as_ref().is_some_and(|v| !v.is_object()) {
            c.err(
                format!("$.api.{field}"),
                "must be a JSON object (a template)",
            );
        }
    }
    Api {
        finish_body: r.finish_body.clone().unwrap_or_else(default_finish_body),
        confirm_body: r.confirm_body.clone().unwrap_or_else(default_confirm_body),
        field_machine,
        field_batch,
        field_id,
        batch_url,
        trigger_url,
        strings_url,
        strings_conf_url,
        poll_interval: c.secs(
            "$.api.poll_interval_s",
            r.poll_interval_s,
            Duration::from_secs(10),
        ),
        timeout: c.secs("$.api.timeout_s", r.timeout_s, Duration::from_secs(5)),
    }
}

fn endpoint_settings(
    c: &mut Check,
    path: &str,
    s: &RawEndpointSettings,
    d: &RawEndpointSettings,
) -> (Duration, bool, Duration, Duration, Duration) {
    let timeout = c.secs(
        &format!("{path}.timeout_s"),
        s.timeout_s.or(d.timeout_s),
        Duration::from_secs(1),
    );
    let pause = c.secs0(
        &format!("{path}.request_pause_s"),
        s.request_pause_s.or(d.request_pause_s),
        Duration::ZERO,
    );
    let b0 = c.secs(
        &format!("{path}.backoff_initial_s"),
        s.backoff_initial_s.or(d.backoff_initial_s),
        Duration::from_secs(1),
    );
    let b1 = c.secs(
        &format!("{path}.backoff_max_s"),
        s.backoff_max_s.or(d.backoff_max_s),
        Duration::from_secs(60),
    );
    if b1 < b0 {
        c.err(
            format!("{path}.backoff_max_s"),
            "must not be smaller than backoff_initial_s",
        );
    }
    let close = s.close_after_poll.or(d.close_after_poll).unwrap_or(false);
    (timeout, close, pause, b0, b1)
}

fn validate_endpoint(
    c: &mut Check,
    path: &str,
    e: &RawEndpoint,
    defaults: &RawEndpointSettings,
) -> Option<Endpoint> {
    if e.name.is_empty() {
        c.err(format!("{path}.name"), "must not be empty");
    }
    let s = RawEndpointSettings {
        timeout_s: e.timeout_s,
        close_after_poll: e.close_after_poll,
        request_pause_s: e.request_pause_s,
        backoff_initial_s: e.backoff_initial_s,
        backoff_max_s: e.backoff_max_s,
    };
    let (timeout, close_after_poll, request_pause, backoff_initial, backoff_max) =
        endpoint_settings(c, path, &s, defaults);
    let host_port = |c: &mut Check| -> Option<(String, u16)> {
        match &e.ip_address {
            Some(h) if !h.is_empty() => Some((h.clone(), e.port.unwrap_or(502))),
            _ => {
                c.err(
                    format!("{path}.ip_address"),
                    "missing (a TCP endpoint needs a host)",
                );
                None
            }
        }
    };
    let kind = match e.transport.as_str() {
        "tcp" => host_port(c).map(|(host, port)| EndpointKind::Tcp { host, port }),
        "rtu_over_tcp" => host_port(c).map(|(host, port)| EndpointKind::RtuOverTcp { host, port }),
        "rtu" => validate_serial(c, path, e).map(EndpointKind::Rtu),
        other => {
            c.err(
                format!("{path}.transport"),
                format!("unknown transport `{other}` (expected tcp, rtu or rtu_over_tcp)"),
            );
            None
        }
    }?;
    Some(Endpoint {
        name: e.name.clone(),
        kind,
        timeout,
        close_after_poll,
        request_pause,
        backoff_initial,
        backoff_max,
    })
}

fn validate_serial(c: &mut Check, path: &str, e: &RawEndpoint) -> Option<SerialSettings> {
    let Some(port) = e.serial_port.clone().filter(|p| !p.is_empty()) else {
        c.err(
            format!("{path}.serial_port"),
            "missing (an RTU endpoint needs a serial port path)",
        );
        return None;
    };
    let baudrate = e.baudrate.unwrap_or(9600);
    if !(300..=4_000_000).contains(&baudrate) {
        c.err(
            format!("{path}.baudrate"),
            format!("{baudrate} is not a usable baud rate"),
        );
    }
    let parity = match e.parity.as_deref().unwrap_or("none") {
        "none" | "N" | "n" => Parity::None,
        "even" | "E" | "e" => Parity::Even,
        "odd" | "O" | "o" => Parity::Odd,
        other => {
            c.err(
                format!("{path}.parity"),
                format!("unknown parity `{other}` (expected none, even or odd)"),
            );
            Parity::None
        }
    };
    let data_bits = e.data_bits.unwrap_or(8);
    if !(5..=8).contains(&data_bits) {
        c.err(format!("{path}.data_bits"), "must be 5, 6, 7 or 8");
    }
    let stop_bits = e.stop_bits.unwrap_or(1);
    if !(1..=2).contains(&stop_bits) {
        c.err(format!("{path}.stop_bits"), "must be 1 or 2");
    }
    let rs485 = e.rs485.as_ref().map(|r| Rs485 {
        rts_on_send: r.rts_on_send.unwrap_or(true),
        rts_after_send: r.rts_after_send.unwrap_or(false),
        delay_before_send_ms: r.delay_before_send_ms.unwrap_or(0),
        delay_after_send_ms: r.delay_after_send_ms.unwrap_or(0),
        rx_during_tx: r.rx_during_tx.unwrap_or(false),
    });
    Some(SerialSettings {
        path: port,
        baudrate,
        parity,
        data_bits,
        stop_bits,
        rs485,
    })
}

fn validate_machine(
    c: &mut Check,
    path: &str,
    m: &RawMachine,
    raw: &RawConfig,
    endpoints: &mut Vec<Endpoint>,
    by_name: &mut HashMap<String, usize>,
) -> Option<Machine> {
    if m.name.is_empty() {
        c.err(format!("{path}.name"), "must not be empty");
    }
    c.line_protocol_name(&format!("{path}.name"), &m.name);
    let empty = RawProfile::default();
    let profile = match &m.profile {
        Some(p) => match raw.profiles.get(p) {
            Some(p) => p,
            None => {
                let known: Vec<&str> = raw.profiles.keys().map(|s| s.as_str()).collect();
                c.err(
                    format!("{path}.profile"),
                    format!("unknown profile `{p}` (known: {})", known.join(", ")),
                );
                return None;
            }
        },
        None => &empty,
    };
    // The endpoint: a named one, or an implicit TCP endpoint per `ip_address:port`.
    let endpoint = match (&m.endpoint, &m.ip_address) {
        (Some(_), Some(_)) => {
            c.err(
                format!("{path}.endpoint"),
                "give either `endpoint` or `ip_address`, not both",
            );
            return None;
        }
        (Some(name), None) => {
            for (field, set) in [
                ("port", m.port.is_some()),
                ("transport", m.transport.is_some()),
                ("timeout_s", m.timeout_s.is_some()),
                ("close_after_poll", m.close_after_poll.is_some()),
                ("request_pause_s", m.request_pause_s.is_some()),
            ] {
                if set {
                    c.err(
                        format!("{path}.{field}"),
                        format!("belongs to the endpoint `{name}`, not to a machine on it"),
                    );
                }
            }
            match by_name.get(name) {
                Some(&i) => i,
                None => {
                    c.err(
                        format!("{path}.endpoint"),
                        format!("unknown endpoint `{name}`"),
                    );
                    return None;
                }
            }
        }
        (None, Some(host)) if host.is_empty() => {
            c.err(format!("{path}.ip_address"), "must not be empty");
            return None;
        }
        (None, Some(host)) => {
            let port = m.port.unwrap_or(502);
            let kind = match m.transport.as_deref().unwrap_or("tcp") {
                "tcp" => EndpointKind::Tcp {
                    host: host.clone(),
                    port,
                },
                "rtu_over_tcp" => EndpointKind::RtuOverTcp {
                    host: host.clone(),
                    port,
                },
                other => {
                    c.err(
                        format!("{path}.transport"),
                        format!("unknown transport `{other}` for a machine with ip_address (expected tcp or rtu_over_tcp)"),
                    );
                    return None;
                }
            };
            let s = RawEndpointSettings {
                timeout_s: m.timeout_s,
                close_after_poll: m.close_after_poll,
                request_pause_s: m.request_pause_s,
                backoff_initial_s: None,
                backoff_max_s: None,
            };
            let (timeout, close_after_poll, request_pause, backoff_initial, backoff_max) =
                endpoint_settings(c, path, &s, &raw.defaults);
            let ep = Endpoint {
                name: format!("{host}:{port}"),
                kind,
                timeout,
                close_after_poll,
                request_pause,
                backoff_initial,
                backoff_max,
            };
            match by_name.get(&ep.name) {
                Some(&i) => {
                    if endpoints[i] != ep {
                        c.err(
                            path,
                            format!("machines sharing {} must use the same transport and connection settings", ep.name),
                        );
                    }
                    i
                }
                None => {
                    by_name.insert(ep.name.clone(), endpoints.len());
                    endpoints.push(ep);
                    endpoints.len() - 1
                }
            }
        }
        (None, None) => {
            c.err(
                path,
                "a machine needs `ip_address` (Modbus TCP) or `endpoint` (a named endpoint such as an RS-485 bus)",
            );
            return None;
        }
    };
    let unit_id = m.slave_id.unwrap_or(1);
    if !matches!(endpoints[endpoint].kind, EndpointKind::Tcp { .. })
        && !(1..=247).contains(&unit_id)
    {
        c.err(
            format!("{path}.slave_id"),
            "an RTU slave id must be 1..=247 (0 is broadcast)",
        );
    }
    // Registers: the profile's map, then the machine's own (same name replaces).
    let mut raw_regs: Vec<RawRegister> = profile.registers.clone().unwrap_or_default();
    if let Some(own) = &m.registers {
        for r in own {
            match raw_regs.iter_mut().find(|p| p.name == r.name) {
                Some(slot) => *slot = r.clone(),
                None => raw_regs.push(r.clone()),
            }
        }
    }
    // The machine's own registers are reported at its path, the profile's at the profile's;
    // the merged list is then checked without reporting the same problems twice.
    validate_registers(
        c,
        &format!("{path}.registers"),
        m.registers.as_deref().unwrap_or(&[]),
    );
    let registers = validate_registers(&mut Check { errors: Vec::new() }, "", &raw_regs);
    if registers.is_empty() {
        c.err(
            format!("{path}.registers"),
            "the machine has no registers (give `registers` or a `profile`)",
        );
    }
    let poll = c.secs(
        &format!("{path}.poll_interval_s"),
        m.poll_interval_s.or(profile.poll_interval_s),
        DEFAULT_POLL,
    );
    let mut intervals = [poll; 4];
    for (source, map) in [
        ("profile", &profile.intervals_s),
        ("machine", &m.intervals_s),
    ] {
        for (k, v) in map {
            let p = if source == "machine" {
                format!("{path}.intervals_s.{k}")
            } else {
                format!(
                    "$.profiles.{}.intervals_s.{k}",
                    m.profile.as_deref().unwrap_or("")
                )
            };
            match Measurement::parse(k) {
                Some(meas) => intervals[meas.index()] = c.secs(&p, Some(*v), poll),
                None => c.err(p, format!("unknown measurement `{k}`")),
            }
        }
    }
    let is_tcp = matches!(endpoints[endpoint].kind, EndpointKind::Tcp { .. });
    let max_registers = m
        .max_registers_per_read
        .or(profile.max_registers_per_read)
        .unwrap_or(if is_tcp {
            TCP_MAX_REGISTERS
        } else {
            SPEC_MAX_REGISTERS
        });
    let reg_cap = if is_tcp {
        TCP_MAX_REGISTERS
    } else {
        SPEC_MAX_REGISTERS
    };
    if max_registers == 0 || max_registers > reg_cap {
        c.err(
            format!("{path}.max_registers_per_read"),
            format!("must be 1..={reg_cap} on this transport"),
        );
    }
    let max_bits = m
        .max_bits_per_read
        .or(profile.max_bits_per_read)
        .unwrap_or(SPEC_MAX_BITS);
    if max_bits == 0 || max_bits > SPEC_MAX_BITS {
        c.err(
            format!("{path}.max_bits_per_read"),
            format!("must be 1..={SPEC_MAX_BITS}"),
        );
    }
    for r in &registers {
        let cap = if r.kind.is_bit() {
            max_bits
        } else {
            max_registers
        };
        if r.quantity() > cap {
            c.err(
                format!("{path}.registers"),
                format!(
                    "register `{}` spans {} registers, more than the {cap} this device reads at once",
                    r.name,
                    r.quantity()
                ),
            );
        }
    }
    let limits = DeviceLimits {
        max_registers,
        max_bits,
        max_gap: m.max_gap.or(profile.max_gap).unwrap_or(10),
    };
    let find = |name: &str| registers.iter().position(|r| r.name == name);
    // A setting inherited from the profile is reported at the profile's path (once: repeats
    // from other machines are removed at the end of `validate`).
    let profile_path = format!("$.profiles.{}", m.profile.as_deref().unwrap_or(""));
    let origin = |own: bool| {
        if own {
            path.to_string()
        } else {
            profile_path.clone()
        }
    };
    let mut triggers = Vec::new();
    for (i, t) in m
        .maintenance
        .as_ref()
        .or(profile.maintenance.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("{}.maintenance[{i}]", origin(m.maintenance.is_some()));
        let edge = match t.edge.as_str() {
            "decrease" => Edge::Decrease,
            "rise" => Edge::Rise,
            "change" => Edge::Change,
            other => {
                c.err(
                    format!("{p}.edge"),
                    format!("unknown edge `{other}` (expected decrease, rise or change)"),
                );
                continue;
            }
        };
        match find(&t.register) {
            Some(register) if !matches!(registers[register].data_type, DataType::Str { .. }) => {
                triggers.push(Trigger { register, edge })
            }
            Some(_) => c.err(format!("{p}.register"), "a trigger cannot be a string"),
            None => c.err(
                format!("{p}.register"),
                format!("no register named `{}`", t.register),
            ),
        }
    }
    if triggers.is_empty()
        && registers
            .iter()
            .any(|r| r.measurement == Measurement::Maintenance)
    {
        c.err(
            format!("{path}.maintenance"),
            "registers are assigned to maintenance_events but no trigger is configured",
        );
    }
    let finish = m.finish.as_ref().or(profile.finish.as_ref()).and_then(|f| {
        let p = format!("{}.finish", origin(m.finish.is_some()));
        let register = find(&f.register);
        if register.is_none() {
            c.err(
                format!("{p}.register"),
                format!("no register named `{}`", f.register),
            );
        }
        let batch_register = match &f.batch_register {
            Some(b) => {
                let r = find(b);
                if r.is_none() {
                    c.err(
                        format!("{p}.batch_register"),
                        format!("no register named `{b}`"),
                    );
                }
                r
            }
            None => None,
        };
        Some(Finish {
            register: register?,
            finish_code: f.finish_code,
            batch_register,
            idle_codes: f.idle_codes.clone().unwrap_or_else(|| vec![0]),
            running_codes: f.running_codes.clone(),
        })
    });
    let batch_write = m
        .batch_write
        .as_ref()
        .or(profile.batch_write.as_ref())
        .map(|b| {
            let p = format!("{}.batch_write", origin(m.batch_write.is_some()));
            if b.registers == 0 || b.registers > 123 {
                c.err(format!("{p}.registers"), "must be 1..=123");
            }
            if u32::from(b.address) + u32::from(b.registers) > 65536 {
                c.err(
                    format!("{p}.address"),
                    "the batch area runs past the last address 65535",
                );
            }
            if (b.address..b.address.saturating_add(b.registers)).contains(&b.handshake_address) {
                c.err(
                    format!("{p}.handshake_address"),
                    "lies inside the batch string area",
                );
            }
            let identity = b.identity.as_ref().and_then(|id| match find(&id.register) {
                Some(r) => Some((r, id.value)),
                None => {
                    c.err(
                        format!("{p}.identity.register"),
                        format!("no register named `{}`", id.register),
                    );
                    None
                }
            });
            let handshake_fc16 = match b.handshake_function {
                None | Some(6) => false,
                Some(16) => true,
                Some(other) => {
                    c.err(
                        format!("{p}.handshake_function"),
                        format!("{other} is not 6 or 16"),
                    );
                    false
                }
            };
            if let Some(cs) = &b.charset {
                if cs.is_empty() || !cs.chars().all(|ch| (' '..='~').contains(&ch)) {
                    c.err(
                        format!("{p}.charset"),
                        "must be a non-empty set of printable ASCII characters",
                    );
                }
            }
            BatchWrite {
                address: b.address,
                registers: b.registers,
                string_order: parse_string_order(c, &format!("{p}.string_order"), &b.string_order),
                handshake_address: b.handshake_address,
                enabled: b.enabled.unwrap_or(true),
                handshake_fc16,
                overwrite_unconsumed: b.overwrite_unconsumed.unwrap_or(false),
                charset: b.charset.clone(),
                identity,
            }
        });
    let mut tags = c.tags(&format!("{path}.tags"), &profile.tags);
    for (k, v) in c.tags(&format!("{path}.tags"), &m.tags) {
        tags.retain(|(pk, _)| *pk != k);
        tags.push((k, v));
    }
    Some(Machine {
        name: m.name.clone(),
        endpoint,
        unit_id,
        registers,
        intervals,
        limits,
        tags,
        triggers,
        finish,
        batch_write,
    })
}

fn parse_string_order(c: &mut Check, path: &str, v: &Option<String>) -> StringOrder {
    match v.as_deref() {
        None | Some("high_first") => StringOrder::HighFirst,
        Some("low_first") => StringOrder::LowFirst,
        Some(other) => {
            c.err(
                path,
                format!("unknown string order `{other}` (expected high_first or low_first)"),
            );
            StringOrder::HighFirst
        }
    }
}

fn validate_registers(c: &mut Check, path: &str, regs: &[RawRegister]) -> Vec<Register> {
    let mut out: Vec<Register> = Vec::new();
    for (i, r) in regs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(reg) = validate_register(c, &p, r) {
            if out.iter().any(|o| o.name == reg.name) {
                c.err(
                    format!("{p}.name"),
                    format!("register `{}` is defined twice", reg.name),
                );
                continue;
            }
            out.push(reg);
        }
    }
    out
}

fn validate_register(c: &mut Check, p: &str, r: &RawRegister) -> Option<Register> {
    let before = c.errors.len();
    if r.name.is_empty() {
        c.err(format!("{p}.name"), "must not be empty");
    }
    c.line_protocol_name(&format!("{p}.name"), &r.name);
    let (kind, address) = match (&r.kind, r.address, r.modicon_address) {
        (None, None, Some(m)) => match m {
            1..=9999 => (RegisterKind::Coil, (m - 1) as u16),
            10001..=19999 => (RegisterKind::DiscreteInput, (m - 10001) as u16),
            30001..=39999 => (RegisterKind::Input, (m - 30001) as u16),
            40001..=49999 => (RegisterKind::Holding, (m - 40001) as u16),
            _ => {
                c.err(
                    format!("{p}.modicon_address"),
                    format!("{m} is not a Modicon address (0xxxx, 1xxxx, 3xxxx or 4xxxx)"),
                );
                return None;
            }
        },
        (Some(k), Some(a), None) => {
            let kind = match k.as_str() {
                "holding" => RegisterKind::Holding,
                "input" => RegisterKind::Input,
                "coil" => RegisterKind::Coil,
                "discrete_input" => RegisterKind::DiscreteInput,
                other => {
                    c.err(
                        format!("{p}.kind"),
                        format!("unknown kind `{other}` (expected holding, input, coil or discrete_input)"),
                    );
                    return None;
                }
            };
            (kind, a)
        }
        _ => {
            c.err(
                p,
                "give `kind` and `address` (0-based protocol address), or only `modicon_address`",
            );
            return None;
        }
    };
    let string_order = parse_string_order(c, &format!("{p}.string_order"), &r.string_order);
    let data_type = match r.data_type.as_str() {
        "bool" => DataType::Bool,
        "bit" => match r.bit {
            Some(b) if b < 16 => DataType::Bit(b),
            _ => {
                c.err(format!("{p}.bit"), "a `bit` register needs `bit` 0..=15");
                DataType::Bit(0)
            }
        },
        "int16" => DataType::Int16,
        "uint16" => DataType::UInt16,
        "int32" => DataType::Int32,
        "uint32" => DataType::UInt32,
        "int64" => DataType::Int64,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "string" => match r.length {
            Some(len) if len > 0 => DataType::Str {
                len,
                order: string_order,
            },
            _ => {
                c.err(
                    format!("{p}.length"),
                    "a string needs `length` (registers, 2 characters each)",
                );
                DataType::Str {
                    len: 1,
                    order: string_order,
                }
            }
        },
        other => {
            c.err(
                format!("{p}.type"),
                format!("unknown type `{other}` (expected bool, bit, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string)"),
            );
            return None;
        }
    };
    if kind.is_bit() != matches!(data_type, DataType::Bool) {
        c.err(
            format!("{p}.type"),
            format!(
                "type `{}` does not fit kind `{}` (coils and discrete inputs are `bool`; registers are not)",
                r.data_type,
                kind.as_str()
            ),
        );
    }
    let order = match r.order.as_deref().unwrap_or("ABCD") {
        "ABCD" => WordOrder::Abcd,
        "CDAB" => WordOrder::Cdab,
        "BADC" => WordOrder::Badc,
        "DCBA" => WordOrder::Dcba,
        other => {
            c.err(
                format!("{p}.order"),
                format!("unknown order `{other}` (expected ABCD, CDAB, BADC or DCBA)"),
            );
            WordOrder::Abcd
        }
    };
    let measurement = match Measurement::parse(&r.measurement) {
        Some(m) => m,
        None => {
            c.err(
                format!("{p}.measurement"),
                format!("unknown measurement `{}` (expected high_frequency_data, medium_frequency_data, cycle_context_data or maintenance_events)", r.measurement),
            );
            Measurement::MediumFrequency
        }
    };
    let numeric = !matches!(
        data_type,
        DataType::Str { .. } | DataType::Bool | DataType::Bit(_)
    );
    if (r.scale.is_some() || r.offset.is_some()) && !numeric {
        c.err(p, "scale and offset apply only to numeric types");
    }
    for (field, v) in [
        ("scale", r.scale),
        ("offset", r.offset),
        ("deadband", r.deadband),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            c.err(format!("{p}.{field}"), "must be a finite number");
        }
    }
    if r.scale == Some(0.0) {
        c.err(format!("{p}.scale"), "must not be 0");
    }
    let deadband = r.deadband.unwrap_or(0.0);
    if deadband < 0.0 {
        c.err(format!("{p}.deadband"), "must not be negative");
    }
    let quantity = Register {
        name: String::new(),
        kind,
        address,
        data_type,
        order,
        scale: None,
        offset: None,
        measurement,
        deadband,
        read_once: false,
    }
    .quantity();
    if u32::from(address) + u32::from(quantity) > 65536 {
        c.err(
            format!("{p}.address"),
            "the value runs past the last address 65535",
        );
    }
    if c.errors.len() != before {
        return None;
    }
    Some(Register {
        name: r.name.clone(),
        kind,
        address,
        data_type,
        order,
        scale: r.scale,
        offset: r.offset,
        measurement,
        deadband,
        read_once: r.read_once.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests;
