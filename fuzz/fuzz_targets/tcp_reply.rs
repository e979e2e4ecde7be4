//! Untrusted bytes from a Modbus TCP device: framing and reply parsing must never panic.
#![no_main]

use dyeing_gateway::config::RegisterKind;
use dyeing_gateway::modbus::codec::{self, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let kind = [RegisterKind::Coil, RegisterKind::DiscreteInput, RegisterKind::Holding, RegisterKind::Input][usize::from(data[0] % 4)];
    let quantity = u16::from(data[1]) % 125 + 1;
    let adu = &data[2..];
    let _ = codec::tcp_adu_len(adu);
    let transaction = codec::tcp_transaction(adu).unwrap_or(1);
    let unit = adu.get(6).copied().unwrap_or(1);
    if let Ok(req) = codec::read(Framing::Tcp, transaction, unit, kind, 0, quantity) {
        let _ = codec::parse(&req, adu);
    }
    if let Ok(req) = codec::write_multiple(Framing::Tcp, transaction, unit, 100, &[1, 2, 3]) {
        let _ = codec::parse(&req, adu);
    }
});
