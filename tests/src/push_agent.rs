//! The test agent in push mode, as Keylime's `keylime_push_model_agent` speaks to a
//! verifier (rust-keylime-agent.md §5): a proof-of-possession session, then rounds of
//! capabilities (`POST …/attestations`) and evidence (`PATCH <Location>`) from its swtpm
//! and an IMA list it extends into PCR 10.

use anyhow::{Context as _, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;

use crate::agent::{QuoteParts, TestAgent};
use crate::ima::{Extension, ImaLog};
use crate::server::send_json;

const JSON_API: &str = "application/vnd.api+json";

/// What a push agent needs of its TPM: a swtpm ([`TestAgent`]) or a software one
/// ([`crate::soft_tpm::SoftAgent`], for the fleet simulator).
pub trait PushTpm {
    fn uuid(&self) -> &str;
    /// TPM2B_PUBLIC of the AK.
    fn aik_tpm(&self) -> &[u8];
    /// The PCR banks it quotes (`sha1`, `sha256`).
    fn hash_algorithms(&self) -> &'static [&'static str];
    /// TPM2_Certify of the AK by itself over `challenge`.
    fn certify_ak(&mut self, challenge: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)>;
    /// TPM2_Quote of `pcrs` of `bank` with `nonce`.
    fn quote(&mut self, nonce: &[u8], bank: &str, pcrs: &[u8]) -> anyhow::Result<QuoteParts>;
    /// Extends PCR 10 with an IMA entry's template hashes.
    fn extend_ima(&mut self, extension: Extension) -> anyhow::Result<()>;
}

impl PushTpm for TestAgent {
    fn uuid(&self) -> &str {
        &self.uuid
    }

    fn aik_tpm(&self) -> &[u8] {
        &self.aik_tpm
    }

    fn hash_algorithms(&self) -> &'static [&'static str] {
        &["sha1", "sha256"]
    }

    fn certify_ak(&mut self, challenge: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        TestAgent::certify_ak(self, challenge)
    }

    fn quote(&mut self, nonce: &[u8], bank: &str, pcrs: &[u8]) -> anyhow::Result<QuoteParts> {
        let bank = match bank {
            "sha1" => HashingAlgorithm::Sha1,
            _ => HashingAlgorithm::Sha256,
        };
        TestAgent::quote(self, nonce, &[(bank, pcrs)])
    }

    fn extend_ima(&mut self, extension: Extension) -> anyhow::Result<()> {
        self.pcr_extend(
            10,
            &[
                (HashingAlgorithm::Sha256, extension.sha256),
                (HashingAlgorithm::Sha1, extension.sha1),
            ],
        )
    }
}

pub struct PushAgent<T: PushTpm = TestAgent> {
    pub agent: T,
    pub log: ImaLog,
    /// `https://localhost:PORT` of the verifier.
    pub verifier: String,
    client: reqwest::Client,
    pub token: Option<String>,
    /// `system_info.boot_time` it reports.
    pub boot_time: String,
    /// `key_algorithm` of its AK in the capabilities.
    pub key_algorithm: &'static str,
    /// The `Retry-After` of the last refused offer.
    pub retry_after: Option<std::time::Duration>,
}

/// One round as the agent saw it.
pub struct Round {
    pub created: (u16, Value),
    pub location: Option<String>,
    pub submitted: Option<(u16, Value)>,
}

impl<T: PushTpm> PushAgent<T> {
    pub fn new(agent: T, verifier: &str, client: reqwest::Client, key_algorithm: &'static str) -> Self {
        Self {
            agent,
            log: ImaLog::default(),
            verifier: verifier.to_owned(),
            client,
            token: None,
            boot_time: "2026-11-28T10:00:00Z".into(),
            key_algorithm,
            retry_after: None,
        }
    }

    /// Measures a file: appends an ima-ng entry and extends PCR 10.
    pub fn measure(&mut self, path: &str, file_digest: &[u8]) -> anyhow::Result<()> {
        let ext = self.log.add_ima_ng(path, file_digest);
        self.agent.extend_ima(ext)
    }

    /// Opens a session and proves possession of the AK; keeps the token.
    pub async fn authenticate(&mut self) -> anyhow::Result<()> {
        let verifier = self.verifier.clone();
        self.authenticate_at(&verifier, &verifier).await.map(drop)
    }

    /// Opens a session at the verifier `open_at` and proves possession of the AK at
    /// `prove_at` (verifiers sharing a database); keeps the token. Returns the session id
    /// and the proof's body, to send again.
    pub async fn authenticate_at(
        &mut self,
        open_at: &str,
        prove_at: &str,
    ) -> anyhow::Result<(String, Value)> {
        let (id, challenge) = self.open_session(open_at).await?;
        let body = self.proof(&id, &challenge)?;
        let (status, reply) = self.send_proof(prove_at, &id, &body).await?;
        let token = reply["data"]["attributes"]["token"].as_str();
        match (status, token) {
            (200, Some(t)) => {
                self.token = Some(t.to_owned());
                Ok((id, body))
            }
            _ => bail!("proof of possession: {status} {reply}"),
        }
    }

    /// `POST {at}/v3.0/sessions`: the session id and its challenge.
    pub async fn open_session(&self, at: &str) -> anyhow::Result<(String, Vec<u8>)> {
        let body = json!({"data": {"type": "session", "attributes": {
            "agent_id": self.agent.uuid(),
            "authentication_supported": [{"authentication_class": "pop", "authentication_type": "tpm_pop"}],
        }}});
        let (status, session) = send_json(
            self.client
                .post(format!("{at}/v3.0/sessions"))
                .header("content-type", JSON_API)
                .body(body.to_string()),
        )
        .await?;
        if status != 200 {
            bail!("session: {status} {session}");
        }
        let id = session["data"]["id"].as_str().context("session id")?.to_owned();
        let challenge =
            session["data"]["attributes"]["authentication_requested"][0]["chosen_parameters"]["challenge"]
                .as_str()
                .context("challenge")?;
        Ok((id, B64.decode(challenge)?))
    }

    /// The PATCH body proving possession of the AK over `challenge` for session `id`.
    pub fn proof(&mut self, id: &str, challenge: &[u8]) -> anyhow::Result<Value> {
        let (message, signature) = self.agent.certify_ak(challenge)?;
        Ok(json!({"data": {"type": "session", "id": id, "attributes": {
            "agent_id": self.agent.uuid(),
            "authentication_provided": [{"authentication_class": "pop", "authentication_type": "tpm_pop",
                "data": {"message": B64.encode(message), "signature": B64.encode(signature)}}],
        }}}))
    }

    /// `PATCH {at}/v3.0/sessions/{id}` with a proof `body`: the status and reply.
    pub async fn send_proof(&self, at: &str, id: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        send_json(
            self.client
                .patch(format!("{at}/v3.0/sessions/{id}"))
                .header("content-type", JSON_API)
                .body(body.to_string()),
        )
        .await
    }

    /// The capabilities the Rust push agent sends.
    pub fn capabilities(&self) -> Value {
        let all: Vec<u8> = (0..24).collect();
        let banks = self.agent.hash_algorithms();
        let subjects: serde_json::Map<String, Value> =
            banks.iter().map(|b| (b.to_string(), json!(all))).collect();
        json!({"data": {"type": "attestation", "attributes": {
            "evidence_supported": [
                {"evidence_class": "certification", "evidence_type": "tpm_quote",
                 "capabilities": {"component_version": "2.0",
                    "hash_algorithms": banks, "signature_schemes": ["rsassa", "ecdsa"],
                    "available_subjects": subjects,
                    "certification_keys": [{"key_class": "asymmetric", "key_algorithm": self.key_algorithm,
                        "key_size": 2048, "server_identifier": "ak", "local_identifier": "att_key",
                        "public": B64.encode(self.agent.aik_tpm())}]}},
                {"evidence_class": "log", "evidence_type": "uefi_log",
                 "capabilities": {"evidence_version": "2.1", "entry_count": 0, "supports_partial_access": false,
                    "appendable": false, "formats": ["application/octet-stream"]}},
                {"evidence_class": "log", "evidence_type": "ima_log",
                 "capabilities": {"entry_count": self.log.len(), "supports_partial_access": true,
                    "appendable": true, "formats": ["text/plain"]}},
            ],
            "system_info": {"boot_time": self.boot_time},
        }}})
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request
            .header("content-type", JSON_API)
            .header("accept", JSON_API);
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    /// `POST …/attestations` with the capabilities.
    pub async fn offer(&mut self) -> anyhow::Result<(u16, Option<String>, Value)> {
        let response = self
            .authorized(self.client.post(format!(
                "{}/v3.0/agents/{}/attestations",
                self.verifier,
                self.agent.uuid()
            )))
            .body(self.capabilities().to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, location, body))
    }

    /// The evidence for what the verifier asked, over `challenge` (normally the one asked).
    pub fn evidence(&mut self, requested: &Value, challenge: Option<&[u8]>) -> anyhow::Result<Value> {
        let mut collected = Vec::new();
        for item in requested.as_array().context("evidence_requested")? {
            let params = &item["chosen_parameters"];
            let data = match item["evidence_type"].as_str() {
                Some("tpm_quote") => {
                    let asked = B64.decode(params["challenge"].as_str().context("challenge")?)?;
                    let nonce = challenge.map(<[u8]>::to_vec).unwrap_or(asked);
                    let bank = params["hash_algorithm"].as_str().context("hash_algorithm")?;
                    let mut pcrs: Vec<u8> = params["selected_subjects"][bank]
                        .as_array()
                        .map(|a| a.iter().filter_map(|p| p.as_u64().map(|p| p as u8)).collect())
                        .unwrap_or_default();
                    pcrs.push(16);
                    let quote = self.agent.quote(&nonce, bank, &pcrs)?;
                    json!({"message": B64.encode(&quote.attest), "signature": B64.encode(&quote.signature),
                           "subject_data": B64.encode(&quote.pcr_blob)})
                }
                Some("ima_log") => {
                    let from = params["starting_offset"].as_u64().unwrap_or(0) as usize;
                    let from = from.min(self.log.len());
                    json!({"entries": self.log.text_from(from), "entry_count": self.log.len() - from})
                }
                Some("uefi_log") => json!({"entries": ""}),
                other => bail!("unknown evidence {other:?}"),
            };
            collected.push(json!({"evidence_class": item["evidence_class"], "evidence_type": item["evidence_type"], "data": data}));
        }
        Ok(json!({"data": {"type": "attestation", "attributes": {"evidence_collected": collected}}}))
    }

    /// `PATCH <url>` with an evidence document.
    pub async fn submit(&self, url: &str, evidence: &Value) -> anyhow::Result<(u16, Value)> {
        send_json(self.authorized(self.client.patch(url)).body(evidence.to_string())).await
    }

    /// One whole round: offer, then the evidence asked for at `Location`.
    pub async fn attest(&mut self) -> anyhow::Result<Round> {
        let (status, location, body) = self.offer().await?;
        if status != 201 {
            return Ok(Round {
                created: (status, body),
                location,
                submitted: None,
            });
        }
        let url = format!("{}{}", self.verifier, location.as_deref().context("Location")?);
        let evidence = self.evidence(&body["data"]["attributes"]["evidence_requested"], None)?;
        let submitted = self.submit(&url, &evidence).await?;
        Ok(Round {
            created: (status, body),
            location,
            submitted: Some(submitted),
        })
    }
}
