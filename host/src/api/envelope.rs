//! Keylime's classic envelope, `{"code": <http status>, "status": <text>, "results": {...}}`,
//! written once for every success and error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A successful reply: 200 and `results`.
#[derive(Debug)]
pub struct Envelope {
    pub code: StatusCode,
    pub results: Value,
}

impl Envelope {
    /// 200 "Success" with the given results.
    pub fn ok(results: Value) -> Self {
        Self {
            code: StatusCode::OK,
            results,
        }
    }

    /// 200 "Success" with `results: {}`.
    pub fn empty() -> Self {
        Self::ok(json!({}))
    }

    /// 201 "Created" with `results: {}`.
    pub fn created() -> Self {
        Self {
            code: StatusCode::CREATED,
            results: json!({}),
        }
    }

    /// 202 "Accepted" with `results: {}`: done, but not yet.
    pub fn accepted() -> Self {
        Self {
            code: StatusCode::ACCEPTED,
            results: json!({}),
        }
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        let status = match self.code {
            StatusCode::CREATED => "Created",
            StatusCode::ACCEPTED => "Accepted",
            _ => "Success",
        };
        let body = json!({"code": self.code.as_u16(), "status": status, "results": self.results});
        (self.code, Json(body)).into_response()
    }
}

/// An error reply in the envelope: the status text says what went wrong, `results` is `{}`.
/// Messages name the offending field and never carry secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure of ours (storage, I/O): logged in full, reported without detail.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal error: {context}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code.as_u16(), "status": self.message, "results": {}});
        (self.code, Json(body)).into_response()
    }
}

/// What handlers return.
pub type ApiResult = Result<Envelope, ApiError>;

/// 404 for paths no route serves, in the envelope.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("Not Found")
}

/// 405 for a known path with the wrong method, in the envelope.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// Wraps error replies that framework layers produce without a body of ours (body too
/// large, unreadable path, missing extension) in the envelope, so every reply has one.
pub async fn envelope_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let reason = status.canonical_reason().unwrap_or("Error");
        return ApiError::new(status, reason).into_response();
    }
    response
}
