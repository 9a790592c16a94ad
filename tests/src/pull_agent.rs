//! The test agent's pull-mode API, as Keylime's agent serves it to the verifier
//! (keylime-api.md §5): HTTPS with a self-signed certificate, client certificates from the
//! verifier's CA required, quotes from its swtpm over the PCRs of `mask` plus PCR 16, and
//! an IMA list it extends into swtpm's PCR 10.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, body::Bytes};
use base64::Engine;
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
    /// API versions served under `/v{v}/` (Keylime's agent: 2.1–2.6); others get 400
    /// "API version not supported".
    pub versions: Vec<String>,
    /// The version prefix of every quote request, in order, refused ones included.
    pub requested_versions: Vec<String>,
    /// The UEFI event log served as `mb_measurement_list` when PCR 0 is asked for.
    pub boot_log: Option<Vec<u8>>,
    /// A misbehaving agent: quotes over this instead of the verifier's nonce.
    pub quote_nonce: Option<Vec<u8>>,
    /// Answers every quote with the whole IMA list (entry 0), as agents that ignore
    /// `ima_ml_entry` do: every round is a full replay.
    pub always_full_ima: bool,
    /// The NK private key (PKCS#8 DER) when the agent can open U and V; without it, U is
    /// refused and V only recorded.
    pub nk_private: Option<Vec<u8>>,
    /// U and the auth tag and payload that came with it (`/keys/ukey`).
    pub u: Option<([u8; 32], String, Option<Vec<u8>>)>,
    /// V as the verifier released it.
    pub v: Option<[u8; 32]>,
    /// K = U ⊕ V once the auth tag proved it, and the payload it decrypted.
    pub k: Option<[u8; 32]>,
    pub payload: Option<Vec<u8>>,
    /// Hostile modes: PCRs left out of every quote, whatever the verifier asks for.
    pub drop_pcrs: Vec<u8>,
    /// Never sends the IMA list, even when PCR 10 is asked for.
    pub omit_ima_list: bool,
    /// Sends this text as `mb_measurement_list` instead of the base64 boot log.
    pub mb_list_override: Option<String>,
    /// Sends no `boottime`, as Keylime's `keylime_agent` 0.2.9 does.
    pub omit_boottime: bool,
    /// Answers quote requests with an endless-looking JSON body of this many bytes,
    /// streamed (chunked, no length) and made only as it is read.
    pub huge_reply: Option<u64>,
    /// While set, quote requests wait for a permit of this gate: a round held in flight.
    pub quote_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Quote requests waiting at the gate now.
    pub quotes_waiting: u32,
    /// Who asked for each quote answered, in order: the verifier's address and port (one
    /// connection per verifier while it lives).
    pub quote_peers: Vec<SocketAddr>,
}

/// How the pull agent presents itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions {
    /// Serve the certificate Keylime's `keylime_agent` 0.2.9 makes: self-signed P-256,
    /// serial 0, only a SAN, and a self-signature that does not verify.
    pub keylime_certificate: bool,
}

impl PullState {
    /// Opens an NK-encrypted half (RSA-OAEP-SHA1), as the agent does.
    fn open_half(&self, b64: &str) -> anyhow::Result<[u8; 32]> {
        let der = self
            .nk_private
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no NK private key"))?;
        let sealed = base64::engine::general_purpose::STANDARD.decode(b64)?;
        let key = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(
            aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(der)?,
        )?;
        let mut out = vec![0u8; key.min_output_size()];
        let plain = key.decrypt(&aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1, &sealed, &mut out, None)?;
        <[u8; 32]>::try_from(plain).map_err(|_| anyhow::anyhow!("a key half is not 32 bytes"))
    }

    /// With both halves: K, checked against the auth tag, then the payload decrypted.
    fn combine(&mut self) {
        let (Some((u, tag, payload)), Some(v)) = (&self.u, &self.v) else {
            return;
        };
        let k: [u8; 32] = std::array::from_fn(|i| u[i] ^ v[i]);
        let hmac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA384, &k),
            self.agent.uuid.as_bytes(),
        );
        if hex::encode(hmac.as_ref()) != *tag {
            return;
        }
        if let Some(blob) = payload {
            use aes_gcm::aead::{Aead, KeyInit};
            type Gcm16 = aes_gcm::AesGcm<aes_gcm::aes::Aes256, aes_gcm::aes::cipher::consts::U16>;
            if blob.len() < 32 {
                return;
            }
            let (iv, sealed) = blob.split_at(16);
            match Gcm16::new((&k).into()).decrypt(aes_gcm::Nonce::from_slice(iv), sealed) {
                Ok(plain) => self.payload = Some(plain),
                Err(_) => return,
            }
        }
        self.k = Some(k);
    }
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
    pub async fn start(agent: TestAgent, pubkey: String, verifier_ca: &Path) -> anyhow::Result<Self> {
        Self::start_on(agent, pubkey, verifier_ca, "127.0.0.1:0".parse()?).await
    }

    /// Like [`PullAgent::start`], listening on `bind`.
    pub async fn start_on(
        agent: TestAgent,
        pubkey: String,
        verifier_ca: &Path,
        bind: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_with(agent, pubkey, verifier_ca, bind, PullOptions::default()).await
    }

    /// Like [`PullAgent::start_on`], with `options`.
    pub async fn start_with(
        mut agent: TestAgent,
        pubkey: String,
        verifier_ca: &Path,
        bind: SocketAddr,
        options: PullOptions,
    ) -> anyhow::Result<Self> {
        // The agent binds its key into PCR 16: reset by boot, then extended with H(pubkey).
        agent.pcr_extend(16, &pcr16_digests(&pubkey))?;
        let (cert_pem, key) = if options.keylime_certificate {
            crate::keylime_cert::keylime_agent_certificate(&agent.uuid)?
        } else {
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, agent.uuid.clone());
            (params.self_signed(&key)?.pem(), key)
        };
        let cert_der = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("agent certificate: {e}"))?
        };

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
            .with_single_cert(vec![cert_der], key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let state = Arc::new(Mutex::new(PullState {
            agent,
            log: ImaLog::default(),
            pubkey,
            boottime: 1_764_000_000,
            requested_offsets: Vec::new(),
            vkeys: Vec::new(),
            revocations: Vec::new(),
            versions: ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"]
                .map(String::from)
                .to_vec(),
            requested_versions: Vec::new(),
            boot_log: None,
            quote_nonce: None,
            always_full_ima: false,
            nk_private: None,
            u: None,
            v: None,
            k: None,
            payload: None,
            drop_pcrs: Vec::new(),
            omit_ima_list: false,
            mb_list_override: None,
            omit_boottime: false,
            huge_reply: None,
            quote_gate: None,
            quotes_waiting: 0,
            quote_peers: Vec::new(),
        }));
        let app = Router::new()
            .route("/version", get(version))
            .route("/{v}/quotes/integrity", get(integrity))
            .route("/{v}/quotes/identity", get(identity))
            .route("/{v}/keys/vkey", post(vkey))
            .route("/{v}/keys/ukey", post(ukey))
            .route("/{v}/keys/verify", get(verify))
            .route("/{v}/notifications/revocation", post(revocation))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(zest::net::serve_tls(listener, Arc::new(config), app));
        Ok(Self {
            addr,
            cert_pem,
            state,
            task,
        })
    }

    /// Registers with the registrar at `base` (plain HTTP) with the agent's real address and
    /// certificate, as Keylime's agent does with mTLS on, and activates.
    pub async fn register(&self, client: &reqwest::Client, base: &str, version: &str) -> anyhow::Result<()> {
        let (uuid, mut body) = {
            let s = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            (s.agent.uuid.clone(), s.agent.registration_body())
        };
        body["ip"] = json!(self.addr.ip().to_string());
        body["port"] = json!(self.addr.port());
        body["mtls_cert"] = json!(self.cert_pem);
        let url = format!("{base}/v{version}/agents/{uuid}");
        let (status, reply) = crate::server::send_json(client.post(&url).json(&body)).await?;
        if status != 200 {
            anyhow::bail!("registration answered {status}: {reply}");
        }
        let blob = reply["results"]["blob"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no results.blob in {reply}"))?
            .to_owned();
        let activation = {
            let mut s = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let credential = s.agent.activate_credential(&blob)?;
            s.agent.activation_body(&credential)
        };
        let (status, reply) = crate::server::send_json(client.put(&url).json(&activation)).await?;
        if status != 200 {
            anyhow::bail!("activation answered {status}: {reply}");
        }
        Ok(())
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

    /// Boots with `log`: extends every measuring event's SHA-1 and SHA-256 digests into its
    /// PCR, as firmware does, and serves the log from then on.
    pub fn boot(&self, log: Vec<u8>) -> anyhow::Result<()> {
        let parsed = zest::evidence::uefi::EventLog::parse(&log)?;
        let mut state = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for event in parsed.events.iter().skip(1) {
            if event.event_type == zest::evidence::uefi::EV_NO_ACTION {
                continue;
            }
            let digests: Vec<(HashingAlgorithm, Vec<u8>)> = [
                (HashingAlgorithm::Sha1, zest::evidence::HashAlg::Sha1),
                (HashingAlgorithm::Sha256, zest::evidence::HashAlg::Sha256),
            ]
            .into_iter()
            .filter_map(|(bank, alg)| event.digest(alg).map(|d| (bank, d.to_vec())))
            .collect();
            state.agent.pcr_extend(u8::try_from(event.pcr)?, &digests)?;
        }
        state.boot_log = Some(log);
        Ok(())
    }

    /// Changes what the agent sends (the hostile modes of [`PullState`]).
    pub fn set(&self, change: impl FnOnce(&mut PullState)) {
        if let Ok(mut s) = self.state.lock() {
            change(&mut s);
        }
    }

    /// Reboots: with `genuine`, the TPM is power-cycled (resetCount advances, PCRs start
    /// over), PCR 16 binds the key again, the IMA list starts over with `measured` (path,
    /// file digest) before any quote sees it; either way the agent reports a new boot time
    /// (without `genuine`, that is all: a forged reboot claim).
    pub fn reboot(
        &self,
        tpm: &crate::swtpm::Swtpm,
        genuine: bool,
        measured: &[(&str, Vec<u8>)],
    ) -> anyhow::Result<()> {
        let mut s = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        s.boottime += 60;
        if genuine {
            s.agent.reboot(tpm)?;
            let key = s.pubkey.clone();
            s.agent.pcr_extend(16, &pcr16_digests(&key))?;
            s.log = ImaLog::default();
            s.boot_log = None;
            for (path, digest) in measured {
                let ext = s.log.add_ima_ng(path, digest);
                s.agent.pcr_extend(
                    10,
                    &[
                        (HashingAlgorithm::Sha256, ext.sha256),
                        (HashingAlgorithm::Sha1, ext.sha1),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Narrows the API versions the agent serves (as its `api_versions` option does).
    pub fn serve_versions(&self, versions: &[&str]) {
        if let Ok(mut s) = self.state.lock() {
            s.versions = versions.iter().map(|v| v.to_string()).collect();
        }
    }

    pub fn requested_versions(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.requested_versions.clone())
            .unwrap_or_default()
    }

    pub fn requested_offsets(&self) -> Vec<u64> {
        self.state
            .lock()
            .map(|s| s.requested_offsets.clone())
            .unwrap_or_default()
    }
}

/// H(pubkey) in the SHA-256 and SHA-1 banks: what the agent extends into PCR 16.
fn pcr16_digests(pubkey: &str) -> [(HashingAlgorithm, Vec<u8>); 2] {
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pubkey.as_bytes());
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, pubkey.as_bytes());
    [
        (HashingAlgorithm::Sha256, sha256.as_ref().to_vec()),
        (HashingAlgorithm::Sha1, sha1.as_ref().to_vec()),
    ]
}

#[derive(serde::Deserialize)]
struct IntegrityQuery {
    nonce: String,
    mask: String,
    partial: Option<String>,
    ima_ml_entry: Option<u64>,
}

type Reply = (StatusCode, Json<Value>);

fn envelope(code: StatusCode, status: &str, results: Value) -> Reply {
    (
        code,
        Json(json!({"code": code.as_u16(), "status": status, "results": results})),
    )
}

async fn version(State(state): State<Arc<Mutex<PullState>>>) -> Reply {
    let versions = state.lock().map(|s| s.versions.clone()).unwrap_or_default();
    let newest = versions.last().cloned().unwrap_or_default();
    envelope(
        StatusCode::OK,
        "Success",
        json!({"supported_version": newest, "supported_versions": versions}),
    )
}

/// The Rust agent's answer to a version prefix it does not serve.
fn refuses(state: &Arc<Mutex<PullState>>, v: &str) -> Option<Reply> {
    let served = state
        .lock()
        .map(|s| s.versions.iter().any(|ours| format!("v{ours}") == v))
        .unwrap_or(false);
    (!served).then(|| {
        envelope(
            StatusCode::BAD_REQUEST,
            &format!("API version not supported: {v}"),
            json!({}),
        )
    })
}

/// A JSON body of `size` bytes (one long string), made chunk by chunk as it is read.
fn huge_body(size: u64) -> axum::response::Response {
    use axum::response::IntoResponse;
    const CHUNK: u64 = 1 << 20;
    let chunks = size / CHUNK;
    let head = futures_stream_once(b"{\"results\": {\"quote\": \"".to_vec());
    let filler = (0..chunks).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'A'; CHUNK as usize])));
    let tail = std::iter::once(Ok(bytes::Bytes::from_static(b"\"}}")));
    let stream = tokio_stream_iter(head.into_iter().chain(filler).chain(tail));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

fn futures_stream_once(first: Vec<u8>) -> Option<Result<bytes::Bytes, std::io::Error>> {
    Some(Ok(bytes::Bytes::from(first)))
}

/// A stream over an iterator, yielding to the runtime between items.
fn tokio_stream_iter<I>(items: I) -> impl futures_core::Stream<Item = I::Item> + Send
where
    I: Iterator + Send + Unpin + 'static,
    I::Item: Send,
{
    struct Iter<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items)
}

async fn integrity(
    State(state): State<Arc<Mutex<PullState>>>,
    peer: Option<axum::Extension<zest::net::Peer>>,
    UrlPath(v): UrlPath<String>,
    Query(q): Query<IntegrityQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Ok(mut s) = state.lock() {
        s.requested_versions.push(v.trim_start_matches('v').to_owned());
    }
    if let Some(refusal) = refuses(&state, &v) {
        return refusal.into_response();
    }
    let gate = state.lock().ok().and_then(|s| s.quote_gate.clone());
    if let Some(gate) = gate {
        if let Ok(mut s) = state.lock() {
            s.quotes_waiting += 1;
        }
        let permit = gate.acquire().await;
        if let Ok(mut s) = state.lock() {
            s.quotes_waiting -= 1;
        }
        drop(permit);
    }
    if let Some(size) = state.lock().ok().and_then(|s| s.huge_reply) {
        return huge_body(size);
    }
    let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let mut s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mask = u32::from_str_radix(q.mask.trim_start_matches("0x"), 16)? | (1 << 16);
        let pcrs: Vec<u8> = (0..24u8)
            .filter(|p| mask & (1 << p) != 0 && !s.drop_pcrs.contains(p))
            .collect();
        let nonce = s
            .quote_nonce
            .clone()
            .unwrap_or_else(|| q.nonce.as_bytes().to_vec());
        let quote = s.agent.quote(&nonce, &[(HashingAlgorithm::Sha256, &pcrs)])?;
        if let Some(axum::Extension(zest::net::Peer(peer))) = peer {
            s.quote_peers.push(peer);
        }
        let from = q.ima_ml_entry.unwrap_or(0);
        s.requested_offsets.push(from);
        // An offset past the end of the list is answered from the start, as the agent does.
        let from = if (from as usize) > s.log.len() || s.always_full_ima {
            0
        } else {
            from
        };
        let mut results = json!({
            "quote": quote.keylime_string(),
            "hash_alg": "sha256",
            "enc_alg": "rsa",
            "sign_alg": "rsassa",
        });
        if !s.omit_boottime {
            results["boottime"] = json!(s.boottime);
        }
        // Like Keylime's agent: the IMA list only when PCR 10 is asked for.
        if mask & (1 << 10) != 0 && !s.omit_ima_list {
            results["ima_measurement_list"] = json!(s.log.text_from(from as usize));
            results["ima_measurement_list_entry"] = json!(from);
        }
        if let Some(text) = &s.mb_list_override {
            results["mb_measurement_list"] = json!(text);
        } else if let Some(log) = s.boot_log.as_ref().filter(|_| mask & 1 != 0) {
            results["mb_measurement_list"] = json!(base64::engine::general_purpose::STANDARD.encode(log));
        }
        if q.partial.as_deref() != Some("1") {
            results["pubkey"] = json!(s.pubkey);
        }
        Ok(json!({"code": 200, "status": "Success", "results": results}))
    })
    .await;
    match answer {
        Ok(Ok(v)) => (StatusCode::OK, Json(v)).into_response(),
        Ok(Err(e)) => envelope(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), json!({})).into_response(),
        Err(e) => envelope(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), json!({})).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct IdentityQuery {
    nonce: String,
}

/// The identity quote the tenant checks before enrolling: PCR 16 only (the NK binding),
/// SHA-256 bank, with the NK public key.
async fn identity(
    State(state): State<Arc<Mutex<PullState>>>,
    UrlPath(v): UrlPath<String>,
    Query(q): Query<IdentityQuery>,
) -> Reply {
    if let Some(refusal) = refuses(&state, &v) {
        return refusal;
    }
    let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let mut s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let quote = s
            .agent
            .quote(q.nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &[16])])?;
        Ok(json!({"code": 200, "status": "Success", "results": {
            "quote": quote.keylime_string(),
            "hash_alg": "sha256",
            "enc_alg": "rsa",
            "sign_alg": "rsassa",
            "pubkey": s.pubkey,
            "boottime": s.boottime,
        }}))
    })
    .await;
    match answer {
        Ok(Ok(v)) => (StatusCode::OK, Json(v)),
        Ok(Err(e)) => envelope(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), json!({})),
        Err(e) => envelope(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), json!({})),
    }
}

async fn vkey(State(state): State<Arc<Mutex<PullState>>>, UrlPath(v): UrlPath<String>, body: Bytes) -> Reply {
    if let Some(refusal) = refuses(&state, &v) {
        return refusal;
    }
    if let (Ok(mut s), Ok(v)) = (state.lock(), serde_json::from_slice::<Value>(&body)) {
        if let Some(half) = v["encrypted_key"].as_str().and_then(|b| s.open_half(b).ok()) {
            s.v = Some(half);
            s.combine();
        }
        s.vkeys.push(v);
    }
    envelope(StatusCode::OK, "Success", json!({}))
}

/// The tenant's U, auth tag and payload (Keylime's agent: 200, or 400 on a bad body).
async fn ukey(State(state): State<Arc<Mutex<PullState>>>, UrlPath(v): UrlPath<String>, body: Bytes) -> Reply {
    if let Some(refusal) = refuses(&state, &v) {
        return refusal;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, "Invalid JSON", json!({}));
    };
    let Ok(mut s) = state.lock() else {
        return envelope(StatusCode::INTERNAL_SERVER_ERROR, "poisoned", json!({}));
    };
    let (Some(sealed), Some(tag)) = (body["encrypted_key"].as_str(), body["auth_tag"].as_str()) else {
        return envelope(
            StatusCode::BAD_REQUEST,
            "encrypted_key and auth_tag are required",
            json!({}),
        );
    };
    let u = match s.open_half(sealed) {
        Ok(u) => u,
        Err(e) => return envelope(StatusCode::BAD_REQUEST, &format!("cannot open U: {e}"), json!({})),
    };
    let payload = body["payload"]
        .as_str()
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
    // A new U starts a new bootstrap: the old K, payload and V are dropped (V follows U).
    s.u = Some((u, tag.to_owned(), payload));
    s.v = None;
    s.k = None;
    s.payload = None;
    s.combine();
    envelope(StatusCode::OK, "Success", json!({}))
}

#[derive(serde::Deserialize)]
struct VerifyQuery {
    challenge: String,
}

/// HMAC-SHA384(K, challenge) once K is known (Keylime's agent: 400 before).
async fn verify(
    State(state): State<Arc<Mutex<PullState>>>,
    UrlPath(v): UrlPath<String>,
    Query(q): Query<VerifyQuery>,
) -> Reply {
    if let Some(refusal) = refuses(&state, &v) {
        return refusal;
    }
    let k = state.lock().ok().and_then(|s| s.k);
    match k {
        Some(k) => {
            let hmac = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA384, &k),
                q.challenge.as_bytes(),
            );
            envelope(
                StatusCode::OK,
                "Success",
                json!({"hmac": hex::encode(hmac.as_ref())}),
            )
        }
        None => envelope(
            StatusCode::BAD_REQUEST,
            "Bootstrap key not yet available.",
            json!({}),
        ),
    }
}

async fn revocation(
    State(state): State<Arc<Mutex<PullState>>>,
    UrlPath(v): UrlPath<String>,
    body: Bytes,
) -> Reply {
    if let Some(refusal) = refuses(&state, &v) {
        return refusal;
    }
    if let (Ok(mut s), Ok(v)) = (state.lock(), serde_json::from_slice(&body)) {
        s.revocations.push(v);
    }
    envelope(StatusCode::OK, "Success", json!({}))
}
