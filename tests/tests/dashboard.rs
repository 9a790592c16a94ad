//! The read-only dashboard, loaded in headless Chromium against a running verifier with
//! push agents that pass and fail and a canary: each page shows the right content, and a
//! screenshot of each is kept (target/test-artifacts). Without a client certificate the
//! pages are refused; a tenant's certificate shows that tenant's agents only.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use zest_tests::chromium::{Browser, artifact_dir, forward};
use zest_tests::push_env::{
    admin_get, config, digest, enrol_with, policy_for, push_agent, round, verifier_with,
};
use zest_tests::server::{send_json, tenant_client};
use zest_tests::{AkKind, Swtpm};

/// The text of the element with `id` (its tags stripped), from a DOM dump.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[start..];
    let end = rest
        .find("</table>")
        .or_else(|| rest.find("</div>"))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Rows of a table section as lists of cell texts.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = &cell[cell.find('>').unwrap() + 1..];
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in inner.split("</td>").next().unwrap().chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text
                })
                .collect()
        })
        .filter(|cells: &Vec<String>| !cells.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_agents_failures_a_timeline_and_a_canary_in_chromium() {
    let browser = Browser::find().unwrap();
    let verifier = verifier_with(config()).await;
    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(
        admin
            .post(verifier.url("2.6", "allowlists/web"))
            .json(&json!({"runtime_policy": B64.encode(policy_for(&["/usr/bin/a".into(), "/usr/bin/b".into()]).to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");

    // d-ok-1 and d-ok-2 pass twice; d-bad passes, then measures a file outside the policy.
    let mut tpms = Vec::new();
    for (uuid, bad) in [("d-ok-1", false), ("d-ok-2", false), ("d-bad", true)] {
        let tpm = Swtpm::start().unwrap();
        let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
        agent.measure("/usr/bin/a", &digest("/usr/bin/a")).unwrap();
        enrol_with(
            &verifier,
            &agent.agent,
            "{}",
            None,
            json!({"runtime_policy_name": "web"}),
        )
        .await;
        agent.authenticate().await.unwrap();
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], "pass");
        if bad {
            agent.measure("/tmp/implant", &digest("/tmp/implant")).unwrap();
        } else {
            agent.measure("/usr/bin/b", &digest("/usr/bin/b")).unwrap();
        }
        let expected = if bad { "fail" } else { "pass" };
        assert_eq!(round(&verifier, &mut agent).await.2["evaluation"], expected);
        tpms.push(tpm);
    }
    // A canary dropping /usr/bin/b: the two good agents would newly fail.
    let (code, started) = send_json(admin.post(verifier.url("2.6", "canaries")).json(&json!({
        "runtime_policy": B64.encode(policy_for(&["/usr/bin/a".into()]).to_string()),
        "policy": "web",
    })))
    .await
    .unwrap();
    assert_eq!(code, 202, "{started}");
    let canary = started["results"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin_get(&verifier, &format!("/v2.6/canaries/{canary}")).await.1["results"]["status"] != "done" {
        assert!(Instant::now() < deadline, "the canary did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The pages need a client certificate: a client without one is refused.
    let anonymous = verifier.anonymous_client().unwrap();
    let refused = anonymous
        .get(format!("{}/dashboard", verifier.https))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());

    let (addr, _relay) = forward(admin, verifier.https.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let shots = artifact_dir().unwrap();

    // Overview: agents by state, the agents, recent failures by event id, the canary.
    let dom = browser.dom(&format!("{base}/dashboard")).await.unwrap();
    let states = rows(section(&dom, "states"));
    assert!(
        states.contains(&vec!["PASS".to_owned(), "2".to_owned()]),
        "{states:?}"
    );
    assert!(
        states.contains(&vec!["FAIL".to_owned(), "1".to_owned()]),
        "{states:?}"
    );
    let agents = rows(section(&dom, "agents"));
    assert_eq!(agents.len(), 3, "{agents:?}");
    let bad = agents.iter().find(|r| r[0] == "d-bad").unwrap();
    assert_eq!(bad[1], "default", "{bad:?}");
    assert_eq!(bad[3], "FAIL");
    assert_eq!(bad[6], "ima.validation.ima-ng.not_in_allowlist");
    let failures = rows(section(&dom, "failures"));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        failures[0][..3],
        ["ima.validation.ima-ng.not_in_allowlist", "1", "1"]
    );
    let canaries = rows(section(&dom, "canaries"));
    assert_eq!(canaries[0], [canary.as_str(), "web", "done", "3", "2"]);
    browser
        .screenshot(
            &format!("{base}/dashboard"),
            &shots.join("dashboard-overview.png"),
        )
        .await
        .unwrap();

    // One agent's timeline: a pass then a fail, oldest first; the table newest first.
    let dom = browser
        .dom(&format!("{base}/dashboard/agents/d-bad"))
        .await
        .unwrap();
    let timeline = section(&dom, "timeline");
    let ticks: Vec<&str> = timeline
        .match_indices("class=\"tick ")
        .map(|(i, _)| &timeline[i + 12..i + 16])
        .collect();
    assert_eq!(ticks, ["pass", "fail"], "{timeline}");
    let rounds = rows(section(&dom, "rounds"));
    assert_eq!(rounds.len(), 2);
    assert_eq!(
        (rounds[0][1].as_str(), rounds[0][2].as_str()),
        ("fail", "ima.validation.ima-ng.not_in_allowlist")
    );
    assert_eq!((rounds[1][1].as_str(), rounds[1][4].as_str()), ("pass", "web"));
    browser
        .screenshot(
            &format!("{base}/dashboard/agents/d-bad"),
            &shots.join("dashboard-agent.png"),
        )
        .await
        .unwrap();

    // The canary's report: two newly failing, on /usr/bin/b, which agents.
    let dom = browser
        .dom(&format!("{base}/dashboard/canaries/{canary}"))
        .await
        .unwrap();
    assert_eq!(rows(section(&dom, "summary"))[0][..2], ["2", "0"]);
    let added = rows(section(&dom, "by_event"));
    assert_eq!(
        added,
        vec![vec![
            "ima.validation.ima-ng.not_in_allowlist".to_owned(),
            "/usr/bin/b".to_owned(),
            "d-ok-1, d-ok-2".to_owned()
        ]]
    );
    let verdicts = rows(section(&dom, "agents"));
    assert!(
        verdicts.contains(&vec![
            "d-bad".into(),
            "fail".into(),
            "fail".into(),
            "unchanged".into()
        ]),
        "{verdicts:?}"
    );
    browser
        .screenshot(
            &format!("{base}/dashboard/canaries/{canary}"),
            &shots.join("dashboard-canary.png"),
        )
        .await
        .unwrap();

    // An unknown agent or canary is a 404 in the envelope, not a page.
    let missing = browser
        .dom(&format!("{base}/dashboard/agents/nobody"))
        .await
        .unwrap();
    assert!(missing.contains("agent id not found"), "{missing}");

    // A tenant's certificate shows that tenant's agents only: here, none.
    let stranger = tenant_client(&verifier, "stranger");
    let (addr, _relay) = forward(stranger, verifier.https.clone()).await.unwrap();
    let dom = browser.dom(&format!("http://{addr}/dashboard")).await.unwrap();
    assert!(rows(section(&dom, "agents")).is_empty(), "{dom}");
    assert!(rows(section(&dom, "canaries")).is_empty(), "{dom}");
    assert!(!dom.contains("d-bad"), "{dom}");
    drop(tpms);
}
