//! Attestation history, recorded evidence and policy versions in the SQLite store.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::history::{
    EvidenceSnapshot, EvidenceUpdate, HistoryEntry, HistoryQuery, HistoryStore, MAX_IMA_SEGMENTS,
    PolicyVersion, RecordedEvidence, Retention, RoundHistory, Swap, digest_hex,
};
use super::verifier::{PolicyKind, PolicyRecord};
use super::{SqliteStore, StoreError};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Replaces a policy, keeping the live row as a version; with `expected`, only while the
/// live document still has that checksum.
pub(super) fn replace_policy(
    conn: &Connection,
    kind: PolicyKind,
    tenant: &str,
    r: &PolicyRecord,
    expected: Option<&str>,
) -> Result<Swap, StoreError> {
    let live: Option<(String, i64)> = conn
        .prepare_cached(&format!(
            "SELECT checksum, version FROM {} WHERE tenant = ?1 AND name = ?2",
            kind.table()
        ))?
        .query_row(params![tenant, r.name], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((checksum, version)) = live else {
        return Ok(Swap::NotFound);
    };
    if expected.is_some_and(|e| e != checksum) {
        return Ok(Swap::Changed);
    }
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO policy_versions
             (kind, tenant, name, version, module, checksum, generator, document, replaced_at)
         SELECT ?3, tenant, name, version, module, checksum, generator, document, unixepoch()
         FROM {} WHERE tenant = ?1 AND name = ?2",
        kind.table()
    ))?
    .execute(params![tenant, r.name, kind.name()])?;
    conn.prepare_cached(&format!(
        "UPDATE {} SET module = ?3, document = ?4, checksum = ?5, generator = ?6, version = ?7
         WHERE tenant = ?1 AND name = ?2",
        kind.table()
    ))?
    .execute(params![
        tenant,
        r.name,
        r.module,
        r.document,
        r.checksum,
        r.generator,
        version + 1
    ])?;
    Ok(Swap::Done((version + 1) as u64))
}

/// Forgets the versions of policies that no longer exist (deleted ones).
pub(super) fn drop_orphan_versions(
    conn: &Connection,
    kind: PolicyKind,
    tenant: &str,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!(
        "DELETE FROM policy_versions WHERE kind = ?1 AND tenant = ?2
           AND NOT EXISTS (SELECT 1 FROM {} p WHERE p.tenant = ?2 AND p.name = policy_versions.name)",
        kind.table()
    ))?
    .execute(params![kind.name(), tenant])
}

/// Forgets an agent's history and evidence (the agent was deleted), and its boot log if
/// no other agent's evidence names it.
pub(super) fn forget_agent(conn: &Connection, agent_id: &str) -> Result<(), StoreError> {
    let boot_log: Option<Option<String>> = conn
        .prepare_cached("SELECT boot_log FROM agent_evidence WHERE agent_id = ?1")?
        .query_row([agent_id], |row| row.get(0))
        .optional()?;
    conn.prepare_cached("DELETE FROM agent_evidence WHERE agent_id = ?1")?
        .execute([agent_id])?;
    conn.prepare_cached("DELETE FROM agent_ima_segments WHERE agent_id = ?1")?
        .execute([agent_id])?;
    conn.prepare_cached("DELETE FROM attestation_history WHERE agent_id = ?1")?
        .execute([agent_id])?;
    if let Some(Some(digest)) = boot_log {
        drop_blob_if_unused(conn, &digest)?;
    }
    Ok(())
}

fn drop_blob_if_unused(conn: &Connection, digest: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM evidence_blobs WHERE digest = ?1
           AND NOT EXISTS (SELECT 1 FROM agent_evidence WHERE boot_log = ?1)",
    )?
    .execute([digest])
}

fn record_evidence(
    conn: &Connection,
    tenant: &str,
    agent_id: &str,
    update: &EvidenceUpdate,
) -> Result<(), StoreError> {
    let previous: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT record, boot_log FROM agent_evidence WHERE agent_id = ?1")?
        .query_row([agent_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let previous_next = previous
        .as_ref()
        .and_then(|(record, _)| serde_json::from_str::<EvidenceSnapshot>(record).ok())
        .and_then(|s| s.ima_next);
    let mut snapshot = update.snapshot.clone();
    match &update.ima_text {
        Some(text) if update.ima_offset == 0 => {
            conn.prepare_cached("DELETE FROM agent_ima_segments WHERE agent_id = ?1")?
                .execute([agent_id])?;
            conn.prepare_cached("INSERT INTO agent_ima_segments (agent_id, seq, text) VALUES (?1, 0, ?2)")?
                .execute(params![agent_id, text])?;
        }
        Some(text) if previous_next == Some(update.ima_offset) => {
            if !text.is_empty() {
                append_segment(conn, agent_id, text)?;
            }
        }
        _ => {
            conn.prepare_cached("DELETE FROM agent_ima_segments WHERE agent_id = ?1")?
                .execute([agent_id])?;
            snapshot.ima_next = None;
            snapshot.ima_pcr10 = None;
        }
    }
    if let Some(bytes) = &update.boot_log {
        let digest = digest_hex(bytes);
        // The same log as last round (the usual case) is stored already.
        if previous.as_ref().and_then(|(_, b)| b.as_deref()) != Some(digest.as_str()) {
            conn.prepare_cached(
                "INSERT INTO evidence_blobs (digest, bytes) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
            )?
            .execute(params![digest, bytes])?;
        }
        snapshot.boot_log = Some(digest);
    }
    let record = serde_json::to_string(&snapshot).map_err(corrupt)?;
    conn.prepare_cached(
        "INSERT INTO agent_evidence (agent_id, tenant, record, boot_log) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (agent_id) DO UPDATE SET tenant = excluded.tenant, record = excluded.record,
             boot_log = excluded.boot_log",
    )?
    .execute(params![agent_id, tenant, record, snapshot.boot_log])?;
    if let Some((_, Some(old))) = previous
        && snapshot.boot_log.as_deref() != Some(old.as_str())
    {
        drop_blob_if_unused(conn, &old)?;
    }
    Ok(())
}

/// Appends an IMA segment; past [`MAX_IMA_SEGMENTS`] the segments become one.
fn append_segment(conn: &Connection, agent_id: &str, text: &str) -> Result<(), StoreError> {
    let (count, last): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(max(seq), -1) FROM agent_ima_segments WHERE agent_id = ?1",
        )?
        .query_row([agent_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    conn.prepare_cached("INSERT INTO agent_ima_segments (agent_id, seq, text) VALUES (?1, ?2, ?3)")?
        .execute(params![agent_id, last + 1, text])?;
    if count + 1 > MAX_IMA_SEGMENTS {
        let whole = ima_text(conn, agent_id)?.unwrap_or_default();
        conn.prepare_cached("DELETE FROM agent_ima_segments WHERE agent_id = ?1")?
            .execute([agent_id])?;
        conn.prepare_cached("INSERT INTO agent_ima_segments (agent_id, seq, text) VALUES (?1, 0, ?2)")?
            .execute(params![agent_id, whole])?;
    }
    Ok(())
}

fn ima_text(conn: &Connection, agent_id: &str) -> Result<Option<String>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT text FROM agent_ima_segments WHERE agent_id = ?1 ORDER BY seq")?;
    let parts = statement
        .query_map([agent_id], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!parts.is_empty()).then(|| parts.concat()))
}

/// Drops what `retention` no longer keeps of an agent's history and push attestations.
/// Every query names the tenant and agent, so each reads only that agent's index range.
fn apply_retention(
    conn: &Connection,
    tenant: &str,
    agent_id: &str,
    retention: &Retention,
) -> Result<(), StoreError> {
    for (passed, keep) in [(true, retention.keep_passes), (false, retention.keep_failures)] {
        conn.prepare_cached(
            "DELETE FROM attestation_history WHERE agent_id = ?1 AND passed = ?2 AND id <= (
                 SELECT id FROM attestation_history WHERE agent_id = ?1 AND passed = ?2
                 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![agent_id, passed, int(keep)])?;
    }
    // Counting reads the key only; the records' JSON is read when there may be a surplus.
    let held: i64 = conn
        .prepare_cached("SELECT count(*) FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2")?
        .query_row([tenant, agent_id], |row| row.get(0))?;
    for (evaluation, keep) in [("pass", retention.keep_passes), ("fail", retention.keep_failures)] {
        if held <= int(keep) {
            continue;
        }
        conn.prepare_cached(
            "DELETE FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2
               AND json_extract(record, '$.evaluation') = ?3 AND idx <= (
                 SELECT idx FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2
                   AND json_extract(record, '$.evaluation') = ?3
                 ORDER BY idx DESC LIMIT 1 OFFSET ?4)",
        )?
        .execute(params![tenant, agent_id, evaluation, int(keep)])?;
    }
    Ok(())
}

fn history_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    Ok((row.get(0)?, row.get(1)?))
}

/// Appends a judged round, with its evidence, and applies the retention; returns its id.
fn write_round(
    conn: &Connection,
    entry: &HistoryEntry,
    evidence: Option<&EvidenceUpdate>,
    retention: &Retention,
) -> Result<u64, StoreError> {
    if let Some(update) = evidence {
        record_evidence(conn, &entry.tenant, &entry.agent_id, update)?;
    }
    let record = serde_json::to_string(entry).map_err(corrupt)?;
    conn.prepare_cached(
        "INSERT INTO attestation_history (tenant, agent_id, at_ms, passed, record)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        entry.tenant,
        entry.agent_id,
        int(entry.at_ms),
        entry.passed,
        record
    ])?;
    let id = conn.last_insert_rowid();
    apply_retention(conn, &entry.tenant, &entry.agent_id, retention)?;
    Ok(id as u64)
}

/// [`write_round`] inside the verdict's transaction, in a savepoint of its own: a history
/// that cannot be written is rolled back alone, and the verdict stands.
pub(super) fn write_round_with_verdict(conn: &Connection, history: &RoundHistory) -> Result<u64, StoreError> {
    conn.execute_batch("SAVEPOINT round_history")?;
    match write_round(
        conn,
        &history.entry,
        history.evidence.as_ref(),
        &history.retention,
    ) {
        Ok(id) => {
            conn.execute_batch("RELEASE round_history")?;
            Ok(id)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO round_history; RELEASE round_history")?;
            Err(e)
        }
    }
}

impl HistoryStore for SqliteStore {
    fn record_round(
        &self,
        entry: &HistoryEntry,
        evidence: Option<&EvidenceUpdate>,
        retention: &Retention,
    ) -> Result<u64, StoreError> {
        let (entry, evidence, retention) = (entry.clone(), evidence.cloned(), *retention);
        self.grouped(move |conn| write_round(conn, &entry, evidence.as_ref(), &retention))
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        use rusqlite::types::Value;
        // Only the conditions asked for, so that an agent's page reads its index.
        let mut conditions = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut add = |condition: &str, value: Value| {
            values.push(value);
            conditions.push(format!("{condition} ?{}", values.len()));
        };
        if let Some(agent) = &query.agent_id {
            add("agent_id =", Value::Text(agent.clone()));
        }
        if let Some(tenant) = &query.tenant {
            add("tenant =", Value::Text(tenant.clone()));
        }
        if let Some(passed) = query.passed {
            add("passed =", Value::Integer(i64::from(passed)));
        }
        if let Some(before) = query.before_id {
            add("id <", Value::Integer(int(before)));
        }
        if let Some(since) = query.since_ms {
            add("at_ms >=", Value::Integer(int(since)));
        }
        if let Some(until) = query.until_ms {
            add("at_ms <", Value::Integer(int(until)));
        }
        conditions.push("1 = 1".into());
        values.push(Value::Integer(int(query.limit)));
        let sql = format!(
            "SELECT id, record FROM attestation_history WHERE {} ORDER BY id DESC LIMIT ?{}",
            conditions.join(" AND "),
            values.len()
        );
        let conn = self.reader()?;
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), history_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, record)| {
                let mut entry: HistoryEntry = serde_json::from_str(&record).map_err(corrupt)?;
                entry.id = id as u64;
                Ok(entry)
            })
            .collect()
    }

    fn recorded_evidence(&self, agent_id: &str) -> Result<Option<RecordedEvidence>, StoreError> {
        let reader = self.reader()?;
        // One read transaction: the writer may commit between these reads.
        let conn = reader.unchecked_transaction()?;
        let found: Option<(String, String)> = conn
            .prepare_cached("SELECT tenant, record FROM agent_evidence WHERE agent_id = ?1")?
            .query_row([agent_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((tenant, record)) = found else {
            return Ok(None);
        };
        let snapshot: EvidenceSnapshot = serde_json::from_str(&record).map_err(corrupt)?;
        let boot_log = match &snapshot.boot_log {
            Some(digest) => conn
                .prepare_cached("SELECT bytes FROM evidence_blobs WHERE digest = ?1")?
                .query_row([digest], |row| row.get(0))
                .optional()?,
            None => None,
        };
        let ima_text = if snapshot.ima_next.is_some() {
            ima_text(&conn, agent_id)?
        } else {
            None
        };
        Ok(Some(RecordedEvidence {
            tenant,
            snapshot,
            ima_text,
            boot_log,
        }))
    }

    fn swap_policy(
        &self,
        kind: PolicyKind,
        tenant: &str,
        record: &PolicyRecord,
        expected_checksum: &str,
    ) -> Result<Swap, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let swapped = replace_policy(&tx, kind, tenant, record, Some(expected_checksum))?;
        tx.commit()?;
        Ok(swapped)
    }

    fn policy_versions(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<PolicyVersion>, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(&format!(
            "SELECT version, checksum, module, NULL FROM {} WHERE tenant = ?1 AND name = ?2
             UNION ALL
             SELECT version, checksum, module, replaced_at FROM policy_versions
             WHERE kind = ?3 AND tenant = ?1 AND name = ?2
             ORDER BY 1 DESC",
            kind.table()
        ))?;
        let versions = statement
            .query_map(params![tenant, name, kind.name()], |row| {
                Ok(PolicyVersion {
                    version: row.get::<_, i64>(0)? as u64,
                    checksum: row.get(1)?,
                    module: row.get(2)?,
                    replaced_at: row.get::<_, Option<i64>>(3)?.map(|t| t as u64),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(versions)
    }

    fn policy_version(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .prepare_cached(
                "SELECT name, module, document, checksum, generator FROM policy_versions
                 WHERE kind = ?1 AND tenant = ?2 AND name = ?3 AND version = ?4",
            )?
            .query_row(params![kind.name(), tenant, name, int(version)], |row| {
                super::sqlite_verifier::policy_row(kind, row)
            })
            .optional()?)
    }
}
