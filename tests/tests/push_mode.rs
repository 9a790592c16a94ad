//! Push mode end to end (API 3.0): swtpm-backed agents authenticate, offer capabilities,
//! submit quotes and IMA entries; the verifier judges asynchronously and shows the verdict
//! in its agent status and attestation records.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::verifier::Mode;
use zest_tests::push_env::{
    admin_get, config, digest, enrol, policy_for, push_agent, round, status, verdict, verifier_with,
};
use zest_tests::server::send_json;
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

#[tokio::test]
async fn agents_pass_round_after_round_then_fail_on_tampered_ima_and_replays_are_refused() {
    let verifier = verifier_with(config()).await;
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, "push-agent-1", AkKind::RsaSsa).await;
    let paths: Vec<String> = (0..8).map(|i| format!("/usr/bin/tool-{i}")).collect();
    for p in &paths[..3] {
        agent.measure(p, &digest(p)).unwrap();
    }
    enrol(&verifier, &agent.agent, "{}", Some(&policy_for(&paths))).await;
    assert_eq!(
        status(&verifier, "push-agent-1").await["attestation_status"],
        "PENDING"
    );

    // Without a token: 401, in JSON:API errors.
    let (code, _, body) = agent.offer().await.unwrap();
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["errors"][0]["status"], "401");
    agent.authenticate().await.unwrap();

    let mut offsets = Vec::new();
    for (i, p) in paths[3..].iter().enumerate() {
        let (index, offset, judged) = round(&verifier, &mut agent).await;
        assert_eq!(index, i as u64);
        assert_eq!(judged["evaluation"], "pass", "{judged}");
        offsets.push(offset.unwrap());
        agent.measure(p, &digest(p)).unwrap();
    }
    assert_eq!(offsets, [0, 3, 4, 5, 6], "IMA is asked for incrementally");
    let s = status(&verifier, "push-agent-1").await;
    assert_eq!(
        (s["attestation_status"].as_str(), s["attestation_count"].as_u64()),
        (Some("PASS"), Some(5)),
        "{s}"
    );
    assert_eq!(s["operational_state"], 3);

    // Evidence for an attestation is taken once; a superseded one is closed.
    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let url = format!("{}{}", verifier.https, location.unwrap());
    let evidence = agent
        .evidence(&created["data"]["attributes"]["evidence_requested"], None)
        .unwrap();
    let (code, _) = agent.submit(&url, &evidence).await.unwrap();
    assert_eq!(code, 202);
    let (code, reply) = agent.submit(&url, &evidence).await.unwrap();
    assert_eq!(code, 403, "{reply}");
    assert!(
        reply["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("evidence_immutable")
    );
    let old_index: u64 = url.rsplit('/').next().unwrap().parse().unwrap();
    verdict(&verifier, "push-agent-1", old_index).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let old_challenge = B64
        .decode(
            created["data"]["attributes"]["evidence_requested"][0]["chosen_parameters"]["challenge"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201);
    let (code, reply) = agent.submit(&url, &evidence).await.unwrap();
    assert_eq!(code, 403, "{reply}");
    assert!(
        reply["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("old_attestation")
    );

    // A quote over the previous challenge: accepted for judging, judged broken.
    let replayed = agent
        .evidence(
            &created["data"]["attributes"]["evidence_requested"],
            Some(&old_challenge),
        )
        .unwrap();
    let location = location.unwrap();
    let (code, _) = agent
        .submit(&format!("{}{location}", verifier.https), &replayed)
        .await
        .unwrap();
    assert_eq!(code, 202);
    let index: u64 = location.rsplit('/').next().unwrap().parse().unwrap();
    let judged = verdict(&verifier, "push-agent-1", index).await;
    assert_eq!(
        (judged["evaluation"].as_str(), judged["failure_reason"].as_str()),
        (Some("fail"), Some("broken_evidence_chain")),
        "{judged}"
    );
    assert_eq!(
        status(&verifier, "push-agent-1").await["attestation_status"],
        "FAIL"
    );
}

#[tokio::test]
async fn a_file_outside_the_policy_fails_the_agent_until_it_is_reactivated() {
    let verifier = verifier_with(config()).await;
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, "push-agent-2", AkKind::RsaSsa).await;
    let paths = vec!["/usr/bin/ok".to_string()];
    agent.measure(&paths[0], &digest(&paths[0])).unwrap();
    enrol(&verifier, &agent.agent, "{}", Some(&policy_for(&paths))).await;
    agent.authenticate().await.unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    agent.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(
        (judged["evaluation"].as_str(), judged["failure_reason"].as_str()),
        (Some("fail"), Some("policy_violation"))
    );
    assert_eq!(
        judged["failures"][0]["type"], "ima.validation.ima-ng.not_in_allowlist",
        "{judged}"
    );
    let s = status(&verifier, "push-agent-2").await;
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    assert_eq!(s["last_event_id"], "ima.validation.ima-ng.not_in_allowlist");

    // Reactivation clears the failure; the agent shows PENDING until a round passes. The
    // policy now lists the file, so the next round (a full replay) passes.
    let admin = verifier.admin_client().unwrap();
    let allow = |extra: &[&str]| {
        let mut policy = policy_for(&paths);
        for p in extra {
            policy["digests"][*p] = json!([hex::encode(digest(p))]);
        }
        json!({"runtime_policy": B64.encode(policy.to_string())})
    };
    let (code, reply) = send_json(
        admin
            .put(verifier.url("2.6", "allowlists/push-agent-2"))
            .json(&allow(&["/tmp/evil"])),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");
    let (code, _) = send_json(admin.put(verifier.url("2.6", "agents/push-agent-2/reactivate")))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let s = status(&verifier, "push-agent-2").await;
    assert_eq!(
        (s["attestation_status"].as_str(), s["operational_state"].as_u64()),
        (Some("PENDING"), Some(3)),
        "{s}"
    );
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    assert_eq!(
        status(&verifier, "push-agent-2").await["attestation_status"],
        "PASS"
    );

    // Without reactivation a later pass does not clear a failure (Keylime's
    // auto_recover_attestation_failures is off).
    agent.measure("/tmp/evil2", &digest("/tmp/evil2")).unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "fail");
    let (code, _) = send_json(
        admin
            .put(verifier.url("2.6", "allowlists/push-agent-2"))
            .json(&allow(&["/tmp/evil", "/tmp/evil2"])),
    )
    .await
    .unwrap();
    assert_eq!(code, 201);
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    assert_eq!(
        status(&verifier, "push-agent-2").await["attestation_status"],
        "FAIL"
    );

    // Every verdict is counted, with its latency and the failures' event ids.
    let metrics = zest_tests::server::metrics_page(&admin, &verifier.https)
        .await
        .unwrap();
    for line in [
        "zest_verifier_attestations_total{mode=\"push\",result=\"pass\"} 3\n",
        "zest_verifier_attestations_total{mode=\"push\",result=\"fail\"} 2\n",
        "zest_verifier_attestation_failures_total{mode=\"push\",event_id=\"ima.validation.ima-ng.not_in_allowlist\"} 2\n",
        "zest_verifier_attestation_duration_seconds_count{mode=\"push\"} 5\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_and_the_agent_authenticates_again() {
    let mut cfg = config();
    cfg.session_lifetime = Duration::from_secs(1);
    let verifier = verifier_with(cfg).await;
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, "push-agent-3", AkKind::RsaSsa).await;
    enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;
    agent.authenticate().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, _, body) = agent.offer().await.unwrap();
    assert_eq!(code, 401, "{body}");
    agent.authenticate().await.unwrap();
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    // Passing rounds extend the token: rounds for longer than its lifetime keep working.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    }
    // A forged token for a real session id is refused too.
    let forged = format!(
        "{}.{}",
        agent.token.as_ref().unwrap().split_once('.').unwrap().0,
        "A".repeat(43)
    );
    agent.token = Some(forged);
    assert_eq!(agent.offer().await.unwrap().0, 401);
}

#[tokio::test]
async fn rounds_inside_the_quote_interval_wait_and_short_ima_logs_are_refused() {
    let mut cfg = config();
    cfg.quote_interval = 3.0;
    let verifier = verifier_with(cfg).await;
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, "push-agent-7", AkKind::RsaSsa).await;
    let paths = vec!["/usr/bin/a".to_string(), "/usr/bin/b".to_string()];
    for p in &paths {
        agent.measure(p, &digest(p)).unwrap();
    }
    enrol(&verifier, &agent.agent, "{}", Some(&policy_for(&paths))).await;
    agent.authenticate().await.unwrap();
    let r = agent.attest().await.unwrap();
    let (code, reply) = r.submitted.unwrap();
    assert_eq!(code, 202);
    assert_eq!(reply["meta"]["seconds_to_next_attestation"], 3);
    verdict(&verifier, "push-agent-7", 0).await;
    let response = agent.offer().await.unwrap();
    assert_eq!(response.0, 429, "{}", response.2);
    tokio::time::sleep(Duration::from_millis(3100)).await;

    // An IMA log shorter than the agent offered is refused, and nothing is judged.
    agent.measure("/usr/bin/c", &digest("/usr/bin/c")).unwrap();
    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let mut evidence = agent
        .evidence(&created["data"]["attributes"]["evidence_requested"], None)
        .unwrap();
    let collected = evidence["data"]["attributes"]["evidence_collected"]
        .as_array_mut()
        .unwrap();
    let ima = collected
        .iter_mut()
        .find(|e| e["evidence_type"] == "ima_log")
        .unwrap();
    ima["data"]["entries"] = json!("");
    let (code, reply) = agent
        .submit(&format!("{}{}", verifier.https, location.unwrap()), &evidence)
        .await
        .unwrap();
    assert_eq!(code, 422, "{reply}");
    assert!(
        reply["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("at least"),
        "{reply}"
    );
    let (_, latest) = admin_get(&verifier, "/v3.0/agents/push-agent-7/attestations/latest").await;
    assert_eq!(latest["data"]["attributes"]["stage"], "awaiting_evidence");
}

#[tokio::test]
async fn a_silent_agent_times_out_and_recovers_by_attesting() {
    let verifier = verifier_with(config()).await;
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, "push-agent-4", AkKind::EcDsaP256).await;
    enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;
    agent.authenticate().await.unwrap();
    assert_eq!(
        round(&verifier, &mut agent).await.2["evaluation"],
        "pass",
        "an ECC AK attests"
    );
    assert_eq!(
        status(&verifier, "push-agent-4").await["attestation_status"],
        "PASS"
    );
    // stale_after: max(5 × quote_interval, 10 s).
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    assert_eq!(
        status(&verifier, "push-agent-4").await["attestation_status"],
        "TIMEOUT"
    );
    assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    assert_eq!(
        status(&verifier, "push-agent-4").await["attestation_status"],
        "PASS"
    );
}

#[tokio::test]
async fn hundreds_of_records_are_listed_and_agents_never_see_each_other() {
    let mut cfg = config();
    cfg.quote_interval = 0.0;
    // Every record is kept (the retention's own test is tests/history.rs).
    cfg.history_retention.keep_passes = 1000;
    let verifier = verifier_with(cfg).await;
    let (tpm_a, tpm_b) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let mut a = push_agent(&verifier, &tpm_a, "push-agent-5", AkKind::RsaSsa).await;
    let mut b = push_agent(&verifier, &tpm_b, "push-agent-6", AkKind::RsaSsa).await;
    enrol(&verifier, &a.agent, r#"{"mask": "0x1"}"#, None).await;
    enrol(&verifier, &b.agent, r#"{"mask": "0x1"}"#, None).await;
    a.authenticate().await.unwrap();
    b.authenticate().await.unwrap();
    const ROUNDS: u64 = 200;
    for i in 0..ROUNDS {
        let r = a.attest().await.unwrap();
        assert_eq!(r.created.0, 201, "{}", r.created.1);
        assert_eq!(r.submitted.unwrap().0, 202);
        verdict(&verifier, "push-agent-5", i).await;
    }
    let (code, list) = admin_get(&verifier, "/v3.0/agents/push-agent-5/attestations").await;
    assert_eq!(code, 200);
    let records = list["data"].as_array().unwrap();
    assert_eq!(records.len() as u64, ROUNDS);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["id"], i.to_string());
        assert_eq!(r["attributes"]["evaluation"], "pass");
        assert_eq!(
            r["links"]["self"],
            format!("/v3.0/agents/push-agent-5/attestations/{i}")
        );
    }
    let (_, latest) = admin_get(&verifier, "/v3/agents/push-agent-5/attestations/latest").await;
    assert_eq!(latest["data"]["id"], (ROUNDS - 1).to_string());

    // B's token does not open A's attestations; B sees none of A's records.
    let token_b = b.token.clone();
    a.token = token_b;
    assert_eq!(a.offer().await.unwrap().0, 403);
    let (_, list_b) = admin_get(&verifier, "/v3.0/agents/push-agent-6/attestations").await;
    assert_eq!(list_b["data"], json!([]));
    // Agents cannot read records: that is the admin's (mTLS) view.
    let anonymous = verifier.anonymous_client().unwrap();
    let (code, _) = send_json(anonymous.get(format!(
        "{}/v3.0/agents/push-agent-6/attestations",
        verifier.https
    )))
    .await
    .unwrap();
    assert_eq!(code, 403);
    // Wrong content type.
    let (code, _) = send_json(
        anonymous
            .post(format!(
                "{}/v3.0/agents/push-agent-6/attestations",
                verifier.https
            ))
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await
    .unwrap();
    assert_eq!(code, 415);
}

#[tokio::test]
async fn one_verifier_serves_pull_and_push_agents_side_by_side() {
    let mut cfg = config();
    cfg.mode = Mode::Both;
    let verifier = verifier_with(cfg).await;
    let (tpm_pull, tpm_push) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let pulled = TestAgent::new(&tpm_pull, "both-pull", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let ak = pulled.aik_tpm.clone();
    let pubkey = String::from_utf8(zest_tests::fixture("keylime/test/data/ima_keys/rsa2048pub.pem")).unwrap();
    let pulled = zest_tests::pull_agent::PullAgent::start(
        pulled,
        pubkey,
        &verifier.data.path().join("cv_ca/cacert.crt"),
    )
    .await
    .unwrap();
    let admin = verifier.admin_client().unwrap();
    let body = json!({
        "v": null, "cloudagent_ip": "127.0.0.1", "cloudagent_port": pulled.addr.port(),
        "tpm_policy": r#"{"mask": "0x1"}"#, "runtime_policy": "", "runtime_policy_name": null,
        "mb_policy": null, "mb_policy_name": "", "ima_sign_verification_keys": "", "metadata": "{}",
        "revocation_key": "", "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(ak), "mtls_cert": pulled.cert_pem,
        "supported_version": "2.6",
    });
    let (code, reply) = send_json(admin.post(verifier.url("2.6", "agents/both-pull")).json(&body))
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    let mut pushed = push_agent(&verifier, &tpm_push, "both-push", AkKind::RsaSsa).await;
    enrol(&verifier, &pushed.agent, r#"{"mask": "0x1"}"#, None).await;
    pushed.authenticate().await.unwrap();
    assert_eq!(round(&verifier, &mut pushed).await.2["evaluation"], "pass");

    let deadline = Instant::now() + zest_tests::wait_limit();
    loop {
        let s = status(&verifier, "both-pull").await;
        if s["attestation_count"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(s["attestation_status"], "PASS");
            assert_eq!(s["ip"], "127.0.0.1");
            break;
        }
        assert!(Instant::now() < deadline, "the pull agent was not attested: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status(&verifier, "both-push").await;
    assert_eq!(
        (s["attestation_status"].as_str(), &s["ip"]),
        (Some("PASS"), &Value::Null),
        "{s}"
    );
    // The push agent is never polled, and the pull agent cannot open push sessions.
    assert!(pulled.requested_offsets().len() >= 2);
    let mut impostor = push_agent(&verifier, &tpm_pull, "both-pull", AkKind::RsaSsa).await;
    assert!(
        impostor.authenticate().await.is_err(),
        "a pull agent has no push session"
    );
}
