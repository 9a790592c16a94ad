//! Test support for zest: a software TPM per test (swtpm), a test agent that drives it
//! through tss-esapi and speaks the Keylime agent's HTTP, and servers on loopback.

pub mod agent;
pub mod ek_issuer;
pub mod ima;
pub mod policies;
pub mod server;
pub mod swtpm;

pub use agent::{AkKind, EkKind, TestAgent};
pub use server::TestRegistrar;
pub use swtpm::{EkCa, Swtpm};
