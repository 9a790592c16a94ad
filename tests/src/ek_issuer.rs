//! A small EK CA made with rcgen, for EKs that swtpm_setup does not certify (P-256) and
//! for certificates with deliberate faults.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384, SubjectPublicKeyInfo,
};
use tempfile::TempDir;
use zest::evidence::PublicArea;

/// A self-signed CA that issues EK certificates for TPM public areas.
pub struct EkIssuer {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl EkIssuer {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("zest-ekissuer-").tempdir()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.path().join("ca.pem"), cert.pem())?;
        Ok(Self {
            dir,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM file).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// An EK certificate (DER) for the key in a TPM2B_PUBLIC, valid over `years` from
    /// `not_before_year`.
    pub fn issue(
        &self,
        ek_tpm2b: &[u8],
        not_before_year: i32,
        not_after_year: i32,
    ) -> anyhow::Result<Vec<u8>> {
        let ek = PublicArea::from_tpm2b(ek_tpm2b)?;
        let spki = zest::tpm::subject_public_key_info(&ek)?;
        let spki = SubjectPublicKeyInfo::from_der(&spki)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test EK");
        params.not_before = rcgen::date_time_ymd(not_before_year, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        Ok(params.signed_by(&spki, &self.issuer)?.der().to_vec())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
