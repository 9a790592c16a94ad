//! Quotas per tenant of a shared server (zest's own API; Keylime has none).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /{v}/quotas/{tenant}` | the operator, or that tenant | the quota in force and what the tenant holds |
//! | `PUT /{v}/quotas/{tenant}` | the operator | sets any of the quota's fields (the rest keep their value) |
//! | `DELETE /{v}/quotas/{tenant}` | the operator | back to the defaults |
//!
//! Counts (agents, policies, components) are checked in the transaction that would add one;
//! sizes (component, document) before anything is compiled or stored; instance memory and
//! the evaluation deadline apply to the tenant's policy instances (loaded again when they
//! change). A refusal is a 403 (a count) or 413 (a size) naming the quota, counted in
//! `zest_tenant_quota_refusals_total{tenant, quota}`.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Verifier;
use super::routes::version_of;
use crate::api::{self, AgentId, ApiError, ApiResult, Envelope, Scope};
use crate::policy::PolicyLimits;
use crate::store::TenantQuota;

/// The quota in force for `tenant` (the defaults unless the operator set one).
pub fn quota_of(verifier: &Verifier, tenant: &str) -> Result<TenantQuota, ApiError> {
    Ok(verifier
        .store
        .quota(tenant)
        .map_err(|e| ApiError::internal("reading a quota", e))?
        .unwrap_or_else(|| TenantQuota::default_for(tenant)))
}

/// [`quota_of`] from async code.
pub async fn quota(verifier: &Verifier, tenant: &str) -> Result<TenantQuota, ApiError> {
    let (v, t) = (verifier.clone(), tenant.to_owned());
    tokio::task::spawn_blocking(move || quota_of(&v, &t))
        .await
        .map_err(|e| ApiError::internal("reading a quota", e))?
}

/// The refusal of a request that would exceed `which` (`agents`, `document_bytes`, …),
/// counted per tenant.
pub fn exceeded(verifier: &Verifier, tenant: &str, which: &'static str, limit: u64) -> ApiError {
    crate::metrics::count(
        &verifier.metrics.quota_refusals,
        &crate::metrics::TenantQuotaLabels {
            tenant: tenant.to_owned(),
            quota: which,
        },
    );
    let code = if which.ends_with("_bytes") {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::FORBIDDEN
    };
    ApiError::new(
        code,
        format!("tenant {tenant}'s quota '{which}' ({limit}) would be exceeded"),
    )
}

/// A size check: `size` bytes within the quota `which` of `limit` bytes.
pub fn check_size(
    verifier: &Verifier,
    tenant: &str,
    which: &'static str,
    limit: u64,
    size: usize,
) -> Result<(), ApiError> {
    if size as u64 > limit {
        return Err(exceeded(verifier, tenant, which, limit));
    }
    Ok(())
}

/// The policy limits of a tenant's instances: its quota's, never above the server's (a
/// quota of 0 is the server's).
pub fn limits(server: PolicyLimits, quota: &TenantQuota) -> PolicyLimits {
    let memory = match quota.instance_memory_bytes {
        0 => server.memory_bytes,
        bytes => server
            .memory_bytes
            .min(usize::try_from(bytes).unwrap_or(usize::MAX)),
    };
    let deadline = match quota.evaluation_ms {
        0 => server.deadline,
        ms => server.deadline.min(std::time::Duration::from_millis(ms)),
    };
    PolicyLimits {
        memory_bytes: memory,
        deadline,
    }
}

/// Applies every stored quota's instance limits to the policy registry (at start-up).
pub fn apply_stored(verifier: &Verifier) -> Result<(), crate::store::StoreError> {
    let server = verifier.policies.runtime().limits();
    for (tenant, quota) in verifier.store.quotas()? {
        verifier
            .policies
            .set_tenant_limits(&tenant, Some(limits(server, &quota)));
    }
    Ok(())
}

fn tenant_of(scope: &Scope, tenant: &str) -> Result<String, ApiError> {
    let tenant = AgentId::parse(tenant)
        .map_err(|_| {
            ApiError::bad_request("tenant must be 1 to 80 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
        })?
        .to_string();
    // Another tenant's quota is as missing as its records.
    if !scope.sees(&tenant) {
        return Err(ApiError::not_found(format!("tenant {tenant} not found")));
    }
    Ok(tenant)
}

fn describe(tenant: &str, quota: &TenantQuota, usage: &crate::store::TenantUsage) -> Value {
    json!({"tenant": tenant, "quota": quota, "usage": usage})
}

pub async fn show(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, tenant)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = tenant_of(&scope, &tenant)?;
    let t = tenant.clone();
    let (quota, usage) = api::blocking(verifier.store.clone(), "reading a quota", move |s| {
        Ok::<_, crate::store::StoreError>((
            s.quota(&t)?.unwrap_or_else(|| TenantQuota::default_for(&t)),
            s.tenant_usage(&t)?,
        ))
    })
    .await?;
    Ok(Envelope::ok(describe(&tenant, &quota, &usage)))
}

pub async fn set(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, tenant)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    version_of(&v)?;
    let tenant = tenant_of(&scope, &tenant)?;
    let changes = api::json_object(&body)?;
    let t = tenant.clone();
    let current = api::blocking(verifier.store.clone(), "reading a quota", move |s| {
        Ok::<_, crate::store::StoreError>(s.quota(&t)?.unwrap_or_else(|| TenantQuota::default_for(&t)))
    })
    .await?;
    let mut merged = serde_json::to_value(current).map_err(|e| ApiError::internal("a quota", e))?;
    for (field, value) in changes {
        if !value.is_u64() {
            return Err(ApiError::bad_request(format!(
                "{}: a quota is a whole number",
                field.escape_debug()
            )));
        }
        if let Value::Object(fields) = &mut merged {
            fields.insert(field, value);
        }
    }
    let quota: TenantQuota =
        serde_json::from_value(merged).map_err(|e| ApiError::bad_request(format!("quota: {e}")))?;
    let (t, q) = (tenant.clone(), quota);
    let usage = api::blocking(verifier.store.clone(), "storing a quota", move |s| {
        s.put_quota(&t, Some(&q))?;
        s.tenant_usage(&t)
    })
    .await?;
    let server = verifier.policies.runtime().limits();
    verifier
        .policies
        .set_tenant_limits(&tenant, Some(limits(server, &quota)));
    tracing::info!(%tenant, ?quota, "tenant quota set");
    Ok(Envelope::ok(describe(&tenant, &quota, &usage)))
}

pub async fn reset(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, tenant)): Path<(String, String)>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = tenant_of(&scope, &tenant)?;
    let t = tenant.clone();
    let usage = api::blocking(verifier.store.clone(), "resetting a quota", move |s| {
        s.put_quota(&t, None)?;
        s.tenant_usage(&t)
    })
    .await?;
    verifier.policies.set_tenant_limits(&tenant, None);
    tracing::info!(%tenant, "tenant quota back to the defaults");
    Ok(Envelope::ok(describe(
        &tenant,
        &TenantQuota::default_for(&tenant),
        &usage,
    )))
}
