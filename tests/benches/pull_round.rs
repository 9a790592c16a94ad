//! What one pull-mode attestation round costs the verifier: a real `zest verifier` process
//! polls a swtpm-backed agent with 1,000 IMA entries over mTLS as fast as it can
//! (`--quote-interval 0`); CPU time comes from the verifier's /proc entry, wall time from
//! the rounds counted in its agent status. Then one run's timeline: enrol, first pass,
//! tamper, detection, revocation at the webhook.
//!
//! Run: `cargo build --release -p zest && cargo bench -p zest-tests --bench pull_round`
//! (`ZEST_BIN` names another binary; `ROUND_SECONDS` sets each phase's length, default 10;
//! `ZEST_BENCH_LOG` keeps the verifier's log, at `RUST_LOG` level, in a file).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest_tests::process::{Verifier, cpu_seconds, memory_kib};
use zest_tests::pull_agent::PullAgent;
use zest_tests::server::{admin_client, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent, fixture};

const ENTRIES: usize = 1000;

async fn webhook_sink() -> anyhow::Result<(String, Arc<Mutex<Vec<(Instant, Value)>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/revocation",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                if let (Ok(v), Ok(mut seen)) = (serde_json::from_slice::<Value>(&body), store.lock()) {
                    seen.push((Instant::now(), v));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/revocation", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, seen))
}

async fn wait_for(
    verifier: &Verifier,
    client: &reqwest::Client,
    uuid: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<(Instant, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = verifier.status(client, uuid).await?;
        if done(&s) {
            return Ok((Instant::now(), s));
        }
        if Instant::now() > deadline {
            bail!("timed out: {s}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Rounds, CPU seconds and wall seconds of one phase.
async fn phase(
    verifier: &Verifier,
    client: &reqwest::Client,
    uuid: &str,
    seconds: u64,
) -> anyhow::Result<(u64, f64, f64)> {
    let pid = verifier.child.id();
    let count = |s: &Value| s["attestation_count"].as_u64().unwrap_or(0);
    let (start, cpu_start) = (Instant::now(), cpu_seconds(pid)?);
    let before = count(&verifier.status(client, uuid).await?);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = verifier.status(client, uuid).await?;
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds(pid)? - cpu_start);
    if after["operational_state"] != 3 {
        bail!("the agent stopped passing: {after}");
    }
    Ok((count(&after) - before, cpu, wall))
}

fn report(name: &str, (rounds, cpu, wall): (u64, f64, f64)) {
    let rounds_f = rounds.max(1) as f64;
    println!(
        "{name:<34} {rounds:>6} rounds in {wall:.1} s: {:.2} ms wall/round, {:.3} ms verifier CPU/round, {:.0} rounds/s",
        wall * 1000.0 / rounds_f,
        cpu * 1000.0 / rounds_f,
        rounds_f / wall
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("ROUND_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let (webhook, revocations) = webhook_sink().await?;
    let verifier = Verifier::start(&["--quote-interval", "0", "--revocation-webhook", &webhook]).await?;
    let client = admin_client(verifier.data.path())?;

    let tpm = Swtpm::start()?;
    let uuid = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    let agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa)?;
    let pubkey = String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048pub.pem"))?;
    let pull = PullAgent::start(agent, pubkey, &verifier.data.path().join("cv_ca/cacert.crt")).await?;
    let mut digests = serde_json::Map::new();
    for i in 0..ENTRIES {
        let path = format!("/usr/lib/bench/file-{i}.so");
        let digest = HashAlg::Sha256.digest(&[path.as_bytes()]);
        pull.measure(&path, &digest)?;
        digests.insert(path, json!([hex::encode(digest)]));
    }
    let policy = json!({
        "meta": {"version": 1, "generator": 3}, "release": 0, "digests": digests, "excludes": [],
        "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {}, "verification-keys": "",
    });
    let ak = pull
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .agent
        .aik_tpm
        .clone();
    let body = json!({
        "v": null, "cloudagent_ip": "127.0.0.1", "cloudagent_port": pull.addr.port(),
        "tpm_policy": "{\"mask\": \"0x400\"}", "runtime_policy": B64.encode(policy.to_string()),
        "runtime_policy_name": null, "mb_policy": null, "mb_policy_name": "",
        "ima_sign_verification_keys": "", "metadata": "{}",
        "revocation_key": String::from_utf8(fixture("keylime/test/data/ima_keys/rsa2048.pem"))?,
        "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(ak),
        "mtls_cert": pull.cert_pem, "supported_version": "2.6",
    });

    let t0 = Instant::now();
    let (status, reply) =
        send_json(client.post(format!("{}/agents/{uuid}", verifier.url)).json(&body)).await?;
    if status != 200 {
        bail!("enrol: {reply}");
    }
    let t_enrolled = Instant::now();
    let (t_pass, _) = wait_for(&verifier, &client, uuid, |s| {
        s["attestation_count"].as_u64() >= Some(1)
    })
    .await?;

    println!("zest verifier, one agent, {ENTRIES} IMA entries, quote_interval 0 (rounds back to back):");
    report(
        "incremental (no new entries)",
        phase(&verifier, &client, uuid, seconds).await?,
    );
    pull.state
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .always_full_ima = true;
    tokio::time::sleep(Duration::from_millis(500)).await;
    report(
        &format!("full replay ({ENTRIES} entries)"),
        phase(&verifier, &client, uuid, seconds).await?,
    );
    let pid = verifier.child.id();
    println!(
        "verifier memory: VmRSS {} KiB, VmHWM {} KiB",
        memory_kib(pid, "VmRSS:"),
        memory_kib(pid, "VmHWM:")
    );

    let t_tamper = Instant::now();
    pull.measure("/tmp/evil", &HashAlg::Sha256.digest(&[b"evil"]))?;
    let (t_failed, failed) = wait_for(&verifier, &client, uuid, |s| s["operational_state"] == 9).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let t_revoked = loop {
        if let Some((at, _)) = revocations
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .first()
        {
            break *at;
        }
        if Instant::now() > deadline {
            bail!("no revocation reached the webhook");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ms = |t: Instant, from: Instant| t.saturating_duration_since(from).as_secs_f64() * 1000.0;
    println!("timeline (ms from the enrol request):");
    println!("  {:>9.1}  enrolled (200)", ms(t_enrolled, t0));
    println!(
        "  {:>9.1}  first PASS ({ENTRIES} entries replayed and judged)",
        ms(t_pass, t0)
    );
    println!(
        "  {:>9.1}  /tmp/evil measured into PCR 10 on the agent",
        ms(t_tamper, t0)
    );
    println!(
        "  {:>9.1}  INVALID_QUOTE in GET ({}) — {:.1} ms after the tamper",
        ms(t_failed, t0),
        failed["last_event_id"].as_str().unwrap_or("?"),
        ms(t_failed, t_tamper)
    );
    println!(
        "  {:>9.1}  signed revocation at the webhook — {:.1} ms after the tamper",
        ms(t_revoked, t0),
        ms(t_revoked, t_tamper)
    );
    Ok(())
}
