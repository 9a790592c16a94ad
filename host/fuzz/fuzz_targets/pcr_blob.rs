//! The tpm2-tools PCR blob (little-endian TPML_PCR_SELECTION and TPML_DIGEST blocks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = zest::evidence::PcrValues::parse(data);
});
