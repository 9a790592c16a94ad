//! `zest import keylime`: a fleet Keylime attested, in Keylime 7.14.3's own tables and
//! encodings, is attested by zest after the import, without the agent registering or being
//! enrolled again. The import is a dry run until `--apply`, and a second run changes nothing.
//! (The interop run imports databases made by Keylime's own code; this test's rows follow
//! the same schema for a real swtpm agent.)

use std::path::Path;
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zest::store::{RegistrarStore, SqliteStore};
use zest_tests::postgres::{Postgres, with_client};
use zest_tests::process::zest_binary;
use zest_tests::pull_agent::{PullAgent, PullOptions};
use zest_tests::pull_env::{config, digest, policy_for, wait_for};
use zest_tests::server::TestVerifier;
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent, fixture};

/// Keylime 7.14.3's tables at alembic head a59cc9366774, as its migrations make them on SQLite.
const VERIFIER_TABLES: &str = r#"
CREATE TABLE "allowlists" (id INTEGER NOT NULL, name VARCHAR(255) NOT NULL, tpm_policy TEXT,
    ima_policy TEXT, checksum VARCHAR(128), generator INTEGER, PRIMARY KEY (id),
    CONSTRAINT uniq_allowlists0name UNIQUE (name));
CREATE TABLE mbpolicies (id INTEGER NOT NULL, name VARCHAR(255) NOT NULL, mb_policy TEXT,
    PRIMARY KEY (id), CONSTRAINT uniq_mbpolicies_name UNIQUE (name));
CREATE TABLE "verifiermain" (agent_id VARCHAR(80) NOT NULL, v VARCHAR(45), ip VARCHAR(255),
    port INTEGER, operational_state INTEGER, public_key VARCHAR(500), tpm_policy TEXT,
    meta_data TEXT, revocation_key VARCHAR(2800), tpm_version INTEGER, accept_tpm_hash_algs TEXT,
    accept_tpm_encryption_algs TEXT, accept_tpm_signing_algs TEXT, hash_alg VARCHAR(10),
    enc_alg VARCHAR(10), sign_alg VARCHAR(10), ima_sign_verification_keys VARCHAR(1000),
    verifier_id VARCHAR(100), verifier_ip VARCHAR(255), verifier_port INTEGER, boottime INTEGER,
    ima_pcrs TEXT, pcr10 BLOB, next_ima_ml_entry INTEGER, severity_level INTEGER,
    last_event_id VARCHAR(100), learned_ima_keyrings TEXT, supported_version VARCHAR(50),
    ak_tpm VARCHAR(500), mtls_cert VARCHAR(2084), attestation_count INTEGER, ima_policy_id INTEGER,
    tpm_clockinfo TEXT, last_received_quote INTEGER, last_successful_attestation INTEGER,
    mb_policy_id INTEGER, accept_attestations BOOLEAN DEFAULT 1 NOT NULL,
    consecutive_attestation_failures INTEGER, PRIMARY KEY (agent_id));
"#;

const REGISTRAR_TABLES: &str = r#"
CREATE TABLE "registrarmain" (agent_id VARCHAR(80) NOT NULL, "key" VARCHAR(45), ekcert TEXT,
    "virtual" BOOLEAN, active BOOLEAN, provider_keys TEXT, regcount INTEGER, aik_tpm VARCHAR(500),
    ek_tpm VARCHAR(500), ip VARCHAR(15), port INTEGER, mtls_cert TEXT, iak_tpm VARCHAR(500),
    idevid_tpm VARCHAR(500), iak_cert VARCHAR(2048), idevid_cert VARCHAR(2048),
    PRIMARY KEY (agent_id));
"#;

fn zest(args: &[&str]) -> Output {
    std::process::Command::new(zest_binary().unwrap())
        .args(args)
        .env_remove("ZEST_DATA_DIR")
        .env_remove("ZEST_CONFIG_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn der_of_pem(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(body).unwrap()
}

/// An agent as Keylime's tables hold it.
struct KeylimeAgent {
    uuid: String,
    port: u16,
    ak: Vec<u8>,
    ek: Vec<u8>,
    cert_pem: String,
    attested: u64,
}

/// SQL text of a value.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The rows Keylime 7.14.3 leaves for `agent` after it attested it, and a second enrolment
/// zest cannot take (no mTLS certificate), as SQL both SQLite and PostgreSQL run.
fn keylime_rows(agent: &KeylimeAgent) -> (String, String) {
    let policy = serde_json::to_string_pretty(&policy_for(&["/usr/bin/tool"])).unwrap();
    // Keylime stores tpm_policy as JSON text of a JSON string.
    let tpm_policy =
        serde_json::to_string(&serde_json::to_string(&serde_json::json!({"mask": "0x400"})).unwrap())
            .unwrap();
    let mut verifier = format!(
        "INSERT INTO allowlists (id, name, tpm_policy, ima_policy, checksum, generator) VALUES (1, 'web', NULL, {}, 'c', 3);
         INSERT INTO mbpolicies (id, name, mb_policy) VALUES (1, {}, NULL);",
        quoted(&policy),
        quoted(&agent.uuid)
    );
    for (id, port, mtls) in [
        (agent.uuid.as_str(), agent.port, quoted(&agent.cert_pem)),
        ("no-mtls-agent", 9999, "NULL".to_owned()),
    ] {
        verifier += &format!(
            "INSERT INTO verifiermain (agent_id, v, ip, port, operational_state, public_key, tpm_policy,
                meta_data, revocation_key, accept_tpm_hash_algs, accept_tpm_encryption_algs,
                accept_tpm_signing_algs, hash_alg, enc_alg, sign_alg, ima_sign_verification_keys,
                verifier_id, verifier_ip, verifier_port, boottime, ima_pcrs, pcr10, next_ima_ml_entry,
                learned_ima_keyrings, supported_version, ak_tpm, mtls_cert, attestation_count,
                ima_policy_id, tpm_clockinfo, last_received_quote, last_successful_attestation,
                mb_policy_id, accept_attestations)
             VALUES ({}, NULL, '127.0.0.1', {port}, 3, NULL, {}, '{{}}', '',
                '[\"sha512\", \"sha384\", \"sha256\"]', '[\"ecc\", \"rsa\"]', '[\"ecschnorr\", \"rsassa\"]',
                'sha256', 'rsa', 'rsassa', '', 'default', '127.0.0.1', 8881, 0, '[]', NULL, 0,
                '{{}}', '2.2', {}, {mtls}, {}, 1, '{{\"clock\": 5, \"resetCount\": 1, \"restartCount\": 0, \"safe\": 1}}',
                1764000000, 1764000000, 1, TRUE);",
            quoted(id),
            quoted(&tpm_policy),
            quoted(&B64.encode(&agent.ak)),
            agent.attested,
        );
    }
    // From 7.12 the registrar keeps certificates as base64 DER.
    let registrar = format!(
        "INSERT INTO registrarmain (agent_id, key, ekcert, virtual, active, provider_keys, regcount,
            aik_tpm, ek_tpm, ip, port, mtls_cert)
         VALUES ({}, {}, NULL, NULL, TRUE, NULL, 1, {}, {}, '127.0.0.1', {}, {});",
        quoted(&agent.uuid),
        quoted(&B64.encode(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef")),
        quoted(&B64.encode(&agent.ak)),
        quoted(&B64.encode(&agent.ek)),
        agent.port,
        quoted(&B64.encode(der_of_pem(&agent.cert_pem))),
    );
    (verifier, registrar)
}

/// Keylime's SQLite databases in `dir` holding `agent`.
fn keylime_databases(dir: &Path, agent: &KeylimeAgent) {
    let (verifier, registrar) = keylime_rows(agent);
    let cv = rusqlite::Connection::open(dir.join("cv_data.sqlite")).unwrap();
    cv.execute_batch(VERIFIER_TABLES).unwrap();
    cv.execute_batch(&verifier).unwrap();
    let reg = rusqlite::Connection::open(dir.join("reg_data.sqlite")).unwrap();
    reg.execute_batch(REGISTRAR_TABLES).unwrap();
    reg.execute_batch(&registrar).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keylime_fleet_is_attested_by_zest_after_the_import_without_registering_again() {
    let zest_dir = tempfile::tempdir().unwrap();
    let data = zest_dir.path().to_path_buf();
    let data_arg = data.to_str().unwrap();
    stdout(&zest(&["--data-dir", data_arg, "ca", "init"]));

    // The agent Keylime attested: it trusts the verifier's CA (here zest's, as a site's PKI).
    let tpm = Swtpm::start().unwrap();
    let uuid = "7c1a5b2e-2a43-4c1e-9f77-0f2d8c9a1b10";
    let test_agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let pubkey = String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048pub.pem")).unwrap();
    let agent = PullAgent::start_with(
        test_agent,
        pubkey,
        &data.join("cv_ca/cacert.crt"),
        "127.0.0.1:0".parse().unwrap(),
        PullOptions::default(),
    )
    .await
    .unwrap();
    agent.measure("/usr/bin/tool", &digest("/usr/bin/tool")).unwrap();
    let keylime = tempfile::tempdir().unwrap();
    let (ak, ek) = {
        let state = agent.state.lock().unwrap();
        (state.agent.aik_tpm.clone(), state.agent.ek_tpm.clone())
    };
    let fleet = KeylimeAgent {
        uuid: uuid.to_owned(),
        port: agent.addr.port(),
        ak,
        ek,
        cert_pem: agent.cert_pem.clone(),
        attested: 120,
    };
    keylime_databases(keylime.path(), &fleet);
    let cv = keylime.path().join("cv_data.sqlite");
    let reg = format!("sqlite:///{}", keylime.path().join("reg_data.sqlite").display());
    let import = |apply: bool| {
        let mut args = vec!["--data-dir", data_arg, "import", "keylime"];
        args.extend(["--verifier-db", cv.to_str().unwrap(), "--registrar-db", &reg]);
        if apply {
            args.push("--apply");
        }
        stdout(&zest(&args))
    };

    // A dry run says what it would do, and writes nothing.
    let dry = import(false);
    for line in [
        "+ would add runtime policy web",
        &format!("+ would add measured-boot policy {uuid}"),
        &format!("+ would add enrolment of {uuid} (pull mode; runtime policy web"),
        "- enrolment of no-mtls-agent skipped: no mTLS certificate",
        &format!("+ would add registration of {uuid} (active)"),
        "dry run: nothing written",
    ] {
        assert!(dry.contains(line), "{line:?} missing from\n{dry}");
    }
    let store = SqliteStore::open(&data.join("zest.sqlite")).unwrap();
    assert!(zest::store::VerifierStore::agents(&store).unwrap().is_empty());
    assert!(store.list_agents().unwrap().is_empty());

    // Applied, then again: the second run finds everything in place.
    let applied = import(true);
    assert!(
        applied.contains("written: 2 policies, 1 enrolments, 1 registrations"),
        "{applied}"
    );
    let again = import(true);
    assert!(
        again.contains("0 to add, 4 unchanged")
            && again.contains("written: 0 policies, 0 enrolments, 0 registrations"),
        "{again}"
    );
    let registered = store.registered_agent(uuid).unwrap().unwrap();
    assert!(registered.active);
    assert_eq!(
        registered.mtls_cert.as_deref().map(der_of_pem),
        Some(der_of_pem(&agent.cert_pem))
    );
    drop(store);

    // zest attests the agent from where Keylime left it: no registration, no enrolment.
    let verifier = TestVerifier::start_in(zest_dir, config()).await.unwrap();
    let s = wait_for(&verifier, uuid, "a passing round after the import", |s| {
        s["attestation_status"] == "PASS" && s["attestation_count"].as_u64().unwrap_or(0) > 120
    })
    .await;
    assert_eq!(s["runtime_policy_name"], "web", "{s}");
    assert!(!agent.state.lock().unwrap().requested_offsets.is_empty());
}

/// Keylime on PostgreSQL (`postgresql+psycopg2://…`, as its `database_url` says): the same
/// rows import as from SQLite.
#[test]
fn keylime_databases_on_postgresql_import_as_from_sqlite() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("keylime").unwrap();
    let agent = KeylimeAgent {
        uuid: "pg-keylime-agent".into(),
        port: 9002,
        ak: b"ak".to_vec(),
        ek: b"ek".to_vec(),
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n".into(),
        attested: 7,
    };
    let (verifier, registrar) = keylime_rows(&agent);
    let tables = format!("{VERIFIER_TABLES}{REGISTRAR_TABLES}")
        .replace("BLOB", "BYTEA")
        .replace("DEFAULT 1", "DEFAULT true");
    with_client(&url, |db| {
        Ok(db.batch_execute(&format!("{tables}{verifier}{registrar}"))?)
    })
    .unwrap();
    let keylime_url = url.replace("postgresql://", "postgresql+psycopg2://");
    let data = tempfile::tempdir().unwrap();
    let out = stdout(&zest(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "import",
        "keylime",
        "--verifier-db",
        &keylime_url,
        "--registrar-db",
        &keylime_url,
        "--apply",
    ]));
    assert!(
        out.contains("written: 2 policies, 1 enrolments, 1 registrations"),
        "{out}"
    );
    assert!(!out.contains("psycopg2://zest@"), "the URL is not echoed: {out}");
    let store = SqliteStore::open(&data.path().join("zest.sqlite")).unwrap();
    let enrolled = zest::store::VerifierStore::agent(&store, "pg-keylime-agent")
        .unwrap()
        .unwrap();
    assert_eq!(enrolled.tpm_policy, r#"{"mask":"0x400"}"#);
    assert_eq!(enrolled.accept_tpm_hash_algs, ["sha512", "sha384", "sha256"]);
    assert_eq!(
        (enrolled.attestation_count, enrolled.tpm_clock),
        (7, Some((5, 1, 0)))
    );
    assert_eq!(enrolled.runtime_policy, "web");
    assert!(
        store
            .registered_agent("pg-keylime-agent")
            .unwrap()
            .unwrap()
            .active
    );
}
