//! `zest ca`: the certificates of an installation, in Keylime's `cv_ca` layout (what
//! `zest serve` generates on first start, and what Keylime's tenant and agents expect).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::DEFAULT_DATA_DIR;
use crate::net::{TlsMaterial, Usage, load_certs};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA with a server and a client certificate (DATA_DIR/cv_ca unless --dir).
    Init {
        /// Where to write them.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Names (IP or DNS) the server certificate is valid for, besides localhost,
        /// 127.0.0.1 and ::1. Repeat for several.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
    },
    /// Issue a certificate from the CA: NAME-cert.crt and NAME-private.pem.
    Issue {
        /// File stem of the certificate and key (e.g. the agent's or operator's name).
        #[arg(long)]
        name: String,
        /// subjectAltNames (IP or DNS); the first is also the CN. Default: NAME.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// A client certificate (tenant, operator, Prometheus) instead of a server one.
        #[arg(long)]
        client: bool,
        /// The client certificate's role: `operator` (every route) or `agent` (no operator
        /// route). Server certificates carry none: they never pass as clients.
        #[arg(long, default_value = "operator", requires = "client")]
        role: String,
        /// A client certificate of this tenant of a shared server (not `zest tenant`, the
        /// operator's CLI): it reaches that tenant's enrolments, policies and components only.
        #[arg(long, requires = "client", conflicts_with = "role")]
        tenant: Option<String>,
        /// The CA directory (DATA_DIR/cv_ca unless given).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where to write the certificate and key (default: the CA directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Describe the certificates in the CA directory: subject, names, usage, validity.
    Show {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn ca_dir(dir: Option<PathBuf>, data_dir: Option<&Path>) -> PathBuf {
    dir.unwrap_or_else(|| data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR)).join("cv_ca"))
}

pub fn run(command: CaCommand, data_dir: Option<&Path>) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { dir, server_names } => {
            let dir = ca_dir(dir, data_dir);
            if dir.join(TlsMaterial::CA_CERT).exists() || dir.join(TlsMaterial::CA_KEY).exists() {
                bail!(
                    "{} already holds a CA; move it away first to make a new one",
                    dir.display()
                );
            }
            TlsMaterial::ensure(&dir, &server_names)?;
            println!(
                "created a CA, a server and a client certificate in {}",
                dir.display()
            );
            print!("{}", describe_dir(&dir)?);
            Ok(())
        }
        CaCommand::Issue {
            name,
            sans,
            client,
            role,
            tenant,
            dir,
            out,
        } => {
            let dir = ca_dir(dir, data_dir);
            if !TlsMaterial::complete(&dir) {
                bail!("{} holds no CA; run `zest ca init` first", dir.display());
            }
            if name.is_empty() || name.contains('/') {
                bail!("--name must be a file stem without '/'");
            }
            let sans = if sans.is_empty() { vec![name.clone()] } else { sans };
            let out = out.unwrap_or_else(|| dir.clone());
            let usage = if let Some(tenant) = tenant {
                match crate::api::Role::from_name(&format!("tenant:{tenant}")) {
                    r @ crate::api::Role::Tenant(_) => Usage::Client(r),
                    _ => bail!("--tenant must be 1 to 80 characters of A-Z, a-z, 0-9, '.', '_' or '-'"),
                }
            } else if client {
                match crate::api::Role::from_name(&role) {
                    r @ (crate::api::Role::Operator | crate::api::Role::Agent) => Usage::Client(r),
                    _ => bail!("--role must be operator or agent, not {role:?}"),
                }
            } else {
                Usage::Server
            };
            let material = TlsMaterial { dir: dir.clone() };
            let (cert, key) = material
                .issue(&out, &name, &sans, usage)
                .with_context(|| format!("issuing {name} from the CA in {}", dir.display()))?;
            println!("{}\n{}", cert.display(), key.display());
            Ok(())
        }
        CaCommand::Show { dir } => {
            let dir = ca_dir(dir, data_dir);
            print!("{}", describe_dir(&dir)?);
            Ok(())
        }
    }
}

fn describe_dir(dir: &Path) -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no certificate (*.crt)", dir.display());
    }
    let mut out = String::new();
    for file in files {
        for der in load_certs(&file)? {
            out.push_str(&format!("{}\n", file.display()));
            out.push_str(&describe(&der).unwrap_or_else(|e| format!("  unreadable: {e}\n")));
        }
    }
    Ok(out)
}

fn describe(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut out = format!("  subject   {}\n  issuer    {}\n", cert.subject(), cert.issuer());
    let validity = cert.validity();
    out.push_str(&format!(
        "  valid     {} to {}\n",
        validity.not_before, validity.not_after
    ));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default()).to_string(),
                    16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default()).to_string(),
                    _ => hex::encode(ip),
                },
                other => format!("{other:?}"),
            })
            .collect();
        out.push_str(&format!("  names     {}\n", names.join(", ")));
    }
    if let Ok(Some(bc)) = cert.basic_constraints() {
        out.push_str(&format!("  CA        {}\n", bc.value.ca));
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let mut uses = Vec::new();
        if eku.value.server_auth {
            uses.push("serverAuth");
        }
        if eku.value.client_auth {
            uses.push("clientAuth");
        }
        out.push_str(&format!("  usage     {}\n", uses.join(", ")));
    }
    let fingerprint = crate::evidence::HashAlg::Sha256.digest(&[der]);
    out.push_str(&format!("  sha256    {}\n", hex::encode(fingerprint)));
    Ok(out)
}
