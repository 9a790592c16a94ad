//! The contract with policy components across versions: zest:policy@0.1.0 components
//! (`hostile`, `wrong_world`) run beside 0.2.0 ones (the built-ins and `sdk_guest`, made
//! with the SDK) in one runtime and see the same evidence; and what the host and the SDK
//! give a 0.2.0 guest: its panic message in the failure, an empty environment, hashing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest::evidence::ima::{ImaPosition, replay};
use zest::evidence::uefi::{EventLog, PcrBanks};
use zest::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use zest::policy::runtime::{ImaEvidence, RuntimePolicy};
use zest::policy::{PolicyError, PolicyLimits, PolicyRuntime};
use zest_tests::policies::test_component;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sdk/testdata")
            .join(name),
    )
    .unwrap()
}

fn sample_boot() -> (EventLog, PcrBanks) {
    let log = EventLog::parse(&sample("boot.log")).unwrap();
    let replayed = log.replay();
    (log, replayed)
}

/// Evaluates `component` with `document` on the sample boot log, every PCR verified.
fn judge_boot(
    runtime: &PolicyRuntime,
    component: &[u8],
    document: &str,
) -> Result<Vec<(String, Value)>, PolicyError> {
    let (log, replayed) = sample_boot();
    let pcrs: BTreeSet<u32> = log.events.iter().map(|e| e.pcr).collect();
    let quoted: Vec<(u32, Vec<u8>)> = replayed[&HashAlg::Sha256]
        .iter()
        .map(|(i, v)| (*i, v.clone()))
        .collect();
    let policy = MeasuredBootPolicy::load(runtime, "under-test", component, document.as_bytes())?;
    let verdict = policy.evaluate(&BootEvidence {
        log: &log,
        replayed: &replayed,
        quoted_bank: HashAlg::Sha256,
        quoted: &quoted,
        verified_pcrs: &pcrs,
        first_attestation: true,
        prior_state: None,
    })?;
    Ok(verdict
        .failures
        .into_iter()
        .map(|f| (f.event_id, serde_json::from_str(&f.context).unwrap()))
        .collect())
}

#[test]
fn components_of_both_versions_judge_the_same_evidence_side_by_side() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    // 0.1.0 sees tuples, 0.2.0 named records: the same facts either way.
    let old = judge_boot(&runtime, &test_component("hostile"), "describe").unwrap();
    let new = judge_boot(&runtime, &test_component("sdk_guest"), "\"describe\"").unwrap();
    assert_eq!(old[0].0, "measured_boot.hostile.describe");
    assert_eq!(new[0].0, "measured_boot.sdk_guest.report");
    assert_eq!(old[0].1, new[0].1);
    let blobs = old[0].1["blobs"].as_array().unwrap();
    let options = old[0].1["boot_options"].as_array().unwrap();
    assert!(!blobs.is_empty() && !options.is_empty(), "{}", old[0].1);
    assert_eq!(options[0][0], json!(true));

    // A 0.2.0 built-in in the same runtime, between calls to the 0.1.0 component.
    let refstate = zest::policy::builtin_measured_boot("accept-all").unwrap();
    assert_eq!(judge_boot(&runtime, refstate, "{}").unwrap(), []);
    assert_eq!(
        judge_boot(&runtime, &test_component("hostile"), "ok").unwrap(),
        []
    );

    // Runtime policies: the 0.1.0 `wrong_world` and the 0.2.0 `keylime-runtime` on one list.
    let text = String::from_utf8(sample("ascii_runtime_measurements")).unwrap();
    let replayed = replay(
        &text,
        HashAlg::Sha256,
        HashAlg::Sha1,
        &ImaPosition::start(HashAlg::Sha256),
        None,
    );
    let evidence = ImaEvidence {
        text: &text,
        replay: &replayed,
        bank: HashAlg::Sha256,
        start_offset: 0,
        boot_aggregates: &[],
        prior_state: None,
    };
    let entries = zest::evidence::ima::lines(&text).count() as u8;
    let old = RuntimePolicy::load(&runtime, "old", &test_component("wrong_world"), b"{}").unwrap();
    assert_eq!(
        old.evaluate(&evidence).unwrap().state,
        Some(vec![entries, entries, 0])
    );
    let keylime = zest::policy::builtin_runtime("keylime-runtime").unwrap();
    let mut document = zest_tests::policies::runtime_policy(&[]);
    document["excludes"] = json!([".*"]);
    let new = RuntimePolicy::load(&runtime, "new", keylime, document.to_string().as_bytes()).unwrap();
    assert!(new.evaluate(&evidence).is_ok());
    assert_eq!(
        old.evaluate(&evidence).unwrap().state,
        Some(vec![entries, entries, 0])
    );
}

#[test]
fn a_panicking_component_reports_its_message_and_where() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    match judge_boot(&runtime, &test_component("sdk_guest"), "\"panic\"") {
        Err(e @ PolicyError::Panic(_)) => {
            let text = e.to_string();
            assert!(
                text.starts_with("the policy panicked at sdk-guest/src/lib.rs:45:17: "),
                "{text}"
            );
            assert!(text.contains(": the policy gave up after "), "{text}");
            assert!(!text.contains("wasm backtrace"), "{text}");
        }
        other => panic!("expected the panic's message, got {other:?}"),
    }
    // The instance is replaced: the next evaluation runs.
    assert_eq!(
        judge_boot(&runtime, &test_component("sdk_guest"), "\"ok\"").unwrap(),
        []
    );
}

#[test]
fn guests_get_an_empty_environment_and_the_hosts_hashes() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    let env = judge_boot(&runtime, &test_component("sdk_guest"), "\"env\"").unwrap();
    assert_eq!(env[0].1, json!({"vars": 0, "args": 0}));
    let hash = judge_boot(&runtime, &test_component("sdk_guest"), "\"hash\"").unwrap();
    assert_eq!(
        hash[0].1,
        json!({
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "other": null,
        })
    );
}

#[test]
fn a_document_that_is_not_json_is_told_apart_from_one_of_the_wrong_shape() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    let guest = test_component("sdk_guest");
    match judge_boot(&runtime, &guest, "\"unterminated") {
        Err(PolicyError::Load(m)) => assert!(m.starts_with("invalid JSON: "), "{m}"),
        other => panic!("{other:?}"),
    }
    match judge_boot(&runtime, &guest, "{\"mode\": 1}") {
        Err(PolicyError::Load(m)) => assert!(m.starts_with("schema: "), "{m}"),
        other => panic!("{other:?}"),
    }
}
