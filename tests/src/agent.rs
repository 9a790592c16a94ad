//! A test agent on a swtpm, driven through tss-esapi: it reads its EK and EK certificate,
//! creates an AK, builds the registration body Keylime's Rust agent sends, runs
//! TPM2_ActivateCredential on the registrar's blob and derives the auth tag.

use std::str::FromStr;

use anyhow::{Context as _, bail};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tss_esapi::Context;
use tss_esapi::abstraction::nv;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{
    AuthHandle, KeyHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, SessionHandle,
    TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm, RsaSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, DigestValues, EccPoint, EccScheme, EncryptedSecret, HashScheme, IdObject,
    KeyDerivationFunctionScheme, PcrSelectionListBuilder, PcrSlot, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;

use crate::swtpm::Swtpm;

/// Which endorsement key the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkKind {
    /// The RSA-2048 EK swtpm_setup persisted, with its certificate from NV 0x01c00002.
    Rsa2048,
    /// The NIST P-384 EK swtpm_setup persisted, with its certificate from NV 0x01c00016.
    EccP384,
    /// A NIST P-256 EK from the standard template; no certificate in the TPM.
    EccP256,
}

/// Which attestation key the agent creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkKind {
    RsaSsa,
    EcDsaP256,
}

/// A Keylime-style agent backed by a swtpm.
pub struct TestAgent {
    pub uuid: String,
    ctx: Context,
    ek: KeyHandle,
    /// The EK needs a PolicySecret(endorsement) session (not userWithAuth).
    ek_needs_policy: bool,
    /// TPM2B_PUBLIC of the EK.
    pub ek_tpm: Vec<u8>,
    /// The EK certificate (DER) from the TPM's NV, if it has one.
    pub ek_cert_der: Option<Vec<u8>>,
    ak: KeyHandle,
    /// The AK as created (private blob, public), so that it can be loaded again after a
    /// TPM reset.
    ak_blob: Option<(tss_esapi::structures::Private, Public)>,
    ek_kind: EkKind,
    /// TPM2B_PUBLIC of the AK.
    pub aik_tpm: Vec<u8>,
}

impl TestAgent {
    /// Connects to the TPM, loads or creates the EK and creates an AK under it.
    pub fn new(tpm: &Swtpm, uuid: &str, ek_kind: EkKind, ak_kind: AkKind) -> anyhow::Result<Self> {
        let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti())?).context("connecting to swtpm")?;
        let ek = load_ek(&mut ctx, ek_kind)?;
        let ek_cert_der = match ek_kind {
            EkKind::Rsa2048 => Some(nv_read(&mut ctx, 0x01c0_0002)?),
            EkKind::EccP384 => Some(nv_read(&mut ctx, 0x01c0_0016)?),
            EkKind::EccP256 => None,
        };
        let (ek_public, _, _) = ctx.read_public(ek)?;
        let ek_needs_policy = !ek_public.object_attributes().user_with_auth();
        let ek_tpm = tpm2b_public(&ek_public)?;
        let mut agent = Self {
            uuid: uuid.to_owned(),
            ctx,
            ek,
            ek_needs_policy,
            ek_tpm,
            ek_cert_der,
            ak: KeyHandle::Null,
            ak_blob: None,
            ek_kind,
            aik_tpm: Vec::new(),
        };
        agent.create_ak(ak_kind)?;
        Ok(agent)
    }

    /// Creates and loads a fresh AK under the EK, replacing the current one.
    pub fn create_ak(&mut self, kind: AkKind) -> anyhow::Result<()> {
        if self.ak != KeyHandle::Null {
            self.ctx.flush_context(self.ak.into())?;
            self.ak = KeyHandle::Null;
        }
        let template = ak_template(kind)?;
        let ek = self.ek;
        let session = self.ek_session()?;
        let created = self
            .ctx
            .execute_with_session(Some(session), |c| c.create(ek, template, None, None, None, None));
        self.end_session(session);
        let created = created.context("TPM2_Create of the AK")?;
        let session = self.ek_session()?;
        let loaded = self.ctx.execute_with_session(Some(session), |c| {
            c.load(ek, created.out_private.clone(), created.out_public.clone())
        });
        self.end_session(session);
        self.ak = loaded.context("TPM2_Load of the AK")?;
        self.aik_tpm = tpm2b_public(&created.out_public)?;
        self.ak_blob = Some((created.out_private, created.out_public));
        Ok(())
    }

    /// Reboots the machine: the TPM is shut down and power-cycled through swtpm's control channel
    /// (resetCount advances, PCRs start over), started again, and the EK and the same AK
    /// are loaded again.
    pub fn reboot(&mut self, tpm: &Swtpm) -> anyhow::Result<()> {
        // An orderly shutdown, as the OS does: the TPM's clock stays `safe`.
        self.ctx
            .shutdown(tss_esapi::constants::StartupType::Clear)
            .context("TPM2_Shutdown")?;
        let out = std::process::Command::new("swtpm_ioctl")
            .args(["--tcp", &format!("127.0.0.1:{}", tpm.port + 1), "-i"])
            .output()
            .context("running swtpm_ioctl (is swtpm-tools installed?)")?;
        if !out.status.success() {
            bail!("swtpm_ioctl -i failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // swtpm may have started the TPM itself (startup-clear); a second Startup is refused
        // with TPM_RC_INITIALIZE, which is fine.
        let _ = self.ctx.startup(tss_esapi::constants::StartupType::Clear);
        // A persistent EK survives; the P-256 one is a transient primary made again.
        if self.ek_kind == EkKind::EccP256 {
            self.ek = load_ek(&mut self.ctx, self.ek_kind)?;
        }
        let (private, public) = self.ak_blob.clone().context("no AK was created")?;
        let ek = self.ek;
        let session = self.ek_session()?;
        let loaded = self
            .ctx
            .execute_with_session(Some(session), |c| c.load(ek, private, public));
        self.end_session(session);
        self.ak = loaded.context("TPM2_Load of the AK after the reboot")?;
        Ok(())
    }

    /// The EK certificate as PEM text, as the Rust agent sends it.
    pub fn ek_cert_pem(&self) -> Option<String> {
        self.ek_cert_der.as_deref().map(pem)
    }

    /// The body Keylime's Rust agent POSTs to `/v{v}/agents/{uuid}`.
    pub fn registration_body(&self) -> Value {
        let mut body = json!({
            "aik_tpm": B64.encode(&self.aik_tpm),
            "ek_tpm": B64.encode(&self.ek_tpm),
            "iak_cert": null,
            "idevid_cert": null,
            "ip": "127.0.0.1",
            "port": 9002,
            "mtls_cert": "disabled",
        });
        if let Some(cert) = self.ek_cert_pem() {
            body["ekcert"] = Value::String(cert);
        }
        body
    }

    /// TPM2_ActivateCredential on a tpm2-tools credential blob (base64): the recovered
    /// credential.
    pub fn activate_credential(&mut self, blob_b64: &str) -> anyhow::Result<Vec<u8>> {
        let blob = B64.decode(blob_b64).context("blob is not base64")?;
        if blob.len() < 12 || blob[..4] != [0xBA, 0xDC, 0xC0, 0xDE] || blob[4..8] != [0, 0, 0, 1] {
            bail!("blob does not start with the tpm2-tools magic and version 1");
        }
        let (id_object, rest) = split_tpm2b(&blob[8..])?;
        let (secret, rest) = split_tpm2b(rest)?;
        if !rest.is_empty() {
            bail!("{} trailing bytes after the encrypted secret", rest.len());
        }
        let credential = IdObject::try_from(id_object.to_vec())?;
        let secret = EncryptedSecret::try_from(secret.to_vec())?;
        let (ak, ek) = (self.ak, self.ek);
        let session = self.ek_session()?;
        let out = self
            .ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                c.activate_credential(ak, ek, credential, secret)
            });
        self.end_session(session);
        Ok(out.context("TPM2_ActivateCredential")?.to_vec())
    }

    /// The activation body for a recovered credential.
    pub fn activation_body(&self, credential: &[u8]) -> Value {
        json!({ "auth_tag": auth_tag(credential, &self.uuid) })
    }

    /// TPM2_Quote over `selection` (bank, PCRs) with `nonce` as qualifying data, returned as
    /// the marshalled TPMS_ATTEST, TPMT_SIGNATURE and the tpm2-tools PCR blob Keylime agents
    /// send.
    pub fn quote(
        &mut self,
        nonce: &[u8],
        selection: &[(HashingAlgorithm, &[u8])],
    ) -> anyhow::Result<QuoteParts> {
        let mut builder = PcrSelectionListBuilder::new();
        for (bank, pcrs) in selection {
            let slots = pcrs
                .iter()
                .map(|p| PcrSlot::try_from(1u32 << p))
                .collect::<Result<Vec<_>, _>>()?;
            builder = builder.with_selection(*bank, &slots);
        }
        let list = builder.build()?;
        let ak = self.ak;
        let data = Data::try_from(nonce.to_vec())?;
        let (attest, signature) = self
            .ctx
            .execute_with_nullauth_session(|c| c.quote(ak, data, SignatureScheme::Null, list))?;

        // tpm2-tools PCR blob: little-endian TPML_PCR_SELECTION (16 slots of 8 bytes), then
        // TPML_DIGEST blocks of up to 8 digests (each a u16 size and a 64-byte buffer).
        let mut blob = (selection.len() as u32).to_le_bytes().to_vec();
        let mut values = Vec::new();
        for slot in 0..16 {
            let mut entry = [0u8; 8];
            if let Some((bank, pcrs)) = selection.get(slot) {
                entry[..2].copy_from_slice(
                    &u16::from(tss_esapi::constants::AlgorithmIdentifier::from(*bank)).to_le_bytes(),
                );
                entry[2] = 3;
                for p in pcrs.iter() {
                    entry[3 + (*p as usize / 8)] |= 1 << (p % 8);
                }
                let mut sorted = pcrs.to_vec();
                sorted.sort_unstable();
                for p in sorted {
                    values.push(self.pcr_value(*bank, p)?);
                }
            }
            blob.extend_from_slice(&entry);
        }
        let blocks: Vec<&[Vec<u8>]> = values.chunks(8).collect();
        blob.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
        for block in blocks {
            blob.extend_from_slice(&(block.len() as u32).to_le_bytes());
            for i in 0..8 {
                let mut digest = [0u8; 66];
                if let Some(v) = block.get(i) {
                    digest[..2].copy_from_slice(&(v.len() as u16).to_le_bytes());
                    digest[2..2 + v.len()].copy_from_slice(v);
                }
                blob.extend_from_slice(&digest);
            }
        }
        Ok(QuoteParts {
            attest: attest.marshall()?,
            signature: signature.marshall()?,
            pcr_blob: blob,
        })
    }

    /// TPM2_Certify of the AK by the AK itself over `challenge` (the push agent's proof of
    /// possession): the marshalled TPMS_ATTEST and TPMT_SIGNATURE.
    pub fn certify_ak(&mut self, challenge: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let ak = self.ak;
        let data = Data::try_from(challenge.to_vec())?;
        let (attest, signature) = self.ctx.execute_with_sessions(
            (Some(AuthSession::Password), Some(AuthSession::Password), None),
            |c| c.certify(ak.into(), ak, data, SignatureScheme::Null),
        )?;
        Ok((attest.marshall()?, signature.marshall()?))
    }

    /// The current value of one PCR.
    pub fn pcr_value(&mut self, bank: HashingAlgorithm, pcr: u8) -> anyhow::Result<Vec<u8>> {
        let list = PcrSelectionListBuilder::new()
            .with_selection(bank, &[PcrSlot::try_from(1u32 << pcr)?])
            .build()?;
        let (_, _, digests) = self.ctx.pcr_read(list)?;
        Ok(digests.value().first().context("PCR not read")?.to_vec())
    }

    /// TPM2_PCR_Extend of one PCR with a digest per bank.
    pub fn pcr_extend(&mut self, pcr: u8, digests: &[(HashingAlgorithm, Vec<u8>)]) -> anyhow::Result<()> {
        let mut values = DigestValues::new();
        for (bank, digest) in digests {
            values.set(*bank, Digest::try_from(digest.clone())?);
        }
        // ESYS_TR_PCR0..31 are the PCR indices themselves.
        let handle = PcrHandle::try_from(u32::from(pcr))?;
        self.ctx
            .execute_with_nullauth_session(|c| c.pcr_extend(handle, values))?;
        Ok(())
    }

    /// The AK's public area as TPM2B_PUBLIC (what the registrar stores as `aik_tpm`).
    pub fn ak_public(&self) -> &[u8] {
        &self.aik_tpm
    }

    /// An authorisation for the EK: a PolicySecret(endorsement) session for the standard
    /// templates, the empty password for keys with userWithAuth (swtpm's P-384 EK).
    fn ek_session(&mut self) -> anyhow::Result<AuthSession> {
        if !self.ek_needs_policy {
            return Ok(AuthSession::Password);
        }
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )?
            .context("no policy session")?;
        let policy = PolicySession::try_from(session)?;
        self.ctx.execute_with_nullauth_session(|c| {
            c.policy_secret(
                policy,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })?;
        Ok(session)
    }

    fn end_session(&mut self, session: AuthSession) {
        if session != AuthSession::Password {
            let handle: SessionHandle = session.into();
            let _ = self.ctx.flush_context(ObjectHandle::from(handle));
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        // swtpm has no resource manager: leave no transient objects behind.
        if self.ak != KeyHandle::Null {
            let _ = self.ctx.flush_context(self.ak.into());
        }
    }
}

/// The EK of `kind`: persisted by swtpm_setup, or made from the standard template.
fn load_ek(ctx: &mut Context, kind: EkKind) -> anyhow::Result<KeyHandle> {
    Ok(match kind {
        EkKind::Rsa2048 => persistent(ctx, 0x8101_0001)?,
        EkKind::EccP384 => persistent(ctx, 0x8101_0016)?,
        EkKind::EccP256 => tss_esapi::abstraction::ek::create_ek_object(
            ctx,
            tss_esapi::interface_types::algorithm::AsymmetricAlgorithm::Ecc,
            None,
        )?,
    })
}

/// A quote as its three marshalled parts.
#[derive(Debug, Clone)]
pub struct QuoteParts {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
    pub pcr_blob: Vec<u8>,
}

impl QuoteParts {
    /// Keylime's pull-mode quote string.
    pub fn keylime_string(&self) -> String {
        format!(
            "r{}:{}:{}",
            B64.encode(&self.attest),
            B64.encode(&self.signature),
            B64.encode(&self.pcr_blob)
        )
    }
}

/// hex(HMAC-SHA-384(key = base64 text of the credential, message = agent id)), computed
/// here independently of zest's own code.
pub fn auth_tag(credential: &[u8], uuid: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA384, B64.encode(credential).as_bytes());
    hex::encode(hmac::sign(&key, uuid.as_bytes()).as_ref())
}

/// PEM text of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn persistent(ctx: &mut Context, handle: u32) -> anyhow::Result<KeyHandle> {
    let obj = ctx.tr_from_tpm_public(TpmHandle::Persistent(PersistentTpmHandle::new(handle)?))?;
    Ok(obj.into())
}

fn nv_read(ctx: &mut Context, index: u32) -> anyhow::Result<Vec<u8>> {
    let handle = NvIndexTpmHandle::new(index)?;
    ctx.execute_with_nullauth_session(|c| nv::read_full(c, NvAuth::Owner, handle))
        .with_context(|| format!("reading NV index 0x{index:08x}"))
}

fn tpm2b_public(public: &Public) -> anyhow::Result<Vec<u8>> {
    let tpmt = public.marshall()?;
    let mut out = (tpmt.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&tpmt);
    Ok(out)
}

fn split_tpm2b(bytes: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    if bytes.len() < 2 {
        bail!("truncated TPM2B");
    }
    let n = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    if bytes.len() < 2 + n {
        bail!("truncated TPM2B");
    }
    Ok((&bytes[2..2 + n], &bytes[2 + n..]))
}

fn ak_template(kind: AkKind) -> anyhow::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    Ok(match kind {
        AkKind::RsaSsa => builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new()
                    .with_scheme(RsaScheme::create(
                        RsaSchemeAlgorithm::RsaSsa,
                        Some(HashingAlgorithm::Sha256),
                    )?)
                    .with_key_bits(RsaKeyBits::Rsa2048)
                    .with_exponent(RsaExponent::default())
                    .with_is_signing_key(true)
                    .with_is_decryption_key(false)
                    .with_restricted(true)
                    .with_symmetric(SymmetricDefinitionObject::Null)
                    .build()?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()?,
        AkKind::EcDsaP256 => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new()
                    .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
                    .with_curve(EccCurve::NistP256)
                    .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                    .with_is_signing_key(true)
                    .with_is_decryption_key(false)
                    .with_restricted(true)
                    .with_symmetric(SymmetricDefinitionObject::Null)
                    .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()?,
    })
}
