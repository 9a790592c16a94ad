//! What the registrar accepts and refuses: every class of bad input is a 400 naming the
//! field and stores nothing; what Keylime's Rust agents really send is accepted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest_tests::server::send_json;
use zest_tests::{AkKind, EkCa, EkKind, Swtpm, TestAgent, TestRegistrar};

/// The AK's TPM2B_PUBLIC with some objectAttributes bits cleared.
fn without_attributes(tpm2b: &[u8], bits: u32) -> String {
    let mut bytes = tpm2b.to_vec();
    let attrs = u32::from_be_bytes(bytes[6..10].try_into().unwrap()) & !bits;
    bytes[6..10].copy_from_slice(&attrs.to_be_bytes());
    B64.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_class_is_refused_with_its_field_named_and_nothing_stored() {
    let tpm = Swtpm::start().unwrap();
    let agent = TestAgent::new(&tpm, "input-agent", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let ecc_agent = TestAgent::new(&tpm, "ecc", EkKind::EccP384, AkKind::EcDsaP256).unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let client = registrar.plain_client();
    let good = agent.registration_body();
    let aik = agent.aik_tpm.clone();

    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    // (case, body, text the error must contain)
    let cases: Vec<(&str, Value, &str)> = vec![
        ("json array", json!([1, 2]), "JSON object"),
        ("aik missing", without("aik_tpm"), "aik_tpm is required"),
        (
            "aik not a string",
            with("aik_tpm", json!(5)),
            "aik_tpm must be a string",
        ),
        (
            "aik not base64",
            with("aik_tpm", json!("@@@not base64@@@")),
            "aik_tpm is not valid base64",
        ),
        (
            "aik truncated",
            with("aik_tpm", json!(B64.encode(&aik[..100]))),
            "aik_tpm is not a valid TPM2B_PUBLIC",
        ),
        (
            "aik trailing",
            with("aik_tpm", json!(B64.encode([aik.as_slice(), &[0]].concat()))),
            "aik_tpm",
        ),
        (
            "aik is the EK",
            with("aik_tpm", json!(B64.encode(&agent.ek_tpm))),
            "sign",
        ),
        (
            "aik not restricted",
            with("aik_tpm", json!(without_attributes(&aik, 1 << 16))),
            "restricted",
        ),
        (
            "aik not fixedTPM",
            with("aik_tpm", json!(without_attributes(&aik, 1 << 1))),
            "fixedTPM",
        ),
        (
            "aik not fixedParent",
            with("aik_tpm", json!(without_attributes(&aik, 1 << 4))),
            "fixedParent",
        ),
        ("ek missing", without("ek_tpm"), "ek_tpm is required"),
        ("ek is the AK", with("ek_tpm", json!(B64.encode(&aik))), "ek_tpm"),
        (
            "ek garbage",
            with("ek_tpm", json!(B64.encode(b"\x00\x05hello"))),
            "ek_tpm",
        ),
        ("ekcert missing", without("ekcert"), "ekcert"),
        ("ekcert text", with("ekcert", json!("hello")), "ekcert"),
        (
            "ekcert random base64",
            with("ekcert", json!(B64.encode([0x30u8, 0x03, 1, 2, 3]))),
            "ekcert",
        ),
        (
            "ekcert bad PEM",
            with(
                "ekcert",
                json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            ),
            "ekcert",
        ),
        (
            "ekcert of another EK",
            with("ekcert", json!(ecc_agent.ek_cert_pem().unwrap())),
            "does not match",
        ),
        (
            "mtls_cert garbage",
            with("mtls_cert", json!("garbage")),
            "mtls_cert",
        ),
        (
            "mtls_cert a key",
            with(
                "mtls_cert",
                json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ),
            "mtls_cert",
        ),
        ("mtls_cert number", with("mtls_cert", json!(1)), "mtls_cert"),
        ("port text", with("port", json!("abc")), "port"),
        ("port zero", with("port", json!(0)), "port"),
        ("port too big", with("port", json!(70000)), "port"),
        ("port object", with("port", json!({})), "port"),
        ("ip with spaces", with("ip", json!("bad host!")), "ip"),
        (
            "ip with newline",
            with("ip", json!("10.0.0.1\nFAKE LOG LINE")),
            "ip",
        ),
        ("iak_cert number", with("iak_cert", json!(5)), "iak_cert"),
    ];
    let url = format!("{}/v2.6/agents/input-agent", registrar.http);
    for (case, body, expected) in &cases {
        let (status, reply) = send_json(client.post(&url).json(body)).await.unwrap();
        assert_eq!(status, 400, "{case}: {reply}");
        assert_eq!(reply["code"], 400, "{case}: {reply}");
        assert_eq!(reply["results"], json!({}), "{case}");
        let message = reply["status"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{case}: {message:?} should mention {expected:?}"
        );
    }

    // Bodies that are not JSON at all, and bad agent ids.
    let (status, reply) = send_json(client.post(&url).body("{not json")).await.unwrap();
    assert_eq!(status, 400, "{reply}");
    assert!(reply["status"].as_str().unwrap().contains("not valid JSON"));
    for bad_id in ["bad%0Aid", "bad%20id", "%1B%5B31m", &"x".repeat(81)] {
        let (status, reply) = send_json(
            client
                .post(format!("{}/v2.6/agents/{bad_id}", registrar.http))
                .json(&good),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "{bad_id}: {reply}");
        assert!(reply["status"].as_str().unwrap().contains("agent_id"), "{reply}");
    }
    let (status, reply) = send_json(client.post(format!("{}/v2.6/agents", registrar.http)).json(&good))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(reply["status"].as_str().unwrap().contains("agent_id"), "{reply}");
    let (status, reply) = send_json(
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(vec![b' '; 300 * 1024]),
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "{reply}");

    let admin = registrar.admin_client().unwrap();
    let (_, listing) = send_json(admin.get(format!("{}/v2.6/agents", registrar.https)))
        .await
        .unwrap();
    assert_eq!(listing["results"]["uuids"], json!([]), "nothing may be stored");

    // The same registrar still takes the good body.
    let (status, reply) = send_json(client.post(&url).json(&good)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_what_keylime_rust_agents_send() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "rust-agent-shape", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();

    // The pull agent's self-signed mTLS certificate: CN=<uuid>, P-256, serial 0.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rust-agent-shape");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0]));
    let mtls_pem = params.self_signed(&key).unwrap().pem();

    // ekcert: the EK certificate followed by further certificates from NV (swtpm's platform
    // certificate in the real agent; here the CA's intermediate), as several PEM blocks.
    let intermediate = std::fs::read_to_string(EkCa::shared().intermediate_pem()).unwrap();
    let mut body = agent.registration_body();
    body["ekcert"] = Value::String(format!("{}{intermediate}", agent.ek_cert_pem().unwrap()));
    body["mtls_cert"] = Value::String(mtls_pem.clone());
    body["port"] = json!("9002");
    body["iak_tpm"] = Value::Null;

    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/rust-agent-shape", registrar.http);
    let (status, reply) = send_json(client.post(&url).json(&body)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let blob = B64.decode(reply["results"]["blob"].as_str().unwrap()).unwrap();
    assert_eq!(&blob[..8], &[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1]);
    assert_eq!(
        blob.len(),
        336,
        "an RSA-2048 EK's credential file is 336 bytes, as tpm2-tools makes it"
    );
    let credential = agent
        .activate_credential(reply["results"]["blob"].as_str().unwrap())
        .unwrap();
    assert_eq!(credential.len(), 32);
    assert!(credential.iter().all(u8::is_ascii_alphanumeric));
    let (status, _) = send_json(client.put(&url).json(&agent.activation_body(&credential)))
        .await
        .unwrap();
    assert_eq!(status, 200);

    let admin = registrar.admin_client().unwrap();
    let (_, shown) = send_json(admin.get(format!("{}/v2.6/agents/rust-agent-shape", registrar.https)))
        .await
        .unwrap();
    assert_eq!(shown["results"]["mtls_cert"], Value::String(mtls_pem));
    assert_eq!(shown["results"]["port"], 9002);
    // Only the EK certificate itself comes back, as base64 DER (what Keylime's tenant decodes).
    assert_eq!(
        shown["results"]["ekcert"],
        Value::String(B64.encode(agent.ek_cert_der.as_ref().unwrap()))
    );
}
