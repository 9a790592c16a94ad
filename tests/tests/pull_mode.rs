//! Pull mode end to end: the verifier polls a swtpm-backed agent over mTLS, attests it
//! round after round (IMA incrementally), fails it when its IMA list breaks the policy,
//! gives up on an unreachable agent, resumes after a restart and never undoes a DELETE.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest::verifier::VerifierConfig;
use zest_tests::pull_agent::PullAgent;
use zest_tests::server::{TestVerifier, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent, fixture};

fn config() -> VerifierConfig {
    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.quote_interval = 0.2;
    config.max_retries = 2;
    config.retry_interval = Duration::from_millis(100);
    config
}

async fn verifier() -> TestVerifier {
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    TestVerifier::start_in(data, config()).await.unwrap()
}

fn digest(path: &str) -> Vec<u8> {
    HashAlg::Sha256.digest(&[path.as_bytes()])
}

fn policy_for(paths: &[&str]) -> Value {
    let digests: serde_json::Map<String, Value> = paths
        .iter()
        .map(|p| (p.to_string(), json!([hex::encode(digest(p))])))
        .collect();
    json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}

async fn start_agent(tpm: &Swtpm, uuid: &str, verifier: &TestVerifier) -> PullAgent {
    let agent = TestAgent::new(tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let pubkey = String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048pub.pem")).unwrap();
    PullAgent::start(agent, pubkey, &verifier.data.path().join("cv_ca/cacert.crt"))
        .await
        .unwrap()
}

async fn enrol(verifier: &TestVerifier, agent: &PullAgent, uuid: &str, policy: &Value) {
    let ak = agent.state.lock().unwrap().agent.aik_tpm.clone();
    let body = json!({
        "v": null,
        "cloudagent_ip": "127.0.0.1",
        "cloudagent_port": agent.addr.port(),
        "tpm_policy": "{\"mask\": \"0x400\"}",
        "runtime_policy": B64.encode(policy.to_string()),
        "runtime_policy_name": null,
        "mb_policy": null,
        "mb_policy_name": "",
        "ima_sign_verification_keys": "",
        "metadata": "{}",
        "revocation_key": "",
        "accept_tpm_hash_algs": ["sha512", "sha384", "sha256"],
        "accept_tpm_encryption_algs": ["ecc", "rsa"],
        "accept_tpm_signing_algs": ["ecschnorr", "rsassa"],
        "ak_tpm": B64.encode(ak),
        "mtls_cert": agent.cert_pem,
        "supported_version": "2.2",
    });
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("agents/{uuid}")))
            .json(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
}

async fn status(verifier: &TestVerifier, uuid: &str) -> Value {
    let admin = verifier.admin_client().unwrap();
    let (_, reply) = send_json(admin.get(verifier.url("2.6", &format!("agents/{uuid}"))))
        .await
        .unwrap();
    reply["results"].clone()
}

/// Polls the agent's status until `done` holds (or fails the test after 30 s).
async fn wait_for(verifier: &TestVerifier, uuid: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(verifier, uuid).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_agent_passes_round_after_round_then_fails_on_a_file_outside_its_policy() {
    let verifier = verifier().await;
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-1", &verifier).await;
    let paths = ["/usr/bin/bash", "/usr/lib/libc.so.6", "/usr/bin/ls"];
    agent.measure(paths[0], &digest(paths[0])).unwrap();
    enrol(&verifier, &agent, "pull-agent-1", &policy_for(&paths)).await;

    let s = wait_for(&verifier, "pull-agent-1", "three passing rounds", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(s["attestation_status"], "PASS");
    assert_eq!(s["hash_alg"], "sha256");

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
}

#[tokio::test]
async fn an_unreachable_agent_is_retried_then_failed() {
    let verifier = verifier().await;
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent(&tpm, "pull-agent-2", &verifier).await;
    enrol(&verifier, &agent, "pull-agent-2", &policy_for(&[])).await;
    wait_for(&verifier, "pull-agent-2", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    drop(agent);
    let s = wait_for(&verifier, "pull-agent-2", "FAILED", |s| {
        s["operational_state"] == 7
    })
    .await;
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["failures"][0]["type"], "internal.no_quote");
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
    assert_eq!(status_code, 200);
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
