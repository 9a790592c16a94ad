//! `zest policy sign runtime`: a DSSE envelope of a runtime policy, as Keylime's
//! `keylime-policy sign runtime` makes it (same options, same envelope, same payload bytes).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand, ValueEnum};

use crate::dsse::{KEYLIME_PAYLOAD_TYPE, SigningKey, python_dumps};
use crate::policy::runtime::RuntimePolicy;
use crate::policy::{PolicyLimits, PolicyRuntime, builtin_runtime};

#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Sign a runtime policy (Keylime's `keylime-policy sign runtime`).
    Runtime(SignRuntimeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Backend {
    /// keyid: SHA-256 of the public key's PEM.
    Ecdsa,
    /// keyid: base64 of a self-signed certificate written to `--cert-outfile`.
    X509,
}

#[derive(Debug, Args)]
pub struct SignRuntimeArgs {
    /// The runtime policy to sign (checked by the built-in keylime-runtime component first).
    #[arg(long, short = 'r')]
    runtime_policy: PathBuf,
    /// An EC private key (PEM, unencrypted) to sign with.
    #[arg(long, short = 'k', conflicts_with = "keypath")]
    keyfile: Option<PathBuf>,
    /// Where to write a new P-256 key when `--keyfile` is not given.
    #[arg(long, short = 'p', default_value = "keylime-ecdsa-key.pem")]
    keypath: PathBuf,
    #[arg(long, short = 'b', value_enum, default_value = "ecdsa")]
    backend: Backend,
    /// The x509 backend's certificate, written here (required with `--backend x509`).
    #[arg(long, short = 'c')]
    cert_outfile: Option<PathBuf>,
    /// Ours: also write the public key (PEM), what `zest tenant --runtime-policy-sig-key`
    /// and Keylime's tenant send.
    #[arg(long)]
    pubkey_outfile: Option<PathBuf>,
    /// Where to write the envelope (default: standard output).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

pub fn run(command: SignCommand) -> anyhow::Result<()> {
    match command {
        SignCommand::Runtime(args) => sign_runtime(args),
    }
}

fn sign_runtime(args: SignRuntimeArgs) -> anyhow::Result<()> {
    if matches!(args.backend, Backend::X509) && args.cert_outfile.is_none() {
        bail!("--backend x509 needs --cert-outfile FILE for the certificate");
    }
    let path = &args.runtime_policy;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text =
        String::from_utf8(bytes.clone()).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    check_policy(path, &bytes)?;
    // Keylime signs `json.dumps` of the loaded policy, not the file's bytes.
    let payload = python_dumps(&text).with_context(|| format!("{}", path.display()))?;

    let key = match &args.keyfile {
        Some(file) => {
            let pem = std::fs::read(file).with_context(|| format!("reading the key {}", file.display()))?;
            SigningKey::from_pem(&pem).with_context(|| format!("{}", file.display()))?
        }
        None => {
            let key = SigningKey::generate()?;
            write_new(&args.keypath, key.private_pem()?.as_bytes(), 0o600)
                .with_context(|| format!("writing the new key {}", args.keypath.display()))?;
            eprintln!("new P-256 key written to {}", args.keypath.display());
            key
        }
    };
    let keyid = match (args.backend, &args.cert_outfile) {
        (Backend::X509, Some(cert_path)) => {
            let cert = self_signed(&key)?;
            std::fs::write(cert_path, &cert).with_context(|| format!("writing {}", cert_path.display()))?;
            B64.encode(cert.as_bytes())
        }
        _ => key.keyid()?,
    };
    if let Some(out) = &args.pubkey_outfile {
        std::fs::write(out, key.public_pem()?).with_context(|| format!("writing {}", out.display()))?;
    }
    let envelope = key.envelope(KEYLIME_PAYLOAD_TYPE, payload.as_bytes(), &keyid)?;
    match &args.output {
        Some(out) => std::fs::write(out, &envelope).with_context(|| format!("writing {}", out.display()))?,
        None => println!("{envelope}"),
    }
    Ok(())
}

/// Keylime validates the policy before it signs; zest loads it into the component that
/// will judge with it.
fn check_policy(path: &Path, document: &[u8]) -> anyhow::Result<()> {
    let component =
        builtin_runtime("keylime-runtime").context("the built-in keylime-runtime component is missing")?;
    let runtime = PolicyRuntime::new(PolicyLimits::default(), super::policy::user_policy_cache())?;
    RuntimePolicy::load(&runtime, "keylime-runtime", component, document).with_context(|| {
        format!(
            "{} is not a valid runtime policy; make sure to provide a valid runtime policy",
            path.display()
        )
    })?;
    Ok(())
}

/// Writes a file that must not exist yet (a key is never overwritten).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)
}

/// The certificate `keylime-policy`'s x509 backend makes: CN and SAN `dsse_lib`, not a CA,
/// valid from yesterday for 30 days.
fn self_signed(key: &SigningKey) -> anyhow::Result<String> {
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair};
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(key.pkcs8_der()?);
    let pair = KeyPair::try_from(&pkcs8).context("the key cannot sign certificates (x509 needs P-256)")?;
    let mut params = CertificateParams::new(vec!["dsse_lib".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "dsse_lib");
    params.is_ca = IsCa::ExplicitNoCa;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = 86_400;
    params.not_before =
        rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(now.saturating_sub(day));
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(now + 30 * day);
    Ok(params.self_signed(&pair)?.pem())
}
