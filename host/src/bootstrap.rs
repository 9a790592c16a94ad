//! Keylime's bootstrap key: the tenant splits a random K into U and V (K = U ⊕ V), gives V to
//! the verifier (which releases it to the agent only after a good quote) and U to the agent,
//! with a payload encrypted under K. The agent proves it rebuilt K by HMACs.
//! Formats as Keylime's `crypto.py`: AES-256-GCM with a 16-byte IV (`iv ‖ ciphertext ‖ tag`),
//! HMAC-SHA-384 in lowercase hex, U and V under the agent's NK key with RSA-OAEP-SHA-1.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
use thiserror::Error;

/// AES-256-GCM with Keylime's 16-byte IV.
type KeylimeGcm = AesGcm<Aes256, aes_gcm::aes::cipher::consts::U16>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BootstrapError {
    #[error("no randomness available")]
    Random,
    #[error("the agent's NK key is not an RSA public key in PEM: {0}")]
    NkKey(String),
    #[error("encryption failed")]
    Encrypt,
    #[error("the payload does not decrypt with this key")]
    Decrypt,
}

/// K and its two halves.
#[derive(Clone)]
pub struct BootstrapKey {
    pub k: [u8; 32],
    pub u: [u8; 32],
    pub v: [u8; 32],
}

impl std::fmt::Debug for BootstrapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapKey(..)")
    }
}

impl BootstrapKey {
    pub fn generate() -> Result<Self, BootstrapError> {
        let mut k = [0u8; 32];
        let mut v = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| BootstrapError::Random)?;
        aws_lc_rs::rand::fill(&mut v).map_err(|_| BootstrapError::Random)?;
        Ok(Self { k, u: xor(&k, &v), v })
    }
}

/// U ⊕ V.
pub fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// HMAC-SHA-384 of `message` under `key`, lowercase hex (Keylime's `do_hmac`).
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA384, key);
    hex::encode(aws_lc_rs::hmac::sign(&key, message).as_ref())
}

/// `iv ‖ AES-256-GCM(K, plaintext) ‖ tag` with a fresh 16-byte IV.
pub fn encrypt_payload(k: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>, BootstrapError> {
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| BootstrapError::Random)?;
    let cipher = KeylimeGcm::new(k.into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(&iv), plaintext)
        .map_err(|_| BootstrapError::Encrypt)?;
    let mut out = iv.to_vec();
    out.extend(sealed);
    Ok(out)
}

/// The inverse of [`encrypt_payload`].
pub fn decrypt_payload(k: &[u8; 32], blob: &[u8]) -> Result<Vec<u8>, BootstrapError> {
    if blob.len() < 32 {
        return Err(BootstrapError::Decrypt);
    }
    let (iv, sealed) = blob.split_at(16);
    KeylimeGcm::new(k.into())
        .decrypt(Nonce::from_slice(iv), sealed)
        .map_err(|_| BootstrapError::Decrypt)
}

/// RSA-OAEP (SHA-1, MGF1-SHA-1) of `data` under the NK public key `pem` (SubjectPublicKeyInfo).
pub fn encrypt_for_nk(pem: &str, data: &[u8]) -> Result<Vec<u8>, BootstrapError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| BootstrapError::NkKey(e.to_string()))?;
    let key = PublicEncryptingKey::from_der(&block.contents)
        .map_err(|_| BootstrapError::NkKey("not RSA".into()))?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| BootstrapError::NkKey("not RSA".into()))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let sealed = key
        .encrypt(&OAEP_SHA1_MGF1SHA1, data, &mut out, None)
        .map_err(|_| BootstrapError::Encrypt)?;
    Ok(sealed.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_rebuild_the_key_and_the_payload_round_trips() {
        let key = BootstrapKey::generate().unwrap();
        assert_eq!(xor(&key.u, &key.v), key.k);
        let blob = encrypt_payload(&key.k, b"secret payload").unwrap();
        assert_eq!(blob.len(), 16 + 14 + 16);
        assert_eq!(decrypt_payload(&key.k, &blob).unwrap(), b"secret payload");
        let mut other = key.k;
        other[0] ^= 1;
        assert_eq!(decrypt_payload(&other, &blob), Err(BootstrapError::Decrypt));
        assert_eq!(decrypt_payload(&key.k, &blob[..20]), Err(BootstrapError::Decrypt));
    }

    #[test]
    fn reads_what_keylime_encrypts() {
        // Made by Keylime 7.14.3's `crypto.encrypt(b"zest payload", bytes(range(32)))` and
        // `crypto.do_hmac(key, "agent-1")`.
        use base64::Engine as _;
        let k: [u8; 32] = std::array::from_fn(|i| i as u8);
        let blob = base64::engine::general_purpose::STANDARD
            .decode("+uxUjdw0V4Qq3dgEH1gtiSlvte6CqZnvt5XaMHd+o9Fq3pqriCtAzDI1Wsc=")
            .unwrap();
        assert_eq!(decrypt_payload(&k, &blob).unwrap(), b"zest payload");
        assert_eq!(
            hmac_hex(&k, b"agent-1"),
            "3abd99168c62e753a2a4ec74055c834bdb738cfcfbfe689568f63229a29a3d24a81bdd3366c4576af5b01bb6b2f7ca4b"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"
        );
    }
}
