//! Listeners and transport: TLS material on disk, rustls configurations, the loop that
//! serves a router over plain HTTP or HTTPS, and HTTPS clients pinned to a pull agent's
//! certificate.

pub mod pinned;
pub mod pki;
mod serve;
pub mod tls;

pub use pinned::{NotPinned, PinError, PinnedCertVerifier, agent_client};
pub use pki::{ServiceTls, TlsOptions};
pub use serve::{Peer, ServeLimits, serve_plain, serve_plain_with, serve_tls, serve_tls_with};
pub use tls::{ClientAuth, TlsError, TlsMaterial, Usage, load_certs, load_key};
