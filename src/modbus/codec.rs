//! The Modbus codec: builds request ADUs and checks response ADUs, on rmodbus frames. No I/O
//! here: the transport moves the bytes, this module says what they mean.
//!
//! Words (Modbus Application Protocol v1.1b): *unit id* (slave address), *function code*,
//! *exception* (function code + 0x80 and an exception code), *address* and *quantity* (0-based
//! protocol address and count of registers or bits). An *ADU* is the frame on the wire: the PDU
//! with the MBAP header (TCP) or the slave address and CRC (RTU).

use rmodbus::client::ModbusRequest;
use rmodbus::ModbusProto;
use std::fmt;

/// MBAP header length (Modbus Messaging on TCP/IP v1.0b, 3.1.3): transaction id (2),
/// protocol id (2), length (2), unit id (1).
pub(crate) const MBAP_LEN: usize = 7;
/// Largest TCP ADU: MBAP (7) + PDU (253). Modbus Messaging on TCP/IP v1.0b, 4.1.
pub(crate) const TCP_MAX_ADU: usize = 260;
/// Largest RTU ADU: address (1) + PDU (253) + CRC (2). Modbus over serial line v1.02, 2.5.1.1.
pub(crate) const RTU_MAX_ADU: usize = 256;

/// Function codes used here (Modbus Application Protocol v1.1b, 5.1).
pub mod function {
    pub const READ_COILS: u8 = 0x01;
    pub const READ_DISCRETE_INPUTS: u8 = 0x02;
    pub const READ_HOLDING_REGISTERS: u8 = 0x03;
    pub const READ_INPUT_REGISTERS: u8 = 0x04;
    pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
    pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;
    /// Set on the function code of an exception response (7).
    pub const EXCEPTION_FLAG: u8 = 0x80;
}

/// Exception codes (Modbus Application Protocol v1.1b, 7).
pub mod exception {
    pub const ILLEGAL_FUNCTION: u8 = 0x01;
    pub const ILLEGAL_DATA_ADDRESS: u8 = 0x02;
    pub const ILLEGAL_DATA_VALUE: u8 = 0x03;
    pub const SERVER_DEVICE_FAILURE: u8 = 0x04;
    pub const SERVER_DEVICE_BUSY: u8 = 0x06;
    pub const GATEWAY_PATH_UNAVAILABLE: u8 = 0x0A;
    pub const GATEWAY_TARGET_FAILED: u8 = 0x0B;
}

pub(crate) fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// Modbus Application Protocol v1.1b, 6.1/6.3: at most 125 registers or 2000 bits per read.
pub(crate) const SPEC_MAX_REGISTERS: u16 = 125;
pub(crate) const SPEC_MAX_BITS: u16 = 2000;
/// rmodbus accepts at most 123 registers in one TCP response buffer; the Modbus spec allows 125.
pub(crate) const TCP_MAX_REGISTERS: u16 = 123;

/// The four tables of the Modbus data model (Modbus Application Protocol v1.1b, 4.3): coils
/// and discrete inputs hold bits, holding and input registers 16-bit words. The config calls
/// a register's table its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

impl Table {
    pub(crate) fn is_bit(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
    /// The name used in the config and in messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

/// How ADUs are framed: MBAP for Modbus TCP, address + CRC for RTU (also RTU over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Tcp,
    Rtu,
}

impl Framing {
    /// Offset of the unit id in an ADU.
    fn unit_offset(self) -> usize {
        match self {
            Framing::Tcp => MBAP_LEN - 1,
            Framing::Rtu => 0,
        }
    }
}

/// A response that is not the answer to the request: each is counted and logged by kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("CRC mismatch")]
    Crc,
    #[error("reply from unit {got}, expected {expected}")]
    WrongUnit { expected: u8, got: u8 },
    #[error("reply with function code {got:#04x}, expected {expected:#04x}")]
    WrongFunction { expected: u8, got: u8 },
    #[error("reply carries {got} data bytes, expected {expected}")]
    ByteCount { expected: usize, got: usize },
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
}

/// A Modbus exception response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    pub function: u8,
    pub code: u8,
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exception {:02} ({}) to function {:#04x}",
            self.code,
            exception_name(self.code),
            self.function
        )
    }
}

/// What a response says when it is well formed.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Words(Vec<u16>),
    Bits(Vec<bool>),
    Written,
    Exception(Exception),
}

/// One request: the ADU to send and what to expect back.
#[derive(Debug)]
pub struct Request {
    pub adu: Vec<u8>,
    pub unit: u8,
    pub function: u8,
    pub quantity: u16,
    /// TCP transaction id (0 for RTU).
    pub transaction: u16,
    framing: Framing,
    inner: ModbusRequest,
}

fn read_function(kind: Table) -> u8 {
    match kind {
        Table::Coil => function::READ_COILS,
        Table::DiscreteInput => function::READ_DISCRETE_INPUTS,
        Table::Holding => function::READ_HOLDING_REGISTERS,
        Table::Input => function::READ_INPUT_REGISTERS,
    }
}

fn new_request(framing: Framing, transaction: u16, unit: u8) -> ModbusRequest {
    match framing {
        Framing::Tcp => ModbusRequest::new_tcp_udp(unit, transaction),
        Framing::Rtu => ModbusRequest::new(unit, ModbusProto::Rtu),
    }
}

/// The rmodbus builders fail only on quantities outside the protocol limits, which the read
/// planner and the batch writer never produce; the error is kept, not unwrapped.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the request: {0:?}")]
pub struct BuildError(pub rmodbus::ErrorKind);

/// Build a read request (function 1, 2, 3 or 4).
pub fn read(
    framing: Framing,
    transaction: u16,
    unit: u8,
    kind: Table,
    address: u16,
    quantity: u16,
) -> Result<Request, BuildError> {
    let mut inner = new_request(framing, transaction, unit);
    let mut adu = Vec::with_capacity(12);
    match kind {
        Table::Coil => inner.generate_get_coils(address, quantity, &mut adu),
        Table::DiscreteInput => inner.generate_get_discretes(address, quantity, &mut adu),
        Table::Holding => inner.generate_get_holdings(address, quantity, &mut adu),
        Table::Input => inner.generate_get_inputs(address, quantity, &mut adu),
    }
    .map_err(BuildError)?;
    Ok(Request {
        adu,
        unit,
        function: read_function(kind),
        quantity,
        transaction,
        framing,
        inner,
    })
}

/// Build a write of several holding registers (function 16).
pub fn write_multiple(
    framing: Framing,
    transaction: u16,
    unit: u8,
    address: u16,
    values: &[u16],
) -> Result<Request, BuildError> {
    let mut inner = new_request(framing, transaction, unit);
    let mut adu = Vec::with_capacity(12 + 2 * values.len());
    inner
        .generate_set_holdings_bulk(address, values, &mut adu)
        .map_err(BuildError)?;
    Ok(Request {
        adu,
        unit,
        function: function::WRITE_MULTIPLE_REGISTERS,
        quantity: values.len() as u16,
        transaction,
        framing,
        inner,
    })
}

/// Build a write of one holding register (function 6).
pub fn write_single(
    framing: Framing,
    transaction: u16,
    unit: u8,
    address: u16,
    value: u16,
) -> Result<Request, BuildError> {
    let mut inner = new_request(framing, transaction, unit);
    let mut adu = Vec::with_capacity(12);
    inner
        .generate_set_holding(address, value, &mut adu)
        .map_err(BuildError)?;
    Ok(Request {
        adu,
        unit,
        function: function::WRITE_SINGLE_REGISTER,
        quantity: 1,
        transaction,
        framing,
        inner,
    })
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte first.
/// Modbus over serial line v1.02, 6.2.2.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The transaction id of a TCP ADU, or `None` if it is too short to carry one.
pub fn tcp_transaction(adu: &[u8]) -> Option<u16> {
    (adu.len() >= 2).then(|| u16::from_be_bytes([adu[0], adu[1]]))
}

/// Total length of the TCP ADU whose first `MBAP_LEN` bytes are given.
pub fn tcp_adu_len(header: &[u8]) -> Result<usize, FrameError> {
    if header.len() < MBAP_LEN {
        return Err(FrameError::Malformed("short MBAP header"));
    }
    if header[2] != 0 || header[3] != 0 {
        return Err(FrameError::Malformed("protocol id is not 0"));
    }
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if !(2..=TCP_MAX_ADU - 6).contains(&len) {
        return Err(FrameError::Malformed("MBAP length out of range"));
    }
    Ok(6 + len)
}

/// Total length of the RTU ADU that starts with `head`, once enough of it is known:
/// `Ok(None)` asks for more bytes. Modbus over serial line v1.02, 2.5.1.
pub fn rtu_adu_len(head: &[u8]) -> Result<Option<usize>, FrameError> {
    match rmodbus::guess_response_frame_len(head, ModbusProto::Rtu) {
        Ok(n) => Ok(Some(usize::from(n))),
        Err(rmodbus::ErrorKind::OOB) => Ok(None),
        Err(_) => Err(FrameError::Malformed("unknown function code")),
    }
}

fn rtu_crc_len(framing: Framing) -> usize {
    match framing {
        Framing::Tcp => 0,
        Framing::Rtu => 2,
    }
}

/// Check a response ADU against its request and return what it says.
pub fn parse(req: &Request, adu: &[u8]) -> Result<Reply, FrameError> {
    let framing = req.framing;
    let min = match framing {
        Framing::Tcp => MBAP_LEN + 2,
        Framing::Rtu => 5,
    };
    if adu.len() < min {
        return Err(FrameError::Malformed("reply too short"));
    }
    if framing == Framing::Rtu {
        if adu.len() > RTU_MAX_ADU {
            return Err(FrameError::Malformed("reply longer than an RTU frame"));
        }
        let body = adu.len() - 2;
        let crc = crc16(&adu[..body]);
        if crc != u16::from_le_bytes([adu[body], adu[body + 1]]) {
            return Err(FrameError::Crc);
        }
    }
    let at = framing.unit_offset();
    let (unit, func) = (adu[at], adu[at + 1]);
    if unit != req.unit {
        return Err(FrameError::WrongUnit {
            expected: req.unit,
            got: unit,
        });
    }
    if func == req.function | function::EXCEPTION_FLAG {
        return Ok(Reply::Exception(Exception {
            function: req.function,
            code: adu[at + 2],
        }));
    }
    if func != req.function {
        return Err(FrameError::WrongFunction {
            expected: req.function,
            got: func,
        });
    }
    if matches!(func, 1..=4)
        && usize::from(adu[at + 2]) + at + 3 != adu.len() - rtu_crc_len(framing)
    {
        return Err(FrameError::Malformed(
            "byte count does not match the frame length",
        ));
    }
    let data = req
        .inner
        .parse_slice(adu)
        .map_err(|_| FrameError::Malformed("rejected by the frame parser"))?;
    match func {
        function::READ_HOLDING_REGISTERS | function::READ_INPUT_REGISTERS => {
            let expected = 2 * usize::from(req.quantity);
            if data.len() != expected {
                return Err(FrameError::ByteCount {
                    expected,
                    got: data.len(),
                });
            }
            Ok(Reply::Words(
                data.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
            ))
        }
        function::READ_COILS | function::READ_DISCRETE_INPUTS => {
            let expected = usize::from(req.quantity).div_ceil(8);
            if data.len() != expected {
                return Err(FrameError::ByteCount {
                    expected,
                    got: data.len(),
                });
            }
            Ok(Reply::Bits(
                (0..usize::from(req.quantity))
                    .map(|i| data[i / 8] & (1 << (i % 8)) != 0)
                    .collect(),
            ))
        }
        _ => {
            // Writes echo address and quantity (16) or address and value (6).
            if req.adu.len() < at + 6
                || adu.len() < at + 6
                || adu[at + 2..at + 6] != req.adu[at + 2..at + 6]
            {
                return Err(FrameError::Malformed(
                    "write reply does not echo the request",
                ));
            }
            Ok(Reply::Written)
        }
    }
}

#[cfg(test)]
mod tests;
