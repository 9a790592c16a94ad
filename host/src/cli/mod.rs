//! The `zest` command line: parses arguments and calls into the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_DATA_DIR, DataDir, RegistrarConfig};

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
    /// Run every service in one process (today: the registrar).
    Serve(ServeArgs),
    /// Run the registrar: agent registration and activation.
    Registrar(ServeArgs),
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
        Command::Serve(args) | Command::Registrar(args) => {
            let data_dir = DataDir(args.data_dir.clone());
            let config = args.registrar.config(&data_dir);
            let server = crate::registrar::start(&data_dir, &config)
                .await
                .with_context(|| {
                    format!("starting the registrar (data dir {})", data_dir.path().display())
                })?;
            eprintln!(
                "zest registrar: http://{} (agents), https://{} (agents, tenant); data in {}",
                server.http_addr,
                server.https_addr,
                data_dir.path().display()
            );
            tokio::select! {
                _ = server.wait() => {}
                r = tokio::signal::ctrl_c() => {
                    r.context("waiting for Ctrl-C")?;
                    tracing::info!("shutting down");
                }
            }
            Ok(())
        }
    }
}
