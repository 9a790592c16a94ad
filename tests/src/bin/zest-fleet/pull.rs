//! Pull mode: each simulated agent serves Keylime's agent API (HTTPS, client certificates
//! from the verifier's CA required) on a loopback address of its own, `127.2.x.y:9002`,
//! and the verifier polls it. Quotes cover the PCRs of `mask` plus PCR 16, which binds the
//! agent's NK public key; the IMA list grows on the agent's own clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use zest_tests::ima::ImaLog;
use zest_tests::soft_tpm::{SoftAgent, SoftAk};

/// What every simulated pull agent shares: its NK public key (PEM) and its TLS identity
/// (the verifier pins each agent's certificate by its registered `mtls_cert`; one
/// certificate for all keeps setup cheap and changes nothing the verifier does).
pub struct Shared {
    pub nk_pem: String,
    pub cert_pem: String,
    pub tls: Arc<rustls::ServerConfig>,
}

impl Shared {
    pub fn new(verifier_ca: &Path) -> anyhow::Result<Self> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        let nk = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("NK key"))?;
        let der = nk.public_key().as_der().map_err(|_| anyhow::anyhow!("NK key"))?;
        let nk_pem = pem("PUBLIC KEY", der.as_ref());

        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "zest-fleet agent");
        let cert = params.self_signed(&key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for der in zest::net::load_certs(verifier_ca)? {
            roots.add(der)?;
        }
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("agent key: {e}"))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(vec![cert.der().clone()], key_der)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            nk_pem,
            cert_pem: cert.pem(),
            tls: Arc::new(tls),
        })
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The loopback address of agent `index`: 127.2.x.y, y never 0 or 255.
pub fn address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 2, (index / 250) as u8, (index % 250 + 1) as u8)
}

/// One agent's state, as its quote handler and its clock share it.
pub struct AgentState {
    pub agent: SoftAgent,
    pub log: ImaLog,
    nk_pem: String,
    /// When each quote request came, to tell whether the verifier keeps its interval.
    pub polled_at: Vec<Instant>,
}

pub type Handle = Arc<Mutex<AgentState>>;

/// Extends PCR 16 with H(NK), as the agent does at start, and serves the agent API on
/// `address(index):9002`.
pub async fn serve(
    shared: &Shared,
    mut agent: SoftAgent,
    index: usize,
) -> anyhow::Result<(Handle, SocketAddr)> {
    let binding = HashAlgSha256::digest(shared.nk_pem.as_bytes());
    agent.tpm.pcr_extend(16, &binding)?;
    let state = Arc::new(Mutex::new(AgentState {
        agent,
        log: ImaLog::default(),
        nk_pem: shared.nk_pem.clone(),
        polled_at: Vec::new(),
    }));
    let app = Router::new()
        .route("/version", get(version))
        .route("/{v}/quotes/integrity", get(integrity))
        .route("/{v}/keys/vkey", post(accepted))
        .route("/{v}/notifications/revocation", post(accepted))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind((address(index), 9002))
        .await
        .with_context(|| format!("binding {}:9002", address(index)))?;
    let addr = listener.local_addr()?;
    tokio::spawn(zest::net::serve_tls(listener, shared.tls.clone(), app));
    Ok((state, addr))
}

struct HashAlgSha256;

impl HashAlgSha256 {
    fn digest(data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
            .as_ref()
            .to_vec()
    }
}

type Reply = (StatusCode, Json<Value>);

fn envelope(code: StatusCode, status: &str, results: Value) -> Reply {
    (
        code,
        Json(json!({"code": code.as_u16(), "status": status, "results": results})),
    )
}

async fn version() -> Reply {
    envelope(
        StatusCode::OK,
        "Success",
        json!({"supported_version": "2.5", "supported_versions": ["2.1", "2.2", "2.3", "2.4", "2.5"]}),
    )
}

async fn accepted() -> Reply {
    envelope(StatusCode::OK, "Success", json!({}))
}

#[derive(serde::Deserialize)]
struct IntegrityQuery {
    nonce: String,
    mask: String,
    partial: Option<String>,
    ima_ml_entry: Option<u64>,
}

/// `GET /v{v}/quotes/integrity`: what Keylime's agent answers.
async fn integrity(State(state): State<Handle>, Query(q): Query<IntegrityQuery>) -> Reply {
    let answer = (|| -> anyhow::Result<Value> {
        let mut s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        s.polled_at.push(Instant::now());
        let mask = u32::from_str_radix(q.mask.trim_start_matches("0x"), 16)? | (1 << 16);
        let pcrs: Vec<u8> = (0..24u8).filter(|p| mask & (1 << p) != 0).collect();
        let quote = s.agent.tpm.quote(q.nonce.as_bytes(), &pcrs)?;
        // An offset past the end of the list is answered from the start, as the agent does.
        let from = q.ima_ml_entry.unwrap_or(0) as usize;
        let from = if from > s.log.len() { 0 } else { from };
        let sign_alg = match s.agent.tpm.ak_kind {
            SoftAk::EcdsaP256 => "ecdsa",
            SoftAk::RsaSsa2048 => "rsassa",
        };
        let mut results = json!({
            "quote": quote.keylime_string(),
            "hash_alg": "sha256",
            "enc_alg": "ecc",
            "sign_alg": sign_alg,
            "boottime": 1_764_000_000u64,
        });
        if mask & (1 << 10) != 0 {
            results["ima_measurement_list"] = json!(s.log.text_from(from));
            results["ima_measurement_list_entry"] = json!(from);
        }
        if q.partial.as_deref() != Some("1") {
            results["pubkey"] = json!(s.nk_pem);
        }
        Ok(results)
    })();
    match answer {
        Ok(results) => envelope(StatusCode::OK, "Success", results),
        Err(e) => envelope(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), json!({})),
    }
}

/// Measures `growth` files every `interval` until `until`, as a running system does.
pub async fn grow(state: Handle, growth: usize, paths: Vec<String>, interval: Duration, until: Instant) {
    let mut round = 0usize;
    while Instant::now() < until {
        tokio::time::sleep(interval).await;
        let Ok(mut s) = state.lock() else { return };
        for g in 0..growth {
            let path = &paths[(round * growth + g) % paths.len()];
            let digest = HashAlgSha256::digest(path.as_bytes());
            let ext = s.log.add_ima_ng(path, &digest);
            if s.agent.tpm.pcr_extend(10, &ext.sha256).is_err() {
                return;
            }
        }
        round += 1;
    }
}
