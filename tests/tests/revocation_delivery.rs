//! Revocations reach the webhook as Keylime's verifier delivers them: over TLS with the
//! verifier's client certificate, tried again until it answers 200 or 202, `max_retries`
//! times at most, waiting `retry_interval` (or its powers with `exponential_backoff`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::config::DataDir;
use zest::net::{TlsMaterial, Usage};
use zest::verifier::VerifierConfig;
use zest::verifier::notify::retry_time;
use zest_tests::Swtpm;
use zest_tests::pull_agent::PullAgent;
use zest_tests::pull_env::*;
use zest_tests::server::TestVerifier;

/// What the webhook saw: when each POST came, and the message.
type Seen = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A webhook that answers each POST with the next of `statuses` (the last one after that).
fn hook_app(seen: Seen, statuses: Vec<u16>) -> axum::Router {
    axum::Router::new().route(
        "/revocation",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            let statuses = statuses.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((
                    Instant::now(),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ));
                let status = statuses
                    .get(seen.len() - 1)
                    .or(statuses.last())
                    .copied()
                    .unwrap_or(200);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    )
}

async fn wait_for_posts(seen: &Seen, n: usize) -> Vec<(Instant, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let posts = seen.lock().unwrap().clone();
        if posts.len() >= n {
            return posts;
        }
        assert!(
            Instant::now() < deadline,
            "{} webhook POSTs, waited for {n}",
            posts.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enrols an agent whose next round fails (a file its policy does not list).
async fn failing_agent(verifier: &TestVerifier, tpm: &Swtpm, id: &str) -> PullAgent {
    let agent = start_agent(tpm, id, verifier).await;
    agent.measure("/usr/bin/bash", &digest("/usr/bin/bash")).unwrap();
    agent.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    enrol_with(
        verifier,
        &agent,
        id,
        &policy_for(&["/usr/bin/bash"]),
        json!({"v": B64.encode([0x5a; 32]), "revocation_key": rsa_private_pem()}),
    )
    .await;
    agent
}

#[tokio::test]
async fn the_webhook_is_tried_again_until_it_accepts() {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/revocation", listener.local_addr().unwrap());
    // 201 is not one of Keylime's success codes: tried again too.
    let app = hook_app(seen.clone(), vec![500, 201, 202, 500]);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg: VerifierConfig = config();
    cfg.revocation_webhook = Some(url);
    cfg.max_retries = 5;
    cfg.retry_interval = Duration::from_millis(400);
    cfg.exponential_backoff = false;
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = failing_agent(&verifier, &tpm, "hook-agent").await;
    wait_for(&verifier, "hook-agent", "the failed state", |s| {
        s["operational_state"] == 9
    })
    .await;

    let posts = wait_for_posts(&seen, 3).await;
    assert_eq!(posts[0].1, posts[2].1, "the same message each time");
    for pair in posts.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(380),
            "tried again after {gap:?}, not retry_interval"
        );
    }
    // The agent was told as well, once.
    assert_eq!(agent.state.lock().unwrap().revocations.len(), 1);
}

#[test]
fn backoff_is_keylimes_retry_time() {
    let two = Duration::from_secs(2);
    let waits: Vec<u64> = (0..5).map(|n| retry_time(true, two, n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16]);
    assert_eq!(retry_time(false, two, 4), two);
    // A base of 1 or less does not grow.
    assert_eq!(
        retry_time(true, Duration::from_millis(500), 3),
        Duration::from_millis(500)
    );
    assert_eq!(
        retry_time(true, Duration::from_secs(100), 9),
        Duration::from_secs(3600)
    );
}

/// An HTTPS webhook that demands a client certificate from the verifier's CA: only the
/// verifier's own certificate gets a message through.
#[tokio::test]
async fn the_webhook_gets_the_verifiers_client_certificate() {
    let data = tempfile::Builder::new().prefix("zest-pull-").tempdir().unwrap();
    let tls_dir = DataDir(data.path().to_path_buf()).tls_dir();
    let material = TlsMaterial::ensure(&tls_dir, &["127.0.0.1".into()]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (cert, key) = material
        .issue(out.path(), "hook", &["127.0.0.1".into()], Usage::Server)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in zest::net::load_certs(&material.path(TlsMaterial::CA_CERT)).unwrap() {
        roots.add(der).unwrap();
    }
    let clients =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(
            zest::net::load_certs(&cert).unwrap(),
            zest::net::load_key(&key).unwrap(),
        )
        .unwrap();
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(zest::net::serve_tls(
        listener,
        Arc::new(server),
        hook_app(seen.clone(), vec![200]),
    ));

    // Without a certificate the webhook refuses the handshake.
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(material.path(TlsMaterial::CA_CERT)).unwrap())
                .unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://{addr}/revocation");
    assert!(anonymous.post(&url).json(&json!({})).send().await.is_err());

    let mut cfg = config();
    cfg.revocation_webhook = Some(url);
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let _agent = failing_agent(&verifier, &tpm, "tls-hook-agent").await;
    let posts = wait_for_posts(&seen, 1).await;
    let msg: Value = serde_json::from_str(posts[0].1["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["agent_id"], "tls-hook-agent");
    assert_eq!(msg["type"], "revocation");
}
