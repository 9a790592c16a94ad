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
        self.bytes.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if self.remaining() < n {
            return Err(ParseError::Truncated {
                what,
                needed: n - self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Little-endian u16 (tpm2-tools memory dumps).
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Little-endian u32 (tpm2-tools memory dumps).
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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
