//! One register map (a profile's or a machine's): each register's address (`kind` and
//! `address`, or `modicon_address`), type, byte order, measurement and numbers, and no name
//! twice.

use super::{parse_string_order, Check};
use crate::config::raw::RawRegister;
use crate::config::{DataType, Measurement, Register, RegisterKind, WordOrder};

pub(super) fn validate_registers(c: &mut Check, path: &str, regs: &[RawRegister]) -> Vec<Register> {
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

/// One register at `p`; `None` when anything about it is wrong (every problem is reported).
fn validate_register(c: &mut Check, p: &str, r: &RawRegister) -> Option<Register> {
    let before = c.errors.len();
    if r.name.is_empty() {
        c.err(format!("{p}.name"), "must not be empty");
    }
    c.line_protocol_name(&format!("{p}.name"), &r.name);
    let (kind, address) = kind_and_address(c, p, r)?;
    let data_type = data_type(c, p, r)?;
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
    let order = word_order(c, p, r);
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
    let deadband = numbers(c, p, r, data_type);
    let register = Register {
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
    };
    if u32::from(address) + u32::from(register.quantity()) > 65536 {
        c.err(
            format!("{p}.address"),
            "the value runs past the last address 65535",
        );
    }
    (c.errors.len() == before).then_some(register)
}

/// `kind` and a 0-based `address`, or a Modicon address (`40001` is holding register 0).
fn kind_and_address(c: &mut Check, p: &str, r: &RawRegister) -> Option<(RegisterKind, u16)> {
    match (&r.kind, r.address, r.modicon_address) {
        (None, None, Some(m)) => match m {
            1..=9999 => Some((RegisterKind::Coil, (m - 1) as u16)),
            10001..=19999 => Some((RegisterKind::DiscreteInput, (m - 10001) as u16)),
            30001..=39999 => Some((RegisterKind::Input, (m - 30001) as u16)),
            40001..=49999 => Some((RegisterKind::Holding, (m - 40001) as u16)),
            _ => {
                c.err(
                    format!("{p}.modicon_address"),
                    format!("{m} is not a Modicon address (0xxxx, 1xxxx, 3xxxx or 4xxxx)"),
                );
                None
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
            Some((kind, a))
        }
        _ => {
            c.err(
                p,
                "give `kind` and `address` (0-based protocol address), or only `modicon_address`",
            );
            None
        }
    }
}

/// `type` with its `bit` or `length` (and a string's `string_order`); `None` for an unknown
/// type, a placeholder (after the error) for a missing `bit` or `length`.
fn data_type(c: &mut Check, p: &str, r: &RawRegister) -> Option<DataType> {
    let string_order = parse_string_order(c, &format!("{p}.string_order"), &r.string_order);
    Some(match r.data_type.as_str() {
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
    })
}

fn word_order(c: &mut Check, p: &str, r: &RawRegister) -> WordOrder {
    match r.order.as_deref().unwrap_or("ABCD") {
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
    }
}

/// `scale`, `offset` (numeric types only, finite, a scale not 0) and `deadband` (finite, not
/// negative; 0 by default), which is returned.
fn numbers(c: &mut Check, p: &str, r: &RawRegister, data_type: DataType) -> f64 {
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
    deadband
}
