//! Policy decisions as sandboxed WebAssembly components (wasmtime, component model).
//!
//! One [`PolicyRuntime`] per process holds the Engine, the compiled components (by SHA-256
//! of their bytes, in memory and on disk) and an epoch ticker that enforces call deadlines.
//! A component is compiled once, however many policies and tenants use it; a policy
//! document is loaded into its own instance once and then serves every evaluation.
//! Guests get only the `host` interface of the WIT world: no files, network, clock or
//! environment. Any trap, timeout or refused allocation becomes a [`PolicyError`], never a
//! crash of the host.
//!
//! Every loaded policy (one Store with one component instance) takes slots of the pooling
//! allocator. [`PoolShape`] caps what one policy may take and sizes the pool; the runtime
//! hands out one permit per live policy, never more than the pool holds
//! ([`PolicyRuntime::instance_capacity`]), so a pool slot is never asked for in vain. The
//! [`PolicyRegistry`] keeps at most a bounded number of loaded policies and evicts the
//! least recently used.

mod builtin;
pub mod create;
pub mod create_inputs;
pub mod fairness;
pub mod measured_boot;
pub mod registry;
pub mod runtime;
mod v0_1;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits, StoreLimitsBuilder,
};

pub use builtin::{
    BUILTIN_MEASURED_BOOT, BUILTIN_RUNTIME, builtin_measured_boot, builtin_names, builtin_runtime,
};
pub use registry::{Document, DocumentLoader, PolicyRegistry, PolicySource};

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The pooling allocator's totals and what one loaded policy may take of them.
///
/// A loaded policy is one Store holding one component instance; the per-policy caps are
/// enforced by wasmtime when a component is compiled or deserialized (a component needing
/// more is refused with [`PolicyError::Compile`]), so however many policies are live, no
/// total is exceeded while at most [`PoolShape::policies`] of them are. The built-in
/// components take 3 core instances, 1 memory and 2 tables; the caps leave room for a
/// composition of a few components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    pub total_component_instances: u32,
    pub total_core_instances: u32,
    /// Each reserves address space for `memory_bytes` plus guard pages (not resident memory).
    pub total_memories: u32,
    pub total_tables: u32,
    pub core_instances_per_policy: u32,
    pub memories_per_policy: u32,
    pub tables_per_policy: u32,
}

/// The pool of every [`PolicyRuntime`]: room for 128 policies whatever their components.
pub const POOL: PoolShape = PoolShape {
    total_component_instances: 128,
    total_core_instances: 128 * 16,
    total_memories: 128 * 2,
    total_tables: 128 * 4,
    core_instances_per_policy: 16,
    memories_per_policy: 2,
    tables_per_policy: 4,
};

impl PoolShape {
    /// How many policies can be live at once: each total divided by what one policy may
    /// take of it, the least of these.
    pub fn policies(&self) -> usize {
        let fits = |total: u32, per_policy: u32| total.checked_div(per_policy).unwrap_or(u32::MAX);
        let n = self
            .total_component_instances
            .min(fits(self.total_core_instances, self.core_instances_per_policy))
            .min(fits(self.total_memories, self.memories_per_policy))
            .min(fits(self.total_tables, self.tables_per_policy));
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    fn config(&self, memory_bytes: usize) -> PoolingAllocationConfig {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(self.total_component_instances)
            .total_core_instances(self.total_core_instances)
            .total_memories(self.total_memories)
            .total_tables(self.total_tables)
            .max_core_instances_per_component(self.core_instances_per_policy)
            .max_memories_per_component(self.memories_per_policy)
            .max_tables_per_component(self.tables_per_policy)
            .max_memory_size(memory_bytes);
        pool
    }
}

/// Permits for live policies: one per Store, at most the pool's [`PoolShape::policies`].
#[derive(Debug)]
struct Slots {
    capacity: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// A live policy's share of the pool, held for as long as its Store lives (declare it
/// after the Store in a struct, so that the Store is dropped first).
#[derive(Debug)]
pub(crate) struct SlotPermit(Arc<Slots>);

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(1);
        drop(used);
        self.0.freed.notify_one();
    }
}

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
    #[error("the policy {0}")]
    Panic(String),
    #[error("no built-in policy named '{0}'")]
    UnknownBuiltin(String),
    #[error("all {capacity} policy instance slots stayed in use for {waited:?}")]
    Busy { capacity: usize, waited: Duration },
    #[error("this tenant's {share} concurrent policy calls stayed busy for {waited:?}")]
    TenantBusy { share: usize, waited: Duration },
    #[error("reading the policy document: {0}")]
    Document(String),
}

/// The host side of the policy sandbox, shared by every evaluation in the process.
pub struct PolicyRuntime {
    engine: Engine,
    limits: PolicyLimits,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// The disk cache and the key that authenticates its entries (kept outside it).
    cache_dir: Option<(PathBuf, aws_lc_rs::hmac::Key)>,
    stop_ticker: Arc<AtomicBool>,
    slots: Arc<Slots>,
}

impl PolicyRuntime {
    /// A runtime with the given limits; compiled components are also kept in `cache_dir`
    /// (when given) so that restarts skip compilation.
    pub fn new(limits: PolicyLimits, cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(
            POOL.config(limits.memory_bytes),
        ));
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
        let cache_dir = cache_dir.and_then(|dir| match cache_key(&dir) {
            Ok(key) => {
                let _ = crate::config::create_private_dir(&dir);
                Some((dir, key))
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no key for the compiled-policy cache: compiling every start");
                None
            }
        });
        Ok(Self {
            engine,
            limits,
            compiled: Mutex::new(HashMap::new()),
            cache_dir,
            stop_ticker,
            slots: Arc::new(Slots {
                capacity: POOL.policies(),
                used: Mutex::new(0),
                freed: Condvar::new(),
            }),
        })
    }

    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    /// How many policy instances (Stores) can be live at once: what the pool holds.
    pub fn instance_capacity(&self) -> usize {
        self.slots.capacity
    }

    /// Policy instances live now: cached, being loaded, or evicted but still finishing a
    /// call.
    pub fn live_instances(&self) -> usize {
        *self.slots.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for one more live policy instance. When every slot is taken, waits up to
    /// the call deadline for one to come free (an instance finishing its call after being
    /// evicted), then fails with [`PolicyError::Busy`] rather than asking the pool in vain.
    pub(crate) fn acquire_slot(&self) -> Result<SlotPermit, PolicyError> {
        let slots = &self.slots;
        let wait = self.limits.deadline;
        let started = Instant::now();
        let mut used = slots.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used >= slots.capacity {
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(PolicyError::Busy {
                    capacity: slots.capacity,
                    waited: wait,
                });
            }
            used = slots
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *used = used.saturating_add(1);
        Ok(SlotPermit(slots.clone()))
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
        if let Some(what) = not_a_component(bytes) {
            return Err(PolicyError::Compile(what));
        }
        let component = match self.load_cached(&digest) {
            Some(c) => c,
            None => self.compile_and_store(bytes, &digest)?,
        };
        self.compiled
            .lock()
            .map_err(|_| PolicyError::Compile("cache lock".into()))?
            .insert(digest, component.clone());
        Ok(component)
    }

    /// A cached entry is `HMAC-SHA256(key, source digest ‖ serialized) ‖ serialized`: loading
    /// one amounts to running native code, so only what this installation wrote is loaded.
    fn load_cached(&self, digest: &[u8; 32]) -> Option<Component> {
        let (dir, key) = self.cache_dir.as_ref()?;
        let path = dir.join(format!("{}.cwasm", hex::encode(digest)));
        let file = std::fs::read(&path).ok()?;
        let (tag, serialized) = file.split_at_checked(CACHE_TAG_LEN)?;
        let authentic = aws_lc_rs::hmac::verify(key, &[digest.as_slice(), serialized].concat(), tag).is_ok();
        if !authentic {
            tracing::warn!(path = %path.display(), "a compiled policy in the cache does not carry our tag: compiling it again");
            return None;
        }
        // SAFETY: the entry carries the tag of this installation's key over the source's
        // digest and these bytes, so it is what `compile_and_store` serialized for that
        // source; wasmtime still checks that it was made by a compatible engine.
        unsafe { Component::deserialize(&self.engine, serialized) }.ok()
    }

    fn compile_and_store(&self, bytes: &[u8], digest: &[u8; 32]) -> Result<Component, PolicyError> {
        tracing::debug!(bytes = bytes.len(), "compiling a policy component");
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        if let Some((dir, key)) = &self.cache_dir
            && let Ok(serialized) = component.serialize()
        {
            let tag = aws_lc_rs::hmac::sign(key, &[digest.as_slice(), &serialized].concat());
            let path = dir.join(format!("{}.cwasm", hex::encode(digest)));
            if let Err(e) = write_atomically(&path, &[tag.as_ref(), &serialized].concat()) {
                tracing::debug!(path = %path.display(), error = %e, "not caching a compiled policy");
            }
        }
        Ok(component)
    }

    /// Store data with this runtime's memory cap.
    pub(crate) fn store_state(&self, policy: &str, limits: PolicyLimits) -> HostState {
        HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes.min(self.limits.memory_bytes))
                .instances(POOL.core_instances_per_policy as usize)
                .trap_on_grow_failure(false)
                .build(),
            policy: policy.to_owned(),
            panic: None,
        }
    }

    /// `deadline` in epoch ticks, for one call.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

impl Drop for PolicyRuntime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// What a policy's store holds: its limits, its name for the logs, and the message of a
/// panic the guest reported before trapping.
pub(crate) struct HostState {
    pub limits: StoreLimits,
    pub policy: String,
    pub panic: Option<String>,
}

/// The version of the policy WIT a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WitVersion {
    V0_1,
    V0_2,
}

/// The version of `interface` (`runtime`, `measured-boot`) the component exports: 0.1.0
/// when it exports that one, else 0.2.0 (whose absence the linker then reports).
pub(crate) fn exported_version(engine: &Engine, component: &Component, interface: &str) -> WitVersion {
    let old = format!("zest:policy/{interface}@0.1.0");
    if component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == old)
    {
        WitVersion::V0_1
    } else {
        WitVersion::V0_2
    }
}

/// Text from a guest, cut to a size a log line and a failure context can carry.
pub(crate) fn bounded(mut text: String) -> String {
    const MAX: usize = 4096;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Links what a std guest needs beyond the policy world and may use safely, then makes
/// every other import trap:
/// - Rust's `HashMap` asks `wasi:random/insecure-seed` for its hash keys at first use; it
///   gets a constant, so evaluations stay deterministic and no entropy reaches the guest.
/// - std reads `wasi:cli/environment` (`RUST_BACKTRACE` when it panics, `std::env` in
///   policy code); the guest gets an empty environment, no arguments and no directory.
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
        } else if name.starts_with("wasi:cli/environment@0.2.") {
            let mut env = linker.instance(name)?;
            env.func_wrap("get-environment", |_, (): ()| {
                Ok((Vec::<(String, String)>::new(),))
            })?;
            env.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            env.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        }
    }
    linker.define_unknown_imports_as_traps(component)
}

/// Turns a wasmtime error from a call into a policy error: a deadline, the panic the guest
/// reported before it trapped, or the trap itself.
pub(crate) fn call_error(
    e: wasmtime::Error,
    store: &mut wasmtime::Store<HostState>,
    deadline: Duration,
) -> PolicyError {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PolicyError::Timeout(deadline),
        _ => match store.data_mut().panic.take() {
            Some(message) => PolicyError::Panic(message),
            None => PolicyError::Trap(format!("{e:#}")),
        },
    }
}

/// Length of a cache entry's tag (HMAC-SHA256).
const CACHE_TAG_LEN: usize = 32;

/// The key that authenticates the compiled-policy cache in `dir`: `<dir>.key` beside it
/// (0600), made on first use.
fn cache_key(dir: &std::path::Path) -> std::io::Result<aws_lc_rs::hmac::Key> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.with_extension("key");
    let secret = match std::fs::read(&path) {
        Ok(secret) if secret.len() == 32 => secret,
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not a 32-byte key",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut secret).map_err(|_| std::io::Error::other("no randomness"))?;
            // Written whole under a name of its own, then linked into place: of two
            // processes starting at once, one key wins and both use it.
            let mut nonce = [0u8; 8];
            aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness"))?;
            let tmp = path.with_extension(format!("key.{}.tmp", hex::encode(nonce)));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let linked = file
                .write_all(&secret)
                .and_then(|()| file.sync_all())
                .and_then(|()| std::fs::hard_link(&tmp, &path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => secret,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let theirs = std::fs::read(&path)?;
                    if theirs.len() != 32 {
                        return Err(std::io::Error::other(format!(
                            "{} is not a 32-byte key",
                            path.display()
                        )));
                    }
                    theirs
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret))
}

/// Writes `contents` to `path` through a temporary file of its own in the same directory, so
/// that two writers never interleave and a reader never sees half an entry.
fn write_atomically(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = path.with_extension(format!("{}.{}.tmp", std::process::id(), hex::encode(nonce)));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// One line on what `bytes` is when it is not a WebAssembly component: the mistakes a
/// policy author makes first (a core module from the wrong target, a text file).
fn not_a_component(bytes: &[u8]) -> Option<String> {
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const CORE_MODULE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    match (bytes.get(..4), bytes.get(4..8)) {
        (Some(b"\0asm"), Some(layer)) if layer == COMPONENT => None,
        (Some(b"\0asm"), Some(layer)) if layer == CORE_MODULE => Some(
            "this is a core WebAssembly module, not a component: build the policy with \
             `cargo build --release --target wasm32-wasip2`, which makes components"
                .into(),
        ),
        (Some(b"\0asm"), _) => Some("this is WebAssembly of an unknown version or layer, not a component".into()),
        _ if !bytes.is_empty() && std::str::from_utf8(bytes.get(..bytes.len().min(512)).unwrap_or_default()).is_ok() => {
            Some("this is text, not WebAssembly: give the policy's .wasm file (target/wasm32-wasip2/release/NAME.wasm)".into())
        }
        _ => Some(format!(
            "this is not WebAssembly: a component starts with \\0asm, this file with {}",
            hex::encode(bytes.get(..bytes.len().min(4)).unwrap_or_default())
        )),
    }
}

/// A wrong-world error with the fix: a component that exports no policy interface was
/// built without the SDK's export macro.
fn world_hint(detail: String, macro_name: &str) -> String {
    if detail.contains("no exported instance") {
        format!("{detail}; a policy crate exports its type with `zest_policy_sdk::{macro_name}!(MyPolicy);`")
    } else {
        detail
    }
}
