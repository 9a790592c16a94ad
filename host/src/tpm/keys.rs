//! Key names, attribute checks and the SubjectPublicKeyInfo of TPM keys.

use thiserror::Error;

use crate::evidence::{EccCurve, KeyParams, ObjectAttributes, PublicArea};

/// Why a TPM key is not acceptable for the role it was offered in.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("the attestation key lacks required attributes: {0}")]
    MissingAttributes(String),
    #[error("the attestation key must not be a decryption key")]
    DecryptingAttestationKey,
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// The TPM Name of an object: nameAlg (2 bytes) followed by H_nameAlg(TPMT_PUBLIC).
pub fn object_name(public: &PublicArea) -> Vec<u8> {
    let mut name = public.name_alg.tpm_id().to_be_bytes().to_vec();
    name.extend_from_slice(&public.name_alg.digest(&[&public.tpmt_bytes]));
    name
}

/// Checks that a key can serve as an attestation key: a restricted signing key that never
/// leaves its TPM (fixedTPM, fixedParent) and was generated inside it.
pub fn check_attestation_key(ak: &PublicArea) -> Result<(), KeyError> {
    let required = [
        (ObjectAttributes::FIXED_TPM, "fixedTPM"),
        (ObjectAttributes::FIXED_PARENT, "fixedParent"),
        (ObjectAttributes::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (ObjectAttributes::RESTRICTED, "restricted"),
        (ObjectAttributes::SIGN, "sign"),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(bit, _)| !ak.attributes.has(*bit))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(KeyError::MissingAttributes(missing.join(", ")));
    }
    if ak.attributes.has(ObjectAttributes::DECRYPT) {
        return Err(KeyError::DecryptingAttestationKey);
    }
    match &ak.params {
        KeyParams::Rsa { .. } => Ok(()),
        KeyParams::Ecc { curve, .. } if curve.coordinate_len().is_some() => Ok(()),
        KeyParams::Ecc { curve, .. } => Err(KeyError::Unsupported(format!("ECC curve {curve:?}"))),
        KeyParams::Other { object_type } => Err(KeyError::Unsupported(format!(
            "object type 0x{object_type:04x} is not an asymmetric key"
        ))),
    }
}

/// The DER SubjectPublicKeyInfo of an RSA or NIST-curve ECC key, as an X.509 certificate
/// would carry it.
pub fn subject_public_key_info(public: &PublicArea) -> Result<Vec<u8>, KeyError> {
    match &public.params {
        KeyParams::Rsa {
            modulus, exponent, ..
        } => {
            let rsa_key = der::sequence(&[
                der::unsigned_integer(modulus),
                der::unsigned_integer(&exponent.to_be_bytes()),
            ]);
            Ok(der::sequence(&[
                der::sequence(&[der::oid(der::OID_RSA_ENCRYPTION), der::null()]),
                der::bit_string(&rsa_key),
            ]))
        }
        KeyParams::Ecc { curve, x, y, .. } => {
            let (curve_oid, len) = match curve {
                EccCurve::NistP256 => (der::OID_P256, 32),
                EccCurve::NistP384 => (der::OID_P384, 48),
                EccCurve::NistP521 => (der::OID_P521, 66),
                EccCurve::Other(id) => {
                    return Err(KeyError::Unsupported(format!("ECC curve 0x{id:04x}")));
                }
            };
            let point = uncompressed_point(x, y, len);
            Ok(der::sequence(&[
                der::sequence(&[der::oid(der::OID_EC_PUBLIC_KEY), der::oid(curve_oid)]),
                der::bit_string(&point),
            ]))
        }
        KeyParams::Other { object_type } => Err(KeyError::Unsupported(format!(
            "object type 0x{object_type:04x} has no SubjectPublicKeyInfo"
        ))),
    }
}

/// 0x04 ‖ X ‖ Y with both coordinates left-padded to the curve size.
pub(crate) fn uncompressed_point(x: &[u8], y: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 2 * len);
    out.push(0x04);
    for coord in [x, y] {
        out.extend(std::iter::repeat_n(0u8, len.saturating_sub(coord.len())));
        out.extend_from_slice(coord);
    }
    out
}

/// Just enough DER to write a SubjectPublicKeyInfo.
pub(crate) mod der {
    pub const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    pub const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            let significant = bytes.get(skip..).unwrap_or_default();
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(significant);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    pub fn oid(encoded: &[u8]) -> Vec<u8> {
        tlv(0x06, encoded)
    }

    pub fn null() -> Vec<u8> {
        vec![0x05, 0x00]
    }

    pub fn bit_string(content: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8];
        body.extend_from_slice(content);
        tlv(0x03, &body)
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
        let trimmed: &[u8] = match magnitude.iter().position(|b| *b != 0) {
            Some(i) => magnitude.get(i..).unwrap_or(&[0]),
            None => &[0],
        };
        let mut body = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(trimmed);
        tlv(0x02, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integer_is_minimal_and_positive() {
        assert_eq!(der::unsigned_integer(&[0, 0, 1, 0, 1]), vec![0x02, 0x03, 1, 0, 1]);
        assert_eq!(der::unsigned_integer(&[0x80]), vec![0x02, 0x02, 0, 0x80]);
        assert_eq!(der::unsigned_integer(&[0, 0]), vec![0x02, 0x01, 0]);
    }

    #[test]
    fn long_form_lengths() {
        let s = der::sequence(&[vec![0u8; 300]]);
        assert_eq!(&s[..4], &[0x30, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn points_are_padded_to_curve_size() {
        let p = uncompressed_point(&[1], &[2, 3], 4);
        assert_eq!(p, vec![4, 0, 0, 0, 1, 0, 0, 2, 3]);
    }
}
