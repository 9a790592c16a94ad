//! Policy versions: every replacement of a runtime policy or refstate keeps the replaced
//! document under its version number, so an operator can list them, read one, and roll
//! back (the old document becomes the next version; agents switch at their next round).

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;

use super::Verifier;
use super::routes::{blocking, version_of};
use crate::api::{ApiError, ApiResult, Envelope, Scope};
use crate::store::PolicyKind;
use crate::store::history::Swap;

#[derive(Debug, Deserialize)]
pub(super) struct VersionQuery {
    tenant: Option<String>,
    /// The version to read or roll back to (rollback: default the one before the live one).
    version: Option<u64>,
}

macro_rules! of_kind {
    ($name:ident, $inner:ident, $kind:expr) => {
        pub(super) async fn $name(
            verifier: State<Verifier>,
            scope: Extension<Scope>,
            Path((v, name)): Path<(String, String)>,
            query: Query<VersionQuery>,
        ) -> ApiResult {
            $inner(verifier, scope, v, name, $kind, query).await
        }
    };
}

of_kind!(list_runtime, list, PolicyKind::Runtime);
of_kind!(list_mb, list, PolicyKind::MeasuredBoot);
of_kind!(rollback_runtime, rollback, PolicyKind::Runtime);
of_kind!(rollback_mb, rollback, PolicyKind::MeasuredBoot);

/// `GET /{v}/allowlists/{name}/versions` (and `/mbpolicies/…`): the live version and the
/// ones it replaced, newest first; with `?version=N`, that version's document too.
async fn list(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    v: String,
    name: String,
    kind: PolicyKind,
    Query(query): Query<VersionQuery>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    let (t, n, wanted) = (tenant.clone(), name.clone(), query.version);
    let (versions, document) = blocking(&verifier, "reading policy versions", move |store| {
        let versions = store.policy_versions(kind, &t, &n)?;
        let document = match wanted {
            Some(version) if versions.first().is_some_and(|live| live.version == version) => {
                store.policy(kind, &t, &n)?
            }
            Some(version) => store.policy_version(kind, &t, &n, version)?,
            None => None,
        };
        Ok((versions, document))
    })
    .await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "{} policy '{name}' not found",
            kind.name()
        )));
    }
    let mut results = json!({"name": name, "kind": kind.name(), "versions": versions});
    if let Some(version) = query.version {
        let Some(record) = document else {
            return Err(ApiError::not_found(format!(
                "policy '{name}' has no version {version}"
            )));
        };
        if let Some(object) = results.as_object_mut() {
            object.insert("version".into(), version.into());
            object.insert("document".into(), record.document.map(|d| B64.encode(d)).into());
        }
    }
    Ok(Envelope::ok(results))
}

/// `POST /{v}/allowlists/{name}/rollback[?version=N]` (and `/mbpolicies/…`): the document
/// of version N (default: the one the live version replaced) becomes the next version.
async fn rollback(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    v: String,
    name: String,
    kind: PolicyKind,
    Query(query): Query<VersionQuery>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    let (t, n, wanted) = (tenant.clone(), name.clone(), query.version);
    let outcome = blocking(&verifier, "rolling a policy back", move |store| {
        let versions = store.policy_versions(kind, &t, &n)?;
        let Some(live) = versions.first() else {
            return Ok(Err(ApiError::not_found(format!(
                "{} policy '{n}' not found",
                kind.name()
            ))));
        };
        let target = match wanted {
            Some(version) => version,
            None => match versions.get(1) {
                Some(previous) => previous.version,
                None => {
                    return Ok(Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!("policy '{n}' has no earlier version"),
                    )));
                }
            },
        };
        if target == live.version {
            return Ok(Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("version {target} of policy '{n}' is the live one"),
            )));
        }
        let Some(record) = store.policy_version(kind, &t, &n, target)? else {
            return Ok(Err(ApiError::not_found(format!(
                "policy '{n}' has no version {target}"
            ))));
        };
        Ok(Ok((
            target,
            store.swap_policy(kind, &t, &record, &live.checksum)?,
        )))
    })
    .await?;
    match outcome? {
        (from, Swap::Done(version)) => {
            tracing::info!(policy = %name, %tenant, kind = kind.name(), from, version, "policy rolled back");
            Ok(Envelope::ok(
                json!({"name": name, "kind": kind.name(), "version": version, "restored": from}),
            ))
        }
        (_, Swap::Changed) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("policy '{name}' changed meanwhile; try again"),
        )),
        (_, Swap::NotFound) => Err(ApiError::not_found(format!("policy '{name}' not found"))),
    }
}
