//! Pull mode end to end: the verifier polls a swtpm-backed agent over mTLS, attests it
//! round after round (IMA incrementally), fails it when its IMA list breaks the policy,
//! gives up on an unreachable agent, resumes after a restart and never undoes a DELETE.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest_tests::pull_env::*;
use zest_tests::server::{TestVerifier, send_json};
use zest_tests::{AkKind, Swtpm, fixture};

#[tokio::test]
async fn an_agent_passes_round_after_round_then_fails_on_a_file_outside_its_policy() {
    let (webhook, revocations) = webhook_sink().await;
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    cfg.revocation_webhook = Some(webhook);
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-1", &verifier).await;
    let paths = ["/usr/bin/bash", "/usr/lib/libc.so.6", "/usr/bin/ls"];
    agent.measure(paths[0], &digest(paths[0])).unwrap();
    let v = [0x5au8; 32];
    enrol_with(
        &verifier,
        &agent,
        "pull-agent-1",
        &policy_for(&paths),
        json!({"v": B64.encode(v), "revocation_key": rsa_private_pem()}),
    )
    .await;

    let s = wait_for(&verifier, "pull-agent-1", "three passing rounds", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(s["attestation_status"], "PASS");
    assert_eq!(s["hash_alg"], "sha256");

    // V went to the agent once, RSA-OAEP-SHA1 under its NK key.
    let vkeys = agent.state.lock().unwrap().vkeys.clone();
    assert_eq!(vkeys.len(), 1, "{vkeys:?}");
    let encrypted = B64.decode(vkeys[0]["encrypted_key"].as_str().unwrap()).unwrap();
    let nk = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8_of_pkcs1(&der_of(&rsa_private_pem())))
        .unwrap();
    let nk = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(nk).unwrap();
    let mut plain = vec![0u8; 256];
    let plain = nk
        .decrypt(&aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1, &encrypted, &mut plain, None)
        .unwrap();
    assert_eq!(plain, v);

    // New measurements keep passing, and rounds ask only for the new entries.
    agent.measure(paths[1], &digest(paths[1])).unwrap();
    agent.measure(paths[2], &digest(paths[2])).unwrap();
    let count = s["attestation_count"].as_u64().unwrap();
    wait_for(&verifier, "pull-agent-1", "more passing rounds", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= count + 3
    })
    .await;
    let offsets = agent.requested_offsets();
    assert_eq!(offsets[0], 0);
    assert_eq!(*offsets.last().unwrap(), 3, "incremental requests: {offsets:?}");

    // A file the policy does not list: the next round fails and polling stops.
    agent.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    let s = wait_for(&verifier, "pull-agent-1", "the failed state", |s| {
        s["operational_state"] == 9
    })
    .await;
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["last_event_id"], "ima.validation.ima-ng.not_in_allowlist");
    assert_eq!(
        s["failures"][0]["context"]["message"],
        "File not found in allowlist: /tmp/evil"
    );
    let polled = agent.requested_offsets().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        agent.requested_offsets().len(),
        polled,
        "a failed agent is not polled"
    );

    // A signed revocation message reached the agent and the webhook.
    let at_agent = agent.state.lock().unwrap().revocations.clone();
    let at_webhook = webhook_messages(&revocations, 1).await;
    assert_eq!(at_agent.len(), 1, "{at_agent:?}");
    assert_eq!(at_webhook, at_agent);
    let message = &at_agent[0];
    let msg: Value = serde_json::from_str(message["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["type"], "revocation");
    assert_eq!(msg["agent_id"], "pull-agent-1");
    assert_eq!(msg["event_id"], "ima.validation.ima-ng.not_in_allowlist");
    let context: Value = serde_json::from_str(msg["context"].as_str().unwrap()).unwrap();
    assert_eq!(context["message"], "File not found in allowlist: /tmp/evil");
    let public = der_of(&String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048pub.pem")).unwrap());
    let (_, spki) = {
        use x509_parser::prelude::FromDer;
        x509_parser::x509::SubjectPublicKeyInfo::from_der(&public).unwrap()
    };
    // As Keylime's agent verifies (OpenSSL's `rsa_pss_saltlen:max`): the salt must be the
    // longest the key allows, not the digest's length.
    use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, RsaPssSaltLength, UnparsedPublicKey};
    const MAX_SALT: aws_lc_rs::signature::RsaParameters =
        RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
    let signature = B64.decode(message["signature"].as_str().unwrap()).unwrap();
    let signed = message["msg"].as_str().unwrap().as_bytes();
    UnparsedPublicKey::new(&MAX_SALT, spki.subject_public_key.data.as_ref())
        .verify(signed, &signature)
        .expect("RSA-PSS-SHA256 with the maximum salt over the msg text");
    let digest_salt =
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, spki.subject_public_key.data.as_ref());
    assert!(
        digest_salt.verify(signed, &signature).is_err(),
        "a digest-length salt"
    );
}

#[tokio::test]
async fn an_unreachable_agent_shows_timeout_while_retried_then_fails_with_a_comm_error() {
    let (webhook, notifications) = webhook_sink().await;
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    cfg.revocation_webhook = Some(webhook);
    // Retries after 6 s and 12 s: the agent is stale (10 s) before it is FAILED.
    cfg.retry_interval = Duration::from_secs(6);
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-2", &verifier).await;
    enrol(&verifier, &agent, "pull-agent-2", &policy_for(&[])).await;
    wait_for(&verifier, "pull-agent-2", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    drop(agent);
    let s = wait_for(&verifier, "pull-agent-2", "retries", |s| {
        s["operational_state"] == 4
    })
    .await;
    assert_eq!(s["attestation_status"], "PASS", "fresh until 10 s: {s}");
    let s = wait_for(&verifier, "pull-agent-2", "TIMEOUT", |s| {
        s["attestation_status"] == "TIMEOUT"
    })
    .await;
    assert_eq!(s["operational_state"], 4, "still retrying: {s}");
    let s = wait_for(&verifier, "pull-agent-2", "FAILED", |s| {
        s["operational_state"] == 7
    })
    .await;
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["failures"][0]["type"], "internal.verifier.not_reachable");
    assert_eq!(s["last_event_id"], "internal.verifier.not_reachable");
    let seen = webhook_messages(&notifications, 1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let msg: Value = serde_json::from_str(seen[0]["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["type"], "comm_error");
    assert_eq!(msg["event_id"], "internal.verifier.not_reachable");
    assert_eq!(msg["severity_label"], "emergency");
}

#[tokio::test]
async fn an_agent_never_attested_fails_unreachable_without_a_notification() {
    let (webhook, notifications) = webhook_sink().await;
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    cfg.revocation_webhook = Some(webhook);
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-6", &verifier).await;
    let ak = agent.state.lock().unwrap().agent.aik_tpm.clone();
    let cert = agent.cert_pem.clone();
    drop(agent);
    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(admin.post(verifier.url("2.6", "agents/pull-agent-6")).json(&json!({
        "cloudagent_ip": "127.0.0.1", "cloudagent_port": 1, "tpm_policy": "{}",
        "runtime_policy": "", "mb_policy": null, "ima_sign_verification_keys": "", "metadata": "{}",
        "revocation_key": "", "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(ak), "mtls_cert": cert,
        "supported_version": "2.6", "mb_policy_name": "",
    })))
    .await
    .unwrap();
    assert_eq!(code, 200, "{reply}");
    let s = wait_for(&verifier, "pull-agent-6", "FAILED", |s| {
        s["operational_state"] == 7
    })
    .await;
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["failures"][0]["type"], "internal.verifier.not_reachable");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        notifications.lock().unwrap().is_empty(),
        "no comm_error for an agent that never attested"
    );
}

#[tokio::test]
async fn the_api_version_is_negotiated_with_the_agent() {
    let verifier = verifier().await;
    let tpm = Swtpm::start().unwrap();
    // An older agent: enrolled with the tenant's 2.6, it refuses it and offers up to 2.3.
    let old = start_agent(&tpm, "pull-agent-7", &verifier).await;
    old.serve_versions(&["2.1", "2.2", "2.3"]);
    enrol_with(
        &verifier,
        &old,
        "pull-agent-7",
        &policy_for(&[]),
        json!({"supported_version": "2.6"}),
    )
    .await;
    wait_for(&verifier, "pull-agent-7", "passing rounds at 2.3", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let versions = old.requested_versions();
    assert_eq!(versions.first().map(String::as_str), Some("2.6"), "{versions:?}");
    assert!(versions[1..].iter().all(|v| v == "2.3"), "{versions:?}");

    // Enrolled without a version: the agent's /version decides, newest common first.
    let tpm2 = Swtpm::start().unwrap();
    let new = start_agent(&tpm2, "pull-agent-8", &verifier).await;
    enrol_with(
        &verifier,
        &new,
        "pull-agent-8",
        &policy_for(&[]),
        json!({"supported_version": null}),
    )
    .await;
    wait_for(&verifier, "pull-agent-8", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(
        new.requested_versions().iter().all(|v| v == "2.6"),
        "{:?}",
        new.requested_versions()
    );

    // An agent that speaks nothing we do fails with the reason.
    let tpm3 = Swtpm::start().unwrap();
    let alien = start_agent(&tpm3, "pull-agent-9", &verifier).await;
    alien.serve_versions(&["3.0"]);
    enrol(&verifier, &alien, "pull-agent-9", &policy_for(&[])).await;
    let s = wait_for(&verifier, "pull-agent-9", "FAILED", |s| {
        s["operational_state"] == 7
    })
    .await;
    assert_eq!(
        s["failures"][0]["type"], "internal.verifier.version_not_supported",
        "{s}"
    );
}

#[tokio::test]
async fn a_recoverable_failure_keeps_the_agent_polled_and_notifies_once() {
    let (webhook, notifications) = webhook_sink().await;
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    cfg.revocation_webhook = Some(webhook);
    cfg.severity = zest::verifier::severity::SeverityPolicy::from_keylime(
        r#"["info", "warning", "emergency"]"#,
        r#"[{"event_id": "ima\\..*", "severity_label": "warning"}, {"event_id": ".*", "severity_label": "emergency"}]"#,
    )
    .unwrap();
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-10", &verifier).await;
    agent.measure("/usr/bin/ok", &digest("/usr/bin/ok")).unwrap();
    enrol(&verifier, &agent, "pull-agent-10", &policy_for(&["/usr/bin/ok"])).await;
    wait_for(&verifier, "pull-agent-10", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    agent.measure("/tmp/odd", &digest("/tmp/odd")).unwrap();
    let s = wait_for(&verifier, "pull-agent-10", "INVALID_QUOTE", |s| {
        s["operational_state"] == 9
    })
    .await;
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["severity_level"], 1, "{s}");
    assert_eq!(s["last_event_id"], "ima.validation.ima-ng.not_in_allowlist");
    let polled = agent.requested_offsets().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let offsets = agent.requested_offsets();
    assert!(
        offsets.len() > polled + 2,
        "a warning keeps the agent polled: {offsets:?}"
    );
    // Keylime restarts IMA from the first entry after a failure.
    assert_eq!(*offsets.last().unwrap(), 0, "{offsets:?}");
    let seen = notifications.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "notified only when the severity rose: {seen:?}");
    let msg: Value = serde_json::from_str(seen[0]["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["severity_label"], "warning");
    assert_eq!(status(&verifier, "pull-agent-10").await["operational_state"], 9);
}

#[tokio::test]
async fn measured_boot_is_checked_against_the_boot_log_and_the_quote() {
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let mut cfg = config();
    cfg.measured_boot_module = "builtin:keylime-mb-example".into();
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-11", &verifier).await;
    let log = zest_tests::boot::fedora_without_unlisted_pcr0_events();
    agent.boot(log.clone()).unwrap();
    let mut refstate = zest::policy::create::measured_boot_refstate(
        &zest::evidence::uefi::EventLog::parse(&log).unwrap(),
        true,
    )
    .unwrap();
    // This firmware's dbx holds several lists, which `example` refuses; [] skips the check.
    refstate["dbx"] = json!([]);
    // The tenant's mask for measured boot: PCRs 0–9 and 11–15, and IMA's PCR 10.
    enrol_with(
        &verifier,
        &agent,
        "pull-agent-11",
        &policy_for(&[]),
        json!({"tpm_policy": "{\"mask\": \"0xffff\"}", "mb_policy": refstate.to_string()}),
    )
    .await;
    let s = wait_for(&verifier, "pull-agent-11", "passing rounds", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert_eq!(s["has_mb_refstate"], 1, "{s}");
    assert_eq!(s["attestation_status"], "PASS");

    // Something measured into PCR 4 that the log does not show: the replay no longer matches.
    agent
        .state
        .lock()
        .unwrap()
        .agent
        .pcr_extend(
            4,
            &[(
                tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
                vec![7u8; 32],
            )],
        )
        .unwrap();
    let s = wait_for(&verifier, "pull-agent-11", "INVALID_QUOTE", |s| {
        s["operational_state"] == 9
    })
    .await;
    assert_eq!(s["last_event_id"], "measured_boot.invalid_pcr_4", "{s}");
}

#[tokio::test]
async fn a_restarted_verifier_resumes_incrementally_and_a_delete_is_final() {
    let verifier = verifier().await;
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-3", &verifier).await;
    let paths = ["/usr/bin/a", "/usr/bin/b", "/usr/bin/c"];
    for p in &paths {
        agent.measure(p, &digest(p)).unwrap();
    }
    enrol(&verifier, &agent, "pull-agent-3", &policy_for(&paths)).await;
    wait_for(&verifier, "pull-agent-3", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 2
    })
    .await;

    let verifier = verifier.restart().await.unwrap();
    let before = agent.requested_offsets().len();
    let count = status(&verifier, "pull-agent-3").await["attestation_count"]
        .as_u64()
        .unwrap();
    wait_for(&verifier, "pull-agent-3", "rounds after the restart", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= count + 2
    })
    .await;
    let after: Vec<u64> = agent.requested_offsets()[before..].to_vec();
    assert!(
        after.iter().all(|o| *o == 3),
        "no full re-pull after the restart: {after:?}"
    );

    let admin = verifier.admin_client().unwrap();
    let (status_code, _) = send_json(admin.delete(verifier.url("2.6", "agents/pull-agent-3")))
        .await
        .unwrap();
    // 202 when the DELETE met a round in flight: the agent goes when that round ends.
    assert!(matches!(status_code, 200 | 202), "{status_code}");
    gone(&verifier, "pull-agent-3").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, _) = send_json(admin.get(verifier.url("2.6", "agents/pull-agent-3")))
        .await
        .unwrap();
    assert_eq!(code, 404, "a round in flight did not bring the agent back");
    let polled = agent.requested_offsets().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        agent.requested_offsets().len(),
        polled,
        "a deleted agent is not polled"
    );
}

/// Waits until the verifier answers 404 for the agent (30 s at most).
async fn gone(verifier: &TestVerifier, uuid: &str) {
    let admin = verifier.admin_client().unwrap();
    let deadline = std::time::Instant::now() + zest_tests::wait_limit();
    loop {
        let (code, reply) = send_json(admin.get(verifier.url("2.6", &format!("agents/{uuid}"))))
            .await
            .unwrap();
        if code == 404 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{uuid} never went: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keylime 7.14.3's verifier answers a DELETE that meets a round in flight with 202 and
/// operational state TERMINATED (8), and deletes the agent when the round ends; an agent at
/// rest goes at once with 200.
#[tokio::test]
async fn a_delete_during_a_round_in_flight_is_202_terminated_then_the_agent_goes() {
    let verifier = verifier().await;
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-del", &verifier).await;
    agent.measure("/usr/bin/a", &digest("/usr/bin/a")).unwrap();
    enrol(&verifier, &agent, "pull-agent-del", &policy_for(&["/usr/bin/a"])).await;
    wait_for(&verifier, "pull-agent-del", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    // Hold the next quote request: the round is in flight until the gate opens.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    agent.set(|s| s.quote_gate = Some(gate.clone()));
    let deadline = std::time::Instant::now() + zest_tests::wait_limit();
    while agent.state.lock().unwrap().quotes_waiting == 0 {
        assert!(std::time::Instant::now() < deadline, "no quote request came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = verifier.admin_client().unwrap();
    let url = verifier.url("2.6", "agents/pull-agent-del");
    let (code, reply) = send_json(admin.delete(&url)).await.unwrap();
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["status"], "Accepted");
    let shown = status(&verifier, "pull-agent-del").await;
    assert_eq!(shown["operational_state"], 8, "{shown}");
    // Stop and reactivate see no agent; a second DELETE is 202 again.
    let (code, _) = send_json(admin.put(verifier.url("2.6", "agents/pull-agent-del/reactivate")))
        .await
        .unwrap();
    assert_eq!(code, 404);
    let (code, _) = send_json(admin.delete(&url)).await.unwrap();
    assert_eq!(code, 202);

    gate.add_permits(1);
    gone(&verifier, "pull-agent-del").await;

    // A stopped agent is deleted at once (200), as Keylime deletes agents in states it no
    // longer polls, whether or not a round is still finishing.
    let tpm = Swtpm::start().unwrap();
    let stopped = start_agent(&tpm, "pull-agent-stop", &verifier).await;
    stopped.measure("/usr/bin/a", &digest("/usr/bin/a")).unwrap();
    enrol(
        &verifier,
        &stopped,
        "pull-agent-stop",
        &policy_for(&["/usr/bin/a"]),
    )
    .await;
    wait_for(&verifier, "pull-agent-stop", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let (code, _) = send_json(admin.put(verifier.url("2.6", "agents/pull-agent-stop/stop")))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let url = verifier.url("2.6", "agents/pull-agent-stop");
    let (code, reply) = send_json(admin.delete(&url)).await.unwrap();
    assert_eq!(code, 200, "{reply}");
    let (code, _) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_replayed_nonce_a_foreign_ak_and_a_pcr_off_policy_each_fail_the_quote() {
    let verifier = verifier().await;
    let (tpm_a, tpm_b, tpm_c) = (
        Swtpm::start().unwrap(),
        Swtpm::start().unwrap(),
        Swtpm::start().unwrap(),
    );
    let replaying = start_agent(&tpm_a, "pull-agent-12", &verifier).await;
    let foreign = start_agent(&tpm_b, "pull-agent-13", &verifier).await;
    let off_policy = start_agent(&tpm_c, "pull-agent-14", &verifier).await;
    for (agent, uuid) in [(&replaying, "pull-agent-12"), (&foreign, "pull-agent-13")] {
        enrol(&verifier, agent, uuid, &policy_for(&[])).await;
        wait_for(&verifier, uuid, "a passing round", |s| {
            s["attestation_count"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    }
    // Answers with a quote over an old nonce, as a replaying agent would.
    replaying.state.lock().unwrap().quote_nonce = Some(b"AAAAAAAAAAAAAAAAAAAA".to_vec());
    // Quotes with an AK the verifier never enrolled.
    foreign
        .state
        .lock()
        .unwrap()
        .agent
        .create_ak(AkKind::RsaSsa)
        .unwrap();
    // Enrolled expecting a PCR 11 the TPM does not hold.
    enrol_with(
        &verifier,
        &off_policy,
        "pull-agent-14",
        &policy_for(&[]),
        json!({"tpm_policy": format!("{{\"11\": [\"{}\"], \"mask\": \"0xc00\"}}", "ab".repeat(32))}),
    )
    .await;

    // Enrolled accepting only signing schemes the agent does not use.
    let tpm_d = Swtpm::start().unwrap();
    let other_scheme = start_agent(&tpm_d, "pull-agent-16", &verifier).await;
    enrol_with(
        &verifier,
        &other_scheme,
        "pull-agent-16",
        &policy_for(&[]),
        json!({"accept_tpm_signing_algs": ["ecschnorr", "rsapss"]}),
    )
    .await;

    for (uuid, event, needle) in [
        ("pull-agent-16", "qoute_validation.invalid_sign_alg", "rsassa"),
        ("pull-agent-12", "qoute_validation.quote_validation", "nonce"),
        ("pull-agent-13", "qoute_validation.quote_validation", "signature"),
        ("pull-agent-14", "pcr_validation.invalid_pcr_11", "allowlist"),
    ] {
        let s = wait_for(&verifier, uuid, "INVALID_QUOTE", |s| s["operational_state"] == 9).await;
        assert_eq!(s["last_event_id"], event, "{s}");
        assert_eq!(s["attestation_status"], "FAIL");
        assert!(
            s["failures"][0]["context"].to_string().contains(needle),
            "{uuid}: {s}"
        );
    }
}
