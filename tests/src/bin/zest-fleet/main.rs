//! zest-fleet: a simulated fleet of agents against a real `zest serve` process, for
//! measuring what grows with the fleet. Each agent has a software TPM (`soft_tpm`) whose
//! structures are byte-for-byte a TPM's: it registers at the registrar (MakeCredential /
//! ActivateCredential), is enrolled at the verifier as Keylime's tenant enrols it, and
//! attests with an IMA log that grows into its PCR 10: in push mode (API 3.0: proof of
//! possession, capabilities, evidence), or in pull mode serving its quotes to the verifier
//! (`pull.rs`).
//!
//! It prints attestations/s, evidence→verdict latency (p50/p99/max, from the verifier's
//! own timestamps), verifier CPU per attestation, verifier RSS (and per agent), the
//! verifier's write syscalls and bytes per second (SQLite's writes), and its own CPU. With
//! `--check` it exits non-zero unless every verdict is the expected one: honest agents
//! pass, and each `--tamper-every` agent fails once it measures a file its policy lacks.
//!
//! Run: `cargo build --release -p zest -p zest-tests --bin zest-fleet`, then
//! `target/release/zest-fleet --agents 10000 --interval 2 --seconds 60`.
//!
//! `--verifier URL --data-dir DIR [--registrar URL] [--verifier-pgid PGID]` runs a push
//! fleet against a verifier that is already running instead, such as Keylime's own: the same
//! requests, verdicts counted from each agent's `attestation_count`, and the costs of every
//! process in the verifier's process group.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use zest::evidence::HashAlg;
use zest_tests::process::{cpu_seconds, memory_kib};
use zest_tests::push_agent::PushAgent;
use zest_tests::server::{admin_client, anonymous_client_from, send_json};
use zest_tests::soft_tpm::{SoftAgent, SoftAk, SoftTpm};

mod pull;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Agents push evidence (API 3.0).
    Push,
    /// The verifier polls each agent on its own loopback address.
    Pull,
}

#[derive(Debug, Parser)]
#[command(about = "A simulated fleet of push agents against a real zest serve process")]
struct Args {
    /// Push (agents submit evidence) or pull (the verifier polls agents).
    #[arg(long, value_enum, default_value = "push")]
    mode: Mode,
    /// Number of agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Seconds of attesting, after every agent is registered, enrolled and authenticated.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Seconds between two attestations of one agent (0: back to back, as fast as the
    /// verifier takes them).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Tenants of a shared server the agents are spread over (1: all in the default tenant).
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Runtime policies per tenant, each its own document (agents spread over them).
    #[arg(long, default_value_t = 1)]
    policies_per_tenant: usize,
    /// Paths in each runtime policy.
    #[arg(long, default_value_t = 1000)]
    policy_paths: usize,
    /// IMA entries each agent adds before each attestation.
    #[arg(long, default_value_t = 1)]
    ima_growth: usize,
    /// IMA entries each agent has measured before its first attestation (a booted
    /// machine's list; the canary judges each agent's whole list).
    #[arg(long, default_value_t = 0)]
    ima_initial: usize,
    /// Every Nth agent has an RSA-2048 AK (0: all ECDSA P-256).
    #[arg(long, default_value_t = 10)]
    rsa_every: usize,
    /// Every Nth agent measures a file its policy lacks in its third round (0: none).
    #[arg(long, default_value_t = 0)]
    tamper_every: usize,
    /// Exit non-zero unless every verdict is the expected one.
    #[arg(long)]
    check: bool,
    /// Registrations and enrolments in flight at once while setting up.
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// The zest binary (default: `zest` beside this one).
    #[arg(long, env = "ZEST_BIN")]
    zest: Option<PathBuf>,
    /// Where `zest serve` logs (default: its data directory, removed at the end).
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Seconds to wait for the last verdicts after the run.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Push to this verifier (HTTPS URL), already running, instead of starting `zest serve`:
    /// for example Keylime's, side by side. Needs --data-dir.
    #[arg(long, requires = "data_dir")]
    verifier: Option<String>,
    /// With --verifier: register agents at this registrar (plain HTTP URL) first.
    #[arg(long, requires = "verifier")]
    registrar: Option<String>,
    /// With --verifier: the directory whose cv_ca/ holds the CA certificate and the client
    /// certificate and key the verifier trusts.
    #[arg(long, requires = "verifier")]
    data_dir: Option<PathBuf>,
    /// With --verifier: its process group, whose processes' CPU, memory and writes are
    /// measured.
    #[arg(long, requires = "verifier")]
    verifier_pgid: Option<u32>,
    /// Store in a PostgreSQL cluster of Debian's packages, started for the run (instead of
    /// the embedded SQLite file).
    #[arg(long, conflicts_with = "verifier")]
    postgres: bool,
    /// Verifier processes on the one database: `zest serve` and N-1 `zest verifier`s. Push
    /// agents are spread over them; pull agents go by the verifiers' leases.
    #[arg(long, default_value_t = 1, requires = "postgres")]
    verifiers: usize,
    /// Push: this many seconds into the run, start a canary of the fleet's live policy
    /// (every agent's recorded evidence judged again) and report its throughput and the
    /// live verdict latency while it runs.
    #[arg(long)]
    canary_after: Option<f64>,
    /// Agents whose attestation latencies are read back after the run (spread over the
    /// fleet). A canary's window is short: raise this to sample more verdicts within it.
    #[arg(long, default_value_t = 200)]
    latency_agents: usize,
}

/// A canary run during the attest phase: when it ran (Unix µs) and what it evaluated.
struct CanaryRun {
    started: u64,
    finished: u64,
    evaluated: u64,
    changes: u64,
    /// Agents judged with no recorded evidence (not judged at all).
    no_evidence: u64,
}

/// Starts a canary of the fleet's policy at `at` and waits for it to finish.
async fn canary_during(admin: reqwest::Client, verifier: String, at: Instant) -> anyhow::Result<CanaryRun> {
    tokio::time::sleep_until(at.into()).await;
    let (_, live) = send_json(admin.get(format!("{verifier}/v2.6/allowlists/fleet"))).await?;
    // The stored document comes back as JSON text; an upload is base64 of it.
    let document = B64.encode(live["results"]["runtime_policy"].as_str().unwrap_or_default());
    let started = zest::clock::unix_micros_now();
    let (status, reply) = loop {
        let (status, reply) = send_json(
            admin
                .post(format!("{verifier}/v2.6/canaries"))
                .json(&json!({"runtime_policy": document, "policy": "fleet"})),
        )
        .await?;
        // A verifier at its in-flight limit answers 503: ask again, as an operator would.
        if status != 503 {
            break (status, reply);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(status == 202, "starting the canary: {status} {reply}");
    let id = reply["results"]["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let (_, report) = send_json(admin.get(format!("{verifier}/v2.6/canaries/{id}?agents=false"))).await?;
        let results = &report["results"];
        if results["status"] == "done" {
            // The verifier's own start and end (Unix seconds): this loop polls every 100 ms.
            let at = |field: &str| results[field].as_f64().map(|t| (t * 1e6) as u64);
            return Ok(CanaryRun {
                started: at("started_at").unwrap_or(started),
                finished: at("finished_at").unwrap_or_else(zest::clock::unix_micros_now),
                evaluated: results["evaluated"].as_u64().unwrap_or(0),
                changes: results["summary"]["changes"].as_u64().unwrap_or(0),
                no_evidence: results["summary"]["no_evidence"].as_u64().unwrap_or(0),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The verifier a fleet runs against: a `zest serve` of its own, or one already running.
struct Target {
    registrar: Option<String>,
    verifier: String,
    data: PathBuf,
    /// The process to measure, or the process group of an external verifier.
    measured: Measured,
    server: Option<Server>,
}

enum Measured {
    Processes(Vec<u32>),
    Group(Option<u32>),
}

impl Target {
    /// The processes whose costs count: zest's, or every process of the external group.
    fn pids(&self) -> Vec<u32> {
        match self.measured {
            Measured::Processes(ref pids) => pids.clone(),
            Measured::Group(None) => Vec::new(),
            Measured::Group(Some(group)) => group_members(group),
        }
    }

    fn cpu(&self) -> f64 {
        self.pids().into_iter().filter_map(|p| cpu_seconds(p).ok()).sum()
    }

    fn rss_kib(&self) -> u64 {
        self.pids().into_iter().map(|p| memory_kib(p, "VmRSS:")).sum()
    }

    fn writes(&self) -> (u64, u64) {
        self.pids()
            .into_iter()
            .map(io_writes)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

/// Processes whose process group is `group` (the fifth field of /proc/PID/stat).
fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(group)
        })
        .collect()
}

/// A `zest serve` process on free ports with its own data directory, and with
/// `--verifiers N` more `zest verifier` processes on the same database; killed on drop,
/// before the database they use stops.
struct Server {
    child: Child,
    data: tempfile::TempDir,
    registrar: String,
    verifier: String,
    /// Every verifier's URL, `verifier` first.
    verifiers: Vec<String>,
    more: Vec<(Child, tempfile::TempDir)>,
    postgres: Option<zest_tests::postgres::Postgres>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.more.iter_mut().map(|(c, _)| c)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.postgres.take());
    }
}

impl Server {
    fn print_store(&self) {
        let store = if self.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        println!("  store: {store}, {} verifier process(es)", self.verifiers.len());
    }

    /// Every zest process of the run.
    fn pids(&self) -> Vec<u32> {
        std::iter::once(self.child.id())
            .chain(self.more.iter().map(|(c, _)| c.id()))
            .collect()
    }
}

/// `KEYLIME_*` settings of verifier `index` (v1, v2, …) on the database `url`.
fn database_env(command: &mut Command, url: Option<&str>, index: usize) {
    command.env("KEYLIME_VERIFIER_UUID", format!("v{}", index + 1));
    if let Some(url) = url {
        command
            .env("KEYLIME_VERIFIER_DATABASE_URL", url)
            .env("KEYLIME_REGISTRAR_DATABASE_URL", url);
    }
}

async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "{what} did not start (see --server-log)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Agents sharing one source address: fewer than the verifier's 50 new sessions per
/// address and minute.
const AGENTS_PER_ADDRESS: usize = 40;

impl Server {
    async fn start(zest: &Path, args: &Args, quote_interval: f64) -> anyhow::Result<Self> {
        let (mode, log) = (args.mode, args.server_log.as_deref());
        let postgres = if args.postgres {
            Some(zest_tests::postgres::Postgres::start()?)
        } else {
            None
        };
        let url = match &postgres {
            Some(pg) => Some(pg.create_database("fleet")?),
            None => None,
        };
        let data = tempfile::Builder::new().prefix("zest-fleet-").tempdir()?;
        let (rport, rtls, vport) = (
            zest_tests::free_port(),
            zest_tests::free_port(),
            zest_tests::free_port(),
        );
        let log = std::fs::File::create(log.map_or_else(|| data.path().join("zest.log"), Path::to_path_buf))?;
        let mut command = Command::new(zest);
        database_env(&mut command, url.as_deref(), 0);
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--registrar-port", &rport.to_string()])
            .args(["--registrar-tls-port", &rtls.to_string()])
            .args(["--verifier-port", &vport.to_string()])
            .args(["--mode", if mode == Mode::Push { "push" } else { "pull" }])
            .arg("--no-ek-cert-check")
            .args(["--quote-interval", &quote_interval.to_string()])
            // The fleet's sessions must outlive the run.
            .args(["--session-lifetime", "86400"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", zest.display()))?;
        let verifier = format!("https://localhost:{vport}");
        let mut server = Self {
            child,
            registrar: format!("http://127.0.0.1:{rport}"),
            verifiers: vec![verifier.clone()],
            verifier,
            data,
            more: Vec::new(),
            postgres,
        };
        let ca = server.data.path().join("cv_ca/client-private.pem");
        wait_for_port(rport, "zest serve").await?;
        wait_for_port(vport, "zest serve").await?;
        ensure!(ca.exists(), "zest serve made no cv_ca");
        // More verifiers: the same PKI and database, ports of their own.
        for index in 1..args.verifiers {
            let more = tempfile::Builder::new().prefix("zest-fleet-").tempdir()?;
            let pki = more.path().join("cv_ca");
            std::fs::create_dir_all(&pki)?;
            for file in std::fs::read_dir(server.data.path().join("cv_ca"))? {
                let file = file?;
                std::fs::copy(file.path(), pki.join(file.file_name()))?;
            }
            let port = zest_tests::free_port();
            // Beside --server-log when given (`LOG.v2`, …), else in its data directory.
            let log = std::fs::File::create(match args.server_log.as_deref() {
                Some(path) => path.with_extension(format!("v{}", index + 1)),
                None => more.path().join("zest.log"),
            })?;
            let mut command = Command::new(zest);
            database_env(&mut command, url.as_deref(), index);
            let child = command
                .arg("verifier")
                .arg("--data-dir")
                .arg(more.path())
                .args(["--verifier-port", &port.to_string()])
                .args(["--mode", if mode == Mode::Push { "push" } else { "pull" }])
                .args(["--quote-interval", &quote_interval.to_string()])
                .args(["--session-lifetime", "86400"])
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()?;
            server.more.push((child, more));
            wait_for_port(port, "zest verifier").await?;
            server.verifiers.push(format!("https://localhost:{port}"));
        }
        Ok(server)
    }
}

/// The name of policy `p` of tenant `t`, and the query that picks the tenant (none when the
/// fleet is one tenant's: Keylime's own requests).
fn fleet_policy(args: &Args, t: usize, p: usize) -> (String, String) {
    let name = if args.policies_per_tenant == 1 {
        "fleet".to_owned()
    } else {
        format!("fleet-{p}")
    };
    let query = if args.tenants == 1 {
        String::new()
    } else {
        format!("?tenant=t{t:03}")
    };
    (name, query)
}

fn policy_path(n: usize) -> String {
    format!("/usr/lib/fleet/lib{n}.so")
}

fn file_digest(path: &str) -> Vec<u8> {
    HashAlg::Sha256.digest(&[path.as_bytes()])
}

/// One agent's run: attest every `interval` from `first`, measuring `growth` policy paths
/// before each round. Returns (accepted, late starts, tampered).
async fn attest_loop(
    mut agent: PushAgent<SoftAgent>,
    index: usize,
    args: Arc<Args>,
    first: Instant,
    until: Instant,
    refused: Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64, bool)> {
    let interval = Duration::from_secs_f64(args.interval);
    let tamperer = args.tamper_every > 0 && index.is_multiple_of(args.tamper_every);
    let (mut accepted, mut late, mut round) = (0u64, 0u64, 0usize);
    for n in 0..args.ima_initial {
        let path = policy_path((index * 7919 + n) % args.policy_paths);
        agent.measure(&path, &file_digest(&path))?;
    }
    let mut due = first;
    while due < until {
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else if !interval.is_zero() && now - due > interval {
            late += 1;
        }
        let tamper_now = tamperer && round == 2;
        if tamper_now {
            agent.measure("/usr/bin/not-in-policy", &file_digest("/usr/bin/not-in-policy"))?;
        } else {
            for g in 0..args.ima_growth {
                let n = (index * 7919 + round * args.ima_growth + g) % args.policy_paths;
                let path = policy_path(n);
                agent.measure(&path, &file_digest(&path))?;
            }
        }
        // Offer capabilities until the verifier takes them, then submit the evidence it
        // asked for until it is taken: on 429 or 503, again after its Retry-After.
        let (location, requested) = loop {
            let (status, location, body) = agent.offer().await?;
            match status {
                201 => {
                    let location = location.context("201 without Location")?;
                    break (location, body["data"]["attributes"]["evidence_requested"].clone());
                }
                429 | 503 => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let wait = agent.retry_after.unwrap_or(Duration::from_millis(100));
                    if Instant::now() + wait >= until {
                        return Ok((accepted, late, false));
                    }
                    tokio::time::sleep(wait).await;
                }
                code => bail!("{}: capabilities refused: {code} {body}", agent.agent.uuid),
            }
        };
        let evidence = agent.evidence(&requested, None)?;
        let url = format!("{}{location}", agent.verifier);
        loop {
            let (status, reply) = agent.submit(&url, &evidence).await?;
            match status {
                202 => break,
                503 => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                code => bail!("{}: evidence refused: {code} {reply}", agent.agent.uuid),
            }
        }
        accepted += 1;
        round += 1;
        if tamper_now {
            return Ok((accepted, late, true));
        }
        due += interval;
    }
    Ok((accepted, late, false))
}

/// Microseconds since the epoch of `2026-11-30T09:23:14.713044+00:00`.
fn micros(text: &str) -> Option<u64> {
    let seconds = zest::clock::parse_rfc3339(text)?;
    let fraction = text.get(20..26)?.parse::<u64>().ok()?;
    Some(seconds * 1_000_000 + fraction)
}

/// Verdicts of an external verifier, from each agent's record: (passes, failed agents).
/// Keylime's `attestation_count` counts passing attestations; a failed agent stops there.
async fn external_verdicts(
    admin: &reqwest::Client,
    verifier: &str,
    agents: usize,
) -> anyhow::Result<(u64, u64)> {
    let (mut passed, mut failed) = (0u64, 0u64);
    for i in 0..agents {
        let (status, reply) = send_json(admin.get(format!("{verifier}/v2.6/agents/fleet-{i:06}"))).await?;
        ensure!(status == 200, "reading fleet-{i:06}: {status} {reply}");
        let results = &reply["results"];
        passed += results["attestation_count"].as_u64().unwrap_or(0);
        failed += u64::from(results["attestation_status"] == "FAIL");
    }
    Ok((passed, failed))
}

/// (passed, failed) verdicts of `mode` summed over verifiers sharing a database.
async fn all_verdicts(
    admin: &reqwest::Client,
    verifiers: &[String],
    mode: &str,
) -> anyhow::Result<(u64, u64)> {
    let mut total = (0, 0);
    for verifier in verifiers {
        let (passed, failed) = verdict_counts(admin, verifier, mode).await?;
        total = (total.0 + passed, total.1 + failed);
    }
    Ok(total)
}

/// (passed, failed) verdicts of `mode` (push, pull) on a zest verifier's `/metrics`.
async fn verdict_counts(admin: &reqwest::Client, verifier: &str, mode: &str) -> anyhow::Result<(u64, u64)> {
    let page = zest_tests::server::metrics_page(admin, verifier).await?;
    let name = "zest_verifier_attestations_total";
    let mode = format!("mode=\"{mode}\"");
    let passed = metric(&page, name, &[&mode, "result=\"pass\""]) as u64;
    let failed = metric(&page, name, &[&mode, "result=\"fail\""]) as u64;
    Ok((passed, failed))
}

/// `name{labels} value` from a Prometheus text page, summed over lines that contain every
/// one of `labels`.
fn metric(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// (write syscalls, bytes written to storage) of a process so far.
fn io_writes(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("syscw:"), field("write_bytes:"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    raise_open_files();
    ensure!(
        args.agents > 0 && args.policy_paths > 0,
        "--agents and --policy-paths must be positive"
    );
    let zest = match &args.zest {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of this binary")?
            .join("zest"),
    };
    // Push: rounds come at the fleet's interval, and the verifier takes one as soon as half
    // of it passed. Pull: the verifier waits the interval between an agent's rounds.
    let quote_interval = match args.mode {
        Mode::Push => args.interval / 2.0,
        Mode::Pull => args.interval,
    };
    let server = match &args.verifier {
        Some(verifier) => {
            ensure!(args.mode == Mode::Push, "--verifier runs push fleets only");
            Target {
                registrar: args.registrar.clone(),
                verifier: verifier.trim_end_matches('/').to_owned(),
                data: args.data_dir.clone().context("--verifier needs --data-dir")?,
                measured: Measured::Group(args.verifier_pgid),
                server: None,
            }
        }
        None => {
            ensure!(args.verifiers >= 1, "--verifiers must be positive");
            let server = Server::start(&zest, &args, quote_interval).await?;
            Target {
                registrar: Some(server.registrar.clone()),
                verifier: server.verifier.clone(),
                data: server.data.path().to_owned(),
                measured: Measured::Processes(server.pids()),
                server: Some(server),
            }
        }
    };
    let admin = admin_client(&server.data)?;
    // Agents connect from addresses of their own, AGENTS_PER_ADDRESS to an address (the
    // verifier limits new sessions per client address, as it must for a real fleet).
    let clients = (0..args.agents.div_ceil(AGENTS_PER_ADDRESS))
        .map(|g| {
            let local = std::net::Ipv4Addr::new(127, 1, (g / 256) as u8, (g % 256) as u8);
            anonymous_client_from(&server.data, Some(local.into()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plain = reqwest::Client::builder().no_proxy().build()?;
    let rss_idle = server.rss_kib();

    // Named runtime policies, as a site enrols many agents with one: by default one for the
    // whole fleet; with --tenants and --policies-per-tenant, documents of their own (an
    // exclude apiece) in each tenant, enrolled by the operator with ?tenant=.
    ensure!(
        args.tenants > 0 && args.policies_per_tenant > 0,
        "--tenants and --policies-per-tenant must be positive"
    );
    let digests: serde_json::Map<String, Value> = (0..args.policy_paths)
        .map(|n| {
            let path = policy_path(n);
            (path.clone(), json!([hex::encode(file_digest(&path))]))
        })
        .collect();
    for t in 0..args.tenants {
        if args.tenants > 1 {
            // Room for the tenant's agents and their policies: each enrolment without a
            // refstate stores an empty one named after the agent, as Keylime's does.
            let agents = args.agents.div_ceil(args.tenants);
            let (status, reply) = send_json(
                admin
                    .put(format!("{}/v2.6/quotas/t{t:03}", server.verifier))
                    .json(&json!({"agents": agents, "policies": agents + args.policies_per_tenant})),
            )
            .await?;
            ensure!(status == 200, "setting tenant t{t:03}'s quota: {status} {reply}");
        }
        for p in 0..args.policies_per_tenant {
            let (name, query) = fleet_policy(&args, t, p);
            let policy = json!({"meta": {"version": 1, "generator": 3}, "release": 0, "digests": digests,
                "excludes": [format!("^/nonexistent/{t}/{p}$")], "keyrings": {},
                "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
                "ima-buf": {}, "verification-keys": ""});
            let (status, reply) = send_json(
                admin
                    .post(format!("{}/v2.6/allowlists/{name}{query}", server.verifier))
                    .json(&json!({"runtime_policy": B64.encode(policy.to_string())})),
            )
            .await?;
            ensure!(
                status == 201 || status == 200,
                "creating the fleet's policy {name}{query}: {status} {reply}"
            );
        }
    }
    if args.mode == Mode::Pull {
        ensure!(
            args.tenants == 1 && args.policies_per_tenant == 1,
            "--tenants and --policies-per-tenant are for push fleets"
        );
        let zest = server
            .server
            .as_ref()
            .context("pull fleets run against their own zest serve")?;
        return run_pull(&args, zest, &admin, &plain, rss_idle).await;
    }

    // Register, activate, enrol and authenticate every agent.
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.setup_concurrency.max(1)));
    let mut setups = Vec::with_capacity(args.agents);
    for index in 0..args.agents {
        let anonymous = clients[index / AGENTS_PER_ADDRESS].clone();
        let (gate, args, admin, plain) = (gate.clone(), args.clone(), admin.clone(), plain.clone());
        let (registrar, verifier) = (server.registrar.clone(), server.verifier.clone());
        // The verifier this agent pushes to: any may take it (one database).
        let pushes_to = server.server.as_ref().map_or(verifier.clone(), |s| {
            s.verifiers[index % s.verifiers.len()].clone()
        });
        setups.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let rsa = args.rsa_every > 0 && index % args.rsa_every == args.rsa_every - 1;
            let kind = if rsa {
                SoftAk::RsaSsa2048
            } else {
                SoftAk::EcdsaP256
            };
            // Key generation is CPU work: keep it off the runtime's reactor threads.
            let tpm = tokio::task::spawn_blocking(move || SoftTpm::new(kind, 10_000_000)).await??;
            let agent = SoftAgent {
                uuid: format!("fleet-{index:06}"),
                tpm,
            };
            if let Some(registrar) = &registrar {
                agent
                    .register(
                        &plain,
                        registrar,
                        "2.2",
                        &agent.registration_body("127.0.0.1", 9002, None),
                    )
                    .await?;
            }
            let (policy, query) = fleet_policy(
                &args,
                index % args.tenants,
                (index / args.tenants) % args.policies_per_tenant,
            );
            let body = json!({
                "v": null, "cloudagent_ip": null, "cloudagent_port": null, "tpm_policy": "{}",
                "runtime_policy": "", "runtime_policy_name": policy, "mb_policy": null, "mb_policy_name": "",
                "ima_sign_verification_keys": "", "metadata": "{}", "revocation_key": "",
                "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["ecc", "rsa"],
                "accept_tpm_signing_algs": ["ecdsa", "rsassa"], "ak_tpm": B64.encode(&agent.tpm.aik_tpm),
                "mtls_cert": "disabled", "supported_version": null,
            });
            let (status, reply) = send_json(
                admin
                    .post(format!("{verifier}/v2.6/agents/{}{query}", agent.uuid))
                    .json(&body),
            )
            .await?;
            ensure!(status == 200, "enrolling {}: {status} {reply}", agent.uuid);
            let key = if rsa { "rsa" } else { "ecc" };
            let mut push = PushAgent::new(agent, &pushes_to, anonymous, key);
            push.authenticate().await?;
            anyhow::Ok(push)
        }));
    }
    let mut agents = Vec::with_capacity(args.agents);
    for setup in setups {
        agents.push(setup.await??);
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let rss_enrolled = server.rss_kib();

    // Attest: agents start spread over one interval, as a real fleet's are.
    let cpu_start = server.cpu();
    let own_cpu_start = cpu_seconds(std::process::id())?;
    let io_start = server.writes();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let refused = Arc::new(AtomicU64::new(0));
    let spread = args.interval / args.agents as f64;
    let tasks: Vec<_> = agents
        .into_iter()
        .enumerate()
        .map(|(i, agent)| {
            let first = started + Duration::from_secs_f64(spread * i as f64);
            tokio::spawn(attest_loop(agent, i, args.clone(), first, until, refused.clone()))
        })
        .collect();
    let canary = args.canary_after.map(|after| {
        tokio::spawn(canary_during(
            admin.clone(),
            server.verifier.clone(),
            started + Duration::from_secs_f64(after),
        ))
    });
    let (mut accepted, mut late, mut tampered) = (0u64, 0u64, 0u64);
    for task in tasks {
        let (a, l, t) = task.await??;
        accepted += a;
        late += l;
        tampered += u64::from(t);
    }
    let wall = started.elapsed().as_secs_f64();

    // Wait until every accepted attestation has its verdict.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    let (passed, failed) = loop {
        let (passed, failed) = match &server.server {
            Some(zest) => all_verdicts(&admin, &zest.verifiers, "push").await?,
            None => external_verdicts(&admin, &server.verifier, args.agents).await?,
        };
        if passed + failed >= accepted || Instant::now() > drain_deadline {
            break (passed, failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained = started.elapsed().as_secs_f64();
    let canary = match canary {
        Some(task) => Some(task.await??),
        None => None,
    };
    let cpu = server.cpu() - cpu_start;
    let own_cpu = cpu_seconds(std::process::id())? - own_cpu_start;
    let io_end = server.writes();
    let rss_end = server.rss_kib();

    // Latency from the verifier's own timestamps, on --latency-agents spread over the fleet
    // (Keylime 7.14.3 records no verification time, and lists no attestations but the first
    // and the latest).
    let mut latencies = Vec::new();
    let mut during_canary = Vec::new();
    let step = (args.agents / args.latency_agents.max(1)).max(1);
    let sampled = if server.server.is_some() { args.agents } else { 0 };
    for i in (0..sampled).step_by(step) {
        let (_, list) = send_json(admin.get(format!(
            "{}/v3.0/agents/fleet-{i:06}/attestations",
            server.verifier
        )))
        .await?;
        for record in list["data"].as_array().into_iter().flatten() {
            let a = &record["attributes"];
            let at = |f: &str| a[f].as_str().and_then(micros);
            if let (Some(received), Some(done)) =
                (at("evidence_received_at"), at("verification_completed_at"))
            {
                latencies.push(done.saturating_sub(received));
                if canary
                    .as_ref()
                    .is_some_and(|c| (c.started..c.finished).contains(&received))
                {
                    during_canary.push(done.saturating_sub(received));
                }
            }
        }
    }
    latencies.sort_unstable();
    let ms = |v: Option<&u64>| v.map_or(0.0, |v| *v as f64 / 1000.0);
    let pct = |p: f64| {
        ms(latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))))
    };

    let rsa = args.agents.checked_div(args.rsa_every).unwrap_or(0);
    println!(
        "zest-fleet: {} push agents against {} ({} ECDSA P-256, {rsa} RSA-2048 AKs), interval {} s, policy of {} paths, {} IMA entries per round ({} before the first)",
        args.agents,
        if server.server.is_some() {
            "zest serve"
        } else {
            &server.verifier
        },
        args.agents - rsa,
        args.interval,
        args.policy_paths,
        args.ima_growth,
        args.ima_initial
    );
    if args.tenants > 1 || args.policies_per_tenant > 1 {
        println!(
            "  {} tenants × {} policies of their own ({} documents), {:.1} agents per document",
            args.tenants,
            args.policies_per_tenant,
            args.tenants * args.policies_per_tenant,
            args.agents as f64 / (args.tenants * args.policies_per_tenant) as f64
        );
    }
    if let Some(zest) = &server.server {
        zest.print_store();
    }
    println!("  setup (register, activate, enrol, authenticate): {setup_seconds:.1} s");
    println!(
        "  {accepted} attestations in {wall:.1} s: {:.0} attestations/s; {} refused as early or busy; {late} rounds started late",
        accepted as f64 / wall,
        refused.load(Ordering::Relaxed)
    );
    println!(
        "  verdicts: {passed} pass, {failed} fail ({tampered} agents tampered), all in by {drained:.1} s"
    );
    println!(
        "  evidence received → verdict: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        pct(0.50),
        pct(0.99),
        ms(latencies.last()),
        latencies.len()
    );
    if let Some(c) = &canary {
        during_canary.sort_unstable();
        let seconds = c.finished.saturating_sub(c.started) as f64 / 1e6;
        let p = |q: f64| {
            ms(during_canary
                .get(((during_canary.len() as f64 * q) as usize).min(during_canary.len().saturating_sub(1))))
        };
        println!(
            "  canary of the live policy: {} agents in {seconds:.2} s ({:.0} agents/s), {} changes, {} without recorded evidence; live verdicts meanwhile: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            c.evaluated,
            c.evaluated as f64 / seconds.max(1e-9),
            c.changes,
            c.no_evidence,
            p(0.50),
            p(0.99),
            ms(during_canary.last()),
            during_canary.len()
        );
    }
    Costs {
        what: "attestation",
        count: accepted,
        seconds: drained,
        cpu,
        own_cpu,
        rss: (rss_idle, rss_enrolled, rss_end),
        agents: args.agents,
        writes: (io_end.0 - io_start.0, io_end.1 - io_start.1),
    }
    .print();

    if args.check {
        ensure!(accepted > 0, "no attestation was accepted");
        ensure!(
            passed + failed == accepted,
            "{accepted} attestations accepted but {} judged",
            passed + failed
        );
        ensure!(
            failed == tampered,
            "{failed} attestations failed, {tampered} agents tampered"
        );
        if args.tamper_every > 0 {
            ensure!(tampered > 0, "the run was too short for any agent to tamper");
        }
        // Judged again by the same document, every agent's recorded evidence gets its verdict.
        if let Some(c) = &canary {
            ensure!(
                c.changes == 0,
                "a canary of the live policy reported {} changes",
                c.changes
            );
        }
        println!("  check: every verdict as expected");
    }
    Ok(())
}

/// What the verifier spent on a run, as both modes print it.
struct Costs {
    what: &'static str,
    count: u64,
    seconds: f64,
    cpu: f64,
    own_cpu: f64,
    /// Verifier VmRSS (KiB): idle, with the fleet enrolled, at the end.
    rss: (u64, u64, u64),
    agents: usize,
    /// Write syscalls and bytes written to storage during the run.
    writes: (u64, u64),
}

impl Costs {
    fn print(&self) {
        let per = |seconds: f64| seconds * 1000.0 / self.count.max(1) as f64;
        println!(
            "  verifier CPU: {:.3} ms per {what} ({:.2} cores); simulator CPU {:.3} ms per {what} ({:.2} cores)",
            per(self.cpu),
            self.cpu / self.seconds,
            per(self.own_cpu),
            self.own_cpu / self.seconds,
            what = self.what,
        );
        let (idle, enrolled, end) = self.rss;
        println!(
            "  verifier RSS: {idle} KiB idle, {enrolled} KiB enrolled, {end} KiB at the end: {:.1} KiB per agent",
            end.saturating_sub(idle) as f64 / self.agents as f64
        );
        println!(
            "  verifier writes: {:.0} write syscalls/s, {:.0} KiB/s to storage",
            self.writes.0 as f64 / self.seconds,
            self.writes.1 as f64 / 1024.0 / self.seconds
        );
    }
}

/// Pull mode holds a listener and a connection per agent: take every descriptor allowed.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Gaps between polls, in ms: (p50, p99, max, count late by more than half an interval).
fn poll_gaps(states: &[pull::Handle], interval: f64) -> (f64, f64, f64, u64) {
    let mut gaps: Vec<f64> = Vec::new();
    for state in states {
        if let Ok(s) = state.lock() {
            gaps.extend(
                s.polled_at
                    .windows(2)
                    .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0),
            );
        }
    }
    gaps.sort_by(f64::total_cmp);
    let at = |p: f64| {
        gaps.get(((gaps.len() as f64 * p) as usize).min(gaps.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let late = gaps.iter().filter(|g| **g > interval * 1500.0).count() as u64;
    (at(0.5), at(0.99), gaps.last().copied().unwrap_or(0.0), late)
}

/// The fleet in pull mode: every agent registers, serves its API on its own address and is
/// enrolled with that address; the verifier polls each every `--interval` seconds.
async fn run_pull(
    args: &Arc<Args>,
    server: &Server,
    admin: &reqwest::Client,
    plain: &reqwest::Client,
    rss_idle: u64,
) -> anyhow::Result<()> {
    let pids = server.pids();
    let cpu_of = |pids: &[u32]| pids.iter().filter_map(|p| cpu_seconds(*p).ok()).sum::<f64>();
    let rss_of = |pids: &[u32]| pids.iter().map(|p| memory_kib(*p, "VmRSS:")).sum::<u64>();
    let writes_of = |pids: &[u32]| {
        pids.iter()
            .map(|p| io_writes(*p))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    };
    let shared = Arc::new(pull::Shared::new(&server.data.path().join("cv_ca/cacert.crt"))?);
    let verifier_port = server.verifier.rsplit(':').next().unwrap_or("8881").to_owned();
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.setup_concurrency.max(1)));
    let mut setups = Vec::with_capacity(args.agents);
    for index in 0..args.agents {
        let (gate, args, admin, plain, shared) = (
            gate.clone(),
            args.clone(),
            admin.clone(),
            plain.clone(),
            shared.clone(),
        );
        let (registrar, verifier, verifier_port) = (
            server.registrar.clone(),
            server.verifier.clone(),
            verifier_port.clone(),
        );
        setups.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let rsa = args.rsa_every > 0 && index % args.rsa_every == args.rsa_every - 1;
            let kind = if rsa { SoftAk::RsaSsa2048 } else { SoftAk::EcdsaP256 };
            let tpm = tokio::task::spawn_blocking(move || SoftTpm::new(kind, 10_000_000)).await??;
            let agent = SoftAgent {
                uuid: format!("fleet-{index:06}"),
                tpm,
            };
            let ip = pull::address(index).to_string();
            let body = agent.registration_body(&ip, 9002, Some(&shared.cert_pem));
            agent.register(&plain, &registrar, "2.2", &body).await?;
            let (uuid, ak) = (agent.uuid.clone(), B64.encode(&agent.tpm.aik_tpm));
            let (state, _) = pull::serve(&shared, agent, index).await?;
            // A first measurement before the first quote, as a booted system has.
            {
                let mut s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let path = policy_path(index % args.policy_paths);
                let ext = s.log.add_ima_ng(&path, &file_digest(&path));
                s.agent.tpm.pcr_extend(10, &ext.sha256)?;
            }
            let v: [u8; 32] = std::array::from_fn(|i| (i + index) as u8);
            let enrol = json!({
                "v": B64.encode(v), "cloudagent_ip": ip, "cloudagent_port": "9002",
                "verifier_ip": "127.0.0.1", "verifier_port": verifier_port, "tpm_policy": "{}",
                "runtime_policy": "", "runtime_policy_name": "fleet", "runtime_policy_key": null,
                "mb_policy": null, "mb_policy_name": "", "ima_sign_verification_keys": "", "metadata": "{}",
                "revocation_key": "", "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["ecc", "rsa"],
                "accept_tpm_signing_algs": ["ecdsa", "rsassa"], "ak_tpm": ak, "mtls_cert": shared.cert_pem,
                "supported_version": "2.5",
            });
            let (status, reply) =
                send_json(admin.post(format!("{verifier}/v2.5/agents/{uuid}")).json(&enrol)).await?;
            ensure!(status == 200, "enrolling {uuid}: {status} {reply}");
            anyhow::Ok(state)
        }));
    }
    let mut states = Vec::with_capacity(args.agents);
    for setup in setups {
        states.push(setup.await??);
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let rss_enrolled = rss_of(&pids);

    let cpu_start = cpu_of(&pids);
    let own_cpu_start = cpu_seconds(std::process::id())?;
    let io_start = writes_of(&pids);
    let metrics_page = || all_verdicts(admin, &server.verifiers, "pull");
    let (passed_before, failed_before) = metrics_page().await?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let paths: Vec<String> = (0..args.policy_paths).map(policy_path).collect();
    let mut tampered = 0u64;
    for (index, state) in states.iter().enumerate() {
        let tamperer = args.tamper_every > 0 && index.is_multiple_of(args.tamper_every);
        let mut mine = paths.clone();
        mine.rotate_left((index * 7919) % paths.len());
        if tamperer {
            // Its third batch holds a file the policy lacks.
            let at = (2 * args.ima_growth.max(1)) % mine.len();
            mine.insert(at, "/usr/bin/not-in-policy".into());
            tampered += 1;
        }
        tokio::spawn(pull::grow(
            state.clone(),
            args.ima_growth.max(1),
            mine,
            Duration::from_secs_f64(args.interval.max(0.1)),
            until,
        ));
    }
    tokio::time::sleep_until(until.into()).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_of(&pids) - cpu_start;
    let own_cpu = cpu_seconds(std::process::id())? - own_cpu_start;
    let io_end = writes_of(&pids);
    let rss_end = rss_of(&pids);
    let (passed, failed) = metrics_page().await?;
    let (passed, failed) = (passed - passed_before, failed - failed_before);
    let rounds = passed + failed;
    let (p50, p99, max, late) = poll_gaps(&states, args.interval);
    let never = states
        .iter()
        .filter(|s| s.lock().map(|s| s.polled_at.is_empty()).unwrap_or(true))
        .count();

    let rsa = args.agents.checked_div(args.rsa_every).unwrap_or(0);
    println!(
        "zest-fleet: {} pull agents ({} ECDSA P-256, {rsa} RSA-2048 AKs), quote interval {} s, policy of {} paths, {} IMA entries per interval",
        args.agents,
        args.agents - rsa,
        args.interval,
        args.policy_paths,
        args.ima_growth.max(1)
    );
    server.print_store();
    println!("  setup (register, activate, serve, enrol): {setup_seconds:.1} s");
    println!(
        "  {rounds} rounds judged in {wall:.1} s: {:.0} rounds/s; verdicts {passed} pass, {failed} fail ({tampered} agents tampered)",
        rounds as f64 / wall
    );
    println!(
        "  gap between an agent's polls: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; {late} gaps over 1.5 × interval; {never} agents never polled"
    );
    Costs {
        what: "round",
        count: rounds,
        seconds: wall,
        cpu,
        own_cpu,
        rss: (rss_idle, rss_enrolled, rss_end),
        agents: args.agents,
        writes: (io_end.0 - io_start.0, io_end.1 - io_start.1),
    }
    .print();
    if args.check {
        ensure!(rounds > 0, "no round was judged");
        ensure!(never == 0, "{never} agents were never polled");
        ensure!(
            failed == tampered,
            "{failed} rounds failed, {tampered} agents tampered"
        );
        println!("  check: every verdict as expected");
    }
    Ok(())
}
