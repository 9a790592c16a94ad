//! The types of the runtime (IMA) world, and helpers for the common checks.
//!
//! Text forms: paths are bytes, as the kernel logged them (they need not be UTF-8);
//! digests are bytes, and the helpers that take hex accept either case.

use std::borrow::Cow;

pub use crate::runtime_bindings::exports::zest::policy::runtime::{
    Batch, Entry, ImaSignature, ReplayFacts, Template,
};

impl Entry {
    /// The path (or ima-buf buffer name) as text; bytes that are not UTF-8 become U+FFFD.
    pub fn path(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// Whether the path starts with `prefix`, byte for byte (`"/tmp/"` matches `/tmp/x`,
    /// not `/tmpfoo`).
    pub fn path_starts_with(&self, prefix: &str) -> bool {
        self.name.starts_with(prefix.as_bytes())
    }

    /// The file digest in lowercase hex, as Keylime's policies list digests.
    pub fn digest_hex(&self) -> String {
        crate::hex(&self.file_digest.value)
    }

    /// Whether the file digest is one of `allowed` (hex, either case).
    pub fn digest_in<'a>(&self, allowed: impl IntoIterator<Item = &'a str>) -> bool {
        allowed
            .into_iter()
            .any(|hex| crate::unhex(hex).is_some_and(|d| d == self.file_digest.value))
    }

    /// Whether the entry carries an IMA signature (ima-sig with a `security.ima` xattr
    /// whose header parsed). Whether it verifies is for the policy to check with
    /// [`crate::host::verify_prehashed`] and its keys.
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// Whether this entry measures a file (not an ima-buf buffer and not a violation).
    pub fn is_file(&self) -> bool {
        self.template != Template::ImaBuf && !self.violation
    }
}

impl Batch {
    /// The entries that measure files (see [`Entry::is_file`]).
    pub fn files(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.is_file())
    }
}
