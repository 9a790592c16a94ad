//! Signature verification over a digest computed elsewhere (IMA file signatures sign the
//! file digest itself), offered to policies as a host import.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, ParsedPublicKey};
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};

use crate::evidence::HashAlg;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// Verifies `sig` over the precomputed `digest_bytes` with a DER SubjectPublicKeyInfo key:
/// RSA PKCS#1 v1.5 (DigestInfo of `hash`) or ECDSA with a DER signature. False for anything
/// malformed or unsupported.
pub fn verify_prehashed(spki_der: &[u8], hash: Option<HashAlg>, digest_bytes: &[u8], sig: &[u8]) -> bool {
    let Some(hash) = hash else { return false };
    if digest_bytes.len() != hash.digest_len() {
        return false;
    }
    let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    let key_bytes = spki.subject_public_key.data.as_ref();
    let algorithm: &'static dyn signature::VerificationAlgorithm =
        match spki.algorithm.algorithm.to_id_string().as_str() {
            OID_RSA => match hash {
                HashAlg::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                HashAlg::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                HashAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                HashAlg::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            },
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                match (curve.as_deref(), hash) {
                    (Some(OID_P256), HashAlg::Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
                    (Some(OID_P256), HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                    (Some(OID_P256), HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                    (Some(OID_P256), HashAlg::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                    (Some(OID_P384), HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                    (Some(OID_P384), HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                    (Some(OID_P384), HashAlg::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                    (Some(OID_P521), HashAlg::Sha256) => &signature::ECDSA_P521_SHA256_ASN1,
                    (Some(OID_P521), HashAlg::Sha384) => &signature::ECDSA_P521_SHA384_ASN1,
                    (Some(OID_P521), HashAlg::Sha512) => &signature::ECDSA_P521_SHA512_ASN1,
                    _ => return false,
                }
            }
            _ => return false,
        };
    let Ok(key) = ParsedPublicKey::new(algorithm, key_bytes) else {
        return false;
    };
    let Ok(digest) = digest::Digest::import_less_safe(digest_bytes, hash.algorithm()) else {
        return false;
    };
    key.verify_digest_sig(&digest, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    #[test]
    fn ecdsa_over_a_digest_verifies_and_a_wrong_digest_does_not() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let message = b"file contents";
        let sig = key.sign(&rng, message).unwrap();
        let point = key.public_key().as_ref();
        let mut tpmt = vec![
            0x00, 0x23, 0x00, 0x0b, 0x00, 0x04, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0b,
        ];
        tpmt.extend([0x00, 0x03, 0x00, 0x10, 0x00, 0x20]);
        tpmt.extend(&point[1..33]);
        tpmt.extend([0x00, 0x20]);
        tpmt.extend(&point[33..65]);
        let spki =
            crate::tpm::subject_public_key_info(&crate::evidence::PublicArea::from_tpmt(&tpmt).unwrap())
                .unwrap();
        let digest = HashAlg::Sha256.digest(&[message]);
        assert!(verify_prehashed(
            &spki,
            Some(HashAlg::Sha256),
            &digest,
            sig.as_ref()
        ));
        let other = HashAlg::Sha256.digest(&[b"other contents"]);
        assert!(!verify_prehashed(
            &spki,
            Some(HashAlg::Sha256),
            &other,
            sig.as_ref()
        ));
        assert!(!verify_prehashed(
            &spki,
            Some(HashAlg::Sha1),
            &digest,
            sig.as_ref()
        ));
        assert!(!verify_prehashed(
            b"garbage",
            Some(HashAlg::Sha256),
            &digest,
            sig.as_ref()
        ));
    }
}
