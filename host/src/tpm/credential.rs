//! Software TPM2_MakeCredential against an EK public area, producing the tpm2-tools
//! credential file that Keylime agents hand to TPM2_ActivateCredential.
//!
//! Layout: `0xBADCC0DE ‖ u32 1 ‖ TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET`, where
//! `TPM2B_ID_OBJECT = TPM2B(integrityHMAC) ‖ AES-CFB(symKey, IV = 0, TPM2B(credential))`
//! (TPM 2.0 Part 1, §24 "Credential Protection").

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{AES_128, AES_192, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
    OaepPublicEncryptingKey, PublicEncryptingKey,
};
use thiserror::Error;

use super::keys::{subject_public_key_info, uncompressed_point};
use crate::evidence::{EccCurve, HashAlg, KeyParams, PublicArea, SymmetricDef};

/// Magic and version of the tpm2-tools `makecredential` output file.
pub const CREDENTIAL_BLOB_MAGIC: u32 = 0xBADC_C0DE;
pub const CREDENTIAL_BLOB_VERSION: u32 = 1;

/// Why a credential could not be made for an EK.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    #[error("the EK's symmetric algorithm must be AES in CFB mode, found {0:?}")]
    UnsupportedSymmetric(SymmetricDef),
    #[error("the EK is not an RSA or NIST-curve ECC key: {0}")]
    UnsupportedKey(String),
    #[error("the credential of {0} bytes is longer than the EK's name digest allows")]
    CredentialTooLong(usize),
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

/// Encrypts `credential` to the EK so that only the TPM holding both the EK and the object
/// named `object_name` (the AK) can recover it with TPM2_ActivateCredential.
pub fn make_credential(
    ek: &PublicArea,
    object_name: &[u8],
    credential: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let hash = ek.name_alg;
    // The credential is a TPM2B_DIGEST: it cannot be longer than the name algorithm's digest.
    if credential.len() > hash.digest_len() {
        return Err(CredentialError::CredentialTooLong(credential.len()));
    }
    let sym_bits = match ek.symmetric() {
        SymmetricDef::AesCfb(bits @ (128 | 192 | 256)) => bits,
        other => return Err(CredentialError::UnsupportedSymmetric(other)),
    };
    let (seed, encrypted_secret) = seed_and_secret(ek)?;

    let sym_key = kdfa(hash, &seed, "STORAGE", object_name, &[], u32::from(sym_bits));
    let mut enc_identity = tpm2b(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;

    let hmac_key = kdfa(hash, &seed, "INTEGRITY", &[], &[], (hash.digest_len() * 8) as u32);
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac_algorithm(hash), &hmac_key));
    mac.update(&enc_identity);
    mac.update(object_name);
    let integrity = mac.sign();

    let mut id_object = tpm2b(integrity.as_ref());
    id_object.extend_from_slice(&enc_identity);

    let mut blob = Vec::with_capacity(12 + id_object.len() + encrypted_secret.len());
    blob.extend_from_slice(&CREDENTIAL_BLOB_MAGIC.to_be_bytes());
    blob.extend_from_slice(&CREDENTIAL_BLOB_VERSION.to_be_bytes());
    blob.extend_from_slice(&tpm2b(&id_object));
    blob.extend_from_slice(&tpm2b(&encrypted_secret));
    Ok(blob)
}

/// The seed shared with the TPM and what the TPM needs to recover it: RSA-OAEP of a random
/// seed, or an ephemeral ECDH point.
fn seed_and_secret(ek: &PublicArea) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let hash = ek.name_alg;
    let rng = SystemRandom::new();
    match &ek.params {
        KeyParams::Rsa { .. } => {
            let mut seed = vec![0u8; hash.digest_len()];
            rng.fill(&mut seed)
                .map_err(|_| CredentialError::Crypto("random seed"))?;
            let spki =
                subject_public_key_info(ek).map_err(|e| CredentialError::UnsupportedKey(e.to_string()))?;
            let key = PublicEncryptingKey::from_der(&spki)
                .map_err(|_| CredentialError::UnsupportedKey("RSA key rejected".into()))?;
            let key = OaepPublicEncryptingKey::new(key)
                .map_err(|_| CredentialError::UnsupportedKey("RSA key rejected".into()))?;
            let algorithm = match hash {
                HashAlg::Sha1 => &OAEP_SHA1_MGF1SHA1,
                HashAlg::Sha256 => &OAEP_SHA256_MGF1SHA256,
                HashAlg::Sha384 => &OAEP_SHA384_MGF1SHA384,
                HashAlg::Sha512 => &OAEP_SHA512_MGF1SHA512,
            };
            let mut out = vec![0u8; key.ciphertext_size()];
            let encrypted = key
                .encrypt(algorithm, &seed, &mut out, Some(b"IDENTITY\0"))
                .map_err(|_| CredentialError::Crypto("RSA-OAEP encryption"))?;
            Ok((seed, encrypted.to_vec()))
        }
        KeyParams::Ecc { curve, x, y, .. } => {
            let (algorithm, len) = match curve {
                EccCurve::NistP256 => (&agreement::ECDH_P256, 32),
                EccCurve::NistP384 => (&agreement::ECDH_P384, 48),
                EccCurve::NistP521 => (&agreement::ECDH_P521, 66),
                EccCurve::Other(id) => {
                    return Err(CredentialError::UnsupportedKey(format!("ECC curve 0x{id:04x}")));
                }
            };
            let ephemeral = EphemeralPrivateKey::generate(algorithm, &rng)
                .map_err(|_| CredentialError::Crypto("ephemeral ECC key"))?;
            let ephemeral_point = ephemeral
                .compute_public_key()
                .map_err(|_| CredentialError::Crypto("ephemeral ECC key"))?;
            let ephemeral_point = ephemeral_point.as_ref();
            // An uncompressed point: 0x04 ‖ x ‖ y, each coordinate `len` bytes.
            let (ephemeral_x, ephemeral_y) = ephemeral_point
                .get(1..)
                .and_then(|xy| xy.split_at_checked(len))
                .ok_or(CredentialError::Crypto("ephemeral ECC key"))?;
            let ek_point = uncompressed_point(x, y, len);
            let ek_x = ek_point
                .get(1..1 + len)
                .ok_or_else(|| CredentialError::UnsupportedKey("the EK's ECC point is too short".into()))?;
            // aws-lc-rs validates that the EK point is on the curve here.
            let seed = agreement::agree_ephemeral(
                ephemeral,
                UnparsedPublicKey::new(algorithm, &ek_point),
                CredentialError::UnsupportedKey("the EK's ECC point is not on its curve".into()),
                |z| {
                    Ok(kdfe(
                        hash,
                        z,
                        "IDENTITY",
                        ephemeral_x,
                        ek_x,
                        (hash.digest_len() * 8) as u32,
                    ))
                },
            )?;
            let mut point = tpm2b(ephemeral_x);
            point.extend_from_slice(&tpm2b(ephemeral_y));
            Ok((seed, point))
        }
        KeyParams::Other { object_type } => Err(CredentialError::UnsupportedKey(format!(
            "object type 0x{object_type:04x}"
        ))),
    }
}

fn hmac_algorithm(hash: HashAlg) -> hmac::Algorithm {
    match hash {
        HashAlg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
    }
}

/// KDFa (SP 800-108 counter mode with HMAC), TPM 2.0 Part 1 §11.4.10.2. The label is
/// followed by a zero byte.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let key = hmac::Key::new(hmac_algorithm(hash), key);
    let want = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(want + hash.digest_len());
    let mut counter: u32 = 1;
    while out.len() < want {
        let mut mac = hmac::Context::with_key(&key);
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(mac.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

/// KDFe (SP 800-56A concatenation KDF), TPM 2.0 Part 1 §11.4.10.3. The label is followed
/// by a zero byte.
pub fn kdfe(hash: HashAlg, z: &[u8], label: &str, party_u: &[u8], party_v: &[u8], bits: u32) -> Vec<u8> {
    let want = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(want + hash.digest_len());
    let mut counter: u32 = 1;
    while out.len() < want {
        let mut label_z = Vec::with_capacity(label.len() + 1);
        label_z.extend_from_slice(label.as_bytes());
        label_z.push(0);
        out.extend_from_slice(&hash.digest(&[&counter.to_be_bytes(), z, &label_z, party_u, party_v]));
        counter += 1;
    }
    out.truncate(want);
    out
}

fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), CredentialError> {
    let algorithm = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        _ => return Err(CredentialError::Crypto("AES key size")),
    };
    let key = UnboundCipherKey::new(algorithm, key).map_err(|_| CredentialError::Crypto("AES key"))?;
    let key = EncryptingKey::cfb128(key).map_err(|_| CredentialError::Crypto("AES-CFB key"))?;
    key.less_safe_encrypt(data, EncryptionContext::Iv128([0u8; 16].into()))
        .map_err(|_| CredentialError::Crypto("AES-CFB encryption"))?;
    Ok(())
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    // Every caller passes at most a few hundred bytes, far below u16::MAX.
    let mut out = Vec::with_capacity(2 + data.len());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa vector from the TPM 2.0 reference implementation's self-test style: the output
    /// length and the counter loop are what matter; this pins the byte layout.
    #[test]
    fn kdfa_output_length_follows_bits() {
        let k = kdfa(HashAlg::Sha256, b"key", "STORAGE", b"name", &[], 128);
        assert_eq!(k.len(), 16);
        let k = kdfa(HashAlg::Sha256, b"key", "STORAGE", b"name", &[], 512);
        assert_eq!(k.len(), 64);
        // The first block of a longer output is the shorter output (same bits field differs,
        // so they must NOT be equal: the bit count is part of every block's input).
        let short = kdfa(HashAlg::Sha256, b"key", "X", &[], &[], 256);
        let long = kdfa(HashAlg::Sha256, b"key", "X", &[], &[], 512);
        assert_ne!(short[..], long[..32]);
    }

    #[test]
    fn kdfe_matches_single_block_hash() {
        let out = kdfe(HashAlg::Sha256, b"z", "IDENTITY", b"u", b"v", 256);
        let expected = HashAlg::Sha256.digest(&[&1u32.to_be_bytes()[..], b"z", b"IDENTITY\0", b"u", b"v"]);
        assert_eq!(out, expected);
    }
}
