//! Runtime (IMA) policies: the `runtime-policy` world, the batches of IMA entries handed to
//! it, and an instance that holds one runtime policy document.

use std::sync::Mutex;

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

use super::{HostState, PolicyError, PolicyRuntime, SlotPermit, WitVersion, call_error, v0_1};
use crate::evidence::HashAlg;
use crate::evidence::ima::{self, ImaReplay, Template};

mod bindings {
    wasmtime::component::bindgen!({
        world: "runtime-policy",
        path: "../wit",
        with: {
            "zest:policy/types": crate::policy::measured_boot::bindings::zest::policy::types,
            "zest:policy/host": crate::policy::measured_boot::bindings::zest::policy::host,
        },
    });
}

use super::measured_boot::{from_wit_hash, load_error_text, to_wit_hash};
use bindings::exports::zest::policy::runtime as wit;
use bindings::zest::policy::types as wit_types;
pub(super) use wit::{Batch as WitBatch, Template as WitTemplate};
pub use wit_types::{Failure, Verdict};

/// One batch of IMA evidence: the list text as the agent sent it and what the replay found.
pub struct ImaEvidence<'a> {
    pub text: &'a str,
    pub replay: &'a ImaReplay,
    pub bank: HashAlg,
    /// Offset of the first line of `text` in the agent's list.
    pub start_offset: u64,
    /// Boot aggregates (H(PCR0..7), H(PCR0..9)) per bank from a verified boot log.
    pub boot_aggregates: &'a [(HashAlg, Vec<u8>)],
    pub prior_state: Option<Vec<u8>>,
}

/// A runtime policy component with one policy document loaded.
pub struct RuntimePolicy {
    deadline: std::time::Duration,
    deadline_ticks: u64,
    inner: Mutex<(Store<HostState>, Instance)>,
    log_hash: wit_types::HashAlg,
    /// The pool slot of the Store; after `inner`, so it is given back once the Store is gone.
    _slot: SlotPermit,
}

/// An instance of either version of the world.
enum Instance {
    V0_2(bindings::RuntimePolicy),
    V0_1(v0_1::rt::RuntimePolicy),
}

enum InstancePre {
    V0_2(bindings::RuntimePolicyPre<HostState>),
    V0_1(v0_1::rt::RuntimePolicyPre<HostState>),
}

impl RuntimePolicy {
    /// Compiles (or finds compiled) a component and links it as a runtime policy of the WIT
    /// version it exports.
    fn instance_pre(runtime: &PolicyRuntime, component_bytes: &[u8]) -> Result<InstancePre, PolicyError> {
        let component = runtime.component(component_bytes)?;
        let mut linker: Linker<HostState> = Linker::new(runtime.engine());
        let wrong_world = |e: wasmtime::Error| PolicyError::WrongWorld {
            world: "runtime-policy",
            detail: super::world_hint(format!("{e:#}"), "export_runtime_policy"),
        };
        let version = super::exported_version(runtime.engine(), &component, "runtime");
        match version {
            WitVersion::V0_2 => bindings::RuntimePolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
            WitVersion::V0_1 => v0_1::rt::RuntimePolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
        }
        .map_err(wrong_world)?;
        super::link_guest_support(&mut linker, &component).map_err(wrong_world)?;
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        Ok(match version {
            WitVersion::V0_2 => InstancePre::V0_2(bindings::RuntimePolicyPre::new(pre).map_err(wrong_world)?),
            WitVersion::V0_1 => InstancePre::V0_1(v0_1::rt::RuntimePolicyPre::new(pre).map_err(wrong_world)?),
        })
    }

    /// Whether `component_bytes` is a component of the runtime-policy world (the check of
    /// an upload, before any document names it).
    pub fn check_world(runtime: &PolicyRuntime, component_bytes: &[u8]) -> Result<(), PolicyError> {
        Self::instance_pre(runtime, component_bytes).map(|_| ())
    }

    /// Instantiates `component_bytes` and loads `document` into it.
    pub fn load(
        runtime: &PolicyRuntime,
        name: &str,
        component_bytes: &[u8],
        document: &[u8],
    ) -> Result<Self, PolicyError> {
        Self::load_limited(runtime, runtime.limits(), name, component_bytes, document)
    }

    /// [`Self::load`] under `limits` (a tenant's quota; never above the runtime's).
    pub fn load_limited(
        runtime: &PolicyRuntime,
        limits: super::PolicyLimits,
        name: &str,
        component_bytes: &[u8],
        document: &[u8],
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
            Instance::V0_2(i) => i.zest_policy_runtime().call_load(&mut store, document),
            Instance::V0_1(i) => i
                .zest_policy_runtime()
                .call_load(&mut store, document)
                .map(|r| r.map_err(v0_1::load_error)),
        };
        loaded
            .map_err(|e| call_error(e, &mut store, deadline))?
            .map_err(|e| PolicyError::Load(load_error_text(&e)))?;
        store.set_epoch_deadline(ticks);
        let log_hash = match &instance {
            Instance::V0_2(i) => i.zest_policy_runtime().call_log_hash_alg(&mut store),
            Instance::V0_1(i) => i
                .zest_policy_runtime()
                .call_log_hash_alg(&mut store)
                .map(v0_1::hash_alg),
        }
        .map_err(|e| call_error(e, &mut store, deadline))?;
        Ok(Self {
            deadline,
            deadline_ticks: ticks,
            inner: Mutex::new((store, instance)),
            log_hash,
            _slot: slot,
        })
    }

    /// The template-hash algorithm the policy expects (`ima.log_hash_alg`), when it is one
    /// the host can compute.
    pub fn log_hash_alg(&self) -> Option<HashAlg> {
        from_wit_hash(self.log_hash)
    }

    /// Whether no call is inside this instance now (a hint for choosing an instance of a
    /// pool: it may change at once).
    pub fn is_idle(&self) -> bool {
        self.inner.try_lock().is_ok()
    }

    /// Evaluates one batch. A trap or timeout poisons this instance.
    pub fn evaluate(&self, evidence: &ImaEvidence<'_>) -> Result<Verdict, PolicyError> {
        let batch = batch(evidence);
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| PolicyError::Trap("instance lock poisoned".into()))?;
        let (store, instance) = &mut *guard;
        store.set_epoch_deadline(self.deadline_ticks);
        match instance {
            Instance::V0_2(i) => i.zest_policy_runtime().call_evaluate(&mut *store, &batch),
            Instance::V0_1(i) => i
                .zest_policy_runtime()
                .call_evaluate(&mut *store, &v0_1::batch(batch))
                .map(v0_1::verdict),
        }
        .map_err(|e| call_error(e, store, self.deadline))
    }
}

/// The WIT batch: every parsed entry with its replay facts.
fn batch(e: &ImaEvidence<'_>) -> wit::Batch {
    wit::Batch {
        entries: ima::checked_entries(e.text, e.replay, e.start_offset)
            .into_iter()
            .map(wit_entry)
            .collect(),
        replay: wit::ReplayFacts {
            bank: to_wit_hash(e.bank),
            start_offset: e.start_offset,
            matched: e.replay.matched_after.is_some(),
        },
        boot_aggregates: e
            .boot_aggregates
            .iter()
            .map(|(h, v)| wit_types::Digest {
                alg: to_wit_hash(*h),
                alg_name: h.name().to_owned(),
                value: v.clone(),
            })
            .collect(),
        prior_state: e.prior_state.clone(),
    }
}

fn wit_entry(entry: ima::CheckedEntry) -> wit::Entry {
    wit::Entry {
        index: entry.index,
        pcr: entry.pcr,
        template: match entry.template {
            Template::Ima => wit::Template::Ima,
            Template::ImaNg => wit::Template::ImaNg,
            Template::ImaSig => wit::Template::ImaSig,
            Template::ImaBuf => wit::Template::ImaBuf,
        },
        violation: entry.violation,
        template_hash_ok: entry.template_hash_ok,
        file_digest: wit_types::Digest {
            alg: HashAlg::from_name(&entry.digest_alg)
                .map(to_wit_hash)
                .unwrap_or(wit_types::HashAlg::Other),
            alg_name: entry.digest_alg,
            value: entry.digest,
        },
        name: entry.name,
        signature_raw: entry.signature_raw,
        signature: entry.signature.map(|s| wit::ImaSignature {
            xattr_type: s.xattr_type,
            hash_algo: s.hash_algo,
            key_id: s.key_id,
            signature: s.signature,
        }),
        buffer: entry.buffer,
        after_quote: entry.after_quote,
    }
}
