//! Untrusted answers of the plant API's new-batches endpoint: parsing and validation of
//! every entry must never panic.
#![no_main]

use dyeing_gateway::batch::fetch;
use dyeing_gateway::config::{BatchWrite, StringOrder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let area = BatchWrite::area(100, 10, 120);
    if let Ok((entries, _)) = fetch::parse(text, "machine", "batch", "id") {
        for e in entries {
            if fetch::check_name(&e.name, &area).is_ok() {
                let words = dyeing_gateway::registers::encode_string(&e.name, 10, StringOrder::HighFirst);
                assert_eq!(dyeing_gateway::registers::decode_string(&words, StringOrder::HighFirst), e.name.trim_end());
            }
        }
    }
});
