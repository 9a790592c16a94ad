//! TLS material: generated on first start into `DIR/cv_ca/` with Keylime's file names, so
//! Keylime's tenant and agents can use it as they use a verifier's `tls_dir = generate`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Why TLS material could not be made or loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{0}")]
    Config(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error(
        "{dir} holds part of the TLS material but not {missing}; refusing to overwrite. \
         Restore the file or move the directory away to generate new material"
    )]
    Incomplete { dir: PathBuf, missing: &'static str },
}

/// What an issued certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// A service's certificate: serverAuth only, so it never passes as a client.
    Server,
    /// A client certificate with its role bound in (a subjectAltName URI).
    Client(crate::api::Role),
    /// A signing key's certificate, for neither side of TLS (Keylime's RevocationNotifier).
    Signing,
}

/// Whether an HTTPS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Certificates are verified when offered; routes decide what they need (registrar).
    Optional,
    /// The handshake fails without a certificate from a trusted CA (verifier).
    Required,
}

/// The files of a Keylime-style `cv_ca` directory.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub dir: PathBuf,
}

impl TlsMaterial {
    pub const CA_CERT: &str = "cacert.crt";
    pub const CA_KEY: &str = "ca-private.pem";
    pub const SERVER_CERT: &str = "server-cert.crt";
    pub const SERVER_KEY: &str = "server-private.pem";
    pub const CLIENT_CERT: &str = "client-cert.crt";
    pub const CLIENT_KEY: &str = "client-private.pem";
    const ALL: [&str; 6] = [
        Self::CA_CERT,
        Self::CA_KEY,
        Self::SERVER_CERT,
        Self::SERVER_KEY,
        Self::CLIENT_CERT,
        Self::CLIENT_KEY,
    ];

    /// Uses the material in `dir`, generating all of it if the directory holds none.
    /// `server_names` become the server certificate's subjectAltNames (IP or DNS).
    pub fn ensure(dir: &Path, server_names: &[String]) -> Result<Self, TlsError> {
        let material = Self {
            dir: dir.to_path_buf(),
        };
        let present: Vec<bool> = Self::ALL.iter().map(|f| dir.join(f).exists()).collect();
        if present.iter().all(|p| *p) {
            return Ok(material);
        }
        if let Some(i) = present.iter().position(|p| !p)
            && present.iter().any(|p| *p)
        {
            return Err(TlsError::Incomplete {
                dir: dir.to_path_buf(),
                missing: Self::ALL.get(i).copied().unwrap_or(Self::CA_CERT),
            });
        }
        material.generate(server_names)?;
        tracing::info!(dir = %dir.display(), "generated CA, server and client certificates");
        Ok(material)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn generate(&self, server_names: &[String]) -> Result<(), TlsError> {
        crate::config::create_private_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(&self.dir, e))?;

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("Keylime Certificate Authority");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca, 10);
        let ca_cert = ca.self_signed(&ca_key)?;
        self.write(Self::CA_KEY, &ca_key.serialize_pem(), true)?;
        self.write(Self::CA_CERT, &ca_cert.pem(), false)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for n in server_names {
            let unspecified = n.parse::<IpAddr>().map(|ip| ip.is_unspecified()).unwrap_or(false);
            if !unspecified && !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut server = CertificateParams::default();
        server.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        server.distinguished_name = name(server_names.first().map(String::as_str).unwrap_or("localhost"));
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Only a server: the verifier presents the client certificate to agents.
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Python ≥ 3.13 (Keylime's tenant on current distributions) verifies strictly: a
        // certificate issued by a CA must name it by its key identifier.
        server.use_authority_key_identifier_extension = true;
        set_validity(&mut server, 5);
        let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let server_cert = server.signed_by(&server_key, &issuer)?;
        self.write(Self::SERVER_KEY, &server_key.serialize_pem(), true)?;
        self.write(Self::SERVER_CERT, &server_cert.pem(), false)?;

        let mut client = CertificateParams::default();
        client.distinguished_name = name("client");
        client.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.subject_alt_names = vec![role_uri(&crate::api::Role::Operator)?];
        client.use_authority_key_identifier_extension = true;
        set_validity(&mut client, 5);
        let client_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let client_cert = client.signed_by(&client_key, &issuer)?;
        self.write(Self::CLIENT_KEY, &client_key.serialize_pem(), true)?;
        self.write(Self::CLIENT_CERT, &client_cert.pem(), false)?;
        Ok(())
    }

    /// Issues a certificate from this directory's CA: `<stem>-cert.crt` and
    /// `<stem>-private.pem` (0600) in `out`. `names` become subjectAltNames (IP or DNS; the
    /// first is the CN). Server certificates carry serverAuth only; client certificates
    /// clientAuth and their role.
    pub fn issue(
        &self,
        out: &Path,
        stem: &str,
        names: &[String],
        usage: Usage,
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        self.issue_for(
            out,
            stem,
            names,
            usage,
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        )
    }

    /// [`Self::issue`] for a key of the caller's choice (an RSA key for signatures Keylime's
    /// agents verify).
    pub fn issue_for(
        &self,
        out: &Path,
        stem: &str,
        names: &[String],
        usage: Usage,
        key: KeyPair,
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        let ca_pem =
            fs::read_to_string(self.path(Self::CA_CERT)).map_err(|e| io(&self.path(Self::CA_CERT), e))?;
        let key_pem =
            fs::read_to_string(self.path(Self::CA_KEY)).map_err(|e| io(&self.path(Self::CA_KEY), e))?;
        let ca_key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(names.first().map(String::as_str).unwrap_or(stem));
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match &usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client(role) => {
                params.subject_alt_names.push(role_uri(role)?);
                vec![ExtendedKeyUsagePurpose::ClientAuth]
            }
            Usage::Signing => {
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                Vec::new()
            }
        };
        // Python ≥ 3.13 (Keylime's tenant on current distributions) verifies strictly: a
        // certificate issued by a CA must name it by its key identifier.
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 5);
        let cert = params.signed_by(&key, &issuer)?;
        crate::config::create_private_dir(out).map_err(|e| io(out, e))?;
        let target = Self {
            dir: out.to_path_buf(),
        };
        let (cert_file, key_file) = (format!("{stem}-cert.crt"), format!("{stem}-private.pem"));
        target.write(&key_file, &key.serialize_pem(), true)?;
        target.write(&cert_file, &cert.pem(), false)?;
        Ok((out.join(cert_file), out.join(key_file)))
    }

    /// An empty revocation list signed by this directory's CA (Keylime's `cacrl.der`), valid
    /// for a year: (DER, PEM).
    pub fn empty_crl(&self) -> Result<(Vec<u8>, String), TlsError> {
        let ca_pem =
            fs::read_to_string(self.path(Self::CA_CERT)).map_err(|e| io(&self.path(Self::CA_CERT), e))?;
        let key_pem =
            fs::read_to_string(self.path(Self::CA_KEY)).map_err(|e| io(&self.path(Self::CA_KEY), e))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&key_pem)?)?;
        let mut validity = CertificateParams::default();
        set_validity(&mut validity, 1);
        let params = rcgen::CertificateRevocationListParams {
            this_update: validity.not_before,
            next_update: validity.not_after,
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        Ok((crl.der().to_vec(), crl.pem()?))
    }

    /// Whether the directory holds a complete set (CA, server and client).
    pub fn complete(dir: &Path) -> bool {
        Self::ALL.iter().all(|f| dir.join(f).exists())
    }

    fn write(&self, file: &str, contents: &str, secret: bool) -> Result<(), TlsError> {
        let path = self.path(file);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.write_all(contents.as_bytes()).map_err(|e| io(&path, e))
    }

    /// A rustls server configuration with our server certificate, trusting client
    /// certificates issued by our CA.
    pub fn server_config(&self, client_auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in load_certs(&self.path(Self::CA_CERT))? {
            roots.add(cert)?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let verifier = match client_auth {
            ClientAuth::Optional => builder.allow_unauthenticated().build()?,
            ClientAuth::Required => builder.build()?,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                load_certs(&self.path(Self::SERVER_CERT))?,
                load_key(&self.path(Self::SERVER_KEY))?,
            )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from the start of this year for `years` years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 12, 31);
    params.not_after = rcgen::date_time_ymd(year + years, 12, 31);
}

fn io(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            detail: "no certificate".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The subjectAltName that binds `role` into a client certificate.
fn role_uri(role: &crate::api::Role) -> Result<SanType, rcgen::Error> {
    Ok(SanType::URI(
        format!("{}{}", crate::api::ROLE_URI_PREFIX, role.name()).try_into()?,
    ))
}
