//! The config file as written: serde structs that mirror `machines.json` field by field.
//! Nothing here is validated beyond JSON types; `config::validate` turns these into the typed
//! `Config`, naming the JSON path of every problem. Unknown fields are errors, so a typo such as
//! `"slave-id"` is reported instead of silently ignored.

use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub state_dir: Option<String>,
    /// Shadow mode: log and audit what would be written to machines and posted to the API,
    /// and do neither (for running beside the old system).
    pub shadow_mode: Option<bool>,
    pub heartbeat_s: Option<f64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub influxdb: RawInflux,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub clock: RawClock,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub status: RawStatus,
    #[serde(default)]
    pub defaults: RawEndpointSettings,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    pub profiles: BTreeMap<String, RawProfile>,
    #[serde(default)]
    pub machines: Vec<RawMachine>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInflux {
    pub url: Option<String>,
    pub api: Option<String>,
    pub token: Option<Secret>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub database: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub max_points_per_write: Option<usize>,
    pub flush_interval_s: Option<f64>,
    pub timeout_s: Option<f64>,
    /// Deprecated: `buffer_max_mb` bounds memory in bytes.
    pub buffer_max_points: Option<usize>,
    pub buffer_max_mb: Option<f64>,
    pub spool_max_mb: Option<u64>,
    pub fsync_window_s: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClock {
    /// `auto`, `timesyncd`, `file` or `off`.
    pub sync_check: Option<String>,
    pub sync_file: Option<String>,
    /// Deprecated: `hold_max_mb` bounds memory in bytes.
    pub hold_max_points: Option<usize>,
    pub hold_max_mb: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub batch_url: Option<String>,
    pub trigger_url: Option<String>,
    pub strings_url: Option<String>,
    pub strings_conf_url: Option<String>,
    pub poll_interval_s: Option<f64>,
    pub timeout_s: Option<f64>,
    /// JSON template of a finish report; strings "{machine}", "{batch}", "{code}", "{time}",
    /// "{event_id}" are replaced.
    pub finish_body: Option<serde_json::Value>,
    /// JSON template of a batch confirmation; "{machine}", "{batch}", "{entry_id}", "{time}".
    pub confirm_body: Option<serde_json::Value>,
    /// Field names in the new-batches list (defaults: machine, batch, id).
    pub fields: Option<RawFields>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFields {
    pub machine: Option<String>,
    pub batch: Option<String>,
    pub id: Option<String>,
}

/// Connection settings shared by an explicit endpoint, the `defaults` block and a machine that
/// names its own `ip_address`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawEndpointSettings {
    pub timeout_s: Option<f64>,
    pub close_after_poll: Option<bool>,
    pub request_pause_s: Option<f64>,
    pub backoff_initial_s: Option<f64>,
    pub backoff_max_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub name: String,
    /// `tcp`, `rtu` or `rtu_over_tcp`.
    pub transport: String,
    pub ip_address: Option<String>,
    pub port: Option<u16>,
    pub serial_port: Option<String>,
    pub baudrate: Option<u32>,
    pub parity: Option<String>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
    /// Kernel RS-485 mode (TIOCSRS485) for UARTs that drive the transceiver's DE/RE from RTS.
    pub rs485: Option<RawRs485>,
    pub timeout_s: Option<f64>,
    pub close_after_poll: Option<bool>,
    pub request_pause_s: Option<f64>,
    pub backoff_initial_s: Option<f64>,
    pub backoff_max_s: Option<f64>,
}

/// What a machine profile and a machine share: the register map and the device's habits.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub registers: Option<Vec<RawRegister>>,
    pub poll_interval_s: Option<f64>,
    #[serde(default)]
    pub intervals_s: BTreeMap<String, f64>,
    pub max_registers_per_read: Option<u16>,
    pub max_bits_per_read: Option<u16>,
    pub max_gap: Option<u16>,
    pub maintenance: Option<Vec<RawTrigger>>,
    pub finish: Option<RawFinish>,
    pub batch_write: Option<RawBatchWrite>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMachine {
    pub name: String,
    pub profile: Option<String>,
    pub endpoint: Option<String>,
    pub ip_address: Option<String>,
    pub port: Option<u16>,
    pub transport: Option<String>,
    pub slave_id: Option<u8>,
    pub timeout_s: Option<f64>,
    pub close_after_poll: Option<bool>,
    pub request_pause_s: Option<f64>,
    pub registers: Option<Vec<RawRegister>>,
    pub poll_interval_s: Option<f64>,
    #[serde(default)]
    pub intervals_s: BTreeMap<String, f64>,
    pub max_registers_per_read: Option<u16>,
    pub max_bits_per_read: Option<u16>,
    pub max_gap: Option<u16>,
    pub maintenance: Option<Vec<RawTrigger>>,
    pub finish: Option<RawFinish>,
    pub batch_write: Option<RawBatchWrite>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRegister {
    pub name: String,
    pub kind: Option<String>,
    pub address: Option<u16>,
    /// Modicon notation (`40001` = holding 0), accepted only in this explicitly named field.
    pub modicon_address: Option<u32>,
    #[serde(rename = "type")]
    pub data_type: String,
    pub bit: Option<u8>,
    pub length: Option<u16>,
    pub order: Option<String>,
    pub string_order: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub measurement: String,
    pub deadband: Option<f64>,
    pub read_once: Option<bool>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    pub register: String,
    pub edge: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFinish {
    pub register: String,
    pub finish_code: i64,
    pub batch_register: Option<String>,
    pub idle_codes: Option<Vec<i64>>,
    pub running_codes: Option<Vec<i64>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBatchWrite {
    pub address: u16,
    pub registers: u16,
    pub string_order: Option<String>,
    pub handshake_address: u16,
    pub enabled: Option<bool>,
    /// 6 (write single register, default) or 16 for the handshake.
    pub handshake_function: Option<u8>,
    /// Write a new batch even while the HMI has not taken the previous one (handshake 1).
    pub overwrite_unconsumed: Option<bool>,
    /// Characters allowed in a batch name (default: printable ASCII).
    pub charset: Option<String>,
    pub identity: Option<RawIdentity>,
}

/// A register that must hold `value` before anything is written to the machine.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub register: String,
    pub value: i64,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRs485 {
    pub rts_on_send: Option<bool>,
    pub rts_after_send: Option<bool>,
    pub delay_before_send_ms: Option<u32>,
    pub delay_after_send_ms: Option<u32>,
    pub rx_during_tx: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM bundle of the CAs trusted for https:// URLs (instead of Mozilla's roots).
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    /// `host:port` of the status page (default `127.0.0.1:9180`); `""` turns it off.
    pub listen: Option<String>,
    pub user: Option<String>,
    /// `pbkdf2-sha256$...`, made by `dyeing-gateway hash-password`.
    pub password_hash: Option<String>,
    /// The old name of `password_hash` (and of the old `salt$hex(sha256(salt + password))`).
    pub password_sha256: Option<String>,
}
