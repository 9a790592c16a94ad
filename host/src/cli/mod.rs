//! The `zest` command line: parses arguments and calls into the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::path::Path;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::keylime::{self, Effective, Service};
use crate::config::{DEFAULT_DATA_DIR, DataDir, RegistrarConfig};
use crate::verifier::VerifierConfig;

mod ca;
mod canary;
mod cert_package;
mod evidence;
mod import;
mod policy;
mod policy_new;
mod policy_sign;
mod quota;
mod tenant;

#[derive(Debug, Parser)]
#[command(
    name = "zest",
    version,
    about = "Keylime-compatible remote-attestation server"
)]
struct Cli {
    /// Directory for the database, TLS material (cv_ca/) and EK CA store (tpm_cert_store/)
    /// (`[zest] data_dir`; default /var/lib/zest). The tenant finds its certificates there.
    #[arg(long, global = true, env = "ZEST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory of Keylime's configuration files (verifier.conf, registrar.conf,
    /// tenant.conf and their .conf.d snippets).
    #[arg(long, global = true, env = "ZEST_CONFIG_DIR", default_value = "/etc/keylime")]
    config_dir: PathBuf,
    /// Log lines as text or as JSON objects (`[zest] log_format`); filter with RUST_LOG.
    #[arg(long, global = true, env = "ZEST_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
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
    /// The operator's client: enrol agents, read their status, manage policies and modules.
    Tenant(tenant::TenantArgs),
    /// The quotas of a tenant of a shared server (agents, policies, components, sizes,
    /// instance memory, evaluation time); the operator's.
    Quota(quota::QuotaArgs),
    /// Certificates for an installation: CA, server and client certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// The effective configuration: every option's value and where it came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect evidence files offline: UEFI event logs, IMA lists, quotes.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Policy tools: dry-run a policy on evidence files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The durable attestation log (`durable_attestation_import`, file backend).
    #[command(subcommand)]
    Durable(DurableCommand),
    /// Switch a running fleet to zest: bring over another server's registrations,
    /// enrolments and policies (a dry run unless --apply).
    #[command(subcommand)]
    Import(import::ImportCommand),
}

#[derive(Debug, Subcommand)]
enum DurableCommand {
    /// Check a log's hash chain: every line as written, none removed or inserted.
    Verify {
        /// The log (`attestations.jsonl`) or its directory (`persistent_store_url`).
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print each option of a service with its value and source (default, file:line, env, flag).
    Show {
        /// verifier, registrar or tenant.
        #[arg(default_value = "verifier", value_parser = ["verifier", "registrar", "tenant"])]
        service: String,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    registrar: RegistrarArgs,
    #[command(flatten)]
    verifier: VerifierArgs,
}

/// Flags of the verifier; each overrides the Keylime option named in its help (verifier.conf).
#[derive(Debug, Args)]
struct VerifierArgs {
    /// Address the verifier listens on (`[verifier] ip`, 127.0.0.1).
    #[arg(long, env = "ZEST_VERIFIER_IP")]
    verifier_ip: Option<IpAddr>,
    /// HTTPS port, client certificates required (`[verifier] port`, 8881).
    #[arg(long, env = "ZEST_VERIFIER_PORT")]
    verifier_port: Option<u16>,
    /// This verifier's id in agent records (`[verifier] uuid`, default).
    #[arg(long, env = "ZEST_VERIFIER_ID")]
    verifier_id: Option<String>,
    /// Seconds between two quotes of an agent (`[verifier] quote_interval`, 2).
    #[arg(long, env = "ZEST_QUOTE_INTERVAL")]
    quote_interval: Option<f64>,
    /// The measured-boot component of refstates that name none (`[verifier]
    /// measured_boot_policy_name`: accept-all, reject-all, example, or a built-in name).
    #[arg(long, env = "ZEST_MEASURED_BOOT_POLICY_NAME")]
    measured_boot_policy_name: Option<String>,
    /// Also POST revocation messages here (`[revocations] webhook_url`).
    #[arg(long, env = "ZEST_REVOCATION_WEBHOOK")]
    revocation_webhook: Option<String>,
    /// Failed quote requests before an agent is FAILED (`[verifier] max_retries`, 5).
    #[arg(long, env = "ZEST_MAX_RETRIES")]
    max_retries: Option<u32>,
    /// Seconds before the first retry, doubled each time (`[verifier] retry_interval`, 2).
    #[arg(long, env = "ZEST_RETRY_INTERVAL")]
    retry_interval: Option<f64>,
    /// Seconds to wait for an agent's answer (`[verifier] request_timeout`, 60).
    #[arg(long, env = "ZEST_REQUEST_TIMEOUT")]
    request_timeout: Option<f64>,
    /// Which agents the verifier serves: pull (it polls them), push (API 3.0: they
    /// authenticate and submit evidence), or both, chosen per agent at enrolment
    /// (`[verifier] mode`, pull).
    #[arg(long, env = "ZEST_MODE", value_parser = ["pull", "push", "both"])]
    mode: Option<String>,
    /// Push: seconds a session's challenge may be answered (`nonce_lifetime`, 60).
    #[arg(long, env = "ZEST_NONCE_LIFETIME")]
    nonce_lifetime: Option<f64>,
    /// Push: seconds a token lives, extended by passing attestations (`session_lifetime`, 180).
    #[arg(long, env = "ZEST_SESSION_LIFETIME")]
    session_lifetime: Option<f64>,
    /// Push: seconds an attestation's challenge may be answered (`challenge_lifetime`, 1800).
    #[arg(long, env = "ZEST_CHALLENGE_LIFETIME")]
    challenge_lifetime: Option<f64>,
    /// Push: a passing attestation clears earlier failures
    /// (`auto_recover_attestation_failures`; otherwise only reactivation does).
    #[arg(long, env = "ZEST_AUTO_RECOVER_ATTESTATION_FAILURES")]
    auto_recover_attestation_failures: bool,
    /// Severity labels, least severe first, as a JSON list (`[verifier] severity_labels`).
    #[arg(long, env = "ZEST_SEVERITY_LABELS")]
    severity_labels: Option<String>,
    /// Rules `[{"event_id": REGEX, "severity_label": LABEL}, …]` (`[verifier]
    /// severity_policy`); failures below the last label keep the agent polled.
    #[arg(long, env = "ZEST_SEVERITY_POLICY")]
    severity_policy: Option<String>,
}

fn seconds(value: &str) -> Result<std::time::Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| "must be a number of seconds, 0 or more".into())
}

fn database(value: &str) -> Result<crate::store::Database, String> {
    crate::store::Database::from_url(value).map_err(|e| e.to_string())
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| "not a valid number".into())
}

/// Keylime's durable attestation settings: the file backend (`keylime.da.examples.file`,
/// `persistent_store_url = file:///DIR[?prefix=…]`) keeps its log in DIR; none when
/// `durable_attestation_import` is empty.
fn durable_dir(import: &str, url: &str) -> anyhow::Result<Option<PathBuf>> {
    if import.is_empty() {
        return Ok(None);
    }
    if import.rsplit('.').next() != Some("file") {
        anyhow::bail!(
            "[verifier] durable_attestation_import: zest offers the file backend (keylime.da.examples.file), not {import}"
        );
    }
    let path = url
        .strip_prefix("file://")
        .map(|p| p.split('?').next().unwrap_or(p));
    match path {
        Some(p) if p.starts_with('/') => Ok(Some(PathBuf::from(p))),
        _ => anyhow::bail!(
            "[verifier] persistent_store_url: the file backend needs file:///ABSOLUTE/DIR, not {url:?}"
        ),
    }
}

/// The verifier's settings from its effective configuration.
fn verifier_config(eff: &Effective) -> anyhow::Result<VerifierConfig> {
    let v = "verifier";
    let mut config = VerifierConfig::defaults();
    config.ip = eff.parsed(v, "ip", number)?;
    config.port = eff.parsed(v, "port", number)?;
    config.verifier_id = eff.parsed(v, "uuid", |s| Ok(s.to_owned()))?;
    config.database = eff.parsed(v, "database_url", database)?;
    config.lease_period = eff.parsed("zest", "lease_period", |s| {
        let period = seconds(s)?;
        let allowed = std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600);
        if allowed.contains(&period) {
            Ok(period)
        } else {
            Err("must be between 0.1 and 3600 seconds".to_owned())
        }
    })?;
    config.history_retention = crate::store::history::Retention {
        keep_passes: eff.parsed("zest", "history_keep_passes", number)?,
        keep_failures: eff.parsed("zest", "history_keep_failures", number)?,
    };
    let durable_import = eff.parsed(v, "durable_attestation_import", |s| Ok(s.trim().to_owned()))?;
    let store_url = eff.parsed(v, "persistent_store_url", |s| Ok(s.trim().to_owned()))?;
    config.durable_dir = durable_dir(&durable_import, &store_url)?;
    config.quote_interval = eff.parsed(v, "quote_interval", |s| {
        number::<f64>(s)
            .ok()
            .filter(|q| *q >= 0.0 && q.is_finite())
            .ok_or_else(|| "must be a number of seconds, 0 or more".to_owned())
    })?;
    let name = eff.parsed(v, "measured_boot_policy_name", |s| {
        // Keylime's name of the example policy is `example`.
        let name = if s == "example" { "keylime-mb-example" } else { s };
        match crate::policy::builtin_measured_boot(name) {
            Some(_) => Ok(name.to_owned()),
            None => Err(format!(
                "no such built-in ({})",
                crate::policy::builtin_names(crate::policy::BUILTIN_MEASURED_BOOT)
            )),
        }
    })?;
    config.measured_boot_module = format!("builtin:{name}");
    config.revocation_webhook = eff
        .get("revocations", "webhook_url")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let channels: Vec<String> = eff.parsed("revocations", "enabled_revocation_notifications", |s| {
        serde_json::from_str(&keylime::list_as_json(s)?).map_err(|_| "must be a list of names".to_owned())
    })?;
    let chosen = crate::verifier::notify::Channels::choose(
        &channels,
        eff.is_default("revocations", "enabled_revocation_notifications"),
        config.revocation_webhook.is_some(),
    );
    config.notify_agents = chosen.agents;
    config.notify_webhook = chosen.webhook;
    for other in &chosen.unknown {
        tracing::warn!(channel = %other, "enabled_revocation_notifications names a channel zest does not offer (ZeroMQ is out of scope): ignored");
    }
    if config.revocation_webhook.is_some() && !config.notify_webhook {
        tracing::warn!(
            "webhook_url is set, but enabled_revocation_notifications does not list 'webhook': the webhook gets no revocations"
        );
    }
    config.exponential_backoff = eff.parsed(v, "exponential_backoff", keylime::parse_bool)?;
    config.require_allow_list_signatures =
        eff.parsed(v, "require_allow_list_signatures", keylime::parse_bool)?;
    config.tls = tls_options(eff, v);
    config.mode = eff.parsed(v, "mode", |s| match s {
        "pull" => Ok(crate::verifier::Mode::Pull),
        "push" => Ok(crate::verifier::Mode::Push),
        "both" => Ok(crate::verifier::Mode::Both),
        _ => Err("must be pull, push or both".into()),
    })?;
    config.nonce_lifetime = eff.parsed(v, "nonce_lifetime", seconds)?;
    config.session_lifetime = eff.parsed(v, "session_lifetime", seconds)?;
    config.challenge_lifetime = eff.parsed(v, "challenge_lifetime", seconds)?;
    config.auto_recover_attestation_failures =
        eff.parsed(v, "auto_recover_attestation_failures", keylime::parse_bool)?;
    config.max_retries = eff.parsed(v, "max_retries", number)?;
    config.retry_interval = eff.parsed(v, "retry_interval", seconds)?;
    config.request_timeout = eff.parsed(v, "request_timeout", seconds)?;
    config.serve_limits = serve_limits(eff)?;
    config.max_evidence_size = eff.parsed("zest", "max_evidence_size", number)?;
    config.policy_limits = crate::policy::PolicyLimits {
        deadline: eff.parsed("zest", "policy_timeout", seconds)?,
        memory_bytes: eff.parsed("zest", "policy_memory", number)?,
    };
    config.max_upload_size = eff.parsed(v, "max_upload_size", number)?;
    let labels = eff.parsed(v, "severity_labels", keylime::list_as_json)?;
    config.severity = eff.parsed(v, "severity_policy", |policy| {
        crate::verifier::severity::SeverityPolicy::from_keylime(&labels, &keylime::list_as_json(policy)?)
            .map_err(|e| e.to_string())
    })?;
    Ok(config)
}

/// `[zest]` listener limits.
fn serve_limits(eff: &Effective) -> anyhow::Result<crate::net::ServeLimits> {
    Ok(crate::net::ServeLimits {
        max_connections: eff.parsed("zest", "max_connections", number)?,
        max_in_flight: eff.parsed("zest", "max_in_flight_requests", number)?,
        body_timeout: eff.parsed("zest", "body_timeout", seconds)?,
        idle_timeout: eff.parsed("zest", "idle_timeout", seconds)?,
    })
}

/// Keylime's TLS options of `section` as written; the registrar has no client side.
fn tls_options(eff: &Effective, section: &str) -> crate::net::TlsOptions {
    let defaults = crate::net::TlsOptions::default();
    let get = |key: &str, default: &str| eff.get(section, key).unwrap_or(default).trim().to_owned();
    crate::net::TlsOptions {
        tls_dir: get("tls_dir", &defaults.tls_dir),
        server_cert: get("server_cert", &defaults.server_cert),
        server_key: get("server_key", &defaults.server_key),
        server_key_password: eff.get(section, "server_key_password").unwrap_or("").to_owned(),
        trusted_client_ca: get("trusted_client_ca", &defaults.trusted_client_ca),
        client_cert: get("client_cert", &defaults.client_cert),
        client_key: get("client_key", &defaults.client_key),
        client_key_password: eff.get(section, "client_key_password").unwrap_or("").to_owned(),
        trusted_server_ca: get("trusted_server_ca", &defaults.trusted_server_ca),
    }
}

fn registrar_config(eff: &Effective, data_dir: &DataDir) -> anyhow::Result<RegistrarConfig> {
    let r = "registrar";
    let mut config = RegistrarConfig::defaults(data_dir);
    config.tls = tls_options(eff, r);
    config.ip = eff.parsed(r, "ip", number)?;
    config.port = eff.parsed(r, "port", number)?;
    config.tls_port = eff.parsed(r, "tls_port", number)?;
    config.database = eff.parsed(r, "database_url", database)?;
    if let Some(store) = eff.get("zest", "tpm_cert_store").filter(|s| !s.is_empty()) {
        config.tpm_cert_store = PathBuf::from(store);
    }
    config.require_ek_cert = eff.parsed("zest", "require_ek_cert", keylime::parse_bool)?;
    config.registration_timeout = eff.parsed("zest", "registration_timeout", seconds)?;
    config.serve_limits = serve_limits(eff)?;
    Ok(config)
}

#[derive(Debug, Args)]
struct RegistrarArgs {
    /// Address the registrar listens on (`[registrar] ip`, 127.0.0.1).
    #[arg(long, env = "ZEST_REGISTRAR_IP")]
    registrar_ip: Option<IpAddr>,
    /// Plain-HTTP port for agents (`[registrar] port`, 8890).
    #[arg(long, env = "ZEST_REGISTRAR_PORT")]
    registrar_port: Option<u16>,
    /// HTTPS port (`[registrar] tls_port`, 8891).
    #[arg(long, env = "ZEST_REGISTRAR_TLS_PORT")]
    registrar_tls_port: Option<u16>,
    /// Directory of trusted EK CA certificates (`[zest] tpm_cert_store`; default
    /// DATA_DIR/tpm_cert_store).
    #[arg(long, env = "ZEST_TPM_CERT_STORE")]
    tpm_cert_store: Option<PathBuf>,
    /// Accept agents without checking their EK certificate against the store
    /// (`[zest] require_ek_cert = False`).
    #[arg(long, env = "ZEST_NO_EK_CERT_CHECK")]
    no_ek_cert_check: bool,
    /// Seconds a registration waits for its activation (`[zest] registration_timeout`, 600).
    #[arg(long, env = "ZEST_REGISTRATION_TIMEOUT")]
    registration_timeout: Option<f64>,
}

/// Loads `service`'s files and environment, then lays the flags given in `matches` over them.
fn effective(service: Service, config_dir: &Path, matches: Option<&ArgMatches>) -> anyhow::Result<Effective> {
    let mut eff = Effective::load(service, config_dir)?;
    let Some(matches) = matches else {
        return Ok(eff);
    };
    for spec in keylime::options(service) {
        let Some(id) = spec.flag else {
            continue;
        };
        let Ok(Some(source)) = matches
            .try_get_raw(id)
            .map(|raw| raw.and(matches.value_source(id)))
        else {
            continue;
        };
        let from = match source {
            ValueSource::CommandLine => format!("--{}", id.replace('_', "-")),
            ValueSource::EnvVariable => format!("ZEST_{} (env)", id.to_uppercase()),
            _ => continue,
        };
        let raw = matches
            .get_raw(id)
            .and_then(|mut values| values.next())
            .map(|v| v.to_string_lossy().into_owned());
        let value = match (id, raw) {
            // Switches: present means on.
            ("no_ek_cert_check", _) => "False".to_owned(),
            ("auto_recover_attestation_failures", _) => "True".to_owned(),
            (_, Some(v)) => v,
            (_, None) => continue,
        };
        eff.set_flag(spec.section, spec.key, value, from);
    }
    Ok(eff)
}

fn data_dir_of(eff: &Effective) -> DataDir {
    DataDir(
        eff.path_value("data_dir")
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    )
}

/// Entry point of the `zest` binary.
pub fn run() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == Some("json") {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The global `--data-dir` wins over `[zest] data_dir`.
fn with_data_dir(
    mut eff: Effective,
    data_dir: Option<&Path>,
    log_format: Option<&str>,
    matches: &ArgMatches,
) -> Effective {
    if let Some(dir) = data_dir {
        let from = match matches.value_source("data_dir") {
            Some(ValueSource::EnvVariable) => "ZEST_DATA_DIR (env)",
            _ => "--data-dir",
        };
        eff.set_flag("zest", "data_dir", dir.display().to_string(), from.into());
    }
    if let Some(format) = log_format {
        eff.set_flag("zest", "log_format", format.to_owned(), "--log-format".into());
    }
    eff
}

async fn dispatch(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let Cli {
        data_dir,
        config_dir,
        log_format,
        command,
    } = cli;
    let sub = matches.subcommand().map(|(_, m)| m);
    let load = |service| -> anyhow::Result<Effective> {
        let eff = effective(service, &config_dir, sub)?;
        Ok(with_data_dir(
            eff,
            data_dir.as_deref(),
            log_format.as_deref(),
            matches,
        ))
    };
    // Each service's configuration is read once: it sets the log format and then the service.
    let runs_verifier = matches!(
        command,
        Command::Serve(_) | Command::Verifier(_) | Command::Import(_)
    );
    let runs_registrar = matches!(
        command,
        Command::Serve(_) | Command::Registrar(_) | Command::Import(_)
    );
    let verifier_eff = runs_verifier.then(|| load(Service::Verifier)).transpose()?;
    let registrar_eff = runs_registrar.then(|| load(Service::Registrar)).transpose()?;
    let format = verifier_eff
        .as_ref()
        .or(registrar_eff.as_ref())
        .and_then(|eff| eff.value("log_format"))
        .or(log_format.as_deref());
    init_logging(format);
    for eff in verifier_eff.iter().chain(registrar_eff.iter()) {
        keylime::log_overrides(eff);
    }
    let loaded = |eff: Option<Effective>| eff.context("configuration not loaded");
    match command {
        Command::Evidence(command) => evidence::run(command),
        Command::Policy(policy::PolicyCommand::Canary(args)) => {
            canary::canary(*args, data_dir.as_deref(), &config_dir).await
        }
        Command::Policy(policy::PolicyCommand::Promote(args)) => {
            canary::promote(args, data_dir.as_deref(), &config_dir).await
        }
        Command::Policy(policy::PolicyCommand::Rollback(args)) => {
            canary::rollback(args, data_dir.as_deref(), &config_dir).await
        }
        Command::Policy(policy::PolicyCommand::Versions(args)) => {
            canary::versions(args, data_dir.as_deref(), &config_dir).await
        }
        Command::Policy(command) => policy::run(command),
        Command::Durable(DurableCommand::Verify { path }) => {
            let file = if path.is_dir() {
                path.join(crate::store::durable::LOG_FILE)
            } else {
                path
            };
            let (count, last) = crate::store::durable::verify(&file)?;
            println!(
                "{}: {count} rounds, chain intact (last line {last})",
                file.display()
            );
            Ok(())
        }
        Command::Tenant(args) => tenant::run(args, data_dir.as_deref(), &config_dir).await,
        Command::Quota(args) => quota::run(args, data_dir.as_deref(), &config_dir).await,
        Command::Ca(command) => ca::run(command, data_dir.as_deref()),
        Command::Import(command) => {
            let verifier_eff = loaded(verifier_eff)?;
            let registrar_eff = loaded(registrar_eff)?;
            let data_dir = data_dir_of(&verifier_eff);
            let verifier = verifier_config(&verifier_eff)?;
            let targets = import::Targets {
                registrar: registrar_config(&registrar_eff, &data_dir)?.database,
                verifier: verifier.database,
                measured_boot_module: verifier.measured_boot_module,
                data_dir,
            };
            // The stores block on their own threads (PostgreSQL's client runs a runtime).
            tokio::task::spawn_blocking(move || import::run(command, &targets)).await?
        }
        Command::Config(ConfigCommand::Show { service }) => {
            let service = Service::from_name(&service).unwrap_or(Service::Verifier);
            let eff = load(service)?;
            print!("{}", keylime::show(&eff));
            Ok(())
        }
        Command::Serve(_) => {
            let verifier_eff = loaded(verifier_eff)?;
            let registrar_eff = loaded(registrar_eff)?;
            let data_dir = data_dir_of(&verifier_eff);
            let verifier_config = verifier_config(&verifier_eff)?;
            let registrar = start_registrar(&data_dir, &registrar_config(&registrar_eff, &data_dir)?).await?;
            let verifier = start_verifier(&data_dir, &verifier_config).await?;
            tokio::select! {
                _ = registrar.wait() => {}
                _ = verifier.wait() => {}
                r = tokio::signal::ctrl_c() => shutdown(r)?,
            }
            Ok(())
        }
        Command::Registrar(_) => {
            let eff = loaded(registrar_eff)?;
            let data_dir = data_dir_of(&eff);
            let registrar = start_registrar(&data_dir, &registrar_config(&eff, &data_dir)?).await?;
            tokio::select! {
                _ = registrar.wait() => {}
                r = tokio::signal::ctrl_c() => shutdown(r)?,
            }
            Ok(())
        }
        Command::Verifier(_) => {
            let eff = loaded(verifier_eff)?;
            let data_dir = data_dir_of(&eff);
            let verifier = start_verifier(&data_dir, &verifier_config(&eff)?).await?;
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
    config: &RegistrarConfig,
) -> anyhow::Result<crate::registrar::RegistrarServer> {
    let server = crate::registrar::start(data_dir, config)
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
