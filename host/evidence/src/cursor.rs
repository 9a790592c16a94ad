//! A big-endian byte reader for TPM 2.0 marshalled structures.

use thiserror::Error;

/// Why a TPM structure could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("{what}: input ends early (needed {needed} more bytes)")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what}: {extra} trailing bytes after the structure")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{what}: unsupported value 0x{value:04x}")]
    Unsupported { what: &'static str, value: u32 },
}

/// Reads big-endian TPM fields from a byte slice, never past its end.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let (bytes, pos): (&'a [u8], usize) = (self.bytes, self.pos);
        let out = pos
            .checked_add(n)
            .and_then(|end| bytes.get(pos..end))
            .ok_or(ParseError::Truncated {
                what,
                needed: n.saturating_sub(self.remaining()),
            })?;
        self.pos += n;
        Ok(out)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let b = self.take(N, what)?;
        b.try_into()
            .map_err(|_| ParseError::Truncated { what, needed: N })
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        let [b] = self.array::<1>(what)?;
        Ok(b)
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Little-endian u16 (tpm2-tools memory dumps).
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Little-endian u32 (tpm2-tools memory dumps).
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A TPM2B: a u16 size followed by that many bytes.
    pub fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(ParseError::TrailingBytes { what, extra }),
        }
    }
}
