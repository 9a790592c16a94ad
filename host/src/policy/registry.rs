//! Loaded policy instances, one per (tenant, module digest, document digest): a document is
//! parsed once and then serves every agent of that tenant that uses it. An instance that
//! traps or times out is dropped and rebuilt on the next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::measured_boot::{BootEvidence, MeasuredBootPolicy};
use super::runtime::{ImaEvidence, RuntimePolicy};
use super::{PolicyError, PolicyRuntime};
use crate::evidence::HashAlg;
use crate::metrics::{self, Metrics};

/// A policy to run: its component and document, and their identities when the caller
/// knows them already (a stored record's module name and document checksum), which spares
/// hashing a megabyte of component and document on every attestation.
#[derive(Debug, Clone, Copy)]
pub struct PolicySource<'a> {
    pub name: &'a str,
    pub module: &'a [u8],
    pub document: &'a [u8],
    /// (module id such as `builtin:keylime-runtime` or `sha256:…`, SHA-256 hex of `document`)
    pub identity: Option<(&'a str, &'a str)>,
}

impl<'a> PolicySource<'a> {
    pub fn new(name: &'a str, module: &'a [u8], document: &'a [u8]) -> Self {
        Self {
            name,
            module,
            document,
            identity: None,
        }
    }

    /// The same source, identified by a stored record's module id and document checksum.
    pub fn known_as(self, module_id: &'a str, document_sha256: &'a str) -> Self {
        Self {
            identity: Some((module_id, document_sha256)),
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum InstanceKey {
    Digests {
        tenant: String,
        module: Vec<u8>,
        document: Vec<u8>,
    },
    Ids {
        tenant: String,
        module: String,
        document: String,
    },
}

impl InstanceKey {
    fn new(tenant: &str, source: &PolicySource<'_>) -> Self {
        match source.identity {
            Some((module, document)) => Self::Ids {
                tenant: tenant.to_owned(),
                module: module.to_owned(),
                document: document.to_owned(),
            },
            None => Self::Digests {
                tenant: tenant.to_owned(),
                module: HashAlg::Sha256.digest(&[source.module]),
                document: HashAlg::Sha256.digest(&[source.document]),
            },
        }
    }
}

/// Loaded instances of one kind of policy.
struct Instances<P>(Mutex<HashMap<InstanceKey, Arc<P>>>);

impl<P> Default for Instances<P> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<P> Instances<P> {
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Runs `eval` on the instance for `key`, loading it first if needed; an instance that
    /// breaks is dropped so the next call rebuilds it.
    fn run<R>(
        &self,
        key: InstanceKey,
        load: impl FnOnce() -> Result<P, PolicyError>,
        eval: impl FnOnce(&P) -> Result<R, PolicyError>,
    ) -> Result<R, PolicyError> {
        let existing = self.0.lock().map_err(|_| poisoned())?.get(&key).cloned();
        let policy = match existing {
            Some(p) => p,
            None => {
                // Loading runs guest code under its deadline; the map lock is not held meanwhile.
                let loaded = Arc::new(load()?);
                self.0
                    .lock()
                    .map_err(|_| poisoned())?
                    .entry(key.clone())
                    .or_insert(loaded)
                    .clone()
            }
        };
        let result = eval(&policy);
        if let Err(e) = &result
            && breaks_instance(e)
        {
            self.0.lock().map_err(|_| poisoned())?.remove(&key);
        }
        result
    }
}

/// The loaded policies of a process.
pub struct PolicyRegistry {
    runtime: Arc<PolicyRuntime>,
    /// Evaluation times and aborts per module, exported at `/metrics`.
    metrics: Arc<Metrics>,
    measured_boot: Instances<MeasuredBootPolicy>,
    runtime_policies: Instances<RuntimePolicy>,
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
        Self::with_metrics(runtime, Arc::default())
    }

    /// A registry that records its calls in `metrics`.
    pub fn with_metrics(runtime: Arc<PolicyRuntime>, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            metrics,
            measured_boot: Instances::default(),
            runtime_policies: Instances::default(),
        }
    }

    /// Whether `component` implements the runtime-policy world (compiling it once).
    pub fn check_runtime_component(&self, component: &[u8]) -> Result<(), PolicyError> {
        RuntimePolicy::check_world(&self.runtime, component)
    }

    /// Whether `component` implements the measured-boot-policy world.
    pub fn check_measured_boot_component(&self, component: &[u8]) -> Result<(), PolicyError> {
        MeasuredBootPolicy::check_world(&self.runtime, component)
    }

    /// Instances currently loaded (both kinds).
    pub fn loaded(&self) -> usize {
        self.measured_boot.len() + self.runtime_policies.len()
    }

    /// Loads `document` into the runtime `module` for `tenant` (or finds it loaded): the
    /// check a policy upload gets, and the instance later evaluations use.
    pub fn load_runtime(&self, tenant: &str, source: &PolicySource<'_>) -> Result<(), PolicyError> {
        self.runtime_policies.run(
            InstanceKey::new(tenant, source),
            || RuntimePolicy::load(&self.runtime, source.name, source.module, source.document),
            |_| Ok(()),
        )
    }

    /// The template-hash algorithm a loaded runtime policy expects (`ima.log_hash_alg`).
    pub fn runtime_log_hash(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
    ) -> Result<Option<HashAlg>, PolicyError> {
        self.runtime_policies.run(
            InstanceKey::new(tenant, source),
            || RuntimePolicy::load(&self.runtime, source.name, source.module, source.document),
            |p| Ok(p.log_hash_alg()),
        )
    }

    /// Loads a reference state into the measured-boot `module` for `tenant`; returns the
    /// PCRs the policy relies on.
    pub fn load_measured_boot(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
    ) -> Result<Vec<u32>, PolicyError> {
        self.measured_boot.run(
            InstanceKey::new(tenant, source),
            || MeasuredBootPolicy::load(&self.runtime, source.name, source.module, source.document),
            |p| Ok(p.relevant_pcrs().to_vec()),
        )
    }

    /// Evaluates a boot with the measured-boot `module` holding `document` for `tenant`.
    pub fn evaluate_measured_boot(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
        evidence: &BootEvidence<'_>,
    ) -> Result<super::measured_boot::Verdict, PolicyError> {
        let started = Instant::now();
        let result = self.measured_boot.run(
            InstanceKey::new(tenant, source),
            || MeasuredBootPolicy::load(&self.runtime, source.name, source.module, source.document),
            |p| p.evaluate(evidence),
        );
        self.record("measured-boot", source, started, &result);
        result
    }

    /// Evaluates an IMA batch with the runtime `module` holding `document` for `tenant`.
    pub fn evaluate_runtime(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
        evidence: &ImaEvidence<'_>,
    ) -> Result<super::runtime::Verdict, PolicyError> {
        let started = Instant::now();
        let result = self.runtime_policies.run(
            InstanceKey::new(tenant, source),
            || RuntimePolicy::load(&self.runtime, source.name, source.module, source.document),
            |p| p.evaluate(evidence),
        );
        self.record("runtime", source, started, &result);
        result
    }

    fn record<T>(
        &self,
        kind: &'static str,
        source: &PolicySource<'_>,
        started: Instant,
        result: &Result<T, PolicyError>,
    ) {
        let module = source.identity.map(|(module, _)| module).unwrap_or("unnamed");
        let labels = [("kind", kind), ("module", module)];
        self.metrics
            .observe(metrics::POLICY_SECONDS, &labels, started.elapsed());
        let reason = match result {
            Err(PolicyError::Trap(_)) => "trap",
            Err(PolicyError::Timeout(_)) => "timeout",
            _ => return,
        };
        self.metrics.count(
            metrics::POLICY_ABORTS,
            &[("kind", kind), ("module", module), ("reason", reason)],
        );
    }
}
