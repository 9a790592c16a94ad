//! The registrar: agents register their EK and AK, receive a credential only their TPM can
//! decrypt (TPM2_MakeCredential), and prove it by activating with an HMAC of it.
//! Wire format and quirks follow Keylime (reference/keylime-api.md §3).

mod registration;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use registration::auth_tag;
pub use routes::router;

use crate::config::{DataDir, RegistrarConfig};
use crate::net::{self, ClientAuth};
use crate::store::RegistrarStore;
use crate::tpm::TrustStore;

/// Shared state of the registrar's handlers.
#[derive(Clone)]
pub struct Registrar {
    pub store: Arc<dyn RegistrarStore>,
    /// Directory of trusted EK CAs, read at every registration so CAs can be added
    /// without a restart; `None` when EK certificate checks are off.
    pub ek_trust_dir: Option<Arc<std::path::Path>>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How long a registration may wait for its activation.
    pub registration_timeout: std::time::Duration,
}

impl Registrar {
    /// Registrations made before this Unix time and not activated count for nothing.
    pub fn stale_before(&self) -> u64 {
        crate::clock::unix_now().saturating_sub(self.registration_timeout.as_secs())
    }
}

/// Why the registrar could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read tpm_cert_store {path}: {source}")]
    CertStore { path: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] net::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A running registrar; dropping it stops the listeners.
pub struct RegistrarServer {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl RegistrarServer {
    /// Waits until a listener stops (they run until the process ends or this is dropped).
    pub async fn wait(mut self) {
        if let Some(task) = self.tasks.pop() {
            let _ = task.await;
        }
    }
}

impl Drop for RegistrarServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Opens the store, TLS material and EK CA store under `data_dir` (creating what is
/// missing) and starts both listeners. Port 0 binds a free port; the bound addresses are
/// in the result.
pub async fn start(data_dir: &DataDir, config: &RegistrarConfig) -> Result<RegistrarServer, StartError> {
    data_dir.create().map_err(|source| StartError::DataDir {
        path: data_dir.path().display().to_string(),
        source,
    })?;
    let tls = net::ServiceTls::resolve("registrar", &config.tls, data_dir, &[config.ip.to_string()])?;
    let store = config.database.open_registrar(&data_dir.database())?;
    let ek_trust = if config.require_ek_cert {
        crate::config::create_private_dir(&config.tpm_cert_store).map_err(|source| {
            StartError::CertStore {
                path: config.tpm_cert_store.display().to_string(),
                source,
            }
        })?;
        let trust = TrustStore::load_dir(&config.tpm_cert_store).map_err(|source| StartError::CertStore {
            path: config.tpm_cert_store.display().to_string(),
            source,
        })?;
        if trust.is_empty() {
            tracing::warn!(
                dir = %config.tpm_cert_store.display(),
                "tpm_cert_store holds no certificate: every registration will be refused until the EK CAs are added"
            );
        }
        Some(Arc::from(config.tpm_cert_store.as_path()))
    } else {
        tracing::warn!("EK certificate checks are off: any TPM can register");
        None
    };
    let app = router(Registrar {
        store,
        ek_trust_dir: ek_trust,
        metrics: Arc::default(),
        registration_timeout: config.registration_timeout,
    });

    let http_addr = SocketAddr::new(config.ip, config.port);
    let https_addr = SocketAddr::new(config.ip, config.tls_port);
    let http = TcpListener::bind(http_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: http_addr,
            source,
        })?;
    let https = TcpListener::bind(https_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: https_addr,
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Bind {
        addr: http_addr,
        source,
    })?;
    let https_addr = https.local_addr().map_err(|source| StartError::Bind {
        addr: https_addr,
        source,
    })?;
    let server_config = tls.server_config(ClientAuth::Optional)?;
    let tasks = vec![
        tokio::spawn(net::serve_plain_with(http, app.clone(), config.serve_limits)),
        tokio::spawn(net::serve_tls_with(
            https,
            server_config,
            app,
            config.serve_limits,
        )),
    ];
    tracing::info!(%http_addr, %https_addr, "registrar listening");
    Ok(RegistrarServer {
        http_addr,
        https_addr,
        tasks,
    })
}
