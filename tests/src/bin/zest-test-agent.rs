//! A test agent for trying zest by hand and for interop runs: it manufactures a swtpm (EK
//! certificate from a throw-away test CA), registers and activates like Keylime's Rust agent,
//! and with `--serve` stays up as a pull-mode agent (quotes, identity quotes, IMA list).
//!
//! ```sh
//! # register once against a registrar, trusting the test EK CA first:
//! cargo run -p zest-tests --bin zest-test-agent -- --registrar http://127.0.0.1:8890 \
//!     --trust-ca-into ./zest-data/tpm_cert_store
//! # or serve as an attested machine beside `zest serve --data-dir ./zest-data`:
//! cargo run -p zest-tests --bin zest-test-agent -- --data-dir ./zest-data --serve \
//!     --write-policy ./policy.json
//! ```
//! Options: `--uuid ID`, `--ek rsa|p384`, `--port P` (9002), `--verifier-ca FILE` (the CA
//! whose clients may ask for quotes; with `--data-dir DIR`, DIR/cv_ca/cacert.crt),
//! `--write-policy FILE` (a Keylime runtime policy allowing what the agent measured),
//! `--tamper-after SECONDS` (then measure a file no policy allows), `--like-keylime-agent`
//! (serve what Keylime's `keylime_agent` 0.2.9 serves: its self-signed certificate, serial 0,
//! only a SAN, a self-signature that does not verify; quote replies without `boottime`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use zest_tests::pull_agent::{PullAgent, PullOptions};
use zest_tests::server::{register_and_activate, send_json};
use zest_tests::{AkKind, EkCa, EkKind, Swtpm, TestAgent};

/// What the simulated machine runs: (path, content) measured at start.
const MEASURED: [(&str, &str); 3] = [
    ("/usr/bin/bash", "bash"),
    ("/usr/lib/systemd/systemd", "systemd"),
    ("/usr/sbin/sshd", "sshd"),
];

fn digest(content: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content.as_bytes())
        .as_ref()
        .to_vec()
}

/// A Keylime runtime policy allowing exactly `MEASURED`.
fn runtime_policy() -> Value {
    let digests: Vec<(&str, Vec<u8>)> = MEASURED
        .iter()
        .map(|(path, content)| (*path, digest(content)))
        .collect();
    zest_tests::policies::runtime_policy(&digests)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut registrar = "http://127.0.0.1:8890".to_owned();
    let mut uuid = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000".to_owned();
    let mut ek = EkKind::Rsa2048;
    let mut trust_into = None;
    let mut verifier_ca: Option<PathBuf> = None;
    let mut serve = false;
    let mut port = 9002u16;
    let mut write_policy: Option<PathBuf> = None;
    let mut tamper_after: Option<f64> = None;
    let mut like_keylime_agent = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--registrar" => registrar = value()?,
            "--uuid" => uuid = value()?,
            "--trust-ca-into" => trust_into = Some(PathBuf::from(value()?)),
            "--verifier-ca" => verifier_ca = Some(PathBuf::from(value()?)),
            "--data-dir" => {
                let dir = PathBuf::from(value()?);
                trust_into = Some(dir.join("tpm_cert_store"));
                verifier_ca = Some(dir.join("cv_ca").join("cacert.crt"));
            }
            "--serve" => serve = true,
            "--like-keylime-agent" => like_keylime_agent = true,
            "--port" => port = value()?.parse().context("--port takes a port number")?,
            "--write-policy" => write_policy = Some(PathBuf::from(value()?)),
            "--tamper-after" => {
                tamper_after = Some(value()?.parse().context("--tamper-after takes seconds")?)
            }
            "--ek" => {
                ek = match value()?.as_str() {
                    "rsa" => EkKind::Rsa2048,
                    "p384" => EkKind::EccP384,
                    other => bail!("--ek takes rsa or p384, not {other}"),
                }
            }
            other => bail!("unknown argument {other}; see the source's doc comment for usage"),
        }
    }

    let tpm = Swtpm::start()?;
    let agent = TestAgent::new(&tpm, &uuid, ek, AkKind::RsaSsa)?;
    if let Some(dir) = trust_into {
        let ca = EkCa::shared();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(ca.root_pem(), dir.join("zest-test-agent-root.pem"))
            .context("copying the test CA root")?;
        std::fs::copy(
            ca.intermediate_pem(),
            dir.join("zest-test-agent-intermediate.pem"),
        )
        .context("copying the test CA intermediate")?;
        println!("trusted the test EK CA in {}", dir.display());
    }
    let client = reqwest::Client::builder().no_proxy().build()?;
    let (_, versions) = send_json(client.get(format!("{registrar}/version")))
        .await
        .with_context(|| format!("asking the registrar at {registrar} for its version"))?;
    let version = versions["results"]["current_version"]
        .as_str()
        .context("no current_version")?
        .to_owned();
    // Agents register over the 2.x API; a registrar whose current version is 3.0 serves it too.
    let version = if version.starts_with('3') {
        "2.5".to_owned()
    } else {
        version
    };

    if !serve {
        let mut agent = agent;
        register_and_activate(&client, &registrar, &mut agent, &version).await?;
        println!("agent {uuid} registered and activated at {registrar} (API {version})");
        return Ok(());
    }

    let verifier_ca = verifier_ca.context("--serve needs --verifier-ca FILE or --data-dir DIR")?;
    // The NK: its public key is bound into PCR 16 and sent with the first quote.
    let nk = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).context("generating the NK key")?;
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let options = PullOptions {
        keylime_certificate: like_keylime_agent,
    };
    let pull = PullAgent::start_with(agent, nk.public_key_pem(), &verifier_ca, bind, options)
        .await
        .with_context(|| format!("serving on {bind}"))?;
    pull.set(|s| s.omit_boottime = like_keylime_agent);
    // With the NK private key the agent can open U and V, rebuild K and read a payload.
    if let Ok(mut state) = pull.state.lock() {
        state.nk_private = Some(nk.serialize_der());
    }
    for (path, content) in MEASURED {
        pull.measure(path, &digest(content))?;
    }
    if let Some(file) = &write_policy {
        std::fs::write(file, serde_json::to_vec_pretty(&runtime_policy())?)
            .with_context(|| format!("writing {}", file.display()))?;
        println!(
            "wrote a runtime policy for what it measured to {}",
            file.display()
        );
    }
    pull.register(&client, &registrar, &version).await?;
    println!(
        "agent {uuid} registered and activated at {registrar} (API {version}); serving quotes on https://{}",
        pull.addr
    );
    println!("enrol it: zest tenant add --uuid {uuid} --ip 127.0.0.1 --port {port} --runtime-policy FILE");
    let state = pull.state.clone();
    tokio::spawn(async move {
        let mut seen: Option<[u8; 32]> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some((k, payload)) = state.lock().ok().and_then(|s| Some((s.k?, s.payload.clone()))) else {
                continue;
            };
            if seen != Some(k) {
                seen = Some(k);
                println!(
                    "bootstrap key rebuilt (U from the tenant, V from the verifier); payload of {} bytes decrypted",
                    payload.map_or(0, |p| p.len())
                );
            }
        }
    });
    if let Some(after) = tamper_after {
        tokio::time::sleep(Duration::from_secs_f64(after)).await;
        pull.measure("/tmp/evil", &digest("evil"))?;
        println!("measured /tmp/evil, which no policy allows");
    }
    // Ctrl-C or `kill`: return, so the swtpm is stopped with the agent.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
