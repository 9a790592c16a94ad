//! An existing Keylime PKI: the files Keylime's TLS options name (`tls_dir`, `server_cert`,
//! `server_key`, `server_key_password`, `trusted_client_ca`, `client_cert`, `client_key`,
//! `client_key_password`, `trusted_server_ca`), resolved as Keylime's `web_util` resolves them.
//! With `tls_dir = generate` (or `default`) and every other option `default`, zest uses
//! the material it generates in `DATA_DIR/cv_ca` ([`TlsMaterial`]).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::der_parser::ber::BerObject;
use x509_parser::der_parser::der::parse_der;

use super::tls::{ClientAuth, TlsError, TlsMaterial, load_certs};
use crate::config::DataDir;

/// Keylime's TLS options of one service, as written (`default` and lists included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub tls_dir: String,
    pub server_cert: String,
    pub server_key: String,
    pub server_key_password: String,
    pub trusted_client_ca: String,
    pub client_cert: String,
    pub client_key: String,
    pub client_key_password: String,
    pub trusted_server_ca: String,
}

impl Default for TlsOptions {
    /// Keylime's shipped values for the verifier: everything generated.
    fn default() -> Self {
        Self {
            tls_dir: "generate".into(),
            server_cert: "default".into(),
            server_key: "default".into(),
            server_key_password: String::new(),
            trusted_client_ca: "default".into(),
            client_cert: "default".into(),
            client_key: "default".into(),
            client_key_password: String::new(),
            trusted_server_ca: "default".into(),
        }
    }
}

/// A certificate chain and its private key (decrypted when it was encrypted).
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub password: Option<String>,
}

impl KeyPairFiles {
    pub fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        load_certs(&self.cert)
    }

    pub fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        load_private_key(&self.key, self.password.as_deref())
    }

    /// Certificates then the key in PEM, for clients that take one identity file.
    pub fn identity_pem(&self) -> Result<Vec<u8>, TlsError> {
        let mut out = Vec::new();
        for cert in self.certs()? {
            out.extend(crate::dsse::pem_block("CERTIFICATE", cert.as_ref()).into_bytes());
        }
        let (label, der) = match self.key()? {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der().to_vec()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der().to_vec()),
            _ => {
                return Err(pem_error(&self.key, "unsupported private key format"));
            }
        };
        out.extend(crate::dsse::pem_block(label, &der).into_bytes());
        Ok(out)
    }
}

/// The files one service uses, resolved.
#[derive(Debug, Clone)]
pub struct ServiceTls {
    pub server: KeyPairFiles,
    /// CAs whose client certificates the server accepts.
    pub client_cas: Vec<PathBuf>,
    /// The verifier's identity towards agents and the webhook.
    pub client: KeyPairFiles,
    /// CAs trusted for servers the verifier calls (the webhook; agents are pinned).
    pub server_cas: Vec<PathBuf>,
    /// Whether this is zest's generated `cv_ca` (so `zest ca` manages it).
    pub generated: bool,
}

fn config_error(message: String) -> TlsError {
    TlsError::Config(message)
}

fn pem_error(path: &Path, detail: &str) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    }
}

impl ServiceTls {
    /// Resolves `options` of `service` as Keylime does: relative paths under `tls_dir`, itself
    /// relative to the data directory (Keylime's work directory); `default` CA means
    /// `DATA_DIR/cv_ca/cacert.crt`. zest refuses `all` (no peer verification) and an empty
    /// `trusted_client_ca`: its servers never run without client verification.
    pub fn resolve(
        service: &str,
        options: &TlsOptions,
        data_dir: &DataDir,
        server_names: &[String],
    ) -> Result<Self, TlsError> {
        let named = [
            ("server_cert", &options.server_cert),
            ("server_key", &options.server_key),
            ("trusted_client_ca", &options.trusted_client_ca),
            ("client_cert", &options.client_cert),
            ("client_key", &options.client_key),
            ("trusted_server_ca", &options.trusted_server_ca),
        ];
        let all_default = named.iter().all(|(_, v)| v.as_str() == "default");
        let tls_dir = options.tls_dir.trim();
        if matches!(tls_dir, "generate" | "") || (tls_dir == "default" && all_default) {
            if !all_default {
                let set: Vec<&str> = named
                    .iter()
                    .filter(|(_, v)| v.as_str() != "default")
                    .map(|(k, _)| *k)
                    .collect();
                return Err(config_error(format!(
                    "[{service}] tls_dir = generate needs the other TLS options set to 'default' (as Keylime); {} are set: point tls_dir at the directory of your files",
                    set.join(", ")
                )));
            }
            let dir = data_dir.tls_dir();
            // A cv_ca Keylime generated keeps its CA key in private.yml, not ca-private.pem:
            // its files are used as they are (keys possibly encrypted), nothing generated.
            let keylime_made = !dir.join(TlsMaterial::CA_KEY).exists()
                && [
                    TlsMaterial::CA_CERT,
                    TlsMaterial::SERVER_CERT,
                    TlsMaterial::SERVER_KEY,
                ]
                .iter()
                .all(|f| dir.join(f).exists());
            let material = if keylime_made {
                tracing::info!(dir = %dir.display(), "using the TLS material Keylime generated");
                TlsMaterial { dir }
            } else {
                TlsMaterial::ensure(&dir, server_names)?
            };
            let pair = |cert, key, password: &str| KeyPairFiles {
                cert: material.path(cert),
                key: material.path(key),
                password: (!password.is_empty()).then(|| password.to_owned()),
            };
            return Ok(Self {
                server: pair(
                    TlsMaterial::SERVER_CERT,
                    TlsMaterial::SERVER_KEY,
                    &options.server_key_password,
                ),
                client_cas: vec![material.path(TlsMaterial::CA_CERT)],
                client: pair(
                    TlsMaterial::CLIENT_CERT,
                    TlsMaterial::CLIENT_KEY,
                    &options.client_key_password,
                ),
                server_cas: vec![material.path(TlsMaterial::CA_CERT)],
                generated: true,
            });
        }
        let dir = if tls_dir == "default" {
            data_dir.tls_dir()
        } else {
            data_dir.path().join(tls_dir)
        };
        if !dir.is_dir() {
            return Err(config_error(format!(
                "[{service}] tls_dir {} is not a directory",
                dir.display()
            )));
        }
        let default_ca = data_dir.tls_dir().join(TlsMaterial::CA_CERT);
        let file = |value: &str, default: &str| -> PathBuf {
            if value == "default" {
                dir.join(default)
            } else {
                dir.join(value)
            }
        };
        let cas = |key: &str, value: &str, required: bool| -> Result<Vec<PathBuf>, TlsError> {
            match value.trim() {
                "default" => Ok(vec![default_ca.clone()]),
                "all" => Err(config_error(format!(
                    "[{service}] {key} = all turns off peer verification, which zest does not do; list the CA files"
                ))),
                "" | "[]" if required => Err(config_error(format!(
                    "[{service}] {key} is empty: zest's servers accept only clients of a listed CA"
                ))),
                list => {
                    let names: Vec<String> = crate::config::keylime::list_as_json(list)
                        .ok()
                        .and_then(|json| serde_json::from_str(&json).ok())
                        .ok_or_else(|| {
                            config_error(format!("[{service}] {key}: not a list of file names: {list}"))
                        })?;
                    Ok(names.iter().map(|n| dir.join(n)).collect())
                }
            }
        };
        let password = |p: &str| (!p.is_empty()).then(|| p.to_owned());
        let resolved = Self {
            server: KeyPairFiles {
                cert: file(&options.server_cert, TlsMaterial::SERVER_CERT),
                key: file(&options.server_key, TlsMaterial::SERVER_KEY),
                password: password(&options.server_key_password),
            },
            client_cas: cas("trusted_client_ca", &options.trusted_client_ca, true)?,
            client: KeyPairFiles {
                cert: file(&options.client_cert, TlsMaterial::CLIENT_CERT),
                key: file(&options.client_key, TlsMaterial::CLIENT_KEY),
                password: password(&options.client_key_password),
            },
            server_cas: cas("trusted_server_ca", &options.trusted_server_ca, false)?,
            generated: false,
        };
        tracing::info!(
            service,
            tls_dir = %dir.display(),
            server_cert = %resolved.server.cert.display(),
            "using the TLS files named by Keylime's options"
        );
        Ok(resolved)
    }

    /// A rustls server configuration: our server certificate, client certificates of the
    /// trusted client CAs.
    pub fn server_config(&self, client_auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in &self.client_cas {
            for cert in load_certs(ca)? {
                roots.add(cert)?;
            }
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let verifier = match client_auth {
            ClientAuth::Optional => builder.allow_unauthenticated().build()?,
            ClientAuth::Required => builder.build()?,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server.certs()?, self.server.key()?)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The trusted server CAs as one PEM bundle.
    pub fn server_ca_pem(&self) -> Result<Vec<u8>, TlsError> {
        let mut out = Vec::new();
        for ca in &self.server_cas {
            out.extend(std::fs::read(ca).map_err(|source| TlsError::Io {
                path: ca.clone(),
                source,
            })?);
            out.push(b'\n');
        }
        Ok(out)
    }
}

/// A private key from PEM: plain (PKCS#8, SEC1, PKCS#1), or PKCS#8 encrypted with PBES2
/// (PBKDF2 with HMAC-SHA1/256/384/512 and AES-CBC) as Keylime's `ca_util` and
/// `openssl genpkey -aes256` write it, opened with `password`.
pub fn load_private_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if text.windows(22).any(|w| w == b"Proc-Type: 4,ENCRYPTED") {
        return Err(pem_error(
            path,
            "an OpenSSL-encrypted key (Proc-Type, DEK-Info) is not supported; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes256 -in KEY -out KEY.p8`",
        ));
    }
    if let Ok(encrypted) = x509_parser::pem::parse_x509_pem(&text).map(|(_, pem)| pem)
        && encrypted.label == "ENCRYPTED PRIVATE KEY"
    {
        let password = password.ok_or_else(|| {
            pem_error(
                path,
                "the key is encrypted and no password is set (the *_key_password option)",
            )
        })?;
        let der =
            decrypt_pkcs8(&encrypted.contents, password.as_bytes()).map_err(|why| pem_error(path, why))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)));
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| pem_error(path, &e.to_string()))
}

const PBES2: &str = "1.2.840.113549.1.5.13";
const PBKDF2: &str = "1.2.840.113549.1.5.12";
/// OpenSSL writes 2,048; a few million is already seconds of start-up.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The PKCS#8 DER inside an EncryptedPrivateKeyInfo (RFC 8018 PBES2).
pub fn decrypt_pkcs8(der: &[u8], password: &[u8]) -> Result<Vec<u8>, &'static str> {
    use aws_lc_rs::cipher::{
        AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
    };
    let malformed = "not an encrypted PKCS#8 key (PBES2)";
    let (_, info) = parse_der(der).map_err(|_| malformed)?;
    let info = info.as_sequence().map_err(|_| malformed)?;
    let [algorithm, data] = info.as_slice() else {
        return Err(malformed);
    };
    let (scheme, params) = algorithm_identifier(algorithm).ok_or(malformed)?;
    if scheme != PBES2 {
        return Err(
            "the key is encrypted with a scheme other than PBES2 (PKCS#12 or PBES1); convert it with `openssl pkcs8 -topk8 -v2 aes256`",
        );
    }
    let params = params.ok_or(malformed)?.as_sequence().map_err(|_| malformed)?;
    let [kdf, cipher] = params.as_slice() else {
        return Err(malformed);
    };
    let (kdf_oid, kdf_params) = algorithm_identifier(kdf).ok_or(malformed)?;
    if kdf_oid != PBKDF2 {
        return Err(
            "the key's password is derived with something other than PBKDF2 (scrypt?), which zest does not read",
        );
    }
    let kdf_params = kdf_params
        .ok_or(malformed)?
        .as_sequence()
        .map_err(|_| malformed)?;
    let salt = kdf_params
        .first()
        .and_then(|o| o.as_slice().ok())
        .ok_or(malformed)?;
    let iterations = kdf_params
        .get(1)
        .and_then(|o| o.as_u32().ok())
        .and_then(NonZeroU32::new)
        .ok_or(malformed)?;
    if iterations.get() > MAX_PBKDF2_ITERATIONS {
        return Err("the key's PBKDF2 iteration count is implausibly large");
    }
    // keyLength (an INTEGER) may come before the PRF; the PRF defaults to HMAC-SHA1.
    let prf = kdf_params
        .iter()
        .skip(2)
        .find_map(|o| algorithm_identifier(o).map(|(oid, _)| oid))
        .unwrap_or_else(|| "1.2.840.113549.2.7".to_owned());
    let prf = match prf.as_str() {
        "1.2.840.113549.2.7" => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA1,
        "1.2.840.113549.2.9" => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        "1.2.840.113549.2.10" => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA384,
        "1.2.840.113549.2.11" => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA512,
        _ => return Err("the key's PBKDF2 uses a PRF zest does not know"),
    };
    let (cipher_oid, iv) = algorithm_identifier(cipher).ok_or(malformed)?;
    let iv: [u8; 16] = iv
        .and_then(|o| o.as_slice().ok())
        .and_then(|s| s.try_into().ok())
        .ok_or(malformed)?;
    let (algorithm, key_len) = match cipher_oid.as_str() {
        "2.16.840.1.101.3.4.1.2" => (&AES_128, 16),
        "2.16.840.1.101.3.4.1.22" => (&AES_192, 24),
        "2.16.840.1.101.3.4.1.42" => (&AES_256, 32),
        _ => return Err("the key is encrypted with a cipher other than AES-CBC"),
    };
    let mut key = vec![0u8; key_len];
    aws_lc_rs::pbkdf2::derive(prf, iterations, salt, password, &mut key);
    let mut in_out = data.as_slice().map_err(|_| malformed)?.to_vec();
    let decrypting = UnboundCipherKey::new(algorithm, &key)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(|_| malformed)?;
    let plain = decrypting
        .decrypt(&mut in_out, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| "the key's password is wrong")?;
    // A wrong password still unpads about once in 256 tries, and random bytes can open with
    // a valid DER header: the result must be a whole PrivateKeyInfo (a SEQUENCE that starts
    // with version 0 or 1 and leaves nothing over).
    let plain = plain.to_vec();
    let private_key_info = matches!(
        parse_der(&plain),
        Ok((rest, info)) if rest.is_empty()
            && info
                .as_sequence()
                .is_ok_and(|items| items.first().and_then(|v| v.as_u32().ok()).is_some_and(|v| v <= 1))
    );
    if !private_key_info {
        return Err("the key's password is wrong");
    }
    Ok(plain)
}

/// (OID, parameters) of an AlgorithmIdentifier.
fn algorithm_identifier<'a>(object: &'a BerObject<'a>) -> Option<(String, Option<&'a BerObject<'a>>)> {
    let items = object.as_sequence().ok()?;
    let oid = items.first()?.as_oid().ok()?.to_id_string();
    Some((oid, items.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_encrypted_keys_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\x30\x00",
            b"\x30\x03\x06\x01\x00",
            &[0x30, 0x82, 0xff, 0xff],
        ] {
            assert!(decrypt_pkcs8(bytes, b"pw").is_err());
        }
    }

    /// DER TLV with a short or two-byte length.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn oid(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
        let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
        for &arc in &arcs[2..] {
            let mut bytes = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                bytes.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            bytes.reverse();
            body.extend(bytes);
        }
        der(0x06, &body)
    }

    /// An EncryptedPrivateKeyInfo as `openssl pkcs8 -topk8 -v2 aes256` writes it (one
    /// PBKDF2 iteration, so that many passwords can be tried quickly).
    fn encrypted(plain: &[u8], password: &[u8]) -> Vec<u8> {
        use aws_lc_rs::cipher::{AES_256, EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey};
        let (salt, iv) = ([7u8; 8], [9u8; 16]);
        let mut key = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::MIN,
            &salt,
            password,
            &mut key,
        );
        let encrypting =
            PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &key).unwrap()).unwrap();
        let mut data = plain.to_vec();
        encrypting
            .less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into()))
            .unwrap();
        let prf = der(0x30, &[oid("1.2.840.113549.2.9"), der(0x05, &[])].concat());
        let kdf_params = der(0x30, &[der(0x04, &salt), der(0x02, &[1]), prf].concat());
        let kdf = der(0x30, &[oid(PBKDF2), kdf_params].concat());
        let cipher = der(0x30, &[oid("2.16.840.1.101.3.4.1.42"), der(0x04, &iv)].concat());
        let scheme = der(0x30, &[oid(PBES2), der(0x30, &[kdf, cipher].concat())].concat());
        der(0x30, &[scheme, der(0x04, &data)].concat())
    }

    /// A wrong password that still unpads and leaves bytes with a valid DER header (the
    /// old check's blind spot, found in a few hundred tries) is refused as a wrong
    /// password, not handed on as a key; the right one gives back the key.
    #[test]
    fn a_wrong_password_that_unpads_into_der_is_still_wrong() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        let blob = encrypted(pkcs8.as_ref(), b"right");
        assert_eq!(decrypt_pkcs8(&blob, b"right").unwrap(), pkcs8.as_ref());
        let mut lookalikes = 0;
        for n in 0..20_000 {
            let password = format!("wrong{n}");
            let looks_like_der = {
                // What the old check accepted: unpads, and the bytes open as DER.
                use aws_lc_rs::cipher::{
                    AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
                };
                let mut key = [0u8; 32];
                aws_lc_rs::pbkdf2::derive(
                    aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
                    NonZeroU32::MIN,
                    &[7u8; 8],
                    password.as_bytes(),
                    &mut key,
                );
                let decrypting =
                    PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &key).unwrap())
                        .unwrap();
                let (_, data) = parse_der(&blob).unwrap();
                let data = data.as_sequence().unwrap()[1].as_slice().unwrap().to_vec();
                let mut in_out = data;
                decrypting
                    .decrypt(&mut in_out, DecryptionContext::Iv128([9u8; 16].into()))
                    .is_ok_and(|plain| parse_der(plain).is_ok())
            };
            assert_eq!(
                decrypt_pkcs8(&blob, password.as_bytes()),
                Err("the key's password is wrong"),
                "{password}"
            );
            if looks_like_der {
                lookalikes += 1;
                if lookalikes == 3 {
                    return;
                }
            }
        }
        panic!("no wrong password unpadded into DER in 20,000 tries");
    }
}
