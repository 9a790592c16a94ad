//! Pure parsers of untrusted TPM bytes. Nothing here performs I/O or panics on any input;
//! every parser has a fuzz target.

mod cursor;
pub mod public;

pub use cursor::{Cursor, ParseError};
pub use public::{EccCurve, HashAlg, KeyParams, ObjectAttributes, PublicArea, SymmetricDef};
