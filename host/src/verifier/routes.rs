//! The verifier's routes under `/v2[.x]` (keylime-api.md §4.2), every one behind mTLS.
//!
//! | route | what |
//! |---|---|
//! | `GET /version`, `GET /{v}/version` | API versions |
//! | `GET /{v}/agents[?bulk=1]`, `GET`/`POST`/`DELETE /{v}/agents/{id}` | enrolled agents |
//! | `PUT /{v}/agents/{id}/reactivate`, `PUT /{v}/agents/{id}/stop` | polling on and off |
//! | `GET /{v}/allowlists`, `GET`/`POST`/`PUT`/`DELETE /{v}/allowlists/{name}` | runtime policies |
//! | `GET /{v}/mbpolicies`, `GET`/`POST`/`PUT`/`DELETE /{v}/mbpolicies/{name}` | measured-boot refstates |
//! | `GET /{v}/verify/identity` (2.2+) | is this quote from that agent's AK? |
//! | `POST /{v}/verify/evidence` (2.4+) | stateless verification of evidence handed in |
//! | `/{v}/modules[/{id}]` (ours) | policy components: upload, list, show, delete (`modules.rs`) |
//! | `POST /v3[.0]/sessions`, `PATCH /v3[.0]/sessions/{id}` | push agents' proof of possession (`push/`) |
//! | `POST`/`GET /v3[.0]/agents/{id}/attestations`, `PATCH`/`GET …/{n\|latest}` | push attestations |

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Verifier;
use super::enrol::enrolment;
use super::policies::{
    check_name, check_signature, decode_mb_policy, decode_runtime_policy, measured_boot_record, module_field,
    runtime_record,
};
use crate::api::docs::{Body, Op, Reply, Routes};
use crate::api::{self, AgentId, ApiError, ApiResult, ApiVersion, Envelope, Scope};
use crate::evidence::{HashAlg, PublicArea, Quote};
use crate::store::verifier::state;
use crate::store::{
    EnrolOutcome, PolicyDelete, PolicyKind, PolicyWrite, StoreError, VerifierAgent, VerifierStore,
};
use crate::tpm::{AttestationKey, QuoteExpectations, verify_quote};

/// Largest request body of routes that declare none: reads, state changes, small bodies.
const MAX_BODY: usize = 1024 * 1024;
/// Unauthenticated push routes (sessions): a few KiB is plenty for a proof.
const MAX_SESSION_BODY: usize = 16 * 1024;
/// Capabilities offered by a push agent (token-authenticated).
const MAX_CAPABILITIES_BODY: usize = 64 * 1024;

/// The query parameter of routes tenants may call: the operator's choice of tenant.
const TENANT_PARAM: &[(&str, &str)] = &[(
    "tenant",
    "the operator's choice of tenant (default: default); a tenant's certificate acts in its own",
)];

/// The query of the policy version routes.
const VERSION_PARAMS: &[(&str, &str)] = &[
    (
        "tenant",
        "the operator's choice of tenant (default: default); a tenant's certificate acts in its own",
    ),
    ("version", "a version number"),
];

/// The `{v}` of the verifier's tenant routes.
const V2: &[&str] = &["v2", "v2.0", "v2.1", "v2.2", "v2.3", "v2.4", "v2.5", "v2.6"];

pub fn router(state: Verifier) -> Router {
    routes(&state.config)
        .into_router(
            "zest verifier",
            "Keylime-compatible verifier: tenant routes under /v2.x (mTLS with the tenant \
         certificate), push-mode agent routes under /v3 and /v3.0.",
            MAX_BODY,
        )
        .with_state(state)
}

/// Every route of the verifier with its description (the source of `/openapi.json`), and
/// the body limits `config` sets for uploads and evidence.
pub fn routes(config: &super::VerifierConfig) -> Routes<Verifier> {
    let upload = config.max_upload_size;
    let evidence = config.max_evidence_size;
    use super::modules;
    use super::push::{attestations, sessions};
    let mut routes =
        Routes::new(V2)
            .route(
                "/version",
                false,
                vec![
                    Op::get(version, "API versions served (410 in push mode)")
                        .ok(&[200, 410])
                        .open(),
                ],
            )
            .route(
                "/versions",
                false,
                vec![
                    Op::get(version, "API versions served (Keylime's second name)")
                        .ok(&[200, 410])
                        .open(),
                ],
            )
            .route(
                "/",
                false,
                vec![Op::get(root, "Redirect to the API 3.0 root").ok(&[307]).open()],
            )
            .route(
                "/metrics",
                false,
                vec![Op::get(metrics, "Prometheus metrics").reply(Reply::Metrics)],
            )
            .route(
                "/{v}/version",
                true,
                vec![Op::get(versioned_version, "API versions served").open()],
            )
            .route(
                "/{v}/agents",
                true,
                vec![
                    Op::get(list_agents, "Enrolled agents (ids, or every status with bulk)")
                        .query(&[
                            ("bulk", "1 or true: every agent's status"),
                            ("verifier", "only agents of this verifier id"),
                            ("tenant", "the operator's filter: only this tenant's agents"),
                        ])
                        .tenants(),
                ],
            )
            .route(
                "/{v}/agents/{id}",
                true,
                vec![
                    Op::get(show_agent, "An agent's attestation status").tenants(),
                    Op::post(enrol, "Enrol an agent with its policies (in the caller's tenant)")
                        .body(Body::JsonOf("Enrolment"))
                        .query(TENANT_PARAM)
                        .body_limit(upload)
                        .tenants(),
                    Op::delete(
                        delete_agent,
                        "Stop attesting and forget an agent (202 while its round is in flight)",
                    )
                    .ok(&[200, 202])
                    .tenants(),
                ],
            )
            .route(
                "/{v}/agents/{id}/reactivate",
                true,
                vec![Op::put(reactivate, "Resume attesting a failed or stopped agent").tenants()],
            )
            .route(
                "/{v}/agents/{id}/stop",
                true,
                vec![Op::put(stop, "Stop attesting an agent, keeping its enrolment").tenants()],
            )
            .route(
                "/{v}/allowlists",
                true,
                vec![
                    Op::get(list_runtime, "Names of the stored runtime policies")
                        .query(TENANT_PARAM)
                        .tenants(),
                ],
            )
            .route(
                "/{v}/allowlists/{name}",
                true,
                vec![
                    Op::get(show_runtime, "A stored runtime policy")
                        .query(TENANT_PARAM)
                        .tenants(),
                    Op::post(create_runtime, "Store a runtime policy")
                        .body(Body::JsonOf("RuntimePolicyUpload"))
                        .query(TENANT_PARAM)
                        .body_limit(upload)
                        .ok(&[201])
                        .tenants(),
                    Op::put(update_runtime, "Replace a stored runtime policy")
                        .body(Body::JsonOf("RuntimePolicyUpload"))
                        .query(TENANT_PARAM)
                        .body_limit(upload)
                        .ok(&[201])
                        .tenants(),
                    Op::delete(delete_runtime, "Remove a runtime policy no agent uses")
                        .query(TENANT_PARAM)
                        .ok(&[204])
                        .tenants(),
                ],
            )
            .route(
                "/{v}/mbpolicies",
                true,
                vec![
                    Op::get(list_mb, "Names of the stored measured-boot policies")
                        .query(TENANT_PARAM)
                        .tenants(),
                ],
            )
            .route(
                "/{v}/mbpolicies/{name}",
                true,
                vec![
                    Op::get(show_mb, "A stored measured-boot policy")
                        .query(TENANT_PARAM)
                        .tenants(),
                    Op::post(create_mb, "Store a measured-boot policy")
                        .body(Body::JsonOf("MbPolicyUpload"))
                        .query(TENANT_PARAM)
                        .body_limit(upload)
                        .ok(&[201])
                        .tenants(),
                    Op::put(update_mb, "Replace a stored measured-boot policy")
                        .body(Body::JsonOf("MbPolicyUpload"))
                        .query(TENANT_PARAM)
                        .body_limit(upload)
                        .ok(&[201])
                        .tenants(),
                    Op::delete(delete_mb, "Remove a measured-boot policy no agent uses")
                        .query(TENANT_PARAM)
                        .ok(&[204])
                        .tenants(),
                ],
            )
            .route(
                "/{v}/verify/identity",
                true,
                vec![
                    Op::get(verify_identity, "Is this quote from that agent's AK? (2.2+)")
                        .query(&[
                            ("agent_uuid", "the agent"),
                            ("quote", "Keylime quote text"),
                            ("nonce", "the nonce quoted"),
                            ("hash_alg", "the PCR bank"),
                        ])
                        .open(),
                ],
            )
            .route(
                "/{v}/verify/evidence",
                true,
                vec![
                    Op::post(
                        super::evidence::verify_evidence,
                        "Verify evidence handed in (2.4+)",
                    )
                    .body(Body::Json)
                    .body_limit(upload.max(evidence))
                    .ok(&[200, 503])
                    .open(),
                ],
            )
            .route(
                "/{v}/modules",
                true,
                vec![
                    Op::get(modules::list, "Policy components: built-in and uploaded")
                        .query(TENANT_PARAM)
                        .tenants(),
                    Op::post(modules::upload, "Upload a policy component (.wasm)")
                        .body(Body::Binary(&["application/wasm", "application/octet-stream"]))
                        .query(&[
                            ("kind", "runtime or measured-boot"),
                            ("tenant", "the operator's choice of tenant (default: default)"),
                        ])
                        .body_limit(upload)
                        .ok(&[201, 200])
                        .tenants(),
                ],
            )
            .route(
                "/{v}/quotas/{tenant}",
                true,
                vec![
                    Op::get(
                        super::quotas::show,
                        "A tenant's quota and what it holds (zest's own)",
                    )
                    .tenants(),
                    Op::put(super::quotas::set, "Set any of a tenant's quotas (zest's own)")
                        .body(Body::JsonOf("TenantQuota")),
                    Op::delete(
                        super::quotas::reset,
                        "Return a tenant's quotas to the defaults (zest's own)",
                    ),
                ],
            )
            .route(
                "/{v}/agents/{id}/history",
                true,
                vec![
                    Op::get(
                        super::history::show,
                        "An agent's judged rounds, newest first (zest's own)",
                    )
                    .query(&[
                        ("since", "Unix seconds: rounds from then on"),
                        ("until", "Unix seconds: rounds before then"),
                        ("verdict", "pass, fail or all"),
                        ("before", "the previous page's `next`: older rounds"),
                        ("limit", "rounds per page, 1 to 1000 (default 100)"),
                    ])
                    .tenants(),
                ],
            )
            .route(
                "/{v}/allowlists/{name}/versions",
                true,
                vec![
                    Op::get(
                        super::policy_versions::list_runtime,
                        "A runtime policy's versions (zest's own)",
                    )
                    .query(VERSION_PARAMS)
                    .tenants(),
                ],
            )
            .route(
                "/{v}/allowlists/{name}/rollback",
                true,
                vec![
                    Op::post(
                        super::policy_versions::rollback_runtime,
                        "Make an earlier version of a runtime policy the live one again (zest's own)",
                    )
                    .query(VERSION_PARAMS)
                    .tenants(),
                ],
            )
            .route(
                "/{v}/mbpolicies/{name}/versions",
                true,
                vec![
                    Op::get(
                        super::policy_versions::list_mb,
                        "A measured-boot policy's versions (zest's own)",
                    )
                    .query(VERSION_PARAMS)
                    .tenants(),
                ],
            )
            .route(
                "/{v}/mbpolicies/{name}/rollback",
                true,
                vec![
                    Op::post(
                        super::policy_versions::rollback_mb,
                        "Make an earlier version of a measured-boot policy the live one again (zest's own)",
                    )
                    .query(VERSION_PARAMS)
                    .tenants(),
                ],
            )
            .route(
                "/{v}/canaries",
                true,
                vec![
                Op::get(super::canary::list, "Policy canaries on this verifier (zest's own)").tenants(),
                Op::post(
                    super::canary::start,
                    "Judge a candidate policy on agents' recorded evidence, in the background (zest's own)",
                )
                .body(Body::Json)
                .query(TENANT_PARAM)
                .body_limit(upload)
                .ok(&[202])
                .tenants(),
            ],
            )
            .route(
                "/{v}/canaries/{id}",
                true,
                vec![
                    Op::get(super::canary::show, "A canary's progress and report (zest's own)")
                        .query(&[("agents", "false: the summary only")])
                        .tenants(),
                ],
            )
            .route(
                "/{v}/canaries/{id}/promote",
                true,
                vec![
                    Op::post(
                        super::canary::promote,
                        "Make a canaried candidate the next version of its policy (zest's own)",
                    )
                    .tenants(),
                ],
            )
            .route(
                "/dashboard",
                false,
                vec![
                    Op::get(
                        super::dashboard::overview,
                        "Dashboard: agents, failures, canaries",
                    )
                    .reply(Reply::Html)
                    .tenants(),
                ],
            )
            .route(
                "/dashboard/agents/{id}",
                false,
                vec![
                    Op::get(super::dashboard::agent, "Dashboard: an agent's timeline")
                        .reply(Reply::Html)
                        .tenants(),
                ],
            )
            .route(
                "/dashboard/canaries/{id}",
                false,
                vec![
                    Op::get(super::dashboard::canary, "Dashboard: a canary's report")
                        .reply(Reply::Html)
                        .tenants(),
                ],
            )
            .route(
                "/{v}/modules/{id}",
                true,
                vec![
                    Op::get(modules::show, "A policy component's record")
                        .query(TENANT_PARAM)
                        .tenants(),
                    Op::delete(modules::delete, "Remove an uploaded component no policy uses")
                        .query(TENANT_PARAM)
                        .ok(&[204])
                        .tenants(),
                ],
            );
    for root in ["/v3", "/v3/", "/v3.0", "/v3.0/"] {
        routes = routes.route(root, false, vec![Op::get(version_root, "API 3.0 root").open()]);
    }
    // Push mode's agent routes (API 3.0): JSON:API replies, token authentication.
    for prefix in ["/v3", "/v3.0"] {
        routes = routes
            .route(
                &format!("{prefix}/sessions"),
                false,
                vec![
                    Op::post(sessions::create, "Open a session: a challenge for the AK")
                        .body(Body::Json)
                        .body_limit(MAX_SESSION_BODY)
                        .reply(Reply::JsonApi)
                        .open(),
                ],
            )
            .route(
                &format!("{prefix}/sessions/{{id}}"),
                false,
                vec![
                    Op::patch(sessions::prove, "Prove possession of the AK; get a token")
                        .body(Body::Json)
                        .body_limit(MAX_SESSION_BODY)
                        .reply(Reply::JsonApi)
                        .open(),
                ],
            )
            .route(
                &format!("{prefix}/agents/{{id}}/attestations"),
                false,
                vec![
                    Op::get(attestations::list, "An agent's attestations")
                        .reply(Reply::JsonApi)
                        .tenants(),
                    Op::post(
                        attestations::create,
                        "Offer capabilities; get evidence requested (token)",
                    )
                    .body(Body::Json)
                    .body_limit(MAX_CAPABILITIES_BODY)
                    .reply(Reply::JsonApi)
                    .ok(&[201])
                    .open(),
                ],
            )
            .route(
                &format!("{prefix}/agents/{{id}}/attestations/{{which}}"),
                false,
                vec![
                    Op::get(attestations::show, "One attestation (index or latest)")
                        .reply(Reply::JsonApi)
                        .tenants(),
                    Op::patch(attestations::submit, "Submit the evidence requested (token)")
                        .body(Body::Json)
                        .body_limit(evidence)
                        .reply(Reply::JsonApi)
                        .ok(&[202])
                        .open(),
                ],
            );
    }
    routes
}

/// The verifier serves the v2 routes (v3 is push mode's, a later room).
pub(super) fn version_of(segment: &str) -> Result<ApiVersion, ApiError> {
    ApiVersion::from_path_segment(segment)
        .filter(|v| !v.is_v3())
        .ok_or_else(|| ApiError::not_found(format!("API version not supported: {segment}")))
}

pub(super) async fn blocking<T: Send + 'static>(
    verifier: &Verifier,
    what: &'static str,
    f: impl FnOnce(&dyn VerifierStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    api::blocking(verifier.store.clone(), what, f).await
}

fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    api::json_object(body)
}

/// Keylime 7.14.3's verifier in push mode answers 410 Gone here.
async fn version(State(verifier): State<Verifier>) -> ApiResult {
    if verifier.config.mode == super::Mode::Push {
        return Err(ApiError::new(axum::http::StatusCode::GONE, "Gone"));
    }
    Ok(Envelope::ok(api::version_document()))
}

/// Keylime's verifier redirects its root to the newest API's.
async fn root() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::LOCATION, "/v3.0/")],
    )
        .into_response()
}

async fn version_root() -> Envelope {
    Envelope::empty()
}

async fn versioned_version(Path(v): Path<String>) -> ApiResult {
    version_of(&v)?;
    Ok(Envelope::ok(api::version_document()))
}

/// Keylime's `attestation_status` of a pull agent, with one difference: an agent whose last
/// good quote is older than the staleness limit is `TIMEOUT`, not `PASS`, whatever its
/// state says, so that a stuck or dead worker never leaves it shown as attested
/// (CVE-2022-3500).
pub(super) fn attestation_status(agent: &VerifierAgent, config: &super::VerifierConfig) -> &'static str {
    if agent.push {
        // Keylime's push rules; an agent silent for longer than the limit has timed out.
        let timed_out = agent.last_received_quote > 0
            && crate::clock::unix_now().saturating_sub(agent.last_received_quote)
                > config.stale_after().as_secs();
        return match (timed_out, agent.consecutive_attestation_failures > 0) {
            (_, true) => "FAIL",
            (true, false) => "TIMEOUT",
            (false, false) if agent.last_attestation_passed => "PASS",
            _ => "PENDING",
        };
    }
    match agent.operational_state {
        state::GET_QUOTE | state::GET_QUOTE_RETRY | state::PROVIDE_V | state::PROVIDE_V_RETRY => {
            if agent.last_successful_attestation == 0 {
                "PENDING"
            } else if crate::clock::unix_now().saturating_sub(agent.last_successful_attestation)
                > config.stale_after().as_secs()
            {
                "TIMEOUT"
            } else {
                "PASS"
            }
        }
        state::FAILED | state::INVALID_QUOTE | state::TENANT_FAILED => "FAIL",
        _ => "PENDING",
    }
}

/// Prometheus metrics: the verifier's counters, and its agents by mode, operational state
/// and attestation status read now.
async fn metrics(State(verifier): State<Verifier>) -> Result<Response, ApiError> {
    let config = verifier.config.clone();
    let counts = blocking(&verifier, "counting agents", move |store| {
        let mut counts: std::collections::BTreeMap<(&'static str, &'static str, &'static str), u64> =
            Default::default();
        for agent in store.agents()? {
            let mode = if agent.push { "push" } else { "pull" };
            let key = (
                mode,
                state::name(agent.operational_state),
                attestation_status(&agent, &config),
            );
            *counts.entry(key).or_default() += 1;
        }
        Ok(counts)
    })
    .await?;
    let series = counts
        .into_iter()
        .map(|((mode, operational_state, attestation_status), n)| {
            let labels = crate::metrics::AgentLabels {
                mode,
                operational_state,
                attestation_status,
            };
            (labels, n)
        });
    let text = verifier.metrics.render(|m| {
        crate::metrics::set_gauges(&m.verifier_agents, series);
        verifier.policies.set_instance_gauge(m);
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

/// The status object of `GET /agents/{id}` (keylime-api.md §4.4).
fn status(
    verifier: &Verifier,
    agent: &VerifierAgent,
    has_mb_refstate: bool,
    has_runtime_policy: bool,
) -> Value {
    let interval = verifier.config.quote_interval;
    json!({
        "operational_state": agent.operational_state,
        "v": agent.v,
        "ip": agent.ip,
        "port": agent.port,
        "tpm_policy": agent.tpm_policy,
        "meta_data": agent.meta_data,
        "has_mb_refstate": i32::from(has_mb_refstate),
        "has_runtime_policy": i32::from(has_runtime_policy),
        "accept_tpm_hash_algs": agent.accept_tpm_hash_algs,
        "accept_tpm_encryption_algs": agent.accept_tpm_encryption_algs,
        "accept_tpm_signing_algs": agent.accept_tpm_signing_algs,
        "hash_alg": agent.hash_alg,
        "enc_alg": agent.enc_alg,
        "sign_alg": agent.sign_alg,
        // The verifier that polls it (several may share a database); this one otherwise.
        "verifier_id": agent.lease_owner.as_deref().unwrap_or(&verifier.config.verifier_id),
        "verifier_ip": verifier.config.ip.to_string(),
        "verifier_port": verifier.config.port,
        "severity_level": agent.severity_level,
        "last_event_id": agent.last_event_id,
        "attestation_count": agent.attestation_count,
        "last_received_quote": agent.last_received_quote,
        "last_successful_attestation": agent.last_successful_attestation,
        "attestation_status": attestation_status(agent, &verifier.config),
        "attestation_period": format!("{}s", interval as u64),
        "maximum_attestation_interval": format!("{}s", (interval * 5.0) as u64),
        "runtime_policy_name": agent.runtime_policy,
        "mb_policy_name": agent.mb_policy,
        "failures": agent
            .last_failures
            .iter()
            .map(crate::store::StoredFailure::to_json)
            .collect::<Vec<_>>(),
    })
}

/// The status object of one agent, with its policies' presence.
fn agent_status(
    verifier: &Verifier,
    store: &dyn VerifierStore,
    agent: &VerifierAgent,
) -> Result<Value, StoreError> {
    let mb = store.policy(PolicyKind::MeasuredBoot, &agent.tenant, &agent.mb_policy)?;
    let runtime = store.policy(PolicyKind::Runtime, &agent.tenant, &agent.runtime_policy)?;
    Ok(status(
        verifier,
        agent,
        mb.is_some_and(|p| p.document.is_some()),
        runtime.is_some_and(|p| super::policies::judges_ima(&p)),
    ))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    bulk: Option<String>,
    verifier: Option<String>,
    tenant: Option<String>,
}

/// `?tenant=T`: which tenant the operator acts in or lists (a tenant's own otherwise).
#[derive(serde::Deserialize)]
struct TenantQuery {
    tenant: Option<String>,
}

async fn list_agents(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.listed_tenant(query.tenant.as_deref())?;
    let me = verifier.config.verifier_id.clone();
    let bulk = query
        .bulk
        .is_some_and(|b| b != "0" && !b.eq_ignore_ascii_case("false"));
    let v2 = verifier.clone();
    let results = blocking(&verifier, "listing agents", move |store| {
        let mut agents = store.agents()?;
        if let Some(tenant) = &tenant {
            agents.retain(|a| &a.tenant == tenant);
        }
        // Keylime's `?verifier=ID`: the agents that verifier attests.
        if let Some(id) = &query.verifier {
            agents.retain(|a| a.lease_owner.as_deref().unwrap_or(&me) == id);
        }
        if bulk {
            let mut all = Map::new();
            for agent in &agents {
                all.insert(agent.agent_id.clone(), agent_status(&v2, store, agent)?);
            }
            Ok(Value::Object(all))
        } else {
            // Keylime's list of one-element lists.
            let ids: Vec<Vec<String>> = agents.into_iter().map(|a| vec![a.agent_id]).collect();
            Ok(json!({"uuids": ids}))
        }
    })
    .await?;
    Ok(Envelope::ok(results))
}

async fn show_agent(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    let id = AgentId::parse(&id)?;
    let v2 = verifier.clone();
    let agent_id = id.to_string();
    let found = blocking(&verifier, "reading agent", move |store| {
        store
            .agent(&agent_id)?
            .filter(|a| scope.sees(&a.tenant))
            .map(|a| agent_status(&v2, store, &a))
            .transpose()
    })
    .await?;
    found
        .map(Envelope::ok)
        .ok_or_else(|| ApiError::not_found("agent id not found"))
}

async fn enrol(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    let id = AgentId::parse(&id)?;
    let body = json_object(&body)?;
    let quota = super::quotas::quota(&verifier, &tenant).await?;
    let enrolment = enrolment(&verifier, &tenant, &quota, &id, &body).await?;
    let outcome = blocking(&verifier, "enrolling agent", move |store| {
        store.enrol(&enrolment.agent, &enrolment.new_policies, &quota)
    })
    .await?;
    match outcome {
        EnrolOutcome::Enrolled => {
            verifier.poll_wakeup.notify_one();
            tracing::info!(agent_id = %id, %tenant, "agent enrolled");
            Ok(Envelope::empty())
        }
        EnrolOutcome::QuotaExceeded(which) => {
            let limit = match which {
                "agents" => quota.agents,
                _ => quota.policies,
            };
            Err(super::quotas::exceeded(&verifier, &tenant, which, limit))
        }
        EnrolOutcome::AgentExists => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Agent of uuid {id} already exists. Please use delete or update."),
        )),
        EnrolOutcome::PolicyExists(kind) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{} with that name already exists", kind_name(kind)),
        )),
        EnrolOutcome::PolicyMissing(kind) => Err(ApiError::not_found(format!(
            "{} with that name not found",
            kind_name(kind)
        ))),
    }
}

fn kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Runtime => "Runtime policy",
        PolicyKind::MeasuredBoot => "Measured boot policy",
    }
}

async fn delete_agent(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    let id = AgentId::parse(&id)?;
    let agent_id = id.to_string();
    let rounds = verifier.rounds.clone();
    // Keylime's rule: a polled agent whose round is in flight is marked TERMINATED (202) and
    // deleted when the round ends; one in a state that is not polled, or between rounds, is
    // deleted at once (200). A round that ends after that finds no record to write back.
    let outcome = blocking(&verifier, "deleting agent", move |store| {
        let Some(mut agent) = store.agent(&agent_id)?.filter(|a| scope.sees(&a.tenant)) else {
            return Ok(None);
        };
        if agent.operational_state == state::TERMINATED {
            return Ok(Some((false, agent.tenant)));
        }
        let at_rest = matches!(
            agent.operational_state,
            state::SAVED | state::FAILED | state::INVALID_QUOTE | state::TENANT_FAILED
        );
        if agent.push || at_rest || !rounds.busy(&agent_id) {
            return Ok(store.delete_agent(&agent_id)?.then_some((true, agent.tenant)));
        }
        agent.operational_state = state::TERMINATED;
        agent.revision = crate::store::verifier::new_revision();
        Ok(store.update_agent(&agent, &[])?.then_some((false, agent.tenant)))
    })
    .await?;
    match outcome {
        Some((true, tenant)) => {
            verifier.tokens.forget_agent(id.as_str());
            tracing::info!(agent_id = %id, %tenant, "agent deleted");
            Ok(Envelope::empty())
        }
        Some((false, tenant)) => {
            tracing::info!(agent_id = %id, %tenant, "agent marked for deletion after its round");
            Ok(Envelope::accepted())
        }
        None => Err(ApiError::not_found("agent id not found")),
    }
}

/// Sets an agent's operational state (stop, reactivate).
async fn set_state(verifier: &Verifier, scope: Scope, id: &str, to: i64) -> ApiResult {
    let id = AgentId::parse(id)?;
    let agent_id = id.to_string();
    let done = blocking(verifier, "updating agent", move |store| {
        let Some(mut agent) = store.agent(&agent_id)?.filter(|a| scope.sees(&a.tenant)) else {
            return Ok(None);
        };
        // Being deleted: gone as far as the operator is concerned.
        if agent.operational_state == state::TERMINATED {
            return Ok(None);
        }
        // A push agent is never polled: reactivation only clears its failures, and it shows
        // PENDING until its next attestation passes.
        agent.operational_state = if agent.push && to == state::START {
            state::GET_QUOTE
        } else {
            to
        };
        if to == state::START {
            agent.consecutive_attestation_failures = 0;
            agent.last_attestation_passed = false;
            // A reactivated agent starts over: a new failure must notify again.
            agent.last_failures.clear();
            agent.severity_level = None;
            agent.last_event_id = None;
            agent.polls_after_failure = false;
        }
        // A round judged meanwhile must not undo this.
        agent.revision = crate::store::verifier::new_revision();
        Ok(store.update_agent(&agent, &[])?.then_some(agent.tenant))
    })
    .await?;
    if let Some(tenant) = done {
        verifier.poll_wakeup.notify_one();
        tracing::info!(agent_id = %id, %tenant, state = to, "agent state set");
        Ok(Envelope::empty())
    } else {
        Err(ApiError::not_found("agent id not found"))
    }
}

async fn reactivate(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    set_state(&verifier, scope, &id, state::START).await
}

async fn stop(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    set_state(&verifier, scope, &id, state::TENANT_FAILED).await
}

/// Keylime's list of names, in the tenant the caller acts in; for the operator without a
/// `tenant` parameter also every tenant's, under `tenants`.
async fn list_policies(
    verifier: &Verifier,
    v: &str,
    scope: Scope,
    query: TenantQuery,
    kind: PolicyKind,
) -> ApiResult {
    version_of(v)?;
    let acting = scope.acting_tenant(query.tenant.as_deref())?;
    let listed = scope.listed_tenant(query.tenant.as_deref())?;
    let names = blocking(verifier, "listing policies", move |s| {
        s.policy_names(kind, listed.as_deref())
    })
    .await?;
    let key = match kind {
        PolicyKind::Runtime => "runtimepolicy names",
        PolicyKind::MeasuredBoot => "mbpolicy names",
    };
    let own: Vec<&String> = names
        .iter()
        .filter(|(t, _)| *t == acting)
        .map(|(_, n)| n)
        .collect();
    let mut results = Map::new();
    results.insert(key.into(), json!(own));
    if scope == Scope::Operator && query.tenant.is_none() {
        let mut tenants = Map::new();
        for (tenant, name) in &names {
            if let Value::Array(list) = tenants.entry(tenant.clone()).or_insert_with(|| json!([])) {
                list.push(json!(name));
            }
        }
        results.insert("tenants".into(), Value::Object(tenants));
    }
    Ok(Envelope::ok(Value::Object(results)))
}

async fn show_policy(
    verifier: &Verifier,
    v: &str,
    tenant: String,
    name: String,
    kind: PolicyKind,
) -> ApiResult {
    version_of(v)?;
    let n = name.clone();
    let record = blocking(verifier, "reading policy", move |s| s.policy(kind, &tenant, &n))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{} {name} not found", kind_name(kind))))?;
    let text = record
        .document
        .as_deref()
        .map(|d| String::from_utf8_lossy(d).into_owned());
    Ok(Envelope::ok(match kind {
        // Keylime's reply carries a misspelt, always-null `tmp_policy`.
        PolicyKind::Runtime => json!({
            "name": record.name,
            "tmp_policy": null,
            "runtime_policy": text,
            "module": record.module,
        }),
        PolicyKind::MeasuredBoot => json!({"name": record.name, "mb_policy": text, "module": record.module}),
    }))
}

async fn write_policy(
    verifier: &Verifier,
    v: &str,
    tenant: String,
    name: String,
    kind: PolicyKind,
    body: &Bytes,
    create: bool,
) -> ApiResult {
    version_of(v)?;
    check_name(&name)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("Expected non zero content length"));
    }
    let body = json_object(body)?;
    let quota = super::quotas::quota(verifier, &tenant).await?;
    let record = policy_upload(verifier, &tenant, &name, kind, &body, &quota).await?;
    let owner = tenant.clone();
    let outcome = blocking(verifier, "storing policy", move |s| {
        s.put_policy(kind, &owner, &record, create, &quota)
    })
    .await?;
    policy_written(verifier, &tenant, &name, kind, create, &quota, outcome)
}

/// A policy record from an upload's body (Keylime's `runtime_policy` with its
/// `runtime_policy_key`, or `mb_policy`; our `module`): its size within the tenant's
/// quota, its signature as the settings demand, and the document loaded by its component.
pub(super) async fn policy_upload(
    verifier: &Verifier,
    tenant: &str,
    name: &str,
    kind: PolicyKind,
    body: &Map<String, Value>,
    quota: &crate::store::TenantQuota,
) -> Result<crate::store::PolicyRecord, ApiError> {
    let module = module_field(body)?;
    Ok(match kind {
        PolicyKind::Runtime => {
            let document = decode_runtime_policy(body.get("runtime_policy"), "runtime_policy")?;
            super::quotas::check_size(
                verifier,
                tenant,
                "document_bytes",
                quota.document_bytes,
                document.len(),
            )?;
            let key = body.get("runtime_policy_key").cloned().unwrap_or(Value::Null);
            check_signature(verifier, &document, &key).await?;
            runtime_record(verifier, tenant, name, document, module).await?
        }
        PolicyKind::MeasuredBoot => {
            let document = decode_mb_policy(body.get("mb_policy"), "mb_policy")?;
            let size = document.as_ref().map_or(0, Vec::len);
            super::quotas::check_size(verifier, tenant, "document_bytes", quota.document_bytes, size)?;
            measured_boot_record(verifier, tenant, name, document, module).await?
        }
    })
}

fn policy_written(
    verifier: &Verifier,
    tenant: &str,
    name: &str,
    kind: PolicyKind,
    create: bool,
    quota: &crate::store::TenantQuota,
    outcome: PolicyWrite,
) -> ApiResult {
    match outcome {
        PolicyWrite::Done => {
            tracing::info!(policy = %name, %tenant, ?kind, create, "policy stored");
            Ok(Envelope::created())
        }
        PolicyWrite::QuotaExceeded => Err(super::quotas::exceeded(
            verifier,
            tenant,
            "policies",
            quota.policies,
        )),
        PolicyWrite::Exists => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{} with name {name} already exists", kind_name(kind)),
        )),
        PolicyWrite::NotFound => Err(ApiError::not_found(format!(
            "{} with name {name} does not already exist, use POST to create",
            kind_name(kind)
        ))),
    }
}

async fn delete_policy(
    verifier: &Verifier,
    v: &str,
    tenant: String,
    name: String,
    kind: PolicyKind,
) -> Result<Response, ApiError> {
    version_of(v)?;
    let n = name.clone();
    match blocking(verifier, "deleting policy", move |s| {
        s.delete_policy(kind, &tenant, &n)
    })
    .await?
    {
        // Keylime answers 204 with no body.
        PolicyDelete::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        PolicyDelete::NotFound => Err(ApiError::not_found(format!(
            "{} {name} not found",
            kind_name(kind)
        ))),
        PolicyDelete::InUse => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Can't delete {} {name} as it's currently in use by an agent",
                kind_name(kind)
            ),
        )),
    }
}

async fn list_runtime(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
    Query(query): Query<TenantQuery>,
) -> ApiResult {
    list_policies(&vf, &v, scope, query, PolicyKind::Runtime).await
}

async fn list_mb(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
    Query(query): Query<TenantQuery>,
) -> ApiResult {
    list_policies(&vf, &v, scope, query, PolicyKind::MeasuredBoot).await
}

async fn show_runtime(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> ApiResult {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    show_policy(&vf, &v, tenant, name, PolicyKind::Runtime).await
}

async fn show_mb(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> ApiResult {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    show_policy(&vf, &v, tenant, name, PolicyKind::MeasuredBoot).await
}

async fn create_runtime(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> ApiResult {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    write_policy(&vf, &v, tenant, name, PolicyKind::Runtime, &body, true).await
}

async fn update_runtime(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> ApiResult {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    write_policy(&vf, &v, tenant, name, PolicyKind::Runtime, &body, false).await
}

async fn create_mb(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> ApiResult {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    write_policy(&vf, &v, tenant, name, PolicyKind::MeasuredBoot, &body, true).await
}

async fn update_mb(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    body: Bytes,
) -> ApiResult {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    write_policy(&vf, &v, tenant, name, PolicyKind::MeasuredBoot, &body, false).await
}

async fn delete_runtime(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    delete_policy(&vf, &v, tenant, name, PolicyKind::Runtime).await
}

async fn delete_mb(
    State(vf): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    delete_policy(&vf, &v, tenant, name, PolicyKind::MeasuredBoot).await
}

#[derive(serde::Deserialize)]
struct IdentityQuery {
    agent_uuid: Option<String>,
    quote: Option<String>,
    nonce: Option<String>,
    hash_alg: Option<String>,
}

/// `GET /verify/identity`: whether `quote` is signed by the agent's enrolled AK over
/// `nonce` with `hash_alg` (no PCR policy, clock or PCR 16 checks, as in Keylime).
async fn verify_identity(
    State(verifier): State<Verifier>,
    Path(v): Path<String>,
    Query(query): Query<IdentityQuery>,
) -> ApiResult {
    // Keylime 7.14.3 serves it at every 2.x prefix (its changelog says 2.2; its code does
    // not gate).
    version_of(&v)?;
    let missing = |p: &str| ApiError::bad_request(format!("missing query parameter '{p}'"));
    let id = AgentId::parse(query.agent_uuid.as_deref().ok_or_else(|| missing("agent_uuid"))?)?;
    let quote = query.quote.ok_or_else(|| missing("quote"))?;
    let nonce = query.nonce.ok_or_else(|| missing("nonce"))?;
    let hash_alg = query.hash_alg.ok_or_else(|| missing("hash_alg"))?;
    let agent_id = id.to_string();
    let agent = blocking(&verifier, "reading agent", move |s| s.agent(&agent_id))
        .await?
        .ok_or_else(|| ApiError::not_found("agent id not found"))?;
    let outcome = tokio::task::spawn_blocking(move || identity_check(&agent, &quote, &nonce, &hash_alg))
        .await
        .map_err(|e| ApiError::internal("verifying a quote", e))?;
    Ok(Envelope::ok(match outcome {
        Ok(()) => json!({"valid": 1}),
        Err(reason) => json!({"valid": 0, "reason": reason}),
    }))
}

fn identity_check(agent: &VerifierAgent, quote: &str, nonce: &str, hash_alg: &str) -> Result<(), String> {
    use base64::Engine;
    let hash = HashAlg::from_name(hash_alg).ok_or_else(|| format!("hash_alg {hash_alg} is not supported"))?;
    let ak_bytes = base64::engine::general_purpose::STANDARD
        .decode(&agent.ak_tpm)
        .map_err(|e| format!("stored ak_tpm: {e}"))?;
    let ak =
        AttestationKey::new(PublicArea::from_tpm2b(&ak_bytes).map_err(|e| format!("stored ak_tpm: {e}"))?);
    let quote = Quote::from_keylime_string(quote).map_err(|e| e.to_string())?;
    let expected = QuoteExpectations {
        nonce: nonce.as_bytes(),
        hashes: &[hash],
        schemes: &["rsassa", "rsapss", "ecdsa"],
    };
    verify_quote(&quote, &ak, &expected)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
