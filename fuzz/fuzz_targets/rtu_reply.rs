//! Untrusted bytes from an RS-485 bus: the progressive frame-length guess and reply parsing
//! must never panic, whatever arrives.
#![no_main]

use dyeing_gateway::config::RegisterKind;
use dyeing_gateway::modbus::codec::{self, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = [RegisterKind::Coil, RegisterKind::DiscreteInput, RegisterKind::Holding, RegisterKind::Input][usize::from(data[0] % 4)];
    let quantity = u16::from(data[1]) % 125 + 1;
    let adu = &data[2..];
    for end in 0..=adu.len() {
        let _ = codec::rtu_adu_len(&adu[..end]);
    }
    let unit = adu.first().copied().unwrap_or(1);
    if let Ok(req) = codec::read(Framing::Rtu, 0, unit, kind, 0, quantity) {
        let _ = codec::parse(&req, adu);
    }
    if let Ok(req) = codec::write_single(Framing::Rtu, 0, unit, 7, 1) {
        let _ = codec::parse(&req, adu);
    }
});
