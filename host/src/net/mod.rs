//! Listeners and transport: TLS material on disk, rustls configurations, and the loop
//! that serves a router over plain HTTP or HTTPS.

mod serve;
pub mod tls;

pub use serve::{Peer, serve_plain, serve_tls};
pub use tls::{ClientAuth, TlsError, TlsMaterial, Usage, load_certs};
