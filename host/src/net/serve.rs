//! The serving loop: accept, (TLS handshake under a deadline), then HTTP/1.1 or HTTP/2 on
//! each connection in its own task, with the caller's identity attached to every request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::api::Caller;

/// A client that has not finished its TLS handshake by then is dropped, so idle or
/// half-open connections cannot hold a listener (CVE-2023-38200).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Likewise for a client that opens a connection and never sends its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's address, in every request's extensions (for per-address rate limits).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The next connection. Nagle's algorithm is off: with it, a small response written in two
/// segments waits for the client's delayed ACK (40 ms on Linux) on every request.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Accepts connections and runs `handle` on each. The connection tasks live in a set owned
/// by this loop, so dropping the server task closes its open connections as well, kept-alive
/// ones included: a stopped server stops answering at once.
async fn serve_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                if let Some((stream, peer)) = accepted {
                    connections.spawn(handle(stream, peer));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves `router` over plain HTTP until the task is dropped.
pub async fn serve_plain(listener: TcpListener, router: Router) {
    serve_loop(listener, move |stream, peer| {
        let router = router.clone();
        async move {
            if let Err(e) = serve_connection(TokioIo::new(stream), router, Caller::Plain, peer).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// Serves `router` over HTTPS until the task is dropped.
pub async fn serve_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>, router: Router) {
    let acceptor = TlsAcceptor::from(config);
    serve_loop(listener, move |stream, peer| {
        let acceptor = acceptor.clone();
        let router = router.clone();
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let caller = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(cert) => Caller::TlsClient {
                    common_name: common_name(cert.as_ref()),
                    role: crate::api::Role::of_certificate(cert.as_ref()),
                },
                None => Caller::TlsAnonymous,
            };
            if let Err(e) = serve_connection(TokioIo::new(tls), router, caller, peer).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    caller: Caller,
    peer: std::net::SocketAddr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(caller.clone());
        req.extensions_mut().insert(Peer(peer));
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .serve_connection(io, TowerToHyperService::new(service))
        .await
}

/// The subject CN of a certificate that rustls has already verified.
fn common_name(der: &[u8]) -> String {
    X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
