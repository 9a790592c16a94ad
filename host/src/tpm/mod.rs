//! Checks and cryptography over parsed TPM objects: key names and attributes, software
//! TPM2_MakeCredential, and EK certificate validation.

pub mod credential;
pub mod ekcert;
pub mod keys;
pub mod quote_check;

pub use crate::evidence::ima_keys::verify_prehashed;
pub use credential::{CredentialError, make_credential};
pub use ekcert::{EkCertError, EkCertificate, TrustStore};
pub use keys::{KeyError, check_attestation_key, object_name, subject_public_key_info};
pub use quote_check::{
    AttestationKey, QuoteError, QuoteExpectations, VerifiedQuote, verify_quote, verify_signature,
};
