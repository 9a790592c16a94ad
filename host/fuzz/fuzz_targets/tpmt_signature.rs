//! TPMT_SIGNATURE, and verification of whatever parses against a fixed RSA and ECC key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::evidence::{PublicArea, Signature};

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = Signature::parse(data) {
        for key in keys() {
            let _ = zest::tpm::verify_signature(key, &sig, b"message");
        }
    }
});

fn keys() -> &'static [PublicArea] {
    static KEYS: std::sync::OnceLock<Vec<PublicArea>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        // RSA-2048 and P-256 restricted signing keys (TPMT_PUBLIC), fixed for reproducibility.
        let mut rsa = vec![0x00, 0x01, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x14, 0x00, 0x0b, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x00];
        rsa.extend(std::iter::repeat_n(0xc5u8, 256));
        let mut ecc = vec![0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x10, 0x00, 0x20];
        ecc.extend([0x6bu8; 32]);
        ecc.extend([0x00, 0x20]);
        ecc.extend([0x4fu8; 32]);
        [rsa, ecc].iter().filter_map(|t| PublicArea::from_tpmt(t).ok()).collect()
    })
}
