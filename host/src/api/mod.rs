//! What every Keylime-facing route shares: the `{code, status, results}` envelope and its
//! errors, the API versions we serve, agent identifiers, and who is calling.

pub mod docs;
mod envelope;
mod identity;
mod version;

pub use envelope::{
    ApiError, ApiResult, Envelope, envelope_for_bare_errors, method_not_allowed_fallback, not_found_fallback,
};
pub use identity::{AgentId, Caller, ROLE_URI_PREFIX, Role, Scope};
pub use version::{ApiVersion, CURRENT_VERSION, SUPPORTED_VERSIONS, version_document};

/// Parses a request body as a JSON object, whatever the Content-Type (Keylime's tenant
/// sends none).
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "Request body is not valid JSON: {e}"
        ))),
    }
}

/// Runs a synchronous store call on the blocking pool; a storage failure is a 500 that
/// names `what`.
pub async fn blocking<S, T, E>(
    store: std::sync::Arc<S>,
    what: &'static str,
    f: impl FnOnce(&S) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    S: ?Sized + Send + Sync + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::internal(what, e)),
        Err(e) => Err(ApiError::internal(what, e)),
    }
}
