//! Key buffers of ima-buf keyring entries (and policy verification keys): certificate or
//! public key, DER or PEM; then a prehashed verification with whatever key came out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::evidence::HashAlg;
use zest::evidence::ima_keys::{parse_key, verify_prehashed};

fuzz_target!(|data: &[u8]| {
    if let Some(key) = parse_key(data) {
        let digest = [0u8; 32];
        let _ = verify_prehashed(&key.spki_der, Some(HashAlg::Sha256), &digest, data);
    }
    let _ = verify_prehashed(data, Some(HashAlg::Sha256), &[0u8; 32], data);
});
