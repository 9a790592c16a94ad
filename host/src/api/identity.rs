//! Agent identifiers and the identity of the caller of a request.

use std::fmt;

use super::ApiError;

/// Longest agent id, as Keylime's `agent_id VARCHAR(80)`.
pub const MAX_AGENT_ID_LEN: usize = 80;

/// An agent identifier in a strict grammar: 1–80 characters of `[A-Za-z0-9._-]`. This
/// covers UUIDs, `hash_ek` hex digests and host names, and keeps control characters and
/// path syntax out of logs and URLs (CVE-2022-23949).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(String);

impl AgentId {
    /// Validates `text` against the grammar.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_AGENT_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            && text != "."
            && text != "..";
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ApiError::bad_request(format!(
                "agent_id must be 1 to {MAX_AGENT_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The prefix of the subjectAltName URI by which `zest ca` binds a role into a client
/// certificate: `urn:zest:role:operator`, `urn:zest:role:agent`,
/// `urn:zest:role:tenant:NAME`.
pub const ROLE_URI_PREFIX: &str = "urn:zest:role:";

/// What a client certificate may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The operator: every route. Also any client certificate without a role of ours,
    /// as Keylime's PKI issues them (its tenant's `client-cert.crt`).
    Operator,
    /// An agent's certificate: no operator route.
    Agent,
    /// A tenant of a shared server.
    Tenant(String),
    /// A certificate that is not a client's: a server certificate (serverAuth), a role we
    /// do not know, or one that does not parse.
    None,
}

impl Role {
    /// The role of a client certificate (DER). A certificate for serverAuth never acts as a
    /// client, whatever else it allows.
    pub fn of_certificate(der: &[u8]) -> Self {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Self::None;
        };
        if let Ok(Some(eku)) = cert.extended_key_usage()
            && eku.value.server_auth
        {
            return Self::None;
        }
        let uris: Vec<&str> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match uris.as_slice() {
            [] => Self::Operator,
            [one] => Self::from_name(one),
            // Two roles in one certificate: trust neither.
            _ => Self::None,
        }
    }

    /// A role from its name (`operator`, `agent`, `tenant:NAME`).
    pub fn from_name(name: &str) -> Self {
        match name {
            "operator" => Self::Operator,
            "agent" => Self::Agent,
            other => match other.strip_prefix("tenant:") {
                Some(t) if AgentId::parse(t).is_ok() => Self::Tenant(t.to_owned()),
                _ => Self::None,
            },
        }
    }

    /// The role's name as bound into certificates.
    pub fn name(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::Agent => "agent".into(),
            Self::Tenant(t) => format!("tenant:{t}"),
            Self::None => "none".into(),
        }
    }
}

/// How the caller reached us: attached to every request by the serving loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Plain HTTP.
    Plain,
    /// HTTPS without a client certificate.
    TlsAnonymous,
    /// HTTPS with a client certificate that chains to a trusted client CA; the subject's
    /// common name names it, its role says what it may do.
    TlsClient { common_name: String, role: Role },
}

/// Whose records a request reaches: the operator's reach every tenant's; a tenant's reach
/// its own only. Set by the access layer of every route that tenants may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Operator,
    Tenant(String),
}

impl Scope {
    /// Whether records of `tenant` are visible to this caller. Another tenant's record is
    /// answered as missing (404), never as forbidden, so that its existence does not leak.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Tenant(own) => own == tenant,
        }
    }

    /// The tenant a request acts in: a tenant's own; for the operator, `requested` (the
    /// `tenant` query parameter) or the default tenant Keylime's clients work in.
    pub fn acting_tenant(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match (self, requested) {
            (Scope::Tenant(own), None) => Ok(own.clone()),
            (Scope::Tenant(own), Some(t)) if t == own => Ok(own.clone()),
            (Scope::Tenant(_), Some(_)) => Err(ApiError::forbidden(
                "A tenant's certificate acts in its own tenant only: drop the tenant parameter",
            )),
            (Scope::Operator, Some(t)) => {
                AgentId::parse(t).map_err(|_| {
                    ApiError::bad_request(
                        "tenant must be 1 to 80 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
                    )
                })?;
                Ok(t.to_owned())
            }
            (Scope::Operator, None) => Ok(crate::store::DEFAULT_TENANT.to_owned()),
        }
    }

    /// The tenant whose records a listing shows: a tenant's own; for the operator, every
    /// tenant's (`None`) unless `requested` filters.
    pub fn listed_tenant(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        match self {
            Scope::Operator if requested.is_none() => Ok(None),
            _ => self.acting_tenant(requested).map(Some),
        }
    }
}

impl Caller {
    /// The scope of a route open to tenants: an operator's certificate reaches every
    /// tenant, a tenant's its own; anything else is refused as [`Self::require_operator`]
    /// refuses it.
    pub fn scope(&self) -> Result<Scope, ApiError> {
        match self {
            Caller::TlsClient {
                role: Role::Tenant(tenant),
                ..
            } => Ok(Scope::Tenant(tenant.clone())),
            other => other.require_operator().map(|()| Scope::Operator),
        }
    }

    /// Operator routes need mTLS with an operator's certificate: plain HTTP is refused
    /// outright (as in Keylime), TLS without a client certificate or with another role is
    /// forbidden.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::TlsClient {
                role: Role::Operator, ..
            } => Ok(()),
            Caller::TlsClient { role, .. } => Err(ApiError::forbidden(format!(
                "This route requires an operator's client certificate; this one's role is {}",
                role.name()
            ))),
            Caller::Plain => Err(ApiError::bad_request(
                "This route is only served over HTTPS with a client certificate (mTLS)",
            )),
            Caller::TlsAnonymous => Err(ApiError::forbidden(
                "This route requires admin authentication (mTLS client certificate)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_grammar() {
        for good in [
            "d432fbb3-d2f1-4a97-9ef7-75bd81c00000",
            "a",
            "node_1.example",
            &"f".repeat(80),
        ] {
            assert!(AgentId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a\nb",
            "a/b",
            "\u{1b}[31m",
            "ä",
            &"f".repeat(81),
            "a%2f",
        ] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
