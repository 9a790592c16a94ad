//! Policy decisions as sandboxed WebAssembly components (wasmtime, component model).
//!
//! One [`PolicyRuntime`] per process holds the Engine, the compiled components (by SHA-256
//! of their bytes, in memory and on disk) and an epoch ticker that enforces call deadlines.
//! A component is compiled once, however many policies and tenants use it; a policy
//! document is loaded into its own instance once and then serves every evaluation.
//! Guests get only the `host` interface of the WIT world: no files, network, clock or
//! environment. Any trap, timeout or refused allocation becomes a [`PolicyError`], never a
//! crash of the host.

mod builtin;
pub mod create;
pub mod measured_boot;
pub mod registry;
pub mod runtime;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits, StoreLimitsBuilder,
};

pub use builtin::{
    BUILTIN_MEASURED_BOOT, BUILTIN_RUNTIME, builtin_measured_boot, builtin_names, builtin_runtime,
};
pub use registry::{PolicyRegistry, PolicySource};

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Resource caps applied to every policy call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Linear memory a policy instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call (load or evaluate).
    pub deadline: Duration,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(2),
        }
    }
}

/// Why a policy could not give a verdict.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("the component does not implement the {world} world: {detail}")]
    WrongWorld { world: &'static str, detail: String },
    #[error("the policy rejected its document: {0}")]
    Load(String),
    #[error("the policy ran past its deadline of {0:?}")]
    Timeout(Duration),
    #[error("the policy trapped: {0}")]
    Trap(String),
    #[error("no built-in policy named '{0}'")]
    UnknownBuiltin(String),
}

/// The host side of the policy sandbox, shared by every evaluation in the process.
pub struct PolicyRuntime {
    engine: Engine,
    limits: PolicyLimits,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    cache_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
}

impl PolicyRuntime {
    /// A runtime with the given limits; compiled components are also kept in `cache_dir`
    /// (when given) so that restarts skip compilation.
    pub fn new(limits: PolicyLimits, cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(512)
            .total_memories(256)
            .total_tables(256)
            .max_memory_size(limits.memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PolicyError::Compile(format!("engine: {e}")))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("zest-policy-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PolicyError::Compile(format!("epoch ticker: {e}")))?;
        }
        if let Some(dir) = &cache_dir {
            let _ = std::fs::create_dir_all(dir);
        }
        Ok(Self {
            engine,
            limits,
            compiled: Mutex::new(HashMap::new()),
            cache_dir,
            stop_ticker,
        })
    }

    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled component for `bytes`: from memory, from the disk cache, or compiled now.
    pub fn component(&self, bytes: &[u8]) -> Result<Component, PolicyError> {
        let digest: [u8; 32] = crate::evidence::HashAlg::Sha256
            .digest(&[bytes])
            .try_into()
            .map_err(|_| PolicyError::Compile("digest".into()))?;
        if let Some(c) = self
            .compiled
            .lock()
            .map_err(|_| PolicyError::Compile("cache lock".into()))?
            .get(&digest)
        {
            return Ok(c.clone());
        }
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}.cwasm", hex::encode(digest))));
        let component = match cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: files in the cache directory are written only by `Component::serialize`
            // below, under zest's data directory, and keyed by the digest of their source.
            Some(path) => match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => c,
                Err(_) => self.compile_and_store(bytes, cached.as_deref())?,
            },
            None => self.compile_and_store(bytes, cached.as_deref())?,
        };
        self.compiled
            .lock()
            .map_err(|_| PolicyError::Compile("cache lock".into()))?
            .insert(digest, component.clone());
        Ok(component)
    }

    fn compile_and_store(
        &self,
        bytes: &[u8],
        cache: Option<&std::path::Path>,
    ) -> Result<Component, PolicyError> {
        tracing::debug!(bytes = bytes.len(), "compiling a policy component");
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        if let Some(path) = cache
            && let Ok(serialized) = component.serialize()
        {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, serialized).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
        Ok(component)
    }

    /// Store data with this runtime's memory cap.
    pub(crate) fn store_state(&self, policy: &str) -> HostState {
        HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(16)
                .trap_on_grow_failure(false)
                .build(),
            policy: policy.to_owned(),
        }
    }

    /// Deadline in epoch ticks for one call.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.limits.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

impl Drop for PolicyRuntime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// What a policy's store holds: its limits and its name for the logs.
pub(crate) struct HostState {
    pub limits: StoreLimits,
    pub policy: String,
}

/// Turns a wasmtime error from a call into a policy error.
/// Links what a std guest needs beyond the policy world and may use safely, then makes
/// every other import trap: Rust's `HashMap` asks `wasi:random/insecure-seed` for its hash
/// keys at first use; it gets a constant, so evaluations stay deterministic and no
/// entropy reaches the guest.
pub(crate) fn link_guest_support(
    linker: &mut wasmtime::component::Linker<HostState>,
    component: &Component,
) -> wasmtime::Result<()> {
    const SEED: (u64, u64) = (0x7a65_7374_7365_6564, 0x706f_6c69_6379_0001);
    let engine = linker.engine().clone();
    for (name, _) in component.component_type().imports(&engine) {
        // Whatever 0.2.x the guest's std was built against.
        if name.starts_with("wasi:random/insecure-seed@0.2.") {
            linker
                .instance(name)?
                .func_wrap("insecure-seed", |_, (): ()| Ok((SEED,)))?;
        }
    }
    linker.define_unknown_imports_as_traps(component)
}

pub(crate) fn call_error(e: wasmtime::Error, deadline: Duration) -> PolicyError {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PolicyError::Timeout(deadline),
        _ => PolicyError::Trap(format!("{e:#}")),
    }
}
