//! A verifier in push mode and swtpm push agents for push-mode tests: start, enrol, run a
//! round and wait for its verdict.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest::verifier::{Mode, VerifierConfig};

use crate::push_agent::PushAgent;
use crate::server::{TestVerifier, send_json};
use crate::{AkKind, EkKind, Swtpm, TestAgent};

pub fn config() -> VerifierConfig {
    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.mode = Mode::Push;
    config.quote_interval = 0.2;
    config
}

pub async fn verifier_with(config: VerifierConfig) -> TestVerifier {
    let data = tempfile::Builder::new().prefix("zest-push-").tempdir().unwrap();
    TestVerifier::start_in(data, config).await.unwrap()
}

pub fn digest(path: &str) -> Vec<u8> {
    HashAlg::Sha256.digest(&[path.as_bytes()])
}

pub fn policy_for(paths: &[String]) -> Value {
    let digests: serde_json::Map<String, Value> = paths
        .iter()
        .map(|p| (p.clone(), json!([hex::encode(digest(p))])))
        .collect();
    json!({"meta": {"version": 1, "generator": 3}, "release": 0, "digests": digests, "excludes": [],
        "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {}, "verification-keys": ""})
}

/// The tenant's enrolment body for a push agent (no address, no mTLS certificate), with a
/// runtime policy when given.
pub fn enrol_body(agent: &TestAgent, tpm_policy: &str, runtime: Option<&Value>) -> Value {
    json!({
        "v": null, "cloudagent_ip": null, "cloudagent_port": null, "tpm_policy": tpm_policy,
        "runtime_policy": runtime.map(|r| B64.encode(r.to_string())).unwrap_or_default(),
        "runtime_policy_name": null, "mb_policy": null, "mb_policy_name": "",
        "ima_sign_verification_keys": "", "metadata": "{}", "revocation_key": "",
        "accept_tpm_hash_algs": ["sha256", "sha1"], "accept_tpm_encryption_algs": ["rsa", "ecc"],
        "accept_tpm_signing_algs": ["rsassa", "ecdsa"], "ak_tpm": B64.encode(&agent.aik_tpm),
        "mtls_cert": "disabled", "supported_version": null,
    })
}

/// Enrols a push agent (no address, no mTLS certificate), with a runtime policy when given.
pub async fn enrol(verifier: &TestVerifier, agent: &TestAgent, tpm_policy: &str, runtime: Option<&Value>) {
    enrol_with(verifier, agent, tpm_policy, runtime, json!({})).await
}

/// Enrols a push agent with `extra` fields replacing the defaults (`module`, …).
pub async fn enrol_with(
    verifier: &TestVerifier,
    agent: &TestAgent,
    tpm_policy: &str,
    runtime: Option<&Value>,
    extra: Value,
) {
    let mut body = enrol_body(agent, tpm_policy, runtime);
    for (k, v) in extra.as_object().expect("extra enrolment fields are an object") {
        body[k] = v.clone();
    }
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("agents/{}", agent.uuid)))
            .json(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
}

pub async fn push_agent(verifier: &TestVerifier, tpm: &Swtpm, uuid: &str, ak: AkKind) -> PushAgent {
    let key = if ak == AkKind::RsaSsa { "rsa" } else { "ecc" };
    let agent = TestAgent::new(tpm, uuid, EkKind::Rsa2048, ak).unwrap();
    PushAgent::new(agent, &verifier.https, verifier.anonymous_client().unwrap(), key)
}

/// Uploads a policy component of `kind` (`runtime`, `measured-boot`); returns its id.
pub async fn upload_module(verifier: &TestVerifier, kind: &str, bytes: Vec<u8>) -> String {
    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("modules?kind={kind}")))
            .header("content-type", "application/wasm")
            .body(bytes),
    )
    .await
    .unwrap();
    assert!(
        code == 201 || code == 200,
        "uploading a {kind} component: {reply}"
    );
    reply["results"]["module"]
        .as_str()
        .unwrap_or_else(|| panic!("no module id in {reply}"))
        .to_owned()
}

pub async fn admin_get(verifier: &TestVerifier, path: &str) -> (u16, Value) {
    let admin = verifier.admin_client().unwrap();
    send_json(admin.get(format!("{}{path}", verifier.https)))
        .await
        .unwrap()
}

pub async fn status(verifier: &TestVerifier, uuid: &str) -> Value {
    admin_get(verifier, &format!("/v2.6/agents/{uuid}")).await.1["results"].clone()
}

/// The `detail` of a JSON:API error reply ("" when there is none).
pub fn detail(reply: &Value) -> &str {
    reply["errors"][0]["detail"].as_str().unwrap_or("")
}

/// Waits for attestation `index` of `uuid` to be judged; returns its attributes.
pub async fn verdict(verifier: &TestVerifier, uuid: &str, index: u64) -> Value {
    let deadline = Instant::now() + crate::wait_limit();
    loop {
        let (code, reply) = admin_get(verifier, &format!("/v3.0/agents/{uuid}/attestations/{index}")).await;
        assert_eq!(code, 200, "{reply}");
        let attributes = reply["data"]["attributes"].clone();
        if attributes["stage"] == "verification_complete" {
            return attributes;
        }
        assert!(Instant::now() < deadline, "no verdict: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A whole round that must be accepted; returns (index, the ima_log starting offset, verdict).
pub async fn round(verifier: &TestVerifier, agent: &mut PushAgent) -> (u64, Option<u64>, Value) {
    let r = agent.attest().await.unwrap();
    assert_eq!(r.created.0, 201, "{}", r.created.1);
    let location = r.location.unwrap();
    let index: u64 = location.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(
        location,
        format!("/v3.0/agents/{}/attestations/{index}", agent.agent.uuid)
    );
    let requested = &r.created.1["data"]["attributes"]["evidence_requested"];
    let offset = requested
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["evidence_type"] == "ima_log")
        .and_then(|e| e["chosen_parameters"]["starting_offset"].as_u64());
    let (code, reply) = r.submitted.unwrap();
    assert_eq!(code, 202, "{reply}");
    assert!(reply["meta"]["seconds_to_next_attestation"].is_u64(), "{reply}");
    let judged = verdict(verifier, &agent.agent.uuid, index).await;
    // The next round may start once quote_interval has passed since the evidence.
    tokio::time::sleep(Duration::from_millis(250)).await;
    (index, offset, judged)
}
