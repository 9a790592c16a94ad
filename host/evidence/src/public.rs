//! TPM2B_PUBLIC / TPMT_PUBLIC: the public area of a TPM object (EK, AK, IAK).

use super::cursor::{Cursor, ParseError};

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_KEYEDHASH: u16 = 0x0008;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_SYMCIPHER: u16 = 0x0025;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_ALG_RSAES: u16 = 0x0015;
const TPM_ALG_ECDAA: u16 = 0x001A;
const TPM_ALG_XOR: u16 = 0x000A;

/// Largest public area accepted; real ones are under 700 bytes (RSA-4096 is ~600).
pub const MAX_PUBLIC_SIZE: usize = 1024;

/// A hash algorithm as the TPM names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Maps a TPM_ALG_ID to a hash, if it is one we support.
    pub fn from_tpm(id: u16) -> Option<Self> {
        match id {
            0x0004 => Some(Self::Sha1),
            0x000B => Some(Self::Sha256),
            0x000C => Some(Self::Sha384),
            0x000D => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The TPM_ALG_ID of this hash.
    pub fn tpm_id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The aws-lc-rs digest algorithm.
    #[cfg(feature = "signatures")]
    pub fn algorithm(self) -> &'static aws_lc_rs::digest::Algorithm {
        use aws_lc_rs::digest;
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut h = self.hasher();
        for part in parts {
            h.update(part);
        }
        h.finish()
    }

    /// A streaming hasher. Evidence hashing is many short messages (IMA template data, PCR
    /// extends), where RustCrypto's SHA-NI code has far less per-call overhead than an EVP
    /// context; signatures stay with aws-lc-rs.
    pub fn hasher(self) -> Hasher {
        use sha2::Digest;
        match self {
            Self::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Self::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Self::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Parses Keylime's name (`sha1`, `sha256`, `sha384`, `sha512`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Keylime's name for the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

/// A hash computation in progress (see [`HashAlg::hasher`]).
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// Writes the digest into the front of `out` (at least 64 bytes) and returns its length.
    pub fn finish_into(self, out: &mut [u8; 64]) -> usize {
        use sha2::Digest;
        fn put(out: &mut [u8; 64], d: &[u8]) -> usize {
            // Every digest here is at most 64 bytes, so all of `d` is copied.
            for (o, b) in out.iter_mut().zip(d) {
                *o = *b;
            }
            d.len()
        }
        match self {
            Self::Sha1(h) => put(out, &h.finalize()),
            Self::Sha256(h) => put(out, &h.finalize()),
            Self::Sha384(h) => put(out, &h.finalize()),
            Self::Sha512(h) => put(out, &h.finalize()),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        let mut out = [0u8; 64];
        let n = self.finish_into(&mut out);
        // `n` is a digest length, at most 64.
        out.get(..n).unwrap_or_default().to_vec()
    }
}

/// Object attributes (TPMA_OBJECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;

    /// True when every bit of `mask` is set.
    pub fn has(self, mask: u32) -> bool {
        self.0 & mask == mask
    }
}

/// The symmetric algorithm of a storage key (TPMT_SYM_DEF_OBJECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymmetricDef {
    Null,
    /// AES in CFB mode, the only mode MakeCredential uses; key size in bits.
    AesCfb(u16),
    /// Any other algorithm/mode pair, kept so the caller can name it in an error.
    Other {
        algorithm: u16,
        key_bits: u16,
        mode: u16,
    },
}

/// NIST curves a TPM key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    NistP256,
    NistP384,
    NistP521,
    /// Another TPM_ECC_CURVE id (BN, SM2): parsed, not usable for crypto here.
    Other(u16),
}

impl EccCurve {
    fn from_tpm(id: u16) -> Self {
        match id {
            0x0003 => Self::NistP256,
            0x0004 => Self::NistP384,
            0x0005 => Self::NistP521,
            other => Self::Other(other),
        }
    }

    /// Coordinate size in bytes, for the curves we can use.
    pub fn coordinate_len(self) -> Option<usize> {
        match self {
            Self::NistP256 => Some(32),
            Self::NistP384 => Some(48),
            Self::NistP521 => Some(66),
            Self::Other(_) => None,
        }
    }
}

/// Type-specific parameters and the public key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParams {
    Rsa {
        symmetric: SymmetricDef,
        /// Signing or encryption scheme id (TPM_ALG_NULL when unrestricted).
        scheme: u16,
        scheme_hash: Option<HashAlg>,
        key_bits: u16,
        /// Public exponent; 0 in the structure means 65537 and is normalised here.
        exponent: u32,
        modulus: Vec<u8>,
    },
    Ecc {
        symmetric: SymmetricDef,
        scheme: u16,
        scheme_hash: Option<HashAlg>,
        curve: EccCurve,
        kdf: u16,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// KEYEDHASH and SYMCIPHER objects: parsed so the error can say what they are.
    Other { object_type: u16 },
}

/// A parsed TPMT_PUBLIC, with the exact bytes it came from (needed for its Name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicArea {
    pub name_alg: HashAlg,
    pub attributes: ObjectAttributes,
    pub auth_policy: Vec<u8>,
    pub params: KeyParams,
    /// The marshalled TPMT_PUBLIC (without the TPM2B size).
    pub tpmt_bytes: Vec<u8>,
}

impl PublicArea {
    /// Parses a TPM2B_PUBLIC (u16 size, then TPMT_PUBLIC); the size must cover the input
    /// exactly.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "TPM2B_PUBLIC";
        if bytes.len() > MAX_PUBLIC_SIZE + 2 {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} bytes is more than the {MAX_PUBLIC_SIZE} allowed", bytes.len()),
            });
        }
        let mut c = Cursor::new(bytes);
        let inner = c.tpm2b(WHAT)?;
        c.finish(WHAT)?;
        Self::from_tpmt(inner)
    }

    /// Parses a bare TPMT_PUBLIC that must span all of `bytes`.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "TPMT_PUBLIC";
        if bytes.len() > MAX_PUBLIC_SIZE {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} bytes is more than the {MAX_PUBLIC_SIZE} allowed", bytes.len()),
            });
        }
        let mut c = Cursor::new(bytes);
        let object_type = c.u16("TPMT_PUBLIC.type")?;
        let name_alg_id = c.u16("TPMT_PUBLIC.nameAlg")?;
        let name_alg = HashAlg::from_tpm(name_alg_id).ok_or(ParseError::Unsupported {
            what: "TPMT_PUBLIC.nameAlg",
            value: name_alg_id.into(),
        })?;
        let attributes = ObjectAttributes(c.u32("TPMT_PUBLIC.objectAttributes")?);
        let auth_policy = c.tpm2b("TPMT_PUBLIC.authPolicy")?.to_vec();
        let params = match object_type {
            TPM_ALG_RSA => {
                let symmetric = symmetric(&mut c)?;
                let (scheme, scheme_hash) = scheme(&mut c, "RSA scheme")?;
                let key_bits = c.u16("TPMS_RSA_PARMS.keyBits")?;
                let exponent = match c.u32("TPMS_RSA_PARMS.exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = c.tpm2b("TPM2B_PUBLIC_KEY_RSA")?.to_vec();
                if modulus.is_empty() || modulus.len() * 8 != usize::from(key_bits) {
                    return Err(ParseError::Invalid {
                        what: "TPM2B_PUBLIC_KEY_RSA",
                        detail: format!(
                            "modulus of {} bytes does not match keyBits {key_bits}",
                            modulus.len()
                        ),
                    });
                }
                KeyParams::Rsa {
                    symmetric,
                    scheme,
                    scheme_hash,
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            TPM_ALG_ECC => {
                let symmetric = symmetric(&mut c)?;
                let (scheme, scheme_hash) = scheme(&mut c, "ECC scheme")?;
                let curve = EccCurve::from_tpm(c.u16("TPMS_ECC_PARMS.curveID")?);
                let kdf = c.u16("TPMS_ECC_PARMS.kdf")?;
                if kdf != TPM_ALG_NULL {
                    c.u16("TPMS_ECC_PARMS.kdf.hashAlg")?;
                }
                let x = c.tpm2b("TPMS_ECC_POINT.x")?.to_vec();
                let y = c.tpm2b("TPMS_ECC_POINT.y")?.to_vec();
                if let Some(len) = curve.coordinate_len()
                    && (x.len() > len || y.len() > len)
                {
                    return Err(ParseError::Invalid {
                        what: "TPMS_ECC_POINT",
                        detail: format!("coordinate longer than the curve's {len} bytes"),
                    });
                }
                KeyParams::Ecc {
                    symmetric,
                    scheme,
                    scheme_hash,
                    curve,
                    kdf,
                    x,
                    y,
                }
            }
            TPM_ALG_KEYEDHASH => {
                let scheme = c.u16("TPMT_KEYEDHASH_SCHEME.scheme")?;
                if scheme != TPM_ALG_NULL {
                    c.u16("TPMT_KEYEDHASH_SCHEME.hashAlg")?;
                    if scheme == TPM_ALG_XOR {
                        c.u16("TPMT_KEYEDHASH_SCHEME.kdf")?;
                    }
                }
                c.tpm2b("TPM2B_DIGEST unique")?;
                KeyParams::Other { object_type }
            }
            TPM_ALG_SYMCIPHER => {
                symmetric(&mut c)?;
                c.tpm2b("TPM2B_DIGEST unique")?;
                KeyParams::Other { object_type }
            }
            other => {
                return Err(ParseError::Unsupported {
                    what: "TPMT_PUBLIC.type",
                    value: other.into(),
                });
            }
        };
        c.finish(WHAT)?;
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            params,
            tpmt_bytes: bytes.to_vec(),
        })
    }

    /// The symmetric definition of a storage key (EK), if it has one.
    pub fn symmetric(&self) -> SymmetricDef {
        match &self.params {
            KeyParams::Rsa { symmetric, .. } | KeyParams::Ecc { symmetric, .. } => *symmetric,
            KeyParams::Other { .. } => SymmetricDef::Null,
        }
    }
}

fn symmetric(c: &mut Cursor<'_>) -> Result<SymmetricDef, ParseError> {
    let algorithm = c.u16("TPMT_SYM_DEF_OBJECT.algorithm")?;
    if algorithm == TPM_ALG_NULL {
        return Ok(SymmetricDef::Null);
    }
    let key_bits = c.u16("TPMT_SYM_DEF_OBJECT.keyBits")?;
    let mode = c.u16("TPMT_SYM_DEF_OBJECT.mode")?;
    Ok(if algorithm == TPM_ALG_AES && mode == TPM_ALG_CFB {
        SymmetricDef::AesCfb(key_bits)
    } else {
        SymmetricDef::Other {
            algorithm,
            key_bits,
            mode,
        }
    })
}

/// Reads a TPMT_RSA_SCHEME or TPMT_ECC_SCHEME: the scheme id and, except for NULL and
/// RSAES, a hash algorithm (and for ECDAA a commit counter).
fn scheme(c: &mut Cursor<'_>, what: &'static str) -> Result<(u16, Option<HashAlg>), ParseError> {
    let scheme = c.u16(what)?;
    if scheme == TPM_ALG_NULL || scheme == TPM_ALG_RSAES {
        return Ok((scheme, None));
    }
    let hash = c.u16(what)?;
    if scheme == TPM_ALG_ECDAA {
        c.u16(what)?;
    }
    Ok((scheme, HashAlg::from_tpm(hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RSA EK swtpm_setup persists (TPM2B_PUBLIC), as tpm2_readpublic prints it.
    fn rsa_ek_tpmt() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&TPM_ALG_RSA.to_be_bytes());
        v.extend_from_slice(&0x000Bu16.to_be_bytes());
        v.extend_from_slice(&0x000300b2u32.to_be_bytes());
        v.extend_from_slice(&32u16.to_be_bytes());
        v.extend_from_slice(&[0x83; 32]);
        v.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // AES-128-CFB
        v.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        v.extend_from_slice(&2048u16.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&256u16.to_be_bytes());
        v.extend_from_slice(&[0xAB; 256]);
        v
    }

    #[test]
    fn parses_rsa_storage_key_and_normalises_exponent() {
        let tpmt = rsa_ek_tpmt();
        let mut tpm2b = (tpmt.len() as u16).to_be_bytes().to_vec();
        tpm2b.extend_from_slice(&tpmt);
        let p = PublicArea::from_tpm2b(&tpm2b).unwrap();
        assert_eq!(p.name_alg, HashAlg::Sha256);
        assert!(
            p.attributes
                .has(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT)
        );
        assert_eq!(p.symmetric(), SymmetricDef::AesCfb(128));
        match p.params {
            KeyParams::Rsa {
                exponent,
                key_bits,
                ref modulus,
                ..
            } => {
                assert_eq!(exponent, 65537);
                assert_eq!(key_bits, 2048);
                assert_eq!(modulus.len(), 256);
            }
            ref other => panic!("expected RSA, got {other:?}"),
        }
        assert_eq!(p.tpmt_bytes, tpmt);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let tpmt = rsa_ek_tpmt();
        for n in 0..tpmt.len() {
            assert!(PublicArea::from_tpmt(&tpmt[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn trailing_bytes_and_wrong_size_prefix_are_rejected() {
        let mut tpmt = rsa_ek_tpmt();
        tpmt.push(0);
        assert!(matches!(
            PublicArea::from_tpmt(&tpmt),
            Err(ParseError::TrailingBytes { .. })
        ));
        let mut tpm2b = 10u16.to_be_bytes().to_vec();
        tpm2b.extend_from_slice(&rsa_ek_tpmt());
        assert!(PublicArea::from_tpm2b(&tpm2b).is_err());
    }
}
