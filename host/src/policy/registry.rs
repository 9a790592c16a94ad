//! Loaded policy instances, one per (tenant, module digest, document digest): a document is
//! parsed once and then serves every agent of that tenant that uses it. An instance that
//! traps or times out is dropped and rebuilt on the next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::measured_boot::{BootEvidence, MeasuredBootPolicy};
use super::runtime::{ImaEvidence, RuntimePolicy};
use super::{PolicyError, PolicyRuntime};
use crate::evidence::HashAlg;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InstanceKey {
    tenant: String,
    module: Vec<u8>,
    document: Vec<u8>,
}

impl InstanceKey {
    fn new(tenant: &str, module: &[u8], document: &[u8]) -> Self {
        Self {
            tenant: tenant.to_owned(),
            module: HashAlg::Sha256.digest(&[module]),
            document: HashAlg::Sha256.digest(&[document]),
        }
    }
}

/// The loaded policies of a process.
pub struct PolicyRegistry {
    runtime: Arc<PolicyRuntime>,
    measured_boot: Mutex<HashMap<InstanceKey, Arc<MeasuredBootPolicy>>>,
    runtime_policies: Mutex<HashMap<InstanceKey, Arc<RuntimePolicy>>>,
}

fn poisoned() -> PolicyError {
    PolicyError::Trap("policy registry lock poisoned".into())
}

/// Errors after which an instance must not be entered again.
fn breaks_instance(e: &PolicyError) -> bool {
    matches!(e, PolicyError::Trap(_) | PolicyError::Timeout(_))
}

impl PolicyRegistry {
    pub fn new(runtime: Arc<PolicyRuntime>) -> Self {
        Self {
            runtime,
            measured_boot: Mutex::default(),
            runtime_policies: Mutex::default(),
        }
    }

    /// Instances currently loaded (both kinds).
    pub fn loaded(&self) -> usize {
        self.measured_boot.lock().map(|m| m.len()).unwrap_or(0)
            + self.runtime_policies.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Evaluates a boot with the measured-boot `module` holding `document` for `tenant`.
    pub fn evaluate_measured_boot(
        &self,
        tenant: &str,
        name: &str,
        module: &[u8],
        document: &[u8],
        evidence: &BootEvidence<'_>,
    ) -> Result<super::measured_boot::Verdict, PolicyError> {
        let key = InstanceKey::new(tenant, module, document);
        let existing = self
            .measured_boot
            .lock()
            .map_err(|_| poisoned())?
            .get(&key)
            .cloned();
        let policy = match existing {
            Some(p) => p,
            None => {
                // Loading runs guest code under its deadline; the map lock is not held meanwhile.
                let loaded = Arc::new(MeasuredBootPolicy::load(&self.runtime, name, module, document)?);
                self.measured_boot
                    .lock()
                    .map_err(|_| poisoned())?
                    .entry(key.clone())
                    .or_insert(loaded)
                    .clone()
            }
        };
        let result = policy.evaluate(evidence);
        if let Err(e) = &result
            && breaks_instance(e)
        {
            self.measured_boot.lock().map_err(|_| poisoned())?.remove(&key);
        }
        result
    }

    /// Evaluates an IMA batch with the runtime `module` holding `document` for `tenant`.
    pub fn evaluate_runtime(
        &self,
        tenant: &str,
        name: &str,
        module: &[u8],
        document: &[u8],
        evidence: &ImaEvidence<'_>,
    ) -> Result<super::runtime::Verdict, PolicyError> {
        let key = InstanceKey::new(tenant, module, document);
        let existing = self
            .runtime_policies
            .lock()
            .map_err(|_| poisoned())?
            .get(&key)
            .cloned();
        let policy = match existing {
            Some(p) => p,
            None => {
                let loaded = Arc::new(RuntimePolicy::load(&self.runtime, name, module, document)?);
                self.runtime_policies
                    .lock()
                    .map_err(|_| poisoned())?
                    .entry(key.clone())
                    .or_insert(loaded)
                    .clone()
            }
        };
        let result = policy.evaluate(evidence);
        if let Err(e) = &result
            && breaks_instance(e)
        {
            self.runtime_policies.lock().map_err(|_| poisoned())?.remove(&key);
        }
        result
    }
}
