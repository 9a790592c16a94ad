//! Registration and activation of swtpm-backed agents against a registrar on loopback.

use serde_json::Value;
use zest_tests::server::{RegistrarOptions, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent, TestRegistrar};

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_ek_agent_registers_activates_and_is_shown() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();

    let admin = registrar.admin_client().unwrap();
    let (status, body) = send_json(admin.get(format!("{}/v2.6/agents/{UUID}", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let results = &body["results"];
    assert_eq!(results["agent_id"], UUID);
    assert_eq!(results["aik_tpm"], Value::String(base64(&agent.aik_tpm)));
    assert_eq!(results["ek_tpm"], Value::String(base64(&agent.ek_tpm)));
    assert_eq!(
        results["ekcert"],
        Value::String(base64(agent.ek_cert_der.as_ref().unwrap()))
    );
    assert_eq!(results["mtls_cert"], "disabled");
    assert_eq!(results["ip"], "127.0.0.1");
    assert_eq!(results["port"], 9002);
    assert_eq!(results["regcount"], 1);
    assert_eq!(body["code"], 200);
    assert_eq!(body["status"], "Success");
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecc_p384_ek_agent_with_ecc_ak_registers_and_activates() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "ecc-p384-agent", EkKind::EccP384, AkKind::EcDsaP256).unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();
    let admin = registrar.admin_client().unwrap();
    let (status, body) = send_json(admin.get(format!("{}/v2.6/agents/ecc-p384-agent", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"]["ekcert"],
        Value::String(base64(agent.ek_cert_der.as_ref().unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecc_p256_ek_with_certificate_from_another_ca_registers() {
    let tpm = Swtpm::start().unwrap();
    let issuer = zest_tests::ek_issuer::EkIssuer::new("P-256 EK CA").unwrap();
    let mut agent = TestAgent::new(&tpm, "p256", EkKind::EccP256, AkKind::RsaSsa).unwrap();
    agent.ek_cert_der = Some(issuer.issue(&agent.ek_tpm, 2020, 2090).unwrap());
    let registrar = TestRegistrar::start(RegistrarOptions {
        require_ek_cert: true,
        trusted_ek_cas: vec![issuer.ca_pem()],
        ..RegistrarOptions::default()
    })
    .await
    .unwrap();
    registrar.register_and_activate(&mut agent, "2.1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v2_route_spelling_registers_and_activates() {
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let client = registrar.plain_client();
    // (registration URL, activation method, activation URL), as Keylime's v2 routes allow.
    let cases = [
        ("v2.1/agents/a1", "PUT", "v2.1/agents/a1"),
        ("v2.2/agents/a2/", "PUT", "v2.2/agents/a2/activate"),
        ("v2.3/agents", "POST", "v2.3/agents/a3/activate"),
        ("v2/agents/", "PUT", "v2/agents/a4/activate/"),
        ("v2.5/agents/a5", "POST", "v2.5/agents/a5/activate"),
    ];
    for (i, (register_path, method, activate_path)) in cases.iter().enumerate() {
        let id = format!("a{}", i + 1);
        let mut agent = TestAgent::new(&tpm, &id, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
        let mut body = agent.registration_body();
        if !register_path.contains(&id) {
            body["agent_id"] = Value::String(id.clone());
        }
        let (status, reply) = send_json(
            client
                .post(format!("{}/{register_path}", registrar.http))
                .json(&body),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{register_path}: {reply}");
        let credential = agent
            .activate_credential(reply["results"]["blob"].as_str().unwrap())
            .unwrap();
        let url = format!("{}/{activate_path}", registrar.http);
        let request = match *method {
            "PUT" => client.put(url),
            _ => client.post(url),
        };
        let (status, reply) = send_json(request.json(&agent.activation_body(&credential)))
            .await
            .unwrap();
        assert_eq!(status, 200, "{activate_path}: {reply}");
        assert_eq!(reply["results"], serde_json::json!({}));
    }
    let admin = registrar.admin_client().unwrap();
    let (_, listing) = send_json(admin.get(format!("{}/v2.6/agents/", registrar.https)))
        .await
        .unwrap();
    assert_eq!(
        listing["results"]["uuids"],
        serde_json::json!(["a1", "a2", "a3", "a4", "a5"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_routes_register_activate_show_list_and_delete() {
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let mut agent = TestAgent::new(&tpm, "v3-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let client = registrar.plain_client();

    let (status, body) = send_json(client.get(format!("{}/v3.0/version", registrar.http)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["results"]["current_version"], "2.6");
    let (status, body) = send_json(client.get(format!("{}/v3/", registrar.http)))
        .await
        .unwrap();
    assert_eq!((status, &body["results"]), (200, &serde_json::json!({})));

    // v3 drops the per-id POST and the PUT activation routes.
    let (status, _) = send_json(
        client
            .post(format!("{}/v3.0/agents/v3-agent", registrar.http))
            .json(&agent.registration_body()),
    )
    .await
    .unwrap();
    assert_eq!(status, 405);

    let mut body = agent.registration_body();
    body["agent_id"] = Value::String("v3-agent".into());
    let (status, reply) = send_json(
        client
            .post(format!("{}/v3.0/agents/", registrar.http))
            .json(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
    let credential = agent
        .activate_credential(reply["results"]["blob"].as_str().unwrap())
        .unwrap();
    let activation = agent.activation_body(&credential);
    let (status, _) = send_json(
        client
            .put(format!("{}/v3.0/agents/v3-agent", registrar.http))
            .json(&activation),
    )
    .await
    .unwrap();
    assert_eq!(status, 405);
    let (status, reply) = send_json(
        client
            .post(format!("{}/v3.0/agents/v3-agent/activate", registrar.http))
            .json(&activation),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");

    let admin = registrar.admin_client().unwrap();
    let (status, shown) = send_json(admin.get(format!("{}/v3.0/agents/v3-agent", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["results"]["aik_tpm"], Value::String(base64(&agent.aik_tpm)));
    let (_, listing) = send_json(admin.get(format!("{}/v3/agents", registrar.https)))
        .await
        .unwrap();
    assert_eq!(listing["results"]["uuids"], serde_json::json!(["v3-agent"]));
    let (status, _) = send_json(admin.delete(format!("{}/v3.0/agents/v3-agent", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, gone) = send_json(admin.get(format!("{}/v3.0/agents/v3-agent", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 404, "{gone}");
    let (status, _) = send_json(admin.delete(format!("{}/v3.0/agents/v3-agent", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_auth_tag_leaves_agent_inactive_and_leaks_nothing() {
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/{UUID}", registrar.http);
    let (_, reply) = send_json(client.post(&url).json(&agent.registration_body()))
        .await
        .unwrap();
    let credential = agent
        .activate_credential(reply["results"]["blob"].as_str().unwrap())
        .unwrap();
    let right = agent.activation_body(&credential);
    let right_tag = right["auth_tag"].as_str().unwrap().to_owned();

    let wrong_tag = zest_tests::agent::auth_tag(b"not the credential", UUID);
    let (status, reply) = send_json(client.put(&url).json(&serde_json::json!({"auth_tag": wrong_tag})))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let text = reply.to_string();
    assert!(
        !text.contains(&right_tag) && !text.contains(&wrong_tag),
        "reply leaks a tag: {text}"
    );
    assert!(
        !text.contains(&base64(&credential)),
        "reply leaks the credential: {text}"
    );

    let admin = registrar.admin_client().unwrap();
    let (status, shown) = send_json(admin.get(format!("{}/v2.6/agents/{UUID}", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 404, "inactive agents are not shown: {shown}");
    assert!(shown["status"].as_str().unwrap().contains("not been activated"));

    // The record survived the wrong tag: the real agent still activates.
    let (status, _) = send_json(client.put(&url).json(&right)).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = send_json(admin.get(format!("{}/v2.6/agents/{UUID}", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Missing tag and unknown agent.
    let (status, _) = send_json(client.put(&url).json(&serde_json::json!({})))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = send_json(
        client
            .put(format!("{}/v2.6/agents/unknown", registrar.http))
            .json(&right),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_same_identity_renews_credential_different_ak_is_forbidden() {
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();

    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/{UUID}", registrar.http);
    let (status, first) = send_json(client.post(&url).json(&agent.registration_body()))
        .await
        .unwrap();
    assert_eq!(status, 200, "{first}");
    let first_credential = agent
        .activate_credential(first["results"]["blob"].as_str().unwrap())
        .unwrap();
    let (status, second) = send_json(client.post(&url).json(&agent.registration_body()))
        .await
        .unwrap();
    assert_eq!(status, 200, "{second}");
    let second_credential = agent
        .activate_credential(second["results"]["blob"].as_str().unwrap())
        .unwrap();
    assert_ne!(
        first_credential, second_credential,
        "each registration makes a fresh credential"
    );
    let (status, _) = send_json(client.put(&url).json(&agent.activation_body(&first_credential)))
        .await
        .unwrap();
    assert_eq!(status, 400, "a superseded credential must not activate");
    let (status, _) = send_json(client.put(&url).json(&agent.activation_body(&second_credential)))
        .await
        .unwrap();
    assert_eq!(status, 200);

    let original_ak = agent.aik_tpm.clone();
    agent.create_ak(AkKind::RsaSsa).unwrap();
    let (status, reply) = send_json(client.post(&url).json(&agent.registration_body()))
        .await
        .unwrap();
    assert_eq!(status, 403, "{reply}");
    let admin = registrar.admin_client().unwrap();
    let (_, shown) = send_json(admin.get(format!("{}/v2.6/agents/{UUID}", registrar.https)))
        .await
        .unwrap();
    assert_eq!(
        shown["results"]["aik_tpm"],
        Value::String(base64(&original_ak)),
        "the stored AK is unchanged"
    );
    assert_eq!(shown["results"]["regcount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_with_a_different_ek_is_forbidden() {
    let tpm = Swtpm::start().unwrap();
    let other_tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();
    let impostor = TestAgent::new(&other_tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let (status, reply) = send_json(
        registrar
            .plain_client()
            .post(format!("{}/v2.6/agents/{UUID}", registrar.http))
            .json(&impostor.registration_body()),
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_with_different_aks_leave_exactly_one_winner() {
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut bodies = Vec::new();
    for _ in 0..6 {
        agent.create_ak(AkKind::RsaSsa).unwrap();
        bodies.push(agent.registration_body());
    }
    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/{UUID}", registrar.http);
    let replies = futures_join(bodies.iter().map(|b| send_json(client.post(&url).json(b)))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.as_ref().unwrap().0).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        bodies.len() - 1,
        "{statuses:?}"
    );
    let winner = statuses.iter().position(|s| *s == 200).unwrap();
    // The database file holds the winner's AK and nothing of the losers'.
    let store = zest::store::SqliteStore::open(&registrar.data.path().join("zest.sqlite")).unwrap();
    let stored = zest::store::RegistrarStore::registered_agent(&store, UUID)
        .unwrap()
        .unwrap();
    assert_eq!(Value::String(stored.aik_tpm), bodies[winner]["aik_tpm"]);
    let admin = registrar.admin_client().unwrap();
    let url_admin = format!("{}/v2.6/agents/{UUID}", registrar.https);
    let (status, _) = send_json(admin.get(&url_admin)).await.unwrap();
    assert_eq!(status, 404, "not activated yet");
    let (_, listing) = send_json(admin.get(format!("{}/v2.6/agents", registrar.https)))
        .await
        .unwrap();
    assert_eq!(listing["results"]["uuids"], serde_json::json!([UUID]));
}

async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A PEM certificate an attacker would pin for itself.
fn attacker_certificate() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["attacker".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_without_activation_leaves_the_agents_contact_data_unchanged() {
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();
    let admin = registrar.admin_client().unwrap();
    let shown = || async {
        let (_, body) = send_json(admin.get(format!("{}/v2.6/agents/{UUID}", registrar.https)))
            .await
            .unwrap();
        body["results"].clone()
    };
    let before = shown().await;

    // The EK, its certificate and the AK are public: anyone can send them again, over plain
    // HTTP, with their own address and certificate.
    let mut hijack = agent.registration_body();
    hijack["ip"] = "192.0.2.66".into();
    hijack["port"] = 6666.into();
    hijack["mtls_cert"] = attacker_certificate().into();
    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/{UUID}", registrar.http);
    let (status, _) = send_json(client.post(&url).json(&hijack)).await.unwrap();
    assert_eq!(status, 200, "a renewal is accepted, but waits for its activation");
    // Without the TPM, the attacker cannot open the credential: a guessed tag is refused.
    let (status, _) = send_json(
        client
            .put(&url)
            .json(&serde_json::json!({"auth_tag": "00".repeat(48)})),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    let after = shown().await;
    for field in ["ip", "port", "mtls_cert", "aik_tpm", "regcount"] {
        assert_eq!(after[field], before[field], "{field} changed: {after}");
    }

    // The agent's own renewal, activated with its TPM, does move it.
    let mut moved = agent.registration_body();
    moved["port"] = 9010.into();
    let (status, reply) = send_json(client.post(&url).json(&moved)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let credential = agent
        .activate_credential(reply["results"]["blob"].as_str().unwrap())
        .unwrap();
    let (status, _) = send_json(client.put(&url).json(&agent.activation_body(&credential)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(shown().await["port"], 9010);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unactivated_registration_expires_and_frees_the_agent_id() {
    let (squatter_tpm, owner_tpm) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let registrar = TestRegistrar::start(RegistrarOptions {
        registration_timeout: std::time::Duration::from_secs(1),
        ..RegistrarOptions::trusting_swtpm_ca()
    })
    .await
    .unwrap();
    // Someone registers the id first and never activates it.
    let squatter = TestAgent::new(&squatter_tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/{UUID}", registrar.http);
    let (status, _) = send_json(client.post(&url).json(&squatter.registration_body()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut owner = TestAgent::new(&owner_tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let (status, _) = send_json(client.post(&url).json(&owner.registration_body()))
        .await
        .unwrap();
    assert_eq!(status, 403, "within its time the registration holds the id");
    // Once the squatter's registration has expired, the owner registers and activates.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if registrar.register_and_activate(&mut owner, "2.6").await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the squatted id never came free"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
