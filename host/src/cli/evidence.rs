//! `zest evidence …`: offline inspection of evidence files for operators and scripts.

use std::path::PathBuf;

use std::fmt::Write as _;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::evidence::ima::{ImaPosition, replay};
use crate::evidence::uefi::{EventData, EventLog, VariableData, boot_aggregates};
use crate::evidence::{HashAlg, PublicArea, Quote};
use crate::tpm::{AttestationKey, QuoteExpectations, verify_quote};

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Print the events of a binary UEFI event log and the replayed PCRs of every bank.
    Eventlog {
        file: PathBuf,
        /// Print one JSON object: `events`, `pcrs` (bank → PCR → hex), `boot_aggregates`.
        #[arg(long)]
        json: bool,
    },
    /// Replay an IMA ASCII measurement list into PCR 10 of a bank.
    Ima {
        file: PathBuf,
        /// The quoted bank: sha1, sha256, sha384 or sha512.
        #[arg(long, default_value = "sha256")]
        bank: String,
        /// The algorithm of the template-hash column (Keylime's ima.log_hash_alg).
        #[arg(long, default_value = "sha1")]
        log_hash: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify a quote against an AK; prints each check, exits non-zero on failure.
    Quote {
        /// The AK as a TPM2B_PUBLIC file (tpm2_readpublic -o) or its base64 text.
        #[arg(long)]
        ak: PathBuf,
        /// The nonce as given to the agent (ASCII), or hex with --nonce-hex.
        #[arg(long)]
        nonce: String,
        #[arg(long)]
        nonce_hex: bool,
        /// Keylime's quote string `r<attest>:<signature>:<pcrs>`.
        #[arg(long, conflicts_with_all = ["message", "signature", "pcrs"])]
        quote: Option<String>,
        /// TPMS_ATTEST file (tpm2_quote -m).
        #[arg(long, requires_all = ["signature", "pcrs"])]
        message: Option<PathBuf>,
        /// TPMT_SIGNATURE file (tpm2_quote -s).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// tpm2-tools PCR blob (tpm2_quote -o).
        #[arg(long)]
        pcrs: Option<PathBuf>,
    },
}

pub fn run(command: EvidenceCommand) -> anyhow::Result<()> {
    match command {
        EvidenceCommand::Eventlog { file, json } => eventlog(&file, json),
        EvidenceCommand::Ima {
            file,
            bank,
            log_hash,
            json,
        } => ima(&file, &bank, &log_hash, json),
        EvidenceCommand::Quote {
            ak,
            nonce,
            nonce_hex,
            quote,
            message,
            signature,
            pcrs,
        } => quote_check(&ak, &nonce, nonce_hex, quote, message, signature, pcrs),
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn bank(name: &str) -> anyhow::Result<HashAlg> {
    HashAlg::from_name(name)
        .with_context(|| format!("unknown hash algorithm '{name}' (sha1, sha256, sha384, sha512)"))
}

fn eventlog(file: &PathBuf, json_out: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    let log = EventLog::parse(&read(file)?)
        .with_context(|| format!("{} is not a valid event log", file.display()))?;
    let pcrs = log.replay();
    if json_out {
        let events: Vec<Value> = log
            .events
            .iter()
            .map(|e| {
                json!({
                    "EventNum": e.number,
                    "PCRIndex": e.pcr,
                    "EventType": e.type_name(),
                    "Digests": e.digests.iter().map(|(alg, d)| json!({
                        "AlgorithmId": HashAlg::from_tpm(*alg).map(|h| h.name().to_owned()).unwrap_or_else(|| format!("0x{alg:04x}")),
                        "Digest": hex::encode(d),
                    })).collect::<Vec<_>>(),
                    "EventSize": e.data.len(),
                    "Event": event_json(&e.decode(), &e.data),
                })
            })
            .collect();
        let pcr_json: serde_json::Map<String, Value> = pcrs
            .iter()
            .map(|(bank, values)| {
                let inner: serde_json::Map<String, Value> = values
                    .iter()
                    .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
                    .collect();
                (bank.name().to_owned(), Value::Object(inner))
            })
            .collect();
        let aggregates: serde_json::Map<String, Value> = boot_aggregates(&pcrs)
            .iter()
            .map(|(bank, [a, b])| (bank.name().to_owned(), json!([hex::encode(a), hex::encode(b)])))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"events": events, "pcrs": pcr_json, "boot_aggregates": aggregates})
        )?;
        return emit(&out);
    }
    for e in &log.events {
        let digests: Vec<String> = e
            .digests
            .iter()
            .map(|(alg, d)| {
                let name = HashAlg::from_tpm(*alg).map(HashAlg::name).unwrap_or("?");
                format!("{name}:{}", hex::encode(d))
            })
            .collect();
        writeln!(
            out,
            "#{:<3} PCR {:>2} {:<34} {}",
            e.number,
            e.pcr,
            e.type_name(),
            summary(&e.decode())
        )?;
        for d in digests {
            writeln!(out, "      {d}")?;
        }
    }
    writeln!(out)?;
    for (bank, values) in &pcrs {
        for (i, v) in values {
            writeln!(out, "{} PCR {i:>2}: {}", bank.name(), hex::encode(v))?;
        }
    }
    emit(&out)
}

fn summary(data: &EventData) -> String {
    match data {
        EventData::SpecId => "Spec ID Event03".into(),
        EventData::StartupLocality(l) => format!("StartupLocality {l}"),
        EventData::Text(t) => format!("{t:?}"),
        EventData::Separator(v) => format!("separator {}", hex::encode(v)),
        EventData::FirmwareBlob {
            description,
            base,
            length,
        } => {
            format!(
                "{}blob 0x{base:x} +0x{length:x}",
                description
                    .as_deref()
                    .map(|d| format!("{d} "))
                    .unwrap_or_default()
            )
        }
        EventData::Variable(v) => format!("{}:{}", v.guid, v.name),
        EventData::ImageLoad(i) => i.device_path_text.clone(),
        EventData::Gpt {
            disk_guid,
            partitions,
        } => format!("GPT disk {disk_guid}, {} partitions", partitions.len()),
        EventData::Raw => String::new(),
    }
}

fn event_json(data: &EventData, raw: &[u8]) -> Value {
    match data {
        EventData::SpecId | EventData::Raw => Value::String(hex::encode(raw)),
        EventData::StartupLocality(l) => json!({"StartupLocality": l}),
        EventData::Text(t) => json!({"String": t}),
        EventData::Separator(v) => Value::String(hex::encode(v)),
        EventData::FirmwareBlob {
            description,
            base,
            length,
        } => {
            json!({"BlobDescription": description, "BlobBase": base, "BlobLength": length})
        }
        EventData::Variable(v) => {
            let data = match &v.decoded {
                VariableData::Boolean(b) => json!({"Enabled": if *b { "Yes" } else { "No" }}),
                VariableData::SignatureLists(lists) => Value::Array(
                    lists
                        .iter()
                        .map(|l| json!({
                            "SignatureType": l.signature_type.to_string(),
                            "Keys": l.entries.iter().map(|k| json!({"SignatureOwner": k.owner.to_string(), "SignatureData": hex::encode(&k.data)})).collect::<Vec<_>>(),
                        }))
                        .collect(),
                ),
                VariableData::Signature(k) => {
                    json!([{"SignatureOwner": k.owner.to_string(), "SignatureData": hex::encode(&k.data)}])
                }
                VariableData::Signatures(keys) => Value::Array(
                    keys.iter()
                        .map(|k| json!({"SignatureOwner": k.owner.to_string(), "SignatureData": hex::encode(&k.data)}))
                        .collect(),
                ),
                VariableData::BootOrder(order) => json!(order.iter().map(|n| format!("Boot{n:04x}")).collect::<Vec<_>>()),
                VariableData::BootOption { enabled, description, device_path } => json!({
                    "Enabled": if *enabled { "Yes" } else { "No" }, "Description": description, "DevicePath": device_path,
                }),
                VariableData::Raw => Value::String(hex::encode(&v.data)),
            };
            json!({"VariableName": v.guid.to_string(), "UnicodeName": v.name, "VariableData": data})
        }
        EventData::ImageLoad(i) => json!({
            "ImageLocationInMemory": i.location, "ImageLengthInMemory": i.length,
            "ImageLinkTimeAddress": i.link_time_address, "LengthOfDevicePath": i.device_path.len(),
            "DevicePath": i.device_path_text,
        }),
        EventData::Gpt {
            disk_guid,
            partitions,
        } => json!({
            "DiskGuid": disk_guid.to_string(),
            "Partitions": partitions.iter().map(|p| json!({
                "PartitionTypeGUID": p.type_guid.to_string(), "UniquePartitionGUID": p.unique_guid.to_string(),
                "StartingLBA": p.starting_lba, "EndingLBA": p.ending_lba, "Attributes": p.attributes, "PartitionName": p.name,
            })).collect::<Vec<_>>(),
        }),
    }
}

fn ima(file: &PathBuf, bank_name: &str, log_hash: &str, json_out: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    let bank = bank(bank_name)?;
    let log_hash = self::bank(log_hash)?;
    let bytes = read(file)?;
    if bytes.len() > crate::evidence::ima::MAX_LIST_BYTES {
        bail!(
            "{} is larger than the {} bytes accepted",
            file.display(),
            crate::evidence::ima::MAX_LIST_BYTES
        );
    }
    let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    let r = replay(&text, bank, log_hash, &ImaPosition::start(bank), None);
    let violations = r.entries.iter().filter(|e| e.violation).count();
    let bad_hashes: Vec<usize> = r
        .entries
        .iter()
        .filter(|e| !e.template_hash_ok)
        .map(|e| e.line)
        .collect();
    if json_out {
        writeln!(
            out,
            "{}",
            json!({
                "entries": r.entries.len(),
                "violations": violations,
                "template_hash_mismatches": bad_hashes,
                "parse_errors": r.parse_errors.iter().map(|e| json!({"line": e.line, "reason": e.reason})).collect::<Vec<_>>(),
                "bank": bank.name(),
                "pcr10": hex::encode(&r.final_pcr10),
            })
        )?;
    } else {
        writeln!(out, "entries:                  {}", r.entries.len())?;
        writeln!(out, "violations:               {violations}")?;
        writeln!(out, "template hash mismatches: {}", bad_hashes.len())?;
        writeln!(out, "parse errors:             {}", r.parse_errors.len())?;
        for e in &r.parse_errors {
            writeln!(out, "  {e}")?;
        }
        writeln!(
            out,
            "PCR 10 ({}):             {}",
            bank.name(),
            hex::encode(&r.final_pcr10)
        )?;
    }
    emit(&out)
}

fn quote_check(
    ak: &PathBuf,
    nonce: &str,
    nonce_hex: bool,
    quote: Option<String>,
    message: Option<PathBuf>,
    signature: Option<PathBuf>,
    pcrs: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut out = String::new();
    let ak_bytes = read(ak)?;
    let ak_bytes = match B64.decode(String::from_utf8_lossy(&ak_bytes).trim()) {
        Ok(decoded) if PublicArea::from_tpm2b(&decoded).is_ok() => decoded,
        _ => ak_bytes,
    };
    let ak = AttestationKey::new(PublicArea::from_tpm2b(&ak_bytes).context("the AK is not a TPM2B_PUBLIC")?);
    writeln!(out, "ok   AK parsed ({:?})", ak.public.name_alg)?;
    let quote = match (quote, message, signature, pcrs) {
        (Some(text), None, None, None) => {
            Quote::from_keylime_string(text.trim()).context("parsing the quote string")?
        }
        (None, Some(m), Some(s), Some(p)) => {
            Quote::from_parts(&read(&m)?, &read(&s)?, &read(&p)?).context("parsing the quote files")?
        }
        _ => bail!("give either --quote STRING or --message, --signature and --pcrs"),
    };
    writeln!(
        out,
        "ok   quote parsed: {} signature over {}",
        quote.signature.scheme_name(),
        quote.signature.hash().name()
    )?;
    let nonce = if nonce_hex {
        hex::decode(nonce).context("--nonce-hex is not hex")?
    } else {
        nonce.as_bytes().to_vec()
    };
    let expected = QuoteExpectations {
        nonce: &nonce,
        hashes: &[HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512],
        schemes: &["rsassa", "rsapss", "ecdsa"],
    };
    match verify_quote(&quote, &ak, &expected) {
        Ok(v) => {
            writeln!(out, "ok   magic, type, signature, nonce and PCR digest")?;
            writeln!(
                out,
                "     clock {} resetCount {} restartCount {} safe {}",
                v.clock_info.clock, v.clock_info.reset_count, v.clock_info.restart_count, v.clock_info.safe
            )?;
            for (bank, pcr, value) in &v.pcrs {
                writeln!(out, "     {} PCR {pcr:>2}: {}", bank.name(), hex::encode(value))?;
            }
            emit(&out)
        }
        Err(e) => {
            writeln!(out, "FAIL {e}")?;
            emit(&out)?;
            bail!("quote verification failed: {e}")
        }
    }
}

/// Writes the report to stdout; a closed pipe (`| head`) is not an error.
fn emit(out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
