//! The test agent's pull-mode API, as Keylime's agent serves it to the verifier
//! (keylime-api.md §5): HTTPS with a self-signed certificate, client certificates from the
//! verifier's CA required, quotes from its swtpm over the PCRs of `mask` plus PCR 16, and
//! an IMA list it extends into swtpm's PCR 10.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, body::Bytes};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;

use crate::agent::TestAgent;
use crate::ima::ImaLog;

/// What the agent serves and what it saw.
pub struct PullState {
    pub agent: TestAgent,
    pub log: ImaLog,
    /// The NK public key (PEM) whose hash the agent extends into PCR 16.
    pub pubkey: String,
    pub boottime: u64,
    /// Every `ima_ml_entry` the verifier asked for, in order.
    pub requested_offsets: Vec<u64>,
    /// Bodies POSTed to `/keys/vkey` and `/notifications/revocation`.
    pub vkeys: Vec<Value>,
    pub revocations: Vec<Value>,
}

/// A running pull agent; dropping it stops the listener.
pub struct PullAgent {
    pub addr: SocketAddr,
    /// PEM of the agent's server certificate (the verifier's `mtls_cert`).
    pub cert_pem: String,
    pub state: Arc<Mutex<PullState>>,
    task: JoinHandle<()>,
}

impl Drop for PullAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PullAgent {
    /// Serves `agent` on a free loopback port, trusting clients of the CA in
    /// `verifier_ca` (the verifier's `cv_ca/cacert.crt`).
    pub async fn start(mut agent: TestAgent, pubkey: String, verifier_ca: &Path) -> anyhow::Result<Self> {
        // The agent binds its key into PCR 16: reset by boot, then extended with H(pubkey).
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pubkey.as_bytes());
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, pubkey.as_bytes());
        agent.pcr_extend(
            16,
            &[
                (HashingAlgorithm::Sha256, sha256.as_ref().to_vec()),
                (HashingAlgorithm::Sha1, sha1.as_ref().to_vec()),
            ],
        )?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, agent.uuid.clone());
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for der in zest::net::load_certs(verifier_ca)? {
            roots.add(der)?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("agent key: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let state = Arc::new(Mutex::new(PullState {
            agent,
            log: ImaLog::default(),
            pubkey,
            boottime: 1_764_000_000,
            requested_offsets: Vec::new(),
            vkeys: Vec::new(),
            revocations: Vec::new(),
        }));
        let app = Router::new()
            .route(
                "/version",
                get(|| async {
                    Json(json!({"code": 200, "status": "Success", "results": {"supported_version": "2.2"}}))
                }),
            )
            .route("/{v}/quotes/integrity", get(integrity))
            .route("/{v}/keys/vkey", post(vkey))
            .route("/{v}/notifications/revocation", post(revocation))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(zest::net::serve_tls(listener, Arc::new(config), app));
        Ok(Self {
            addr,
            cert_pem,
            state,
            task,
        })
    }

    /// Measures a file: appends an ima-ng entry and extends PCR 10, as the kernel does.
    pub fn measure(&self, path: &str, file_digest: &[u8]) -> anyhow::Result<()> {
        let mut state = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let ext = state.log.add_ima_ng(path, file_digest);
        state.agent.pcr_extend(
            10,
            &[
                (HashingAlgorithm::Sha256, ext.sha256),
                (HashingAlgorithm::Sha1, ext.sha1),
            ],
        )
    }

    pub fn requested_offsets(&self) -> Vec<u64> {
        self.state
            .lock()
            .map(|s| s.requested_offsets.clone())
            .unwrap_or_default()
    }
}

#[derive(serde::Deserialize)]
struct IntegrityQuery {
    nonce: String,
    mask: String,
    partial: Option<String>,
    ima_ml_entry: Option<u64>,
}

async fn integrity(
    State(state): State<Arc<Mutex<PullState>>>,
    Query(q): Query<IntegrityQuery>,
) -> Json<Value> {
    let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let mut s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mask = u32::from_str_radix(q.mask.trim_start_matches("0x"), 16)? | (1 << 16);
        let pcrs: Vec<u8> = (0..24u8).filter(|p| mask & (1 << p) != 0).collect();
        let quote = s
            .agent
            .quote(q.nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &pcrs)])?;
        let from = q.ima_ml_entry.unwrap_or(0);
        s.requested_offsets.push(from);
        // An offset past the end of the list is answered from the start, as the agent does.
        let from = if (from as usize) > s.log.len() { 0 } else { from };
        let mut results = json!({
            "quote": quote.keylime_string(),
            "hash_alg": "sha256",
            "enc_alg": "rsa",
            "sign_alg": "rsassa",
            "boottime": s.boottime,
            "ima_measurement_list": s.log.text_from(from as usize),
            "ima_measurement_list_entry": from,
        });
        if q.partial.as_deref() != Some("1") {
            results["pubkey"] = json!(s.pubkey);
        }
        Ok(json!({"code": 200, "status": "Success", "results": results}))
    })
    .await;
    match answer {
        Ok(Ok(v)) => Json(v),
        Ok(Err(e)) => Json(json!({"code": 500, "status": e.to_string(), "results": {}})),
        Err(e) => Json(json!({"code": 500, "status": e.to_string(), "results": {}})),
    }
}

async fn vkey(State(state): State<Arc<Mutex<PullState>>>, body: Bytes) -> Json<Value> {
    if let (Ok(mut s), Ok(v)) = (state.lock(), serde_json::from_slice(&body)) {
        s.vkeys.push(v);
    }
    Json(json!({"code": 200, "status": "Success", "results": {}}))
}

async fn revocation(State(state): State<Arc<Mutex<PullState>>>, body: Bytes) -> Json<Value> {
    if let (Ok(mut s), Ok(v)) = (state.lock(), serde_json::from_slice(&body)) {
        s.revocations.push(v);
    }
    Json(json!({"code": 200, "status": "Success", "results": {}}))
}
