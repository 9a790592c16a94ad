//! The `zest` command line: parses arguments and calls into the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_DATA_DIR, DataDir, RegistrarConfig};
use crate::verifier::VerifierConfig;

mod evidence;
mod policy;

#[derive(Debug, Parser)]
#[command(
    name = "zest",
    version,
    about = "Keylime-compatible remote-attestation server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process: the registrar and the verifier.
    Serve(ServeArgs),
    /// Run the registrar: agent registration and activation.
    Registrar(ServeArgs),
    /// Run the verifier: agents, runtime policies and measured-boot policies (HTTPS, mTLS).
    Verifier(ServeArgs),
    /// Inspect evidence files offline: UEFI event logs, IMA lists, quotes.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Policy tools: dry-run a policy on evidence files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Directory for the database, TLS material (cv_ca/) and EK CA store (tpm_cert_store/).
    #[arg(long, env = "ZEST_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(flatten)]
    registrar: RegistrarArgs,
    #[command(flatten)]
    verifier: VerifierArgs,
}

#[derive(Debug, Args)]
struct VerifierArgs {
    /// Address the verifier listens on (Keylime `[verifier] ip`).
    #[arg(long, env = "ZEST_VERIFIER_IP", default_value = "127.0.0.1")]
    verifier_ip: IpAddr,
    /// HTTPS port, client certificates required (Keylime `[verifier] port`).
    #[arg(long, env = "ZEST_VERIFIER_PORT", default_value_t = 8881)]
    verifier_port: u16,
    /// Seconds between two quotes of an agent (Keylime `[verifier] quote_interval`).
    #[arg(long, env = "ZEST_QUOTE_INTERVAL", default_value_t = 2.0)]
    quote_interval: f64,
    /// The measured-boot component of refstates that name none (Keylime
    /// `[verifier] measured_boot_policy_name`: accept-all, reject-all, example, or a built-in name).
    #[arg(long, env = "ZEST_MEASURED_BOOT_POLICY_NAME", default_value = "accept-all")]
    measured_boot_policy_name: String,
    /// Also POST revocation messages here (Keylime `[revocations] webhook_url`).
    #[arg(long, env = "ZEST_REVOCATION_WEBHOOK")]
    revocation_webhook: Option<String>,
    /// Failed quote requests before an agent is FAILED (Keylime `[verifier] max_retries`).
    #[arg(long, env = "ZEST_MAX_RETRIES", default_value_t = 5)]
    max_retries: u32,
    /// Seconds before the first retry, doubled each time (Keylime `[verifier] retry_interval`).
    #[arg(long, env = "ZEST_RETRY_INTERVAL", default_value_t = 2.0)]
    retry_interval: f64,
    /// Seconds to wait for an agent's answer (Keylime `[verifier] request_timeout`).
    #[arg(long, env = "ZEST_REQUEST_TIMEOUT", default_value_t = 60.0)]
    request_timeout: f64,
    /// Which agents the verifier serves: pull (it polls them), push (API 3.0: they
    /// authenticate and submit evidence), or both, chosen per agent at enrolment (Keylime
    /// `[verifier] mode`).
    #[arg(long, env = "ZEST_MODE", default_value = "pull", value_parser = ["pull", "push", "both"])]
    mode: String,
    /// Push: seconds a session's challenge may be answered (Keylime `nonce_lifetime`).
    #[arg(long, env = "ZEST_NONCE_LIFETIME", default_value_t = 60.0)]
    nonce_lifetime: f64,
    /// Push: seconds a token lives, extended by passing attestations (Keylime `session_lifetime`).
    #[arg(long, env = "ZEST_SESSION_LIFETIME", default_value_t = 180.0)]
    session_lifetime: f64,
    /// Push: seconds an attestation's challenge may be answered (Keylime `challenge_lifetime`).
    #[arg(long, env = "ZEST_CHALLENGE_LIFETIME", default_value_t = 1800.0)]
    challenge_lifetime: f64,
    /// Push: a passing attestation clears earlier failures (Keylime
    /// `auto_recover_attestation_failures`; otherwise only reactivation does).
    #[arg(long, env = "ZEST_AUTO_RECOVER_ATTESTATION_FAILURES")]
    auto_recover_attestation_failures: bool,
    /// Severity labels, least severe first, as a JSON list (Keylime `[verifier] severity_labels`).
    #[arg(long, env = "ZEST_SEVERITY_LABELS", requires = "severity_policy")]
    severity_labels: Option<String>,
    /// Rules `[{"event_id": REGEX, "severity_label": LABEL}, …]` (Keylime `[verifier]
    /// severity_policy`); failures below the last label keep the agent polled.
    #[arg(long, env = "ZEST_SEVERITY_POLICY", requires = "severity_labels")]
    severity_policy: Option<String>,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} must be a number of seconds, 0 or more"))
}

impl VerifierArgs {
    fn config(&self) -> anyhow::Result<VerifierConfig> {
        let mut config = VerifierConfig::defaults();
        config.ip = self.verifier_ip;
        config.port = self.verifier_port;
        if !(self.quote_interval >= 0.0 && self.quote_interval.is_finite()) {
            anyhow::bail!("--quote-interval must be a number of seconds, 0 or more");
        }
        config.quote_interval = self.quote_interval;
        // Keylime's name of the example policy is `example`.
        let name = match self.measured_boot_policy_name.as_str() {
            "example" => "keylime-mb-example",
            other => other,
        };
        if crate::policy::builtin_measured_boot(name).is_none() {
            anyhow::bail!(
                "--measured-boot-policy-name {name}: no such built-in ({})",
                crate::policy::builtin_names(crate::policy::BUILTIN_MEASURED_BOOT)
            );
        }
        config.measured_boot_module = format!("builtin:{name}");
        config.revocation_webhook = self.revocation_webhook.clone();
        config.mode = match self.mode.as_str() {
            "push" => crate::verifier::Mode::Push,
            "both" => crate::verifier::Mode::Both,
            _ => crate::verifier::Mode::Pull,
        };
        config.nonce_lifetime = seconds("--nonce-lifetime", self.nonce_lifetime)?;
        config.session_lifetime = seconds("--session-lifetime", self.session_lifetime)?;
        config.challenge_lifetime = seconds("--challenge-lifetime", self.challenge_lifetime)?;
        config.auto_recover_attestation_failures = self.auto_recover_attestation_failures;
        config.max_retries = self.max_retries;
        config.retry_interval = seconds("--retry-interval", self.retry_interval)?;
        config.request_timeout = seconds("--request-timeout", self.request_timeout)?;
        if let (Some(labels), Some(policy)) = (&self.severity_labels, &self.severity_policy) {
            config.severity = crate::verifier::severity::SeverityPolicy::from_keylime(labels, policy)?;
        }
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct RegistrarArgs {
    /// Address the registrar listens on (Keylime `[registrar] ip`).
    #[arg(long, env = "ZEST_REGISTRAR_IP", default_value = "127.0.0.1")]
    registrar_ip: IpAddr,
    /// Plain-HTTP port for agents (Keylime `[registrar] port`).
    #[arg(long, env = "ZEST_REGISTRAR_PORT", default_value_t = 8890)]
    registrar_port: u16,
    /// HTTPS port (Keylime `[registrar] tls_port`).
    #[arg(long, env = "ZEST_REGISTRAR_TLS_PORT", default_value_t = 8891)]
    registrar_tls_port: u16,
    /// Directory of trusted EK CA certificates (default: DATA_DIR/tpm_cert_store).
    #[arg(long, env = "ZEST_TPM_CERT_STORE")]
    tpm_cert_store: Option<PathBuf>,
    /// Accept agents without checking their EK certificate against the store.
    #[arg(long, env = "ZEST_NO_EK_CERT_CHECK")]
    no_ek_cert_check: bool,
}

impl RegistrarArgs {
    fn config(&self, data_dir: &DataDir) -> RegistrarConfig {
        let mut config = RegistrarConfig::defaults(data_dir);
        config.ip = self.registrar_ip;
        config.port = self.registrar_port;
        config.tls_port = self.registrar_tls_port;
        if let Some(store) = &self.tpm_cert_store {
            config.tpm_cert_store = store.clone();
        }
        config.require_ek_cert = !self.no_ek_cert_check;
        config
    }
}

/// Entry point of the `zest` binary.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Evidence(command) => evidence::run(command),
        Command::Policy(command) => policy::run(command),
        Command::Serve(args) => {
            let data_dir = DataDir(args.data_dir.clone());
            let verifier_config = args.verifier.config()?;
            let registrar = start_registrar(&data_dir, &args).await?;
            let verifier = start_verifier(&data_dir, &verifier_config).await?;
            tokio::select! {
                _ = registrar.wait() => {}
                _ = verifier.wait() => {}
                r = tokio::signal::ctrl_c() => shutdown(r)?,
            }
            Ok(())
        }
        Command::Registrar(args) => {
            let data_dir = DataDir(args.data_dir.clone());
            let registrar = start_registrar(&data_dir, &args).await?;
            tokio::select! {
                _ = registrar.wait() => {}
                r = tokio::signal::ctrl_c() => shutdown(r)?,
            }
            Ok(())
        }
        Command::Verifier(args) => {
            let data_dir = DataDir(args.data_dir.clone());
            let verifier = start_verifier(&data_dir, &args.verifier.config()?).await?;
            tokio::select! {
                _ = verifier.wait() => {}
                r = tokio::signal::ctrl_c() => shutdown(r)?,
            }
            Ok(())
        }
    }
}

fn shutdown(signal: std::io::Result<()>) -> anyhow::Result<()> {
    signal.context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    Ok(())
}

async fn start_registrar(
    data_dir: &DataDir,
    args: &ServeArgs,
) -> anyhow::Result<crate::registrar::RegistrarServer> {
    let config = args.registrar.config(data_dir);
    let server = crate::registrar::start(data_dir, &config)
        .await
        .with_context(|| format!("starting the registrar (data dir {})", data_dir.path().display()))?;
    eprintln!(
        "zest registrar: http://{} (agents), https://{} (agents, tenant); data in {}",
        server.http_addr,
        server.https_addr,
        data_dir.path().display()
    );
    Ok(server)
}

async fn start_verifier(
    data_dir: &DataDir,
    config: &VerifierConfig,
) -> anyhow::Result<crate::verifier::VerifierServer> {
    let server = crate::verifier::start(data_dir, config)
        .await
        .with_context(|| format!("starting the verifier (data dir {})", data_dir.path().display()))?;
    eprintln!(
        "zest verifier: https://{} (tenant, mTLS); data in {}",
        server.addr,
        data_dir.path().display()
    );
    Ok(server)
}
