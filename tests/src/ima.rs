//! A test IMA measurement list: lines in the kernel's ASCII format, with the digests to
//! extend into PCR 10, computed here independently of zest's parser.

use aws_lc_rs::digest;

/// A measurement list being written, as the kernel would.
#[derive(Debug, Default, Clone)]
pub struct ImaLog {
    lines: Vec<String>,
}

/// What one new entry extends into each bank of PCR 10.
#[derive(Debug, Clone)]
pub struct Extension {
    pub sha1: Vec<u8>,
    pub sha256: Vec<u8>,
}

impl ImaLog {
    /// Appends an `ima-ng` entry for `path` whose content hashes (SHA-256) to `file_digest`.
    pub fn add_ima_ng(&mut self, path: &str, file_digest: &[u8]) -> Extension {
        let mut data = Vec::new();
        let d_ng = [b"sha256:\0".as_slice(), file_digest].concat();
        data.extend_from_slice(&(d_ng.len() as u32).to_le_bytes());
        data.extend_from_slice(&d_ng);
        data.extend_from_slice(&((path.len() + 1) as u32).to_le_bytes());
        data.extend_from_slice(path.as_bytes());
        data.push(0);
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &data)
            .as_ref()
            .to_vec();
        let sha256 = digest::digest(&digest::SHA256, &data).as_ref().to_vec();
        self.lines.push(format!(
            "10 {} ima-ng sha256:{} {path}",
            hex::encode(&sha1),
            hex::encode(file_digest)
        ));
        Extension { sha1, sha256 }
    }

    /// Appends a violation entry (all-zero template hash; the kernel extends all-ones).
    pub fn add_violation(&mut self, path: &str) -> Extension {
        self.lines.push(format!(
            "10 {} ima-ng sha256:{} {path}",
            "0".repeat(40),
            "0".repeat(64)
        ));
        Extension {
            sha1: vec![0xff; 20],
            sha256: vec![0xff; 32],
        }
    }

    /// The list from entry `from` on, as the agent sends it (`\n` after every line).
    pub fn text_from(&self, from: usize) -> String {
        self.lines[from..].iter().map(|l| format!("{l}\n")).collect()
    }

    /// Replaces a line (to tamper with it).
    pub fn set_line(&mut self, index: usize, line: String) {
        self.lines[index] = line;
    }

    pub fn line(&self, index: usize) -> &str {
        &self.lines[index]
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}
