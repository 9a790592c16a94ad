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

/// How the caller reached us: attached to every request by the serving loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Plain HTTP.
    Plain,
    /// HTTPS without a client certificate.
    TlsAnonymous,
    /// HTTPS with a client certificate that chains to a trusted client CA; the subject's
    /// common name is the identity.
    TlsClient { common_name: String },
}

impl Caller {
    /// Admin routes need mTLS, as in Keylime: plain HTTP is refused outright and TLS
    /// without a client certificate is forbidden.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::TlsClient { .. } => Ok(()),
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
