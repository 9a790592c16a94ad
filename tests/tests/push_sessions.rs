//! Push mode's proof-of-possession sessions over HTTPS without a client certificate, as
//! Keylime's push agent opens them: a challenge per session, TPM2_Certify of the AK by
//! itself from a swtpm, a bearer token stored only as a salted hash.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::verifier::{Mode, VerifierConfig};
use zest_tests::server::{TestVerifier, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

async fn push_verifier(nonce_lifetime: Duration) -> TestVerifier {
    let data = tempfile::Builder::new().prefix("zest-push-").tempdir().unwrap();
    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.mode = Mode::Push;
    config.nonce_lifetime = nonce_lifetime;
    TestVerifier::start_in(data, config).await.unwrap()
}

/// Enrols `agent` the way Keylime's tenant does for a push agent: no address, no mTLS cert.
/// A push agent enrolled without policies (the sessions are what these tests are about).
async fn enrol(verifier: &TestVerifier, agent: &TestAgent) {
    zest_tests::push_env::enrol(verifier, agent, "{}", None).await
}

/// The push agent's client: trusts the verifier's CA, presents no certificate.
fn agent_client(verifier: &TestVerifier) -> reqwest::Client {
    verifier.anonymous_client().unwrap()
}

async fn open_session(verifier: &TestVerifier, client: &reqwest::Client, agent_id: &str) -> (u16, Value) {
    let body = json!({"data": {"type": "session", "attributes": {
        "agent_id": agent_id,
        "authentication_supported": [{"authentication_class": "pop", "authentication_type": "tpm_pop"}],
    }}});
    send_json(
        client
            .post(format!("{}/v3.0/sessions", verifier.https))
            .header("content-type", "application/vnd.api+json")
            .body(body.to_string()),
    )
    .await
    .unwrap()
}

async fn prove(
    verifier: &TestVerifier,
    client: &reqwest::Client,
    session: &Value,
    agent_id: &str,
    message: &[u8],
    signature: &[u8],
) -> (u16, Value) {
    let id = session["data"]["id"].as_str().unwrap();
    let body = json!({"data": {"type": "session", "id": id, "attributes": {
        "agent_id": agent_id,
        "authentication_provided": [{"authentication_class": "pop", "authentication_type": "tpm_pop",
            "data": {"message": B64.encode(message), "signature": B64.encode(signature)}}],
    }}});
    send_json(
        client
            .patch(format!("{}/v3.0/sessions/{id}", verifier.https))
            .header("content-type", "application/vnd.api+json")
            .body(body.to_string()),
    )
    .await
    .unwrap()
}

fn challenge_of(session: &Value) -> Vec<u8> {
    let requested = &session["data"]["attributes"]["authentication_requested"][0];
    assert_eq!(requested["authentication_type"], "tpm_pop");
    B64.decode(requested["chosen_parameters"]["challenge"].as_str().unwrap())
        .unwrap()
}

/// Opens a session and proves possession with the agent's AK; returns the PATCH reply.
async fn authenticate(verifier: &TestVerifier, agent: &mut TestAgent) -> (u16, Value) {
    let client = agent_client(verifier);
    let (status, session) = open_session(verifier, &client, &agent.uuid).await;
    assert_eq!(status, 200, "{session}");
    let (message, signature) = agent.certify_ak(&challenge_of(&session)).unwrap();
    prove(verifier, &client, &session, &agent.uuid, &message, &signature).await
}

#[tokio::test]
async fn rsa_and_ecc_aks_earn_a_token_stored_only_as_a_salted_hash() {
    let verifier = push_verifier(Duration::from_secs(60)).await;
    for (uuid, ak) in [("push-rsa", AkKind::RsaSsa), ("push-ecc", AkKind::EcDsaP256)] {
        let tpm = Swtpm::start().unwrap();
        let mut agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, ak).unwrap();
        enrol(&verifier, &agent).await;
        let (status, reply) = authenticate(&verifier, &mut agent).await;
        assert_eq!(status, 200, "{uuid}: {reply}");
        let attributes = &reply["data"]["attributes"];
        assert_eq!(attributes["evaluation"], "pass", "{reply}");
        let session_id = reply["data"]["id"].as_str().unwrap();
        let token = attributes["token"].as_str().unwrap();
        let (prefix, secret) = token.split_once('.').unwrap();
        assert_eq!(prefix, session_id);
        assert_eq!(secret.len(), 43, "32 random bytes, URL-safe base64");
        for stamp in [
            "created_at",
            "challenges_expire_at",
            "response_received_at",
            "token_expires_at",
        ] {
            let text = attributes[stamp].as_str().unwrap();
            assert!(text.ends_with("+00:00") && text.len() == 32, "{stamp}: {text}");
        }

        // The store holds a salted HMAC-SHA-256 of the token, never the token.
        let db = rusqlite::Connection::open(verifier.data.path().join("zest.sqlite")).unwrap();
        let (salt, hash): (Vec<u8>, Vec<u8>) = db
            .query_row(
                "SELECT token_salt, token_hash FROM push_sessions WHERE agent_id = ?1",
                [uuid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(salt.len() >= 16, "a salt of {} bytes", salt.len());
        let expected = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &salt),
            token.as_bytes(),
        );
        assert_eq!(hash, expected.as_ref());
        let file = std::fs::read(verifier.data.path().join("zest.sqlite")).unwrap();
        let wal = std::fs::read(verifier.data.path().join("zest.sqlite-wal")).unwrap_or_default();
        for bytes in [&file, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the token's secret is not stored"
            );
        }
    }
    // One active session per agent: a second proof replaces the first.
    let db = rusqlite::Connection::open(verifier.data.path().join("zest.sqlite")).unwrap();
    let count: i64 = db
        .query_row("SELECT count(*) FROM push_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn forged_reused_expired_and_unknown_proofs_are_refused() {
    let verifier = push_verifier(Duration::from_secs(60)).await;
    let client = agent_client(&verifier);
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "push-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    enrol(&verifier, &agent).await;

    // A certification over another challenge: 401, no token; the challenge is then spent.
    let (_, session) = open_session(&verifier, &client, &agent.uuid).await;
    let (message, signature) = agent.certify_ak(b"not the verifier's challenge").unwrap();
    let (status, reply) = prove(&verifier, &client, &session, &agent.uuid, &message, &signature).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["data"]["attributes"]["evaluation"], "fail");
    assert!(reply["data"]["attributes"].get("token").is_none());
    let (message, signature) = agent.certify_ak(&challenge_of(&session)).unwrap();
    let (status, reply) = prove(&verifier, &client, &session, &agent.uuid, &message, &signature).await;
    assert_eq!(status, 404, "a challenge is answered once: {reply}");

    // A valid certification by another TPM's AK.
    let other_tpm = Swtpm::start().unwrap();
    let mut other = TestAgent::new(&other_tpm, "push-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let (_, session) = open_session(&verifier, &client, &agent.uuid).await;
    let (message, signature) = other.certify_ak(&challenge_of(&session)).unwrap();
    let (status, _) = prove(&verifier, &client, &session, &agent.uuid, &message, &signature).await;
    assert_eq!(status, 401);

    // A tampered signature.
    let (_, session) = open_session(&verifier, &client, &agent.uuid).await;
    let (message, mut signature) = agent.certify_ak(&challenge_of(&session)).unwrap();
    let last = signature.len() - 1;
    signature[last] ^= 1;
    let (status, _) = prove(&verifier, &client, &session, &agent.uuid, &message, &signature).await;
    assert_eq!(status, 401);

    // An agent that is not enrolled looks exactly like a bad proof.
    let stranger_tpm = Swtpm::start().unwrap();
    let mut stranger =
        TestAgent::new(&stranger_tpm, "push-stranger", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let (status, reply) = authenticate(&verifier, &mut stranger).await;
    assert_eq!(status, 401, "{reply}");

    // Unknown session, other agent's session, malformed bodies.
    let unknown = json!({"data": {"id": "00000000-0000-4000-8000-000000000000"}});
    let (status, reply) = prove(&verifier, &client, &unknown, &agent.uuid, b"x", b"y").await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["errors"][0]["detail"], "Session not found");
    let (_, session) = open_session(&verifier, &client, &agent.uuid).await;
    let (status, _) = prove(&verifier, &client, &session, "push-stranger", b"x", b"y").await;
    assert_eq!(status, 400);
    let (status, reply) = send_json(
        client
            .post(format!("{}/v3/sessions", verifier.https))
            .header("content-type", "application/json")
            .body(r#"{"data": {"type": "session", "attributes": {"agent_id": "push-agent", "authentication_supported": []}}}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(reply["errors"][0]["detail"].as_str().unwrap().contains("tpm_pop"));
    // Still authenticates after all that.
    let (status, reply) = authenticate(&verifier, &mut agent).await;
    assert_eq!(
        (status, &reply["data"]["attributes"]["evaluation"]),
        (200, &json!("pass")),
        "{reply}"
    );

    // The admin API stays behind client certificates on the same port.
    let (status, _) = send_json(client.get(verifier.url("2.6", "agents")))
        .await
        .unwrap();
    assert_eq!(status, 403);
}

#[tokio::test]
async fn challenges_expire_are_never_repeated_and_creation_is_rate_limited() {
    let verifier = push_verifier(Duration::from_secs(1)).await;
    let client = agent_client(&verifier);
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "push-slow", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    enrol(&verifier, &agent).await;
    let (_, session) = open_session(&verifier, &client, &agent.uuid).await;
    let (message, signature) = agent.certify_ak(&challenge_of(&session)).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, reply) = prove(&verifier, &client, &session, &agent.uuid, &message, &signature).await;
    assert_eq!(status, 401, "an expired challenge: {reply}");

    // 50 sessions a minute per client address (one was opened above): the 51st is refused.
    let mut challenges = std::collections::HashSet::new();
    let mut sessions = Vec::new();
    for _ in 0..49 {
        let (status, session) = open_session(&verifier, &client, "push-limited").await;
        assert_eq!(status, 200, "{session}");
        let challenge = challenge_of(&session);
        assert_eq!(challenge.len(), 32);
        assert!(challenges.insert(challenge), "a challenge repeated");
        sessions.push(session);
    }
    let response = client
        .post(format!("{}/v3/sessions", verifier.https))
        .header("content-type", "application/vnd.api+json")
        .body(
            json!({"data": {"type": "session", "attributes": {"agent_id": "push-limited",
            "authentication_supported": [{"authentication_class": "pop", "authentication_type": "tpm_pop"}]}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    // One address holds at most four pending challenges per agent: the oldest are gone.
    let (status, _) = prove(&verifier, &client, &sessions[0], "push-limited", b"x", b"y").await;
    assert_eq!(status, 404, "an evicted challenge");
    // Another address is counted apart.
    let (status, _) = open_session(&verifier, &client_from(&verifier, [127, 0, 0, 2]), "push-limited").await;
    assert_eq!(status, 200, "another address is counted apart");
}

/// A push agent's client whose connections come from `address` (a 127.x loopback address).
fn client_from(verifier: &TestVerifier, address: [u8; 4]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(
        &std::fs::read(verifier.data.path().join("cv_ca/cacert.crt")).unwrap(),
    )
    .unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_session_flood_naming_an_agent_from_many_addresses_does_not_lock_it_out() {
    let verifier = push_verifier(Duration::from_secs(60)).await;
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "push-victim", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    enrol(&verifier, &agent).await;
    // Forty addresses each ask for sessions naming the victim and answer them wrongly, as
    // fast as the verifier lets them.
    let mut flooders = Vec::new();
    for host in 10..50u8 {
        let verifier_https = verifier.https.clone();
        let client = client_from(&verifier, [127, 0, 1, host]);
        flooders.push(tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..30 {
                let body = json!({"data": {"type": "session", "attributes": {
                    "agent_id": "push-victim",
                    "authentication_supported": [{"authentication_class": "pop", "authentication_type": "tpm_pop"}],
                }}});
                let response = client
                    .post(format!("{verifier_https}/v3/sessions"))
                    .header("content-type", "application/vnd.api+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                if response.status() == 429 {
                    refused += 1;
                    continue;
                }
                let session: Value = response.json().await.unwrap();
                let id = session["data"]["id"].as_str().unwrap().to_owned();
                let proof = json!({"data": {"type": "session", "id": id, "attributes": {
                    "agent_id": "push-victim",
                    "authentication_provided": [{"authentication_class": "pop", "authentication_type": "tpm_pop",
                        "data": {"message": B64.encode(b"forged"), "signature": B64.encode(b"forged")}}],
                }}});
                let _ = client
                    .patch(format!("{verifier_https}/v3/sessions/{id}"))
                    .header("content-type", "application/vnd.api+json")
                    .body(proof.to_string())
                    .send()
                    .await;
            }
            refused
        }));
    }
    let mut refused = 0;
    for flooder in flooders {
        refused += flooder.await.unwrap();
    }
    assert!(refused > 0, "the flooders were never slowed down");
    // The victim, from its own address, still gets a session and a token.
    let (status, reply) = authenticate(&verifier, &mut agent).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["data"]["attributes"]["token"].is_string(), "{reply}");
}
