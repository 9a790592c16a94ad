//! Step 3: a round's outcome becomes the agent's new state, the same way for pull and
//! push. The caller writes the record back only to the revision and state the round
//! started from (`VerifierStore::save_round`), so a stop, delete or re-enrolment that
//! happened meanwhile wins.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::evaluate::Outcome;
use super::failure::Failure;
use crate::store::VerifierAgent;
use crate::store::verifier::state;
use crate::verifier::VerifierConfig;
use crate::verifier::severity::Verdict;

/// What a round amounted to.
#[derive(Debug)]
pub enum RoundResult {
    /// Every check ran and held.
    Pass,
    /// `notify`: the severity rose (a revocation to send); `stops`: polling ends.
    Fail {
        failures: Vec<Failure>,
        notify: Option<Verdict>,
        stops: bool,
    },
    /// A proven reboot whose evidence could not be judged: no count, no V, no pass; the
    /// next round starts over.
    Rebooted,
}

fn forget_ima(agent: &mut VerifierAgent) {
    // Keylime restarts IMA from the first entry after a failure or a reboot.
    agent.next_ima_ml_entry = 0;
    agent.pcr10 = None;
    agent.ima_policy_state = None;
    agent.ima_policy = None;
}

/// Records a failed round's failures on the agent under the severity policy: pull agents
/// enter `to` (INVALID_QUOTE, or FAILED when unreachable), the severity only rises.
/// Returns the verdict when it rose (the event to notify) and whether polling stops.
pub fn record_failures(
    config: &VerifierConfig,
    agent: &mut VerifierAgent,
    failures: &[Failure],
    to: i64,
) -> (Option<Verdict>, bool) {
    let Some(verdict) = config.severity.judge(failures) else {
        return (None, false);
    };
    agent.last_failures = failures.iter().map(Failure::stored).collect();
    if agent.push {
        agent.last_attestation_passed = false;
        agent.consecutive_attestation_failures += 1;
    } else {
        agent.operational_state = to;
        agent.polls_after_failure = to == state::INVALID_QUOTE && !verdict.stops;
    }
    let rose = agent.severity_level.is_none_or(|level| level < verdict.level);
    if rose {
        agent.severity_level = Some(verdict.level);
        agent.last_event_id = Some(verdict.event.event_id.clone());
    }
    let stops = verdict.stops;
    (rose.then_some(verdict), stops)
}

/// Applies a round's outcome to the agent (at Unix time `now`).
pub fn apply(config: &VerifierConfig, agent: &mut VerifierAgent, outcome: Outcome, now: u64) -> RoundResult {
    agent.last_received_quote = now;
    if outcome.quote.is_some() {
        if let Some(clock) = outcome.clock {
            agent.tpm_clock = Some(clock);
        }
        if let Some(boot_time) = outcome.boot_time {
            agent.boottime = Some(boot_time);
        }
    }
    if !outcome.failures.is_empty() {
        forget_ima(agent);
        let (notify, stops) = record_failures(config, agent, &outcome.failures, state::INVALID_QUOTE);
        return RoundResult::Fail {
            failures: outcome.failures,
            notify,
            stops,
        };
    }
    if outcome.rebooted {
        forget_ima(agent);
        return RoundResult::Rebooted;
    }
    match outcome.ima_next {
        Some(next) => {
            agent.next_ima_ml_entry = next.next_entry;
            agent.pcr10 = Some(hex::encode(&next.pcr10));
            agent.ima_policy = outcome.ima_policy;
        }
        None => forget_ima(agent),
    }
    agent.ima_policy_state = outcome.ima_state.map(|s| B64.encode(s));
    agent.mb_policy_state = outcome.mb_state.map(|s| B64.encode(s));
    if let Some(key) = outcome.proven_key
        && agent.public_key.as_deref() != Some(key.as_str())
    {
        agent.public_key = Some(key);
        agent.v_delivered = false;
    }
    agent.attestation_count += 1;
    agent.last_successful_attestation = now;
    if agent.push {
        agent.last_attestation_passed = true;
        if agent.consecutive_attestation_failures == 0 || config.auto_recover_attestation_failures {
            agent.consecutive_attestation_failures = 0;
            agent.last_failures.clear();
        }
    } else {
        agent.operational_state = state::GET_QUOTE;
        agent.polls_after_failure = false;
        agent.last_failures.clear();
    }
    RoundResult::Pass
}
