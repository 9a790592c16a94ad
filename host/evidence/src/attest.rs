//! TPMS_ATTEST: what a TPM signs for TPM2_Quote and TPM2_Certify.

use super::cursor::{Cursor, ParseError};
use super::public::HashAlg;

/// TPM_GENERATED_VALUE: only the TPM itself produces structures starting with it.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// Largest TPMS_ATTEST accepted (a quote over every PCR of four banks is under 300 bytes).
pub const MAX_ATTEST_SIZE: usize = 2048;

/// PCRs selected in one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBankSelection {
    pub hash: HashAlg,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// TPMS_CLOCK_INFO: lets a verifier detect reboots (resetCount), TPM restarts and
/// rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// The type-specific part of an attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    Quote {
        selection: Vec<PcrBankSelection>,
        pcr_digest: Vec<u8>,
    },
    Certify {
        name: Vec<u8>,
        qualified_name: Vec<u8>,
    },
    /// Another attestation type (session audit, time, …): kept raw so that callers can
    /// refuse it by type rather than by a parse error.
    Other {
        data: Vec<u8>,
    },
}

/// A parsed TPMS_ATTEST. The magic value is checked by [`Attest::check_generated`], not the
/// parser, so that callers can report it as its own failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub magic: u32,
    pub attest_type: u16,
    pub qualified_signer: Vec<u8>,
    /// The caller's nonce (qualifyingData).
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub attested: Attested,
}

impl Attest {
    /// Parses a TPMS_ATTEST spanning all of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "TPMS_ATTEST";
        if bytes.len() > MAX_ATTEST_SIZE {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} bytes is too large", bytes.len()),
            });
        }
        let mut c = Cursor::new(bytes);
        let magic = c.u32("TPMS_ATTEST.magic")?;
        let attest_type = c.u16("TPMS_ATTEST.type")?;
        let qualified_signer = c.tpm2b("TPMS_ATTEST.qualifiedSigner")?.to_vec();
        let extra_data = c.tpm2b("TPMS_ATTEST.extraData")?.to_vec();
        let clock_info = ClockInfo {
            clock: c.u64("TPMS_CLOCK_INFO.clock")?,
            reset_count: c.u32("TPMS_CLOCK_INFO.resetCount")?,
            restart_count: c.u32("TPMS_CLOCK_INFO.restartCount")?,
            safe: c.u8("TPMS_CLOCK_INFO.safe")? != 0,
        };
        let firmware_version = c.u64("TPMS_ATTEST.firmwareVersion")?;
        let attested = match attest_type {
            TPM_ST_ATTEST_QUOTE => {
                let selection = pcr_selection(&mut c)?;
                let pcr_digest = c.tpm2b("TPMS_QUOTE_INFO.pcrDigest")?.to_vec();
                Attested::Quote {
                    selection,
                    pcr_digest,
                }
            }
            TPM_ST_ATTEST_CERTIFY => Attested::Certify {
                name: c.tpm2b("TPMS_CERTIFY_INFO.name")?.to_vec(),
                qualified_name: c.tpm2b("TPMS_CERTIFY_INFO.qualifiedName")?.to_vec(),
            },
            _ => Attested::Other {
                data: c.take(c.remaining(), "TPMS_ATTEST.attested")?.to_vec(),
            },
        };
        c.finish(WHAT)?;
        Ok(Self {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
        })
    }
}

/// TPML_PCR_SELECTION (big-endian, as the TPM marshals it).
pub(crate) fn pcr_selection(c: &mut Cursor<'_>) -> Result<Vec<PcrBankSelection>, ParseError> {
    let count = c.u32("TPML_PCR_SELECTION.count")?;
    if count > 16 {
        return Err(ParseError::Invalid {
            what: "TPML_PCR_SELECTION",
            detail: format!("{count} banks"),
        });
    }
    let mut banks = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let hash_id = c.u16("TPMS_PCR_SELECTION.hash")?;
        let hash = HashAlg::from_tpm(hash_id).ok_or(ParseError::Unsupported {
            what: "TPMS_PCR_SELECTION.hash",
            value: hash_id.into(),
        })?;
        let size = c.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        if size > 4 {
            return Err(ParseError::Invalid {
                what: "TPMS_PCR_SELECTION",
                detail: format!("sizeofSelect {size}"),
            });
        }
        let bitmap = c.take(size.into(), "TPMS_PCR_SELECTION.pcrSelect")?;
        banks.push(PcrBankSelection {
            hash,
            pcrs: bitmap_pcrs(bitmap),
        });
    }
    Ok(banks)
}

/// PCR indices of a selection bitmap (bit i of byte j = PCR 8j+i).
pub(crate) fn bitmap_pcrs(bitmap: &[u8]) -> Vec<u8> {
    let mut pcrs = Vec::new();
    for (j, byte) in bitmap.iter().enumerate() {
        for i in 0..8 {
            if byte & (1 << i) != 0 {
                pcrs.push((j * 8 + i) as u8);
            }
        }
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tpm2_tools_fixture_quote() {
        let bytes = crate::test_fixture("keylime/test-data/files/quote.out");
        let attest = Attest::parse(&bytes).unwrap();
        assert_eq!(attest.magic, TPM_GENERATED_VALUE);
        assert_eq!(attest.attest_type, TPM_ST_ATTEST_QUOTE);
        match attest.attested {
            Attested::Quote {
                selection,
                pcr_digest,
            } => {
                assert_eq!(selection.len(), 1);
                assert_eq!(selection[0].hash, HashAlg::Sha256);
                assert_eq!(pcr_digest.len(), 32);
            }
            other => panic!("not a quote: {other:?}"),
        }
        for n in 0..bytes.len() {
            assert!(Attest::parse(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn bitmap_to_indices() {
        assert_eq!(bitmap_pcrs(&[0b0000_0011, 0, 0b0000_0001]), vec![0, 1, 16]);
    }
}
