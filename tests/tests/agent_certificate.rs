//! Reaching an agent that serves the certificate Keylime's pull agent serves: self-signed,
//! serial number 0, and a self-signature that does not verify (the agent adds the
//! subjectAltName after signing). Keylime pins it with OpenSSL, which does not check a trust
//! anchor's signature; zest pins it byte for byte (`zest::net::pinned::agent_client`).
//!
//! No TPM and no test agent: an HTTPS server on loopback that serves that certificate,
//! requires a client certificate as the agent does, and answers `GET /version`.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use zest_tests::keylime_cert::keylime_agent_certificate;

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";

/// Our client certificate (self-signed) and its PEM followed by its key's PEM.
fn client_identity() -> (CertificateDer<'static>, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "verifier");
    let cert = params.self_signed(&key).unwrap();
    (
        cert.der().clone(),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
}

/// An agent-like HTTPS server on 127.0.0.1 serving `cert_pem` and `key`, trusting client
/// certificates issued by (or equal to) `client_ca`; returns `https://127.0.0.1:PORT`.
async fn serve(
    cert_pem: &str,
    key: &rcgen::KeyPair,
    client_ca: CertificateDer<'static>,
) -> (String, JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca).unwrap();
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let app = axum::Router::new().route(
        "/version",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({
                "code": 200,
                "status": "Success",
                "results": {"supported_version": "2.2"}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(zest::net::serve_tls(listener, Arc::new(config), app));
    (base, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinned_keylime_certificate_is_reached() {
    let (cert_pem, key) = keylime_agent_certificate(UUID).unwrap();
    let (client_cert, identity) = client_identity();
    let (base, _server) = serve(&cert_pem, &key, client_cert).await;

    let client =
        zest::net::pinned::agent_client(&cert_pem, identity.as_bytes(), Duration::from_secs(10)).unwrap();
    let response = client.get(format!("{base}/version")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["results"]["supported_version"], "2.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_pinned_certificate_is_refused() {
    let (cert_pem, key) = keylime_agent_certificate(UUID).unwrap();
    let (other_pem, _) = keylime_agent_certificate(UUID).unwrap();
    let (client_cert, identity) = client_identity();
    let (base, _server) = serve(&cert_pem, &key, client_cert).await;

    let client =
        zest::net::pinned::agent_client(&other_pem, identity.as_bytes(), Duration::from_secs(10)).unwrap();
    let error = client.get(format!("{base}/version")).send().await.unwrap_err();
    assert!(
        format!("{error:?}").contains("not the pinned certificate"),
        "{error:?}"
    );
}

/// Why zest does not use reqwest's own trust for agents: with `tls_certs_only`, the pinned
/// certificate becomes a WebPKI trust anchor, and path building verifies the presented
/// certificate's signature under the anchor's key. The agent's self-signature does not
/// verify, so rustls refuses it (BadSignature; the agent sees a "decrypt error" alert),
/// where OpenSSL, which Keylime pins with, never checks a trust anchor's own signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webpki_trust_refuses_the_keylime_certificate() {
    let (cert_pem, key) = keylime_agent_certificate(UUID).unwrap();
    let (client_cert, identity) = client_identity();
    let (base, _server) = serve(&cert_pem, &key, client_cert).await;

    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let error = client.get(format!("{base}/version")).send().await.unwrap_err();
    assert!(format!("{error:?}").contains("BadSignature"), "{error:?}");
}
