//! `scan --propose`: a config JSON from a scan: one machine per unit found, one profile per
//! distinct layout, registers named after their table and address (`hr_0010`), strings and
//! 32-bit floats where the samples show them, everything in `medium_frequency_data` unless a
//! hint (`temperature=hr_0000`) names a register and says where it belongs.

use super::classify::{Class, TextOrder, WordOrder};
use super::{register_name, table_fields, Report, Target};
use crate::config::{Measurement, Parity};
use serde_json::{json, Map, Value};

/// `NAME=REGISTER[@MEASUREMENT]`: call the scanned register `REGISTER` `NAME`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hint {
    pub name: String,
    pub register: String,
    pub measurement: Measurement,
}

/// Where a named value usually belongs when the hint does not say.
fn default_measurement(name: &str) -> Measurement {
    let n = name.to_ascii_lowercase();
    if ["temp", "level", "pressure", "speed", "seam", "flow"]
        .iter()
        .any(|k| n.contains(k))
    {
        Measurement::HighFrequency
    } else if [
        "batch", "program", "recipe", "step", "operator", "shift", "serial", "firmware",
    ]
    .iter()
    .any(|k| n.contains(k))
    {
        Measurement::CycleContext
    } else {
        Measurement::MediumFrequency
    }
}

pub(crate) fn parse_hint(text: &str) -> Result<Hint, String> {
    let bad = || {
        format!("bad hint `{text}` (expected NAME=REGISTER, e.g. temperature=hr_0000, optionally @MEASUREMENT)")
    };
    let (name, rest) = text.split_once('=').ok_or_else(bad)?;
    let (register, measurement) = match rest.split_once('@') {
        Some((r, m)) => (
            r,
            Measurement::parse(m)
                .ok_or_else(|| format!("unknown measurement `{m}` in hint `{text}`"))?,
        ),
        None => (rest, default_measurement(name)),
    };
    if name.is_empty() || register.is_empty() {
        return Err(bad());
    }
    Ok(Hint {
        name: name.to_string(),
        register: register.to_string(),
        measurement,
    })
}

/// The config proposal. Units whose tables hold nothing readable get no machine.
pub(crate) fn propose(r: &Report, hints: &[Hint]) -> Value {
    let mut profiles: Vec<(Value, String)> = Vec::new();
    let mut machines = Vec::new();
    for u in &r.units {
        let mut registers = Vec::new();
        for (kind, t) in &u.tables {
            for f in table_fields(*kind, t) {
                let name = register_name(*kind, f.address);
                let mut reg = Map::new();
                let hint = hints.iter().find(|h| h.register == name);
                reg.insert(
                    "name".into(),
                    json!(hint.map(|h| h.name.clone()).unwrap_or(name)),
                );
                reg.insert("kind".into(), json!(kind.as_str()));
                reg.insert("address".into(), json!(f.address));
                match &f.class {
                    Class::Unread => continue,
                    _ if kind.is_bit() => {
                        reg.insert("type".into(), json!("bool"));
                    }
                    Class::Text {
                        registers, order, ..
                    } => {
                        reg.insert("type".into(), json!("string"));
                        reg.insert("length".into(), json!(registers));
                        if *order == TextOrder::LowFirst {
                            reg.insert("string_order".into(), json!("low_first"));
                        }
                    }
                    Class::Float { order, .. } => {
                        reg.insert("type".into(), json!("float32"));
                        reg.insert(
                            "order".into(),
                            json!(match order {
                                WordOrder::Abcd => "ABCD",
                                WordOrder::Cdab => "CDAB",
                            }),
                        );
                    }
                    _ => {
                        reg.insert("type".into(), json!("uint16"));
                    }
                }
                reg.insert(
                    "measurement".into(),
                    json!(hint
                        .map(|h| h.measurement)
                        .unwrap_or(Measurement::MediumFrequency)
                        .as_str()),
                );
                registers.push(Value::Object(reg));
            }
        }
        if registers.is_empty() {
            continue;
        }
        let mut layout = json!({ "registers": registers });
        if u.max_registers < super::MAX_REGISTERS {
            layout["max_registers_per_read"] = json!(u.max_registers);
        }
        if u.max_bits < super::MAX_BITS {
            layout["max_bits_per_read"] = json!(u.max_bits);
        }
        let profile = match profiles.iter().find(|(l, _)| *l == layout) {
            Some((_, name)) => name.clone(),
            None => {
                let name = format!("layout_{}", profiles.len() + 1);
                profiles.push((layout, name.clone()));
                name
            }
        };
        let mut m = json!({
            "name": format!("unit_{:03}", u.unit),
            "slave_id": u.unit,
            "profile": profile,
        });
        match &r.target {
            Target::Tcp { host, port } => {
                m["ip_address"] = json!(host);
                m["port"] = json!(port);
            }
            Target::RtuOverTcp { host, port } => {
                m["ip_address"] = json!(host);
                m["port"] = json!(port);
                m["transport"] = json!("rtu_over_tcp");
            }
            Target::Rtu { .. } => m["endpoint"] = json!("bus"),
        }
        machines.push(m);
    }
    let mut out = json!({
        "profiles": profiles.into_iter().map(|(l, n)| (n, l)).collect::<Map<String, Value>>(),
        "machines": machines,
    });
    if let Some(s) = &r.serial {
        out["endpoints"] = json!([{
            "name": "bus",
            "transport": "rtu",
            "serial_port": s.path,
            "baudrate": s.baudrate,
            "parity": match s.parity {
                Parity::None => "none",
                Parity::Even => "even",
                Parity::Odd => "odd",
            },
            "data_bits": s.data_bits,
            "stop_bits": s.stop_bits,
        }]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_parse() {
        assert_eq!(
            parse_hint("temperature=hr_0000"),
            Ok(Hint {
                name: "temperature".into(),
                register: "hr_0000".into(),
                measurement: Measurement::HighFrequency
            })
        );
        assert_eq!(
            parse_hint("x=ir_0001@maintenance_events").map(|h| h.measurement),
            Ok(Measurement::Maintenance)
        );
        assert!(parse_hint("nothing").is_err());
        assert!(parse_hint("a=b@nowhere").is_err());
    }
}
