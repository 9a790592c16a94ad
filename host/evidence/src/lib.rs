//! Pure parsers of untrusted TPM bytes and logs. Nothing here performs I/O or panics on any
//! input; every parser has a fuzz target.

pub mod attest;
mod cursor;
pub mod ima;
pub mod ima_keys;
pub mod pcr_blob;
pub mod public;
pub mod quote;
pub mod signature;
pub mod uefi;

pub use attest::{Attest, Attested, ClockInfo, PcrBankSelection};
pub use cursor::{Cursor, ParseError};
pub use pcr_blob::PcrValues;
pub use public::{EccCurve, HashAlg, KeyParams, ObjectAttributes, PublicArea, SymmetricDef};
pub use quote::Quote;
pub use signature::Signature;

/// Reads a file of Keylime's test data (`../shared/fixtures`, or `$ZEST_FIXTURES`).
#[cfg(test)]
pub(crate) fn test_fixture(path: &str) -> Vec<u8> {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures").to_owned());
    let full = std::path::Path::new(&root).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}
