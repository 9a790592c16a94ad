//! Encrypted PKCS#8 private keys named by Keylime's TLS options (PBES2 parameters, PBKDF2,
//! AES-CBC): whatever the file holds, decryption answers with a key or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::net::pki::decrypt_pkcs8;

fuzz_target!(|data: &[u8]| {
    // PBKDF2 iteration counts up to decrypt_pkcs8's cap are slow by design: run with a
    // generous -timeout.
    let _ = decrypt_pkcs8(data, b"password");
});
