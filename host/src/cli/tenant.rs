//! `zest tenant`: the operator's client of a verifier and registrar (Keylime's
//! `keylime_tenant`), over mTLS with the tenant certificate.
//!
//! Where it connects and with which certificate comes from `tenant.conf` (Keylime's
//! `[tenant]` options), or from the layout `zest serve --data-dir DIR` creates when the global
//! `--data-dir` is given, and from the flags here, in increasing precedence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::bootstrap::BootstrapKey;
use crate::config::keylime::{Effective, Service};

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

/// Where the tenant connects and the files it authenticates with.
#[derive(Debug, Clone)]
pub struct Connection {
    pub verifier: String,
    pub registrar: String,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// tenant.conf `client_key_password`, for an encrypted PKCS#8 `client_key`.
    pub client_key_password: Option<String>,
    /// Every CA of tenant.conf's `trusted_server_ca` list after the first (`ca_cert`).
    pub more_cas: Vec<PathBuf>,
    /// tenant.conf `accept_tpm_hash_algs`, `accept_tpm_encryption_algs`,
    /// `accept_tpm_signing_algs`: what the identity quote and the verifier may accept.
    pub accept: Accept,
}

/// The TPM algorithms an agent may use (Keylime's accept lists).
#[derive(Debug, Clone)]
pub struct Accept {
    pub hash: Vec<String>,
    pub encryption: Vec<String>,
    pub signing: Vec<String>,
}

impl Connection {
    /// The tenant's settings: tenant.conf, then `--data-dir`, then the flags.
    fn resolve(args: &ConnectionArgs, data_dir: Option<&Path>, config_dir: &Path) -> anyhow::Result<Self> {
        let conf = Effective::load(Service::Tenant, config_dir)?;
        let get = |key: &str| conf.value(key).map(str::to_owned);
        let host_port = |ip: Option<String>, port: Option<String>, default_port: u16| {
            let ip = ip.filter(|s| !s.is_empty()).unwrap_or_else(|| "127.0.0.1".into());
            let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(default_port);
            join_host_port(&ip, port)
        };
        let mut verifier = host_port(get("verifier_ip"), get("verifier_port"), 8881);
        let mut registrar = host_port(get("registrar_ip"), get("registrar_port"), 8891);
        let conf_dir = conf
            .path_value("tls_dir")
            .filter(|d| d.as_os_str() != "default" && d.as_os_str() != "generate")
            // Keylime resolves a relative tls_dir against its work directory.
            .map(|d| {
                let work = std::env::var_os("KEYLIME_DIR").unwrap_or_else(|| "/var/lib/keylime".into());
                Path::new(&work).join(d)
            });
        let tls_dir = match (&args.tls_dir, data_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(data)) => data.join("cv_ca"),
            // Without either, where `zest serve` keeps it by default.
            (None, None) => {
                conf_dir.unwrap_or_else(|| Path::new(crate::config::DEFAULT_DATA_DIR).join("cv_ca"))
            }
        };
        let file = |key: &str, default: &str| -> PathBuf {
            // The data directory's layout wins over tenant.conf's file names.
            let named = if data_dir.is_some() || args.tls_dir.is_some() {
                None
            } else {
                get(key).filter(|v| !v.is_empty() && v != "default")
            };
            // `trusted_server_ca` is a list in Keylime (`["cacert.crt"]`): zest trusts its first.
            let named = named.map(|v| match crate::config::keylime::list_as_json(&v) {
                Ok(json) => serde_json::from_str::<Vec<Value>>(&json)
                    .ok()
                    .and_then(|l| l.first().and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or(v),
                Err(_) => v,
            });
            let name = named.unwrap_or_else(|| default.to_owned());
            let path = PathBuf::from(&name);
            if path.is_absolute() {
                path
            } else {
                tls_dir.join(path)
            }
        };
        let ca_cert = file("trusted_server_ca", "cacert.crt");
        // The rest of Keylime's `trusted_server_ca` list, under the same directory.
        let more_cas: Vec<PathBuf> = if data_dir.is_some() || args.tls_dir.is_some() {
            Vec::new()
        } else {
            get("trusted_server_ca")
                .and_then(|v| crate::config::keylime::list_as_json(&v).ok())
                .and_then(|json| serde_json::from_str::<Vec<String>>(&json).ok())
                .map(|names| names.iter().skip(1).map(|n| tls_dir.join(n)).collect())
                .unwrap_or_default()
        };
        let client_key_password = get("client_key_password").filter(|p| !p.is_empty());
        let client_cert = file("client_cert", "client-cert.crt");
        let client_key = file("client_key", "client-private.pem");
        if let Some(v) = &args.verifier {
            verifier = v.clone();
        }
        if let Some(r) = &args.registrar {
            registrar = r.clone();
        }
        let list = |key: &str| {
            conf.parsed("tenant", key, |v| {
                let json = crate::config::keylime::list_as_json(v)?;
                serde_json::from_str::<Vec<String>>(&json).map_err(|_| "must be a list of names".to_owned())
            })
        };
        let accept = Accept {
            hash: list("accept_tpm_hash_algs")?,
            encryption: list("accept_tpm_encryption_algs")?,
            signing: list("accept_tpm_signing_algs")?,
        };
        Ok(Self {
            accept,
            verifier: format!("https://{verifier}"),
            registrar: format!("https://{registrar}"),
            ca_cert,
            client_cert,
            client_key,
            client_key_password,
            more_cas,
        })
    }

    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
        };
        let mut cas = Vec::new();
        for path in std::iter::once(&self.ca_cert).chain(&self.more_cas) {
            let pem = read(path, "CA certificate")?;
            cas.push(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{}: not a PEM certificate", path.display()))?,
            );
        }
        // The key may be encrypted PKCS#8 (client_key_password), as Keylime's ca_util writes it.
        let identity = crate::net::pki::KeyPairFiles {
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
            password: self.client_key_password.clone(),
        }
        .identity_pem()
        .with_context(|| {
            format!(
                "reading the client certificate {} and key {}",
                self.client_cert.display(),
                self.client_key.display()
            )
        })?;
        let identity = reqwest::Identity::from_pem(&identity).with_context(|| {
            format!(
                "{} and {}: not a PEM certificate and key",
                self.client_cert.display(),
                self.client_key.display()
            )
        })?;
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(cas)
            .identity(identity)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTPS client")
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A connected tenant: one client, and the API version each server speaks.
struct Tenant {
    http: reqwest::Client,
    conn: Connection,
    /// Each server's API version, asked once per command (`update` and `add` send several).
    versions: [tokio::sync::OnceCell<String>; 2],
}

/// A server's reply: status and JSON body (Keylime's envelope).
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn results(&self) -> &Value {
        member(&self.body, "results")
    }
}

/// `value[key]` without indexing: `Null` when `value` is not an object or has no `key`.
fn member<'a>(value: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    value.get(key).unwrap_or(&NULL)
}

/// Sets `key` in a JSON object; a value that is not an object is left alone.
fn set_member(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

#[derive(Clone, Copy)]
enum Server {
    Verifier,
    Registrar,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Registrar => "registrar",
        }
    }
}

impl Tenant {
    fn base(&self, server: Server) -> &str {
        match server {
            Server::Verifier => &self.conn.verifier,
            Server::Registrar => &self.conn.registrar,
        }
    }

    /// Sends a request; connection and TLS failures become errors that name the cause.
    async fn send(&self, server: Server, request: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
        let base = self.base(server);
        let response = request.send().await.map_err(|e| {
            let mut chain = vec![e.to_string()];
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push(s.to_string());
                source = s.source();
            }
            let text = chain.join(": ");
            let hint = if text.contains("Connection refused") {
                format!(" (is the {} running and listening there?)", server.name())
            } else if text.contains("certificate") || text.contains("Certificate") || text.contains("tls") {
                format!(
                    " (TLS: is {} the CA of the {}, and {} a client certificate it trusts?)",
                    self.conn.ca_cert.display(),
                    server.name(),
                    self.conn.client_cert.display()
                )
            } else {
                String::new()
            };
            anyhow!("cannot reach the {} at {base}: {text}{hint}", server.name())
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the {}'s answer", server.name()))?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            let all: &[u8] = &bytes;
            let head = all.get(..500).unwrap_or(all);
            json!({"status": String::from_utf8_lossy(head).into_owned()})
        });
        Ok(Reply { status, body })
    }

    /// Sends and requires a 2xx answer; otherwise the error carries the server's message.
    async fn expect(
        &self,
        server: Server,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Reply> {
        let reply = self.send(server, request).await?;
        self.succeeded(server, reply, what)
    }

    /// The reply when it is a 2xx, else an error naming `what` and the server's message.
    fn succeeded(&self, server: Server, reply: Reply, what: &str) -> anyhow::Result<Reply> {
        if !(200..300).contains(&reply.status) {
            let message = member(&reply.body, "status").as_str().unwrap_or("(no message)");
            bail!(
                "{what}: the {} answered {}: {message}",
                server.name(),
                reply.status
            );
        }
        Ok(reply)
    }

    /// The newest 2.x API version the server offers (zest and Keylime answer `GET /version`).
    async fn version(&self, server: Server) -> anyhow::Result<String> {
        let request = self.http.get(format!("{}/version", self.base(server)));
        let reply = self.send(server, request).await?;
        // A verifier in push mode answers 410 Gone; Keylime's tenant then speaks its own
        // newest 2.x.
        if reply.status == 410 {
            return Ok("2.6".to_owned());
        }
        let reply = self.succeeded(server, reply, "asking the API version")?;
        let results = reply.results();
        let mut offered: Vec<String> = results["supported_versions"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if let Some(current) = results["current_version"].as_str() {
            offered.push(current.to_owned());
        }
        offered
            .into_iter()
            .filter(|v| v.starts_with("2."))
            .max_by_key(|v| v.trim_start_matches("2.").parse::<u32>().unwrap_or(0))
            .ok_or_else(|| anyhow!("the {} offers no 2.x API version", server.name()))
    }

    async fn url(&self, server: Server, path: &str) -> anyhow::Result<String> {
        let [verifier, registrar] = &self.versions;
        let slot = match server {
            Server::Verifier => verifier,
            Server::Registrar => registrar,
        };
        let version = slot.get_or_try_init(|| self.version(server)).await?;
        Ok(format!("{}/v{version}/{path}", self.base(server)))
    }
}

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

/// Keylime's tenant-side check of a runtime policy and its signing key
/// (`ima.read_runtime_policy`): an envelope needs the key, a key needs an envelope, and the
/// signature must verify. Returns `runtime_policy_key` as sent: base64 of the key file.
fn signature_key(policy: &Path, document: &[u8], key: Option<&Path>) -> anyhow::Result<String> {
    use crate::dsse::{Envelope, VerifyingKey, is_envelope};
    let failed = |why: &str| {
        anyhow!(
            "Validation for runtime policy {} failed! Error: {why}",
            policy.display()
        )
    };
    match (is_envelope(document), key) {
        (false, None) => Ok(String::new()),
        (true, None) => Err(failed(
            "Runtime policy signature verification required but no key was given! (--runtime-policy-sig-key)",
        )),
        (false, Some(_)) => Err(failed("Runtime policy is not signed!")),
        (true, Some(key)) => {
            let pem =
                std::fs::read(key).with_context(|| format!("reading the signing key {}", key.display()))?;
            let public = VerifyingKey::from_pem(&pem).with_context(|| format!("{}", key.display()))?;
            Envelope::parse(document)
                .map_err(|e| failed(&e.to_string()))?
                .verify(&public)
                .map_err(|_| failed("Runtime policy failed DSSE signature verification!"))?;
            Ok(B64.encode(pem))
        }
    }
}

fn read_json_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))?;
    serde_json::from_slice::<Value>(&bytes)
        .with_context(|| format!("{}: the {what} is not JSON", path.display()))?;
    Ok(bytes)
}

/// PCRs a measured-boot policy needs quoted (Keylime: 0–9 and 11–15 with a refstate).
const MB_PCRS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];
const IMA_PCR: u32 = 10;

/// Keylime's `tpm_policy` with its `mask`: the PCRs it names, PCR 10 with a runtime policy,
/// the boot PCRs with a measured-boot policy.
fn tpm_policy(text: &str, runtime: bool, measured_boot: bool) -> anyhow::Result<String> {
    let mut policy: serde_json::Map<String, Value> = serde_json::from_str(text)
        .context("--tpm-policy must be a JSON object such as {\"15\": [\"0000…\"]}")?;
    let mut mask: u32 = 0;
    for key in policy.keys() {
        if key == "mask" {
            continue;
        }
        let pcr: u32 = key
            .parse()
            .ok()
            .filter(|p| *p < 24)
            .ok_or_else(|| anyhow!("--tpm-policy: {key} is not a PCR number (0–23)"))?;
        mask |= 1 << pcr;
    }
    if runtime {
        mask |= 1 << IMA_PCR;
    }
    if measured_boot {
        for pcr in MB_PCRS {
            mask |= 1 << pcr;
        }
    }
    policy.insert("mask".into(), json!(format!("0x{mask:x}")));
    Ok(Value::Object(policy).to_string())
}

async fn add_agent(tenant: &Tenant, add: &AddArgs) -> anyhow::Result<()> {
    // The registrar vouches for the agent: its AK, its certificate, where it listens.
    let url = tenant
        .url(Server::Registrar, &format!("agents/{}", add.uuid))
        .await?;
    let reply = tenant.send(Server::Registrar, tenant.http.get(url)).await?;
    match reply.status {
        200 => {}
        404 => bail!(
            "agent {} is not registered (or not activated) at the registrar {}; start the agent first",
            add.uuid,
            tenant.conn.registrar
        ),
        s => bail!(
            "reading agent {} from the registrar: it answered {s}: {}",
            add.uuid,
            member(&reply.body, "status").as_str().unwrap_or("")
        ),
    }
    // Registrars answer 404 for an agent that has not completed activation.
    let reg = reply.results();
    let ak = reg["aik_tpm"]
        .as_str()
        .ok_or_else(|| anyhow!("the registrar's record of {} has no aik_tpm", add.uuid))?;

    let (runtime, runtime_key) = match (&add.runtime_policy, &add.runtime_policy_name) {
        (Some(file), _) => {
            let document = read_json_file(file, "runtime policy")?;
            let key = signature_key(file, &document, add.runtime_policy_sig_key.as_deref())?;
            (Some(B64.encode(document)), key)
        }
        _ => (None, String::new()),
    };
    let mb = match &add.mb_policy {
        Some(file) => Some(String::from_utf8(read_json_file(file, "measured-boot policy")?)?),
        None => None,
    };
    let uses_runtime = runtime.is_some() || add.runtime_policy_name.is_some();
    let uses_mb = mb.is_some() || add.mb_policy_name.is_some();
    if add.verify && add.payload.is_none() && add.cert.is_none() {
        bail!("--verify only works when a payload is delivered to the agent (--payload or --cert)");
    }
    let package = match &add.cert {
        // Keylime's `--cert default`: the tenant's own CA directory.
        Some(dir) if dir.as_os_str() == "default" => {
            let dir = tenant.conn.ca_cert.parent().unwrap_or(Path::new("."));
            Some(super::cert_package::build(dir, &add.uuid, &add.include)?)
        }
        Some(dir) => Some(super::cert_package::build(dir, &add.uuid, &add.include)?),
        None => None,
    };
    let payload = match &add.payload {
        None => match &package {
            Some(p) if p.zip.len() > MAX_PAYLOAD => {
                bail!("the certificate package is larger than {MAX_PAYLOAD} bytes: include less")
            }
            Some(p) => Some(p.zip.clone()),
            None => None,
        },
        Some(file) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading the payload {}", file.display()))?;
            if bytes.len() > MAX_PAYLOAD {
                bail!(
                    "{}: the payload is larger than {MAX_PAYLOAD} bytes",
                    file.display()
                );
            }
            Some(bytes)
        }
    };
    let mut body = json!({
        "v": null,
        "tpm_policy": tpm_policy(&add.tpm_policy, uses_runtime, uses_mb)?,
        "runtime_policy": runtime.unwrap_or_default(),
        "runtime_policy_name": add.runtime_policy_name.clone().unwrap_or_default(),
        "runtime_policy_key": runtime_key,
        "mb_policy": mb,
        "mb_policy_name": add.mb_policy_name.clone().unwrap_or_default(),
        "ima_sign_verification_keys": "",
        "metadata": package.as_ref().map_or_else(|| "{}".to_owned(), |p| p.metadata.clone()),
        "revocation_key": package.as_ref().map_or("", |p| p.revocation_key.as_str()),
        "accept_tpm_hash_algs": tenant.conn.accept.hash,
        "accept_tpm_encryption_algs": tenant.conn.accept.encryption,
        "accept_tpm_signing_algs": tenant.conn.accept.signing,
        "ak_tpm": ak,
    });
    let mut keys: Option<(Agent, BootstrapKey)> = None;
    let (mode, place) = if add.push {
        ("push", String::new())
    } else {
        let ip = add
            .ip
            .clone()
            .or_else(|| reg["ip"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("agent {} told the registrar no address; give --ip", add.uuid))?;
        let port = add
            .port
            .or_else(|| reg["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .ok_or_else(|| anyhow!("agent {} told the registrar no port; give --port", add.uuid))?;
        let cert = reg["mtls_cert"]
            .as_str()
            .filter(|c| c.contains("BEGIN CERTIFICATE"))
            .ok_or_else(|| {
                anyhow!(
                    "agent {} registered without an mTLS certificate; pull mode needs one (or use --push)",
                    add.uuid
                )
            })?;
        set_member(&mut body, "cloudagent_ip", json!(ip));
        set_member(&mut body, "cloudagent_port", json!(port));
        set_member(&mut body, "mtls_cert", json!(cert));
        // Like Keylime's tenant: the agent must show a quote from the registered AK that binds
        // its NK key (PCR 16) before anything is enrolled or sent to it.
        let agent = Agent::connect(tenant, &ip, port, cert).await?;
        eprintln!("checking agent {}'s identity quote at {}…", add.uuid, agent.base);
        let nk = agent.identity(ak, &tenant.conn.accept).await?;
        eprintln!("identity quote verified: signed by the registered AK, NK key bound in PCR 16");
        if let Some(payload) = &payload {
            let key = BootstrapKey::generate()?;
            agent.deliver_u(&add.uuid, &nk, &key, payload).await?;
            eprintln!(
                "U and the encrypted payload ({} bytes) delivered to the agent",
                payload.len()
            );
            set_member(&mut body, "v", json!(B64.encode(key.v)));
            keys = Some((agent, key));
        }
        ("pull", format!(" at {}", join_host_port(&ip, port)))
    };
    let url = tenant
        .url(Server::Verifier, &format!("agents/{}", add.uuid))
        .await?;
    tenant
        .expect(
            Server::Verifier,
            tenant.http.post(url).json(&body),
            &format!("enrolling {}", add.uuid),
        )
        .await?;
    if let (true, Some((agent, key))) = (add.verify, &keys) {
        eprintln!("waiting for the agent to rebuild K (the verifier releases V after a good quote)…");
        if let Err(e) = agent.verify_key(&key.k).await {
            // Keylime stops attesting an agent that cannot prove the key.
            let stop = tenant
                .url(Server::Verifier, &format!("agents/{}/stop", add.uuid))
                .await?;
            let _ = tenant.send(Server::Verifier, tenant.http.put(stop)).await;
            return Err(e.context(format!(
                "agent {} did not prove the bootstrap key; attesting it stopped",
                add.uuid
            )));
        }
        eprintln!("the agent proved K: the payload is in its hands");
    }
    println!(
        "agent {} enrolled in {mode} mode{place}; `zest tenant status --uuid {}` shows its attestation",
        add.uuid, add.uuid
    );
    Ok(())
}

/// Largest payload sent to an agent (Keylime's `max_payload_size`).
const MAX_PAYLOAD: usize = 1 << 20;
/// API versions of pull agents the tenant speaks, oldest first.
const AGENT_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];

/// A pull agent reached over mTLS: its certificate as the registrar holds it is the only one
/// trusted; the tenant presents its own client certificate.
struct Agent {
    base: String,
    version: String,
    http: reqwest::Client,
}

fn random_text(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow!("no randomness"))?;
    Ok(bytes
        .iter()
        // The remainder is always below the alphabet's length: nothing is filtered out.
        .filter_map(|b| {
            ALPHABET
                .get(usize::from(*b) % ALPHABET.len())
                .map(|c| char::from(*c))
        })
        .collect())
}

impl Agent {
    async fn connect(tenant: &Tenant, ip: &str, port: u16, cert: &str) -> anyhow::Result<Self> {
        let mut identity = std::fs::read(&tenant.conn.client_cert)?;
        identity.push(b'\n');
        identity.extend(std::fs::read(&tenant.conn.client_key)?);
        // Pinned byte for byte, as Keylime does: WebPKI trust (`tls_certs_only`) refuses the
        // real agent's certificate, whose self-signature does not verify.
        let http = crate::net::pinned::agent_client(cert, &identity, Duration::from_secs(30))
            .context("the agent's mTLS connection")?;
        let base = format!("https://{}", join_host_port(ip, port));
        let mut agent = Self {
            base,
            version: "2.6".into(),
            http,
        };
        // The newest version both speak; an agent that does not answer /version gets 2.6.
        if let Ok(reply) = agent.get("/version").await {
            let results = member(&reply, "results");
            let mut offered: Vec<String> = results["supported_versions"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            if let Some(one) = results["supported_version"].as_str() {
                offered.push(one.to_owned());
            }
            if let Some(best) = AGENT_VERSIONS
                .iter()
                .rev()
                .find(|v| offered.iter().any(|o| o == *v))
            {
                agent.version = (*best).to_owned();
            }
        }
        Ok(agent)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach the agent at {}: {e:#} (is it running, and does it trust the tenant's CA?)",
                    self.base
                )
            })?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            bail!(
                "the agent answered {status} to GET {path}: {}",
                member(&body, "status").as_str().unwrap_or("")
            );
        }
        Ok(body)
    }

    /// Asks for an identity quote and checks it as Keylime's tenant does; returns the NK key.
    async fn identity(&self, ak_b64: &str, accept: &Accept) -> anyhow::Result<String> {
        use crate::evidence::{HashAlg, PublicArea, Quote};
        use crate::tpm::{AttestationKey, QuoteExpectations, verify_quote};
        let nonce = random_text(20)?;
        let reply = self
            .get(&format!("/v{}/quotes/identity?nonce={nonce}", self.version))
            .await?;
        let r = member(&reply, "results");
        let field = |name: &str| {
            r[name]
                .as_str()
                .ok_or_else(|| anyhow!("the agent's identity quote has no {name}"))
        };
        let hash_alg = field("hash_alg")?;
        let hash = HashAlg::from_name(hash_alg)
            .filter(|_| accept.hash.iter().any(|a| a == hash_alg))
            .ok_or_else(|| anyhow!("identity quote: hash_alg {hash_alg} is not in accept_tpm_hash_algs"))?;
        // The agent's aliases: rsa is rsa2048, ecc is ecc256 (agents say the latter from 2.5).
        let alias = |a: &str| {
            match a {
                "rsa" => "rsa2048",
                "ecc" => "ecc256",
                other => other,
            }
            .to_owned()
        };
        for (name, list, what) in [
            ("enc_alg", &accept.encryption, "accept_tpm_encryption_algs"),
            ("sign_alg", &accept.signing, "accept_tpm_signing_algs"),
        ] {
            let value = field(name)?;
            if !list.iter().any(|a| alias(a) == alias(value)) {
                bail!("identity quote: {name} {value} is not in {what}");
            }
        }
        let pubkey = field("pubkey")?.to_owned();
        let ak = B64
            .decode(ak_b64)
            .context("the registrar's aik_tpm is not base64")?;
        let ak = AttestationKey::new(
            PublicArea::from_tpm2b(&ak).map_err(|e| anyhow!("the registrar's aik_tpm: {e}"))?,
        );
        let quote =
            Quote::from_keylime_string(field("quote")?).map_err(|e| anyhow!("identity quote: {e}"))?;
        let expected = QuoteExpectations {
            nonce: nonce.as_bytes(),
            hashes: &[hash],
            schemes: &["rsassa", "ecdsa"],
        };
        let verified = verify_quote(&quote, &ak, &expected).map_err(|e| anyhow!("identity quote: {e}"))?;
        // PCR 16 was reset, then extended once with H(NK public key PEM).
        let zeros = vec![0u8; hash.digest_len()];
        let bound = hash.digest(&[&zeros, &hash.digest(&[pubkey.as_bytes()])]);
        match verified.pcr(hash, 16) {
            Some(value) if value == bound.as_slice() => Ok(pubkey),
            Some(_) => bail!("identity quote: PCR 16 does not bind the agent's NK key"),
            None => bail!("identity quote: PCR 16 is not quoted"),
        }
    }

    /// `POST /keys/ukey`: U under the NK key, the payload under K, and the auth tag.
    async fn deliver_u(
        &self,
        uuid: &str,
        nk: &str,
        key: &BootstrapKey,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let body = json!({
            "encrypted_key": B64.encode(crate::bootstrap::encrypt_for_nk(nk, &key.u)?),
            "auth_tag": crate::bootstrap::hmac_hex(&key.k, uuid.as_bytes()),
            "payload": B64.encode(crate::bootstrap::encrypt_payload(&key.k, payload)?),
        });
        let url = format!("{}/v{}/keys/ukey", self.base, self.version);
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| anyhow!("cannot deliver U to the agent at {}: {e:#}", self.base))?;
        if response.status() != 200 {
            let status = response.status().as_u16();
            let text: Value = response.json().await.unwrap_or(Value::Null);
            bail!(
                "the agent refused U ({status}): {}",
                member(&text, "status").as_str().unwrap_or("")
            );
        }
        Ok(())
    }

    /// Polls `GET /keys/verify` until the agent's HMAC of a fresh challenge proves K.
    async fn verify_key(&self, k: &[u8; 32]) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            let challenge = random_text(20)?;
            match self
                .get(&format!("/v{}/keys/verify?challenge={challenge}", self.version))
                .await
            {
                Ok(reply) => {
                    let expected = crate::bootstrap::hmac_hex(k, challenge.as_bytes());
                    if member(member(&reply, "results"), "hmac").as_str() == Some(expected.as_str()) {
                        return Ok(());
                    }
                    last = "the agent's HMAC does not match K".into();
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("{last}")
    }
}

async fn delete_agent(tenant: &Tenant, uuid: &str, missing_ok: bool) -> anyhow::Result<()> {
    let url = tenant.url(Server::Verifier, &format!("agents/{uuid}")).await?;
    let reply = tenant.send(Server::Verifier, tenant.http.delete(&url)).await?;
    match reply.status {
        200 => {}
        // Keylime's verifier answers 202 while it finishes a round; wait until the agent is gone.
        202 => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let r = tenant.send(Server::Verifier, tenant.http.get(&url)).await?;
                if r.status == 404 {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("agent {uuid} was still on the verifier 30 s after the delete request");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        404 if missing_ok => return Ok(()),
        404 => bail!(
            "agent {uuid} is not enrolled at the verifier {}",
            tenant.conn.verifier
        ),
        s => bail!(
            "deleting {uuid}: the verifier answered {s}: {}",
            member(&reply.body, "status").as_str().unwrap_or("")
        ),
    }
    if !missing_ok {
        println!("agent {uuid} removed from the verifier");
    }
    Ok(())
}

fn time_text(unix: &Value) -> String {
    match unix.as_u64() {
        Some(0) | None => "never".into(),
        Some(t) => {
            let ago = crate::clock::unix_now().saturating_sub(t);
            // 2026-11-30T11:40:53.000000+00:00 → 2026-11-30 11:40:53 UTC
            let stamp = crate::clock::rfc3339_micros(t.saturating_mul(1_000_000));
            let stamp = stamp.get(..19).unwrap_or(&stamp).replace('T', " ");
            format!("{stamp} UTC ({ago} s ago)")
        }
    }
}

/// A policy name, or `none` when the agent was enrolled without that policy (Keylime names
/// the empty one after the agent).
fn policy_text(r: &Value, name: &str, present: &str) -> String {
    if r[present] == json!(1) || r[present] == json!(true) {
        text(&r[name])
    } else {
        "none".into()
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The verifier's record of one agent as a two-column table.
pub fn status_table(uuid: &str, r: &Value) -> String {
    let state = r["operational_state"].as_i64().unwrap_or(-1);
    let mode = if r["ip"].is_null() && r["port"].is_null() {
        "push"
    } else {
        "pull"
    };
    let address = match (r["ip"].as_str(), r["port"].as_u64()) {
        (Some(ip), Some(port)) => join_host_port(ip, port as u16),
        _ => "-".into(),
    };
    let failures: Vec<String> = r["failures"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let message = member(member(f, "context"), "message")
                        .as_str()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    format!("{}{message}", text(&f["type"]))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<(&str, String)> = vec![
        ("agent", uuid.to_owned()),
        ("attestation status", text(&r["attestation_status"])),
        (
            "operational state",
            format!("{} ({state})", crate::store::verifier::state::name(state)),
        ),
        ("mode", mode.into()),
        ("address", address),
        ("attestations", text(&r["attestation_count"])),
        (
            "last good attestation",
            time_text(&r["last_successful_attestation"]),
        ),
        ("last quote", time_text(&r["last_received_quote"])),
        ("attestation period", text(&r["attestation_period"])),
        (
            "runtime policy",
            policy_text(r, "runtime_policy_name", "has_runtime_policy"),
        ),
        (
            "measured-boot policy",
            policy_text(r, "mb_policy_name", "has_mb_refstate"),
        ),
        (
            "TPM algorithms",
            format!(
                "{} / {} / {}",
                text(&r["hash_alg"]),
                text(&r["enc_alg"]),
                text(&r["sign_alg"])
            ),
        ),
        ("severity", text(&r["severity_level"])),
        ("last event", text(&r["last_event_id"])),
        ("verifier", text(&r["verifier_id"])),
    ];
    if failures.is_empty() {
        rows.push(("failures", "none".into()));
    } else {
        for f in failures {
            rows.push(("failure", f));
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

async fn status(tenant: &Tenant, uuid: &str, as_json: bool) -> anyhow::Result<()> {
    let url = tenant.url(Server::Verifier, &format!("agents/{uuid}")).await?;
    let reply = tenant.send(Server::Verifier, tenant.http.get(url)).await?;
    match reply.status {
        200 => {}
        404 => bail!(
            "agent {uuid} is not enrolled at the verifier {}",
            tenant.conn.verifier
        ),
        s => bail!(
            "reading agent {uuid}: the verifier answered {s}: {}",
            member(&reply.body, "status").as_str().unwrap_or("")
        ),
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(reply.results())?);
    } else {
        print!("{}", status_table(uuid, reply.results()));
    }
    Ok(())
}

async fn list(tenant: &Tenant, as_json: bool) -> anyhow::Result<()> {
    let url = tenant.url(Server::Verifier, "agents?bulk=1").await?;
    let reply = tenant
        .expect(Server::Verifier, tenant.http.get(url), "listing agents")
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(reply.results())?);
        return Ok(());
    }
    let Some(agents) = reply.results().as_object() else {
        bail!("the verifier's agent list is not an object");
    };
    let mut rows = vec![[
        "AGENT".to_owned(),
        "STATUS".into(),
        "STATE".into(),
        "ATTESTATIONS".into(),
        "LAST EVENT".into(),
    ]];
    for (id, r) in agents {
        let state = r["operational_state"].as_i64().unwrap_or(-1);
        rows.push([
            id.clone(),
            text(&r["attestation_status"]),
            crate::store::verifier::state::name(state).into(),
            text(&r["attestation_count"]),
            text(&r["last_event_id"]),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

async fn regstatus(tenant: &Tenant, uuid: &str, as_json: bool) -> anyhow::Result<()> {
    let url = tenant.url(Server::Registrar, &format!("agents/{uuid}")).await?;
    let reply = tenant.send(Server::Registrar, tenant.http.get(url)).await?;
    match reply.status {
        200 => {}
        404 => bail!(
            "agent {uuid} is not registered at the registrar {}",
            tenant.conn.registrar
        ),
        s => bail!(
            "reading agent {uuid}: the registrar answered {s}: {}",
            member(&reply.body, "status").as_str().unwrap_or("")
        ),
    }
    let r = reply.results();
    if as_json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let present = |field: &str| {
        if r[field].as_str().is_some_and(|s| !s.is_empty()) {
            "yes"
        } else {
            "no"
        }
    };
    let rows = [
        ("agent", uuid.to_owned()),
        // The registrar shows only agents that completed activation.
        ("active", "yes".into()),
        (
            "address",
            match (r["ip"].as_str(), r["port"].as_u64()) {
                (Some(ip), Some(port)) => join_host_port(ip, port as u16),
                _ => "-".into(),
            },
        ),
        ("registrations", text(&r["regcount"])),
        ("EK certificate", present("ekcert").into()),
        ("mTLS certificate", present("mtls_cert").into()),
    ];
    for (k, v) in rows {
        println!("{k:<16}  {v}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum PolicyKind {
    Runtime,
    MeasuredBoot,
}

async fn policy(tenant: &Tenant, kind: PolicyKind, command: PolicyCommand) -> anyhow::Result<()> {
    let (collection, field, what) = match kind {
        PolicyKind::Runtime => ("allowlists", "runtime_policy", "runtime policy"),
        PolicyKind::MeasuredBoot => ("mbpolicies", "mb_policy", "measured-boot policy"),
    };
    let body = |args: &PolicyFileArgs| -> anyhow::Result<Value> {
        let (file, module) = (&args.file, &args.module);
        let bytes = read_json_file(file, what)?;
        let mut body = match kind {
            PolicyKind::Runtime => {
                let key = signature_key(file, &bytes, args.sig_key.as_deref())?;
                json!({ field: B64.encode(bytes), "runtime_policy_key": key })
            }
            PolicyKind::MeasuredBoot if args.sig_key.is_some() => {
                bail!("--sig-key is for runtime policies (Keylime signs no measured-boot policies)")
            }
            PolicyKind::MeasuredBoot => json!({ field: String::from_utf8(bytes)? }),
        };
        if let Some(m) = module {
            set_member(&mut body, "module", json!(m));
        }
        Ok(body)
    };
    match command {
        PolicyCommand::Create(a) => {
            // The file is checked before anything is sent.
            let body = body(&a)?;
            let url = tenant
                .url(Server::Verifier, &format!("{collection}/{}", a.name))
                .await?;
            let request = tenant.http.post(url).json(&body);
            tenant
                .expect(Server::Verifier, request, &format!("storing {what} {}", a.name))
                .await?;
            println!("{what} {} stored", a.name);
        }
        PolicyCommand::Update(a) => {
            // The file is checked before anything is sent.
            let body = body(&a)?;
            let url = tenant
                .url(Server::Verifier, &format!("{collection}/{}", a.name))
                .await?;
            let request = tenant.http.put(url).json(&body);
            tenant
                .expect(Server::Verifier, request, &format!("replacing {what} {}", a.name))
                .await?;
            println!("{what} {} replaced", a.name);
        }
        PolicyCommand::Show(a) => {
            let url = tenant
                .url(Server::Verifier, &format!("{collection}/{}", a.name))
                .await?;
            let reply = tenant
                .expect(
                    Server::Verifier,
                    tenant.http.get(url),
                    &format!("reading {what} {}", a.name),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(reply.results())?);
        }
        PolicyCommand::List => {
            let url = tenant.url(Server::Verifier, collection).await?;
            let reply = tenant
                .expect(
                    Server::Verifier,
                    tenant.http.get(url),
                    &format!("listing {what}s"),
                )
                .await?;
            let names = reply
                .results()
                .get(field.replace("_policy", "policy_names").as_str())
                .cloned();
            let names = names
                .or_else(|| {
                    reply
                        .results()
                        .as_object()
                        .and_then(|o| o.values().find(|v| v.is_array()).cloned())
                })
                .unwrap_or(Value::Null);
            for name in ids(&names) {
                println!("{name}");
            }
        }
        PolicyCommand::Delete(a) => {
            let url = tenant
                .url(Server::Verifier, &format!("{collection}/{}", a.name))
                .await?;
            tenant
                .expect(
                    Server::Verifier,
                    tenant.http.delete(url),
                    &format!("deleting {what} {}", a.name),
                )
                .await?;
            println!("{what} {} deleted", a.name);
        }
    }
    Ok(())
}

async fn module(tenant: &Tenant, command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Upload { file, kind } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let size = bytes.len();
            let mut url = tenant.url(Server::Verifier, "modules").await?;
            if let Some(kind) = kind {
                url.push_str(&format!("?kind={kind}"));
            }
            eprintln!(
                "uploading {} ({size} bytes); the verifier compiles it…",
                file.display()
            );
            let request = tenant
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes);
            let reply = tenant
                .expect(
                    Server::Verifier,
                    request,
                    &format!("uploading {}", file.display()),
                )
                .await?;
            let r = reply.results();
            println!("{}", text(&r["module"]));
            eprintln!("module {} ({}) stored", text(&r["module"]), text(&r["kind"]));
        }
        ModuleCommand::List(a) => {
            let url = tenant.url(Server::Verifier, "modules").await?;
            let reply = tenant
                .expect(Server::Verifier, tenant.http.get(url), "listing modules")
                .await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(reply.results())?);
                return Ok(());
            }
            let modules = reply.results()["modules"].as_array().cloned().unwrap_or_default();
            for m in modules {
                println!(
                    "{:<72}  {:<14}  {}",
                    text(member(&m, "module")),
                    text(member(&m, "kind")),
                    text(member(&m, "size"))
                );
            }
        }
        ModuleCommand::Delete { id } => {
            let url = tenant.url(Server::Verifier, &format!("modules/{id}")).await?;
            tenant
                .expect(
                    Server::Verifier,
                    tenant.http.delete(url),
                    &format!("deleting module {id}"),
                )
                .await?;
            println!("module {id} deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_shows_state_policies_and_failures() {
        let record = json!({
            "operational_state": 9, "attestation_status": "FAIL", "ip": "10.0.0.7", "port": 9002,
            "attestation_count": 12, "last_successful_attestation": 0, "last_received_quote": 0,
            "attestation_period": "2s", "runtime_policy_name": "web", "has_runtime_policy": 1,
            "mb_policy_name": "agent-1", "has_mb_refstate": 0, "hash_alg": "sha256",
            "enc_alg": "rsa", "sign_alg": "rsassa", "severity_level": 6,
            "last_event_id": "ima.validation.ima-ng.not_in_allowlist", "verifier_id": "default",
            "failures": [{"type": "ima.validation.ima-ng.not_in_allowlist", "context": {"message": "/tmp/evil"}}],
        });
        let table = status_table("agent-1", &record);
        for line in [
            "attestation status     FAIL",
            "operational state      Invalid Quote (9)",
            "mode                   pull",
            "address                10.0.0.7:9002",
            "last good attestation  never",
            "runtime policy         web",
            "measured-boot policy   none",
            "failure                ima.validation.ima-ng.not_in_allowlist: /tmp/evil",
        ] {
            assert!(table.contains(line), "{line:?} missing from\n{table}");
        }
        let push = status_table(
            "agent-2",
            &json!({"ip": null, "port": null, "operational_state": 3}),
        );
        assert!(push.contains("mode                   push") && push.contains("failures               none"));
    }

    #[test]
    fn mask_covers_policies() {
        let p: Value = serde_json::from_str(&tpm_policy("{}", true, false).unwrap()).unwrap();
        assert_eq!(p["mask"], "0x400");
        let p: Value = serde_json::from_str(&tpm_policy("{\"15\": [\"00\"]}", false, true).unwrap()).unwrap();
        assert_eq!(p["mask"], "0xfbff");
        assert!(tpm_policy("{\"x\": []}", false, false).is_err());
        assert!(tpm_policy("[]", false, false).is_err());
    }
}

/// `zest quota`: the quotas of a tenant of a shared server (zest's own API), set by the
/// operator. Not to be confused with `zest tenant`, the operator's client itself.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(subcommand)]
    command: QuotaCommand,
}

#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// A tenant's quotas and what it holds now.
    Show {
        /// The tenant of the shared server (as in `zest ca issue --tenant`).
        #[arg(long)]
        tenant: String,
    },
    /// Set some of a tenant's quotas; the others keep their value.
    Set(QuotaSetArgs),
    /// Return a tenant's quotas to the defaults.
    Reset {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Args)]
struct QuotaSetArgs {
    /// The tenant of the shared server (as in `zest ca issue --tenant`).
    #[arg(long)]
    tenant: String,
    /// Enrolled agents.
    #[arg(long)]
    agents: Option<u64>,
    /// Runtime policies and refstates together.
    #[arg(long)]
    policies: Option<u64>,
    /// Uploaded components.
    #[arg(long)]
    components: Option<u64>,
    /// Bytes of one uploaded component.
    #[arg(long)]
    component_bytes: Option<u64>,
    /// Bytes of one policy document.
    #[arg(long)]
    document_bytes: Option<u64>,
    /// Linear memory of one policy instance, bytes (0: the server's limit).
    #[arg(long)]
    instance_memory_bytes: Option<u64>,
    /// Milliseconds of one policy call (0: the server's deadline).
    #[arg(long)]
    evaluation_ms: Option<u64>,
}

pub async fn run_quota(args: QuotaArgs, data_dir: Option<&Path>, config_dir: &Path) -> anyhow::Result<()> {
    let conn = Connection::resolve(&args.connection, data_dir, config_dir)?;
    let tenant = Tenant {
        http: conn.client()?,
        conn,
        versions: Default::default(),
    };
    let (name, request) = match &args.command {
        QuotaCommand::Show { tenant: name } => {
            let url = tenant.url(Server::Verifier, &format!("quotas/{name}")).await?;
            (name, tenant.http.get(url))
        }
        QuotaCommand::Reset { tenant: name } => {
            let url = tenant.url(Server::Verifier, &format!("quotas/{name}")).await?;
            (name, tenant.http.delete(url))
        }
        QuotaCommand::Set(set) => {
            let mut body = serde_json::Map::new();
            for (field, value) in [
                ("agents", set.agents),
                ("policies", set.policies),
                ("components", set.components),
                ("component_bytes", set.component_bytes),
                ("document_bytes", set.document_bytes),
                ("instance_memory_bytes", set.instance_memory_bytes),
                ("evaluation_ms", set.evaluation_ms),
            ] {
                if let Some(value) = value {
                    body.insert(field.into(), value.into());
                }
            }
            if body.is_empty() {
                bail!("name at least one quota to set (--agents, --policies, …)");
            }
            let url = tenant
                .url(Server::Verifier, &format!("quotas/{}", set.tenant))
                .await?;
            (&set.tenant, tenant.http.put(url).json(&Value::Object(body)))
        }
    };
    let reply = tenant
        .expect(Server::Verifier, request, &format!("the quotas of tenant {name}"))
        .await?;
    let results = reply.results();
    println!("tenant {name}");
    for field in [
        "agents",
        "policies",
        "components",
        "component_bytes",
        "document_bytes",
        "instance_memory_bytes",
        "evaluation_ms",
    ] {
        let used = results
            .get("usage")
            .and_then(|u| u.get(field))
            .map(|u| format!("{u} used of "))
            .unwrap_or_default();
        let limit = results
            .get("quota")
            .and_then(|q| q.get(field))
            .unwrap_or(&Value::Null);
        println!("  {field:<22} {used}{limit}");
    }
    Ok(())
}
