//! Typed bodies of what agents send the verifier: a missing or mistyped field is a serde
//! error naming it, not a silent default.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::Value;

use super::pipeline::{Evidence, Failure, ImaList};
use crate::evidence::{HashAlg, Quote};

/// `results` of a pull agent's `GET /v2.x/quotes/integrity` (keylime-api.md §5.2).
#[derive(Debug, Deserialize)]
pub struct QuoteReply {
    pub quote: String,
    pub hash_alg: String,
    #[serde(default)]
    pub enc_alg: String,
    #[serde(default)]
    pub sign_alg: String,
    /// Keylime's agent 0.2.9 sends none; Keylime reads that as 0.
    #[serde(default)]
    pub boottime: Option<u64>,
    /// Only on full quotes (`partial=0`).
    #[serde(default)]
    pub pubkey: Option<String>,
    /// Only when PCR 10 was asked for.
    #[serde(default)]
    pub ima_measurement_list: Option<String>,
    #[serde(default)]
    pub ima_measurement_list_entry: Option<u64>,
    /// Base64 of the UEFI log, when PCR 0 was asked for and the agent has one.
    #[serde(default)]
    pub mb_measurement_list: Option<String>,
}

impl QuoteReply {
    /// The reply inside Keylime's `{code, status, results}` envelope.
    pub fn from_envelope(body: &Value) -> Result<Self, String> {
        let results = body.get("results").ok_or("the answer has no results")?;
        Self::deserialize(results).map_err(|e| format!("the quote reply: {e}"))
    }

    /// The evidence of this reply: the quote over `nonce` in bank `hash`.
    pub fn into_evidence(self, hash: HashAlg, nonce: &str) -> Result<Evidence, Failure> {
        let quote = Quote::from_keylime_string(&self.quote)
            .map_err(|e| Failure::quote("quote_validation", e.to_string()))?;
        let boot_log = self.mb_measurement_list.filter(|b| !b.is_empty()).map(|b| {
            B64.decode(b.trim()).map_err(|e| {
                Failure::message(
                    "measured_boot.parser.log.base64decode",
                    format!("mb_measurement_list is not base64: {e}"),
                )
            })
        });
        Ok(Evidence {
            quote,
            hash,
            nonce: nonce.as_bytes().to_vec(),
            boot_time: Some(self.boottime.unwrap_or(0)),
            ima: self.ima_measurement_list.map(|text| ImaList {
                text,
                offset: self.ima_measurement_list_entry.unwrap_or(0),
            }),
            boot_log,
            pubkey: self.pubkey.filter(|k| !k.is_empty()),
        })
    }
}

/// One item of a push agent's `evidence_collected` (keylime-api.md §6.3).
#[derive(Debug, Clone, Deserialize)]
pub struct CollectedEvidence {
    pub evidence_class: String,
    pub evidence_type: String,
    /// Kept as sent: it is stored and echoed in the attestation record.
    pub data: Value,
}

/// `data` of a `tpm_quote` item: TPMS_ATTEST, TPMT_SIGNATURE and the PCR values, each as
/// base64 (or hex).
#[derive(Debug, Deserialize)]
pub struct TpmQuoteData {
    pub message: String,
    pub signature: String,
    pub subject_data: String,
}

/// `data` of a log item: `entries`, base64 (or hex) of a UEFI log, or IMA text.
#[derive(Debug, Deserialize)]
pub struct LogData {
    pub entries: String,
}

/// Binary evidence fields come as base64 or hex.
pub fn binary(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok().or_else(|| hex::decode(text).ok())
}

impl TpmQuoteData {
    pub fn parse(data: &Value) -> Result<Self, String> {
        Self::deserialize(data).map_err(|e| e.to_string())
    }

    /// The quote in Keylime's `r<attest>:<sig>:<pcrs>` form; `Err` names the field that is
    /// neither base64 nor hex.
    pub fn quote(&self) -> Result<Quote, String> {
        let field =
            |name: &str, text: &str| binary(text).ok_or_else(|| format!("{name} is neither base64 nor hex"));
        let text = format!(
            "r{}:{}:{}",
            B64.encode(field("message", &self.message)?),
            B64.encode(field("signature", &self.signature)?),
            B64.encode(field("subject_data", &self.subject_data)?)
        );
        Quote::from_keylime_string(&text).map_err(|e| e.to_string())
    }
}

impl LogData {
    pub fn parse(data: &Value) -> Result<Self, String> {
        Self::deserialize(data).map_err(|e| e.to_string())
    }
}
