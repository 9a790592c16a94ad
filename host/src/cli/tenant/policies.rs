//! `zest tenant runtime-policy`, `mb-policy` and `module`: named policies and uploaded policy
//! components on the verifier.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::connection::{Server, Tenant, member, set_member};
use super::enrol::{read_json_file, signature_key};
use super::show::text;
use super::{ModuleCommand, PolicyCommand, PolicyFileArgs, ids};

#[derive(Clone, Copy)]
pub(super) enum PolicyKind {
    Runtime,
    MeasuredBoot,
}

pub(super) async fn policy(tenant: &Tenant, kind: PolicyKind, command: PolicyCommand) -> anyhow::Result<()> {
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

pub(super) async fn module(tenant: &Tenant, command: ModuleCommand) -> anyhow::Result<()> {
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
