//! TPMT_SIGNATURE: the signature a TPM puts over a TPMS_ATTEST.

use super::cursor::{Cursor, ParseError};
use super::public::HashAlg;

pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// Largest TPMT_SIGNATURE accepted (RSA-4096 is 518 bytes).
pub const MAX_SIGNATURE_SIZE: usize = 1024;

/// A parsed TPMT_SIGNATURE of a scheme we verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    RsaSsa { hash: HashAlg, sig: Vec<u8> },
    RsaPss { hash: HashAlg, sig: Vec<u8> },
    EcDsa { hash: HashAlg, r: Vec<u8>, s: Vec<u8> },
}

impl Signature {
    /// Parses a TPMT_SIGNATURE spanning all of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "TPMT_SIGNATURE";
        if bytes.len() > MAX_SIGNATURE_SIZE {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} bytes is too large", bytes.len()),
            });
        }
        let mut c = Cursor::new(bytes);
        let alg = c.u16("TPMT_SIGNATURE.sigAlg")?;
        let hash_id = c.u16("TPMT_SIGNATURE.hash")?;
        let hash = HashAlg::from_tpm(hash_id).ok_or(ParseError::Unsupported {
            what: "TPMT_SIGNATURE.hash",
            value: hash_id.into(),
        })?;
        let sig = match alg {
            TPM_ALG_RSASSA => Self::RsaSsa {
                hash,
                sig: c.tpm2b("TPMS_SIGNATURE_RSA.sig")?.to_vec(),
            },
            TPM_ALG_RSAPSS => Self::RsaPss {
                hash,
                sig: c.tpm2b("TPMS_SIGNATURE_RSA.sig")?.to_vec(),
            },
            TPM_ALG_ECDSA => Self::EcDsa {
                hash,
                r: c.tpm2b("TPMS_SIGNATURE_ECC.signatureR")?.to_vec(),
                s: c.tpm2b("TPMS_SIGNATURE_ECC.signatureS")?.to_vec(),
            },
            other => {
                return Err(ParseError::Unsupported {
                    what: "TPMT_SIGNATURE.sigAlg",
                    value: other.into(),
                });
            }
        };
        c.finish(WHAT)?;
        Ok(sig)
    }

    /// The hash the signature was made over.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::EcDsa { hash, .. } => *hash,
        }
    }

    /// Keylime's name of the signing scheme (`rsassa`, `rsapss`, `ecdsa`).
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Self::RsaSsa { .. } => "rsassa",
            Self::RsaPss { .. } => "rsapss",
            Self::EcDsa { .. } => "ecdsa",
        }
    }
}
