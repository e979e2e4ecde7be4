//! `check`: the summary of a valid configuration, printed so a technician sees what will be
//! polled, written and from where each overridable value came: endpoints, machines and their
//! read blocks per poll, the write map (the only registers ever written), and the provenance
//! of each value (secrets redacted, URLs without user info or query values).

use crate::config::{self, Config, InfluxApi, InfluxSetting, Measurement};
use crate::poller::schedule;
use std::path::Path;

/// The `check` summary: what will be polled, written, and where each value came from.
pub(crate) fn summary(path: &Path, c: &Config) -> String {
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
    for (ei, e) in c.endpoints.iter().enumerate() {
        for m in c.machines.iter().filter(|m| m.endpoint == ei) {
            let groups: Vec<String> = schedule::groups_for(m)
                .iter()
                .map(|g| format!("{} read block(s) every {:?}", g.blocks.len(), g.interval))
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
