//! The pull loop: every enrolled agent in a polling state is asked for a quote every
//! `quote_interval` over mTLS (our client certificate; trust in exactly the agent's
//! enrolled `mtls_cert`), and the answer goes through the attestation pipeline. The state
//! lives in the store after every round, so a restarted verifier resumes incrementally, and
//! a round writes back only to an agent that still exists (a DELETE is never undone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::Verifier;
use super::notify::{self, AgentTls};
use super::pipeline::{
    Evidence, Expectations, Failure, Outcome, RoundResult, apply, evaluate, record_failures,
};
use super::wire::QuoteReply;
use crate::evidence::HashAlg;
use crate::store::VerifierAgent;
use crate::store::verifier::state;

/// Keylime's retry defaults: `max_retries`, `retry_interval` (backoff 2, 4, 8, … s).
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub max: u32,
    pub interval: Duration,
}

/// Pull agents whose round is in flight: from loading the record to writing it back.
/// Between rounds an agent is idle, and a DELETE removes it at once.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::HashSet<String>>);

/// One agent's round in flight; ends when dropped.
pub struct Round(Arc<InFlight>, String);

impl InFlight {
    pub fn begin(self: &Arc<Self>, id: &str) -> Round {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned());
        Round(self.clone(), id.to_owned())
    }

    pub fn busy(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        self.0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.1);
    }
}

/// Deletes an agent a DELETE marked TERMINATED while its round was in flight (Keylime's
/// `_complete_deletion_if_terminated`).
async fn complete_deletion(verifier: &Verifier, id: &str) {
    let store = verifier.store.clone();
    let agent_id = id.to_owned();
    let deleted = tokio::task::spawn_blocking(move || match store.agent(&agent_id) {
        Ok(Some(agent)) if agent.operational_state == state::TERMINATED => store.delete_agent(&agent_id),
        _ => Ok(false),
    })
    .await;
    if let Ok(Ok(true)) = deleted {
        verifier.tokens.forget_agent(id);
        tracing::info!(agent_id = %id, "agent deleted after its round");
    }
}

/// Whether the pull loop attests this agent: the polling states, and INVALID_QUOTE after a
/// failure that the severity policy lets polling survive.
fn polls(agent: &VerifierAgent) -> bool {
    polled(agent.push, agent.operational_state, agent.polls_after_failure)
}

fn polled(push: bool, operational_state: i64, polls_after_failure: bool) -> bool {
    if push {
        return false;
    }
    match operational_state {
        state::START
        | state::GET_QUOTE
        | state::GET_QUOTE_RETRY
        | state::PROVIDE_V
        | state::PROVIDE_V_RETRY => true,
        state::INVALID_QUOTE => polls_after_failure,
        _ => false,
    }
}

/// How often the poller looks for agents to start polling besides being woken
/// (`Verifier::poll_wakeup`) by this process's enrolments and reactivations: changes made by
/// another verifier on the same database, or straight in the database.
const RESCAN: Duration = Duration::from_secs(1);

/// Starts the loop that keeps one polling task per agent in a polling state.
pub fn spawn(verifier: Verifier, tls: AgentTls, retries: Retries) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            running.retain(|_, task| !task.is_finished());
            let store = verifier.store.clone();
            if let Ok(Ok(agents)) = tokio::task::spawn_blocking(move || store.agent_states()).await {
                for agent in agents {
                    // Marked for deletion while no round runs (its round ended, or the
                    // verifier restarted): finish the DELETE.
                    if agent.operational_state == state::TERMINATED && !running.contains_key(&agent.agent_id)
                    {
                        complete_deletion(&verifier, &agent.agent_id).await;
                        continue;
                    }
                    let polls = polled(agent.push, agent.operational_state, agent.polls_after_failure);
                    if polls && !running.contains_key(&agent.agent_id) {
                        let task = tokio::spawn(
                            poll_agent(verifier.clone(), tls.clone(), retries, agent.agent_id.clone())
                                .instrument(super::agent_span(&agent.agent_id, &agent.tenant)),
                        );
                        running.insert(agent.agent_id, task);
                    }
                }
            }
            // Ids and states only: a fleet of 10,000 read whole every 200 ms was 50,000
            // records parsed a second.
            tokio::select! {
                () = verifier.poll_wakeup.notified() => {}
                () = tokio::time::sleep(RESCAN) => {}
            }
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

/// Writes the agent back only if its record is still the one this round started from (no
/// stop, delete or re-enrolment meanwhile); returns whether polling may go on.
async fn save(verifier: &Verifier, agent: VerifierAgent, round_state: i64) -> bool {
    let store = verifier.store.clone();
    let keeps_polling = polls(&agent);
    let id = agent.agent_id.clone();
    match tokio::task::spawn_blocking(move || store.save_round(&agent, round_state)).await {
        Ok(Ok(true)) => keeps_polling,
        // The record changed meanwhile: a DELETE during the round finishes now.
        Ok(Ok(false)) => {
            complete_deletion(verifier, &id).await;
            false
        }
        _ => false,
    }
}

/// A fresh nonce; `None` when the system RNG fails (the round then fails: a constant nonce
/// would let old quotes replay).
fn nonce() -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(
        bytes
            .iter()
            .filter_map(|b| {
                ALPHABET
                    .get(usize::from(*b) % ALPHABET.len())
                    .copied()
                    .map(char::from)
            })
            .collect(),
    )
}

/// Agent API versions the verifier speaks to pull agents (Keylime's agents serve 2.1–2.6).
const AGENT_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
pub(super) const CURRENT_AGENT_VERSION: &str = "2.6";

fn version_key(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `https://ip:port` of a pull agent; an IPv6 address is bracketed.
pub(super) fn base_url(agent: &VerifierAgent) -> String {
    let ip = agent.ip.as_deref().unwrap_or("127.0.0.1");
    let port = agent.port.unwrap_or(9002);
    if ip.contains(':') && !ip.starts_with('[') {
        format!("https://[{ip}]:{port}")
    } else {
        format!("https://{ip}:{port}")
    }
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
    let offered: Vec<&str> = match body
        .pointer("/results/supported_versions")
        .and_then(Value::as_array)
    {
        Some(list) => list.iter().filter_map(Value::as_str).collect(),
        None => body
            .pointer("/results/supported_version")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
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
    /// A reply past `max_evidence_size`: the round fails.
    TooLarge(String),
}

async fn request(client: &reqwest::Client, url: &str, max_bytes: usize) -> Answer {
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Unreachable(e.to_string()),
    };
    let status = response.status();
    let body: Value = match read_capped(response, max_bytes).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(why) if status.as_u16() == 200 => return Answer::TooLarge(why),
        Err(_) => Value::Null,
    };
    match status.as_u16() {
        200 => Answer::Quote(body),
        408 | 500 => Answer::Unreachable(format!("the agent answered {status}")),
        400 if body
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("API version not supported")) =>
        {
            Answer::VersionNotSupported
        }
        _ => Answer::Refused(format!("the agent answered {status}")),
    }
}

/// The body of an agent's reply, read chunk by chunk up to `max_bytes`: a hostile agent's
/// endless reply costs the verifier no more than that.
async fn read_capped(mut response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(format!("the agent's reply is larger than {max_bytes} bytes"));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_bytes {
                    return Err(format!("the agent's reply is larger than {max_bytes} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the agent's reply: {e}")),
        }
    }
}

/// Keylime's event of the verifier's own failures (`internal.verifier.*`).
fn internal(event: &str, message: impl Into<String>) -> Failure {
    Failure::internal(event, message)
}

async fn poll_agent(verifier: Verifier, tls: AgentTls, retries: Retries, id: String) {
    let mut attempts = 0u32;
    let mut connection: Option<(Option<String>, reqwest::Client)> = None;
    loop {
        let round = verifier.rounds.begin(&id);
        let Some(agent) = load(&verifier, &id).await else {
            return;
        };
        if agent.operational_state == state::TERMINATED {
            drop(round);
            complete_deletion(&verifier, &id).await;
            return;
        }
        if !polls(&agent) {
            return;
        }
        let round_state = agent.operational_state;
        let started = std::time::Instant::now();
        // One client per agent while its certificate stays: its connection is kept alive
        // between rounds instead of a TLS handshake per quote.
        let client = match &connection {
            Some((cert, client)) if *cert == agent.mtls_cert => client.clone(),
            _ => match notify::agent_client(&tls, &verifier.config, &agent) {
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
        // Prepare: what the record demands decides what is asked for.
        let (v, a) = (verifier.clone(), agent.clone());
        let prepared = tokio::task::spawn_blocking(move || Expectations::of(&v, &a))
            .await
            .unwrap_or_else(|e| Err(internal("task", e.to_string())));
        let expect = match prepared {
            Ok(expect) => Arc::new(expect),
            Err(failure) => {
                let goes_on = fail_round(&verifier, &tls, agent, round_state, vec![failure]).await;
                if !goes_on {
                    return;
                }
                drop(round);
                pause(&verifier).await;
                continue;
            }
        };
        let Some(nonce) = nonce() else {
            let failure = internal("rng", "the system random number generator failed");
            if !fail_round(&verifier, &tls, agent, round_state, vec![failure]).await {
                return;
            }
            drop(round);
            pause(&verifier).await;
            continue;
        };
        let (answer, version) = match agent.supported_version.clone() {
            Some(version) => {
                let mask = quote_mask(&agent.tpm_policy, &expect.required_pcrs());
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
                (
                    request(&client, &url, verifier.config.max_evidence_size).await,
                    version,
                )
            }
            // Enrolled without a version (or one we do not speak): ask the agent first.
            None => (Answer::VersionNotSupported, String::new()),
        };
        let mut agent = agent;
        let body = match answer {
            Answer::Quote(body) => Ok(body),
            Answer::TooLarge(why) => Err(Failure::quote("invalid_data", why)),
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
                    drop(round);
                    if !retry(&verifier, &tls, retries, &mut attempts, agent, round_state).await {
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
            Answer::Unreachable(why) => {
                tracing::warn!(agent_id = %id, %why, "agent unreachable");
                crate::metrics::count(
                    &verifier.metrics.agent_errors,
                    &crate::metrics::ReasonLabel {
                        reason: "unreachable",
                    },
                );
                drop(round);
                if !retry(&verifier, &tls, retries, &mut attempts, agent, round_state).await {
                    return;
                }
                continue;
            }
            Answer::Refused(why) => {
                tracing::warn!(agent_id = %id, %why, "quote request refused");
                crate::metrics::count(
                    &verifier.metrics.agent_errors,
                    &crate::metrics::ReasonLabel { reason: "refused" },
                );
                give_up(&verifier, &tls, agent, round_state, internal("no_quote", why)).await;
                return;
            }
        };
        attempts = 0;
        let body = match body {
            Ok(body) => body,
            Err(failure) => {
                if !fail_round(&verifier, &tls, agent, round_state, vec![failure]).await {
                    return;
                }
                drop(round);
                pause(&verifier).await;
                continue;
            }
        };
        // Evaluate, then apply to the record this round started from.
        let v = verifier.clone();
        // The policies' own log lines carry the agent and its tenant.
        let span = tracing::Span::current();
        let judged = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let outcome = match reply_evidence(&agent, &body, &nonce) {
                Ok((evidence, algorithms)) => {
                    let outcome = evaluate(&v.policies, &expect, &evidence);
                    if outcome.quote.is_some() {
                        (agent.hash_alg, agent.enc_alg, agent.sign_alg) = algorithms;
                    }
                    outcome
                }
                Err(failure) => Outcome {
                    failures: vec![failure],
                    ..Outcome::default()
                },
            };
            let result = apply(&v.config, &mut agent, outcome, crate::clock::unix_now());
            (agent, result)
        })
        .await;
        let Ok((agent, result)) = judged else {
            return;
        };
        let failures = match &result {
            RoundResult::Fail { failures, .. } => failures.as_slice(),
            _ => &[],
        };
        verifier.record_verdict("pull", &agent.tenant, started.elapsed(), failures);
        let mut agent = agent;
        match result {
            RoundResult::Pass => {
                if !agent.v_delivered {
                    agent.v_delivered = deliver_v(&client, &agent, &version).await;
                }
            }
            RoundResult::Rebooted => {
                tracing::info!(agent_id = %id, "the agent rebooted: its next round starts over");
            }
            RoundResult::Fail { failures, notify, .. } => {
                tracing::warn!(agent_id = %id, failures = ?failures.iter().map(|f| &f.event_id).collect::<Vec<_>>(), "attestation failed");
                if let Some(verdict) = notify {
                    revoke(&verifier, &tls, &agent, verdict);
                }
            }
        }
        if !save(&verifier, agent, round_state).await {
            return;
        }
        drop(round);
        pause(&verifier).await;
    }
}

/// The wait between two rounds of one agent.
async fn pause(verifier: &Verifier) {
    tokio::time::sleep(Duration::from_secs_f64(verifier.config.quote_interval)).await;
}

/// Fails a round that could not be judged (the verifier's own error, an oversized reply);
/// returns whether polling goes on.
async fn fail_round(
    verifier: &Verifier,
    tls: &AgentTls,
    mut agent: VerifierAgent,
    round_state: i64,
    failures: Vec<Failure>,
) -> bool {
    tracing::warn!(agent_id = %agent.agent_id, tenant = %agent.tenant, failures = ?failures.iter().map(|f| &f.event_id).collect::<Vec<_>>(), "round not judged");
    verifier.record_verdict("pull", &agent.tenant, Duration::ZERO, &failures);
    let outcome = Outcome {
        failures,
        ..Outcome::default()
    };
    if let RoundResult::Fail {
        notify: Some(verdict),
        ..
    } = apply(&verifier.config, &mut agent, outcome, crate::clock::unix_now())
    {
        revoke(verifier, tls, &agent, verdict);
    }
    save(verifier, agent, round_state).await
}

/// Sends the revocation for `agent`'s failure in the background.
fn revoke(verifier: &Verifier, tls: &AgentTls, agent: &VerifierAgent, verdict: super::severity::Verdict) {
    tokio::spawn(notify::send(
        verifier.clone(),
        tls.clone(),
        agent.clone(),
        "revocation",
        verdict,
    ));
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

/// The PCRs to quote: the enrolled `tpm_policy`'s `mask` (Keylime's tenant sets it) and
/// every PCR the record demands.
fn quote_mask(tpm_policy: &str, required: &std::collections::BTreeSet<u32>) -> String {
    let mask = serde_json::from_str::<Value>(tpm_policy)
        .ok()
        .and_then(|v| v.get("mask").and_then(Value::as_str).map(str::to_owned))
        .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let required = required
        .iter()
        .filter(|p| **p < 24)
        .fold(0u32, |m, p| m | (1 << p));
    format!("0x{:x}", mask | required)
}

/// The agent's reply as evidence, with the algorithms it names; a reply that is not what
/// Keylime's agents send fails the round.
fn reply_evidence(
    agent: &VerifierAgent,
    body: &Value,
    nonce: &str,
) -> Result<(Evidence, (String, String, String)), Failure> {
    let reply = QuoteReply::from_envelope(body).map_err(|why| Failure::quote("invalid_data", why))?;
    let hash = HashAlg::from_name(&reply.hash_alg)
        .filter(|h| agent.accept_tpm_hash_algs.iter().any(|a| a == h.name()))
        .ok_or_else(|| {
            Failure::quote(
                "invalid_hash_alg",
                format!("hash_alg {:?} is not accepted", reply.hash_alg),
            )
        })?;
    if !accepted(&reply.enc_alg, &agent.accept_tpm_encryption_algs) {
        return Err(Failure::quote(
            "invalid_enc_alg",
            format!(
                "TPM Quote is using an unaccepted encryption algorithm: {}",
                reply.enc_alg
            ),
        ));
    }
    if !accepted(&reply.sign_alg, &agent.accept_tpm_signing_algs) {
        return Err(Failure::quote(
            "invalid_sign_alg",
            format!(
                "TPM Quote is using an unaccepted signing algorithm: {}",
                reply.sign_alg
            ),
        ));
    }
    let algorithms = (
        hash.name().to_owned(),
        reply.enc_alg.clone(),
        reply.sign_alg.clone(),
    );
    Ok((reply.into_evidence(hash, nonce)?, algorithms))
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

/// Ends polling with the agent FAILED, telling agents and the webhook (`comm_error`) when
/// an agent that had attested becomes unreachable.
async fn give_up(
    verifier: &Verifier,
    tls: &AgentTls,
    mut agent: VerifierAgent,
    round_state: i64,
    failure: Failure,
) {
    let unreachable = failure.event_id == "internal.verifier.not_reachable";
    let failures = [failure];
    let (verdict, _) = record_failures(&verifier.config, &mut agent, &failures, state::FAILED);
    if let Some(verdict) = verdict.filter(|_| unreachable && agent.attestation_count > 0) {
        tokio::spawn(notify::send(
            verifier.clone(),
            tls.clone(),
            agent.clone(),
            "comm_error",
            verdict,
        ));
    }
    save(verifier, agent, round_state).await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ipv6_agent_addresses_are_bracketed() {
        let agent = |ip: &str| VerifierAgent {
            ip: Some(ip.into()),
            port: Some(9002),
            ..serde_json::from_value(serde_json::json!({
                "agent_id": "a", "ip": null, "port": null, "v": null, "tpm_policy": "{}",
                "runtime_policy": "a", "mb_policy": "a", "ima_sign_verification_keys": "",
                "revocation_key": "", "meta_data": "{}", "accept_tpm_hash_algs": [],
                "accept_tpm_encryption_algs": [], "accept_tpm_signing_algs": [], "ak_tpm": "",
                "mtls_cert": null, "supported_version": null, "operational_state": 3
            }))
            .unwrap()
        };
        assert_eq!(base_url(&agent("::1")), "https://[::1]:9002");
        assert_eq!(base_url(&agent("127.0.0.1")), "https://127.0.0.1:9002");
        assert_eq!(base_url(&agent("agent.example")), "https://agent.example:9002");
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
