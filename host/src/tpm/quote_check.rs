//! Verifying a parsed quote against the registered AK and the verifier's nonce. Each check
//! fails with its own error so that logs and failure events say exactly what was wrong.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use thiserror::Error;

use super::keys::{der, uncompressed_point};
use crate::evidence::attest::{TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE};
use crate::evidence::signature::{TPM_ALG_ECDSA, TPM_ALG_RSAPSS, TPM_ALG_RSASSA};
use crate::evidence::{Attested, ClockInfo, EccCurve, HashAlg, KeyParams, PublicArea, Quote, Signature};

/// What the verifier expects of a quote.
#[derive(Debug, Clone)]
pub struct QuoteExpectations<'a> {
    /// The nonce as it must appear in extraData (ASCII text in pull mode, raw in push mode).
    pub nonce: &'a [u8],
    /// Hash algorithms the signature may use (Keylime's `accept_tpm_hash_algs`).
    pub hashes: &'a [HashAlg],
    /// Signing schemes allowed (`rsassa`, `rsapss`, `ecdsa`; Keylime's `accept_tpm_signing_algs`).
    pub schemes: &'a [&'a str],
}

/// Why a quote failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QuoteError {
    #[error("attestation magic 0x{0:08x} is not TPM_GENERATED_VALUE: not produced by a TPM")]
    NotGenerated(u32),
    #[error("attestation type 0x{0:04x} is not a quote (TPM_ST_ATTEST_QUOTE)")]
    NotAQuote(u16),
    #[error("signature hash {0} is not among the accepted hash algorithms")]
    HashNotAccepted(&'static str),
    #[error("signing scheme {0} is not among the accepted signing algorithms")]
    SchemeNotAccepted(&'static str),
    #[error("a {scheme} signature cannot come from this {key} attestation key")]
    SchemeDoesNotMatchKey { scheme: &'static str, key: &'static str },
    #[error("the quote signature does not verify with the registered attestation key")]
    BadSignature,
    #[error("unsupported attestation key: {0}")]
    UnsupportedKey(String),
    #[error("the quote's nonce does not match the one the verifier issued")]
    NonceMismatch,
    #[error("PCR {pcr} of bank {bank} is quoted but missing from the PCR values")]
    PcrValueMissing { bank: &'static str, pcr: u8 },
    #[error("the PCR values do not hash to the quoted PCR digest")]
    PcrDigestMismatch,
}

/// A quote that passed every check: the authenticated facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// The hash the quote was signed with (the PCR digest's algorithm).
    pub hash: HashAlg,
    /// The quoted PCR values, authenticated by the signature, in selection order.
    pub pcrs: Vec<(HashAlg, u8, Vec<u8>)>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
}

impl VerifiedQuote {
    /// The authenticated value of a PCR.
    pub fn pcr(&self, bank: HashAlg, index: u8) -> Option<&[u8]> {
        self.pcrs
            .iter()
            .find(|(b, i, _)| *b == bank && *i == index)
            .map(|(_, _, v)| v.as_slice())
    }
}

/// Verifies `quote` as signed by `ak` (the registered AK, never one the agent offers now).
pub fn verify_quote(
    quote: &Quote,
    ak: &AttestationKey,
    expected: &QuoteExpectations<'_>,
) -> Result<VerifiedQuote, QuoteError> {
    if quote.attest.magic != TPM_GENERATED_VALUE {
        return Err(QuoteError::NotGenerated(quote.attest.magic));
    }
    if quote.attest.attest_type != TPM_ST_ATTEST_QUOTE {
        return Err(QuoteError::NotAQuote(quote.attest.attest_type));
    }
    let hash = quote.signature.hash();
    if !expected.hashes.contains(&hash) {
        return Err(QuoteError::HashNotAccepted(hash.name()));
    }
    let scheme = quote.signature.scheme_name();
    if !expected.schemes.contains(&scheme) {
        return Err(QuoteError::SchemeNotAccepted(scheme));
    }
    verify_with(ak, &quote.signature, &quote.attest_bytes)?;
    if quote.attest.extra_data != expected.nonce {
        return Err(QuoteError::NonceMismatch);
    }
    let Attested::Quote {
        selection,
        pcr_digest,
    } = &quote.attest.attested
    else {
        return Err(QuoteError::NotAQuote(quote.attest.attest_type));
    };
    let mut pcrs = Vec::new();
    let mut ctx = hash.hasher();
    for bank in selection {
        for &pcr in &bank.pcrs {
            let value = quote
                .pcrs
                .get(bank.hash, pcr)
                .ok_or(QuoteError::PcrValueMissing {
                    bank: bank.hash.name(),
                    pcr,
                })?;
            ctx.update(value);
            pcrs.push((bank.hash, pcr, value.to_vec()));
        }
    }
    if ctx.finish() != *pcr_digest {
        return Err(QuoteError::PcrDigestMismatch);
    }
    Ok(VerifiedQuote {
        hash,
        pcrs,
        clock_info: quote.attest.clock_info,
        firmware_version: quote.attest.firmware_version,
    })
}

/// A registered AK prepared for verifying many quotes: the public key is parsed into
/// aws-lc form once, for the signing scheme the AK declares.
pub struct AttestationKey {
    pub public: PublicArea,
    prepared: Option<Prepared>,
}

struct Prepared {
    scheme: &'static str,
    hash: HashAlg,
    key: signature::ParsedPublicKey,
}

impl AttestationKey {
    /// Prepares `public`; a key whose declared scheme we cannot prepare is still usable
    /// (it is parsed per signature instead).
    pub fn new(public: PublicArea) -> Self {
        let prepared = match &public.params {
            KeyParams::Rsa {
                modulus,
                exponent,
                scheme,
                scheme_hash: Some(hash),
                ..
            } => {
                let (name, pss) = match *scheme {
                    TPM_ALG_RSASSA => ("rsassa", false),
                    TPM_ALG_RSAPSS => ("rsapss", true),
                    _ => ("", false),
                };
                rsa_params(pss, *hash)
                    .filter(|_| !name.is_empty())
                    .and_then(|params| {
                        let e = exponent.to_be_bytes();
                        let (n, e) = (minimal(modulus), minimal(&e));
                        let key = RsaPublicKeyComponents { n, e }
                            .to_parsed_public_key(params)
                            .ok()?;
                        Some(Prepared {
                            scheme: name,
                            hash: *hash,
                            key,
                        })
                    })
            }
            KeyParams::Ecc {
                curve,
                x,
                y,
                scheme: TPM_ALG_ECDSA,
                scheme_hash: Some(hash),
                ..
            } => ecdsa_algorithm(*curve, *hash).and_then(|(alg, len)| {
                let key = signature::ParsedPublicKey::new(alg, uncompressed_point(x, y, len)).ok()?;
                Some(Prepared {
                    scheme: "ecdsa",
                    hash: *hash,
                    key,
                })
            }),
            _ => None,
        };
        Self { public, prepared }
    }
}

/// Verifies a TPMT_SIGNATURE over `message` with a TPM public key.
pub fn verify_signature(key: &PublicArea, sig: &Signature, message: &[u8]) -> Result<(), QuoteError> {
    verify_with(
        &AttestationKey {
            public: key.clone(),
            prepared: None,
        },
        sig,
        message,
    )
}

fn verify_with(key: &AttestationKey, sig: &Signature, message: &[u8]) -> Result<(), QuoteError> {
    let bad = |_| QuoteError::BadSignature;
    if let Some(p) = &key.prepared
        && p.scheme == sig.scheme_name()
        && p.hash == sig.hash()
    {
        return match sig {
            Signature::RsaSsa { sig, .. } | Signature::RsaPss { sig, .. } => {
                p.key.verify_sig(message, sig).map_err(bad)
            }
            Signature::EcDsa { r, s, .. } => p.key.verify_sig(message, &ecdsa_der(r, s)).map_err(bad),
        };
    }
    match (&key.public.params, sig) {
        (
            KeyParams::Rsa {
                modulus, exponent, ..
            },
            Signature::RsaSsa { hash, sig },
        ) => {
            let params = rsa_params(false, *hash).ok_or(QuoteError::HashNotAccepted(hash.name()))?;
            verify_rsa(modulus, *exponent, params, message, sig)
        }
        (
            KeyParams::Rsa {
                modulus, exponent, ..
            },
            Signature::RsaPss { hash, sig },
        ) => {
            let params = rsa_params(true, *hash).ok_or(QuoteError::HashNotAccepted("sha1 with RSA-PSS"))?;
            verify_rsa(modulus, *exponent, params, message, sig)
        }
        (KeyParams::Ecc { curve, x, y, .. }, Signature::EcDsa { hash, r, s }) => {
            let (alg, len) = ecdsa_algorithm(*curve, *hash).ok_or_else(|| {
                QuoteError::UnsupportedKey(format!("ECDSA on {curve:?} with {}", hash.name()))
            })?;
            UnparsedPublicKey::new(alg, &uncompressed_point(x, y, len))
                .verify(message, &ecdsa_der(r, s))
                .map_err(bad)
        }
        (KeyParams::Rsa { .. }, sig) => Err(QuoteError::SchemeDoesNotMatchKey {
            scheme: sig.scheme_name(),
            key: "RSA",
        }),
        (KeyParams::Ecc { .. }, sig) => Err(QuoteError::SchemeDoesNotMatchKey {
            scheme: sig.scheme_name(),
            key: "ECC",
        }),
        (KeyParams::Other { .. }, _) => Err(QuoteError::UnsupportedKey("not an asymmetric key".into())),
    }
}

/// aws-lc-rs parameters for RSASSA or RSA-PSS with a hash. The TPM uses a PSS salt as long
/// as the digest, which is what the PSS parameters expect; there is no PSS with SHA-1.
fn rsa_params(pss: bool, hash: HashAlg) -> Option<&'static signature::RsaParameters> {
    Some(match (pss, hash) {
        (false, HashAlg::Sha1) => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        (false, HashAlg::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (false, HashAlg::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (false, HashAlg::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (true, HashAlg::Sha1) => return None,
        (true, HashAlg::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
        (true, HashAlg::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
        (true, HashAlg::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
    })
}

/// The ECDSA algorithm (DER signatures) for a curve and hash, with the coordinate size.
fn ecdsa_algorithm(
    curve: EccCurve,
    hash: HashAlg,
) -> Option<(&'static signature::EcdsaVerificationAlgorithm, usize)> {
    Some(match (curve, hash) {
        (EccCurve::NistP256, HashAlg::Sha1) => (&signature::ECDSA_P256_SHA1_ASN1, 32),
        (EccCurve::NistP256, HashAlg::Sha256) => (&signature::ECDSA_P256_SHA256_ASN1, 32),
        (EccCurve::NistP256, HashAlg::Sha384) => (&signature::ECDSA_P256_SHA384_ASN1, 32),
        (EccCurve::NistP256, HashAlg::Sha512) => (&signature::ECDSA_P256_SHA512_ASN1, 32),
        (EccCurve::NistP384, HashAlg::Sha256) => (&signature::ECDSA_P384_SHA256_ASN1, 48),
        (EccCurve::NistP384, HashAlg::Sha384) => (&signature::ECDSA_P384_SHA384_ASN1, 48),
        (EccCurve::NistP384, HashAlg::Sha512) => (&signature::ECDSA_P384_SHA512_ASN1, 48),
        (EccCurve::NistP521, HashAlg::Sha1) => (&signature::ECDSA_P521_SHA1_ASN1, 66),
        (EccCurve::NistP521, HashAlg::Sha256) => (&signature::ECDSA_P521_SHA256_ASN1, 66),
        (EccCurve::NistP521, HashAlg::Sha384) => (&signature::ECDSA_P521_SHA384_ASN1, 66),
        (EccCurve::NistP521, HashAlg::Sha512) => (&signature::ECDSA_P521_SHA512_ASN1, 66),
        _ => return None,
    })
}

fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    der::sequence(&[der::unsigned_integer(r), der::unsigned_integer(s)])
}

/// Big-endian integer without leading zeros, as aws-lc-rs wants RSA components.
fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes.get(start..).unwrap_or(bytes)
}

fn verify_rsa(
    modulus: &[u8],
    exponent: u32,
    params: &'static signature::RsaParameters,
    message: &[u8],
    sig: &[u8],
) -> Result<(), QuoteError> {
    let e = exponent.to_be_bytes();
    RsaPublicKeyComponents {
        n: minimal(modulus),
        e: minimal(&e),
    }
    .verify(params, message, sig)
    .map_err(|_| QuoteError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture;

    fn fixture_quote() -> (Quote, AttestationKey) {
        let files = "keylime/test-data/files/";
        let quote = Quote::from_parts(
            &test_fixture(&format!("{files}quote.out")),
            &test_fixture(&format!("{files}quotesig.out")),
            &test_fixture(&format!("{files}quotepcr.out")),
        )
        .unwrap();
        let ak = PublicArea::from_tpm2b(&test_fixture(&format!("{files}ak.pub"))).unwrap();
        (quote, AttestationKey::new(ak))
    }

    const ALL_HASHES: &[HashAlg] = &[HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
    const ALL_SCHEMES: &[&str] = &["rsassa", "rsapss", "ecdsa"];

    #[test]
    fn tpm2_tools_fixture_quote_verifies_and_fails_on_other_nonce() {
        let (quote, ak) = fixture_quote();
        let nonce = quote.attest.extra_data.clone();
        let ok = verify_quote(
            &quote,
            &ak,
            &QuoteExpectations {
                nonce: &nonce,
                hashes: ALL_HASHES,
                schemes: ALL_SCHEMES,
            },
        )
        .unwrap();
        assert_eq!(ok.hash, HashAlg::Sha256);
        assert!(!ok.pcrs.is_empty());
        let err = verify_quote(
            &quote,
            &ak,
            &QuoteExpectations {
                nonce: b"other",
                hashes: ALL_HASHES,
                schemes: ALL_SCHEMES,
            },
        );
        assert_eq!(err, Err(QuoteError::NonceMismatch));
        let err = verify_quote(
            &quote,
            &ak,
            &QuoteExpectations {
                nonce: &nonce,
                hashes: &[HashAlg::Sha384],
                schemes: ALL_SCHEMES,
            },
        );
        assert_eq!(err, Err(QuoteError::HashNotAccepted("sha256")));
        let err = verify_quote(
            &quote,
            &ak,
            &QuoteExpectations {
                nonce: &nonce,
                hashes: ALL_HASHES,
                schemes: &["ecdsa"],
            },
        );
        assert_eq!(err, Err(QuoteError::SchemeNotAccepted("rsassa")));
    }

    #[test]
    fn keylime_quote_string_round_trip() {
        use base64::Engine;
        let b64 = |f: &str| {
            base64::engine::general_purpose::STANDARD
                .encode(test_fixture(&format!("keylime/test-data/files/{f}")))
        };
        let text = format!(
            "r{}:{}:{}",
            b64("quote.out"),
            b64("quotesig.out"),
            b64("quotepcr.out")
        );
        let (quote, _) = fixture_quote();
        assert_eq!(Quote::from_keylime_string(&text).unwrap(), quote);
        let parts: Vec<&str> = text[1..].split(':').collect();
        assert_eq!(
            Quote::from_push_fields(parts[0], parts[1], parts[2]).unwrap(),
            quote
        );
        assert!(Quote::from_push_fields("!!", parts[1], parts[2]).is_err());
        assert!(Quote::from_keylime_string(&text[1..]).is_err(), "missing 'r'");
        assert!(Quote::from_keylime_string(&format!("{text}:extra")).is_err());
        assert!(Quote::from_keylime_string("r::").is_err());
    }
}
