//! Step 1: what a round needs, from the agent's record; and the evidence a round judges,
//! in one shape whichever way it arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::evaluate::{MEASURED_BOOT_PCRS, parse_tpm_policy};
use super::failure::Failure;
use crate::evidence::ima::{ImaPosition, ImaState};
use crate::evidence::{HashAlg, PublicArea, Quote};
use crate::policy::{DocumentLoader, PolicyError, PolicySource};
use crate::store::{PolicyKind, PolicyRecord, VerifierAgent, VerifierStore};
use crate::tpm::AttestationKey;
use crate::verifier::Verifier;
use crate::verifier::modules::{ModuleBytes, resolve};
use crate::verifier::policies::judges_ima;

/// PCR 10: IMA.
pub const IMA_PCR: u32 = 10;
/// PCR 16: the pull agent's NK key binding.
pub const KEY_PCR: u32 = 16;

/// A policy a round must apply: its record, its component's bytes and, for a stored
/// runtime policy, the loader of its document (read only when its instance is not loaded).
pub struct PolicyInUse {
    /// The record; for a [`StoredDocument`] policy its `document` is a marker, not the bytes.
    pub record: PolicyRecord,
    pub module: ModuleBytes,
    /// Judges one request only (`/verify/evidence`): not worth a place in the cache.
    pub one_off: bool,
    pub stored: Option<StoredDocument>,
}

impl PolicyInUse {
    /// The document with its component, known by the record's module and checksum.
    pub fn source(&self) -> Option<PolicySource<'_>> {
        let marker = self.record.document.as_deref()?;
        let source = match &self.stored {
            Some(stored) => PolicySource::lazy(
                &self.record.name,
                &self.module,
                stored,
                &self.record.module,
                &self.record.checksum,
            ),
            None => PolicySource::new(&self.record.name, &self.module, marker)
                .known_as(&self.record.module, &self.record.checksum),
        };
        Some(if self.one_off { source.one_off() } else { source })
    }
}

/// A stored policy's document, read from the store the first time an instance needs it.
pub struct StoredDocument {
    store: Arc<dyn VerifierStore>,
    kind: PolicyKind,
    tenant: String,
    name: String,
    checksum: String,
    read: OnceLock<Vec<u8>>,
}

impl DocumentLoader for StoredDocument {
    fn load(&self) -> Result<&[u8], PolicyError> {
        if let Some(document) = self.read.get() {
            return Ok(document);
        }
        let record = self
            .store
            .policy(self.kind, &self.tenant, &self.name)
            .map_err(|e| PolicyError::Document(e.to_string()))?
            .ok_or_else(|| PolicyError::Document(format!("the policy '{}' is gone", self.name)))?;
        // An instance is cached under the checksum read first: a document replaced since
        // must not be loaded under it.
        if record.checksum != self.checksum {
            return Err(PolicyError::Document(format!(
                "the policy '{}' changed during the round",
                self.name
            )));
        }
        let document = record
            .document
            .ok_or_else(|| PolicyError::Document(format!("the policy '{}' has no document", self.name)))?;
        Ok(self.read.get_or_init(|| document))
    }
}

/// What the verifier holds about an agent and therefore demands of its evidence.
pub struct Expectations {
    pub tenant: String,
    /// The AK the registrar activated (never one the agent offers now).
    pub ak: AttestationKey,
    /// `tpm_policy`: PCR → accepted lowercase hex values.
    pub tpm_policy: BTreeMap<u8, Vec<String>>,
    pub runtime: Option<PolicyInUse>,
    pub measured_boot: Option<PolicyInUse>,
    /// Pull mode: PCR 16 must bind the agent's NK key.
    pub bind_key: bool,
    /// The NK key PCR 16 proved last (pull).
    pub known_key: Option<String>,
    /// Where the last verified IMA replay stopped, and in which boot.
    pub ima: Option<ImaState>,
    pub ima_policy_state: Option<Vec<u8>>,
    pub mb_policy_state: Option<Vec<u8>>,
    /// The boot time of the last verified round.
    pub last_boot_time: Option<u64>,
    /// The last verified TPM clock reading: (clock, resetCount, restartCount).
    pub last_clock: Option<(u64, u32, u32)>,
    /// No attestation of this agent has passed yet.
    pub first_attestation: bool,
}

pub fn policy_in_use(
    verifier: &Verifier,
    tenant: &str,
    kind: PolicyKind,
    name: &str,
) -> Result<Option<PolicyInUse>, Failure> {
    let missing = || {
        Failure::internal(
            "store",
            format!("the agent's {} policy '{name}' does not exist", kind.name()),
        )
    };
    let read_error = |e: crate::store::StoreError| {
        Failure::internal("store", format!("reading {} policy '{name}': {e}", kind.name()))
    };
    // A runtime policy's document is read only if its instance is not loaded; a refstate's
    // is read whole, since whether it applies depends on its content (and refstates are small).
    let (record, stored) = match kind {
        PolicyKind::Runtime => {
            let info = verifier
                .store
                .policy_info(kind, tenant, name)
                .map_err(read_error)?
                .ok_or_else(missing)?;
            if !judges_ima(&info) {
                return Ok(None);
            }
            let stored = StoredDocument {
                store: verifier.store.clone(),
                kind,
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                checksum: info.checksum.clone(),
                read: OnceLock::new(),
            };
            (info, Some(stored))
        }
        PolicyKind::MeasuredBoot => {
            let record = verifier
                .store
                .policy(kind, tenant, name)
                .map_err(read_error)?
                .ok_or_else(missing)?;
            if !judges_boot(&record) {
                return Ok(None);
            }
            (record, None)
        }
    };
    let module = resolve(verifier, tenant, kind, &record.module).map_err(|e| {
        Failure::internal(
            "module",
            format!("the {} component '{}': {}", kind.name(), record.module, e.message),
        )
    })?;
    Ok(Some(PolicyInUse {
        record,
        module,
        one_off: false,
        stored,
    }))
}

/// Whether a refstate record asks for the boot log to be judged: any document, except
/// Keylime's `{}` under a built-in component (Keylime then checks neither the replay nor the
/// policy).
fn judges_boot(record: &PolicyRecord) -> bool {
    let Some(document) = record.document.as_deref() else {
        return false;
    };
    let empty = serde_json::from_slice::<serde_json::Value>(document)
        .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()));
    !(empty && record.module.starts_with("builtin:"))
}

fn decode_state(state: Option<&str>, what: &str) -> Result<Option<Vec<u8>>, Failure> {
    state
        .map(|s| B64.decode(s))
        .transpose()
        .map_err(|e| Failure::internal("record", format!("the stored {what} state: {e}")))
}

impl Expectations {
    /// Reads what the agent's record demands: its policies and components from the store,
    /// its AK, its saved IMA position and clock.
    pub fn of(verifier: &Verifier, agent: &VerifierAgent) -> Result<Self, Failure> {
        let ak = B64
            .decode(&agent.ak_tpm)
            .ok()
            .and_then(|b| PublicArea::from_tpm2b(&b).ok())
            .map(AttestationKey::new)
            .ok_or_else(|| Failure::internal("record", "the enrolled ak_tpm does not parse"))?;
        let tpm_policy = parse_tpm_policy(&agent.tpm_policy)
            .map_err(|e| Failure::message("pcr_validation.invalid_tpm_policy", e).irrecoverable())?;
        let runtime = policy_in_use(
            verifier,
            &agent.tenant,
            PolicyKind::Runtime,
            &agent.runtime_policy,
        )?;
        // A list judged under another version of the runtime policy is judged again from
        // its start (records from before versions name none: theirs counts as this one).
        let same_policy = match (&agent.ima_policy, &runtime) {
            (Some(judged), Some(live)) => *judged == live.record.checksum,
            _ => true,
        };
        let ima = match (&agent.pcr10, agent.boottime) {
            (Some(pcr10), Some(boot_time)) if same_policy => Some(ImaState {
                position: ImaPosition {
                    next_entry: agent.next_ima_ml_entry,
                    pcr10: hex::decode(pcr10)
                        .map_err(|e| Failure::internal("record", format!("the stored PCR 10: {e}")))?,
                },
                boot_time,
            }),
            _ => None,
        };
        Ok(Self {
            tenant: agent.tenant.clone(),
            ak,
            tpm_policy,
            runtime,
            measured_boot: policy_in_use(
                verifier,
                &agent.tenant,
                PolicyKind::MeasuredBoot,
                &agent.mb_policy,
            )?,
            bind_key: !agent.push,
            known_key: agent.public_key.clone(),
            ima,
            ima_policy_state: decode_state(agent.ima_policy_state.as_deref(), "runtime policy")?,
            mb_policy_state: decode_state(agent.mb_policy_state.as_deref(), "measured-boot policy")?,
            last_boot_time: agent.boottime,
            last_clock: agent.tpm_clock,
            first_attestation: agent.attestation_count == 0,
        })
    }

    /// The first IMA entry to ask the agent for: where the saved replay ends, or 0.
    pub fn ima_offset(&self) -> u64 {
        self.ima.as_ref().map_or(0, |s| s.position.next_entry)
    }

    /// Every PCR the quote must carry.
    pub fn required_pcrs(&self) -> BTreeSet<u32> {
        required_pcrs(
            &self.tpm_policy,
            self.runtime.is_some(),
            self.measured_boot.is_some(),
            self.bind_key,
        )
    }
}

/// Every PCR a quote must carry: the `tpm_policy` PCRs with values, 10 with a runtime
/// policy, the boot PCRs with a refstate, 16 when the NK key is bound (pull mode).
pub fn required_pcrs(
    tpm_policy: &BTreeMap<u8, Vec<String>>,
    runtime: bool,
    measured_boot: bool,
    bind_key: bool,
) -> BTreeSet<u32> {
    let mut pcrs: BTreeSet<u32> = tpm_policy
        .iter()
        .filter(|(_, accepted)| !accepted.is_empty())
        .map(|(pcr, _)| u32::from(*pcr))
        .collect();
    if runtime {
        pcrs.insert(IMA_PCR);
    }
    if measured_boot {
        pcrs.extend(MEASURED_BOOT_PCRS);
    }
    if bind_key {
        pcrs.insert(KEY_PCR);
    }
    pcrs
}

/// An IMA list as the agent sent it: the text from entry `offset` on.
pub struct ImaList {
    pub text: String,
    pub offset: u64,
}

/// The evidence of one round, whichever way it arrived.
pub struct Evidence {
    pub quote: Quote,
    /// The bank the quote's PCRs are read from.
    pub hash: HashAlg,
    /// What the quote's extraData must be.
    pub nonce: Vec<u8>,
    /// The boot time the agent reports (pull: `boottime`, 0 when absent as in Keylime;
    /// push: `system_info.boot_time`).
    pub boot_time: Option<u64>,
    pub ima: Option<ImaList>,
    /// The UEFI log, or why it could not be decoded.
    pub boot_log: Option<Result<Vec<u8>, Failure>>,
    /// Pull: the NK key the agent claims (bound in PCR 16).
    pub pubkey: Option<String>,
}
