//! Reading a configuration: the file, parsed with the JSON path of a syntax or type error,
//! the process environment and `.env` laid over it (`env.rs`), then validated (`validate/`).

use super::raw::RawConfig;
use super::{env, validate, Config, ConfigError, ConfigErrors};
use std::collections::HashMap;
use std::path::Path;

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
    let mut config = validate::validate(raw)?;
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
