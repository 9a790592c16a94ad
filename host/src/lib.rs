//! zest: a Keylime-compatible remote-attestation server.
//!
//! The library holds the domain; `main.rs` only parses arguments and calls [`cli::run`].
//! Rooms, one concern each:
//! - [`evidence`]: pure parsers of untrusted TPM bytes (no I/O, no async, fuzzed); the
//!   `zest-evidence` crate in `host/evidence`, shared with the policy SDK's test helpers.
//! - [`tpm`]: checks and crypto over parsed TPM objects (MakeCredential, EK certificates).
//! - [`api`]: Keylime's envelope, API versions, identifiers and error mapping.
//! - [`store`]: the storage interface and its SQLite implementation.
//! - [`registrar`]: agent registration and activation over HTTP.
//! - [`verifier`]: enrolled agents and their policies over HTTPS with mTLS.
//! - [`net`]: listeners, TLS material and the HTTP/HTTPS serving loop.
//! - [`policy`]: the WebAssembly policy sandbox (wasmtime) and the built-in policies.
//! - [`dsse`]: signed runtime policies (DSSE envelopes, as Keylime signs them).
//! - [`config`] and [`cli`]: the operator's edge.

pub mod agent_client;
pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dsse;
pub mod import;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod registrar;
pub mod store;
pub mod tpm;
pub mod verifier;

pub use zest_evidence as evidence;

/// Reads a file from Keylime's test data in `../shared/fixtures` (beside the repository, in
/// CI too); `ZEST_FIXTURES` overrides the location.
#[cfg(test)]
pub(crate) fn test_fixture(path: &str) -> Vec<u8> {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    let full = std::path::Path::new(&root).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}
