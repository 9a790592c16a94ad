//! The pull loop: every enrolled agent in a polling state is asked for a quote every
//! `quote_interval` over mTLS (our client certificate; trust in exactly the agent's
//! enrolled `mtls_cert`), and the answer goes through the attestation pipeline. The state
//! lives in the store after every round, so a restarted verifier resumes incrementally, and
//! a round writes back only to an agent that still exists (a DELETE is never undone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::modules::resolve;
use super::notify;
use super::pipeline::{AttestationInput, Failure, ImaInput, attest, parse_tpm_policy, stored_source};
use super::severity::Verdict;
use super::{Verifier, VerifierConfig};
use crate::evidence::ima::{ImaPosition, ImaState, Resume, resume};
use crate::evidence::{ClockInfo, HashAlg, PublicArea, Quote};
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

/// Whether the pull loop attests this agent: the polling states, and INVALID_QUOTE after a
/// failure that the severity policy lets polling survive.
fn polls(agent: &VerifierAgent) -> bool {
    if agent.push {
        return false;
    }
    match agent.operational_state {
        state::START
        | state::GET_QUOTE
        | state::GET_QUOTE_RETRY
        | state::PROVIDE_V
        | state::PROVIDE_V_RETRY => true,
        state::INVALID_QUOTE => agent.polls_after_failure,
        _ => false,
    }
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
                    if polls(&agent) && !running.contains_key(&agent.agent_id) {
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
    let keeps_polling = polls(&agent);
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

fn client_for(
    tls: &AgentTls,
    config: &VerifierConfig,
    agent: &VerifierAgent,
) -> Result<reqwest::Client, String> {
    let pem = agent.mtls_cert.as_deref().ok_or("no mtls_cert enrolled")?;
    let pinned = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| format!("mtls_cert: {e}"))?;
    let identity =
        reqwest::Identity::from_pem(&tls.identity_pem).map_err(|e| format!("client identity: {e}"))?;
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([pinned])
        .identity(identity)
        .timeout(config.request_timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// Agent API versions the verifier speaks to pull agents (Keylime's agents serve 2.1–2.6).
const AGENT_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
const CURRENT_AGENT_VERSION: &str = "2.6";

fn version_key(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn base_url(agent: &VerifierAgent) -> String {
    format!(
        "https://{}:{}",
        agent.ip.as_deref().unwrap_or("127.0.0.1"),
        agent.port.unwrap_or(9002)
    )
}

/// Asks the agent's `GET /version` and picks the newest API version both sides speak
/// (`supported_versions`, or the single `supported_version` of older agents).
async fn negotiate(client: &reqwest::Client, agent: &VerifierAgent) -> Result<String, String> {
    let answer = client
        .get(format!("{}/version", base_url(agent)))
        .send()
        .await
        .map_err(|e| format!("GET /version: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("GET /version answered {}", answer.status()));
    }
    let body: Value = answer.json().await.map_err(|e| format!("GET /version: {e}"))?;
    let results = &body["results"];
    let offered: Vec<&str> = match results["supported_versions"].as_array() {
        Some(list) => list.iter().filter_map(Value::as_str).collect(),
        None => results["supported_version"].as_str().into_iter().collect(),
    };
    offered
        .iter()
        .copied()
        .filter(|v| AGENT_VERSIONS.contains(v))
        .max_by_key(|v| version_key(v))
        .map(str::to_owned)
        .ok_or_else(|| format!("the agent offers no API version we speak: {offered:?}"))
}

/// Whether to move from the `refused` version (empty: none yet) to the agent's `chosen`
/// one: not to the same one again, and never down once the agent has attested.
fn switch_version(refused: &str, chosen: &str, attested: bool) -> Result<(), String> {
    if chosen == refused {
        return Err(format!(
            "the agent refused API {refused} which its /version offers"
        ));
    }
    if attested && !refused.is_empty() && version_key(chosen) < version_key(refused) {
        return Err(format!(
            "the agent refused API {refused} and offers only {chosen}; no downgrade after a successful attestation"
        ));
    }
    Ok(())
}

/// What came back for a quote request.
enum Answer {
    Quote(Value),
    /// Keylime retries these: timeouts, 500 and connection errors.
    Unreachable(String),
    /// 400 "API version not supported": negotiate and retry.
    VersionNotSupported,
    /// Any other refusal is final.
    Refused(String),
}

async fn request(client: &reqwest::Client, url: &str) -> Answer {
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Unreachable(e.to_string()),
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match status.as_u16() {
        200 => Answer::Quote(body),
        408 | 500 => Answer::Unreachable(format!("the agent answered {status}")),
        400 if body["status"]
            .as_str()
            .is_some_and(|s| s.contains("API version not supported")) =>
        {
            Answer::VersionNotSupported
        }
        _ => Answer::Refused(format!("the agent answered {status}")),
    }
}

/// Keylime's event of the verifier's own failures (`internal.verifier.*`).
fn internal(event: &str, message: impl Into<String>) -> Vec<Failure> {
    fail(&format!("internal.verifier.{event}"), message)
}

/// Applies the severity policy to a round's failures: the agent enters `to`, its severity
/// only rises; returns the verdict when it rose (the event to notify) and whether polling
/// goes on.
fn judge(
    verifier: &Verifier,
    agent: &mut VerifierAgent,
    failures: Vec<Failure>,
    to: i64,
) -> (Option<Verdict>, bool) {
    let Some(verdict) = verifier.config.severity.judge(&failures) else {
        return (None, true);
    };
    agent.operational_state = to;
    agent.polls_after_failure = to == state::INVALID_QUOTE && !verdict.stops;
    agent.last_failures = failures.into_iter().map(|f| (f.event_id, f.context)).collect();
    let rose = agent.severity_level.is_none_or(|level| level < verdict.level);
    if rose {
        agent.severity_level = Some(verdict.level);
        agent.last_event_id = Some(verdict.event.event_id.clone());
    }
    let goes_on = !verdict.stops;
    (rose.then_some(verdict), goes_on)
}

/// Ends polling with the agent FAILED, telling agents and the webhook (`comm_error`) when
/// an agent that had attested becomes unreachable.
async fn give_up(
    verifier: &Verifier,
    tls: &AgentTls,
    mut agent: VerifierAgent,
    round_state: i64,
    failures: Vec<Failure>,
) {
    let unreachable = failures
        .first()
        .is_some_and(|f| f.event_id == "internal.verifier.not_reachable");
    let (verdict, _) = judge(verifier, &mut agent, failures, state::FAILED);
    if let Some(verdict) = verdict.filter(|_| unreachable && agent.attestation_count > 0) {
        tokio::spawn(send_notification(
            verifier.clone(),
            tls.clone(),
            agent.clone(),
            "comm_error",
            verdict,
        ));
    }
    save(verifier, agent, round_state).await;
}

async fn poll_agent(verifier: Verifier, tls: AgentTls, retries: Retries, id: String) {
    let mut attempts = 0u32;
    let mut connection: Option<(Option<String>, reqwest::Client)> = None;
    loop {
        let Some(mut agent) = load(&verifier, &id).await else {
            return;
        };
        if !polls(&agent) {
            return;
        }
        let round_state = agent.operational_state;
        let started = std::time::Instant::now();
        // One client per agent while its certificate stays: its connection is kept alive
        // between rounds instead of a TLS handshake per quote.
        let client = match &connection {
            Some((cert, client)) if *cert == agent.mtls_cert => client.clone(),
            _ => match client_for(&tls, &verifier.config, &agent) {
                Ok(c) => {
                    connection = Some((agent.mtls_cert.clone(), c.clone()));
                    c
                }
                Err(why) => {
                    give_up(&verifier, &tls, agent, round_state, internal("agent_tls", why)).await;
                    return;
                }
            },
        };
        let answer = match agent.supported_version.clone() {
            Some(version) => {
                let nonce = nonce();
                let mask = parse_mask(&agent.tpm_policy);
                // The NK key is asked for until it is known, and again after retries.
                let partial = u8::from(
                    agent.public_key.is_some()
                        && matches!(round_state, state::GET_QUOTE | state::INVALID_QUOTE),
                );
                let url = format!(
                    "{}/v{version}/quotes/integrity?nonce={nonce}&mask={mask}&partial={partial}&ima_ml_entry={}",
                    base_url(&agent),
                    agent.next_ima_ml_entry
                );
                (request(&client, &url).await, nonce, version)
            }
            // Enrolled without a version (or one we do not speak): ask the agent first.
            None => (Answer::VersionNotSupported, String::new(), String::new()),
        };
        let (answer, nonce, version) = answer;
        let results = match answer {
            Answer::Quote(body) => body.get("results").cloned().unwrap_or(Value::Null),
            Answer::VersionNotSupported => match negotiate(&client, &agent).await {
                Ok(chosen) => match switch_version(&version, &chosen, agent.attestation_count > 0) {
                    Ok(()) => {
                        tracing::info!(agent_id = %id, version = %chosen, "agent API version negotiated");
                        agent.supported_version = Some(chosen);
                        if !save(&verifier, agent, round_state).await {
                            return;
                        }
                        continue;
                    }
                    Err(why) => {
                        let failure = internal("version_not_supported", why);
                        give_up(&verifier, &tls, agent, round_state, failure).await;
                        return;
                    }
                },
                Err(why) if version.is_empty() => {
                    // Not even /version answered: treat as unreachable and retry.
                    tracing::warn!(agent_id = %id, %why, "version negotiation failed");
                    if !retry(&verifier, &tls, retries, &mut attempts, agent, round_state).await {
                        return;
                    }
                    continue;
                }
                Err(why) => {
                    give_up(
                        &verifier,
                        &tls,
                        agent,
                        round_state,
                        internal("version_not_supported", why),
                    )
                    .await;
                    return;
                }
            },
            Answer::Unreachable(why) => {
                tracing::warn!(agent_id = %id, %why, "agent unreachable");
                verifier
                    .metrics
                    .count(crate::metrics::AGENT_ERRORS, &[("reason", "unreachable")]);
                if !retry(&verifier, &tls, retries, &mut attempts, agent, round_state).await {
                    return;
                }
                continue;
            }
            Answer::Refused(why) => {
                tracing::warn!(agent_id = %id, %why, "quote request refused");
                verifier
                    .metrics
                    .count(crate::metrics::AGENT_ERRORS, &[("reason", "refused")]);
                give_up(&verifier, &tls, agent, round_state, internal("no_quote", why)).await;
                return;
            }
        };
        attempts = 0;
        let v = verifier.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let outcome = check_round(&v, &mut agent, &results, &nonce);
            (agent, outcome)
        })
        .await;
        let Ok((mut agent, failures)) = checked else {
            return;
        };
        verifier.record_verdict("pull", started.elapsed(), &failures);
        agent.last_received_quote = crate::clock::unix_now();
        if failures.is_empty() {
            agent.operational_state = state::GET_QUOTE;
            agent.polls_after_failure = false;
            agent.attestation_count += 1;
            agent.last_successful_attestation = agent.last_received_quote;
            agent.last_failures.clear();
            if !agent.v_delivered {
                agent.v_delivered = deliver_v(&client, &agent, &version).await;
            }
        } else {
            tracing::warn!(agent_id = %id, failures = ?failures.iter().map(|f| &f.event_id).collect::<Vec<_>>(), "attestation failed");
            let (verdict, _) = judge(&verifier, &mut agent, failures, state::INVALID_QUOTE);
            if let Some(verdict) = verdict {
                tokio::spawn(send_notification(
                    verifier.clone(),
                    tls.clone(),
                    agent.clone(),
                    "revocation",
                    verdict,
                ));
            }
        }
        if !save(&verifier, agent, round_state).await {
            return;
        }
        tokio::time::sleep(Duration::from_secs_f64(verifier.config.quote_interval)).await;
    }
}

/// One more failed attempt to reach the agent: GET_QUOTE_RETRY after Keylime's backoff
/// (2, 4, 8, … s), or FAILED after `max_retries`. Returns whether polling goes on.
async fn retry(
    verifier: &Verifier,
    tls: &AgentTls,
    retries: Retries,
    attempts: &mut u32,
    mut agent: VerifierAgent,
    round_state: i64,
) -> bool {
    *attempts += 1;
    if *attempts > retries.max {
        let why = format!("agent was not reachable from verifier in {} attempts", *attempts);
        give_up(verifier, tls, agent, round_state, internal("not_reachable", why)).await;
        return false;
    }
    agent.operational_state = state::GET_QUOTE_RETRY;
    if !save(verifier, agent, round_state).await {
        return false;
    }
    let backoff = retries
        .interval
        .saturating_mul(2u32.saturating_pow(*attempts - 1));
    tokio::time::sleep(backoff.min(Duration::from_secs(60))).await;
    true
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

/// Keylime's algorithm acceptance: exact, or equal after the agent's aliases (`rsa` is
/// `rsa2048`, `ecc` is `ecc256`; agents say the latter from API 2.5 on).
fn accepted(algorithm: &str, accept: &[String]) -> bool {
    fn normalise(a: &str) -> &str {
        match a {
            "rsa" => "rsa2048",
            "ecc" => "ecc256",
            other => other,
        }
    }
    !algorithm.is_empty()
        && accept
            .iter()
            .any(|a| a == algorithm || normalise(a) == normalise(algorithm))
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
    let enc_alg = text("enc_alg").unwrap_or_default();
    if !accepted(enc_alg, &agent.accept_tpm_encryption_algs) {
        return fail(
            "qoute_validation.invalid_enc_alg",
            format!("TPM Quote is using an unaccepted encryption algorithm: {enc_alg}"),
        );
    }
    let sign_alg = text("sign_alg").unwrap_or_default();
    if !accepted(sign_alg, &agent.accept_tpm_signing_algs) {
        return fail(
            "qoute_validation.invalid_sign_alg",
            format!("TPM Quote is using an unaccepted signing algorithm: {sign_alg}"),
        );
    }
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
            agent.tpm_clock = None;
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
        .and_then(|r| resolve(verifier, PolicyKind::Runtime, &r.module).ok());
    let runtime_input = runtime
        .as_ref()
        .zip(runtime_module.as_deref())
        .and_then(|(record, module)| stored_source(record, module))
        .zip(list)
        .map(|(policy, list)| ImaInput {
            policy,
            list,
            from: from.clone(),
            start_offset: answered,
            prior_state,
        });
    let mb_log = text("mb_measurement_list").and_then(|b| B64.decode(b).ok());
    let mb_module = mb
        .as_ref()
        .and_then(|r| resolve(verifier, PolicyKind::MeasuredBoot, &r.module).ok());
    let mb_input = mb
        .as_ref()
        .zip(mb_module.as_deref())
        .and_then(|(record, module)| stored_source(record, module))
        .zip(mb_log.as_deref());
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
        match clock_regression(agent.tpm_clock, &verified.clock_info) {
            Some(why) => failures.push(Failure {
                event_id: "qoute_validation.quote_validation".into(),
                context: json!({"message": "Validation of clockinfo from quote", "data": why}),
            }),
            None => {
                let c = &verified.clock_info;
                agent.tpm_clock = Some((c.clock, c.reset_count, c.restart_count));
            }
        }
        agent.hash_alg = hash.name().to_owned();
        agent.enc_alg = enc_alg.to_owned();
        agent.sign_alg = sign_alg.to_owned();
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

/// Keylime's TPM clock rules between two quotes of one boot: the reset and restart counts
/// never decrease, the clock is `safe`, and it moves forward unless both counts rose.
fn clock_regression(previous: Option<(u64, u32, u32)>, now: &ClockInfo) -> Option<&'static str> {
    if let Some((clock, reset_count, restart_count)) = previous {
        if now.reset_count < reset_count {
            return Some("resetCount value decreased on TPM between two consecutive quotes");
        }
        if now.restart_count < restart_count {
            return Some("restartCount value decreased on TPM between two consecutive quotes");
        }
        if !now.safe {
            return Some("clock safe flag is disabled");
        }
        let both_rose = now.reset_count > reset_count && now.restart_count > restart_count;
        if !both_rose && now.clock <= clock {
            return Some("the TPM clock did not advance between two consecutive quotes");
        }
        return None;
    }
    (!now.safe).then_some("clock safe flag is disabled")
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
    let url = format!("{}/v{version}/keys/vkey", base_url(agent));
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

/// Signs a notification (`revocation` or `comm_error`) about `failed` and sends it to every
/// enrolled agent (Keylime notifies them all, the failing one included) and to the webhook,
/// if one is set.
async fn send_notification(
    verifier: Verifier,
    tls: AgentTls,
    failed: VerifierAgent,
    kind: &'static str,
    verdict: Verdict,
) {
    let message = match notify::revocation(
        &failed,
        kind,
        &verdict.event.event_id,
        &verdict.label,
        &verdict.event.context,
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
        let Ok(client) = client_for(&tls, &verifier.config, &agent) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(clock: u64, reset_count: u32, restart_count: u32, safe: bool) -> ClockInfo {
        ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe,
        }
    }

    #[test]
    fn the_tpm_clock_must_move_forward_within_a_boot() {
        assert_eq!(clock_regression(None, &clock(5, 1, 0, true)), None);
        assert!(clock_regression(None, &clock(5, 1, 0, false)).is_some());
        assert_eq!(clock_regression(Some((5, 1, 0)), &clock(6, 1, 0, true)), None);
        assert!(clock_regression(Some((5, 1, 0)), &clock(5, 1, 0, true)).is_some());
        assert!(clock_regression(Some((5, 1, 0)), &clock(9, 0, 0, true)).is_some());
        assert!(clock_regression(Some((5, 1, 2)), &clock(9, 1, 1, true)).is_some());
        assert!(clock_regression(Some((5, 1, 0)), &clock(9, 1, 0, false)).is_some());
        // Both counts rose: the clock may have been reset.
        assert_eq!(clock_regression(Some((5, 1, 0)), &clock(1, 2, 1, true)), None);
    }

    #[test]
    fn algorithm_aliases_are_accepted_both_ways() {
        let accept = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(accepted("rsa2048", &accept(&["ecc", "rsa"])));
        assert!(accepted("rsa", &accept(&["rsa2048"])));
        assert!(accepted("ecc256", &accept(&["ecc"])));
        assert!(!accepted("ecc384", &accept(&["ecc"])));
        assert!(!accepted("rsassa", &accept(&["ecschnorr"])));
        assert!(!accepted("", &accept(&[""])));
    }

    #[test]
    fn a_version_switch_never_repeats_nor_downgrades_an_attested_agent() {
        assert_eq!(switch_version("", "2.6", false), Ok(()));
        assert_eq!(switch_version("2.6", "2.3", false), Ok(()));
        assert!(switch_version("2.6", "2.3", true).is_err());
        assert!(switch_version("2.3", "2.3", false).is_err());
        assert_eq!(switch_version("2.3", "2.6", true), Ok(()));
    }

    #[test]
    fn the_newest_common_version_is_chosen() {
        let mut offered = ["2.1", "2.10", "2.6", "3.0"]
            .into_iter()
            .filter(|v| AGENT_VERSIONS.contains(v))
            .collect::<Vec<_>>();
        offered.sort_by_key(|v| version_key(v));
        assert_eq!(offered.last(), Some(&"2.6"));
        assert!(version_key("2.10") > version_key("2.9"));
    }
}
