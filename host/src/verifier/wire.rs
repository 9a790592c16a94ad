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

/// `POST /v2.x/agents/{id}`: the enrolment body Keylime's tenant sends (keylime-api.md §4.3).
/// Fields Keylime requires are required here (a `null` where Keylime allows one);
/// the policies stay JSON until checked, as they come as text or objects.
#[derive(Debug, Deserialize)]
pub struct EnrolmentBody {
    #[serde(default)]
    pub v: Option<String>,
    #[serde(default)]
    pub cloudagent_ip: Option<String>,
    #[serde(default)]
    pub cloudagent_port: Option<PortField>,
    pub tpm_policy: String,
    pub runtime_policy: Value,
    #[serde(default)]
    pub runtime_policy_name: Option<String>,
    /// Base64 of the PEM public key that signed `runtime_policy` (a DSSE envelope).
    #[serde(default)]
    pub runtime_policy_key: Value,
    pub mb_policy: Value,
    #[serde(deserialize_with = "present")]
    pub mb_policy_name: Option<String>,
    pub ima_sign_verification_keys: String,
    pub metadata: String,
    pub revocation_key: String,
    pub accept_tpm_hash_algs: Vec<String>,
    pub accept_tpm_encryption_algs: Vec<String>,
    pub accept_tpm_signing_algs: Vec<String>,
    pub ak_tpm: String,
    #[serde(default)]
    pub mtls_cert: Option<String>,
    #[serde(default)]
    pub supported_version: Option<String>,
    /// Ours: the component of a runtime policy sent with the enrolment.
    #[serde(default)]
    pub module: Option<String>,
}

/// A port as a number or as numeric text (Keylime's tenant sends either).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PortField {
    Number(u64),
    Text(String),
}

impl PortField {
    pub fn port(&self) -> Option<u16> {
        let port = match self {
            Self::Number(n) => u16::try_from(*n).ok(),
            Self::Text(s) => s.trim().parse().ok(),
        };
        port.filter(|p| *p != 0)
    }
}

/// A field that must be present, `null` allowed.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// Reads a typed body from JSON, naming the field of any error
/// (`accept_tpm_hash_algs[0]: invalid type: …`, `missing field `ak_tpm``).
pub fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}
