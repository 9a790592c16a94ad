//! Pull mode against a hostile agent: every round whose evidence the record demands but the
//! agent withholds, garbles or forges ends in a failure with an event id, never a PASS; and
//! the shapes Keylime's own `keylime_agent` 0.2.9 sends (its broken self-signed
//! certificate, no `boottime`) attest.

use serde_json::{Value, json};
use zest_tests::pull_agent::PullOptions;
use zest_tests::pull_env::*;
use zest_tests::server::{TestVerifier, send_json};
use zest_tests::{Swtpm, boot, forge};

fn failure<'a>(status: &'a Value, event_id: &str) -> &'a Value {
    status["failures"]
        .as_array()
        .and_then(|list| list.iter().find(|f| f["type"] == event_id))
        .unwrap_or_else(|| panic!("no {event_id} failure in {status}"))
}

async fn passes(verifier: &TestVerifier, uuid: &str, rounds: u64) -> Value {
    wait_for(verifier, uuid, "passing rounds", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= rounds
    })
    .await
}

async fn fails_with(verifier: &TestVerifier, uuid: &str, event_id: &str) -> Value {
    let s = wait_for(verifier, uuid, "INVALID_QUOTE", |s| s["operational_state"] == 9).await;
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    failure(&s, event_id);
    s
}

#[tokio::test]
async fn withheld_or_undecodable_evidence_fails_the_round() {
    let verifier = verifier().await;
    let tpms: Vec<Swtpm> = (0..3).map(|_| Swtpm::start().unwrap()).collect();
    let no_pcr10 = start_agent(&tpms[0], "fc-no-pcr10", &verifier).await;
    let no_list = start_agent(&tpms[1], "fc-no-list", &verifier).await;
    let bad_log = start_agent(&tpms[2], "fc-bad-log", &verifier).await;
    let paths = ["/usr/bin/bash"];
    for agent in [&no_pcr10, &no_list] {
        agent.measure(paths[0], &digest(paths[0])).unwrap();
    }
    // A quote without PCR 10, and no IMA list, from an agent with a runtime policy.
    no_pcr10.set(|s| {
        s.drop_pcrs = vec![10];
        s.omit_ima_list = true;
    });
    // PCR 10 quoted, the list withheld.
    no_list.set(|s| s.omit_ima_list = true);
    // A refstate, and a boot log that is not base64.
    bad_log.boot(boot::fedora_without_unlisted_pcr0_events()).unwrap();
    bad_log.set(|s| s.mb_list_override = Some("not base64 at all!".into()));

    // The tenant's mask asks only for PCR 10: the record, not the mask, decides.
    enrol(&verifier, &no_pcr10, "fc-no-pcr10", &policy_for(&paths)).await;
    enrol(&verifier, &no_list, "fc-no-list", &policy_for(&paths)).await;
    enrol_with(
        &verifier,
        &bad_log,
        "fc-bad-log",
        &policy_for(&[]),
        json!({"tpm_policy": "{\"mask\": \"0x0\"}", "mb_policy": "{\"note\": \"any refstate\"}"}),
    )
    .await;

    let s = fails_with(&verifier, "fc-no-pcr10", "pcr_validation.missing_pcrs").await;
    assert_eq!(
        failure(&s, "pcr_validation.missing_pcrs")["context"]["data"],
        json!([10]),
        "{s}"
    );
    assert_eq!(s["attestation_count"], 0, "{s}");
    let s = fails_with(&verifier, "fc-no-list", "pcr_validation.unused_pcr_10").await;
    assert_eq!(s["attestation_count"], 0, "{s}");
    let s = fails_with(&verifier, "fc-bad-log", "measured_boot.parser.log.base64decode").await;
    assert_eq!(s["attestation_count"], 0, "{s}");
    // The verifier asked for the boot PCRs although the enrolled mask named none.
    assert_eq!(s["has_mb_refstate"], 1, "{s}");
}

#[tokio::test]
async fn a_boot_log_with_altered_event_data_fails_although_its_digests_replay() {
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    cfg.measured_boot_module = "builtin:keylime-mb-example".into();
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "fc-forged-boot", &verifier).await;
    // The firmware logged Secure Boot off; the forger flips the variable's data to on and
    // leaves every digest alone, so PCR 7 still replays to the quoted value.
    let genuine = boot::fedora_without_unlisted_pcr0_events();
    let forged = forge::flip_variable_data(&genuine, "SecureBoot").unwrap();
    agent.boot(forged.clone()).unwrap();
    let forged_log = zest::evidence::uefi::EventLog::parse(&forged).unwrap();
    let genuine_log = zest::evidence::uefi::EventLog::parse(&genuine).unwrap();
    let mut refstate = zest::policy::create::measured_boot_refstate(&genuine_log, true).unwrap();
    refstate["dbx"] = json!([]);
    enrol_with(
        &verifier,
        &agent,
        "fc-forged-boot",
        &policy_for(&[]),
        json!({"tpm_policy": "{\"mask\": \"0xffff\"}", "mb_policy": refstate.to_string()}),
    )
    .await;
    let s = fails_with(&verifier, "fc-forged-boot", "measured_boot.invalid_event_data").await;
    let forged_event = forged_log
        .events
        .iter()
        .find(
            |e| matches!(e.decode(), zest::evidence::uefi::EventData::Variable(v) if v.name == "SecureBoot"),
        )
        .unwrap()
        .number;
    let f = failure(&s, "measured_boot.invalid_event_data");
    assert_eq!(f["entry"], json!(forged_event), "{s}");
    assert_eq!(f["context"]["pcr"], 7, "{s}");
    assert_eq!(s["attestation_count"], 0, "{s}");
}

#[tokio::test]
async fn a_store_or_module_failure_during_a_round_is_an_internal_failure() {
    let verifier = verifier().await;
    let tpms: Vec<Swtpm> = (0..2).map(|_| Swtpm::start().unwrap()).collect();
    let gone = start_agent(&tpms[0], "fc-module-gone", &verifier).await;
    let broken = start_agent(&tpms[1], "fc-store-broken", &verifier).await;
    enrol(&verifier, &gone, "fc-module-gone", &policy_for(&[])).await;
    passes(&verifier, "fc-module-gone", 1).await;

    // The policy now names a component the store does not hold.
    let db = rusqlite::Connection::open(verifier.data.path().join("zest.sqlite")).unwrap();
    db.execute(
        "UPDATE runtime_policies SET module = ?1 WHERE name = 'fc-module-gone'",
        [format!("sha256:{}", "0".repeat(64))],
    )
    .unwrap();
    let s = fails_with(&verifier, "fc-module-gone", "internal.verifier.module").await;
    // Internal failures are irrecoverable: polling stops.
    assert_eq!(s["severity_level"], 6, "{s}");

    enrol(&verifier, &broken, "fc-store-broken", &policy_for(&[])).await;
    passes(&verifier, "fc-store-broken", 1).await;
    // The agent's policy record is gone from under it: the lookup finds nothing.
    db.execute("DELETE FROM runtime_policies WHERE name = 'fc-store-broken'", [])
        .unwrap();
    fails_with(&verifier, "fc-store-broken", "internal.verifier.store").await;
}

#[tokio::test]
async fn a_reboot_is_believed_only_when_the_quote_shows_one() {
    let verifier = verifier().await;
    let tpms: Vec<Swtpm> = (0..2).map(|_| Swtpm::start().unwrap()).collect();
    let genuine = start_agent(&tpms[0], "fc-reboot", &verifier).await;
    let forger = start_agent(&tpms[1], "fc-fake-reboot", &verifier).await;
    let paths = ["/usr/bin/bash", "/usr/bin/ls", "/usr/bin/cat"];
    for agent in [&genuine, &forger] {
        agent.measure(paths[0], &digest(paths[0])).unwrap();
    }
    enrol(&verifier, &genuine, "fc-reboot", &policy_for(&paths)).await;
    enrol(&verifier, &forger, "fc-fake-reboot", &policy_for(&paths)).await;
    let before = passes(&verifier, "fc-reboot", 2).await;
    passes(&verifier, "fc-fake-reboot", 2).await;

    // A claimed reboot with the TPM's resetCount unchanged: a forged claim.
    forger.reboot(&tpms[1], false, &[]).unwrap();
    let s = fails_with(&verifier, "fc-fake-reboot", "qoute_validation.quote_validation").await;
    assert!(
        failure(&s, "qoute_validation.quote_validation")["context"]
            .to_string()
            .contains("resetCount did not advance"),
        "{s}"
    );

    // A real reboot: the TPM is reset, and the agent's new list already holds three entries,
    // so it answers the verifier's offset (1) from mid-way. That round cannot be judged and
    // counts for nothing; the next one asks from entry 0 and passes.
    let measured: Vec<(&str, Vec<u8>)> = paths.iter().map(|p| (*p, digest(p))).collect();
    let offsets_before = genuine.requested_offsets().len();
    genuine.reboot(&tpms[0], true, &measured).unwrap();
    let count = before["attestation_count"].as_u64().unwrap();
    let s = wait_for(&verifier, "fc-reboot", "passing rounds after the reboot", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= count + 2
    })
    .await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");
    assert_eq!(s["last_event_id"], Value::Null, "{s}");
    let after: Vec<u64> = genuine.requested_offsets()[offsets_before..].to_vec();
    assert!(after.contains(&0), "the verifier never started over: {after:?}");
}

#[tokio::test]
async fn keylime_agent_0_2_9_shapes_attest_and_a_forged_ima_entry_fails_it() {
    let verifier = verifier().await;
    let tpm = Swtpm::start().unwrap();
    // Its self-signed certificate (serial 0, only a SAN, a self-signature that does not
    // verify) and quote replies without `boottime`.
    let options = PullOptions {
        keylime_certificate: true,
    };
    let agent = start_agent_with(&tpm, "fc-keylime-agent", &verifier, options).await;
    agent.set(|s| s.omit_boottime = true);
    let paths = ["/usr/bin/bash"];
    agent.measure(paths[0], &digest(paths[0])).unwrap();
    enrol(&verifier, &agent, "fc-keylime-agent", &policy_for(&paths)).await;
    let s = passes(&verifier, "fc-keylime-agent", 2).await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");

    agent.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    let s = fails_with(
        &verifier,
        "fc-keylime-agent",
        "ima.validation.ima-ng.not_in_allowlist",
    )
    .await;
    // The component's `entry` reaches the stored failure: the second line of the list.
    assert_eq!(
        failure(&s, "ima.validation.ima-ng.not_in_allowlist")["entry"],
        1,
        "{s}"
    );
}

/// Uploads the hostile test component and names a refstate `name` with `document` for it.
async fn hostile_refstate(verifier: &TestVerifier, name: &str, document: &str) {
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "modules?kind=measured-boot"))
            .header("content-type", "application/wasm")
            .body(zest_tests::policies::test_component("hostile")),
    )
    .await
    .unwrap();
    assert!(status == 200 || status == 201, "{reply}");
    let id = reply["results"]["module"].as_str().unwrap().to_owned();
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("mbpolicies/{name}")))
            .json(&json!({"mb_policy": json!(document).to_string(), "module": id})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{reply}");
}

#[tokio::test]
async fn a_components_state_first_attestation_and_recoverable_flag_are_honoured() {
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    // Every event is a warning: polling survives it unless it is irrecoverable.
    cfg.severity = zest::verifier::severity::SeverityPolicy::from_keylime(
        r#"["info", "warning", "emergency"]"#,
        r#"[{"event_id": ".*", "severity_label": "warning"}]"#,
    )
    .unwrap();
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    hostile_refstate(&verifier, "count", "count").await;
    hostile_refstate(&verifier, "irrecoverable", "irrecoverable").await;
    let tpms: Vec<Swtpm> = (0..2).map(|_| Swtpm::start().unwrap()).collect();
    let counting = start_agent(&tpms[0], "fc-count", &verifier).await;
    let stopping = start_agent(&tpms[1], "fc-irrecoverable", &verifier).await;
    for (agent, uuid, refstate) in [
        (&counting, "fc-count", "count"),
        (&stopping, "fc-irrecoverable", "irrecoverable"),
    ] {
        agent.boot(boot::fedora_without_unlisted_pcr0_events()).unwrap();
        enrol_with(
            &verifier,
            agent,
            uuid,
            &policy_for(&[]),
            json!({"mb_policy": null, "mb_policy_name": refstate}),
        )
        .await;
    }
    // The counter lives only in the state blob the host stores and hands back: two passes,
    // each told whether it is the first, then the third round fails at 3.
    let s = fails_with(&verifier, "fc-count", "measured_boot.hostile.count_reached").await;
    assert_eq!(s["attestation_count"], 2, "{s}");
    assert_eq!(
        failure(&s, "measured_boot.hostile.count_reached")["context"]["count"],
        3,
        "{s}"
    );
    assert!(
        s["failures"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["type"] != "measured_boot.hostile.state_mismatch"),
        "{s}"
    );
    // A recoverable warning: severity 1, polling goes on.
    assert_eq!(s["severity_level"], 1, "{s}");

    // An irrecoverable failure is forced to the highest label and stops polling; its entry
    // is kept.
    let s = fails_with(
        &verifier,
        "fc-irrecoverable",
        "measured_boot.hostile.irrecoverable",
    )
    .await;
    assert_eq!(s["severity_level"], 2, "{s}");
    assert_eq!(
        failure(&s, "measured_boot.hostile.irrecoverable")["entry"],
        1,
        "{s}"
    );
}
