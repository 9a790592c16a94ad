//! zest's client of a Keylime pull agent's API, shared by the verifier's poller and
//! `zest tenant`: a connection that trusts only the agent's enrolled certificate, the
//! negotiation of the API version, the identity quote, and the delivery and proof of the
//! bootstrap key's halves (keylime-api.md §5).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::bootstrap::BootstrapKey;
use crate::net::pinned::PinError;

/// Agent API versions zest speaks to pull agents (Keylime's agents serve 2.1–2.6), oldest first.
pub const AGENT_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
/// The version asked for when nothing is known of the agent.
pub const CURRENT_AGENT_VERSION: &str = "2.6";

/// `2.10` as `(2, 10)`, so that versions compare as numbers.
pub fn version_key(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `https://ip:port`; an IPv6 address is bracketed.
pub fn base_url(ip: &str, port: u16) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("https://[{ip}]:{port}")
    } else {
        format!("https://{ip}:{port}")
    }
}

/// `len` random letters and digits, as Keylime's nonces and challenges; `None` when the
/// system RNG fails (a constant nonce would let old quotes replay).
pub fn random_text(len: usize) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(
        bytes
            .iter()
            // The remainder is always below the alphabet's length: nothing is filtered out.
            .filter_map(|b| {
                ALPHABET
                    .get(usize::from(*b) % ALPHABET.len())
                    .map(|c| char::from(*c))
            })
            .collect(),
    )
}

/// The TPM algorithms an agent may use (Keylime's accept lists).
#[derive(Debug, Clone, Default)]
pub struct Accept {
    pub hash: Vec<String>,
    pub encryption: Vec<String>,
    pub signing: Vec<String>,
}

/// Keylime's algorithm acceptance: exact, or equal after the agent's aliases (`rsa` is
/// `rsa2048`, `ecc` is `ecc256`; agents say the latter from API 2.5 on).
pub fn accepted(algorithm: &str, accept: &[String]) -> bool {
    fn normalise(a: &str) -> &str {
        match a {
            "rsa" => "rsa2048",
            "ecc" => "ecc256",
            other => other,
        }
    }
    !algorithm.is_empty()
        && accept
            .iter()
            .any(|a| a == algorithm || normalise(a) == normalise(algorithm))
}

/// `{"encrypted_key": b64(RSA-OAEP-SHA1(NK, V))}` for `POST /keys/vkey`.
pub fn vkey_body(nk_pem: &str, v_b64: &str) -> Result<Value, String> {
    let v = B64.decode(v_b64).map_err(|e| format!("stored V: {e}"))?;
    let encrypted = crate::bootstrap::encrypt_for_nk(nk_pem, &v).map_err(|e| e.to_string())?;
    Ok(json!({"encrypted_key": B64.encode(encrypted)}))
}

/// `POST /keys/ukey`'s body: U under the NK key, the payload under K, and the auth tag that
/// lets the agent pair U with V.
pub fn ukey_body(uuid: &str, nk_pem: &str, key: &BootstrapKey, payload: &[u8]) -> Result<Value, String> {
    let err = |e: crate::bootstrap::BootstrapError| e.to_string();
    Ok(json!({
        "encrypted_key": B64.encode(crate::bootstrap::encrypt_for_nk(nk_pem, &key.u).map_err(err)?),
        "auth_tag": crate::bootstrap::hmac_hex(&key.k, uuid.as_bytes()),
        "payload": B64.encode(crate::bootstrap::encrypt_payload(&key.k, payload).map_err(err)?),
    }))
}

/// One pull agent over mTLS: its certificate as enrolled (or registered) is the only one
/// trusted, and zest presents its own client certificate.
#[derive(Clone)]
pub struct AgentClient {
    base: String,
    http: reqwest::Client,
}

impl AgentClient {
    /// A client for the agent at `ip:port` that pins `cert_pem` byte for byte, as Keylime
    /// does: WebPKI trust refuses the real agent's certificate, whose self-signature does
    /// not verify. `identity_pem` is our chain PEM followed by our key PEM.
    pub fn connect(
        ip: &str,
        port: u16,
        cert_pem: &str,
        identity_pem: &[u8],
        timeout: Duration,
    ) -> Result<Self, PinError> {
        Ok(Self {
            base: base_url(ip, port),
            http: crate::net::pinned::agent_client(cert_pem, identity_pem, timeout)?,
        })
    }

    /// `https://ip:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTPS client, for requests this module does not make itself.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `{base}/v{version}/{path}`.
    pub fn url(&self, version: &str, path: &str) -> String {
        format!("{}/v{version}/{path}", self.base)
    }

    /// GETs `path` (from the root) and requires 200; the error names the agent's message.
    pub async fn get_json(&self, path: &str) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| format!("cannot reach the agent at {}: {e}", self.base))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!(
                "the agent answered {status} to GET {path}: {}",
                status_message(&body)
            ));
        }
        Ok(body)
    }

    /// Asks the agent's `GET /version` and picks the newest API version both sides speak
    /// (`supported_versions`, or the single `supported_version` of older agents).
    pub async fn negotiate(&self) -> Result<String, String> {
        let body = self.get_json("/version").await?;
        let offered: Vec<&str> = match body
            .pointer("/results/supported_versions")
            .and_then(Value::as_array)
        {
            Some(list) => list.iter().filter_map(Value::as_str).collect(),
            None => body
                .pointer("/results/supported_version")
                .and_then(Value::as_str)
                .into_iter()
                .collect(),
        };
        offered
            .iter()
            .copied()
            .filter(|v| AGENT_VERSIONS.contains(v))
            .max_by_key(|v| version_key(v))
            .map(str::to_owned)
            .ok_or_else(|| format!("the agent offers no API version we speak: {offered:?}"))
    }

    /// Asks for an identity quote and checks it as Keylime's tenant does: signed by the
    /// registered AK (`ak_tpm_b64`, TPM2B_PUBLIC) over a fresh nonce, with accepted
    /// algorithms, and PCR 16 binding the NK key. Returns the NK key's PEM.
    pub async fn identity_quote(
        &self,
        version: &str,
        ak_tpm_b64: &str,
        accept: &Accept,
    ) -> Result<String, String> {
        use crate::evidence::{HashAlg, PublicArea, Quote};
        use crate::tpm::{AttestationKey, QuoteExpectations, verify_quote};
        let nonce = random_text(20).ok_or("no randomness for the nonce")?;
        let reply = self
            .get_json(&format!("/v{version}/quotes/identity?nonce={nonce}"))
            .await?;
        let r = reply.get("results").unwrap_or(&Value::Null);
        let field = |name: &str| {
            r.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the agent's identity quote has no {name}"))
        };
        let hash_alg = field("hash_alg")?;
        let hash = HashAlg::from_name(hash_alg)
            .filter(|_| accepted(hash_alg, &accept.hash))
            .ok_or_else(|| format!("identity quote: hash_alg {hash_alg} is not in accept_tpm_hash_algs"))?;
        for (name, list, what) in [
            ("enc_alg", &accept.encryption, "accept_tpm_encryption_algs"),
            ("sign_alg", &accept.signing, "accept_tpm_signing_algs"),
        ] {
            let value = field(name)?;
            if !accepted(value, list) {
                return Err(format!("identity quote: {name} {value} is not in {what}"));
            }
        }
        let pubkey = field("pubkey")?.to_owned();
        let ak = B64
            .decode(ak_tpm_b64)
            .map_err(|_| "the registrar's aik_tpm is not base64".to_owned())?;
        let ak = AttestationKey::new(
            PublicArea::from_tpm2b(&ak).map_err(|e| format!("the registrar's aik_tpm: {e}"))?,
        );
        let quote =
            Quote::from_keylime_string(field("quote")?).map_err(|e| format!("identity quote: {e}"))?;
        let expected = QuoteExpectations {
            nonce: nonce.as_bytes(),
            hashes: &[hash],
            schemes: &["rsassa", "ecdsa"],
        };
        let verified = verify_quote(&quote, &ak, &expected).map_err(|e| format!("identity quote: {e}"))?;
        // PCR 16 was reset, then extended once with H(NK public key PEM).
        let zeros = vec![0u8; hash.digest_len()];
        let bound = hash.digest(&[&zeros, &hash.digest(&[pubkey.as_bytes()])]);
        match verified.pcr(hash, 16) {
            Some(value) if value == bound.as_slice() => Ok(pubkey),
            Some(_) => Err("identity quote: PCR 16 does not bind the agent's NK key".into()),
            None => Err("identity quote: PCR 16 is not quoted".into()),
        }
    }

    /// `POST /keys/ukey` (the tenant's half, with the payload) or `POST /keys/vkey` (the
    /// verifier's), `body` from [`ukey_body`] or [`vkey_body`].
    pub async fn deliver_key(&self, version: &str, half: KeyHalf, body: &Value) -> Result<(), String> {
        let name = half.name();
        let response = self
            .http
            .post(self.url(version, half.path()))
            .json(body)
            .send()
            .await
            .map_err(|e| format!("cannot deliver {name} to the agent at {}: {e}", self.base))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(format!(
                "the agent refused {name} ({status}): {}",
                status_message(&body)
            ));
        }
        Ok(())
    }

    /// Polls `GET /keys/verify` until the agent's HMAC of a fresh challenge proves it rebuilt
    /// `k`, for at most `within`.
    pub async fn verify_key(&self, version: &str, k: &[u8; 32], within: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + within;
        let mut last = "the agent did not answer".to_owned();
        while std::time::Instant::now() < deadline {
            let challenge = random_text(20).ok_or("no randomness for the challenge")?;
            match self
                .get_json(&format!("/v{version}/keys/verify?challenge={challenge}"))
                .await
            {
                Ok(reply) => {
                    let expected = crate::bootstrap::hmac_hex(k, challenge.as_bytes());
                    let hmac = reply.pointer("/results/hmac").and_then(Value::as_str);
                    if hmac == Some(expected.as_str()) {
                        return Ok(());
                    }
                    last = "the agent's HMAC does not match K".into();
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }
}

/// Which half of the bootstrap key goes to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHalf {
    U,
    V,
}

impl KeyHalf {
    fn path(self) -> &'static str {
        match self {
            Self::U => "keys/ukey",
            Self::V => "keys/vkey",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::U => "U",
            Self::V => "V",
        }
    }
}

/// Keylime's envelope message (`status`), or nothing.
fn status_message(body: &Value) -> &str {
    body.get("status").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_aliases_are_accepted_both_ways() {
        let accept = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(accepted("rsa2048", &accept(&["ecc", "rsa"])));
        assert!(accepted("rsa", &accept(&["rsa2048"])));
        assert!(accepted("ecc256", &accept(&["ecc"])));
        assert!(!accepted("ecc384", &accept(&["ecc"])));
        assert!(!accepted("rsassa", &accept(&["ecschnorr"])));
        assert!(!accepted("", &accept(&[""])));
    }

    #[test]
    fn ipv6_agent_addresses_are_bracketed() {
        assert_eq!(base_url("::1", 9002), "https://[::1]:9002");
        assert_eq!(base_url("127.0.0.1", 9002), "https://127.0.0.1:9002");
        assert_eq!(base_url("agent.example", 9002), "https://agent.example:9002");
    }

    #[test]
    fn the_newest_common_version_is_chosen() {
        let mut offered = ["2.1", "2.10", "2.6", "3.0"]
            .into_iter()
            .filter(|v| AGENT_VERSIONS.contains(v))
            .collect::<Vec<_>>();
        offered.sort_by_key(|v| version_key(v));
        assert_eq!(offered.last(), Some(&"2.6"));
        assert!(version_key("2.10") > version_key("2.9"));
    }

    #[test]
    fn nonces_are_fresh_letters_and_digits() {
        let (a, b) = (random_text(20).unwrap(), random_text(20).unwrap());
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
