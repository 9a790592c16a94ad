//! Push throughput: N swtpm-backed push agents attest back to back against a real
//! `zest verifier --mode push --quote-interval 0` process, each round with a new IMA entry
//! judged incrementally by `keylime-runtime`. Prints attestations per second judged, the
//! latency from evidence received to verdict (p50/p99, from the verifier's own
//! timestamps) and the verifier's CPU per attestation.
//!
//! Run: `cargo build --release -p zest && cargo bench -p zest-tests --bench push_throughput`
//! (`PUSH_AGENTS` sets N, default 8; `ROUND_SECONDS` the length, default 10).

use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zest::evidence::HashAlg;
use zest_tests::process::{Verifier, cpu_seconds, memory_kib};
use zest_tests::push_agent::PushAgent;
use zest_tests::server::{admin_client, anonymous_client, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn digest(path: &str) -> Vec<u8> {
    HashAlg::Sha256.digest(&[path.as_bytes()])
}

/// Rounds as fast as the verifier lets the agent: a 503 while judging or a 429 just means
/// "again in a moment".
async fn run(mut agent: PushAgent, until: Instant) -> anyhow::Result<u64> {
    let mut accepted = 0;
    let mut n = 0;
    while Instant::now() < until {
        let r = agent.attest().await?;
        match (r.created.0, r.submitted.as_ref().map(|s| s.0)) {
            (201, Some(202)) => {
                accepted += 1;
                n += 1;
                let path = format!("/usr/lib/bench/{}-{n}.so", agent.agent.uuid);
                agent.measure(&path, &digest(&path))?;
            }
            (503 | 429, _) => tokio::time::sleep(Duration::from_millis(2)).await,
            (code, sub) => bail!("round refused: {code} {sub:?} {}", r.created.1),
        }
    }
    Ok(accepted)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let agents = env("PUSH_AGENTS", 8) as usize;
    let seconds = env("ROUND_SECONDS", 10);
    let verifier = Verifier::start(&["--mode", "push", "--quote-interval", "0"]).await?;
    let admin = admin_client(verifier.data.path())?;
    let tpms: Vec<Swtpm> = (0..agents).map(|_| Swtpm::start()).collect::<Result<_, _>>()?;
    let mut push_agents = Vec::new();
    for (i, tpm) in tpms.iter().enumerate() {
        let uuid = format!("bench-push-{i}");
        let agent = TestAgent::new(tpm, &uuid, EkKind::Rsa2048, AkKind::RsaSsa)?;
        let mut push = PushAgent::new(
            agent,
            &verifier.https,
            anonymous_client(verifier.data.path())?,
            "rsa",
        );
        // Every path the agent will measure is in its policy.
        let digests: serde_json::Map<String, Value> = (0..20_000)
            .map(|n| {
                let path = format!("/usr/lib/bench/{uuid}-{n}.so");
                let d = hex::encode(digest(&path));
                (path, json!([d]))
            })
            .collect();
        let policy = json!({"meta": {"version": 1, "generator": 3}, "release": 0, "digests": digests,
            "excludes": [], "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
            "ima-buf": {}, "verification-keys": ""});
        let path = format!("/usr/lib/bench/{uuid}-0.so");
        push.measure(&path, &digest(&path))?;
        let body = json!({
            "v": null, "cloudagent_ip": null, "cloudagent_port": null, "tpm_policy": "{}",
            "runtime_policy": B64.encode(policy.to_string()), "runtime_policy_name": null,
            "mb_policy": null, "mb_policy_name": "", "ima_sign_verification_keys": "", "metadata": "{}",
            "revocation_key": "", "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
            "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(&push.agent.aik_tpm),
            "mtls_cert": "disabled", "supported_version": null,
        });
        let (status, reply) =
            send_json(admin.post(format!("{}/agents/{uuid}", verifier.url)).json(&body)).await?;
        if status != 200 {
            bail!("enrol {uuid}: {reply}");
        }
        push.authenticate().await?;
        push_agents.push(push);
    }

    let pid = verifier.child.id();
    let cpu_start = cpu_seconds(pid)?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = push_agents
        .into_iter()
        .map(|a| tokio::spawn(run(a, until)))
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    // Let the last verdicts land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_start;

    let mut latencies = Vec::new();
    let (mut passed, mut failed) = (0u64, 0u64);
    for i in 0..agents {
        let (_, list) = send_json(admin.get(format!(
            "{}/v3.0/agents/bench-push-{i}/attestations",
            verifier.https
        )))
        .await?;
        for record in list["data"].as_array().into_iter().flatten() {
            let a = &record["attributes"];
            match a["evaluation"].as_str() {
                Some("pass") => passed += 1,
                Some("fail") => failed += 1,
                _ => continue,
            }
            let at = |f: &str| a[f].as_str().and_then(micros);
            if let (Some(received), Some(done)) =
                (at("evidence_received_at"), at("verification_completed_at"))
            {
                latencies.push(done.saturating_sub(received));
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    println!(
        "zest verifier --mode push, {agents} swtpm agents back to back, IMA incremental (keylime-runtime):"
    );
    println!(
        "  {accepted} attestations accepted in {wall:.1} s: {:.0} attestations/s; judged {passed} pass, {failed} fail",
        accepted as f64 / wall
    );
    println!(
        "  evidence received → verdict: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        pct(0.50),
        pct(0.99),
        latencies.last().map_or(0.0, |v| *v as f64 / 1000.0),
        latencies.len()
    );
    println!(
        "  verifier CPU {:.3} ms per attestation; VmHWM {} KiB",
        cpu * 1000.0 / accepted.max(1) as f64,
        memory_kib(pid, "VmHWM:")
    );
    Ok(())
}

/// Microseconds since the epoch of `2026-11-30T09:23:14.713044+00:00`.
fn micros(text: &str) -> Option<u64> {
    let seconds = zest::clock::parse_rfc3339(text)?;
    let fraction = text.get(20..26)?.parse::<u64>().ok()?;
    Some(seconds * 1_000_000 + fraction)
}
