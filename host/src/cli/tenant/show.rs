//! `zest tenant status`, `list` and `regstatus`: the verifier's and registrar's records as
//! tables or JSON.

use anyhow::bail;
use serde_json::{Value, json};

use super::connection::{Server, Tenant, join_host_port, member};

pub(crate) fn time_text(unix: &Value) -> String {
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
pub(super) fn policy_text(r: &Value, name: &str, present: &str) -> String {
    if r[present] == json!(1) || r[present] == json!(true) {
        text(&r[name])
    } else {
        "none".into()
    }
}

pub(super) fn text(v: &Value) -> String {
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

pub(super) async fn status(tenant: &Tenant, uuid: &str, as_json: bool) -> anyhow::Result<()> {
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

pub(super) async fn list(tenant: &Tenant, as_json: bool) -> anyhow::Result<()> {
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

pub(super) async fn regstatus(tenant: &Tenant, uuid: &str, as_json: bool) -> anyhow::Result<()> {
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
}
