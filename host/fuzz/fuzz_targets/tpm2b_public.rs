//! TPM2B_PUBLIC from registration bodies: parsing and everything the registrar derives
//! from a parsed key must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::evidence::PublicArea;

fuzz_target!(|data: &[u8]| {
    if let Ok(public) = PublicArea::from_tpm2b(data) {
        let _ = zest::tpm::object_name(&public);
        let _ = zest::tpm::check_attestation_key(&public);
        let _ = zest::tpm::subject_public_key_info(&public);
        let _ = zest::tpm::make_credential(&public, b"\x00\x0bname", b"0123456789abcdef0123456789abcdef");
    }
});
