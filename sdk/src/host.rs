//! What the host offers a policy: signature checks over prehashed digests, key parsing and
//! logging. In a component these call the host; in a native `cargo test` they run the
//! host's own code in-process, so a test sees the same answers zest gives.

use crate::{HashAlg, LogLevel, PublicKey, Verdict};

/// Verifies `signature` over an already computed `digest` with a DER SubjectPublicKeyInfo
/// key (RSA PKCS#1 v1.5, or ECDSA with a DER signature).
///
/// In native tests this needs the SDK's `native-signatures` feature (it builds the host's
/// crypto library, aws-lc, from C); without it the call panics saying so, rather than
/// answering without checking.
pub fn verify_prehashed(spki_der: &[u8], hash: HashAlg, digest: &[u8], signature: &[u8]) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wit::host::verify_prehashed(spki_der, hash, digest, signature)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::native_verify_prehashed(spki_der, hash, digest, signature)
    }
}

/// The digest of `data` with `alg`; `None` for [`HashAlg::Other`]. The host computes it,
/// so a policy needs no hash crate of its own.
pub fn hash(alg: HashAlg, data: &[u8]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wit::host::hash(alg, data)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::native_hash(alg, data)
    }
}

/// Reads `data` as a key the way Keylime reads keyring measurements: DER or PEM X.509
/// certificate, DER or PEM SubjectPublicKeyInfo. `None` when it is not a key.
pub fn parse_key(data: &[u8]) -> Option<PublicKey> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wit::host::parse_key(data)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::native_parse_key(data)
    }
}

/// A line in the host's log, attributed to the policy (stderr in native tests).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wit::host::log(level, message)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("policy {level:?}: {message}");
    }
}

/// The verdict of a component asked before any document was loaded.
#[doc(hidden)]
pub fn not_loaded() -> Verdict {
    Verdict::with_failures(vec![crate::Failure::message(
        "internal.policy_not_loaded",
        "the policy was evaluated before a document was loaded",
    )])
}
