//! The runtime policy document: Keylime's schema as its verifier enforces it
//! (`ima.py::RUNTIME_POLICY_SCHEMA`, keylime-policies.md §2.2), DSSE envelopes unwrapped.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::Deserialize;
use serde_json::Value;
use zest_policy_sdk::{HashAlg, LoadError};

/// Every property optional here so that a missing one is reported the way jsonschema does.
#[derive(Deserialize)]
struct Raw {
    payload: Option<Value>,
    meta: Option<Meta>,
    release: Option<Value>,
    digests: Option<HashMap<String, Vec<String>>>,
    excludes: Option<Vec<String>>,
    keyrings: Option<HashMap<String, Vec<String>>>,
    ima: Option<Ima>,
    #[serde(rename = "ima-buf")]
    ima_buf: Option<HashMap<String, Vec<String>>>,
    #[serde(rename = "verification-keys")]
    verification_keys: Option<String>,
}

#[derive(Deserialize)]
struct Meta {
    version: Option<Value>,
    generator: Option<Value>,
    timestamp: Option<Value>,
}

#[derive(Deserialize)]
struct Ima {
    ignored_keyrings: Option<Vec<String>>,
    log_hash_alg: Option<String>,
    // Present-and-null is required: `Option<Option<_>>` tells absent from null.
    #[serde(default, deserialize_with = "present")]
    dm_policy: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A key of `verification-keys`: its id when the document gives one, and its DER
/// SubjectPublicKeyInfo.
pub type VerificationKey = (Option<u32>, Vec<u8>);

/// The checked document.
pub struct Document {
    pub digests: HashMap<String, Vec<String>>,
    pub excludes: Vec<String>,
    pub keyrings: HashMap<String, Vec<String>>,
    pub ima_buf: HashMap<String, Vec<String>>,
    pub ignored_keyrings: Vec<String>,
    pub log_hash_alg: HashAlg,
    pub verification_keys: Vec<VerificationKey>,
}

fn schema(message: impl Into<String>) -> LoadError {
    LoadError::Schema(message.into())
}

fn json_error(e: serde_json::Error) -> LoadError {
    match e.classify() {
        serde_json::error::Category::Data => schema(e.to_string()),
        _ => LoadError::InvalidJson(e.to_string()),
    }
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, LoadError> {
    value.ok_or_else(|| schema(format!("'{name}' is a required property")))
}

fn non_negative_integer(value: &Value, name: &str, max: Option<u64>) -> Result<(), LoadError> {
    let ok = value.as_u64().is_some_and(|n| max.is_none_or(|m| n <= m));
    if ok {
        Ok(())
    } else {
        let range = max.map_or(String::new(), |m| format!(" of at most {m}"));
        Err(schema(format!(
            "{name}: {value} is not a non-negative integer{range}"
        )))
    }
}

fn check_digests(table: &HashMap<String, Vec<String>>, name: &str) -> Result<(), LoadError> {
    for (key, list) in table {
        if list.is_empty() {
            return Err(schema(format!("{name}[{key:?}]: [] should be non-empty")));
        }
        for (i, digest) in list.iter().enumerate() {
            let ok = (40..=128).contains(&digest.len())
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(schema(format!(
                    "{name}[{key:?}][{i}]: {digest:?} does not match '^[0-9a-f]{{40,128}}$'"
                )));
            }
        }
    }
    Ok(())
}

impl Document {
    pub fn parse(bytes: &[u8]) -> Result<Self, LoadError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(json_error)?;
        if let Some(payload) = raw.payload {
            // A DSSE envelope (Keylime's signed policies): the policy is the payload. The
            // host verified the signature at upload when a key was sent or found, or when
            // require_allow_list_signatures is set (host/src/verifier/policies.rs,
            // check_signature); otherwise, as in Keylime, it is the operator's upload as is.
            let text = payload.as_str().ok_or_else(|| schema("payload: not a string"))?;
            let inner = decode_payload(text).ok_or_else(|| schema("payload: neither base64 nor hex"))?;
            return Self::parse_policy(&inner);
        }
        Self::from_raw(raw)
    }

    fn parse_policy(bytes: &[u8]) -> Result<Self, LoadError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(json_error)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Raw) -> Result<Self, LoadError> {
        let meta = required(raw.meta, "meta")?;
        let release = required(raw.release, "release")?;
        let digests = required(raw.digests, "digests")?;
        let excludes = required(raw.excludes, "excludes")?;
        let keyrings = required(raw.keyrings, "keyrings")?;
        let ima = required(raw.ima, "ima")?;
        let ima_buf = required(raw.ima_buf, "ima-buf")?;
        let verification_keys = required(raw.verification_keys, "verification-keys")?;

        non_negative_integer(&required(meta.version, "meta.version")?, "meta.version", None)?;
        non_negative_integer(
            &required(meta.generator, "meta.generator")?,
            "meta.generator",
            Some(3),
        )?;
        if let Some(t) = meta.timestamp
            && !t.is_string()
        {
            return Err(schema(format!("meta.timestamp: {t} is not of type 'string'")));
        }
        non_negative_integer(&release, "release", None)?;
        check_digests(&digests, "digests")?;
        check_digests(&keyrings, "keyrings")?;
        check_digests(&ima_buf, "ima-buf")?;

        let ignored_keyrings = required(ima.ignored_keyrings, "ima.ignored_keyrings")?;
        let log_hash_alg = required(ima.log_hash_alg, "ima.log_hash_alg")?;
        let log_hash_alg = match log_hash_alg.as_str() {
            "sha1" => HashAlg::Sha1,
            "sha256" => HashAlg::Sha256,
            "sha384" => HashAlg::Sha384,
            "sha512" => HashAlg::Sha512,
            other => {
                return Err(schema(format!(
                    "ima.log_hash_alg: {other:?} is not one of ['sha1', 'sha256', 'sha384', 'sha512']"
                )));
            }
        };
        match ima.dm_policy {
            None => return Err(schema("'dm_policy' is a required property")),
            Some(Value::Null) => {}
            Some(_) => {
                return Err(LoadError::Unsupported(
                    "ima.dm_policy: device-mapper policies are not supported; Keylime's schema requires null"
                        .into(),
                ));
            }
        }
        Ok(Self {
            digests,
            excludes,
            keyrings,
            ima_buf,
            ignored_keyrings,
            log_hash_alg,
            verification_keys: verification_keys_of(&verification_keys)?,
        })
    }
}

/// DSSE payloads: hex, standard or URL-safe base64, as Keylime accepts.
fn decode_payload(text: &str) -> Option<Vec<u8>> {
    zest_policy_sdk::unhex(text)
        .or_else(|| STANDARD.decode(text).ok())
        .or_else(|| URL_SAFE.decode(text).ok())
}

/// `verification-keys`: a JSON string holding `{"keyids": [...], "pubkeys": [b64 DER]}`
/// (possibly encoded twice, as Keylime's database once stored it).
fn verification_keys_of(text: &str) -> Result<Vec<VerificationKey>, LoadError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| schema(format!("verification-keys: not JSON: {e}")))?;
    if let Value::String(inner) = &value {
        value =
            serde_json::from_str(inner).map_err(|e| schema(format!("verification-keys: not JSON: {e}")))?;
    }
    let object = value
        .as_object()
        .ok_or_else(|| schema("verification-keys: not a JSON object"))?;
    let pubkeys = object
        .get("pubkeys")
        .and_then(Value::as_array)
        .ok_or_else(|| schema("verification-keys: 'pubkeys' is a required array"))?;
    let keyids = object
        .get("keyids")
        .and_then(Value::as_array)
        .ok_or_else(|| schema("verification-keys: 'keyids' is a required array"))?;
    let mut keys = Vec::with_capacity(pubkeys.len());
    for (i, key) in pubkeys.iter().enumerate() {
        let b64 = key
            .as_str()
            .ok_or_else(|| schema(format!("verification-keys.pubkeys[{i}]: not a string")))?;
        let der = STANDARD
            .decode(b64)
            .map_err(|e| schema(format!("verification-keys.pubkeys[{i}]: not base64: {e}")))?;
        let id = match keyids.get(i) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| schema(format!("verification-keys.keyids[{i}]: {v} is not a key id")))?,
            ),
        };
        keys.push((id, der));
    }
    Ok(keys)
}
