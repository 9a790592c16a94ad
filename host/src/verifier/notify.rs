//! What the verifier sends agents besides quote requests: the V half of the bootstrap key
//! after the first good quote (RSA-OAEP-SHA1 to the agent's NK key), and signed revocation
//! messages when an attestation fails (keylime-api.md §5.4 and §8).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaKeyPair, RsaPssSaltLength, RsaSignatureEncoding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use std::sync::Arc;

use super::severity::Verdict;
use super::{Verifier, VerifierConfig};
use crate::store::VerifierAgent;

/// Keylime's `crypto.rsa_sign`: RSA-PSS, MGF1-SHA256, with the longest salt the key allows
/// (`PSS.MAX_LENGTH`, 222 bytes for RSA-2048). Keylime's Rust agent verifies with that
/// length exactly (OpenSSL 3), so a digest-length salt is refused there.
const KEYLIME_PSS: RsaSignatureEncoding = RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);

/// How the verifier reaches agents: its client identity (PEM certificate and key).
#[derive(Clone)]
pub struct AgentTls {
    pub identity_pem: Arc<Vec<u8>>,
}

/// A client for one agent: our identity, and trust in exactly its enrolled `mtls_cert`.
pub fn agent_client(
    tls: &AgentTls,
    config: &VerifierConfig,
    agent: &VerifierAgent,
) -> Result<reqwest::Client, String> {
    let pem = agent.mtls_cert.as_deref().ok_or("no mtls_cert enrolled")?;
    crate::net::pinned::agent_client(pem, &tls.identity_pem, config.request_timeout)
        .map_err(|e| e.to_string())
}

use super::poller::{CURRENT_AGENT_VERSION, base_url};

/// if one is set.
pub async fn send(
    verifier: Verifier,
    tls: AgentTls,
    failed: VerifierAgent,
    kind: &'static str,
    verdict: Verdict,
) {
    let message = match revocation(
        &failed,
        kind,
        &verdict.event.event_id,
        &verdict.label,
        &verdict.event.context,
        &asctime_now(),
    ) {
        Ok(m) => m,
        Err(why) => {
            tracing::warn!(agent_id = %failed.agent_id, %why, "cannot sign the revocation message");
            return;
        }
    };
    if let Some(url) = &verifier.config.revocation_webhook {
        match reqwest::Client::builder()
            .no_proxy()
            .timeout(verifier.config.request_timeout)
            .build()
        {
            Ok(client) => match client.post(url).json(&message).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(agent_id = %failed.agent_id, kind, "notification sent to the webhook")
                }
                Ok(r) => tracing::warn!(status = %r.status(), "the revocation webhook refused the message"),
                Err(e) => tracing::warn!(error = %e, "the revocation webhook is unreachable"),
            },
            Err(e) => tracing::warn!(error = %e, "no HTTP client for the webhook"),
        }
    }
    let store = verifier.store.clone();
    let Ok(Ok(agents)) = tokio::task::spawn_blocking(move || store.agents()).await else {
        return;
    };
    for agent in agents {
        let Ok(client) = agent_client(&tls, &verifier.config, &agent) else {
            continue;
        };
        let version = agent
            .supported_version
            .as_deref()
            .unwrap_or(CURRENT_AGENT_VERSION);
        let url = format!("{}/v{version}/notifications/revocation", base_url(&agent));
        if let Err(e) = client.post(url).json(&message).send().await {
            tracing::warn!(agent_id = %agent.agent_id, error = %e, "revocation not delivered");
        }
    }
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .ok()
        .map(|(_, p)| p.contents)
}

/// `{"encrypted_key": b64(RSA-OAEP-SHA1(NK, V))}` for `POST /keys/vkey`.
pub fn vkey_body(nk_pem: &str, v_b64: &str) -> Result<Value, String> {
    let v = B64.decode(v_b64).map_err(|e| format!("stored V: {e}"))?;
    let der = pem_der(nk_pem).ok_or("the agent's public key is not PEM")?;
    let key = PublicEncryptingKey::from_der(&der).map_err(|e| format!("the agent's public key: {e}"))?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| "the agent's public key is not an RSA key")?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let encrypted = key
        .encrypt(&OAEP_SHA1_MGF1SHA1, &v, &mut out, None)
        .map_err(|_| "RSA-OAEP encryption of V failed")?;
    Ok(json!({"encrypted_key": B64.encode(encrypted)}))
}

/// A revocation (or `comm_error`) message: `{"msg": <JSON text>, "signature": b64(RSA-PSS-SHA256(msg))}`,
/// signed with the agent's enrolled `revocation_key` (empty key: empty signature).
pub fn revocation(
    agent: &VerifierAgent,
    kind: &str,
    event_id: &str,
    severity_label: &str,
    context: &Value,
    event_time: &str,
) -> Result<Value, String> {
    let msg = json!({
        "type": kind,
        "ip": agent.ip,
        "agent_id": agent.agent_id,
        "port": agent.port,
        "tpm_policy": agent.tpm_policy,
        "meta_data": agent.meta_data,
        "event_time": event_time,
        "event_id": event_id,
        "severity_label": severity_label,
        "context": context.to_string(),
    })
    .to_string();
    let signature = if agent.revocation_key.is_empty() {
        String::new()
    } else {
        let der = pem_der(&agent.revocation_key).ok_or("revocation_key is not PEM")?;
        let key = RsaKeyPair::from_der(&der)
            .or_else(|_| RsaKeyPair::from_pkcs8(&der))
            .map_err(|e| format!("revocation_key: {e}"))?;
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(&KEYLIME_PSS, &SystemRandom::new(), msg.as_bytes(), &mut sig)
            .map_err(|_| "signing the revocation message failed")?;
        B64.encode(sig)
    };
    Ok(json!({"msg": msg, "signature": signature}))
}

/// `time.asctime()` of now in UTC, Keylime's `event_time`.
pub fn asctime_now() -> String {
    crate::clock::Utc::now().asctime()
}
