//! One attestation, whatever asked for it (`/verify/evidence` now, the pull loop and push
//! mode next): the quote against the AK and nonce, the PCR policy, the IMA list replayed
//! into PCR 10 and judged by the runtime policy's component, the boot log replayed and
//! judged by the measured-boot component. Failures carry Keylime's event ids and contexts.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::evidence::ima::{ImaPosition, replay};
use crate::evidence::uefi::{EventLog, boot_aggregates};
use crate::evidence::{HashAlg, Quote};
use crate::policy::measured_boot::BootEvidence;
use crate::policy::runtime::ImaEvidence;
use crate::policy::{PolicyError, PolicyRegistry, PolicySource};
use crate::store::PolicyRecord;
use crate::tpm::{AttestationKey, QuoteExpectations, VerifiedQuote, verify_quote};

/// PCRs measured boot may speak for (Keylime's `MEASUREDBOOT_PCRS`).
pub const MEASURED_BOOT_PCRS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];
const IMA_PCR: u8 = 10;

/// One failure: Keylime's event id and context object.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub event_id: String,
    pub context: Value,
}

impl Failure {
    fn new(event_id: impl Into<String>, context: Value) -> Self {
        Self {
            event_id: event_id.into(),
            context,
        }
    }

    fn message(event_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(event_id, json!({"message": message.into()}))
    }
}

/// The source of a stored policy: its document with its resolved component, identified by
/// the record (so the loaded instance is found without hashing). `None` without a document.
pub fn stored_source<'a>(record: &'a PolicyRecord, module: &'a [u8]) -> Option<PolicySource<'a>> {
    let document = record.document.as_deref()?;
    Some(PolicySource::new(&record.name, module, document).known_as(&record.module, &record.checksum))
}

/// What one attestation looks at.
pub struct AttestationInput<'a> {
    pub tenant: &'a str,
    pub quote: &'a Quote,
    pub ak: &'a AttestationKey,
    /// The nonce as the quote's extraData must carry it.
    pub nonce: &'a [u8],
    pub hash: HashAlg,
    /// `tpm_policy`: PCR → accepted lowercase hex values.
    pub tpm_policy: &'a BTreeMap<u8, Vec<String>>,
    pub runtime: Option<ImaInput<'a>>,
    pub measured_boot: Option<(PolicySource<'a>, &'a [u8])>,
}

/// The IMA part of an attestation: the list (from `start_offset` on), where its replay
/// starts, and the runtime policy's state for this agent.
pub struct ImaInput<'a> {
    pub policy: PolicySource<'a>,
    pub list: &'a str,
    pub from: ImaPosition,
    pub start_offset: u64,
    pub prior_state: Option<Vec<u8>>,
}

/// The outcome: every failure, the verified quote when the quote itself held, and where
/// the next IMA replay starts (with the runtime policy's state) when the list matched.
pub struct Attestation {
    pub failures: Vec<Failure>,
    pub quote: Option<VerifiedQuote>,
    pub ima_next: Option<ImaPosition>,
    pub ima_state: Option<Vec<u8>>,
}

fn policy_failure(component: &str, e: PolicyError) -> Failure {
    Failure::message(format!("{component}.policy_error"), e.to_string())
}

/// Runs every check of one attestation.
pub fn attest(registry: &PolicyRegistry, input: &AttestationInput<'_>) -> Attestation {
    let expected = QuoteExpectations {
        nonce: input.nonce,
        hashes: &[input.hash],
        schemes: &["rsassa", "rsapss", "ecdsa"],
    };
    let verified = match verify_quote(input.quote, input.ak, &expected) {
        Ok(v) => v,
        Err(e) => {
            return Attestation {
                failures: vec![Failure::message(
                    "qoute_validation.quote_validation",
                    e.to_string(),
                )],
                quote: None,
                ima_next: None,
                ima_state: None,
            };
        }
    };
    let mut failures = Vec::new();
    for (pcr, accepted) in input.tpm_policy {
        match verified.pcr(input.hash, *pcr) {
            None => failures.push(Failure::new(
                "pcr_validation.missing_pcrs",
                json!({"context": "PCRs are missing in quote", "data": [pcr]}),
            )),
            Some(value) if !accepted.contains(&hex::encode(value)) => failures.push(Failure::new(
                format!("pcr_validation.invalid_pcr_{pcr}"),
                json!({"context": "PCR value is not in allowlist", "got": hex::encode(value), "expected": accepted}),
            )),
            Some(_) => {}
        }
    }

    let mut aggregates: Vec<(HashAlg, Vec<u8>)> = Vec::new();
    if let Some((policy, log_bytes)) = &input.measured_boot {
        match EventLog::parse(log_bytes) {
            Err(e) => failures.push(Failure::message("measured_boot.parser.log", e.to_string())),
            Ok(log) => {
                let replayed = log.replay();
                aggregates = boot_aggregates(&replayed)
                    .into_iter()
                    .flat_map(|(alg, pair)| pair.into_iter().map(move |v| (alg, v)))
                    .collect();
                failures.extend(measured_boot(registry, input, &verified, policy, &log, &replayed));
            }
        }
    }
    let (mut ima_next, mut ima_state) = (None, None);
    if let Some(ima) = &input.runtime {
        let (ima_failures, next, state) = runtime(registry, input, &verified, ima, &aggregates);
        failures.extend(ima_failures);
        (ima_next, ima_state) = (next, state);
    }
    Attestation {
        failures,
        quote: Some(verified),
        ima_next,
        ima_state,
    }
}

fn measured_boot(
    registry: &PolicyRegistry,
    input: &AttestationInput<'_>,
    verified: &VerifiedQuote,
    policy: &PolicySource<'_>,
    log: &EventLog,
    replayed: &crate::evidence::uefi::PcrBanks,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let relevant = match registry.load_measured_boot(input.tenant, policy) {
        Ok(r) => r,
        Err(e) => return vec![policy_failure("measured_boot", e)],
    };
    let quoted: Vec<(u32, Vec<u8>)> = verified
        .pcrs
        .iter()
        .filter(|(bank, _, _)| *bank == input.hash)
        .map(|(_, i, v)| (u32::from(*i), v.clone()))
        .collect();
    let missing: Vec<u32> = relevant
        .iter()
        .copied()
        .filter(|p| !quoted.iter().any(|(i, _)| i == p))
        .collect();
    if !missing.is_empty() {
        return vec![Failure::new(
            "measured_boot.missing_pcrs",
            json!({"context": "PCRs are missing in quote", "data": missing}),
        )];
    }
    // Keylime compares MEASUREDBOOT_PCRS ∩ relevant (all when none named) ∩ quoted.
    let zeros = vec![0u8; input.hash.digest_len()];
    let log_bank = replayed.get(&input.hash);
    for (pcr, value) in &quoted {
        let compared = MEASURED_BOOT_PCRS.contains(pcr) && (relevant.is_empty() || relevant.contains(pcr));
        if !compared {
            continue;
        }
        let from_log = log_bank.and_then(|b| b.get(pcr)).unwrap_or(&zeros);
        if from_log != value {
            failures.push(Failure::new(
                format!("measured_boot.invalid_pcr_{pcr}"),
                json!({
                    "context": "SHA256 boot event log PCR value does not match",
                    "got": hex::encode(from_log),
                    "expected": hex::encode(value),
                }),
            ));
        }
    }
    let evidence = BootEvidence {
        log,
        replayed,
        quoted_bank: input.hash,
        quoted: &quoted,
        first_attestation: true,
        prior_state: None,
    };
    match registry.evaluate_measured_boot(input.tenant, policy, &evidence) {
        Ok(verdict) => failures.extend(verdict.failures.into_iter().map(|f| {
            Failure::new(
                f.event_id,
                serde_json::from_str(&f.context).unwrap_or(Value::String(f.context)),
            )
        })),
        Err(e) => failures.push(policy_failure("measured_boot", e)),
    }
    failures
}

type ImaOutcome = (Vec<Failure>, Option<ImaPosition>, Option<Vec<u8>>);

fn runtime(
    registry: &PolicyRegistry,
    input: &AttestationInput<'_>,
    verified: &VerifiedQuote,
    ima: &ImaInput<'_>,
    aggregates: &[(HashAlg, Vec<u8>)],
) -> ImaOutcome {
    let policy = &ima.policy;
    let log_hash = match registry.runtime_log_hash(input.tenant, policy) {
        Ok(h) => h.unwrap_or(HashAlg::Sha1),
        Err(e) => return (vec![policy_failure("ima", e)], None, None),
    };
    // As Keylime: the IMA list is judged when PCR 10 is quoted (the tenant puts it in the
    // mask whenever there is a runtime policy), and ignored otherwise.
    let Some(pcr10) = verified.pcr(input.hash, IMA_PCR) else {
        return (Vec::new(), None, None);
    };
    let replayed = replay(ima.list, input.hash, log_hash, &ima.from, Some(pcr10));
    let mut failures: Vec<Failure> = replayed
        .parse_errors
        .iter()
        .map(|e| Failure::new("ima.parser.entry", json!({"message": e.to_string()})))
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
    let evidence = ImaEvidence {
        text: ima.list,
        replay: &replayed,
        bank: input.hash,
        start_offset: ima.start_offset,
        boot_aggregates: aggregates,
        prior_state: ima.prior_state.clone(),
    };
    let mut state = None;
    match registry.evaluate_runtime(input.tenant, policy, &evidence) {
        Ok(verdict) => {
            state = verdict.state;
            failures.extend(verdict.failures.into_iter().map(|f| {
                Failure::new(
                    f.event_id,
                    serde_json::from_str(&f.context).unwrap_or(Value::String(f.context)),
                )
            }));
        }
        Err(e) => failures.push(policy_failure("ima", e)),
    }
    (failures, replayed.next_position, state)
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
