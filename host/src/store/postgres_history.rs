//! Attestation history, recorded evidence and policy versions in the PostgreSQL store: the
//! SQLite store's rules, with an advisory lock per agent where a round's writes read first.

use postgres::{GenericClient, Transaction};

use super::StoreError;
use super::history::{
    EvidenceSnapshot, EvidenceUpdate, HistoryEntry, HistoryQuery, HistoryStore, MAX_IMA_SEGMENTS,
    PolicyVersion, RecordedEvidence, Retention, RoundHistory, Swap, digest_hex,
};
use super::postgres::{Lock, PgStore, Prepared, lock};
use super::verifier::{PolicyKind, PolicyRecord};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Replaces a policy, keeping the live row as a version; with `expected`, only while the
/// live document still has that checksum.
pub(super) fn replace_policy(
    tx: &mut Transaction<'_>,
    kind: PolicyKind,
    tenant: &str,
    r: &PolicyRecord,
    expected: Option<&str>,
) -> Result<Swap, StoreError> {
    let live = tx.query_opt_prepared(
        &format!(
            "SELECT checksum, version FROM {} WHERE tenant = $1 AND name = $2 FOR UPDATE",
            kind.table()
        ),
        &[&tenant, &r.name],
    )?;
    let Some(live) = live else {
        return Ok(Swap::NotFound);
    };
    let (checksum, version): (String, i64) = (live.try_get(0)?, live.try_get(1)?);
    if expected.is_some_and(|e| e != checksum) {
        return Ok(Swap::Changed);
    }
    tx.execute_prepared(
        &format!(
            "INSERT INTO policy_versions
                 (kind, tenant, name, version, module, checksum, generator, document, replaced_at)
             SELECT $3, tenant, name, version, module, checksum, generator, document,
                    extract(epoch FROM now())::bigint
             FROM {} WHERE tenant = $1 AND name = $2
             ON CONFLICT (kind, tenant, name, version) DO UPDATE SET module = excluded.module,
                 checksum = excluded.checksum, generator = excluded.generator,
                 document = excluded.document, replaced_at = excluded.replaced_at",
            kind.table()
        ),
        &[&tenant, &r.name, &kind.name()],
    )?;
    let next = version + 1;
    tx.execute_prepared(
        &format!(
            "UPDATE {} SET module = $3, document = $4, checksum = $5, generator = $6, version = $7
             WHERE tenant = $1 AND name = $2",
            kind.table()
        ),
        &[
            &tenant,
            &r.name,
            &r.module,
            &r.document,
            &r.checksum,
            &r.generator,
            &next,
        ],
    )?;
    Ok(Swap::Done(next as u64))
}

/// Forgets the versions of policies that no longer exist (deleted ones).
pub(super) fn drop_orphan_versions(
    client: &mut impl GenericClient,
    kind: PolicyKind,
    tenant: &str,
) -> Result<u64, StoreError> {
    Ok(client.execute_prepared(
        &format!(
            "DELETE FROM policy_versions WHERE kind = $1 AND tenant = $2
               AND NOT EXISTS (SELECT 1 FROM {} p WHERE p.tenant = $2 AND p.name = policy_versions.name)",
            kind.table()
        ),
        &[&kind.name(), &tenant],
    )?)
}

/// Forgets an agent's history and evidence (the agent was deleted), and its boot log if
/// no other agent's evidence names it.
pub(super) fn forget_agent(client: &mut impl GenericClient, agent_id: &str) -> Result<(), StoreError> {
    let boot_log: Option<Option<String>> = client
        .query_opt_prepared(
            "DELETE FROM agent_evidence WHERE agent_id = $1 RETURNING boot_log",
            &[&agent_id],
        )?
        .map(|row| row.try_get(0))
        .transpose()?;
    client.execute_prepared("DELETE FROM agent_ima_segments WHERE agent_id = $1", &[&agent_id])?;
    client.execute_prepared(
        "DELETE FROM attestation_history WHERE agent_id = $1",
        &[&agent_id],
    )?;
    if let Some(Some(digest)) = boot_log {
        drop_blob_if_unused(client, &digest)?;
    }
    Ok(())
}

fn drop_blob_if_unused(client: &mut impl GenericClient, digest: &str) -> Result<u64, StoreError> {
    Ok(client.execute_prepared(
        "DELETE FROM evidence_blobs WHERE digest = $1
           AND NOT EXISTS (SELECT 1 FROM agent_evidence WHERE boot_log = $1)",
        &[&digest],
    )?)
}

fn record_evidence(
    tx: &mut Transaction<'_>,
    tenant: &str,
    agent_id: &str,
    update: &EvidenceUpdate,
) -> Result<(), StoreError> {
    let previous: Option<(String, Option<String>)> = tx
        .query_opt_prepared(
            "SELECT record, boot_log FROM agent_evidence WHERE agent_id = $1",
            &[&agent_id],
        )?
        .map(|row| Ok::<_, StoreError>((row.try_get(0)?, row.try_get(1)?)))
        .transpose()?;
    let previous_next = previous
        .as_ref()
        .and_then(|(record, _)| serde_json::from_str::<EvidenceSnapshot>(record).ok())
        .and_then(|s| s.ima_next);
    let mut snapshot = update.snapshot.clone();
    match &update.ima_text {
        Some(text) if update.ima_offset == 0 => {
            tx.execute_prepared("DELETE FROM agent_ima_segments WHERE agent_id = $1", &[&agent_id])?;
            tx.execute_prepared(
                "INSERT INTO agent_ima_segments (agent_id, seq, text) VALUES ($1, 0, $2)",
                &[&agent_id, text],
            )?;
        }
        Some(text) if previous_next == Some(update.ima_offset) => {
            if !text.is_empty() {
                append_segment(tx, agent_id, text)?;
            }
        }
        _ => {
            tx.execute_prepared("DELETE FROM agent_ima_segments WHERE agent_id = $1", &[&agent_id])?;
            snapshot.ima_next = None;
            snapshot.ima_pcr10 = None;
        }
    }
    if let Some(bytes) = &update.boot_log {
        let digest = digest_hex(bytes);
        // The same log as last round (the usual case) is stored already.
        if previous.as_ref().and_then(|(_, b)| b.as_deref()) != Some(digest.as_str()) {
            tx.execute_prepared(
                "INSERT INTO evidence_blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
                &[&digest, bytes],
            )?;
        }
        snapshot.boot_log = Some(digest);
    }
    let record = serde_json::to_string(&snapshot).map_err(corrupt)?;
    tx.execute_prepared(
        "INSERT INTO agent_evidence (agent_id, tenant, record, boot_log) VALUES ($1, $2, $3, $4)
         ON CONFLICT (agent_id) DO UPDATE SET tenant = excluded.tenant, record = excluded.record,
             boot_log = excluded.boot_log",
        &[&agent_id, &tenant, &record, &snapshot.boot_log],
    )?;
    if let Some((_, Some(old))) = previous
        && snapshot.boot_log.as_deref() != Some(old.as_str())
    {
        drop_blob_if_unused(tx, &old)?;
    }
    Ok(())
}

/// Appends an IMA segment; past [`MAX_IMA_SEGMENTS`] the segments become one.
fn append_segment(tx: &mut Transaction<'_>, agent_id: &str, text: &str) -> Result<(), StoreError> {
    // Segments are numbered from 0 without gaps: the new one's number is how many came before.
    let seq: i64 = tx
        .query_one_prepared(
            "INSERT INTO agent_ima_segments (agent_id, seq, text)
             SELECT $1, coalesce(max(seq), -1) + 1, $2 FROM agent_ima_segments WHERE agent_id = $1
             RETURNING seq",
            &[&agent_id, &text],
        )?
        .try_get(0)?;
    if seq + 1 > MAX_IMA_SEGMENTS {
        let whole = ima_text(tx, agent_id)?.unwrap_or_default();
        tx.execute_prepared("DELETE FROM agent_ima_segments WHERE agent_id = $1", &[&agent_id])?;
        tx.execute_prepared(
            "INSERT INTO agent_ima_segments (agent_id, seq, text) VALUES ($1, 0, $2)",
            &[&agent_id, &whole],
        )?;
    }
    Ok(())
}

fn ima_text(client: &mut impl GenericClient, agent_id: &str) -> Result<Option<String>, StoreError> {
    let parts = client
        .query_prepared(
            "SELECT text FROM agent_ima_segments WHERE agent_id = $1 ORDER BY seq",
            &[&agent_id],
        )?
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!parts.is_empty()).then(|| parts.concat()))
}

/// Drops what `retention` no longer keeps of an agent's history and push attestations: one
/// statement each, since every statement is a round trip to the server. Every query names
/// the tenant and agent, so each reads only that agent's index range.
fn apply_retention(
    tx: &mut Transaction<'_>,
    tenant: &str,
    agent_id: &str,
    retention: &Retention,
) -> Result<(), StoreError> {
    let (passes, failures) = (int(retention.keep_passes), int(retention.keep_failures));
    tx.execute_prepared(
        "DELETE FROM attestation_history WHERE id IN (
             SELECT id FROM (
                 SELECT id, passed, row_number() OVER (PARTITION BY passed ORDER BY id DESC) AS n
                 FROM attestation_history WHERE agent_id = $1) ranked
             WHERE n > CASE WHEN passed THEN $2::bigint ELSE $3::bigint END)",
        &[&agent_id, &passes, &failures],
    )?;
    // The records' JSON (evidence included, often out of line) is read only when the agent
    // holds more records than the smaller limit: counting reads the key alone.
    tx.execute_prepared(
        "DELETE FROM push_attestations WHERE tenant = $1 AND agent_id = $2
           AND (SELECT count(*) FROM push_attestations WHERE tenant = $1 AND agent_id = $2)
               > least($3::bigint, $4::bigint)
           AND idx IN (
             SELECT idx FROM (
                 SELECT idx, record->>'evaluation' AS evaluation, row_number() OVER (
                     PARTITION BY record->>'evaluation' ORDER BY idx DESC) AS n
                 FROM push_attestations WHERE tenant = $1 AND agent_id = $2) ranked
             WHERE (evaluation = 'pass' AND n > $3::bigint) OR (evaluation = 'fail' AND n > $4::bigint))",
        &[&tenant, &agent_id, &passes, &failures],
    )?;
    Ok(())
}

/// Appends a judged round, with its evidence, and applies the retention; returns its id.
fn write_round(
    tx: &mut Transaction<'_>,
    entry: &HistoryEntry,
    evidence: Option<&EvidenceUpdate>,
    retention: &Retention,
) -> Result<u64, StoreError> {
    lock(tx, Lock::Agent, &entry.agent_id)?;
    if let Some(update) = evidence {
        record_evidence(tx, &entry.tenant, &entry.agent_id, update)?;
    }
    let record = serde_json::to_string(entry).map_err(corrupt)?;
    let id: i64 = tx
        .query_one_prepared(
            "INSERT INTO attestation_history (tenant, agent_id, at_ms, passed, record)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &entry.tenant,
                &entry.agent_id,
                &int(entry.at_ms),
                &entry.passed,
                &record,
            ],
        )?
        .try_get(0)?;
    apply_retention(tx, &entry.tenant, &entry.agent_id, retention)?;
    Ok(id as u64)
}

/// [`write_round`] inside the verdict's transaction, in a savepoint of its own: a history
/// that cannot be written is rolled back alone, and the verdict stands.
pub(super) fn write_round_with_verdict(
    tx: &mut Transaction<'_>,
    history: &RoundHistory,
) -> Result<u64, StoreError> {
    let mut savepoint = tx.savepoint("round_history")?;
    let id = write_round(
        &mut savepoint,
        &history.entry,
        history.evidence.as_ref(),
        &history.retention,
    )?;
    savepoint.commit()?;
    Ok(id)
}

impl HistoryStore for PgStore {
    fn record_round(
        &self,
        entry: &HistoryEntry,
        evidence: Option<&EvidenceUpdate>,
        retention: &Retention,
    ) -> Result<u64, StoreError> {
        let (entry, evidence, retention) = (entry.clone(), evidence.cloned(), *retention);
        self.transaction(move |tx| write_round(tx, &entry, evidence.as_ref(), &retention))
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let query = query.clone();
        self.run(move |client| {
            let limit = int(query.limit);
            let since = query.since_ms.map(int);
            let until = query.until_ms.map(int);
            let before = query.before_id.map(int);
            // Not prepared: a generic plan for these optional conditions could not pick the
            // agent's index; planned each time, it does.
            let rows = client.query(
                "SELECT id, record FROM attestation_history
                 WHERE ($1::text IS NULL OR agent_id = $1) AND ($2::text IS NULL OR tenant = $2)
                   AND ($3::bigint IS NULL OR at_ms >= $3) AND ($4::bigint IS NULL OR at_ms < $4)
                   AND ($5::boolean IS NULL OR passed = $5) AND ($6::bigint IS NULL OR id < $6)
                 ORDER BY id DESC LIMIT $7",
                &[
                    &query.agent_id,
                    &query.tenant,
                    &since,
                    &until,
                    &query.passed,
                    &before,
                    &limit,
                ],
            )?;
            rows.iter()
                .map(|row| {
                    let id: i64 = row.try_get(0)?;
                    let mut entry: HistoryEntry =
                        serde_json::from_str(&row.try_get::<_, String>(1)?).map_err(corrupt)?;
                    entry.id = id as u64;
                    Ok(entry)
                })
                .collect()
        })
    }

    fn recorded_evidence(&self, agent_id: &str) -> Result<Option<RecordedEvidence>, StoreError> {
        let agent_id = agent_id.to_owned();
        self.run(move |client| {
            let Some(row) = client.query_opt_prepared(
                "SELECT tenant, record FROM agent_evidence WHERE agent_id = $1",
                &[&agent_id],
            )?
            else {
                return Ok(None);
            };
            let tenant: String = row.try_get(0)?;
            let snapshot: EvidenceSnapshot =
                serde_json::from_str(&row.try_get::<_, String>(1)?).map_err(corrupt)?;
            let boot_log = match &snapshot.boot_log {
                Some(digest) => client
                    .query_opt_prepared("SELECT bytes FROM evidence_blobs WHERE digest = $1", &[digest])?
                    .map(|row| row.try_get(0))
                    .transpose()?,
                None => None,
            };
            let ima_text = if snapshot.ima_next.is_some() {
                ima_text(client, &agent_id)?
            } else {
                None
            };
            Ok(Some(RecordedEvidence {
                tenant,
                snapshot,
                ima_text,
                boot_log,
            }))
        })
    }

    fn swap_policy(
        &self,
        kind: PolicyKind,
        tenant: &str,
        record: &PolicyRecord,
        expected_checksum: &str,
    ) -> Result<Swap, StoreError> {
        let (tenant, record, expected) = (tenant.to_owned(), record.clone(), expected_checksum.to_owned());
        self.transaction(move |tx| replace_policy(tx, kind, &tenant, &record, Some(&expected)))
    }

    fn policy_versions(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<PolicyVersion>, StoreError> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.run(move |client| {
            client
                .query_prepared(
                    &format!(
                        "SELECT version, checksum, module, NULL::bigint FROM {} WHERE tenant = $1 AND name = $2
                         UNION ALL
                         SELECT version, checksum, module, replaced_at FROM policy_versions
                         WHERE kind = $3 AND tenant = $1 AND name = $2
                         ORDER BY 1 DESC",
                        kind.table()
                    ),
                    &[&tenant, &name, &kind.name()],
                )?
                .iter()
                .map(|row| {
                    Ok(PolicyVersion {
                        version: row.try_get::<_, i64>(0)? as u64,
                        checksum: row.try_get(1)?,
                        module: row.try_get(2)?,
                        replaced_at: row.try_get::<_, Option<i64>>(3)?.map(|t| t as u64),
                    })
                })
                .collect()
        })
    }

    fn policy_version(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.run(move |client| {
            client
                .query_opt_prepared(
                    "SELECT name, module, document, checksum, generator FROM policy_versions
                     WHERE kind = $1 AND tenant = $2 AND name = $3 AND version = $4",
                    &[&kind.name(), &tenant, &name, &int(version)],
                )?
                .map(|row| super::postgres_verifier::policy_row(&row))
                .transpose()
        })
    }
}
