//! The verifier's REST API over HTTPS with mTLS, as Keylime's tenant uses it: runtime and
//! measured-boot policies, agent enrolment, status, stop/reactivate and delete; bad input
//! is a 400 naming the field and changes nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest_tests::fixture;
use zest_tests::server::{TestVerifier, send_json};

/// A runtime policy listing one file, as `zest policy create runtime` (generator 3) makes.
fn runtime_policy() -> Value {
    json!({
        "meta": {"version": 1, "generator": 3, "timestamp": "2026-11-28 12:00:00"},
        "release": 0,
        "digests": {"boot_aggregate": ["f4845392eca429a4c941a6a07fc32faf843a88c5c3dfa3b9329ab8f4171d9ce3"]},
        "excludes": ["/tmp/.*"],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}

/// The enrolment body Keylime's tenant sends (keylime-api.md §4.3).
fn enrol_body() -> Value {
    let ak = fixture("keylime/test-data/files/ak.pub");
    json!({
        "v": B64.encode([7u8; 32]),
        "cloudagent_ip": "127.0.0.1",
        "cloudagent_port": "9002",
        "verifier_ip": "127.0.0.1",
        "verifier_port": 8881,
        "tpm_policy": "{\"15\": [\"0000000000000000000000000000000000000000000000000000000000000000\"], \"mask\": \"0x8400\"}",
        "runtime_policy": B64.encode(runtime_policy().to_string()),
        "runtime_policy_name": null,
        "runtime_policy_key": null,
        "mb_policy": null,
        "mb_policy_name": "",
        "ima_sign_verification_keys": "",
        "metadata": "{}",
        "revocation_key": "",
        "accept_tpm_hash_algs": ["sha512", "sha384", "sha256"],
        "accept_tpm_encryption_algs": ["ecc", "rsa"],
        "accept_tpm_signing_algs": ["ecschnorr", "rsassa"],
        "ak_tpm": B64.encode(ak),
        "mtls_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "supported_version": "2.6",
    })
}

#[tokio::test]
async fn clients_without_our_certificate_fail_the_handshake() {
    let verifier = TestVerifier::start().await.unwrap();
    let anonymous = verifier.anonymous_client().unwrap();
    let result = anonymous.get(verifier.url("2.6", "agents/")).send().await;
    assert!(
        result.is_err(),
        "a client without a certificate got an answer: {result:?}"
    );
    let admin = verifier.admin_client().unwrap();
    let (status, body) = send_json(admin.get(format!("{}/version", verifier.https)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"]["current_version"], "2.6");
}

/// The version routes as Keylime 7.14.3's verifier has them: `/version` and `/versions`
/// list its nine versions, `/` redirects to the 3.0 root, and `/v2.0` serves the v2 routes.
#[tokio::test]
async fn version_routes_and_prefixes_are_keylimes() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let expected = json!({"code": 200, "status": "Success", "results": {
        "current_version": "2.6",
        "supported_versions": ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"]}});
    for path in ["version", "versions"] {
        let (status, body) = send_json(admin.get(format!("{}/{path}", verifier.https)))
            .await
            .unwrap();
        assert_eq!((status, &body), (200, &expected), "{path}");
    }
    let root = admin.get(format!("{}/", verifier.https)).send().await.unwrap();
    assert_eq!(root.url().path(), "/v3.0/", "GET / redirects to the 3.0 root");
    assert_eq!(root.status(), 200);
    let (status, body) = send_json(admin.get(verifier.url("2.0", "agents/")))
        .await
        .unwrap();
    assert_eq!((status, &body["results"]["uuids"]), (200, &json!([])), "{body}");
    for unserved in ["1.0", "2.7"] {
        let (status, _) = send_json(admin.get(verifier.url(unserved, "agents/")))
            .await
            .unwrap();
        assert_eq!(status, 404, "{unserved}");
    }
}

#[tokio::test]
async fn runtime_policies_are_created_read_listed_updated_and_deleted() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let url = verifier.url("2.6", "allowlists/fleet");
    let body = json!({"runtime_policy": B64.encode(runtime_policy().to_string())});

    let (status, reply) = send_json(admin.post(&url).json(&body)).await.unwrap();
    assert_eq!(
        (status, reply["status"].as_str()),
        (201, Some("Created")),
        "{reply}"
    );
    let (status, reply) = send_json(admin.post(&url).json(&body)).await.unwrap();
    assert_eq!(status, 409, "{reply}");

    let (status, reply) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply["results"]["name"], "fleet");
    assert_eq!(reply["results"]["tmp_policy"], Value::Null);
    assert_eq!(reply["results"]["module"], "builtin:keylime-runtime");
    let stored: Value = serde_json::from_str(reply["results"]["runtime_policy"].as_str().unwrap()).unwrap();
    assert_eq!(stored, runtime_policy());

    let (_, reply) = send_json(admin.get(verifier.url("2.6", "allowlists/")))
        .await
        .unwrap();
    assert_eq!(reply["results"]["runtimepolicy names"], json!(["fleet"]));

    let mut changed = runtime_policy();
    changed["excludes"] = json!(["/var/log/.*"]);
    let update = json!({"runtime_policy": B64.encode(changed.to_string())});
    let (status, _) = send_json(admin.put(&url).json(&update)).await.unwrap();
    assert_eq!(status, 201);
    let (status, reply) = send_json(admin.put(verifier.url("2.6", "allowlists/nope")).json(&update))
        .await
        .unwrap();
    assert_eq!(status, 404, "{reply}");

    // A policy its component refuses is a 400 with the reason, and nothing changes.
    let mut bad = runtime_policy();
    bad["digests"]["/usr/bin/x"] = json!(["sha256:abc"]);
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "allowlists/bad"))
            .json(&json!({"runtime_policy": B64.encode(bad.to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{reply}");
    let why = reply["status"].as_str().unwrap();
    assert!(
        why.contains("Runtime policy is malformatted") && why.contains("/usr/bin/x"),
        "{why}"
    );
    let (status, _) = send_json(admin.get(verifier.url("2.6", "allowlists/bad")))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let mut regex = runtime_policy();
    regex["excludes"] = json!(["(?<=x)y"]);
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "allowlists/bad"))
            .json(&json!({"runtime_policy": B64.encode(regex.to_string())})),
    )
    .await
    .unwrap();
    assert!(
        status == 400 && reply["status"].as_str().unwrap().contains("look-"),
        "{reply}"
    );
    for (body, needle) in [
        (json!({"runtime_policy": "not base64!"}), "not base64"),
        (json!({}), "runtime_policy is required"),
        (
            json!({"runtime_policy": B64.encode("{}"), "module": "builtin:nope"}),
            "builtin:nope",
        ),
    ] {
        let (status, reply) = send_json(admin.post(verifier.url("2.6", "allowlists/bad")).json(&body))
            .await
            .unwrap();
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["status"].as_str().unwrap().contains(needle),
            "{needle}: {reply}"
        );
    }

    let response = admin.delete(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert!(response.text().await.unwrap().is_empty());
    let (status, _) = send_json(admin.delete(&url)).await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn measured_boot_policies_are_checked_by_their_component() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let refstate = String::from_utf8(fixture(
        "keylime/keylime/mba/elchecking/example_reference_state.json",
    ))
    .unwrap();
    let url = verifier.url("2.5", "mbpolicies/ovmf");
    let body = json!({"mb_policy": refstate, "module": "builtin:keylime-mb-example"});
    let (status, reply) = send_json(admin.post(&url).json(&body)).await.unwrap();
    assert_eq!(status, 201, "{reply}");
    let (_, reply) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(reply["results"]["module"], "builtin:keylime-mb-example");
    assert_eq!(reply["results"]["mb_policy"].as_str().unwrap(), refstate);
    let (_, reply) = send_json(admin.get(verifier.url("2.5", "mbpolicies")))
        .await
        .unwrap();
    assert_eq!(reply["results"]["mbpolicy names"], json!(["ovmf"]));

    let broken = json!({"mb_policy": "{\"kernels\": []}", "module": "builtin:keylime-mb-example"});
    let (status, reply) = send_json(admin.post(verifier.url("2.5", "mbpolicies/broken")).json(&broken))
        .await
        .unwrap();
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["status"].as_str().unwrap().contains("scrtm_and_bios"),
        "{reply}"
    );
    // Keylime's default component (accept-all) takes any JSON document.
    let (status, _) = send_json(
        admin
            .post(verifier.url("2.5", "mbpolicies/any"))
            .json(&json!({"mb_policy": "{\"x\": 1}"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.5", "mbpolicies/notjson"))
            .json(&json!({"mb_policy": "{x"})),
    )
    .await
    .unwrap();
    assert!(
        status == 400 && reply["status"].as_str().unwrap().contains("mb_policy: not JSON"),
        "{reply}"
    );
}

#[tokio::test]
async fn policy_modules_are_uploaded_checked_named_by_policies_and_deleted_when_unused() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let upload = |kind: &str, content_type: &str, bytes: Vec<u8>| {
        admin
            .post(verifier.url("2.6", &format!("modules?kind={kind}")))
            .header("content-type", content_type)
            .body(bytes)
    };
    let reject_all = zest::policy::builtin_measured_boot("reject-all")
        .unwrap()
        .to_vec();
    let runtime = zest::policy::builtin_runtime("keylime-runtime").unwrap().to_vec();

    // Refusals, each naming its cause; nothing is stored.
    let (status, reply) = send_json(upload("measured-boot", "application/json", reject_all.clone()))
        .await
        .unwrap();
    assert_eq!(status, 415, "{reply}");
    let (status, reply) = send_json(upload("kernel", "application/wasm", reject_all.clone()))
        .await
        .unwrap();
    assert!(
        status == 400 && reply["status"].as_str().unwrap().contains("kind"),
        "{reply}"
    );
    let (status, reply) = send_json(upload(
        "measured-boot",
        "application/wasm",
        b"\0asm junk".to_vec(),
    ))
    .await
    .unwrap();
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = send_json(upload("measured-boot", "application/wasm", runtime.clone()))
        .await
        .unwrap();
    assert!(
        status == 400 && reply["status"].as_str().unwrap().contains("measured-boot-policy"),
        "a runtime component is not a measured-boot one: {reply}"
    );
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "modules")))
        .await
        .unwrap();
    let modules = reply["results"]["modules"].as_array().unwrap();
    assert!(modules.iter().all(|m| m["builtin"] == true), "{reply}");
    assert!(
        modules
            .iter()
            .any(|m| m["module"] == "builtin:keylime-runtime" && m["kind"] == "runtime")
    );

    // Accepted: named by content, 201 then 200 for the same bytes.
    let (status, reply) = send_json(upload("measured-boot", "application/wasm", reject_all.clone()))
        .await
        .unwrap();
    assert_eq!(status, 201, "{reply}");
    let id = reply["results"]["module"].as_str().unwrap().to_owned();
    assert_eq!(
        id,
        format!(
            "sha256:{}",
            hex::encode(zest::evidence::HashAlg::Sha256.digest(&[&reject_all]))
        )
    );
    assert_eq!(reply["results"]["size"], reject_all.len());
    let (status, _) = send_json(upload(
        "measured-boot",
        "application/octet-stream",
        reject_all.clone(),
    ))
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (status, reply) = send_json(admin.get(verifier.url("2.6", &format!("modules/{id}"))))
        .await
        .unwrap();
    assert_eq!(
        (status, reply["results"]["kind"].as_str()),
        (200, Some("measured-boot")),
        "{reply}"
    );

    // A policy names it; the wrong kind is refused; in use, it cannot be deleted.
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "mbpolicies/strict"))
            .json(&json!({"mb_policy": "{}", "module": id})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "allowlists/wrong-kind"))
            .json(&json!({"runtime_policy": B64.encode(runtime_policy().to_string()), "module": id})),
    )
    .await
    .unwrap();
    assert!(
        status == 400 && reply["status"].as_str().unwrap().contains("not a runtime"),
        "{reply}"
    );
    let (status, reply) = send_json(admin.delete(verifier.url("2.6", &format!("modules/{id}"))))
        .await
        .unwrap();
    assert!(
        status == 409
            && reply["status"]
                .as_str()
                .unwrap()
                .contains("measured-boot policy strict"),
        "{reply}"
    );
    let response = admin
        .delete(verifier.url("2.6", "mbpolicies/strict"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let response = admin
        .delete(verifier.url("2.6", &format!("modules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (status, _) = send_json(admin.get(verifier.url("2.6", &format!("modules/{id}"))))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = send_json(admin.delete(verifier.url("2.6", "modules/builtin:reject-all")))
        .await
        .unwrap();
    assert_eq!(status, 400);
}

/// Start (1), or Get Quote (retry) (4) once the pull loop has tried the agent, which this
/// test never runs.
fn starting(state: &Value) -> bool {
    state == 1 || state == 4
}

#[tokio::test]
async fn an_enrolled_agent_is_shown_listed_stopped_reactivated_and_deleted() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let url = verifier.url("2.6", "agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
    let (status, reply) = send_json(admin.post(&url).json(&enrol_body())).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = send_json(admin.post(&url).json(&enrol_body())).await.unwrap();
    assert_eq!(status, 409, "{reply}");
    assert!(reply["status"].as_str().unwrap().contains("already exists"));

    let (status, reply) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(status, 200);
    let agent = &reply["results"];
    assert!(starting(&agent["operational_state"]), "{agent}");
    assert_eq!(agent["attestation_status"], "PENDING");
    assert_eq!(agent["attestation_period"], "2s");
    assert_eq!(agent["maximum_attestation_interval"], "10s");
    assert_eq!(agent["has_runtime_policy"], 1);
    assert_eq!(agent["has_mb_refstate"], 0);
    assert_eq!(agent["ip"], "127.0.0.1");
    assert_eq!(agent["port"], 9002);
    assert_eq!(
        agent["accept_tpm_hash_algs"],
        json!(["sha512", "sha384", "sha256"])
    );
    assert_eq!(agent["hash_alg"], "");
    assert_eq!(agent["verifier_id"], "default");
    assert_eq!(agent["attestation_count"], 0);

    // Keylime names the agent's policies after it.
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "allowlists")))
        .await
        .unwrap();
    assert_eq!(
        reply["results"]["runtimepolicy names"],
        json!(["d432fbb3-d2f1-4a97-9ef7-75bd81c00000"])
    );
    let (status, _) =
        send_json(admin.delete(verifier.url("2.6", "allowlists/d432fbb3-d2f1-4a97-9ef7-75bd81c00000")))
            .await
            .unwrap();
    assert_eq!(status, 409, "a policy in use is kept");

    let (_, reply) = send_json(admin.get(verifier.url("2.6", "agents/")))
        .await
        .unwrap();
    assert_eq!(
        reply["results"]["uuids"],
        json!([["d432fbb3-d2f1-4a97-9ef7-75bd81c00000"]])
    );
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "agents/?bulk=1")))
        .await
        .unwrap();
    assert!(
        starting(&reply["results"]["d432fbb3-d2f1-4a97-9ef7-75bd81c00000"]["operational_state"]),
        "{reply}"
    );
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "agents/?verifier=other")))
        .await
        .unwrap();
    assert_eq!(reply["results"]["uuids"], json!([]));

    let (status, _) = send_json(admin.put(format!("{url}/stop"))).await.unwrap();
    assert_eq!(status, 200);
    let (_, reply) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(
        (
            reply["results"]["operational_state"].as_i64(),
            reply["results"]["attestation_status"].as_str()
        ),
        (Some(10), Some("FAIL"))
    );
    let (status, _) = send_json(admin.put(format!("{url}/reactivate"))).await.unwrap();
    assert_eq!(status, 200);
    let (_, reply) = send_json(admin.get(&url)).await.unwrap();
    assert!(starting(&reply["results"]["operational_state"]), "{reply}");

    // State survives a restart of the verifier.
    let verifier = verifier.restart().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let url = verifier.url("2.6", "agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
    let (status, _) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(status, 200);

    let (status, _) = send_json(admin.delete(&url)).await.unwrap();
    assert_eq!(status, 200);
    let (status, reply) = send_json(admin.get(&url)).await.unwrap();
    assert_eq!(
        (status, reply["status"].as_str()),
        (404, Some("agent id not found"))
    );
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "allowlists")))
        .await
        .unwrap();
    assert_eq!(
        reply["results"]["runtimepolicy names"],
        json!([]),
        "the agent's own policy went with it"
    );
    let (status, _) = send_json(admin.put(format!("{url}/stop"))).await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn named_policies_are_shared_and_missing_ones_refused() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let (status, _) = send_json(
        admin
            .post(verifier.url("2.6", "allowlists/fleet"))
            .json(&json!({"runtime_policy": B64.encode(runtime_policy().to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    for id in ["a1", "a2"] {
        let mut body = enrol_body();
        body["runtime_policy"] = json!("");
        body["runtime_policy_name"] = json!("fleet");
        let (status, reply) = send_json(
            admin
                .post(verifier.url("2.6", &format!("agents/{id}")))
                .json(&body),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{reply}");
    }
    let mut body = enrol_body();
    body["runtime_policy"] = json!("");
    body["runtime_policy_name"] = json!("nope");
    let (status, reply) = send_json(admin.post(verifier.url("2.6", "agents/a3")).json(&body))
        .await
        .unwrap();
    assert_eq!(status, 404, "{reply}");
    let mut body = enrol_body();
    body["runtime_policy_name"] = json!("fleet");
    let (status, reply) = send_json(admin.post(verifier.url("2.6", "agents/a3")).json(&body))
        .await
        .unwrap();
    assert_eq!(status, 409, "{reply}");
    let (status, _) = send_json(admin.get(verifier.url("2.6", "agents/a3")))
        .await
        .unwrap();
    assert_eq!(status, 404, "a refused enrolment stores nothing");

    let (status, _) = send_json(admin.delete(verifier.url("2.6", "agents/a1")))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = send_json(admin.delete(verifier.url("2.6", "allowlists/fleet")))
        .await
        .unwrap();
    assert_eq!(status, 409, "still used by a2");
    let (status, _) = send_json(admin.delete(verifier.url("2.6", "agents/a2")))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let response = admin
        .delete(verifier.url("2.6", "allowlists/fleet"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        204,
        "a named policy outlives its agents until deleted"
    );
}

#[tokio::test]
async fn each_bad_enrolment_field_is_a_400_naming_it_and_stores_nothing() {
    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("ak_tpm", json!("not base64"), "ak_tpm"),
        ("ak_tpm", json!(B64.encode([0u8; 10])), "ak_tpm"),
        ("tpm_policy", json!("{"), "tpm_policy"),
        ("tpm_policy", json!("{\"10\": [\"00\"]}"), "PCR 10"),
        ("tpm_policy", json!("{\"99\": [\"00\"]}"), "not a PCR number"),
        ("tpm_policy", json!("{\"15\": [\"zz\"]}"), "hex"),
        ("tpm_policy", json!("{\"mask\": \"123\"}"), "mask"),
        ("cloudagent_port", json!("70000"), "cloudagent_port"),
        ("cloudagent_ip", json!("bad host!"), "cloudagent_ip"),
        ("accept_tpm_hash_algs", json!(["md5"]), "accept_tpm_hash_algs"),
        (
            "accept_tpm_signing_algs",
            json!("rsassa"),
            "accept_tpm_signing_algs",
        ),
        ("v", json!(B64.encode([1u8; 5])), "v must be"),
        (
            "mtls_cert",
            json!("disabled"),
            "mTLS certificate for agent is required!",
        ),
        (
            "mtls_cert",
            Value::Null,
            "mTLS certificate for agent is required!",
        ),
        ("revocation_key", json!("not a key"), "revocation_key"),
        // A private key, but not one that can sign Keylime's RSA-PSS revocations.
        (
            "revocation_key",
            json!(rcgen::KeyPair::generate().unwrap().serialize_pem()),
            "revocation_key must be an unencrypted PEM RSA private key",
        ),
        ("supported_version", json!(2.6), "supported_version"),
        ("runtime_policy", json!("!!"), "runtime_policy"),
        ("mb_policy", json!("{x"), "mb_policy"),
    ];
    for (field, value, needle) in cases {
        let mut body = enrol_body();
        body[field] = value.clone();
        let (status, reply) = send_json(admin.post(verifier.url("2.6", "agents/bad")).json(&body))
            .await
            .unwrap();
        assert_eq!(status, 400, "{field}={value}: {reply}");
        let why = reply["status"].as_str().unwrap();
        assert!(why.contains(needle), "{field}={value}: {why:?} lacks {needle:?}");
    }
    for missing in [
        "tpm_policy",
        "ak_tpm",
        "runtime_policy",
        "mb_policy",
        "mb_policy_name",
        "metadata",
        "revocation_key",
        "accept_tpm_hash_algs",
        "cloudagent_ip",
    ] {
        let mut body = enrol_body();
        body.as_object_mut().unwrap().remove(missing);
        let (status, reply) = send_json(admin.post(verifier.url("2.6", "agents/bad")).json(&body))
            .await
            .unwrap();
        assert_eq!(status, 400, "{missing}: {reply}");
        assert!(reply["status"].as_str().unwrap().contains(missing), "{reply}");
    }
    for (path, body) in [("agents/bad%0Aid", enrol_body()), ("agents/bad", json!([1, 2]))] {
        let (status, _) = send_json(admin.post(verifier.url("2.6", path)).json(&body))
            .await
            .unwrap();
        assert_eq!(status, 400);
    }
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "agents/")))
        .await
        .unwrap();
    assert_eq!(reply["results"]["uuids"], json!([]));
    let (_, reply) = send_json(admin.get(verifier.url("2.6", "allowlists/")))
        .await
        .unwrap();
    assert_eq!(reply["results"]["runtimepolicy names"], json!([]));
    let (status, _) = send_json(admin.get(verifier.url("3.0", "agents/")))
        .await
        .unwrap();
    assert_eq!(status, 404, "v3 is push mode's");
}

#[tokio::test]
async fn verify_identity_checks_a_swtpm_quote_against_the_enrolled_ak() {
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "identity-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut body = enrol_body();
    body["ak_tpm"] = json!(B64.encode(&agent.aik_tpm));
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "agents/identity-agent"))
            .json(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");

    let nonce = "Zq8hG2pL0xYc4Rt7Vb1N";
    let quote = agent
        .quote(nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &[16])])
        .unwrap()
        .keylime_string();
    let ask = |agent_uuid: &str, nonce: &str, hash_alg: &str, quote: &str| {
        let url = reqwest::Url::parse_with_params(
            &verifier.url("2.6", "verify/identity"),
            &[
                ("agent_uuid", agent_uuid),
                ("quote", quote),
                ("nonce", nonce),
                ("hash_alg", hash_alg),
            ],
        )
        .unwrap();
        admin.get(url)
    };
    let (status, reply) = send_json(ask("identity-agent", nonce, "sha256", &quote))
        .await
        .unwrap();
    assert_eq!(
        (status, &reply["results"]),
        (200, &json!({"valid": 1})),
        "{reply}"
    );

    let (_, reply) = send_json(ask("identity-agent", "another-nonce-000000", "sha256", &quote))
        .await
        .unwrap();
    assert_eq!(reply["results"]["valid"], 0);
    assert!(
        reply["results"]["reason"].as_str().unwrap().contains("nonce"),
        "{reply}"
    );
    let (_, reply) = send_json(ask("identity-agent", nonce, "sha1", &quote))
        .await
        .unwrap();
    assert_eq!(reply["results"]["valid"], 0, "{reply}");

    // A quote by another TPM's AK.
    let other_tpm = Swtpm::start().unwrap();
    let mut other = TestAgent::new(&other_tpm, "other", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let forged = other
        .quote(nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &[16])])
        .unwrap()
        .keylime_string();
    let (_, reply) = send_json(ask("identity-agent", nonce, "sha256", &forged))
        .await
        .unwrap();
    assert_eq!(reply["results"]["valid"], 0);
    assert!(
        reply["results"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{reply}"
    );

    let (status, _) = send_json(ask("nobody", nonce, "sha256", &quote)).await.unwrap();
    assert_eq!(status, 404);
    let only_agent = format!(
        "{}?agent_uuid=identity-agent",
        verifier.url("2.6", "verify/identity")
    );
    let (status, reply) = send_json(admin.get(only_agent)).await.unwrap();
    assert_eq!(
        (status, reply["status"].as_str()),
        (400, Some("missing query parameter 'quote'"))
    );
    // Keylime 7.14.3 serves it at every 2.x prefix, /v2.0 included (it does not gate on
    // the minor version); /v3.0 has none.
    let v20 = reqwest::Url::parse_with_params(
        &verifier.url("2.0", "verify/identity"),
        &[
            ("agent_uuid", "identity-agent"),
            ("quote", quote.as_str()),
            ("nonce", nonce),
            ("hash_alg", "sha256"),
        ],
    )
    .unwrap();
    let (status, reply) = send_json(admin.get(v20)).await.unwrap();
    assert_eq!(
        (status, &reply["results"]),
        (200, &json!({"valid": 1})),
        "{reply}"
    );
}

#[tokio::test]
async fn verify_evidence_runs_quote_pcr_and_ima_checks_on_swtpm_evidence() {
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use zest::evidence::HashAlg;
    use zest_tests::ima::ImaLog;
    use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

    let verifier = TestVerifier::start().await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "evidence-agent", EkKind::Rsa2048, AkKind::EcDsaP256).unwrap();

    // An IMA list the TPM saw: every entry extended into PCR 10.
    let mut log = ImaLog::default();
    let mut digests = serde_json::Map::new();
    for i in 0..5u8 {
        let path = format!("/usr/bin/tool{i}");
        let digest = HashAlg::Sha256.digest(&[&[i]]);
        let ext = log.add_ima_ng(&path, &digest);
        agent
            .pcr_extend(
                10,
                &[
                    (HashingAlgorithm::Sha256, ext.sha256),
                    (HashingAlgorithm::Sha1, ext.sha1),
                ],
            )
            .unwrap();
        digests.insert(path, json!([hex::encode(&digest)]));
    }
    let mut policy = runtime_policy();
    policy["digests"] = Value::Object(digests);
    let pcr15 = hex::encode(agent.pcr_value(HashingAlgorithm::Sha256, 15).unwrap());
    let nonce = "n0nceF0rEvidence1234";
    let quote = agent
        .quote(nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &[10, 15, 16])])
        .unwrap()
        .keylime_string();
    let data = json!({
        "quote": quote,
        "nonce": nonce,
        "hash_alg": "sha256",
        "tpm_ek": "unused",
        "tpm_ak": B64.encode(&agent.aik_tpm),
        "tpm_policy": json!({"15": [pcr15]}).to_string(),
        "runtime_policy": policy.to_string(),
        "ima_measurement_list": log.text(),
    });
    let ask = |version: &str, data: &Value| {
        admin
            .post(verifier.url(version, "verify/evidence"))
            .json(&json!({"type": "tpm", "data": data}))
    };
    let (status, reply) = send_json(ask("2.6", &data)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"]["valid"], true, "{reply}");
    assert_eq!(reply["results"]["claims"]["hash_alg"], "sha256");
    // As Keylime 7.14.3: `failures: []` on success, and `valid` a boolean at every 2.x
    // prefix (2.4's documentation still says 1/0, its code writes true/false).
    assert_eq!(reply["results"]["failures"], json!([]), "{reply}");
    for version in ["2.4", "2.1", "2.0"] {
        let (status, reply) = send_json(ask(version, &data)).await.unwrap();
        assert_eq!(
            (status, &reply["results"]["valid"]),
            (200, &json!(true)),
            "{version}: {reply}"
        );
    }

    let failure_types = |reply: &Value| -> Vec<String> {
        reply["results"]["failures"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|f| f["type"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut strict = data.clone();
    let mut fewer = policy.clone();
    fewer["digests"].as_object_mut().unwrap().remove("/usr/bin/tool3");
    strict["runtime_policy"] = json!(fewer.to_string());
    strict["tpm_policy"] = json!(json!({"15": ["11".repeat(32)]}).to_string());
    let (status, reply) = send_json(ask("2.6", &strict)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply["results"]["valid"], false);
    assert_eq!(
        failure_types(&reply),
        [
            "pcr_validation.invalid_pcr_15",
            "ima.validation.ima-ng.not_in_allowlist"
        ],
        "{reply}"
    );
    assert_eq!(reply["results"]["failures"][0]["context"]["got"], pcr15);

    // The list edited after the fact matches no prefix of the quoted PCR 10.
    let mut edited = log.clone();
    edited.set_line(2, edited.line(2).replace("tool2", "toolX"));
    let mut tampered = data.clone();
    tampered["ima_measurement_list"] = json!(edited.text());
    let (_, reply) = send_json(ask("2.6", &tampered)).await.unwrap();
    let types = failure_types(&reply);
    assert!(types.contains(&"ima.pcr_mismatch".to_owned()), "{reply}");
    assert!(types.contains(&"ima.validation.ima_hash".to_owned()), "{reply}");

    let mut wrong_nonce = data.clone();
    wrong_nonce["nonce"] = json!("another-nonce-000000");
    let (_, reply) = send_json(ask("2.6", &wrong_nonce)).await.unwrap();
    assert_eq!(
        failure_types(&reply),
        ["qoute_validation.quote_validation"],
        "{reply}"
    );

    let mut no_quote = data.clone();
    no_quote.as_object_mut().unwrap().remove("quote");
    let (status, reply) = send_json(ask("2.6", &no_quote)).await.unwrap();
    assert_eq!(
        (status, failure_types(&reply)),
        (400, vec!["default.missing_param".to_owned()]),
        "{reply}"
    );
    let mut no_policy = data.clone();
    for f in ["tpm_policy", "runtime_policy"] {
        no_policy.as_object_mut().unwrap().remove(f);
    }
    let (status, reply) = send_json(ask("2.6", &no_policy)).await.unwrap();
    assert_eq!(
        (status, failure_types(&reply)),
        (400, vec!["default.missing_policy".to_owned()]),
        "{reply}"
    );
    let (status, _) = send_json(
        admin
            .post(verifier.url("2.6", "verify/evidence"))
            .json(&json!({"data": {}})),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    let (status, _) = send_json(ask("3.0", &data)).await.unwrap();
    assert_eq!(status, 404, "API 3.0 has no verify/evidence");
}

/// Keylime 7.14.3 lets anyone call `/verify/identity` and `/verify/evidence` (public actions,
/// no certificate needed where the listener allows it); every other route stays the
/// operator's. A verifier that serves push agents takes TLS without a client certificate.
#[tokio::test]
async fn anyone_may_ask_verify_identity_and_verify_evidence_but_not_the_agent_routes() {
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use zest::verifier::Mode;
    use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

    let mut config = zest_tests::push_env::config();
    config.mode = Mode::Both;
    let verifier = zest_tests::push_env::verifier_with(config).await;
    let admin = verifier.admin_client().unwrap();
    let anonymous = verifier.anonymous_client().unwrap();
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "public-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut body = enrol_body();
    body["ak_tpm"] = json!(B64.encode(&agent.aik_tpm));
    let (status, reply) = send_json(admin.post(verifier.url("2.6", "agents/public-agent")).json(&body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");

    let nonce = "An0nym0usCa11er12345";
    let quote = agent
        .quote(nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &[15, 16])])
        .unwrap();
    let url = reqwest::Url::parse_with_params(
        &verifier.url("2.0", "verify/identity"),
        &[
            ("agent_uuid", "public-agent"),
            ("quote", quote.keylime_string().as_str()),
            ("nonce", nonce),
            ("hash_alg", "sha256"),
        ],
    )
    .unwrap();
    let (status, reply) = send_json(anonymous.get(url)).await.unwrap();
    assert_eq!(
        (status, &reply["results"]),
        (200, &json!({"valid": 1})),
        "{reply}"
    );

    let pcr15 = hex::encode(agent.pcr_value(HashingAlgorithm::Sha256, 15).unwrap());
    let data = json!({
        "quote": quote.keylime_string(), "nonce": nonce, "hash_alg": "sha256", "tpm_ek": "unused",
        "tpm_ak": B64.encode(&agent.aik_tpm),
        "tpm_policy": json!({"15": [pcr15]}).to_string(),
    });
    let (status, reply) = send_json(
        anonymous
            .post(verifier.url("2.1", "verify/evidence"))
            .json(&json!({"type": "tpm", "data": data})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"]["valid"], json!(true), "{reply}");

    // The same caller reaches nothing else.
    for (method, path) in [
        (reqwest::Method::GET, "agents/"),
        (reqwest::Method::GET, "agents/public-agent"),
        (reqwest::Method::DELETE, "agents/public-agent"),
        (reqwest::Method::GET, "allowlists/"),
    ] {
        let (status, reply) = send_json(anonymous.request(method.clone(), verifier.url("2.6", path)))
            .await
            .unwrap();
        assert_eq!(status, 403, "{method} {path}: {reply}");
    }
    let (status, _) = send_json(admin.get(verifier.url("2.6", "agents/public-agent")))
        .await
        .unwrap();
    assert_eq!(status, 200, "the agent is still there");
}

/// Keylime 7.14.3's verifier in push mode answers `/version` and `/versions` with 410 Gone;
/// Keylime's tenant, and `zest tenant`, then speak 2.6.
#[tokio::test]
async fn a_push_mode_verifier_answers_version_with_410_and_the_tenant_speaks_2_6() {
    let verifier = zest_tests::push_env::verifier_with(zest_tests::push_env::config()).await;
    let admin = verifier.admin_client().unwrap();
    for path in ["version", "versions"] {
        let (status, body) = send_json(admin.get(format!("{}/{path}", verifier.https)))
            .await
            .unwrap();
        assert_eq!(
            (status, &body),
            (410, &json!({"code": 410, "status": "Gone", "results": {}})),
            "{path}"
        );
    }
    let port = verifier.https.rsplit(':').next().unwrap().to_owned();
    let data = verifier.data.path().to_owned();
    // The tenant runs beside this test's runtime, which serves the verifier.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(zest_tests::process::zest_binary().unwrap())
            .args(["--data-dir", data.to_str().unwrap(), "tenant"])
            .args(["--verifier", &format!("127.0.0.1:{port}")])
            .args(["status", "--uuid", "nobody-here"])
            .env_remove("ZEST_DATA_DIR")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not enrolled"),
        "the tenant went on past the 410: {stderr}"
    );
}
