//! Push mode (API 3.0) against a hostile agent and an operator acting meanwhile: a stopped
//! agent is refused until reactivated, a deleted agent's token and attestations are gone
//! for good, failures reach the revocation webhook, and a runtime policy for an uploaded
//! component is judged whatever its document says about itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use zest_tests::policies::test_component;
use zest_tests::pull_env::webhook_sink;
use zest_tests::push_env::{
    admin_get, config, detail, digest, enrol, enrol_with, policy_for, push_agent, round, status,
    upload_module, verifier_with,
};
use zest_tests::server::send_json;
use zest_tests::{AkKind, Swtpm};

#[tokio::test]
async fn a_stopped_agent_is_refused_capabilities_and_evidence_until_reactivated() {
    let verifier = verifier_with(config()).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "push-stopped";
    let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;
    agent.authenticate().await.unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");

    // Capabilities accepted before the stop; the evidence comes after it.
    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let url = format!("{}{}", verifier.https, location.unwrap());
    let evidence = agent
        .evidence(&created["data"]["attributes"]["evidence_requested"], None)
        .unwrap();
    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(admin.put(verifier.url("2.6", &format!("agents/{uuid}/stop"))))
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    let s = status(&verifier, uuid).await;
    assert_eq!(s["operational_state"], 10, "Tenant Quote Failed: {s}");

    // The agent keeps its token, but neither its evidence nor new capabilities are taken.
    let (code, reply) = agent.submit(&url, &evidence).await.unwrap();
    assert_eq!(code, 403, "{reply}");
    assert!(detail(&reply).starts_with("agent_stopped"), "{reply}");
    let (code, _, reply) = agent.offer().await.unwrap();
    assert_eq!(code, 403, "{reply}");
    assert!(detail(&reply).starts_with("agent_stopped"), "{reply}");
    let (_, latest) = admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations/latest")).await;
    assert_eq!(
        latest["data"]["attributes"]["stage"], "awaiting_evidence",
        "nothing was judged while stopped: {latest}"
    );
    assert_eq!(status(&verifier, uuid).await["attestation_count"], 1);

    // Reactivated, it attests again.
    let (code, reply) = send_json(admin.put(verifier.url("2.6", &format!("agents/{uuid}/reactivate"))))
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    let (index, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(
        (index, judged["evaluation"].as_str()),
        (2, Some("pass")),
        "{judged}"
    );
    let s = status(&verifier, uuid).await;
    assert_eq!(
        (
            s["attestation_status"].as_str(),
            s["operational_state"].as_u64(),
            s["attestation_count"].as_u64()
        ),
        (Some("PASS"), Some(3), Some(2)),
        "{s}"
    );
}

#[tokio::test]
async fn a_deleted_agent_loses_its_token_and_attestations_and_must_authenticate_again() {
    let verifier = verifier_with(config()).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "push-deleted";
    let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;
    agent.authenticate().await.unwrap();
    // Two rounds: the verifier has checked the token and remembers it.
    for _ in 0..2 {
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    }
    let old_token = agent.token.clone();

    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(admin.delete(verifier.url("2.6", &format!("agents/{uuid}"))))
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    let (code, _, reply) = agent.offer().await.unwrap();
    assert_eq!(code, 401, "the deleted agent's token is refused at once: {reply}");
    let (code, reply) = admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations")).await;
    assert_eq!(code, 404, "{reply}");
    let db = rusqlite::Connection::open(verifier.data.path().join("zest.sqlite")).unwrap();
    let sessions: i64 = db
        .query_row(
            "SELECT count(*) FROM push_sessions WHERE agent_id = ?1",
            [uuid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sessions, 0, "the deleted agent's session is gone from the store");

    // Enrolled again under the same id: no history, and the old token opens nothing.
    enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;
    let (code, list) = admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations")).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["data"], json!([]), "the old attestations are gone: {list}");
    let (code, reply) = admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations/latest")).await;
    assert_eq!(code, 404, "{reply}");
    assert_eq!(agent.token, old_token);
    let (code, _, reply) = agent.offer().await.unwrap();
    assert_eq!(
        code, 401,
        "a session of the deleted enrolment does not carry over: {reply}"
    );

    // A new session, and history starts over.
    agent.authenticate().await.unwrap();
    assert_ne!(agent.token, old_token);
    let (index, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(
        (index, judged["evaluation"].as_str()),
        (0, Some("pass")),
        "{judged}"
    );
    let (_, list) = admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations")).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    let s = status(&verifier, uuid).await;
    assert_eq!(
        (s["attestation_status"].as_str(), s["attestation_count"].as_u64()),
        (Some("PASS"), Some(1)),
        "{s}"
    );
}

/// Waits until the webhook has received messages that satisfy `done`; returns them all.
async fn webhook_messages(
    seen: &Arc<Mutex<Vec<Value>>>,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + zest_tests::wait_limit();
    loop {
        let messages = seen.lock().unwrap().clone();
        if done(messages.as_slice()) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} at the webhook; it has {messages:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `msg` of a revocation message: JSON text.
fn msg(message: &Value) -> Value {
    let text = message["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("msg is not text: {message}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("msg is not JSON ({e}): {text}"))
}

#[tokio::test]
async fn push_failures_are_sent_to_the_revocation_webhook_once_per_rise_in_severity() {
    let (url, seen) = webhook_sink().await;
    let mut cfg = config();
    cfg.revocation_webhook = Some(url);
    let verifier = verifier_with(cfg).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "push-webhook";
    let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    let mut paths = vec!["/usr/bin/ok".to_string()];
    agent.measure(&paths[0], &digest(&paths[0])).unwrap();
    enrol(&verifier, &agent.agent, "{}", Some(&policy_for(&paths))).await;
    agent.authenticate().await.unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");

    // A file outside the policy: one revocation message, in Keylime's shape.
    agent.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(judged["evaluation"], "fail", "{judged}");
    let messages = webhook_messages(&seen, "the first failure", |m| !m.is_empty()).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let first = msg(&messages[0]);
    assert_eq!(first["type"], "revocation", "{first}");
    assert_eq!(
        first["event_id"], "ima.validation.ima-ng.not_in_allowlist",
        "{first}"
    );
    assert_eq!(first["agent_id"], uuid, "{first}");
    assert_eq!(first["severity_label"], "emergency", "{first}");
    assert!(
        first["context"].as_str().is_some_and(|c| c.contains("/tmp/evil")),
        "{first}"
    );
    assert_eq!(
        messages[0]["signature"], "",
        "no revocation key was enrolled: {}",
        messages[0]
    );

    // The same failure again: the severity did not rise, so nobody is told again.
    agent.measure("/tmp/evil2", &digest("/tmp/evil2")).unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "fail");

    // Reactivated with a policy that lists both files, a new file outside it is news again.
    paths.extend(["/tmp/evil".to_string(), "/tmp/evil2".to_string()]);
    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(
        admin
            .put(verifier.url("2.6", &format!("allowlists/{uuid}")))
            .json(&json!({"runtime_policy": B64.encode(policy_for(&paths).to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");
    let (code, reply) = send_json(admin.put(verifier.url("2.6", &format!("agents/{uuid}/reactivate"))))
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    agent.measure("/tmp/evil3", &digest("/tmp/evil3")).unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "fail");
    let names_evil3 = |m: &Value| {
        msg(m)["context"]
            .as_str()
            .is_some_and(|c| c.contains("/tmp/evil3"))
    };
    let messages = webhook_messages(&seen, "the failure after reactivation", |m| {
        m.iter().any(names_evil3)
    })
    .await;
    assert_eq!(
        messages.len(),
        2,
        "one message per rise, none for the repeated failure: {messages:?}"
    );
    let second = msg(&messages[1]);
    assert_eq!(
        (second["type"].as_str(), second["event_id"].as_str()),
        (Some("revocation"), Some("ima.validation.ima-ng.not_in_allowlist")),
        "{second}"
    );
}

#[tokio::test]
async fn a_runtime_policy_for_an_uploaded_component_is_judged_without_a_generator() {
    let verifier = verifier_with(config()).await;
    // A runtime component that accepts every entry: what is judged here is that the verifier
    // asks for PCR 10 and the list, and replays the one against the other.
    let module = upload_module(&verifier, "runtime", test_component("wrong_world")).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "push-no-generator";
    let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    agent
        .measure("/usr/bin/first", &digest("/usr/bin/first"))
        .unwrap();
    // No meta.generator: Keylime's mark of a policy to judge is absent.
    let document = json!({"meta": {"version": 1}, "purpose": "judged by an uploaded component"});
    enrol_with(
        &verifier,
        &agent.agent,
        r#"{"mask": "0x1"}"#,
        Some(&document),
        json!({"module": module}),
    )
    .await;
    agent.authenticate().await.unwrap();

    // The verifier asks for PCR 10 and the IMA list from its start.
    let (code, _, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let requested = created["data"]["attributes"]["evidence_requested"]
        .as_array()
        .unwrap()
        .clone();
    let quote = requested
        .iter()
        .find(|e| e["evidence_type"] == "tpm_quote")
        .unwrap_or_else(|| panic!("no quote requested: {created}"));
    let bank = quote["chosen_parameters"]["hash_algorithm"].as_str().unwrap();
    assert!(
        quote["chosen_parameters"]["selected_subjects"][bank]
            .as_array()
            .is_some_and(|pcrs| pcrs.contains(&json!(10))),
        "PCR 10 is not asked for: {created}"
    );
    let ima = requested
        .iter()
        .find(|e| e["evidence_type"] == "ima_log")
        .unwrap_or_else(|| panic!("no IMA list asked for: {created}"));
    assert_eq!(ima["chosen_parameters"]["starting_offset"], 0, "{created}");

    // Its evidence is judged: an honest list passes (a new offer supersedes the one above).
    let (_, offset, judged) = round(&verifier, &mut agent).await;
    assert_eq!(offset, Some(0));
    assert_eq!(judged["evaluation"], "pass", "{judged}");

    // A measurement the agent hides from its list: the list no longer replays to PCR 10.
    agent
        .agent
        .pcr_extend(
            10,
            &[
                (HashingAlgorithm::Sha256, vec![0x5a; 32]),
                (HashingAlgorithm::Sha1, vec![0x5a; 20]),
            ],
        )
        .unwrap();
    agent
        .measure("/usr/bin/after", &digest("/usr/bin/after"))
        .unwrap();
    let (_, offset, judged) = round(&verifier, &mut agent).await;
    assert_eq!(offset, Some(1), "the list is asked for incrementally");
    assert_eq!(
        (judged["evaluation"].as_str(), judged["failure_reason"].as_str()),
        (Some("fail"), Some("broken_evidence_chain")),
        "{judged}"
    );
    assert!(
        judged["failures"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["type"] == "ima.pcr_mismatch")),
        "{judged}"
    );
    assert_eq!(status(&verifier, uuid).await["attestation_status"], "FAIL");
}
