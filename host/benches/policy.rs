//! Policy sandbox costs: compiling a component, loading it from the disk cache, and
//! instantiate + load + evaluate of a measured-boot policy on Keylime's Fedora log.
//!
//! `cargo bench -p zest --bench policy` prints one line per figure (p50 over the runs).

use std::time::{Duration, Instant};

use zest::evidence::HashAlg;
use zest::evidence::uefi::EventLog;
use zest::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use zest::policy::{PolicyLimits, PolicyRuntime, builtin_measured_boot};

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    let bytes = std::fs::read(format!(
        "{root}/keylime/test/data/create-mb-policy/binary_bios_measurements"
    ))
    .unwrap();
    let module = builtin_measured_boot("reject-all").unwrap();

    let compile: Vec<Duration> = (0..7)
        .map(|_| {
            let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
            let t = Instant::now();
            runtime.component(module).unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "compile a new component (reject-all, {} KiB):      p50 {:?}",
        module.len() / 1024,
        p50(compile)
    );

    let cache = tempfile::tempdir().unwrap();
    PolicyRuntime::new(PolicyLimits::default(), Some(cache.path().to_path_buf()))
        .unwrap()
        .component(module)
        .unwrap();
    let cached: Vec<Duration> = (0..21)
        .map(|_| {
            let runtime =
                PolicyRuntime::new(PolicyLimits::default(), Some(cache.path().to_path_buf())).unwrap();
            let t = Instant::now();
            runtime.component(module).unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "load a compiled component from the disk cache:       p50 {:?}",
        p50(cached)
    );

    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    runtime.component(module).unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    let replayed = log.replay();
    let quoted: Vec<(u32, Vec<u8>)> = replayed[&HashAlg::Sha256]
        .iter()
        .map(|(i, v)| (*i, v.clone()))
        .collect();
    let evidence = BootEvidence {
        log: &log,
        replayed: &replayed,
        quoted_bank: HashAlg::Sha256,
        quoted: &quoted,
        first_attestation: true,
        prior_state: None,
    };
    let cold: Vec<Duration> = (0..501)
        .map(|_| {
            let t = Instant::now();
            let policy = MeasuredBootPolicy::load(&runtime, "reject-all", module, b"{}").unwrap();
            policy.evaluate(&evidence).unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "instantiate + load + evaluate, Fedora log (121 ev.): p50 {:?}",
        p50(cold)
    );

    let policy = MeasuredBootPolicy::load(&runtime, "reject-all", module, b"{}").unwrap();
    let warm: Vec<Duration> = (0..2001)
        .map(|_| {
            let t = Instant::now();
            policy.evaluate(&evidence).unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "evaluate on a loaded instance, Fedora log:           p50 {:?}",
        p50(warm)
    );
}
