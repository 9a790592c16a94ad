//! `zest policy …`: the policy author's and operator's offline tools.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};

use crate::evidence::HashAlg;
use crate::evidence::ima::{ImaPosition, replay};
use crate::evidence::uefi::{EventLog, PcrBanks, boot_aggregates};
use crate::policy::create::{self, RuntimeOptions};
use crate::policy::create_inputs::initrd::ramdisk_digests;
use crate::policy::create_inputs::rootfs::rootfs_digests;
use crate::policy::create_inputs::{self, BasePolicy, DigestAlgorithm, parse_allowlist, resolve_algorithm};
use crate::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use crate::policy::runtime::{Failure, ImaEvidence, RuntimePolicy};
use crate::policy::{
    BUILTIN_MEASURED_BOOT, BUILTIN_RUNTIME, PolicyLimits, PolicyRuntime, builtin_measured_boot,
    builtin_names, builtin_runtime,
};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Start a policy crate: a component of one world that builds and tests out of the box,
    /// with sample evidence made by the zest project to test against.
    New(super::policy_new::NewArgs),
    /// Dry-run a policy on evidence files: prints the verdict and each failure, exits
    /// non-zero when the evidence fails.
    Test(TestArgs),
    /// Make a policy document from evidence, as Keylime's `keylime-policy create` does.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Sign a policy document as a DSSE envelope, as Keylime's `keylime-policy sign` does.
    #[command(subcommand)]
    Sign(super::policy_sign::SignCommand),
    /// Judge a candidate policy on the agents' recorded evidence before it goes live (on
    /// the verifier): which agents would newly fail, and on what.
    Canary(Box<super::canary::CanaryArgs>),
    /// Make a canaried candidate the next version of its policy; agents switch at their
    /// next round.
    Promote(super::canary::PromoteArgs),
    /// Bring back an earlier version of a stored policy, as its next version.
    Rollback(super::canary::VersionArgs),
    /// A stored policy's versions, or one version's document.
    Versions(super::canary::VersionArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["runtime", "measured_boot"])))]
pub struct TestArgs {
    /// Evaluate a runtime (IMA) policy against `--ima-log`.
    #[arg(long)]
    runtime: bool,
    /// Evaluate a measured-boot policy against `--event-log`.
    #[arg(long)]
    measured_boot: bool,
    /// `builtin:NAME` or a component file (.wasm).
    #[arg(long)]
    module: String,
    /// The policy document: a Keylime runtime policy or mb_refstate JSON file.
    #[arg(long)]
    policy: PathBuf,
    /// The IMA measurement list (ascii_runtime_measurements).
    #[arg(long)]
    ima_log: Option<PathBuf>,
    /// The binary UEFI event log (binary_bios_measurements). With `--runtime` it supplies
    /// the boot aggregates IMA's `boot_aggregate` entry is compared with.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// The PCR bank IMA's PCR 10 is replayed in (the quote's hash algorithm).
    #[arg(long, default_value = "sha256")]
    bank: String,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A runtime policy from an IMA measurement list.
    Runtime(Box<CreateRuntimeArgs>),
    /// A reference state for `keylime-mb-example` from a UEFI event log.
    MeasuredBoot(CreateMeasuredBootArgs),
}

#[derive(Debug, Args)]
pub struct CreateRuntimeArgs {
    /// The IMA measurement list (ascii_runtime_measurements); a bare `-m` reads this
    /// machine's, /sys/kernel/security/ima/ascii_runtime_measurements.
    #[arg(long = "ima-measurement-list", short = 'm', alias = "ima-log", num_args = 0..=1,
          default_missing_value = IMA_LIST_OF_THIS_MACHINE)]
    ima_log: Option<PathBuf>,
    /// A policy to extend: its digests, excludes, keyrings, ima-buf, ignored keyrings,
    /// log_hash_alg and verification keys are kept; meta and release are made anew.
    #[arg(long, short = 'p')]
    base_policy: Option<PathBuf>,
    /// A flat allowlist: `<digest>  <path>` lines as sha256sum prints them.
    #[arg(long, short = 'a')]
    allowlist: Option<PathBuf>,
    /// A root filesystem whose root-owned regular files are hashed (symlinks are not
    /// followed; /sys /run /proc /lost+found /dev /media /snap /mnt /var /tmp are left out).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Directories under --rootfs to leave out, comma-separated (absolute, or relative to
    /// the current directory, as Keylime reads them; one not under --rootfs is ignored with
    /// a warning, as Keylime does).
    #[arg(long, short = 's', value_delimiter = ',', requires = "rootfs")]
    skip_path: Vec<String>,
    /// A directory of initramfs images (files named `initr*`) whose files are hashed.
    #[arg(long)]
    ramdisk_dir: Option<PathBuf>,
    /// The digest algorithm --rootfs and --ramdisk-dir files are hashed with: sha1, sha256,
    /// sha384 or sha512 (default: the base policy's, the allowlist's or the IMA list's, else
    /// sha256). sm3_256 is named but zest cannot hash with it.
    #[arg(long, value_parser = ["sha1", "sha256", "sha384", "sha512", "sm3_256"])]
    algo: Option<String>,
    /// Print the digests as a flat allowlist (`<digest>  <path>` lines) instead of a policy.
    #[arg(long)]
    show_legacy_allowlist: bool,
    /// Add the digests of keys measured into keyrings (ima-buf entries) to `keyrings`.
    #[arg(long, short = 'k')]
    keyrings: bool,
    /// Add the digests of other ima-buf entries to `ima-buf`.
    #[arg(long, short = 'b')]
    ima_buf: bool,
    /// A keyring whose keys are neither checked nor learned (repeatable; `*` for all).
    #[arg(long = "ignored-keyrings")]
    ignored_keyrings: Vec<String>,
    /// A file of exclude regexes, one per line (each trimmed; blank lines skipped).
    #[arg(long, short = 'e')]
    excludelist: Option<PathBuf>,
    /// A certificate or public key (DER or PEM) that signs IMA file signatures (repeatable).
    #[arg(long = "add-ima-signature-verification-key")]
    verification_keys: Vec<PathBuf>,
    /// Where to write the policy (default: standard output).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// Where the kernel publishes this machine's IMA measurement list.
const IMA_LIST_OF_THIS_MACHINE: &str = "/sys/kernel/security/ima/ascii_runtime_measurements";

#[derive(Debug, Args)]
pub struct CreateMeasuredBootArgs {
    /// The binary UEFI event log (binary_bios_measurements).
    #[arg(long, short = 'e')]
    event_log: PathBuf,
    /// Accept a log of a machine without Secure Boot.
    #[arg(long, short = 'i')]
    without_secureboot: bool,
    /// Where to write the refstate (default: standard output).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::New(args) => super::policy_new::run(args),
        PolicyCommand::Sign(command) => super::policy_sign::run(command),
        PolicyCommand::Test(args) if args.runtime => test_runtime(args),
        PolicyCommand::Test(args) => test_measured_boot(args),
        PolicyCommand::Create(CreateCommand::Runtime(args)) => create_runtime(*args),
        PolicyCommand::Create(CreateCommand::MeasuredBoot(args)) => create_measured_boot(args),
        PolicyCommand::Canary(_)
        | PolicyCommand::Promote(_)
        | PolicyCommand::Rollback(_)
        | PolicyCommand::Versions(_) => {
            anyhow::bail!("this policy command talks to the verifier: it runs in `zest`'s async entry point")
        }
    }
}

/// Runs a step that may take seconds (compiling a component, a large log) with a progress
/// line on stderr, so stdout stays the result alone.
fn step<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprint!("{what}… ");
    let started = std::time::Instant::now();
    let result = f();
    match &result {
        Ok(_) => eprintln!("{:.2} s", started.elapsed().as_secs_f64()),
        Err(_) => eprintln!("failed"),
    }
    result
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The module's name and bytes: a built-in of the right kind or a component file.
fn component(module: &str, builtins: &[(&str, &[u8])], kind: &str) -> anyhow::Result<(String, Vec<u8>)> {
    match module.strip_prefix("builtin:") {
        Some(name) => {
            let found = if kind == "runtime" {
                builtin_runtime(name)
            } else {
                builtin_measured_boot(name)
            };
            let bytes = found.with_context(|| {
                format!(
                    "no built-in {kind} policy '{name}' (built-ins: {})",
                    builtin_names(builtins)
                )
            })?;
            Ok((name.to_owned(), bytes.to_vec()))
        }
        None => Ok((module.to_owned(), read(Path::new(module))?)),
    }
}

fn parse_event_log(path: &Path) -> anyhow::Result<(EventLog, PcrBanks)> {
    let log = EventLog::parse(&read(path)?)
        .with_context(|| format!("{} is not a valid event log", path.display()))?;
    let replayed = log.replay();
    Ok((log, replayed))
}

fn print_failures(failures: &[Failure]) {
    for f in failures {
        // Keylime repeats the whole refstate in measured-boot contexts; a terminal needs
        // the reason.
        let context = match serde_json::from_str::<serde_json::Value>(&f.context) {
            Ok(serde_json::Value::Object(mut map)) if map.contains_key("refstate") => {
                map.insert("refstate".into(), "…".into());
                serde_json::Value::Object(map).to_string()
            }
            _ => f.context.clone(),
        };
        match f.entry {
            Some(entry) => println!("  {} (entry {entry}) {context}", f.event_id),
            None => println!("  {} {context}", f.event_id),
        }
    }
}

fn verdict(name: &str, failed: bool) -> anyhow::Result<()> {
    if failed {
        println!("FAIL");
        bail!("the evidence fails policy {name}")
    }
    println!("PASS");
    Ok(())
}

fn test_runtime(args: TestArgs) -> anyhow::Result<()> {
    let ima_path = args
        .ima_log
        .as_deref()
        .context("--runtime needs --ima-log FILE")?;
    let bank = HashAlg::from_name(&args.bank)
        .with_context(|| format!("--bank {}: not one of sha1, sha256, sha384, sha512", args.bank))?;
    let (name, component) = component(&args.module, BUILTIN_RUNTIME, "runtime")?;
    let document = read(&args.policy)?;
    let text = String::from_utf8(read(ima_path)?)
        .with_context(|| format!("{} is not a text IMA list", ima_path.display()))?;
    let aggregates: Vec<(HashAlg, Vec<u8>)> = match &args.event_log {
        Some(path) => {
            let (_, replayed) = parse_event_log(path)?;
            boot_aggregates(&replayed)
                .into_iter()
                .flat_map(|(alg, pair)| pair.into_iter().map(move |v| (alg, v)))
                .collect()
        }
        None => Vec::new(),
    };

    let runtime = PolicyRuntime::new(PolicyLimits::default(), user_policy_cache())?;
    let policy = step(
        &format!("compiling {name} and loading {}", args.policy.display()),
        || {
            RuntimePolicy::load(&runtime, &name, &component, &document)
                .with_context(|| format!("loading {} into {name}", args.policy.display()))
        },
    )?;
    let log_hash = policy.log_hash_alg().unwrap_or(HashAlg::Sha1);
    // Offline there is no quote: the list's own replayed PCR 10 stands in for it.
    let start = ImaPosition::start(bank);
    let replayed = step(&format!("replaying {}", ima_path.display()), || {
        let dry = replay(&text, bank, log_hash, &start, None);
        Ok(replay(&text, bank, log_hash, &start, Some(&dry.final_pcr10)))
    })?;
    let verdict_of = step(&format!("evaluating {} entries", replayed.entries.len()), || {
        Ok(policy.evaluate(&ImaEvidence {
            text: &text,
            replay: &replayed,
            bank,
            start_offset: 0,
            boot_aggregates: &aggregates,
            prior_state: None,
        })?)
    })?;
    println!(
        "policy {name}: {} entries, PCR 10 ({}) {}, template hashes {}",
        replayed.entries.len(),
        bank.name(),
        hex::encode(&replayed.final_pcr10),
        log_hash.name()
    );
    for e in &replayed.parse_errors {
        println!(
            "  ima.parser.entry (entry {}) {}",
            e.line,
            serde_json::json!({"message": e.to_string()})
        );
    }
    print_failures(&verdict_of.failures);
    verdict(
        &name,
        !verdict_of.failures.is_empty() || !replayed.parse_errors.is_empty(),
    )
}

fn test_measured_boot(args: TestArgs) -> anyhow::Result<()> {
    let log_path = args
        .event_log
        .as_deref()
        .context("--measured-boot needs --event-log FILE")?;
    let (name, component) = component(&args.module, BUILTIN_MEASURED_BOOT, "measured-boot")?;
    let document = read(&args.policy)?;
    let (log, replayed) = parse_event_log(log_path)?;
    // Offline there is no quote: take the log's sha256 bank (else its first) as quoted.
    let bank = if replayed.contains_key(&HashAlg::Sha256) {
        HashAlg::Sha256
    } else {
        *replayed
            .keys()
            .next()
            .context("the log replays no bank we can hash")?
    };
    let quoted: Vec<(u32, Vec<u8>)> = replayed
        .get(&bank)
        .context("the log replays no bank we can hash")?
        .iter()
        .map(|(i, v)| (*i, v.clone()))
        .collect();

    let runtime = PolicyRuntime::new(PolicyLimits::default(), user_policy_cache())?;
    let policy = step(
        &format!("compiling {name} and loading {}", args.policy.display()),
        || {
            MeasuredBootPolicy::load(&runtime, &name, &component, &document)
                .with_context(|| format!("loading {} into {name}", args.policy.display()))
        },
    )?;
    let verified_pcrs = quoted.iter().map(|(i, _)| *i).collect();
    let evidence = BootEvidence {
        log: &log,
        replayed: &replayed,
        quoted_bank: bank,
        quoted: &quoted,
        verified_pcrs: &verified_pcrs,
        first_attestation: true,
        prior_state: None,
    };
    let verdict_of = policy.evaluate(&evidence)?;
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
    print_failures(&verdict_of.failures);
    if !missing.is_empty() {
        println!("  measured_boot.missing_pcrs {missing:?}");
    }
    // As the verifier: an event whose data is not what its digests measured fails the log.
    let forged: Vec<_> = log
        .events
        .iter()
        .filter_map(|e| match e.check_data() {
            crate::evidence::uefi::DataCheck::Mismatch { alg } => Some((e, alg)),
            _ => None,
        })
        .collect();
    for (event, alg) in &forged {
        println!(
            "  measured_boot.invalid_event_data (entry {}) event {} (PCR {}, {}): data does not match its {} digest",
            event.number,
            event.number,
            event.pcr,
            event.type_name(),
            alg.name()
        );
    }
    verdict(
        &name,
        !verdict_of.failures.is_empty() || !missing.is_empty() || !forged.is_empty(),
    )
}

fn write_document(value: &serde_json::Value, output: Option<&Path>) -> anyhow::Result<()> {
    let text = value.to_string();
    match output {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn create_runtime(args: CreateRuntimeArgs) -> anyhow::Result<()> {
    // -k and -b read an IMA list; without -m, Keylime reads this machine's.
    let ima_path = match &args.ima_log {
        None if args.keyrings || args.ima_buf => Some(PathBuf::from(IMA_LIST_OF_THIS_MACHINE)),
        other => other.clone(),
    };
    let ima_list = match &ima_path {
        Some(path) => Some(
            String::from_utf8(read(path)?)
                .with_context(|| format!("{} is not a text IMA list", path.display()))?,
        ),
        None => None,
    };
    let base = match &args.base_policy {
        Some(path) => Some(
            BasePolicy::parse(&read(path)?).with_context(|| format!("the base policy {}", path.display()))?,
        ),
        None => None,
    };
    let allowlist = match &args.allowlist {
        Some(path) => {
            let text = String::from_utf8(read(path)?)
                .with_context(|| format!("the allowlist {} is not text", path.display()))?;
            Some(parse_allowlist(&text).with_context(|| format!("the allowlist {}", path.display()))?)
        }
        None => None,
    };
    let hashes_files = args.rootfs.is_some() || args.ramdisk_dir.is_some();
    let algo = args
        .algo
        .as_deref()
        .map(DigestAlgorithm::from_option)
        .transpose()?;
    if algo.is_some() && !hashes_files {
        eprintln!(
            "warning: --algo only chooses how --rootfs and --ramdisk-dir files are hashed; neither is given"
        );
    }
    // Every source that implies an algorithm must agree, in Keylime's order of precedence.
    let ima_algorithm = match &ima_list {
        Some(text) => Some(
            DigestAlgorithm::from_name(create::ima_list_algorithm(text)?)
                .context("the IMA list's boot_aggregate algorithm")?,
        ),
        None => None,
    };
    let algorithm = resolve_algorithm(&[
        ("--algo option", algo),
        (
            "base policy",
            base.as_ref()
                .map(|b| b.digests.algorithm("base policy"))
                .transpose()?
                .flatten(),
        ),
        (
            "allowlist",
            allowlist
                .as_ref()
                .map(|a| a.algorithm("allowlist"))
                .transpose()?
                .flatten(),
        ),
        ("IMA measurement list", ima_algorithm),
    ])?;
    let mut digests = allowlist.map(|a| a.digests).unwrap_or_default();
    if hashes_files {
        let alg = algorithm.hash()?;
        if let Some(dir) = &args.ramdisk_dir {
            create_inputs::merge(&mut digests, ramdisk_digests(dir, alg)?);
        }
        if let Some(root) = &args.rootfs {
            let (found, warnings) = rootfs_digests(root, &args.skip_path, alg)?;
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            create_inputs::merge(&mut digests, found);
        }
    }
    let mut options = RuntimeOptions {
        keyrings: args.keyrings,
        ima_buf: args.ima_buf,
        ignored_keyrings: args.ignored_keyrings,
        timestamp: timestamp(),
        base,
        digests,
        ..RuntimeOptions::default()
    };
    if let Some(path) = &args.excludelist {
        let list =
            String::from_utf8(read(path)?).with_context(|| format!("{} is not text", path.display()))?;
        // As Keylime reads it: every non-blank line, trimmed, is a regex.
        options.excludes.extend(
            list.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    for path in &args.verification_keys {
        options.verification_keys.push(read(path)?);
    }
    let policy =
        create::runtime_policy(ima_list.as_deref(), &options).context("creating a runtime policy")?;
    // What we write must load where it is going: Keylime checks its schema here, we load it
    // into the built-in keylime-runtime (schema, exclude regexes, verification keys).
    let (name, component) = component("builtin:keylime-runtime", BUILTIN_RUNTIME, "runtime")?;
    let runtime = PolicyRuntime::new(PolicyLimits::default(), user_policy_cache())?;
    RuntimePolicy::load(&runtime, &name, &component, policy.to_string().as_bytes())
        .context("the created policy does not load into keylime-runtime")?;
    if args.show_legacy_allowlist {
        return write_text(&legacy_allowlist(&policy), args.output.as_deref());
    }
    write_document(&policy, args.output.as_deref())
}

/// The policy's digests as a flat allowlist, `boot_aggregate` first, as Keylime prints it.
fn legacy_allowlist(policy: &serde_json::Value) -> String {
    let mut text = String::new();
    let Some(digests) = policy.get("digests").and_then(serde_json::Value::as_object) else {
        return text;
    };
    let boot_aggregate = digests.get_key_value("boot_aggregate");
    for (path, list) in boot_aggregate
        .into_iter()
        .chain(digests.iter().filter(|(p, _)| *p != "boot_aggregate"))
    {
        for digest in list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
        {
            text.push_str(&format!("{digest}  {path}\n"));
        }
    }
    text
}

fn write_text(text: &str, output: Option<&Path>) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn create_measured_boot(args: CreateMeasuredBootArgs) -> anyhow::Result<()> {
    let (log, _) = parse_event_log(&args.event_log)?;
    let refstate = create::measured_boot_refstate(&log, args.without_secureboot)
        .with_context(|| format!("creating a refstate from {}", args.event_log.display()))?;
    write_document(&refstate, args.output.as_deref())
}

/// Where the offline tools keep compiled components, so that a second `zest policy test`
/// compiles nothing: `ZEST_POLICY_CACHE` (empty: no cache), else
/// `$XDG_CACHE_HOME/zest/policy-cache`, else `~/.cache/zest/policy-cache`.
pub(crate) fn user_policy_cache() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ZEST_POLICY_CACHE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let dir = base.join("zest");
    // The cache's key sits beside it: both live in a directory of the user's own.
    crate::config::create_private_dir(&dir).ok()?;
    Some(dir.join("policy-cache"))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, the shape of Keylime's `meta.timestamp`.
fn timestamp() -> String {
    crate::clock::timestamp_now()
}
