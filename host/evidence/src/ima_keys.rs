//! Keys of IMA file signatures: signature verification over a digest computed elsewhere
//! (IMA signs the file digest itself) and Keylime's reading of key buffers measured into
//! kernel keyrings (`ima-buf` entries) and of `verification-keys`.

#[cfg(feature = "signatures")]
use aws_lc_rs::digest;
#[cfg(feature = "signatures")]
use aws_lc_rs::signature::{self, ParsedPublicKey};
use sha1::Digest as _;
use x509_parser::prelude::{FromDer, ParsedExtension, SubjectPublicKeyInfo, X509Certificate};

#[cfg(feature = "signatures")]
use crate::HashAlg;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
#[cfg(feature = "signatures")]
const OID_P256: &str = "1.2.840.10045.3.1.7";
#[cfg(feature = "signatures")]
const OID_P384: &str = "1.3.132.0.34";
#[cfg(feature = "signatures")]
const OID_P521: &str = "1.3.132.0.35";
#[cfg(feature = "signatures")]
const OID_SECP256K1: &str = "1.3.132.0.10";

/// The kind of a public key; IMA signatures are checked with RSA and EC keys only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ec,
    Other,
}

/// A public key read from a key buffer or a policy's `verification-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaKey {
    pub kind: KeyKind,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The IMA v2 key id: the last four bytes of the certificate's SubjectKeyIdentifier,
    /// else of SHA-1 over the subjectPublicKey bits.
    pub key_id: u32,
}

/// Reads `bytes` as a key the way Keylime does for keyring measurements: DER certificate,
/// PEM certificate, DER SubjectPublicKeyInfo, PEM public key. `None` when it is none of
/// these (the buffer is then not a key).
pub fn parse_key(bytes: &[u8]) -> Option<ImaKey> {
    if let Some(key) = key_of_certificate(bytes) {
        return Some(key);
    }
    let pem = pem_body(bytes);
    if let Some(key) = pem.as_deref().and_then(key_of_certificate) {
        return Some(key);
    }
    if let Some(key) = key_of_spki(bytes, None) {
        return Some(key);
    }
    pem.as_deref().and_then(|der| key_of_spki(der, None))
}

fn key_of_certificate(der: &[u8]) -> Option<ImaKey> {
    let (rest, cert) = X509Certificate::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let skid = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        });
    let skid_id = skid.filter(|id| id.len() >= 4).map(last_four);
    key_of_spki(cert.public_key().raw, skid_id)
}

fn key_of_spki(der: &[u8], key_id: Option<u32>) -> Option<ImaKey> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let kind = match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA => KeyKind::Rsa,
        OID_EC => KeyKind::Ec,
        _ => KeyKind::Other,
    };
    let key_id =
        key_id.unwrap_or_else(|| last_four(&sha1::Sha1::digest(spki.subject_public_key.data.as_ref())));
    Some(ImaKey {
        kind,
        spki_der: spki.raw.to_vec(),
        key_id,
    })
}

/// The last four bytes, big-endian (the key id of a SHA-1 digest); 0 for a shorter input,
/// which a SHA-1 digest never is.
fn last_four(bytes: &[u8]) -> u32 {
    bytes.last_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b))
}

/// The DER body of the first PEM block in `bytes`, if any.
fn pem_body(bytes: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).ok()?;
    Some(pem.contents)
}

/// Verifies `sig` over the precomputed `digest_bytes` with a DER SubjectPublicKeyInfo key:
/// RSA PKCS#1 v1.5 (DigestInfo of `hash`) or ECDSA with a DER signature (NIST curves and
/// secp256k1, which Keylime's tests sign with). False for anything malformed or unsupported.
#[cfg(feature = "signatures")]
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
                    (Some(OID_SECP256K1), HashAlg::Sha256) => &signature::ECDSA_P256K1_SHA256_ASN1,
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
#[cfg(feature = "signatures")]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256K1_SHA256_ASN1_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    };

    fn fixture_der(name: &str) -> Vec<u8> {
        pem_body(&crate::test_fixture(&format!(
            "keylime/test/data/ima_keys/{name}"
        )))
        .unwrap()
    }

    #[test]
    fn keylime_rsa_fixture_key_reads_as_spki_with_its_key_id_and_verifies_a_file_signature() {
        let public = crate::test_fixture("keylime/test/data/ima_keys/rsa2048pub.pem");
        let key = parse_key(&public).unwrap();
        assert_eq!(key.kind, KeyKind::Rsa);
        assert_eq!(parse_key(&fixture_der("rsa2048pub.pem")).unwrap(), key);
        // Keylime's signed test entries name this key by this id.
        assert_eq!(key.key_id, 0xf3452d23);

        let private = RsaKeyPair::from_der(&fixture_der("rsa2048.pem")).unwrap();
        let file = b"an executable";
        let mut sig = vec![0; private.public_modulus_len()];
        private
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), file, &mut sig)
            .unwrap();
        let digest = HashAlg::Sha256.digest(&[file]);
        assert!(verify_prehashed(
            &key.spki_der,
            Some(HashAlg::Sha256),
            &digest,
            &sig
        ));
        assert!(!verify_prehashed(
            &key.spki_der,
            Some(HashAlg::Sha384),
            &digest,
            &sig
        ));
        let other = HashAlg::Sha256.digest(&[b"another file"]);
        assert!(!verify_prehashed(
            &key.spki_der,
            Some(HashAlg::Sha256),
            &other,
            &sig
        ));
        assert!(!verify_prehashed(
            b"garbage",
            Some(HashAlg::Sha256),
            &digest,
            &sig
        ));
    }

    #[test]
    fn secp256k1_signatures_over_a_digest_verify() {
        let text = crate::test_fixture("keylime/test/data/ima_keys/secp256k1.pem");
        let text = String::from_utf8(text).unwrap();
        let start = text.find("-----BEGIN EC PRIVATE KEY").unwrap();
        let sec1 = pem_body(&text.as_bytes()[start..]).unwrap();
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256K1_SHA256_ASN1_SIGNING, &sec1).unwrap();
        let mut spki = hex_bytes("3056301006072a8648ce3d020106052b8104000a034200");
        spki.extend_from_slice(aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref());
        let key = parse_key(&spki).unwrap();
        assert_eq!(key.kind, KeyKind::Ec);
        assert_eq!(key.key_id, 0x531f4025);

        let file = b"a library";
        let sig = pair.sign(&SystemRandom::new(), file).unwrap();
        let digest = HashAlg::Sha256.digest(&[file]);
        assert!(verify_prehashed(
            &spki,
            Some(HashAlg::Sha256),
            &digest,
            sig.as_ref()
        ));
        assert!(!verify_prehashed(&spki, None, &digest, sig.as_ref()));
    }

    #[test]
    fn certificates_give_their_subject_key_identifier_and_junk_is_no_key() {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ima signing".into()]).unwrap();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_identifier_method =
            rcgen::KeyIdMethod::PreSpecified(vec![9, 8, 7, 6, 0xde, 0xad, 0xbe, 0xef]);
        let cert = params.self_signed(&key_pair).unwrap();
        let from_der = parse_key(cert.der()).unwrap();
        assert_eq!(from_der.key_id, 0xdeadbeef);
        assert_eq!(from_der.kind, KeyKind::Ec);
        assert_eq!(parse_key(cert.pem().as_bytes()).unwrap(), from_der);
        // The bare key of that certificate gets the computed id instead.
        let bare = parse_key(key_pair.public_key_pem().as_bytes()).unwrap();
        assert_eq!(bare.spki_der, from_der.spki_der);
        assert_ne!(bare.key_id, 0xdeadbeef);

        assert!(parse_key(b"not a key").is_none());
        assert!(parse_key(b"").is_none());
        assert!(parse_key(&[0x30, 0x03, 0x02, 0x01]).is_none());
        assert!(parse_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_none());
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
