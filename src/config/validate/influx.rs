//! `$.influxdb`: where points go (URL, v1 or v2 API and their credentials) and the uploader's
//! bounds (points per write, memory, spool, fsync window).

use super::{mebibytes, validate_url, Check};
use crate::config::raw::RawInflux;
use crate::config::{ConfigError, Influx, InfluxApi, InfluxSetting};
use std::time::Duration;

/// `Missing` without a URL (not an error of the file); a URL with wrong settings is an error.
pub(super) fn validate_influx(c: &mut Check, r: &RawInflux) -> InfluxSetting {
    let Some(url) = r.url.as_deref().filter(|u| !u.is_empty()) else {
        return InfluxSetting::Missing(ConfigError {
            path: "$.influxdb.url".into(),
            message: "missing (set it in the config or as INFLUX_URL)".into(),
        });
    };
    validate_url(c, "$.influxdb.url", url);
    let api = match influx_api(c, r) {
        Ok(api) => api,
        Err(problem) => {
            c.errors.push(problem.clone());
            return InfluxSetting::Missing(problem);
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
    InfluxSetting::Configured(influx)
}

/// The write API and its credentials: `v1` with a database, `v2` with org and bucket (the
/// default, unless only a database is given). A v1 API without a database is an error that
/// leaves nothing to write to.
fn influx_api(c: &mut Check, r: &RawInflux) -> Result<InfluxApi, ConfigError> {
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
    if version == 1 {
        let Some(database) = r.database.clone().filter(|d| !d.is_empty()) else {
            return Err(ConfigError {
                path: "$.influxdb.database".into(),
                message: "missing (the v1 API needs a database)".into(),
            });
        };
        Ok(InfluxApi::V1 {
            database,
            username: r.username.clone(),
            password: r.password.clone().unwrap_or_default(),
        })
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
        Ok(InfluxApi::V2 {
            org,
            bucket,
            token: r.token.clone().unwrap_or_default(),
        })
    }
}
