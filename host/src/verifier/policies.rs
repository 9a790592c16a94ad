//! Runtime policies (`/allowlists`) and measured-boot reference states (`/mbpolicies`):
//! Keylime's request and reply shapes, every document checked by loading it into the
//! component that will judge with it. Beyond Keylime, a record may name its component
//! (`"module": "builtin:NAME"` or an upload's `"sha256:HEX"`); Keylime's clients send none
//! and get the defaults.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::Verifier;
use super::modules::resolve;
use crate::api::ApiError;
use crate::policy::{PolicyError, PolicySource};
use crate::store::{PolicyKind, PolicyRecord};

/// The component for runtime policies when a record names none.
pub const DEFAULT_RUNTIME_MODULE: &str = "builtin:keylime-runtime";

/// Keylime's empty runtime policy (generator 1), used when an agent is enrolled with `""`.
pub const EMPTY_RUNTIME_POLICY: &str = r#"{"meta": {"version": 1, "generator": 1}, "release": 0, "digests": {}, "excludes": [], "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null}, "ima-buf": {}, "verification-keys": ""}"#;

/// Whether a runtime policy record asks for IMA to be judged: every record but Keylime's
/// empty policy under the default component. Decided from the record, not from the
/// document's `meta.generator`, so documents for uploaded components are judged too.
pub fn judges_ima(record: &PolicyRecord) -> bool {
    record.document.is_some()
        && !(record.module == DEFAULT_RUNTIME_MODULE
            && record.checksum == sha256_hex(EMPTY_RUNTIME_POLICY.as_bytes()))
}

/// Longest policy name accepted (Keylime's column is VARCHAR(255)).
const MAX_NAME: usize = 255;

pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::bad_request(format!(
            "policy name must be 1 to {MAX_NAME} printable characters without '/'"
        )));
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(crate::evidence::HashAlg::Sha256.digest(&[bytes]))
}

/// `meta.generator` of a runtime policy (inside a DSSE payload too); 0 when unknown.
fn generator_of(document: &[u8]) -> i64 {
    let Ok(value) = serde_json::from_slice::<Value>(document) else {
        return 0;
    };
    let value = match value.get("payload").and_then(Value::as_str) {
        Some(payload) => match B64
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(inner) => inner,
            None => return 0,
        },
        None => value,
    };
    value
        .pointer("/meta/generator")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn load_error(kind: PolicyKind, e: PolicyError) -> ApiError {
    let what = match kind {
        PolicyKind::Runtime => "Runtime policy is malformatted",
        PolicyKind::MeasuredBoot => "Measured boot policy is malformatted",
    };
    match e {
        PolicyError::Load(why) => ApiError::bad_request(format!("{what}: {why}")),
        other => ApiError::bad_request(format!("{what}: the policy component failed: {other}")),
    }
}

/// A runtime policy record of `tenant` from a document, checked by its component (a
/// built-in or one of the tenant's uploads).
pub async fn runtime_record(
    verifier: &Verifier,
    tenant: &str,
    name: &str,
    document: Vec<u8>,
    module: Option<&str>,
) -> Result<PolicyRecord, ApiError> {
    let module = module.unwrap_or(DEFAULT_RUNTIME_MODULE).to_owned();
    let (v, t, n, m, doc) = (
        verifier.clone(),
        tenant.to_owned(),
        name.to_owned(),
        module.clone(),
        document.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let bytes = resolve(&v, &t, PolicyKind::Runtime, &m)?;
        v.policies
            .load_runtime(&t, &PolicySource::new(&n, &bytes, &doc).one_off())
            .map_err(|e| load_error(PolicyKind::Runtime, e))
    })
    .await
    .map_err(|e| ApiError::internal("loading a runtime policy", e))??;
    Ok(PolicyRecord {
        name: name.to_owned(),
        module,
        checksum: sha256_hex(&document),
        generator: generator_of(&document),
        document: Some(document),
    })
}

/// A measured-boot record of `tenant` from a refstate (`None`: Keylime's null, nothing to
/// check).
pub async fn measured_boot_record(
    verifier: &Verifier,
    tenant: &str,
    name: &str,
    document: Option<Vec<u8>>,
    module: Option<&str>,
) -> Result<PolicyRecord, ApiError> {
    let module = module
        .map(str::to_owned)
        .unwrap_or_else(|| verifier.config.measured_boot_module.clone());
    let (v, t, n, m, doc) = (
        verifier.clone(),
        tenant.to_owned(),
        name.to_owned(),
        module.clone(),
        document.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let bytes = resolve(&v, &t, PolicyKind::MeasuredBoot, &m)?;
        match doc {
            Some(doc) => v
                .policies
                .load_measured_boot(&t, &PolicySource::new(&n, &bytes, &doc).one_off())
                .map(|_| ())
                .map_err(|e| load_error(PolicyKind::MeasuredBoot, e)),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| ApiError::internal("loading a measured-boot policy", e))??;
    Ok(PolicyRecord {
        name: name.to_owned(),
        module,
        checksum: document.as_deref().map(sha256_hex).unwrap_or_default(),
        generator: 0,
        document,
    })
}

/// The `runtime_policy` field: base64 of the policy JSON (or DSSE envelope); `""` is the
/// empty policy.
pub fn decode_runtime_policy(value: Option<&Value>, field: &str) -> Result<Vec<u8>, ApiError> {
    match value {
        Some(Value::String(s)) if s.is_empty() => Ok(EMPTY_RUNTIME_POLICY.as_bytes().to_vec()),
        Some(Value::String(s)) => B64
            .decode(s)
            .map_err(|e| ApiError::bad_request(format!("{field}: not base64: {e}"))),
        Some(Value::Null) | None => Err(ApiError::bad_request(format!("{field} is required"))),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a base64 string"))),
    }
}

/// The `mb_policy` field: the refstate as a JSON string (Keylime's tenant sends text), or
/// a JSON object; null or `""` means none.
pub fn decode_mb_policy(value: Option<&Value>, field: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let parsed: Value = serde_json::from_str(s)
                .map_err(|e| ApiError::bad_request(format!("{field}: not JSON: {e}")))?;
            Ok((!parsed.is_null()).then(|| s.as_bytes().to_vec()))
        }
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string().into_bytes())),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a JSON string"))),
    }
}

/// `module` of our own: which component judges with the document.
pub fn module_field(body: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    match body.get("module") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            "module must be a string such as builtin:keylime-runtime",
        )),
    }
}

/// Keylime's rule for a runtime policy's signature (`ima.verify_runtime_policy`), checked
/// at upload: a DSSE envelope is verified with the key sent in `runtime_policy_key` (base64
/// of a PEM public key or certificate) or with a key a signed upload left, found by the
/// envelope's `keyid`; `require_allow_list_signatures` refuses anything that did not
/// verify. Beyond Keylime, a key sent with an unsigned policy is refused, and a stored key
/// that no longer verifies the envelope is a refusal even when signatures are optional.
pub async fn check_signature(
    verifier: &Verifier,
    document: &[u8],
    key_field: &Value,
) -> Result<(), ApiError> {
    use crate::dsse::{Envelope, VerifyingKey, is_envelope, key_digest};
    let unauthorized = |m: &str| ApiError::new(axum::http::StatusCode::UNAUTHORIZED, m);
    let key = match key_field {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(
            B64.decode(s)
                .map_err(|e| ApiError::bad_request(format!("runtime_policy_key: not base64: {e}")))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "runtime_policy_key must be a base64 string",
            ));
        }
    };
    let required = verifier.config.require_allow_list_signatures;
    if !is_envelope(document) {
        return match (&key, required) {
            (None, true) => Err(unauthorized(
                "Runtime policy signature verification required but no key was given!",
            )),
            (Some(_), _) => Err(ApiError::bad_request("Runtime policy is not signed!")),
            (None, false) => Ok(()),
        };
    }
    let dir = verifier.signing_keys.as_ref().clone();
    let (key, given) = match key {
        Some(key) => (Some(key), true),
        None => {
            // Only a digest names a stored key: a keyid is never a path.
            let value: Value = serde_json::from_slice(document).unwrap_or(Value::Null);
            let keyids: Vec<String> = value
                .get("signatures")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            s.get("keyid")
                                .and_then(Value::as_str)
                                .map(str::to_ascii_lowercase)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let stored = keyids
                .iter()
                .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .find_map(|id| std::fs::read(dir.join(format!("{id}.pub"))).ok());
            (stored, false)
        }
    };
    let Some(key) = key else {
        if required {
            return Err(unauthorized(
                "Runtime policy signature verification required but no key was given!",
            ));
        }
        tracing::warn!(
            "a DSSE-signed runtime policy was stored without a key to verify it (require_allow_list_signatures is off)"
        );
        return Ok(());
    };
    let public = VerifyingKey::from_pem(&key)
        .map_err(|e| ApiError::bad_request(format!("runtime_policy_key: {e}")))?;
    // As in Keylime, an envelope that cannot be decoded fails verification (401).
    let verified = Envelope::parse(document).and_then(|envelope| envelope.verify(&public).map(|_| ()));
    match verified {
        Ok(()) => {}
        Err(crate::dsse::DsseError::Malformed(why)) => {
            return Err(unauthorized(&format!(
                "Runtime policy failed DSSE signature verification! ({why})"
            )));
        }
        Err(_) => return Err(unauthorized("Runtime policy failed DSSE signature verification!")),
    }
    tracing::info!("Runtime policy passed DSSE signature verification");
    if given {
        let path = dir.join(format!("{}.pub", key_digest(&key)));
        let stored = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(path, key)
        })
        .await;
        if !matches!(stored, Ok(Ok(()))) {
            tracing::warn!("could not keep the runtime policy's signing key for later uploads");
        }
    }
    Ok(())
}
