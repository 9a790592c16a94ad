//! EK certificates: decoding what agents send, matching the EK, and validating the chain
//! against the operator's `tpm_cert_store` as a signature chain over parsed certificates.
//! (EK certificates carry a critical directoryName SAN and the TCG EKU, which TLS-oriented
//! validators refuse, so this does not use one.)

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use thiserror::Error;
use x509_parser::pem::Pem;
use x509_parser::prelude::*;

use super::keys::subject_public_key_info;
use crate::evidence::PublicArea;

/// Most certificates accepted in one `ekcert` field (EK certificate plus its chain).
const MAX_CERTS_IN_FIELD: usize = 16;
/// Longest chain walked from the EK certificate to a trust anchor.
const MAX_CHAIN_DEPTH: usize = 8;

/// Why an EK certificate was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EkCertError {
    #[error("not a certificate: {0}")]
    Malformed(String),
    #[error("the EK certificate's public key does not match ek_tpm")]
    KeyMismatch,
    #[error("certificate '{subject}' is not valid at this time")]
    OutsideValidity { subject: String },
    #[error("no trusted CA in the tpm_cert_store issued '{issuer}' (chain from '{subject}')")]
    UntrustedIssuer { subject: String, issuer: String },
    #[error("the chain of '{0}' is longer than {MAX_CHAIN_DEPTH} certificates")]
    ChainTooLong(String),
}

/// An EK certificate as registered: the EK certificate (first in the field) and whatever
/// further certificates the agent sent after it (candidate intermediates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificate {
    /// DER of the EK certificate itself.
    pub der: Vec<u8>,
    /// DER of the certificates that followed it.
    pub extra: Vec<Vec<u8>>,
}

impl EkCertificate {
    /// Decodes the `ekcert` registration field: one or several concatenated PEM
    /// certificates, or base64 of a DER certificate (or of PEM text).
    pub fn from_field(text: &str) -> Result<Self, EkCertError> {
        let mut certs = decode_certificates(text.as_bytes())?;
        if certs.is_empty() {
            return Err(EkCertError::Malformed("no certificate found".into()));
        }
        let der = certs.remove(0);
        parse(&der)?;
        Ok(Self { der, extra: certs })
    }

    /// Base64 of the EK certificate's DER, the form Keylime's tenant reads back.
    pub fn der_base64(&self) -> String {
        B64.encode(&self.der)
    }

    /// Checks that the certificate certifies exactly the EK in `ek`.
    pub fn check_matches(&self, ek: &PublicArea) -> Result<(), EkCertError> {
        let ours = subject_public_key_info(ek).map_err(|_| EkCertError::KeyMismatch)?;
        let cert = parse(&self.der)?;
        let (_, ek_spki) = SubjectPublicKeyInfo::from_der(&ours).map_err(|_| EkCertError::KeyMismatch)?;
        if same_public_key(cert.public_key(), &ek_spki) {
            Ok(())
        } else {
            Err(EkCertError::KeyMismatch)
        }
    }
}

/// The operator's trusted EK CA certificates (Keylime's `tpm_cert_store`).
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    anchors: Vec<Vec<u8>>,
}

impl TrustStore {
    /// Reads every certificate from the files in `dir` (PEM, possibly several per file,
    /// or DER). Files that hold no certificate are skipped with a warning, as Keylime does.
    pub fn load_dir(dir: &Path) -> std::io::Result<Self> {
        let mut anchors = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            match decode_certificates(&bytes) {
                Ok(certs) if !certs.is_empty() => anchors.extend(certs),
                _ => {
                    tracing::warn!(file = %path.display(), "tpm_cert_store: no certificate in file, skipped")
                }
            }
        }
        Ok(Self { anchors })
    }

    /// A store from DER certificates already in memory.
    pub fn from_der(anchors: Vec<Vec<u8>>) -> Self {
        Self { anchors }
    }

    /// Number of trusted certificates.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when the store holds no certificate (every chain check then fails).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Checks that the EK certificate chains, through CA certificates the agent sent or the
    /// store holds, to a certificate in the store; every certificate on the way must be
    /// within its validity period and signed by the next.
    pub fn verify(&self, ek: &EkCertificate) -> Result<(), EkCertError> {
        let anchors: Vec<X509Certificate<'_>> = self
            .anchors
            .iter()
            .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
            .collect();
        let intermediates: Vec<X509Certificate<'_>> = ek
            .extra
            .iter()
            .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
            .collect();
        let leaf = parse(&ek.der)?;
        let leaf_subject = leaf.subject().to_string();
        let mut current = leaf;
        for _ in 0..MAX_CHAIN_DEPTH {
            check_validity(&current)?;
            let issued_by = |cand: &&X509Certificate<'_>| {
                cand.subject().as_raw() == current.issuer().as_raw()
                    && current.verify_signature(Some(cand.public_key())).is_ok()
            };
            if let Some(anchor) = anchors.iter().find(|a| issued_by(a) && may_issue(a, true)) {
                return check_validity(anchor);
            }
            match intermediates.iter().find(|c| issued_by(c) && may_issue(c, false)) {
                Some(next) => current = next.clone(),
                None => {
                    return Err(EkCertError::UntrustedIssuer {
                        subject: leaf_subject,
                        issuer: current.issuer().to_string(),
                    });
                }
            }
        }
        Err(EkCertError::ChainTooLong(leaf_subject))
    }
}

/// A certificate may issue others if it says it is a CA; a trust anchor without a
/// basicConstraints extension (old v1 roots) is trusted because the operator put it there.
fn may_issue(cert: &X509Certificate<'_>, is_anchor: bool) -> bool {
    match cert.basic_constraints() {
        Ok(Some(bc)) => bc.value.ca,
        Ok(None) => is_anchor,
        Err(_) => false,
    }
}

fn check_validity(cert: &X509Certificate<'_>) -> Result<(), EkCertError> {
    if cert.validity().is_valid() {
        Ok(())
    } else {
        Err(EkCertError::OutsideValidity {
            subject: cert.subject().to_string(),
        })
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, EkCertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(EkCertError::Malformed(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(EkCertError::Malformed(e.to_string())),
    }
}

/// Compares two public keys by algorithm, curve and key material, ignoring encoding
/// differences such as leading zero bytes.
fn same_public_key(a: &SubjectPublicKeyInfo<'_>, b: &SubjectPublicKeyInfo<'_>) -> bool {
    if a.algorithm.algorithm != b.algorithm.algorithm {
        return false;
    }
    match (a.parsed(), b.parsed()) {
        (Ok(x509_parser::public_key::PublicKey::RSA(x)), Ok(x509_parser::public_key::PublicKey::RSA(y))) => {
            strip_zeros(x.modulus) == strip_zeros(y.modulus)
                && strip_zeros(x.exponent) == strip_zeros(y.exponent)
        }
        (Ok(x509_parser::public_key::PublicKey::EC(x)), Ok(x509_parser::public_key::PublicKey::EC(y))) => {
            curve_oid(a) == curve_oid(b) && x.data() == y.data()
        }
        _ => false,
    }
}

fn curve_oid(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string())
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// Finds the certificates in PEM text, in base64 of DER or PEM, or in raw DER.
fn decode_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, EkCertError> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN") {
        let mut certs = Vec::new();
        for pem in Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| EkCertError::Malformed(format!("PEM: {e}")))?;
            if pem.label == "CERTIFICATE" {
                certs.push(pem.contents);
            }
            if certs.len() > MAX_CERTS_IN_FIELD {
                return Err(EkCertError::Malformed(format!(
                    "more than {MAX_CERTS_IN_FIELD} certificates"
                )));
            }
        }
        return Ok(certs);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let decoded = B64
        .decode(compact.as_bytes())
        .map_err(|_| EkCertError::Malformed("neither PEM nor base64-encoded DER".into()))?;
    if decoded.first() == Some(&0x30) {
        Ok(vec![decoded])
    } else if decoded.starts_with(b"-----BEGIN") {
        decode_certificates(&decoded)
    } else {
        Err(EkCertError::Malformed(
            "base64 text does not hold a DER certificate".into(),
        ))
    }
}
