//! Loaded policy instances, pooled per (tenant, module digest, document digest): a document
//! is parsed once and then serves every agent of that tenant that uses it. When every
//! instance of a document is busy (one call at a time enters an instance), another is loaded
//! if the cache has room, up to one per worker thread, so agents sharing a policy are not
//! serialised behind one instance. An instance that traps or times out is dropped and
//! rebuilt on the next use. The instances live in a bounded cache (least recently used
//! evicted, one-off loads first), so that however many documents come and go, the pooling
//! allocator's slots are never exhausted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::measured_boot::{BootEvidence, MeasuredBootPolicy};
use super::runtime::{ImaEvidence, RuntimePolicy};
use super::{PolicyError, PolicyLimits, PolicyRuntime};
use crate::evidence::HashAlg;
use crate::metrics::{self, Metrics};

/// Reads a policy document when it is needed: only when no instance is loaded for it, so a
/// round whose policy is loaded reads no document (a 100,000-path policy is megabytes).
pub trait DocumentLoader: Sync {
    fn load(&self) -> Result<&[u8], PolicyError>;
}

/// A policy document: its bytes, or a loader for them.
#[derive(Clone, Copy)]
pub enum Document<'a> {
    Bytes(&'a [u8]),
    Lazy(&'a dyn DocumentLoader),
}

impl std::fmt::Debug for Document<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

/// How many call deadlines a call waits for its tenant's turn before it fails (TenantBusy).
const QUEUE_WAITS: u32 = 15;

/// A policy to run: its component and document, and their identities when the caller
/// knows them already (a stored record's module name and document checksum), which spares
/// hashing a megabyte of component and document on every attestation.
#[derive(Debug, Clone, Copy)]
pub struct PolicySource<'a> {
    pub name: &'a str,
    pub module: &'a [u8],
    pub document: Document<'a>,
    /// (module id such as `builtin:keylime-runtime` or `sha256:…`, SHA-256 hex of `document`)
    pub identity: Option<(&'a str, &'a str)>,
    /// A load that serves one check or round only (an upload check, a `/verify/evidence`
    /// document): its instance takes only free room in the cache and is evicted first.
    pub one_off: bool,
}

impl<'a> PolicySource<'a> {
    pub fn new(name: &'a str, module: &'a [u8], document: &'a [u8]) -> Self {
        Self {
            name,
            module,
            document: Document::Bytes(document),
            identity: None,
            one_off: false,
        }
    }

    /// A stored policy known by its module id and document checksum, whose document
    /// `loader` reads only if no instance is loaded for that identity. The loader must
    /// return the document with exactly that checksum.
    pub fn lazy(
        name: &'a str,
        module: &'a [u8],
        loader: &'a dyn DocumentLoader,
        module_id: &'a str,
        document_sha256: &'a str,
    ) -> Self {
        Self {
            name,
            module,
            document: Document::Lazy(loader),
            identity: Some((module_id, document_sha256)),
            one_off: false,
        }
    }

    /// The document's bytes (read now if lazy).
    pub fn document(&self) -> Result<&'a [u8], PolicyError> {
        match self.document {
            Document::Bytes(bytes) => Ok(bytes),
            Document::Lazy(loader) => loader.load(),
        }
    }

    /// The same source, identified by a stored record's module id and document checksum.
    pub fn known_as(self, module_id: &'a str, document_sha256: &'a str) -> Self {
        Self {
            identity: Some((module_id, document_sha256)),
            ..self
        }
    }

    /// The same source, for a load that serves one check or round only: its instance takes
    /// no room from the policies agents use (see [`PolicyRegistry`]).
    pub fn one_off(self) -> Self {
        Self {
            one_off: true,
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
    fn new(tenant: &str, source: &PolicySource<'_>) -> Result<Self, PolicyError> {
        Ok(match source.identity {
            Some((module, document)) => Self::Ids {
                tenant: tenant.to_owned(),
                module: module.to_owned(),
                document: document.to_owned(),
            },
            None => Self::Digests {
                tenant: tenant.to_owned(),
                module: HashAlg::Sha256.digest(&[source.module]),
                document: HashAlg::Sha256.digest(&[source.document()?]),
            },
        })
    }
}

/// Which world a cached instance implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    MeasuredBoot,
    Runtime,
}

impl Kind {
    fn metric_label(self) -> metrics::KindLabel {
        let kind = match self {
            Kind::MeasuredBoot => "measured-boot",
            Kind::Runtime => "runtime",
        };
        metrics::KindLabel { kind }
    }
}

/// The pooled instances of one document, of either kind.
enum Loaded {
    MeasuredBoot(Vec<Arc<MeasuredBootPolicy>>),
    Runtime(Vec<Arc<RuntimePolicy>>),
}

impl Loaded {
    fn len(&self) -> usize {
        match self {
            Loaded::MeasuredBoot(v) => v.len(),
            Loaded::Runtime(v) => v.len(),
        }
    }

    fn busy(&self) -> usize {
        match self {
            Loaded::MeasuredBoot(v) => v.iter().filter(|p| !p.is_idle()).count(),
            Loaded::Runtime(v) => v.iter().filter(|p| !p.is_idle()).count(),
        }
    }
}

/// The two kinds of loaded policy, for the one cache that holds both.
trait Cached: Sized {
    const KIND: Kind;
    fn into_loaded(policy: Arc<Self>) -> Loaded;
    fn found_in(loaded: &Loaded) -> Option<&Vec<Arc<Self>>>;
    fn found_in_mut(loaded: &mut Loaded) -> Option<&mut Vec<Arc<Self>>>;
    /// No call is inside the instance now (a hint: it may change at once).
    fn idle(&self) -> bool;
}

/// `Cached` for a policy type held in variant `$variant` of [`Loaded`] (of kind `$variant`).
macro_rules! cached {
    ($policy:ty, $variant:ident) => {
        impl Cached for $policy {
            const KIND: Kind = Kind::$variant;
            fn into_loaded(policy: Arc<Self>) -> Loaded {
                Loaded::$variant(vec![policy])
            }
            fn found_in(loaded: &Loaded) -> Option<&Vec<Arc<Self>>> {
                match loaded {
                    Loaded::$variant(p) => Some(p),
                    _ => None,
                }
            }
            fn found_in_mut(loaded: &mut Loaded) -> Option<&mut Vec<Arc<Self>>> {
                match loaded {
                    Loaded::$variant(p) => Some(p),
                    _ => None,
                }
            }
            fn idle(&self) -> bool {
                self.is_idle()
            }
        }
    };
}

cached!(MeasuredBootPolicy, MeasuredBoot);
cached!(RuntimePolicy, Runtime);

/// An instance the cache offers a call: an idle one if there is one.
struct Pick<P> {
    policy: Arc<P>,
    idle: bool,
    /// Instances pooled for the document.
    instances: usize,
}

type CacheKey = (Kind, InstanceKey);

/// What [`Cache::insert`] did; whatever it returns besides `policy` is to be dropped
/// outside the cache lock (dropping a Store returns its pool slots).
enum Inserted<P> {
    /// `policy` was loaded; `evicted` left the cache to make room (a one-off `policy`
    /// itself, when there was no room for it).
    New { policy: Arc<P>, evicted: Vec<Loaded> },
    /// Another thread cached `policy` for the key meanwhile; `unused` is not needed.
    Raced { policy: Arc<P>, unused: Arc<P> },
}

struct Entry {
    policy: Loaded,
    /// The cache's clock at the last use that counts (see [`Cache::hit`]).
    last_used: u64,
    /// Loaded for a one-off check and not used by an evaluation since: evicted first.
    one_off: bool,
}

/// Loaded instances of both kinds, at most `max` of them, least recently used evicted
/// first, one-off loads before any other (see [`Cache::insert`]).
#[derive(Default)]
struct Cache {
    entries: HashMap<CacheKey, Entry>,
    clock: u64,
}

/// One-off instances (upload checks, `/verify/evidence` documents) kept at most, however
/// much room the cache has: they are kept only so that the calls of one check or round
/// share an instance.
const ONE_OFF_KEPT: usize = 4;

impl Cache {
    fn tick(&mut self) -> u64 {
        self.clock = self.clock.wrapping_add(1);
        self.clock
    }

    /// An instance for `key` when loaded: an idle one if any, else one to wait for (in
    /// turn, so waiting calls spread over the pool). A use that is not one-off makes the
    /// entry the most recently used (and no longer one-off); a one-off use refreshes only a
    /// one-off entry.
    fn hit<P: Cached>(&mut self, key: &CacheKey, one_off: bool) -> Option<Pick<P>> {
        let now = self.tick();
        let entry = self.entries.get_mut(key)?;
        if !one_off || entry.one_off {
            entry.last_used = now;
            entry.one_off = one_off;
        }
        let pool = P::found_in(&entry.policy)?;
        let (policy, idle) = match pool.iter().find(|p| p.idle()) {
            Some(p) => (p.clone(), true),
            None => (pool.get(now as usize % pool.len().max(1))?.clone(), false),
        };
        Some(Pick {
            policy,
            idle,
            instances: pool.len(),
        })
    }

    /// Instances cached, over all entries.
    fn instances(&self) -> usize {
        self.entries.values().map(|e| e.policy.len()).sum()
    }

    /// Adds `policy` to the pool of `key` if the entry is still there with fewer than
    /// `per_document` instances and the cache has room for one more without evicting;
    /// otherwise hands it back (to serve one call, then go).
    fn grow<P: Cached>(
        &mut self,
        key: &CacheKey,
        policy: Arc<P>,
        max: usize,
        per_document: usize,
    ) -> Result<(), Arc<P>> {
        if self.instances() >= max {
            return Err(policy);
        }
        match self
            .entries
            .get_mut(key)
            .and_then(|e| P::found_in_mut(&mut e.policy))
        {
            Some(pool) if pool.len() < per_document => {
                pool.push(policy);
                Ok(())
            }
            _ => Err(policy),
        }
    }

    /// Caches `loaded` under `key` (unless another thread cached an instance for `key`
    /// meanwhile: then that one is used), then evicts down to `max` entries:
    /// - an instance an evaluation needs evicts one-off instances first, then the least
    ///   recently used;
    /// - a one-off instance only takes free room or another one-off instance's room (at
    ///   most [`ONE_OFF_KEPT`] of them), never a kept instance's: with no room it is not
    ///   kept at all.
    fn insert<P: Cached>(
        &mut self,
        key: &CacheKey,
        loaded: Arc<P>,
        one_off: bool,
        max: usize,
    ) -> Inserted<P> {
        if let Some(pick) = self.hit::<P>(key, one_off) {
            return Inserted::Raced {
                policy: pick.policy,
                unused: loaded,
            };
        }
        let now = self.tick();
        self.entries.insert(
            key.clone(),
            Entry {
                policy: P::into_loaded(loaded.clone()),
                last_used: now,
                one_off,
            },
        );
        let mut evicted = Vec::new();
        while self.instances() > max.max(1) || self.one_offs() > ONE_OFF_KEPT {
            let victim = match self.victim(key, one_off) {
                Some(victim) => victim,
                None if one_off => key.clone(),
                None => break,
            };
            match self.entries.remove(&victim) {
                Some(entry) => evicted.push(entry.policy),
                None => break,
            }
        }
        Inserted::New {
            policy: loaded,
            evicted,
        }
    }

    /// Takes every entry of `tenant` out of the cache (to be dropped outside the lock).
    fn remove_tenant(&mut self, tenant: &str) -> Vec<Loaded> {
        let keys: Vec<CacheKey> = self
            .entries
            .keys()
            .filter(|(_, key)| match key {
                InstanceKey::Digests { tenant: t, .. } | InstanceKey::Ids { tenant: t, .. } => t == tenant,
            })
            .cloned()
            .collect();
        keys.iter()
            .filter_map(|key| self.entries.remove(key))
            .map(|entry| entry.policy)
            .collect()
    }

    fn one_offs(&self) -> usize {
        self.entries.values().filter(|e| e.one_off).count()
    }

    /// The entry to evict other than `keep` (the one just inserted): the least recently
    /// used one-off entry, else (unless `one_offs_only`) the least recently used entry. A
    /// linear scan: the cache holds at most a pool's worth of instances.
    fn victim(&self, keep: &CacheKey, one_offs_only: bool) -> Option<CacheKey> {
        self.entries
            .iter()
            .filter(|(k, e)| *k != keep && (e.one_off || !one_offs_only))
            .min_by_key(|(_, e)| (!e.one_off, e.last_used))
            .map(|(k, _)| k.clone())
    }

    /// Drops `policy` from the pool of `key` if it is there (not already replaced), and
    /// the entry with its last instance.
    fn remove_if<P: Cached>(&mut self, key: &CacheKey, policy: &Arc<P>) -> Option<Arc<P>> {
        let entry = self.entries.get_mut(key)?;
        let pool = P::found_in_mut(&mut entry.policy)?;
        let at = pool.iter().position(|cached| Arc::ptr_eq(cached, policy))?;
        let removed = pool.swap_remove(at);
        if pool.is_empty() {
            self.entries.remove(key);
        }
        Some(removed)
    }
}

/// The loaded policies of a process.
///
/// At most [`PolicyRegistry::max_cached`] instances stay loaded (by default half of what
/// the runtime's pool holds); the least recently used is evicted to make room. Instances
/// loaded for one-off checks ([`PolicySource::one_off`]) go first, and only ever take free
/// room (at most four of them): they never evict an instance agents use. Evicting drops
/// the cache's reference: the Store, and with it its pool slots, goes when the last call
/// using it returns. The rest of the pool is the headroom for those calls and for loads in
/// flight; should it ever be used up, a load waits for a slot up to the call deadline (then
/// fails with [`PolicyError::Busy`]) instead of failing in the pool. A document used again
/// after its eviction is simply loaded again.
pub struct PolicyRegistry {
    runtime: Arc<PolicyRuntime>,
    /// Evaluation times and aborts per module, exported at `/metrics`.
    metrics: Arc<Metrics>,
    cache: Mutex<Cache>,
    max_cached: usize,
    /// Instances pooled for one document at most.
    max_per_document: usize,
    /// Tenants whose quotas limit their instances below the runtime's limits.
    tenant_limits: std::sync::RwLock<HashMap<String, PolicyLimits>>,
    /// Each tenant's share of concurrent calls (see [`super::fairness`]).
    shares: super::fairness::TenantShares,
}

fn poisoned() -> PolicyError {
    PolicyError::Trap("policy registry lock poisoned".into())
}

/// Errors after which an instance must not be entered again.
fn breaks_instance(e: &PolicyError) -> bool {
    matches!(
        e,
        PolicyError::Trap(_) | PolicyError::Panic(_) | PolicyError::Timeout(_)
    )
}

impl PolicyRegistry {
    pub fn new(runtime: Arc<PolicyRuntime>) -> Self {
        Self::with_metrics(runtime, Arc::default())
    }

    /// A registry that records its calls in `metrics`.
    pub fn with_metrics(runtime: Arc<PolicyRuntime>, metrics: Arc<Metrics>) -> Self {
        let max_cached = Self::default_max_cached(&runtime);
        // More instances of one document than threads that can evaluate at once would
        // never all be busy.
        let max_per_document = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Self {
            runtime,
            metrics,
            cache: Mutex::default(),
            max_cached,
            max_per_document,
            tenant_limits: Default::default(),
            shares: super::fairness::TenantShares::new(
                super::fairness::TenantShares::default_share(),
                super::fairness::TenantShares::default_capacity(),
            ),
        }
    }

    /// The same registry giving each tenant `share` calls at once, and more while fewer
    /// than `capacity` run in all (see [`super::fairness`]).
    pub fn with_tenant_share(mut self, share: usize, capacity: usize) -> Self {
        self.shares = super::fairness::TenantShares::new(share, capacity);
        self
    }

    /// Calls of `tenant` running (or loading) now.
    pub fn tenant_calls(&self, tenant: &str) -> usize {
        self.shares.in_flight(tenant)
    }

    /// Limits `tenant`'s instances (memory, deadline) from now on, or lifts that with
    /// `None`. Its cached instances are dropped, so the next call loads under the new
    /// limits.
    pub fn set_tenant_limits(&self, tenant: &str, limits: Option<PolicyLimits>) {
        if let Ok(mut all) = self.tenant_limits.write() {
            match limits {
                Some(limits) => all.insert(tenant.to_owned(), limits),
                None => all.remove(tenant),
            };
        }
        let evicted = self
            .cache
            .lock()
            .map(|mut cache| cache.remove_tenant(tenant))
            .unwrap_or_default();
        // Outside the lock: dropping the last reference drops the Store.
        drop(evicted);
    }

    /// The limits of `tenant`'s instances (the server's unless a quota sets them).
    pub fn limits_of(&self, tenant: &str) -> PolicyLimits {
        self.limits_for(tenant)
    }

    /// The limits of `tenant`'s instances.
    fn limits_for(&self, tenant: &str) -> PolicyLimits {
        self.tenant_limits
            .read()
            .ok()
            .and_then(|all| all.get(tenant).copied())
            .unwrap_or_else(|| self.runtime.limits())
    }

    /// The same registry pooling at most `max` instances per document (at least 1).
    pub fn with_max_per_document(mut self, max: usize) -> Self {
        self.max_per_document = max.max(1);
        self
    }

    /// The default bound of the cache: half of the instances the runtime's pool holds (64
    /// with [`super::POOL`]), the other half being headroom for calls still using evicted
    /// instances, loads in flight and one-off checks.
    pub fn default_max_cached(runtime: &PolicyRuntime) -> usize {
        (runtime.instance_capacity() / 2).max(1)
    }

    /// The same registry keeping at most `max` instances loaded, clamped to between 1 and
    /// one less than the runtime's [`PolicyRuntime::instance_capacity`] (a load always
    /// needs a slot besides the cached instances).
    pub fn with_max_cached(mut self, max: usize) -> Self {
        let ceiling = self.runtime.instance_capacity().saturating_sub(1).max(1);
        self.max_cached = max.clamp(1, ceiling);
        self
    }

    /// The most instances this registry keeps loaded.
    pub fn max_cached(&self) -> usize {
        self.max_cached
    }

    /// Instances currently cached (both kinds, every pooled instance); never more than
    /// [`Self::max_cached`].
    pub fn cached_instances(&self) -> usize {
        self.cache.lock().map(|c| c.instances()).unwrap_or(0)
    }

    /// Cached instances a call is inside now.
    pub fn busy_instances(&self) -> usize {
        self.cache
            .lock()
            .map(|c| c.entries.values().map(|e| e.policy.busy()).sum())
            .unwrap_or(0)
    }

    /// The runtime this registry loads into.
    pub fn runtime(&self) -> &Arc<PolicyRuntime> {
        &self.runtime
    }

    /// Sets the instances gauge (cached, live, capacity) in `metrics`, at scrape time.
    pub fn set_instance_gauge(&self, metrics: &Metrics) {
        let series = [
            ("cached", self.cached_instances()),
            ("busy", self.busy_instances()),
            ("live", self.runtime.live_instances()),
            ("capacity", self.runtime.instance_capacity()),
        ]
        .map(|(state, n)| (metrics::StateLabel { state }, n as u64));
        metrics::set_gauges(&metrics.policy_instances, series);
    }

    /// Runs `eval` on the instance for `source`, loading it first if needed (and caching
    /// it, evicting others to stay within the bound); an instance that breaks is dropped so
    /// the next call rebuilds it.
    fn run<P: Cached, R>(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
        load: impl FnOnce() -> Result<P, PolicyError>,
        eval: impl FnOnce(&P) -> Result<R, PolicyError>,
    ) -> Result<R, PolicyError> {
        // A tenant's calls beyond its share wait for its own, never for another tenant's:
        // up to QUEUE_WAITS deadlines, so that a burst (a verifier taking over a fleet whose
        // first rounds all come at once, while the policy compiles) queues instead of
        // failing honest agents; a tenant that keeps its share full only waits longer.
        let wait = self.limits_for(tenant).deadline.saturating_mul(QUEUE_WAITS);
        let _share = self.shares.enter(tenant, wait)?;
        let key: CacheKey = (P::KIND, InstanceKey::new(tenant, source)?);
        let one_off = source.one_off;
        let cached = self.lock()?.hit::<P>(&key, one_off);
        let policy = match cached {
            Some(pick) if pick.idle || one_off || pick.instances >= self.max_per_document => pick.policy,
            // Every instance is busy: another one if the cache has room without evicting,
            // else wait for one.
            Some(pick) if self.cached_instances() >= self.max_cached => pick.policy,
            Some(pick) => match load() {
                Ok(loaded) => {
                    metrics::count(&self.metrics.policy_loads, &P::KIND.metric_label());
                    let loaded = Arc::new(loaded);
                    let grown =
                        self.lock()?
                            .grow(&key, loaded.clone(), self.max_cached, self.max_per_document);
                    // Not pooled (the cache filled up meanwhile): it serves this call only.
                    drop(grown);
                    loaded
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading another instance of a busy policy; waiting for one");
                    pick.policy
                }
            },
            None => {
                // Loading runs guest code under its deadline; the cache lock is not held
                // meanwhile.
                let loaded = Arc::new(load()?);
                metrics::count(&self.metrics.policy_loads, &P::KIND.metric_label());
                let inserted = self.lock()?.insert(&key, loaded, one_off, self.max_cached);
                match inserted {
                    Inserted::New { policy, evicted } => {
                        self.drop_evicted(evicted);
                        policy
                    }
                    Inserted::Raced { policy, unused } => {
                        drop(unused);
                        policy
                    }
                }
            }
        };
        let result = eval(&policy);
        if let Err(e) = &result
            && breaks_instance(e)
        {
            let removed = self.lock()?.remove_if::<P>(&key, &policy);
            // Outside the lock: dropping the last reference drops the Store.
            drop(removed);
        }
        result
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Cache>, PolicyError> {
        self.cache.lock().map_err(|_| poisoned())
    }

    /// Drops evicted instances outside the cache lock (tearing down a Store returns its
    /// pool slots); an instance another thread still uses goes when that call returns.
    fn drop_evicted(&self, evicted: Vec<Loaded>) {
        for loaded in evicted {
            let kind = match &loaded {
                Loaded::MeasuredBoot(_) => Kind::MeasuredBoot,
                Loaded::Runtime(_) => Kind::Runtime,
            };
            let instances = loaded.len() as u64;
            drop(loaded);
            self.metrics
                .policy_evictions
                .get_or_create(&kind.metric_label())
                .inc_by(instances);
        }
    }

    /// Whether `component` implements the runtime-policy world (compiling it once). Takes
    /// no instance slot: nothing is instantiated.
    pub fn check_runtime_component(&self, component: &[u8]) -> Result<(), PolicyError> {
        RuntimePolicy::check_world(&self.runtime, component)
    }

    /// Whether `component` implements the measured-boot-policy world.
    pub fn check_measured_boot_component(&self, component: &[u8]) -> Result<(), PolicyError> {
        MeasuredBootPolicy::check_world(&self.runtime, component)
    }

    /// Instances currently loaded (both kinds): the same as [`Self::cached_instances`].
    pub fn loaded(&self) -> usize {
        self.cached_instances()
    }

    /// A new runtime instance of `source` under `tenant`'s limits.
    fn new_runtime(&self, tenant: &str, source: &PolicySource<'_>) -> Result<RuntimePolicy, PolicyError> {
        let limits = self.limits_for(tenant);
        RuntimePolicy::load_limited(
            &self.runtime,
            limits,
            source.name,
            source.module,
            source.document()?,
        )
    }

    /// A new measured-boot instance of `source` under `tenant`'s limits.
    fn new_measured_boot(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
    ) -> Result<MeasuredBootPolicy, PolicyError> {
        let limits = self.limits_for(tenant);
        MeasuredBootPolicy::load_limited(
            &self.runtime,
            limits,
            source.name,
            source.module,
            source.document()?,
        )
    }

    /// Loads `document` into the runtime `module` for `tenant` (or finds it loaded): the
    /// check a policy upload gets (with a [`PolicySource::one_off`] source), and the
    /// instance later evaluations use.
    pub fn load_runtime(&self, tenant: &str, source: &PolicySource<'_>) -> Result<(), PolicyError> {
        self.run(tenant, source, || self.new_runtime(tenant, source), |_| Ok(()))
    }

    /// The template-hash algorithm a loaded runtime policy expects (`ima.log_hash_alg`).
    pub fn runtime_log_hash(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
    ) -> Result<Option<HashAlg>, PolicyError> {
        self.run(
            tenant,
            source,
            || self.new_runtime(tenant, source),
            |p: &RuntimePolicy| Ok(p.log_hash_alg()),
        )
    }

    /// Loads a reference state into the measured-boot `module` for `tenant`; returns the
    /// PCRs the policy relies on.
    pub fn load_measured_boot(
        &self,
        tenant: &str,
        source: &PolicySource<'_>,
    ) -> Result<Vec<u32>, PolicyError> {
        self.run(
            tenant,
            source,
            || self.new_measured_boot(tenant, source),
            |p: &MeasuredBootPolicy| Ok(p.relevant_pcrs().to_vec()),
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
        let result = self.run(
            tenant,
            source,
            || self.new_measured_boot(tenant, source),
            |p: &MeasuredBootPolicy| p.evaluate(evidence),
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
        let result = self.run(
            tenant,
            source,
            || self.new_runtime(tenant, source),
            |p: &RuntimePolicy| p.evaluate(evidence),
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
        let labels = metrics::KindModule {
            kind,
            module: module.to_owned(),
        };
        metrics::observe(&self.metrics.policy_seconds, &labels, started.elapsed());
        let reason = match result {
            Err(PolicyError::Trap(_)) => "trap",
            Err(PolicyError::Panic(_)) => "panic",
            Err(PolicyError::Timeout(_)) => "timeout",
            _ => return,
        };
        let labels = metrics::KindModuleReason {
            kind,
            module: labels.module,
            reason,
        };
        metrics::count(&self.metrics.policy_aborts, &labels);
    }
}
