//! What the verifier sends agents besides quote requests: the V half of the bootstrap key
//! after the first good quote (RSA-OAEP-SHA1 to the agent's NK key), and signed revocation
//! messages when an attestation fails (keylime-api.md §5.4 and §8).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaKeyPair, RsaPssSaltLength, RsaSignatureEncoding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use std::sync::Arc;
use std::time::Duration;

use super::poller::agent_base;
use super::severity::Verdict;
use super::{Verifier, VerifierConfig};
use crate::agent_client::{AgentClient, CURRENT_AGENT_VERSION};
use crate::store::VerifierAgent;

/// Keylime's `crypto.rsa_sign`: RSA-PSS, MGF1-SHA256, with the longest salt the key allows
/// (`PSS.MAX_LENGTH`, 222 bytes for RSA-2048). Keylime's Rust agent verifies with that
/// length exactly (OpenSSL 3), so a digest-length salt is refused there.
const KEYLIME_PSS: RsaSignatureEncoding = RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);

/// How the verifier reaches agents and the revocation webhook: its client identity (PEM
/// certificate and key), and the webhook's client when revocations go to one.
#[derive(Clone)]
pub struct AgentTls {
    pub identity_pem: Arc<Vec<u8>>,
    pub webhook: Option<reqwest::Client>,
}

/// The revocation webhook's client, as Keylime's: the verifier's client certificate
/// (`cv_ca/client-cert.crt`, Keylime's `[verifier] client_cert`), and trust in `cv_ca`'s CA
/// (Keylime's default `trusted_server_ca`) besides the system's roots. Unlike Keylime it
/// checks the server's name, and keeps the URL's scheme (Keylime turns http into https).
pub fn webhook_client(
    identity_pem: &[u8],
    ca_pem: &[u8],
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .identity(reqwest::Identity::from_pem(identity_pem).map_err(|e| e.to_string())?)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).map_err(|e| e.to_string())?)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// Where revocations go, from `[revocations] enabled_revocation_notifications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    pub agents: bool,
    pub webhook: bool,
    /// Names zest does not offer (`zeromq`), to warn about.
    pub unknown: Vec<String>,
}

impl Channels {
    /// `listed` as Keylime reads it (`agent`, `webhook`), with one zest rule: when the list
    /// is still the built-in default (`['agent']`) and a webhook URL is set, the webhook is
    /// used too: whoever sets only `webhook_url` (or `--revocation-webhook`) means it.
    pub fn choose(listed: &[String], list_is_default: bool, webhook_url_set: bool) -> Self {
        let named = |name: &str| listed.iter().any(|c| c == name);
        Self {
            agents: named("agent"),
            webhook: named("webhook") || (list_is_default && webhook_url_set),
            unknown: listed
                .iter()
                .filter(|c| !["agent", "webhook"].contains(&c.as_str()))
                .cloned()
                .collect(),
        }
    }
}

/// Keylime's `retry.retry_time`: `base ** n` seconds when backing off exponentially with a
/// base above 1, else `base` each time; at most an hour.
pub fn retry_time(exponential: bool, base: Duration, n: u32) -> Duration {
    let base = base.as_secs_f64();
    let secs = if exponential && base > 1.0 {
        base.powi(i32::try_from(n).unwrap_or(i32::MAX))
    } else {
        base
    };
    Duration::try_from_secs_f64(secs)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs(3600))
}

/// POSTs `message` to the webhook until it answers 200 or 202 (Keylime's success codes), at
/// most `max_retries` times (5 when 0), waiting [`retry_time`] between tries. Unlike
/// Keylime, an unreachable webhook is tried again too: a webhook briefly down is the common
/// case.
async fn deliver_to_webhook(
    client: reqwest::Client,
    url: String,
    message: Value,
    config: Arc<VerifierConfig>,
    agent_id: String,
) {
    let attempts = if config.max_retries == 0 {
        5
    } else {
        config.max_retries
    };
    for attempt in 0..attempts {
        match client.post(&url).json(&message).send().await {
            Ok(r) if matches!(r.status().as_u16(), 200 | 202) => {
                tracing::info!(%agent_id, "revocation delivered to the webhook");
                return;
            }
            Ok(r) => {
                tracing::warn!(%agent_id, status = %r.status(), attempt = attempt + 1, "the revocation webhook refused the message")
            }
            Err(e) => {
                tracing::warn!(%agent_id, error = %e, attempt = attempt + 1, "the revocation webhook is unreachable")
            }
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(retry_time(
                config.exponential_backoff,
                config.retry_interval,
                attempt,
            ))
            .await;
        }
    }
    tracing::error!(%agent_id, attempts, "revocation not delivered to the webhook");
}

/// A client for one agent: our identity, and trust in exactly its enrolled `mtls_cert`.
pub fn agent_client(
    tls: &AgentTls,
    config: &VerifierConfig,
    agent: &VerifierAgent,
) -> Result<AgentClient, String> {
    let pem = agent.mtls_cert.as_deref().ok_or("no mtls_cert enrolled")?;
    let (ip, port) = agent_base(agent);
    AgentClient::connect(ip, port, pem, &tls.identity_pem, config.request_timeout).map_err(|e| e.to_string())
}

/// Signs a revocation (or `comm_error`) message for the failed agent and sends it to every
/// agent and to the webhook, if one is set.
pub async fn send(
    verifier: Verifier,
    tls: AgentTls,
    failed: VerifierAgent,
    kind: &'static str,
    verdict: Verdict,
) {
    let config = &verifier.config;
    let to_webhook = config.notify_webhook && config.revocation_webhook.is_some();
    if !(config.notify_agents || to_webhook) {
        return;
    }
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
    // The webhook in its own task, as Keylime's thread: its retries delay no agent.
    if config.notify_webhook
        && let (Some(url), Some(client)) = (&config.revocation_webhook, &tls.webhook)
    {
        tokio::spawn(deliver_to_webhook(
            client.clone(),
            url.clone(),
            message.clone(),
            config.clone(),
            failed.agent_id.clone(),
        ));
    }
    if !config.notify_agents {
        return;
    }
    let store = verifier.store.clone();
    let Ok(Ok(agents)) = tokio::task::spawn_blocking(move || store.agents()).await else {
        return;
    };
    // Every agent at once, within Keylime's minute: one slow agent delays none of the others.
    let mut deliveries = tokio::task::JoinSet::new();
    for agent in agents {
        let Ok(client) = agent_client(&tls, config, &agent) else {
            continue;
        };
        let version = agent
            .supported_version
            .as_deref()
            .unwrap_or(CURRENT_AGENT_VERSION);
        let url = client.url(version, "notifications/revocation");
        let message = message.clone();
        deliveries.spawn(async move {
            if let Err(e) = client.http().post(url).json(&message).send().await {
                tracing::warn!(agent_id = %agent.agent_id, error = %e, "revocation not delivered");
            }
        });
    }
    let all = async { while deliveries.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(60), all).await.is_err() {
        tracing::warn!("revocations to some agents were still being sent after 60 s: given up");
    }
}

/// The RSA key of an enrolled `revocation_key` (PKCS#1 or PKCS#8 PEM).
pub(super) fn signing_key(pem: &str) -> Result<RsaKeyPair, String> {
    let der = pem_der(pem).ok_or("revocation_key is not PEM")?;
    RsaKeyPair::from_der(&der)
        .or_else(|_| RsaKeyPair::from_pkcs8(&der))
        .map_err(|e| format!("revocation_key: {e}"))
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .ok()
        .map(|(_, p)| p.contents)
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
        let key = signing_key(&agent.revocation_key)?;
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(&KEYLIME_PSS, &SystemRandom::new(), msg.as_bytes(), &mut sig)
            .map_err(|_| "signing the revocation message failed")?;
        B64.encode(sig)
    };
    Ok(json!({"msg": msg, "signature": signature}))
}

/// `time.asctime()` of now in UTC, Keylime's `event_time`.
pub fn asctime_now() -> String {
    crate::clock::asctime_now()
}

#[cfg(test)]
mod tests {
    use super::Channels;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn channels_follow_enabled_revocation_notifications() {
        let keylime_default = Channels::choose(&names(&["agent"]), true, false);
        assert!(keylime_default.agents && !keylime_default.webhook);
        // Set in a file as Keylime writes it: the webhook stays off without 'webhook'.
        let listed = Channels::choose(&names(&["agent"]), false, true);
        assert!(listed.agents && !listed.webhook);
        let only_webhook = Channels::choose(&names(&["webhook"]), false, true);
        assert!(!only_webhook.agents && only_webhook.webhook);
        let none = Channels::choose(&[], false, true);
        assert!(!none.agents && !none.webhook);
        // zest's rule: the default list with a webhook URL uses the webhook too.
        let url_only = Channels::choose(&names(&["agent"]), true, true);
        assert!(url_only.agents && url_only.webhook);
        let zeromq = Channels::choose(&names(&["zeromq", "agent"]), false, false);
        assert_eq!(zeromq.unknown, ["zeromq"]);
    }
}
