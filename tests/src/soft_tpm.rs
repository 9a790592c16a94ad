//! A TPM in software for the fleet simulator: keys held by aws-lc, but every structure it
//! hands out is what a TPM 2.0 marshals (TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE, the
//! tpm2-tools PCR blob), so a verifier cannot tell it from a real one by its bytes. Thousands
//! fit in one process where swtpm needs a process each.
//!
//! The EK is a NIST P-256 key from the TCG default template (L-2), so TPM2_ActivateCredential
//! is ECDH, KDFe, KDFa, an HMAC check and AES-128-CFB (TPM 2.0 Part 1 §24). The AK is a
//! restricted signing key: ECDSA P-256 or RSASSA-2048, both with SHA-256. One SHA-256 PCR
//! bank.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use aws_lc_rs::cipher::{AES_128, DecryptingKey, DecryptionContext, UnboundCipherKey};
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::agent::QuoteParts;

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_ECC_NIST_P256: u16 = 0x0003;
const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
const AK_ATTRIBUTES: u32 = 0x0005_0072;
/// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00B2;
/// PolicySecret(TPM_RH_ENDORSEMENT): the authPolicy of the TCG default EK templates.
const EK_AUTH_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD,
    0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// The attestation key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftAk {
    EcdsaP256,
    RsaSsa2048,
}

enum AkKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

pub struct SoftTpm {
    ek: agreement::PrivateKey,
    /// The EK's x coordinate (KDFe's party V).
    ek_x: Vec<u8>,
    /// TPM2B_PUBLIC of the EK.
    pub ek_tpm: Vec<u8>,
    ak: AkKey,
    pub ak_kind: SoftAk,
    /// TPM2B_PUBLIC of the AK.
    pub aik_tpm: Vec<u8>,
    ak_name: Vec<u8>,
    ak_qualified_name: Vec<u8>,
    /// The SHA-256 bank.
    pcrs: [[u8; 32]; 24],
    started: Instant,
    /// Milliseconds the clock had when this instance started.
    clock_base: u64,
    pub reset_count: u32,
    rng: SystemRandom,
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    u16be(out, u16::try_from(data.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(data);
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = digest::Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish().as_ref().to_vec()
}

/// A TPM name: nameAlg ‖ H(TPMT_PUBLIC).
fn name_of(tpmt_public: &[u8]) -> Vec<u8> {
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&sha256(&[tpmt_public]));
    name
}

/// Splits a TPM2B off the front of `data`.
fn take_tpm2b(data: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    let size = data.get(..2).context("truncated TPM2B size")?;
    let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
    let body = data.get(2..2 + size).context("truncated TPM2B")?;
    Ok((body, &data[2 + size..]))
}

/// KDFa with HMAC-SHA-256 (SP 800-108 counter mode), TPM 2.0 Part 1 §11.4.10.2.
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let want = bits.div_ceil(8) as usize;
    let mut out = Vec::new();
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

/// KDFe with SHA-256 for 256 bits (one block), TPM 2.0 Part 1 §11.4.10.3.
fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8]) -> Vec<u8> {
    let mut label_z = label.as_bytes().to_vec();
    label_z.push(0);
    sha256(&[&1u32.to_be_bytes(), z, &label_z, party_u, party_v])
}

impl SoftTpm {
    /// A TPM with a new EK and a new AK of `ak`; its clock starts at `clock_base` ms.
    pub fn new(ak: SoftAk, clock_base: u64) -> anyhow::Result<Self> {
        let ek = agreement::PrivateKey::generate(&agreement::ECDH_P256).map_err(|_| anyhow::anyhow!("EK"))?;
        let point = ek.compute_public_key().map_err(|_| anyhow::anyhow!("EK point"))?;
        let (ek_x, ek_y) = point.as_ref()[1..].split_at(32);
        let mut ek_public = Vec::new();
        u16be(&mut ek_public, TPM_ALG_ECC);
        u16be(&mut ek_public, TPM_ALG_SHA256);
        u32be(&mut ek_public, EK_ATTRIBUTES);
        tpm2b(&mut ek_public, &EK_AUTH_POLICY);
        // TPMS_ECC_PARMS: AES-128-CFB, no scheme, P-256, no KDF.
        for v in [
            TPM_ALG_AES,
            128,
            TPM_ALG_CFB,
            TPM_ALG_NULL,
            TPM_ECC_NIST_P256,
            TPM_ALG_NULL,
        ] {
            u16be(&mut ek_public, v);
        }
        tpm2b(&mut ek_public, ek_x);
        tpm2b(&mut ek_public, ek_y);
        let ek_name = name_of(&ek_public);
        let mut ek_tpm = Vec::new();
        tpm2b(&mut ek_tpm, &ek_public);

        let rng = SystemRandom::new();
        let (key, ak_public) = match ak {
            SoftAk::EcdsaP256 => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| anyhow::anyhow!("AK"))?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                    .map_err(|_| anyhow::anyhow!("AK"))?;
                let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
                let mut public = Vec::new();
                u16be(&mut public, TPM_ALG_ECC);
                u16be(&mut public, TPM_ALG_SHA256);
                u32be(&mut public, AK_ATTRIBUTES);
                tpm2b(&mut public, &[]);
                // TPMS_ECC_PARMS: no symmetric, ECDSA-SHA256, P-256, no KDF.
                for v in [
                    TPM_ALG_NULL,
                    TPM_ALG_ECDSA,
                    TPM_ALG_SHA256,
                    TPM_ECC_NIST_P256,
                    TPM_ALG_NULL,
                ] {
                    u16be(&mut public, v);
                }
                tpm2b(&mut public, x);
                tpm2b(&mut public, y);
                (AkKey::Ecdsa(pair), public)
            }
            SoftAk::RsaSsa2048 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow::anyhow!("AK"))?;
                let modulus = pair
                    .public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec();
                let mut public = Vec::new();
                u16be(&mut public, TPM_ALG_RSA);
                u16be(&mut public, TPM_ALG_SHA256);
                u32be(&mut public, AK_ATTRIBUTES);
                tpm2b(&mut public, &[]);
                // TPMS_RSA_PARMS: no symmetric, RSASSA-SHA256, 2048 bits, the default exponent.
                for v in [TPM_ALG_NULL, TPM_ALG_RSASSA, TPM_ALG_SHA256, 2048] {
                    u16be(&mut public, v);
                }
                u32be(&mut public, 0);
                tpm2b(&mut public, &modulus);
                (AkKey::Rsa(pair), public)
            }
        };
        let ak_name = name_of(&ak_public);
        // Qualified names: the hierarchy's is its handle; a child's is H(parent's QN ‖ name).
        let ek_qualified_name = {
            let mut qn = TPM_ALG_SHA256.to_be_bytes().to_vec();
            qn.extend_from_slice(&sha256(&[&TPM_RH_ENDORSEMENT.to_be_bytes(), &ek_name]));
            qn
        };
        let mut ak_qualified_name = TPM_ALG_SHA256.to_be_bytes().to_vec();
        ak_qualified_name.extend_from_slice(&sha256(&[&ek_qualified_name, &ak_name]));
        let mut aik_tpm = Vec::new();
        tpm2b(&mut aik_tpm, &ak_public);
        Ok(Self {
            ek,
            ek_x: ek_x.to_vec(),
            ek_tpm,
            ak: key,
            ak_kind: ak,
            aik_tpm,
            ak_name,
            ak_qualified_name,
            pcrs: [[0u8; 32]; 24],
            started: Instant::now(),
            clock_base,
            reset_count: 0,
            rng,
        })
    }

    /// TPM2_ActivateCredential on a tpm2-tools credential blob (base64): the credential,
    /// once the blob proves it was made for this EK and this AK.
    pub fn activate_credential(&self, blob_b64: &str) -> anyhow::Result<Vec<u8>> {
        let blob = B64.decode(blob_b64).context("blob is not base64")?;
        ensure!(
            blob.get(..8) == Some(&[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1][..]),
            "blob does not start with the tpm2-tools magic and version 1"
        );
        let (id_object, rest) = take_tpm2b(&blob[8..])?;
        let (secret, rest) = take_tpm2b(rest)?;
        ensure!(
            rest.is_empty(),
            "{} trailing bytes after the encrypted secret",
            rest.len()
        );
        let (qe_x, after_x) = take_tpm2b(secret)?;
        let (qe_y, _) = take_tpm2b(after_x)?;
        let mut point = vec![4u8];
        point.extend_from_slice(qe_x);
        point.extend_from_slice(qe_y);
        let seed = agreement::agree(
            &self.ek,
            UnparsedPublicKey::new(&agreement::ECDH_P256, &point),
            anyhow::anyhow!("the ephemeral point is not on P-256"),
            |z| Ok(kdfe(z, "IDENTITY", qe_x, &self.ek_x)),
        )?;
        let (integrity, enc_identity) = take_tpm2b(id_object)?;
        let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &hmac_key),
            &[enc_identity, &self.ak_name].concat(),
            integrity,
        )
        .map_err(|_| {
            anyhow::anyhow!("the credential's integrity HMAC does not match (not for this EK and AK)")
        })?;
        let sym_key = kdfa(&seed, "STORAGE", &self.ak_name, &[], 128);
        let key = UnboundCipherKey::new(&AES_128, &sym_key).map_err(|_| anyhow::anyhow!("AES key"))?;
        let key = DecryptingKey::cfb128(key).map_err(|_| anyhow::anyhow!("AES key"))?;
        let mut plain = enc_identity.to_vec();
        let plain = key
            .decrypt(&mut plain, DecryptionContext::Iv128([0u8; 16].into()))
            .map_err(|_| anyhow::anyhow!("AES-CFB"))?;
        let (credential, _) = take_tpm2b(plain)?;
        Ok(credential.to_vec())
    }

    /// TPM2_PCR_Extend of the SHA-256 bank.
    pub fn pcr_extend(&mut self, pcr: usize, digest: &[u8]) -> anyhow::Result<()> {
        let slot = self.pcrs.get_mut(pcr).context("no such PCR")?;
        let next = sha256(&[slot.as_slice(), digest]);
        slot.copy_from_slice(&next);
        Ok(())
    }

    pub fn pcr_value(&self, pcr: usize) -> Option<[u8; 32]> {
        self.pcrs.get(pcr).copied()
    }

    /// TPMS_CLOCK_INFO: the clock in ms, resetCount, restartCount and safe.
    fn clock_info(&self, out: &mut Vec<u8>) {
        let clock = self.clock_base + self.started.elapsed().as_millis() as u64;
        out.extend_from_slice(&clock.to_be_bytes());
        u32be(out, self.reset_count);
        u32be(out, 0);
        out.push(1);
    }

    /// The TPMS_ATTEST header every attestation shares, up to `attested`.
    fn attest_header(&self, kind: u16, extra_data: &[u8]) -> Vec<u8> {
        let mut attest = Vec::with_capacity(256);
        u32be(&mut attest, TPM_GENERATED_VALUE);
        u16be(&mut attest, kind);
        tpm2b(&mut attest, &self.ak_qualified_name);
        tpm2b(&mut attest, extra_data);
        self.clock_info(&mut attest);
        // firmwareVersion
        attest.extend_from_slice(&0x2023_0101_0000_0000u64.to_be_bytes());
        attest
    }

    /// TPMT_SIGNATURE by the AK over SHA-256(`attest`).
    fn sign(&self, attest: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(300);
        match &self.ak {
            AkKey::Ecdsa(pair) => {
                let signature = pair
                    .sign(&self.rng, attest)
                    .map_err(|_| anyhow::anyhow!("ECDSA"))?;
                let (r, s) = signature.as_ref().split_at(32);
                u16be(&mut out, TPM_ALG_ECDSA);
                u16be(&mut out, TPM_ALG_SHA256);
                tpm2b(&mut out, r);
                tpm2b(&mut out, s);
            }
            AkKey::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, attest, &mut signature)
                    .map_err(|_| anyhow::anyhow!("RSASSA"))?;
                u16be(&mut out, TPM_ALG_RSASSA);
                u16be(&mut out, TPM_ALG_SHA256);
                tpm2b(&mut out, &signature);
            }
        }
        Ok(out)
    }

    /// TPM2_Quote of SHA-256 `pcrs` with `nonce`: TPMS_ATTEST, TPMT_SIGNATURE and the
    /// tpm2-tools PCR blob (what Keylime's agent sends).
    pub fn quote(&self, nonce: &[u8], pcrs: &[u8]) -> anyhow::Result<QuoteParts> {
        let mut sorted: Vec<u8> = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut select = [0u8; 3];
        for p in &sorted {
            ensure!(*p < 24, "PCR {p} does not exist");
            select[usize::from(*p / 8)] |= 1 << (p % 8);
        }
        let values: Vec<[u8; 32]> = sorted.iter().map(|p| self.pcrs[usize::from(*p)]).collect();
        let mut attest = self.attest_header(TPM_ST_ATTEST_QUOTE, nonce);
        // TPMS_QUOTE_INFO: one TPMS_PCR_SELECTION, then the digest of the selected values.
        u32be(&mut attest, 1);
        u16be(&mut attest, TPM_ALG_SHA256);
        attest.push(3);
        attest.extend_from_slice(&select);
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        tpm2b(&mut attest, &sha256(&refs));
        let signature = self.sign(&attest)?;

        // tpm2-tools PCR blob: little-endian TPML_PCR_SELECTION (16 slots of 8 bytes), then
        // TPML_DIGEST blocks of up to 8 digests (each a u16 size and a 64-byte buffer).
        let mut blob = 1u32.to_le_bytes().to_vec();
        for slot in 0..16 {
            let mut entry = [0u8; 8];
            if slot == 0 {
                entry[..2].copy_from_slice(&TPM_ALG_SHA256.to_le_bytes());
                entry[2] = 3;
                entry[3..6].copy_from_slice(&select);
            }
            blob.extend_from_slice(&entry);
        }
        let blocks: Vec<&[[u8; 32]]> = values.chunks(8).collect();
        blob.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
        for block in blocks {
            blob.extend_from_slice(&(block.len() as u32).to_le_bytes());
            for i in 0..8 {
                let mut digest = [0u8; 66];
                if let Some(v) = block.get(i) {
                    digest[..2].copy_from_slice(&32u16.to_le_bytes());
                    digest[2..34].copy_from_slice(v);
                }
                blob.extend_from_slice(&digest);
            }
        }
        Ok(QuoteParts {
            attest,
            signature,
            pcr_blob: blob,
        })
    }

    /// TPM2_Certify of the AK by itself over `challenge` (the push agent's proof of
    /// possession): TPMS_ATTEST and TPMT_SIGNATURE.
    pub fn certify_ak(&self, challenge: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let mut attest = self.attest_header(TPM_ST_ATTEST_CERTIFY, challenge);
        tpm2b(&mut attest, &self.ak_name);
        tpm2b(&mut attest, &self.ak_qualified_name);
        let signature = self.sign(&attest)?;
        Ok((attest, signature))
    }

    /// The AK's name (nameAlg ‖ SHA-256 of its public area).
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }
}

/// A simulated agent: its id and its software TPM.
pub struct SoftAgent {
    pub uuid: String,
    pub tpm: SoftTpm,
}

impl SoftAgent {
    /// The body Keylime's Rust agent POSTs to the registrar (no EK certificate: the
    /// registrar runs without the EK check for simulated fleets).
    pub fn registration_body(&self, ip: &str, port: u16, mtls_cert: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "aik_tpm": B64.encode(&self.tpm.aik_tpm),
            "ek_tpm": B64.encode(&self.tpm.ek_tpm),
            "iak_cert": null,
            "idevid_cert": null,
            "ip": ip,
            "port": port,
            "mtls_cert": mtls_cert.unwrap_or("disabled"),
        })
    }

    /// Registers at the registrar `base` (`http://host:port`) with API `version`, activates
    /// the credential in software and sends the auth tag, as Keylime's agent does.
    pub async fn register(
        &self,
        client: &reqwest::Client,
        base: &str,
        version: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let url = format!("{base}/v{version}/agents/{}", self.uuid);
        let (status, reply) = crate::server::send_json(client.post(&url).json(body)).await?;
        ensure!(
            status == 200,
            "registration of {} answered {status}: {reply}",
            self.uuid
        );
        let blob = reply["results"]["blob"].as_str().context("no results.blob")?;
        let credential = self.tpm.activate_credential(blob)?;
        let activation = serde_json::json!({"auth_tag": crate::agent::auth_tag(&credential, &self.uuid)});
        let (status, reply) = crate::server::send_json(client.put(&url).json(&activation)).await?;
        ensure!(
            status == 200,
            "activation of {} answered {status}: {reply}",
            self.uuid
        );
        Ok(())
    }
}

impl crate::push_agent::PushTpm for SoftAgent {
    fn uuid(&self) -> &str {
        &self.uuid
    }

    fn aik_tpm(&self) -> &[u8] {
        &self.tpm.aik_tpm
    }

    fn hash_algorithms(&self) -> &'static [&'static str] {
        &["sha256"]
    }

    fn certify_ak(&mut self, challenge: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        self.tpm.certify_ak(challenge)
    }

    fn quote(&mut self, nonce: &[u8], bank: &str, pcrs: &[u8]) -> anyhow::Result<QuoteParts> {
        ensure!(
            bank == "sha256",
            "only the sha256 bank is simulated, {bank} was asked"
        );
        self.tpm.quote(nonce, pcrs)
    }

    fn extend_ima(&mut self, extension: crate::ima::Extension) -> anyhow::Result<()> {
        self.tpm.pcr_extend(10, &extension.sha256)
    }
}

#[cfg(test)]
mod tests {
    use zest::evidence::{HashAlg, PublicArea, Quote};
    use zest::tpm::{
        AttestationKey, QuoteExpectations, check_attestation_key, make_credential, object_name, verify_quote,
    };

    use super::*;

    #[test]
    fn zest_reads_its_structures_and_its_credentials_activate_only_here() {
        for kind in [SoftAk::EcdsaP256, SoftAk::RsaSsa2048] {
            let mut tpm = SoftTpm::new(kind, 1_000).unwrap();
            let ek = PublicArea::from_tpm2b(&tpm.ek_tpm).unwrap();
            let ak = PublicArea::from_tpm2b(&tpm.aik_tpm).unwrap();
            check_attestation_key(&ak).unwrap();
            assert_eq!(object_name(&ak), tpm.ak_name());
            let blob = make_credential(&ek, tpm.ak_name(), b"0123456789abcdef0123456789abcdef").unwrap();
            let credential = tpm.activate_credential(&B64.encode(&blob)).unwrap();
            assert_eq!(credential, b"0123456789abcdef0123456789abcdef");
            // A credential made for another AK does not activate.
            let other = SoftTpm::new(SoftAk::EcdsaP256, 0).unwrap();
            let foreign = make_credential(&ek, other.ak_name(), b"x").unwrap();
            assert!(tpm.activate_credential(&B64.encode(&foreign)).is_err());

            tpm.pcr_extend(10, &[7u8; 32]).unwrap();
            let parts = tpm.quote(b"nonce", &[10, 16]).unwrap();
            let quote = Quote::from_keylime_string(&parts.keylime_string()).unwrap();
            let scheme = if kind == SoftAk::EcdsaP256 {
                "ecdsa"
            } else {
                "rsassa"
            };
            let expected = QuoteExpectations {
                nonce: b"nonce",
                hashes: &[HashAlg::Sha256],
                schemes: &[scheme],
            };
            let verified = verify_quote(&quote, &AttestationKey::new(ak.clone()), &expected).unwrap();
            assert_eq!(
                verified.pcr(HashAlg::Sha256, 10),
                Some(&tpm.pcr_value(10).unwrap()[..])
            );
            // Signed by another AK: refused.
            let wrong = AttestationKey::new(PublicArea::from_tpm2b(&other.aik_tpm).unwrap());
            assert!(verify_quote(&quote, &wrong, &expected).is_err());
        }
    }
}
