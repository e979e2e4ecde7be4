//! Validation: the raw file (`raw.rs`) checked section by section into a `Config`, every
//! problem collected with its JSON path. One module per section: `influx`, `api` (the plant's
//! batch API), `status` (the status page), `clock`, `endpoint` (connections and serial
//! settings), `machine` (a machine's profile, unit id, register map, intervals, read limits and
//! triggers), `batch` (its finish and batch-write settings) and `register` (one register map).
//!
//! Validation reads no files: a path (`tls.ca_file`, `clock.sync_file`, `state_dir`) is checked
//! for its shape only, and what it names is opened where it is used. (The one look outside is
//! `clock`'s `auto`, which asks whether timesyncd's run directory exists.)

mod api;
mod batch;
mod clock;
mod endpoint;
mod influx;
mod machine;
mod register;
mod status;

use super::raw::RawConfig;
use super::{Config, ConfigError, ConfigErrors, Machine, StringOrder, DEFAULT_HEARTBEAT};
use endpoint::Endpoints;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Collects errors while walking the raw config.
#[derive(Default)]
struct Check {
    errors: Vec<ConfigError>,
}

impl Check {
    /// The errors found, each once (a profile's problem is met once per machine using it).
    fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let mut unique: Vec<ConfigError> = Vec::new();
        for e in self.errors {
            if !unique.contains(&e) {
                unique.push(e);
            }
        }
        Err(ConfigErrors(unique))
    }

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

/// Every section in turn; any problem refuses the whole config.
pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut c = Check::default();
    let heartbeat = c.secs("$.heartbeat_s", raw.heartbeat_s, DEFAULT_HEARTBEAT);
    let tags = c.tags("$.tags", &raw.tags);
    let influx = influx::validate_influx(&mut c, &raw.influxdb);
    let api = api::validate_api(&mut c, &raw.api);
    let clock = clock::validate_clock(&mut c, &raw.clock);
    let status = status::validate_status(&mut c, &raw.status);
    // An empty name counts as not set.
    let tls_ca_file = raw
        .tls
        .ca_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    let mut endpoints = endpoint::validate_endpoints(&mut c, &raw);
    for (name, p) in &raw.profiles {
        if let Some(regs) = &p.registers {
            // Validated once here so an error in a shared map is reported at its own path.
            register::validate_registers(&mut c, &format!("$.profiles.{name}.registers"), regs);
        }
    }
    let mut machines = validate_machines(&mut c, &raw, &mut endpoints);
    c.finish()?;
    let endpoints = endpoints.keep_used(&mut machines);
    Ok(Config {
        shadow_mode: raw.shadow_mode.unwrap_or(false),
        state_dir: PathBuf::from(
            raw.state_dir
                .unwrap_or_else(|| "/var/lib/dyeing-gateway".to_string()),
        ),
        heartbeat,
        tags,
        influx,
        clock,
        status,
        tls_ca_file,
        api,
        endpoints,
        machines,
        provenance: Vec::new(),
    })
}

/// `$.machines`: each machine, then what two machines must not share (a name, an endpoint
/// and unit id, a state file).
fn validate_machines(c: &mut Check, raw: &RawConfig, endpoints: &mut Endpoints) -> Vec<Machine> {
    let mut machines: Vec<Machine> = Vec::new();
    // The index in `$.machines` of each validated machine, for messages.
    let mut raw_index: Vec<usize> = Vec::new();
    for (i, m) in raw.machines.iter().enumerate() {
        let path = format!("$.machines[{i}]");
        let Some(machine) = machine::validate_machine(c, &path, m, raw, endpoints) else {
            continue;
        };
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
        shared_state_file(c, &path, &machine, &machines, &raw_index);
        machines.push(machine);
        raw_index.push(i);
    }
    if raw.machines.is_empty() {
        c.err("$.machines", "no machines configured");
    }
    machines
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
    let file = crate::durable::state_dir::machine_file(&machine.name);
    let kinds = |m: &Machine| {
        [
            ("finish", m.finish.is_some()),
            ("batch", m.batch_write.is_some()),
        ]
    };
    for (o, i) in before.iter().zip(raw_index) {
        if o.name == machine.name || crate::durable::state_dir::machine_file(&o.name) != file {
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

/// An `http://` or `https://` URL (shown redacted in the message).
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

/// A string's byte order in each register: `high_first` (the default) or `low_first`.
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
