//! `zest import keylime`: switch a running Keylime site to zest. Reads Keylime's verifier and
//! registrar databases and prints what zest's store would gain; `--apply` writes it. Run it
//! again and it finds everything unchanged.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::config::DataDir;
use crate::import::{Change, Plan, Source};
use crate::store::{Database, RegistrarStore, VerifierStore};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Keylime's registrations, enrolments and named policies (its cv_data.sqlite and
    /// reg_data.sqlite, or their PostgreSQL URLs). A dry run unless --apply.
    Keylime(KeylimeArgs),
}

#[derive(Debug, Args)]
pub struct KeylimeArgs {
    /// Keylime's verifier database: a file, sqlite:////path, or postgresql://… (Keylime's
    /// `[verifier] database_url`).
    #[arg(long, value_name = "DB")]
    verifier_db: Option<String>,
    /// Keylime's registrar database (`[registrar] database_url`).
    #[arg(long, value_name = "DB")]
    registrar_db: Option<String>,
    /// Write into zest's store (its `database_url`, or DATA_DIR/zest.sqlite).
    #[arg(long)]
    apply: bool,
    /// The tenant of a shared server the enrolments and policies go to.
    #[arg(long, default_value = crate::store::DEFAULT_TENANT)]
    tenant: String,
}

/// zest's stores, as `zest serve` with this configuration would open them.
pub struct Targets {
    pub data_dir: DataDir,
    pub verifier: Database,
    pub registrar: Database,
    pub measured_boot_module: String,
}

pub fn run(command: ImportCommand, targets: &Targets) -> anyhow::Result<()> {
    let ImportCommand::Keylime(args) = command;
    if args.verifier_db.is_none() && args.registrar_db.is_none() {
        bail!("name Keylime's databases: --verifier-db and/or --registrar-db");
    }
    if crate::api::AgentId::parse(&args.tenant).is_err() {
        bail!("--tenant must be 1 to 80 characters of A-Z, a-z, 0-9, '.', '_' or '-'");
    }
    let parse = |text: &Option<String>| text.as_deref().map(Source::parse).transpose();
    let (verifier_db, registrar_db) = (parse(&args.verifier_db)?, parse(&args.registrar_db)?);
    targets
        .data_dir
        .create()
        .with_context(|| format!("creating {}", targets.data_dir.path().display()))?;
    let embedded = targets.data_dir.database();
    let verifier: Option<std::sync::Arc<dyn VerifierStore>> = verifier_db
        .as_ref()
        .map(|_| targets.verifier.open_verifier(&embedded))
        .transpose()
        .context("opening zest's verifier store")?;
    let registrar: Option<std::sync::Arc<dyn RegistrarStore>> = registrar_db
        .as_ref()
        .map(|_| targets.registrar.open_registrar(&embedded))
        .transpose()
        .context("opening zest's registrar store")?;
    let plan = crate::import::plan(
        registrar_db.as_ref(),
        verifier_db.as_ref(),
        registrar.as_deref(),
        verifier.as_deref(),
        &args.tenant,
        &targets.measured_boot_module,
    )
    .with_context(|| {
        let dbs: Vec<String> = [&verifier_db, &registrar_db]
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        format!("reading {}", dbs.join(" and "))
    })?;
    print_plan(&plan, args.apply);
    if args.apply {
        let written = crate::import::keylime::apply(&plan, registrar.as_deref(), verifier.as_deref())?;
        println!(
            "written: {} policies, {} enrolments, {} registrations",
            written.policies, written.enrolments, written.registrations
        );
    } else {
        println!("dry run: nothing written (--apply writes)");
    }
    Ok(())
}

fn print_plan(plan: &Plan, apply: bool) {
    let verb = if apply { "add" } else { "would add" };
    let mut counts = [0usize; 4];
    let mut line = |what: &str, change: Option<&str>, index: usize| {
        if let Some(count) = counts.get_mut(index) {
            *count += 1;
        }
        match change {
            Some(text) => println!("{text}"),
            None => println!("+ {verb} {what}"),
        }
    };
    for (what, change) in &plan.policies {
        report(what, change, &mut line);
    }
    for (id, change) in &plan.enrolments {
        let what = match change {
            Change::Add(agent) => format!(
                "enrolment of {id} ({} mode; runtime policy {}, measured-boot policy {}; {} attestations; IMA from entry {})",
                if agent.push { "push" } else { "pull" },
                agent.runtime_policy,
                agent.mb_policy,
                agent.attestation_count,
                agent.next_ima_ml_entry
            ),
            _ => format!("enrolment of {id}"),
        };
        report(&what, change, &mut line);
    }
    for (id, change) in &plan.registrations {
        let what = match change {
            Change::Add(agent) => format!(
                "registration of {id} ({})",
                if agent.active { "active" } else { "not activated" }
            ),
            _ => format!("registration of {id}"),
        };
        report(&what, change, &mut line);
    }
    for note in &plan.notes {
        println!("  note: {note}");
    }
    let [added, unchanged, conflicts, skipped] = counts;
    println!(
        "{added} to add, {unchanged} unchanged, {conflicts} conflicting (zest's kept), {skipped} skipped; tenant {}",
        plan.tenant
    );
}

fn report<T>(what: &str, change: &Change<T>, line: &mut impl FnMut(&str, Option<&str>, usize)) {
    match change {
        Change::Add(_) => line(what, None, 0),
        Change::Unchanged(text) => line(what, Some(&format!("= {text}: unchanged")), 1),
        Change::Conflict(text) => line(what, Some(&format!("! {text}")), 2),
        Change::Skipped(why) => line(what, Some(&format!("- {what} skipped: {why}")), 3),
    }
}
