//! Proof-of-possession sessions (`POST /v3/sessions`, `PATCH /v3/sessions/{id}`): the
//! verifier hands out a fresh random challenge; the agent answers with TPM2_Certify of its
//! AK by the AK itself over that challenge; a valid proof for an enrolled push agent earns a
//! bearer token `<session_id>.<secret>`, of which only a salted HMAC-SHA-256 is stored.
//!
//! A challenge is answerable once and only until `nonce_lifetime`; pending sessions live
//! in memory (an unauthenticated caller never writes to the store), and creation is rate
//! limited per client address and per agent id. A failed proof, an unknown agent and an
//! expired challenge all answer the same 401 so that agent ids cannot be probed.
//!
//! Verifiers sharing a database take each other's proofs: a session id is a UUIDv7 (its
//! creation time in it), and its challenge is an HMAC of the id and agent id under a key
//! they share (in the database), so a verifier that did not hand out a challenge can still
//! check a proof of it within its lifetime. A proof is taken once across all of them: the
//! first success claims the session id in the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{PushError, RateLimiter};
use crate::api::AgentId;
use crate::clock::{rfc3339_micros, unix_micros_now};
use crate::evidence::{Attest, Attested, PublicArea, Signature};
use crate::net::Peer;
use crate::store::PushSession;
use crate::tpm::{object_name, verify_signature};
use crate::verifier::Verifier;

/// Pending sessions kept at most; beyond it, expired ones are dropped first, then the
/// oldest: a flood displaces old challenges instead of refusing new ones.
const MAX_PENDING: usize = 100_000;
/// Pending sessions one client address may hold for one agent; its oldest goes first.
const MAX_PENDING_PER_CLIENT: usize = 4;
/// Failed proofs one client address may send for one agent per minute before it must wait.
const MAX_FAILED_PROOFS: usize = 10;

struct Pending {
    agent_id: String,
    /// The client address that asked for it ("" when unknown).
    address: String,
    challenge: Vec<u8>,
    created_at: u64,
    expires_at: u64,
}

/// Sessions waiting for their proof, and the limits on asking for them. Nothing is limited
/// per agent alone: anyone can name an agent, so such a limit would let a stranger lock the
/// agent out. Limits are per client address, and failed proofs per (agent, address).
pub struct Sessions {
    pending: Mutex<HashMap<String, Pending>>,
    /// Sessions of this verifier answered or evicted, until their challenge expires: never
    /// taken again here, not even as another verifier's.
    spent: Mutex<HashMap<String, u64>>,
    /// The key challenges derive from, shared by the verifiers of one database.
    key: aws_lc_rs::hmac::Key,
    per_address: RateLimiter,
    failed_proofs: RateLimiter,
}

impl Sessions {
    /// `key`: the verifiers' shared secret (`VerifierStore::shared_secret`).
    pub fn new(key: &[u8]) -> Self {
        // Keylime's default: 50 sessions per minute per client address.
        Self {
            pending: Mutex::default(),
            spent: Mutex::default(),
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
            per_address: RateLimiter::new(50, Duration::from_secs(60)),
            failed_proofs: RateLimiter::new(MAX_FAILED_PROOFS, Duration::from_secs(60)),
        }
    }

    /// The challenge of session `session_id` for `agent_id`.
    fn challenge(&self, session_id: &str, agent_id: &str) -> Vec<u8> {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.key);
        context.update(b"zest push challenge\0");
        context.update(session_id.as_bytes());
        context.update(b"\0");
        context.update(agent_id.as_bytes());
        context.sign().as_ref().to_vec()
    }

    /// Remembers sessions that may not be answered here any more.
    fn spend(&self, gone: impl IntoIterator<Item = (String, u64)>, now: u64) {
        if let Ok(mut spent) = self.spent.lock() {
            spent.retain(|_, expires_at| *expires_at >= now);
            spent.extend(gone);
        }
    }
}

/// The creation time (Unix microseconds, to the millisecond) a UUIDv7 session id carries.
fn created_at_of(session_id: &str) -> Option<u64> {
    let (high, rest) = session_id.split_once('-')?;
    let (mid, _) = rest.split_once('-')?;
    if high.len() != 8
        || mid.len() != 4
        || session_id.len() != 36
        || session_id.as_bytes().get(14) != Some(&b'7')
    {
        return None;
    }
    let millis = u64::from_str_radix(&format!("{high}{mid}"), 16).ok()?;
    millis.checked_mul(1000)
}

/// The key of failed-proof counts: one agent as asked for from one address.
fn proof_key(agent_id: &str, address: &str) -> String {
    format!("{agent_id}|{address}")
}

fn random<const N: usize>() -> Result<[u8; N], PushError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PushError::new(StatusCode::INTERNAL_SERVER_ERROR, "no randomness"))?;
    Ok(bytes)
}

/// A UUIDv7 (RFC 9562): `millis` since the epoch, then random bits.
fn uuid7(millis: u64) -> Result<String, PushError> {
    let mut b = random::<16>()?;
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The stored hash of a token: HMAC-SHA-256 keyed with the session's salt. The secret is
/// 256 bits from the system's CSPRNG, which no guessing reaches, so key stretching (Keylime
/// uses 600,000 rounds of PBKDF2) would add nothing but CPU: 0.1 s per session, paid by
/// every agent of a fleet again after a verifier restarts.
pub fn token_hash(salt: &[u8], token: &str) -> [u8; 32] {
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, salt),
        token.as_bytes(),
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn attributes(body: &[u8]) -> Result<serde_json::Map<String, Value>, PushError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| PushError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    let data = value.get("data");
    match data.and_then(|d| d.get("attributes")) {
        Some(Value::Object(map)) if data.and_then(|d| d.get("type")).is_some_and(|t| t == "session") => {
            Ok(map.clone())
        }
        _ => Err(PushError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON:API document with data.type \"session\" and data.attributes",
        )),
    }
}

fn agent_id(attributes: &serde_json::Map<String, Value>) -> Result<String, PushError> {
    let text = attributes
        .get("agent_id")
        .and_then(Value::as_str)
        .ok_or_else(|| PushError::new(StatusCode::BAD_REQUEST, "agent_id is required"))?;
    AgentId::parse(text)
        .map(|id| id.to_string())
        .map_err(|e| PushError::new(StatusCode::BAD_REQUEST, e.message))
}

fn is_tpm_pop(entry: &Value) -> bool {
    entry["authentication_class"] == "pop" && entry["authentication_type"] == "tpm_pop"
}

/// `POST /v3[.0]/sessions`: a challenge for an agent that says it can prove possession.
pub async fn create(
    State(verifier): State<Verifier>,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> Response {
    create_inner(&verifier, peer.map(|Extension(p)| p), &body).unwrap_or_else(IntoResponse::into_response)
}

fn create_inner(verifier: &Verifier, peer: Option<Peer>, body: &[u8]) -> Result<Response, PushError> {
    let attributes = attributes(body)?;
    let agent_id = agent_id(&attributes)?;
    let supported = attributes
        .get("authentication_supported")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(is_tpm_pop));
    if !supported {
        return Err(PushError::new(
            StatusCode::BAD_REQUEST,
            "authentication_supported must include tpm_pop authentication type",
        ));
    }
    let sessions = &verifier.sessions;
    let address = peer.map(|p| p.0.ip().to_string()).unwrap_or_default();
    // Too many wrong proofs from here for this agent: wait, without counting a request.
    sessions
        .failed_proofs
        .full(&proof_key(&agent_id, &address))
        .map_err(PushError::too_many)?;
    sessions
        .per_address
        .check(&address)
        .map_err(PushError::too_many)?;

    // To the millisecond: the id carries it, and every verifier derives the same times.
    let created_at = unix_micros_now() / 1000 * 1000;
    let session_id = uuid7(created_at / 1000)?;
    let challenge = sessions.challenge(&session_id, &agent_id);
    let lifetime = u64::try_from(verifier.config.nonce_lifetime.as_micros()).unwrap_or(u64::MAX);
    let expires_at = created_at.saturating_add(lifetime);
    let reply = json!({"data": {
        "type": "session",
        "id": session_id,
        "attributes": {
            "agent_id": agent_id,
            "authentication_requested": [{
                "authentication_class": "pop",
                "authentication_type": "tpm_pop",
                "chosen_parameters": {"challenge": B64.encode(&challenge)},
            }],
            "created_at": rfc3339_micros(created_at),
            "challenges_expire_at": rfc3339_micros(expires_at),
        },
    }});
    let mut pending = sessions
        .pending
        .lock()
        .map_err(|_| PushError::new(StatusCode::INTERNAL_SERVER_ERROR, "session table poisoned"))?;
    // This client's oldest challenges for this agent make room for the new one.
    let mut evicted = Vec::new();
    let mut mine: Vec<(u64, String)> = pending
        .iter()
        .filter(|(_, p)| p.agent_id == agent_id && p.address == address)
        .map(|(id, p)| (p.created_at, id.clone()))
        .collect();
    if mine.len() >= MAX_PENDING_PER_CLIENT {
        mine.sort_unstable();
        for (_, id) in mine.iter().take(mine.len() + 1 - MAX_PENDING_PER_CLIENT) {
            evicted.extend(pending.remove_entry(id));
        }
    }
    if pending.len() >= MAX_PENDING {
        pending.retain(|_, p| p.expires_at > created_at);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.created_at)
                .map(|(id, _)| id.clone())
        {
            evicted.extend(pending.remove_entry(&oldest));
        }
    }
    sessions.spend(evicted.into_iter().map(|(id, p)| (id, p.expires_at)), created_at);
    pending.insert(
        session_id,
        Pending {
            agent_id,
            address,
            challenge,
            created_at,
            expires_at,
        },
    );
    Ok((StatusCode::OK, Json(reply)).into_response())
}

/// Checks a TPM2_Certify of the AK by itself over `challenge`.
pub fn check_proof(
    ak: &PublicArea,
    challenge: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let attest = Attest::parse(message).map_err(|e| format!("message: {e}"))?;
    if attest.magic != crate::evidence::attest::TPM_GENERATED_VALUE {
        return Err("message was not generated by a TPM".into());
    }
    let Attested::Certify { name, .. } = &attest.attested else {
        return Err("message is not a TPM2_Certify attestation".into());
    };
    if attest.extra_data != challenge {
        return Err("the certification is not over this session's challenge".into());
    }
    if *name != object_name(ak) {
        return Err("the certified object is not the agent's enrolled AK".into());
    }
    let signature = Signature::parse(signature).map_err(|e| format!("signature: {e}"))?;
    verify_signature(ak, &signature, message).map_err(|e| format!("signature: {e}"))
}

/// `PATCH /v3[.0]/sessions/{id}`: the proof; a token when it holds.
pub async fn prove(
    State(verifier): State<Verifier>,
    peer: Option<Extension<Peer>>,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Response {
    let attributes = match attributes(&body) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let agent_id = match agent_id(&attributes) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let received_at = unix_micros_now();
    // A challenge is answered once: the pending session is taken whatever the outcome.
    let sessions = &verifier.sessions;
    let local = {
        let Ok(mut pending) = sessions.pending.lock() else {
            return PushError::new(StatusCode::INTERNAL_SERVER_ERROR, "session table poisoned")
                .into_response();
        };
        match pending.get(&session_id) {
            Some(p) if p.agent_id != agent_id => {
                return PushError::new(StatusCode::BAD_REQUEST, "agent_id does not match the session")
                    .into_response();
            }
            _ => pending.remove(&session_id),
        }
    };
    let pending = match local {
        Some(pending) => {
            sessions.spend([(session_id.clone(), pending.expires_at)], received_at);
            pending
        }
        // Another verifier's session (same database): its time is in its id, its challenge
        // derives from the shared key. Not one this verifier answered or evicted already.
        None => {
            let spent = sessions
                .spent
                .lock()
                .map(|s| s.contains_key(&session_id))
                .unwrap_or(true);
            let lifetime = u64::try_from(verifier.config.nonce_lifetime.as_micros()).unwrap_or(u64::MAX);
            let created_at = created_at_of(&session_id)
                // Not from the future (a second of clock skew between verifiers allowed),
                // and not expired so long ago that it may have been forgotten.
                .filter(|t| *t <= received_at.saturating_add(1_000_000))
                .filter(|t| t.saturating_add(lifetime) >= received_at);
            let Some(created_at) = created_at.filter(|_| !spent) else {
                return PushError::new(StatusCode::NOT_FOUND, "Session not found").into_response();
            };
            let expires_at = created_at.saturating_add(lifetime);
            sessions.spend([(session_id.clone(), expires_at)], received_at);
            Pending {
                challenge: sessions.challenge(&session_id, &agent_id),
                agent_id: agent_id.clone(),
                address: peer.map(|Extension(p)| p.0.ip().to_string()).unwrap_or_default(),
                created_at,
                expires_at,
            }
        }
    };
    let provided = attributes
        .get("authentication_provided")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|e| is_tpm_pop(e)).cloned());
    let Some(provided) = provided else {
        return PushError::new(
            StatusCode::BAD_REQUEST,
            "authentication_provided must hold a tpm_pop proof",
        )
        .into_response();
    };
    let field = |name: &str| {
        provided
            .get("data")
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .and_then(|t| B64.decode(t).ok())
            .unwrap_or_default()
    };
    let (message, signature) = (field("message"), field("signature"));
    // The proof is echoed as the agent sent it, or as decoded when it sent no object.
    let data = provided
        .get("data")
        .filter(|d| d.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"message": B64.encode(&message), "signature": B64.encode(&signature)}));
    let echo = json!({
        "authentication_class": "pop",
        "authentication_type": "tpm_pop",
        "chosen_parameters": {"challenge": B64.encode(&pending.challenge)},
        "data": data,
    });
    let mut attributes = json!({
        "agent_id": agent_id.clone(),
        "evaluation": "fail",
        "authentication": [echo],
        "created_at": rfc3339_micros(pending.created_at),
        "challenges_expire_at": rfc3339_micros(pending.expires_at),
        "response_received_at": rfc3339_micros(received_at),
    });
    let reply = |attributes: Value, code: StatusCode| {
        (
            code,
            Json(json!({"data": {"type": "session", "id": session_id, "attributes": attributes}})),
        )
            .into_response()
    };

    let v = verifier.clone();
    let id = agent_id.clone();
    let sid = session_id.clone();
    let lifetime = verifier.config.session_lifetime;
    let outcome = tokio::task::spawn_blocking(move || -> Result<Option<(String, u64)>, String> {
        if received_at > pending.expires_at {
            return Ok(None);
        }
        let Some(agent) = v.store.agent(&id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let _span = crate::verifier::agent_span(&id, &agent.tenant).entered();
        let ak = B64
            .decode(&agent.ak_tpm)
            .ok()
            .and_then(|b| PublicArea::from_tpm2b(&b).ok());
        let (true, Some(ak)) = (agent.push, ak) else {
            return Ok(None);
        };
        if let Err(why) = check_proof(&ak, &pending.challenge, &message, &signature) {
            tracing::info!(%why, "proof of possession refused");
            // Counted for this agent from this address only.
            let _ = v.sessions.failed_proofs.check(&proof_key(&id, &pending.address));
            return Ok(None);
        }
        // Once across the verifiers of the database: a proof taken by another is not again.
        if !v
            .store
            .claim_session(&sid, pending.expires_at, received_at)
            .map_err(|e| e.to_string())?
        {
            tracing::info!("proof of possession for a session already proven");
            return Ok(None);
        }
        let secret: [u8; 32] = random().map_err(|_| "no randomness".to_owned())?;
        let salt: [u8; 16] = random().map_err(|_| "no randomness".to_owned())?;
        let token = format!("{sid}.{}", URL_SAFE_NO_PAD.encode(secret));
        let expires_at = crate::clock::unix_now() + lifetime.as_secs();
        let session = PushSession {
            session_id: sid.clone(),
            tenant: agent.tenant.clone(),
            agent_id: id.clone(),
            token_salt: salt.to_vec(),
            token_hash: token_hash(&salt, &token).to_vec(),
            token_expires_at: expires_at,
        };
        v.store.put_session(&session).map_err(|e| e.to_string())?;
        v.tokens.issued(&session, &token);
        tracing::info!("push session authenticated");
        Ok(Some((token, expires_at)))
    })
    .await;
    match outcome {
        Ok(Ok(Some((token, expires_at)))) => {
            if let Some(map) = attributes.as_object_mut() {
                map.insert("evaluation".into(), json!("pass"));
                map.insert("token".into(), json!(token));
                map.insert(
                    "token_expires_at".into(),
                    json!(rfc3339_micros(expires_at.saturating_mul(1_000_000))),
                );
            }
            reply(attributes, StatusCode::OK)
        }
        Ok(Ok(None)) => reply(attributes, StatusCode::UNAUTHORIZED),
        Ok(Err(why)) => {
            tracing::error!(%why, "storing a push session");
            PushError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error: storing the session",
            )
            .into_response()
        }
        Err(why) => {
            tracing::error!(%why, "checking a proof of possession");
            PushError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error: checking the proof",
            )
            .into_response()
        }
    }
}
