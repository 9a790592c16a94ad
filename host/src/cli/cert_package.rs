//! `zest tenant add --cert DIR [--include PATH…]`: Keylime's certificate package, the zip its
//! tenant delivers as the payload (`ca_util.cmd_certpkg` plus the RevocationNotifier
//! certificate and the included files), and the RevocationNotifier key the verifier signs
//! revocations with. Keylime's agents unzip it and run `autorun.sh` when one is included;
//! they verify revocation messages with `RevocationNotifier-cert.crt` from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::api::Role;
use crate::net::{TlsMaterial, Usage};

/// The package and what goes to the verifier with it.
#[derive(Debug)]
pub struct CertPackage {
    pub zip: Vec<u8>,
    /// PEM of the RevocationNotifier's private key (`revocation_key`).
    pub revocation_key: String,
    /// Keylime's enrolment `metadata` text: the agent certificate's serial (a number, as
    /// Keylime's revocation actions compare it) and subject.
    pub metadata: String,
}

const NOTIFIER: &str = "RevocationNotifier";

/// Builds the package for `uuid` from the CA in `ca_dir` (zest's `cv_ca` layout, which is
/// Keylime's): the agent's key and certificate and the RevocationNotifier's (RSA-2048, as
/// Keylime's) are issued on first use and kept there.
pub fn build(ca_dir: &Path, uuid: &str, include: &[PathBuf]) -> anyhow::Result<CertPackage> {
    let ca = TlsMaterial {
        dir: ca_dir.to_path_buf(),
    };
    if !ca.path(TlsMaterial::CA_CERT).exists() {
        bail!(
            "{} holds no CA (cacert.crt): make one with `zest ca init --dir {}`",
            ca_dir.display(),
            ca_dir.display()
        );
    }
    // A directory Keylime's keylime_ca made keeps its CA key in private.yml, which zest does
    // not read: what exists there is packed as it is, and only what is missing needs the key.
    let can_issue = ca.path(TlsMaterial::CA_KEY).exists();
    let needs_key = |what: &str| {
        anyhow::anyhow!(
            "{} lacks {what} and has no ca-private.pem to issue it with (a keylime_ca directory: issue it with keylime_ca first)",
            ca_dir.display()
        )
    };
    let read = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = ca.path(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let agent_key = format!("{uuid}-private.pem");
    if !ca.path(&agent_key).exists() {
        if !can_issue {
            return Err(needs_key(&agent_key));
        }
        ca.issue(ca_dir, uuid, &[uuid.to_owned()], Usage::Client(Role::Agent))
            .with_context(|| format!("issuing the certificate of agent {uuid}"))?;
    }
    let notifier_key = format!("{NOTIFIER}-private.pem");
    if !ca.path(&notifier_key).exists() {
        if !can_issue {
            return Err(needs_key(&notifier_key));
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).context("generating an RSA key")?;
        ca.issue_for(ca_dir, NOTIFIER, &[NOTIFIER.to_owned()], Usage::Signing, key)
            .context("issuing the RevocationNotifier certificate")?;
    }
    // The CA's revocation list as the directory holds it (Keylime packs its files), else a
    // new empty one, kept for the next package.
    let (crl_der, crl_pem) = match (read("cacrl.der"), read("cacrl.pem")) {
        (Ok(der), Ok(pem)) => (der, pem),
        _ if can_issue => {
            let (der, pem) = ca.empty_crl().context("signing the CA's revocation list")?;
            std::fs::write(ca.path("cacrl.der"), &der).context("writing cacrl.der")?;
            std::fs::write(ca.path("cacrl.pem"), &pem).context("writing cacrl.pem")?;
            (der, pem.into_bytes())
        }
        _ => return Err(needs_key("cacrl.der and cacrl.pem")),
    };
    let agent_private = read(&agent_key)?;
    let agent_public = rcgen::KeyPair::from_pem(&String::from_utf8_lossy(&agent_private))
        .with_context(|| format!("{} is not a private key", ca.path(&agent_key).display()))?
        .public_key_pem();
    let agent_cert = read(&format!("{uuid}-cert.crt"))?;
    let (_, parsed) =
        x509_parser::pem::parse_x509_pem(&agent_cert).context("the agent certificate is not PEM")?;
    let parsed = parsed.parse_x509().context("the agent certificate")?;
    // Python's json.dumps text, the serial a (possibly long) integer.
    let metadata = format!(
        "{{\"cert_serial\": {}, \"subject\": {}}}",
        parsed.tbs_certificate.serial,
        crate::dsse::python_dumps(&serde_json::Value::String(parsed.subject().to_string()).to_string())?
    );

    let mut entries: Vec<(String, Vec<u8>)> = vec![
        (format!("{uuid}-public.pem"), agent_public.into_bytes()),
        (format!("{uuid}-cert.crt"), agent_cert.clone()),
        (agent_key.clone(), agent_private),
        (TlsMaterial::CA_CERT.to_owned(), read(TlsMaterial::CA_CERT)?),
        ("cacrl.der".to_owned(), crl_der),
        ("cacrl.pem".to_owned(), crl_pem),
        (
            format!("{NOTIFIER}-cert.crt"),
            read(&format!("{NOTIFIER}-cert.crt"))?,
        ),
    ];
    for path in include {
        let files: Vec<PathBuf> = if path.is_dir() {
            // Keylime's --include takes a directory's files, not its subdirectories.
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{}: not a file name zest can put in a zip", file.display()))?
                .to_owned();
            if entries.iter().any(|(n, _)| *n == name) {
                bail!(
                    "{}: the package already holds a file named {name}",
                    file.display()
                );
            }
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            entries.push((name, bytes));
        }
    }
    Ok(CertPackage {
        zip: stored_zip(&entries)?,
        revocation_key: String::from_utf8(read(&notifier_key)?)
            .context("the RevocationNotifier key is not PEM text")?,
        metadata,
    })
}

/// A zip archive without compression, as Keylime writes its packages (`ZIP_STORED`: no
/// inflating in the agent's tmpfs). Entries are owner-readable files (mode 0600).
pub fn stored_zip(entries: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    // 1980-01-01 00:00, the DOS epoch: the archive does not depend on the clock.
    const DOS_TIME: u16 = 0;
    const DOS_DATE: u16 = (1 << 5) | 1;
    let u16_of =
        |n: usize, what: &str| u16::try_from(n).with_context(|| format!("too many {what} for a zip"));
    let u32_of = |n: usize| u32::try_from(n).context("the package is larger than a zip without zip64 holds");
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = u32_of(out.len())?;
        let crc = crc32fast::hash(data);
        let size = u32_of(data.len())?;
        let name_len = u16_of(name.len(), "name bytes")?;
        let flags: u16 = if name.is_ascii() { 0 } else { 0x0800 };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for field in [20u16, flags, 0, DOS_TIME, DOS_DATE] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        // Made by Unix (3), zip 2.0: the external attributes carry the file mode.
        for field in [(3u16 << 8) | 20, 20, flags, 0, DOS_TIME, DOS_DATE] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        for field in [name_len, 0, 0, 0, 0] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        central.extend_from_slice(&(0o100_600u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = u32_of(out.len())?;
    let central_size = u32_of(central.len())?;
    let count = u16_of(entries.len(), "files")?;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for field in [0u16, 0, count, count] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}
