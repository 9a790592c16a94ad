//! `zest tenant history`: an agent's judged rounds from the verifier's attestation history.

use serde_json::{Value, json};

use super::connection::{Server, Tenant};
use super::show::text;

/// Parses a time given on the command line: Unix seconds or RFC 3339.
fn unix_seconds(text: &str) -> anyhow::Result<f64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(seconds);
    }
    crate::clock::parse_rfc3339(text)
        .map(|t| t as f64)
        .ok_or_else(|| anyhow::anyhow!("{text:?} is neither Unix seconds nor an RFC 3339 time"))
}

/// `zest tenant history`: an agent's judged rounds, newest first, one page or (`all`) every
/// page.
#[allow(clippy::too_many_arguments)]
pub async fn history(
    tenant: &Tenant,
    uuid: &str,
    since: Option<&str>,
    until: Option<&str>,
    verdict: Option<&str>,
    limit: u64,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={limit}")];
    if let Some(since) = since {
        query.push(format!("since={}", unix_seconds(since)?));
    }
    if let Some(until) = until {
        query.push(format!("until={}", unix_seconds(until)?));
    }
    if let Some(verdict) = verdict {
        query.push(format!("verdict={verdict}"));
    }
    let mut before: Option<u64> = None;
    let mut rounds: Vec<Value> = Vec::new();
    loop {
        let mut q = query.clone();
        if let Some(b) = before {
            q.push(format!("before={b}"));
        }
        let url = tenant
            .url(
                Server::Verifier,
                &format!("agents/{uuid}/history?{}", q.join("&")),
            )
            .await?;
        let reply = tenant
            .expect(
                Server::Verifier,
                tenant.http.get(url),
                &format!("the history of {uuid}"),
            )
            .await?;
        let page = reply.results();
        rounds.extend(page["history"].as_array().into_iter().flatten().cloned());
        before = page["next"].as_u64();
        if !all || before.is_none() {
            break;
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"agent_id": uuid, "history": rounds, "next": before}))?
        );
        return Ok(());
    }
    for round in &rounds {
        let time = round["time"].as_f64().unwrap_or(0.0);
        let stamp = crate::clock::rfc3339_micros((time * 1_000_000.0) as u64);
        let stamp = stamp.get(..23).unwrap_or(&stamp).replace('T', " ");
        let failures: Vec<&str> = round["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["type"].as_str())
            .collect();
        let ima = match round["ima_entries"].as_array().map(|r| (r.first(), r.get(1))) {
            Some((Some(a), Some(b))) => format!(" ima {a}-{b}"),
            _ => String::new(),
        };
        println!(
            "{stamp} UTC  {:<4} {}{ima}  {}",
            text(&round["verdict"]),
            text(&round["mode"]),
            failures.join(", ")
        );
    }
    if let (Some(next), false) = (before, all) {
        eprintln!("more: --before {next}, or --all");
    }
    Ok(())
}
