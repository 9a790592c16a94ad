//! Two `zest verifier` processes on one PostgreSQL database share 20 pull agents by leases.
//! One is killed with SIGKILL: every agent it polled is taken over and attested again by the
//! other within two lease periods, no agent is ever polled by both, and no attestation is
//! lost or counted twice.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zest_tests::postgres::Postgres;
use zest_tests::process::ZestProcess;
use zest_tests::pull_agent::{PullAgent, PullOptions};
use zest_tests::pull_env::{enrol_at, policy_for};
use zest_tests::server::{admin_client, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent, fixture, free_port};

const AGENTS: usize = 20;

/// The lease period under test (`ZEST_FAILOVER_LEASE_SECONDS`, 3 s): the bound is two.
fn lease() -> Duration {
    let seconds = std::env::var("ZEST_FAILOVER_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(seconds)
}

/// A `zest verifier` process; killed (SIGKILL) when dropped.
struct VerifierProcess {
    id: &'static str,
    process: ZestProcess,
    port: u16,
    data: PathBuf,
}

impl VerifierProcess {
    /// Starts verifier `id` on `dir` with the database `url`; `pki` (another verifier's
    /// `cv_ca`) is copied in first, so agents trust both alike.
    async fn start(dir: &Path, id: &'static str, url: &str, pki: Option<&Path>) -> Self {
        let port = free_port();
        let (config, data) = (dir.join("etc"), dir.join("data"));
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        if let Some(pki) = pki {
            let to = data.join("cv_ca");
            std::fs::create_dir_all(&to).unwrap();
            for file in std::fs::read_dir(pki).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
            }
        }
        let conf = config.join("verifier.conf");
        std::fs::write(
            &conf,
            format!(
                "[verifier]\nip = 127.0.0.1\nport = {port}\nuuid = {id}\ndatabase_url = {url}\nquote_interval = 0.5\nmax_retries = 1\n[zest]\nlease_period = {}\n",
                lease().as_secs_f64()
            ),
        )
        .unwrap();
        // A database URL with a user name is treated as a credential: owner-only.
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let args: Vec<&OsStr> = vec![
            "--config-dir".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "verifier".as_ref(),
        ];
        let log = dir.join(format!("{id}.log"));
        let process = ZestProcess::start(&args, port, &log)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        Self {
            id,
            process,
            port,
            data,
        }
    }

    fn https(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn log_text(&self) -> String {
        self.process.log_text()
    }

    async fn status(&self, admin: &reqwest::Client, uuid: &str) -> Value {
        let (code, reply) = send_json(admin.get(format!("{}/v2.6/agents/{uuid}", self.https())))
            .await
            .unwrap();
        assert_eq!(code, 200, "{reply}");
        reply["results"].clone()
    }

    async fn listed(&self, admin: &reqwest::Client, verifier: &str) -> usize {
        let url = format!("{}/v2.6/agents/?verifier={verifier}", self.https());
        let (code, reply) = send_json(admin.get(url)).await.unwrap();
        assert_eq!(code, 200, "{reply}");
        reply["results"]["uuids"].as_array().map_or(0, Vec::len)
    }
}

/// Whether `peers` (who asked for each quote, in order) ever went back to an address it had
/// left: two verifiers taking turns on one agent.
fn interleaved(peers: &[SocketAddr]) -> bool {
    let mut runs: Vec<SocketAddr> = Vec::new();
    for peer in peers {
        if runs.last() != Some(peer) {
            if runs.contains(peer) {
                return true;
            }
            runs.push(*peer);
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_verifiers_agents_are_attested_again_by_the_other_within_two_lease_periods() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("fleet").unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = VerifierProcess::start(dirs[0].path(), "v1", &url, None).await;
    let pki = first.data.join("cv_ca");
    let second = VerifierProcess::start(dirs[1].path(), "v2", &url, Some(&pki)).await;
    let admin = admin_client(&first.data).unwrap();

    // 20 pull agents, enrolled half through each verifier.
    let pubkey = String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048pub.pem")).unwrap();
    let mut tpms = Vec::new();
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let tpm = Swtpm::start().unwrap();
        let uuid = format!("fleet-{i:02}");
        let agent = TestAgent::new(&tpm, &uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
        let agent = PullAgent::start_with(
            agent,
            pubkey.clone(),
            &pki.join("cacert.crt"),
            "127.0.0.1:0".parse().unwrap(),
            PullOptions::default(),
        )
        .await
        .unwrap();
        let through = if i % 2 == 0 { &first } else { &second };
        let (code, reply) = enrol_at(
            &admin,
            &through.https(),
            &agent,
            &uuid,
            &policy_for(&[]),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(code, 200, "{reply}");
        tpms.push(tpm);
        agents.push((uuid, agent));
    }

    // Every agent attested, each by one verifier.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holders: HashMap<String, (String, u64)> = loop {
        let mut seen = HashMap::new();
        for (uuid, _) in &agents {
            let s = first.status(&admin, uuid).await;
            let count = s["attestation_count"].as_u64().unwrap_or(0);
            if count >= 2 && s["attestation_status"] == "PASS" {
                seen.insert(
                    uuid.clone(),
                    (s["verifier_id"].as_str().unwrap_or("").to_owned(), count),
                );
            }
        }
        if seen.len() == AGENTS {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "not every agent was attested: {seen:?}\n{}\n{}",
            first.log_text(),
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let held_by = |id: &str| holders.values().filter(|(v, _)| v == id).count();
    assert_eq!(held_by("v1") + held_by("v2"), AGENTS, "{holders:?}");
    assert_eq!(first.listed(&admin, "v1").await, held_by("v1"));
    assert_eq!(first.listed(&admin, "v2").await, held_by("v2"));

    // SIGKILL the verifier holding more agents: it releases nothing.
    let (mut victim, survivor) = if held_by("v1") >= held_by("v2") {
        (first, second)
    } else {
        (second, first)
    };
    let taken: Vec<&String> = holders
        .iter()
        .filter(|(_, (v, _))| v == victim.id)
        .map(|(uuid, _)| uuid)
        .collect();
    let before: HashMap<String, u64> = {
        let mut counts = HashMap::new();
        for (uuid, _) in &agents {
            let s = survivor.status(&admin, uuid).await;
            counts.insert(uuid.clone(), s["attestation_count"].as_u64().unwrap_or(0));
        }
        counts
    };
    victim.process.child.kill().unwrap();
    victim.process.child.wait().unwrap();
    let killed = Instant::now();

    // Each of its agents: taken over and attested again within two lease periods.
    let bound = lease() * 2;
    let mut pending: Vec<&String> = taken.clone();
    let mut slowest = Duration::ZERO;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for uuid in pending {
            let s = survivor.status(&admin, uuid).await;
            let count = s["attestation_count"].as_u64().unwrap_or(0);
            if s["verifier_id"] == survivor.id && count > before[uuid] && s["attestation_status"] == "PASS" {
                slowest = slowest.max(killed.elapsed());
            } else {
                still.push(uuid);
            }
        }
        pending = still;
        assert!(
            killed.elapsed() <= bound || pending.is_empty(),
            "{} agents not attested again within {bound:?} of the kill: {pending:?}\n{}",
            pending.len(),
            survivor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "failover: {} agents of {} attested again by {} within {slowest:?} (bound {bound:?})",
        taken.len(),
        victim.id,
        survivor.id
    );
    assert_eq!(survivor.listed(&admin, survivor.id).await, AGENTS);
    assert_eq!(survivor.listed(&admin, victim.id).await, 0);

    // The survivor runs two more rounds of every agent; then what each agent saw.
    let after: HashMap<String, u64> = {
        let mut counts = HashMap::new();
        for (uuid, _) in &agents {
            let s = survivor.status(&admin, uuid).await;
            counts.insert(uuid.clone(), s["attestation_count"].as_u64().unwrap_or(0));
        }
        counts
    };
    let deadline = Instant::now() + lease() * 4;
    for (uuid, _) in &agents {
        loop {
            let s = survivor.status(&admin, uuid).await;
            if s["attestation_count"].as_u64().unwrap_or(0) >= after[uuid] + 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{uuid} stopped being attested: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (uuid, agent) in &agents {
        let s = survivor.status(&admin, uuid).await;
        let count = s["attestation_count"].as_u64().unwrap_or(0);
        let peers = agent.state.lock().unwrap().quote_peers.clone();
        assert!(
            !interleaved(&peers),
            "{uuid} was polled by two verifiers in turn: {peers:?}"
        );
        // Every counted attestation is a quote the agent gave; none counted twice, none
        // lost across the takeover.
        assert!(count >= before[uuid], "{uuid}: {count} < {}", before[uuid]);
        assert!(
            count as usize <= peers.len(),
            "{uuid}: {count} attestations, {} quotes",
            peers.len()
        );
        assert_eq!(s["attestation_status"], "PASS", "{uuid}: {s}");
    }
}
