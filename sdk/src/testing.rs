//! Native test helpers: turn real IMA logs and UEFI event logs into the batches and boot
//! logs zest hands a policy, with zest's own parsers and replay, so a policy's `cargo test`
//! sees what the server would show it.
//!
//! - [`boot_log`] and [`ima_batch`] are the happy path: there is no quote offline, so the
//!   replayed PCR values stand in for quoted ones and every digest of the chosen bank counts
//!   as authenticated.
//! - [`Quote`], [`judge_boot`], [`edit_event`], [`ima_batch_quoted`] and [`ima_batches`]
//!   are the paths the verifier takes when evidence is wrong or arrives in parts: a replay
//!   that does not match the quote, a PCR that was not quoted, an event with altered data,
//!   and a second attestation with the state the first one returned.
//! - [`sample_boot_log`] and [`sample_ima_list`] are evidence made by the zest project
//!   (`sdk/testdata`), for tests on a machine without a TPM.
//!
//! These helpers panic with a message on unreadable files: they are for tests.

use std::path::Path;

use zest_evidence as evidence;

use crate::{HashAlg, KeyKind, PublicKey};

/// Reads a file (a policy document, a refstate, a log), panicking with its path on error.
// A test helper: panicking with the path is its contract, as an assertion's is.
#[allow(clippy::panic)]
pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn to_evidence_hash(h: HashAlg) -> Option<evidence::HashAlg> {
    evidence::HashAlg::from_name(h.name())
}

fn from_evidence_hash(h: evidence::HashAlg) -> HashAlg {
    HashAlg::from_name(h.name()).unwrap_or(HashAlg::Other)
}

fn digest(alg_name: &str, value: Vec<u8>) -> crate::Digest {
    crate::Digest {
        alg: HashAlg::from_name(alg_name).unwrap_or(HashAlg::Other),
        alg_name: alg_name.to_owned(),
        value,
    }
}

#[cfg(feature = "native-signatures")]
pub(crate) fn native_verify_prehashed(
    spki_der: &[u8],
    hash: HashAlg,
    digest: &[u8],
    signature: &[u8],
) -> bool {
    evidence::ima_keys::verify_prehashed(spki_der, to_evidence_hash(hash), digest, signature)
}

// No answer is better than one that did not check: a test that needs signatures says so.
#[cfg(not(feature = "native-signatures"))]
#[allow(clippy::panic)]
pub(crate) fn native_verify_prehashed(_: &[u8], _: HashAlg, _: &[u8], _: &[u8]) -> bool {
    panic!(
        "host::verify_prehashed in a native test needs zest-policy-sdk's `native-signatures` \
         feature: add it to the SDK under [dev-dependencies] of the policy crate"
    )
}

pub(crate) fn native_hash(alg: HashAlg, data: &[u8]) -> Option<Vec<u8>> {
    to_evidence_hash(alg).map(|h| h.digest(&[data]))
}

/// The directory of the SDK's sample evidence (`sdk/testdata`).
pub fn testdata_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// A UEFI event log made by the zest project: Secure Boot on, shim and GRUB loaded, the
/// kernel command line `... ro quiet` in PCR 8 (`sdk/testdata/README.md` lists its PCRs).
pub fn sample_boot_log() -> Vec<u8> {
    read(testdata_dir().join("boot.log"))
}

/// An IMA list (ascii, ima-ng, SHA-256 file digests) made by the zest project: the boot
/// aggregate of [`sample_boot_log`], system files, and `/tmp/payload.sh`.
#[allow(clippy::panic)]
pub fn sample_ima_list() -> String {
    String::from_utf8(read(testdata_dir().join("ascii_runtime_measurements")))
        .unwrap_or_else(|_| panic!("the sample IMA list is not UTF-8"))
}

pub(crate) fn native_parse_key(data: &[u8]) -> Option<PublicKey> {
    evidence::ima_keys::parse_key(data).map(|key| PublicKey {
        kind: match key.kind {
            evidence::ima_keys::KeyKind::Rsa => KeyKind::Rsa,
            evidence::ima_keys::KeyKind::Ec => KeyKind::Ec,
            evidence::ima_keys::KeyKind::Other => KeyKind::Other,
        },
        spki_der: key.spki_der,
        key_id: key.key_id,
    })
}

/// The batch zest builds from an IMA list (ASCII, as in
/// `/sys/kernel/security/ima/ascii_runtime_measurements`): template hashes checked with
/// `log_hash` (the policy's `log_hash_alg`), PCR 10 replayed in `bank` from the start of
/// the list, every entry treated as quoted.
#[cfg(feature = "runtime")]
pub fn ima_batch(text: &str, log_hash: HashAlg, bank: HashAlg) -> crate::runtime::Batch {
    let (bank_alg, log_alg) = ima_algs(log_hash, bank);
    let start = evidence::ima::ImaPosition::start(bank_alg);
    // Offline the replay's own end value plays the quote.
    let dry = evidence::ima::replay(text, bank_alg, log_alg, &start, None);
    replayed_batch(text, (bank_alg, log_alg), &start, 0, &dry.final_pcr10).0
}

/// [`ima_batch`] against a quoted PCR 10 of your choosing: with a value no prefix of the
/// list replays to, `replay.matched` is false and every entry is `after_quote`. (The
/// verifier then also fails the attestation with `ima.pcr_mismatch`, whatever the policy
/// says.)
#[cfg(feature = "runtime")]
pub fn ima_batch_quoted(text: &str, log_hash: HashAlg, bank: HashAlg, pcr10: &[u8]) -> crate::runtime::Batch {
    let (bank_alg, log_alg) = ima_algs(log_hash, bank);
    replayed_batch(
        text,
        (bank_alg, log_alg),
        &evidence::ima::ImaPosition::start(bank_alg),
        0,
        pcr10,
    )
    .0
}

/// The list as two attestations see it: the first `split` lines, then the rest, which
/// continues the first replay from entry `split` (`replay.start_offset`, absolute
/// `index`es). Give the second batch the state the first verdict returned
/// (`second.prior_state = verdict.state`), as the verifier does.
#[cfg(feature = "runtime")]
pub fn ima_batches(
    text: &str,
    log_hash: HashAlg,
    bank: HashAlg,
    split: usize,
) -> (crate::runtime::Batch, crate::runtime::Batch) {
    let (bank_alg, log_alg) = ima_algs(log_hash, bank);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (head, tail) = lines.split_at(split.min(lines.len()));
    let (head, tail) = (head.join("\n"), tail.join("\n"));
    let start = evidence::ima::ImaPosition::start(bank_alg);
    let dry = evidence::ima::replay(&head, bank_alg, log_alg, &start, None);
    let (first, next) = replayed_batch(&head, (bank_alg, log_alg), &start, 0, &dry.final_pcr10);
    let next = next.unwrap_or(start);
    let dry = evidence::ima::replay(&tail, bank_alg, log_alg, &next, None);
    let (second, _) = replayed_batch(
        &tail,
        (bank_alg, log_alg),
        &next,
        next.next_entry,
        &dry.final_pcr10,
    );
    (first, second)
}

#[cfg(feature = "runtime")]
fn ima_algs(log_hash: HashAlg, bank: HashAlg) -> (evidence::HashAlg, evidence::HashAlg) {
    (
        to_evidence_hash(bank).unwrap_or(evidence::HashAlg::Sha256),
        to_evidence_hash(log_hash).unwrap_or(evidence::HashAlg::Sha1),
    )
}

/// The batch of `text` replayed from `from` against `pcr10`, and where the next replay
/// starts.
#[cfg(feature = "runtime")]
fn replayed_batch(
    text: &str,
    (bank_alg, log_alg): (evidence::HashAlg, evidence::HashAlg),
    from: &evidence::ima::ImaPosition,
    start_offset: u64,
    pcr10: &[u8],
) -> (crate::runtime::Batch, Option<evidence::ima::ImaPosition>) {
    use crate::runtime::{Batch, Entry, ImaSignature, ReplayFacts, Template};
    use evidence::ima;

    let replay = ima::replay(text, bank_alg, log_alg, from, Some(pcr10));
    let entries = ima::checked_entries(text, &replay, start_offset)
        .into_iter()
        .map(|e| Entry {
            index: e.index,
            pcr: e.pcr,
            template: match e.template {
                ima::Template::Ima => Template::Ima,
                ima::Template::ImaNg => Template::ImaNg,
                ima::Template::ImaSig => Template::ImaSig,
                ima::Template::ImaBuf => Template::ImaBuf,
            },
            violation: e.violation,
            template_hash_ok: e.template_hash_ok,
            file_digest: digest(&e.digest_alg, e.digest),
            name: e.name,
            signature_raw: e.signature_raw,
            signature: e.signature.map(|s| ImaSignature {
                xattr_type: s.xattr_type,
                hash_algo: s.hash_algo,
                key_id: s.key_id,
                signature: s.signature,
            }),
            buffer: e.buffer,
            after_quote: e.after_quote,
        })
        .collect();
    let batch = Batch {
        entries,
        replay: ReplayFacts {
            bank: from_evidence_hash(bank_alg),
            start_offset,
            matched: replay.matched_after.is_some(),
        },
        boot_aggregates: Vec::new(),
        prior_state: None,
    };
    (batch, replay.next_position)
}

/// [`ima_batch`] of a file.
#[cfg(feature = "runtime")]
// A test helper: panicking with the path is its contract, as an assertion's is.
#[allow(clippy::panic)]
pub fn ima_batch_from_file(
    path: impl AsRef<Path>,
    log_hash: HashAlg,
    bank: HashAlg,
) -> crate::runtime::Batch {
    let bytes = read(&path);
    let text =
        String::from_utf8(bytes).unwrap_or_else(|_| panic!("{} is not UTF-8 text", path.as_ref().display()));
    ima_batch(&text, log_hash, bank)
}

/// The boot log zest builds from a binary UEFI event log
/// (`/sys/kernel/security/tpm0/binary_bios_measurements`): every event decoded, PCRs
/// replayed; the SHA-256 bank (else the first bank of the log) plays the quoted one.
#[cfg(feature = "measured-boot")]
pub fn boot_log(bytes: &[u8]) -> Result<crate::measured_boot::BootLog, String> {
    let quote = Quote::of_log(bytes)?;
    let log = evidence::uefi::EventLog::parse(bytes).map_err(|e| e.to_string())?;
    let everything: std::collections::BTreeSet<u32> = quote.pcrs.keys().copied().collect();
    Ok(wit_boot_log(&log, &quote, &everything))
}

/// The quote a test attests a boot log against: a bank and PCR values. Start from what the
/// log replays to ([`Quote::of_log`]) and change it the way a real quote would differ.
#[cfg(feature = "measured-boot")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub bank: HashAlg,
    pub pcrs: std::collections::BTreeMap<u32, Vec<u8>>,
}

#[cfg(feature = "measured-boot")]
impl Quote {
    /// The values the log replays to, in its SHA-256 bank (else its first bank): a quote
    /// the log matches.
    pub fn of_log(bytes: &[u8]) -> Result<Self, String> {
        let log = evidence::uefi::EventLog::parse(bytes).map_err(|e| e.to_string())?;
        let banks = log.replay();
        let bank = if banks.contains_key(&evidence::HashAlg::Sha256) {
            evidence::HashAlg::Sha256
        } else {
            *banks
                .keys()
                .next()
                .ok_or("the event log has no digest bank zest can replay")?
        };
        Ok(Self {
            bank: from_evidence_hash(bank),
            pcrs: banks.get(&bank).cloned().unwrap_or_default(),
        })
    }

    /// The quote with PCR `index` holding `value` (a replay that does not match).
    pub fn with_pcr(mut self, index: u32, value: Vec<u8>) -> Self {
        self.pcrs.insert(index, value);
        self
    }

    /// The quote without PCR `index` (a PCR that was not quoted).
    pub fn without_pcr(mut self, index: u32) -> Self {
        self.pcrs.remove(&index);
        self
    }
}

/// Attests a boot log as the verifier does, with `policy` deciding:
/// 1. every PCR of `policy.relevant_pcrs()` must be quoted (`measured_boot.missing_pcrs`);
/// 2. every event's data must be what its digests measured
///    (`measured_boot.invalid_event_data`);
/// 3. each compared PCR must replay to its quoted value (`measured_boot.invalid_pcr_<n>`);
/// 4. only then is the policy asked, with the events of the PCRs that replayed.
///
/// `prior_state` is the state of the agent's previous verdict (`None` the first time:
/// `first_attestation` is then true).
#[cfg(feature = "measured-boot")]
#[allow(clippy::panic)]
pub fn judge_boot<P: crate::MeasuredBootPolicy>(
    policy: &P,
    bytes: &[u8],
    quote: &Quote,
    prior_state: Option<Vec<u8>>,
) -> crate::Verdict {
    use evidence::uefi::{BootFinding, EventLog, check_boot};

    let log = EventLog::parse(bytes).unwrap_or_else(|e| panic!("the boot log does not parse: {e}"));
    let bank = to_evidence_hash(quote.bank)
        .unwrap_or_else(|| panic!("the quote's bank must be sha1, sha256, sha384 or sha512"));
    let check = check_boot(&log, &log.replay(), bank, &quote.pcrs, &policy.relevant_pcrs());
    if !check.findings.is_empty() {
        let failures = check
            .findings
            .iter()
            .map(|finding| match finding {
                BootFinding::MissingPcrs(pcrs) => crate::Failure::new(
                    "measured_boot.missing_pcrs",
                    serde_json::json!({"context": "PCRs are missing in quote", "data": pcrs}),
                ),
                BootFinding::EventData {
                    event,
                    pcr,
                    type_name,
                    bank,
                } => crate::Failure::new(
                    "measured_boot.invalid_event_data",
                    serde_json::json!({
                        "context": "boot event data does not match its digest",
                        "event": event, "pcr": pcr, "type": type_name, "bank": bank.name(),
                    }),
                )
                .at(*event as u64),
                BootFinding::PcrMismatch {
                    pcr,
                    replayed,
                    quoted,
                } => crate::Failure::new(
                    format!("measured_boot.invalid_pcr_{pcr}"),
                    serde_json::json!({
                        "context": "SHA256 boot event log PCR value does not match",
                        "got": crate::hex(replayed),
                        "expected": crate::hex(quoted),
                    }),
                ),
            })
            .collect();
        return crate::Verdict::with_failures(failures);
    }
    let mut boot = wit_boot_log(&log, quote, &check.verified_pcrs);
    boot.first_attestation = prior_state.is_none();
    boot.prior_state = prior_state;
    policy.evaluate(&boot)
}

/// `bytes` (a binary event log) with the data of event `number` edited and its digests
/// left alone: the forgery the verifier's data check catches for variables, separators and
/// actions, and cannot catch where digests do not cover the data (EV_IPL, images).
#[allow(clippy::panic)]
pub fn edit_event(bytes: &[u8], number: usize, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut log =
        evidence::uefi::EventLog::parse(bytes).unwrap_or_else(|e| panic!("the boot log does not parse: {e}"));
    let event = log
        .events
        .get_mut(number)
        .unwrap_or_else(|| panic!("the boot log has no event {number}"));
    edit(&mut event.data);
    log.encode()
}

/// The WIT view of `log` under `quote`: the events of `verified` PCRs, their digests in the
/// quoted bank authenticated.
#[cfg(feature = "measured-boot")]
fn wit_boot_log(
    log: &evidence::uefi::EventLog,
    quote: &Quote,
    verified: &std::collections::BTreeSet<u32>,
) -> crate::measured_boot::BootLog {
    use crate::measured_boot::{BootLog, Event, EventDigest, PcrValue};

    let bank = to_evidence_hash(quote.bank).unwrap_or(evidence::HashAlg::Sha256);
    let values = |pcrs: &std::collections::BTreeMap<u32, Vec<u8>>| -> Vec<PcrValue> {
        pcrs.iter()
            .map(|(index, value)| PcrValue {
                index: *index,
                value: value.clone(),
            })
            .collect()
    };
    let replayed = log.replay().get(&bank).map(values).unwrap_or_default();
    let quoted_id = bank.tpm_id();
    let events = log
        .events
        .iter()
        .filter(|ev| verified.contains(&ev.pcr))
        .map(|ev| Event {
            number: ev.number as u32,
            pcr: ev.pcr,
            event_type: ev.event_type,
            type_name: ev.type_name(),
            digests: ev
                .digests
                .iter()
                .map(|(alg, value)| {
                    let name = evidence::HashAlg::from_tpm(*alg)
                        .map(|h| h.name().to_owned())
                        .unwrap_or_else(|| format!("0x{alg:04x}"));
                    EventDigest {
                        value: digest(&name, value.clone()),
                        authenticated: *alg == quoted_id,
                    }
                })
                .collect(),
            data: ev.data.clone(),
            parsed: event_data(ev.decode()),
        })
        .collect();
    BootLog {
        quoted_bank: from_evidence_hash(bank),
        quoted: values(&quote.pcrs),
        replayed,
        events,
        first_attestation: true,
        prior_state: None,
    }
}

/// [`boot_log`] of a file.
#[cfg(feature = "measured-boot")]
// A test helper: panicking with the path is its contract, as an assertion's is.
#[allow(clippy::panic)]
pub fn boot_log_from_file(path: impl AsRef<Path>) -> crate::measured_boot::BootLog {
    boot_log(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[cfg(feature = "measured-boot")]
fn event_data(d: evidence::uefi::EventData) -> crate::measured_boot::EventData {
    use crate::measured_boot::{
        BootOption, EfiVariable, EventData, FirmwareBlob, ImageLoad, SignatureEntry, SignatureList,
        VariableData,
    };
    use evidence::uefi::{EventData as E, VariableData as V};

    let entry = |e: evidence::uefi::SignatureEntry| SignatureEntry {
        owner: e.owner.to_string(),
        data: e.data,
    };
    match d {
        E::SpecId => EventData::SpecId,
        E::StartupLocality(l) => EventData::StartupLocality(l),
        E::Text(t) => EventData::Text(t),
        E::Separator(v) => EventData::Separator(v),
        E::FirmwareBlob { base, length, .. } => EventData::FirmwareBlob(FirmwareBlob { base, length }),
        E::Variable(v) => EventData::Variable(EfiVariable {
            guid: v.guid.to_string(),
            name: v.name,
            parsed: match v.decoded {
                V::Boolean(b) => VariableData::Boolean(b),
                V::SignatureLists(lists) => VariableData::SignatureLists(
                    lists
                        .into_iter()
                        .map(|l| SignatureList {
                            signature_type: l.signature_type.to_string(),
                            entries: l.entries.into_iter().map(entry).collect(),
                        })
                        .collect(),
                ),
                V::Signature(e) => VariableData::Signature(entry(e)),
                // Entries logged without a list: one list without a type, as the host hands them.
                V::Signatures(entries) => VariableData::SignatureLists(vec![SignatureList {
                    signature_type: String::new(),
                    entries: entries.into_iter().map(entry).collect(),
                }]),
                V::BootOrder(o) => VariableData::BootOrder(o),
                V::BootOption {
                    enabled,
                    description,
                    device_path,
                } => VariableData::BootOption(BootOption {
                    enabled,
                    description,
                    device_path,
                }),
                V::Raw => VariableData::Raw,
            },
            data: v.data,
        }),
        E::ImageLoad(i) => EventData::Image(ImageLoad {
            location: i.location,
            length: i.length,
            link_time_address: i.link_time_address,
            device_path: i.device_path_text,
        }),
        E::Gpt { .. } | E::Raw => EventData::Raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measured_boot::BootLog;
    use crate::{Failure, LoadError, MeasuredBootPolicy, Verdict};

    #[test]
    fn a_list_against_a_quote_it_does_not_reach_is_unmatched() {
        let text = sample_ima_list();
        let matched = ima_batch(&text, HashAlg::Sha1, HashAlg::Sha256);
        assert!(matched.replay.matched);
        assert!(
            matched
                .entries
                .iter()
                .all(|e| e.template_hash_ok && !e.after_quote)
        );
        let unmatched = ima_batch_quoted(&text, HashAlg::Sha1, HashAlg::Sha256, &[0x5a; 32]);
        assert!(!unmatched.replay.matched);
        assert!(unmatched.entries.iter().all(|e| e.after_quote));
    }

    #[test]
    fn two_attestations_split_the_list_and_continue_its_replay() {
        let text = sample_ima_list();
        let whole = ima_batch(&text, HashAlg::Sha1, HashAlg::Sha256);
        let (first, second) = ima_batches(&text, HashAlg::Sha1, HashAlg::Sha256, 3);
        assert_eq!(first.entries.len(), 3);
        assert_eq!(second.replay.start_offset, 3);
        assert!(first.replay.matched && second.replay.matched);
        let indexes: Vec<u64> = first
            .entries
            .iter()
            .chain(&second.entries)
            .map(|e| e.index)
            .collect();
        let expected: Vec<u64> = whole.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, expected);
    }

    /// Counts its attestations in its state, and reports whether the host called it a
    /// first attestation.
    struct Counting;

    impl MeasuredBootPolicy for Counting {
        fn load(_: &[u8]) -> Result<Self, LoadError> {
            Ok(Self)
        }

        fn relevant_pcrs(&self) -> Vec<u32> {
            vec![7]
        }

        fn evaluate(&self, log: &BootLog) -> Verdict {
            let count = log.prior_state.as_deref().map_or(0, |s| s.len()) + 1;
            let context = serde_json::json!({"first": log.first_attestation, "count": count});
            Verdict {
                failures: vec![Failure::new("counting", context)],
                state: Some(vec![0; count]),
            }
        }
    }

    #[test]
    fn judge_boot_takes_the_verifiers_paths() {
        let bytes = sample_boot_log();
        let quote = Quote::of_log(&bytes).unwrap();
        let first = judge_boot(&Counting, &bytes, &quote, None);
        assert_eq!(
            first.failures[0].context_json(),
            serde_json::json!({"first": true, "count": 1})
        );
        let second = judge_boot(&Counting, &bytes, &quote, first.state);
        assert_eq!(
            second.failures[0].context_json(),
            serde_json::json!({"first": false, "count": 2})
        );

        let unquoted = judge_boot(&Counting, &bytes, &quote.clone().without_pcr(7), None);
        assert_eq!(unquoted.event_ids(), ["measured_boot.missing_pcrs"]);
        let mismatch = judge_boot(&Counting, &bytes, &quote.clone().with_pcr(7, vec![1; 32]), None);
        assert_eq!(mismatch.event_ids(), ["measured_boot.invalid_pcr_7"]);
        // A separator's data is covered by its digest.
        let log = boot_log(&bytes).unwrap();
        let separator = log
            .events
            .iter()
            .find(|e| e.type_name == "EV_SEPARATOR")
            .unwrap()
            .number as usize;
        let forged = edit_event(&bytes, separator, |data| data[0] ^= 1);
        let verdict = judge_boot(&Counting, &forged, &quote, None);
        assert_eq!(verdict.event_ids(), ["measured_boot.invalid_event_data"]);
        assert_eq!(verdict.failures[0].entry, Some(separator as u64));
    }
}
