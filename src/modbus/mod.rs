//! Modbus master: `codec` (frames, no I/O), `transport` (moving ADUs over TCP or a serial line)
//! and `client` (transaction ids, matching a reply to its request). Only `transport` opens
//! sockets or ttys.

pub mod client;
pub mod codec;
pub mod serial;
pub mod transport;

pub use client::{Client, ModbusError};
