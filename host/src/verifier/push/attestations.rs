//! Push attestations (keylime-api.md §6.2–6.5). The agent offers its capabilities
//! (`POST /v3/agents/{id}/attestations` → 201, `Location`, the evidence the verifier wants
//! and a fresh challenge), then submits that evidence (`PATCH …/attestations/{n}` or
//! `…/latest` → 202 with `meta.seconds_to_next_attestation`); the verdict follows
//! asynchronously through the one attestation pipeline. Admins read records with
//! `GET …/attestations`, `…/latest` and `…/{n}`.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::PushError;
use super::auth::authenticate;
use crate::api::{AgentId, Scope};
use crate::clock::{parse_rfc3339, rfc3339_micros, unix_micros_now, unix_now};
use crate::evidence::{HashAlg, KeyParams, PublicArea};
use crate::store::verifier::state;
use crate::store::{PolicyKind, PolicyRecord, PushAttestation, VerifierAgent};
use crate::verifier::Verifier;
use crate::verifier::history::{self, RoundRecord};
use crate::verifier::notify;
use crate::verifier::pipeline::{
    Evidence, Expectations, Failure, ImaList, Outcome, RoundResult, apply, evaluate, parse_tpm_policy,
    required_pcrs,
};
use crate::verifier::policies::judges_ima;
use crate::verifier::wire::{CollectedEvidence, LogData, TpmQuoteData, binary};

const JSON_API: &str = "application/vnd.api+json";

fn invalid(detail: impl Into<String>) -> PushError {
    PushError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

fn internal(e: impl std::fmt::Display) -> PushError {
    tracing::error!(error = %e, "push attestation");
    PushError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
}

/// `/v3.0` or `/v3`, as the request was addressed.
fn prefix(uri: &Uri) -> &'static str {
    if uri.path().starts_with("/v3.0/") {
        "/v3.0"
    } else {
        "/v3"
    }
}

fn require_json_api(headers: &HeaderMap) -> Result<(), PushError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with(JSON_API) {
        Ok(())
    } else {
        Err(PushError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {JSON_API}"),
        ))
    }
}

fn attributes(body: &[u8]) -> Result<Map<String, Value>, PushError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| PushError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    let allowed = ["data", "errors", "meta", "links", "jsonapi"];
    if let Some(extra) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(PushError::new(
            StatusCode::BAD_REQUEST,
            format!("unexpected top-level member '{extra}'"),
        ));
    }
    match value.pointer("/data/attributes") {
        Some(Value::Object(map))
            if value.pointer("/data/type").and_then(Value::as_str) == Some("attestation") =>
        {
            Ok(map.clone())
        }
        _ => Err(PushError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON:API document with data.type \"attestation\" and data.attributes",
        )),
    }
}

fn agent_id(id: &str) -> Result<String, PushError> {
    AgentId::parse(id)
        .map(|a| a.to_string())
        .map_err(|e| PushError::new(StatusCode::BAD_REQUEST, e.message))
}

/// The member of `value` at a JSON pointer, `Null` when there is none (as `value[a][b]`
/// reads, without indexing).
fn value_at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    value.pointer(pointer).unwrap_or(&NULL)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The AK's signing scheme and hash, which the agent will use whatever it is told.
fn ak_scheme(ak: &PublicArea) -> (&'static str, HashAlg) {
    const TPM_ALG_RSAPSS: u16 = 0x0016;
    match &ak.params {
        KeyParams::Rsa {
            scheme, scheme_hash, ..
        } => (
            if *scheme == TPM_ALG_RSAPSS {
                "rsapss"
            } else {
                "rsassa"
            },
            scheme_hash.unwrap_or(HashAlg::Sha256),
        ),
        KeyParams::Ecc { scheme_hash, .. } => ("ecdsa", scheme_hash.unwrap_or(HashAlg::Sha256)),
        KeyParams::Other { .. } => ("rsassa", HashAlg::Sha256),
    }
}

fn enrolled_ak(agent: &VerifierAgent) -> Result<(Vec<u8>, PublicArea), PushError> {
    let bytes = B64.decode(&agent.ak_tpm).map_err(internal)?;
    let public = PublicArea::from_tpm2b(&bytes).map_err(internal)?;
    Ok((bytes, public))
}

/// The policies an agent is judged by (a runtime policy unless it is Keylime's empty one
/// under the default component; a refstate only when it has a document).
///
/// `with_documents: false` reads only what the records say, not the documents themselves.
fn policies(
    verifier: &Verifier,
    agent: &VerifierAgent,
    with_documents: bool,
) -> Result<(Option<PolicyRecord>, Option<PolicyRecord>), PushError> {
    let read = |kind, name: &str| {
        if with_documents {
            verifier.store.policy(kind, &agent.tenant, name)
        } else {
            verifier.store.policy_info(kind, &agent.tenant, name)
        }
    };
    let runtime = read(PolicyKind::Runtime, &agent.runtime_policy)
        .map_err(internal)?
        .filter(judges_ima);
    let mb = read(PolicyKind::MeasuredBoot, &agent.mb_policy)
        .map_err(internal)?
        .filter(|r| r.document.is_some());
    Ok((runtime, mb))
}
/// What the verifier asks of one offer (keylime-api.md §6.2 "Verifier parameter selection").
struct Chosen {
    evidence: Vec<Value>,
    challenge: Vec<u8>,
    ima_offset: Option<u64>,
}

fn choose(
    verifier: &Verifier,
    agent: &VerifierAgent,
    offered: &[Value],
    boot_time: Option<u64>,
) -> Result<Chosen, PushError> {
    let (ak_bytes, ak) = enrolled_ak(agent)?;
    let (runtime, mb) = policies(verifier, agent, false)?;
    let tpm_policy = parse_tpm_policy(&agent.tpm_policy).map_err(invalid)?;
    let required: Vec<u32> = required_pcrs(&tpm_policy, runtime.is_some(), mb.is_some(), false)
        .into_iter()
        .collect();

    let find = |class: &str, kind: &str| {
        offered
            .iter()
            .enumerate()
            .find(|(_, e)| e["evidence_class"] == class && e["evidence_type"] == kind)
    };
    let (quote_at, quote) = find("certification", "tpm_quote")
        .ok_or_else(|| invalid("/data/attributes/evidence_supported: no tpm_quote is offered"))?;
    let pointer = format!("/data/attributes/evidence_supported/{quote_at}/capabilities");
    let caps = &quote["capabilities"];
    if caps["component_version"] != "2.0" {
        return Err(invalid(format!("{pointer}/component_version must be \"2.0\"")));
    }
    let (scheme, hash) = ak_scheme(&ak);
    if !strings(&caps["signature_schemes"]).contains(&scheme)
        || !agent.accept_tpm_signing_algs.iter().any(|a| a == scheme)
    {
        return Err(invalid(format!(
            "{pointer}/signature_schemes: the AK signs with {scheme}, which is not both offered and accepted"
        )));
    }
    let bank = hash.name();
    if !strings(&caps["hash_algorithms"]).contains(&bank)
        || !agent.accept_tpm_hash_algs.iter().any(|a| a == bank)
    {
        return Err(invalid(format!(
            "{pointer}/hash_algorithms: the AK hashes with {bank}, which is not both offered and accepted"
        )));
    }
    let subjects = caps["available_subjects"].as_object().ok_or_else(|| {
        invalid(format!(
            "{pointer}/available_subjects must be an object {{bank: [PCRs]}}"
        ))
    })?;
    let available: Vec<u64> = subjects
        .get(bank)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if let Some(missing) = required.iter().find(|p| !available.contains(&u64::from(**p))) {
        return Err(invalid(format!(
            "{pointer}/available_subjects/{bank}: PCR {missing} is required but not offered"
        )));
    }
    let keys = caps["certification_keys"]
        .as_array()
        .ok_or_else(|| invalid(format!("{pointer}/certification_keys is required")))?;
    let is_ak = |k: &Value| {
        k["public"]
            .as_str()
            .and_then(|p| B64.decode(p).ok())
            .is_some_and(|p| p == ak_bytes || p.as_slice() == ak_bytes.get(2..).unwrap_or_default())
    };
    let key = keys
        .iter()
        .find(|k| is_ak(k))
        .or_else(|| keys.iter().find(|k| k["server_identifier"] == "ak"))
        .or_else(|| keys.first())
        .ok_or_else(|| invalid(format!("{pointer}/certification_keys is empty")))?;
    let selected: Map<String, Value> = subjects
        .keys()
        .map(|b| (b.clone(), if b == bank { json!(required) } else { Value::Null }))
        .collect();
    let mut challenge = vec![0u8; 32];
    SystemRandom::new().fill(&mut challenge).map_err(internal)?;
    let mut evidence = vec![json!({
        "evidence_class": "certification",
        "evidence_type": "tpm_quote",
        "capabilities": caps,
        "chosen_parameters": {
            "challenge": B64.encode(&challenge),
            "signature_scheme": scheme,
            "hash_algorithm": bank,
            "selected_subjects": selected,
            "certification_key": key,
        },
    })];

    if mb.is_some() {
        let (_, uefi) = find("log", "uefi_log")
            .filter(|(_, e)| strings(value_at(e, "/capabilities/formats")).contains(&"application/octet-stream"))
            .ok_or_else(|| invalid("/data/attributes/evidence_supported: the refstate needs a uefi_log in application/octet-stream"))?;
        evidence.push(json!({
            "evidence_class": "log",
            "evidence_type": "uefi_log",
            "capabilities": uefi["capabilities"],
            "chosen_parameters": {"format": "application/octet-stream"},
        }));
    }
    let mut ima_offset = None;
    if runtime.is_some() {
        let (at, ima) = find("log", "ima_log")
            .filter(|(_, e)| {
                strings(value_at(e, "/capabilities/formats")).contains(&"text/plain")
                    && value_at(e, "/capabilities/supports_partial_access").as_bool() == Some(true)
            })
            .ok_or_else(|| invalid("/data/attributes/evidence_supported: the runtime policy needs an ima_log in text/plain with partial access"))?;
        let boot_time = boot_time
            .ok_or_else(|| invalid("/data/attributes/system_info/boot_time is required with an IMA log"))?;
        // A list judged under another version of the policy starts over (see
        // `VerifierAgent::ima_policy`).
        let same_policy = match (&agent.ima_policy, &runtime) {
            (Some(judged), Some(live)) => *judged == live.checksum,
            _ => true,
        };
        let offset = match agent.boottime {
            Some(last) if last == boot_time && agent.pcr10.is_some() && same_policy => {
                agent.next_ima_ml_entry
            }
            Some(last) if last > boot_time => {
                return Err(invalid(
                    "/data/attributes/system_info/boot_time is earlier than the last attested boot",
                ));
            }
            _ => 0,
        };
        let count = value_at(ima, "/capabilities/entry_count").as_u64().unwrap_or(0);
        if offset > count {
            return Err(invalid(format!(
                "/data/attributes/evidence_supported/{at}/capabilities/entry_count: {count} entries, but {offset} were attested already"
            )));
        }
        ima_offset = Some(offset);
        evidence.push(json!({
            "evidence_class": "log",
            "evidence_type": "ima_log",
            "capabilities": ima["capabilities"],
            "chosen_parameters": {"starting_offset": offset, "format": "text/plain"},
        }));
    }
    Ok(Chosen {
        evidence,
        challenge,
        ima_offset,
    })
}

/// The JSON:API resource of one attestation.
fn resource(prefix: &str, agent_id: &str, a: &PushAttestation) -> Value {
    let stamp = |t: Option<u64>| t.map(rfc3339_micros);
    let mut attributes = json!({
        "stage": a.stage,
        "evaluation": a.evaluation,
        "evidence": a.evidence,
        "system_info": a.system_info,
        "capabilities_received_at": rfc3339_micros(a.capabilities_received_at),
        "challenges_expire_at": rfc3339_micros(a.challenges_expire_at),
    });
    // `attributes` is the object just built: the branch is always taken.
    if let Some(fields) = attributes.as_object_mut() {
        if a.stage == "awaiting_evidence" {
            fields.insert(
                "evidence_requested".into(),
                json!(
                    a.evidence
                        .iter()
                        .map(|e| json!({
                            "evidence_class": e["evidence_class"],
                            "evidence_type": e["evidence_type"],
                            "chosen_parameters": e["chosen_parameters"],
                        }))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if let Some(t) = stamp(a.evidence_received_at) {
            fields.insert("evidence_received_at".into(), json!(t));
        }
        if let Some(t) = stamp(a.verified_at) {
            fields.insert("verification_completed_at".into(), json!(t));
        }
        if let Some(reason) = &a.failure_reason {
            fields.insert("failure_reason".into(), json!(reason));
            fields.insert(
                "failures".into(),
                json!(
                    a.failures
                        .iter()
                        .map(crate::store::StoredFailure::to_json)
                        .collect::<Vec<_>>()
                ),
            );
        }
    }
    json!({
        "type": "attestation",
        "id": a.index.to_string(),
        "attributes": attributes,
        "links": {"self": format!("{prefix}/agents/{agent_id}/attestations/{}", a.index)},
    })
}

fn document(data: Value, self_link: &str) -> Value {
    json!({"data": data, "links": {"self": self_link}, "jsonapi": {"version": "1.1"}})
}

/// `POST /v3[.0]/agents/{id}/attestations`: capabilities in, evidence request out.
pub async fn create(
    State(verifier): State<Verifier>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prefix = prefix(&uri);
    let outcome =
        tokio::task::spawn_blocking(move || create_blocking(&verifier, &id, prefix, &headers, &body)).await;
    match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(e) => internal(e).into_response(),
    }
}

fn create_blocking(
    verifier: &Verifier,
    id: &str,
    prefix: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, PushError> {
    require_json_api(headers)?;
    let agent_id = agent_id(id)?;
    let session = authenticate(verifier, headers, &agent_id)?;
    let now = unix_micros_now();
    // The latest attestation before the agent's record: a verdict saves the record first and
    // completes the attestation after, so a record read after a completed attestation holds
    // that verdict's IMA position. Read the other way round, a verdict landing in between
    // left the offset asked for one round behind the replay (`invalid_ima_entry_nb`).
    if let Some(latest) = verifier
        .store
        .attestation_head(&session.tenant, &agent_id, None)
        .map_err(internal)?
    {
        if latest.stage == "evaluating_evidence" {
            let mut e = PushError::new(StatusCode::SERVICE_UNAVAILABLE, "verification_in_progress");
            e.retry_after = Some(std::time::Duration::from_secs(1));
            return Err(e);
        }
        if let Some(received) = latest.evidence_received_at {
            let next = received.saturating_add((verifier.config.quote_interval * 1e6) as u64);
            if now < next {
                let wait = std::time::Duration::from_micros(next - now);
                let mut e = PushError::too_many(wait);
                e.detail = "premature_attestation".into();
                return Err(e);
            }
        }
    }
    let agent = attesting_agent(verifier, &agent_id, &session.tenant)?;
    let attributes = attributes(body)?;
    let offered = attributes
        .get("evidence_supported")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("/data/attributes/evidence_supported is required"))?;
    let system_info = attributes.get("system_info").cloned().unwrap_or(json!({}));
    let boot_time = match value_at(&system_info, "/boot_time") {
        Value::String(s) => Some(
            parse_rfc3339(s)
                .ok_or_else(|| invalid("/data/attributes/system_info/boot_time is not an RFC 3339 time"))?,
        ),
        Value::Number(n) => Some(
            n.as_u64()
                .ok_or_else(|| invalid("/data/attributes/system_info/boot_time"))?,
        ),
        _ => None,
    };
    let chosen = choose(verifier, &agent, offered, boot_time)?;
    let record = PushAttestation {
        index: 0,
        stage: "awaiting_evidence".into(),
        evaluation: "pending".into(),
        failure_reason: None,
        failures: Vec::new(),
        evidence: chosen.evidence,
        system_info: json!({"boot_time": boot_time.map(|t| rfc3339_micros(t.saturating_mul(1_000_000)))}),
        boot_time: boot_time.unwrap_or(0),
        challenge: B64.encode(&chosen.challenge),
        ima_offset: chosen.ima_offset,
        ima_entries: 0,
        capabilities_received_at: now,
        challenges_expire_at: now.saturating_add(
            u64::try_from(verifier.config.challenge_lifetime.as_micros()).unwrap_or(u64::MAX),
        ),
        evidence_received_at: None,
        verified_at: None,
    };
    let index = verifier
        .store
        .add_attestation(&agent.tenant, &agent_id, &record)
        .map_err(internal)?;
    let record = PushAttestation { index, ..record };
    let location = format!("{prefix}/agents/{agent_id}/attestations/{index}");
    let body = document(
        resource(prefix, &agent_id, &record),
        &format!("{prefix}/agents/{agent_id}/attestations"),
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// The enrolled push agent `agent_id` of the session's `tenant`, unless the operator
/// stopped it (`PUT …/stop`): a stopped agent is not attested until reactivated.
fn attesting_agent(verifier: &Verifier, agent_id: &str, tenant: &str) -> Result<VerifierAgent, PushError> {
    let agent = verifier
        .store
        .agent(agent_id)
        .map_err(internal)?
        .filter(|a| a.push)
        .ok_or_else(|| PushError::new(StatusCode::NOT_FOUND, "agent not found"))?;
    // Deleted and enrolled again by another tenant: a session of the old enrolment is over.
    if agent.tenant != tenant {
        return Err(PushError::new(StatusCode::UNAUTHORIZED, "the session has ended"));
    }
    if matches!(agent.operational_state, state::TENANT_FAILED | state::TERMINATED) {
        return Err(PushError::new(
            StatusCode::FORBIDDEN,
            "agent_stopped: the operator stopped attestation of this agent; it resumes after reactivation",
        ));
    }
    Ok(agent)
}

/// `PATCH /v3[.0]/agents/{id}/attestations/{n|latest}`: the evidence; 202, verdict later.
pub async fn submit(
    State(verifier): State<Verifier>,
    Path((id, which)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prefix = prefix(&uri);
    let path = uri.path().to_owned();
    let v = verifier.clone();
    let outcome =
        tokio::task::spawn_blocking(move || submit_blocking(&v, &id, &which, &headers, &body)).await;
    let (agent, session_id, record) = match outcome {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return internal(e).into_response(),
    };
    let agent_id = agent.agent_id.clone();
    let reply = json!({
        "data": resource(prefix, &agent_id, &record),
        "meta": {"seconds_to_next_attestation": verifier.config.quote_interval.ceil() as u64},
        "links": {"self": path},
        "jsonapi": {"version": "1.1"},
    });
    tokio::task::spawn_blocking(move || verify(&verifier, agent, &session_id, record));
    (StatusCode::ACCEPTED, Json(reply)).into_response()
}

fn submit_blocking(
    verifier: &Verifier,
    id: &str,
    which: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(VerifierAgent, String, PushAttestation), PushError> {
    require_json_api(headers)?;
    let agent_id = agent_id(id)?;
    let session = authenticate(verifier, headers, &agent_id)?;
    // The verdict is written back only to this record of the agent (see `verify`).
    let agent = attesting_agent(verifier, &agent_id, &session.tenant)?;
    let not_found = || PushError::new(StatusCode::NOT_FOUND, "attestation not found");
    let latest = verifier
        .store
        .attestation(&agent.tenant, &agent_id, None)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    if which != "latest" {
        let index: u64 = which.parse().map_err(|_| not_found())?;
        if index > latest.index {
            return Err(not_found());
        }
        if index < latest.index {
            return Err(PushError::new(
                StatusCode::FORBIDDEN,
                "old_attestation: a newer attestation supersedes this one",
            ));
        }
    }
    let mut record = latest;
    if record.stage != "awaiting_evidence" {
        return Err(PushError::new(
            StatusCode::FORBIDDEN,
            "evidence_immutable: evidence was already submitted",
        ));
    }
    let now = unix_micros_now();
    if now > record.challenges_expire_at {
        return Err(PushError::new(StatusCode::FORBIDDEN, "challenges_expired"));
    }
    let attributes = attributes(body)?;
    let collected: Vec<CollectedEvidence> = attributes
        .get("evidence_collected")
        .map(Vec::<CollectedEvidence>::deserialize)
        .transpose()
        .map_err(|e| invalid(format!("/data/attributes/evidence_collected: {e}")))?
        .ok_or_else(|| {
            PushError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request: evidence_collected is required",
            )
        })?;
    if collected.len() != record.evidence.len() {
        return Err(invalid(format!(
            "/data/attributes/evidence_collected: {} items requested, {} sent",
            record.evidence.len(),
            collected.len()
        )));
    }
    for (i, (asked, sent)) in record.evidence.iter_mut().zip(collected).enumerate() {
        let pointer = format!("/data/attributes/evidence_collected/{i}");
        if asked["evidence_class"] != sent.evidence_class.as_str()
            || asked["evidence_type"] != sent.evidence_type.as_str()
        {
            return Err(invalid(format!(
                "{pointer}: expected {} {}",
                asked["evidence_class"], asked["evidence_type"]
            )));
        }
        let bad = |e: String| invalid(format!("{pointer}/data: {e}"));
        match sent.evidence_type.as_str() {
            "tpm_quote" => {
                TpmQuoteData::parse(&sent.data)
                    .and_then(|q| q.quote())
                    .map_err(bad)?;
            }
            "uefi_log" => {
                let log = LogData::parse(&sent.data).map_err(bad)?;
                binary(&log.entries)
                    .ok_or_else(|| invalid(format!("{pointer}/data/entries is neither base64 nor hex")))?;
            }
            "ima_log" => {
                let log = LogData::parse(&sent.data)
                    .map_err(|_| invalid(format!("{pointer}/data/entries must be text")))?;
                // At least what the agent said it had when it offered, from the offset on.
                let offered = value_at(asked, "/capabilities/entry_count").as_u64().unwrap_or(0);
                let from = value_at(asked, "/chosen_parameters/starting_offset")
                    .as_u64()
                    .unwrap_or(0);
                let needed = offered.saturating_sub(from);
                let count = log.entries.bytes().filter(|b| *b == b'\n').count() as u64;
                if count < needed {
                    return Err(invalid(format!(
                        "{pointer}/data/entries must contain at least {needed} entries, {count} were sent"
                    )));
                }
            }
            _ => return Err(invalid(format!("{pointer}: unknown evidence"))),
        }
        asked["data"] = sent.data;
    }
    record.stage = "evaluating_evidence".into();
    record.evidence_received_at = Some(now);
    verifier
        .store
        .update_attestation(&agent.tenant, &agent_id, &record)
        .map_err(internal)?;
    Ok((agent, session.session_id, record))
}

/// Judges submitted evidence and records the verdict on the attestation and on the agent
/// as it was when the evidence came (`agent`): a stop, delete or re-enrolment meanwhile
/// wins. A panic while judging is a failure, never an attestation left evaluating.
fn verify(verifier: &Verifier, agent: VerifierAgent, session_id: &str, record: PushAttestation) {
    // The policies' own log lines and the verdict's carry the agent and its tenant.
    let _span = crate::verifier::agent_span(&agent.agent_id, &agent.tenant).entered();
    let (outcome, judged) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge(verifier, &agent, &record)))
            .unwrap_or_else(|_| {
                let failures = vec![Failure::internal("panic", "evaluating the evidence panicked")];
                let judged = RoundRecord::failed(&agent, "push", &failures);
                let outcome = Outcome {
                    failures,
                    ..Outcome::default()
                };
                (outcome, judged)
            });
    conclude(verifier, agent, Some(session_id), record, outcome, Some(judged));
}

/// Applies a judged outcome to the agent and its attestation record, and notifies the
/// webhook when the severity rose.
fn conclude(
    verifier: &Verifier,
    mut agent: VerifierAgent,
    session_id: Option<&str>,
    mut record: PushAttestation,
    outcome: Outcome,
    judged: Option<RoundRecord>,
) {
    let agent_id = agent.agent_id.clone();
    let from_state = agent.operational_state;
    let mut outcome = outcome;
    if outcome.rebooted {
        // The verifier asks for the whole list after a new boot, so this is not that.
        outcome.failures.push(Failure::quote(
            "invalid_ima_entry_nb",
            "a new boot, but the IMA list does not start at entry 0",
        ));
    }
    let ima_offset = record.ima_offset.unwrap_or(0);
    record.stage = "verification_complete".into();
    record.verified_at = Some(unix_micros_now());
    let waited = record
        .verified_at
        .zip(record.evidence_received_at)
        .map(|(done, received)| done.saturating_sub(received))
        .unwrap_or(0);
    let result = apply(&verifier.config, &mut agent, outcome, unix_now());
    let failures = match &result {
        RoundResult::Fail { failures, .. } => failures.as_slice(),
        _ => &[],
    };
    verifier.record_verdict(
        "push",
        &agent.tenant,
        std::time::Duration::from_micros(waited),
        failures,
    );
    match &result {
        RoundResult::Pass | RoundResult::Rebooted => {
            record.evaluation = "pass".into();
            record.ima_entries = agent.next_ima_ml_entry.saturating_sub(ima_offset);
        }
        RoundResult::Fail { failures, notify, .. } => {
            tracing::warn!(failures = ?failures.iter().map(|f| &f.event_id).collect::<Vec<_>>(), "push attestation failed");
            record.evaluation = "fail".into();
            let broken = failures.iter().any(|f| {
                f.event_id.starts_with("qoute_validation.")
                    || f.event_id == "ima.pcr_mismatch"
                    || f.event_id.starts_with("measured_boot.invalid_pcr_")
                    || f.event_id == "measured_boot.invalid_event_data"
                    || f.event_id.ends_with("missing_pcrs")
                    || f.event_id.starts_with("pcr_validation.unused_pcr_")
            });
            record.failure_reason = Some(
                if broken {
                    "broken_evidence_chain"
                } else {
                    "policy_violation"
                }
                .into(),
            );
            record.failures = failures.iter().map(Failure::stored).collect();
            if let (Some(verdict), Ok(runtime)) = (notify, tokio::runtime::Handle::try_current()) {
                runtime.spawn(notify::send(
                    verifier.clone(),
                    verifier.agent_tls.clone(),
                    agent.clone(),
                    "revocation",
                    verdict.clone(),
                ));
            }
        }
    }
    // A passing attestation extends the session's token, stored with the verdict.
    let extension = session_id
        .filter(|_| matches!(result, RoundResult::Pass))
        .map(|id| {
            (
                id,
                unix_now().saturating_add(verifier.config.session_lifetime.as_secs()),
            )
        });
    // The attestation is history either way (the store skips it if it is no longer the one
    // judged: the agent was deleted and enrolled again meanwhile).
    let (history, durable) = judged
        .map(|mut judged| {
            judged.entry.passed = matches!(result, RoundResult::Pass);
            judged.entry.failures = record.failures.clone();
            judged.for_store(verifier)
        })
        .unzip();
    match verifier
        .store
        .save_push_verdict(&agent, from_state, extension, &record, history)
    {
        Ok(saved) if saved.saved => {
            history::written(verifier, &agent.agent_id, durable.flatten(), saved.history);
        }
        Ok(_) => {
            tracing::info!(%agent_id, "the agent changed while its evidence was judged: its record keeps the operator's change")
        }
        Err(e) => tracing::error!(error = %e, "storing a push verdict"),
    }
}

/// At start-up: attestations a crash left evaluating are failed, so that their agents are
/// not answered 503 forever.
pub fn fail_interrupted(verifier: &Verifier) {
    let Ok(agents) = verifier.store.agents() else {
        tracing::error!("cannot list agents to fail interrupted attestations");
        return;
    };
    for agent in agents.into_iter().filter(|a| a.push) {
        let Ok(Some(record)) = verifier.store.attestation(&agent.tenant, &agent.agent_id, None) else {
            continue;
        };
        if record.stage != "evaluating_evidence" {
            continue;
        }
        tracing::warn!(agent_id = %agent.agent_id, tenant = %agent.tenant, index = record.index, "failing an attestation interrupted by a stop of the verifier");
        let outcome = Outcome {
            failures: vec![Failure::internal(
                "interrupted",
                "the verifier stopped while judging this evidence",
            )],
            ..Outcome::default()
        };
        conclude(verifier, agent, None, record, outcome, None);
    }
}

/// The evidence of a push attestation, as requested and submitted.
fn push_evidence(record: &PushAttestation) -> Result<Evidence, Failure> {
    let item = |kind: &str| record.evidence.iter().find(|e| e["evidence_type"] == kind);
    let invalid = |why: String| Failure::quote("invalid_data", why);
    let quote_item = item("tpm_quote").ok_or_else(|| invalid("no quote".into()))?;
    let quote = TpmQuoteData::parse(&quote_item["data"])
        .map_err(invalid)?
        .quote()
        .map_err(|e| Failure::quote("quote_validation", e))?;
    let hash = value_at(quote_item, "/chosen_parameters/hash_algorithm")
        .as_str()
        .and_then(HashAlg::from_name)
        .ok_or_else(|| invalid("no hash algorithm".into()))?;
    let nonce = B64
        .decode(&record.challenge)
        .map_err(|e| Failure::internal("record", format!("the stored challenge: {e}")))?;
    let ima = item("ima_log")
        .map(|e| {
            LogData::parse(&e["data"])
                .map(|log| ImaList {
                    text: log.entries,
                    offset: record.ima_offset.unwrap_or(0),
                })
                .map_err(|e| invalid(format!("the IMA entries: {e}")))
        })
        .transpose()?;
    let boot_log = item("uefi_log").map(|e| {
        LogData::parse(&e["data"])
            .map_err(|e| format!("the UEFI log: {e}"))
            .and_then(|log| {
                binary(&log.entries).ok_or_else(|| "the UEFI log is neither base64 nor hex".to_owned())
            })
            .map_err(|why| Failure::message("measured_boot.parser.log.base64decode", why))
    });
    let boot_time = (!value_at(&record.system_info, "/boot_time").is_null()).then_some(record.boot_time);
    Ok(Evidence {
        quote,
        hash,
        nonce,
        boot_time,
        ima,
        boot_log,
        pubkey: None,
    })
}

/// Judges the evidence, and the round as the history records it.
fn judge(verifier: &Verifier, agent: &VerifierAgent, record: &PushAttestation) -> (Outcome, RoundRecord) {
    let failed = |failure| {
        let failures = vec![failure];
        let judged = RoundRecord::failed(agent, "push", &failures);
        let outcome = Outcome {
            failures,
            ..Outcome::default()
        };
        (outcome, judged)
    };
    let expect = match Expectations::of(verifier, agent) {
        Ok(e) => e,
        Err(f) => return failed(f),
    };
    match push_evidence(record) {
        Ok(evidence) => {
            let outcome = evaluate(&verifier.policies, &expect, &evidence);
            let judged = RoundRecord::of(agent, "push", Some(&expect), Some(&evidence), &outcome);
            (outcome, judged)
        }
        Err(f) => failed(f),
    }
}

/// Reads of the operator and of the agent's tenant: `GET …/attestations`, `…/latest`,
/// `…/{n}`. Another tenant's agent answers 404, as a missing one does.
pub async fn list(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let prefix = prefix(&uri);
    let outcome = tokio::task::spawn_blocking(move || -> Result<Value, PushError> {
        let agent = visible_agent(&verifier, &scope, &id)?;
        let agent_id = &agent.agent_id;
        let all = verifier
            .store
            .attestations(&agent.tenant, agent_id)
            .map_err(internal)?;
        let data: Vec<Value> = all.iter().map(|a| resource(prefix, agent_id, a)).collect();
        Ok(document(
            json!(data),
            &format!("{prefix}/agents/{agent_id}/attestations"),
        ))
    })
    .await;
    match outcome {
        Ok(Ok(body)) => (StatusCode::OK, Json(body)).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => internal(e).into_response(),
    }
}

/// The enrolled agent `id` if `scope` sees its tenant; 404 otherwise.
fn visible_agent(verifier: &Verifier, scope: &Scope, id: &str) -> Result<VerifierAgent, PushError> {
    let agent_id = agent_id(id)?;
    verifier
        .store
        .agent(&agent_id)
        .map_err(internal)?
        .filter(|a| scope.sees(&a.tenant))
        .ok_or_else(|| PushError::new(StatusCode::NOT_FOUND, "agent not found"))
}

pub async fn show(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((id, which)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let prefix = prefix(&uri);
    let path = uri.path().to_owned();
    let outcome = tokio::task::spawn_blocking(move || -> Result<Value, PushError> {
        let agent = visible_agent(&verifier, &scope, &id)?;
        let agent_id = agent.agent_id;
        let index = match which.as_str() {
            "latest" => None,
            n => Some(
                n.parse::<u64>()
                    .map_err(|_| PushError::new(StatusCode::NOT_FOUND, "attestation not found"))?,
            ),
        };
        let record = verifier
            .store
            .attestation(&agent.tenant, &agent_id, index)
            .map_err(internal)?
            .ok_or_else(|| PushError::new(StatusCode::NOT_FOUND, "attestation not found"))?;
        Ok(document(resource(prefix, &agent_id, &record), &path))
    })
    .await;
    match outcome {
        Ok(Ok(body)) => (StatusCode::OK, Json(body)).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => internal(e).into_response(),
    }
}
