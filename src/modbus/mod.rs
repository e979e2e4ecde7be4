//! Modbus master: `codec` (frames, the data model's `Table`s and the spec limits, no I/O),
//! `transport` (moving ADUs over TCP) and `serial` (an RS-485 line and its `SerialSettings`),
//! `client` (transaction ids, matching a reply to its request), and `transport_for`, which
//! picks the transport an `EndpointKind` needs. Each transport states its own reconnect policy.
//! Only `transport` and `serial` open sockets or ttys.
//!
//! This is a leaf: it knows nothing of the config, the poller or anything above it; the
//! config converts to its types.

pub(crate) mod client;
pub mod codec;
pub mod serial;
pub mod transport;

pub use client::{Client, ModbusError};
pub use codec::Table;

use serial::SerialSettings;
use std::time::Duration;
use transport::{RtuOverTcpTransport, TcpTransport, Transport};

/// Where a transport connects: a Modbus TCP device, a serial device server carrying RTU frames
/// over TCP, or a serial line of this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointKind {
    Tcp { host: String, port: u16 },
    RtuOverTcp { host: String, port: u16 },
    Rtu(SerialSettings),
}

/// The transport an endpoint needs (not yet connected: the first exchange opens it).
pub fn transport_for(kind: &EndpointKind, timeout: Duration) -> Box<dyn Transport> {
    match kind {
        EndpointKind::Tcp { host, port } => Box::new(TcpTransport::new(host, *port, timeout)),
        EndpointKind::RtuOverTcp { host, port } => {
            Box::new(RtuOverTcpTransport::new(host, *port, timeout))
        }
        EndpointKind::Rtu(s) => Box::new(serial::SerialTransport::new(s.clone(), timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_reconnected_after_timeouts_whatever_its_framing_a_serial_line_is_not() {
        let t = Duration::from_secs(1);
        let host = "127.0.0.1".to_string();
        let tcp = transport_for(
            &EndpointKind::Tcp {
                host: host.clone(),
                port: 502,
            },
            t,
        );
        let rtu_tcp = transport_for(&EndpointKind::RtuOverTcp { host, port: 4001 }, t);
        let serial = transport_for(
            &EndpointKind::Rtu(SerialSettings {
                path: "/dev/null".into(),
                baudrate: 9600,
                parity: serial::Parity::Even,
                data_bits: 8,
                stop_bits: 1,
                rs485: None,
            }),
            t,
        );
        assert_eq!(tcp.reconnect_after_timeouts(), Some(2));
        assert_eq!(rtu_tcp.reconnect_after_timeouts(), Some(2));
        assert_eq!(serial.reconnect_after_timeouts(), None);
        assert!(tcp.close_after_bad_reply());
        assert!(!rtu_tcp.close_after_bad_reply() && !serial.close_after_bad_reply());
    }
}
