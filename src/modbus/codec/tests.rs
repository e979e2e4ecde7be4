use super::*;

// Most frames below are the worked examples of the Modbus specification as reproduced by
// simplymodbus.ca (slave 0x11 = 17), so their CRC bytes are published values and not merely
// whatever `crc16` happens to compute.

fn tcp_read(kind: Table, address: u16, quantity: u16) -> Request {
    read(Framing::Tcp, 0x0001, 0x11, kind, address, quantity).unwrap()
}

fn rtu_read(kind: Table, address: u16, quantity: u16) -> Request {
    read(Framing::Rtu, 0, 0x11, kind, address, quantity).unwrap()
}

/// Bits of a coil or discrete-input reply, least significant bit of the first byte first.
fn bits_of(bytes: &[u8], quantity: usize) -> Vec<bool> {
    (0..quantity)
        .map(|i| bytes[i / 8] >> (i % 8) & 1 == 1)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Read requests
// ---------------------------------------------------------------------------------------------

#[test]
fn tcp_read_holding_registers_request() {
    let req = read(Framing::Tcp, 0x0001, 0x11, Table::Holding, 0x006B, 3).unwrap();
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length: unit id + 5 PDU bytes
        0x11, // unit id
        0x03, // function code: read holding registers
        0x00, 0x6B, // starting address
        0x00, 0x03, // quantity of registers
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.unit, 0x11);
    assert_eq!(req.function, function::READ_HOLDING_REGISTERS);
    assert_eq!(req.quantity, 3);
    assert_eq!(req.transaction, 0x0001);
}

#[test]
fn tcp_read_input_registers_request() {
    let req = read(Framing::Tcp, 0x1234, 0x11, Table::Input, 0x0008, 1).unwrap();
    let adu = [
        0x12, 0x34, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11, // unit id
        0x04, // function code: read input registers
        0x00, 0x08, // starting address
        0x00, 0x01, // quantity of registers
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.function, function::READ_INPUT_REGISTERS);
    assert_eq!(req.transaction, 0x1234);
}

#[test]
fn tcp_read_coils_request() {
    let req = tcp_read(Table::Coil, 0x0013, 0x25);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11, // unit id
        0x01, // function code: read coils
        0x00, 0x13, // starting address (coil 20)
        0x00, 0x25, // quantity of coils (37)
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.function, function::READ_COILS);
    assert_eq!(req.quantity, 37);
}

#[test]
fn tcp_read_discrete_inputs_request() {
    let req = tcp_read(Table::DiscreteInput, 0x00C4, 0x16);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11, // unit id
        0x02, // function code: read discrete inputs
        0x00, 0xC4, // starting address
        0x00, 0x16, // quantity of inputs (22)
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.function, function::READ_DISCRETE_INPUTS);
}

#[test]
fn rtu_read_holding_registers_request_classic_crc() {
    // The frame every Modbus tool prints first: slave 1, read 10 holding registers from 0.
    let req = read(Framing::Rtu, 0, 0x01, Table::Holding, 0x0000, 10).unwrap();
    let adu = [
        0x01, // slave address
        0x03, // function code: read holding registers
        0x00, 0x00, // starting address
        0x00, 0x0A, // quantity of registers
        0xC5, 0xCD, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
}

#[test]
fn rtu_read_holding_registers_request() {
    let req = rtu_read(Table::Holding, 0x006B, 3);
    let adu = [
        0x11, // slave address
        0x03, // function code: read holding registers
        0x00, 0x6B, // starting address
        0x00, 0x03, // quantity of registers
        0x76, 0x87, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.function, function::READ_HOLDING_REGISTERS);
}

#[test]
fn rtu_read_input_registers_request() {
    let req = rtu_read(Table::Input, 0x0008, 1);
    let adu = [
        0x11, // slave address
        0x04, // function code: read input registers
        0x00, 0x08, // starting address
        0x00, 0x01, // quantity of registers
        0xB2, 0x98, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
}

#[test]
fn rtu_read_coils_request() {
    let req = rtu_read(Table::Coil, 0x0013, 0x25);
    let adu = [
        0x11, // slave address
        0x01, // function code: read coils
        0x00, 0x13, // starting address
        0x00, 0x25, // quantity of coils
        0x0E, 0x84, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
}

#[test]
fn rtu_read_discrete_inputs_request() {
    let req = rtu_read(Table::DiscreteInput, 0x00C4, 0x16);
    let adu = [
        0x11, // slave address
        0x02, // function code: read discrete inputs
        0x00, 0xC4, // starting address
        0x00, 0x16, // quantity of inputs
        0xBA, 0xA9, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
}

#[test]
fn rtu_request_of_slave_one_for_every_kind() {
    // Slave 1, address 0, quantity 10 for each read function: the CRC differs only by the
    // function code, which catches a builder that mixes up kinds.
    let cases = [
        (
            Table::Coil,
            [0x01, 0x01, 0x00, 0x00, 0x00, 0x0A, 0xBC, 0x0D],
        ),
        (
            Table::DiscreteInput,
            [0x01, 0x02, 0x00, 0x00, 0x00, 0x0A, 0xF8, 0x0D],
        ),
        (
            Table::Holding,
            [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD],
        ),
        (
            Table::Input,
            [0x01, 0x04, 0x00, 0x00, 0x00, 0x0A, 0x70, 0x0D],
        ),
    ];
    for (kind, expected) in cases {
        let req = read(Framing::Rtu, 0, 0x01, kind, 0, 10).unwrap();
        assert_eq!(req.adu, expected, "{kind:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Write requests
// ---------------------------------------------------------------------------------------------

#[test]
fn tcp_write_single_register_request() {
    let req = write_single(Framing::Tcp, 0x0102, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x01, 0x02, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11, // unit id
        0x06, // function code: write single register
        0x00, 0x01, // register address
        0x00, 0x03, // value
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.function, function::WRITE_SINGLE_REGISTER);
    assert_eq!(req.quantity, 1);
}

#[test]
fn rtu_write_single_register_request() {
    let req = write_single(Framing::Rtu, 0, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x11, // slave address
        0x06, // function code: write single register
        0x00, 0x01, // register address
        0x00, 0x03, // value
        0x9A, 0x9B, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
}

#[test]
fn tcp_write_multiple_registers_request() {
    let req = write_multiple(Framing::Tcp, 0x0007, 0x11, 0x0001, &[0x000A, 0x0102]).unwrap();
    let adu = [
        0x00, 0x07, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x0B, // length: unit id + 10 PDU bytes
        0x11, // unit id
        0x10, // function code: write multiple registers
        0x00, 0x01, // starting address
        0x00, 0x02, // quantity of registers
        0x04, // byte count
        0x00, 0x0A, // register 1
        0x01, 0x02, // register 2
    ];
    assert_eq!(req.adu, adu);
    assert_eq!(req.function, function::WRITE_MULTIPLE_REGISTERS);
    assert_eq!(req.quantity, 2);
}

#[test]
fn rtu_write_multiple_registers_request() {
    let req = write_multiple(Framing::Rtu, 0, 0x11, 0x0001, &[0x000A, 0x0102]).unwrap();
    let adu = [
        0x11, // slave address
        0x10, // function code: write multiple registers
        0x00, 0x01, // starting address
        0x00, 0x02, // quantity of registers
        0x04, // byte count
        0x00, 0x0A, // register 1
        0x01, 0x02, // register 2
        0xC6, 0xF0, // CRC, low byte first
    ];
    assert_eq!(req.adu, adu);
}

#[test]
fn write_multiple_beyond_the_protocol_limit_is_a_build_error() {
    // rmodbus refuses more than 125 values (the spec's limit for a write is 123, which the
    // configuration enforces); the refusal must come back as an error, not a panic.
    let values = [0u16; 126];
    assert!(write_multiple(Framing::Tcp, 1, 1, 0, &values).is_err());
}

// ---------------------------------------------------------------------------------------------
// Replies to reads
// ---------------------------------------------------------------------------------------------

#[test]
fn tcp_holding_registers_reply() {
    let req = tcp_read(Table::Holding, 0x006B, 3);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x09, // length
        0x11, // unit id
        0x03, // function code
        0x06, // byte count
        0xAE, 0x41, // register 0x6B
        0x56, 0x52, // register 0x6C
        0x43, 0x40, // register 0x6D
    ];
    assert_eq!(
        parse(&req, &adu),
        Ok(Reply::Words(vec![0xAE41, 0x5652, 0x4340]))
    );
}

#[test]
fn rtu_holding_registers_reply() {
    let req = rtu_read(Table::Holding, 0x006B, 3);
    let adu = [
        0x11, // slave address
        0x03, // function code
        0x06, // byte count
        0xAE, 0x41, // register 0x6B
        0x56, 0x52, // register 0x6C
        0x43, 0x40, // register 0x6D
        0x49, 0xAD, // CRC
    ];
    assert_eq!(
        parse(&req, &adu),
        Ok(Reply::Words(vec![0xAE41, 0x5652, 0x4340]))
    );
}

#[test]
fn rtu_input_registers_reply() {
    let req = rtu_read(Table::Input, 0x0008, 1);
    let adu = [
        0x11, // slave address
        0x04, // function code
        0x02, // byte count
        0x00, 0x0A, // register 8
        0xF8, 0xF4, // CRC
    ];
    assert_eq!(parse(&req, &adu), Ok(Reply::Words(vec![0x000A])));
}

#[test]
fn tcp_input_registers_reply() {
    let req = tcp_read(Table::Input, 0x0008, 1);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x05, // length
        0x11, // unit id
        0x04, // function code
        0x02, // byte count
        0x00, 0x0A, // register 8
    ];
    assert_eq!(parse(&req, &adu), Ok(Reply::Words(vec![0x000A])));
}

#[test]
fn rtu_coils_reply_unpacks_bits_lsb_first() {
    let req = rtu_read(Table::Coil, 0x0013, 37);
    let adu = [
        0x11, // slave address
        0x01, // function code
        0x05, // byte count
        0xCD, // coils 27..20: 1100 1101
        0x6B, // coils 35..28
        0xB2, // coils 43..36
        0x0E, // coils 51..44
        0x1B, // coils 56..52: only the low 5 bits are coils, the rest is padding
        0x45, 0xE6, // CRC
    ];
    let Ok(Reply::Bits(bits)) = parse(&req, &adu) else {
        panic!("expected bits");
    };
    assert_eq!(bits.len(), 37);
    // Coil 20 is bit 0 of 0xCD (set), coil 21 is bit 1 (clear), coil 22 bit 2 (set).
    assert_eq!(
        &bits[..8],
        &[true, false, true, true, false, false, true, true]
    );
    assert_eq!(bits, bits_of(&[0xCD, 0x6B, 0xB2, 0x0E, 0x1B], 37));
}

#[test]
fn tcp_coils_reply() {
    let req = tcp_read(Table::Coil, 0x0013, 37);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x08, // length
        0x11, // unit id
        0x01, // function code
        0x05, // byte count
        0xCD, 0x6B, 0xB2, 0x0E, 0x1B, // coils
    ];
    assert_eq!(
        parse(&req, &adu),
        Ok(Reply::Bits(bits_of(&[0xCD, 0x6B, 0xB2, 0x0E, 0x1B], 37)))
    );
}

#[test]
fn rtu_discrete_inputs_reply() {
    let req = rtu_read(Table::DiscreteInput, 0x00C4, 22);
    let adu = [
        0x11, // slave address
        0x02, // function code
        0x03, // byte count
        0xAC, // inputs 204..197
        0xDB, // inputs 212..205
        0x35, // inputs 218..213 (6 of 8 bits used)
        0x20, 0x18, // CRC
    ];
    let Ok(Reply::Bits(bits)) = parse(&req, &adu) else {
        panic!("expected bits");
    };
    assert_eq!(bits, bits_of(&[0xAC, 0xDB, 0x35], 22));
    // 0x35 = 0011 0101: the last six inputs are 1, 0, 1, 0, 1, 1.
    assert_eq!(&bits[16..], &[true, false, true, false, true, true]);
}

// ---------------------------------------------------------------------------------------------
// Replies to writes
// ---------------------------------------------------------------------------------------------

#[test]
fn rtu_write_single_echo_is_written() {
    let req = write_single(Framing::Rtu, 0, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x11, // slave address
        0x06, // function code
        0x00, 0x01, // register address
        0x00, 0x03, // value
        0x9A, 0x9B, // CRC
    ];
    assert_eq!(parse(&req, &adu), Ok(Reply::Written));
}

#[test]
fn tcp_write_single_echo_is_written() {
    let req = write_single(Framing::Tcp, 0x0102, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x01, 0x02, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11, // unit id
        0x06, // function code
        0x00, 0x01, // register address
        0x00, 0x03, // value
    ];
    assert_eq!(parse(&req, &adu), Ok(Reply::Written));
}

#[test]
fn rtu_write_multiple_reply_is_written() {
    let req = write_multiple(Framing::Rtu, 0, 0x11, 0x0001, &[0x000A, 0x0102]).unwrap();
    let adu = [
        0x11, // slave address
        0x10, // function code
        0x00, 0x01, // starting address
        0x00, 0x02, // quantity of registers
        0x12, 0x98, // CRC
    ];
    assert_eq!(parse(&req, &adu), Ok(Reply::Written));
}

#[test]
fn tcp_write_multiple_reply_is_written() {
    let req = write_multiple(Framing::Tcp, 0x0007, 0x11, 0x0001, &[0x000A, 0x0102]).unwrap();
    let adu = [
        0x00, 0x07, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x06, // length
        0x11, // unit id
        0x10, // function code
        0x00, 0x01, // starting address
        0x00, 0x02, // quantity of registers
    ];
    assert_eq!(parse(&req, &adu), Ok(Reply::Written));
}

#[test]
fn write_single_reply_with_another_value_is_rejected() {
    // A device that echoes a different value did not store what we sent.
    let req = write_single(Framing::Rtu, 0, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x11, // slave address
        0x06, // function code
        0x00, 0x01, // register address
        0x00, 0x04, // value: 4, not the 3 we wrote
        0xDB, 0x59, // CRC (valid for this frame)
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::Malformed(
            "write reply does not echo the request"
        ))
    );
}

#[test]
fn write_multiple_reply_with_another_quantity_is_rejected() {
    let req = write_multiple(Framing::Rtu, 0, 0x11, 0x0001, &[0x000A, 0x0102]).unwrap();
    let adu = [
        0x11, // slave address
        0x10, // function code
        0x00, 0x01, // starting address
        0x00, 0x03, // quantity: 3, not 2
        0xD3, 0x58, // CRC (valid for this frame)
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::Malformed(
            "write reply does not echo the request"
        ))
    );
}

#[test]
fn tcp_write_reply_too_short_to_echo_is_rejected() {
    let req = write_single(Framing::Tcp, 0x0102, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x01, 0x02, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x04, // length
        0x11, // unit id
        0x06, // function code
        0x00, 0x01, // register address, and no value
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::Malformed(
            "write reply does not echo the request"
        ))
    );
}

// ---------------------------------------------------------------------------------------------
// Exceptions
// ---------------------------------------------------------------------------------------------

#[test]
fn rtu_exception_reply() {
    let req = rtu_read(Table::Holding, 0x006B, 3);
    let adu = [
        0x11, // slave address
        0x83, // function code | 0x80: exception to read holding registers
        0x02, // exception code: illegal data address
        0xC1, 0x34, // CRC
    ];
    assert_eq!(
        parse(&req, &adu),
        Ok(Reply::Exception(Exception {
            function: function::READ_HOLDING_REGISTERS,
            code: exception::ILLEGAL_DATA_ADDRESS,
        }))
    );
}

#[test]
fn rtu_exception_reply_from_the_specification() {
    let req = read(Framing::Rtu, 0, 0x0A, Table::Coil, 0x0400, 1).unwrap();
    let adu = [
        0x0A, // slave address
        0x81, // exception to read coils
        0x02, // illegal data address
        0xB0, 0x53, // CRC
    ];
    assert_eq!(
        parse(&req, &adu),
        Ok(Reply::Exception(Exception {
            function: function::READ_COILS,
            code: 0x02,
        }))
    );
}

#[test]
fn tcp_exception_reply() {
    let req = write_single(Framing::Tcp, 0x0001, 0x11, 0x0001, 0x0003).unwrap();
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x03, // length
        0x11, // unit id
        0x86, // exception to write single register
        0x04, // server device failure
    ];
    assert_eq!(
        parse(&req, &adu),
        Ok(Reply::Exception(Exception {
            function: function::WRITE_SINGLE_REGISTER,
            code: exception::SERVER_DEVICE_FAILURE,
        }))
    );
}

#[test]
fn exception_to_another_function_is_a_wrong_function() {
    // 0x84 is an exception, but to "read input registers", which we did not ask for.
    let req = tcp_read(Table::Holding, 0, 1);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x03, // length
        0x11, // unit id
        0x84, // exception to read input registers
        0x02, // exception code
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::WrongFunction {
            expected: 0x03,
            got: 0x84
        })
    );
}

#[test]
fn exception_display_names_the_code_and_function() {
    let e = Exception {
        function: 0x03,
        code: 0x02,
    };
    assert_eq!(
        e.to_string(),
        "exception 02 (illegal data address) to function 0x03"
    );
    assert_eq!(
        exception_name(exception::ILLEGAL_FUNCTION),
        "illegal function"
    );
    assert_eq!(
        exception_name(exception::ILLEGAL_DATA_VALUE),
        "illegal data value"
    );
    assert_eq!(
        exception_name(0x0B),
        "gateway target device failed to respond"
    );
    assert_eq!(exception_name(0x42), "unknown exception");
}

// ---------------------------------------------------------------------------------------------
// Replies that do not answer the request
// ---------------------------------------------------------------------------------------------

#[test]
fn rtu_reply_from_another_unit() {
    let req = rtu_read(Table::Holding, 0, 1);
    let adu = [
        0x12, // slave address: 18, we asked 17
        0x03, // function code
        0x02, // byte count
        0x00, 0x01, // register
        0xFC, 0x47, // CRC (valid for this frame)
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::WrongUnit {
            expected: 0x11,
            got: 0x12
        })
    );
}

#[test]
fn tcp_reply_from_another_unit() {
    let req = tcp_read(Table::Holding, 0, 1);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x05, // length
        0x01, // unit id: 1, we asked 17
        0x03, // function code
        0x02, // byte count
        0x00, 0x01, // register
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::WrongUnit {
            expected: 0x11,
            got: 0x01
        })
    );
}

#[test]
fn rtu_reply_with_another_function() {
    let req = rtu_read(Table::Holding, 0, 1);
    let adu = [
        0x11, // slave address
        0x04, // function code: read input registers, we asked holding
        0x02, // byte count
        0x00, 0x01, // register
        0xB9, 0x33, // CRC (valid for this frame)
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::WrongFunction {
            expected: 0x03,
            got: 0x04
        })
    );
}

#[test]
fn tcp_reply_to_another_transaction_is_rejected() {
    // The transaction id is checked by rmodbus; a stale reply must not be taken as this one.
    let req = tcp_read(Table::Holding, 0, 1);
    let adu = [
        0x00, 0x02, // transaction id: 2, we sent 1
        0x00, 0x00, // protocol id
        0x00, 0x05, // length
        0x11, // unit id
        0x03, // function code
        0x02, // byte count
        0x00, 0x01, // register
    ];
    assert!(matches!(parse(&req, &adu), Err(FrameError::Malformed(_))));
}

#[test]
fn byte_count_disagreeing_with_the_frame_length() {
    let req = tcp_read(Table::Holding, 0x006B, 3);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x09, // length
        0x11, // unit id
        0x03, // function code
        0x04, // byte count: says 4, but 6 data bytes follow
        0xAE, 0x41, 0x56, 0x52, 0x43, 0x40, // data
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::Malformed(
            "byte count does not match the frame length"
        ))
    );
}

#[test]
fn rtu_byte_count_disagreeing_with_the_frame_length() {
    let req = rtu_read(Table::Holding, 0, 1);
    let adu = [
        0x11, // slave address
        0x03, // function code
        0x04, // byte count: says 4, but 2 data bytes follow
        0x00, 0x01, // register
        0x58, 0x46, // CRC (valid for this frame)
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::Malformed(
            "byte count does not match the frame length"
        ))
    );
}

#[test]
fn fewer_registers_than_requested() {
    // A well-formed frame that carries 2 registers when 3 were requested.
    let req = rtu_read(Table::Holding, 0, 3);
    let adu = [
        0x11, // slave address
        0x03, // function code
        0x04, // byte count
        0x00, 0x01, // register 0
        0x00, 0x02, // register 1
        0x3B, 0xF3, // CRC
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::ByteCount {
            expected: 6,
            got: 4
        })
    );
}

#[test]
fn more_registers_than_requested() {
    let req = tcp_read(Table::Input, 0, 1);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x07, // length
        0x11, // unit id
        0x04, // function code
        0x04, // byte count
        0x00, 0x01, // register 0
        0x00, 0x02, // register 1, not asked for
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::ByteCount {
            expected: 2,
            got: 4
        })
    );
}

#[test]
fn fewer_coil_bytes_than_requested() {
    // 37 coils need 5 bytes; this reply has 4.
    let req = tcp_read(Table::Coil, 0x0013, 37);
    let adu = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x07, // length
        0x11, // unit id
        0x01, // function code
        0x04, // byte count
        0xCD, 0x6B, 0xB2, 0x0E, // coils
    ];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::ByteCount {
            expected: 5,
            got: 4
        })
    );
}

#[test]
fn rtu_crc_error() {
    let req = rtu_read(Table::Holding, 0x006B, 3);
    let adu = [
        0x11, // slave address
        0x03, // function code
        0x06, // byte count
        0xAE, 0x41, // register 0x6B
        0x56, 0x53, // register 0x6C: one bit flipped on the line (0x5652 sent)
        0x43, 0x40, // register 0x6D
        0x49, 0xAD, // CRC of the frame as sent
    ];
    assert_eq!(parse(&req, &adu), Err(FrameError::Crc));
}

#[test]
fn rtu_crc_is_checked_before_the_unit() {
    // A corrupted frame says nothing reliable about its sender, so the CRC comes first.
    let req = rtu_read(Table::Holding, 0, 1);
    let adu = [
        0x12, // slave address (corrupted)
        0x03, // function code
        0x02, // byte count
        0x00, 0x01, // register
        0xB8, 0x47, // CRC of the frame from 0x11
    ];
    assert_eq!(parse(&req, &adu), Err(FrameError::Crc));
}

#[test]
fn rtu_crc_bytes_swapped_is_a_crc_error() {
    // The CRC goes low byte first; high byte first is wrong.
    let req = rtu_read(Table::Input, 0x0008, 1);
    let adu = [
        0x11, // slave address
        0x04, // function code
        0x02, // byte count
        0x00, 0x0A, // register 8
        0xF4, 0xF8, // CRC with its bytes swapped
    ];
    assert_eq!(parse(&req, &adu), Err(FrameError::Crc));
}

#[test]
fn too_short_replies() {
    let tcp = tcp_read(Table::Holding, 0, 1);
    let short_tcp = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x02, // length
        0x11, // unit id
        0x03, // function code, and nothing after it
    ];
    assert_eq!(
        parse(&tcp, &short_tcp),
        Err(FrameError::Malformed("reply too short"))
    );
    assert_eq!(
        parse(&tcp, &[]),
        Err(FrameError::Malformed("reply too short"))
    );

    let rtu = rtu_read(Table::Holding, 0, 1);
    let short_rtu = [
        0x11, // slave address
        0x83, // exception
        0xC1, 0x34, // two bytes that could be a CRC, but no exception code
    ];
    assert_eq!(
        parse(&rtu, &short_rtu),
        Err(FrameError::Malformed("reply too short"))
    );
    assert_eq!(
        parse(&rtu, &[0x11]),
        Err(FrameError::Malformed("reply too short"))
    );
}

#[test]
fn rtu_reply_longer_than_a_frame() {
    let req = rtu_read(Table::Holding, 0, 1);
    let adu = vec![0x11; RTU_MAX_ADU + 1];
    assert_eq!(
        parse(&req, &adu),
        Err(FrameError::Malformed("reply longer than an RTU frame"))
    );
}

// ---------------------------------------------------------------------------------------------
// Frame lengths
// ---------------------------------------------------------------------------------------------

#[test]
fn tcp_adu_len_from_the_mbap_header() {
    let header = [
        0x00, 0x01, // transaction id
        0x00, 0x00, // protocol id
        0x00, 0x09, // length: unit id + 8 PDU bytes
        0x11, // unit id
    ];
    assert_eq!(tcp_adu_len(&header), Ok(15));
    // Extra bytes after the header do not matter.
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0, 6, 0x11, 0x03, 0x00]), Ok(12));
}

#[test]
fn tcp_adu_len_bounds() {
    // The smallest ADU is unit id + function code; the largest is 260 bytes (length 254).
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0x00, 0x02, 1]), Ok(8));
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0x00, 0xFE, 1]), Ok(TCP_MAX_ADU));
    let out_of_range = Err(FrameError::Malformed("MBAP length out of range"));
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0x00, 0x00, 1]), out_of_range);
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0x00, 0x01, 1]), out_of_range);
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0x00, 0xFF, 1]), out_of_range);
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0x01, 0x00, 1]), out_of_range);
    assert_eq!(tcp_adu_len(&[0, 1, 0, 0, 0xFF, 0xFF, 1]), out_of_range);
}

#[test]
fn tcp_adu_len_rejects_a_nonzero_protocol_id() {
    let not_modbus = Err(FrameError::Malformed("protocol id is not 0"));
    let header = [
        0x00, 0x01, // transaction id
        0x00, 0x01, // protocol id: not Modbus
        0x00, 0x06, // length
        0x11, // unit id
    ];
    assert_eq!(tcp_adu_len(&header), not_modbus);
    assert_eq!(tcp_adu_len(&[0, 1, 0x01, 0x00, 0, 6, 0x11]), not_modbus);
    // An HTTP answer from a web server on the wrong port looks like this.
    assert_eq!(tcp_adu_len(b"HTTP/1.1 400"), not_modbus);
}

#[test]
fn tcp_adu_len_needs_the_whole_header() {
    assert_eq!(
        tcp_adu_len(&[0, 1, 0, 0, 0, 6]),
        Err(FrameError::Malformed("short MBAP header"))
    );
    assert_eq!(
        tcp_adu_len(&[]),
        Err(FrameError::Malformed("short MBAP header"))
    );
}

#[test]
fn tcp_transaction_id() {
    assert_eq!(tcp_transaction(&[0x12, 0x34, 0x00, 0x00]), Some(0x1234));
    assert_eq!(tcp_transaction(&[0x12]), None);
    assert_eq!(tcp_transaction(&[]), None);
}

#[test]
fn rtu_adu_len_asks_for_more_bytes() {
    assert_eq!(rtu_adu_len(&[]), Ok(None));
    // The slave address alone says nothing about the length.
    assert_eq!(rtu_adu_len(&[0x11]), Ok(None));
    // A read reply's length is in its byte count, the third byte.
    assert_eq!(rtu_adu_len(&[0x11, 0x03]), Ok(None));
    assert_eq!(rtu_adu_len(&[0x11, 0x10]), Ok(None));
}

#[test]
fn rtu_adu_len_of_an_exception_is_five() {
    // address, function | 0x80, exception code, CRC (2)
    assert_eq!(rtu_adu_len(&[0x11, 0x83]), Ok(Some(5)));
    assert_eq!(rtu_adu_len(&[0x11, 0x83, 0x02]), Ok(Some(5)));
}

#[test]
fn rtu_adu_len_of_read_replies() {
    // address, function, byte count, data (byte count), CRC (2)
    assert_eq!(rtu_adu_len(&[0x11, 0x03, 0x06]), Ok(Some(11)));
    assert_eq!(rtu_adu_len(&[0x11, 0x04, 0x02, 0x00]), Ok(Some(7)));
    assert_eq!(rtu_adu_len(&[0x11, 0x01, 0x05]), Ok(Some(10)));
    assert_eq!(rtu_adu_len(&[0x11, 0x02, 0x03]), Ok(Some(8)));
    // 125 registers, the most one read returns: 250 data bytes, a 255-byte frame.
    assert_eq!(rtu_adu_len(&[0x11, 0x03, 250]), Ok(Some(255)));
}

#[test]
fn rtu_adu_len_of_write_replies_is_eight() {
    // address, function, address (2), value or quantity (2), CRC (2)
    assert_eq!(rtu_adu_len(&[0x11, 0x06, 0x00]), Ok(Some(8)));
    assert_eq!(rtu_adu_len(&[0x11, 0x10, 0x00]), Ok(Some(8)));
}

#[test]
fn rtu_adu_len_rejects_an_unknown_function() {
    // Function 0x07 (read exception status) is never requested, so its reply is line noise.
    assert_eq!(
        rtu_adu_len(&[0x11, 0x07, 0x00]),
        Err(FrameError::Malformed("unknown function code"))
    );
}

#[test]
fn rtu_adu_len_agrees_with_real_frames() {
    let frames: [&[u8]; 4] = [
        &[
            0x11, 0x03, 0x06, 0xAE, 0x41, 0x56, 0x52, 0x43, 0x40, 0x49, 0xAD,
        ],
        &[0x11, 0x01, 0x05, 0xCD, 0x6B, 0xB2, 0x0E, 0x1B, 0x45, 0xE6],
        &[0x11, 0x06, 0x00, 0x01, 0x00, 0x03, 0x9A, 0x9B],
        &[0x11, 0x83, 0x02, 0xC1, 0x34],
    ];
    for f in frames {
        assert_eq!(rtu_adu_len(&f[..3]), Ok(Some(f.len())), "{f:02X?}");
    }
}

// ---------------------------------------------------------------------------------------------
// CRC
// ---------------------------------------------------------------------------------------------

#[test]
fn crc16_check_value() {
    // The catalogue check value of CRC-16/MODBUS.
    assert_eq!(crc16(b"123456789"), 0x4B37);
}

#[test]
fn crc16_vectors() {
    assert_eq!(crc16(&[]), 0xFFFF); // the initial value, unchanged
    assert_eq!(crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]), 0xCDC5);
    assert_eq!(crc16(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]), 0x8776);
    assert_eq!(crc16(&[0x11, 0x06, 0x00, 0x01, 0x00, 0x03]), 0x9B9A);
    assert_eq!(crc16(&[0x0A, 0x81, 0x02]), 0x53B0);
}

#[test]
fn crc16_of_a_frame_with_its_crc_is_zero() {
    // Appending the CRC low byte first makes the CRC of the whole frame 0: a property of
    // reflected CRCs that receivers use.
    let frame = [
        0x11, 0x03, 0x06, 0xAE, 0x41, 0x56, 0x52, 0x43, 0x40, 0x49, 0xAD,
    ];
    assert_eq!(crc16(&frame), 0);
}

#[test]
fn crc16_matches_the_crc_in_built_requests() {
    for (unit, address, quantity) in [(1u8, 0u16, 1u16), (17, 0x6B, 3), (247, 0xFFF0, 125)] {
        let req = read(Framing::Rtu, 0, unit, Table::Input, address, quantity).unwrap();
        let body = req.adu.len() - 2;
        assert_eq!(req.adu[body..], crc16(&req.adu[..body]).to_le_bytes());
    }
}
