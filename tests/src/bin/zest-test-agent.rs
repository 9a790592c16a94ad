//! A one-shot test agent for trying a running registrar by hand: it manufactures a swtpm
//! (EK certificate from a throw-away test CA), registers and activates like Keylime's Rust
//! agent, and prints what happened.
//!
//! ```sh
//! cargo run -p zest-tests --bin zest-test-agent -- --registrar http://127.0.0.1:8890 \
//!     --trust-ca-into ./zest-data/tpm_cert_store
//! ```
//! `--trust-ca-into DIR` first copies the test CA into the registrar's EK CA store (the
//! operator's step for a new TPM vendor); `--ek rsa|p384`, `--uuid ID` choose the agent.

use anyhow::{Context, bail};
use zest_tests::server::{register_and_activate, send_json};
use zest_tests::{AkKind, EkCa, EkKind, Swtpm, TestAgent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut registrar = "http://127.0.0.1:8890".to_owned();
    let mut uuid = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000".to_owned();
    let mut ek = EkKind::Rsa2048;
    let mut trust_into = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--registrar" => registrar = value()?,
            "--uuid" => uuid = value()?,
            "--trust-ca-into" => trust_into = Some(std::path::PathBuf::from(value()?)),
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
    let mut agent = TestAgent::new(&tpm, &uuid, ek, AkKind::RsaSsa)?;
    if let Some(dir) = trust_into {
        let ca = EkCa::shared();
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
    let (_, versions) = send_json(client.get(format!("{registrar}/version"))).await?;
    let version = versions["results"]["current_version"]
        .as_str()
        .context("no current_version")?
        .to_owned();
    register_and_activate(&client, &registrar, &mut agent, &version).await?;
    println!("agent {uuid} registered and activated at {registrar} (API {version})");
    Ok(())
}
