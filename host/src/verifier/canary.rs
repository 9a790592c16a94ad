//! The policy canary: a candidate runtime policy or refstate (with its component) judged
//! against the recorded evidence of a set of agents, beside the policy each agent uses now,
//! before anything goes live. Nothing live changes: no verdict, state or policy instance.
//!
//! A job runs in the background on a thread of its own at the lowest CPU priority (nice
//! 19), so it only takes what live attestation leaves; its policy calls run under a tenant
//! key of their own (the tenant's limits, a share of their own, instances that take only
//! free room in the cache), so they never take a live call's turn or instance. Promoting a
//! canary (`promote`) swaps the candidate in as the next version of the policy it was run
//! for, only if that policy did not change meanwhile and every agent using it was canaried.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Verifier;
use super::pipeline::{Failure, ImaList, Judging, PolicyInUse, judge_ima, measured_boot, policy_in_use};
use super::policies::judges_ima;
use super::routes::{blocking, policy_upload, version_of};
use crate::api::{ApiError, ApiResult, Envelope, Scope};
use crate::evidence::HashAlg;
use crate::evidence::ima::{ImaEntry, ImaPosition, lines};
use crate::evidence::uefi::{EventLog, boot_aggregates};
use crate::store::history::{RecordedEvidence, Swap};
use crate::store::{PolicyKind, PolicyRecord, VerifierAgent};

/// Jobs kept (finished ones are dropped oldest first beyond this).
const MAX_JOBS: usize = 64;
/// Jobs of one tenant running at once on one verifier: a tenant queues behind its own
/// canaries, not behind another tenant's.
const MAX_RUNNING_PER_TENANT: usize = 2;
/// Jobs running at once on one verifier, all tenants together (each is a thread).
const MAX_RUNNING: usize = 8;

/// The canary jobs started on this verifier.
#[derive(Default)]
pub struct Canaries {
    jobs: Mutex<Vec<Arc<Job>>>,
}

impl Canaries {
    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds a job, unless too many run already.
    fn add(&self, job: Arc<Job>) -> Result<(), ApiError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let running: Vec<&Arc<Job>> = jobs.iter().filter(|j| !j.finished()).collect();
        if running.iter().filter(|j| j.tenant == job.tenant).count() >= MAX_RUNNING_PER_TENANT {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{MAX_RUNNING_PER_TENANT} of this tenant's canaries are running already; try again when one is done"
                ),
            ));
        }
        if running.len() >= MAX_RUNNING {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{MAX_RUNNING} canaries are running on this verifier; try again when one is done"),
            ));
        }
        while jobs.len() >= MAX_JOBS {
            match jobs.iter().position(|j| j.finished()) {
                Some(i) => drop(jobs.remove(i)),
                None => break,
            }
        }
        jobs.push(job);
        Ok(())
    }
}

/// One canary.
pub struct Job {
    id: String,
    tenant: String,
    kind: PolicyKind,
    /// The policy the candidate is for, when the canary ran on the agents using it: what
    /// `promote` replaces.
    policy: Option<String>,
    /// That policy's checksum when the canary started.
    live_checksum: Option<String>,
    candidate: PolicyRecord,
    agents: Vec<VerifierAgent>,
    progress: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    finished: bool,
    started_ms: u64,
    finished_ms: Option<u64>,
    results: Vec<AgentResult>,
    promoted: Option<u64>,
}

impl Job {
    fn finished(&self) -> bool {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finished
    }
}

/// One agent's verdicts under the live policy and under the candidate.
#[derive(Debug, Clone, Serialize)]
pub struct AgentResult {
    pub agent_id: String,
    /// The policy the agent uses now.
    pub live_policy: String,
    pub live: Judged,
    pub candidate: Judged,
    /// `newly_failing`, `newly_passing`, `failures_changed`, `unchanged`, `no_evidence`.
    pub change: &'static str,
}

/// A verdict on recorded evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// `pass`, `fail`, or `no_evidence` (nothing recorded that this policy judges).
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Value>,
}

impl Judged {
    fn no_evidence() -> Self {
        Self {
            verdict: "no_evidence",
            failures: vec![],
        }
    }

    fn of(failures: Vec<Failure>, ima: Option<&str>) -> Self {
        let failures: Vec<Value> = failures
            .iter()
            .map(|f| {
                let mut shown = f.stored().to_json();
                if let (Some(path), Some(object)) = (path_of(f, ima), shown.as_object_mut()) {
                    object.insert("path".into(), path.into());
                }
                shown
            })
            .collect();
        Self {
            verdict: if failures.is_empty() { "pass" } else { "fail" },
            failures,
        }
    }

    /// (event id, path) of each failure.
    fn keys(&self) -> BTreeSet<(String, String)> {
        self.failures.iter().map(failure_key).collect()
    }
}

fn failure_key(failure: &Value) -> (String, String) {
    let text = |k: &str| {
        failure
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (text("type"), text("path"))
}

/// The path of the IMA entry a failure names.
fn path_of(failure: &Failure, ima: Option<&str>) -> Option<String> {
    let index = usize::try_from(failure.entry?).ok()?;
    let line = lines(ima?).nth(index)?;
    ImaEntry::parse(line, index).ok().map(|e| e.name.to_owned())
}

fn change(live: &Judged, candidate: &Judged) -> &'static str {
    match (live.verdict, candidate.verdict) {
        ("no_evidence", _) | (_, "no_evidence") => "no_evidence",
        ("pass", "fail") => "newly_failing",
        ("fail", "pass") => "newly_passing",
        _ if live.keys() != candidate.keys() => "failures_changed",
        _ => "unchanged",
    }
}

/// The key the canary's policy calls run under: the tenant's limits, a share of its own.
fn canary_key(tenant: &str) -> String {
    // A control character: no tenant name holds one.
    format!("{tenant}\u{1}canary")
}

/// The recorded evidence of one agent, read once for both verdicts.
struct Recorded {
    evidence: RecordedEvidence,
    bank: Option<HashAlg>,
    ima: Option<(ImaList, Vec<u8>)>,
    aggregates: Vec<(HashAlg, Vec<u8>)>,
    boot: Option<Result<EventLog, String>>,
}

impl Recorded {
    fn new(evidence: RecordedEvidence) -> Self {
        let bank = HashAlg::from_name(&evidence.snapshot.hash);
        let ima = evidence
            .ima_text
            .clone()
            .zip(
                evidence
                    .snapshot
                    .ima_pcr10
                    .as_deref()
                    .and_then(|p| hex::decode(p).ok()),
            )
            .map(|(text, pcr10)| (ImaList { text, offset: 0 }, pcr10));
        let boot = evidence
            .boot_log
            .as_deref()
            .map(|b| EventLog::parse(b).map_err(|e| e.to_string()));
        let aggregates = match &boot {
            Some(Ok(log)) => boot_aggregates(&log.replay())
                .into_iter()
                .flat_map(|(alg, pair)| pair.into_iter().map(move |v| (alg, v)))
                .collect(),
            _ => vec![],
        };
        Self {
            evidence,
            bank,
            ima,
            aggregates,
            boot,
        }
    }
}

/// One policy's verdict on an agent's recorded evidence.
fn judge(
    verifier: &Verifier,
    key: &str,
    kind: PolicyKind,
    policy: Option<&PolicyInUse>,
    recorded: &Recorded,
) -> Judged {
    // A policy that judges nothing (Keylime's empty runtime policy, `{}` refstate) passes.
    let Some(policy) = policy else {
        return Judged::of(vec![], None);
    };
    let Some(bank) = recorded.bank else {
        return Judged::no_evidence();
    };
    match kind {
        PolicyKind::Runtime => {
            let Some((list, pcr10)) = &recorded.ima else {
                return Judged::no_evidence();
            };
            let Some(source) = policy.source() else {
                return Judged::of(
                    vec![Failure::internal("record", "the runtime policy has no document")],
                    None,
                );
            };
            let judging = Judging {
                tenant: key,
                first_attestation: false,
                prior_state: None,
            };
            let (failures, _, _) = judge_ima(
                &verifier.policies,
                &judging,
                bank,
                &source,
                list,
                &ImaPosition::start(bank),
                pcr10,
                &recorded.aggregates,
            );
            Judged::of(failures, Some(&list.text))
        }
        PolicyKind::MeasuredBoot => {
            let log = match &recorded.boot {
                None => return Judged::no_evidence(),
                Some(Err(why)) => {
                    return Judged::of(
                        vec![Failure::message("measured_boot.parser.log", why.clone())],
                        None,
                    );
                }
                Some(Ok(log)) => log,
            };
            let quoted: BTreeMap<u32, Vec<u8>> = recorded
                .evidence
                .snapshot
                .quoted
                .iter()
                .filter_map(|(i, v)| hex::decode(v).ok().map(|v| (*i, v)))
                .collect();
            let judging = Judging {
                tenant: key,
                first_attestation: true,
                prior_state: None,
            };
            let replayed = log.replay();
            let (failures, _) = measured_boot(
                &verifier.policies,
                &judging,
                bank,
                policy,
                log,
                &replayed,
                &quoted,
            );
            Judged::of(failures, None)
        }
    }
}

fn policy_name(agent: &VerifierAgent, kind: PolicyKind) -> &str {
    match kind {
        PolicyKind::Runtime => &agent.runtime_policy,
        PolicyKind::MeasuredBoot => &agent.mb_policy,
    }
}

/// Runs a job to the end, on the calling thread.
fn run(verifier: &Verifier, job: &Job) {
    let key = canary_key(&job.tenant);
    verifier
        .policies
        .set_tenant_limits(&key, Some(verifier.policies.limits_of(&job.tenant)));
    let candidate = match super::modules::resolve(verifier, &job.tenant, job.kind, &job.candidate.module) {
        Ok(module) => Ok(PolicyInUse {
            record: job.candidate.clone(),
            module,
            one_off: true,
            stored: None,
        }),
        Err(e) => Err(Failure::internal("module", e.message)),
    };
    let candidate_judges = match job.kind {
        PolicyKind::Runtime => judges_ima(&job.candidate),
        PolicyKind::MeasuredBoot => job.candidate.document.is_some(),
    };
    // Each live policy is read once per job.
    let mut live: HashMap<String, Result<Option<PolicyInUse>, Failure>> = HashMap::new();
    for agent in &job.agents {
        let name = policy_name(agent, job.kind).to_owned();
        let live_policy = live.entry(name.clone()).or_insert_with(|| {
            policy_in_use(verifier, &job.tenant, job.kind, &name).map(|p| {
                p.map(|mut p| {
                    p.one_off = true;
                    p
                })
            })
        });
        let result = match verifier.store.recorded_evidence(&agent.agent_id) {
            Ok(Some(evidence)) if evidence.tenant == job.tenant => {
                let recorded = Recorded::new(evidence);
                let ima = recorded.ima.as_ref().map(|(l, _)| l.text.as_str());
                let live_judged = match live_policy {
                    Ok(policy) => judge(verifier, &key, job.kind, policy.as_ref(), &recorded),
                    Err(failure) => Judged::of(vec![failure.clone()], ima),
                };
                let candidate_judged = match &candidate {
                    Ok(policy) => judge(
                        verifier,
                        &key,
                        job.kind,
                        candidate_judges.then_some(policy),
                        &recorded,
                    ),
                    Err(failure) => Judged::of(vec![failure.clone()], ima),
                };
                (live_judged, candidate_judged)
            }
            Ok(_) => (Judged::no_evidence(), Judged::no_evidence()),
            Err(e) => {
                let failure = Failure::internal("store", format!("reading recorded evidence: {e}"));
                (
                    Judged::of(vec![failure.clone()], None),
                    Judged::of(vec![failure], None),
                )
            }
        };
        let (live_judged, candidate_judged) = result;
        let result = AgentResult {
            agent_id: agent.agent_id.clone(),
            live_policy: name,
            change: change(&live_judged, &candidate_judged),
            live: live_judged,
            candidate: candidate_judged,
        };
        job.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .results
            .push(result);
    }
    let mut progress = job.progress.lock().unwrap_or_else(PoisonError::into_inner);
    progress.finished = true;
    progress.finished_ms = Some(now_ms());
    tracing::info!(canary = %job.id, tenant = %job.tenant, agents = job.agents.len(), "canary finished");
}

fn now_ms() -> u64 {
    crate::clock::unix_micros_now() / 1000
}

/// Lowers the calling thread's CPU priority to the least (Linux keeps a nice value per
/// thread), so the canary runs on what live attestation leaves.
fn lower_priority() {
    // SAFETY: gettid and setpriority take and return plain integers; PRIO_PROCESS with a
    // thread id changes only that thread's nice value.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if result != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower the canary thread's priority");
    }
}

/// The report of a job as the API shows it.
fn report(job: &Job, with_agents: bool) -> Value {
    let progress = job.progress.lock().unwrap_or_else(PoisonError::into_inner);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    // Failures the candidate adds, by (event id, path): the agents that would see them.
    let mut added: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for result in &progress.results {
        *counts.entry(result.change).or_default() += 1;
        if matches!(result.change, "newly_failing" | "failures_changed") {
            let before = result.live.keys();
            for key in result.candidate.keys().difference(&before) {
                added
                    .entry(key.clone())
                    .or_default()
                    .push(result.agent_id.clone());
            }
        }
    }
    let count = |c: &str| counts.get(c).copied().unwrap_or(0);
    let by_event: Vec<Value> = added
        .into_iter()
        .map(|((event_id, path), agents)| {
            json!({"event_id": event_id, "path": (!path.is_empty()).then_some(path), "agents": agents.len(), "agent_ids": agents})
        })
        .collect();
    let mut out = json!({
        "id": job.id,
        "tenant": job.tenant,
        "kind": job.kind.name(),
        "policy": job.policy,
        "candidate": {"checksum": job.candidate.checksum, "module": job.candidate.module},
        "status": if progress.finished { "done" } else { "running" },
        "total": job.agents.len(),
        "evaluated": progress.results.len(),
        "started_at": progress.started_ms as f64 / 1000.0,
        "finished_at": progress.finished_ms.map(|t| t as f64 / 1000.0),
        "promoted_as_version": progress.promoted,
        "summary": {
            "newly_failing": count("newly_failing"),
            "newly_passing": count("newly_passing"),
            "failures_changed": count("failures_changed"),
            "unchanged": count("unchanged"),
            "no_evidence": count("no_evidence"),
            "changes": count("newly_failing") + count("newly_passing") + count("failures_changed"),
            "by_event": by_event,
        },
    });
    if with_agents && let Some(object) = out.as_object_mut() {
        object.insert("agents".into(), json!(progress.results));
    }
    out
}

#[derive(Debug, Deserialize)]
pub(super) struct TenantQuery {
    tenant: Option<String>,
}

/// A fresh canary id: random, URL-safe.
fn canary_id() -> Result<String, ApiError> {
    crate::agent_client::random_text(16)
        .ok_or_else(|| ApiError::internal("starting a canary", "the system random number generator failed"))
}

/// `POST /{v}/canaries`: a policy upload's body (`runtime_policy` with its
/// `runtime_policy_key`, or `mb_policy`; `module`) plus which agents: `policy` (those using
/// it; what `promote` replaces), `agents` (ids), or neither (every agent of the tenant).
pub(super) async fn start(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    let body: Map<String, Value> = crate::api::json_object(&body)?;
    let kind = if body.contains_key("mb_policy") {
        PolicyKind::MeasuredBoot
    } else {
        PolicyKind::Runtime
    };
    let policy = match body.get("policy") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            super::policies::check_name(name)?;
            Some(name.clone())
        }
        Some(_) => return Err(ApiError::bad_request("policy must be a policy name")),
    };
    let listed: Option<Vec<String>> = match body.get("agents") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => Some(
            ids.iter()
                .map(|id| {
                    id.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::bad_request("agents must be a list of agent ids"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(ApiError::bad_request("agents must be a list of agent ids")),
    };
    let quota = super::quotas::quota(&verifier, &tenant).await?;
    let mut candidate = policy_upload(&verifier, &tenant, "canary", kind, &body, &quota).await?;
    let (owner, wanted) = (tenant.clone(), policy.clone());
    let (agents, live) = blocking(&verifier, "reading agents", move |store| {
        let live = match &wanted {
            Some(name) => store.policy_info(kind, &owner, name)?,
            None => None,
        };
        let agents: Vec<VerifierAgent> = store
            .agents()?
            .into_iter()
            .filter(|a| a.tenant == owner)
            .collect();
        Ok((agents, live))
    })
    .await?;
    if let Some(name) = &policy {
        let Some(live) = &live else {
            return Err(ApiError::not_found(format!(
                "{} policy '{name}' not found",
                kind.name()
            )));
        };
        candidate.name = name.clone();
        // The candidate keeps the live policy's component unless it names its own.
        if body.get("module").is_none_or(Value::is_null) {
            candidate.module = live.module.clone();
        }
    }
    let mut selected: Vec<VerifierAgent> = agents
        .into_iter()
        .filter(|a| policy.as_deref().is_none_or(|p| policy_name(a, kind) == p))
        .collect();
    if let Some(ids) = &listed {
        let unknown: Vec<&String> = ids
            .iter()
            .filter(|id| !selected.iter().any(|a| &a.agent_id == *id))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::bad_request(format!(
                "agents not found{}: {}",
                if policy.is_some() {
                    " among those using the policy"
                } else {
                    ""
                },
                unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        selected.retain(|a| ids.contains(&a.agent_id));
    }
    let job = Arc::new(Job {
        id: canary_id()?,
        tenant: tenant.clone(),
        kind,
        policy,
        live_checksum: live.map(|l| l.checksum),
        candidate,
        agents: selected,
        progress: Mutex::new(Progress {
            started_ms: now_ms(),
            ..Progress::default()
        }),
    });
    verifier.canaries.add(job.clone())?;
    let (v2, j2) = (verifier.clone(), job.clone());
    std::thread::Builder::new()
        .name("zest-canary".into())
        .spawn(move || {
            lower_priority();
            let span = tracing::info_span!("canary", id = %j2.id, tenant = %j2.tenant);
            let _entered = span.enter();
            run(&v2, &j2);
        })
        .map_err(|e| ApiError::internal("starting a canary", e))?;
    tracing::info!(canary = %job.id, %tenant, agents = job.agents.len(), "canary started");
    Ok(Envelope {
        code: StatusCode::ACCEPTED,
        results: report(&job, false),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ShowQuery {
    /// `false`: the summary only.
    agents: Option<bool>,
}

fn visible(verifier: &Verifier, scope: &Scope, id: &str) -> Result<Arc<Job>, ApiError> {
    verifier
        .canaries
        .get(id)
        .filter(|j| scope.sees(&j.tenant))
        .ok_or_else(|| ApiError::not_found("canary not found"))
}

/// `GET /{v}/canaries/{id}`: progress, summary and each agent's verdicts.
pub(super) async fn show(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
    Query(query): Query<ShowQuery>,
) -> ApiResult {
    version_of(&v)?;
    let job = visible(&verifier, &scope, &id)?;
    Ok(Envelope::ok(report(&job, query.agents.unwrap_or(true))))
}

/// `GET /{v}/canaries`: the canaries the caller may see, summaries only.
pub(super) async fn list(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
) -> ApiResult {
    version_of(&v)?;
    let jobs: Vec<Value> = verifier
        .canaries
        .all()
        .iter()
        .filter(|j| scope.sees(&j.tenant))
        .map(|j| report(j, false))
        .collect();
    Ok(Envelope::ok(json!({ "canaries": jobs })))
}

/// A finished job's report, for the dashboard.
pub fn report_of(verifier: &Verifier, scope: &Scope, id: &str) -> Option<Value> {
    visible(verifier, scope, id).ok().map(|j| report(&j, true))
}

/// Every job the caller may see, newest first, for the dashboard.
pub fn reports(verifier: &Verifier, scope: &Scope) -> Vec<Value> {
    let mut all: Vec<Value> = verifier
        .canaries
        .all()
        .iter()
        .filter(|j| scope.sees(&j.tenant))
        .map(|j| report(j, false))
        .collect();
    all.reverse();
    all
}

/// `POST /{v}/canaries/{id}/promote`: the candidate becomes the next version of the policy
/// the canary ran for, if that policy is still the version canaried and every agent using
/// it now was canaried. Agents switch at their next round.
pub(super) async fn promote(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    let job = visible(&verifier, &scope, &id)?;
    if !job.finished() {
        return Err(ApiError::new(StatusCode::CONFLICT, "the canary is still running"));
    }
    if let Some(version) = job
        .progress
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .promoted
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the canary was promoted already, as version {version}"),
        ));
    }
    let (Some(name), Some(expected)) = (job.policy.clone(), job.live_checksum.clone()) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the canary did not run for a named policy (give `policy` when starting it); nothing to promote",
        ));
    };
    let j2 = job.clone();
    let outcome = blocking(&verifier, "promoting a canary", move |store| {
        let canaried: BTreeSet<&str> = j2.agents.iter().map(|a| a.agent_id.as_str()).collect();
        let missed: Vec<String> = store
            .agents()?
            .into_iter()
            .filter(|a| a.tenant == j2.tenant && policy_name(a, j2.kind) == name)
            .filter(|a| !canaried.contains(a.agent_id.as_str()))
            .map(|a| a.agent_id)
            .collect();
        if !missed.is_empty() {
            return Ok(Err(missed));
        }
        store
            .swap_policy(j2.kind, &j2.tenant, &j2.candidate, &expected)
            .map(Ok)
    })
    .await?;
    let policy = job.policy.clone().unwrap_or_default();
    match outcome {
        Err(missed) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "agents using policy '{policy}' were not canaried: {}; run the canary again",
                missed.join(", ")
            ),
        )),
        Ok(Swap::Done(version)) => {
            job.progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .promoted = Some(version);
            tracing::info!(canary = %job.id, tenant = %job.tenant, %policy, version, "canary promoted");
            Ok(Envelope::ok(json!({
                "policy": policy,
                "kind": job.kind.name(),
                "version": version,
                "previous_version": version.saturating_sub(1),
            })))
        }
        Ok(Swap::Changed) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("policy '{policy}' changed since the canary ran; run the canary again"),
        )),
        Ok(Swap::NotFound) => Err(ApiError::not_found(format!("policy '{policy}' no longer exists"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, tenant: &str) -> Arc<Job> {
        Arc::new(Job {
            id: id.into(),
            tenant: tenant.into(),
            kind: PolicyKind::Runtime,
            policy: None,
            live_checksum: None,
            candidate: PolicyRecord {
                name: String::new(),
                module: "builtin:ima".into(),
                document: None,
                checksum: String::new(),
                generator: 0,
            },
            agents: Vec::new(),
            progress: Mutex::new(Progress::default()),
        })
    }

    fn finish(job: &Job) {
        job.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finished = true;
    }

    #[test]
    fn a_tenant_running_its_limit_of_canaries_blocks_only_itself() {
        let canaries = Canaries::default();
        canaries.add(job("a1", "a")).unwrap();
        let a2 = job("a2", "a");
        canaries.add(a2.clone()).unwrap();
        let refused = canaries.add(job("a3", "a")).unwrap_err();
        assert_eq!(refused.code, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.message.contains("this tenant's"), "{}", refused.message);
        // Another tenant is not queued behind a's canaries.
        canaries.add(job("b1", "b")).unwrap();
        // One of a's is done: a may start another.
        finish(&a2);
        canaries.add(job("a3", "a")).unwrap();
    }

    #[test]
    fn the_verifier_bounds_the_canaries_of_all_tenants_together() {
        let canaries = Canaries::default();
        for t in 0..MAX_RUNNING {
            canaries.add(job(&format!("j{t}"), &format!("t{t}"))).unwrap();
        }
        let refused = canaries.add(job("late", "late")).unwrap_err();
        assert_eq!(refused.code, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            refused.message.contains("on this verifier"),
            "{}",
            refused.message
        );
    }
}
