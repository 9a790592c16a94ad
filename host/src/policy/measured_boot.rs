//! Measured-boot policies: the `measured-boot-policy` world, the boot log handed to it, and
//! an instance that holds one reference state.

use std::sync::Mutex;

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

use super::{HostState, PolicyError, PolicyRuntime, SlotPermit, WitVersion, call_error, v0_1};
use crate::evidence::HashAlg;
use crate::evidence::uefi::{self, EventLog, PcrBanks};

/// Generated bindings. The `types` and `host` interfaces generated here are shared with
/// the runtime world (see `runtime.rs`), so the host imports are implemented once.
pub(super) mod bindings {
    wasmtime::component::bindgen!({ world: "measured-boot-policy", path: "../wit" });
}

use bindings::exports::zest::policy::measured_boot as wit;
use bindings::zest::policy::host as wit_host;
use bindings::zest::policy::types as wit_types;
pub use wit_types::{Failure, Verdict};

impl bindings::zest::policy::types::Host for HostState {}

impl bindings::zest::policy::host::Host for HostState {
    fn verify_prehashed(
        &mut self,
        spki_der: Vec<u8>,
        hash: wit_types::HashAlg,
        digest: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        crate::tpm::verify_prehashed(&spki_der, from_wit_hash(hash), &digest, &signature)
    }

    fn parse_key(&mut self, data: Vec<u8>) -> Option<wit_host::PublicKey> {
        use crate::evidence::ima_keys::{KeyKind, parse_key};
        parse_key(&data).map(|key| wit_host::PublicKey {
            kind: match key.kind {
                KeyKind::Rsa => wit_host::KeyKind::Rsa,
                KeyKind::Ec => wit_host::KeyKind::Ec,
                KeyKind::Other => wit_host::KeyKind::Other,
            },
            spki_der: key.spki_der,
            key_id: key.key_id,
        })
    }

    fn log(&mut self, level: wit_types::LogLevel, message: String) {
        let policy = &self.policy;
        let message = super::bounded(message);
        match level {
            wit_types::LogLevel::Error => tracing::error!(%policy, "{message}"),
            wit_types::LogLevel::Warn => tracing::warn!(%policy, "{message}"),
            wit_types::LogLevel::Info => tracing::info!(%policy, "{message}"),
            wit_types::LogLevel::Debug => tracing::debug!(%policy, "{message}"),
        }
    }

    fn hash(&mut self, alg: wit_types::HashAlg, data: Vec<u8>) -> Option<Vec<u8>> {
        from_wit_hash(alg).map(|h| h.digest(&[&data]))
    }

    fn panicked(&mut self, message: String) {
        let message = super::bounded(message);
        tracing::error!(policy = %self.policy, "the policy panicked: {message}");
        self.panic = Some(message);
    }
}

pub(super) fn from_wit_hash(h: wit_types::HashAlg) -> Option<HashAlg> {
    match h {
        wit_types::HashAlg::Sha1 => Some(HashAlg::Sha1),
        wit_types::HashAlg::Sha256 => Some(HashAlg::Sha256),
        wit_types::HashAlg::Sha384 => Some(HashAlg::Sha384),
        wit_types::HashAlg::Sha512 => Some(HashAlg::Sha512),
        wit_types::HashAlg::Other => None,
    }
}

pub(super) fn to_wit_hash(h: HashAlg) -> wit_types::HashAlg {
    match h {
        HashAlg::Sha1 => wit_types::HashAlg::Sha1,
        HashAlg::Sha256 => wit_types::HashAlg::Sha256,
        HashAlg::Sha384 => wit_types::HashAlg::Sha384,
        HashAlg::Sha512 => wit_types::HashAlg::Sha512,
    }
}

/// What the host knows about one boot when it asks a policy: the parsed log, the quoted
/// bank and its authenticated PCR values.
pub struct BootEvidence<'a> {
    pub log: &'a EventLog,
    pub replayed: &'a PcrBanks,
    pub quoted_bank: HashAlg,
    /// (PCR index, value) from a verified quote.
    pub quoted: &'a [(u32, Vec<u8>)],
    /// PCRs whose replay equals the quoted value: only their events reach the component,
    /// and their digests in the quoted bank are `authenticated`.
    pub verified_pcrs: &'a std::collections::BTreeSet<u32>,
    pub first_attestation: bool,
    pub prior_state: Option<Vec<u8>>,
}

/// A measured-boot policy component with one reference state loaded.
pub struct MeasuredBootPolicy {
    name: String,
    deadline: std::time::Duration,
    deadline_ticks: u64,
    inner: Mutex<(Store<HostState>, Instance)>,
    relevant_pcrs: Vec<u32>,
    /// The pool slot of the Store; after `inner`, so it is given back once the Store is gone.
    _slot: SlotPermit,
}

/// An instance of either version of the world.
enum Instance {
    V0_2(bindings::MeasuredBootPolicy),
    V0_1(v0_1::mb::MeasuredBootPolicy),
}

enum InstancePre {
    V0_2(bindings::MeasuredBootPolicyPre<HostState>),
    V0_1(v0_1::mb::MeasuredBootPolicyPre<HostState>),
}

impl MeasuredBootPolicy {
    /// Compiles (or finds compiled) a component and links it as a measured-boot policy of
    /// the WIT version it exports.
    fn instance_pre(runtime: &PolicyRuntime, component_bytes: &[u8]) -> Result<InstancePre, PolicyError> {
        let component = runtime.component(component_bytes)?;
        let mut linker: Linker<HostState> = Linker::new(runtime.engine());
        let wrong_world = |e: wasmtime::Error| PolicyError::WrongWorld {
            world: "measured-boot-policy",
            detail: super::world_hint(format!("{e:#}"), "export_measured_boot_policy"),
        };
        let version = super::exported_version(runtime.engine(), &component, "measured-boot");
        match version {
            WitVersion::V0_2 => {
                bindings::MeasuredBootPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            }
            WitVersion::V0_1 => {
                v0_1::mb::MeasuredBootPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            }
        }
        .map_err(wrong_world)?;
        // A std guest imports WASI interfaces it never calls; they trap if it ever does.
        super::link_guest_support(&mut linker, &component).map_err(wrong_world)?;
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        Ok(match version {
            WitVersion::V0_2 => {
                InstancePre::V0_2(bindings::MeasuredBootPolicyPre::new(pre).map_err(wrong_world)?)
            }
            WitVersion::V0_1 => {
                InstancePre::V0_1(v0_1::mb::MeasuredBootPolicyPre::new(pre).map_err(wrong_world)?)
            }
        })
    }

    /// Whether `component_bytes` is a component of the measured-boot-policy world.
    pub fn check_world(runtime: &PolicyRuntime, component_bytes: &[u8]) -> Result<(), PolicyError> {
        Self::instance_pre(runtime, component_bytes).map(|_| ())
    }

    /// Instantiates `component_bytes` and loads `refstate` into it.
    pub fn load(
        runtime: &PolicyRuntime,
        name: &str,
        component_bytes: &[u8],
        refstate: &[u8],
    ) -> Result<Self, PolicyError> {
        Self::load_limited(runtime, runtime.limits(), name, component_bytes, refstate)
    }

    /// [`Self::load`] under `limits` (a tenant's quota; never above the runtime's).
    pub fn load_limited(
        runtime: &PolicyRuntime,
        limits: super::PolicyLimits,
        name: &str,
        component_bytes: &[u8],
        refstate: &[u8],
    ) -> Result<Self, PolicyError> {
        let pre = Self::instance_pre(runtime, component_bytes)?;
        // Before the Store, so that on an error the Store is dropped first.
        let slot = runtime.acquire_slot()?;
        let mut store = Store::new(runtime.engine(), runtime.store_state(name, limits));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let deadline = limits.deadline.min(runtime.limits().deadline);
        let ticks = runtime.deadline_ticks(deadline);
        store.set_epoch_deadline(ticks);
        let instance = match &pre {
            InstancePre::V0_2(pre) => pre.instantiate(&mut store).map(Instance::V0_2),
            InstancePre::V0_1(pre) => pre.instantiate(&mut store).map(Instance::V0_1),
        }
        .map_err(|e| call_error(e, &mut store, deadline))?;
        store.set_epoch_deadline(ticks);
        let loaded = match &instance {
            Instance::V0_2(i) => i.zest_policy_measured_boot().call_load(&mut store, refstate),
            Instance::V0_1(i) => i
                .zest_policy_measured_boot()
                .call_load(&mut store, refstate)
                .map(|r| r.map_err(v0_1::load_error)),
        };
        loaded
            .map_err(|e| call_error(e, &mut store, deadline))?
            .map_err(|e| PolicyError::Load(load_error_text(&e)))?;
        store.set_epoch_deadline(ticks);
        let relevant_pcrs = match &instance {
            Instance::V0_2(i) => i.zest_policy_measured_boot().call_relevant_pcrs(&mut store),
            Instance::V0_1(i) => i.zest_policy_measured_boot().call_relevant_pcrs(&mut store),
        }
        .map_err(|e| call_error(e, &mut store, deadline))?;
        Ok(Self {
            name: name.to_owned(),
            deadline,
            deadline_ticks: ticks,
            inner: Mutex::new((store, instance)),
            relevant_pcrs,
            _slot: slot,
        })
    }

    /// PCRs the policy relies on.
    pub fn relevant_pcrs(&self) -> &[u32] {
        &self.relevant_pcrs
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether no call is inside this instance now (a hint for choosing an instance of a
    /// pool: it may change at once).
    pub fn is_idle(&self) -> bool {
        self.inner.try_lock().is_ok()
    }

    /// Evaluates one boot. A trap or timeout poisons this instance: the caller drops it and
    /// loads a fresh one.
    pub fn evaluate(&self, evidence: &BootEvidence<'_>) -> Result<Verdict, PolicyError> {
        let log = boot_log(evidence);
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| PolicyError::Trap("instance lock poisoned".into()))?;
        let (store, instance) = &mut *guard;
        store.set_epoch_deadline(self.deadline_ticks);
        match instance {
            Instance::V0_2(i) => i.zest_policy_measured_boot().call_evaluate(&mut *store, &log),
            Instance::V0_1(i) => i
                .zest_policy_measured_boot()
                .call_evaluate(&mut *store, &v0_1::boot_log(log))
                .map(v0_1::verdict),
        }
        .map_err(|e| call_error(e, store, self.deadline))
    }
}

pub(super) fn load_error_text(e: &wit_types::LoadError) -> String {
    match e {
        wit_types::LoadError::InvalidJson(m) => format!("invalid JSON: {m}"),
        wit_types::LoadError::Schema(m) => format!("schema: {m}"),
        wit_types::LoadError::Unsupported(m) => format!("unsupported: {m}"),
    }
}

/// The WIT view of a boot: the events of PCRs that replayed to their quoted values, with
/// their digests (authenticated in the quoted bank) and decoded data.
fn boot_log(e: &BootEvidence<'_>) -> wit::BootLog {
    let quoted_id = e.quoted_bank.tpm_id();
    let events = e
        .log
        .events
        .iter()
        .filter(|ev| e.verified_pcrs.contains(&ev.pcr))
        .map(|ev| wit::Event {
            number: ev.number as u32,
            pcr: ev.pcr,
            event_type: ev.event_type,
            type_name: ev.type_name(),
            digests: ev
                .digests
                .iter()
                .map(|(alg, value)| {
                    let hash = HashAlg::from_tpm(*alg);
                    wit::EventDigest {
                        value: wit_types::Digest {
                            alg: hash.map(to_wit_hash).unwrap_or(wit_types::HashAlg::Other),
                            alg_name: hash
                                .map(|h| h.name().to_owned())
                                .unwrap_or_else(|| format!("0x{alg:04x}")),
                            value: value.clone(),
                        },
                        authenticated: *alg == quoted_id,
                    }
                })
                .collect(),
            data: ev.data.clone(),
            parsed: event_data(ev.decode()),
        })
        .collect();
    let replayed = e
        .replayed
        .get(&e.quoted_bank)
        .map(|pcrs| {
            pcrs.iter()
                .map(|(i, v)| wit::PcrValue {
                    index: *i,
                    value: v.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    wit::BootLog {
        quoted_bank: to_wit_hash(e.quoted_bank),
        quoted: e
            .quoted
            .iter()
            .map(|(i, v)| wit::PcrValue {
                index: *i,
                value: v.clone(),
            })
            .collect(),
        replayed,
        events,
        first_attestation: e.first_attestation,
        prior_state: e.prior_state.clone(),
    }
}

fn event_data(d: uefi::EventData) -> wit::EventData {
    use uefi::EventData as E;
    match d {
        E::SpecId => wit::EventData::SpecId,
        E::StartupLocality(l) => wit::EventData::StartupLocality(l),
        E::Text(t) => wit::EventData::Text(t),
        E::Separator(v) => wit::EventData::Separator(v),
        E::FirmwareBlob { base, length, .. } => {
            wit::EventData::FirmwareBlob(wit::FirmwareBlob { base, length })
        }
        E::Variable(v) => wit::EventData::Variable(wit::EfiVariable {
            guid: v.guid.to_string(),
            name: v.name,
            parsed: variable_data(v.decoded),
            data: v.data,
        }),
        E::ImageLoad(i) => wit::EventData::Image(wit::ImageLoad {
            location: i.location,
            length: i.length,
            link_time_address: i.link_time_address,
            device_path: i.device_path_text,
        }),
        E::Gpt { .. } | E::Raw => wit::EventData::Raw,
    }
}

fn variable_data(d: uefi::VariableData) -> wit::VariableData {
    use uefi::VariableData as V;
    let entry = |e: uefi::SignatureEntry| wit::SignatureEntry {
        owner: e.owner.to_string(),
        data: e.data,
    };
    match d {
        V::Boolean(b) => wit::VariableData::Boolean(b),
        V::SignatureLists(lists) => wit::VariableData::SignatureLists(
            lists
                .into_iter()
                .map(|l| wit::SignatureList {
                    signature_type: l.signature_type.to_string(),
                    entries: l.entries.into_iter().map(entry).collect(),
                })
                .collect(),
        ),
        V::Signature(e) => wit::VariableData::Signature(entry(e)),
        // Entries logged without a list (shim's vendor_db authority events): one list
        // without a type; a new case would change the 0.2.0 world's types.
        V::Signatures(entries) => wit::VariableData::SignatureLists(vec![wit::SignatureList {
            signature_type: String::new(),
            entries: entries.into_iter().map(entry).collect(),
        }]),
        V::BootOrder(o) => wit::VariableData::BootOrder(o),
        V::BootOption {
            enabled,
            description,
            device_path,
        } => wit::VariableData::BootOption(wit::BootOption {
            enabled,
            description,
            device_path,
        }),
        V::Raw => wit::VariableData::Raw,
    }
}
