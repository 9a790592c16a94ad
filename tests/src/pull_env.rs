//! A verifier and swtpm pull agents for pull-mode tests: start, enrol, read the status and
//! wait for it to reach a state.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest::verifier::VerifierConfig;

use crate::pull_agent::{PullAgent, PullOptions};
use crate::server::{TestVerifier, send_json};
use crate::{AkKind, EkKind, Swtpm, TestAgent, fixture};

/// Keylime's test RSA key: the agent's NK (its public half is the quote's `pubkey`) and the
/// revocation key.
pub fn rsa_private_pem() -> String {
    String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048.pem")).unwrap()
}

pub fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

/// DER length prefix.
pub fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

/// PKCS#8 around a PKCS#1 RSA private key (what aws-lc-rs decrypts with).
pub fn pkcs8_of_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    let mut inner = vec![
        0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
        0x00, 0x04,
    ];
    inner.extend(der_len(pkcs1.len()));
    inner.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(inner.len()));
    out.extend(inner);
    out
}

/// A plain-HTTP sink that keeps every JSON body POSTed to it (the revocation webhook).
pub async fn webhook_sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/revocation",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    store.lock().unwrap().push(v);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/revocation", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

/// The webhook's messages once there are at least `n` (it is sent in a task of its own).
pub async fn webhook_messages(seen: &std::sync::Arc<std::sync::Mutex<Vec<Value>>>, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + crate::wait_limit();
    loop {
        let messages = seen.lock().unwrap().clone();
        if messages.len() >= n || std::time::Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn config() -> VerifierConfig {
    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.quote_interval = 0.2;
    config.max_retries = 2;
    config.retry_interval = Duration::from_millis(100);
    config
}

pub async fn verifier() -> TestVerifier {
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    TestVerifier::start_in(data, config()).await.unwrap()
}

pub fn digest(path: &str) -> Vec<u8> {
    HashAlg::Sha256.digest(&[path.as_bytes()])
}

pub fn policy_for(paths: &[&str]) -> Value {
    let digests: Vec<(&str, Vec<u8>)> = paths.iter().map(|p| (*p, digest(p))).collect();
    crate::policies::runtime_policy(&digests)
}

pub async fn start_agent(tpm: &Swtpm, uuid: &str, verifier: &TestVerifier) -> PullAgent {
    start_agent_with(tpm, uuid, verifier, PullOptions::default()).await
}

/// A pull agent on `tpm` with Keylime's test RSA key as its NK key.
pub async fn start_agent_with(
    tpm: &Swtpm,
    uuid: &str,
    verifier: &TestVerifier,
    options: PullOptions,
) -> PullAgent {
    let agent = TestAgent::new(tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let pubkey = String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048pub.pem")).unwrap();
    PullAgent::start_with(
        agent,
        pubkey,
        &verifier.data.path().join("cv_ca/cacert.crt"),
        "127.0.0.1:0".parse().unwrap(),
        options,
    )
    .await
    .unwrap()
}

pub async fn enrol(verifier: &TestVerifier, agent: &PullAgent, uuid: &str, policy: &Value) {
    enrol_with(verifier, agent, uuid, policy, json!({})).await
}

/// Enrols with `extra` fields replacing the defaults.
pub async fn enrol_with(
    verifier: &TestVerifier,
    agent: &PullAgent,
    uuid: &str,
    policy: &Value,
    extra: Value,
) {
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = enrol_at(&admin, &verifier.https, agent, uuid, policy, extra)
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
}

/// `POST {base}/v2.6/agents/{uuid}` with the body Keylime's tenant sends for `agent`, `extra`
/// fields replacing the defaults; the status and reply.
pub async fn enrol_at(
    admin: &reqwest::Client,
    base: &str,
    agent: &PullAgent,
    uuid: &str,
    policy: &Value,
    extra: Value,
) -> anyhow::Result<(u16, Value)> {
    let ak = agent
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("agent state poisoned"))?
        .agent
        .aik_tpm
        .clone();
    let mut body = json!({
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
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            body[k] = v.clone();
        }
    }
    send_json(admin.post(format!("{base}/v2.6/agents/{uuid}")).json(&body)).await
}

pub async fn status(verifier: &TestVerifier, uuid: &str) -> Value {
    let admin = verifier.admin_client().unwrap();
    let (_, reply) = send_json(admin.get(verifier.url("2.6", &format!("agents/{uuid}"))))
        .await
        .unwrap();
    reply["results"].clone()
}

/// Polls the agent's status until `done` holds (or fails the test after 30 s).
pub async fn wait_for(
    verifier: &TestVerifier,
    uuid: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + crate::wait_limit();
    loop {
        let s = status(verifier, uuid).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
