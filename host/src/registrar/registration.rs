//! Turning a registration body into a validated record and a credential blob. Every field
//! is checked before anything is stored; each error names its field.

use std::net::IpAddr;

use aws_lc_rs::digest;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::api::{AgentId, ApiError};
use crate::evidence::{ObjectAttributes, PublicArea};
use crate::store::NewRegistration;
use crate::tpm::{self, EkCertificate, TrustStore};

/// Length and alphabet of the credential, as Keylime makes it.
const CREDENTIAL_LEN: usize = 32;
const CREDENTIAL_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Largest PEM certificate accepted in `mtls_cert`.
const MAX_MTLS_CERT_LEN: usize = 16 * 1024;

/// The auth tag an agent presents after TPM2_ActivateCredential recovered `credential`:
/// hex(HMAC-SHA-384(key = base64(credential) as text, message = agent id)). The key is the
/// base64 *text*, as Keylime's agents compute it.
pub fn auth_tag(credential: &[u8], agent_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA384, B64.encode(credential).as_bytes());
    hex::encode(hmac::sign(&key, agent_id.as_bytes()).as_ref())
}

/// SHA-256 of an auth tag: what the store keeps instead of the tag.
pub(super) fn auth_tag_digest(tag: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, tag.to_ascii_lowercase().as_bytes())
        .as_ref()
        .to_vec()
}

/// A registration that passed every check, with the credential blob for the agent.
pub(super) struct AcceptedRegistration {
    pub record: NewRegistration,
    pub blob: Vec<u8>,
}

/// Validates a registration body for `agent_id` and makes its credential.
pub(super) fn accept(
    agent_id: &AgentId,
    body: &Map<String, Value>,
    ek_trust: Option<&TrustStore>,
) -> Result<AcceptedRegistration, ApiError> {
    let (aik_bytes, aik) = tpm_public(body, "aik_tpm")?;
    tpm::check_attestation_key(&aik).map_err(|e| ApiError::bad_request(format!("aik_tpm: {e}")))?;
    let (ek_bytes, ek) = tpm_public(body, "ek_tpm")?;
    if !ek
        .attributes
        .has(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT)
    {
        return Err(ApiError::bad_request(
            "ek_tpm: the EK must be a restricted decryption key",
        ));
    }

    let ekcert = match optional_str(body, "ekcert")? {
        Some(text) => {
            let cert =
                EkCertificate::from_field(text).map_err(|e| ApiError::bad_request(format!("ekcert: {e}")))?;
            cert.check_matches(&ek)
                .map_err(|e| ApiError::bad_request(format!("ekcert: {e}")))?;
            if let Some(trust) = ek_trust {
                trust
                    .verify(&cert)
                    .map_err(|e| ApiError::bad_request(format!("ekcert: {e}")))?;
            }
            Some(cert.der_base64())
        }
        None if ek_trust.is_some() => {
            return Err(ApiError::bad_request(
                "ekcert: an EK certificate is required (this registrar checks EK certificates)",
            ));
        }
        None => None,
    };
    // IAK/IDevID identities are not used by this registrar (the EK path above is complete);
    // their fields must still be well-typed.
    for field in [
        "iak_tpm",
        "idevid_tpm",
        "iak_cert",
        "idevid_cert",
        "iak_attest",
        "iak_sign",
    ] {
        optional_str(body, field)?;
    }

    let ip = optional_str(body, "ip")?.map(contact_address).transpose()?;
    let port = contact_port(body.get("port"))?;
    let mtls_cert = optional_str(body, "mtls_cert")?
        .map(mtls_certificate)
        .transpose()?;

    let credential = new_credential()?;
    let blob = tpm::make_credential(&ek, &tpm::object_name(&aik), &credential)
        .map_err(|e| ApiError::bad_request(format!("ek_tpm: {e}")))?;
    let tag = auth_tag(&credential, agent_id.as_str());

    Ok(AcceptedRegistration {
        record: NewRegistration {
            agent_id: agent_id.to_string(),
            ek_tpm: B64.encode(ek_bytes),
            ekcert,
            aik_tpm: B64.encode(aik_bytes),
            ip,
            port,
            mtls_cert,
            auth_tag_digest: auth_tag_digest(&tag),
        },
        blob,
    })
}

/// A 32-character alphanumeric credential, drawn without modulo bias.
fn new_credential() -> Result<Vec<u8>, ApiError> {
    let rng = SystemRandom::new();
    let mut out = Vec::with_capacity(CREDENTIAL_LEN);
    let mut buf = [0u8; 64];
    while out.len() < CREDENTIAL_LEN {
        rng.fill(&mut buf)
            .map_err(|_| ApiError::internal("random credential", "RNG failure"))?;
        // 248 = 4 × 62: bytes at or above it would favour the first letters.
        out.extend(
            buf.iter()
                .filter(|b| **b < 248)
                .filter_map(|b| CREDENTIAL_ALPHABET.get(usize::from(*b % 62)).copied()),
        );
    }
    out.truncate(CREDENTIAL_LEN);
    Ok(out)
}

/// A required base64 TPM2B_PUBLIC field: its bytes and parsed form.
fn tpm_public(body: &Map<String, Value>, field: &str) -> Result<(Vec<u8>, PublicArea), ApiError> {
    let text =
        optional_str(body, field)?.ok_or_else(|| ApiError::bad_request(format!("{field} is required")))?;
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| ApiError::bad_request(format!("{field} is not valid base64")))?;
    let public = PublicArea::from_tpm2b(&bytes)
        .map_err(|e| ApiError::bad_request(format!("{field} is not a valid TPM2B_PUBLIC: {e}")))?;
    Ok((bytes, public))
}

/// A field that may be absent or null, and otherwise must be a string.
pub(super) fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

/// The agent's contact address: an IP address or a host name.
fn contact_address(text: &str) -> Result<String, ApiError> {
    let host_name = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        });
    if text.parse::<IpAddr>().is_ok() || host_name {
        Ok(text.to_owned())
    } else {
        Err(ApiError::bad_request("ip must be an IP address or a host name"))
    }
}

/// The agent's contact port: a number or a numeric string (both occur), 1–65535.
fn contact_port(value: Option<&Value>) -> Result<Option<u16>, ApiError> {
    let port = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match port {
        Some(p @ 1..=65535) => Ok(Some(p as u16)),
        _ => Err(ApiError::bad_request("port must be a number from 1 to 65535")),
    }
}

/// `mtls_cert`: the literal "disabled", or one PEM certificate (a pull agent's self-signed
/// server certificate, serial 0 included).
fn mtls_certificate(text: &str) -> Result<String, ApiError> {
    if text == "disabled" {
        return Ok(text.to_owned());
    }
    let invalid = |detail: &str| {
        ApiError::bad_request(format!(
            "mtls_cert must be a PEM certificate or \"disabled\": {detail}"
        ))
    };
    if text.len() > MAX_MTLS_CERT_LEN {
        return Err(invalid("too long"));
    }
    let mut blocks = Pem::iter_from_buffer(text.as_bytes());
    let pem = match blocks.next() {
        Some(Ok(pem)) if pem.label == "CERTIFICATE" => pem,
        Some(Ok(_)) => return Err(invalid("the PEM block is not a CERTIFICATE")),
        Some(Err(e)) => return Err(invalid(&e.to_string())),
        None => return Err(invalid("no PEM block")),
    };
    match X509Certificate::from_der(&pem.contents) {
        Ok(([], _)) => Ok(text.to_owned()),
        Ok(_) => Err(invalid("trailing bytes")),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_tag_keys_hmac_with_base64_text() {
        // Computed independently: printf UUID | openssl dgst -sha384 -hmac "$(printf SECRET | base64)"
        let tag = auth_tag(b"SECRET", "UUID");
        assert_eq!(
            tag,
            "0f4c46a2ff3589eb30a209577da21349cdf8ef26f1e000604aa9578609c9ec74df2b1f323f32a7314e3c02a4da8db9c0"
        );
        assert_eq!(tag.len(), 96);
    }

    #[test]
    fn credentials_are_alphanumeric_and_fresh() {
        let a = new_credential().unwrap();
        let b = new_credential().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn port_accepts_numbers_and_numeric_strings() {
        assert_eq!(contact_port(Some(&Value::from(9002))).unwrap(), Some(9002));
        assert_eq!(contact_port(Some(&Value::from("9002"))).unwrap(), Some(9002));
        assert_eq!(contact_port(None).unwrap(), None);
        for bad in [
            Value::from(0),
            Value::from(70000),
            Value::from("x"),
            Value::from(true),
            Value::from(-1),
        ] {
            assert!(contact_port(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn contact_addresses() {
        for good in ["127.0.0.1", "::1", "agent-1.example.com", "localhost"] {
            assert!(contact_address(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "x\ny", "-a.com", "a..b", "http://x"] {
            assert!(contact_address(bad).is_err(), "{bad:?}");
        }
    }
}
