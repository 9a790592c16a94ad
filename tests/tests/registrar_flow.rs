//! Registration and activation of swtpm-backed agents against a registrar on loopback.

use serde_json::Value;
use zest_tests::server::{RegistrarOptions, send_json};
use zest_tests::{AkKind, EkCa, EkKind, Swtpm, TestAgent, TestRegistrar};

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";

/// A registrar trusting the swtpm test CA (root and intermediate in the store).
async fn registrar_trusting_swtpm_ca() -> TestRegistrar {
    let ca = EkCa::shared();
    TestRegistrar::start(RegistrarOptions {
        require_ek_cert: true,
        trusted_ek_cas: vec![ca.root_pem(), ca.intermediate_pem()],
    })
    .await
    .expect("registrar starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_ek_agent_registers_activates_and_is_shown() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, UUID, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let registrar = registrar_trusting_swtpm_ca().await;
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();

    let admin = registrar.admin_client().unwrap();
    let (status, body) = send_json(admin.get(format!("{}/v2.6/agents/{UUID}", registrar.https))).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let results = &body["results"];
    assert_eq!(results["agent_id"], UUID);
    assert_eq!(results["aik_tpm"], Value::String(base64(&agent.aik_tpm)));
    assert_eq!(results["ek_tpm"], Value::String(base64(&agent.ek_tpm)));
    assert_eq!(results["ekcert"], Value::String(base64(agent.ek_cert_der.as_ref().unwrap())));
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
    let registrar = registrar_trusting_swtpm_ca().await;
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();
    let admin = registrar.admin_client().unwrap();
    let (status, body) =
        send_json(admin.get(format!("{}/v2.6/agents/ecc-p384-agent", registrar.https))).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"]["ekcert"], Value::String(base64(agent.ek_cert_der.as_ref().unwrap())));
}
