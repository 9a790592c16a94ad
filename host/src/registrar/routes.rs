//! The registrar's routes, under `/v2[.x]` and `/v3[.0]` as Keylime scopes them.
//!
//! | route | v2.x | v3.0 | who |
//! |---|---|---|---|
//! | `GET /version`, `GET /{v}/version` | ✓ | ✓ | anyone |
//! | `GET /v3[.0]/` | | ✓ | anyone |
//! | `POST /{v}/agents` (id in body) | ✓ | ✓ | agents |
//! | `POST /{v}/agents/{id}` | ✓ | 405 | agents (the Rust agent's route) |
//! | `PUT /{v}/agents/{id}`, `PUT /{v}/agents/{id}/activate` | ✓ | 405 | agents |
//! | `POST /{v}/agents/{id}/activate` | ✓ | ✓ | agents |
//! | `GET /{v}/agents`, `GET`/`DELETE /{v}/agents/{id}` | ✓ | ✓ | mTLS admin |

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use super::Registrar;
use super::registration::{accept, auth_tag_digest, optional_str};
use crate::api::docs::{Body, Op, Reply, Routes};
use crate::api::{self, AgentId, ApiError, ApiResult, ApiVersion, Envelope};
use crate::store::{RegisterOutcome, RegisteredAgent, RegistrarStore};
use crate::tpm::TrustStore;

/// Largest request body the registrar reads (a registration with an EK chain is ~10 KiB).
const MAX_BODY: usize = 256 * 1024;

/// The `{v}` of the registrar's routes (agents register over 2.x and 3.0).
const VERSIONS: &[&str] = &[
    "v2", "v2.0", "v2.1", "v2.2", "v2.3", "v2.4", "v2.5", "v2.6", "v3", "v3.0",
];

/// The registrar's router, with envelope replies for unknown paths and methods.
pub fn router(state: Registrar) -> Router {
    routes()
        .into_router(
            "zest registrar",
            "Keylime-compatible registrar: agents register and activate over plain HTTP or \
         HTTPS; listing and deleting agents needs the tenant certificate (mTLS).",
            MAX_BODY,
        )
        .with_state(state)
}

/// Every route of the registrar with its description (the source of `/openapi.json`).
pub fn routes() -> Routes<Registrar> {
    let mut routes = Routes::new(VERSIONS)
        .route(
            "/version",
            false,
            vec![Op::get(version, "API versions served").open()],
        )
        .route(
            "/metrics",
            false,
            vec![Op::get(metrics, "Prometheus metrics").reply(Reply::Metrics)],
        );
    for root in ["/v3", "/v3/", "/v3.0", "/v3.0/"] {
        routes = routes.route(root, false, vec![Op::get(version_root, "API 3.0 root").open()]);
    }
    routes
        .route(
            "/{v}/version",
            true,
            vec![Op::get(versioned_version, "API versions served").open()],
        )
        .route(
            "/{v}/agents",
            true,
            vec![
                Op::get(list, "Registered agents"),
                Op::post(register_collection, "Register an agent (agent_id in the body)")
                    .body(Body::JsonOf("Registration"))
                    .open(),
            ],
        )
        .route(
            "/{v}/agents/{id}",
            true,
            vec![
                Op::get(show, "A registered agent: EK, AK, certificates, address"),
                Op::post(register_at, "Register an agent (2.x)")
                    .body(Body::JsonOf("Registration"))
                    .open(),
                Op::put(activate_put, "Activate with the auth tag (2.x)")
                    .body(Body::JsonOf("Activation"))
                    .open(),
                Op::delete(delete, "Forget an agent"),
            ],
        )
        .route(
            "/{v}/agents/{id}/activate",
            true,
            vec![
                Op::post(activate_post, "Activate with the auth tag")
                    .body(Body::JsonOf("Activation"))
                    .open(),
                Op::put(activate_put, "Activate with the auth tag (2.x)")
                    .body(Body::JsonOf("Activation"))
                    .open(),
            ],
        )
}

fn version_of(segment: &str) -> Result<ApiVersion, ApiError> {
    ApiVersion::from_path_segment(segment)
        .ok_or_else(|| ApiError::not_found(format!("API version not supported: {segment}")))
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    registrar: &Registrar,
    what: &'static str,
    f: impl FnOnce(&dyn RegistrarStore) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    api::blocking(registrar.store.clone(), what, f).await
}

fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    api::json_object(body)
}

/// Prometheus metrics: registration counters and the registered agents by state.
async fn metrics(State(reg): State<Registrar>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (active, inactive) = blocking(&reg, "counting agents", |s| {
        let mut counts = (0u64, 0u64);
        for id in s.list_agents()? {
            match s.registered_agent(&id)? {
                Some(a) if a.active => counts.0 += 1,
                Some(_) => counts.1 += 1,
                None => {}
            }
        }
        Ok(counts)
    })
    .await?;
    let text = reg.metrics.render(|m| {
        let state = |state| crate::metrics::StateLabel { state };
        crate::metrics::set_gauges(
            &m.registrar_agents,
            [(state("active"), active), (state("inactive"), inactive)],
        );
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

async fn version() -> Envelope {
    Envelope::ok(api::version_document())
}

async fn version_root() -> Envelope {
    Envelope::empty()
}

async fn versioned_version(Path(v): Path<String>) -> ApiResult {
    version_of(&v)?;
    Ok(Envelope::ok(api::version_document()))
}

async fn register_collection(State(reg): State<Registrar>, Path(v): Path<String>, body: Bytes) -> ApiResult {
    version_of(&v)?;
    let body = json_object(&body)?;
    let id = optional_str(&body, "agent_id")?
        .ok_or_else(|| ApiError::bad_request("agent_id is required in the body of POST /agents"))?;
    let id = AgentId::parse(id)?;
    register(reg, id, body).await
}

async fn register_at(
    State(reg): State<Registrar>,
    Path((v, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    if version_of(&v)?.is_v3() {
        return Err(method_not_allowed());
    }
    let id = AgentId::parse(&id)?;
    register(reg, id, json_object(&body)?).await
}

async fn register(reg: Registrar, id: AgentId, body: Map<String, Value>) -> ApiResult {
    let metrics = reg.metrics.clone();
    let result = register_checked(reg, id, body).await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    crate::metrics::count(
        &metrics.registrations,
        &crate::metrics::ResultLabel { result: outcome },
    );
    result
}

async fn register_checked(reg: Registrar, id: AgentId, body: Map<String, Value>) -> ApiResult {
    let trust_dir = reg.ek_trust_dir.clone();
    // Reading the CA store, RSA-OAEP or ECDH and certificate checks: kept off the reactor.
    let accepted = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let trust = match trust_dir {
                Some(dir) => Some(
                    TrustStore::load_dir(&dir)
                        .map_err(|e| ApiError::internal("reading tpm_cert_store", e))?,
                ),
                None => None,
            };
            accept(&id, &body, trust.as_ref())
        })
        .await
        .map_err(|e| ApiError::internal("registration", e))??
    };
    let record = accepted.record;
    let stale_before = reg.stale_before();
    let outcome = blocking(&reg, "storing registration", move |s| {
        s.register(&record, stale_before)
    })
    .await?;
    match outcome {
        RegisterOutcome::IdentityConflict => {
            tracing::warn!(agent_id = %id, "registration refused: the agent id belongs to another TPM");
            Err(ApiError::forbidden(
                "Agent re-registration with different TPM identity is forbidden for security reasons",
            ))
        }
        outcome => {
            tracing::info!(agent_id = %id, ?outcome, "agent registered");
            Ok(Envelope::ok(json!({"blob": B64.encode(accepted.blob)})))
        }
    }
}

async fn activate_put(
    State(reg): State<Registrar>,
    Path((v, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    if version_of(&v)?.is_v3() {
        return Err(method_not_allowed());
    }
    activate(reg, &id, &body).await
}

async fn activate_post(
    State(reg): State<Registrar>,
    Path((v, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    version_of(&v)?;
    activate(reg, &id, &body).await
}

async fn activate(reg: Registrar, id: &str, body: &Bytes) -> ApiResult {
    let metrics = reg.metrics.clone();
    let result = activate_checked(reg, id, body).await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    crate::metrics::count(
        &metrics.activations,
        &crate::metrics::ResultLabel { result: outcome },
    );
    result
}

async fn activate_checked(reg: Registrar, id: &str, body: &Bytes) -> ApiResult {
    let id = AgentId::parse(id)?;
    let body = json_object(body)?;
    let tag =
        optional_str(&body, "auth_tag")?.ok_or_else(|| ApiError::bad_request("auth_tag is required"))?;
    lookup(&reg, &id).await?;
    let presented = auth_tag_digest(tag);
    // The store compares digests of the tag, never the tag; the reply never repeats the tag
    // or what was expected (CVE-2023-38201), and a wrong tag changes nothing, so it cannot
    // be used to evict a registration.
    let stale_before = reg.stale_before();
    let activated = {
        let agent_id = id.to_string();
        blocking(&reg, "activating agent", move |s| {
            s.activate(&agent_id, &presented, stale_before)
        })
        .await?
    };
    if !activated {
        tracing::warn!(agent_id = %id, "activation refused: auth tag does not match");
        return Err(ApiError::bad_request(format!(
            "Auth tag for agent '{id}' does not match the expected value; the agent stays inactive"
        )));
    }
    tracing::info!(agent_id = %id, "agent activated");
    Ok(Envelope::empty())
}

async fn lookup(reg: &Registrar, id: &AgentId) -> Result<RegisteredAgent, ApiError> {
    let agent_id = id.to_string();
    blocking(reg, "reading agent", move |s| s.registered_agent(&agent_id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Agent with ID '{id}' not found")))
}

async fn list(State(reg): State<Registrar>, Path(v): Path<String>) -> ApiResult {
    version_of(&v)?;
    let ids = blocking(&reg, "listing agents", |s| s.list_agents()).await?;
    Ok(Envelope::ok(json!({"uuids": ids})))
}

async fn show(State(reg): State<Registrar>, Path((v, id)): Path<(String, String)>) -> ApiResult {
    version_of(&v)?;
    let id = AgentId::parse(&id)?;
    let agent = lookup(&reg, &id).await?;
    if !agent.active {
        return Err(ApiError::not_found(format!(
            "Agent with ID '{id}' has not been activated"
        )));
    }
    Ok(Envelope::ok(json!({
        "agent_id": agent.agent_id,
        "ek_tpm": agent.ek_tpm,
        "ekcert": agent.ekcert,
        "aik_tpm": agent.aik_tpm,
        "ip": agent.ip,
        "port": agent.port,
        "mtls_cert": agent.mtls_cert,
        "regcount": agent.regcount,
    })))
}

async fn delete(State(reg): State<Registrar>, Path((v, id)): Path<(String, String)>) -> ApiResult {
    version_of(&v)?;
    let id = AgentId::parse(&id)?;
    let agent_id = id.to_string();
    if blocking(&reg, "deleting agent", move |s| s.delete_agent(&agent_id)).await? {
        tracing::info!(agent_id = %id, "agent deleted");
        Ok(Envelope::empty())
    } else {
        Err(ApiError::not_found(format!("Agent with ID '{id}' not found")))
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed in API v3",
    )
}
