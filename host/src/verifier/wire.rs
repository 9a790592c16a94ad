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
