//! Signed runtime policies (DSSE), as Keylime 7.14.3 checks them at upload
//! (`ima.verify_runtime_policy`): an envelope is verified with the key sent in
//! `runtime_policy_key` or with one a signed upload left; `require_allow_list_signatures`
//! refuses anything unsigned. `zest policy sign runtime` makes what `keylime-policy sign
//! runtime` makes. The interop run (tests/interop/run.sh) crosses both ways with Keylime's
//! own tools.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::dsse::{Envelope, VerifyingKey, python_dumps};
use zest::verifier::VerifierConfig;
use zest_tests::fixture;
use zest_tests::process::zest_binary;
use zest_tests::server::{TestVerifier, send_json};

fn policy() -> Value {
    json!({
        "meta": {"version": 1, "generator": 3, "timestamp": "2026-12-05 10:00:00"},
        "release": 0,
        "digests": {"/usr/bin/hello": ["5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"]},
        "excludes": ["/tmp/.*"],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}

/// `zest policy sign runtime ARGS` in `dir`; stdout, or the test fails with stderr.
fn sign(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(zest_binary().unwrap())
        .current_dir(dir)
        .args(["policy", "sign", "runtime"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn verifier(require: bool) -> TestVerifier {
    let data = tempfile::Builder::new().prefix("zest-dsse-").tempdir().unwrap();
    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.require_allow_list_signatures = require;
    TestVerifier::start_in(data, config).await.unwrap()
}

async fn upload(verifier: &TestVerifier, name: &str, document: &[u8], key: Option<&[u8]>) -> (u16, Value) {
    let admin = verifier.admin_client().unwrap();
    let mut body = json!({"runtime_policy": B64.encode(document)});
    if let Some(key) = key {
        body["runtime_policy_key"] = json!(B64.encode(key));
    }
    send_json(
        admin
            .post(verifier.url("2.6", &format!("allowlists/{name}")))
            .json(&body),
    )
    .await
    .unwrap()
}

async fn stored(verifier: &TestVerifier, name: &str) -> Option<String> {
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = send_json(admin.get(verifier.url("2.6", &format!("allowlists/{name}"))))
        .await
        .unwrap();
    (status == 200).then(|| reply["results"]["runtime_policy"].as_str().unwrap().to_owned())
}

#[test]
fn zest_policy_sign_makes_the_envelope_keylime_policy_makes() {
    let dir = tempfile::tempdir().unwrap();
    // Pretty-printed input: Keylime signs json.dumps of the loaded policy, not the bytes.
    let text = serde_json::to_string_pretty(&policy()).unwrap();
    std::fs::write(dir.path().join("policy.json"), &text).unwrap();
    let printed = sign(dir.path(), &["-r", "policy.json", "--pubkey-outfile", "key.pub"]);
    // With no key given, a new P-256 key at Keylime's default path, readable by its owner only.
    let key_path = dir.path().join("keylime-ecdsa-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let envelope: Value = serde_json::from_str(printed.trim_end()).unwrap();
    assert_eq!(
        envelope.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["payload", "payloadType", "signatures"]
    );
    assert_eq!(envelope["payloadType"], "application/vnd.keylime+json");
    let payload = B64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(payload).unwrap(), python_dumps(&text).unwrap());
    // The ecdsa keyid: SHA-256 of the public key's PEM text.
    let public = std::fs::read(dir.path().join("key.pub")).unwrap();
    assert!(public.starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(
        envelope["signatures"][0]["keyid"],
        hex::encode(zest::evidence::HashAlg::Sha256.digest(&[&public]))
    );
    let key = VerifyingKey::from_pem(&public).unwrap();
    Envelope::parse(printed.as_bytes()).unwrap().verify(&key).unwrap();

    // Signing again with that key (-k); a generated key is never written over.
    let again = sign(dir.path(), &["-r", "policy.json", "-k", "keylime-ecdsa-key.pem"]);
    Envelope::parse(again.as_bytes()).unwrap().verify(&key).unwrap();
    let out = Command::new(zest_binary().unwrap())
        .current_dir(dir.path())
        .args(["policy", "sign", "runtime", "-r", "policy.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // x509: the keyid is base64 of a self-signed certificate, whose key verifies.
    sign(
        dir.path(),
        &[
            "-r",
            "policy.json",
            "-b",
            "x509",
            "-p",
            "x509-key.pem",
            "-c",
            "cert.pem",
            "-o",
            "signed-x509.json",
        ],
    );
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let signed = std::fs::read(dir.path().join("signed-x509.json")).unwrap();
    let envelope: Value = serde_json::from_slice(&signed).unwrap();
    assert_eq!(envelope["signatures"][0]["keyid"], B64.encode(&cert));
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&cert).unwrap();
    let parsed = parsed.parse_x509().unwrap();
    assert_eq!(parsed.subject().to_string(), "CN=dsse_lib");
    Envelope::parse(&signed)
        .unwrap()
        .verify(&VerifyingKey::from_pem(&cert).unwrap())
        .unwrap();

    // What Keylime refuses to sign, zest refuses too, naming the problem.
    std::fs::write(dir.path().join("not-a-policy.json"), r#"{"digests": 7}"#).unwrap();
    for (args, expected) in [
        (
            vec!["-r", "not-a-policy.json", "-k", "keylime-ecdsa-key.pem"],
            "not a valid runtime policy",
        ),
        (
            vec!["-r", "policy.json", "-b", "x509", "-k", "keylime-ecdsa-key.pem"],
            "--cert-outfile",
        ),
    ] {
        let out = Command::new(zest_binary().unwrap())
            .current_dir(dir.path())
            .args(["policy", "sign", "runtime"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    let rsa = zest_tests::pull_env::rsa_private_pem();
    std::fs::write(dir.path().join("rsa.pem"), rsa).unwrap();
    let out = Command::new(zest_binary().unwrap())
        .current_dir(dir.path())
        .args(["policy", "sign", "runtime", "-r", "policy.json", "-k", "rsa.pem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("elliptic-curve"),
        "{stderr}"
    );
}

/// Keylime's upstream test vectors: `runtime-policy-test-signed.json` verifies with
/// `runtime-policy-pubkey.pub` and its payload is then refused by the schema (Keylime's
/// verifier answers the same: its digests carry a `sha256:` prefix); the `-bad` twin fails
/// verification.
#[tokio::test]
async fn keylimes_signed_test_vectors_verify_and_the_bad_one_is_refused() {
    let verifier = verifier(false).await;
    let key = fixture("keylime/test/data/runtime-policy-pubkey.pub");
    let good = fixture("keylime/test/data/runtime-policy-test-signed.json");
    let bad = fixture("keylime/test/data/runtime-policy-test-signed-bad.json");
    let (status, reply) = upload(&verifier, "upstream", &good, Some(&key)).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["status"].as_str().unwrap().contains("does not match"),
        "the signature passed, the schema refused: {reply}"
    );
    let (status, reply) = upload(&verifier, "upstream-bad", &bad, Some(&key)).await;
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["status"]
            .as_str()
            .unwrap()
            .starts_with("Runtime policy failed DSSE signature verification!"),
        "{reply}"
    );
    assert_eq!(stored(&verifier, "upstream-bad").await, None);
}

#[tokio::test]
async fn signed_policies_are_verified_at_upload_and_enrolment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.json"), policy().to_string()).unwrap();
    let envelope = sign(
        dir.path(),
        &[
            "-r",
            "policy.json",
            "-p",
            "key.pem",
            "--pubkey-outfile",
            "key.pub",
        ],
    );
    let envelope = envelope.trim_end().as_bytes().to_vec();
    let key = std::fs::read(dir.path().join("key.pub")).unwrap();
    let verifier = verifier(false).await;

    // Signed, with its key: stored as sent (the envelope, as Keylime stores it).
    let (status, reply) = upload(&verifier, "signed", &envelope, Some(&key)).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        stored(&verifier, "signed").await.unwrap().as_bytes(),
        &envelope[..]
    );

    // A hostile uploader: a changed payload, another key, an RSA key, a key with an unsigned
    // policy. Each is refused and nothing is stored.
    let mut tampered: Value = serde_json::from_slice(&envelope).unwrap();
    let mut inner = policy();
    inner["excludes"] = json!([".*"]);
    tampered["payload"] = json!(B64.encode(inner.to_string()));
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let other = zest::dsse::SigningKey::generate().unwrap().public_pem().unwrap();
    let rsa_public = fixture("keylime/test/data/ima_keys/rsa2048pub.pem");
    let unsigned = policy().to_string().into_bytes();
    for (name, document, key, code, message) in [
        (
            "tampered",
            &tampered,
            &key,
            401,
            "Runtime policy failed DSSE signature verification!",
        ),
        (
            "other-key",
            &envelope,
            &other.as_bytes().to_vec(),
            401,
            "Runtime policy failed DSSE signature verification!",
        ),
        ("rsa-key", &envelope, &rsa_public, 400, "not elliptic-curve"),
        ("unsigned", &unsigned, &key, 400, "Runtime policy is not signed!"),
    ] {
        let (status, reply) = upload(&verifier, name, document, Some(key)).await;
        assert_eq!(status, code, "{name}: {reply}");
        assert!(
            reply["status"].as_str().unwrap().contains(message),
            "{name}: {reply}"
        );
        assert_eq!(stored(&verifier, name).await, None, "{name}");
    }

    // An enrolment carries the same two fields, and the same check.
    let admin = verifier.admin_client().unwrap();
    let ak = fixture("keylime/test-data/files/ak.pub");
    let enrol = |document: &[u8], key: &[u8]| {
        json!({
            "v": null, "cloudagent_ip": "127.0.0.1", "cloudagent_port": 9002,
            "tpm_policy": "{\"mask\": \"0x400\"}",
            "runtime_policy": B64.encode(document), "runtime_policy_name": null,
            "runtime_policy_key": B64.encode(key),
            "mb_policy": null, "mb_policy_name": "", "ima_sign_verification_keys": "",
            "metadata": "{}", "revocation_key": "",
            "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
            "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(&ak),
            "mtls_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        })
    };
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "agents/forged"))
            .json(&enrol(&tampered, &key)),
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{reply}");
    let (status, _) = send_json(admin.get(verifier.url("2.6", "agents/forged")))
        .await
        .unwrap();
    assert_eq!(status, 404, "a refused enrolment stores nothing");
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "agents/signed-agent"))
            .json(&enrol(&envelope, &key)),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn require_allow_list_signatures_refuses_unsigned_policies_and_finds_stored_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.json"), policy().to_string()).unwrap();
    let envelope = sign(
        dir.path(),
        &[
            "-r",
            "policy.json",
            "-p",
            "key.pem",
            "--pubkey-outfile",
            "key.pub",
        ],
    );
    let envelope = envelope.trim_end().as_bytes().to_vec();
    let key = std::fs::read(dir.path().join("key.pub")).unwrap();
    let verifier = verifier(true).await;

    let unsigned = policy().to_string().into_bytes();
    let (status, reply) = upload(&verifier, "plain", &unsigned, None).await;
    assert_eq!(
        (status, reply["status"].as_str().unwrap()),
        (
            401,
            "Runtime policy signature verification required but no key was given!"
        )
    );
    // A signed policy whose key the verifier has never seen.
    let (status, _) = upload(&verifier, "no-key", &envelope, None).await;
    assert_eq!(status, 401);
    // A keyid that tries to name a file elsewhere is no key at all.
    let mut traversal: Value = serde_json::from_slice(&envelope).unwrap();
    traversal["signatures"][0]["keyid"] = json!("../../cv_ca/cacert");
    let (status, _) = upload(
        &verifier,
        "traversal",
        &serde_json::to_vec(&traversal).unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 401);

    let (status, reply) = upload(&verifier, "first", &envelope, Some(&key)).await;
    assert_eq!(status, 201, "{reply}");
    // The key is kept by its digest (the keyid): the next upload need not send it.
    let (status, reply) = upload(&verifier, "second", &envelope, None).await;
    assert_eq!(status, 201, "{reply}");
    let mut tampered: Value = serde_json::from_slice(&envelope).unwrap();
    tampered["payloadType"] = json!("text/plain");
    let (status, _) = upload(
        &verifier,
        "retyped",
        &serde_json::to_vec(&tampered).unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 401, "the stored key does not verify a changed envelope");
    // The empty policy of an enrolment without one is unsigned too.
    assert_eq!(stored(&verifier, "plain").await, None);
}

#[test]
fn zest_tenant_checks_a_signed_policy_before_sending_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.json"), policy().to_string()).unwrap();
    sign(
        dir.path(),
        &[
            "-r",
            "policy.json",
            "-p",
            "key.pem",
            "--pubkey-outfile",
            "key.pub",
            "-o",
            "signed.json",
        ],
    );
    let other = zest::dsse::SigningKey::generate().unwrap().public_pem().unwrap();
    std::fs::write(dir.path().join("other.pub"), other).unwrap();
    let ca = Command::new(zest_binary().unwrap())
        .current_dir(dir.path())
        .args(["--data-dir", ".", "ca", "init"])
        .env_remove("ZEST_DATA_DIR")
        .output()
        .unwrap();
    assert!(ca.status.success(), "{}", String::from_utf8_lossy(&ca.stderr));
    // No verifier is listening: each refusal happens before any connection.
    for (file, key, expected) in [
        ("signed.json", None, "no key was given"),
        ("policy.json", Some("key.pub"), "Runtime policy is not signed!"),
        (
            "signed.json",
            Some("other.pub"),
            "failed DSSE signature verification",
        ),
    ] {
        let mut command = Command::new(zest_binary().unwrap());
        command
            .current_dir(dir.path())
            .args([
                "--data-dir",
                ".",
                "tenant",
                "--verifier",
                "127.0.0.1:9",
                "runtime-policy",
                "create",
            ])
            .args(["-n", "p", "-f", file]);
        if let Some(key) = key {
            command.args(["--sig-key", key]);
        }
        let out = command.env_remove("ZEST_DATA_DIR").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{file} {key:?}: {stderr}"
        );
    }
}
