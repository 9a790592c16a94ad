//! `zest quota`: the per-tenant quotas of a shared verifier (zest's own API), set by the
//! operator with the operator's certificate.

use std::path::Path;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::tenant::{Connection, ConnectionArgs, Server, Tenant};

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

pub async fn run(args: QuotaArgs, data_dir: Option<&Path>, config_dir: &Path) -> anyhow::Result<()> {
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
