//! `zest tenant`: the operator's client of a verifier and registrar (Keylime's
//! `keylime_tenant`), over mTLS with the tenant certificate.
//!
//! Where it connects and with which certificate comes from `tenant.conf` (Keylime's
//! `[tenant]` options), or from the layout `zest serve --data-dir DIR` creates when the global
//! `--data-dir` is given, and from the flags here, in increasing precedence.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(subcommand)]
    command: TenantCommand,
}

/// Where the verifier and registrar are, and the operator's certificate for them.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// The verifier, HOST:PORT (tenant.conf `verifier_ip`, `verifier_port`; default 127.0.0.1:8881).
    #[arg(long, env = "ZEST_TENANT_VERIFIER")]
    verifier: Option<String>,
    /// The registrar's HTTPS listener, HOST:PORT (tenant.conf `registrar_ip`,
    /// `registrar_port`; default 127.0.0.1:8891).
    #[arg(long, env = "ZEST_TENANT_REGISTRAR")]
    registrar: Option<String>,
    /// Directory holding `cacert.crt`, `client-cert.crt` and `client-private.pem` (default:
    /// DIR/cv_ca with `--data-dir DIR`, else tenant.conf `tls_dir`, else /var/lib/zest/cv_ca).
    #[arg(long, env = "ZEST_TENANT_TLS_DIR")]
    tls_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Enrol a registered agent with the verifier (Keylime `-c add`).
    Add(AddArgs),
    /// Remove an agent from the verifier (Keylime `-c delete`).
    Delete(UuidArg),
    /// Replace an agent's enrolment: delete, then add again (Keylime `-c update`).
    Update(AddArgs),
    /// The verifier's view of an agent: a table, or its record with `--json`.
    Status(StatusArgs),
    /// Every agent the verifier attests.
    List(JsonArg),
    /// An agent's judged rounds, newest first: verdicts, failures, IMA ranges, policies.
    History(HistoryArgs),
    /// Resume attesting a failed or stopped agent (Keylime `-c reactivate`).
    Reactivate(UuidArg),
    /// Stop attesting an agent, keeping its enrolment.
    Stop(UuidArg),
    /// The registrar's view of an agent (Keylime `-c regstatus`).
    Regstatus(StatusArgs),
    /// Every agent the registrar knows.
    Reglist(JsonArg),
    /// Remove an agent from the registrar (Keylime `-c regdelete`).
    Regdelete(UuidArg),
    /// Named runtime policies (Keylime's allowlists).
    #[command(subcommand, name = "runtime-policy")]
    RuntimePolicy(PolicyCommand),
    /// Named measured-boot reference states.
    #[command(subcommand, name = "mb-policy")]
    MbPolicy(PolicyCommand),
    /// Policy components (WebAssembly) on the verifier.
    #[command(subcommand)]
    Module(ModuleCommand),
}

#[derive(Debug, Args)]
struct UuidArg {
    /// The agent's id.
    #[arg(long, short = 'u')]
    uuid: String,
}

#[derive(Debug, Args)]
struct JsonArg {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[arg(long, short = 'u')]
    uuid: String,
    /// Rounds from this time on (Unix seconds or RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Rounds before this time.
    #[arg(long)]
    until: Option<String>,
    /// Only passing or only failing rounds.
    #[arg(long, value_parser = ["pass", "fail"])]
    verdict: Option<String>,
    /// Rounds per page (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Every page, not only the newest.
    #[arg(long)]
    all: bool,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[arg(long, short = 'u')]
    uuid: String,
    /// Print the server's agent record as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The agent's id, as it registered.
    #[arg(long, short = 'u')]
    uuid: String,
    /// The agent's address for pull mode (default: what it told the registrar).
    #[arg(long, short = 't')]
    ip: Option<String>,
    /// The agent's port for pull mode (default: what it told the registrar).
    #[arg(long)]
    port: Option<u16>,
    /// A runtime policy file (Keylime JSON) to enrol with.
    #[arg(long, conflicts_with = "runtime_policy_name")]
    runtime_policy: Option<PathBuf>,
    /// A runtime policy already stored on the verifier.
    #[arg(long)]
    runtime_policy_name: Option<String>,
    /// The public key (PEM) or certificate that signed `--runtime-policy`, a DSSE envelope
    /// (Keylime `--runtime-policy-sig-key`).
    #[arg(long, requires = "runtime_policy")]
    runtime_policy_sig_key: Option<PathBuf>,
    /// A measured-boot reference state file (JSON) to enrol with.
    #[arg(long, conflicts_with = "mb_policy_name")]
    mb_policy: Option<PathBuf>,
    /// A measured-boot reference state already stored on the verifier.
    #[arg(long)]
    mb_policy_name: Option<String>,
    /// Keylime's `tpm_policy`: JSON mapping PCR numbers to accepted values, e.g.
    /// '{"15": ["0000…"]}'. PCRs the policies need are added to the quote mask.
    #[arg(long, default_value = "{}")]
    tpm_policy: String,
    /// Push mode (API 3.0): the agent submits evidence itself; no address is enrolled.
    #[arg(long, conflicts_with_all = ["ip", "port", "payload", "cert"])]
    push: bool,
    /// A file delivered to the agent encrypted under the bootstrap key K; the agent can read
    /// it only once the verifier has seen a good quote and released V (Keylime `-f`).
    #[arg(long, conflicts_with = "cert")]
    payload: Option<PathBuf>,
    /// Keylime's certificate package as the payload (Keylime `--cert`): the agent's key and
    /// certificate from the CA in DIR (issued on first use), the CA certificate and CRL,
    /// and the RevocationNotifier certificate, whose key then signs the agent's revocations.
    #[arg(long, value_name = "DIR")]
    cert: Option<PathBuf>,
    /// Files (or a directory's files) added to the `--cert` package, e.g. an `autorun.sh`
    /// the agent runs after unpacking it (Keylime `--include`).
    #[arg(long, requires = "cert", num_args = 1..)]
    include: Vec<PathBuf>,
    /// After enrolling, wait until the agent proves it rebuilt K (Keylime `--verify`).
    #[arg(long)]
    verify: bool,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Store a policy under a name.
    Create(PolicyFileArgs),
    /// Replace a stored policy.
    Update(PolicyFileArgs),
    /// Print a stored policy's record.
    Show(NameArg),
    /// Names of the stored policies.
    List,
    /// Remove a stored policy (refused while an agent uses it).
    Delete(NameArg),
}

#[derive(Debug, Args)]
struct PolicyFileArgs {
    /// The policy's name.
    #[arg(long, short = 'n')]
    name: String,
    /// The policy document (JSON).
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// The component that judges with it: `builtin:…` or `sha256:…` of an uploaded module.
    #[arg(long)]
    module: Option<String>,
    /// Runtime policies: the public key (PEM) or certificate that signed the file, a DSSE
    /// envelope (Keylime `--runtime-policy-sig-key`).
    #[arg(long)]
    sig_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct NameArg {
    #[arg(long, short = 'n')]
    name: String,
}

#[derive(Debug, Subcommand)]
enum ModuleCommand {
    /// Upload a policy component (.wasm); prints its id `sha256:…`.
    Upload {
        /// The component file.
        file: PathBuf,
        /// Which world it implements: runtime or measured-boot (default: the verifier checks both).
        #[arg(long, value_parser = ["runtime", "measured-boot"])]
        kind: Option<String>,
    },
    /// The components the verifier holds, built-ins included.
    List(JsonArg),
    /// Remove an uploaded component.
    Delete {
        /// Its id, `sha256:…`.
        id: String,
    },
}

mod connection;
mod enrol;
mod history;
mod policies;
mod show;

pub(crate) use connection::{Connection, Reply, Server, Tenant};
use enrol::{add_agent, delete_agent};
use history::history;
use policies::{PolicyKind, module, policy};
pub(crate) use show::time_text;
use show::{list, regstatus, status};

pub async fn run(args: TenantArgs, data_dir: Option<&Path>, config_dir: &Path) -> anyhow::Result<()> {
    let conn = Connection::resolve(&args.connection, data_dir, config_dir)?;
    let tenant = Tenant {
        http: conn.client()?,
        conn,
        versions: Default::default(),
    };
    match args.command {
        TenantCommand::Add(add) => add_agent(&tenant, &add).await,
        TenantCommand::Update(add) => {
            delete_agent(&tenant, &add.uuid, true).await?;
            add_agent(&tenant, &add).await
        }
        TenantCommand::Delete(a) => delete_agent(&tenant, &a.uuid, false).await,
        TenantCommand::Status(a) => status(&tenant, &a.uuid, a.json).await,
        TenantCommand::List(a) => list(&tenant, a.json).await,
        TenantCommand::History(a) => {
            history(
                &tenant,
                &a.uuid,
                a.since.as_deref(),
                a.until.as_deref(),
                a.verdict.as_deref(),
                a.limit,
                a.all,
                a.json,
            )
            .await
        }
        TenantCommand::Reactivate(a) => put_agent(&tenant, &a.uuid, "reactivate", "reactivated").await,
        TenantCommand::Stop(a) => put_agent(&tenant, &a.uuid, "stop", "stopped").await,
        TenantCommand::Regstatus(a) => regstatus(&tenant, &a.uuid, a.json).await,
        TenantCommand::Reglist(a) => {
            let url = tenant.url(Server::Registrar, "agents").await?;
            let reply = tenant
                .expect(Server::Registrar, tenant.http.get(url), "listing agents")
                .await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(reply.results())?);
            } else {
                for id in ids(&reply.results()["uuids"]) {
                    println!("{id}");
                }
            }
            Ok(())
        }
        TenantCommand::Regdelete(a) => {
            let url = tenant
                .url(Server::Registrar, &format!("agents/{}", a.uuid))
                .await?;
            tenant
                .expect(
                    Server::Registrar,
                    tenant.http.delete(url),
                    &format!("deleting {}", a.uuid),
                )
                .await?;
            println!("agent {} removed from the registrar", a.uuid);
            Ok(())
        }
        TenantCommand::RuntimePolicy(c) => policy(&tenant, PolicyKind::Runtime, c).await,
        TenantCommand::MbPolicy(c) => policy(&tenant, PolicyKind::MeasuredBoot, c).await,
        TenantCommand::Module(c) => module(&tenant, c).await,
    }
}

/// `PUT /agents/{uuid}/{action}` on the verifier (reactivate, stop).
async fn put_agent(tenant: &Tenant, uuid: &str, action: &str, done: &str) -> anyhow::Result<()> {
    let url = tenant
        .url(Server::Verifier, &format!("agents/{uuid}/{action}"))
        .await?;
    tenant
        .expect(
            Server::Verifier,
            tenant.http.put(url),
            &format!("{action} {uuid}"),
        )
        .await?;
    println!("agent {uuid} {done}");
    Ok(())
}

/// Keylime's agent lists are lists of one-element lists (or plain strings in places).
fn ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(inner) => inner.first().and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
