//! Policy components: the built-ins compiled into zest, and those a policy author uploads
//! (`POST /v{v}/modules?kind=runtime|measured-boot`, the raw `.wasm` as the body). An upload
//! is named by its content, `sha256:<hex>`, so a policy record that names a module always
//! means the same bytes; it is compiled and checked against its world before it is stored.
//!
//! | route | what |
//! |---|---|
//! | `POST /{v}/modules?kind=K` | upload a component (201 new, 200 known) |
//! | `GET /{v}/modules` | built-in and uploaded components |
//! | `GET /{v}/modules/{id}`, `DELETE /{v}/modules/{id}` | one upload; delete refuses one in use (409) |
//!
//! Uploads belong to the tenant that made them: another tenant sees, names and attaches
//! only its own (the same bytes uploaded by two tenants are two records of one id, compiled
//! once).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Verifier;
use super::routes::version_of;
use crate::api::{self, ApiError, ApiResult, Envelope, Scope};
use crate::policy::{BUILTIN_MEASURED_BOOT, BUILTIN_RUNTIME, builtin_measured_boot, builtin_runtime};
use crate::store::{ModuleDelete, ModuleRecord, ModuleWrite, PolicyKind};

/// Largest component accepted (the built-ins are about 1 MB).
pub const MAX_MODULE: usize = 32 * 1024 * 1024;

/// A component's bytes: static for built-ins, shared for uploads.
#[derive(Clone)]
pub enum ModuleBytes {
    Builtin(&'static [u8]),
    Uploaded(Arc<[u8]>),
}

impl Deref for ModuleBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Builtin(b) => b,
            Self::Uploaded(b) => b,
        }
    }
}

/// An uploaded component in memory: its kind and bytes.
type CachedModule = (PolicyKind, Arc<[u8]>);

/// Uploaded components read so far, by (tenant, id). Content-addressed, so an entry never
/// goes stale; it goes when its tenant deletes the upload.
#[derive(Default)]
pub struct ModuleCache(Mutex<HashMap<(String, String), CachedModule>>);

fn builtin(kind: PolicyKind, name: &str) -> Option<&'static [u8]> {
    match kind {
        PolicyKind::Runtime => builtin_runtime(name),
        PolicyKind::MeasuredBoot => builtin_measured_boot(name),
    }
}

/// The bytes of module `id` (`builtin:NAME` or `sha256:HEX`) of `kind`, as `tenant` may use
/// it: a built-in, or one of its own uploads. Blocking: an upload not read yet comes from
/// the store.
pub fn resolve(
    verifier: &Verifier,
    tenant: &str,
    kind: PolicyKind,
    id: &str,
) -> Result<ModuleBytes, ApiError> {
    let unknown = || ApiError::bad_request(format!("module: no {} policy component '{id}'", kind.name()));
    if let Some(name) = id.strip_prefix("builtin:") {
        return builtin(kind, name).map(ModuleBytes::Builtin).ok_or_else(unknown);
    }
    if !is_upload_id(id) {
        return Err(unknown());
    }
    let cached = verifier
        .modules
        .0
        .lock()
        .map_err(|_| ApiError::internal("module cache", "poisoned"))?
        .get(&(tenant.to_owned(), id.to_owned()))
        .cloned();
    let (stored_kind, bytes) = match cached {
        Some(entry) => entry,
        None => {
            let (record, bytes) = verifier
                .store
                .module(tenant, id)
                .map_err(|e| ApiError::internal("reading a module", e))?
                .ok_or_else(unknown)?;
            let entry = (record.kind, Arc::<[u8]>::from(bytes));
            verifier
                .modules
                .0
                .lock()
                .map_err(|_| ApiError::internal("module cache", "poisoned"))?
                .insert((tenant.to_owned(), id.to_owned()), entry.clone());
            entry
        }
    };
    if stored_kind != kind {
        return Err(ApiError::bad_request(format!(
            "module: '{id}' is a {} policy component, not a {} one",
            stored_kind.name(),
            kind.name()
        )));
    }
    Ok(ModuleBytes::Uploaded(bytes))
}

fn is_upload_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn describe(record: &ModuleRecord) -> Value {
    json!({
        "module": record.id,
        "kind": record.kind.name(),
        "size": record.size,
        "uploaded_at": record.uploaded_at,
        "builtin": false,
    })
}

#[derive(serde::Deserialize)]
pub struct UploadQuery {
    kind: Option<String>,
    tenant: Option<String>,
}

/// `?tenant=T`: the operator's choice of tenant.
#[derive(serde::Deserialize)]
pub struct TenantQuery {
    tenant: Option<String>,
}

pub async fn upload(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(content_type, "application/wasm" | "application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a module is uploaded as Content-Type: application/wasm",
        ));
    }
    let kind = query
        .kind
        .as_deref()
        .and_then(PolicyKind::from_name)
        .ok_or_else(|| ApiError::bad_request("kind must be runtime or measured-boot (?kind=…)"))?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body holds no component"));
    }
    if body.len() > MAX_MODULE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a module is at most {MAX_MODULE} bytes"),
        ));
    }
    let quota = super::quotas::quota(&verifier, &tenant).await?;
    super::quotas::check_size(
        &verifier,
        &tenant,
        "component_bytes",
        quota.component_bytes,
        body.len(),
    )?;
    let id = format!(
        "sha256:{}",
        hex::encode(crate::evidence::HashAlg::Sha256.digest(&[&body]))
    );
    let registry = verifier.policies.clone();
    let checked = body.clone();
    tokio::task::spawn_blocking(move || match kind {
        PolicyKind::Runtime => registry.check_runtime_component(&checked),
        PolicyKind::MeasuredBoot => registry.check_measured_boot_component(&checked),
    })
    .await
    .map_err(|e| ApiError::internal("checking a module", e))?
    .map_err(|e| ApiError::bad_request(format!("module: {e}")))?;
    let record = ModuleRecord {
        id: id.clone(),
        kind,
        size: body.len() as u64,
        uploaded_at: crate::clock::unix_now(),
    };
    let stored = record.clone();
    let owner = tenant.clone();
    let written = api::blocking(verifier.store.clone(), "storing a module", move |s| {
        s.put_module(&owner, &stored, &body, &quota)
    })
    .await?;
    if written == ModuleWrite::QuotaExceeded {
        return Err(super::quotas::exceeded(
            &verifier,
            &tenant,
            "components",
            quota.components,
        ));
    }
    let created = written == ModuleWrite::Created;
    if !created {
        // Known already: same bytes, so the same id; only its kind can disagree.
        let (id2, owner) = (id.clone(), tenant.clone());
        let existing = api::blocking(verifier.store.clone(), "reading a module", move |s| {
            s.module(&owner, &id2)
        })
        .await?;
        if let Some((existing, _)) = existing
            && existing.kind != kind
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "module {id} is stored as a {} policy component",
                    existing.kind.name()
                ),
            ));
        }
    }
    tracing::info!(module = %id, %tenant, kind = kind.name(), size = record.size, "policy module uploaded");
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({"code": code.as_u16(), "status": if created { "Created" } else { "Success" }, "results": describe(&record)});
    Ok((
        code,
        [(header::LOCATION, format!("/{v}/modules/{id}"))],
        axum::Json(body),
    )
        .into_response())
}

pub async fn list(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path(v): Path<String>,
    Query(query): Query<TenantQuery>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.listed_tenant(query.tenant.as_deref())?;
    let uploaded = api::blocking(verifier.store.clone(), "listing modules", move |s| {
        s.modules(tenant.as_deref())
    })
    .await?;
    let mut modules: Vec<Value> = Vec::new();
    for (kind, names) in [
        (PolicyKind::Runtime, BUILTIN_RUNTIME),
        (PolicyKind::MeasuredBoot, BUILTIN_MEASURED_BOOT),
    ] {
        for (name, bytes) in names {
            modules.push(json!({
                "module": format!("builtin:{name}"),
                "kind": kind.name(),
                "size": bytes.len(),
                "builtin": true,
            }));
        }
    }
    modules.extend(uploaded.iter().map(|(tenant, record)| {
        let mut described = describe(record);
        if let Value::Object(fields) = &mut described {
            fields.insert("tenant".into(), json!(tenant));
        }
        described
    }));
    Ok(Envelope::ok(json!({ "modules": modules })))
}

pub async fn show(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> ApiResult {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    if !is_upload_id(&id) {
        return Err(ApiError::not_found(format!("module {id} not found")));
    }
    let key = id.clone();
    match api::blocking(verifier.store.clone(), "reading a module", move |s| {
        s.module(&tenant, &key)
    })
    .await?
    {
        Some((record, _)) => Ok(Envelope::ok(describe(&record))),
        None => Err(ApiError::not_found(format!("module {id} not found"))),
    }
}

pub async fn delete(
    State(verifier): State<Verifier>,
    Extension(scope): Extension<Scope>,
    Path((v, id)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    version_of(&v)?;
    let tenant = scope.acting_tenant(query.tenant.as_deref())?;
    if id.starts_with("builtin:") {
        return Err(ApiError::bad_request("built-in modules cannot be deleted"));
    }
    if !is_upload_id(&id) {
        return Err(ApiError::not_found(format!("module {id} not found")));
    }
    let (key, owner) = (id.clone(), tenant.clone());
    match api::blocking(verifier.store.clone(), "deleting a module", move |s| {
        s.delete_module(&owner, &key)
    })
    .await?
    {
        ModuleDelete::Deleted => {
            if let Ok(mut cache) = verifier.modules.0.lock() {
                cache.remove(&(tenant, id));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ModuleDelete::NotFound => Err(ApiError::not_found(format!("module {id} not found"))),
        ModuleDelete::InUse(users) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("module {id} is in use by {}", users.join(", ")),
        )),
    }
}
