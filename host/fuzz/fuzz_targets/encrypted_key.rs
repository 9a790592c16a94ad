//! Encrypted PKCS#8 private keys named by Keylime's TLS options (PBES2 parameters, PBKDF2,
//! AES-CBC): whatever the file holds, decryption answers with a key or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::net::pki::decrypt_pkcs8;

fuzz_target!(|data: &[u8]| {
    // Low iteration counts only: the fuzzer must not spend its time in PBKDF2.
    if data.len() < 4096 {
        let _ = decrypt_pkcs8(data, b"password");
    }
});
