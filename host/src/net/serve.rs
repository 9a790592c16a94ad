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

/// What one listener allows at once, so that no client can exhaust the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeLimits {
    /// Open connections; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests being handled at once; further ones get 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// The longest a request body may take to arrive (a slow body is cut off).
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive
    /// and HTTP/2 alike).
    pub idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_in_flight: 512,
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

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
async fn serve_loop<F, Fut>(listener: TcpListener, max_connections: usize, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A connection is accepted only with a free slot: past the cap, clients queue in
        // the kernel's backlog instead of in our memory.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = accept(&listener) => {
                if let Some((stream, peer)) = accepted {
                    let connection = handle(stream, peer);
                    connections.spawn(async move {
                        connection.await;
                        drop(slot);
                    });
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Refuses a request beyond `in_flight` requests being handled, and cuts off a body that
/// takes longer than `body_timeout` to arrive.
fn limited(router: Router, limits: ServeLimits) -> Router {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1)));
    router
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_timeout,
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let in_flight = in_flight.clone();
                async move {
                    match in_flight.try_acquire_owned() {
                        Ok(_permit) => next.run(req).await,
                        Err(_) => busy(),
                    }
                }
            },
        ))
}

/// 503 in Keylime's envelope, with `Retry-After`.
fn busy() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        axum::Json(serde_json::json!({
            "code": 503,
            "status": "Service Unavailable: too many requests at once, retry shortly",
            "results": {},
        })),
    )
        .into_response()
}

/// Serves `router` over plain HTTP until the task is dropped, with the default limits.
pub async fn serve_plain(listener: TcpListener, router: Router) {
    serve_plain_with(listener, router, ServeLimits::default()).await
}

/// Serves `router` over plain HTTP until the task is dropped.
pub async fn serve_plain_with(listener: TcpListener, router: Router, limits: ServeLimits) {
    let router = limited(router, limits);
    serve_loop(listener, limits.max_connections, move |stream, peer| {
        let router = router.clone();
        async move {
            if let Err(e) = serve_connection(TokioIo::new(stream), router, Caller::Plain, peer, limits).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// Serves `router` over HTTPS until the task is dropped, with the default limits.
pub async fn serve_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>, router: Router) {
    serve_tls_with(listener, config, router, ServeLimits::default()).await
}

/// Serves `router` over HTTPS until the task is dropped.
pub async fn serve_tls_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ServeLimits,
) {
    let acceptor = TlsAcceptor::from(config);
    let router = limited(router, limits);
    serve_loop(listener, limits.max_connections, move |stream, peer| {
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
            if let Err(e) = serve_connection(TokioIo::new(tls), router, caller, peer, limits).await {
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
    limits: ServeLimits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Requests in flight on this connection, and when the last one ended: an idle
    // connection is closed after `idle_timeout`.
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(caller.clone());
        req.extensions_mut().insert(Peer(peer));
        req
    });
    let service = tower::service_fn(move |req| {
        let service = service.clone();
        let guard = seen.begin();
        async move {
            let response = service.oneshot(req).await;
            drop(guard);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(limits.idle_timeout / 2);
    let connection = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut tick = tokio::time::interval(limits.idle_timeout.max(Duration::from_millis(100)) / 4);
    let mut closing = false;
    loop {
        tokio::select! {
            done = connection.as_mut() => return done,
            _ = tick.tick(), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Requests in flight on one connection, and when it last had none.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    idle_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Marks a request done when dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How long the connection has had no request in flight (zero while it has one).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let mut since = self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        since.get_or_insert_with(std::time::Instant::now).elapsed()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        }
    }
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
