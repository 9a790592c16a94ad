//! Built-in measured-boot policies evaluated through the wasmtime sandbox on Keylime's
//! Fedora boot log.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use zest::evidence::HashAlg;
use zest::evidence::uefi::EventLog;
use zest::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use zest::policy::{PolicyError, PolicyLimits, PolicyRuntime, builtin_measured_boot};

fn fedora_log() -> EventLog {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    let bytes = std::fs::read(format!(
        "{root}/keylime/test/data/create-mb-policy/binary_bios_measurements"
    ))
    .unwrap();
    EventLog::parse(&bytes).unwrap()
}

#[test]
fn accept_all_passes_and_reject_all_fails_the_fedora_log() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = PolicyRuntime::new(PolicyLimits::default(), Some(cache.path().to_path_buf())).unwrap();
    let log = fedora_log();
    let replayed = log.replay();
    let quoted: Vec<(u32, Vec<u8>)> = replayed[&HashAlg::Sha256]
        .iter()
        .map(|(i, v)| (*i, v.clone()))
        .collect();
    let verified_pcrs = quoted.iter().map(|(i, _)| *i).collect();
    let evidence = BootEvidence {
        log: &log,
        replayed: &replayed,
        quoted_bank: HashAlg::Sha256,
        quoted: &quoted,
        verified_pcrs: &verified_pcrs,
        first_attestation: true,
        prior_state: None,
    };

    let accept = MeasuredBootPolicy::load(
        &runtime,
        "accept-all",
        builtin_measured_boot("accept-all").unwrap(),
        b"{}",
    )
    .unwrap();
    assert!(accept.relevant_pcrs().is_empty());
    for _ in 0..3 {
        let verdict = accept.evaluate(&evidence).unwrap();
        assert!(verdict.failures.is_empty());
    }

    let reject = MeasuredBootPolicy::load(
        &runtime,
        "reject-all",
        builtin_measured_boot("reject-all").unwrap(),
        b"{}",
    )
    .unwrap();
    let verdict = reject.evaluate(&evidence).unwrap();
    assert_eq!(verdict.failures.len(), 1);
    assert_eq!(verdict.failures[0].event_id, "measured_boot.policy_reject-all");
    let context: serde_json::Value = serde_json::from_str(&verdict.failures[0].context).unwrap();
    assert_eq!(context["policy"], "reject-all");

    // Compiled once, then kept on disk for the next process.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
    let again = PolicyRuntime::new(PolicyLimits::default(), Some(cache.path().to_path_buf())).unwrap();
    let accept = MeasuredBootPolicy::load(
        &again,
        "accept-all",
        builtin_measured_boot("accept-all").unwrap(),
        b"{}",
    )
    .unwrap();
    assert!(accept.evaluate(&evidence).unwrap().failures.is_empty());
}

#[test]
fn bytes_that_are_not_a_component_are_a_clean_error() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    for bytes in [&b""[..], b"\0asm\x01\0\0\0", b"not wasm at all"] {
        match MeasuredBootPolicy::load(&runtime, "bad", bytes, b"{}") {
            Err(PolicyError::Compile(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted {bytes:?}"),
        }
    }
}
