//! The built-in `keylime-runtime` policy component against Keylime's runtime-policy
//! semantics: Keylime's fixture policy and IMA keys, and lists generated here.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256K1_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest::evidence::ima::{ImaPosition, replay};
use zest::policy::runtime::{ImaEvidence, RuntimePolicy, Verdict};
use zest::policy::{PolicyError, PolicyLimits, PolicyRuntime, builtin_runtime};
use zest_tests::fixture;
use zest_tests::ima::{ImaLog, ima_signature_v2};

const RSA_KEY_ID: u32 = 0xf345_2d23;

/// One runtime for the file: the component is compiled once.
fn runtime() -> &'static PolicyRuntime {
    static RUNTIME: std::sync::OnceLock<PolicyRuntime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| PolicyRuntime::new(PolicyLimits::default(), None).unwrap())
}

fn load(runtime: &PolicyRuntime, document: &Value) -> Result<RuntimePolicy, PolicyError> {
    RuntimePolicy::load(
        runtime,
        "keylime-runtime",
        builtin_runtime("keylime-runtime").unwrap(),
        document.to_string().as_bytes(),
    )
}

/// An empty policy of the current format, then `digests` and whatever `edit` changes.
fn doc(digests: Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut p = json!({
        "meta": {"version": 1, "generator": 3, "timestamp": "2026-11-28 00:00:00"},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    });
    edit(&mut p);
    p
}

fn evaluate_with(
    policy: &RuntimePolicy,
    text: &str,
    prior_state: Option<Vec<u8>>,
    boot_aggregates: &[(HashAlg, Vec<u8>)],
) -> Verdict {
    let log_hash = policy.log_hash_alg().unwrap();
    let start = ImaPosition::start(HashAlg::Sha256);
    let dry = replay(text, HashAlg::Sha256, log_hash, &start, None);
    let replayed = replay(text, HashAlg::Sha256, log_hash, &start, Some(&dry.final_pcr10));
    assert!(replayed.parse_errors.is_empty(), "{:?}", replayed.parse_errors);
    policy
        .evaluate(&ImaEvidence {
            text,
            replay: &replayed,
            bank: HashAlg::Sha256,
            start_offset: 0,
            boot_aggregates,
            prior_state,
        })
        .unwrap()
}

fn evaluate(policy: &RuntimePolicy, log: &ImaLog) -> Verdict {
    evaluate_with(policy, &log.text(), None, &[])
}

fn ids(v: &Verdict) -> Vec<(String, Option<u64>)> {
    v.failures.iter().map(|f| (f.event_id.clone(), f.entry)).collect()
}

fn context(v: &Verdict, i: usize) -> Value {
    serde_json::from_str(&v.failures[i].context).unwrap()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    HashAlg::Sha256.digest(&[data])
}

fn pem_der(pem: &[u8], label: &str) -> Vec<u8> {
    let text = String::from_utf8(pem.to_vec()).unwrap();
    let start = text.find(&format!("-----BEGIN {label}")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text.as_bytes()[start..]).unwrap();
    pem.contents
}

fn rsa_fixture_key() -> RsaKeyPair {
    let pem = fixture("keylime/test/data/ima_keys/rsa2048.pem");
    RsaKeyPair::from_der(&pem_der(&pem, "RSA PRIVATE KEY")).unwrap()
}

fn rsa_sign(key: &RsaKeyPair, content: &[u8]) -> Vec<u8> {
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), content, &mut sig)
        .unwrap();
    sig
}

/// `verification-keys` holding Keylime's RSA test key, its key id left to be computed.
fn rsa_verification_keys() -> String {
    let der = pem_der(
        &fixture("keylime/test/data/ima_keys/rsa2048pub.pem"),
        "PUBLIC KEY",
    );
    json!({"meta": {"version": 1}, "keyids": [], "pubkeys": [B64.encode(der)]}).to_string()
}

/// Keylime's fixture policy with its legacy `sha256:` boot_aggregate value made plain hex.
fn fixture_policy_corrected() -> Value {
    let mut p: Value =
        serde_json::from_slice(&fixture("keylime/test/data/runtime-policy-test.json")).unwrap();
    let agg = p["digests"]["boot_aggregate"][0]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    p["digests"]["boot_aggregate"] = json!([agg]);
    p
}

#[test]
fn keylime_fixture_policy_is_refused_as_keylime_refuses_it_and_its_corrected_form_passes_its_files() {
    let rt = runtime();
    let original: Value =
        serde_json::from_slice(&fixture("keylime/test/data/runtime-policy-test.json")).unwrap();
    match load(rt, &original) {
        Err(PolicyError::Load(why)) => {
            assert!(why.contains(r#"digests["boot_aggregate"][0]"#), "{why}");
            assert!(why.contains("does not match '^[0-9a-f]{40,128}$'"), "{why}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the legacy sha256: value must not pass Keylime's schema"),
    }

    let corrected = fixture_policy_corrected();
    let policy = load(rt, &corrected).unwrap();
    assert_eq!(policy.log_hash_alg(), Some(HashAlg::Sha1));
    let mut log = ImaLog::default();
    let aggregate = hex::decode(corrected["digests"]["boot_aggregate"][0].as_str().unwrap()).unwrap();
    log.add_ima_ng_with("boot_aggregate", "sha256", &aggregate);
    for (path, digests) in corrected["digests"].as_object().unwrap() {
        if path != "boot_aggregate" {
            log.add_ima_ng_with(path, "sha1", &hex::decode(digests[0].as_str().unwrap()).unwrap());
        }
    }
    let pass = evaluate(&policy, &log);
    assert!(pass.failures.is_empty(), "{:?}", pass.failures);
    assert_eq!(log.len(), 21);

    // One unknown file and one known file with another digest.
    log.add_ima_ng_with("/usr/bin/unknown", "sha1", &[7; 20]);
    log.add_ima_ng_with("/boot/grub2/i386-pc/tr.mod", "sha1", &[8; 20]);
    let fail = evaluate(&policy, &log);
    assert_eq!(
        ids(&fail),
        vec![
            ("ima.validation.ima-ng.not_in_allowlist".to_owned(), Some(21)),
            ("ima.validation.ima-ng.runtime_policy_hash".to_owned(), Some(22)),
        ]
    );
    assert_eq!(
        context(&fail, 0)["message"],
        "File not found in allowlist: /usr/bin/unknown"
    );
    assert_eq!(context(&fail, 1)["got"], hex::encode([8; 20]));
    assert_eq!(
        context(&fail, 1)["expected"],
        json!(["e295d64734757d946dbbf294d72edf62a36ab157"])
    );
    assert!(fail.failures.iter().all(|f| f.recoverable));
}

#[test]
fn excludes_violations_pcr_and_template_hash_rules() {
    let rt = runtime();
    let known = sha256(b"known");
    let policy = load(
        rt,
        &doc(json!({"/usr/bin/known": [hex::encode(&known)]}), |p| {
            p["excludes"] = json!(["/tmp", r"/var/log/.*\.log$", r"(?i)/OPT/"]);
        }),
    )
    .unwrap();
    let mut log = ImaLog::default();
    log.add_ima_ng("/usr/bin/known", &known);
    log.add_ima_ng("/tmpfile", &[1; 32]); // `/tmp` matches at the start only
    log.add_ima_ng("/var/log/a.log", &[2; 32]);
    log.add_ima_ng("/opt/app", &[3; 32]);
    log.add_violation("/usr/bin/being-written");
    assert!(evaluate(&policy, &log).failures.is_empty());

    log.add_ima_ng("/x/tmp", &[4; 32]);
    log.add_ima_ng("/var/log/a.log.1", &[5; 32]);
    // A wrong PCR column is reported and the entry is still checked.
    let mut other_pcr = ImaLog::default();
    other_pcr.add_ima_ng("/usr/bin/known", &known);
    log.add_raw_line(&other_pcr.line(0).replacen("10 ", "11 ", 1));
    // A digest edited after measuring no longer matches its template hash.
    let edited = log.line(0).replace(&hex::encode(&known), &hex::encode([9; 32]));
    log.add_raw_line(&edited);
    let v = evaluate(&policy, &log);
    assert_eq!(
        ids(&v),
        vec![
            ("ima.validation.ima-ng.not_in_allowlist".to_owned(), Some(5)),
            ("ima.validation.ima-ng.not_in_allowlist".to_owned(), Some(6)),
            ("ima.validation.ima_pcr".to_owned(), Some(7)),
            ("ima.validation.ima_hash".to_owned(), Some(8)),
        ]
    );
    assert_eq!(context(&v, 2)["got"], "11");
}

#[test]
fn boot_aggregates_from_a_verified_boot_log_join_the_policy_list() {
    let rt = runtime();
    let policy = load(rt, &doc(json!({}), |_| {})).unwrap();
    let aggregate = sha256(b"pcr 0..9");
    let mut log = ImaLog::default();
    log.add_ima_ng("boot_aggregate", &aggregate);
    let text = log.text();
    let without = evaluate_with(&policy, &text, None, &[]);
    assert_eq!(ids(&without)[0].0, "ima.validation.ima-ng.not_in_allowlist");
    let with = evaluate_with(&policy, &text, None, &[(HashAlg::Sha256, aggregate.clone())]);
    assert!(with.failures.is_empty(), "{:?}", with.failures);
    let other = evaluate_with(
        &policy,
        &text,
        None,
        &[(HashAlg::Sha256, sha256(b"another boot"))],
    );
    assert_eq!(ids(&other)[0].0, "ima.validation.ima-ng.runtime_policy_hash");
}

#[test]
fn a_good_ima_signature_beats_the_allowlist_and_a_bad_one_falls_back_to_it() {
    let rt = runtime();
    let key = rsa_fixture_key();
    let content = b"#!/bin/sh\necho signed\n";
    let digest = sha256(content);
    let xattr = ima_signature_v2(4, RSA_KEY_ID, &rsa_sign(&key, content));
    // The allowlist names another digest for the path: the signature decides.
    let digests = json!({"/usr/bin/signed": [hex::encode([0xaa; 32])]});
    let with_key = load(
        rt,
        &doc(digests.clone(), |p| {
            p["verification-keys"] = json!(rsa_verification_keys())
        }),
    )
    .unwrap();
    let mut log = ImaLog::default();
    log.add_ima_sig("/usr/bin/signed", "sha256", &digest, &xattr);
    assert!(evaluate(&with_key, &log).failures.is_empty());

    // Without the key, or over another file's digest, the allowlist decides.
    let without_key = load(rt, &doc(digests.clone(), |_| {})).unwrap();
    assert_eq!(
        ids(&evaluate(&without_key, &log))[0].0,
        "ima.validation.ima-ng.runtime_policy_hash"
    );
    let mut forged = ImaLog::default();
    forged.add_ima_sig("/usr/bin/signed", "sha256", &sha256(b"other"), &xattr);
    assert_eq!(
        ids(&evaluate(&with_key, &forged))[0].0,
        "ima.validation.ima-ng.runtime_policy_hash"
    );
    // The header names sha1 but the file digest is sha256: not verified.
    let mut mismatched = ImaLog::default();
    mismatched.add_ima_sig(
        "/usr/bin/signed",
        "sha256",
        &digest,
        &ima_signature_v2(2, RSA_KEY_ID, &rsa_sign(&key, content)),
    );
    assert_eq!(
        ids(&evaluate(&with_key, &mismatched))[0].0,
        "ima.validation.ima-ng.runtime_policy_hash"
    );
    // An unsigned ima-sig entry is an ordinary allowlist check.
    let mut unsigned = ImaLog::default();
    unsigned.add_ima_sig("/usr/bin/signed", "sha256", &[0xaa; 32], b"");
    assert!(evaluate(&with_key, &unsigned).failures.is_empty());
    // A malformed signature header is dropped from the template data: template hash fails.
    let mut malformed = ImaLog::default();
    malformed.add_ima_sig("/usr/bin/signed", "sha256", &digest, &xattr);
    let line = malformed.line(0).to_owned();
    malformed.set_line(0, format!("{}00", line));
    let v = evaluate(&with_key, &malformed);
    assert_eq!(ids(&v)[0].0, "ima.validation.ima_hash");
}

#[test]
fn secp256k1_signatures_from_keylimes_test_key_verify() {
    let rt = runtime();
    let pem = fixture("keylime/test/data/ima_keys/secp256k1.pem");
    let pair = EcdsaKeyPair::from_private_key_der(
        &ECDSA_P256K1_SHA256_ASN1_SIGNING,
        &pem_der(&pem, "EC PRIVATE KEY"),
    )
    .unwrap();
    let mut spki = hex::decode("3056301006072a8648ce3d020106052b8104000a034200").unwrap();
    spki.extend_from_slice(pair.public_key().as_ref());
    let keys = json!({"keyids": [0x531f_4025u32], "pubkeys": [B64.encode(&spki)]}).to_string();
    let policy = load(rt, &doc(json!({}), |p| p["verification-keys"] = json!(keys))).unwrap();
    let content = b"libsecp.so";
    let sig = pair.sign(&SystemRandom::new(), content).unwrap();
    let mut log = ImaLog::default();
    log.add_ima_sig(
        "/usr/lib/libsecp.so",
        "sha256",
        &sha256(content),
        &ima_signature_v2(4, 0x531f_4025, sig.as_ref()),
    );
    assert!(evaluate(&policy, &log).failures.is_empty());
    // Another key id names no key.
    let mut other = ImaLog::default();
    other.add_ima_sig(
        "/usr/lib/libsecp.so",
        "sha256",
        &sha256(content),
        &ima_signature_v2(4, 1, sig.as_ref()),
    );
    assert_eq!(
        ids(&evaluate(&policy, &other))[0].0,
        "ima.validation.ima-ng.not_in_allowlist"
    );
}

/// A certificate for IMA signing with a known SubjectKeyIdentifier, and its key.
fn ima_certificate(skid_tail: u32) -> (Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ima".into()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let mut skid = vec![0x11; 16];
    skid.extend_from_slice(&skid_tail.to_be_bytes());
    params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(skid);
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), key)
}

fn ecdsa_sign(key: &rcgen::KeyPair, content: &[u8]) -> Vec<u8> {
    let pair = EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
    )
    .unwrap();
    pair.sign(&SystemRandom::new(), content)
        .unwrap()
        .as_ref()
        .to_vec()
}

#[test]
fn keys_measured_into_keyrings_are_checked_learned_and_carried_in_the_state() {
    let rt = runtime();
    let (cert, key) = ima_certificate(0xfeed_0001);
    let content = b"a binary signed by the distribution key";
    let xattr = ima_signature_v2(4, 0xfeed_0001, &ecdsa_sign(&key, content));
    let keyring = json!({".ima": [hex::encode(sha256(&cert))]});
    let policy = load(rt, &doc(json!({}), |p| p["keyrings"] = keyring.clone())).unwrap();

    let mut log = ImaLog::default();
    log.add_ima_buf(".ima", &cert);
    log.add_ima_sig("/usr/bin/tool", "sha256", &sha256(content), &xattr);
    let first = evaluate(&policy, &log);
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    let state = first.state.clone().expect("learned keys travel in the state");

    // Next round: only the new entry, the key comes from the state.
    let mut next = ImaLog::default();
    next.add_ima_sig("/usr/bin/tool", "sha256", &sha256(content), &xattr);
    assert!(
        evaluate_with(&policy, &next.text(), Some(state), &[])
            .failures
            .is_empty()
    );
    assert_eq!(
        ids(&evaluate(&policy, &next))[0].0,
        "ima.validation.ima-ng.not_in_allowlist"
    );

    // A key whose digest the `.ima` list does not hold fails and is not learned.
    let (stranger, stranger_key) = ima_certificate(0xfeed_0002);
    let mut log = ImaLog::default();
    log.add_ima_buf(".ima", &stranger);
    log.add_ima_sig(
        "/usr/bin/tool",
        "sha256",
        &sha256(content),
        &ima_signature_v2(4, 0xfeed_0002, &ecdsa_sign(&stranger_key, content)),
    );
    let v = evaluate(&policy, &log);
    assert_eq!(
        ids(&v),
        vec![
            ("ima.validation.ima-ng.runtime_policy_hash".to_owned(), Some(0)),
            ("ima.validation.ima-ng.not_in_allowlist".to_owned(), Some(1)),
        ]
    );

    // An ignored keyring is neither checked nor learned.
    let ignoring = load(
        rt,
        &doc(json!({}), |p| p["ima"]["ignored_keyrings"] = json!([".ima"])),
    )
    .unwrap();
    let v = evaluate(&ignoring, &log);
    assert_eq!(
        ids(&v),
        vec![("ima.validation.ima-ng.not_in_allowlist".to_owned(), Some(1))]
    );
}

#[test]
fn other_ima_buf_entries_are_checked_against_ima_buf() {
    let rt = runtime();
    let version = b"6.11.5-300.fc41.x86_64";
    let policy = load(
        rt,
        &doc(json!({}), |p| {
            p["ima-buf"] = json!({"kernel_version": [hex::encode(sha256(version))]})
        }),
    )
    .unwrap();
    let mut log = ImaLog::default();
    log.add_ima_buf("kernel_version", version);
    assert!(evaluate(&policy, &log).failures.is_empty());
    log.add_ima_buf("kernel_version", b"6.12.0-evil");
    log.add_ima_buf("selinux-policy-hash", b"x");
    assert_eq!(
        ids(&evaluate(&policy, &log)),
        vec![
            ("ima.validation.ima-ng.runtime_policy_hash".to_owned(), Some(1)),
            ("ima.validation.ima-ng.not_in_allowlist".to_owned(), Some(2)),
        ]
    );
}

#[test]
fn bad_documents_are_refused_at_load_with_the_reason() {
    let rt = runtime();
    let refused = |doc: Value, needle: &str| match load(rt, &doc) {
        Err(PolicyError::Load(why)) => assert!(why.contains(needle), "{needle:?} not in {why:?}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted a document that must fail: {needle}"),
    };
    refused(
        doc(json!({}), |p| p["excludes"] = json!(["/ok", "(?<!x)y"])),
        "excludes[1]",
    );
    refused(
        doc(json!({}), |p| p["excludes"] = json!(["/a/(b"])),
        "excludes[0]",
    );
    refused(
        doc(json!({}), |p| p["ima"]["dm_policy"] = json!({"version": 1})),
        "dm_policy",
    );
    refused(
        doc(json!({}), |p| {
            p.as_object_mut().unwrap().remove("release").map(|_| ()).unwrap()
        }),
        "'release' is a required property",
    );
    refused(doc(json!({"/x": []}), |_| {}), "should be non-empty");
    refused(
        doc(
            json!({"/x": ["ABCDEF0123456789ABCDEF0123456789ABCDEF01"]}),
            |_| {},
        ),
        "does not match",
    );
    refused(
        doc(json!({}), |p| p["ima"]["log_hash_alg"] = json!("md5")),
        "log_hash_alg",
    );
    refused(
        doc(json!({}), |p| p["meta"]["generator"] = json!(9)),
        "meta.generator",
    );
    refused(
        doc(json!({}), |p| {
            p["verification-keys"] = json!("{\"pubkeys\": [\"AAAA\"]}")
        }),
        "keyids",
    );
    refused(
        doc(json!({}), |p| {
            p["verification-keys"] = json!(json!({"keyids": [], "pubkeys": ["AAAA"]}).to_string())
        }),
        "pubkeys[0]",
    );
    match RuntimePolicy::load(
        rt,
        "keylime-runtime",
        builtin_runtime("keylime-runtime").unwrap(),
        b"{not json",
    ) {
        Err(PolicyError::Load(why)) => assert!(why.starts_with("invalid JSON"), "{why}"),
        _ => panic!("invalid JSON accepted"),
    }
}

#[test]
fn dsse_envelopes_and_unknown_extra_fields_load() {
    let rt = runtime();
    let known = sha256(b"known");
    let mut inner = doc(json!({"/usr/bin/known": [hex::encode(&known)]}), |_| {});
    inner["zest-note"] = json!("extra properties are tolerated, as in Keylime's schema");
    let envelope = json!({
        "payload": B64.encode(inner.to_string()),
        "payloadType": "application/vnd.keylime+json",
        "signatures": [{"keyid": "k", "sig": "AAAA"}],
    });
    let policy = load(rt, &envelope).unwrap();
    let mut log = ImaLog::default();
    log.add_ima_ng("/usr/bin/known", &known);
    assert!(evaluate(&policy, &log).failures.is_empty());
    log.add_ima_ng("/usr/bin/other", &known);
    assert_eq!(
        ids(&evaluate(&policy, &log))[0].0,
        "ima.validation.ima-ng.not_in_allowlist"
    );
}
