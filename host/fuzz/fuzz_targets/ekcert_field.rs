//! The `ekcert` registration field: PEM, base64 DER or base64 PEM, then the chain walk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::tpm::{EkCertificate, TrustStore};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cert) = EkCertificate::from_field(&text) {
        let _ = TrustStore::from_der(cert.extra.clone()).verify(&cert);
        let _ = cert.der_base64();
    }
});
