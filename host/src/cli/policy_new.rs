//! `zest policy new`: a policy crate that builds and tests out of the box, from the
//! templates in `sdk/templates` and the sample evidence in `sdk/testdata`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["runtime", "measured_boot"])))]
pub struct NewArgs {
    /// A runtime (IMA) policy.
    #[arg(long)]
    runtime: bool,
    /// A measured-boot policy.
    #[arg(long)]
    measured_boot: bool,
    /// The crate's name; it is made in the directory of that name.
    name: String,
    /// The SDK the crate depends on: the `sdk` directory of a zest checkout (default: the
    /// checkout this zest was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

const CARGO_TOML: &str = include_str!("../../../sdk/templates/Cargo.toml");
const GITIGNORE: &str = include_str!("../../../sdk/templates/gitignore");
const MEASURED_BOOT_RS: &str = include_str!("../../../sdk/templates/measured-boot.rs");
const MEASURED_BOOT_JSON: &str = include_str!("../../../sdk/templates/measured-boot.json");
const RUNTIME_RS: &str = include_str!("../../../sdk/templates/runtime.rs");
const RUNTIME_JSON: &str = include_str!("../../../sdk/templates/runtime.json");
const SAMPLE_BOOT_LOG: &[u8] = include_bytes!("../../../sdk/testdata/boot.log");
const SAMPLE_IMA_LIST: &[u8] = include_bytes!("../../../sdk/testdata/ascii_runtime_measurements");

/// Where the SDK of the checkout this binary was built from is.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = PathBuf::from(&args.name);
    if dir.exists() {
        bail!(
            "{} already exists: choose another name or remove it",
            dir.display()
        );
    }
    let sdk = match &args.sdk {
        Some(sdk) => sdk.clone(),
        None => PathBuf::from(BUILT_FROM_SDK),
    };
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "the policy SDK is not at {}: pass --sdk DIR, the `sdk` directory of a zest checkout",
                sdk.display()
            )
        })?;
    let sdk_text = sdk
        .to_str()
        .with_context(|| format!("the SDK path {} is not UTF-8", sdk.display()))?;
    let (feature, source, document) = if args.runtime {
        ("runtime", RUNTIME_RS, RUNTIME_JSON)
    } else {
        ("measured-boot", MEASURED_BOOT_RS, MEASURED_BOOT_JSON)
    };
    let fill = |template: &str| {
        template
            .replace("@NAME@", &args.name)
            .replace("@SDK@", &sdk_text.replace('\\', "\\\\").replace('"', "\\\""))
            .replace("@FEATURE@", feature)
    };
    let files: [(&str, Vec<u8>); 6] = [
        ("Cargo.toml", fill(CARGO_TOML).into_bytes()),
        (".gitignore", GITIGNORE.as_bytes().to_vec()),
        ("src/lib.rs", fill(source).into_bytes()),
        ("policy.json", document.as_bytes().to_vec()),
        ("testdata/boot.log", SAMPLE_BOOT_LOG.to_vec()),
        ("testdata/ascii_runtime_measurements", SAMPLE_IMA_LIST.to_vec()),
    ];
    for (path, contents) in &files {
        write(&dir.join(path), contents)?;
    }
    println!(
        "made {kind} policy crate {name}/ (SDK: {sdk_text})\n\
         next:\n  cd {name}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  \
         zest policy test --{kind} --module target/wasm32-wasip2/release/{lib}.wasm --policy policy.json {evidence}",
        kind = feature,
        name = args.name,
        lib = args.name.replace('-', "_"),
        evidence = if args.runtime {
            "--ima-log testdata/ascii_runtime_measurements"
        } else {
            "--event-log testdata/boot.log"
        },
    );
    Ok(())
}

/// A Cargo package name that is also a directory name: ASCII letters first, then letters,
/// digits, `-` and `_`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.len() > 64 {
        bail!("'{name}' is not a crate name: use ASCII letters, digits, '-' and '_', starting with a letter");
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
