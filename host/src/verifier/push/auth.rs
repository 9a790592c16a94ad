//! Bearer tokens of push agents: `Authorization: Bearer <session_id>.<secret>`. The store
//! keeps only a salted HMAC-SHA-256 of it; a token verified once is remembered in memory by
//! its SHA-256, so later requests need no store read for the hash.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode, header};

use super::PushError;
use super::sessions::token_hash;
use crate::verifier::Verifier;

#[derive(Clone)]
struct Known {
    digest: Vec<u8>,
    agent_id: String,
    tenant: String,
}

/// Tokens verified since start, by session id: their hash is not run again. Expiry is
/// always the stored session's (a verdict of another verifier may have extended it).
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<String, Known>>);

impl TokenCache {
    /// Remembers a token just issued, so that its first use skips the stored hash and its database read.
    pub fn issued(&self, session: &crate::store::PushSession, token: &str) {
        let (session_id, agent_id) = (&session.session_id, &session.agent_id);
        if let Ok(mut known) = self.0.lock() {
            known.retain(|_, k| k.agent_id != *agent_id);
            known.insert(
                session_id.to_owned(),
                Known {
                    digest: crate::evidence::HashAlg::Sha256.digest(&[token.as_bytes()]),
                    agent_id: agent_id.to_owned(),
                    tenant: session.tenant.clone(),
                },
            );
        }
    }

    /// A deleted agent's tokens stop working at once.
    pub fn forget_agent(&self, agent_id: &str) {
        if let Ok(mut known) = self.0.lock() {
            known.retain(|_, k| k.agent_id != agent_id);
        }
    }
}

fn unauthorized(detail: &str) -> PushError {
    PushError::new(StatusCode::UNAUTHORIZED, detail)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request's proven session.
pub struct Authenticated {
    pub session_id: String,
    /// The agent's tenant: its attestations are this tenant's.
    pub tenant: String,
}

/// Checks the request's bearer token for `agent_id` (blocking: may read the store and run
/// the hash). 401 when missing, unknown or expired; 403 when the token is another agent's.
pub fn authenticate(
    verifier: &Verifier,
    headers: &HeaderMap,
    agent_id: &str,
) -> Result<Authenticated, PushError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("a bearer token is required"))?;
    let (session_id, _) = token
        .split_once('.')
        .filter(|(id, secret)| id.len() == 36 && !secret.is_empty())
        .ok_or_else(|| unauthorized("malformed token"))?;
    let digest = crate::evidence::HashAlg::Sha256.digest(&[token.as_bytes()]);
    let now = crate::clock::unix_now();
    let cached = verifier
        .tokens
        .0
        .lock()
        .ok()
        .and_then(|k| k.get(session_id).cloned());
    let known = match cached {
        Some(k) if constant_time_eq(&k.digest, &digest) => k,
        // Another secret for a known session id: not this token.
        Some(_) => return Err(unauthorized("invalid token")),
        None => {
            let session = verifier
                .store
                .session(session_id)
                .map_err(|e| {
                    PushError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("Internal error: {e}"))
                })?
                .ok_or_else(|| unauthorized("invalid token"))?;
            if !constant_time_eq(&token_hash(&session.token_salt, token), &session.token_hash) {
                return Err(unauthorized("invalid token"));
            }
            let known = Known {
                digest,
                agent_id: session.agent_id,
                tenant: session.tenant,
            };
            if let Ok(mut cache) = verifier.tokens.0.lock() {
                // One session per agent: an older one of this agent is gone from the store.
                cache.retain(|_, k| k.agent_id != known.agent_id);
                cache.insert(session_id.to_owned(), known.clone());
            }
            known
        }
    };
    // The stored session is the truth: it may have been replaced by a newer one of the same
    // agent, or extended by a verdict of another verifier on the same database.
    let stored = verifier
        .store
        .session(session_id)
        .map_err(|e| PushError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("Internal error: {e}")))?
        .ok_or_else(|| unauthorized("the session has ended"))?;
    if stored.token_expires_at < now {
        return Err(unauthorized("the token has expired"));
    }
    if known.agent_id != agent_id {
        return Err(PushError::new(StatusCode::FORBIDDEN, "ownership required"));
    }
    Ok(Authenticated {
        session_id: session_id.to_owned(),
        tenant: known.tenant,
    })
}
