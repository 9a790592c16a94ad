//! Step 2: every check of one round, in one place. Each check that cannot run (a PCR not
//! quoted, a log missing or undecodable, a component that fails) is a failure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::failure::Failure;
use super::prepare::{Evidence, Expectations, IMA_PCR, ImaList, KEY_PCR, PolicyInUse};
use crate::evidence::ima::{ImaPosition, replay};
use crate::evidence::uefi::{BootFinding, EventLog, PcrBanks, boot_aggregates, check_boot};
use crate::evidence::{ClockInfo, HashAlg};
use crate::policy::PolicyRegistry;
use crate::policy::measured_boot::BootEvidence;
use crate::policy::runtime::ImaEvidence;
use crate::tpm::{QuoteExpectations, VerifiedQuote, verify_quote};

pub use crate::evidence::uefi::MEASURED_BOOT_PCRS;

/// What one round found, and what the agent's state becomes if it is applied.
#[derive(Default)]
pub struct Outcome {
    pub failures: Vec<Failure>,
    /// The quote, when its signature, nonce and PCR digest held.
    pub quote: Option<VerifiedQuote>,
    /// The agent proved a reboot (the TPM's resetCount advanced) but sent its IMA list from
    /// mid-way, so nothing could be judged: not a pass, and the next round starts over.
    pub rebooted: bool,
    /// The boot time to keep: the reported one, once the quote verified and any reboot
    /// claim was proven.
    pub boot_time: Option<u64>,
    /// The verified TPM clock reading to keep.
    pub clock: Option<(u64, u32, u32)>,
    /// Where the next IMA replay starts, when the list matched the quote.
    pub ima_next: Option<ImaPosition>,
    pub ima_state: Option<Vec<u8>>,
    /// The checksum of the runtime policy that judged the list up to `ima_next`.
    pub ima_policy: Option<String>,
    pub mb_state: Option<Vec<u8>>,
    /// The NK key PCR 16 proved this round, when the agent sent one.
    pub proven_key: Option<String>,
}

/// Runs every check of one round.
pub fn evaluate(registry: &PolicyRegistry, expect: &Expectations, evidence: &Evidence) -> Outcome {
    let mut outcome = Outcome::default();
    let hash = evidence.hash;
    let expected = QuoteExpectations {
        nonce: &evidence.nonce,
        hashes: &[hash],
        schemes: &["rsassa", "rsapss", "ecdsa"],
    };
    let verified = match verify_quote(&evidence.quote, &expect.ak, &expected) {
        Ok(v) => v,
        Err(e) => {
            outcome
                .failures
                .push(Failure::quote("quote_validation", e.to_string()));
            return outcome;
        }
    };
    let quoted: BTreeMap<u32, Vec<u8>> = verified
        .pcrs
        .iter()
        .filter(|(bank, _, _)| *bank == hash)
        .map(|(_, i, v)| (u32::from(*i), v.clone()))
        .collect();
    let failures = &mut outcome.failures;

    // The clock, and a reboot only when the quote shows one.
    let c = &verified.clock_info;
    let claims_reboot =
        matches!((expect.last_boot_time, evidence.boot_time), (Some(last), Some(now)) if last != now);
    let reboot_proven = expect
        .last_clock
        .is_none_or(|(_, reset_count, _)| c.reset_count > reset_count);
    if claims_reboot && !reboot_proven {
        failures.push(Failure::quote(
            "quote_validation",
            "the agent reports a new boot, but the TPM's resetCount did not advance",
        ));
    } else if let Some(why) = clock_regression(expect.last_clock, c) {
        failures.push(
            Failure::new(
                "qoute_validation.quote_validation",
                json!({"message": "Validation of clockinfo from quote", "data": why}),
            )
            .irrecoverable(),
        );
    } else {
        outcome.clock = Some((c.clock, c.reset_count, c.restart_count));
        outcome.boot_time = evidence.boot_time;
    }

    // Every PCR the record demands must be quoted.
    let required = expect.required_pcrs();
    let missing: Vec<u32> = required
        .iter()
        .copied()
        .filter(|p| *p != KEY_PCR && !quoted.contains_key(p))
        .collect();
    if !missing.is_empty() {
        failures.push(Failure::missing_pcrs("pcr_validation.missing_pcrs", &missing));
    }
    if expect.bind_key {
        bind_key(expect, evidence, &quoted, &mut outcome);
    }
    let failures = &mut outcome.failures;

    // A proven reboot with a list from mid-way: Keylime judges nothing this round.
    let ima_from_start = evidence.ima.as_ref().is_none_or(|l| l.offset == 0);
    if claims_reboot && reboot_proven && !ima_from_start {
        outcome.rebooted = true;
        outcome.quote = Some(verified);
        return outcome;
    }

    for (pcr, accepted) in &expect.tpm_policy {
        match quoted.get(&u32::from(*pcr)) {
            None => {} // reported with the missing PCRs above
            Some(value) if !accepted.contains(&hex::encode(value)) => failures.push(Failure::new(
                format!("pcr_validation.invalid_pcr_{pcr}"),
                json!({"context": "PCR value is not in allowlist", "got": hex::encode(value), "expected": accepted}),
            )),
            Some(_) => {}
        }
    }

    let mut aggregates: Vec<(HashAlg, Vec<u8>)> = Vec::new();
    if let Some(policy) = &expect.measured_boot {
        match &evidence.boot_log {
            None => failures.extend(
                MEASURED_BOOT_PCRS
                    .iter()
                    .filter(|p| quoted.contains_key(p))
                    .map(|p| Failure::unused_pcr(*p, "boot log")),
            ),
            Some(Err(undecodable)) => failures.push(undecodable.clone()),
            Some(Ok(bytes)) => match EventLog::parse(bytes) {
                Err(e) => failures.push(Failure::message("measured_boot.parser.log", e.to_string())),
                Ok(log) => {
                    let replayed = log.replay();
                    aggregates = boot_aggregates(&replayed)
                        .into_iter()
                        .flat_map(|(alg, pair)| pair.into_iter().map(move |v| (alg, v)))
                        .collect();
                    let judging = Judging {
                        tenant: &expect.tenant,
                        first_attestation: expect.first_attestation,
                        prior_state: expect.mb_policy_state.clone(),
                    };
                    let (mb_failures, state) =
                        measured_boot(registry, &judging, hash, policy, &log, &replayed, &quoted);
                    failures.extend(mb_failures);
                    outcome.mb_state = state;
                }
            },
        }
    }

    if let Some(policy) = &expect.runtime {
        match (&evidence.ima, quoted.get(&IMA_PCR)) {
            (_, None) => {} // PCR 10 is reported missing above
            (None, Some(_)) => failures.push(Failure::unused_pcr(IMA_PCR, "IMA measurement list")),
            (Some(list), Some(pcr10)) => {
                let (ima_failures, next, state) =
                    runtime(registry, expect, evidence, policy, list, pcr10, &aggregates);
                failures.extend(ima_failures);
                (outcome.ima_next, outcome.ima_state) = (next, state);
                outcome.ima_policy = Some(policy.record.checksum.clone());
            }
        }
    }
    outcome.quote = Some(verified);
    outcome
}

/// PCR 16 binds the agent's NK key: H(zeros ‖ H(public key PEM)). A key the agent sends
/// is believed only once PCR 16 proves it.
fn bind_key(
    expect: &Expectations,
    evidence: &Evidence,
    quoted: &BTreeMap<u32, Vec<u8>>,
    outcome: &mut Outcome,
) {
    let hash = evidence.hash;
    let Some(key) = evidence.pubkey.as_ref().or(expect.known_key.as_ref()) else {
        outcome
            .failures
            .push(Failure::quote("no_pubkey", "no public key of the agent is known"));
        return;
    };
    let expected = hash.digest(&[&vec![0u8; hash.digest_len()], &hash.digest(&[key.as_bytes()])]);
    match quoted.get(&KEY_PCR) {
        None => outcome.failures.push(Failure::message(
            "pcr_validation.missing_pcr_16",
            "PCR 16 is not in the quote",
        )),
        Some(value) if *value != expected => outcome.failures.push(Failure::new(
            "pcr_validation.invalid_pcr_16",
            json!({"context": "PCR 16 does not bind the agent's key", "got": hex::encode(value), "expected": hex::encode(&expected)}),
        )),
        Some(_) => outcome.proven_key = evidence.pubkey.clone(),
    }
}

/// The boot log against the quote and the refstate's component. Events reach the
/// component only when their data is what their digests measured and their PCR replayed to
/// the quoted value; a PCR the component relies on that does not replay is a failure.
/// What a component call needs to know of the agent besides its evidence.
pub struct Judging<'a> {
    pub tenant: &'a str,
    pub first_attestation: bool,
    pub prior_state: Option<Vec<u8>>,
}

pub fn measured_boot(
    registry: &PolicyRegistry,
    judging: &Judging<'_>,
    hash: HashAlg,
    policy: &PolicyInUse,
    log: &EventLog,
    replayed: &PcrBanks,
    quoted: &BTreeMap<u32, Vec<u8>>,
) -> (Vec<Failure>, Option<Vec<u8>>) {
    let Some(source) = policy.source() else {
        return (
            vec![Failure::internal("record", "the refstate has no document")],
            None,
        );
    };
    let relevant = match registry.load_measured_boot(judging.tenant, &source) {
        Ok(r) => r,
        Err(e) => return (vec![Failure::policy_error("measured_boot", e)], None),
    };
    let check = check_boot(log, replayed, hash, quoted, &relevant);
    if !check.findings.is_empty() {
        return (check.findings.iter().map(boot_failure).collect(), None);
    }
    let replays = check.verified_pcrs;
    let quoted_list: Vec<(u32, Vec<u8>)> = quoted.iter().map(|(i, v)| (*i, v.clone())).collect();
    let evidence = BootEvidence {
        log,
        replayed,
        quoted_bank: hash,
        quoted: &quoted_list,
        verified_pcrs: &replays,
        first_attestation: judging.first_attestation,
        prior_state: judging.prior_state.clone(),
    };
    match registry.evaluate_measured_boot(judging.tenant, &source, &evidence) {
        Ok(verdict) => (
            verdict
                .failures
                .into_iter()
                .map(|f| Failure::from_policy(f.event_id, &f.context, f.recoverable, f.entry))
                .collect(),
            verdict.state,
        ),
        Err(e) => (vec![Failure::policy_error("measured_boot", e)], None),
    }
}

/// A finding of [`check_boot`] as Keylime reports it.
pub fn boot_failure(finding: &BootFinding) -> Failure {
    match finding {
        BootFinding::MissingPcrs(pcrs) => Failure::missing_pcrs("measured_boot.missing_pcrs", pcrs),
        BootFinding::EventData {
            event,
            pcr,
            type_name,
            bank,
        } => Failure::new(
            "measured_boot.invalid_event_data",
            json!({
                "context": "boot event data does not match its digest",
                "event": event,
                "pcr": pcr,
                "type": type_name,
                "bank": bank.name(),
            }),
        )
        .at(*event as u64),
        BootFinding::PcrMismatch {
            pcr,
            replayed,
            quoted,
        } => Failure::new(
            format!("measured_boot.invalid_pcr_{pcr}"),
            json!({
                "context": "SHA256 boot event log PCR value does not match",
                "got": hex::encode(replayed),
                "expected": hex::encode(quoted),
            }),
        ),
    }
}

pub type ImaOutcome = (Vec<Failure>, Option<ImaPosition>, Option<Vec<u8>>);

/// The IMA list replayed into PCR 10 from the saved position (or from the start) and
/// judged by the runtime component.
fn runtime(
    registry: &PolicyRegistry,
    expect: &Expectations,
    evidence: &Evidence,
    policy: &PolicyInUse,
    list: &ImaList,
    pcr10: &[u8],
    aggregates: &[(HashAlg, Vec<u8>)],
) -> ImaOutcome {
    let Some(source) = policy.source() else {
        return (
            vec![Failure::internal("record", "the runtime policy has no document")],
            None,
            None,
        );
    };
    // A list from entry 0 replays from zeros; one from mid-way continues the saved replay
    // of the same boot, and nothing else.
    let (from, prior_state) = if list.offset == 0 {
        (ImaPosition::start(evidence.hash), None)
    } else {
        match &expect.ima {
            Some(saved)
                if saved.position.next_entry == list.offset
                    && Some(saved.boot_time) == evidence.boot_time =>
            {
                (saved.position.clone(), expect.ima_policy_state.clone())
            }
            saved => {
                return (
                    vec![Failure::quote(
                        "invalid_ima_entry_nb",
                        format!(
                            "the IMA list starts at entry {}, but the verifier holds no replay up to there (it holds {})",
                            list.offset,
                            saved.as_ref().map_or(0, |s| s.position.next_entry)
                        ),
                    )],
                    None,
                    None,
                );
            }
        }
    };
    let judging = Judging {
        tenant: &expect.tenant,
        first_attestation: expect.first_attestation,
        prior_state,
    };
    judge_ima(
        registry,
        &judging,
        evidence.hash,
        &source,
        list,
        &from,
        pcr10,
        aggregates,
    )
}

/// Replays an IMA list from `from` to the quoted PCR 10 and has the runtime component
/// judge it.
#[allow(clippy::too_many_arguments)]
pub fn judge_ima(
    registry: &PolicyRegistry,
    judging: &Judging<'_>,
    bank: HashAlg,
    source: &crate::policy::PolicySource<'_>,
    list: &ImaList,
    from: &ImaPosition,
    pcr10: &[u8],
    aggregates: &[(HashAlg, Vec<u8>)],
) -> ImaOutcome {
    let log_hash = match registry.runtime_log_hash(judging.tenant, source) {
        Ok(h) => h.unwrap_or(HashAlg::Sha1),
        Err(e) => return (vec![Failure::policy_error("ima", e)], None, None),
    };
    let replayed = replay(&list.text, bank, log_hash, from, Some(pcr10));
    let mut failures: Vec<Failure> = replayed
        .parse_errors
        .iter()
        .map(|e| Failure::message("ima.parser.entry", e.to_string()))
        .collect();
    if replayed.matched_after.is_none() {
        failures.push(Failure::message(
            "ima.pcr_mismatch",
            format!(
                "IMA measurement list does not match TPM PCR {}",
                hex::encode(pcr10)
            ),
        ));
    }
    let ima = ImaEvidence {
        text: &list.text,
        replay: &replayed,
        bank,
        start_offset: list.offset,
        boot_aggregates: aggregates,
        prior_state: judging.prior_state.clone(),
    };
    let mut state = None;
    match registry.evaluate_runtime(judging.tenant, source, &ima) {
        Ok(verdict) => {
            state = verdict.state;
            failures.extend(
                verdict
                    .failures
                    .into_iter()
                    .map(|f| Failure::from_policy(f.event_id, &f.context, f.recoverable, f.entry)),
            );
        }
        Err(e) => failures.push(Failure::policy_error("ima", e)),
    }
    (failures, replayed.next_position, state)
}

/// Keylime's TPM clock rules against the last verified reading: the reset count never
/// decreases; within one boot the restart count never decreases and the clock moves
/// forward unless the TPM restarted; after a reset (a reboot) the counts start over. The
/// clock must be `safe`.
pub(super) fn clock_regression(previous: Option<(u64, u32, u32)>, now: &ClockInfo) -> Option<&'static str> {
    if !now.safe {
        return Some("clock safe flag is disabled");
    }
    let (clock, reset_count, restart_count) = previous?;
    if now.reset_count < reset_count {
        return Some("resetCount value decreased on TPM between two consecutive quotes");
    }
    if now.reset_count > reset_count {
        return None;
    }
    if now.restart_count < restart_count {
        return Some("restartCount value decreased on TPM between two consecutive quotes");
    }
    if now.restart_count == restart_count && now.clock <= clock {
        return Some("the TPM clock did not advance between two consecutive quotes");
    }
    None
}

/// Parses a `tpm_policy` JSON text into PCR → accepted lowercase hex values (`mask`
/// dropped; single strings become lists).
pub fn parse_tpm_policy(text: &str) -> Result<BTreeMap<u8, Vec<String>>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("tpm_policy: not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("tpm_policy must be a JSON object".into());
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        if key == "mask" {
            continue;
        }
        let pcr: u8 = key
            .parse()
            .ok()
            .filter(|p| *p <= 23)
            .ok_or_else(|| format!("tpm_policy: '{}' is not a PCR number", key.escape_debug()))?;
        let values = match value {
            Value::Array(list) => list,
            other => vec![other],
        };
        let values = values
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| format!("tpm_policy: PCR {pcr} values must be hex strings"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(pcr, values);
    }
    Ok(out)
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
        // A restart within the boot: the clock may have been saved earlier.
        assert_eq!(clock_regression(Some((5, 1, 0)), &clock(4, 1, 1, true)), None);
        // A reset (reboot): the restart count starts over.
        assert_eq!(clock_regression(Some((5, 1, 3)), &clock(1, 2, 0, true)), None);
    }
}
