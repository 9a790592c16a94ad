//! A read-only HTML dashboard, rendered on the server (no script, no build step), behind
//! the same client certificate as the API: an operator sees every tenant, a tenant its own.
//!
//! | page | what |
//! |---|---|
//! | `/dashboard` | agents by state, recent failures by event id, canaries |
//! | `/dashboard/agents/{id}` | one agent's history as a timeline |
//! | `/dashboard/canaries/{id}` | a canary's report |

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Verifier;
use super::routes::{attestation_status, blocking};
use crate::api::{AgentId, ApiError, Scope};
use crate::store::history::{HistoryEntry, HistoryQuery};
use crate::store::verifier::state;

/// Failing rounds read for the "recent failures" table.
const RECENT_FAILURES: u64 = 500;
/// Rounds shown on an agent's timeline.
const TIMELINE: u64 = 200;

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment for a link.
fn seg(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f2f2f2}.pass{color:#176f2c}.fail{color:#b00020}.muted{color:#777}\
.timeline{display:flex;gap:2px;flex-wrap:wrap;margin:.5em 0 1.5em}.tick{width:10px;height:28px}\
.tick.pass{background:#2e9e4a}.tick.fail{background:#d32f2f}nav a{margin-right:1em}";

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · zest</title>\
         <style>{STYLE}</style></head><body><nav><a href=\"/dashboard\">zest dashboard</a></nav>\
         <h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        html,
    )
        .into_response()
}

fn time(at_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| at_ms.to_string())
}

fn verdict(passed: bool) -> &'static str {
    if passed { "pass" } else { "fail" }
}

fn tenant_cell(scope: &Scope, tenant: &str) -> String {
    match scope {
        Scope::Operator => format!("<td>{}</td>", esc(tenant)),
        Scope::Tenant(_) => String::new(),
    }
}

/// `GET /dashboard`: agents by state, recent failures by event id, canaries.
pub(super) async fn overview(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
) -> Result<Response, ApiError> {
    let s2 = scope.clone();
    let (agents, failures) = blocking(&verifier, "reading the dashboard", move |store| {
        let agents: Vec<_> = store
            .agents()?
            .into_iter()
            .filter(|a| s2.sees(&a.tenant))
            .collect();
        let tenant = match &s2 {
            Scope::Tenant(t) => Some(t.clone()),
            Scope::Operator => None,
        };
        let failures = store.history(&HistoryQuery {
            tenant,
            passed: Some(false),
            limit: RECENT_FAILURES,
            ..HistoryQuery::default()
        })?;
        Ok((agents, failures))
    })
    .await?;
    let operator = matches!(scope, Scope::Operator);
    let mut body = String::new();
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for agent in &agents {
        *by_status
            .entry(attestation_status(agent, &verifier.config))
            .or_default() += 1;
    }
    body.push_str(
        "<h2>Agents by state</h2><table id=\"states\"><tr><th>attestation status</th><th>agents</th></tr>",
    );
    for (status, n) in &by_status {
        let _ = write!(body, "<tr><td>{}</td><td>{n}</td></tr>", esc(status));
    }
    let _ = write!(body, "<tr><th>total</th><th>{}</th></tr></table>", agents.len());
    body.push_str("<table id=\"agents\"><tr><th>agent</th>");
    if operator {
        body.push_str("<th>tenant</th>");
    }
    body.push_str(
        "<th>mode</th><th>status</th><th>operational state</th><th>attestations</th><th>last event</th></tr>",
    );
    for agent in &agents {
        let _ = write!(
            body,
            "<tr><td><a href=\"/dashboard/agents/{}\">{}</a></td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seg(&agent.agent_id),
            esc(&agent.agent_id),
            tenant_cell(&scope, &agent.tenant),
            if agent.push { "push" } else { "pull" },
            attestation_status(agent, &verifier.config),
            state::name(agent.operational_state),
            agent.attestation_count,
            esc(agent.last_event_id.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table>");

    // Recent failures by event id: how many rounds, how many agents, the latest.
    let mut by_event: BTreeMap<String, (u64, std::collections::BTreeSet<String>, u64)> = BTreeMap::new();
    for round in &failures {
        for failure in &round.failures {
            let e = by_event.entry(failure.event_id.clone()).or_default();
            e.0 += 1;
            e.1.insert(round.agent_id.clone());
            e.2 = e.2.max(round.at_ms);
        }
    }
    let _ = write!(
        body,
        "<h2>Recent failures by event id</h2><p class=\"muted\">the last {} failed rounds</p>\
         <table id=\"failures\"><tr><th>event id</th><th>rounds</th><th>agents</th><th>latest</th></tr>",
        failures.len()
    );
    let mut events: Vec<_> = by_event.into_iter().collect();
    events.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    for (event, (rounds, agents, latest)) in &events {
        let _ = write!(
            body,
            "<tr><td class=\"fail\">{}</td><td>{rounds}</td><td>{}</td><td>{}</td></tr>",
            esc(event),
            agents.len(),
            time(*latest)
        );
    }
    body.push_str("</table>");

    body.push_str("<h2>Canaries</h2><table id=\"canaries\"><tr><th>canary</th><th>policy</th><th>status</th><th>agents</th><th>newly failing</th></tr>");
    for report in super::canary::reports(&verifier, &scope) {
        let text = |p: &str| {
            report
                .pointer(p)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default()
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/dashboard/canaries/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seg(&text("/id")),
            esc(&text("/id")),
            esc(&text("/policy")),
            esc(&text("/status")),
            esc(&text("/total")),
            esc(&text("/summary/newly_failing")),
        );
    }
    body.push_str("</table>");
    Ok(page("Attestation overview", &body))
}

fn failures_cell(entry: &HistoryEntry) -> String {
    entry
        .failures
        .iter()
        .map(|f| esc(&f.event_id))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// `GET /dashboard/agents/{id}`: the agent's rounds, oldest to newest, as a timeline.
pub(super) async fn agent(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = AgentId::parse(&id)?.to_string();
    let agent_id = id.clone();
    let found = blocking(&verifier, "reading history", move |store| {
        let Some(agent) = store.agent(&agent_id)?.filter(|a| scope.sees(&a.tenant)) else {
            return Ok(None);
        };
        let rounds = store.history(&HistoryQuery {
            agent_id: Some(agent_id),
            tenant: Some(agent.tenant.clone()),
            limit: TIMELINE,
            ..HistoryQuery::default()
        })?;
        Ok(Some((agent, rounds)))
    })
    .await?;
    let Some((agent, mut rounds)) = found else {
        return Err(ApiError::not_found("agent id not found"));
    };
    rounds.reverse();
    let passed = rounds.iter().filter(|r| r.passed).count();
    let mut body = format!(
        "<p>tenant <b>{}</b> · {} · status <b>{}</b> · {} rounds shown, <span class=\"pass\">{passed} passed</span>, \
         <span class=\"fail\">{} failed</span></p><div class=\"timeline\" id=\"timeline\">",
        esc(&agent.tenant),
        if agent.push { "push" } else { "pull" },
        attestation_status(&agent, &verifier.config),
        rounds.len(),
        rounds.len() - passed,
    );
    for round in &rounds {
        let _ = write!(
            body,
            "<div class=\"tick {v}\" title=\"{} {v}\"></div>",
            time(round.at_ms),
            v = verdict(round.passed)
        );
    }
    body.push_str("</div><table id=\"rounds\"><tr><th>time</th><th>verdict</th><th>failures</th><th>IMA entries</th><th>runtime policy</th></tr>");
    for round in rounds.iter().rev() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{v}\">{v}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(round.at_ms),
            failures_cell(round),
            round
                .ima_range
                .map(|(a, b)| format!("{a}–{b}"))
                .unwrap_or_default(),
            esc(&round
                .runtime_policy
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default()),
            v = verdict(round.passed)
        );
    }
    body.push_str("</table>");
    Ok(page(&format!("Agent {id}"), &body))
}

/// `GET /dashboard/canaries/{id}`: a canary's summary and each agent's verdicts.
pub(super) async fn canary(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = super::canary::report_of(&verifier, &scope, &id)
        .ok_or_else(|| ApiError::not_found("canary not found"))?;
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let mut body = format!(
        "<p>policy <b>{}</b> ({}) · status <b id=\"status\">{}</b> · {} of {} agents evaluated</p>\
         <table id=\"summary\"><tr><th>newly failing</th><th>newly passing</th><th>failures changed</th><th>unchanged</th><th>no evidence</th></tr>\
         <tr><td class=\"fail\">{}</td><td class=\"pass\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
         <h2>What the candidate adds</h2><table id=\"by_event\"><tr><th>event id</th><th>path</th><th>agents</th></tr>",
        esc(&text(&report, "/policy")),
        esc(&text(&report, "/kind")),
        esc(&text(&report, "/status")),
        text(&report, "/evaluated"),
        text(&report, "/total"),
        text(&report, "/summary/newly_failing"),
        text(&report, "/summary/newly_passing"),
        text(&report, "/summary/failures_changed"),
        text(&report, "/summary/unchanged"),
        text(&report, "/summary/no_evidence"),
    );
    for event in report
        .pointer("/summary/by_event")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ids: Vec<String> = event
            .get("agent_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(esc)
            .collect();
        let _ = write!(
            body,
            "<tr><td class=\"fail\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(event, "/event_id")),
            esc(&text(event, "/path")),
            ids.join(", ")
        );
    }
    body.push_str("</table><h2>Agents</h2><table id=\"agents\"><tr><th>agent</th><th>live</th><th>candidate</th><th>change</th></tr>");
    for agent in report
        .get("agents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let live = text(agent, "/live/verdict");
        let candidate = text(agent, "/candidate/verdict");
        let _ = write!(
            body,
            "<tr><td><a href=\"/dashboard/agents/{}\">{}</a></td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            seg(&text(agent, "/agent_id")),
            esc(&text(agent, "/agent_id")),
            esc(&live),
            esc(&live),
            esc(&candidate),
            esc(&candidate),
            esc(&text(agent, "/change")),
        );
    }
    body.push_str("</table>");
    Ok(page(&format!("Canary {id}"), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_agents_and_policies_cannot_become_markup() {
        // An event id or path comes from a tenant's own component or agent.
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(seg("a b/../c?d"), "a%20b%2F..%2Fc%3Fd");
        let page = page("<b>", "<p>body</p>");
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'unsafe-inline'"
        );
    }
}
