//! The binary UEFI event log: parsing, event data decoding and checks, replay and boot
//! aggregates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::evidence::uefi::{EventLog, boot_aggregates};

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = EventLog::parse(data) {
        let pcrs = log.replay();
        let _ = boot_aggregates(&pcrs);
        for e in &log.events {
            let _ = e.type_name();
            let _ = e.check_data();
            let _ = e.decode();
        }
    }
});
