//! `zest policy canary`, `promote`, `rollback` and `versions`: a candidate policy judged on
//! the fleet's recorded evidence before it goes live, the swap once it looks right, and the
//! versions of a stored policy to go back to (zest's own API, with the tenant certificate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use serde_json::{Value, json};

use super::tenant::{Connection, ConnectionArgs, Server, Tenant};

#[derive(Debug, Args)]
pub struct CanaryArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The candidate document: a runtime policy (JSON or DSSE envelope), or with
    /// `--measured-boot` a reference state.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// The candidate is a measured-boot reference state.
    #[arg(long)]
    measured_boot: bool,
    /// The stored policy the candidate is for: its agents are canaried, and `promote`
    /// replaces it.
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Only these agents (comma-separated); without `--name` or this, every agent.
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// The candidate's component, `builtin:…` or `sha256:…` (default: the policy's).
    #[arg(long)]
    module: Option<String>,
    /// The public key (PEM) or certificate that signed a DSSE envelope `--file`.
    #[arg(long)]
    sig_key: Option<PathBuf>,
    /// The operator's choice of tenant (a tenant's certificate acts in its own).
    #[arg(long)]
    tenant: Option<String>,
    /// Start the canary, print its id and return.
    #[arg(long)]
    no_wait: bool,
    /// Exit non-zero when any agent would newly fail.
    #[arg(long)]
    fail_on_change: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The canary's id.
    id: String,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The stored policy.
    #[arg(long, short = 'n')]
    name: String,
    /// A measured-boot reference state (else a runtime policy).
    #[arg(long)]
    measured_boot: bool,
    /// `rollback`: the version to bring back (default: the one the live version replaced);
    /// `versions`: print that version's document.
    #[arg(long)]
    version: Option<u64>,
    /// The operator's choice of tenant.
    #[arg(long)]
    tenant: Option<String>,
}

fn connect(
    args: &ConnectionArgs,
    data_dir: Option<&std::path::Path>,
    config_dir: &std::path::Path,
) -> anyhow::Result<Tenant> {
    let conn = Connection::resolve(args, data_dir, config_dir)?;
    Ok(Tenant {
        http: conn.client()?,
        conn,
        versions: Default::default(),
    })
}

/// The value at a JSON pointer, or null.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

fn with_tenant(path: String, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{path}{}tenant={t}", if path.contains('?') { '&' } else { '?' }),
        None => path,
    }
}

/// Prints a finished report: the summary, what the candidate adds, the agents that change.
fn print_report(report: &Value) {
    let s = &at(report, "/summary");
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    println!(
        "canary {} of {} policy {}: {} agents, {} evaluated",
        at(report, "/id").as_str().unwrap_or("?"),
        at(report, "/kind").as_str().unwrap_or("?"),
        at(report, "/policy").as_str().unwrap_or("(none named)"),
        at(report, "/total"),
        at(report, "/evaluated")
    );
    println!(
        "  newly failing {}  newly passing {}  failures changed {}  unchanged {}  no evidence {}",
        n("newly_failing"),
        n("newly_passing"),
        n("failures_changed"),
        n("unchanged"),
        n("no_evidence")
    );
    for event in at(s, "/by_event").as_array().into_iter().flatten() {
        let ids: Vec<&str> = at(event, "/agent_ids")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  {} {}: {} agent(s): {}",
            at(event, "/event_id").as_str().unwrap_or("?"),
            at(event, "/path").as_str().unwrap_or(""),
            ids.len(),
            ids.join(", ")
        );
    }
    for agent in at(report, "/agents").as_array().into_iter().flatten() {
        let change = at(agent, "/change").as_str().unwrap_or("?");
        if change != "unchanged" {
            println!(
                "  {} {change}: live {}, candidate {}",
                at(agent, "/agent_id").as_str().unwrap_or("?"),
                at(agent, "/live/verdict").as_str().unwrap_or("?"),
                at(agent, "/candidate/verdict").as_str().unwrap_or("?")
            );
        }
    }
}

pub async fn canary(
    args: CanaryArgs,
    data_dir: Option<&std::path::Path>,
    config_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let tenant = connect(&args.connection, data_dir, config_dir)?;
    let document = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let mut body = serde_json::Map::new();
    if args.measured_boot {
        let text = String::from_utf8(document).context("the reference state is not UTF-8 text")?;
        body.insert("mb_policy".into(), text.into());
    } else {
        body.insert("runtime_policy".into(), B64.encode(&document).into());
    }
    if let Some(key) = &args.sig_key {
        let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        body.insert("runtime_policy_key".into(), B64.encode(key).into());
    }
    if let Some(module) = &args.module {
        body.insert("module".into(), module.clone().into());
    }
    if let Some(name) = &args.name {
        body.insert("policy".into(), name.clone().into());
    }
    if !args.agents.is_empty() {
        body.insert("agents".into(), json!(args.agents));
    }
    let body = Value::Object(body);
    let url = tenant
        .url(
            Server::Verifier,
            &with_tenant("canaries".into(), args.tenant.as_deref()),
        )
        .await?;
    let started = tenant
        .expect(
            Server::Verifier,
            tenant.http.post(url).json(&body),
            "starting the canary",
        )
        .await?;
    let id = at(started.results(), "/id")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if args.no_wait {
        println!("{id}");
        return Ok(());
    }
    let report = loop {
        let url = tenant.url(Server::Verifier, &format!("canaries/{id}")).await?;
        let reply = tenant
            .expect(Server::Verifier, tenant.http.get(url), "reading the canary")
            .await?;
        let report = reply.results().clone();
        if at(&report, "/status") == "done" {
            break report;
        }
        eprintln!(
            "canary {id}: {} of {} agents",
            at(&report, "/evaluated"),
            at(&report, "/total")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let newly_failing = at(&report, "/summary/newly_failing").as_u64().unwrap_or(0);
    if args.fail_on_change && newly_failing > 0 {
        bail!("{newly_failing} agent(s) would newly fail under the candidate");
    }
    Ok(())
}

pub async fn promote(
    args: PromoteArgs,
    data_dir: Option<&std::path::Path>,
    config_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let tenant = connect(&args.connection, data_dir, config_dir)?;
    let url = tenant
        .url(Server::Verifier, &format!("canaries/{}/promote", args.id))
        .await?;
    let reply = tenant
        .expect(
            Server::Verifier,
            tenant.http.post(url),
            &format!("promoting canary {}", args.id),
        )
        .await?;
    let r = reply.results();
    println!(
        "{} policy {} is now version {} (version {} kept for rollback)",
        at(r, "/kind").as_str().unwrap_or("?"),
        at(r, "/policy").as_str().unwrap_or("?"),
        at(r, "/version"),
        at(r, "/previous_version")
    );
    Ok(())
}

fn collection(measured_boot: bool) -> &'static str {
    if measured_boot { "mbpolicies" } else { "allowlists" }
}

/// `POST …/NAME/rollback` or `GET …/NAME/versions`, with the version and tenant asked for.
async fn version_call(
    args: &VersionArgs,
    data_dir: Option<&std::path::Path>,
    config_dir: &std::path::Path,
    action: &str,
) -> anyhow::Result<super::tenant::Reply> {
    let tenant = connect(&args.connection, data_dir, config_dir)?;
    let mut path = format!("{}/{}/{action}", collection(args.measured_boot), args.name);
    if let Some(version) = args.version {
        path = format!("{path}?version={version}");
    }
    let url = tenant
        .url(Server::Verifier, &with_tenant(path, args.tenant.as_deref()))
        .await?;
    let request = if action == "rollback" {
        tenant.http.post(url)
    } else {
        tenant.http.get(url)
    };
    tenant
        .expect(
            Server::Verifier,
            request,
            &format!("{action} of policy {}", args.name),
        )
        .await
}

pub async fn rollback(
    args: VersionArgs,
    data_dir: Option<&std::path::Path>,
    config_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let reply = version_call(&args, data_dir, config_dir, "rollback").await?;
    let r = reply.results();
    println!(
        "policy {}: version {} restored as version {}",
        args.name,
        at(r, "/restored"),
        at(r, "/version")
    );
    Ok(())
}

pub async fn versions(
    args: VersionArgs,
    data_dir: Option<&std::path::Path>,
    config_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let reply = version_call(&args, data_dir, config_dir, "versions").await?;
    let r = reply.results();
    if args.version.is_some() {
        let document = at(r, "/document")
            .as_str()
            .map(|d| B64.decode(d))
            .transpose()
            .context("the verifier sent a document that is not base64")?
            .unwrap_or_default();
        println!("{}", String::from_utf8_lossy(&document));
        return Ok(());
    }
    for v in at(r, "/versions").as_array().into_iter().flatten() {
        let when = match at(v, "/replaced_at").as_u64() {
            Some(_) => format!("replaced {}", super::tenant::time_text(at(v, "/replaced_at"))),
            None => "live".into(),
        };
        println!(
            "{:>4}  {}  {}  {when}",
            at(v, "/version"),
            at(v, "/checksum").as_str().unwrap_or("?"),
            at(v, "/module").as_str().unwrap_or("?")
        );
    }
    Ok(())
}
