//! `POST /v2.x/agents/{id}`: the enrolment body Keylime's tenant sends (keylime-api.md §4.3),
//! checked field by field; a bad field is a 400 naming it and nothing is stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::Verifier;
use super::policies::{
    check_name, check_signature, decode_mb_policy, decode_runtime_policy, measured_boot_record,
    runtime_record,
};
use super::wire::{EnrolmentBody, typed};
use crate::api::{AgentId, ApiError};
use crate::evidence::PublicArea;
use crate::store::verifier::state;
use crate::store::{PolicyKind, PolicyRecord, VerifierAgent};

/// A checked enrolment: the agent and the policies to create with it.
pub struct Enrolment {
    pub agent: VerifierAgent,
    pub new_policies: Vec<(PolicyKind, PolicyRecord)>,
}

/// Each entry of an accept list is one of `allowed`.
fn checked_list(items: Vec<String>, field: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    if let Some(bad) = items.iter().find(|s| !allowed.contains(&s.as_str())) {
        return Err(ApiError::bad_request(format!(
            "{field}: '{}' is not one of {allowed:?}",
            bad.escape_debug()
        )));
    }
    Ok(items)
}

/// `tpm_policy`: a JSON text of `{"<pcr>": "<hex>" | ["<hex>", …], "mask": "0x…"}`.
fn tpm_policy(text: String) -> Result<String, ApiError> {
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

fn ip(ip: Option<String>) -> Result<String, ApiError> {
    let ip = ip.ok_or_else(|| ApiError::bad_request("cloudagent_ip is required"))?;
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
    tenant: &str,
    quota: &crate::store::TenantQuota,
    id: &AgentId,
    body: &Map<String, Value>,
) -> Result<Enrolment, ApiError> {
    let body: EnrolmentBody = typed(Value::Object(body.clone())).map_err(ApiError::bad_request)?;
    let ak_bytes = B64
        .decode(&body.ak_tpm)
        .map_err(|e| ApiError::bad_request(format!("ak_tpm: not base64: {e}")))?;
    PublicArea::from_tpm2b(&ak_bytes).map_err(|e| ApiError::bad_request(format!("ak_tpm: {e}")))?;
    if let Some(v) = &body.v {
        let ok = B64.decode(v).is_ok_and(|bytes| bytes.len() == 32);
        if !ok {
            return Err(ApiError::bad_request("v must be base64 of 32 bytes"));
        }
    }
    // Push agents (API 3.0) open no port: no address, no agent certificate.
    let push = match verifier.config.mode {
        super::Mode::Pull => false,
        super::Mode::Push => true,
        super::Mode::Both => body.cloudagent_ip.is_none(),
    };
    match body.mtls_cert.as_deref() {
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
    let supported_version = body.supported_version.as_ref().and_then(|s| {
        crate::api::ApiVersion::from_path_segment(&format!("v{s}"))
            .filter(|_| s.starts_with("2."))
            .map(|_| s.clone())
    });

    let hashes = checked_list(
        body.accept_tpm_hash_algs,
        "accept_tpm_hash_algs",
        &["sha1", "sha256", "sha384", "sha512", "sm3_256"],
    )?;
    let encryption = checked_list(
        body.accept_tpm_encryption_algs,
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
    let signing = checked_list(
        body.accept_tpm_signing_algs,
        "accept_tpm_signing_algs",
        &["rsassa", "rsapss", "ecdsa", "ecdaa", "ecschnorr"],
    )?;

    let mut new_policies = Vec::new();
    let runtime_name = body.runtime_policy_name.filter(|n| !n.is_empty());
    let runtime_given = matches!(&body.runtime_policy, Value::String(s) if !s.is_empty());
    let runtime_policy = match (runtime_name, runtime_given) {
        (Some(name), false) => {
            check_name(&name)?;
            name
        }
        (name, _) => {
            let name = name.unwrap_or_else(|| id.to_string());
            check_name(&name)?;
            let document = decode_runtime_policy(Some(&body.runtime_policy), "runtime_policy")?;
            let limit = quota.document_bytes;
            super::quotas::check_size(verifier, tenant, "document_bytes", limit, document.len())?;
            check_signature(verifier, &document, &body.runtime_policy_key).await?;
            let record = runtime_record(verifier, tenant, &name, document, body.module.as_deref()).await?;
            new_policies.push((PolicyKind::Runtime, record));
            name
        }
    };
    let mb_name = body.mb_policy_name.filter(|s| !s.is_empty());
    let mb_document = decode_mb_policy(Some(&body.mb_policy), "mb_policy")?;
    let mb_policy = match (mb_name, mb_document) {
        (Some(name), None) => {
            check_name(&name)?;
            name
        }
        (name, document) => {
            let name = name.unwrap_or_else(|| id.to_string());
            check_name(&name)?;
            let size = document.as_ref().map_or(0, Vec::len);
            super::quotas::check_size(verifier, tenant, "document_bytes", quota.document_bytes, size)?;
            let record = measured_boot_record(verifier, tenant, &name, document, None).await?;
            new_policies.push((PolicyKind::MeasuredBoot, record));
            name
        }
    };
    let port = match (push, &body.cloudagent_port) {
        (true, _) => None,
        (false, None) => return Err(ApiError::bad_request("cloudagent_port is required")),
        (false, Some(p)) => Some(
            p.port()
                .ok_or_else(|| ApiError::bad_request("cloudagent_port must be a port number"))?,
        ),
    };

    let agent = VerifierAgent {
        lease_owner: None,
        agent_id: id.to_string(),
        tenant: tenant.to_owned(),
        ip: if push { None } else { Some(ip(body.cloudagent_ip)?) },
        port,
        v: body.v,
        tpm_policy: tpm_policy(body.tpm_policy)?,
        runtime_policy,
        mb_policy,
        ima_sign_verification_keys: body.ima_sign_verification_keys,
        revocation_key: revocation_key(body.revocation_key)?,
        meta_data: body.metadata,
        accept_tpm_hash_algs: hashes,
        accept_tpm_encryption_algs: encryption,
        accept_tpm_signing_algs: signing,
        ak_tpm: body.ak_tpm,
        mtls_cert: body.mtls_cert.filter(|_| !push),
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
        ima_policy: None,
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

/// `revocation_key`: a PEM RSA private key that signs revocation messages, or `""`. Checked
/// here, where Keylime would fail only when it first signs, after the agent failed.
fn revocation_key(key: String) -> Result<String, ApiError> {
    if key.is_empty() || super::notify::signing_key(&key).is_ok() {
        Ok(key)
    } else {
        Err(ApiError::bad_request(
            "revocation_key must be an unencrypted PEM RSA private key or \"\"",
        ))
    }
}
