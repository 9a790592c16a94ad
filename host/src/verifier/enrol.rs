//! `POST /v2.x/agents/{id}`: the enrolment body Keylime's tenant sends (keylime-api.md §4.3),
//! checked field by field; a bad field is a 400 naming it and nothing is stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::Verifier;
use super::policies::{
    check_name, decode_mb_policy, decode_runtime_policy, measured_boot_record, module_field, runtime_record,
};
use crate::api::{AgentId, ApiError};
use crate::evidence::PublicArea;
use crate::store::verifier::state;
use crate::store::{PolicyKind, PolicyRecord, VerifierAgent};

/// A checked enrolment: the agent and the policies to create with it.
pub struct Enrolment {
    pub agent: VerifierAgent,
    pub new_policies: Vec<(PolicyKind, PolicyRecord)>,
}

fn required<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a Value, ApiError> {
    body.get(field)
        .ok_or_else(|| ApiError::bad_request(format!("{field} is required")))
}

fn string(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match required(body, field)? {
        Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

fn optional_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

fn string_list(body: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = required(body, field)? else {
        return Err(ApiError::bad_request(format!(
            "{field} must be a list of strings"
        )));
    };
    items
        .iter()
        .map(|v| match v.as_str() {
            Some(s) if allowed.contains(&s) => Ok(s.to_owned()),
            Some(s) => Err(ApiError::bad_request(format!(
                "{field}: '{}' is not one of {allowed:?}",
                s.escape_debug()
            ))),
            None => Err(ApiError::bad_request(format!(
                "{field} must be a list of strings"
            ))),
        })
        .collect()
}

/// `tpm_policy`: a JSON text of `{"<pcr>": "<hex>" | ["<hex>", …], "mask": "0x…"}`.
fn tpm_policy(body: &Map<String, Value>) -> Result<String, ApiError> {
    let text = string(body, "tpm_policy")?;
    let parsed: Value = serde_json::from_str(&text)
        .map_err(|e| ApiError::bad_request(format!("tpm_policy: not JSON: {e}")))?;
    let Value::Object(map) = parsed else {
        return Err(ApiError::bad_request("tpm_policy must be a JSON object"));
    };
    for (key, value) in &map {
        if key == "mask" {
            let ok = value
                .as_str()
                .and_then(|m| m.strip_prefix("0x"))
                .is_some_and(|h| !h.is_empty() && u32::from_str_radix(h, 16).is_ok());
            if !ok {
                return Err(ApiError::bad_request(
                    "tpm_policy: mask must be a hex string such as \"0x408000\"",
                ));
            }
            continue;
        }
        let pcr: u8 = key.parse().ok().filter(|p| *p <= 23).ok_or_else(|| {
            ApiError::bad_request(format!(
                "tpm_policy: '{}' is not a PCR number",
                key.escape_debug()
            ))
        })?;
        if pcr == 10 || pcr == 16 {
            return Err(ApiError::bad_request(format!(
                "tpm_policy: PCR {pcr} is reserved ({})",
                if pcr == 10 { "IMA" } else { "agent key binding" }
            )));
        }
        let values: Vec<&Value> = match value {
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let ok = v
                .as_str()
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "tpm_policy: PCR {pcr} values must be hex strings"
                )));
            }
        }
    }
    Ok(text)
}

fn port(body: &Map<String, Value>) -> Result<u16, ApiError> {
    let value = required(body, "cloudagent_port")?;
    let port = match value {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    port.filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request("cloudagent_port must be a port number"))
}

fn ip(body: &Map<String, Value>) -> Result<String, ApiError> {
    let ip = string(body, "cloudagent_ip")?;
    let ok = ip.parse::<std::net::IpAddr>().is_ok()
        || (!ip.is_empty()
            && ip.len() <= 253
            && ip
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if ok {
        Ok(ip)
    } else {
        Err(ApiError::bad_request(
            "cloudagent_ip must be an IP address or host name",
        ))
    }
}

/// Checks the enrolment body of agent `id`, loading every new policy into its component.
pub async fn enrolment(
    verifier: &Verifier,
    id: &AgentId,
    body: &Map<String, Value>,
) -> Result<Enrolment, ApiError> {
    let ak_tpm = string(body, "ak_tpm")?;
    let ak_bytes = B64
        .decode(&ak_tpm)
        .map_err(|e| ApiError::bad_request(format!("ak_tpm: not base64: {e}")))?;
    PublicArea::from_tpm2b(&ak_bytes).map_err(|e| ApiError::bad_request(format!("ak_tpm: {e}")))?;
    let v = optional_string(body, "v")?;
    if let Some(v) = &v {
        let ok = B64.decode(v).is_ok_and(|bytes| bytes.len() == 32);
        if !ok {
            return Err(ApiError::bad_request("v must be base64 of 32 bytes"));
        }
    }
    // Push agents (API 3.0) open no port: no address, no agent certificate.
    let push = match verifier.config.mode {
        super::Mode::Pull => false,
        super::Mode::Push => true,
        super::Mode::Both => matches!(body.get("cloudagent_ip"), None | Some(Value::Null)),
    };
    let mtls_cert = optional_string(body, "mtls_cert")?;
    match mtls_cert.as_deref() {
        _ if push => {}
        None | Some("disabled") => {
            return Err(ApiError::bad_request("mTLS certificate for agent is required!"));
        }
        Some(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
            return Err(ApiError::bad_request("mtls_cert must be a PEM certificate"));
        }
        Some(_) => {}
    }
    // A version we do not speak to agents is dropped: the pull loop then negotiates with
    // the agent's /version (Keylime stores its own version and negotiates on refusal).
    let supported_version = match body.get("supported_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => crate::api::ApiVersion::from_path_segment(&format!("v{s}"))
            .filter(|_| s.starts_with("2."))
            .map(|_| s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "supported_version must be a string such as \"2.6\"",
            ));
        }
    };

    let hashes = string_list(
        body,
        "accept_tpm_hash_algs",
        &["sha1", "sha256", "sha384", "sha512", "sm3_256"],
    )?;
    let encryption = string_list(
        body,
        "accept_tpm_encryption_algs",
        &[
            "rsa",
            "ecc",
            "rsa2048",
            "rsa3072",
            "rsa4096",
            "ecc256",
            "ecc384",
            "ecc521",
            "ecc_nist_p256",
            "ecc_nist_p384",
            "ecc_nist_p521",
        ],
    )?;
    let signing = string_list(
        body,
        "accept_tpm_signing_algs",
        &["rsassa", "rsapss", "ecdsa", "ecdaa", "ecschnorr"],
    )?;

    let mut new_policies = Vec::new();
    let runtime_name = optional_string(body, "runtime_policy_name")?.filter(|n| !n.is_empty());
    let runtime_given = matches!(body.get("runtime_policy"), Some(Value::String(s)) if !s.is_empty());
    required(body, "runtime_policy")?;
    let runtime_policy = match (runtime_name, runtime_given) {
        (Some(name), false) => {
            check_name(&name)?;
            name
        }
        (name, _) => {
            let name = name.unwrap_or_else(|| id.to_string());
            check_name(&name)?;
            let document = decode_runtime_policy(body, "runtime_policy")?;
            let record = runtime_record(verifier, &name, document, module_field(body)?).await?;
            new_policies.push((PolicyKind::Runtime, record));
            name
        }
    };
    required(body, "mb_policy")?;
    let mb_name = match required(body, "mb_policy_name")? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err(ApiError::bad_request("mb_policy_name must be a string")),
    };
    let mb_document = decode_mb_policy(body, "mb_policy")?;
    let mb_policy = match (mb_name, mb_document) {
        (Some(name), None) => {
            check_name(&name)?;
            name
        }
        (name, document) => {
            let name = name.unwrap_or_else(|| id.to_string());
            check_name(&name)?;
            let record = measured_boot_record(verifier, &name, document, None).await?;
            new_policies.push((PolicyKind::MeasuredBoot, record));
            name
        }
    };

    let agent = VerifierAgent {
        agent_id: id.to_string(),
        ip: if push { None } else { Some(ip(body)?) },
        port: if push { None } else { Some(port(body)?) },
        v,
        tpm_policy: tpm_policy(body)?,
        runtime_policy,
        mb_policy,
        ima_sign_verification_keys: string(body, "ima_sign_verification_keys")?,
        revocation_key: revocation_key(body)?,
        meta_data: string(body, "metadata")?,
        accept_tpm_hash_algs: hashes,
        accept_tpm_encryption_algs: encryption,
        accept_tpm_signing_algs: signing,
        ak_tpm,
        mtls_cert: mtls_cert.filter(|_| !push),
        supported_version,
        // Keylime shows push agents as GET_QUOTE (3) from the start.
        operational_state: if push { state::GET_QUOTE } else { state::START },
        hash_alg: String::new(),
        enc_alg: String::new(),
        sign_alg: String::new(),
        severity_level: None,
        last_event_id: None,
        attestation_count: 0,
        last_received_quote: 0,
        last_successful_attestation: 0,
        last_failures: Vec::new(),
        boottime: None,
        next_ima_ml_entry: 0,
        pcr10: None,
        ima_policy_state: None,
        mb_policy_state: None,
        revision: crate::store::verifier::new_revision(),
        public_key: None,
        v_delivered: false,
        tpm_clock: None,
        polls_after_failure: false,
        push,
        consecutive_attestation_failures: 0,
        last_attestation_passed: false,
    };
    Ok(Enrolment { agent, new_policies })
}

/// `revocation_key`: a PEM RSA private key that signs revocation messages, or `""`.
fn revocation_key(body: &Map<String, Value>) -> Result<String, ApiError> {
    let key = string(body, "revocation_key")?;
    if key.is_empty() || key.contains("PRIVATE KEY-----") {
        Ok(key)
    } else {
        Err(ApiError::bad_request(
            "revocation_key must be a PEM RSA private key or \"\"",
        ))
    }
}
