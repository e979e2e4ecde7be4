//! Read blocks: the fewest Modbus requests that fetch a set of registers within a device's
//! limits. Registers of one kind are sorted by address and merged greedily while the block
//! stays within `max_registers` (or `max_bits`) and the unused gap before the next register is
//! at most `max_gap`; for runs on a line this greedy cover is minimal. A device that answers a
//! bridged block with exception 02 (illegal data address) gets that block `split`: first into
//! the runs of registers actually configured, then into single registers.

use super::Field;
use crate::modbus::Table;

/// A device's limits for coalescing reads into read blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Largest run of unused registers (or bits) bridged inside one read block.
    pub max_gap: u16,
}

/// One request's worth of registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub kind: Table,
    pub address: u16,
    pub quantity: u16,
    /// Indices into the machine's register list of the registers this block serves.
    pub members: Vec<usize>,
}

impl ReadBlock {
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.quantity)
    }
}

fn span<F: Field>(r: &F) -> (u32, u32) {
    let start = u32::from(r.address());
    (start, start + u32::from(r.quantity()))
}

fn cover<F: Field>(registers: &[F], members: &[usize], limit: u16, max_gap: u16) -> Vec<ReadBlock> {
    let mut sorted: Vec<usize> = members.to_vec();
    sorted.sort_by_key(|&i| {
        (
            registers[i].table(),
            registers[i].address(),
            registers[i].quantity(),
        )
    });
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for i in sorted {
        let r = &registers[i];
        let (start, end) = span(r);
        if let Some(b) = blocks.last_mut() {
            let gap = start.saturating_sub(b.end());
            let new_end = end.max(b.end());
            if b.kind == r.table()
                && gap <= u32::from(max_gap)
                && new_end - u32::from(b.address) <= u32::from(limit)
            {
                b.quantity = (new_end - u32::from(b.address)) as u16;
                b.members.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock {
            kind: r.table(),
            address: r.address(),
            quantity: (end - start) as u16,
            members: vec![i],
        });
    }
    blocks
}

/// Plan the read blocks for `members` (indices into `registers`).
pub fn plan<F: Field>(registers: &[F], members: &[usize], limits: &DeviceLimits) -> Vec<ReadBlock> {
    let (bits, words): (Vec<usize>, Vec<usize>) = members
        .iter()
        .partition(|&&i| registers[i].table().is_bit());
    let mut out = cover(registers, &words, limits.max_registers, limits.max_gap);
    out.extend(cover(registers, &bits, limits.max_bits, limits.max_gap));
    out
}

/// Split a block the device refused with exception 02. Returns `None` when the block already
/// holds a single register: then that register itself is unreadable.
pub(crate) fn split<F: Field>(
    registers: &[F],
    block: &ReadBlock,
    limits: &DeviceLimits,
) -> Option<Vec<ReadBlock>> {
    if block.members.len() <= 1 {
        return None;
    }
    let limit = if block.kind.is_bit() {
        limits.max_bits
    } else {
        limits.max_registers
    };
    // First without bridging any gap; if that changes nothing, one register per block.
    let runs = cover(registers, &block.members, limit, 0);
    if runs.len() > 1 {
        return Some(runs);
    }
    Some(
        block
            .members
            .iter()
            .map(|&i| {
                let r = &registers[i];
                ReadBlock {
                    kind: r.table(),
                    address: r.address(),
                    quantity: r.quantity(),
                    members: vec![i],
                }
            })
            .collect(),
    )
}
