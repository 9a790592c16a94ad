//! Attestation history (Keylime's durable attestation, kept in the database): one row per
//! judged round, pull and push alike, and per agent the evidence of its latest verified
//! round, enough to judge it again with another policy (the canary). Boot logs are kept by
//! digest, once however many agents sent the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::verifier::{PolicyKind, PolicyRecord, StoredFailure};

/// The policy and component that judged a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedBy {
    pub name: String,
    /// SHA-256 hex of the policy document.
    pub checksum: String,
    /// `builtin:NAME` or `sha256:HEX` of the component.
    pub module: String,
}

/// One judged round as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Assigned by the store, increasing: the paging cursor.
    #[serde(default)]
    pub id: u64,
    pub tenant: String,
    pub agent_id: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `pull` or `push`.
    pub mode: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<StoredFailure>,
    /// SHA-256 hex of the quote as the agent sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_digest: Option<String>,
    /// The IMA entries this round judged: `[first, next)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima_range: Option<(u64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_policy: Option<JudgedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_policy: Option<JudgedBy>,
}

/// What a verified round adds to an agent's recorded evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceUpdate {
    pub snapshot: EvidenceSnapshot,
    /// The IMA text of this round from entry `ima_offset` on, when it replayed to the
    /// quote: from entry 0 it replaces the recorded list, from the recorded end it extends
    /// it, and otherwise the recorded list is dropped.
    pub ima_text: Option<String>,
    pub ima_offset: u64,
    /// The boot log, kept by its digest ([`EvidenceSnapshot::boot_log`]).
    pub boot_log: Option<Vec<u8>>,
}

/// A judged round's history, written in the same transaction as its verdict (one commit
/// per round), and only if the verdict is written.
#[derive(Debug, Clone)]
pub struct RoundHistory {
    pub entry: HistoryEntry,
    /// Set for a round whose quote verified.
    pub evidence: Option<EvidenceUpdate>,
    pub retention: Retention,
}

/// What writing a round's verdict did.
#[derive(Debug)]
#[must_use]
pub struct RoundSaved {
    /// The verdict was written: the stored record was still the one the round started from.
    pub saved: bool,
    /// With a written verdict and a [`RoundHistory`]: the entry's id, or why the history could
    /// not be written (its writes are rolled back alone; the verdict stands).
    pub history: Option<Result<u64, StoreError>>,
}

/// The facts of an agent's latest verified round, besides its IMA text and boot log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EvidenceSnapshot {
    pub at_ms: u64,
    /// The quoted bank (`sha256`, ...).
    pub hash: String,
    #[serde(default)]
    pub boot_time: Option<u64>,
    /// Quoted PCRs of that bank: index → lowercase hex.
    #[serde(default)]
    pub quoted: BTreeMap<u32, String>,
    /// Where the recorded IMA list ends and PCR 10 (hex) there; `None` when no list is kept.
    #[serde(default)]
    pub ima_next: Option<u64>,
    #[serde(default)]
    pub ima_pcr10: Option<String>,
    /// SHA-256 hex of the boot log.
    #[serde(default)]
    pub boot_log: Option<String>,
}

/// An agent's recorded evidence: the snapshot, its IMA list from entry 0 and its boot log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvidence {
    pub tenant: String,
    pub snapshot: EvidenceSnapshot,
    pub ima_text: Option<String>,
    pub boot_log: Option<Vec<u8>>,
}

/// How much history each agent keeps (`[zest] history_keep_passes`, `history_keep_failures`).
/// Push attestation records follow the same counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_passes: u64,
    pub keep_failures: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_passes: 100,
            keep_failures: 1000,
        }
    }
}

/// A page of history: newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this agent's rounds (else every agent's, of `tenant`).
    pub agent_id: Option<String>,
    /// Only this tenant's rounds.
    pub tenant: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<u64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<u64>,
    pub passed: Option<bool>,
    /// Only rounds with an id below this (the previous page's cursor).
    pub before_id: Option<u64>,
    pub limit: u64,
}

/// A version of a policy: the live one, or one it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    pub version: u64,
    pub checksum: String,
    pub module: String,
    /// Unix seconds when this version stopped being live; `None` for the live one.
    pub replaced_at: Option<u64>,
}

/// What a conditional policy replacement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// Written as this version.
    Done(u64),
    NotFound,
    /// The live document is no longer the expected one.
    Changed,
}

/// The history and evidence records, and policy versions.
pub trait HistoryStore {
    /// Appends a judged round (and, for a verified one, its evidence) and drops what the
    /// retention no longer keeps of that agent's history and push attestations. Returns
    /// the entry's id. The verifier's rounds go with their verdicts instead
    /// ([`RoundHistory`]); this writes one alone.
    fn record_round(
        &self,
        entry: &HistoryEntry,
        evidence: Option<&EvidenceUpdate>,
        retention: &Retention,
    ) -> Result<u64, StoreError>;

    /// A page of history, newest first.
    fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError>;

    /// An agent's recorded evidence.
    fn recorded_evidence(&self, agent_id: &str) -> Result<Option<RecordedEvidence>, StoreError>;

    /// Replaces the live policy with `record` only while its document is still the one
    /// with `expected_checksum`, keeping the replaced one as a version.
    fn swap_policy(
        &self,
        kind: PolicyKind,
        tenant: &str,
        record: &PolicyRecord,
        expected_checksum: &str,
    ) -> Result<Swap, StoreError>;

    /// The live version and the versions it replaced, newest first.
    fn policy_versions(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<PolicyVersion>, StoreError>;

    /// A replaced version of a policy (the live one is [`super::VerifierStore::policy`]).
    fn policy_version(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<PolicyRecord>, StoreError>;
}

/// SHA-256 hex of `bytes`: how blobs and quotes are named.
pub fn digest_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// How many IMA segments an agent keeps before they are merged into one.
pub(crate) const MAX_IMA_SEGMENTS: i64 = 16;
