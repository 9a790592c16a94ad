//! Attestation history over the API: every judged round of a push agent is recorded with
//! its verdict, failures, quote digest, IMA range and judging policy; retention keeps the
//! newest passes and failures (push attestation records too); pages, time ranges and verdict
//! filters work; the durable file log keeps every round, and a changed line is found.

use serde_json::Value;
use zest::store::durable;
use zest::store::history::Retention;
use zest_tests::push_env::{admin_get, config, digest, enrol, policy_for, push_agent, round, verifier_with};
use zest_tests::{AkKind, Swtpm};

async fn history(verifier: &zest_tests::server::TestVerifier, uuid: &str, query: &str) -> (u16, Value) {
    admin_get(verifier, &format!("/v2.6/agents/{uuid}/history{query}")).await
}

fn times(page: &Value) -> Vec<f64> {
    page["results"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn rounds_are_recorded_kept_as_the_retention_says_and_paged() {
    let durable_dir = tempfile::tempdir().unwrap();
    let mut settings = config();
    settings.history_retention = Retention {
        keep_passes: 3,
        keep_failures: 2,
    };
    settings.durable_dir = Some(durable_dir.path().to_path_buf());
    let verifier = verifier_with(settings).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "history-agent";
    let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    let paths: Vec<String> = (0..6).map(|i| format!("/usr/bin/h{i}")).collect();
    agent.measure(&paths[0], &digest(&paths[0])).unwrap();
    let policy = policy_for(&paths);
    enrol(&verifier, &agent.agent, "{}", Some(&policy)).await;
    agent.authenticate().await.unwrap();

    // Five passing rounds, each measuring one more file.
    for p in &paths[1..] {
        agent.measure(p, &digest(p)).unwrap();
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
    }
    let (code, page) = history(&verifier, uuid, "").await;
    assert_eq!(code, 200, "{page}");
    let rounds = page["results"]["history"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "only the newest 3 passes are kept: {page}");
    let newest = &rounds[0];
    assert_eq!(newest["verdict"], "pass");
    assert_eq!(newest["mode"], "push");
    assert_eq!(newest["quote_digest"].as_str().unwrap().len(), 64, "{newest}");
    // The last round judged the sixth file, entry 5: [5, 6).
    assert_eq!(newest["ima_entries"], serde_json::json!([5, 6]), "{newest}");
    assert_eq!(newest["runtime_policy"]["name"], uuid);
    assert_eq!(newest["runtime_policy"]["module"], "builtin:keylime-runtime");
    assert_eq!(newest["runtime_policy"]["checksum"].as_str().unwrap().len(), 64);
    let t = times(&page);
    assert!(t.windows(2).all(|w| w[0] >= w[1]), "newest first: {t:?}");

    // Two failing rounds, then three more: failures are kept by their own count.
    for i in 0..3 {
        let evil = format!("/tmp/evil{i}");
        agent.measure(&evil, &digest(&evil)).unwrap();
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "fail");
    }
    let (_, failed) = history(&verifier, uuid, "?verdict=fail").await;
    let failed = failed["results"]["history"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 2, "the newest 2 failures: {failed:?}");
    assert_eq!(
        failed[0]["failures"][0]["type"],
        "ima.validation.ima-ng.not_in_allowlist"
    );
    assert!(failed.iter().all(|e| e["verdict"] == "fail"));
    let (_, passed) = history(&verifier, uuid, "?verdict=pass").await;
    assert_eq!(passed["results"]["history"].as_array().unwrap().len(), 3);

    // Push attestation records follow the same retention: 3 passes and 2 failures.
    let (code, listed) = admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations")).await;
    assert_eq!(code, 200, "{listed}");
    let evaluations: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attributes"]["evaluation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        (
            evaluations.iter().filter(|e| *e == "pass").count(),
            evaluations.iter().filter(|e| *e == "fail").count()
        ),
        (3, 2),
        "{evaluations:?}"
    );

    // Pages of 2: the cursor walks back through all 5 rounds kept, without repeats.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (code, page) = history(&verifier, uuid, &query).await;
        assert_eq!(code, 200, "{page}");
        let ids: Vec<u64> = page["results"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["results"]["next"].as_u64() {
            Some(next) => query = format!("?limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");

    // Time ranges: `since` the newest round's time is one round, `until` it the others.
    let (_, all) = history(&verifier, uuid, "").await;
    let t = times(&all);
    let (_, since) = history(&verifier, uuid, &format!("?since={}", t[0])).await;
    assert_eq!(times(&since).len(), 1);
    let (_, until) = history(&verifier, uuid, &format!("?until={}", t[0])).await;
    assert_eq!(times(&until).len(), t.len() - 1);

    // Bad queries get a clear 400; an unknown agent 404.
    for bad in [
        "?verdict=maybe",
        "?limit=0",
        "?limit=5000",
        "?since=-1",
        "?colour=red",
    ] {
        let (code, reply) = history(&verifier, uuid, bad).await;
        assert_eq!(code, 400, "{bad}: {reply}");
    }
    assert_eq!(history(&verifier, "nobody", "").await.0, 404);

    // The durable log kept all 8 rounds, oldest first, chained; a rewritten verdict is found.
    let log = durable_dir.path().join(durable::LOG_FILE);
    let (count, _) = durable::verify(&log).unwrap();
    assert_eq!(count, 8);
    let text = std::fs::read_to_string(&log).unwrap();
    let forged = text.replacen("\"passed\":false", "\"passed\":true", 1);
    assert_ne!(forged, text);
    std::fs::write(&log, forged).unwrap();
    assert!(durable::verify(&log).is_err());
}
