//! Keylime's security advisories as regression tests (anchors.md §4.2): one named test per
//! advisory that applies to a server, with the CVE in its name, each sending what an
//! attacker would and asserting the refusal over real parts (HTTP over loopback, swtpm
//! through the test agent, SQLite files on disk, the `zest` binary). The 2025–26 hardening
//! items of the same table follow as `hardening_2025_…`.
//!
//! | Advisory | Flaw in Keylime | Test |
//! |---|---|---|
//! | CVE-2017-18342 | `yaml.load` on untrusted input | `cve_2017_18342_yaml_and_pickle_payloads_are_refused_as_data_never_run` |
//! | CVE-2021-3406 | quote trusted with the AK the agent presented | `cve_2021_3406_a_quote_signed_by_an_unregistered_ak_fails` |
//! | CVE-2021-43310 | agent accepted unauthenticated U/V keys and payload | not applicable: agent side (zest is the registrar and verifier; the test agent is not the product) |
//! | CVE-2022-23948 | agent trusted `mount` output for its secure tmpfs | not applicable: agent side (zest mounts nothing and parses no tool output) |
//! | CVE-2022-23949 | unsanitised agent id written to logs | `cve_2022_23949_agent_ids_with_newlines_or_escapes_are_refused_and_nothing_stored` |
//! | CVE-2022-23950 | revocation socket at a fixed `/tmp` path | `cve_2022_23950_nothing_under_the_data_directory_is_world_writable`, `cve_2022_23950_a_server_started_under_umask_000_leaves_nothing_world_writable` |
//! | CVE-2022-23951 | zlib evidence, decompression bomb | `cve_2022_23951_push_evidence_past_the_size_cap_is_refused_unjudged` |
//! | CVE-2022-23952 | world-readable configuration with secrets | `cve_2022_23952_secrets_in_a_group_or_world_readable_config_stop_the_start` |
//! | CVE-2022-3500 | dead workers left agents shown as attested | `cve_2022_3500_a_round_the_verifier_cannot_judge_is_a_failure_never_a_pass` |
//! | CVE-2023-38200 | one idle TLS connection blocked the registrar | `cve_2023_38200_idle_and_half_open_connections_block_neither_registrar_nor_verifier` |
//! | CVE-2023-38201 | error message leaked the expected `auth_tag` | `cve_2023_38201_a_wrong_auth_tag_leaks_no_tag_and_activates_nothing` |
//! | CVE-2023-3674 | bad quote signature only logged | `cve_2023_3674_a_quote_with_one_signature_bit_flipped_fails` |
//! | CVE-2025-1057 | old database rows crashed the registrar after an upgrade | `cve_2025_1057_rows_written_under_an_older_schema_still_load_after_an_upgrade` |
//! | CVE-2025-13609 | same id re-registered with another EK/AK (TOCTOU) | `cve_2025_13609_an_agent_id_cannot_be_taken_over_by_another_tpm_even_concurrently` |
//! | CVE-2026-1709 | registrar TLS `CERT_OPTIONAL`: unauthenticated admin | `cve_2026_1709_no_protected_route_answers_a_client_without_a_certificate` |
//! | CVE-2026-6420 | hard-coded push challenge | `cve_2026_6420_push_challenges_are_fresh_and_full_length` |
//! | 2025–26: DELETE vs poll loop | a round in flight resurrected a deleted agent | `hardening_2025_a_delete_while_rounds_are_in_flight_is_final` |
//! | 2025–26: FAIL→PASS | a failed agent recovered by itself | `hardening_2025_a_failed_push_agent_stays_failed_after_passing_rounds_until_reactivated` |
//! | 2025–26: stale IMA policy cache | an updated policy was not used | `hardening_2025_an_updated_runtime_policy_decides_the_next_round` |
//! | 2025–26: ECC coordinates | points off the curve accepted | `hardening_2025_an_ek_whose_point_is_off_its_curve_is_refused` |
//! | 2025–26: IMA/PCR 10 non-atomic | a list ahead of PCR 10 failed | `hardening_2025_an_ima_list_ahead_of_pcr_10_passes_and_resumes_at_the_first_uncovered_entry` |
//!
//! Broader tests of the same behaviour: `registrar_input.rs` (bad ids), `files.rs` (modes),
//! `limits.rs` (evidence cap in pull mode), `operator_tools.rs` (config secrets),
//! `crash_safety.rs` (SIGKILL mid-evaluation), `fail_closed.rs` (store and module
//! failures), `registrar_access.rs` and `roles.rs` (certificates), `registrar_flow.rs`
//! (auth tag, takeover), `pull_mode.rs` (foreign AK, DELETE), `push_mode.rs` (no
//! auto-recovery), `push_sessions.rs` (challenges), `ima_replay.rs` (a list ahead of PCR 10).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use zest::config::{DataDir, RegistrarConfig};
use zest::verifier::Mode;
use zest_tests::process::zest_binary;
use zest_tests::server::{RegistrarOptions, TestVerifier, admin_client, register_and_activate, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent, TestRegistrar, fixture, pull_env, push_env};

const JSON_API: &str = "application/vnd.api+json";

/// Polls `done` until it holds, or fails the test after 30 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + zest_tests::wait_limit();
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A self-signed certificate, as an agent would pin for its mTLS.
fn agent_certificate() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

/// The tenant's enrolment body for a pull agent, with Keylime's test AK.
fn pull_enrolment() -> Value {
    json!({
        "v": null, "cloudagent_ip": "127.0.0.1", "cloudagent_port": 9002,
        "tpm_policy": "{\"mask\": \"0x400\"}",
        "runtime_policy": B64.encode(pull_env::policy_for(&["/usr/bin/bash"]).to_string()),
        "runtime_policy_name": null, "mb_policy": null, "mb_policy_name": "",
        "ima_sign_verification_keys": "", "metadata": "{}", "revocation_key": "",
        "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"],
        "ak_tpm": B64.encode(fixture("keylime/test-data/files/ak.pub")),
        "mtls_cert": agent_certificate(), "supported_version": "2.6",
    })
}

/// A push session request naming `agent_id`.
fn session_request(agent_id: &str) -> String {
    json!({"data": {"type": "session", "attributes": {
        "agent_id": agent_id,
        "authentication_supported": [{"authentication_class": "pop", "authentication_type": "tpm_pop"}],
    }}})
    .to_string()
}

/// Runs `command` to its end; fails the test if it is still running after 30 s (a server
/// that started although it should have refused to).
fn run_bounded(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + zest_tests::wait_limit();
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 30 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

use zest_tests::free_port;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Nothing under `data` is writable by others; the directory, the database and the keys
/// are their owner's only.
fn assert_private(data: &Path) {
    assert_eq!(mode(data) & 0o077, 0, "the data directory is open to others");
    for file in ["zest.sqlite", "zest.sqlite-wal", "zest.sqlite-shm"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
        }
    }
    for key in ["ca-private.pem", "server-private.pem", "client-private.pem"] {
        let path = data.join("cv_ca").join(key);
        assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
    }
    let mut stack = vec![data.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        seen += 1;
        assert_eq!(
            mode(&path) & 0o002,
            0,
            "{} is world-writable ({:o})",
            path.display(),
            mode(&path)
        );
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen > 5, "the data directory holds only {seen} entries");
}

/// Length of the longest run of hexadecimal digits in `text`.
fn longest_hex_run(text: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in text.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Uploads the hostile test component and names a refstate `name` that puts it in `mode`.
async fn hostile_refstate(verifier: &TestVerifier, name: &str, mode: &str) {
    let module = push_env::upload_module(
        verifier,
        "measured-boot",
        zest_tests::policies::test_component("hostile"),
    )
    .await;
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("mbpolicies/{name}")))
            .json(&json!({"mb_policy": json!(mode).to_string(), "module": module})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{reply}");
}

/// The TPM2B_PUBLIC of an ECC key with the last byte of its point's x coordinate flipped
/// (`coordinate` bytes each; TPMS_ECC_POINT ends the structure).
fn off_curve(tpm2b: &[u8], coordinate: usize) -> Vec<u8> {
    let mut bytes = tpm2b.to_vec();
    let n = bytes.len();
    let size = (coordinate as u16).to_be_bytes();
    assert_eq!(&bytes[n - coordinate - 2..n - coordinate], &size, "y's size");
    assert_eq!(
        &bytes[n - 2 * coordinate - 4..n - 2 * coordinate - 2],
        &size,
        "x's size"
    );
    bytes[n - coordinate - 3] ^= 1;
    bytes
}

/// The same key with both coordinates zero (the point (0, 0), on no NIST curve).
fn zero_point(tpm2b: &[u8], coordinate: usize) -> Vec<u8> {
    let mut bytes = tpm2b.to_vec();
    let n = bytes.len();
    bytes[n - coordinate..].fill(0);
    bytes[n - 2 * coordinate - 2..n - coordinate - 2].fill(0);
    bytes
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2017_18342_yaml_and_pickle_payloads_are_refused_as_data_never_run() {
    // Every decoder is serde over JSON (or TPM structures): there is no YAML or pickle
    // loader to construct objects with. What an attacker sends is a clean 400 and nothing
    // is stored or run.
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let yaml_object = format!("!!python/object/apply:os.system [\"touch {}\"]", marker.display());
    let yaml_policy = "meta:\n  version: 1\n  generator: 3\ndigests:\n  /usr/bin/sh: [abc]\n";
    // pickle protocol 4: os.system("touch …")
    let mut pickle =
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c".to_vec();
    let command = format!("touch {}", marker.display());
    pickle.push(command.len() as u8);
    pickle.extend_from_slice(command.as_bytes());
    pickle.extend_from_slice(b"\x94\x85\x94R\x94.");

    let mut cfg = push_env::config();
    cfg.mode = Mode::Both;
    let verifier = push_env::verifier_with(cfg).await;
    let admin = verifier.admin_client().unwrap();
    let payloads: [(&str, Vec<u8>); 3] = [
        ("yaml object", yaml_object.clone().into_bytes()),
        ("yaml document", yaml_policy.as_bytes().to_vec()),
        ("pickle", pickle.clone()),
    ];
    for (i, (what, bytes)) in payloads.iter().enumerate() {
        let url = verifier.url("2.6", &format!("allowlists/payload-{i}"));
        let (status, reply) = send_json(
            admin
                .post(&url)
                .json(&json!({"runtime_policy": B64.encode(bytes)})),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "runtime policy, {what}: {reply}");
        let (status, _) = send_json(admin.get(&url)).await.unwrap();
        assert_eq!(status, 404, "runtime policy, {what}: stored");
        let (status, reply) = send_json(
            admin
                .post(verifier.url("2.6", &format!("mbpolicies/payload-{i}")))
                .json(&json!({"mb_policy": String::from_utf8_lossy(bytes)})),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "refstate, {what}: {reply}");
    }

    // An enrolment whose fields carry YAML tags or values of the wrong JSON type.
    let cases: [(&str, Value); 5] = [
        ("tpm_policy", json!({"!!python/object/apply:os.system": ["id"]})),
        ("tpm_policy", json!(yaml_object)),
        ("accept_tpm_hash_algs", json!("!!python/tuple [sha256]")),
        ("runtime_policy", json!(B64.encode(&pickle))),
        ("cloudagent_port", json!({"py/object": "os.system"})),
    ];
    for (field, value) in cases {
        let mut body = pull_enrolment();
        body[field] = value.clone();
        let (status, reply) = send_json(admin.post(verifier.url("2.6", "agents/payload")).json(&body))
            .await
            .unwrap();
        assert_eq!(status, 400, "{field} = {value}: {reply}");
    }
    let (status, _) = send_json(
        admin
            .post(verifier.url("2.6", "agents/payload"))
            .header("content-type", "application/x-yaml")
            .body(format!("cloudagent_ip: 127.0.0.1\ntpm_policy: {yaml_object}\n")),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "a YAML enrolment body");
    let (_, listing) = send_json(admin.get(verifier.url("2.6", "agents"))).await.unwrap();
    assert_eq!(listing["results"]["uuids"], json!([]), "nothing enrolled");

    // A push agent's session request in YAML, and with the wrong types.
    let anonymous = verifier.anonymous_client().unwrap();
    for body in [
        format!("data:\n  type: session\n  attributes: {yaml_object}\n"),
        json!({"data": {"type": "session", "attributes": {"agent_id": ["a"], "authentication_supported": "tpm_pop"}}})
            .to_string(),
    ] {
        let (status, reply) = send_json(
            anonymous
                .post(format!("{}/v3/sessions", verifier.https))
                .header("content-type", JSON_API)
                .body(body),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "{reply}");
    }

    // A registration in YAML, and one whose keys are objects instead of base64 text.
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/payload", registrar.http);
    let (status, reply) = send_json(
        client
            .post(&url)
            .header("content-type", "application/x-yaml")
            .body(format!("aik_tpm: {yaml_object}\nek_tpm: !!binary AAAA\n")),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = send_json(client.post(&url).json(&json!({
        "aik_tpm": {"py/object": "os.system"}, "ek_tpm": [yaml_object], "ekcert": 5,
    })))
    .await
    .unwrap();
    assert_eq!(status, 400, "{reply}");
    let (_, listing) = send_json(
        registrar
            .admin_client()
            .unwrap()
            .get(format!("{}/v2.6/agents", registrar.https)),
    )
    .await
    .unwrap();
    assert_eq!(listing["results"]["uuids"], json!([]), "nothing registered");

    assert!(!marker.exists(), "a payload ran");

    // The decoders these payloads reach are fuzzed (cargo-fuzz targets in host/fuzz).
    let fuzz = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../host/fuzz/Cargo.toml"))
        .expect("host/fuzz/Cargo.toml");
    for target in [
        "tpm2b_public",
        "ekcert_field",
        "quote_string",
        "tpms_attest",
        "tpmt_signature",
        "pcr_blob",
        "ima_list",
        "uefi_log",
        "push_json",
        "keylime_config",
    ] {
        assert!(
            fuzz.contains(&format!("name = \"{target}\"")),
            "no fuzz target {target}"
        );
    }
}

#[tokio::test]
async fn cve_2021_3406_a_quote_signed_by_an_unregistered_ak_fails() {
    // The verifier checks quotes against the AK enrolled for the agent, never one the agent
    // presents. The foreign AK here is genuine: made by the same TPM under the same EK.
    // (pull_mode.rs: a_replayed_nonce_a_foreign_ak_and_a_pcr_off_policy_each_fail_the_quote)
    let verifier = pull_env::verifier().await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "adv-2021-3406";
    let agent = pull_env::start_agent(&tpm, uuid, &verifier).await;
    pull_env::enrol(&verifier, &agent, uuid, &pull_env::policy_for(&[])).await;
    pull_env::wait_for(&verifier, uuid, "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    agent
        .state
        .lock()
        .unwrap()
        .agent
        .create_ak(AkKind::RsaSsa)
        .unwrap();
    let s = pull_env::wait_for(&verifier, uuid, "INVALID_QUOTE", |s| s["operational_state"] == 9).await;
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    assert_eq!(s["last_event_id"], "qoute_validation.quote_validation", "{s}");
    assert!(
        s["failures"][0]["context"].to_string().contains("signature"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2022_23949_agent_ids_with_newlines_or_escapes_are_refused_and_nothing_stored() {
    // Ids outside [A-Za-z0-9._-]{1,80} are refused wherever an id enters: registrar paths
    // and bodies, verifier enrolments, push sessions. (registrar_input.rs covers more.)
    let bad_ids = [
        "bad%0Aid",
        "bad%0D%0AINFO%20forged%20line",
        "%1B%5B31mred",
        "tab%09id",
        "nul%00id",
        "%E2%80%AEevil",
        "sp%20ace",
    ];
    let raw_bad_ids = [
        "bad\nid",
        "bad\r\nINFO forged line",
        "\u{1b}[31mred",
        "tab\tid",
        "\u{202e}evil",
    ];

    let tpm = Swtpm::start().unwrap();
    let agent = TestAgent::new(&tpm, "clean-id", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let client = registrar.plain_client();
    let body = agent.registration_body();
    for id in bad_ids {
        for base in [
            format!("{}/v2.6/agents/{id}", registrar.http),
            format!("{}/v2.1/agents/{id}", registrar.http),
        ] {
            let (status, reply) = send_json(client.post(&base).json(&body)).await.unwrap();
            assert_eq!(status, 400, "{base}: {reply}");
            assert!(reply["status"].as_str().unwrap().contains("agent_id"), "{reply}");
        }
    }
    for id in raw_bad_ids {
        let mut with_id = body.clone();
        with_id["agent_id"] = json!(id);
        for url in [
            format!("{}/v2.6/agents", registrar.http),
            format!("{}/v3.0/agents/", registrar.http),
        ] {
            let (status, reply) = send_json(client.post(&url).json(&with_id)).await.unwrap();
            assert_eq!(status, 400, "{id:?} at {url}: {reply}");
        }
    }
    let admin = registrar.admin_client().unwrap();
    let (_, listing) = send_json(admin.get(format!("{}/v2.6/agents", registrar.https)))
        .await
        .unwrap();
    assert_eq!(listing["results"]["uuids"], json!([]), "nothing registered");
    // The same body under a clean id registers: only the id was refused.
    let (status, reply) = send_json(
        client
            .post(format!("{}/v2.6/agents/clean-id", registrar.http))
            .json(&body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");

    let mut cfg = push_env::config();
    cfg.mode = Mode::Both;
    let verifier = push_env::verifier_with(cfg).await;
    let admin = verifier.admin_client().unwrap();
    for id in bad_ids {
        let (status, reply) = send_json(
            admin
                .post(verifier.url("2.6", &format!("agents/{id}")))
                .json(&pull_enrolment()),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "enrolment of {id}: {reply}");
    }
    let anonymous = verifier.anonymous_client().unwrap();
    for id in raw_bad_ids {
        let (status, reply) = send_json(
            anonymous
                .post(format!("{}/v3/sessions", verifier.https))
                .header("content-type", JSON_API)
                .body(session_request(id)),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "session for {id:?}: {reply}");
    }
    for id in bad_ids {
        let (status, _) = send_json(
            anonymous
                .post(format!("{}/v3/agents/{id}/attestations", verifier.https))
                .header("content-type", JSON_API)
                .body("{}"),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "attestations of {id}");
    }
    let (_, listing) = send_json(admin.get(verifier.url("2.6", "agents"))).await.unwrap();
    assert_eq!(listing["results"]["uuids"], json!([]), "nothing enrolled");
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", "agents/clean-id"))
            .json(&pull_enrolment()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn cve_2022_23950_nothing_under_the_data_directory_is_world_writable() {
    // zest opens no UNIX socket and writes nothing outside its data directory; that
    // directory is private even when it was left open to everyone before the start.
    // (files.rs checks the exact modes.)
    let data = tempfile::Builder::new().prefix("zest-adv-").tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data_dir = DataDir(data.path().to_path_buf());
    let mut cfg = RegistrarConfig::defaults(&data_dir);
    cfg.port = 0;
    cfg.tls_port = 0;
    let registrar = zest::registrar::start(&data_dir, &cfg).await.unwrap();
    let verifier = TestVerifier::start_in(data, pull_env::config()).await.unwrap();
    // Both have written the database.
    let admin = verifier.admin_client().unwrap();
    let (status, _) = send_json(
        admin
            .post(verifier.url("2.6", "allowlists/modes"))
            .json(&json!({"runtime_policy": B64.encode(pull_env::policy_for(&[]).to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let (status, _) = send_json(admin.get(format!(
        "https://localhost:{}/v2.6/agents",
        registrar.https_addr.port()
    )))
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_private(verifier.data.path());
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn cve_2022_23950_a_server_started_under_umask_000_leaves_nothing_world_writable() {
    // What zest creates does not depend on the umask it inherits: `zest serve` started
    // with umask 000 on a data directory it creates itself.
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new().prefix("zest-adv-").tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("verifier.conf"), "[verifier]\nip = 127.0.0.1\n").unwrap();
    std::fs::write(etc.join("registrar.conf"), "[registrar]\nip = 127.0.0.1\n").unwrap();
    let data = dir.path().join("data");
    let ports = [free_port(), free_port(), free_port()];
    let log = dir.path().join("zest.log");
    let mut command = Command::new(zest_binary().unwrap());
    command
        .arg("--config-dir")
        .arg(&etc)
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .args(["--verifier-port", &ports[0].to_string()])
        .args(["--registrar-port", &ports[1].to_string()])
        .args(["--registrar-tls-port", &ports[2].to_string()])
        .env_remove("ZEST_DATA_DIR")
        .env_remove("ZEST_CONFIG_DIR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: umask is async-signal-safe and changes only the child.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = Killed(command.spawn().unwrap());
    let deadline = Instant::now() + zest_tests::wait_limit();
    for port in ports {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!(
                    "zest exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "zest did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let admin = admin_client(&data).unwrap();
    let (status, _) = send_json(
        admin
            .post(format!("https://localhost:{}/v2.6/allowlists/modes", ports[0]))
            .json(&json!({"runtime_policy": B64.encode(pull_env::policy_for(&[]).to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    assert_private(&data);
}

#[tokio::test]
async fn cve_2022_23951_push_evidence_past_the_size_cap_is_refused_unjudged() {
    // There is no decompression: evidence is JSON whose size is capped before it is read
    // (`max_evidence_size`), so a bomb stops at the cap. (limits.rs: the pull side.)
    const CAP: usize = 64 * 1024;
    let mut cfg = push_env::config();
    cfg.max_evidence_size = CAP;
    cfg.quote_interval = 0.0;
    let verifier = push_env::verifier_with(cfg).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "adv-2022-23951";
    let mut agent = push_env::push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    let paths = vec!["/usr/bin/bash".to_string()];
    agent.measure(&paths[0], &push_env::digest(&paths[0])).unwrap();
    push_env::enrol(&verifier, &agent.agent, "{}", Some(&push_env::policy_for(&paths))).await;
    agent.authenticate().await.unwrap();

    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let url = format!("{}{}", verifier.https, location.unwrap());
    let genuine = agent
        .evidence(&created["data"]["attributes"]["evidence_requested"], None)
        .unwrap();
    // The same evidence with an IMA list of twice the cap.
    let mut bomb = genuine.clone();
    let ima = bomb["data"]["attributes"]["evidence_collected"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["evidence_type"] == "ima_log")
        .unwrap_or_else(|| panic!("no IMA log asked for: {created}"));
    let line = format!(
        "10 {} ima-ng sha256:{} /usr/lib/bomb\n",
        "0".repeat(40),
        "0".repeat(64)
    );
    ima["data"]["entries"] = json!(line.repeat(2 * CAP / line.len() + 1));
    ima["data"]["entry_count"] = json!(2 * CAP / line.len() + 1);
    let bomb = bomb.to_string();
    assert!(bomb.len() > 2 * CAP);
    let response = verifier
        .anonymous_client()
        .unwrap()
        .patch(&url)
        .header("content-type", JSON_API)
        .bearer_auth(agent.token.clone().unwrap())
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);

    let (_, latest) =
        push_env::admin_get(&verifier, &format!("/v3.0/agents/{uuid}/attestations/latest")).await;
    assert_eq!(
        latest["data"]["attributes"]["stage"], "awaiting_evidence",
        "nothing was judged: {latest}"
    );
    assert_eq!(push_env::status(&verifier, uuid).await["attestation_count"], 0);
    // The genuine evidence still fits and is judged.
    let (code, reply) = agent.submit(&url, &genuine).await.unwrap();
    assert_eq!(code, 202, "{reply}");
    let index: u64 = url.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(
        push_env::verdict(&verifier, uuid, index).await["evaluation"],
        "pass"
    );
}

#[test]
fn cve_2022_23952_secrets_in_a_group_or_world_readable_config_stop_the_start() {
    // (operator_tools.rs: config_show_names_every_source_and_refuses_exposed_secrets)
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let data = dir.path().join("data");
    std::fs::create_dir(&etc).unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let path = etc.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let verifier_conf = write(
        "verifier.conf",
        "[verifier]\nip = 127.0.0.1\ndatabase_url = postgresql://zest:hunter2@db/zest\n",
        0o644,
    );
    let registrar_conf = write(
        "registrar.conf",
        "[registrar]\nip = 127.0.0.1\nserver_key_password = s3cret-passw0rd\n",
        0o640,
    );
    let zest = |args: &[&str]| {
        let mut command = Command::new(zest_binary().unwrap());
        command
            .arg("--config-dir")
            .arg(&etc)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("ZEST_DATA_DIR")
            .env_remove("ZEST_CONFIG_DIR")
            .env("RUST_LOG", "warn");
        run_bounded(&mut command)
    };
    let verifier_port = free_port().to_string();
    let registrar_ports = [free_port().to_string(), free_port().to_string()];
    for (service, file, secret, out) in [
        (
            "verifier",
            "verifier.conf sets database_url",
            "hunter2",
            zest(&["verifier", "--verifier-port", verifier_port.as_str()]),
        ),
        (
            "registrar",
            "registrar.conf sets server_key_password",
            "s3cret-passw0rd",
            zest(&[
                "registrar",
                "--registrar-port",
                registrar_ports[0].as_str(),
                "--registrar-tls-port",
                registrar_ports[1].as_str(),
            ]),
        ),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{service} started: {err}");
        assert!(
            err.contains(file) && err.contains("CVE-2022-23952"),
            "{service}: {err}"
        );
        assert!(!err.contains(secret), "{service} echoed the secret: {err}");
    }
    assert!(!data.exists(), "a refused service created its data directory");

    // Made private, the same files are read.
    for path in [&verifier_conf, &registrar_conf] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for service in ["verifier", "registrar"] {
        let out = zest(&["config", "show", service]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("(secret, set)"), "{service}: {text}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret-passw0rd"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn cve_2022_3500_a_round_the_verifier_cannot_judge_is_a_failure_never_a_pass() {
    // A round whose policy component panics, and one whose component vanished from the
    // store, end in a failure the status and the metrics show; neither agent is ever shown
    // as attested by them. A stalled worker shows TIMEOUT (pull_mode.rs:
    // an_unreachable_agent_…), a SIGKILL mid-evaluation fails the attestation at restart
    // (crash_safety.rs).
    let verifier = pull_env::verifier().await;
    hostile_refstate(&verifier, "adv-trap", "trap").await;
    let (tpm_a, tpm_b) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let trapping = pull_env::start_agent(&tpm_a, "adv-3500-trap", &verifier).await;
    let orphaned = pull_env::start_agent(&tpm_b, "adv-3500-module", &verifier).await;
    trapping
        .boot(zest_tests::boot::fedora_without_unlisted_pcr0_events())
        .unwrap();
    pull_env::enrol_with(
        &verifier,
        &trapping,
        "adv-3500-trap",
        &pull_env::policy_for(&[]),
        json!({"mb_policy": null, "mb_policy_name": "adv-trap"}),
    )
    .await;
    pull_env::enrol(
        &verifier,
        &orphaned,
        "adv-3500-module",
        &pull_env::policy_for(&[]),
    )
    .await;
    pull_env::wait_for(&verifier, "adv-3500-module", "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    // Its policy now names a component the store does not hold.
    let db = rusqlite::Connection::open(verifier.data.path().join("zest.sqlite")).unwrap();
    db.execute(
        "UPDATE runtime_policies SET module = ?1 WHERE name = 'adv-3500-module'",
        [format!("sha256:{}", "0".repeat(64))],
    )
    .unwrap();

    for (uuid, event_id) in [
        ("adv-3500-trap", "measured_boot.policy_error"),
        ("adv-3500-module", "internal.verifier.module"),
    ] {
        let s = pull_env::wait_for(&verifier, uuid, "INVALID_QUOTE", |s| s["operational_state"] == 9).await;
        assert_eq!(s["attestation_status"], "FAIL", "{uuid}: {s}");
        assert!(
            s["failures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["type"] == event_id),
            "{uuid}: no {event_id} in {s}"
        );
    }
    let s = pull_env::status(&verifier, "adv-3500-trap").await;
    assert_eq!(s["attestation_count"], 0, "a trapped round never passed: {s}");

    let metrics = verifier
        .admin_client()
        .unwrap()
        .get(format!("{}/metrics", verifier.https))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for event_id in ["measured_boot.policy_error", "internal.verifier.module"] {
        let series =
            format!("zest_verifier_attestation_failures_total{{mode=\"pull\",event_id=\"{event_id}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} missing from\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(count >= 1.0, "{series}{count}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("zest_policy_aborts_total{") && l.contains("reason=\"trap\"")),
        "the trap is counted: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2023_38200_idle_and_half_open_connections_block_neither_registrar_nor_verifier() {
    // (registrar_access.rs: idle_and_half_open_connections_do_not_block_other_clients)
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let verifier = pull_env::verifier().await;
    let mut idle = Vec::new();
    for addr in [
        registrar.server.https_addr,
        registrar.server.http_addr,
        verifier.server.addr,
    ] {
        for _ in 0..32 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // A TLS record header announcing a ClientHello that never comes.
        let mut half_open = tokio::net::TcpStream::connect(addr).await.unwrap();
        half_open
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        idle.push(half_open);
    }
    let within = Duration::from_secs(5);
    for (what, request) in [
        (
            "registrar HTTPS",
            registrar
                .admin_client()
                .unwrap()
                .get(format!("{}/v2.6/agents", registrar.https)),
        ),
        (
            "registrar HTTP",
            registrar
                .plain_client()
                .get(format!("{}/version", registrar.http)),
        ),
        (
            "verifier",
            verifier
                .admin_client()
                .unwrap()
                .get(verifier.url("2.6", "agents")),
        ),
    ] {
        let (status, body) = tokio::time::timeout(within, send_json(request))
            .await
            .unwrap_or_else(|_| panic!("{what} did not answer within {within:?}"))
            .unwrap();
        assert_eq!(status, 200, "{what}: {body}");
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2023_38201_a_wrong_auth_tag_leaks_no_tag_and_activates_nothing() {
    // (registrar_flow.rs: wrong_auth_tag_leaves_agent_inactive_and_leaks_nothing)
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let uuid = "adv-2023-38201";
    let mut agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let client = registrar.plain_client();
    let url = format!("{}/v2.6/agents/{uuid}", registrar.http);
    let (status, reply) = send_json(client.post(&url).json(&agent.registration_body()))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    let credential = agent
        .activate_credential(reply["results"]["blob"].as_str().unwrap())
        .unwrap();
    let right = agent.activation_body(&credential);
    let right_tag = right["auth_tag"].as_str().unwrap().to_owned();

    let guesses = [
        zest_tests::agent::auth_tag(b"not the credential", uuid),
        "00".repeat(48),
        right_tag[..94].to_owned() + "00",
    ];
    for wrong in &guesses {
        for request in [
            client.put(&url),
            client.post(format!("{}/v2.6/agents/{uuid}/activate", registrar.http)),
        ] {
            let (status, reply) = send_json(request.json(&json!({"auth_tag": wrong})))
                .await
                .unwrap();
            assert_eq!(status, 400, "{reply}");
            let text = reply.to_string();
            assert!(
                !text.contains(&right_tag) && !text.contains(wrong.as_str()),
                "the reply names a tag: {text}"
            );
            assert!(
                longest_hex_run(&text) < 96,
                "the reply holds a tag-sized hex string: {text}"
            );
            assert!(!text.contains(&B64.encode(&credential)), "{text}");
        }
    }
    let admin = registrar.admin_client().unwrap();
    let (status, shown) = send_json(admin.get(format!("{}/v2.6/agents/{uuid}", registrar.https)))
        .await
        .unwrap();
    assert_eq!(status, 404, "still inactive: {shown}");
    // Only the TPM's answer activates it.
    let (status, _) = send_json(client.put(&url).json(&right)).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn cve_2023_3674_a_quote_with_one_signature_bit_flipped_fails() {
    let verifier = push_env::verifier_with(push_env::config()).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "adv-2023-3674";
    let mut agent = push_env::push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    push_env::enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;
    agent.authenticate().await.unwrap();
    assert_eq!(
        push_env::round(&verifier, &mut agent).await.2["evaluation"],
        "pass"
    );

    // A round whose quote signature has one bit flipped: the device is flagged.
    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let location = location.unwrap();
    let mut forged = agent
        .evidence(&created["data"]["attributes"]["evidence_requested"], None)
        .unwrap();
    let quote = forged["data"]["attributes"]["evidence_collected"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["evidence_type"] == "tpm_quote")
        .unwrap();
    let mut signature = B64.decode(quote["data"]["signature"].as_str().unwrap()).unwrap();
    let last = signature.len() - 1;
    signature[last] ^= 1;
    quote["data"]["signature"] = json!(B64.encode(&signature));
    let (code, reply) = agent
        .submit(&format!("{}{location}", verifier.https), &forged)
        .await
        .unwrap();
    assert_eq!(code, 202, "{reply}");
    let index: u64 = location.rsplit('/').next().unwrap().parse().unwrap();
    let judged = push_env::verdict(&verifier, uuid, index).await;
    assert_eq!(
        (judged["evaluation"].as_str(), judged["failure_reason"].as_str()),
        (Some("fail"), Some("broken_evidence_chain")),
        "{judged}"
    );
    assert_eq!(
        judged["failures"][0]["type"], "qoute_validation.quote_validation",
        "{judged}"
    );
    assert_eq!(
        push_env::status(&verifier, uuid).await["attestation_status"],
        "FAIL"
    );

    // The stateless check says the same of a quote handed in.
    let pcr15 = hex::encode(agent.agent.pcr_value(HashingAlgorithm::Sha256, 15).unwrap());
    let nonce = "n0nceF0rAdvisory3674";
    let parts = agent
        .agent
        .quote(nonce.as_bytes(), &[(HashingAlgorithm::Sha256, &[15, 16])])
        .unwrap();
    let mut flipped = parts.clone();
    let last = flipped.signature.len() - 1;
    flipped.signature[last] ^= 1;
    let admin = verifier.admin_client().unwrap();
    for (quote, valid) in [(parts.keylime_string(), true), (flipped.keylime_string(), false)] {
        let data = json!({
            "quote": quote, "nonce": nonce, "hash_alg": "sha256", "tpm_ek": "unused",
            "tpm_ak": B64.encode(&agent.agent.aik_tpm),
            "tpm_policy": json!({"15": [pcr15]}).to_string(),
        });
        let (status, reply) = send_json(
            admin
                .post(verifier.url("2.6", "verify/evidence"))
                .json(&json!({"type": "tpm", "data": data})),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["results"]["valid"], valid, "{reply}");
        if !valid {
            assert_eq!(
                reply["results"]["failures"][0]["type"], "qoute_validation.quote_validation",
                "{reply}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2025_1057_rows_written_under_an_older_schema_still_load_after_an_upgrade() {
    // A database as schema 5 left it: the registrar's agents without the pending columns
    // of 7, policy tables in their layout before 6, and a verifier record written before
    // its newer fields (revision, policy states, clock, push, …) existed, with failures as
    // the old (event id, context) pairs. Both services start on it, show its rows and
    // write to them.
    let tpm = Swtpm::start().unwrap();
    let uuid = "adv-old-agent";
    let mut agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    registrar.register_and_activate(&mut agent, "2.6").await.unwrap();
    let TestRegistrar { data, server, .. } = registrar;
    drop(server);
    let verifier = TestVerifier::start_in(data, pull_env::config()).await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let policy = pull_env::policy_for(&["/usr/bin/bash"]);
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("allowlists/{uuid}")))
            .json(&json!({"runtime_policy": B64.encode(policy.to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = send_json(
        admin
            .post(verifier.url("2.6", &format!("mbpolicies/{uuid}")))
            .json(&json!({"mb_policy": "{\"x\": 1}"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{reply}");
    let TestVerifier { data, server, .. } = verifier;
    drop(server);

    let old_record = json!({
        "agent_id": uuid, "ip": "127.0.0.1", "port": 9002, "v": null,
        "tpm_policy": "{\"mask\": \"0x400\"}", "runtime_policy": uuid, "mb_policy": uuid,
        "ima_sign_verification_keys": "", "revocation_key": "", "meta_data": "{}",
        "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(&agent.aik_tpm),
        "mtls_cert": null, "supported_version": "2.1", "operational_state": 9,
        "last_event_id": "ima.validation.ima-ng.not_in_allowlist", "attestation_count": 41,
        "last_failures": [["ima.validation.ima-ng.not_in_allowlist",
            {"message": "File not found in allowlist: /tmp/evil"}]],
    });
    {
        let mut db = rusqlite::Connection::open(data.path().join("zest.sqlite")).unwrap();
        let tx = db.transaction().unwrap();
        let mut downgrade = String::new();
        for table in ["runtime_policies", "mb_policies"] {
            downgrade.push_str(&format!(
                "CREATE TABLE {table}_v5 (
                    tenant    TEXT    NOT NULL,
                    name      TEXT    NOT NULL,
                    module    TEXT    NOT NULL,
                    document  BLOB,
                    checksum  TEXT    NOT NULL,
                    generator INTEGER NOT NULL,
                    PRIMARY KEY (tenant, name)
                ) STRICT;
                INSERT INTO {table}_v5 (tenant, name, module, document, checksum, generator)
                    SELECT tenant, name, module, document, checksum, generator FROM {table};
                DROP TABLE {table};
                ALTER TABLE {table}_v5 RENAME TO {table};"
            ));
        }
        for column in [
            "pending_ip",
            "pending_port",
            "pending_mtls_cert",
            "pending_auth_tag_digest",
            "pending_since",
        ] {
            downgrade.push_str(&format!("ALTER TABLE registrar_agents DROP COLUMN {column};"));
        }
        // Migration 8's table, migration 10's column and tables.
        downgrade.push_str("DROP TABLE tenant_quotas;");
        downgrade.push_str(
            "ALTER TABLE verifier_agents DROP COLUMN lease_owner;
             DROP TABLE verifier_leases; DROP TABLE verifier_secrets; DROP TABLE push_claimed_sessions;",
        );
        // Migration 11's tables (its policy columns went with the tables rebuilt above).
        downgrade.push_str(
            "DROP TABLE policy_versions; DROP TABLE attestation_history; DROP TABLE agent_evidence;
             DROP TABLE agent_ima_segments; DROP TABLE evidence_blobs;",
        );
        tx.execute_batch(&downgrade).unwrap();
        tx.execute(
            "INSERT INTO verifier_agents (tenant, agent_id, runtime_policy, mb_policy, record)
             VALUES (?1, ?2, ?2, ?2, ?3)",
            rusqlite::params![zest::store::DEFAULT_TENANT, uuid, old_record.to_string()],
        )
        .unwrap();
        tx.pragma_update(None, "user_version", 5).unwrap();
        tx.commit().unwrap();
    }

    // The registrar upgrades the file, shows the old row and renews it.
    let data_dir = DataDir(data.path().to_path_buf());
    let mut cfg = RegistrarConfig::defaults(&data_dir);
    cfg.port = 0;
    cfg.tls_port = 0;
    let registrar = zest::registrar::start(&data_dir, &cfg).await.unwrap();
    let version: i64 = rusqlite::Connection::open(data.path().join("zest.sqlite"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(version > 5, "the schema was not upgraded: {version}");
    let registrar_admin = admin_client(data.path()).unwrap();
    let shown = format!(
        "https://localhost:{}/v2.6/agents/{uuid}",
        registrar.https_addr.port()
    );
    let (status, reply) = send_json(registrar_admin.get(&shown)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"]["aik_tpm"], json!(B64.encode(&agent.aik_tpm)));
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    register_and_activate(
        &plain,
        &format!("http://127.0.0.1:{}", registrar.http_addr.port()),
        &mut agent,
        "2.6",
    )
    .await
    .unwrap();
    let (status, reply) = send_json(registrar_admin.get(&shown)).await.unwrap();
    assert_eq!(status, 200, "{reply}");

    // The verifier reads the old record and the moved policies, and writes to them.
    let verifier = TestVerifier::start_in(data, pull_env::config()).await.unwrap();
    let admin = verifier.admin_client().unwrap();
    let (status, reply) = send_json(admin.get(verifier.url("2.6", &format!("agents/{uuid}"))))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    let s = &reply["results"];
    assert_eq!(
        (
            s["operational_state"].as_i64(),
            s["attestation_status"].as_str(),
            s["attestation_count"].as_u64()
        ),
        (Some(9), Some("FAIL"), Some(41)),
        "{s}"
    );
    assert_eq!(
        s["failures"],
        json!([{"type": "ima.validation.ima-ng.not_in_allowlist",
                "context": {"message": "File not found in allowlist: /tmp/evil"}}]),
        "{s}"
    );
    assert_eq!(s["runtime_policy_name"], uuid);
    let (status, reply) = send_json(admin.get(verifier.url("2.6", &format!("allowlists/{uuid}"))))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    let stored: Value = serde_json::from_str(reply["results"]["runtime_policy"].as_str().unwrap()).unwrap();
    assert_eq!(stored, policy);
    let (status, reply) = send_json(admin.get(verifier.url("2.6", "agents?bulk=1")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = send_json(admin.delete(verifier.url("2.6", &format!("agents/{uuid}"))))
        .await
        .unwrap();
    assert!(status == 200 || status == 202, "{status} {reply}");
    let (status, _) = send_json(admin.get(verifier.url("2.6", &format!("agents/{uuid}"))))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2025_13609_an_agent_id_cannot_be_taken_over_by_another_tpm_even_concurrently() {
    // (registrar_flow.rs: re_registration_…_is_forbidden, concurrent_registrations_…)
    let (tpm, other_tpm) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let registrar = TestRegistrar::trusting_swtpm_ca().await.unwrap();
    let uuid = "adv-2025-13609";
    let mut owner = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    registrar.register_and_activate(&mut owner, "2.6").await.unwrap();
    let owner_ak = B64.encode(&owner.aik_tpm);

    // Impostors, all at once: another TPM's EK and AK, and other AKs of the owner's TPM.
    let mut impostor = TestAgent::new(&other_tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut bodies = vec![impostor.registration_body()];
    impostor.create_ak(AkKind::RsaSsa).unwrap();
    bodies.push(impostor.registration_body());
    let mut twin = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    for _ in 0..3 {
        twin.create_ak(AkKind::RsaSsa).unwrap();
        bodies.push(twin.registration_body());
    }
    drop(twin);
    let client = registrar.plain_client();
    let post_all = |bodies: Vec<Value>, url: String| {
        let handles: Vec<_> = bodies
            .into_iter()
            .map(|body| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { send_json(client.post(&url).json(&body)).await.unwrap().0 })
            })
            .collect();
        async move {
            let mut statuses = Vec::new();
            for h in handles {
                statuses.push(h.await.unwrap());
            }
            statuses
        }
    };
    let url = format!("{}/v2.6/agents/{uuid}", registrar.http);
    let statuses = post_all(bodies.clone(), url).await;
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    let admin = registrar.admin_client().unwrap();
    let (_, shown) = send_json(admin.get(format!("{}/v2.6/agents/{uuid}", registrar.https)))
        .await
        .unwrap();
    assert_eq!(shown["results"]["aik_tpm"], json!(owner_ak), "{shown}");
    assert_eq!(
        shown["results"]["ek_tpm"],
        json!(B64.encode(&owner.ek_tpm)),
        "{shown}"
    );

    // A fresh id claimed by all of them at once: exactly one wins, the rest are refused.
    let fresh = "adv-2025-13609-fresh";
    let statuses = post_all(bodies, format!("{}/v2.6/agents/{fresh}", registrar.http)).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 403), "{statuses:?}");
}

/// Replaces the `{…}` parameters of an OpenAPI path with values a request can carry.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{v}" => "v2.6",
            "{which}" => "latest",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every operation a service's OpenAPI document marks as needing an operator's certificate.
fn protected_operations(openapi: &Value) -> Vec<(reqwest::Method, String)> {
    let mut out = Vec::new();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let protected = operation["description"]
                .as_str()
                .is_some_and(|d| d.contains("operator's client certificate"));
            if protected {
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                out.push((method, concrete(path)));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_1709_no_protected_route_answers_a_client_without_a_certificate() {
    // Every route the services declare as the operator's, found in their own OpenAPI
    // documents, is refused to a client without a certificate: over plain HTTP and HTTPS at
    // the registrar, at the TLS handshake of a pull verifier, and with 403 at a verifier that
    // lets push agents connect without one. (registrar_access.rs, roles.rs)
    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    let (_, openapi) = send_json(
        registrar
            .plain_client()
            .get(format!("{}/openapi.json", registrar.http)),
    )
    .await
    .unwrap();
    let operations = protected_operations(&openapi);
    assert!(operations.len() >= 4, "{operations:?}");
    let anonymous = registrar.anonymous_client().unwrap();
    let plain = registrar.plain_client();
    for (method, path) in &operations {
        let (status, reply) =
            send_json(anonymous.request(method.clone(), format!("{}{path}", registrar.https)))
                .await
                .unwrap();
        assert_eq!(status, 403, "registrar HTTPS {method} {path}: {reply}");
        let (status, reply) = send_json(plain.request(method.clone(), format!("{}{path}", registrar.http)))
            .await
            .unwrap();
        assert!(
            status == 400 || status == 403,
            "registrar HTTP {method} {path}: {status} {reply}"
        );
    }

    let pull = pull_env::verifier().await;
    let (_, openapi) = send_json(
        pull.admin_client()
            .unwrap()
            .get(format!("{}/openapi.json", pull.https)),
    )
    .await
    .unwrap();
    let operations = protected_operations(&openapi);
    assert!(operations.len() >= 10, "{operations:?}");
    let anonymous = pull.anonymous_client().unwrap();
    for (method, path) in &operations {
        let result = anonymous
            .request(method.clone(), format!("{}{path}", pull.https))
            .send()
            .await;
        assert!(
            result.is_err(),
            "pull verifier {method} {path} answered: {result:?}"
        );
    }

    let mut cfg = push_env::config();
    cfg.mode = Mode::Both;
    let both = push_env::verifier_with(cfg).await;
    let anonymous = both.anonymous_client().unwrap();
    for (method, path) in &operations {
        let (status, reply) = send_json(anonymous.request(method.clone(), format!("{}{path}", both.https)))
            .await
            .unwrap();
        assert_eq!(status, 403, "verifier {method} {path}: {reply}");
    }
}

#[tokio::test]
async fn cve_2026_6420_push_challenges_are_fresh_and_full_length() {
    // Session challenges and attestation challenges alike: 32 random bytes, never the same
    // twice. (push_sessions.rs draws 49 session challenges.)
    let mut cfg = push_env::config();
    cfg.quote_interval = 0.0;
    let verifier = push_env::verifier_with(cfg).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "adv-2026-6420";
    let mut agent = push_env::push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    push_env::enrol(&verifier, &agent.agent, r#"{"mask": "0x1"}"#, None).await;

    let anonymous = verifier.anonymous_client().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2 {
        let (status, session) = send_json(
            anonymous
                .post(format!("{}/v3/sessions", verifier.https))
                .header("content-type", JSON_API)
                .body(session_request(uuid)),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{session}");
        let challenge = B64
            .decode(
                session["data"]["attributes"]["authentication_requested"][0]["chosen_parameters"]
                    ["challenge"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(challenge.len(), 32);
        assert!(seen.insert(challenge), "a session challenge repeated");
    }

    agent.authenticate().await.unwrap();
    for _ in 0..2 {
        let (code, location, created) = agent.offer().await.unwrap();
        assert_eq!(code, 201, "{created}");
        let requested = &created["data"]["attributes"]["evidence_requested"];
        let quote = requested
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["evidence_type"] == "tpm_quote")
            .unwrap();
        let challenge = B64
            .decode(quote["chosen_parameters"]["challenge"].as_str().unwrap())
            .unwrap();
        assert_eq!(challenge.len(), 32);
        assert!(seen.insert(challenge), "an attestation challenge repeated");
        let evidence = agent.evidence(requested, None).unwrap();
        let location = location.unwrap();
        let (code, reply) = agent
            .submit(&format!("{}{location}", verifier.https), &evidence)
            .await
            .unwrap();
        assert_eq!(code, 202, "{reply}");
        let index: u64 = location.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(
            push_env::verdict(&verifier, uuid, index).await["evaluation"],
            "pass"
        );
    }
}

// --- 2025–26 hardening items ----------------------------------------------------------

#[tokio::test]
async fn hardening_2025_a_delete_while_rounds_are_in_flight_is_final() {
    // Rounds run back to back, so the DELETE lands while one is in flight; its verdict must
    // not write the agent back. (pull_mode.rs: a_restarted_verifier_resumes_…)
    let data = tempfile::Builder::new().prefix("zest-adv-").tempdir().unwrap();
    let mut cfg = pull_env::config();
    cfg.quote_interval = 0.0;
    let verifier = TestVerifier::start_in(data, cfg).await.unwrap();
    let tpm = Swtpm::start().unwrap();
    let uuid = "hardening-delete";
    let agent = pull_env::start_agent(&tpm, uuid, &verifier).await;
    pull_env::enrol(&verifier, &agent, uuid, &pull_env::policy_for(&[])).await;
    pull_env::wait_for(&verifier, uuid, "rounds", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    let admin = verifier.admin_client().unwrap();
    let url = verifier.url("2.6", &format!("agents/{uuid}"));
    let (status, reply) = send_json(admin.delete(&url)).await.unwrap();
    // With rounds back to back a round is nearly always in flight: Keylime's 202
    // (TERMINATED), and the agent goes when that round ends.
    assert!(matches!(status, 200 | 202), "{reply}");
    let deadline = Instant::now() + zest_tests::wait_limit();
    while send_json(admin.get(&url)).await.unwrap().0 != 404 {
        assert!(Instant::now() < deadline, "the agent never went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // For many quote intervals' worth of time the agent stays gone, and polling ends.
    let window = Instant::now() + Duration::from_secs(2);
    let mut polled = agent.requested_offsets().len();
    let mut quiet_since = Instant::now();
    while Instant::now() < window {
        let (status, reply) = send_json(admin.get(&url)).await.unwrap();
        assert_eq!(status, 404, "the deleted agent came back: {reply}");
        let now_polled = agent.requested_offsets().len();
        if now_polled != polled {
            polled = now_polled;
            quiet_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        quiet_since.elapsed() >= Duration::from_secs(1),
        "the deleted agent is still polled"
    );
    let db = rusqlite::Connection::open(verifier.data.path().join("zest.sqlite")).unwrap();
    let rows: i64 = db
        .query_row(
            "SELECT count(*) FROM verifier_agents WHERE agent_id = ?1",
            [uuid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0, "the record is gone from the store");
}

#[tokio::test]
async fn hardening_2025_a_failed_push_agent_stays_failed_after_passing_rounds_until_reactivated() {
    // Keylime's auto_recover_attestation_failures is off: a pass after a failure does not
    // clear it. (push_mode.rs: a_file_outside_the_policy_fails_the_agent_until_…)
    let verifier = push_env::verifier_with(push_env::config()).await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "hardening-no-recovery";
    let mut agent = push_env::push_agent(&verifier, &tpm, uuid, AkKind::RsaSsa).await;
    let mut allowed = vec!["/usr/bin/ok".to_string()];
    agent
        .measure(&allowed[0], &push_env::digest(&allowed[0]))
        .unwrap();
    push_env::enrol(
        &verifier,
        &agent.agent,
        "{}",
        Some(&push_env::policy_for(&allowed)),
    )
    .await;
    agent.authenticate().await.unwrap();
    assert_eq!(
        push_env::round(&verifier, &mut agent).await.2["evaluation"],
        "pass"
    );
    agent
        .measure("/tmp/evil", &push_env::digest("/tmp/evil"))
        .unwrap();
    assert_eq!(
        push_env::round(&verifier, &mut agent).await.2["evaluation"],
        "fail"
    );

    allowed.push("/tmp/evil".into());
    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(
        admin
            .put(verifier.url("2.6", &format!("allowlists/{uuid}")))
            .json(&json!({"runtime_policy": B64.encode(push_env::policy_for(&allowed).to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");
    for _ in 0..2 {
        assert_eq!(
            push_env::round(&verifier, &mut agent).await.2["evaluation"],
            "pass"
        );
        let s = push_env::status(&verifier, uuid).await;
        assert_eq!(s["attestation_status"], "FAIL", "recovered by itself: {s}");
    }
    let (code, _) = send_json(admin.put(verifier.url("2.6", &format!("agents/{uuid}/reactivate"))))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        push_env::status(&verifier, uuid).await["attestation_status"],
        "PENDING"
    );
    assert_eq!(
        push_env::round(&verifier, &mut agent).await.2["evaluation"],
        "pass"
    );
    assert_eq!(
        push_env::status(&verifier, uuid).await["attestation_status"],
        "PASS"
    );
}

#[tokio::test]
async fn hardening_2025_an_updated_runtime_policy_decides_the_next_round() {
    // No stale policy: after PUT /allowlists/{name}, a file only the new policy allows
    // passes and a file only the old one allowed fails.
    let verifier = pull_env::verifier().await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "hardening-policy-update";
    let agent = pull_env::start_agent(&tpm, uuid, &verifier).await;
    let (first, added, dropped) = ("/usr/bin/first", "/usr/bin/added", "/usr/bin/dropped");
    agent.measure(first, &pull_env::digest(first)).unwrap();
    pull_env::enrol(&verifier, &agent, uuid, &pull_env::policy_for(&[first, dropped])).await;
    let s = pull_env::wait_for(&verifier, uuid, "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(s["has_runtime_policy"], 1, "{s}");

    let admin = verifier.admin_client().unwrap();
    let (code, reply) = send_json(
        admin
            .put(verifier.url("2.6", &format!("allowlists/{uuid}")))
            .json(&json!({"runtime_policy": B64.encode(pull_env::policy_for(&[first, added]).to_string())})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");
    // Two whole rounds after the update, so that no round started before it is in flight.
    let count = pull_env::status(&verifier, uuid).await["attestation_count"]
        .as_u64()
        .unwrap();
    pull_env::wait_for(&verifier, uuid, "rounds after the update", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= count + 2
    })
    .await;

    agent.measure(added, &pull_env::digest(added)).unwrap();
    let count = pull_env::status(&verifier, uuid).await["attestation_count"]
        .as_u64()
        .unwrap();
    let s = pull_env::wait_for(&verifier, uuid, "rounds over the added file", |s| {
        s["operational_state"] == 9 || s["attestation_count"].as_u64().unwrap_or(0) >= count + 2
    })
    .await;
    assert_eq!(
        (s["operational_state"].as_i64(), s["attestation_status"].as_str()),
        (Some(3), Some("PASS")),
        "the new policy's file was judged by the old policy: {s}"
    );

    agent.measure(dropped, &pull_env::digest(dropped)).unwrap();
    let s = pull_env::wait_for(&verifier, uuid, "INVALID_QUOTE", |s| s["operational_state"] == 9).await;
    assert_eq!(
        s["last_event_id"], "ima.validation.ima-ng.not_in_allowlist",
        "{s}"
    );
    assert_eq!(
        s["failures"][0]["context"]["message"],
        format!("File not found in allowlist: {dropped}"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_2025_an_ek_whose_point_is_off_its_curve_is_refused() {
    // An ECC EK is used for ECDH in MakeCredential: a point off its curve (invalid-curve
    // attacks) is refused with a 400, for P-256 and P-384, and nothing is stored.
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::start(RegistrarOptions {
        require_ek_cert: false,
        ..RegistrarOptions::default()
    })
    .await
    .unwrap();
    let client = registrar.plain_client();
    let admin = registrar.admin_client().unwrap();
    for (uuid, kind, coordinate) in [
        ("adv-p256", EkKind::EccP256, 32),
        ("adv-p384", EkKind::EccP384, 48),
    ] {
        let (ek_tpm, body) = {
            let agent = TestAgent::new(&tpm, uuid, kind, AkKind::EcDsaP256).unwrap();
            let mut body = agent.registration_body();
            body.as_object_mut().unwrap().remove("ekcert");
            (agent.ek_tpm.clone(), body)
        };
        let url = format!("{}/v2.6/agents/{uuid}", registrar.http);
        for (what, forged) in [
            ("x flipped", off_curve(&ek_tpm, coordinate)),
            ("(0, 0)", zero_point(&ek_tpm, coordinate)),
        ] {
            let mut bad = body.clone();
            bad["ek_tpm"] = json!(B64.encode(&forged));
            let (status, reply) = send_json(client.post(&url).json(&bad)).await.unwrap();
            assert_eq!(status, 400, "{uuid}, {what}: {reply}");
            assert!(
                reply["status"].as_str().unwrap().contains("ek_tpm"),
                "{uuid}, {what}: {reply}"
            );
        }
        let (_, listing) = send_json(admin.get(format!("{}/v2.6/agents", registrar.https)))
            .await
            .unwrap();
        assert!(
            !listing["results"]["uuids"].to_string().contains(uuid),
            "{listing}"
        );
        // The genuine key registers.
        let (status, reply) = send_json(client.post(&url).json(&body)).await.unwrap();
        assert_eq!(status, 200, "{uuid}: {reply}");
    }
}

#[tokio::test]
async fn hardening_2025_an_ima_list_ahead_of_pcr_10_passes_and_resumes_at_the_first_uncovered_entry() {
    // The kernel appends to the list before it extends PCR 10, so a quote may lag the list
    // it comes with. The covered prefix is judged; the entry beyond it is asked for again
    // and judged once PCR 10 covers it. (ima_replay.rs replays the same case offline.)
    let verifier = pull_env::verifier().await;
    let tpm = Swtpm::start().unwrap();
    let uuid = "hardening-pcr-lags";
    let agent = pull_env::start_agent(&tpm, uuid, &verifier).await;
    let (first, late) = ("/usr/bin/first", "/usr/bin/late");
    agent.measure(first, &pull_env::digest(first)).unwrap();
    pull_env::enrol(&verifier, &agent, uuid, &pull_env::policy_for(&[first, late])).await;
    let s = pull_env::wait_for(&verifier, uuid, "a passing round", |s| {
        s["attestation_count"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    // Entry 1 is in the list; PCR 10 does not hold it yet.
    let pending = agent
        .state
        .lock()
        .unwrap()
        .log
        .add_ima_ng(late, &pull_env::digest(late));
    let asked_before = agent.requested_offsets().len();
    let count = s["attestation_count"].as_u64().unwrap();
    let s = pull_env::wait_for(&verifier, uuid, "rounds with the list ahead", |s| {
        s["operational_state"] == 9 || s["attestation_count"].as_u64().unwrap_or(0) >= count + 3
    })
    .await;
    assert_eq!(
        (s["operational_state"].as_i64(), s["attestation_status"].as_str()),
        (Some(3), Some("PASS")),
        "a list ahead of PCR 10 failed: {s}"
    );
    let offsets = agent.requested_offsets()[asked_before..].to_vec();
    assert!(
        offsets.iter().all(|o| *o == 1),
        "the uncovered entry must be asked for again: {offsets:?}"
    );

    // The kernel catches up: the entry is covered, judged, and the next round moves on.
    agent
        .state
        .lock()
        .unwrap()
        .agent
        .pcr_extend(
            10,
            &[
                (HashingAlgorithm::Sha256, pending.sha256),
                (HashingAlgorithm::Sha1, pending.sha1),
            ],
        )
        .unwrap();
    until("a round from entry 2", || {
        agent.requested_offsets().last() == Some(&2)
    })
    .await;
    let s = pull_env::status(&verifier, uuid).await;
    assert_eq!(
        (s["operational_state"].as_i64(), s["attestation_status"].as_str()),
        (Some(3), Some("PASS")),
        "{s}"
    );
}
