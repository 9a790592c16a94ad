//! Tenant B's policy-call latency with and without tenant A's hostile load on the same
//! verifier's policy workers: A runs endless loops (each to its deadline) from many threads,
//! B evaluates a boot log over and over. Three runs: B alone; B beside A with the fair shares
//! (`policy::fairness`, the default); B beside A with the shares lifted.
//!
//! `cargo bench -p zest-tests --bench tenant_fairness` prints p50/p99/max per run.

// Benchmark code: a failed unwrap aborts the run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zest::evidence::HashAlg;
use zest::evidence::uefi::{EventLog, PcrBanks};
use zest::policy::measured_boot::BootEvidence;
use zest::policy::registry::PolicyRegistry;
use zest::policy::{PolicyLimits, PolicyRuntime, PolicySource};
use zest_tests::fixture;
use zest_tests::policies::test_component;

const HOSTILE_THREADS: usize = 8;
const CALLS: usize = 400;

fn run(registry: Arc<PolicyRegistry>, hostile: bool) -> (Duration, Duration, Duration) {
    let component = Arc::new(test_component("hostile"));
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..if hostile { HOSTILE_THREADS } else { 0 })
        .map(|i| {
            let (registry, component, stop) = (registry.clone(), component.clone(), stop.clone());
            std::thread::spawn(move || {
                let (log, replayed, pcrs) = fedora();
                let evidence = evidence(&log, &replayed, &pcrs);
                // A document of its own per thread: instances of one document are pooled, and
                // A wants every thread busy.
                let id = format!("loop-{i}");
                let source =
                    PolicySource::new("hostile", &component, b"loop").known_as("sha256:hostile", &id);
                while !stop.load(Ordering::Relaxed) {
                    let _ = registry.evaluate_measured_boot("tenant-a", &source, &evidence);
                }
            })
        })
        .collect();
    if hostile {
        // Let the attack fill the workers first.
        while registry.tenant_calls("tenant-a") == 0 {
            std::thread::yield_now();
        }
    }
    let (log, replayed, pcrs) = fedora();
    let evidence = evidence(&log, &replayed, &pcrs);
    let source = PolicySource::new("hostile", &component, b"ok").known_as("sha256:hostile", "ok");
    let mut latencies = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        registry
            .evaluate_measured_boot("tenant-b", &source, &evidence)
            .unwrap();
        latencies.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    (at(0.5), at(0.99), latencies[latencies.len() - 1])
}

/// Keylime's Fedora boot log, its replay and every PCR it extends.
fn fedora() -> (EventLog, PcrBanks, BTreeSet<u32>) {
    let log = EventLog::parse(&fixture(
        "keylime/test/data/create-mb-policy/binary_bios_measurements",
    ))
    .unwrap();
    let replayed = log.replay();
    let pcrs = log.events.iter().map(|e| e.pcr).collect();
    (log, replayed, pcrs)
}

fn evidence<'a>(log: &'a EventLog, replayed: &'a PcrBanks, pcrs: &'a BTreeSet<u32>) -> BootEvidence<'a> {
    BootEvidence {
        log,
        replayed,
        quoted_bank: HashAlg::Sha256,
        quoted: &[],
        verified_pcrs: pcrs,
        first_attestation: false,
        prior_state: None,
    }
}

fn main() {
    let limits = PolicyLimits {
        deadline: Duration::from_millis(200),
        ..PolicyLimits::default()
    };
    let runtime = Arc::new(PolicyRuntime::new(limits, None).unwrap());
    let fair = || Arc::new(PolicyRegistry::new(runtime.clone()));
    let unbounded = || Arc::new(PolicyRegistry::new(runtime.clone()).with_tenant_share(64, 64));
    println!(
        "tenant B: {CALLS} evaluations of a 111-event boot log; tenant A: {HOSTILE_THREADS} threads of endless loops, each its own document (deadline 200 ms); {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (what, registry, hostile) in [
        ("B alone", fair(), false),
        ("B beside A, fair shares", fair(), true),
        ("B beside A, no shares", unbounded(), true),
    ] {
        let (p50, p99, max) = run(registry, hostile);
        println!("  {what:<26} p50 {p50:>10.2?}  p99 {p99:>10.2?}  max {max:>10.2?}");
    }
}
