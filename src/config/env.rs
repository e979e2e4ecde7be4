//! The environment overlay: the original system's variable names (`INFLUX_URL`, `API_URL_BATCH`,
//! `SERIAL_PORT`, ...) fill in or override values of the config file, so an existing `.env`
//! keeps working. Precedence: process environment, then `.env`, then the file. Every value that
//! can come from several places gets a `Provenance` record, which `check` prints (secrets
//! redacted).

use super::raw::RawConfig;
use super::ConfigError;
use crate::secret::Secret;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(String),
    DotEnv(PathBuf, String),
    Environment(String),
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(file) => write!(f, "config file {file}"),
            Source::DotEnv(p, var) => write!(f, "{var} in {}", p.display()),
            Source::Environment(var) => write!(f, "environment variable {var}"),
            Source::Unset => f.write_str("not set"),
        }
    }
}

/// Where one setting came from, and its value as it may be shown (secrets redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub key: &'static str,
    pub shown: String,
    pub source: Source,
}

/// Read a `.env` file without touching the process environment.
pub(super) fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, String> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| format!("cannot read .env: {e}"))?;
    let mut out = Vec::new();
    for item in iter {
        out.push(item.map_err(|e| format!("cannot parse .env: {e}"))?);
    }
    Ok(out)
}

/// One overridable setting: its environment name, its key in the file, and how to reach it.
struct Var {
    env: &'static str,
    key: &'static str,
    secret: bool,
}

const VARS: &[Var] = &[
    Var {
        env: "INFLUX_URL",
        key: "influxdb.url",
        secret: false,
    },
    Var {
        env: "INFLUX_TOKEN",
        key: "influxdb.token",
        secret: true,
    },
    Var {
        env: "INFLUX_ORG",
        key: "influxdb.org",
        secret: false,
    },
    Var {
        env: "INFLUX_BUCKET",
        key: "influxdb.bucket",
        secret: false,
    },
    Var {
        env: "API_URL_BATCH",
        key: "api.batch_url",
        secret: false,
    },
    Var {
        env: "API_TRIGGER_URL",
        key: "api.trigger_url",
        secret: false,
    },
    Var {
        env: "API_URL_STRINGS",
        key: "api.strings_url",
        secret: false,
    },
    Var {
        env: "API_URL_STRINGS_CONF",
        key: "api.strings_conf_url",
        secret: false,
    },
    Var {
        env: "SERIAL_PORT",
        key: "endpoints[rtu].serial_port",
        secret: false,
    },
    Var {
        env: "BAUDRATE",
        key: "endpoints[rtu].baudrate",
        secret: false,
    },
];

/// Apply the environment and `.env` to `raw`, returning where each value came from.
pub(super) fn overlay(
    raw: &mut RawConfig,
    environment: &HashMap<String, String>,
    dotenv: &[(String, String)],
    dotenv_path: Option<&Path>,
    file: &str,
) -> Result<Vec<Provenance>, Vec<ConfigError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let rtu: Vec<usize> = raw
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.transport == "rtu")
        .map(|(i, _)| i)
        .collect();
    for var in VARS {
        // An empty variable counts as unset, so `INFLUX_TOKEN=` cannot blank the file's value.
        let from_env = environment
            .get(var.env)
            .filter(|v| !v.is_empty())
            .map(|v| (v.clone(), Source::Environment(var.env.to_string())));
        let from_dotenv = || {
            dotenv
                .iter()
                .rev()
                .find(|(k, v)| k == var.env && !v.is_empty())
                .map(|(_, v)| {
                    (
                        v.clone(),
                        Source::DotEnv(
                            dotenv_path.unwrap_or(Path::new(".env")).into(),
                            var.env.into(),
                        ),
                    )
                })
        };
        let given = from_env.or_else(from_dotenv);
        let serial = var.key.starts_with("endpoints");
        if serial && given.is_some() && rtu.len() != 1 {
            log::warn!(
                "{} is ignored: it applies only when the config has exactly one RTU endpoint (it has {})",
                var.env,
                rtu.len()
            );
            continue;
        }
        let current = current_value(raw, var.key, &rtu);
        let (value, source) = match given {
            Some((v, src)) => {
                if let Err(m) = set_value(raw, var.key, &rtu, &v) {
                    errors.push(ConfigError {
                        path: src.to_string(),
                        message: m,
                    });
                }
                (Some(v), src)
            }
            None => match current {
                Some(v) => (Some(v), Source::File(file.to_string())),
                None => (None, Source::Unset),
            },
        };
        if serial && rtu.is_empty() {
            continue;
        }
        let shown = match (&value, var.secret) {
            (None, _) => "-".to_string(),
            (Some(v), true) => Secret::new(v.clone()).to_string(),
            // A URL may hold credentials (user info, an API key in the query).
            (Some(v), false) if var.key.ends_with("url") => crate::http::redact_url(v),
            (Some(v), false) => v.clone(),
        };
        out.push(Provenance {
            key: var.key,
            shown,
            source,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn current_value(raw: &RawConfig, key: &str, rtu: &[usize]) -> Option<String> {
    let ep = rtu.first().map(|&i| &raw.endpoints[i]);
    match key {
        "influxdb.url" => raw.influxdb.url.clone(),
        "influxdb.token" => raw.influxdb.token.as_ref().map(|t| t.expose().to_string()),
        "influxdb.org" => raw.influxdb.org.clone(),
        "influxdb.bucket" => raw.influxdb.bucket.clone(),
        "api.batch_url" => raw.api.batch_url.clone(),
        "api.trigger_url" => raw.api.trigger_url.clone(),
        "api.strings_url" => raw.api.strings_url.clone(),
        "api.strings_conf_url" => raw.api.strings_conf_url.clone(),
        "endpoints[rtu].serial_port" => ep.and_then(|e| e.serial_port.clone()),
        "endpoints[rtu].baudrate" => ep.and_then(|e| e.baudrate.map(|b| b.to_string())),
        _ => None,
    }
}

fn set_value(raw: &mut RawConfig, key: &str, rtu: &[usize], v: &str) -> Result<(), String> {
    let v = v.to_string();
    match key {
        "influxdb.url" => raw.influxdb.url = Some(v),
        "influxdb.token" => raw.influxdb.token = Some(Secret::new(v)),
        "influxdb.org" => raw.influxdb.org = Some(v),
        "influxdb.bucket" => raw.influxdb.bucket = Some(v),
        "api.batch_url" => raw.api.batch_url = Some(v),
        "api.trigger_url" => raw.api.trigger_url = Some(v),
        "api.strings_url" => raw.api.strings_url = Some(v),
        "api.strings_conf_url" => raw.api.strings_conf_url = Some(v),
        "endpoints[rtu].serial_port" => raw.endpoints[rtu[0]].serial_port = Some(v),
        "endpoints[rtu].baudrate" => {
            let b = v
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("BAUDRATE `{v}` is not a number"))?;
            raw.endpoints[rtu[0]].baudrate = Some(b);
        }
        _ => {}
    }
    Ok(())
}
