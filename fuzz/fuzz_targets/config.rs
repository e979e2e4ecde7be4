//! Untrusted config text: parsing and validation report errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = dyeing_gateway::config::parse(text) {
        let _ = dyeing_gateway::config::validate_raw(raw);
    }
});
