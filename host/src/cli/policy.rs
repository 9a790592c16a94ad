//! `zest policy …`: the policy author's and operator's offline tools.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::evidence::HashAlg;
use crate::evidence::uefi::EventLog;
use crate::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use crate::policy::{PolicyLimits, PolicyRuntime, builtin_measured_boot};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Dry-run a policy on evidence files: prints the verdict and each failure, exits
    /// non-zero when the evidence fails.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Evaluate a measured-boot policy (the only kind wired so far).
    #[arg(long)]
    measured_boot: bool,
    /// `builtin:NAME` (accept-all, reject-all) or a component file (.wasm).
    #[arg(long)]
    module: String,
    /// The policy document: a Keylime mb_refstate JSON file.
    #[arg(long)]
    policy: PathBuf,
    /// The binary UEFI event log (binary_bios_measurements).
    #[arg(long)]
    event_log: PathBuf,
}

pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    if !args.measured_boot {
        bail!("only --measured-boot policies can be tested so far");
    }
    let (name, component) = match args.module.strip_prefix("builtin:") {
        Some(name) => (
            name.to_owned(),
            builtin_measured_boot(name)
                .with_context(|| {
                    format!("no built-in measured-boot policy '{name}' (accept-all, reject-all)")
                })?
                .to_vec(),
        ),
        None => (
            args.module.clone(),
            std::fs::read(&args.module).with_context(|| format!("reading the component {}", args.module))?,
        ),
    };
    let document =
        std::fs::read(&args.policy).with_context(|| format!("reading {}", args.policy.display()))?;
    let log_bytes =
        std::fs::read(&args.event_log).with_context(|| format!("reading {}", args.event_log.display()))?;
    let log = EventLog::parse(&log_bytes)
        .with_context(|| format!("{} is not a valid event log", args.event_log.display()))?;
    let replayed = log.replay();
    // Offline there is no quote: take the log's sha256 bank (else its first) as quoted.
    let bank = if replayed.contains_key(&HashAlg::Sha256) {
        HashAlg::Sha256
    } else {
        *replayed
            .keys()
            .next()
            .context("the log replays no bank we can hash")?
    };
    let quoted: Vec<(u32, Vec<u8>)> = replayed[&bank].iter().map(|(i, v)| (*i, v.clone())).collect();

    let runtime = PolicyRuntime::new(PolicyLimits::default(), None)?;
    let policy = MeasuredBootPolicy::load(&runtime, &name, &component, &document)?;
    let evidence = BootEvidence {
        log: &log,
        replayed: &replayed,
        quoted_bank: bank,
        quoted: &quoted,
        first_attestation: true,
        prior_state: None,
    };
    let verdict = policy.evaluate(&evidence)?;
    let missing: Vec<u32> = policy
        .relevant_pcrs()
        .iter()
        .copied()
        .filter(|p| !quoted.iter().any(|(i, _)| i == p))
        .collect();
    println!(
        "policy {name}: relevant PCRs {:?}, {} events, bank {}",
        policy.relevant_pcrs(),
        log.events.len(),
        bank.name()
    );
    for f in &verdict.failures {
        println!("  {} {}", f.event_id, f.context);
    }
    if !missing.is_empty() {
        println!("  measured_boot.missing_pcrs {missing:?}");
    }
    if verdict.failures.is_empty() && missing.is_empty() {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        bail!("the evidence fails policy {name}")
    }
}
