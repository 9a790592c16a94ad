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
        self.add_entry("ima-ng", "sha256", file_digest, path, None)
    }

    /// Appends an `ima-ng` entry with a file digest of another algorithm (`sha1`, …).
    pub fn add_ima_ng_with(&mut self, path: &str, alg: &str, file_digest: &[u8]) -> Extension {
        self.add_entry("ima-ng", alg, file_digest, path, None)
    }

    /// Appends an `ima-sig` entry; `xattr` is the `security.ima` value (empty: unsigned).
    pub fn add_ima_sig(&mut self, path: &str, alg: &str, file_digest: &[u8], xattr: &[u8]) -> Extension {
        self.add_entry("ima-sig", alg, file_digest, path, Some(xattr))
    }

    /// Appends an `ima-buf` entry: a buffer (a key, `kernel_version`, …) and its digest.
    pub fn add_ima_buf(&mut self, name: &str, buffer: &[u8]) -> Extension {
        let digest = digest::digest(&digest::SHA256, buffer).as_ref().to_vec();
        self.add_entry("ima-buf", "sha256", &digest, name, Some(buffer))
    }

    /// Any template of the `d-ng|n-ng[|sig or buf]` family, with its correct template hash.
    fn add_entry(
        &mut self,
        template: &str,
        alg: &str,
        file_digest: &[u8],
        name: &str,
        third: Option<&[u8]>,
    ) -> Extension {
        let mut data = Vec::new();
        let d_ng = [alg.as_bytes(), b":\0", file_digest].concat();
        data.extend_from_slice(&(d_ng.len() as u32).to_le_bytes());
        data.extend_from_slice(&d_ng);
        data.extend_from_slice(&((name.len() + 1) as u32).to_le_bytes());
        data.extend_from_slice(name.as_bytes());
        data.push(0);
        if let Some(third) = third {
            data.extend_from_slice(&(third.len() as u32).to_le_bytes());
            data.extend_from_slice(third);
        }
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &data)
            .as_ref()
            .to_vec();
        let sha256 = digest::digest(&digest::SHA256, &data).as_ref().to_vec();
        let mut line = format!(
            "10 {} {template} {alg}:{} {name}",
            hex::encode(&sha1),
            hex::encode(file_digest)
        );
        if let Some(third) = third {
            line.push(' ');
            line.push_str(&hex::encode(third));
        }
        self.lines.push(line);
        Extension { sha1, sha256 }
    }

    /// Appends a line as given (a malformed or foreign one).
    pub fn add_raw_line(&mut self, line: &str) {
        self.lines.push(line.to_owned());
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
    /// The whole list.
    pub fn text(&self) -> String {
        self.text_from(0)
    }

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

/// An IMA v2 signature (`security.ima` xattr): type 3, version 2, the hash's Linux id, the
/// key id and the signature.
pub fn ima_signature_v2(hash_algo: u8, key_id: u32, signature: &[u8]) -> Vec<u8> {
    let mut x = vec![3, 2, hash_algo];
    x.extend_from_slice(&key_id.to_be_bytes());
    x.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    x.extend_from_slice(signature);
    x
}
