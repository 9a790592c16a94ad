//! DSSE envelopes: Keylime's signed runtime policies (`keylime.dsse`, `keylime-policy sign`).
//!
//! An envelope is `{"payload": b64, "payloadType": T, "signatures": [{"keyid": K, "sig": b64}]}`.
//! Each signature is ECDSA with SHA-256 (whatever the curve), DER-encoded, over the
//! pre-authentication encoding `DSSEv1 len(T) T len(payload) payload`. As in Keylime, one
//! valid signature is enough, `keyid` only finds a stored key, and `payloadType` is bound by
//! the signature but not required to be any value. Keylime signs with ECDSA keys only; so
//! does zest, and an RSA key is refused by name rather than with Keylime's 500.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::Value;

/// The payload type `keylime-policy sign` gives runtime policies.
pub const KEYLIME_PAYLOAD_TYPE: &str = "application/vnd.keylime+json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    #[error("the key is not usable: {0}")]
    Key(String),
    #[error("no signature verifies with the key")]
    NoValidSignature,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A parsed envelope: the payload and the signatures as sent.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub payload: Vec<u8>,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone)]
pub struct Signature {
    pub keyid: Option<String>,
    pub sig: Vec<u8>,
}

/// Whether a JSON document is a DSSE envelope: Keylime's test is a non-empty `payload`.
pub fn is_envelope(document: &[u8]) -> bool {
    serde_json::from_slice::<Value>(document)
        .ok()
        .and_then(|v| v.get("payload").cloned())
        .is_some_and(|p| match p {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        })
}

/// Keylime's lenient decoding of `payload` and `sig`: hex, then standard base64, then
/// URL-safe base64 (padding required in both).
fn decode(text: &str) -> Option<Vec<u8>> {
    if let Ok(bytes) = hex::decode(text)
        && !bytes.is_empty()
    {
        return Some(bytes);
    }
    STANDARD.decode(text).or_else(|_| URL_SAFE.decode(text)).ok()
}

impl Envelope {
    pub fn parse(document: &[u8]) -> Result<Self, DsseError> {
        let value: Value =
            serde_json::from_slice(document).map_err(|e| DsseError::Malformed(format!("not JSON: {e}")))?;
        let field = |name: &str| {
            value
                .get(name)
                .ok_or_else(|| DsseError::Malformed(format!("'{name}' is missing")))
        };
        let payload = field("payload")?
            .as_str()
            .and_then(decode)
            .ok_or_else(|| DsseError::Malformed("'payload' is not base64".into()))?;
        let payload_type = field("payloadType")?
            .as_str()
            .ok_or_else(|| DsseError::Malformed("'payloadType' is not a string".into()))?
            .to_owned();
        let signatures = field("signatures")?
            .as_array()
            .ok_or_else(|| DsseError::Malformed("'signatures' is not a list".into()))?
            .iter()
            .map(|s| {
                let sig = s
                    .get("sig")
                    .and_then(Value::as_str)
                    .and_then(decode)
                    .ok_or_else(|| {
                        DsseError::Malformed("a signature's 'sig' is missing or not base64".into())
                    })?;
                let keyid = s.get("keyid").and_then(Value::as_str).map(str::to_owned);
                Ok(Signature { keyid, sig })
            })
            .collect::<Result<Vec<_>, DsseError>>()?;
        Ok(Self {
            payload,
            payload_type,
            signatures,
        })
    }

    /// The payload when one signature verifies with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&[u8], DsseError> {
        let message = pae(&self.payload_type, &self.payload);
        let verified = self.signatures.iter().any(|s| {
            UnparsedPublicKey::new(key.algorithm, &key.point)
                .verify(&message, &s.sig)
                .is_ok()
        });
        if verified {
            Ok(&self.payload)
        } else {
            Err(DsseError::NoValidSignature)
        }
    }
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// An ECDSA public key to verify envelopes with.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    algorithm: &'static signature::EcdsaVerificationAlgorithm,
    point: Vec<u8>,
}

impl VerifyingKey {
    /// From PEM: a public key (`BEGIN PUBLIC KEY`, what Keylime takes) or a certificate
    /// (what `keylime-policy sign --backend x509` writes), whose key is used.
    pub fn from_pem(text: &[u8]) -> Result<Self, DsseError> {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(text).map_err(|e| DsseError::Key(format!("not PEM: {e}")))?;
        match pem.label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&pem.contents),
            "CERTIFICATE" => {
                let cert = pem
                    .parse_x509()
                    .map_err(|e| DsseError::Key(format!("not a certificate: {e}")))?;
                Self::from_spki_der(cert.public_key().raw)
            }
            other => Err(DsseError::Key(format!(
                "a {other} PEM block; expected PUBLIC KEY or CERTIFICATE"
            ))),
        }
    }

    fn from_spki_der(der: &[u8]) -> Result<Self, DsseError> {
        use x509_parser::prelude::FromDer;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| DsseError::Key(format!("not a public key: {e}")))?;
        let algorithm = spki.algorithm.algorithm.to_id_string();
        if algorithm != "1.2.840.10045.2.1" {
            return Err(DsseError::Key(format!(
                "algorithm {algorithm} is not elliptic-curve; Keylime's DSSE signatures are ECDSA"
            )));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string())
            .unwrap_or_default();
        // Keylime hashes with SHA-256 on every curve.
        let algorithm = match curve.as_str() {
            "1.2.840.10045.3.1.7" => &signature::ECDSA_P256_SHA256_ASN1,
            "1.3.132.0.34" => &signature::ECDSA_P384_SHA256_ASN1,
            "1.3.132.0.35" => &signature::ECDSA_P521_SHA256_ASN1,
            other => return Err(DsseError::Key(format!("unsupported curve {other:?}"))),
        };
        Ok(Self {
            algorithm,
            point: spki.subject_public_key.data.to_vec(),
        })
    }
}

/// The file name Keylime's verifier keeps an uploaded key under: SHA-256 of its bytes, which
/// for a key `keylime-policy` exported is also the envelope's `keyid`.
pub fn key_digest(key_bytes: &[u8]) -> String {
    hex::encode(crate::evidence::HashAlg::Sha256.digest(&[key_bytes]))
}

/// A private key that signs envelopes as `keylime-policy sign --backend ecdsa` does.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    algorithm: &'static EcdsaSigningAlgorithm,
}

impl SigningKey {
    /// A new P-256 key, Keylime's choice when none is given.
    pub fn generate() -> Result<Self, DsseError> {
        let algorithm = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pair = EcdsaKeyPair::generate(algorithm).map_err(|_| DsseError::Sign("key generation".into()))?;
        Ok(Self { pair, algorithm })
    }

    /// From an unencrypted EC private key in PEM (`EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    /// aws-lc signs with SHA-256 on P-256 and P-521 only, so a P-384 key is refused.
    pub fn from_pem(text: &[u8]) -> Result<Self, DsseError> {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(text).map_err(|e| DsseError::Key(format!("not PEM: {e}")))?;
        if !matches!(pem.label.as_str(), "EC PRIVATE KEY" | "PRIVATE KEY") {
            return Err(DsseError::Key(format!(
                "a {} PEM block; Keylime signs with elliptic-curve keys only",
                pem.label
            )));
        }
        for algorithm in [
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P521_SHA256_ASN1_SIGNING,
        ] {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(algorithm, &pem.contents) {
                return Ok(Self { pair, algorithm });
            }
        }
        Err(DsseError::Key(
            "not an unencrypted P-256 or P-521 private key (the curves zest signs SHA-256 with)".into(),
        ))
    }

    /// The private key as PKCS#8 PEM (Keylime reads it with `load_pem_private_key`).
    pub fn private_pem(&self) -> Result<String, DsseError> {
        let der = self
            .pair
            .to_pkcs8v1()
            .map_err(|_| DsseError::Sign("exporting the key".into()))?;
        Ok(pem_block("PRIVATE KEY", der.as_ref()))
    }

    /// The public key as SPKI PEM, byte for byte what Python's `cryptography` writes.
    pub fn public_pem(&self) -> Result<String, DsseError> {
        let der = self
            .pair
            .public_key()
            .as_der()
            .map_err(|_| DsseError::Sign("exporting the public key".into()))?;
        Ok(pem_block("PUBLIC KEY", der.as_ref()))
    }

    /// Keylime's ecdsa keyid: SHA-256 of the public key's PEM text.
    pub fn keyid(&self) -> Result<String, DsseError> {
        Ok(key_digest(self.public_pem()?.as_bytes()))
    }

    /// PKCS#8 DER, for certificate tools.
    pub fn pkcs8_der(&self) -> Result<Vec<u8>, DsseError> {
        self.pair
            .to_pkcs8v1()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| DsseError::Sign("exporting the key".into()))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DsseError> {
        let _ = self.algorithm;
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| DsseError::Sign("ECDSA".into()))
    }

    /// The envelope `dsse.Sign` writes, same key order and separators (`json.dumps`).
    pub fn envelope(&self, payload_type: &str, payload: &[u8], keyid: &str) -> Result<String, DsseError> {
        let sig = self.sign(&pae(payload_type, payload))?;
        let mut out = String::new();
        out.push_str("{\"payload\": ");
        write_python_string(&STANDARD.encode(payload), &mut out);
        out.push_str(", \"payloadType\": ");
        write_python_string(payload_type, &mut out);
        out.push_str(", \"signatures\": [{\"keyid\": ");
        write_python_string(keyid, &mut out);
        out.push_str(", \"sig\": ");
        write_python_string(&STANDARD.encode(sig), &mut out);
        out.push_str("}]}");
        Ok(out)
    }
}

/// PEM with 64-character lines and a final newline.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A JSON text as Python's `json.dumps(json.loads(text))` writes it: keys in their order,
/// `", "` and `": "` separators, non-ASCII escaped. Numbers are copied as written (runtime
/// policies hold integers). `keylime-policy sign` signs this form of the policy.
pub fn python_dumps(text: &str) -> Result<String, DsseError> {
    serde_json::from_str::<Value>(text).map_err(|e| DsseError::Malformed(format!("not JSON: {e}")))?;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' => {
                let mut end = start + 1;
                let mut escaped = false;
                for (i, c) in chars.by_ref() {
                    end = i + c.len_utf8();
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                let literal: String = serde_json::from_str(&text[start..end])
                    .map_err(|e| DsseError::Malformed(format!("a string: {e}")))?;
                write_python_string(&literal, &mut out);
            }
            ',' => out.push_str(", "),
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

fn write_python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab".to_vec());
    }

    #[test]
    fn a_signed_envelope_verifies_and_a_changed_one_does_not() {
        let key = SigningKey::generate().unwrap();
        let text = key
            .envelope(KEYLIME_PAYLOAD_TYPE, b"{\"a\": 1}", &key.keyid().unwrap())
            .unwrap();
        let public = VerifyingKey::from_pem(key.public_pem().unwrap().as_bytes()).unwrap();
        let envelope = Envelope::parse(text.as_bytes()).unwrap();
        assert_eq!(envelope.verify(&public).unwrap(), b"{\"a\": 1}");
        let mut changed = envelope.clone();
        changed.payload = b"{\"a\": 2}".to_vec();
        assert_eq!(changed.verify(&public), Err(DsseError::NoValidSignature));
        let mut retyped = envelope;
        retyped.payload_type = "text/plain".into();
        assert_eq!(retyped.verify(&public), Err(DsseError::NoValidSignature));
        let other = SigningKey::generate().unwrap();
        let other = VerifyingKey::from_pem(other.public_pem().unwrap().as_bytes()).unwrap();
        assert!(Envelope::parse(text.as_bytes()).unwrap().verify(&other).is_err());
    }

    #[test]
    fn python_dumps_matches_json_dumps() {
        let text = "{\n  \"b\": [1, \"x\u{e9} \\\" \\u00e9\"],\n  \"a\" : {\"k\":null}\n}";
        assert_eq!(
            python_dumps(text).unwrap(),
            r#"{"b": [1, "x\u00e9 \" \u00e9"], "a": {"k": null}}"#
        );
        assert!(python_dumps("{").is_err());
    }
}
