//! The policy registry's bounded cache: a thousand distinct runtime policies loaded and
//! evaluated in turn never exhaust the pooling allocator (before the cache, about 128
//! documents did: "maximum concurrent limit of 256 for tables reached"); evicted documents
//! simply load again; one-off loads never take an evaluated policy's room; and the runtime
//! never asks the pool for more instances than it holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zest::evidence::HashAlg;
use zest::evidence::ima::{ImaPosition, replay};
use zest::metrics::{KindLabel, Metrics, counter_value};
use zest::policy::runtime::{ImaEvidence, RuntimePolicy, Verdict};
use zest::policy::{
    DocumentLoader, PolicyError, PolicyLimits, PolicyRegistry, PolicyRuntime, PolicySource, builtin_runtime,
};
use zest_tests::ima::ImaLog;
use zest_tests::policies::runtime_policy;
use zest_tests::process::memory_kib;

const RUNTIME: KindLabel = KindLabel { kind: "runtime" };

const MODULE_ID: &str = "builtin:keylime-runtime";
const TENANT: &str = "default";

fn module() -> &'static [u8] {
    builtin_runtime("keylime-runtime").unwrap()
}

/// Policy document `i`: allows exactly `/usr/bin/tool-{i}` with a digest of its own.
struct Doc {
    path: String,
    digest: Vec<u8>,
    bytes: Vec<u8>,
    checksum: String,
}

fn doc(i: usize) -> Doc {
    let path = format!("/usr/bin/tool-{i}");
    let digest = HashAlg::Sha256.digest(&[path.as_bytes()]);
    let bytes = runtime_policy(&[(path.as_str(), digest.clone())])
        .to_string()
        .into_bytes();
    let checksum = hex::encode(HashAlg::Sha256.digest(&[bytes.as_slice()]));
    Doc {
        path,
        digest,
        bytes,
        checksum,
    }
}

/// The source as the verifier names a stored record: module id and document checksum.
fn source<'a>(d: &'a Doc) -> PolicySource<'a> {
    PolicySource::new("cache-test", module(), &d.bytes).known_as(MODULE_ID, &d.checksum)
}

/// One attestation round's policy calls, as the pipeline makes them: the template hash of
/// the policy, then the evaluation of a list holding the one file the document allows.
fn attest(registry: &PolicyRegistry, d: &Doc) -> Result<Verdict, PolicyError> {
    attest_with(registry, d, source(d))
}

fn attest_with(registry: &PolicyRegistry, d: &Doc, source: PolicySource<'_>) -> Result<Verdict, PolicyError> {
    let log_hash = registry
        .runtime_log_hash(TENANT, &source)?
        .unwrap_or(HashAlg::Sha1);
    let mut log = ImaLog::default();
    log.add_ima_ng(&d.path, &d.digest);
    let text = log.text();
    let start = ImaPosition::start(HashAlg::Sha256);
    let dry = replay(&text, HashAlg::Sha256, log_hash, &start, None);
    let replayed = replay(&text, HashAlg::Sha256, log_hash, &start, Some(&dry.final_pcr10));
    registry.evaluate_runtime(
        TENANT,
        &source,
        &ImaEvidence {
            text: &text,
            replay: &replayed,
            bank: HashAlg::Sha256,
            start_offset: 0,
            boot_aggregates: &[],
            prior_state: None,
        },
    )
}

fn passes(registry: &PolicyRegistry, d: &Doc) {
    match attest(registry, d) {
        Ok(verdict) => assert!(
            verdict.failures.is_empty(),
            "{}: {:?}",
            d.path,
            verdict.failures.iter().map(|f| &f.event_id).collect::<Vec<_>>()
        ),
        Err(e) => panic!("{}: {e}", d.path),
    }
}

/// An upload check: the document loaded once, for nothing but the check.
fn upload_check(registry: &PolicyRegistry, d: &Doc) {
    registry
        .load_runtime(TENANT, &PolicySource::new("upload", module(), &d.bytes).one_off())
        .unwrap_or_else(|e| panic!("upload check of {}: {e}", d.path));
}

fn memory() -> (u64, u64) {
    let pid = std::process::id();
    (memory_kib(pid, "VmRSS:"), memory_kib(pid, "VmHWM:"))
}

#[test]
fn a_thousand_distinct_policies_load_and_evaluate_in_turn_within_the_bound() {
    let runtime = Arc::new(PolicyRuntime::new(PolicyLimits::default(), None).unwrap());
    let metrics = Arc::new(Metrics::default());
    let registry = PolicyRegistry::with_metrics(runtime.clone(), metrics.clone());
    let bound = registry.max_cached();
    let capacity = runtime.instance_capacity();
    assert!(
        bound < capacity,
        "the cache ({bound}) leaves headroom in the pool ({capacity})"
    );
    assert_eq!(bound, PolicyRegistry::default_max_cached(&runtime));

    // Compiles the component before anything is measured.
    passes(&registry, &doc(1_000_000));

    let (rss_before, hwm_before) = memory();
    let started = Instant::now();
    const DOCUMENTS: usize = 1000;
    let (mut uploads, mut reevaluated) = (0u64, 0u64);
    for i in 0..DOCUMENTS {
        passes(&registry, &doc(i));
        // Upload checks along the way, and documents evaluated again long after their
        // eviction (150 documents ago, the cache holding fewer).
        if i % 10 == 0 {
            upload_check(&registry, &doc(2_000_000 + i));
            uploads += 1;
        }
        if i >= 200 && i % 50 == 0 {
            passes(&registry, &doc(i - 150));
            reevaluated += 1;
        }
        assert!(registry.cached_instances() <= bound, "after document {i}");
        // Nothing else holds an instance between rounds: every evicted Store is gone and
        // has given its pool slot back.
        assert_eq!(
            runtime.live_instances(),
            registry.cached_instances(),
            "after document {i}"
        );
    }
    let elapsed = started.elapsed();
    let (rss_after, hwm_after) = memory();

    let loads = counter_value(&metrics.policy_loads, &RUNTIME);
    let evictions = counter_value(&metrics.policy_evictions, &RUNTIME);
    println!(
        "{DOCUMENTS} documents (+{uploads} upload checks, +{reevaluated} re-evaluations) in \
         {elapsed:.2?} ({:.2?} per document): {loads} loads, {evictions} evictions, {} cached \
         of at most {bound}, pool of {capacity}",
        elapsed / DOCUMENTS as u32,
        registry.cached_instances(),
    );
    println!(
        "VmRSS {rss_before} KiB -> {rss_after} KiB ({:+} KiB); VmHWM {hwm_before} KiB -> {hwm_after} KiB",
        rss_after as i64 - rss_before as i64
    );
    // The first document, every document, every upload check and every re-evaluated
    // (evicted) document loaded exactly once: a round's second call finds its instance.
    assert_eq!(loads, 1 + DOCUMENTS as u64 + uploads + reevaluated);
    assert!(evictions >= (DOCUMENTS - bound) as u64, "{evictions} evictions");
    assert_eq!(registry.cached_instances(), bound);
    assert_eq!(runtime.live_instances(), bound);
    drop(registry);
    assert_eq!(
        runtime.live_instances(),
        0,
        "dropping the registry frees every slot"
    );
}

#[test]
fn the_least_recently_used_is_evicted_and_one_off_loads_never_take_its_room() {
    let runtime = Arc::new(PolicyRuntime::new(PolicyLimits::default(), None).unwrap());
    let metrics = Arc::new(Metrics::default());
    let registry = PolicyRegistry::with_metrics(runtime.clone(), metrics.clone()).with_max_cached(4);
    assert_eq!(registry.max_cached(), 4);
    let loads = || counter_value(&metrics.policy_loads, &RUNTIME);
    let d: Vec<Doc> = (0..6).map(doc).collect();

    for p in &d[..4] {
        passes(&registry, p);
    }
    assert_eq!((loads(), registry.cached_instances()), (4, 4));
    // 0 is used again, so 4 evicts 1, the least recently used.
    passes(&registry, &d[0]);
    passes(&registry, &d[4]);
    assert_eq!((loads(), registry.cached_instances()), (5, 4));
    for i in [0, 2, 3, 4] {
        passes(&registry, &d[i]);
    }
    assert_eq!(loads(), 5, "0, 2, 3 and 4 stayed loaded");
    // 1 was evicted: it loads again (evicting 0, now the least recently used).
    passes(&registry, &d[1]);
    assert_eq!(loads(), 6);
    passes(&registry, &d[0]);
    assert_eq!(loads(), 7);
    // Cached now: 3, 4, 1, 0.

    // Upload checks while the cache is full: loaded, checked, and not kept.
    upload_check(&registry, &d[5]);
    upload_check(&registry, &doc(100));
    assert_eq!((loads(), registry.cached_instances()), (9, 4));
    for i in [3, 4, 1, 0] {
        passes(&registry, &d[i]);
    }
    assert_eq!(loads(), 9, "the upload checks evicted none of 3, 4, 1 and 0");
    // A one-off check of a loaded document uses the loaded instance.
    registry.load_runtime(TENANT, &source(&d[3]).one_off()).unwrap();
    assert_eq!(loads(), 9);
    assert!(counter_value(&metrics.policy_evictions, &RUNTIME) >= 3);
    assert_eq!(runtime.live_instances(), registry.cached_instances());
}

#[test]
fn one_off_loads_take_free_room_only_and_leave_first() {
    let runtime = Arc::new(PolicyRuntime::new(PolicyLimits::default(), None).unwrap());
    let metrics = Arc::new(Metrics::default());
    let registry = PolicyRegistry::with_metrics(runtime.clone(), metrics.clone()).with_max_cached(8);
    let loads = || counter_value(&metrics.policy_loads, &RUNTIME);
    let kept: Vec<Doc> = (0..6).map(doc).collect();

    passes(&registry, &kept[0]);
    passes(&registry, &kept[1]);
    // Six upload checks with room to spare: at most four one-off instances stay.
    for i in 0..6 {
        upload_check(&registry, &doc(500 + i));
    }
    assert_eq!((loads(), registry.cached_instances()), (8, 6));
    // A one-off check repeated while still cached is not loaded again.
    upload_check(&registry, &doc(505));
    assert_eq!(loads(), 8);
    // Evaluated documents fill the cache and then evict the one-off instances, never the
    // evaluated ones, even though 0 and 1 were used longest ago.
    for p in &kept[2..6] {
        passes(&registry, p);
    }
    assert_eq!((loads(), registry.cached_instances()), (12, 8));
    passes(&registry, &kept[0]);
    passes(&registry, &kept[1]);
    assert_eq!(loads(), 12, "0 and 1 outlived the one-off loads");
    assert_eq!(runtime.live_instances(), registry.cached_instances());
}

#[test]
fn concurrent_evaluations_survive_the_eviction_of_the_instance_they_use() {
    let runtime = Arc::new(PolicyRuntime::new(PolicyLimits::default(), None).unwrap());
    let registry = Arc::new(PolicyRegistry::new(runtime.clone()).with_max_cached(2));
    let docs: Arc<Vec<Doc>> = Arc::new((0..10).map(doc).collect());
    passes(&registry, &docs[0]);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (registry, docs, runtime) = (registry.clone(), docs.clone(), runtime.clone());
            std::thread::spawn(move || {
                for j in 0..60 {
                    passes(&registry, &docs[(t * 7 + j) % docs.len()]);
                    assert!(registry.cached_instances() <= 2);
                    assert!(runtime.live_instances() <= runtime.instance_capacity());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(registry.cached_instances() <= 2);
    assert_eq!(runtime.live_instances(), registry.cached_instances());
}

#[test]
fn the_runtime_never_asks_the_pool_for_more_instances_than_it_holds() {
    let limits = PolicyLimits {
        deadline: Duration::from_millis(300),
        ..PolicyLimits::default()
    };
    let runtime = PolicyRuntime::new(limits, None).unwrap();
    let d = doc(7);
    let load = || RuntimePolicy::load(&runtime, "held", module(), &d.bytes);
    // Every slot the pool holds can be filled: the per-policy caps and the totals agree.
    let mut held: Vec<RuntimePolicy> = (0..runtime.instance_capacity())
        .map(|i| load().unwrap_or_else(|e| panic!("instance {i}: {e}")))
        .collect();
    assert_eq!(runtime.live_instances(), runtime.instance_capacity());
    // One more waits for a slot up to the deadline, then is refused cleanly.
    let started = Instant::now();
    match load() {
        Err(PolicyError::Busy { capacity, .. }) => assert_eq!(capacity, runtime.instance_capacity()),
        Err(other) => panic!("expected Busy, got {other}"),
        Ok(_) => panic!("a load beyond the pool's capacity succeeded"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A slot given back is used at once.
    held.pop();
    let again = load().unwrap();
    held.push(again);
    assert_eq!(runtime.live_instances(), runtime.instance_capacity());
    drop(held);
    assert_eq!(runtime.live_instances(), 0);
}

/// A stored document, counting how often it is read.
struct CountingLoader<'a> {
    doc: &'a Doc,
    reads: std::sync::atomic::AtomicUsize,
}

impl DocumentLoader for CountingLoader<'_> {
    fn load(&self) -> Result<&[u8], PolicyError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(&self.doc.bytes)
    }
}

/// The verifier names a stored runtime policy by module id and checksum and reads its
/// document only when no instance is loaded for them: rounds on a loaded policy read none
/// (a 100,000-path document is megabytes), an evicted one is read again.
#[test]
fn a_stored_document_is_read_only_when_its_instance_is_not_loaded() {
    let runtime = Arc::new(PolicyRuntime::new(PolicyLimits::default(), None).unwrap());
    let registry = PolicyRegistry::new(runtime).with_max_cached(1);
    let (first, second) = (doc(1), doc(2));
    let loader = CountingLoader {
        doc: &first,
        reads: Default::default(),
    };
    let lazy = || PolicySource::lazy("stored", module(), &loader, MODULE_ID, &first.checksum);
    let reads = || loader.reads.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        let verdict = attest_with(&registry, &first, lazy()).unwrap();
        assert!(verdict.failures.is_empty());
    }
    assert_eq!(
        reads(),
        1,
        "read once for the load, never for the rounds after it"
    );
    // Another document takes the only place; the stored one is read again when needed.
    passes(&registry, &second);
    attest_with(&registry, &first, lazy()).unwrap();
    assert_eq!(reads(), 2);
}

/// `zest policy test` keeps compiled components in the user's cache directory: the second
/// run of the same check compiles nothing (a policy author iterating on a refstate would
/// otherwise pay a compilation on every run).
#[test]
fn a_second_policy_test_run_compiles_nothing() {
    let home = tempfile::tempdir().unwrap();
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/testdata");
    let run = || {
        let out = std::process::Command::new(zest_tests::process::zest_binary().unwrap())
            .env("XDG_CACHE_HOME", home.path())
            .env_remove("ZEST_POLICY_CACHE")
            .env("RUST_LOG", "zest=debug")
            .args([
                "policy",
                "test",
                "--runtime",
                "--module",
                "builtin:keylime-runtime",
                "--policy",
            ])
            .arg(home.path().join("policy.json"))
            .arg("--ima-log")
            .arg(format!("{sdk}/ascii_runtime_measurements"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(
        home.path().join("policy.json"),
        runtime_policy(&[("/usr/bin/nothing", vec![0; 32])]).to_string(),
    )
    .unwrap();
    let first = run();
    assert!(first.contains("compiling a policy component"), "{first}");
    let second = run();
    assert!(!second.contains("compiling a policy component"), "{second}");
    assert!(home.path().join("zest/policy-cache.key").exists());
}
