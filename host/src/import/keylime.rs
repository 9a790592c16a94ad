//! `zest import keylime`: Keylime's registrar database (`registrarmain`) and verifier
//! database (`verifiermain`, `allowlists`, `mbpolicies`), as Keylime 7.x writes them to SQLite
//! or PostgreSQL, brought over as zest's registrations, enrolments and named policies.
//!
//! Encodings follow Keylime 7.14.3 (and older schemas where they differ): `tpm_policy` is
//! JSON text of a JSON string; accept lists, `tpm_clockinfo` and `learned_ima_keyrings` are
//! JSON; registrar certificates are base64 DER from 7.12 on (PEM before), or `disabled`;
//! `registrarmain.key` is the base64 credential whose HMAC of the agent id is the auth tag.
//! An agent keeps its place in its IMA log (entry, PCR 10, boot time) unless its runtime
//! policy had learned keys, which zest's component cannot take over: then its first round
//! under zest replays the whole log, as Keylime's own fallback does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use thiserror::Error;

use super::rows::{Row, read_table};
use crate::store::verifier::{EnrolOutcome, PolicyWrite, state};
use crate::store::{
    PolicyKind, PolicyRecord, RegisteredAgent, RegistrarStore, StoreError, TenantQuota, VerifierAgent,
    VerifierStore,
};

/// A Keylime database: an SQLite file, or a PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Source {
    /// A path (`/var/lib/keylime/cv_data.sqlite`), SQLAlchemy's `sqlite:////path`, or
    /// `postgresql://…` (`postgresql+psycopg2://` as Keylime writes it).
    pub fn parse(text: &str) -> Result<Self, ImportError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Sqlite(PathBuf::from(text)));
        };
        match scheme.split('+').next().unwrap_or(scheme) {
            "sqlite" => match rest.strip_prefix('/') {
                Some(path) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
                _ => Err(ImportError::Source(
                    "a sqlite URL names its file: sqlite:////absolute/path".into(),
                )),
            },
            "postgresql" | "postgres" => Ok(Self::Postgres(format!("postgresql://{rest}"))),
            other => Err(ImportError::Source(format!(
                "Keylime databases are read from SQLite or PostgreSQL, not {other}"
            ))),
        }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            // Never the password.
            Self::Postgres(url) => match url.rsplit_once('@') {
                Some((_, host)) => write!(f, "postgresql://…@{host}"),
                None => f.write_str(url),
            },
        }
    }
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("{0}")]
    Source(String),
    #[error("reading the Keylime database: {0}")]
    Read(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {what}: {why}")]
    Write { what: String, why: String },
}

/// What importing one record does.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    /// New to zest: written with `--apply`.
    Add(T),
    /// zest holds the same already (a second run finds only these).
    Unchanged(String),
    /// zest holds another record under that name: zest's is kept.
    Conflict(String),
    /// Not importable, and why.
    Skipped(String),
}

/// Everything an import would do, in the order it is written.
#[derive(Debug, Default)]
pub struct Plan {
    pub tenant: String,
    pub policies: Vec<(String, Change<(PolicyKind, PolicyRecord)>)>,
    pub enrolments: Vec<(String, Change<VerifierAgent>)>,
    pub registrations: Vec<(String, Change<RegisteredAgent>)>,
    /// What carries over differently, per agent.
    pub notes: Vec<String>,
}

/// What an applied plan wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub policies: usize,
    pub enrolments: usize,
    pub registrations: usize,
}

/// Everything an import may hold: it is the operator's, and quotas are for tenants' own
/// requests.
fn unlimited() -> TenantQuota {
    TenantQuota {
        agents: u64::MAX,
        policies: u64::MAX,
        components: u64::MAX,
        ..TenantQuota::default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(crate::evidence::HashAlg::Sha256.digest(&[bytes]))
}

/// A base64 DER, PEM, `disabled` or empty certificate column as PEM (`None`: no certificate).
fn certificate_pem(text: Option<String>) -> Option<String> {
    let text = text?.trim().to_owned();
    if text.is_empty() || text == "disabled" || text == "emulator" || text == "None" {
        return None;
    }
    if text.contains("-----BEGIN CERTIFICATE-----") {
        return Some(text);
    }
    let der = B64.decode(text.as_bytes()).ok()?;
    let body = B64.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    Some(format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    ))
}

/// A certificate column as base64 DER (how zest's registrar keeps EK certificates).
fn certificate_b64_der(text: Option<String>) -> Option<String> {
    let pem = certificate_pem(text)?;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(B64.encode(block.contents))
}

/// A JSON column's value (`None` for NULL or text that is not JSON).
fn json(row: &Row, column: &str) -> Option<Value> {
    serde_json::from_str(&row.text(column)?).ok()
}

fn string_list(row: &Row, column: &str) -> Vec<String> {
    json(row, column)
        .and_then(|v| v.as_array().cloned())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn unsigned(row: &Row, column: &str) -> u64 {
    row.int(column).map_or(0, |n| n.max(0) as u64)
}

/// `registrarmain.key`'s auth tag, as zest's registrar keeps it (SHA-256 of the tag).
fn auth_tag_digest(key: Option<&str>, agent_id: &str) -> Vec<u8> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        // No credential to activate with: the agent registers again when it restarts.
        return vec![0; 32];
    };
    let hmac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA384, key.as_bytes());
    let tag = hex::encode(aws_lc_rs::hmac::sign(&hmac, agent_id.as_bytes()).as_ref());
    crate::evidence::HashAlg::Sha256.digest(&[tag.as_bytes()])
}

fn registration(row: &Row) -> Result<RegisteredAgent, String> {
    let agent_id = row.text("agent_id").ok_or("no agent_id")?;
    let ek_tpm = row.text("ek_tpm").ok_or("no ek_tpm")?;
    let aik_tpm = row.text("aik_tpm").ok_or("no aik_tpm")?;
    let mtls_cert = match row.text("mtls_cert").as_deref() {
        Some("disabled") => Some("disabled".to_owned()),
        other => certificate_pem(other.map(str::to_owned)),
    };
    Ok(RegisteredAgent {
        ekcert: certificate_b64_der(row.text("ekcert")),
        ip: row.text("ip").filter(|ip| !ip.is_empty()),
        port: row.int("port").and_then(|p| u16::try_from(p).ok()),
        active: row.flag("active"),
        regcount: u32::try_from(unsigned(row, "regcount"))
            .unwrap_or(u32::MAX)
            .max(1),
        auth_tag_digest: auth_tag_digest(row.text("key").as_deref(), &agent_id),
        agent_id,
        ek_tpm,
        aik_tpm,
        mtls_cert,
    })
}

/// Keylime's double-encoded `tpm_policy` (JSON text of a JSON string) as the JSON text zest keeps.
fn tpm_policy(row: &Row) -> String {
    match json(row, "tpm_policy") {
        Some(Value::String(inner)) => inner,
        Some(Value::Null) | None => "{}".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// What an import takes over from a `verifiermain` row, with the names of its policies.
fn enrolment(
    row: &Row,
    tenant: &str,
    runtime: &str,
    mb: &str,
    notes: &mut Vec<(String, String)>,
) -> Result<VerifierAgent, String> {
    let agent_id = row.text("agent_id").ok_or("no agent_id")?;
    let push = row.text("ip").is_none() && row.int("port").is_none();
    let mtls_cert = row
        .text("mtls_cert")
        .filter(|c| c.contains("-----BEGIN CERTIFICATE-----"));
    if !push && mtls_cert.is_none() {
        return Err("no mTLS certificate: zest polls agents over mTLS only".into());
    }
    let operational_state = row.int("operational_state").unwrap_or(state::GET_QUOTE);
    // The IMA position carries over only whole, and only without learned keys.
    let keyrings_learned =
        json(row, "learned_ima_keyrings").is_some_and(|k| k.as_object().is_some_and(|o| !o.is_empty()));
    let pcr10 = row
        .bytes("pcr10")
        .filter(|b| b.len() == 32 || b.len() == 20 || b.len() == 48 || b.len() == 64);
    let boottime = row.int("boottime").filter(|b| *b > 0).map(|b| b as u64);
    let next = unsigned(row, "next_ima_ml_entry");
    let position = match (pcr10, boottime) {
        (Some(pcr10), Some(boottime)) if next > 0 && !keyrings_learned => {
            Some((hex::encode(pcr10), boottime, next))
        }
        _ => None,
    };
    if position.is_none() && next > 0 {
        notes.push((
            agent_id.clone(),
            format!(
                "agent {agent_id}: its IMA log is replayed from entry 0 at its first zest round ({})",
                if keyrings_learned {
                    "its runtime policy had learned keys"
                } else {
                    "Keylime kept no complete IMA position"
                }
            ),
        ));
    }
    let tpm_clock = json(row, "tpm_clockinfo").and_then(|c| {
        Some((
            c.get("clock")?.as_u64()?,
            u32::try_from(c.get("resetCount")?.as_u64()?).ok()?,
            u32::try_from(c.get("restartCount")?.as_u64()?).ok()?,
        ))
    });
    Ok(VerifierAgent {
        lease_owner: None,
        tenant: tenant.to_owned(),
        ip: if push { None } else { row.text("ip") },
        port: if push {
            None
        } else {
            row.int("port").and_then(|p| u16::try_from(p).ok())
        },
        v: row.text("v").filter(|v| !v.is_empty()),
        tpm_policy: tpm_policy(row),
        runtime_policy: runtime.to_owned(),
        mb_policy: mb.to_owned(),
        ima_sign_verification_keys: row.text("ima_sign_verification_keys").unwrap_or_default(),
        revocation_key: row.text("revocation_key").unwrap_or_default(),
        meta_data: row.text("meta_data").unwrap_or_else(|| "{}".into()),
        accept_tpm_hash_algs: string_list(row, "accept_tpm_hash_algs"),
        accept_tpm_encryption_algs: string_list(row, "accept_tpm_encryption_algs"),
        accept_tpm_signing_algs: string_list(row, "accept_tpm_signing_algs"),
        ak_tpm: row.text("ak_tpm").ok_or("no ak_tpm")?,
        mtls_cert: if push { None } else { mtls_cert },
        supported_version: row
            .text("supported_version")
            .filter(|v| !v.is_empty() && v != "None"),
        operational_state,
        hash_alg: row.text("hash_alg").unwrap_or_default(),
        enc_alg: row.text("enc_alg").unwrap_or_default(),
        sign_alg: row.text("sign_alg").unwrap_or_default(),
        severity_level: row.int("severity_level"),
        last_event_id: row.text("last_event_id"),
        attestation_count: unsigned(row, "attestation_count"),
        last_received_quote: unsigned(row, "last_received_quote"),
        last_successful_attestation: unsigned(row, "last_successful_attestation"),
        last_failures: Vec::new(),
        boottime: position.as_ref().map(|p| p.1),
        next_ima_ml_entry: position.as_ref().map_or(0, |p| p.2),
        pcr10: position.map(|p| p.0),
        ima_policy_state: None,
        ima_policy: None,
        mb_policy_state: None,
        revision: crate::store::verifier::new_revision(),
        public_key: row.text("public_key").filter(|k| k.contains("BEGIN PUBLIC KEY")),
        // Keylime moves on to GET_QUOTE once V is delivered.
        v_delivered: matches!(operational_state, state::GET_QUOTE | state::GET_QUOTE_RETRY),
        tpm_clock,
        polls_after_failure: false,
        push,
        consecutive_attestation_failures: unsigned(row, "consecutive_attestation_failures"),
        last_attestation_passed: row.int("last_successful_attestation").is_some_and(|t| t > 0),
        agent_id,
    })
}

fn runtime_record(row: Option<&Row>, name: &str) -> PolicyRecord {
    let document = row
        .and_then(|r| r.text("ima_policy"))
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| crate::verifier::policies::EMPTY_RUNTIME_POLICY.to_owned())
        .into_bytes();
    PolicyRecord {
        name: name.to_owned(),
        module: crate::verifier::policies::DEFAULT_RUNTIME_MODULE.to_owned(),
        checksum: sha256_hex(&document),
        generator: row.and_then(|r| r.int("generator")).unwrap_or(1),
        document: Some(document),
    }
}

fn mb_record(document: Option<String>, name: &str, module: &str) -> PolicyRecord {
    let document = document
        .filter(|d| !d.trim().is_empty() && d.trim() != "null")
        .map(String::into_bytes);
    PolicyRecord {
        name: name.to_owned(),
        module: module.to_owned(),
        checksum: document.as_deref().map(sha256_hex).unwrap_or_default(),
        generator: 0,
        document,
    }
}

/// Reads the Keylime databases and compares each record with zest's store: what an import
/// into `tenant` adds, finds unchanged, or leaves (conflicts, unimportable rows).
/// `mb_module` is the measured-boot component refstates are judged by.
pub fn plan(
    registrar_db: Option<&Source>,
    verifier_db: Option<&Source>,
    registrar: Option<&dyn RegistrarStore>,
    verifier: Option<&dyn VerifierStore>,
    tenant: &str,
    mb_module: &str,
) -> Result<Plan, ImportError> {
    let mut plan = Plan {
        tenant: tenant.to_owned(),
        ..Plan::default()
    };
    if let (Some(db), Some(store)) = (verifier_db, verifier) {
        let allowlists: BTreeMap<i64, Row> = read_table(db, "allowlists")?
            .into_iter()
            .filter_map(|r| Some((r.int("id")?, r)))
            .collect();
        let mbpolicies: BTreeMap<i64, Row> = read_table(db, "mbpolicies")?
            .into_iter()
            .filter_map(|r| Some((r.int("id")?, r)))
            .collect();
        let mut policies: BTreeMap<(String, String), PolicyRecord> = BTreeMap::new();
        let kind_key = |kind: PolicyKind| match kind {
            PolicyKind::Runtime => "runtime".to_owned(),
            PolicyKind::MeasuredBoot => "measured-boot".to_owned(),
        };
        // Named runtime policies stand alone, used by an agent or not.
        for row in allowlists.values() {
            if let Some(name) = row.text("name") {
                policies.insert(
                    (kind_key(PolicyKind::Runtime), name.clone()),
                    runtime_record(Some(row), &name),
                );
            }
        }
        for row in mbpolicies.values() {
            if let Some(name) = row.text("name") {
                policies.insert(
                    (kind_key(PolicyKind::MeasuredBoot), name.clone()),
                    mb_record(row.text("mb_policy"), &name, mb_module),
                );
            }
        }
        let mut agents = Vec::new();
        let mut notes = Vec::new();
        for row in read_table(db, "verifiermain")? {
            let Some(id) = row.text("agent_id") else {
                continue;
            };
            // An agent without a policy of a kind gets an empty one named after it, as an
            // enrolment without one does (up to Keylime 7.9 the refstate was the agent's own
            // column).
            let mut own = Vec::new();
            let runtime = match row.int("ima_policy_id").and_then(|i| allowlists.get(&i)) {
                Some(policy) => policy.text("name").unwrap_or_else(|| id.clone()),
                None => {
                    own.push((kind_key(PolicyKind::Runtime), runtime_record(None, &id)));
                    id.clone()
                }
            };
            let mb = match row.int("mb_policy_id").and_then(|i| mbpolicies.get(&i)) {
                Some(policy) => policy.text("name").unwrap_or_else(|| id.clone()),
                None => {
                    own.push((
                        kind_key(PolicyKind::MeasuredBoot),
                        mb_record(row.text("mb_refstate"), &id, mb_module),
                    ));
                    id.clone()
                }
            };
            match enrolment(&row, tenant, &runtime, &mb, &mut notes) {
                Ok(agent) => {
                    for (kind, record) in own {
                        policies.entry((kind, record.name.clone())).or_insert(record);
                    }
                    agents.push(agent);
                }
                Err(why) => plan.enrolments.push((id, Change::Skipped(why))),
            }
        }
        for ((kind, name), record) in policies {
            let kind = PolicyKind::from_name(&kind).unwrap_or(PolicyKind::Runtime);
            let what = format!("{} policy {name}", kind.name());
            let change = match store.policy_info(kind, tenant, &name)? {
                None => Change::Add((kind, record)),
                Some(held) if held.checksum == record.checksum => Change::Unchanged(what.clone()),
                Some(_) => Change::Conflict(format!("{what}: zest holds another document under that name")),
            };
            plan.policies.push((what, change));
        }
        for agent in agents {
            let id = agent.agent_id.clone();
            let change = match store.agent(&id)? {
                None => {
                    // Notes tell what an added enrolment carries over differently.
                    plan.notes.extend(
                        notes
                            .iter()
                            .filter(|(of, _)| *of == id)
                            .map(|(_, note)| note.clone()),
                    );
                    Change::Add(agent)
                }
                Some(held) if held.tenant == tenant && held.ak_tpm == agent.ak_tpm => {
                    Change::Unchanged(format!("agent {id} is enrolled"))
                }
                Some(_) => Change::Conflict(format!(
                    "agent {id} is enrolled in zest with another tenant or AK"
                )),
            };
            plan.enrolments.push((id, change));
        }
    }
    if let (Some(db), Some(store)) = (registrar_db, registrar) {
        for row in read_table(db, "registrarmain")? {
            let Some(id) = row.text("agent_id") else {
                continue;
            };
            let change = match registration(&row) {
                Err(why) => Change::Skipped(why),
                Ok(agent) => match store.registered_agent(&id)? {
                    None => Change::Add(agent),
                    Some(held) if held.ek_tpm == agent.ek_tpm && held.aik_tpm == agent.aik_tpm => {
                        Change::Unchanged(format!("registration of {id}"))
                    }
                    Some(_) => Change::Conflict(format!("{id} is registered in zest with another EK or AK")),
                },
            };
            plan.registrations.push((id, change));
        }
    }
    Ok(plan)
}

/// Writes what `plan` adds: policies first (enrolments name them), then enrolments and
/// registrations. Each write is one store transaction that adds only what is absent, so a
/// second run, or a run racing another, writes nothing twice.
pub fn apply(
    plan: &Plan,
    registrar: Option<&dyn RegistrarStore>,
    verifier: Option<&dyn VerifierStore>,
) -> Result<Written, ImportError> {
    let mut written = Written::default();
    let quota = unlimited();
    if let Some(store) = verifier {
        for (what, change) in &plan.policies {
            if let Change::Add((kind, record)) = change {
                match store.put_policy(*kind, &plan.tenant, record, true, &quota)? {
                    PolicyWrite::Done => written.policies += 1,
                    PolicyWrite::Exists => {}
                    other => {
                        return Err(ImportError::Write {
                            what: what.clone(),
                            why: format!("{other:?}"),
                        });
                    }
                }
            }
        }
        for (id, change) in &plan.enrolments {
            if let Change::Add(agent) = change {
                match store.enrol(agent, &[], &quota)? {
                    EnrolOutcome::Enrolled => written.enrolments += 1,
                    EnrolOutcome::AgentExists => {}
                    other => {
                        return Err(ImportError::Write {
                            what: format!("agent {id}"),
                            why: format!("{other:?}"),
                        });
                    }
                }
            }
        }
    }
    if let Some(store) = registrar {
        for (_, change) in &plan.registrations {
            if let Change::Add(agent) = change
                && store.import_agent(agent)?
            {
                written.registrations += 1;
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_certificates_read_as_keylime_writes_them() {
        assert_eq!(
            Source::parse("/var/lib/keylime/cv_data.sqlite").unwrap(),
            Source::Sqlite("/var/lib/keylime/cv_data.sqlite".into())
        );
        assert_eq!(
            Source::parse("sqlite:////var/lib/keylime/reg_data.sqlite").unwrap(),
            Source::Sqlite("/var/lib/keylime/reg_data.sqlite".into())
        );
        let pg = Source::parse("postgresql+psycopg2://keylime:hunter2@db/keylime").unwrap();
        assert_eq!(
            pg,
            Source::Postgres("postgresql://keylime:hunter2@db/keylime".into())
        );
        assert!(!pg.to_string().contains("hunter2"));
        assert!(Source::parse("mysql://db/keylime").is_err());

        assert_eq!(certificate_pem(Some("disabled".into())), None);
        assert_eq!(certificate_pem(Some("emulator".into())), None);
        let pem = certificate_pem(Some(B64.encode(b"der bytes"))).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n") && pem.contains(&B64.encode(b"der bytes")));
    }

    #[test]
    fn the_auth_tag_is_keylimes() {
        // registrarmain.key is base64 of the credential; the tag is HMAC-SHA384 of the agent
        // id under that text, in hex, as zest's registrar computes it on activation.
        let key = B64.encode(b"0123456789abcdef0123456789abcdef");
        let hmac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA384, key.as_bytes());
        let tag = hex::encode(aws_lc_rs::hmac::sign(&hmac, b"agent-1").as_ref());
        assert_eq!(
            auth_tag_digest(Some(&key), "agent-1"),
            crate::evidence::HashAlg::Sha256.digest(&[tag.as_bytes()])
        );
    }
}
