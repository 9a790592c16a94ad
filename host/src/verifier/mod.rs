//! The verifier: operators enrol agents with their policies; the verifier attests them.
//! Wire format and quirks follow Keylime (reference/keylime-api.md §4).
//!
//! HTTPS only, and only for clients with a certificate from our CA: a connection without
//! one fails in the handshake (CVE-2026-1709).

mod canary;
mod dashboard;
mod enrol;
mod evidence;
pub mod history;
mod modules;
pub mod notify;
pub mod pipeline;
pub(crate) mod policies;
mod policy_versions;
mod poller;
pub mod push;
mod quotas;
mod routes;
pub mod severity;
mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use routes::router;

use crate::config::DataDir;
use crate::net::{self, ClientAuth};
use crate::policy::{PolicyLimits, PolicyRegistry, PolicyRuntime};
use crate::store::VerifierStore;

/// Which agents the verifier serves (Keylime `[verifier] mode`; `both` is ours: the mode is
/// chosen per agent at enrolment, push when the tenant gives no `cloudagent_ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pull,
    Push,
    Both,
}

impl Mode {
    /// Push agents connect without a client certificate, so the listener asks for one but
    /// does not require it; every operator route still requires an operator's certificate
    /// (the layer `api::docs` builds from each route's declaration).
    fn client_auth(self) -> ClientAuth {
        match self {
            Self::Pull => ClientAuth::Required,
            Self::Push | Self::Both => ClientAuth::Optional,
        }
    }
}

/// The verifier's settings (Keylime `[verifier]` names).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifierConfig {
    /// `ip`
    pub ip: IpAddr,
    /// `port` (8881)
    pub port: u16,
    /// `quote_interval`, seconds between quotes of one agent.
    pub quote_interval: f64,
    /// `uuid`: this verifier's id in agent records.
    pub verifier_id: String,
    /// `database_url`: the embedded SQLite file, or a PostgreSQL database.
    pub database: crate::store::Database,
    /// `[zest] lease_period`: how long this verifier's claim on a pull agent lasts without
    /// renewal. Verifiers sharing a database take over a dead one's agents within two.
    pub lease_period: std::time::Duration,
    /// Limits of every policy call.
    pub policy_limits: PolicyLimits,
    /// The measured-boot component of refstates that name none (Keylime's global
    /// `measured_boot_policy_name`).
    pub measured_boot_module: String,
    /// `max_retries`: failed quote requests before an agent is FAILED.
    pub max_retries: u32,
    /// `retry_interval`: the first wait after a failed request (then doubled).
    pub retry_interval: std::time::Duration,
    /// `[revocations] webhook_url`: where revocation messages are POSTed besides agents.
    pub revocation_webhook: Option<String>,
    /// `[revocations] enabled_revocation_notifications` names `agent`: revocations go to
    /// every enrolled pull agent.
    pub notify_agents: bool,
    /// ... names `webhook`: revocations go to `revocation_webhook`.
    pub notify_webhook: bool,
    /// `exponential_backoff`: retries wait `retry_interval ** n` seconds, else
    /// `retry_interval` each time.
    pub exponential_backoff: bool,
    /// `severity_labels` and `severity_policy`: which failures stop polling.
    pub severity: severity::SeverityPolicy,
    /// `request_timeout`: the longest wait for an agent's answer.
    pub request_timeout: std::time::Duration,
    /// `mode`: pull, push or both.
    pub mode: Mode,
    /// `nonce_lifetime`: how long a push session's challenge may be answered.
    pub nonce_lifetime: std::time::Duration,
    /// `session_lifetime`: how long a push token lives (extended by passing attestations).
    pub session_lifetime: std::time::Duration,
    /// `challenge_lifetime`: how long a push attestation's challenge may be answered.
    pub challenge_lifetime: std::time::Duration,
    /// `auto_recover_attestation_failures`: whether a passing push attestation clears
    /// earlier failures (Keylime: no, the agent shows FAIL until reactivated).
    pub auto_recover_attestation_failures: bool,
    /// Keylime's TLS options (`tls_dir`, `server_cert`, …): an existing PKI, or zest's own
    /// generated `cv_ca` when all are `default`.
    pub tls: net::TlsOptions,
    /// `require_allow_list_signatures`: every uploaded runtime policy must be a DSSE
    /// envelope that verifies.
    pub require_allow_list_signatures: bool,
    /// `[zest]` connection, request and body limits of the listener.
    pub serve_limits: net::ServeLimits,
    /// `[zest] max_evidence_size`: the most bytes read of one agent's quote reply or one
    /// push submission (IMA list and boot log included).
    pub max_evidence_size: usize,
    /// `max_upload_size`: the largest policy, enrolment or component upload.
    pub max_upload_size: usize,
    /// `[zest] history_keep_passes`, `history_keep_failures`: how many rounds of each
    /// agent the attestation history keeps (push attestation records too).
    pub history_retention: crate::store::history::Retention,
    /// `durable_attestation_import` with a `file://` `persistent_store_url`: the directory
    /// of the append-only, hash-chained log of every round.
    pub durable_dir: Option<std::path::PathBuf>,
}

impl VerifierConfig {
    /// Keylime's defaults.
    pub fn defaults() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8881,
            quote_interval: 2.0,
            verifier_id: "default".into(),
            database: crate::store::Database::default(),
            lease_period: std::time::Duration::from_secs(10),
            policy_limits: PolicyLimits::default(),
            measured_boot_module: "builtin:accept-all".into(),
            max_retries: 5,
            retry_interval: std::time::Duration::from_secs(2),
            revocation_webhook: None,
            notify_agents: true,
            notify_webhook: true,
            exponential_backoff: true,
            severity: severity::SeverityPolicy::keylime_default(),
            request_timeout: std::time::Duration::from_secs(60),
            mode: Mode::Pull,
            nonce_lifetime: std::time::Duration::from_secs(60),
            session_lifetime: std::time::Duration::from_secs(180),
            challenge_lifetime: std::time::Duration::from_secs(1800),
            auto_recover_attestation_failures: false,
            require_allow_list_signatures: false,
            tls: net::TlsOptions::default(),
            serve_limits: net::ServeLimits::default(),
            max_evidence_size: 64 * 1024 * 1024,
            max_upload_size: 104_857_600,
            history_retention: crate::store::history::Retention::default(),
            durable_dir: None,
        }
    }
}

impl VerifierConfig {
    /// How long after its last good quote an agent still shows as attested: Keylime's
    /// `maximum_attestation_interval` (5 × `quote_interval`), at least 10 s.
    pub fn stale_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64((self.quote_interval * 5.0).max(10.0))
    }
}

/// How many `POST /verify/evidence` checks run at once; more get 503.
const STATELESS_CHECKS: usize = 4;

/// Shared state of the verifier's handlers.
#[derive(Clone)]
pub struct Verifier {
    pub store: Arc<dyn VerifierStore>,
    pub policies: Arc<PolicyRegistry>,
    pub config: Arc<VerifierConfig>,
    /// Uploaded policy components read so far.
    pub modules: Arc<modules::ModuleCache>,
    /// Push sessions waiting for their proof of possession.
    pub sessions: Arc<push::sessions::Sessions>,
    /// Push tokens verified since start.
    pub tokens: Arc<push::auth::TokenCache>,
    /// Counters and histograms served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Our client identity towards agents (quotes, V, revocations).
    pub agent_tls: notify::AgentTls,
    /// Pull agents whose round is in flight (a DELETE then waits for it: 202).
    pub rounds: Arc<poller::InFlight>,
    /// Wakes the poller's schedule when an agent may have to be polled (enrolled,
    /// reactivated).
    pub poll_wakeup: Arc<tokio::sync::Notify>,
    /// Permits for `POST /verify/evidence`, a route open to anyone.
    pub stateless_checks: Arc<tokio::sync::Semaphore>,
    /// Where keys that verified a signed runtime policy are kept, by digest (Keylime's
    /// `signing_keys`), so a later upload may name its key by `keyid` alone.
    pub signing_keys: Arc<std::path::PathBuf>,
    /// The durable attestation log, when one is configured.
    pub durable: Option<Arc<crate::store::durable::DurableLog>>,
    /// Canary jobs started here.
    pub canaries: Arc<canary::Canaries>,
}

impl Verifier {
    /// Counts a verdict of an agent of `tenant` and its latency (`mode` is pull or push).
    pub(crate) fn record_verdict(
        &self,
        mode: &'static str,
        tenant: &str,
        elapsed: std::time::Duration,
        failures: &[pipeline::Failure],
    ) {
        use crate::metrics::{ModeEvent, ModeLabel, ModeResult, TenantResult, count, observe};
        let result = if failures.is_empty() { "pass" } else { "fail" };
        count(&self.metrics.attestations, &ModeResult { mode, result });
        let by_tenant = TenantResult {
            tenant: tenant.to_owned(),
            result,
        };
        count(&self.metrics.tenant_attestations, &by_tenant);
        observe(&self.metrics.attestation_seconds, &ModeLabel { mode }, elapsed);
        for failure in failures {
            let labels = ModeEvent {
                mode,
                event_id: failure.event_id.clone(),
            };
            count(&self.metrics.attestation_failures, &labels);
        }
    }
}

/// The span every log line about one agent runs in, so operators can filter by tenant.
pub(crate) fn agent_span(agent_id: &str, tenant: &str) -> tracing::Span {
    tracing::info_span!("agent", agent_id, tenant)
}

/// Why the verifier could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] net::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("durable attestation log: {0}")]
    Durable(#[from] crate::store::durable::DurableError),
}

/// A running verifier; dropping it stops the listener.
pub struct VerifierServer {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl VerifierServer {
    /// Waits until the listener stops.
    pub async fn wait(mut self) {
        if let Some(task) = self.tasks.pop() {
            let _ = task.await;
        }
    }
}

impl Drop for VerifierServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Opens the store, TLS material and policy runtime under `data_dir` and starts the HTTPS
/// listener (port 0 binds a free port; the bound address is in the result).
pub async fn start(data_dir: &DataDir, config: &VerifierConfig) -> Result<VerifierServer, StartError> {
    data_dir.create().map_err(|source| StartError::DataDir {
        path: data_dir.path().display().to_string(),
        source,
    })?;
    let tls = net::ServiceTls::resolve("verifier", &config.tls, data_dir, &[config.ip.to_string()])?;
    let store = config.database.open_verifier(&data_dir.database())?;
    // Push challenges derive from a key every verifier on this database shares.
    let session_key = store.shared_secret("push-session-challenges")?;
    let runtime = Arc::new(PolicyRuntime::new(
        config.policy_limits,
        Some(data_dir.path().join("policy-cache")),
    )?);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let identity = tls.client.identity_pem()?;
    let webhook = match &config.revocation_webhook {
        Some(_) if config.notify_webhook => Some(
            notify::webhook_client(&identity, &tls.server_ca_pem()?, config.request_timeout).map_err(
                |detail| net::TlsError::Pem {
                    path: tls.client.cert.clone(),
                    detail: format!("the revocation webhook's client: {detail}"),
                },
            )?,
        ),
        _ => None,
    };
    let agent_tls = notify::AgentTls {
        identity_pem: Arc::new(identity),
        webhook,
    };
    let verifier = Verifier {
        rounds: Arc::default(),
        poll_wakeup: Arc::default(),
        stateless_checks: Arc::new(tokio::sync::Semaphore::new(STATELESS_CHECKS)),
        signing_keys: Arc::new(data_dir.path().join("signing_keys")),
        durable: match &config.durable_dir {
            Some(dir) => Some(Arc::new(crate::store::durable::DurableLog::open(dir)?)),
            None => None,
        },
        canaries: Arc::default(),
        store,
        policies: Arc::new(PolicyRegistry::with_metrics(runtime, metrics.clone())),
        metrics,
        config: Arc::new(config.clone()),
        modules: Arc::default(),
        sessions: Arc::new(push::sessions::Sessions::new(&session_key)),
        tokens: Arc::default(),
        agent_tls: agent_tls.clone(),
    };
    push::attestations::fail_interrupted(&verifier);
    quotas::apply_stored(&verifier)?;
    let poller = poller::spawn(
        verifier.clone(),
        agent_tls,
        poller::Retries {
            max: config.max_retries,
            interval: config.retry_interval,
        },
    );
    let app = router(verifier);
    let addr = SocketAddr::new(config.ip, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let server_config = tls.server_config(config.mode.client_auth())?;
    let tasks = vec![
        poller,
        tokio::spawn(net::serve_tls_with(
            listener,
            server_config,
            app,
            config.serve_limits,
        )),
    ];
    tracing::info!(%addr, "verifier listening");
    Ok(VerifierServer { addr, tasks })
}
