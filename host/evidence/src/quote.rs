//! Quotes as agents send them: the pull-mode string `r<b64 TPMS_ATTEST>:<b64
//! TPMT_SIGNATURE>:<b64 PCR blob>`, or the three parts separately (push mode).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::attest::Attest;
use super::cursor::ParseError;
use super::pcr_blob::PcrValues;
use super::signature::Signature;

/// Longest quote string accepted (three base64 parts of bounded structures).
pub const MAX_QUOTE_STRING: usize = 64 * 1024;

/// A quote whose three parts parsed; nothing is verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The exact TPMS_ATTEST bytes the signature covers.
    pub attest_bytes: Vec<u8>,
    pub attest: Attest,
    pub signature: Signature,
    pub pcrs: PcrValues,
}

impl Quote {
    /// Parses Keylime's pull-mode quote string.
    pub fn from_keylime_string(text: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "quote string";
        if text.len() > MAX_QUOTE_STRING {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} bytes is too long", text.len()),
            });
        }
        let body = text.strip_prefix('r').ok_or_else(|| ParseError::Invalid {
            what: WHAT,
            detail: "must start with 'r'".into(),
        })?;
        let mut parts = body.split(':');
        let (Some(attest), Some(signature), Some(pcrs), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: "needs exactly three ':'-separated parts".into(),
            });
        };
        Self::from_parts(
            &decode(attest, "quote TPMS_ATTEST")?,
            &decode(signature, "quote TPMT_SIGNATURE")?,
            &decode(pcrs, "quote PCR blob")?,
        )
    }

    /// Parses the push-mode (API 3.0) evidence fields: `message` (TPMS_ATTEST),
    /// `signature` (TPMT_SIGNATURE) and `subject_data` (the PCR blob), each base64.
    pub fn from_push_fields(message: &str, signature: &str, subject_data: &str) -> Result<Self, ParseError> {
        let total = message.len() + signature.len() + subject_data.len();
        if total > MAX_QUOTE_STRING {
            return Err(ParseError::Invalid {
                what: "quote fields",
                detail: format!("{total} bytes is too long"),
            });
        }
        Self::from_parts(
            &decode(message, "quote message (TPMS_ATTEST)")?,
            &decode(signature, "quote signature (TPMT_SIGNATURE)")?,
            &decode(subject_data, "quote subject_data (PCR blob)")?,
        )
    }

    /// Parses the three parts as raw bytes.
    pub fn from_parts(attest: &[u8], signature: &[u8], pcrs: &[u8]) -> Result<Self, ParseError> {
        Ok(Self {
            attest: Attest::parse(attest)?,
            attest_bytes: attest.to_vec(),
            signature: Signature::parse(signature)?,
            pcrs: PcrValues::parse(pcrs)?,
        })
    }
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, ParseError> {
    B64.decode(part).map_err(|_| ParseError::Invalid {
        what,
        detail: "not valid base64".into(),
    })
}
