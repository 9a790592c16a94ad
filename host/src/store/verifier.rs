//! The verifier's records: enrolled agents and the runtime and measured-boot policies they
//! use (Keylime's `verifiermain`, `allowlists` and `mbpolicies`).

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::history::{RoundHistory, RoundSaved};

/// Which kind of policy document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Runtime (IMA) policies, Keylime's `allowlists`.
    Runtime,
    /// Measured-boot reference states, Keylime's `mbpolicies`.
    MeasuredBoot,
}

impl PolicyKind {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Runtime => "runtime_policies",
            Self::MeasuredBoot => "mb_policies",
        }
    }

    pub(crate) fn agent_column(self) -> &'static str {
        match self {
            Self::Runtime => "runtime_policy",
            Self::MeasuredBoot => "mb_policy",
        }
    }

    /// The name of a component's kind: the WIT world it implements, less `-policy`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Runtime => "runtime",
            Self::MeasuredBoot => "measured-boot",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "runtime" => Some(Self::Runtime),
            "measured-boot" => Some(Self::MeasuredBoot),
            _ => None,
        }
    }
}

/// A named policy document and the component that decides with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub name: String,
    /// `builtin:NAME` or `sha256:HEX` of an uploaded component.
    pub module: String,
    /// The document as uploaded (runtime policy JSON or DSSE envelope; mb_refstate JSON);
    /// `None` is Keylime's null refstate.
    pub document: Option<Vec<u8>>,
    /// SHA-256 hex of the document (Keylime's `checksum`).
    pub checksum: String,
    /// Runtime policies: `meta.generator` (a policy counts as present when above 1).
    pub generator: i64,
}

/// What a policy write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyWrite {
    Done,
    /// Create: the name is taken.
    Exists,
    /// Update: there is no such policy.
    NotFound,
    /// Create: the tenant holds as many policies as its quota allows.
    QuotaExceeded,
}

/// What storing an uploaded component did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleWrite {
    Created,
    /// The tenant had uploaded it already.
    Exists,
    /// The tenant holds as many components as its quota allows.
    QuotaExceeded,
}

/// A tenant's quotas. Every field has a default (see [`TenantQuota::default`]); the
/// operator sets any of them (`PUT /v2.x/quotas/{tenant}`, `zest quota set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantQuota {
    /// Enrolled agents.
    pub agents: u64,
    /// Runtime policies and refstates together.
    pub policies: u64,
    /// Uploaded components.
    pub components: u64,
    /// Bytes of one uploaded component.
    pub component_bytes: u64,
    /// Bytes of one policy document (runtime policy or refstate).
    pub document_bytes: u64,
    /// Linear memory of one policy instance, in bytes (never above the server's limit;
    /// 0: the server's).
    pub instance_memory_bytes: u64,
    /// Milliseconds of one policy call (the epoch deadline; never above the server's; 0:
    /// the server's).
    pub evaluation_ms: u64,
}

impl Default for TenantQuota {
    /// The documented defaults (README, "Tenants of a shared server").
    fn default() -> Self {
        Self {
            agents: 1000,
            policies: 100,
            components: 10,
            component_bytes: 32 << 20,
            document_bytes: 16 << 20,
            instance_memory_bytes: 0,
            evaluation_ms: 0,
        }
    }
}

impl TenantQuota {
    /// The quota of `tenant` until the operator sets one: the defaults, except for the
    /// default tenant, where Keylime's clients work and which nothing limits but the
    /// server's own limits (`max_upload_size`, the policy limits), as in Keylime.
    pub fn default_for(tenant: &str) -> Self {
        if tenant == super::DEFAULT_TENANT {
            Self {
                agents: u64::MAX,
                policies: u64::MAX,
                components: u64::MAX,
                component_bytes: u64::MAX,
                document_bytes: u64::MAX,
                ..Self::default()
            }
        } else {
            Self::default()
        }
    }
}

/// What a tenant holds now, against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TenantUsage {
    pub agents: u64,
    pub policies: u64,
    pub components: u64,
}

/// What a policy delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDelete {
    Deleted,
    NotFound,
    /// An agent uses it.
    InUse,
}

/// An uploaded policy component, named by the SHA-256 of its bytes (`sha256:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRecord {
    pub id: String,
    pub kind: PolicyKind,
    pub size: u64,
    /// Unix seconds.
    pub uploaded_at: u64,
}

/// What a module delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleDelete {
    Deleted,
    NotFound,
    /// These policies (kind, name) still name it.
    InUse(Vec<String>),
}

/// An authenticated push session: the agent's bearer token is `<session_id>.<secret>`, and
/// only a salted hash of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSession {
    pub session_id: String,
    /// The tenant of the agent when the session began: its attestations are that tenant's.
    pub tenant: String,
    pub agent_id: String,
    pub token_salt: Vec<u8>,
    pub token_hash: Vec<u8>,
    /// Unix seconds.
    pub token_expires_at: u64,
}

/// What an enrolment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolOutcome {
    Enrolled,
    /// The tenant's quota of agents or policies (named) is used up: nothing changed.
    QuotaExceeded(&'static str),
    AgentExists,
    /// A policy to create under a name that is taken.
    PolicyExists(PolicyKind),
    /// A policy named for reuse that does not exist.
    PolicyMissing(PolicyKind),
}

/// Operational states, with Keylime's numeric codes (keylime-api.md §4.5).
pub mod state {
    pub const REGISTERED: i64 = 0;
    pub const START: i64 = 1;
    pub const SAVED: i64 = 2;
    pub const GET_QUOTE: i64 = 3;
    pub const GET_QUOTE_RETRY: i64 = 4;
    pub const PROVIDE_V: i64 = 5;
    pub const PROVIDE_V_RETRY: i64 = 6;
    pub const FAILED: i64 = 7;
    pub const TERMINATED: i64 = 8;
    pub const INVALID_QUOTE: i64 = 9;
    pub const TENANT_FAILED: i64 = 10;

    /// Keylime's name of a state (its `operational_state` strings).
    pub fn name(state: i64) -> &'static str {
        match state {
            REGISTERED => "Registered",
            START => "Start",
            SAVED => "Saved",
            GET_QUOTE => "Get Quote",
            GET_QUOTE_RETRY => "Get Quote (retry)",
            PROVIDE_V => "Provide V",
            PROVIDE_V_RETRY => "Provide V (retry)",
            FAILED => "Failed",
            TERMINATED => "Terminated",
            INVALID_QUOTE => "Invalid Quote",
            TENANT_FAILED => "Tenant Quote Failed",
            _ => "Unknown",
        }
    }
}

/// A fresh record revision: random, below 2^47 so that SQLite's JSON functions read it as
/// an exact integer.
pub fn new_revision() -> u64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    // Without randomness, the time still differs between two operator writes.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return crate::clock::unix_micros_now() & ((1 << 47) - 1);
    }
    u64::from_le_bytes(bytes) & ((1 << 47) - 1)
}

/// A failure as stored with an agent or push attestation. Records written before the
/// `recoverable` and `entry` fields were kept (`[event_id, context]` pairs) still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredFailureRepr")]
pub struct StoredFailure {
    pub event_id: String,
    pub context: serde_json::Value,
    pub recoverable: bool,
    pub entry: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoredFailureRepr {
    Pair(String, serde_json::Value),
    Full {
        event_id: String,
        context: serde_json::Value,
        #[serde(default = "yes")]
        recoverable: bool,
        #[serde(default)]
        entry: Option<u64>,
    },
}

fn default_tenant() -> String {
    super::DEFAULT_TENANT.to_owned()
}

fn yes() -> bool {
    true
}

impl From<StoredFailureRepr> for StoredFailure {
    fn from(repr: StoredFailureRepr) -> Self {
        match repr {
            StoredFailureRepr::Pair(event_id, context) => Self {
                event_id,
                context,
                recoverable: true,
                entry: None,
            },
            StoredFailureRepr::Full {
                event_id,
                context,
                recoverable,
                entry,
            } => Self {
                event_id,
                context,
                recoverable,
                entry,
            },
        }
    }
}

impl StoredFailure {
    /// Keylime's reply shape `{"type", "context"}`, with `entry` when the failure names one.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({"type": self.event_id, "context": self.context});
        if let (Some(entry), Some(map)) = (self.entry, value.as_object_mut()) {
            map.insert("entry".into(), serde_json::json!(entry));
        }
        value
    }
}

/// An enrolled agent with its attestation state. Stored as one JSON record, so that the
/// attestation state can grow without migrations; the policy names are columns as well,
/// for the "in use" checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierAgent {
    pub agent_id: String,
    /// The verifier whose lease on this pull agent was current when the record was read
    /// (Keylime's `verifier_id`); a column, not part of the record: a round writes back
    /// only while the lease it read is still held.
    #[serde(skip)]
    pub lease_owner: Option<String>,
    /// The tenant that enrolled the agent: its policies are that tenant's.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub ip: Option<String>,
    pub port: Option<u16>,
    /// Base64 V half of the bootstrap key.
    pub v: Option<String>,
    /// The `tpm_policy` JSON text as enrolled.
    pub tpm_policy: String,
    pub runtime_policy: String,
    pub mb_policy: String,
    pub ima_sign_verification_keys: String,
    pub revocation_key: String,
    pub meta_data: String,
    pub accept_tpm_hash_algs: Vec<String>,
    pub accept_tpm_encryption_algs: Vec<String>,
    pub accept_tpm_signing_algs: Vec<String>,
    /// Base64 TPM2B_PUBLIC of the AK.
    pub ak_tpm: String,
    pub mtls_cert: Option<String>,
    pub supported_version: Option<String>,
    pub operational_state: i64,
    #[serde(default)]
    pub hash_alg: String,
    #[serde(default)]
    pub enc_alg: String,
    #[serde(default)]
    pub sign_alg: String,
    #[serde(default)]
    pub severity_level: Option<i64>,
    #[serde(default)]
    pub last_event_id: Option<String>,
    #[serde(default)]
    pub attestation_count: u64,
    #[serde(default)]
    pub last_received_quote: u64,
    #[serde(default)]
    pub last_successful_attestation: u64,
    /// The failures of the last failed attestation (event id and context), newest last.
    #[serde(default)]
    pub last_failures: Vec<StoredFailure>,
    /// Incremental IMA: the agent's boot time, the next entry and PCR 10 (hex) there.
    #[serde(default)]
    pub boottime: Option<u64>,
    #[serde(default)]
    pub next_ima_ml_entry: u64,
    #[serde(default)]
    pub pcr10: Option<String>,
    /// The runtime policy's per-agent state (learned keys), base64.
    #[serde(default)]
    pub ima_policy_state: Option<String>,
    /// The checksum of the runtime policy that judged the IMA list up to
    /// `next_ima_ml_entry`: under another version (a promotion, a rollback, an update) the
    /// next round replays the list from entry 0, so that entries only the old version
    /// accepted are judged again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ima_policy: Option<String>,
    /// The measured-boot policy's per-agent state, base64.
    #[serde(default)]
    pub mb_policy_state: Option<String>,
    /// Changes with every operator write (enrolment, stop, reactivation, update): a round's
    /// verdict is written back only to the record it started from.
    #[serde(default)]
    pub revision: u64,
    /// The agent's NK public key (PEM) from its last full quote.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Whether V was delivered for the current NK key.
    #[serde(default)]
    pub v_delivered: bool,
    /// TPM clock of the last quote: (clock, resetCount, restartCount).
    #[serde(default)]
    pub tpm_clock: Option<(u64, u32, u32)>,
    /// In INVALID_QUOTE but still polled: the failure's severity was below the highest
    /// label and recoverable, so the agent may pass again.
    #[serde(default)]
    pub polls_after_failure: bool,
    /// A push agent (API 3.0): it authenticates and submits evidence; never polled.
    #[serde(default)]
    pub push: bool,
    /// Push: failed attestations since the last pass (Keylime's
    /// `consecutive_attestation_failures`).
    #[serde(default)]
    pub consecutive_attestation_failures: u64,
    /// Push: whether the latest judged attestation passed (reactivation resets it, so the
    /// agent shows PENDING until it passes again).
    #[serde(default)]
    pub last_attestation_passed: bool,
}

/// One push attestation: what the agent offered, what the verifier asked for, what came
/// back and the verdict. Stored as JSON, numbered per agent from 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushAttestation {
    pub index: u64,
    /// `awaiting_evidence`, `evaluating_evidence`, `verification_complete`.
    pub stage: String,
    /// `pending`, `pass`, `fail`.
    pub evaluation: String,
    /// `broken_evidence_chain` or `policy_violation` on a failure.
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub failures: Vec<StoredFailure>,
    /// Each requested item: `evidence_class`, `evidence_type`, `capabilities`,
    /// `chosen_parameters` and, once submitted, `data`.
    pub evidence: Vec<serde_json::Value>,
    pub system_info: serde_json::Value,
    /// The agent's boot time (Unix seconds).
    pub boot_time: u64,
    /// Base64 of the quote's challenge.
    pub challenge: String,
    /// IMA: the first entry asked for, and how many the evidence certified.
    pub ima_offset: Option<u64>,
    #[serde(default)]
    pub ima_entries: u64,
    /// Microseconds since the epoch.
    pub capabilities_received_at: u64,
    pub challenges_expire_at: u64,
    pub evidence_received_at: Option<u64>,
    pub verified_at: Option<u64>,
}

/// An agent as the poller's schedule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    pub agent_id: String,
    pub tenant: String,
    /// The verifier that polls it (pull agents); `None` until one takes it.
    pub lease_owner: Option<String>,
    pub operational_state: i64,
    pub push: bool,
    pub polls_after_failure: bool,
}

/// What the verifier checks of an attestation before taking the next one: its index,
/// stage and times, without its evidence (which holds the IMA entries it certified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationHead {
    pub index: u64,
    pub stage: String,
    pub capabilities_received_at: u64,
    pub evidence_received_at: Option<u64>,
}

/// The verifier's records. Policies and components belong to a tenant, and their names are
/// unique per tenant; an agent id is unique across tenants (an agent belongs to one tenant
/// at a time: [`VerifierAgent::tenant`]), and its sessions and attestations go with it.
pub trait VerifierStore: super::history::HistoryStore + Send + Sync + 'static {
    /// Creates (`create_only`, within `quota`'s policies) or replaces a policy of `tenant`.
    fn put_policy(
        &self,
        kind: PolicyKind,
        tenant: &str,
        record: &PolicyRecord,
        create_only: bool,
        quota: &TenantQuota,
    ) -> Result<PolicyWrite, StoreError>;

    fn policy(&self, kind: PolicyKind, tenant: &str, name: &str) -> Result<Option<PolicyRecord>, StoreError>;

    /// A policy without its document (which can be megabytes): `document` is `Some(empty)`
    /// when there is one.
    fn policy_info(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PolicyRecord>, StoreError>;

    /// The names of `tenant`'s policies, or of every tenant's with `None`: (tenant, name).
    fn policy_names(
        &self,
        kind: PolicyKind,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError>;

    fn delete_policy(&self, kind: PolicyKind, tenant: &str, name: &str) -> Result<PolicyDelete, StoreError>;

    /// Enrols an agent in its tenant, creating the policies given as new ones there; all or
    /// nothing. The agent record names its policies; each must exist afterwards.
    /// `quota` bounds the tenant's agents and policies, checked in the same transaction.
    fn enrol(
        &self,
        agent: &VerifierAgent,
        new_policies: &[(PolicyKind, PolicyRecord)],
        quota: &TenantQuota,
    ) -> Result<EnrolOutcome, StoreError>;

    fn agent(&self, agent_id: &str) -> Result<Option<VerifierAgent>, StoreError>;

    fn agents(&self) -> Result<Vec<VerifierAgent>, StoreError>;

    /// What the poller needs to know of every agent: whether it is to be polled or
    /// deleted, without reading whole records.
    fn agent_states(&self) -> Result<Vec<AgentState>, StoreError>;

    /// The pull loop's turn for verifier `me` on a database other verifiers may share:
    /// renews `me`'s lease until `now_ms + lease_ms`, takes at most `take` pull agents that
    /// no verifier with a live lease holds, and returns every agent's state with its lease
    /// owner. One renewal covers all of `me`'s agents. Times are Unix milliseconds.
    fn lease_agents(
        &self,
        me: &str,
        now_ms: u64,
        lease_ms: u64,
        take: u64,
    ) -> Result<Vec<AgentState>, StoreError>;

    /// Replaces an agent's record if the agent still exists (a deleted agent is never
    /// written back) and is not in one of `unless_states`. Returns whether it was written.
    fn update_agent(&self, agent: &VerifierAgent, unless_states: &[i64]) -> Result<bool, StoreError>;

    /// Writes a round's outcome back only if the stored record is still the one the round
    /// started from: same `revision` (no operator write meanwhile), operational state
    /// `from_state`, and lease owner (no other verifier took the agent over). A deleted
    /// agent is never written back. With `history`, a written round's history goes in the
    /// same transaction.
    fn save_round(
        &self,
        agent: &VerifierAgent,
        from_state: i64,
        history: Option<RoundHistory>,
    ) -> Result<RoundSaved, StoreError>;

    /// Deletes an agent with its push sessions and attestations, and the policies named
    /// after it that no other agent uses. Returns whether it existed.
    fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError>;

    /// Stores a component uploaded by `tenant`, within `quota`'s components.
    fn put_module(
        &self,
        tenant: &str,
        record: &ModuleRecord,
        bytes: &[u8],
        quota: &TenantQuota,
    ) -> Result<ModuleWrite, StoreError>;

    /// A tenant's quota as the operator set it (`None`: the defaults).
    fn quota(&self, tenant: &str) -> Result<Option<TenantQuota>, StoreError>;

    /// Every quota the operator set.
    fn quotas(&self) -> Result<Vec<(String, TenantQuota)>, StoreError>;

    /// Sets a tenant's quota, or returns it to the defaults with `None`.
    fn put_quota(&self, tenant: &str, quota: Option<&TenantQuota>) -> Result<(), StoreError>;

    /// What a tenant holds now.
    fn tenant_usage(&self, tenant: &str) -> Result<TenantUsage, StoreError>;

    /// A component's record and bytes, as `tenant` uploaded it.
    fn module(&self, tenant: &str, id: &str) -> Result<Option<(ModuleRecord, Vec<u8>)>, StoreError>;

    /// `tenant`'s components, or every tenant's with `None`: (tenant, record).
    fn modules(&self, tenant: Option<&str>) -> Result<Vec<(String, ModuleRecord)>, StoreError>;

    /// Deletes a component of `tenant` that none of its policies names.
    fn delete_module(&self, tenant: &str, id: &str) -> Result<ModuleDelete, StoreError>;

    /// Stores a proven session and ends the agent's others (one active session per agent).
    fn put_session(&self, session: &PushSession) -> Result<(), StoreError>;

    /// Marks the proof-of-possession session `session_id` (whose challenge expires at
    /// `expires_at`, Unix microseconds) as proven; false when it was already, by this
    /// verifier or another on the database. Claims past `now` are forgotten.
    fn claim_session(&self, session_id: &str, expires_at: u64, now: u64) -> Result<bool, StoreError>;

    /// The secret `name` every verifier on this database shares, made (32 random bytes) by
    /// the first that asks.
    fn shared_secret(&self, name: &str) -> Result<Vec<u8>, StoreError>;

    /// A session by its id (ids are unique across tenants), with its tenant.
    fn session(&self, session_id: &str) -> Result<Option<PushSession>, StoreError>;

    /// Stores a new attestation of `tenant`'s agent under its next index, which it returns.
    fn add_attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        record: &PushAttestation,
    ) -> Result<u64, StoreError>;

    /// Replaces an attestation (same tenant, agent and index).
    fn update_attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        record: &PushAttestation,
    ) -> Result<(), StoreError>;

    /// A push verdict in one transaction: the agent's record as [`Self::save_round`] saves
    /// it (returning whether it did); then, if it was saved, the session's token expiry
    /// moved to `extend_session` (a passing attestation extends it); and the attestation (of
    /// the agent's tenant)
    /// replaced if the one stored at its index is still the one judged (same
    /// `capabilities_received_at`: not an attestation of a re-enrolment meanwhile); and, if
    /// saved, the round's `history`.
    fn save_push_verdict(
        &self,
        agent: &VerifierAgent,
        from_state: i64,
        extend_session: Option<(&str, u64)>,
        attestation: &PushAttestation,
        history: Option<RoundHistory>,
    ) -> Result<RoundSaved, StoreError>;

    /// One attestation of `tenant`'s agent, or the latest with `None`.
    fn attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        index: Option<u64>,
    ) -> Result<Option<PushAttestation>, StoreError>;

    /// [`AttestationHead`] of one attestation, or of the latest with `None`.
    fn attestation_head(
        &self,
        tenant: &str,
        agent_id: &str,
        index: Option<u64>,
    ) -> Result<Option<AttestationHead>, StoreError>;

    /// The attestations of `tenant`'s agent, oldest first.
    fn attestations(&self, tenant: &str, agent_id: &str) -> Result<Vec<PushAttestation>, StoreError>;
}
