//! One machine: its profile, endpoint and unit id, its register map (the profile's, then its
//! own), poll intervals, read limits, maintenance triggers and tags. The batch workflow's
//! parts (`finish`, `batch_write`) are in `batch.rs`.
//!
//! A setting a machine inherits from its profile is reported at the profile's path, so one
//! mistake in a shared profile is one error, not one per machine.

use super::endpoint::Endpoints;
use super::register::validate_registers;
use super::{batch, Check};
use crate::config::raw::{RawConfig, RawMachine, RawProfile, RawRegister};
use crate::config::{
    DataType, DeviceLimits, Edge, EndpointKind, Machine, Measurement, Register, Trigger,
    DEFAULT_POLL,
};
use crate::modbus::codec::{SPEC_MAX_BITS, SPEC_MAX_REGISTERS, TCP_MAX_REGISTERS};
use std::time::Duration;

/// A machine being validated: its raw entry, its profile (empty without one) and its path.
pub(super) struct Entry<'a> {
    pub path: &'a str,
    pub m: &'a RawMachine,
    pub profile: &'a RawProfile,
}

impl Entry<'_> {
    /// Where a setting is reported: the machine's own at its path, one inherited from the
    /// profile at the profile's (once: repeats from other machines are removed at the end of
    /// `validate`).
    pub(super) fn origin(&self, own: bool) -> String {
        if own {
            self.path.to_string()
        } else {
            format!("$.profiles.{}", self.m.profile.as_deref().unwrap_or(""))
        }
    }
}

/// The index of the register called `name`.
pub(super) fn find(registers: &[Register], name: &str) -> Option<usize> {
    registers.iter().position(|r| r.name == name)
}

pub(super) fn validate_machine(
    c: &mut Check,
    path: &str,
    m: &RawMachine,
    raw: &RawConfig,
    endpoints: &mut Endpoints,
) -> Option<Machine> {
    if m.name.is_empty() {
        c.err(format!("{path}.name"), "must not be empty");
    }
    c.line_protocol_name(&format!("{path}.name"), &m.name);
    let empty = RawProfile::default();
    let profile = profile(c, path, m, raw, &empty)?;
    let e = Entry { path, m, profile };
    let endpoint = endpoints.for_machine(c, path, m, &raw.defaults)?;
    let kind = &endpoints.list[endpoint].kind;
    let unit_id = unit_id(c, &e, kind);
    let registers = registers(c, &e);
    let intervals = intervals(c, &e);
    let limits = limits(c, &e, kind, &registers);
    let triggers = triggers(c, &e, &registers);
    let finish = batch::finish(c, &e, &registers);
    let batch_write = batch::batch_write(c, &e, &registers);
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

/// The machine's profile; `empty` when it names none, `None` (an error) when it names an
/// unknown one.
fn profile<'a>(
    c: &mut Check,
    path: &str,
    m: &RawMachine,
    raw: &'a RawConfig,
    empty: &'a RawProfile,
) -> Option<&'a RawProfile> {
    let Some(name) = &m.profile else {
        return Some(empty);
    };
    let found = raw.profiles.get(name);
    if found.is_none() {
        let known: Vec<&str> = raw.profiles.keys().map(|s| s.as_str()).collect();
        c.err(
            format!("{path}.profile"),
            format!("unknown profile `{name}` (known: {})", known.join(", ")),
        );
    }
    found
}

/// The unit id (`slave_id`, default 1); behind a serial line 0 would be a broadcast.
fn unit_id(c: &mut Check, e: &Entry, kind: &EndpointKind) -> u8 {
    let unit_id = e.m.slave_id.unwrap_or(1);
    if !matches!(kind, EndpointKind::Tcp { .. }) && !(1..=247).contains(&unit_id) {
        c.err(
            format!("{}.slave_id", e.path),
            "an RTU slave id must be 1..=247 (0 is broadcast)",
        );
    }
    unit_id
}

/// The profile's register map, then the machine's own (the same name replaces).
fn registers(c: &mut Check, e: &Entry) -> Vec<Register> {
    let mut raw_regs: Vec<RawRegister> = e.profile.registers.clone().unwrap_or_default();
    for r in e.m.registers.iter().flatten() {
        match raw_regs.iter_mut().find(|p| p.name == r.name) {
            Some(slot) => *slot = r.clone(),
            None => raw_regs.push(r.clone()),
        }
    }
    // The machine's own registers are reported at its path, the profile's at the profile's
    // (`validate` checks each profile once); the merged list is then checked without
    // reporting the same problems twice.
    validate_registers(
        c,
        &format!("{}.registers", e.path),
        e.m.registers.as_deref().unwrap_or(&[]),
    );
    let registers = validate_registers(&mut Check::default(), "", &raw_regs);
    if registers.is_empty() {
        c.err(
            format!("{}.registers", e.path),
            "the machine has no registers (give `registers` or a `profile`)",
        );
    }
    registers
}

/// The poll interval of each measurement: `poll_interval_s`, then `intervals_s` of the
/// profile and of the machine.
fn intervals(c: &mut Check, e: &Entry) -> [Duration; 4] {
    let poll = c.secs(
        &format!("{}.poll_interval_s", e.path),
        e.m.poll_interval_s.or(e.profile.poll_interval_s),
        DEFAULT_POLL,
    );
    let mut intervals = [poll; 4];
    for (own, map) in [(false, &e.profile.intervals_s), (true, &e.m.intervals_s)] {
        for (k, v) in map {
            let p = format!("{}.intervals_s.{k}", e.origin(own));
            match Measurement::parse(k) {
                Some(meas) => intervals[meas.index()] = c.secs(&p, Some(*v), poll),
                None => c.err(p, format!("unknown measurement `{k}`")),
            }
        }
    }
    intervals
}

/// How many registers and bits one read may ask for, and the gap bridged inside a read
/// block; every register must fit in one read.
fn limits(c: &mut Check, e: &Entry, kind: &EndpointKind, registers: &[Register]) -> DeviceLimits {
    let path = e.path;
    let reg_cap = if matches!(kind, EndpointKind::Tcp { .. }) {
        TCP_MAX_REGISTERS
    } else {
        SPEC_MAX_REGISTERS
    };
    let max_registers =
        e.m.max_registers_per_read
            .or(e.profile.max_registers_per_read)
            .unwrap_or(reg_cap);
    if max_registers == 0 || max_registers > reg_cap {
        c.err(
            format!("{path}.max_registers_per_read"),
            format!("must be 1..={reg_cap} on this transport"),
        );
    }
    let max_bits =
        e.m.max_bits_per_read
            .or(e.profile.max_bits_per_read)
            .unwrap_or(SPEC_MAX_BITS);
    if max_bits == 0 || max_bits > SPEC_MAX_BITS {
        c.err(
            format!("{path}.max_bits_per_read"),
            format!("must be 1..={SPEC_MAX_BITS}"),
        );
    }
    for r in registers {
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
    DeviceLimits {
        max_registers,
        max_bits,
        max_gap: e.m.max_gap.or(e.profile.max_gap).unwrap_or(10),
    }
}

/// The maintenance triggers; registers assigned to `maintenance_events` need at least one.
fn triggers(c: &mut Check, e: &Entry, registers: &[Register]) -> Vec<Trigger> {
    let mut triggers = Vec::new();
    let own = e.m.maintenance.is_some();
    let raw = e.m.maintenance.as_ref().or(e.profile.maintenance.as_ref());
    for (i, t) in raw.into_iter().flatten().enumerate() {
        let p = format!("{}.maintenance[{i}]", e.origin(own));
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
        match find(registers, &t.register) {
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
            format!("{}.maintenance", e.path),
            "registers are assigned to maintenance_events but no trigger is configured",
        );
    }
    triggers
}
