//! Native test helpers: turn real IMA logs and UEFI event logs into the batches and boot
//! logs zest hands a policy, with zest's own parsers and replay, so a policy's `cargo test`
//! sees what the server would show it. There is no quote offline: the replayed PCR values
//! stand in for quoted ones and every digest of the chosen bank counts as authenticated.
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

pub(crate) fn native_verify_prehashed(
    spki_der: &[u8],
    hash: HashAlg,
    digest: &[u8],
    signature: &[u8],
) -> bool {
    evidence::ima_keys::verify_prehashed(spki_der, to_evidence_hash(hash), digest, signature)
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
    use crate::runtime::{Batch, Entry, ImaSignature, ReplayFacts, Template};
    use evidence::ima;

    let bank_alg = to_evidence_hash(bank).unwrap_or(evidence::HashAlg::Sha256);
    let log_alg = to_evidence_hash(log_hash).unwrap_or(evidence::HashAlg::Sha1);
    let start = ima::ImaPosition::start(bank_alg);
    // Offline the replay's own end value plays the quote.
    let dry = ima::replay(text, bank_alg, log_alg, &start, None);
    let replay = ima::replay(text, bank_alg, log_alg, &start, Some(&dry.final_pcr10));
    let entries = ima::checked_entries(text, &replay, 0)
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
    Batch {
        entries,
        replay: ReplayFacts {
            bank: from_evidence_hash(bank_alg),
            start_offset: 0,
            matched: replay.matched_after.is_some(),
        },
        boot_aggregates: Vec::new(),
        prior_state: None,
    }
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
    use crate::measured_boot::{BootLog, Event, EventDigest, PcrValue};
    use evidence::uefi::EventLog;

    let log = EventLog::parse(bytes).map_err(|e| e.to_string())?;
    let banks = log.replay();
    let bank = if banks.contains_key(&evidence::HashAlg::Sha256) {
        evidence::HashAlg::Sha256
    } else {
        *banks
            .keys()
            .next()
            .ok_or("the event log has no digest bank zest can replay")?
    };
    let pcrs: Vec<PcrValue> = banks
        .get(&bank)
        .map(|values| {
            values
                .iter()
                .map(|(index, value)| PcrValue {
                    index: *index,
                    value: value.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let quoted_id = bank.tpm_id();
    let events = log
        .events
        .iter()
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
    Ok(BootLog {
        quoted_bank: from_evidence_hash(bank),
        quoted: pcrs.clone(),
        replayed: pcrs,
        events,
        first_attestation: true,
        prior_state: None,
    })
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
        EfiVariable, EventData, ImageLoad, SignatureEntry, SignatureList, VariableData,
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
        E::FirmwareBlob { base, length, .. } => EventData::FirmwareBlob((base, length)),
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
                V::BootOrder(o) => VariableData::BootOrder(o),
                V::BootOption {
                    enabled,
                    description,
                    device_path,
                } => VariableData::BootOption((enabled, description, device_path)),
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
