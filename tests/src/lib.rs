//! Test support for zest: a software TPM per test (swtpm), a test agent that drives it
//! through tss-esapi and speaks the Keylime agent's HTTP, and servers on loopback.

pub mod agent;
pub mod boot;
pub mod chromium;
pub mod ek_issuer;
pub mod forge;
pub mod ima;
pub mod keylime_cert;
pub mod policies;
pub mod postgres;
pub mod process;
pub mod pull_agent;
pub mod pull_env;
pub mod push_agent;
pub mod push_env;
pub mod server;
pub mod soft_tpm;
pub mod swtpm;

pub use agent::{AkKind, EkKind, TestAgent};
pub use server::TestRegistrar;
pub use swtpm::{EkCa, Swtpm};

/// Reads a file from Keylime's test data in `../shared/fixtures` (beside the repository, in
/// CI too); `ZEST_FIXTURES` overrides the location.
pub fn fixture(path: &str) -> Vec<u8> {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    let full = std::path::Path::new(&root).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// How long a test waits for an event (a state, a port, a finished job) before it fails:
/// `ZEST_TEST_WAIT_SECONDS`, 30 s unless set (raise it on a slow or loaded machine).
pub fn wait_limit() -> std::time::Duration {
    std::env::var("ZEST_TEST_WAIT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(std::time::Duration::from_secs(30), std::time::Duration::from_secs)
}

/// A loopback TCP port free right now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
