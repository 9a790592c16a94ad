//! The pull loop: every enrolled agent in a polling state is asked for a quote every
//! `quote_interval` over mTLS (our client certificate; trust in exactly the agent's
//! enrolled `mtls_cert`), and the answer goes through the attestation pipeline. The state
//! lives in the store after every round, so a restarted verifier resumes incrementally, and
//! a round writes back only to an agent that still exists (a DELETE is never undone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::Verifier;
use super::notify;
use super::pipeline::{AttestationInput, Failure, ImaInput, PolicyRef, attest, parse_tpm_policy};
use super::policies::module_bytes;
use crate::evidence::ima::{ImaPosition, ImaState, Resume, resume};
use crate::evidence::{HashAlg, PublicArea, Quote};
use crate::store::verifier::state;
use crate::store::{DEFAULT_TENANT, PolicyKind, VerifierAgent};
use crate::tpm::AttestationKey;

/// How the verifier reaches agents: its client identity (PEM certificate and key).
#[derive(Clone)]
pub struct AgentTls {
    pub identity_pem: Arc<Vec<u8>>,
}

/// Keylime's retry defaults: `max_retries`, `retry_interval` (backoff 2, 4, 8, … s).
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub max: u32,
    pub interval: Duration,
}

fn polls(operational_state: i64) -> bool {
    matches!(
        operational_state,
        state::START | state::GET_QUOTE | state::GET_QUOTE_RETRY | state::PROVIDE_V | state::PROVIDE_V_RETRY
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts the loop that keeps one polling task per agent in a polling state.
pub fn spawn(verifier: Verifier, tls: AgentTls, retries: Retries) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            running.retain(|_, task| !task.is_finished());
            let store = verifier.store.clone();
            if let Ok(Ok(agents)) = tokio::task::spawn_blocking(move || store.agents()).await {
                for agent in agents {
                    if polls(agent.operational_state) && !running.contains_key(&agent.agent_id) {
                        let task = tokio::spawn(poll_agent(
                            verifier.clone(),
                            tls.clone(),
                            retries,
                            agent.agent_id.clone(),
                        ));
                        running.insert(agent.agent_id, task);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn load(verifier: &Verifier, id: &str) -> Option<VerifierAgent> {
    let store = verifier.store.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || store.agent(&id))
        .await
        .ok()?
        .ok()?
}

/// Writes the agent back unless it was deleted, stopped or (re)started meanwhile by an
/// operator; returns whether polling may go on.
async fn save(verifier: &Verifier, agent: VerifierAgent, expected_state: i64) -> bool {
    let store = verifier.store.clone();
    let blocked: Vec<i64> = (0..=10).filter(|s| *s != expected_state).collect();
    let keeps_polling = polls(agent.operational_state);
    match tokio::task::spawn_blocking(move || store.update_agent(&agent, &blocked)).await {
        Ok(Ok(written)) => written && keeps_polling,
        _ => false,
    }
}

fn nonce() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    // The system RNG does not fail in practice; a zero nonce would only fail the round.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn client_for(tls: &AgentTls, agent: &VerifierAgent) -> Result<reqwest::Client, String> {
    let pem = agent.mtls_cert.as_deref().ok_or("no mtls_cert enrolled")?;
    let pinned = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| format!("mtls_cert: {e}"))?;
    let identity =
        reqwest::Identity::from_pem(&tls.identity_pem).map_err(|e| format!("client identity: {e}"))?;
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([pinned])
        .identity(identity)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

async fn poll_agent(verifier: Verifier, tls: AgentTls, retries: Retries, id: String) {
    let mut attempts = 0u32;
    loop {
        let Some(mut agent) = load(&verifier, &id).await else {
            return;
        };
        if !polls(agent.operational_state) {
            return;
        }
        let round_state = agent.operational_state;
        let client = match client_for(&tls, &agent) {
            Ok(c) => c,
            Err(why) => {
                agent.operational_state = state::FAILED;
                agent.last_failures = vec![("internal.agent_tls".into(), json!({"message": why}))];
                save(&verifier, agent, round_state).await;
                return;
            }
        };
        let nonce = nonce();
        let version = agent.supported_version.clone().unwrap_or_else(|| "2.2".into());
        let mask = parse_mask(&agent.tpm_policy);
        let partial = u8::from(agent.public_key.is_some() && round_state == state::GET_QUOTE);
        let url = format!(
            "https://{}:{}/v{version}/quotes/integrity?nonce={nonce}&mask={mask}&partial={partial}&ima_ml_entry={}",
            agent.ip.as_deref().unwrap_or("127.0.0.1"),
            agent.port.unwrap_or(9002),
            agent.next_ima_ml_entry
        );
        let answer = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            Ok(r) => {
                tracing::warn!(agent_id = %id, status = %r.status(), "quote request refused");
                None
            }
            Err(e) => {
                tracing::warn!(agent_id = %id, error = %e, "agent unreachable");
                None
            }
        };
        let Some(answer) = answer else {
            attempts += 1;
            if attempts > retries.max {
                agent.operational_state = state::FAILED;
                agent.last_failures = vec![(
                    "internal.no_quote".into(),
                    json!({"message": format!("no quote after {} attempts", attempts)}),
                )];
                save(&verifier, agent, round_state).await;
                return;
            }
            agent.operational_state = state::GET_QUOTE_RETRY;
            if !save(&verifier, agent, round_state).await {
                return;
            }
            let backoff = retries.interval.saturating_mul(2u32.saturating_pow(attempts - 1));
            tokio::time::sleep(backoff.min(Duration::from_secs(60))).await;
            continue;
        };
        attempts = 0;
        let results = answer.get("results").cloned().unwrap_or(Value::Null);
        let v = verifier.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let outcome = check_round(&v, &mut agent, &results, &nonce);
            (agent, outcome)
        })
        .await;
        let Ok((mut agent, failures)) = checked else {
            return;
        };
        agent.last_received_quote = now();
        if failures.is_empty() {
            agent.operational_state = state::GET_QUOTE;
            agent.attestation_count += 1;
            agent.last_successful_attestation = agent.last_received_quote;
            agent.last_failures.clear();
            if !agent.v_delivered {
                agent.v_delivered = deliver_v(&client, &agent, &version).await;
            }
        } else {
            if let Some(first) = failures.first() {
                tokio::spawn(send_revocation(
                    verifier.clone(),
                    tls.clone(),
                    agent.clone(),
                    first.clone(),
                ));
            }
            tracing::warn!(agent_id = %id, failures = ?failures.iter().map(|f| &f.event_id).collect::<Vec<_>>(), "attestation failed");
            // Keylime's default severity policy makes every failure final: polling stops.
            agent.operational_state = state::INVALID_QUOTE;
            agent.last_event_id = failures.first().map(|f| f.event_id.clone());
            agent.severity_level = Some(6);
            agent.last_failures = failures.into_iter().map(|f| (f.event_id, f.context)).collect();
        }
        if !save(&verifier, agent, round_state).await {
            return;
        }
        tokio::time::sleep(Duration::from_secs_f64(verifier.config.quote_interval)).await;
    }
}

/// The `mask` of the enrolled `tpm_policy` (Keylime's tenant sets it), PCR 16 added.
fn parse_mask(tpm_policy: &str) -> String {
    let mask = serde_json::from_str::<Value>(tpm_policy)
        .ok()
        .and_then(|v| v["mask"].as_str().map(str::to_owned))
        .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    format!("0x{:x}", mask | (1 << 16))
}

fn fail(id: &str, message: impl Into<String>) -> Vec<Failure> {
    vec![Failure {
        event_id: id.into(),
        context: json!({"message": message.into()}),
    }]
}

/// Checks one answer of the agent and records what the next round needs in `agent`.
fn check_round(verifier: &Verifier, agent: &mut VerifierAgent, results: &Value, nonce: &str) -> Vec<Failure> {
    let text = |f: &str| results.get(f).and_then(Value::as_str);
    let Some(quote) = text("quote") else {
        return fail("qoute_validation.invalid_data", "the answer has no quote");
    };
    let Some(hash) = text("hash_alg")
        .and_then(HashAlg::from_name)
        .filter(|h| agent.accept_tpm_hash_algs.iter().any(|a| a == h.name()))
    else {
        return fail(
            "qoute_validation.invalid_hash_alg",
            format!("hash_alg {:?} is not accepted", text("hash_alg")),
        );
    };
    let Some(boottime) = results.get("boottime").and_then(Value::as_u64) else {
        return fail("qoute_validation.invalid_data", "boottime must be an integer");
    };
    if let Some(pubkey) = text("pubkey") {
        if agent.public_key.as_deref() != Some(pubkey) {
            agent.v_delivered = false;
        }
        agent.public_key = Some(pubkey.to_owned());
    }
    let Some(pubkey) = agent.public_key.clone() else {
        return fail(
            "qoute_validation.no_pubkey",
            "no public key of the agent is known",
        );
    };
    let quote = match Quote::from_keylime_string(quote) {
        Ok(q) => q,
        Err(e) => return fail("qoute_validation.quote_validation", e.to_string()),
    };
    let ak = match B64
        .decode(&agent.ak_tpm)
        .ok()
        .and_then(|b| PublicArea::from_tpm2b(&b).ok())
    {
        Some(public) => AttestationKey::new(public),
        None => return fail("internal.ak_tpm", "the enrolled ak_tpm does not parse"),
    };
    let tpm_policy = match parse_tpm_policy(&agent.tpm_policy) {
        Ok(p) => p,
        Err(e) => return fail("pcr_validation.invalid_tpm_policy", e),
    };
    let store = verifier.store.as_ref();
    let runtime = store
        .policy(PolicyKind::Runtime, &agent.runtime_policy)
        .ok()
        .flatten();
    let mb = store
        .policy(PolicyKind::MeasuredBoot, &agent.mb_policy)
        .ok()
        .flatten();

    // Incremental IMA: where this list starts and where its replay starts.
    let list = text("ima_measurement_list");
    let answered = results
        .get("ima_measurement_list_entry")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let saved = agent
        .pcr10
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .zip(agent.boottime)
        .map(|(pcr10, boot_time)| ImaState {
            position: ImaPosition {
                next_entry: agent.next_ima_ml_entry,
                pcr10,
            },
            boot_time,
        });
    let from = match resume(saved.as_ref(), agent.next_ima_ml_entry, answered, boottime) {
        Resume::FromSaved(position) => position,
        Resume::FromStart => {
            agent.ima_policy_state = None;
            ImaPosition::start(hash)
        }
        Resume::Rebooted => {
            // Keylime checks nothing this round and starts over with the next.
            agent.next_ima_ml_entry = 0;
            agent.pcr10 = None;
            agent.boottime = Some(boottime);
            agent.ima_policy_state = None;
            return Vec::new();
        }
        Resume::OffsetMismatch { requested, answered } => {
            return fail(
                "qoute_validation.invalid_ima_entry_nb",
                format!("asked for IMA entries from {requested}, got them from {answered}"),
            );
        }
    };
    let prior_state = agent.ima_policy_state.as_deref().and_then(|s| B64.decode(s).ok());
    let runtime_module = runtime
        .as_ref()
        .and_then(|r| module_bytes(PolicyKind::Runtime, &r.module).ok());
    let runtime_input = match (&runtime, runtime_module, list) {
        (Some(record), Some(module), Some(list)) => record.document.as_deref().map(|document| ImaInput {
            policy: PolicyRef {
                name: &record.name,
                module,
                document,
            },
            list,
            from: from.clone(),
            start_offset: answered,
            prior_state,
        }),
        _ => None,
    };
    let mb_log = text("mb_measurement_list").and_then(|b| B64.decode(b).ok());
    let mb_module = mb
        .as_ref()
        .and_then(|r| module_bytes(PolicyKind::MeasuredBoot, &r.module).ok());
    let mb_input = match (&mb, mb_module, &mb_log) {
        (Some(record), Some(module), Some(log)) => record.document.as_deref().map(|document| {
            (
                PolicyRef {
                    name: &record.name,
                    module,
                    document,
                },
                log.as_slice(),
            )
        }),
        _ => None,
    };
    let outcome = attest(
        &verifier.policies,
        &AttestationInput {
            tenant: DEFAULT_TENANT,
            quote: &quote,
            ak: &ak,
            nonce: nonce.as_bytes(),
            hash,
            tpm_policy: &tpm_policy,
            runtime: runtime_input,
            measured_boot: mb_input,
        },
    );
    let mut failures = outcome.failures;
    if let Some(verified) = &outcome.quote {
        // PCR 16 binds the agent's key: H(zeros ‖ H(public key PEM)).
        let expected = hash.digest(&[&vec![0u8; hash.digest_len()], &hash.digest(&[pubkey.as_bytes()])]);
        match verified.pcr(hash, 16) {
            None => failures.push(Failure {
                event_id: "pcr_validation.missing_pcr_16".into(),
                context: json!({"message": "PCR 16 is not in the quote"}),
            }),
            Some(value) if value != expected.as_slice() => failures.push(Failure {
                event_id: "pcr_validation.invalid_pcr_16".into(),
                context: json!({"context": "PCR 16 does not bind the agent's key", "got": hex::encode(value), "expected": hex::encode(&expected)}),
            }),
            Some(_) => {}
        }
        agent.hash_alg = hash.name().to_owned();
        agent.enc_alg = text("enc_alg").unwrap_or_default().to_owned();
        agent.sign_alg = text("sign_alg").unwrap_or_default().to_owned();
    }
    if failures.is_empty() {
        if let Some(next) = outcome.ima_next {
            agent.next_ima_ml_entry = next.next_entry;
            agent.pcr10 = Some(hex::encode(&next.pcr10));
            agent.boottime = Some(boottime);
        }
        agent.ima_policy_state = outcome.ima_state.map(|s| B64.encode(s));
    } else {
        // Keylime resets the incremental state on any failure.
        agent.next_ima_ml_entry = 0;
        agent.pcr10 = None;
        agent.ima_policy_state = None;
    }
    failures
}

/// Delivers V after a good quote (PROVIDE_V); true when done or when there is no V.
async fn deliver_v(client: &reqwest::Client, agent: &VerifierAgent, version: &str) -> bool {
    let (Some(v), Some(pubkey)) = (&agent.v, &agent.public_key) else {
        return true;
    };
    let body = match notify::vkey_body(pubkey, v) {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(agent_id = %agent.agent_id, %why, "cannot prepare V");
            return false;
        }
    };
    let url = format!(
        "https://{}:{}/v{version}/keys/vkey",
        agent.ip.as_deref().unwrap_or("127.0.0.1"),
        agent.port.unwrap_or(9002)
    );
    match client.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(agent_id = %agent.agent_id, "V delivered");
            true
        }
        Ok(r) => {
            tracing::warn!(agent_id = %agent.agent_id, status = %r.status(), "V delivery refused");
            false
        }
        Err(e) => {
            tracing::warn!(agent_id = %agent.agent_id, error = %e, "V delivery failed");
            false
        }
    }
}

/// Signs a revocation message for `failed` and sends it to every enrolled agent (Keylime
/// notifies them all, the failing one included) and to the webhook, if one is set.
async fn send_revocation(verifier: Verifier, tls: AgentTls, failed: VerifierAgent, failure: Failure) {
    let message = match notify::revocation(
        &failed,
        &failure.event_id,
        &failure.context,
        &notify::asctime_now(),
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
            .timeout(Duration::from_secs(30))
            .build()
        {
            Ok(client) => match client.post(url).json(&message).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(agent_id = %failed.agent_id, "revocation sent to the webhook")
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
        let Ok(client) = client_for(&tls, &agent) else {
            continue;
        };
        let version = agent.supported_version.clone().unwrap_or_else(|| "2.2".into());
        let url = format!(
            "https://{}:{}/v{version}/notifications/revocation",
            agent.ip.as_deref().unwrap_or("127.0.0.1"),
            agent.port.unwrap_or(9002)
        );
        if let Err(e) = client.post(url).json(&message).send().await {
            tracing::warn!(agent_id = %agent.agent_id, error = %e, "revocation not delivered");
        }
    }
}
