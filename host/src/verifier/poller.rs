//! The pull loop: every enrolled agent in a polling state is asked for a quote every
//! `quote_interval` over mTLS (our client certificate; trust in exactly the agent's
//! enrolled `mtls_cert`), and the answer goes through the attestation pipeline. The state
//! lives in the store after every round, so a restarted verifier resumes incrementally, and
//! a round writes back only to an agent that still exists (a DELETE is never undone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::Verifier;
use super::history::{self, RoundRecord};
use super::notify::{self, AgentTls};
use super::pipeline::{
    Evidence, Expectations, Failure, Outcome, RoundResult, apply, evaluate, record_failures,
};
use super::wire::QuoteReply;
use crate::agent_client::{AgentClient, KeyHalf, accepted, base_url, random_text, version_key, vkey_body};
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

/// Starts the loop that keeps one polling task per agent in a polling state whose lease
/// this verifier holds. Verifiers sharing a database each poll the agents they lease; one
/// that stops renewing (it died) loses its agents to the others when the leases run out.
pub fn spawn(verifier: Verifier, tls: AgentTls, retries: Retries) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        let me = verifier.config.verifier_id.clone();
        let lease_ms = u64::try_from(verifier.config.lease_period.as_millis()).unwrap_or(u64::MAX);
        // Renewed well before it runs out; never less often than RESCAN.
        let rescan = RESCAN.min(verifier.config.lease_period / 3);
        loop {
            running.retain(|_, task| !task.is_finished());
            let store = verifier.store.clone();
            let owner = me.clone();
            let leased = tokio::task::spawn_blocking(move || {
                store.lease_agents(&owner, crate::clock::unix_micros_now() / 1000, lease_ms, u64::MAX)
            })
            .await;
            match leased {
                Ok(Ok(agents)) => {
                    let ours = |a: &crate::store::AgentState| a.lease_owner.as_deref() == Some(me.as_str());
                    // Taken over by another verifier (this one stalled past its lease), or
                    // deleted: its polling stops here.
                    let held: std::collections::HashSet<&str> = agents
                        .iter()
                        .filter(|a| ours(a))
                        .map(|a| a.agent_id.as_str())
                        .collect();
                    running.retain(|id, task| {
                        let keep = held.contains(id.as_str());
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for agent in &agents {
                        let mine = ours(agent) || (agent.push && agent.lease_owner.is_none());
                        // Marked for deletion while no round runs (its round ended, or the
                        // verifier restarted): finish the DELETE.
                        if agent.operational_state == state::TERMINATED
                            && mine
                            && !running.contains_key(&agent.agent_id)
                        {
                            complete_deletion(&verifier, &agent.agent_id).await;
                            continue;
                        }
                        let polls = polled(agent.push, agent.operational_state, agent.polls_after_failure);
                        if polls && ours(agent) && !running.contains_key(&agent.agent_id) {
                            let task = tokio::spawn(
                                poll_agent(verifier.clone(), tls.clone(), retries, agent.agent_id.clone())
                                    .instrument(super::agent_span(&agent.agent_id, &agent.tenant)),
                            );
                            running.insert(agent.agent_id.clone(), task);
                        }
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "cannot renew or take agent leases"),
                Err(e) => tracing::error!(error = %e, "cannot renew or take agent leases"),
            }
            // Ids and states only: a fleet of 10,000 read whole every 200 ms was 50,000
            // records parsed a second.
            tokio::select! {
                () = verifier.poll_wakeup.notified() => {}
                () = tokio::time::sleep(rescan) => {}
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
    save_judged(verifier, agent, round_state, None).await
}

/// [`save`], with the judged round's history in the same transaction.
async fn save_judged(
    verifier: &Verifier,
    agent: VerifierAgent,
    round_state: i64,
    judged: Option<RoundRecord>,
) -> bool {
    let keeps_polling = polls(&agent);
    let id = agent.agent_id.clone();
    let v = verifier.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let (history, durable) = judged.map(|j| j.for_store(&v)).unzip();
        let saved = v.store.save_round(&agent, round_state, history)?;
        history::written(&v, &agent.agent_id, durable.flatten(), saved.history);
        Ok::<_, crate::store::StoreError>(saved.saved)
    })
    .await;
    match saved {
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
    random_text(20)
}

/// Where a pull agent listens, as enrolled.
pub(super) fn agent_base(agent: &VerifierAgent) -> (&str, u16) {
    (
        agent.ip.as_deref().unwrap_or("127.0.0.1"),
        agent.port.unwrap_or(9002),
    )
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
    let mut connection: Option<(Option<String>, AgentClient)> = None;
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
            // ...and while it listens where it did.
            Some((cert, client))
                if *cert == agent.mtls_cert
                    && client.base() == base_url(agent_base(&agent).0, agent_base(&agent).1) =>
            {
                client.clone()
            }
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
                let url = client.url(
                    &version,
                    &format!(
                        "quotes/integrity?nonce={nonce}&mask={mask}&partial={partial}&ima_ml_entry={}",
                        expect.ima_offset()
                    ),
                );
                (
                    request(client.http(), &url, verifier.config.max_evidence_size).await,
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
            Answer::VersionNotSupported => match client.negotiate().await {
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
            let (outcome, judged) = match reply_evidence(&agent, &body, &nonce) {
                Ok((evidence, algorithms)) => {
                    let outcome = evaluate(&v.policies, &expect, &evidence);
                    if outcome.quote.is_some() {
                        (agent.hash_alg, agent.enc_alg, agent.sign_alg) = algorithms;
                    }
                    let judged = RoundRecord::of(&agent, "pull", Some(&expect), Some(&evidence), &outcome);
                    (outcome, judged)
                }
                Err(failure) => {
                    let failures = vec![failure];
                    let judged = RoundRecord::failed(&agent, "pull", &failures);
                    (
                        Outcome {
                            failures,
                            ..Outcome::default()
                        },
                        judged,
                    )
                }
            };
            let result = apply(&v.config, &mut agent, outcome, crate::clock::unix_now());
            (agent, result, judged)
        })
        .await;
        let Ok((agent, result, judged)) = judged else {
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
        if !save_judged(&verifier, agent, round_state, Some(judged)).await {
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
    let judged = RoundRecord::failed(&agent, "pull", &failures);
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
    save_judged(verifier, agent, round_state, Some(judged)).await
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

/// Delivers V after a good quote (PROVIDE_V); true when done or when there is no V.
async fn deliver_v(client: &AgentClient, agent: &VerifierAgent, version: &str) -> bool {
    let (Some(v), Some(pubkey)) = (&agent.v, &agent.public_key) else {
        return true;
    };
    let body = match vkey_body(pubkey, v) {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(agent_id = %agent.agent_id, %why, "cannot prepare V");
            return false;
        }
    };
    match client.deliver_key(version, KeyHalf::V, &body).await {
        Ok(()) => {
            tracing::info!(agent_id = %agent.agent_id, "V delivered");
            true
        }
        Err(why) => {
            tracing::warn!(agent_id = %agent.agent_id, %why, "V delivery failed");
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
    let judged = RoundRecord::failed(&agent, "pull", &failures);
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
    save_judged(verifier, agent, round_state, Some(judged)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_switch_never_repeats_nor_downgrades_an_attested_agent() {
        assert_eq!(switch_version("", "2.6", false), Ok(()));
        assert_eq!(switch_version("2.6", "2.3", false), Ok(()));
        assert!(switch_version("2.6", "2.3", true).is_err());
        assert!(switch_version("2.3", "2.3", false).is_err());
        assert_eq!(switch_version("2.3", "2.6", true), Ok(()));
    }
}
