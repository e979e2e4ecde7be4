//! `Client`: a Modbus master on one transport. It numbers TCP transactions, builds requests with
//! the codec, and turns a reply into data or a typed error. It holds no schedule: the endpoint
//! poller decides what to ask and when.

use super::codec::Table;
use super::codec::{self, BuildError, Exception, FrameError, Reply, Request};
use super::transport::{Readiness, Transport, TransportError};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    /// The device answered with a Modbus exception.
    #[error("{0}")]
    Exception(Exception),
    /// The device answered with something that is not the reply (wrong unit, CRC, ...).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// Nothing (complete) came back, or the connection failed.
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Build(#[from] BuildError),
}

impl ModbusError {
    /// A short stable name for counters and metrics.
    pub fn kind(&self) -> &'static str {
        // Gateway exceptions (Modbus Application Protocol v1.1b, 7) say where the failure is.
        match self {
            // A gateway whose target did not answer: the unit timed out behind it.
            ModbusError::Exception(e) if e.code == codec::exception::GATEWAY_TARGET_FAILED => {
                "timeout"
            }
            ModbusError::Exception(e) if e.code == codec::exception::GATEWAY_PATH_UNAVAILABLE => {
                "gateway_path"
            }
            ModbusError::Exception(e) if e.code == codec::exception::SERVER_DEVICE_BUSY => "busy",
            ModbusError::Exception(_) => "exception",
            ModbusError::Frame(FrameError::Crc) => "crc",
            ModbusError::Frame(FrameError::WrongUnit { .. }) => "wrong_unit",
            ModbusError::Frame(_) => "bad_frame",
            ModbusError::Transport(TransportError::Timeout(_)) => "timeout",
            ModbusError::Transport(TransportError::Io(_)) => "connection",
            ModbusError::Transport(TransportError::Frame(_)) => "bad_frame",
            ModbusError::Build(_) => "request",
        }
    }
}

pub struct Client {
    transport: Box<dyn Transport>,
    transaction: u16,
    /// Requests sent since the start (for the benchmark and the status page).
    pub requests: u64,
}

impl Client {
    pub fn new(transport: Box<dyn Transport>) -> Self {
        Client {
            transport,
            transaction: 0,
            requests: 0,
        }
    }

    pub fn transport(&mut self) -> &mut dyn Transport {
        self.transport.as_mut()
    }

    pub fn is_open(&self) -> bool {
        self.transport.is_open()
    }

    fn next_transaction(&mut self) -> u16 {
        self.transaction = self.transaction.wrapping_add(1);
        self.transaction
    }

    fn run(&mut self, req: Request) -> Result<Reply, ModbusError> {
        self.requests += 1;
        let adu = self.transport.exchange(&req)?;
        answer(&req, &adu)
    }

    fn read_request(
        &mut self,
        unit: u8,
        kind: Table,
        address: u16,
        quantity: u16,
    ) -> Result<Request, ModbusError> {
        let t = self.next_transaction();
        Ok(codec::read(
            self.transport.framing(),
            t,
            unit,
            kind,
            address,
            quantity,
        )?)
    }

    pub fn read(
        &mut self,
        unit: u8,
        kind: Table,
        address: u16,
        quantity: u16,
    ) -> Result<Reply, ModbusError> {
        let req = self.read_request(unit, kind, address, quantity)?;
        self.run(req)
    }

    pub fn write_multiple(
        &mut self,
        unit: u8,
        address: u16,
        values: &[u16],
    ) -> Result<(), ModbusError> {
        let t = self.next_transaction();
        let req = codec::write_multiple(self.transport.framing(), t, unit, address, values)?;
        self.run(req).map(|_| ())
    }

    pub fn write_single(&mut self, unit: u8, address: u16, value: u16) -> Result<(), ModbusError> {
        let t = self.next_transaction();
        let req = codec::write_single(self.transport.framing(), t, unit, address, value)?;
        self.run(req).map(|_| ())
    }

    /// The transport's readiness side (an error when a readiness loop cannot drive it).
    pub(crate) fn readiness(&mut self) -> io::Result<&mut dyn Readiness> {
        self.transport.readiness().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "this transport is not driven by readiness",
            )
        })
    }

    /// Send a read request without waiting for its reply (a readiness loop; `try_reply`
    /// takes the reply).
    pub(crate) fn send_read(
        &mut self,
        unit: u8,
        kind: Table,
        address: u16,
        quantity: u16,
    ) -> Result<Request, ModbusError> {
        let req = self.read_request(unit, kind, address, quantity)?;
        self.requests += 1;
        self.readiness().map_err(TransportError::from)?.send(&req)?;
        Ok(req)
    }

    /// The reply to `req` if it has arrived whole, as data or a typed error.
    pub(crate) fn try_reply(&mut self, req: &Request) -> Result<Option<Reply>, ModbusError> {
        let readiness = self.readiness().map_err(TransportError::from)?;
        match readiness.try_reply(req)? {
            Some(adu) => answer(req, &adu).map(Some),
            None => Ok(None),
        }
    }
}

/// The reply `adu` to `req` as data, or a typed error (a Modbus exception included).
fn answer(req: &Request, adu: &[u8]) -> Result<Reply, ModbusError> {
    match codec::parse(req, adu)? {
        Reply::Exception(e) => Err(ModbusError::Exception(e)),
        reply => Ok(reply),
    }
}
