//! Pure parsers of untrusted TPM bytes and logs. Nothing here performs I/O or panics on any
//! input; every parser has a fuzz target.

pub mod attest;
mod cursor;
pub mod ima;
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
