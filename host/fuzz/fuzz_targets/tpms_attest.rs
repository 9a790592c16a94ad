//! TPMS_ATTEST as the TPM marshals it (quotes and certifications).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = zest::evidence::Attest::parse(data);
});
