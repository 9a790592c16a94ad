//! The attestation history: every judged round of a pull or push agent, recorded in the
//! transaction that saves its verdict, with the evidence of verified rounds (enough for the
//! canary to judge them again), kept as the retention says; and the routes that read it.

use std::collections::BTreeMap;

use axum::extract::{Extension, Path, Query, State};
use serde::Deserialize;
use serde_json::json;

use super::Verifier;
use super::pipeline::{Evidence, Expectations, Failure, Outcome, PolicyInUse};
use crate::api::{AgentId, ApiError, ApiResult, Envelope, Scope};
use crate::store::StoreError;
use crate::store::VerifierAgent;
use crate::store::history::{
    EvidenceSnapshot, EvidenceUpdate, HistoryEntry, HistoryQuery, JudgedBy, RoundHistory, digest_hex,
};

/// A judged round, ready for the history.
#[derive(Debug, Clone)]
pub struct RoundRecord {
    pub entry: HistoryEntry,
    pub evidence: Option<EvidenceUpdate>,
}

fn judged_by(policy: Option<&PolicyInUse>) -> Option<JudgedBy> {
    policy.map(|p| JudgedBy {
        name: p.record.name.clone(),
        checksum: p.record.checksum.clone(),
        module: p.record.module.clone(),
    })
}

impl RoundRecord {
    /// A round as judged: with the expectations and evidence when it got that far. Its
    /// evidence is kept when the quote verified.
    pub fn of(
        agent: &VerifierAgent,
        mode: &str,
        expect: Option<&Expectations>,
        evidence: Option<&Evidence>,
        outcome: &Outcome,
    ) -> Self {
        let at_ms = crate::clock::unix_micros_now() / 1000;
        let ima_range = match (evidence.and_then(|e| e.ima.as_ref()), &outcome.ima_next) {
            (Some(list), Some(next)) => Some((list.offset, next.next_entry)),
            _ => None,
        };
        let entry = HistoryEntry {
            id: 0,
            tenant: agent.tenant.clone(),
            agent_id: agent.agent_id.clone(),
            at_ms,
            mode: mode.to_owned(),
            passed: outcome.failures.is_empty() && !outcome.rebooted && outcome.quote.is_some(),
            failures: outcome.failures.iter().map(Failure::stored).collect(),
            quote_digest: evidence.map(|e| digest_hex(&e.quote.attest_bytes)),
            ima_range,
            runtime_policy: judged_by(expect.and_then(|e| e.runtime.as_ref())),
            mb_policy: judged_by(expect.and_then(|e| e.measured_boot.as_ref())),
        };
        let evidence = match (evidence, &outcome.quote) {
            (Some(evidence), Some(quote)) => {
                let quoted: BTreeMap<u32, String> = quote
                    .pcrs
                    .iter()
                    .filter(|(bank, _, _)| *bank == evidence.hash)
                    .map(|(_, i, v)| (u32::from(*i), hex::encode(v)))
                    .collect();
                let ima = evidence.ima.as_ref().zip(outcome.ima_next.as_ref());
                Some(EvidenceUpdate {
                    snapshot: EvidenceSnapshot {
                        at_ms,
                        hash: evidence.hash.name().to_owned(),
                        boot_time: evidence.boot_time,
                        quoted,
                        ima_next: ima.map(|(_, next)| next.next_entry),
                        ima_pcr10: ima.map(|(_, next)| hex::encode(&next.pcr10)),
                        boot_log: None,
                    },
                    ima_text: ima.map(|(list, _)| list.text.clone()),
                    ima_offset: ima.map_or(0, |(list, _)| list.offset),
                    boot_log: evidence.boot_log.as_ref().and_then(|b| b.as_ref().ok()).cloned(),
                })
            }
            _ => None,
        };
        Self { entry, evidence }
    }

    /// A round that failed before any evidence was judged (unreachable agent, bad reply).
    pub fn failed(agent: &VerifierAgent, mode: &str, failures: &[Failure]) -> Self {
        let outcome = Outcome {
            failures: failures.to_vec(),
            ..Outcome::default()
        };
        Self::of(agent, mode, None, None, &outcome)
    }
}

impl RoundRecord {
    /// What the store writes in the verdict's transaction, and the entry the durable log
    /// appends once that is committed (when one is configured).
    pub fn for_store(self, verifier: &Verifier) -> (RoundHistory, Option<HistoryEntry>) {
        let durable = verifier.durable.as_ref().map(|_| self.entry.clone());
        let history = RoundHistory {
            entry: self.entry,
            evidence: self.evidence,
            retention: verifier.config.history_retention,
        };
        (history, durable)
    }
}

/// After a verdict and its history were committed: appends the entry to the durable log.
/// A history that could not be written is logged; the verdict stands. Blocks on the file.
pub fn written(
    verifier: &Verifier,
    agent_id: &str,
    durable: Option<HistoryEntry>,
    written: Option<Result<u64, StoreError>>,
) {
    let appended = match (written, durable, &verifier.durable) {
        (None, _, _) => return,
        (Some(Err(e)), _, _) => Err(e.to_string()),
        (Some(Ok(id)), Some(mut entry), Some(log)) => {
            entry.id = id;
            log.append(&entry).map_err(|e| e.to_string())
        }
        (Some(Ok(_)), _, _) => Ok(()),
    };
    if let Err(error) = appended {
        tracing::error!(%agent_id, %error, event = "history.store_error", "cannot record the round");
    }
}

/// The most rounds one page holds.
const MAX_PAGE: u64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryParams {
    /// Unix seconds, inclusive.
    since: Option<f64>,
    /// Unix seconds, exclusive.
    until: Option<f64>,
    /// `pass` or `fail`.
    verdict: Option<String>,
    /// The previous page's `next`.
    before: Option<u64>,
    limit: Option<u64>,
}

impl HistoryParams {
    fn query(&self) -> Result<HistoryQuery, ApiError> {
        let ms = |what: &str, s: Option<f64>| -> Result<Option<u64>, ApiError> {
            match s {
                None => Ok(None),
                Some(s) if s.is_finite() && s >= 0.0 => Ok(Some((s * 1000.0) as u64)),
                Some(_) => Err(ApiError::bad_request(format!("{what} must be Unix seconds"))),
            }
        };
        let passed = match self.verdict.as_deref() {
            None | Some("all") => None,
            Some("pass") => Some(true),
            Some("fail") => Some(false),
            Some(_) => return Err(ApiError::bad_request("verdict must be pass, fail or all")),
        };
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")));
        }
        Ok(HistoryQuery {
            since_ms: ms("since", self.since)?,
            until_ms: ms("until", self.until)?,
            passed,
            before_id: self.before,
            limit,
            ..HistoryQuery::default()
        })
    }
}

/// One round as the API shows it.
pub fn entry_json(entry: &HistoryEntry) -> serde_json::Value {
    json!({
        "id": entry.id,
        "time": entry.at_ms as f64 / 1000.0,
        "mode": entry.mode,
        "verdict": if entry.passed { "pass" } else { "fail" },
        "failures": entry.failures.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        "quote_digest": entry.quote_digest,
        "ima_entries": entry.ima_range.map(|(from, to)| json!([from, to])),
        "runtime_policy": entry.runtime_policy,
        "mb_policy": entry.mb_policy,
    })
}

/// `GET /{v}/agents/{id}/history`: an agent's rounds, newest first, a page at a time.
pub(super) async fn show(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
    Query(params): Query<HistoryParams>,
) -> ApiResult {
    super::routes::version_of(&v)?;
    let id = AgentId::parse(&id)?;
    let mut query = params.query()?;
    query.agent_id = Some(id.to_string());
    let agent_id = id.to_string();
    let page = super::routes::blocking(&verifier, "reading history", move |store| {
        // The agent's tenant decides who may read; a deleted agent has no history.
        let Some(agent) = store.agent(&agent_id)?.filter(|a| scope.sees(&a.tenant)) else {
            return Ok(None);
        };
        query.tenant = Some(agent.tenant);
        store.history(&query).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("agent id not found"))?;
    let next = (page.len() as u64 == params.limit.unwrap_or(100))
        .then(|| page.last().map(|e| e.id))
        .flatten();
    Ok(Envelope::ok(json!({
        "agent_id": id.to_string(),
        "history": page.iter().map(entry_json).collect::<Vec<_>>(),
        "next": next,
    })))
}
