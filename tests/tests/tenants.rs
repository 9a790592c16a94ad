//! Tenants of one verifier: a client certificate issued with `zest ca issue --tenant T`
//! reaches T's enrolments, runtime policies, refstates and uploaded components only. Another
//! tenant's record answers 404 and is left as it was; names are unique per tenant; the
//! operator's certificate sees every tenant and chooses one with `?tenant=`; an agent is
//! judged by the policies of the tenant that enrolled it.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest_tests::process::zest_binary;
use zest_tests::push_env::{config, digest, enrol_body, policy_for, push_agent, round, verifier_with};
use zest_tests::server::{TestVerifier, tenant_client};
use zest_tests::{AkKind, Swtpm};

async fn call(client: &reqwest::Client, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    // 204 has no body.
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn policy_body(paths: &[String]) -> Value {
    json!({"runtime_policy": B64.encode(policy_for(paths).to_string())})
}

/// Everything tenant `a` owns, as `a` reads it: compared before and after `b`'s attempts.
async fn snapshot(verifier: &TestVerifier, a: &reqwest::Client, module: &str) -> Vec<(u16, Value)> {
    let mut seen = Vec::new();
    for path in [
        "agents/tenant-agent-a".to_owned(),
        "allowlists/only-a".into(),
        "allowlists/shared".into(),
        "mbpolicies/mb-a".into(),
        format!("modules/{module}"),
    ] {
        let (code, mut body) = call(a, "GET", verifier.url("2.6", &path), None).await;
        // What moves by itself: the clock.
        body["results"]["last_received_quote"] = Value::Null;
        seen.push((code, body));
    }
    seen
}

#[tokio::test]
async fn tenants_see_and_change_only_their_own_records() {
    let verifier = verifier_with(config()).await;
    let (a, b) = (tenant_client(&verifier, "a"), tenant_client(&verifier, "b"));
    let operator = verifier.admin_client().unwrap();
    let url = |path: &str| verifier.url("2.6", path);
    let tool = vec!["/usr/bin/tool".to_string()];

    // Tenant a: two runtime policies, a refstate, a component and an agent.
    for (name, paths) in [("only-a", &tool), ("shared", &tool)] {
        let (code, body) = call(
            &a,
            "POST",
            url(&format!("allowlists/{name}")),
            Some(policy_body(paths)),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = call(
        &a,
        "POST",
        url("mbpolicies/mb-a"),
        Some(json!({"mb_policy": null})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let component = zest::policy::builtin_runtime("keylime-runtime").unwrap().to_vec();
    let uploaded = a
        .post(url("modules?kind=runtime"))
        .header("content-type", "application/wasm")
        .body(component.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let module = uploaded.json::<Value>().await.unwrap()["results"]["module"]
        .as_str()
        .unwrap()
        .to_owned();
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, "tenant-agent-a", AkKind::EcDsaP256).await;
    agent.measure(&tool[0], &digest(&tool[0])).unwrap();
    let mut enrolment = enrol_body(&agent.agent, "{}", None);
    enrolment["runtime_policy_name"] = json!("shared");
    let (code, body) = call(&a, "POST", url("agents/tenant-agent-a"), Some(enrolment.clone())).await;
    assert_eq!(code, 200, "{body}");

    // Tenant b: a policy of the same name, which allows nothing a's agent measured.
    let (code, body) = call(
        &b,
        "POST",
        url("allowlists/shared"),
        Some(policy_body(&["/other".into()])),
    )
    .await;
    assert_eq!(code, 201, "names are unique per tenant: {body}");

    // a's agent is judged by a's `shared`, not b's.
    agent.authenticate().await.unwrap();
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(judged["evaluation"], "pass", "{judged}");
    let metrics = zest_tests::server::metrics_page(&operator, &verifier.https)
        .await
        .unwrap();
    assert!(
        metrics.contains("zest_tenant_attestations_total{tenant=\"a\",result=\"pass\"} 1\n"),
        "{metrics}"
    );

    let before = snapshot(&verifier, &a, &module).await;
    assert!(before.iter().all(|(code, _)| *code == 200), "{before:?}");

    // Every route b may call on a's records answers 404: see the isolation matrix below.
    for (method, path) in [("GET", "agents/tenant-agent-a"), ("GET", "allowlists/only-a")] {
        let (code, reply) = call(&b, method, url(path), None).await;
        assert_eq!(code, 404, "{method} {path} as b: {reply}");
    }
    // b cannot act in a's name, nor attach a's component, nor enrol a's agent again.
    let (code, reply) = call(&b, "GET", url("allowlists/only-a?tenant=a"), None).await;
    assert_eq!(code, 403, "{reply}");
    let mut foreign = policy_body(&tool);
    foreign["module"] = json!(module);
    let (code, reply) = call(&b, "POST", url("allowlists/b-with-a-module"), Some(foreign)).await;
    assert_eq!(code, 400, "a's component is not b's to attach: {reply}");
    let (code, reply) = call(&b, "POST", url("agents/tenant-agent-a"), Some(enrolment)).await;
    assert_eq!(code, 409, "an agent belongs to one tenant at a time: {reply}");

    // b's listings hold b's records only.
    let (_, agents) = call(&b, "GET", url("agents"), None).await;
    assert_eq!(agents["results"]["uuids"], json!([]), "{agents}");
    let (_, names) = call(&b, "GET", url("allowlists"), None).await;
    assert_eq!(
        names["results"]["runtimepolicy names"],
        json!(["shared"]),
        "{names}"
    );
    assert!(names["results"].get("tenants").is_none(), "{names}");
    let (_, modules) = call(&b, "GET", url("modules"), None).await;
    assert!(!modules.to_string().contains(&module), "{modules}");

    // Nothing of a's changed.
    assert_eq!(snapshot(&verifier, &a, &module).await, before);

    // The operator sees every tenant, and picks one with ?tenant=.
    let (_, agents) = call(&operator, "GET", url("agents"), None).await;
    assert_eq!(
        agents["results"]["uuids"],
        json!([["tenant-agent-a"]]),
        "{agents}"
    );
    let (_, agents) = call(&operator, "GET", url("agents?tenant=b"), None).await;
    assert_eq!(agents["results"]["uuids"], json!([]), "{agents}");
    let (_, names) = call(&operator, "GET", url("allowlists"), None).await;
    assert_eq!(
        names["results"]["tenants"],
        json!({"a": ["only-a", "shared"], "b": ["shared"]}),
        "{names}"
    );
    let (code, reply) = call(&operator, "GET", url("allowlists/only-a"), None).await;
    assert_eq!(code, 404, "the operator's default is the default tenant: {reply}");
    let (code, reply) = call(&operator, "GET", url("allowlists/only-a?tenant=a"), None).await;
    assert_eq!(code, 200, "{reply}");
    let (code, reply) = call(&operator, "GET", url("agents/tenant-agent-a"), None).await;
    assert_eq!(code, 200, "{reply}");

    // a deletes its own records; b's `shared` stays.
    let (code, reply) = call(&a, "DELETE", url("agents/tenant-agent-a"), None).await;
    assert_eq!(code, 200, "{reply}");
    let (code, _) = call(&a, "DELETE", url("allowlists/shared"), None).await;
    assert_eq!(code, 204);
    let (code, reply) = call(&b, "GET", url("allowlists/shared"), None).await;
    assert_eq!(code, 200, "{reply}");
}

/// A tenant's certificate reaches no operator-only route (metrics, quotas), and a tenant
/// name that could not be a path segment is refused at issue.
#[tokio::test]
async fn a_tenant_certificate_reaches_no_operator_only_route() {
    let verifier = verifier_with(config()).await;
    let a = tenant_client(&verifier, "a");
    for path in ["/metrics"] {
        let (code, reply) = call(&a, "GET", format!("{}{path}", verifier.https), None).await;
        assert_eq!(code, 403, "{path}: {reply}");
    }
    let bad = Command::new(zest_binary().unwrap())
        .args(["ca", "issue", "--name", "x", "--client", "--tenant", "a/b"])
        .arg("--dir")
        .arg(verifier.data.path().join("cv_ca"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--tenant must be"));
}

/// Quotas per tenant: the operator sets them (here with `zest quota set`); each refusal is
/// a 4xx naming the quota, counted per tenant, and stores nothing; a tenant reads its own
/// quota only and sets none.
// Multi-threaded: the zest CLI runs as a blocking child process while the verifier serves.
#[tokio::test(flavor = "multi_thread")]
async fn quotas_bound_a_tenant_and_name_the_quota_exceeded() {
    let verifier = verifier_with(config()).await;
    let q = tenant_client(&verifier, "q");
    let other = tenant_client(&verifier, "other");
    let operator = verifier.admin_client().unwrap();
    let url = |path: &str| verifier.url("2.6", path);
    let port = verifier.https.rsplit(':').next().unwrap().to_owned();
    let quota = |args: &[&str]| {
        let out = Command::new(zest_binary().unwrap())
            .arg("quota")
            .args(["--verifier", &format!("127.0.0.1:{port}")])
            .arg("--tls-dir")
            .arg(verifier.data.path().join("cv_ca"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let tool = vec!["/usr/bin/tool".to_string()];
    // Room for a one-path policy, not for a twenty-path one.
    let document_bytes = (policy_for(&tool).to_string().len() + 100).to_string();
    let set = quota(&[
        "set",
        "--tenant",
        "q",
        "--agents",
        "1",
        "--policies",
        "2",
        "--components",
        "1",
        "--document-bytes",
        &document_bytes,
    ]);
    assert!(set.contains("policies") && set.contains("0 used of 2"), "{set}");

    // Policies (runtime and refstates together): two fit, the third is refused and not
    // stored.
    let (code, body) = call(&q, "POST", url("allowlists/p1"), Some(policy_body(&tool))).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(&q, "POST", url("mbpolicies/mb"), Some(json!({"mb_policy": null}))).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(&q, "POST", url("allowlists/p3"), Some(policy_body(&tool))).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["status"].as_str().unwrap().contains("'policies' (2)"),
        "{body}"
    );
    let (code, _) = call(&q, "GET", url("allowlists/p3"), None).await;
    assert_eq!(code, 404);
    // A document over its size quota: 413, whatever the count.
    let big: Vec<String> = (0..20).map(|i| format!("/usr/lib/long/path/{i}")).collect();
    let (code, body) = call(&q, "PUT", url("allowlists/p1"), Some(policy_body(&big))).await;
    assert_eq!(code, 413, "{body}");
    assert!(
        body["status"].as_str().unwrap().contains("document_bytes"),
        "{body}"
    );

    // Components: one fits, a second is refused.
    let upload = |bytes: Vec<u8>, kind: &'static str| {
        q.post(url(&format!("modules?kind={kind}")))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
    };
    let first = upload(
        zest::policy::builtin_runtime("keylime-runtime").unwrap().to_vec(),
        "runtime",
    )
    .await
    .unwrap();
    assert_eq!(first.status(), 201);
    let second = upload(zest_tests::policies::test_component("hostile"), "measured-boot")
        .await
        .unwrap();
    assert_eq!(second.status(), 403);
    assert!(second.text().await.unwrap().contains("'components' (1)"));

    // Agents: one fits (with a named policy), a second is refused.
    let tpm = Swtpm::start().unwrap();
    for (i, expected) in [(1, 200), (2, 403)] {
        let agent = push_agent(&verifier, &tpm, &format!("quota-agent-{i}"), AkKind::EcDsaP256).await;
        let mut enrolment = enrol_body(&agent.agent, "{}", None);
        enrolment["runtime_policy_name"] = json!("p1");
        enrolment["mb_policy_name"] = json!("mb");
        let (code, body) = call(
            &q,
            "POST",
            url(&format!("agents/quota-agent-{i}")),
            Some(enrolment),
        )
        .await;
        assert_eq!(code, expected, "{body}");
    }
    let (_, agents) = call(&q, "GET", url("agents"), None).await;
    assert_eq!(agents["results"]["uuids"], json!([["quota-agent-1"]]), "{agents}");

    // Every refusal is counted by tenant and quota.
    let metrics = zest_tests::server::metrics_page(&operator, &verifier.https)
        .await
        .unwrap();
    for which in ["policies", "document_bytes", "components", "agents"] {
        let line = format!("zest_tenant_quota_refusals_total{{tenant=\"q\",quota=\"{which}\"}} 1\n");
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }

    // A tenant reads its own quota, not another's, and sets none.
    let (code, body) = call(&q, "GET", url("quotas/q"), None).await;
    assert_eq!(
        (code, &body["results"]["usage"]["agents"]),
        (200, &json!(1)),
        "{body}"
    );
    let (code, _) = call(&other, "GET", url("quotas/q"), None).await;
    assert_eq!(code, 404);
    let (code, _) = call(&q, "PUT", url("quotas/q"), Some(json!({"agents": 100}))).await;
    assert_eq!(code, 403);
    let (code, body) = call(&operator, "PUT", url("quotas/q"), Some(json!({"agents": "many"}))).await;
    assert_eq!(code, 400, "{body}");
    // Back to the defaults: the third policy fits now.
    let reset = quota(&["reset", "--tenant", "q"]);
    assert!(reset.contains("100"), "{reset}");
    let (code, body) = call(&q, "POST", url("allowlists/p3"), Some(policy_body(&tool))).await;
    assert_eq!(code, 201, "{body}");

    // The default tenant, where Keylime's clients work, has no count or size quota until
    // the operator sets one: a Keylime site enrols its fleet (each agent with policies of
    // its own) as it did on Keylime.
    let (code, body) = call(&operator, "GET", url("quotas/default"), None).await;
    assert_eq!(code, 200, "{body}");
    for field in [
        "agents",
        "policies",
        "components",
        "component_bytes",
        "document_bytes",
    ] {
        assert_eq!(body["results"]["quota"][field], u64::MAX, "{field}: {body}");
    }
    for i in 0..120 {
        let (code, body) = call(
            &operator,
            "POST",
            url(&format!("allowlists/site-{i}")),
            Some(policy_body(&tool)),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
}

/// What tenant `a` holds in the isolation matrix, as `a` reads it.
struct Holdings {
    agent: &'static str,
    runtime: &'static str,
    mb: &'static str,
    module: String,
}

impl Holdings {
    /// `a`'s record that fills `{param}` in `path`; none for a route the matrix does not know.
    fn fill(&self, path: &str, version: &str) -> Option<String> {
        let mut filled = Vec::new();
        let mut previous = "";
        for segment in path.split('/') {
            let value = match (previous, segment) {
                (_, "{v}") => version.to_owned(),
                ("agents", "{id}") => self.agent.to_owned(),
                ("allowlists", "{name}") => self.runtime.to_owned(),
                ("mbpolicies", "{name}") => self.mb.to_owned(),
                ("modules", "{id}") => self.module.clone(),
                ("quotas", "{tenant}") => "a".to_owned(),
                ("attestations", "{which}") => "latest".to_owned(),
                // Canaries live in the memory of the verifier that ran them; a's isolation
                // from b is tested in canary.rs, here only that b's call finds nothing.
                ("canaries", "{id}") => "canary-of-a".to_owned(),
                (_, s) if s.starts_with('{') => return None,
                (_, s) => s.to_owned(),
            };
            filled.push(value);
            previous = segment;
        }
        Some(filled.join("/"))
    }

    /// Everything of `a`'s, as `a` reads it: compared before and after `b`'s calls.
    async fn snapshot(&self, verifier: &TestVerifier, a: &reqwest::Client) -> Vec<(u16, Value)> {
        let mut seen = Vec::new();
        for path in [
            format!("/v2.6/agents/{}", self.agent),
            format!("/v2.6/allowlists/{}", self.runtime),
            format!("/v2.6/mbpolicies/{}", self.mb),
            format!("/v2.6/modules/{}", self.module),
            "/v2.6/quotas/a".into(),
            format!("/v3/agents/{}/attestations", self.agent),
        ] {
            let (code, mut body) = call(a, "GET", format!("{}{path}", verifier.https), None).await;
            body["results"]["last_received_quote"] = Value::Null;
            seen.push((code, body));
        }
        seen
    }
}

/// The isolation matrix, generated from `/openapi.json`: every operation a tenant may call
/// (`x-zest-access: tenant`), called by tenant `b` on each of tenant `a`'s records in every
/// API version, answers 404, or for a create, makes `b`'s own record (or refuses a's agent
/// with 409); a listing shows none of `a`'s names; every operator-only operation answers
/// 403. Nothing of `a`'s changes. A new route the matrix cannot fill fails this test.
#[tokio::test]
async fn isolation_matrix_every_tenant_route_hides_another_tenants_records() {
    let verifier = verifier_with(config()).await;
    let (a, b) = (tenant_client(&verifier, "a"), tenant_client(&verifier, "b"));
    let url = |path: &str| verifier.url("2.6", path);
    let tool = vec!["/usr/bin/tool".to_string()];

    let component = zest::policy::builtin_runtime("keylime-runtime").unwrap().to_vec();
    let uploaded = a
        .post(url("modules?kind=runtime"))
        .header("content-type", "application/wasm")
        .body(component.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let holdings = Holdings {
        agent: "matrix-agent-a",
        runtime: "policy-of-a",
        mb: "mb-of-a",
        module: uploaded.json::<Value>().await.unwrap()["results"]["module"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    let (code, body) = call(
        &a,
        "POST",
        url("allowlists/policy-of-a"),
        Some(policy_body(&tool)),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(
        &a,
        "POST",
        url("mbpolicies/mb-of-a"),
        Some(json!({"mb_policy": null})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let tpm = Swtpm::start().unwrap();
    let mut agent = push_agent(&verifier, &tpm, holdings.agent, AkKind::EcDsaP256).await;
    agent.measure(&tool[0], &digest(&tool[0])).unwrap();
    let mut enrolment = enrol_body(&agent.agent, "{}", None);
    enrolment["runtime_policy_name"] = json!(holdings.runtime);
    let (code, body) = call(
        &a,
        "POST",
        url(&format!("agents/{}", holdings.agent)),
        Some(enrolment.clone()),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    agent.authenticate().await.unwrap();
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(judged["evaluation"], "pass", "{judged}");
    let before = holdings.snapshot(&verifier, &a).await;
    assert!(before.iter().all(|(code, _)| *code == 200), "{before:?}");
    let (_, own) = call(
        &a,
        "GET",
        format!("{}/v3/agents/{}/attestations", verifier.https, holdings.agent),
        None,
    )
    .await;
    assert_eq!(
        own["data"].as_array().map(Vec::len),
        Some(1),
        "a reads its agent's attestations: {own}"
    );

    let (code, spec) = call(&a, "GET", format!("{}/openapi.json", verifier.https), None).await;
    assert_eq!(code, 200, "{spec}");
    let a_names = [holdings.agent, holdings.runtime, holdings.mb, &holdings.module];
    let (mut walked, mut creates) = (Vec::new(), Vec::new());
    for (path, operations) in spec["paths"].as_object().unwrap() {
        let versions: Vec<String> = operations
            .as_object()
            .unwrap()
            .values()
            .flat_map(|op| op["parameters"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == "v")
            .map(|p| serde_json::from_value(p["schema"]["enum"].clone()).unwrap())
            .unwrap_or_else(|| vec![String::new()]);
        for (method, op) in operations.as_object().unwrap() {
            let method = method.to_uppercase();
            let access = op["x-zest-access"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no x-zest-access"));
            if access == "open" {
                continue;
            }
            let on_record = path.split('/').any(|s| s.starts_with('{') && s != "{v}");
            for version in &versions {
                let Some(filled) = holdings.fill(path, version) else {
                    panic!(
                        "{method} {path}: the matrix has no record of a's for this route; add one to Holdings::fill"
                    );
                };
                let target = format!("{}{filled}", verifier.https);
                match access {
                    "operator" => {
                        let (code, reply) = call(&b, &method, target, None).await;
                        assert_eq!(code, 403, "{method} {filled} as b (operator only): {reply}");
                    }
                    _ if method == "POST" => creates.push((filled.clone(), target)),
                    _ if !on_record => {}
                    _ => {
                        let body = match (method.as_str(), path.contains("mbpolicies")) {
                            ("PUT", true) => Some(json!({"mb_policy": null})),
                            ("PUT", false) => Some(policy_body(&tool)),
                            _ => None,
                        };
                        let (code, reply) = call(&b, &method, target, body).await;
                        assert_eq!(code, 404, "{method} {filled} as b: {reply}");
                    }
                }
                if access == "tenant" && method == "GET" && !on_record {
                    // A listing: none of a's names.
                    let (code, reply) = call(&b, "GET", format!("{}{filled}", verifier.https), None).await;
                    let text = reply.to_string();
                    assert!(
                        code == 404 || !a_names.iter().any(|n| text.contains(n)),
                        "GET {filled} as b shows a's records: {reply}"
                    );
                }
                walked.push(format!("{method} {path}"));
            }
        }
    }
    // Creates last: b's own records of the same names must not shadow a's for the calls above.
    for (filled, target) in creates {
        let (code, reply) = if filled.contains("/agents/") {
            call(&b, "POST", target, Some(enrolment.clone())).await
        } else if filled.ends_with("/modules") {
            let response = b
                .post(format!("{target}?kind=runtime"))
                .header("content-type", "application/wasm")
                .body(component.clone())
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), Value::Null)
        } else if filled.contains("/mbpolicies/") {
            call(&b, "POST", target, Some(json!({"mb_policy": null}))).await
        } else {
            call(&b, "POST", target, Some(policy_body(&["/other".into()]))).await
        };
        let expected: &[u16] = if filled.contains("/agents/") {
            &[409]
        } else if filled.ends_with("/canaries") {
            // b's own canary, of b's own (no) agents.
            &[202]
        } else if filled.ends_with("/promote") || filled.ends_with("/rollback") {
            // a's canary is not found in b's tenant; a rollback reaches b's own policy of
            // that name (made above, no earlier version: 409) or none.
            &[404, 409]
        } else {
            &[200, 201, 409]
        };
        assert!(expected.contains(&code), "POST {filled} as b: {code} {reply}");
        if filled.ends_with("/canaries") {
            // Each version's route starts one; a verifier runs two at once, so wait for this
            // one to finish before the next version's.
            let id = reply["results"]["id"].as_str().unwrap_or_default().to_owned();
            let deadline = std::time::Instant::now() + zest_tests::wait_limit();
            loop {
                let (code, shown) = call(&b, "GET", format!("{}{filled}/{id}", verifier.https), None).await;
                assert_eq!(code, 200, "b's own canary {id}: {shown}");
                if shown["results"]["status"] == "done" {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "b's canary {id} never finished: {shown}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    walked.sort();
    walked.dedup();
    for must in [
        "GET /{v}/agents/{id}",
        "DELETE /{v}/modules/{id}",
        "GET /v3/agents/{id}/attestations",
        "GET /v3.0/agents/{id}/attestations/{which}",
        "GET /metrics",
    ] {
        assert!(walked.iter().any(|w| w == must), "{must} not walked: {walked:?}");
    }
    assert_eq!(
        holdings.snapshot(&verifier, &a).await,
        before,
        "b changed a's records"
    );
    // a's agent is still judged by a's policy.
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(judged["evaluation"], "pass", "{judged}");
}

/// Every line the verifier logs while this test binary runs, as JSON objects.
fn captured_logs() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || SharedWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

struct SharedWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured line whose message is `message` about `agent_id`, with the tenant its
/// fields or spans name.
fn logged(message: &str, agent_id: &str) -> Option<(Value, Vec<String>)> {
    let bytes = captured_logs().lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message)
        .map(|l| {
            let mut scopes = vec![l["fields"].clone()];
            scopes.extend(l["spans"].as_array().cloned().unwrap_or_default());
            let names = |key: &str| {
                scopes
                    .iter()
                    .filter_map(|s| s[key].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            (l.clone(), names("agent_id"), names("tenant"))
        })
        .find(|(_, agents, _)| agents.iter().any(|a| a == agent_id))
        .map(|(line, _, tenants)| (line, tenants))
}

#[tokio::test]
async fn logs_name_the_tenant_of_the_agent_and_of_the_caller() {
    captured_logs();
    let verifier = verifier_with(config()).await;
    let a = tenant_client(&verifier, "a");
    let url = |path: &str| verifier.url("2.6", path);
    let tpm = Swtpm::start().unwrap();
    let uuid = "logged-agent-a";
    let mut agent = push_agent(&verifier, &tpm, uuid, AkKind::EcDsaP256).await;
    // Measured but not allowed: the round fails, and says so in the log.
    agent
        .measure("/usr/bin/unlisted", &digest("/usr/bin/unlisted"))
        .unwrap();
    let policy = policy_for(&["/usr/bin/tool".to_string()]);
    let enrolment = enrol_body(&agent.agent, "{}", Some(&policy));
    let (code, body) = call(&a, "POST", url(&format!("agents/{uuid}")), Some(enrolment)).await;
    assert_eq!(code, 200, "{body}");
    agent.authenticate().await.unwrap();
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(judged["evaluation"], "fail", "{judged}");
    let (code, body) = call(&a, "DELETE", url(&format!("agents/{uuid}")), None).await;
    assert_eq!(code, 200, "{body}");

    for message in [
        "push session authenticated",
        "push attestation failed",
        "agent deleted",
    ] {
        let (line, tenants) =
            logged(message, uuid).unwrap_or_else(|| panic!("no {message:?} line about {uuid}"));
        assert!(!tenants.is_empty() && tenants.iter().all(|t| t == "a"), "{line}");
    }
}
