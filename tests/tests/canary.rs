//! The policy canary over the API: a candidate judged against agents' recorded evidence,
//! beside the live policy, without touching live verdicts; promote swaps it in as the next
//! version (agents switch at their next round) and rollback brings the old one back.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest_tests::process::zest_binary;
use zest_tests::push_agent::PushAgent;
use zest_tests::push_env::{
    admin_get, config, digest, enrol_with, policy_for, push_agent, round, status, verifier_with,
};
use zest_tests::server::{TestVerifier, send_json, tenant_client};
use zest_tests::{AkKind, Swtpm};

const A: &str = "/usr/bin/a";
const B: &str = "/usr/bin/b";
const X: &str = "/usr/bin/x";

fn paths(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

fn upload(list: &[&str]) -> Value {
    json!({"runtime_policy": B64.encode(policy_for(&paths(list)).to_string())})
}

async fn post(verifier: &TestVerifier, path: &str, body: Option<Value>) -> (u16, Value) {
    let admin = verifier.admin_client().unwrap();
    let mut request = admin.post(verifier.url("2.6", path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    send_json(request).await.unwrap()
}

/// Starts a canary and waits for its report.
async fn canary(verifier: &TestVerifier, body: Value) -> Value {
    let (code, started) = post(verifier, "canaries", Some(body)).await;
    assert_eq!(code, 202, "{started}");
    let id = started["results"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, report) = admin_get(verifier, &format!("/v2.6/canaries/{id}")).await;
        assert_eq!(code, 200, "{report}");
        if report["results"]["status"] == "done" {
            return report["results"].clone();
        }
        assert!(Instant::now() < deadline, "the canary did not finish: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent_change(report: &Value, uuid: &str) -> String {
    report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == uuid)
        .map(|a| a["change"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{uuid} not in {report}"))
}

/// `zest --data-dir DATA <group> --verifier HOST:PORT <rest>`: the operator's certificate.
fn zest(verifier: &TestVerifier, args: &[&str], succeeds: bool) -> std::process::Output {
    let at = verifier.https.trim_start_matches("https://").to_owned();
    let (group, rest) = args.split_at(if args[0] == "policy" { 2 } else { 1 });
    let out = std::process::Command::new(zest_binary().unwrap())
        .arg("--data-dir")
        .arg(verifier.data.path())
        .args(group)
        .args(["--verifier", &at])
        .args(rest)
        .output()
        .unwrap();
    assert_eq!(
        out.status.success(),
        succeeds,
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn history_len(verifier: &TestVerifier, uuid: &str) -> usize {
    let (_, page) = admin_get(verifier, &format!("/v2.6/agents/{uuid}/history")).await;
    page["results"]["history"].as_array().unwrap().len()
}

// Several threads: the `zest` command line runs as a blocking child process meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_names_exactly_the_agents_a_candidate_would_fail_and_promote_and_rollback_switch_them() {
    let verifier = verifier_with(config()).await;
    let (code, reply) = post(&verifier, "allowlists/P", Some(upload(&[A, B, X]))).await;
    assert_eq!(code, 201, "{reply}");

    // Four agents on policy P; those measuring X are c1 and c3. c5 never attests.
    let measured: [(&str, &[&str]); 4] = [("c1", &[A, X]), ("c2", &[A, B]), ("c3", &[B, X]), ("c4", &[A])];
    let mut tpms = Vec::new();
    let mut agents: Vec<PushAgent> = Vec::new();
    for (uuid, files) in measured {
        let tpm = Swtpm::start().unwrap();
        let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
        for f in files {
            agent.measure(f, &digest(f)).unwrap();
        }
        enrol_with(
            &verifier,
            &agent.agent,
            "{}",
            None,
            json!({"runtime_policy_name": "P"}),
        )
        .await;
        agent.authenticate().await.unwrap();
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
        agents.push(agent);
        tpms.push(tpm);
    }
    let tpm5 = Swtpm::start().unwrap();
    let silent = push_agent(&verifier, &tpm5, "c5", AkKind::RsaSsa).await;
    enrol_with(
        &verifier,
        &silent.agent,
        "{}",
        None,
        json!({"runtime_policy_name": "P"}),
    )
    .await;
    let rounds_before = history_len(&verifier, "c1").await;

    // The live policy as the candidate: nothing changes.
    let mut same = upload(&[A, B, X]);
    same["policy"] = json!("P");
    let report = canary(&verifier, same).await;
    let summary = &report["summary"];
    assert_eq!(
        (
            summary["changes"].as_u64(),
            summary["unchanged"].as_u64(),
            summary["no_evidence"].as_u64()
        ),
        (Some(0), Some(4), Some(1)),
        "{report}"
    );
    assert_eq!(report["total"], 5);

    // Dropping X: exactly c1 and c3 newly fail, on X.
    let mut without_x = upload(&[A, B]);
    without_x["policy"] = json!("P");
    let report = canary(&verifier, without_x).await;
    let summary = &report["summary"];
    assert_eq!(summary["newly_failing"], 2, "{report}");
    assert_eq!(summary["changes"], 2, "{report}");
    let by_event = summary["by_event"].as_array().unwrap();
    assert_eq!(by_event.len(), 1, "{report}");
    assert_eq!(by_event[0]["event_id"], "ima.validation.ima-ng.not_in_allowlist");
    assert_eq!(by_event[0]["path"], X);
    assert_eq!(by_event[0]["agent_ids"], json!(["c1", "c3"]));
    for (uuid, change) in [
        ("c1", "newly_failing"),
        ("c2", "unchanged"),
        ("c3", "newly_failing"),
        ("c4", "unchanged"),
        ("c5", "no_evidence"),
    ] {
        assert_eq!(agent_change(&report, uuid), change, "{report}");
    }
    let canary_id = report["id"].as_str().unwrap().to_owned();

    // Nothing live moved: statuses, histories and the policy are as they were.
    for uuid in ["c1", "c2", "c3", "c4"] {
        assert_eq!(status(&verifier, uuid).await["attestation_status"], "PASS");
    }
    assert_eq!(history_len(&verifier, "c1").await, rounds_before);
    let (_, versions) = admin_get(&verifier, "/v2.6/allowlists/P/versions").await;
    assert_eq!(
        versions["results"]["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );

    // Promote: P becomes version 2; c1 fails at its next round, c2 still passes.
    let (code, promoted) = post(&verifier, &format!("canaries/{canary_id}/promote"), None).await;
    assert_eq!(code, 200, "{promoted}");
    assert_eq!(promoted["results"]["version"], 2);
    let (code, again) = post(&verifier, &format!("canaries/{canary_id}/promote"), None).await;
    assert_eq!(code, 409, "a canary is promoted once: {again}");
    let (_, _, judged) = round(&verifier, &mut agents[0]).await;
    assert_eq!(judged["evaluation"], "fail");
    assert_eq!(
        judged["failures"][0]["type"],
        "ima.validation.ima-ng.not_in_allowlist"
    );
    assert_eq!(round(&verifier, &mut agents[1]).await.2["evaluation"], "pass");
    let (_, versions) = admin_get(&verifier, "/v2.6/allowlists/P/versions?version=1").await;
    let listed: Vec<u64> = versions["results"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![2, 1], "{versions}");
    let old = B64
        .decode(versions["results"]["document"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&old).unwrap(),
        policy_for(&paths(&[A, B, X]))
    );

    // Rollback: version 1's document becomes version 3; c3 passes again.
    let (code, rolled) = post(&verifier, "allowlists/P/rollback", None).await;
    assert_eq!(code, 200, "{rolled}");
    assert_eq!(
        (
            rolled["results"]["version"].as_u64(),
            rolled["results"]["restored"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_eq!(round(&verifier, &mut agents[2]).await.2["evaluation"], "pass");
    let (code, _) = post(&verifier, "allowlists/P/rollback?version=3", None).await;
    assert_eq!(code, 409, "the live version is no rollback");
    let (code, _) = post(&verifier, "allowlists/P/rollback?version=9", None).await;
    assert_eq!(code, 404);

    // A canary whose policy changes before promotion is refused.
    let mut stale = upload(&[A, B]);
    stale["policy"] = json!("P");
    let report = canary(&verifier, stale).await;
    let admin = verifier.admin_client().unwrap();
    let (code, _) =
        send_json(
            admin
                .put(verifier.url("2.6", "allowlists/P"))
                .json(&upload(&[A, B, X, "/usr/bin/y"])),
        )
        .await
        .unwrap();
    assert_eq!(code, 201);
    let (code, refused) = post(
        &verifier,
        &format!("canaries/{}/promote", report["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(code, 409, "{refused}");
    let (_, versions) = admin_get(&verifier, "/v2.6/allowlists/P/versions").await;
    assert_eq!(
        versions["results"]["versions"][0]["version"], 4,
        "the operator's update, not the canary"
    );

    // A canary of a list of agents runs, but promotes nothing (no policy named).
    let mut listed = upload(&[A]);
    listed["agents"] = json!(["c2", "c4"]);
    let report = canary(&verifier, listed).await;
    assert_eq!(report["total"], 2);
    assert_eq!(agent_change(&report, "c2"), "newly_failing");
    assert_eq!(agent_change(&report, "c4"), "unchanged");
    let (code, _) = post(
        &verifier,
        &format!("canaries/{}/promote", report["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(code, 409);

    // The same through the command line: `zest policy canary`, `versions`, `promote`,
    // `rollback` and `zest tenant history`.
    let file = verifier.data.path().join("candidate.json");
    std::fs::write(&file, policy_for(&paths(&[A, B])).to_string()).unwrap();
    let out = zest(
        &verifier,
        &[
            "policy",
            "canary",
            "-f",
            file.to_str().unwrap(),
            "-n",
            "P",
            "--json",
        ],
        true,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["by_event"][0]["path"], X, "{report}");
    let out = zest(
        &verifier,
        &[
            "policy",
            "canary",
            "-f",
            file.to_str().unwrap(),
            "-n",
            "P",
            "--fail-on-change",
        ],
        false,
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("newly failing 2"), "{printed}");
    assert!(printed.contains("/usr/bin/x: 2 agent(s): c1, c3"), "{printed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("would newly fail"));
    let id = report["id"].as_str().unwrap();
    let out = zest(&verifier, &["policy", "promote", id], true);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is now version 5"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = zest(&verifier, &["policy", "versions", "-n", "P"], true);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert!(listed.lines().next().unwrap().contains("live"), "{listed}");
    let out = zest(
        &verifier,
        &["policy", "rollback", "-n", "P", "--version", "1"],
        true,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 1 restored as version 6"));
    let out = zest(
        &verifier,
        &["tenant", "history", "--uuid", "c1", "--json", "--all"],
        true,
    );
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, vec!["fail", "pass"], "newest first: {history}");
    let out = zest(
        &verifier,
        &["tenant", "history", "--uuid", "c1", "--verdict", "fail"],
        true,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ima.validation.ima-ng.not_in_allowlist"));

    // Bad requests are refused with a reason and start nothing.
    for (body, why) in [
        (json!({"runtime_policy": "not base64!"}), "runtime_policy"),
        (json!({"runtime_policy": B64.encode("{not json")}), "malformatted"),
        (
            json!({"runtime_policy": B64.encode(policy_for(&paths(&[A])).to_string()), "agents": ["ghost"]}),
            "ghost",
        ),
        (
            json!({"runtime_policy": B64.encode(policy_for(&paths(&[A])).to_string()), "policy": "Q"}),
            "not found",
        ),
    ] {
        let (code, reply) = post(&verifier, "canaries", Some(body)).await;
        assert!(code == 400 || code == 404, "{reply}");
        assert!(reply["status"].as_str().unwrap().contains(why), "{why}: {reply}");
    }

    // Another tenant sees none of this tenant's canaries.
    let stranger = tenant_client(&verifier, "stranger");
    let reply = stranger
        .get(verifier.url("2.6", &format!("canaries/{canary_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 404);
    let reply = stranger
        .get(verifier.url("2.6", "canaries"))
        .send()
        .await
        .unwrap();
    let listed: Value = reply.json().await.unwrap();
    assert_eq!(listed["results"]["canaries"], json!([]), "{listed}");
    let reply = stranger
        .post(verifier.url("2.6", &format!("canaries/{canary_id}/promote")))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 404);
    drop(tpms);
}
