//! The tpm2-tools PCR blob Keylime agents send beside a quote: a host-endian (little-endian)
//! memory dump of `TPML_PCR_SELECTION` (132 bytes: u32 count, 16 slots of 8 bytes), then a
//! u32 count of `TPML_DIGEST` blocks of 532 bytes each (u32 count, 8 × (u16 size, 64 bytes)).

use super::attest::{PcrBankSelection, bitmap_pcrs};
use super::cursor::{Cursor, ParseError};
use super::public::HashAlg;

const SELECTION_SLOTS: usize = 16;
const DIGESTS_PER_BLOCK: usize = 8;
const DIGEST_BUFFER: usize = 64;
/// More digest blocks than any selection of 24 PCRs in 16 banks could need.
const MAX_BLOCKS: u32 = 64;

/// PCR values from a PCR blob, in selection order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValues {
    /// (bank, PCR index, value), in the order the selection lists them.
    pub values: Vec<(HashAlg, u8, Vec<u8>)>,
    /// The selection the blob declares.
    pub selection: Vec<PcrBankSelection>,
}

impl PcrValues {
    /// Parses a tpm2-tools PCR blob; every byte must be consumed and every digest must have
    /// its bank's size.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "PCR blob";
        let mut c = Cursor::new(bytes);
        let count = c.u32_le("PCR blob selection count")? as usize;
        if count > SELECTION_SLOTS {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{count} selections"),
            });
        }
        let mut selection = Vec::with_capacity(count);
        for slot in 0..SELECTION_SLOTS {
            let hash_id = c.u16_le("PCR blob selection hash")?;
            let size = c.u8("PCR blob sizeofSelect")?;
            let bitmap = c.take(4, "PCR blob pcrSelect")?;
            c.take(1, "PCR blob padding")?;
            if slot < count {
                let hash = HashAlg::from_tpm(hash_id).ok_or(ParseError::Unsupported {
                    what: "PCR blob selection hash",
                    value: hash_id.into(),
                })?;
                // The bitmap field is 4 bytes: a larger sizeofSelect is invalid.
                let select = bitmap
                    .get(..usize::from(size))
                    .ok_or_else(|| ParseError::Invalid {
                        what: WHAT,
                        detail: format!("sizeofSelect {size}"),
                    })?;
                selection.push(PcrBankSelection {
                    hash,
                    pcrs: bitmap_pcrs(select),
                });
            }
        }
        let blocks = c.u32_le("PCR blob digest block count")?;
        if blocks > MAX_BLOCKS {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{blocks} digest blocks"),
            });
        }
        let mut digests = Vec::new();
        for _ in 0..blocks {
            let n = c.u32_le("TPML_DIGEST.count")? as usize;
            if n > DIGESTS_PER_BLOCK {
                return Err(ParseError::Invalid {
                    what: WHAT,
                    detail: format!("TPML_DIGEST count {n}"),
                });
            }
            for i in 0..DIGESTS_PER_BLOCK {
                let size = c.u16_le("TPM2B_DIGEST.size")? as usize;
                let buffer = c.take(DIGEST_BUFFER, "TPM2B_DIGEST.buffer")?;
                if i < n {
                    let digest = buffer.get(..size).ok_or_else(|| ParseError::Invalid {
                        what: WHAT,
                        detail: format!("digest size {size}"),
                    })?;
                    digests.push(digest.to_vec());
                }
            }
        }
        c.finish(WHAT)?;

        let wanted: usize = selection.iter().map(|s| s.pcrs.len()).sum();
        if wanted != digests.len() {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{wanted} PCRs selected but {} values present", digests.len()),
            });
        }
        let mut values = Vec::with_capacity(wanted);
        let mut next = digests.into_iter();
        for bank in &selection {
            for pcr in &bank.pcrs {
                let value = next.next().unwrap_or_default();
                if value.len() != bank.hash.digest_len() {
                    return Err(ParseError::Invalid {
                        what: WHAT,
                        detail: format!("PCR {pcr} of {} has {} bytes", bank.hash.name(), value.len()),
                    });
                }
                values.push((bank.hash, *pcr, value));
            }
        }
        Ok(Self { values, selection })
    }

    /// The value of one PCR in one bank.
    pub fn get(&self, hash: HashAlg, pcr: u8) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|(h, p, _)| *h == hash && *p == pcr)
            .map(|(_, _, v)| v.as_slice())
    }
}
