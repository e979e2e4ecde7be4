//! The typed configuration: the domain types (`Config` and its parts) live here. `load.rs`
//! reads `machines.json` and overlays the environment and `.env` (`env.rs`); `validate/` turns
//! the raw file (`raw.rs`) into `Config`, one function per section, collecting every problem
//! with its JSON path (`machines[2].registers[0].type: ...`). A `Config` that exists is valid:
//! the rest of the program never re-checks it.
//!
//! Words: an *endpoint* is one Modbus connection (a serial port or a `host:port`); a *machine* is
//! one unit id behind an endpoint; a *profile* is a register map shared by machines of one model.

mod env;
mod load;
pub(crate) mod raw;
mod validate;

pub use env::{Provenance, Source};
// Types owned by the layers below, which validation builds: a register's `kind` is its Modbus
// table; serial settings, endpoint kinds and spec limits are the Modbus layer's, data types,
// word orders and read limits the decoder's and the read planner's.
pub use crate::modbus::codec::Table as RegisterKind;
pub use crate::modbus::serial::{Parity, Rs485, SerialSettings};
pub use crate::modbus::EndpointKind;
pub use crate::registers::plan::DeviceLimits;
pub use crate::registers::{DataType, StringOrder, WordOrder};
pub use load::{load, parse, Sources};
pub use validate::validate_raw;

use crate::secret::Secret;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default poll interval of a machine (spec: 5 s).
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(5);
/// Default heartbeat: an unchanged measurement is still written this often.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measurement {
    HighFrequency,
    MediumFrequency,
    CycleContext,
    Maintenance,
}

impl Measurement {
    pub(crate) const ALL: [Measurement; 4] = [
        Measurement::HighFrequency,
        Measurement::MediumFrequency,
        Measurement::CycleContext,
        Measurement::Maintenance,
    ];
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Measurement::HighFrequency => "high_frequency_data",
            Measurement::MediumFrequency => "medium_frequency_data",
            Measurement::CycleContext => "cycle_context_data",
            Measurement::Maintenance => "maintenance_events",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Measurement::ALL.into_iter().find(|m| m.as_str() == s)
    }
    pub(crate) fn index(self) -> usize {
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
    pub(crate) fn describe(&self) -> String {
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

/// Where points go. No InfluxDB is not an error of the file (`once`, `check` and `demo` work
/// without one), but `run` refuses to start without it: its settings are reached only through
/// `configured`, which hands out the problem instead when there are none.
#[derive(Debug, Clone, PartialEq)]
pub enum InfluxSetting {
    Configured(Influx),
    /// Not configured (no URL): the problem `run` reports.
    Missing(ConfigError),
}

impl InfluxSetting {
    pub fn configured(&self) -> Result<&Influx, &ConfigError> {
        match self {
            InfluxSetting::Configured(i) => Ok(i),
            InfluxSetting::Missing(problem) => Err(problem),
        }
    }
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
pub(crate) fn default_finish_body() -> serde_json::Value {
    serde_json::json!({"machine": "{machine}", "batch": "{batch}", "process_code": "{code}",
        "finished_at": "{time}", "event_id": "{event_id}"})
}

/// The default batch confirmation.
pub(crate) fn default_confirm_body() -> serde_json::Value {
    serde_json::json!({"machine": "{machine}", "batch": "{batch}", "id": "{entry_id}",
        "written_at": "{time}"})
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Its layout: `state()`.
    pub state_dir: PathBuf,
    /// Log and audit writes and API posts without doing them.
    pub shadow_mode: bool,
    pub heartbeat: Duration,
    pub tags: Vec<(String, String)>,
    pub influx: InfluxSetting,
    pub clock: ClockSettings,
    /// The status page; `None`: off.
    pub status: Option<StatusPage>,
    /// A PEM file of the CAs trusted for https:// URLs; `None`: Mozilla's roots. Only its
    /// name is validated: it is read where the HTTP clients are built (`cli::trusted_roots`).
    pub tls_ca_file: Option<PathBuf>,
    pub api: Api,
    pub endpoints: Vec<Endpoint>,
    pub machines: Vec<Machine>,
    /// Where each value that can come from several places came from, for `check`.
    pub provenance: Vec<Provenance>,
}

impl Config {
    /// The state directory, with where each thing is kept in it.
    pub(crate) fn state(&self) -> crate::durable::StateDir {
        crate::durable::StateDir::new(&self.state_dir)
    }
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

#[cfg(test)]
mod tests;
