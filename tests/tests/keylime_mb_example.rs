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

/// shim's `vendor_db` authority events (EFI_SIGNATURE_DATA entries without a list), as in
/// Keylime 7.14.3: `keylime-policy create measured-boot` lists every entry as
/// `{SignatureOwner, SignatureData: "0x…"}` and `example` wants each entry among them,
/// once. The expected reasons are Keylime's own for the same logs (its `Example().evaluate`
/// on these bytes), in zest's event-numbered form.
mod vendor_db {
    use super::*;
    use zest_tests::boot::secure_boot_with_vendor_db;

    /// The owner of Keylime's vendor_db test data (`0223eddb-9079-4388-af77-2d65b1c35d3b`).
    const OWNER: &str = "dbed230279908843af772d65b1c35d3b";

    fn der(fill: u8, len: u16) -> Vec<u8> {
        [
            vec![0x30, 0x82],
            len.to_be_bytes().to_vec(),
            vec![fill; usize::from(len)],
        ]
        .concat()
    }

    fn entry(owner_hex: &str, certificate: Vec<u8>) -> Vec<u8> {
        [hex::decode(owner_hex).unwrap(), certificate].concat()
    }

    /// The log, its refstate from `create`, and the number of its first vendor_db event.
    fn log_and_refstate(vendor_db: &[Vec<u8>]) -> (EventLog, Value, usize) {
        let log = EventLog::parse(&secure_boot_with_vendor_db(vendor_db)).unwrap();
        let refstate = measured_boot_refstate(&log, false).unwrap();
        let first = log
            .events
            .iter()
            .position(|e| {
                e.type_name() == "EV_EFI_VARIABLE_AUTHORITY"
                    && matches!(e.decode(), zest::evidence::uefi::EventData::Variable(v) if v.name == "vendor_db")
            })
            .unwrap_or(0);
        (log, refstate, first)
    }

    fn verdict(log: &EventLog, refstate: &Value) -> Verdict {
        evaluate(&load(refstate.to_string().as_bytes()).unwrap(), log)
    }

    #[test]
    fn a_secure_boot_log_with_vendor_db_passes_the_refstate_made_from_it() {
        let (log, refstate, _) = log_and_refstate(&[entry(OWNER, der(0x11, 8))]);
        assert_eq!(refstate["has_secureboot"], true);
        assert_eq!(
            refstate["vendor_db"],
            serde_json::json!([{
                "SignatureOwner": "0223eddb-9079-4388-af77-2d65b1c35d3b",
                "SignatureData": "0x308200081111111111111111",
            }])
        );
        let pass = verdict(&log, &refstate);
        assert!(pass.failures.is_empty(), "{:?}", reasons(&pass));

        // Two entries in one event, one of them 260 bytes long.
        let two = [
            entry(OWNER, der(0x11, 8)),
            entry("bd9afa775903324dbd6028f4e78f784b", der(0x22, 260)),
        ]
        .concat();
        let (log, refstate, _) = log_and_refstate(&[two]);
        assert_eq!(refstate["vendor_db"].as_array().unwrap().len(), 2);
        assert_eq!(
            refstate["vendor_db"][1]["SignatureOwner"],
            "77fa9abd-0359-4d32-bd60-28f4e78f784b"
        );
        let pass = verdict(&log, &refstate);
        assert!(pass.failures.is_empty(), "{:?}", reasons(&pass));
    }

    #[test]
    fn a_foreign_vendor_db_key_fails() {
        let (log, mut refstate, at) = log_and_refstate(&[entry(OWNER, der(0x11, 8))]);
        refstate["vendor_db"][0]["SignatureData"] = format!("0x{}", hex::encode(der(0x99, 8))).into();
        assert_eq!(
            reason(&verdict(&log, &refstate)),
            format!(
                "event {at} (PCR 7, EV_EFI_VARIABLE_AUTHORITY vendor_db) VariableData [0] is not one of the reference state's vendor_db signatures"
            )
        );
    }

    #[test]
    fn a_refstate_without_vendor_db_fails_a_vendor_db_event_under_secure_boot() {
        let (log, mut refstate, at) = log_and_refstate(&[entry(OWNER, der(0x11, 8))]);
        refstate.as_object_mut().unwrap().remove("vendor_db");
        assert_eq!(
            reason(&verdict(&log, &refstate)),
            format!(
                "event {at} (PCR 7, EV_EFI_VARIABLE_AUTHORITY vendor_db) VariableData [0] does not pass empty disjunction"
            )
        );
        // The same boot without shim's vendor_db events needs none.
        let (log, mut refstate, _) = log_and_refstate(&[]);
        assert_eq!(refstate["vendor_db"], serde_json::json!([]));
        refstate.as_object_mut().unwrap().remove("vendor_db");
        let pass = verdict(&log, &refstate);
        assert!(pass.failures.is_empty(), "{:?}", reasons(&pass));
    }

    #[test]
    fn two_vendor_db_events_fail_as_in_keylime() {
        let second = entry("bd9afa775903324dbd6028f4e78f784b", der(0x22, 260));
        let (log, refstate, at) = log_and_refstate(&[entry(OWNER, der(0x11, 8)), second]);
        assert_eq!(refstate["vendor_db"].as_array().unwrap().len(), 2);
        assert_eq!(
            reason(&verdict(&log, &refstate)),
            format!(
                "event {} (PCR 7, EV_EFI_VARIABLE_AUTHORITY vendor_db) VariableData test was already run once",
                at + 1
            )
        );
    }

    #[test]
    fn a_sha256_vendor_db_entry_is_not_a_list() {
        let digest: Vec<u8> = (0..32).collect();
        let (log, refstate, at) = log_and_refstate(&[entry(OWNER, digest)]);
        assert_eq!(refstate["vendor_db"], serde_json::json!([]));
        assert_eq!(
            reason(&verdict(&log, &refstate)),
            format!("event {at} (PCR 7, EV_EFI_VARIABLE_AUTHORITY vendor_db) VariableData is not a list")
        );
    }
}
