//! A machine's part in the batch workflow: the finish detector's settings (`finish`) and the
//! one area the gateway may write (`batch_write`), both naming registers of the machine's map.

use super::machine::{find, Entry};
use super::{parse_string_order, Check};
use crate::config::{BatchWrite, Finish, Register};

/// `finish`: the process-code register, its finish code and the batch-name register.
pub(super) fn finish(c: &mut Check, e: &Entry, registers: &[Register]) -> Option<Finish> {
    let f = e.m.finish.as_ref().or(e.profile.finish.as_ref())?;
    let p = format!("{}.finish", e.origin(e.m.finish.is_some()));
    let register = find(registers, &f.register);
    if register.is_none() {
        c.err(
            format!("{p}.register"),
            format!("no register named `{}`", f.register),
        );
    }
    let batch_register = match &f.batch_register {
        Some(b) => {
            let r = find(registers, b);
            if r.is_none() {
                c.err(
                    format!("{p}.batch_register"),
                    format!("no register named `{b}`"),
                );
            }
            r
        }
        None => None,
    };
    Some(Finish {
        register: register?,
        finish_code: f.finish_code,
        batch_register,
        idle_codes: f.idle_codes.clone().unwrap_or_else(|| vec![0]),
        running_codes: f.running_codes.clone(),
    })
}

/// `batch_write`: the batch string area, its handshake register and the write options.
pub(super) fn batch_write(c: &mut Check, e: &Entry, registers: &[Register]) -> Option<BatchWrite> {
    let b =
        e.m.batch_write
            .as_ref()
            .or(e.profile.batch_write.as_ref())?;
    let p = format!("{}.batch_write", e.origin(e.m.batch_write.is_some()));
    if b.registers == 0 || b.registers > 123 {
        c.err(format!("{p}.registers"), "must be 1..=123");
    }
    if u32::from(b.address) + u32::from(b.registers) > 65536 {
        c.err(
            format!("{p}.address"),
            "the batch area runs past the last address 65535",
        );
    }
    if (b.address..b.address.saturating_add(b.registers)).contains(&b.handshake_address) {
        c.err(
            format!("{p}.handshake_address"),
            "lies inside the batch string area",
        );
    }
    let identity = b
        .identity
        .as_ref()
        .and_then(|id| match find(registers, &id.register) {
            Some(r) => Some((r, id.value)),
            None => {
                c.err(
                    format!("{p}.identity.register"),
                    format!("no register named `{}`", id.register),
                );
                None
            }
        });
    let handshake_fc16 = match b.handshake_function {
        None | Some(6) => false,
        Some(16) => true,
        Some(other) => {
            c.err(
                format!("{p}.handshake_function"),
                format!("{other} is not 6 or 16"),
            );
            false
        }
    };
    if let Some(cs) = &b.charset {
        if cs.is_empty() || !cs.chars().all(|ch| (' '..='~').contains(&ch)) {
            c.err(
                format!("{p}.charset"),
                "must be a non-empty set of printable ASCII characters",
            );
        }
    }
    Some(BatchWrite {
        address: b.address,
        registers: b.registers,
        string_order: parse_string_order(c, &format!("{p}.string_order"), &b.string_order),
        handshake_address: b.handshake_address,
        enabled: b.enabled.unwrap_or(true),
        handshake_fc16,
        overwrite_unconsumed: b.overwrite_unconsumed.unwrap_or(false),
        charset: b.charset.clone(),
        identity,
    })
}
