//! What push agents send that the host reads by hand: `system_info.boot_time` (RFC 3339)
//! and the PoP certification (TPMS_ATTEST + TPMT_SIGNATURE against an AK).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = zest::clock::parse_rfc3339(text);
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (message, signature) = data.split_at(split);
    if let Ok(ak) = zest::evidence::PublicArea::from_tpm2b(signature) {
        let _ = zest::verifier::push::sessions::check_proof(&ak, b"challenge", message, signature);
    }
});
