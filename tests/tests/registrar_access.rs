//! Who may call what, versions and unknown routes, and EK certificate trust.

use serde_json::{Value, json};
use zest_tests::ek_issuer::EkIssuer;
use zest_tests::server::{RegistrarOptions, send_json};
use zest_tests::{AkKind, EkCa, EkKind, Swtpm, TestAgent, TestRegistrar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_a_client_certificate_from_our_ca() {
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let list_http = format!("{}/v2.6/agents", registrar.http);
    let list_https = format!("{}/v2.6/agents", registrar.https);

    let (status, body) = send_json(registrar.plain_client().get(&list_http)).await.unwrap();
    assert_eq!(status, 400, "plain HTTP: {body}");
    assert!(body["status"].as_str().unwrap().contains("mTLS"));
    for path in ["v2.6/agents/some-agent", "v3.0/agents/some-agent"] {
        let (status, _) = send_json(
            registrar
                .plain_client()
                .delete(format!("{}/{path}", registrar.http)),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "{path}");
    }

    let anonymous = registrar.anonymous_client().unwrap();
    let (status, body) = send_json(anonymous.get(&list_https)).await.unwrap();
    assert_eq!(status, 403, "TLS without certificate: {body}");
    let (status, _) = send_json(anonymous.get(format!("{}/v2.6/agents/x", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Agents may register over HTTPS without a certificate (the push agent's registrar TLS).
    let (status, _) = send_json(anonymous.get(format!("{}/version", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 200);

    let (status, body) = send_json(registrar.admin_client().unwrap().get(&list_https))
        .await
        .unwrap();
    assert_eq!((status, &body["results"]), (200, &json!({"uuids": []})));

    // A client certificate from another CA fails the handshake.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intruder");
    let cert = params.self_signed(&key).unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap();
    let ca = reqwest::Certificate::from_pem(
        &std::fs::read(registrar.data.path().join("cv_ca/cacert.crt")).unwrap(),
    )
    .unwrap();
    let intruder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .identity(identity)
        .build()
        .unwrap();
    assert!(
        intruder.get(&list_https).send().await.is_err(),
        "untrusted client certificate accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_documents_and_unknown_routes_answer_in_the_envelope() {
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let client = registrar.plain_client();
    for base in [registrar.http.clone(), registrar.https.clone()] {
        let c = if base.starts_with("https") {
            registrar.anonymous_client().unwrap()
        } else {
            client.clone()
        };
        let (status, body) = send_json(c.get(format!("{base}/version"))).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"code": 200, "status": "Success", "results": {
                "current_version": "2.6",
                "supported_versions": ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"]}})
        );
    }
    for (method, path, expected) in [
        ("GET", "v2.7/agents", 404),
        ("GET", "v1.0/agents", 404),
        // Keylime scopes every v2 route to /v2.0 too: the route exists, the body is wrong.
        ("POST", "v2.0/agents/x", 400),
        ("GET", "nothing/here", 404),
        ("GET", "v2.6/agents/x/y/z", 404),
        ("PATCH", "v2.6/agents/x", 405),
        ("DELETE", "version", 405),
    ] {
        let request = client.request(method.parse().unwrap(), format!("{}/{path}", registrar.http));
        let (status, body) = send_json(request).await.unwrap();
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(body["code"], expected, "{method} {path}");
        assert_eq!(body["results"], json!({}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ek_certificate_must_chain_to_the_store() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "chain-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let ca = EkCa::shared();
    let url = |r: &TestRegistrar| format!("{}/v2.6/agents/chain-agent", r.http);

    // No CA in the store: refused, naming the issuer, and nothing stored.
    let empty = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let (status, body) = send_json(
        empty
            .plain_client()
            .post(url(&empty))
            .json(&agent.registration_body()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["status"].as_str().unwrap().contains("swtpm-localca"),
        "{body}"
    );
    let (_, listing) = send_json(
        empty
            .admin_client()
            .unwrap()
            .get(format!("{}/v2.6/agents", empty.https)),
    )
    .await
    .unwrap();
    assert_eq!(listing["results"]["uuids"], json!([]));

    // The operator adds the CAs: taken at the next registration, no restart.
    let store = empty.data.path().join("tpm_cert_store");
    std::fs::copy(ca.root_pem(), store.join("root.pem")).unwrap();
    std::fs::copy(ca.intermediate_pem(), store.join("intermediate.pem")).unwrap();
    empty.register_and_activate(&mut agent, "2.6").await.unwrap();

    // Only the root is trusted: the EK certificate alone does not chain...
    let root_only = TestRegistrar::start(RegistrarOptions {
        require_ek_cert: true,
        trusted_ek_cas: vec![ca.root_pem()],
        ..RegistrarOptions::default()
    })
    .await
    .unwrap();
    let (status, body) = send_json(
        root_only
            .plain_client()
            .post(url(&root_only))
            .json(&agent.registration_body()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    // ...but it does with the intermediate sent after it.
    let mut body = agent.registration_body();
    let intermediate = std::fs::read_to_string(ca.intermediate_pem()).unwrap();
    body["ekcert"] = Value::String(format!("{}{intermediate}", agent.ek_cert_pem().unwrap()));
    let (status, reply) = send_json(root_only.plain_client().post(url(&root_only)).json(&body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_ek_certificate_is_refused() {
    let tpm = Swtpm::start().unwrap();
    let issuer = EkIssuer::new("short-lived EK CA").unwrap();
    let mut agent = TestAgent::new(&tpm, "expired", EkKind::EccP256, AkKind::EcDsaP256).unwrap();
    agent.ek_cert_der = Some(issuer.issue(&agent.ek_tpm, 2015, 2020).unwrap());
    let registrar = TestRegistrar::start(RegistrarOptions {
        require_ek_cert: true,
        trusted_ek_cas: vec![issuer.ca_pem()],
        ..RegistrarOptions::default()
    })
    .await
    .unwrap();
    let (status, body) = send_json(
        registrar
            .plain_client()
            .post(format!("{}/v2.6/agents/expired", registrar.http))
            .json(&agent.registration_body()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["status"]
            .as_str()
            .unwrap()
            .contains("not valid at this time"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ek_checks_an_agent_without_certificate_registers() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "no-cert", EkKind::EccP256, AkKind::RsaSsa).unwrap();
    assert!(agent.ek_cert_der.is_none());
    let registrar = TestRegistrar::start(RegistrarOptions {
        require_ek_cert: false,
        trusted_ek_cas: vec![],
        ..RegistrarOptions::default()
    })
    .await
    .unwrap();
    registrar.register_and_activate(&mut agent, "2.4").await.unwrap();
    let (status, shown) = send_json(
        registrar
            .admin_client()
            .unwrap()
            .get(format!("{}/v2.4/agents/no-cert", registrar.https)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(shown["results"]["ekcert"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_do_not_block_other_clients() {
    // CVE-2023-38200: one idle TLS connection blocked Keylime's registrar.
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let mut idle = Vec::new();
    for addr in [registrar.server.https_addr, registrar.server.http_addr] {
        for _ in 0..64 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
    }
    // A partial TLS ClientHello that never completes.
    let mut half_open = tokio::net::TcpStream::connect(registrar.server.https_addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half_open, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let (status, _) = send_json(
        registrar
            .anonymous_client()
            .unwrap()
            .get(format!("{}/version", registrar.https)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = send_json(
        registrar
            .plain_client()
            .get(format!("{}/version", registrar.http)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "served only after {:?}",
        started.elapsed()
    );
    drop(idle);
}
