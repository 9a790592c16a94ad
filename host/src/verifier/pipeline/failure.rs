//! Why a round failed. Every [`Failure`] the verifier reports is built here (or converted
//! here from a policy component's WIT failure), so each carries Keylime's event id, its
//! context object, whether polling may survive it, and the entry it is about.

use serde_json::{Value, json};

use crate::store::StoredFailure;

/// One failure: Keylime's event id, its context object, whether it is recoverable
/// (Keylime forces irrecoverable events to the highest severity) and the IMA entry or UEFI
/// event it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub event_id: String,
    pub context: Value,
    pub recoverable: bool,
    pub entry: Option<u64>,
}

impl Failure {
    /// A recoverable failure with a context object.
    pub fn new(event_id: impl Into<String>, context: Value) -> Self {
        Self {
            event_id: event_id.into(),
            context,
            recoverable: true,
            entry: None,
        }
    }

    /// A recoverable failure whose context is `{"message": …}`.
    pub fn message(event_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(event_id, json!({"message": message.into()}))
    }

    /// The evidence itself cannot be trusted (Keylime's `qoute_validation.*`): never
    /// recoverable.
    pub fn quote(event: &str, message: impl Into<String>) -> Self {
        Self::message(format!("qoute_validation.{event}"), message).irrecoverable()
    }

    /// The verifier could not do its own work (store, module, its record of the agent):
    /// `internal.verifier.*`, never recoverable, never a pass.
    pub fn internal(event: &str, message: impl Into<String>) -> Self {
        Self::message(format!("internal.verifier.{event}"), message).irrecoverable()
    }

    /// PCRs the round needs that the quote does not carry (Keylime's context shape).
    pub fn missing_pcrs(event_id: &str, pcrs: &[u32]) -> Self {
        Self::new(
            event_id,
            json!({"context": "PCRs are missing in quote", "data": pcrs}),
        )
    }

    /// A quoted PCR that the agent sent no log for (Keylime's `unused_pcr_<n>`).
    pub fn unused_pcr(pcr: u32, log: &str) -> Self {
        Self::new(
            format!("pcr_validation.unused_pcr_{pcr}"),
            json!({"context": format!("PCR {pcr} is quoted but the agent sent no {log}"), "data": [pcr]}),
        )
    }

    /// A component's error (load, trap, timeout): the policy could not judge.
    pub fn policy_error(component: &str, error: impl std::fmt::Display) -> Self {
        Self::message(format!("{component}.policy_error"), error.to_string())
    }

    /// A failure a policy component reported: its context is JSON text, or a plain
    /// message.
    pub fn from_policy(event_id: String, context: &str, recoverable: bool, entry: Option<u64>) -> Self {
        Self {
            event_id,
            context: serde_json::from_str(context).unwrap_or_else(|_| json!({"message": context})),
            recoverable,
            entry,
        }
    }

    /// The IMA entry or boot event the failure is about.
    pub fn at(mut self, entry: u64) -> Self {
        self.entry = Some(entry);
        self
    }

    pub fn irrecoverable(mut self) -> Self {
        self.recoverable = false;
        self
    }

    /// The JSON shape of replies: `{"type", "context"}` plus `entry` when known.
    pub fn to_json(&self) -> Value {
        self.stored().to_json()
    }

    pub fn stored(&self) -> StoredFailure {
        StoredFailure {
            event_id: self.event_id.clone(),
            context: self.context.clone(),
            recoverable: self.recoverable,
            entry: self.entry,
        }
    }
}
