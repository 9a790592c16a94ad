//! The store's contract, run against both backends: the embedded SQLite file and a real
//! PostgreSQL cluster (Debian's, started here as an unprivileged process in a temp dir).
//! Every case gets a fresh database. Beside the contract: several stores on one PostgreSQL
//! database (several verifiers) keep quotas and numbering, and every schema zest has
//! shipped opens with the current code.

use std::sync::Arc;

use serde_json::json;
use zest::store::history::{
    EvidenceSnapshot, EvidenceUpdate, HistoryEntry, HistoryQuery, Retention, RoundHistory, Swap,
};
use zest::store::verifier::state;
use zest::store::{
    EnrolOutcome, ModuleDelete, ModuleRecord, ModuleWrite, NewRegistration, PgStore, PolicyDelete,
    PolicyKind, PolicyRecord, PolicyWrite, PushAttestation, PushSession, RegisterOutcome, RegistrarStore,
    SqliteStore, TenantQuota, VerifierAgent, VerifierStore,
};
use zest_tests::postgres::Postgres;

trait Store: VerifierStore + RegistrarStore {}
impl<T: VerifierStore + RegistrarStore> Store for T {}

fn registration(id: &str, ak: &str, tag: u8) -> NewRegistration {
    NewRegistration {
        agent_id: id.into(),
        ek_tpm: "ek".into(),
        ekcert: Some("cert".into()),
        aik_tpm: ak.into(),
        ip: Some("127.0.0.1".into()),
        port: Some(9002),
        mtls_cert: Some("disabled".into()),
        auth_tag_digest: vec![tag; 32],
    }
}

fn agent(id: &str, tenant: &str, runtime: &str, mb: &str) -> VerifierAgent {
    serde_json::from_value(json!({
        "agent_id": id, "ip": "127.0.0.1", "port": 9002, "v": null, "tpm_policy": "{}",
        "runtime_policy": runtime, "mb_policy": mb, "ima_sign_verification_keys": "",
        "revocation_key": "", "meta_data": "{}", "accept_tpm_hash_algs": ["sha256"],
        "accept_tpm_encryption_algs": [], "accept_tpm_signing_algs": [], "ak_tpm": "ak",
        "mtls_cert": null, "supported_version": "2.6", "operational_state": state::GET_QUOTE,
        "revision": 7, "push": false, "tenant": tenant
    }))
    .unwrap()
}

fn policy(name: &str) -> PolicyRecord {
    PolicyRecord {
        name: name.into(),
        module: "builtin:keylime-runtime".into(),
        document: Some(format!("{{\"name\": \"{name}\"}}").into_bytes()),
        checksum: "c".into(),
        generator: 3,
    }
}

fn attestation(received: u64) -> PushAttestation {
    serde_json::from_value(json!({
        "index": 0, "stage": "awaiting_evidence", "evaluation": "pending",
        "failure_reason": null, "evidence": [], "system_info": {}, "boot_time": 1,
        "challenge": "", "ima_offset": null, "capabilities_received_at": received,
        "challenges_expire_at": 0, "evidence_received_at": null, "verified_at": null
    }))
    .unwrap()
}

fn unlimited() -> TenantQuota {
    TenantQuota {
        agents: 1000,
        policies: 1000,
        components: 1000,
        ..TenantQuota::default()
    }
}

fn registrar_contract(store: &dyn Store) {
    assert_eq!(
        store.register(&registration("a", "ak1", 1), 0).unwrap(),
        RegisterOutcome::Created
    );
    assert!(store.activate("a", &[1; 32], 0).unwrap());
    let mut again = registration("a", "ak1", 2);
    again.port = Some(9003);
    assert_eq!(store.register(&again, 0).unwrap(), RegisterOutcome::Renewed);
    assert_eq!(
        store.register(&registration("a", "ak2", 3), u64::MAX).unwrap(),
        RegisterOutcome::IdentityConflict,
        "an active agent never expires"
    );
    // The renewal waits for its credential.
    let stored = store.registered_agent("a").unwrap().unwrap();
    assert_eq!(
        (stored.aik_tpm.as_str(), stored.port, stored.active),
        ("ak1", Some(9002), true)
    );
    assert!(!store.activate("a", &[3; 32], 0).unwrap());
    assert!(store.activate("a", &[2; 32], 0).unwrap());
    let stored = store.registered_agent("a").unwrap().unwrap();
    assert_eq!((stored.port, stored.auth_tag_digest), (Some(9003), vec![2; 32]));
    assert!(
        !store.activate("a", &[1; 32], 0).unwrap(),
        "the old tag no longer activates"
    );

    // An unactivated registration expires.
    store.register(&registration("c", "ak1", 1), 0).unwrap();
    assert_eq!(
        store.register(&registration("c", "ak2", 1), 0).unwrap(),
        RegisterOutcome::IdentityConflict
    );
    let later = zest::clock::unix_now() + 10;
    assert!(!store.activate("c", &[1; 32], later).unwrap());
    assert_eq!(
        store.register(&registration("c", "ak2", 1), later).unwrap(),
        RegisterOutcome::Created
    );
    assert_eq!(store.list_agents().unwrap(), ["a", "c"]);
    assert!(RegistrarStore::delete_agent(store, "c").unwrap());
    assert!(!RegistrarStore::delete_agent(store, "c").unwrap());
    assert!(store.registered_agent("c").unwrap().is_none());
}

fn policy_contract(store: &dyn Store) {
    let quota = TenantQuota {
        policies: 2,
        ..unlimited()
    };
    let put = |tenant: &str, name: &str, create: bool| {
        store
            .put_policy(PolicyKind::Runtime, tenant, &policy(name), create, &quota)
            .unwrap()
    };
    assert_eq!(put("t", "p", true), PolicyWrite::Done);
    assert_eq!(put("t", "p", true), PolicyWrite::Exists);
    assert_eq!(put("u", "p", true), PolicyWrite::Done, "names are per tenant");
    assert_eq!(put("t", "q", false), PolicyWrite::NotFound);
    // Refstates count against the same quota.
    assert_eq!(
        store
            .put_policy(PolicyKind::MeasuredBoot, "t", &policy("m"), true, &quota)
            .unwrap(),
        PolicyWrite::Done
    );
    assert_eq!(put("t", "q", true), PolicyWrite::QuotaExceeded);
    let mut changed = policy("p");
    changed.document = None;
    assert_eq!(
        store
            .put_policy(PolicyKind::Runtime, "t", &changed, false, &quota)
            .unwrap(),
        PolicyWrite::Done
    );
    assert_eq!(
        store.policy(PolicyKind::Runtime, "t", "p").unwrap(),
        Some(changed)
    );
    assert_eq!(
        store.policy(PolicyKind::Runtime, "u", "p").unwrap(),
        Some(policy("p")),
        "the other tenant's is untouched"
    );
    let info = store.policy_info(PolicyKind::Runtime, "u", "p").unwrap().unwrap();
    assert_eq!(info.document, Some(Vec::new()), "present, without its bytes");
    assert_eq!(
        store
            .policy_info(PolicyKind::Runtime, "t", "p")
            .unwrap()
            .unwrap()
            .document,
        None
    );
    assert_eq!(
        store.policy_names(PolicyKind::Runtime, None).unwrap(),
        [("t".to_owned(), "p".to_owned()), ("u".to_owned(), "p".to_owned())]
    );
    assert_eq!(
        store.policy_names(PolicyKind::Runtime, Some("u")).unwrap(),
        [("u".to_owned(), "p".to_owned())]
    );
    assert_eq!(store.tenant_usage("t").unwrap().policies, 2);
    assert_eq!(
        store.delete_policy(PolicyKind::Runtime, "t", "p").unwrap(),
        PolicyDelete::Deleted
    );
    assert_eq!(
        store.delete_policy(PolicyKind::Runtime, "t", "p").unwrap(),
        PolicyDelete::NotFound
    );
}

fn enrolment_contract(store: &dyn Store) {
    let quota = TenantQuota {
        agents: 2,
        policies: 4,
        ..unlimited()
    };
    let tight = TenantQuota { policies: 3, ..quota };
    let brought = [
        (PolicyKind::Runtime, policy("a1")),
        (PolicyKind::MeasuredBoot, policy("a1")),
    ];
    assert_eq!(
        store
            .enrol(&agent("a1", "t", "a1", "a1"), &brought, &quota)
            .unwrap(),
        EnrolOutcome::Enrolled
    );
    assert_eq!(
        store.enrol(&agent("a1", "u", "x", "y"), &[], &quota).unwrap(),
        EnrolOutcome::AgentExists,
        "an agent belongs to one tenant at a time"
    );
    // A policy that must be created but exists, or must exist but does not: nothing stays.
    assert_eq!(
        store
            .enrol(
                &agent("a2", "t", "new", "a1"),
                &[
                    (PolicyKind::Runtime, policy("new")),
                    (PolicyKind::MeasuredBoot, policy("a1"))
                ],
                &quota
            )
            .unwrap(),
        EnrolOutcome::PolicyExists(PolicyKind::MeasuredBoot)
    );
    assert!(store.policy(PolicyKind::Runtime, "t", "new").unwrap().is_none());
    assert_eq!(
        store.enrol(&agent("a2", "t", "a1", "none"), &[], &quota).unwrap(),
        EnrolOutcome::PolicyMissing(PolicyKind::MeasuredBoot)
    );
    assert_eq!(
        store
            .enrol(
                &agent("a2", "t", "r2", "a1"),
                &[
                    (PolicyKind::Runtime, policy("r2")),
                    (PolicyKind::MeasuredBoot, policy("m2"))
                ],
                &tight
            )
            .unwrap(),
        EnrolOutcome::QuotaExceeded("policies")
    );
    assert!(store.agent("a2").unwrap().is_none());
    assert_eq!(
        store.enrol(&agent("a2", "t", "a1", "a1"), &[], &quota).unwrap(),
        EnrolOutcome::Enrolled
    );
    assert_eq!(
        store.enrol(&agent("a3", "t", "a1", "a1"), &[], &quota).unwrap(),
        EnrolOutcome::QuotaExceeded("agents")
    );
    assert_eq!(store.tenant_usage("t").unwrap().agents, 2);
    assert_eq!(store.agent("a1").unwrap().unwrap(), agent("a1", "t", "a1", "a1"));
    assert_eq!(
        store
            .agents()
            .unwrap()
            .iter()
            .map(|a| a.agent_id.as_str())
            .collect::<Vec<_>>(),
        ["a1", "a2"]
    );
    let states = store.agent_states().unwrap();
    assert_eq!(states.len(), 2);
    assert!(
        states
            .iter()
            .all(|s| s.tenant == "t" && s.operational_state == state::GET_QUOTE && !s.push)
    );
    assert_eq!(
        store.delete_policy(PolicyKind::Runtime, "t", "a1").unwrap(),
        PolicyDelete::InUse
    );

    // A round's write lands only on the record it started from.
    let mut round = agent("a1", "t", "a1", "a1");
    round.attestation_count = 5;
    // Its history goes in the same write, and only with a written verdict.
    let saved = store
        .save_round(&round, state::GET_QUOTE, Some(with_verdict("a1", 1)))
        .unwrap();
    assert!(saved.saved);
    let id = saved.history.unwrap().unwrap();
    let refused = store
        .save_round(&round, state::START, Some(with_verdict("a1", 2)))
        .unwrap();
    assert!(!refused.saved, "another state");
    assert!(refused.history.is_none());
    let stale = VerifierAgent {
        revision: 8,
        ..round.clone()
    };
    assert!(
        !store
            .save_round(&stale, state::GET_QUOTE, Some(with_verdict("a1", 3)))
            .unwrap()
            .saved,
        "another revision"
    );
    assert_eq!(store.agent("a1").unwrap().unwrap().attestation_count, 5);
    assert_eq!(
        histories(store, "a1"),
        [(id, 1)],
        "only the written verdict's history"
    );
    assert_eq!(
        store
            .recorded_evidence("a1")
            .unwrap()
            .unwrap()
            .ima_text
            .as_deref(),
        Some("e0\n"),
        "its evidence too"
    );
    // An operator's update, unless the stored state is one it must not override.
    let mut stopped = round.clone();
    stopped.operational_state = state::TENANT_FAILED;
    assert!(store.update_agent(&stopped, &[state::TERMINATED]).unwrap());
    assert!(!store.update_agent(&round, &[state::TENANT_FAILED]).unwrap());
    assert_eq!(
        store.agent("a1").unwrap().unwrap().operational_state,
        state::TENANT_FAILED
    );

    // Deleting an agent takes the policies named after it once nobody uses them.
    assert!(VerifierStore::delete_agent(store, "a2").unwrap());
    assert!(
        store.policy(PolicyKind::Runtime, "t", "a1").unwrap().is_some(),
        "a1 still uses it"
    );
    assert!(VerifierStore::delete_agent(store, "a1").unwrap());
    assert!(store.policy(PolicyKind::Runtime, "t", "a1").unwrap().is_none());
    assert!(
        store
            .policy(PolicyKind::MeasuredBoot, "t", "a1")
            .unwrap()
            .is_none()
    );
    assert!(!VerifierStore::delete_agent(store, "a1").unwrap());
}

fn module_contract(store: &dyn Store) {
    let quota = TenantQuota {
        components: 1,
        ..unlimited()
    };
    let record = |id: &str| ModuleRecord {
        id: id.into(),
        kind: PolicyKind::Runtime,
        size: 3,
        uploaded_at: 1_700_000_000,
    };
    assert_eq!(
        store
            .put_module("t", &record("sha256:aa"), b"abc", &quota)
            .unwrap(),
        ModuleWrite::Created
    );
    assert_eq!(
        store
            .put_module("t", &record("sha256:aa"), b"abc", &quota)
            .unwrap(),
        ModuleWrite::Exists
    );
    assert_eq!(
        store
            .put_module("t", &record("sha256:bb"), b"abc", &quota)
            .unwrap(),
        ModuleWrite::QuotaExceeded
    );
    assert_eq!(
        store
            .put_module("u", &record("sha256:aa"), b"abc", &quota)
            .unwrap(),
        ModuleWrite::Created
    );
    assert_eq!(
        store.module("t", "sha256:aa").unwrap(),
        Some((record("sha256:aa"), b"abc".to_vec()))
    );
    assert!(store.module("v", "sha256:aa").unwrap().is_none());
    assert_eq!(
        store.modules(Some("u")).unwrap(),
        [("u".to_owned(), record("sha256:aa"))]
    );
    assert_eq!(store.modules(None).unwrap().len(), 2);
    let mut uses = policy("p");
    uses.module = "sha256:aa".into();
    store
        .put_policy(PolicyKind::Runtime, "t", &uses, true, &unlimited())
        .unwrap();
    assert_eq!(
        store.delete_module("t", "sha256:aa").unwrap(),
        ModuleDelete::InUse(vec!["runtime policy p".into()])
    );
    assert_eq!(
        store.delete_module("u", "sha256:aa").unwrap(),
        ModuleDelete::Deleted
    );
    assert_eq!(
        store.delete_module("u", "sha256:aa").unwrap(),
        ModuleDelete::NotFound
    );

    // Quotas the operator set; none set is the defaults.
    assert!(store.quota("t").unwrap().is_none());
    store.put_quota("t", Some(&quota)).unwrap();
    store.put_quota("t", Some(&unlimited())).unwrap();
    assert_eq!(store.quota("t").unwrap(), Some(unlimited()));
    assert_eq!(store.quotas().unwrap(), [("t".to_owned(), unlimited())]);
    store.put_quota("t", None).unwrap();
    assert!(store.quotas().unwrap().is_empty());
}

fn push_contract(store: &dyn Store) {
    let mut pushed = agent("p1", "t", "p1", "p1");
    pushed.push = true;
    let policies = [
        (PolicyKind::Runtime, policy("p1")),
        (PolicyKind::MeasuredBoot, policy("p1")),
    ];
    assert_eq!(
        store.enrol(&pushed, &policies, &unlimited()).unwrap(),
        EnrolOutcome::Enrolled
    );
    let session = |id: &str, tenant: &str| PushSession {
        session_id: id.into(),
        tenant: tenant.into(),
        agent_id: "p1".into(),
        token_salt: vec![1],
        token_hash: vec![2],
        token_expires_at: 100,
    };
    store.put_session(&session("s1", "t")).unwrap();
    store.put_session(&session("s2", "t")).unwrap();
    assert!(store.session("s1").unwrap().is_none(), "one session per agent");
    assert_eq!(store.session("s2").unwrap(), Some(session("s2", "t")));

    assert_eq!(store.add_attestation("t", "p1", &attestation(10)).unwrap(), 0);
    assert_eq!(store.add_attestation("t", "p1", &attestation(20)).unwrap(), 1);
    assert!(
        store.attestation("u", "p1", None).unwrap().is_none(),
        "another tenant has none"
    );
    let latest = store.attestation("t", "p1", None).unwrap().unwrap();
    assert_eq!((latest.index, latest.capabilities_received_at), (1, 20));
    let head = store.attestation_head("t", "p1", Some(0)).unwrap().unwrap();
    assert_eq!(
        (head.index, head.stage.as_str(), head.capabilities_received_at),
        (0, "awaiting_evidence", 10)
    );
    assert_eq!(head.evidence_received_at, None);
    let mut received = latest.clone();
    received.stage = "evaluating_evidence".into();
    received.evidence_received_at = Some(25);
    store.update_attestation("t", "p1", &received).unwrap();
    let head = store.attestation_head("t", "p1", None).unwrap().unwrap();
    assert_eq!(
        (head.stage.as_str(), head.evidence_received_at),
        ("evaluating_evidence", Some(25))
    );

    // The verdict: record, session and attestation in one write, each only if still current.
    let judged = PushAttestation {
        stage: "verification_complete".into(),
        evaluation: "pass".into(),
        ..received.clone()
    };
    pushed.attestation_count = 1;
    let saved = store
        .save_push_verdict(
            &pushed,
            state::GET_QUOTE,
            Some(("s2", 200)),
            &judged,
            Some(with_verdict("p1", 10)),
        )
        .unwrap();
    assert!(saved.saved);
    let id = saved.history.unwrap().unwrap();
    assert_eq!(store.agent("p1").unwrap().unwrap().attestation_count, 1);
    assert_eq!(store.session("s2").unwrap().unwrap().token_expires_at, 200);
    assert_eq!(
        store.attestation("t", "p1", Some(1)).unwrap().unwrap().evaluation,
        "pass"
    );
    let stale = VerifierAgent {
        revision: 1,
        attestation_count: 9,
        ..pushed.clone()
    };
    let refused = store
        .save_push_verdict(
            &stale,
            state::GET_QUOTE,
            Some(("s2", 300)),
            &judged,
            Some(with_verdict("p1", 11)),
        )
        .unwrap();
    assert!(!refused.saved && refused.history.is_none());
    assert_eq!(store.session("s2").unwrap().unwrap().token_expires_at, 200);
    assert_eq!(
        histories(store, "p1"),
        [(id, 10)],
        "only the written verdict's history"
    );
    let other_round = PushAttestation {
        capabilities_received_at: 99,
        evaluation: "fail".into(),
        ..judged.clone()
    };
    let _ = store
        .save_push_verdict(&pushed, state::GET_QUOTE, None, &other_round, None)
        .unwrap();
    assert_eq!(
        store.attestation("t", "p1", Some(1)).unwrap().unwrap().evaluation,
        "pass",
        "another attestation at that index is left alone"
    );
    assert_eq!(
        store
            .attestations("t", "p1")
            .unwrap()
            .iter()
            .map(|a| a.index)
            .collect::<Vec<_>>(),
        [0, 1]
    );
    // Deleting the agent takes its session and attestations.
    assert!(VerifierStore::delete_agent(store, "p1").unwrap());
    assert!(store.session("s2").unwrap().is_none());
    assert!(store.attestations("t", "p1").unwrap().is_empty());
}

/// Verifiers sharing a database: one lease renewal per verifier covers its agents; an agent
/// goes to one verifier, and to another only once its holder stopped renewing; a round read
/// under a lease that was taken over writes nothing.
fn lease_contract(store: &dyn Store) {
    let policies = [
        (PolicyKind::Runtime, policy("shared")),
        (PolicyKind::MeasuredBoot, policy("shared")),
    ];
    store
        .enrol(&agent("a", "t", "shared", "shared"), &policies, &unlimited())
        .unwrap();
    for id in ["b", "c"] {
        store
            .enrol(&agent(id, "t", "shared", "shared"), &[], &unlimited())
            .unwrap();
    }
    let mut pushed = agent("p", "t", "shared", "shared");
    pushed.push = true;
    store.enrol(&pushed, &[], &unlimited()).unwrap();
    let owners = |states: Vec<zest::store::AgentState>| {
        let mut owners: Vec<(String, Option<String>)> =
            states.into_iter().map(|s| (s.agent_id, s.lease_owner)).collect();
        owners.sort();
        owners
    };
    let held = |by: &str| {
        ["a", "b", "c"]
            .iter()
            .map(|id| (id.to_string(), Some(by.to_owned())))
            .chain([("p".to_owned(), None)])
            .collect::<Vec<_>>()
    };
    assert_eq!(
        owners(store.lease_agents("v1", 1_000, 100, u64::MAX).unwrap()),
        held("v1")
    );
    assert_eq!(
        owners(store.lease_agents("v2", 1_050, 100, u64::MAX).unwrap()),
        held("v1"),
        "v1's lease is live: v2 takes nothing"
    );
    let read_by_v1 = store.agent("a").unwrap().unwrap();
    assert_eq!(read_by_v1.lease_owner.as_deref(), Some("v1"));
    // v1 renews once for all its agents; v2 still takes nothing.
    store.lease_agents("v1", 1_090, 100, u64::MAX).unwrap();
    assert_eq!(
        owners(store.lease_agents("v2", 1_150, 100, u64::MAX).unwrap()),
        held("v1")
    );
    // v1 stopped renewing: past its lease, v2 takes its agents, a few at a time if asked.
    let partial = owners(store.lease_agents("v2", 1_200, 100, 2).unwrap());
    assert_eq!(
        partial.iter().filter(|(_, o)| o.as_deref() == Some("v2")).count(),
        2
    );
    assert_eq!(
        owners(store.lease_agents("v2", 1_210, 100, u64::MAX).unwrap()),
        held("v2")
    );
    // v1 comes back: its renewal takes nothing back, and its round read before is refused.
    assert_eq!(
        owners(store.lease_agents("v1", 1_220, 100, u64::MAX).unwrap()),
        held("v2")
    );
    assert!(
        !store
            .save_round(&read_by_v1, state::GET_QUOTE, None)
            .unwrap()
            .saved
    );
    let read_by_v2 = store.agent("a").unwrap().unwrap();
    assert!(
        store
            .save_round(&read_by_v2, state::GET_QUOTE, None)
            .unwrap()
            .saved
    );
    // Operator writes do not move leases.
    assert!(store.update_agent(&read_by_v2, &[]).unwrap());
    assert_eq!(
        store.agent("a").unwrap().unwrap().lease_owner.as_deref(),
        Some("v2")
    );
}

fn round(agent: &str, at_ms: u64, passed: bool) -> HistoryEntry {
    HistoryEntry {
        id: 0,
        tenant: "t".into(),
        agent_id: agent.into(),
        at_ms,
        mode: "push".into(),
        passed,
        failures: vec![],
        quote_digest: Some(format!("q{at_ms}")),
        ima_range: None,
        runtime_policy: None,
        mb_policy: None,
    }
}

/// A round's history to write with its verdict, with an IMA list of one entry.
fn with_verdict(agent: &str, at_ms: u64) -> RoundHistory {
    RoundHistory {
        entry: round(agent, at_ms, true),
        evidence: Some(evidence(0, "e0\n", 1, None)),
        retention: Retention::default(),
    }
}

/// An agent's history as (id, time), newest first.
fn histories(store: &dyn Store, agent: &str) -> Vec<(u64, u64)> {
    store
        .history(&HistoryQuery {
            agent_id: Some(agent.into()),
            limit: 100,
            ..HistoryQuery::default()
        })
        .unwrap()
        .iter()
        .map(|e| (e.id, e.at_ms))
        .collect()
}

fn evidence(offset: u64, text: &str, next: u64, boot_log: Option<&[u8]>) -> EvidenceUpdate {
    EvidenceUpdate {
        snapshot: EvidenceSnapshot {
            at_ms: 1,
            hash: "sha256".into(),
            boot_time: Some(5),
            quoted: [(10, "aa".to_owned())].into(),
            ima_next: Some(next),
            ima_pcr10: Some(format!("{next:02x}")),
            boot_log: None,
        },
        ima_text: Some(text.into()),
        ima_offset: offset,
        boot_log: boot_log.map(<[u8]>::to_vec),
    }
}

/// History pages newest first under filters, retention drops the oldest passes and
/// failures (and push attestations) beyond their counts, IMA evidence grows by segments,
/// restarts from entry 0, is dropped on a gap, and boot logs are kept once by digest.
fn history_contract(store: &dyn Store) {
    let keep = Retention {
        keep_passes: 3,
        keep_failures: 2,
    };
    let mut ids = Vec::new();
    for i in 0..10u64 {
        // Rounds 2, 5 and 8 fail.
        let id = store
            .record_round(&round("h", 1000 + i, i % 3 != 2), None, &keep)
            .unwrap();
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let all = store
        .history(&HistoryQuery {
            agent_id: Some("h".into()),
            limit: 100,
            ..HistoryQuery::default()
        })
        .unwrap();
    let times: Vec<u64> = all.iter().map(|e| e.at_ms).collect();
    // The newest 3 passes (9, 7, 6) and 2 failures (8, 5), newest first.
    assert_eq!(times, vec![1009, 1008, 1007, 1006, 1005]);
    assert_eq!(all[0].quote_digest.as_deref(), Some("q1009"));
    let page = |before: Option<u64>, passed: Option<bool>, since: Option<u64>| {
        store
            .history(&HistoryQuery {
                agent_id: Some("h".into()),
                passed,
                before_id: before,
                since_ms: since,
                limit: 2,
                ..HistoryQuery::default()
            })
            .unwrap()
            .iter()
            .map(|e| (e.id, e.at_ms))
            .collect::<Vec<_>>()
    };
    let first = page(None, None, None);
    assert_eq!(first.iter().map(|e| e.1).collect::<Vec<_>>(), vec![1009, 1008]);
    let second = page(Some(first[1].0), None, None);
    assert_eq!(second.iter().map(|e| e.1).collect::<Vec<_>>(), vec![1007, 1006]);
    assert_eq!(
        page(None, Some(false), None)
            .iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        vec![1008, 1005]
    );
    assert_eq!(page(None, None, Some(1007)).len(), 2);
    assert!(page(None, None, Some(2000)).is_empty());
    // Another agent's rounds and tenant filters stay apart.
    store.record_round(&round("other", 5, true), None, &keep).unwrap();
    let tenant_t = store
        .history(&HistoryQuery {
            tenant: Some("t".into()),
            limit: 100,
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(tenant_t.len(), 6);
    assert!(
        store
            .history(&HistoryQuery {
                tenant: Some("nobody".into()),
                limit: 100,
                ..HistoryQuery::default()
            })
            .unwrap()
            .is_empty()
    );

    // Evidence: segments appended in order, from 0 again after a reboot, dropped on a gap.
    let boot = b"boot log bytes".as_slice();
    store
        .record_round(
            &round("e", 1, true),
            Some(&evidence(0, "l0\nl1\n", 2, Some(boot))),
            &keep,
        )
        .unwrap();
    store
        .record_round(
            &round("e", 2, true),
            Some(&evidence(2, "l2\n", 3, Some(boot))),
            &keep,
        )
        .unwrap();
    let recorded = store.recorded_evidence("e").unwrap().unwrap();
    assert_eq!(recorded.ima_text.as_deref(), Some("l0\nl1\nl2\n"));
    assert_eq!(recorded.snapshot.ima_next, Some(3));
    assert_eq!(recorded.boot_log.as_deref(), Some(boot));
    assert_eq!(
        recorded.snapshot.boot_log.as_deref(),
        Some(zest::store::history::digest_hex(boot).as_str())
    );
    // Past the segment limit the list is compacted, and reads the same.
    let mut expected = String::from("l0\nl1\nl2\n");
    for i in 3..40u64 {
        let line = format!("l{i}\n");
        expected.push_str(&line);
        store
            .record_round(
                &round("e", 10 + i, true),
                Some(&evidence(i, &line, i + 1, None)),
                &keep,
            )
            .unwrap();
    }
    let recorded = store.recorded_evidence("e").unwrap().unwrap();
    assert_eq!(recorded.ima_text.as_deref(), Some(expected.as_str()));
    assert_eq!(recorded.boot_log, None, "the last round sent no boot log");
    // A gap (the list does not continue where the recorded one ends): nothing kept.
    store
        .record_round(
            &round("e", 100, true),
            Some(&evidence(90, "x\n", 91, None)),
            &keep,
        )
        .unwrap();
    let recorded = store.recorded_evidence("e").unwrap().unwrap();
    assert_eq!((recorded.ima_text, recorded.snapshot.ima_next), (None, None));
    // A reboot: the list starts over.
    store
        .record_round(
            &round("e", 101, true),
            Some(&evidence(0, "r0\n", 1, Some(boot))),
            &keep,
        )
        .unwrap();
    assert_eq!(
        store.recorded_evidence("e").unwrap().unwrap().ima_text.as_deref(),
        Some("r0\n")
    );
    // The same boot log for two agents is one blob, kept while either names it.
    store
        .record_round(
            &round("f", 1, true),
            Some(&evidence(0, "f0\n", 1, Some(boot))),
            &keep,
        )
        .unwrap();
    assert_eq!(
        store.recorded_evidence("f").unwrap().unwrap().boot_log.as_deref(),
        Some(boot)
    );
    assert_eq!(store.recorded_evidence("missing").unwrap(), None);

    // Push attestations follow the retention: the newest passes and failures stay.
    store
        .enrol(
            &agent("p", "t", "rp", "mp"),
            &[
                (PolicyKind::Runtime, policy("rp")),
                (PolicyKind::MeasuredBoot, policy("mp")),
            ],
            &unlimited(),
        )
        .unwrap();
    for i in 0..8u64 {
        let index = store.add_attestation("t", "p", &attestation(i)).unwrap();
        let mut judged = attestation(i);
        judged.index = index;
        judged.stage = "verification_complete".into();
        judged.evaluation = if i % 2 == 0 { "pass" } else { "fail" }.into();
        store.update_attestation("t", "p", &judged).unwrap();
    }
    store.record_round(&round("p", 1, true), None, &keep).unwrap();
    let kept: Vec<u64> = store
        .attestations("t", "p")
        .unwrap()
        .iter()
        .map(|a| a.index)
        .collect();
    // Passes 0, 2, 4, 6 and failures 1, 3, 5, 7: the newest three passes, two failures.
    assert_eq!(kept, vec![2, 4, 5, 6, 7]);
    // Deleting an agent forgets its history and evidence.
    assert!(VerifierStore::delete_agent(store, "p").unwrap());
    assert!(
        store
            .history(&HistoryQuery {
                agent_id: Some("p".into()),
                limit: 10,
                ..HistoryQuery::default()
            })
            .unwrap()
            .is_empty()
    );
}

/// A replaced policy keeps its old document as a version; a swap only replaces the
/// document it expects; a deleted policy's versions go with it.
fn version_contract(store: &dyn Store) {
    let quota = unlimited();
    let v = |doc: &str| PolicyRecord {
        document: Some(doc.as_bytes().to_vec()),
        checksum: doc.to_owned(),
        ..policy("p")
    };
    assert_eq!(
        store
            .put_policy(PolicyKind::Runtime, "t", &v("one"), true, &quota)
            .unwrap(),
        PolicyWrite::Done
    );
    assert_eq!(
        store
            .put_policy(PolicyKind::Runtime, "t", &v("two"), false, &quota)
            .unwrap(),
        PolicyWrite::Done
    );
    let versions = store.policy_versions(PolicyKind::Runtime, "t", "p").unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.checksum.as_str(), v.replaced_at.is_some()))
            .collect::<Vec<_>>(),
        vec![(2, "two", false), (1, "one", true)]
    );
    let old = store
        .policy_version(PolicyKind::Runtime, "t", "p", 1)
        .unwrap()
        .unwrap();
    assert_eq!(old.document.as_deref(), Some(b"one".as_slice()));
    assert_eq!(
        store.policy_version(PolicyKind::Runtime, "t", "p", 2).unwrap(),
        None,
        "the live one is not an old version"
    );
    assert_eq!(
        store
            .policy_version(PolicyKind::MeasuredBoot, "t", "p", 1)
            .unwrap(),
        None,
        "kinds stay apart"
    );
    // A swap against a stale checksum changes nothing.
    assert_eq!(
        store
            .swap_policy(PolicyKind::Runtime, "t", &v("three"), "one")
            .unwrap(),
        Swap::Changed
    );
    assert_eq!(
        store
            .swap_policy(PolicyKind::Runtime, "t", &v("three"), "two")
            .unwrap(),
        Swap::Done(3)
    );
    assert_eq!(
        store
            .swap_policy(PolicyKind::Runtime, "t", &v("x"), "two")
            .unwrap(),
        Swap::Changed
    );
    assert_eq!(
        store
            .swap_policy(PolicyKind::Runtime, "t", &v("x"), "no such")
            .unwrap(),
        Swap::Changed
    );
    assert_eq!(
        store
            .swap_policy(PolicyKind::Runtime, "other", &v("x"), "two")
            .unwrap(),
        Swap::NotFound
    );
    assert_eq!(
        store
            .policy(PolicyKind::Runtime, "t", "p")
            .unwrap()
            .unwrap()
            .checksum,
        "three"
    );
    assert_eq!(
        store
            .policy_versions(PolicyKind::Runtime, "t", "p")
            .unwrap()
            .len(),
        3
    );
    // Deleted and created again: versions start over.
    assert_eq!(
        store.delete_policy(PolicyKind::Runtime, "t", "p").unwrap(),
        PolicyDelete::Deleted
    );
    assert!(
        store
            .policy_versions(PolicyKind::Runtime, "t", "p")
            .unwrap()
            .is_empty()
    );
    store
        .put_policy(PolicyKind::Runtime, "t", &v("again"), true, &quota)
        .unwrap();
    store
        .put_policy(PolicyKind::Runtime, "t", &v("again2"), false, &quota)
        .unwrap();
    let versions = store.policy_versions(PolicyKind::Runtime, "t", "p").unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(
        store
            .policy_version(PolicyKind::Runtime, "t", "p", 1)
            .unwrap()
            .unwrap()
            .checksum,
        "again"
    );
}

type Case = fn(&dyn Store);

/// Every case, each on a fresh store from `open`.
fn contract(open: &dyn Fn(&str) -> Box<dyn Store>) {
    let cases: [(&str, Case); 8] = [
        ("registrar", registrar_contract),
        ("policies", policy_contract),
        ("enrolment", enrolment_contract),
        ("modules", module_contract),
        ("push", push_contract),
        ("leases", lease_contract),
        ("history", history_contract),
        ("versions", version_contract),
    ];
    for (name, case) in cases {
        eprintln!("store contract: {name}");
        case(open(name).as_ref());
    }
}

#[test]
fn the_sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&|name| Box::new(SqliteStore::open(&dir.path().join(format!("{name}.sqlite"))).unwrap()));
}

#[test]
fn the_postgres_store_keeps_the_contract() {
    let pg = Postgres::start().unwrap();
    contract(&|name| Box::new(PgStore::open(&pg.create_database(name).unwrap()).unwrap()));
}

/// A history the database refuses (here a trigger, standing for a full disk or a bug) is
/// rolled back alone, evidence included: the verdict is still written, and the error is
/// handed back.
fn history_refused_verdict_stands(store: &dyn Store, refuse_history: &dyn Fn()) {
    store
        .put_policy(PolicyKind::Runtime, "t", &policy("r"), true, &unlimited())
        .unwrap();
    store
        .put_policy(PolicyKind::MeasuredBoot, "t", &policy("m"), true, &unlimited())
        .unwrap();
    let mut judged = agent("h1", "t", "r", "m");
    store.enrol(&judged, &[], &unlimited()).unwrap();
    refuse_history();
    judged.attestation_count = 7;
    let saved = store
        .save_round(&judged, state::GET_QUOTE, Some(with_verdict("h1", 1)))
        .unwrap();
    assert!(saved.saved);
    let error = saved.history.unwrap().unwrap_err().to_string();
    assert!(error.contains("history refused"), "{error}");
    assert_eq!(store.agent("h1").unwrap().unwrap().attestation_count, 7);
    assert!(histories(store, "h1").is_empty());
    assert!(
        store.recorded_evidence("h1").unwrap().is_none(),
        "the evidence is rolled back too"
    );
}

#[test]
fn a_history_sqlite_refuses_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refusing.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    history_refused_verdict_stands(&store, &|| {
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON attestation_history
                 BEGIN SELECT RAISE(ABORT, 'history refused'); END;",
            )
            .unwrap();
    });
}

#[test]
fn a_history_postgres_refuses_is_rolled_back_alone() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("refusing").unwrap();
    let store = PgStore::open(&url).unwrap();
    history_refused_verdict_stands(&store, &|| {
        postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .batch_execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN RAISE EXCEPTION 'history refused'; END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON attestation_history
                   FOR EACH ROW EXECUTE FUNCTION refuse();",
            )
            .unwrap();
    });
}

/// Each connection prepares its statements once. When another process changes a table's
/// shape under them (a newer zest's migration), a statement fails once per connection that
/// had prepared it, and is prepared anew: the store does not keep failing.
#[test]
fn a_postgres_store_prepares_anew_after_a_table_changes_shape() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("reshaped").unwrap();
    let store = PgStore::open(&url).unwrap();
    // Prepare the listing on as many of the store's connections as take it.
    for _ in 0..64 {
        assert!(store.list_agents().unwrap().is_empty());
    }
    postgres::Client::connect(&url, postgres::NoTls)
        .unwrap()
        .batch_execute("ALTER TABLE registrar_agents ALTER COLUMN agent_id TYPE varchar(200)")
        .unwrap();
    let mut failures = 0;
    for _ in 0..200 {
        match store.list_agents() {
            Ok(ids) => assert!(ids.is_empty()),
            Err(e) => {
                assert!(e.to_string().contains("0A000"), "{e}");
                failures += 1;
            }
        }
    }
    assert!(
        failures <= 8,
        "{failures} failures: a connection kept its stale statement"
    );
}

/// Two verifiers on one database: quotas hold across them, and an agent's attestations are
/// numbered without a gap or a duplicate.
#[test]
fn stores_sharing_one_postgres_database_keep_quotas_and_numbering() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("shared").unwrap();
    let stores: Vec<Arc<PgStore>> = (0..2).map(|_| Arc::new(PgStore::open(&url).unwrap())).collect();
    let quota = TenantQuota {
        agents: 25,
        ..unlimited()
    };
    stores[0]
        .put_policy(PolicyKind::Runtime, "t", &policy("shared"), true, &quota)
        .unwrap();
    stores[0]
        .put_policy(PolicyKind::MeasuredBoot, "t", &policy("shared"), true, &quota)
        .unwrap();
    let mut pushed = agent("numbered", "t", "shared", "shared");
    pushed.push = true;
    stores[0].enrol(&pushed, &[], &quota).unwrap();
    std::thread::scope(|scope| {
        for (i, store) in stores.iter().enumerate() {
            scope.spawn(move || {
                for n in 0..40 {
                    let id = format!("agent-{i}-{n}");
                    store
                        .enrol(&agent(&id, "t", "shared", "shared"), &[], &quota)
                        .unwrap();
                    store.add_attestation("t", "numbered", &attestation(n)).unwrap();
                }
            });
        }
    });
    assert_eq!(
        stores[1].tenant_usage("t").unwrap().agents,
        25,
        "no verifier went past the quota"
    );
    let indexes: Vec<u64> = stores[1]
        .attestations("t", "numbered")
        .unwrap()
        .iter()
        .map(|a| a.index)
        .collect();
    assert_eq!(indexes, (0..80).collect::<Vec<u64>>());
}

/// A store opened twice migrates once; a schema newer than this zest is refused, not used.
#[test]
fn a_postgres_schema_is_migrated_once_and_a_newer_one_refused() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("schema").unwrap();
    let first = PgStore::open(&url).unwrap();
    first.register(&registration("kept", "ak", 1), 0).unwrap();
    drop(first);
    let again = PgStore::open(&url).unwrap();
    assert_eq!(again.list_agents().unwrap(), ["kept"]);
    drop(again);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute("UPDATE zest_schema SET version = version + 1")
        .unwrap();
    let refused = PgStore::open(&url).err().unwrap().to_string();
    assert!(refused.contains("newer than this zest"), "{refused}");
}
