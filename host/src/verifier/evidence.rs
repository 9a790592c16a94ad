//! `POST /v2.x/verify/evidence` (2.4+): stateless verification of evidence a caller hands
//! in, through the same pipeline as every attestation (keylime-api.md §4.8).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use super::Verifier;
use super::modules::resolve;
use super::pipeline::{Evidence, Expectations, Failure, ImaList, PolicyInUse, evaluate, parse_tpm_policy};
use super::policies::DEFAULT_RUNTIME_MODULE;
use crate::api::{ApiError, ApiVersion};
use crate::evidence::{HashAlg, PublicArea, Quote};
use crate::store::{DEFAULT_TENANT, PolicyKind, PolicyRecord};
use crate::tpm::AttestationKey;

/// Keylime's reply: the envelope with `valid`, `claims` and, when checks ran and failed,
/// `failures`; 400 for missing parameters or policies, with the same body shape.
fn reply(code: StatusCode, status: &str, results: Value) -> Response {
    (
        code,
        Json(json!({"code": code.as_u16(), "status": status, "results": results})),
    )
        .into_response()
}

fn refused(event_id: &str, message: String) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        &message,
        json!({
            "valid": false,
            "claims": {},
            "failures": [{"type": event_id, "context": {"message": message}}],
        }),
    )
}

fn text<'a>(data: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub async fn verify_evidence(
    State(verifier): State<Verifier>,
    Path(v): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Keylime 7.14.3 serves it at every 2.x prefix (its changelog says 2.4; its code does
    // not gate).
    ApiVersion::from_path_segment(&v)
        .filter(|v| !v.is_v3())
        .ok_or_else(|| ApiError::not_found(format!("{v} has no verify/evidence (API 2.x)")))?;
    let body: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(ApiError::bad_request("Request body must be a JSON object")),
    };
    let (Some(kind), Some(Value::Object(data))) = (body.get("type"), body.get("data")) else {
        let missing = if body.contains_key("type") { "data" } else { "type" };
        return Ok(refused(
            "default.missing_param",
            format!("missing parameter '{missing}'"),
        ));
    };
    match kind.as_str() {
        Some("tpm") => {}
        Some("tee") => {
            return Ok(refused(
                "tee_attestation.unsupported",
                "TEE evidence is not supported by zest".into(),
            ));
        }
        _ => {
            return Ok(refused("default.invalid_type", "invalid evidence type".into()));
        }
    }
    for field in ["quote", "nonce", "hash_alg", "tpm_ek", "tpm_ak"] {
        if text(data, field).is_none() {
            return Ok(refused(
                "default.missing_param",
                format!("missing parameter '{field}'"),
            ));
        }
    }
    if ["tpm_policy", "runtime_policy", "mb_policy"]
        .iter()
        .all(|f| data.get(*f).is_none_or(Value::is_null))
    {
        return Ok(refused(
            "default.missing_policy",
            "at least one of tpm_policy, runtime_policy and mb_policy is required".into(),
        ));
    }
    // Anyone may call this route (as in Keylime): a bounded number of checks run at once, so
    // handed-in evidence cannot crowd out the verdicts of enrolled agents.
    let Ok(permit) = verifier.stateless_checks.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many evidence checks in progress; try again shortly",
        ));
    };
    let data = data.clone();
    let verifier = verifier.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        check(&verifier, &data).map(|f| (f, data))
    })
    .await
    .map_err(|e| ApiError::internal("verifying evidence", e))?;
    Ok(match outcome {
        Err(message) => refused("default.invalid_param", message),
        Ok((failures, data)) if failures.is_empty() => reply(
            StatusCode::OK,
            "Success",
            // Keylime 7.14.3 sets `failures: []` before it checks and keeps it on success.
            json!({"valid": true, "claims": data, "failures": []}),
        ),
        Ok((failures, _)) => reply(
            StatusCode::OK,
            "Success",
            json!({
                "valid": false,
                "claims": {},
                "failures": failures.iter().map(Failure::to_json).collect::<Vec<_>>(),
            }),
        ),
    })
}

/// A document the caller sent, as the policy the round applies.
fn policy_in_use(
    verifier: &Verifier,
    kind: PolicyKind,
    module: &str,
    document: Vec<u8>,
) -> Result<PolicyInUse, String> {
    // Open to anyone: built-ins, and the default tenant's uploads.
    let bytes = resolve(verifier, DEFAULT_TENANT, kind, module).map_err(|e| e.message)?;
    Ok(PolicyInUse {
        record: PolicyRecord {
            name: "verify-evidence".into(),
            module: module.to_owned(),
            checksum: hex::encode(HashAlg::Sha256.digest(&[&document])),
            generator: 0,
            document: Some(document),
        },
        module: bytes,
        stored: None,
        one_off: true,
    })
}

/// Parses what the caller sent and runs the pipeline; `Err` is a malformed parameter.
/// Nothing is known about the agent: no saved replay, clock or boot, no PCR 16 binding.
fn check(verifier: &Verifier, data: &Map<String, Value>) -> Result<Vec<Failure>, String> {
    let field = |f: &str| text(data, f).unwrap_or_default();
    let quote = Quote::from_keylime_string(field("quote")).map_err(|e| format!("quote: {e}"))?;
    let hash =
        HashAlg::from_name(field("hash_alg")).ok_or("hash_alg: not one of sha1, sha256, sha384, sha512")?;
    let ak_bytes = B64
        .decode(field("tpm_ak"))
        .map_err(|e| format!("tpm_ak: not base64: {e}"))?;
    let ak = AttestationKey::new(PublicArea::from_tpm2b(&ak_bytes).map_err(|e| format!("tpm_ak: {e}"))?);
    // The nonce is the qualifying data as text, or base64 of its raw bytes: take the one the
    // quote carries, so that a mismatch is still reported against the text.
    let text_nonce = field("nonce").as_bytes().to_vec();
    let nonce = match B64.decode(field("nonce")) {
        Ok(raw) if quote.attest.extra_data == raw => raw,
        _ => text_nonce,
    };
    let tpm_policy = match data.get("tpm_policy") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::String(s)) if s.is_empty() => Default::default(),
        Some(Value::String(s)) => parse_tpm_policy(s)?,
        Some(v @ Value::Object(_)) => parse_tpm_policy(&v.to_string())?,
        Some(_) => return Err("tpm_policy must be a JSON string".into()),
    };
    let document_of = |f: &str| -> Result<Option<Vec<u8>>, String> {
        match data.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
            Some(v @ Value::Object(_)) => Ok(Some(v.to_string().into_bytes())),
            Some(_) => Err(format!("{f} must be a JSON string")),
        }
    };
    let runtime = document_of("runtime_policy")?
        .map(|doc| policy_in_use(verifier, PolicyKind::Runtime, DEFAULT_RUNTIME_MODULE, doc))
        .transpose()?;
    let measured_boot = document_of("mb_policy")?
        .map(|doc| {
            policy_in_use(
                verifier,
                PolicyKind::MeasuredBoot,
                &verifier.config.measured_boot_module,
                doc,
            )
        })
        .transpose()?;
    let boot_log = text(data, "mb_log").map(|b64| {
        B64.decode(b64).map_err(|e| {
            Failure::message(
                "measured_boot.parser.log.base64decode",
                format!("mb_log is not base64: {e}"),
            )
        })
    });
    let expect = Expectations {
        tenant: DEFAULT_TENANT.to_owned(),
        ak,
        tpm_policy,
        runtime,
        measured_boot,
        bind_key: false,
        known_key: None,
        ima: None,
        ima_policy_state: None,
        mb_policy_state: None,
        last_boot_time: None,
        last_clock: None,
        first_attestation: true,
    };
    let evidence = Evidence {
        quote,
        hash,
        nonce,
        boot_time: None,
        ima: text(data, "ima_measurement_list").map(|list| ImaList {
            text: list.to_owned(),
            offset: 0,
        }),
        boot_log,
        pubkey: None,
    };
    Ok(evaluate(&verifier.policies, &expect, &evidence).failures)
}
