//! What every Keylime-facing route shares: the `{code, status, results}` envelope and its
//! errors, the API versions we serve, agent identifiers, and who is calling.

mod envelope;
mod identity;
mod version;

pub use envelope::{
    ApiError, ApiResult, Envelope, envelope_for_bare_errors, method_not_allowed_fallback, not_found_fallback,
};
pub use identity::{AgentId, Caller};
pub use version::{ApiVersion, CURRENT_VERSION, SUPPORTED_VERSIONS, version_document};
