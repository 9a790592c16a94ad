//! zest on PostgreSQL (`database_url = postgresql://…`): a registrar and a verifier keep
//! their records in a real PostgreSQL cluster, an agent registers and attests as on the
//! embedded default, and a restarted verifier finds it again. A database it cannot reach
//! stops it with an error that names the problem and not the password.

use serde_json::json;
use zest::store::Database;
use zest_tests::postgres::{Postgres, with_client};
use zest_tests::push_env::{config, digest, enrol, policy_for, push_agent, round, status};
use zest_tests::server::{RegistrarOptions, TestRegistrar, TestVerifier, register_at_and_activate_at};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_and_a_verifier_on_postgres_register_and_attest_an_agent() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("zest").unwrap();
    let database = Database::from_url(&url).unwrap();

    // The first TPM manufactured creates the EK CA the registrar trusts.
    let tpm = Swtpm::start().unwrap();
    let registrar = TestRegistrar::start(RegistrarOptions {
        database: database.clone(),
        ..RegistrarOptions::trusting_swtpm_ca()
    })
    .await
    .unwrap();
    let mut registered = TestAgent::new(&tpm, "pg-registered", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    // Two registrars on the database, as behind one address: registered at one, activated
    // at the other.
    let other = TestRegistrar::start(RegistrarOptions {
        database: database.clone(),
        ..RegistrarOptions::trusting_swtpm_ca()
    })
    .await
    .unwrap();
    register_at_and_activate_at(
        &registrar.plain_client(),
        &registrar.http,
        &other.http,
        &mut registered,
        "2.6",
    )
    .await
    .unwrap();
    // Stored in PostgreSQL, not in an embedded file.
    let active: bool = with_client(&url, |db| {
        Ok(db
            .query_one(
                "SELECT active FROM registrar_agents WHERE agent_id = 'pg-registered'",
                &[],
            )?
            .get(0))
    })
    .unwrap();
    assert!(active);
    assert!(!registrar.data.path().join("zest.sqlite").exists());

    let mut settings = config();
    settings.database = database;
    let data = tempfile::tempdir().unwrap();
    let verifier = TestVerifier::start_in(data, settings).await.unwrap();
    let push_tpm = Swtpm::start().unwrap();
    let uuid = "pg-pushed";
    let mut agent = push_agent(&verifier, &push_tpm, uuid, AkKind::EcDsaP256).await;
    let tool = "/usr/bin/tool".to_string();
    agent.measure(&tool, &digest(&tool)).unwrap();
    enrol(
        &verifier,
        &agent.agent,
        "{}",
        Some(&policy_for(std::slice::from_ref(&tool))),
    )
    .await;
    agent.authenticate().await.unwrap();
    let (_, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(judged["evaluation"], "pass", "{judged}");
    assert!(!verifier.data.path().join("zest.sqlite").exists());

    // Another verifier process on the same database finds the agent, its session and its
    // attestations where the first left them.
    let verifier = verifier.restart().await.unwrap();
    agent.verifier = verifier.https.clone();
    let s = status(&verifier, uuid).await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");
    let (index, _, judged) = round(&verifier, &mut agent).await;
    assert_eq!(
        (index, judged["evaluation"].as_str()),
        (1, Some("pass")),
        "{judged}"
    );
    let count: i64 = with_client(&url, |db| {
        Ok(db
            .query_one(
                "SELECT count(*) FROM push_attestations WHERE agent_id = $1",
                &[&uuid],
            )?
            .get(0))
    })
    .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn an_unreachable_database_stops_the_verifier_without_showing_its_password() {
    let port = zest_tests::free_port();
    let mut settings = config();
    settings.database =
        Database::from_url(&format!("postgresql://zest:hunter2@127.0.0.1:{port}/zest")).unwrap();
    assert!(
        !format!("{settings:?}").contains("hunter2"),
        "the configuration's Debug hides it"
    );
    let data = tempfile::tempdir().unwrap();
    let error = TestVerifier::start_in(data, settings).await.err().unwrap();
    let text = format!("{error:#}");
    assert!(text.contains("database"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let refused = Database::from_url("mysql://zest:hunter2@db/zest")
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("not mysql") && !refused.contains("hunter2"),
        "{refused}"
    );
}

/// Push agents may reach any verifier on the database: a session opened at one is proven at
/// another, once only, and rounds alternate between them with one numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_agent_may_open_prove_and_attest_at_any_verifier_on_the_database() {
    let pg = Postgres::start().unwrap();
    let database = Database::from_url(&pg.create_database("zest").unwrap()).unwrap();
    let mut settings = config();
    settings.database = database;
    let first = TestVerifier::start_in(tempfile::tempdir().unwrap(), settings.clone())
        .await
        .unwrap();
    // The same PKI, as a site gives its verifiers.
    let data = tempfile::tempdir().unwrap();
    let pki = data.path().join("cv_ca");
    std::fs::create_dir_all(&pki).unwrap();
    for file in std::fs::read_dir(first.data.path().join("cv_ca")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), pki.join(file.file_name())).unwrap();
    }
    let second = TestVerifier::start_in(data, settings).await.unwrap();

    let tpm = Swtpm::start().unwrap();
    let uuid = "pg-roaming";
    let mut agent = push_agent(&first, &tpm, uuid, AkKind::EcDsaP256).await;
    let tool = "/usr/bin/tool".to_string();
    agent.measure(&tool, &digest(&tool)).unwrap();
    enrol(
        &first,
        &agent.agent,
        "{}",
        Some(&policy_for(std::slice::from_ref(&tool))),
    )
    .await;

    // Opened at the first, proven at the second.
    let (id, proof) = agent.authenticate_at(&first.https, &second.https).await.unwrap();
    // The same proof again, at either: refused (a challenge is taken once).
    for at in [&first.https, &second.https] {
        let (status, reply) = agent.send_proof(at, &id, &proof).await.unwrap();
        assert_ne!(status, 200, "{reply}");
        assert!(reply["data"]["attributes"].get("token").is_none(), "{reply}");
    }
    // Hostile proofs at the verifier that did not open the session: a session id it never
    // handed out (a UUIDv7 years ahead, one long expired) is unknown, and a proof of a
    // real session sent in another agent's name is checked against that agent's challenge.
    for forged in [
        "01f00000-0000-7000-8000-000000000000",
        "00000000-0001-7000-8000-000000000000",
    ] {
        let (code, reply) = agent.send_proof(&second.https, forged, &proof).await.unwrap();
        assert_eq!(code, 404, "{forged}: {reply}");
    }
    let (id, challenge) = agent.open_session(&first.https).await.unwrap();
    let mut renamed = agent.proof(&id, &challenge).unwrap();
    renamed["data"]["attributes"]["agent_id"] = json!("pg-other-agent");
    let (code, reply) = agent.send_proof(&second.https, &id, &renamed).await.unwrap();
    assert_eq!(code, 401, "{reply}");
    assert!(reply["data"]["attributes"].get("token").is_none(), "{reply}");

    // Rounds alternate between the verifiers, numbered as one.
    for (expected, verifier) in [(0, &second), (1, &first), (2, &second)] {
        agent.verifier = verifier.https.clone();
        let (index, _, judged) = round(verifier, &mut agent).await;
        assert_eq!(
            (index, judged["evaluation"].as_str()),
            (expected, Some("pass")),
            "{judged}"
        );
    }
    assert_eq!(status(&first, uuid).await["attestation_count"], 3);
}
