//! Every listener has limits a hostile client runs into: bodies past a route's size, more
//! requests at once than allowed, bodies that never finish, idle connections, and an
//! agent's endless reply.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zest::net::ServeLimits;
use zest::verifier::Mode;
use zest_tests::pull_agent::PullOptions;
use zest_tests::pull_env::*;
use zest_tests::server::{RegistrarOptions, TestVerifier, send_json};
use zest_tests::{Swtpm, TestRegistrar};

fn tight() -> ServeLimits {
    ServeLimits {
        max_connections: 64,
        max_in_flight: 2,
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    }
}

async fn registrar(limits: ServeLimits) -> TestRegistrar {
    TestRegistrar::start(RegistrarOptions {
        serve_limits: limits,
        ..RegistrarOptions::default()
    })
    .await
    .unwrap()
}

/// The `host:port` of the registrar's plain-HTTP listener.
fn plain_addr(registrar: &TestRegistrar) -> String {
    registrar.http.trim_start_matches("http://").to_owned()
}

/// Opens a request whose body never finishes: headers announce 100 bytes, 5 are sent.
async fn stalled_request(addr: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v2.6/agents/slow HTTP/1.1\r\nHost: zest\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\"",
        )
        .await
        .unwrap();
    stream
}

/// Reads until the server answers or closes; the status line, if any.
async fn answer(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout(deadline - Instant::now(), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&buf).lines().next().map(str::to_owned)
}

#[tokio::test]
async fn requests_past_the_in_flight_cap_get_503_and_slow_bodies_are_cut_off() {
    let registrar = registrar(tight()).await;
    let addr = plain_addr(&registrar);
    let client = registrar.plain_client();
    let version = format!("{}/version", registrar.http);
    let (status, _) = send_json(client.get(&version)).await.unwrap();
    assert_eq!(status, 200);

    // Two bodies that never finish hold both places.
    let mut slow = [stalled_request(&addr).await, stalled_request(&addr).await];
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let response = client.get(&version).send().await.unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(Instant::now() < deadline, "a third request was never refused");
    };
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], 503, "{body}");

    // The slow bodies are cut off after the body timeout, and the places come free.
    for stream in &mut slow {
        let status = answer(stream, Duration::from_secs(10)).await;
        assert!(
            status
                .as_deref()
                .is_some_and(|s| s.contains(" 408 ") || s.contains(" 400 ")),
            "a stalled body was not answered with an error: {status:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = send_json(client.get(&version)).await.unwrap();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the places never came free");
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let registrar = registrar(tight()).await;
    let mut stream = tokio::net::TcpStream::connect(plain_addr(&registrar))
        .await
        .unwrap();
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: zest\r\n\r\n")
        .await
        .unwrap();
    let status = answer(&mut stream, Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.contains(" 200 ")));
    // Kept alive, then nothing: the server closes it after the idle timeout.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "the idle connection stayed open");
}

#[tokio::test]
async fn bodies_past_a_routes_limit_are_refused() {
    // Registration: a few hundred KiB at most.
    let registrar = registrar(ServeLimits::default()).await;
    let big = serde_json::json!({"ek_tpm": "A".repeat(512 * 1024)});
    let (status, _) = send_json(
        registrar
            .plain_client()
            .post(format!("{}/v2.6/agents/big", registrar.http))
            .json(&big),
    )
    .await
    .unwrap();
    assert_eq!(status, 413);

    // Push sessions are unauthenticated: a few KiB.
    let data = tempfile::Builder::new().prefix("zest-limits-").tempdir().unwrap();
    let mut cfg = config();
    cfg.mode = Mode::Push;
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let flood = serde_json::json!({"data": {"type": "session", "attributes": {"agent_id": "a", "padding": "x".repeat(64 * 1024)}}});
    let response = verifier
        .anonymous_client()
        .unwrap()
        .post(format!("{}/v3/sessions", verifier.https))
        .header("content-type", "application/vnd.api+json")
        .json(&flood)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn an_agents_endless_reply_is_read_only_up_to_the_evidence_cap() {
    let data = tempfile::Builder::new().prefix("zest-limits-").tempdir().unwrap();
    let mut cfg = config();
    cfg.max_evidence_size = 1024 * 1024;
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let agent = start_agent_with(&tpm, "limits-huge", &verifier, PullOptions::default()).await;
    // A gibibyte, made only as it is read.
    agent.set(|s| s.huge_reply = Some(1 << 30));
    enrol(&verifier, &agent, "limits-huge", &policy_for(&[])).await;
    let s = wait_for(&verifier, "limits-huge", "INVALID_QUOTE", |s| {
        s["operational_state"] == 9
    })
    .await;
    assert_eq!(s["last_event_id"], "qoute_validation.invalid_data", "{s}");
    assert!(
        s["failures"].to_string().contains("larger than 1048576 bytes"),
        "{s}"
    );
}
