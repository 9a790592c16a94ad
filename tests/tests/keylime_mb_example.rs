//! The built-in `keylime-mb-example` policy (Keylime's `example`) on Keylime's Fedora event
//! log, with reference states made by `zest policy create measured-boot`'s code.

use serde_json::Value;
use zest::evidence::HashAlg;
use zest::evidence::uefi::{EventLog, PcrBanks};
use zest::policy::create::measured_boot_refstate;
use zest::policy::measured_boot::{BootEvidence, MeasuredBootPolicy, Verdict};
use zest::policy::{PolicyError, PolicyLimits, PolicyRuntime, builtin_measured_boot};
use zest_tests::boot::{fedora_bytes, fedora_without_unlisted_pcr0_events};
use zest_tests::fixture;

fn runtime() -> &'static PolicyRuntime {
    static RUNTIME: std::sync::OnceLock<PolicyRuntime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| PolicyRuntime::new(PolicyLimits::default(), None).unwrap())
}

fn load(refstate: &[u8]) -> Result<MeasuredBootPolicy, PolicyError> {
    MeasuredBootPolicy::load(
        runtime(),
        "keylime-mb-example",
        builtin_measured_boot("keylime-mb-example").unwrap(),
        refstate,
    )
}

fn evaluate(policy: &MeasuredBootPolicy, log: &EventLog) -> Verdict {
    let replayed: PcrBanks = log.replay();
    let quoted: Vec<(u32, Vec<u8>)> = replayed[&HashAlg::Sha256]
        .iter()
        .map(|(i, v)| (*i, v.clone()))
        .collect();
    let verified_pcrs = quoted.iter().map(|(i, _)| *i).collect();
    policy
        .evaluate(&BootEvidence {
            log,
            replayed: &replayed,
            quoted_bank: HashAlg::Sha256,
            quoted: &quoted,
            verified_pcrs: &verified_pcrs,
            first_attestation: true,
            prior_state: None,
        })
        .unwrap()
}

/// The reasons of a verdict, without the refstate Keylime repeats in every context.
fn reasons(v: &Verdict) -> Vec<String> {
    v.failures
        .iter()
        .map(|f| {
            let context: Value = serde_json::from_str(&f.context).unwrap();
            format!("{}: {}", f.event_id, context["reason"])
        })
        .collect()
}

fn reason(v: &Verdict) -> String {
    assert_eq!(v.failures.len(), 1, "{:?}", reasons(v));
    assert_eq!(v.failures[0].event_id, "measured_boot.policy_example");
    let context: Value = serde_json::from_str(&v.failures[0].context).unwrap();
    assert_eq!(context["context"], "Boot attestation failed");
    assert_eq!(context["policy"], "example");
    context["reason"].as_str().unwrap().to_owned()
}

#[test]
fn keylimes_example_refstate_matches_no_fixture_log() {
    let refstate = fixture("keylime/keylime/mba/elchecking/example_reference_state.json");
    let policy = load(&refstate).unwrap();
    assert_eq!(policy.relevant_pcrs(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]);
    let fedora = EventLog::parse(&fedora_bytes()).unwrap();
    assert!(!reason(&evaluate(&policy, &fedora)).is_empty());
    let trimmed = EventLog::parse(&fedora_without_unlisted_pcr0_events()).unwrap();
    let why = reason(&evaluate(&policy, &trimmed));
    assert_eq!(
        why,
        "event 8 (PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot) VariableData Enabled is not 'Yes'"
    );
}

#[test]
fn the_fedora_log_fails_its_own_refstate_at_the_startup_locality_event_as_in_keylime() {
    let log = EventLog::parse(&fedora_bytes()).unwrap();
    let refstate = measured_boot_refstate(&log, true).unwrap();
    let policy = load(refstate.to_string().as_bytes()).unwrap();
    assert_eq!(
        reason(&evaluate(&policy, &log)),
        "event 1 (PCR 0, EV_NO_ACTION) test was already run once"
    );
}

#[test]
fn a_log_passes_the_refstate_made_from_it_and_fails_each_changed_reference() {
    let log = EventLog::parse(&fedora_without_unlisted_pcr0_events()).unwrap();
    let mut refstate = measured_boot_refstate(&log, true).unwrap();
    assert_eq!(refstate["has_secureboot"], false);
    // This machine's dbx holds four signature lists; `example` wants exactly one list of
    // SHA-256 hashes, so even the refstate made from the log rejects it (as in Keylime).
    let why = reason(&evaluate(&load(refstate.to_string().as_bytes()).unwrap(), &log));
    assert!(
        why.contains("EV_EFI_VARIABLE_DRIVER_CONFIG dbx) VariableData  is longer (4)"),
        "{why}"
    );
    // Without Secure Boot an empty list means "do not check": the operator's way out.
    refstate["dbx"] = serde_json::json!([]);
    let pass = evaluate(&load(refstate.to_string().as_bytes()).unwrap(), &log);
    assert!(pass.failures.is_empty(), "{:?}", reasons(&pass));

    let fails_with = |edit: &dyn Fn(&mut Value), needle: &str| {
        let mut changed = refstate.clone();
        edit(&mut changed);
        let why = reason(&evaluate(&load(changed.to_string().as_bytes()).unwrap(), &log));
        assert!(why.contains(needle), "{needle:?} not in {why:?}");
    };
    let other = "0x0000000000000000000000000000000000000000000000000000000000000001";
    fails_with(
        &|r| r["kernels"][0]["initrd_plain_sha256"] = other.into(),
        "ipl9s",
    );
    fails_with(
        &|r| r["kernels"][0]["shim_authcode_sha256"] = other.into(),
        "bsas",
    );
    fails_with(
        &|r| r["kernels"][0]["vmlinuz_plain_sha256"] = other.into(),
        "vmlinuz",
    );
    fails_with(
        &|r| r["kernels"][0]["kernel_cmdline"] = "quiet".into(),
        "kernel_cmdline",
    );
    fails_with(
        &|r| r["scrtm_and_bios"][0]["scrtm"]["sha256"] = other.into(),
        "s_crtms",
    );
    fails_with(
        &|r| {
            r["scrtm_and_bios"][0]["platform_firmware"]
                .as_array_mut()
                .unwrap()
                .pop();
        },
        "platform_firmware_blobs",
    );
    fails_with(&|r| r["mokdig"][0]["sha256"] = other.into(), "MokList");
    fails_with(
        &|r| {
            r["db"].as_array_mut().unwrap().remove(0);
        },
        "EV_EFI_VARIABLE_DRIVER_CONFIG db)",
    );
    // A regex in kernel_cmdline is a full match, in Python's dialect.
    let mut loose = refstate.clone();
    loose["kernels"][0]["kernel_cmdline"] = r"\(hd3,gpt2\)/vmlinuz\-6\.11.* rhgb quiet".into();
    let v = evaluate(&load(loose.to_string().as_bytes()).unwrap(), &log);
    assert!(v.failures.is_empty(), "{:?}", reasons(&v));
}

#[test]
fn malformed_refstates_are_refused_at_load() {
    let log = EventLog::parse(&fedora_without_unlisted_pcr0_events()).unwrap();
    let refstate = measured_boot_refstate(&log, true).unwrap();
    let refused = |edit: &dyn Fn(&mut Value), needle: &str| {
        let mut changed = refstate.clone();
        edit(&mut changed);
        match load(changed.to_string().as_bytes()) {
            Err(PolicyError::Load(why)) => assert!(why.contains(needle), "{needle:?} not in {why:?}"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted a refstate that must fail: {needle}"),
        }
    };
    refused(
        &|r| r["kernels"][0]["initrd_plain_sha256"] = "0xABC".into(),
        "lowercase hex",
    );
    refused(
        &|r| r["kernels"][0]["kernel_cmdline"] = "(?=look)ahead".into(),
        "look-ahead",
    );
    refused(
        &|r| {
            r.as_object_mut().unwrap().remove("dbx");
        },
        "refstate lacks dbx",
    );
    refused(
        &|r| r["pk"][0]["SignatureData"] = "30820".into(),
        "does not start with 0x",
    );
    assert!(matches!(load(b"[]"), Err(PolicyError::Load(_))));
    assert!(matches!(load(b"{"), Err(PolicyError::Load(_))));
}
