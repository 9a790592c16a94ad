//! HTTPS clients for pull agents: the agent's enrolled certificate (`mtls_cert`) is trusted
//! when the agent presents exactly it, as Keylime pins it.
//!
//! Keylime's agent (rust-keylime) serves a self-signed certificate whose own signature does
//! not verify: it signs the certificate, then adds the subjectAltName. Keylime pins it with
//! OpenSSL, which never checks a trust anchor's signature, so Keylime reaches the agent.
//! WebPKI path building (reqwest's `tls_certs_only`) checks the presented certificate's
//! signature under the anchor's key and fails the handshake ("decrypt error"). So the pin
//! here is byte equality with the enrolled certificate, and the handshake signature proves
//! that the peer holds its private key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;

/// Why a client for an agent could not be built.
#[derive(Debug, Error)]
pub enum PinError {
    #[error("mtls_cert: {0}")]
    PinnedPem(pem::Error),
    #[error("mtls_cert: no certificate in the PEM")]
    NoPinnedCert,
    #[error("client identity: {0}")]
    IdentityPem(pem::Error),
    #[error("client identity: no certificate in the PEM")]
    NoIdentityCert,
    #[error("client identity: no private key in the PEM")]
    NoIdentityKey,
    #[error("client identity: {0}")]
    IdentityRejected(rustls::Error),
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
    #[error("building the HTTPS client: {0}")]
    Client(String),
}

/// The server presented a certificate other than the pinned one.
#[derive(Error)]
#[error("the server's certificate is not the pinned certificate")]
pub struct NotPinned;

// rustls shows a `CertificateError::Other` with `{:?}`, so Debug says what happened too.
impl fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Trusts one server certificate, compared byte for byte with the end-entity certificate
/// the server presents. Intermediates are ignored, and so is the server name: agents are
/// addressed by IP and Keylime does not check it either. Nor is the certificate's own
/// signature (OpenSSL does not check a trust anchor's), nor its validity dates: the pin is
/// the certificate the operator enrolled, whatever it says.
#[derive(Debug, Clone)]
pub struct PinnedCertVerifier {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    /// Pins `pinned`; handshake signatures are checked with `provider`'s algorithms.
    pub fn new(pinned: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        Self {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Pins the first certificate in `pem` (an agent's `mtls_cert`).
    pub fn from_pem(pem: &str, provider: &CryptoProvider) -> Result<Self, PinError> {
        let pinned = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or(PinError::NoPinnedCert)?
            .map_err(PinError::PinnedPem)?;
        Ok(Self::new(pinned, provider))
    }

    /// The pinned certificate (DER).
    pub fn pinned(&self) -> &CertificateDer<'static> {
        &self.pinned
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: &[u8] = end_entity;
        let pinned: &[u8] = &self.pinned;
        if presented == pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NotPinned)),
            )))
        }
    }

    // The pin alone is public; these prove the server holds the pinned certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client configuration that trusts only `pinned_cert_pem`'s first certificate and
/// presents `identity_pem`: a certificate chain in PEM followed by its private key in PEM.
pub fn client_config(pinned_cert_pem: &str, identity_pem: &[u8]) -> Result<rustls::ClientConfig, PinError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = PinnedCertVerifier::from_pem(pinned_cert_pem, &provider)?;
    let chain = CertificateDer::pem_slice_iter(identity_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PinError::IdentityPem)?;
    if chain.is_empty() {
        return Err(PinError::NoIdentityCert);
    }
    let key = PrivateKeyDer::from_pem_slice(identity_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => PinError::NoIdentityKey,
        other => PinError::IdentityPem(other),
    })?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PinError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(PinError::IdentityRejected)?;
    // What reqwest offers when it builds the configuration itself.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTPS client for one pull agent: trusts only the agent's enrolled certificate
/// (`pinned_cert_pem`, its `mtls_cert`), presents our client certificate (`identity_pem`:
/// chain PEM followed by key PEM), bypasses proxies and gives up after `timeout`.
pub fn agent_client(
    pinned_cert_pem: &str,
    identity_pem: &[u8],
    timeout: Duration,
) -> Result<reqwest::Client, PinError> {
    let tls = client_config(pinned_cert_pem, identity_pem)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| PinError::Client(error_chain(&e)))
}

/// An error and its sources, as reqwest's own message ("builder error") says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    fn self_signed(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert, key)
    }

    /// Our client certificate and key, concatenated as the verifier and tenant hold them.
    fn identity() -> String {
        let (cert, key) = self_signed("client");
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    fn check(
        verifier: &PinnedCertVerifier,
        presented: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        verifier.verify_server_cert(presented, intermediates, &name, &[], UnixTime::now())
    }

    fn assert_not_pinned(result: Result<ServerCertVerified, rustls::Error>) {
        match result {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(e))) => {
                assert!(e.0.is::<NotPinned>(), "{e}")
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a certificate other than the pinned one passed"),
        }
    }

    #[test]
    fn the_pinned_certificate_passes() {
        let (cert, _) = self_signed("localhost");
        let verifier = PinnedCertVerifier::from_pem(&cert.pem(), &provider()).unwrap();
        assert_eq!(verifier.pinned(), cert.der());
        assert!(check(&verifier, cert.der(), &[]).is_ok());
        // Intermediates play no part, whatever they are.
        let (other, _) = self_signed("localhost");
        assert!(check(&verifier, cert.der(), &[other.der().clone()]).is_ok());
    }

    #[test]
    fn another_certificate_is_refused() {
        let (pinned, _) = self_signed("localhost");
        let (other, _) = self_signed("localhost");
        let verifier = PinnedCertVerifier::from_pem(&pinned.pem(), &provider()).unwrap();
        assert_not_pinned(check(&verifier, other.der(), &[]));
        // The pinned certificate among the intermediates does not make another leaf pass.
        assert_not_pinned(check(&verifier, other.der(), &[pinned.der().clone()]));
        let message =
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NotPinned))))
                .to_string();
        assert!(message.contains("not the pinned certificate"), "{message}");
    }

    #[test]
    fn unusable_pem_is_reported() {
        assert!(matches!(
            PinnedCertVerifier::from_pem("no PEM here", &provider()),
            Err(PinError::NoPinnedCert)
        ));
        let (pinned, key) = self_signed("localhost");
        let only_cert = client_config(&pinned.pem(), pinned.pem().as_bytes());
        assert!(matches!(only_cert, Err(PinError::NoIdentityKey)));
        let only_key = client_config(&pinned.pem(), key.serialize_pem().as_bytes());
        assert!(matches!(only_key, Err(PinError::NoIdentityCert)));
        // A key that is not the certificate's.
        let (_, other_key) = self_signed("client");
        let mismatched = format!("{}{}", pinned.pem(), other_key.serialize_pem());
        assert!(matches!(
            client_config(&pinned.pem(), mismatched.as_bytes()),
            Err(PinError::IdentityRejected(_))
        ));
        assert!(agent_client(&pinned.pem(), identity().as_bytes(), Duration::from_secs(5)).is_ok());
    }

    fn server(
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> rustls::ServerConnection {
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        rustls::ServerConnection::new(Arc::new(config)).unwrap()
    }

    fn client(pinned_pem: &str) -> rustls::ClientConnection {
        let config = client_config(pinned_pem, identity().as_bytes()).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        rustls::ClientConnection::new(Arc::new(config), name).unwrap()
    }

    /// Runs a handshake in memory; the first error either side raises.
    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        let io = |e: std::io::Error| rustls::Error::General(e.to_string());
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
            let mut flight = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut flight).map_err(io)?;
            }
            let mut rest = flight.as_slice();
            while !rest.is_empty() {
                server.read_tls(&mut rest).map_err(io)?;
                server.process_new_packets()?;
            }
            let mut flight = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut flight).map_err(io)?;
            }
            let mut rest = flight.as_slice();
            while !rest.is_empty() {
                client.read_tls(&mut rest).map_err(io)?;
                client.process_new_packets()?;
            }
        }
        Err(rustls::Error::General("the handshake did not finish".into()))
    }

    #[test]
    fn handshakes_with_the_pinned_server_over_tls12_and_tls13() {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (cert, key) = self_signed("localhost");
            let mut server = server(&cert, &key, version);
            let mut client = client(&cert.pem());
            handshake(&mut client, &mut server).unwrap();
            assert_eq!(client.protocol_version(), Some(version.version));
        }
    }

    #[test]
    fn refuses_a_server_with_another_certificate() {
        let (pinned, _) = self_signed("localhost");
        let (other, other_key) = self_signed("localhost");
        let mut server = server(&other, &other_key, &rustls::version::TLS13);
        let mut client = client(&pinned.pem());
        match handshake(&mut client, &mut server) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(e))) => {
                assert!(e.0.is::<NotPinned>(), "{e}")
            }
            other => panic!("expected the pin to refuse the server: {other:?}"),
        }
    }
}
