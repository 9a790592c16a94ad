//! Roles come from client certificates: an operator's certificate reaches the operator
//! routes; an agent's certificate, a server certificate presented as a client and one that
//! names two roles do not, although all of them chain to the same CA.

use std::path::Path;

use zest::api::Role;
use zest::net::{TlsMaterial, Usage};
use zest_tests::TestRegistrar;
use zest_tests::server::{RegistrarOptions, TestVerifier, send_json};

/// An HTTPS client trusting the CA in `ca_dir` and presenting `cert`/`key`.
fn client(ca_dir: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    zest_tests::server::client_presenting(ca_dir, cert, key).unwrap()
}

/// A certificate of this CA without any role of ours, as Keylime's own CA issues them
/// (clientAuth), or as earlier zest versions issued server certificates (serverAuth and
/// clientAuth).
fn role_less(
    ca_dir: &Path,
    out: &Path,
    stem: &str,
    usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_pem = std::fs::read_to_string(ca_dir.join("cacert.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-private.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, stem);
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (
        out.join(format!("{stem}-cert.crt")),
        out.join(format!("{stem}-private.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test]
async fn only_operator_certificates_reach_operator_routes() {
    let verifier = TestVerifier::start().await.unwrap();
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    for (name, data, url) in [
        ("verifier", verifier.data.path(), verifier.url("2.6", "agents")),
        (
            "registrar",
            registrar.data.path(),
            format!("{}/v2.6/agents", registrar.https),
        ),
    ] {
        let ca_dir = data.join("cv_ca");
        let material = TlsMaterial { dir: ca_dir.clone() };
        let out = tempfile::tempdir().unwrap();
        let (agent_cert, agent_key) = material
            .issue(out.path(), "agent", &["agent".into()], Usage::Client(Role::Agent))
            .unwrap();
        let (operator_cert, operator_key) = material
            .issue(
                out.path(),
                "alice",
                &["alice".into()],
                Usage::Client(Role::Operator),
            )
            .unwrap();
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (keylime_cert, keylime_key) = role_less(&ca_dir, out.path(), "keylime", vec![ClientAuth]);
        let (dual_cert, dual_key) = role_less(&ca_dir, out.path(), "dual", vec![ServerAuth, ClientAuth]);

        // The generated tenant certificate, an issued operator and a Keylime-style client
        // certificate without a role of ours are operators.
        for (who, cert, key) in [
            (
                "client-cert.crt",
                ca_dir.join("client-cert.crt"),
                ca_dir.join("client-private.pem"),
            ),
            ("issued operator", operator_cert, operator_key),
            ("role-less client", keylime_cert, keylime_key),
        ] {
            let (status, body) = send_json(client(&ca_dir, &cert, &key).get(&url)).await.unwrap();
            assert_eq!(status, 200, "{name}, {who}: {body}");
        }
        // An agent's certificate and a server certificate allowing clientAuth (as earlier
        // versions issued them) are not.
        for (who, cert, key, needle) in [
            ("agent", agent_cert, agent_key, "role is agent"),
            ("dual-use server certificate", dual_cert, dual_key, "role is none"),
        ] {
            let (status, body) = send_json(client(&ca_dir, &cert, &key).get(&url)).await.unwrap();
            assert_eq!(status, 403, "{name}, {who}: {body}");
            assert!(
                body["status"].as_str().unwrap().contains(needle),
                "{name}, {who}: {body}"
            );
        }
        // The service's own server certificate (serverAuth only) does not even complete the
        // handshake as a client.
        let server = client(
            &ca_dir,
            &ca_dir.join("server-cert.crt"),
            &ca_dir.join("server-private.pem"),
        );
        assert!(send_json(server.get(&url)).await.is_err(), "{name}");
    }
}

#[test]
fn server_certificates_carry_server_auth_only_and_clients_their_role() {
    let dir = tempfile::tempdir().unwrap();
    TlsMaterial::ensure(dir.path(), &[]).unwrap();
    let der = |file: &str| zest::net::load_certs(&dir.path().join(file)).unwrap().remove(0);
    assert_eq!(Role::of_certificate(&der("server-cert.crt")), Role::None);
    assert_eq!(Role::of_certificate(&der("client-cert.crt")), Role::Operator);
    let server = der("server-cert.crt");
    let (_, cert) = x509_parser::parse_x509_certificate(&server).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
}

#[tokio::test]
async fn every_operation_the_document_marks_for_operators_refuses_an_agent_certificate() {
    let verifier = TestVerifier::start().await.unwrap();
    let ca_dir = verifier.data.path().join("cv_ca");
    let out = tempfile::tempdir().unwrap();
    let (cert, key) = TlsMaterial { dir: ca_dir.clone() }
        .issue(out.path(), "agent", &["agent".into()], Usage::Client(Role::Agent))
        .unwrap();
    let agent = client(&ca_dir, &cert, &key);
    let (_, document) = send_json(agent.get(format!("{}/openapi.json", verifier.https)))
        .await
        .unwrap();
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{v}", "v2.6")
            .replace("{id}", "some-agent")
            .replace("{name}", "some-policy")
            .replace("{which}", "latest");
        for (method, operation) in operations.as_object().unwrap() {
            let for_operators = operation["description"]
                .as_str()
                .is_some_and(|d| d.contains("operator's client certificate"));
            let request = agent
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", verifier.https),
                )
                .header("content-type", "application/json")
                .body("{}");
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if for_operators {
                assert_eq!(status, 403, "{method} {path}: {body}");
                assert!(body.contains("role is agent"), "{method} {path}: {body}");
                checked += 1;
            } else {
                assert!(!body.contains("role is agent"), "{method} {path} is open: {body}");
            }
        }
    }
    assert!(checked > 20, "only {checked} operator operations");
}
