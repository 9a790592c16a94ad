//! The verifier's records in the SQLite store.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::history::{RoundHistory, RoundSaved};
use super::verifier::{
    AgentState, AttestationHead, EnrolOutcome, ModuleDelete, ModuleRecord, ModuleWrite, PolicyDelete,
    PolicyKind, PolicyRecord, PolicyWrite, PushAttestation, PushSession, TenantQuota, TenantUsage,
    VerifierAgent, VerifierStore,
};
use super::{SqliteStore, StoreError};

fn to_json(agent: &VerifierAgent) -> Result<String, StoreError> {
    serde_json::to_string(agent).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json(text: &str) -> Result<VerifierAgent, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A stored record with the lease owner its row holds.
fn from_row(text: &str, lease_owner: Option<String>) -> Result<VerifierAgent, StoreError> {
    Ok(VerifierAgent {
        lease_owner,
        ..from_json(text)?
    })
}

/// The record of a round, unless the stored one moved on since the round read it: another
/// revision (re-enrolled, updated) or another state (stopped).
/// A saved verdict's history, written in its transaction.
fn with_history(conn: &rusqlite::Connection, saved: bool, history: Option<&RoundHistory>) -> RoundSaved {
    RoundSaved {
        saved,
        history: history
            .filter(|_| saved)
            .map(|h| super::sqlite_history::write_round_with_verdict(conn, h)),
    }
}

fn save_round(
    conn: &rusqlite::Connection,
    agent_id: &str,
    record: &str,
    revision: i64,
    from_state: i64,
    lease_owner: Option<&str>,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE verifier_agents SET record = ?2
             WHERE agent_id = ?1
               AND IFNULL(json_extract(record, '$.revision'), 0) = ?3
               AND json_extract(record, '$.operational_state') = ?4
               AND lease_owner IS ?5",
        )?
        .execute(params![agent_id, record, revision, from_state, lease_owner])?;
    Ok(changed > 0)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every agent's schedule: ids, states and lease owners, without whole records.
fn states(conn: &rusqlite::Connection) -> Result<Vec<AgentState>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT agent_id, json_extract(record, '$.operational_state'),
                IFNULL(json_extract(record, '$.push'), 0),
                IFNULL(json_extract(record, '$.polls_after_failure'), 0), tenant, lease_owner
         FROM verifier_agents",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(AgentState {
            agent_id: row.get(0)?,
            operational_state: row.get(1)?,
            push: row.get::<_, i64>(2)? != 0,
            polls_after_failure: row.get::<_, i64>(3)? != 0,
            tenant: row.get(4)?,
            lease_owner: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A tenant's holdings, read inside the caller's transaction (so a quota check and the
/// write it guards see the same counts).
fn usage(conn: &rusqlite::Connection, tenant: &str) -> Result<TenantUsage, StoreError> {
    let count = |sql: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.prepare_cached(sql)?.query_row([tenant], |row| row.get(0))?;
        Ok(n.max(0) as u64)
    };
    Ok(TenantUsage {
        agents: count("SELECT count(*) FROM verifier_agents WHERE tenant = ?1")?,
        policies: count("SELECT count(*) FROM runtime_policies WHERE tenant = ?1")?
            + count("SELECT count(*) FROM mb_policies WHERE tenant = ?1")?,
        components: count("SELECT count(*) FROM policy_modules WHERE tenant = ?1")?,
    })
}

pub(super) fn policy_row(kind: PolicyKind, row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRecord> {
    let _ = kind;
    Ok(PolicyRecord {
        name: row.get(0)?,
        module: row.get(1)?,
        document: row.get(2)?,
        checksum: row.get(3)?,
        generator: row.get(4)?,
    })
}

fn insert_policy(
    conn: &rusqlite::Connection,
    kind: PolicyKind,
    tenant: &str,
    r: &PolicyRecord,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!(
        "INSERT INTO {} (tenant, name, module, document, checksum, generator)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant, name) DO NOTHING",
        kind.table()
    ))?
    .execute(params![
        tenant,
        r.name,
        r.module,
        r.document,
        r.checksum,
        r.generator
    ])
}

impl VerifierStore for SqliteStore {
    fn put_policy(
        &self,
        kind: PolicyKind,
        tenant: &str,
        r: &PolicyRecord,
        create_only: bool,
        quota: &TenantQuota,
    ) -> Result<PolicyWrite, StoreError> {
        let mut conn = self.conn()?;
        if create_only {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = tx
                .prepare_cached(&format!(
                    "SELECT 1 FROM {} WHERE tenant = ?1 AND name = ?2",
                    kind.table()
                ))?
                .query_row(params![tenant, r.name], |_| Ok(()))
                .optional()?
                .is_some();
            if exists {
                return Ok(PolicyWrite::Exists);
            }
            if usage(&tx, tenant)?.policies >= quota.policies {
                return Ok(PolicyWrite::QuotaExceeded);
            }
            let written = match insert_policy(&tx, kind, tenant, r)? {
                0 => PolicyWrite::Exists,
                _ => PolicyWrite::Done,
            };
            tx.commit()?;
            return Ok(written);
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let replaced = super::sqlite_history::replace_policy(&tx, kind, tenant, r, None)?;
        tx.commit()?;
        Ok(match replaced {
            super::history::Swap::NotFound => PolicyWrite::NotFound,
            _ => PolicyWrite::Done,
        })
    }

    fn policy(&self, kind: PolicyKind, tenant: &str, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .prepare_cached(&format!(
                "SELECT name, module, document, checksum, generator FROM {}
                     WHERE tenant = ?1 AND name = ?2",
                kind.table()
            ))?
            .query_row(params![tenant, name], |row| policy_row(kind, row))
            .optional()?)
    }

    fn policy_info(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let conn = self.conn()?;
        // length() needs only the record header, not the pages of a megabyte document.
        Ok(conn
            .prepare_cached(&format!(
                "SELECT name, module, length(document) IS NOT NULL, checksum, generator FROM {}
                     WHERE tenant = ?1 AND name = ?2",
                kind.table()
            ))?
            .query_row(params![tenant, name], |row| {
                Ok(PolicyRecord {
                    name: row.get(0)?,
                    module: row.get(1)?,
                    document: row.get::<_, bool>(2)?.then(Vec::new),
                    checksum: row.get(3)?,
                    generator: row.get(4)?,
                })
            })
            .optional()?)
    }

    fn policy_names(
        &self,
        kind: PolicyKind,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT tenant, name FROM {} WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name",
            kind.table()
        ))?;
        let names = stmt
            .query_map([tenant], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<(String, String)>, _>>()?;
        Ok(names)
    }

    fn delete_policy(&self, kind: PolicyKind, tenant: &str, name: &str) -> Result<PolicyDelete, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let in_use = tx
            .prepare_cached(&format!(
                "SELECT 1 FROM verifier_agents WHERE tenant = ?1 AND {} = ?2 LIMIT 1",
                kind.agent_column()
            ))?
            .query_row(params![tenant, name], |_| Ok(()))
            .optional()?
            .is_some();
        if in_use {
            return Ok(PolicyDelete::InUse);
        }
        let deleted = tx
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE tenant = ?1 AND name = ?2",
                kind.table()
            ))?
            .execute(params![tenant, name])?;
        super::sqlite_history::drop_orphan_versions(&tx, kind, tenant)?;
        tx.commit()?;
        Ok(if deleted == 0 {
            PolicyDelete::NotFound
        } else {
            PolicyDelete::Deleted
        })
    }

    fn enrol(
        &self,
        agent: &VerifierAgent,
        new_policies: &[(PolicyKind, PolicyRecord)],
        quota: &TenantQuota,
    ) -> Result<EnrolOutcome, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM verifier_agents WHERE agent_id = ?1")?
            .query_row([&agent.agent_id], |_| Ok(()))
            .optional()?
            .is_some();
        if exists {
            return Ok(EnrolOutcome::AgentExists);
        }
        let held = usage(&tx, &agent.tenant)?;
        if held.agents >= quota.agents {
            return Ok(EnrolOutcome::QuotaExceeded("agents"));
        }
        if held.policies + new_policies.len() as u64 > quota.policies {
            return Ok(EnrolOutcome::QuotaExceeded("policies"));
        }
        for (kind, record) in new_policies {
            if insert_policy(&tx, *kind, &agent.tenant, record)? == 0 {
                return Ok(EnrolOutcome::PolicyExists(*kind));
            }
        }
        for (kind, name) in [
            (PolicyKind::Runtime, &agent.runtime_policy),
            (PolicyKind::MeasuredBoot, &agent.mb_policy),
        ] {
            let found = tx
                .prepare_cached(&format!(
                    "SELECT 1 FROM {} WHERE tenant = ?1 AND name = ?2",
                    kind.table()
                ))?
                .query_row(params![agent.tenant, name], |_| Ok(()))
                .optional()?
                .is_some();
            if !found {
                return Ok(EnrolOutcome::PolicyMissing(kind));
            }
        }
        tx.prepare_cached(
            "INSERT INTO verifier_agents (tenant, agent_id, runtime_policy, mb_policy, record)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            agent.tenant,
            agent.agent_id,
            agent.runtime_policy,
            agent.mb_policy,
            to_json(agent)?
        ])?;
        tx.commit()?;
        Ok(EnrolOutcome::Enrolled)
    }

    fn agent(&self, agent_id: &str) -> Result<Option<VerifierAgent>, StoreError> {
        let conn = self.conn()?;
        let row: Option<(String, Option<String>)> = conn
            .prepare_cached("SELECT record, lease_owner FROM verifier_agents WHERE agent_id = ?1")?
            .query_row([agent_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        row.map(|(text, owner)| from_row(&text, owner)).transpose()
    }

    fn agents(&self) -> Result<Vec<VerifierAgent>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT record, lease_owner FROM verifier_agents ORDER BY agent_id")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|(t, owner)| from_row(&t, owner)).collect()
    }

    fn agent_states(&self) -> Result<Vec<AgentState>, StoreError> {
        let conn = self.conn()?;
        states(&conn)
    }

    fn lease_agents(
        &self,
        me: &str,
        now_ms: u64,
        lease_ms: u64,
        take: u64,
    ) -> Result<Vec<AgentState>, StoreError> {
        let (me, now, until) = (
            me.to_owned(),
            signed(now_ms),
            signed(now_ms.saturating_add(lease_ms)),
        );
        let take = signed(take);
        self.grouped(move |conn| {
            conn.prepare_cached(
                "INSERT INTO verifier_leases (verifier_id, alive_until) VALUES (?1, ?2)
                 ON CONFLICT (verifier_id) DO UPDATE SET alive_until = excluded.alive_until",
            )?
            .execute(params![me, until])?;
            conn.prepare_cached(
                "UPDATE verifier_agents SET lease_owner = ?1
                 WHERE agent_id IN (
                     SELECT agent_id FROM verifier_agents
                     WHERE (lease_owner IS NULL OR lease_owner NOT IN
                            (SELECT verifier_id FROM verifier_leases WHERE alive_until > ?2))
                       AND NOT IFNULL(json_extract(record, '$.push'), 0)
                     ORDER BY agent_id LIMIT ?3)",
            )?
            .execute(params![me, now, take])?;
            states(conn)
        })
    }

    fn update_agent(&self, agent: &VerifierAgent, unless_states: &[i64]) -> Result<bool, StoreError> {
        let blocked = serde_json::to_string(unless_states).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (agent_id, record) = (agent.agent_id.clone(), to_json(agent)?);
        self.grouped(move |conn| {
            // The state guard reads the stored record: a stop or delete that landed meanwhile wins.
            let changed = conn
                .prepare_cached(
                    "UPDATE verifier_agents SET record = ?2
                 WHERE agent_id = ?1
                   AND json_extract(record, '$.operational_state') NOT IN (SELECT value FROM json_each(?3))",
                )?
                .execute(params![agent_id, record, blocked])?;
            Ok(changed > 0)
        })
    }

    fn save_round(
        &self,
        agent: &VerifierAgent,
        from_state: i64,
        history: Option<RoundHistory>,
    ) -> Result<RoundSaved, StoreError> {
        let (agent_id, record) = (agent.agent_id.clone(), to_json(agent)?);
        let revision = i64::try_from(agent.revision).unwrap_or(-1);
        let owner = agent.lease_owner.clone();
        self.grouped(move |conn| {
            let saved = save_round(conn, &agent_id, &record, revision, from_state, owner.as_deref())?;
            Ok(with_history(conn, saved, history.as_ref()))
        })
    }

    fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let tenant: Option<String> = tx
            .prepare_cached("SELECT tenant FROM verifier_agents WHERE agent_id = ?1")?
            .query_row([agent_id], |row| row.get(0))
            .optional()?;
        let deleted = tx
            .prepare_cached("DELETE FROM verifier_agents WHERE agent_id = ?1")?
            .execute([agent_id])?;
        if let Some(tenant) = tenant.filter(|_| deleted > 0) {
            // A re-enrolled agent starts clean: its old token and attestations go with it.
            // Both tables are keyed by (tenant, agent_id): naming the tenant deletes by key
            // instead of scanning every agent's attestations.
            tx.prepare_cached("DELETE FROM push_sessions WHERE tenant = ?1 AND agent_id = ?2")?
                .execute(params![tenant, agent_id])?;
            tx.prepare_cached("DELETE FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2")?
                .execute(params![tenant, agent_id])?;
            // Keylime names an agent's policies after it when no name was given.
            for kind in [PolicyKind::Runtime, PolicyKind::MeasuredBoot] {
                tx.prepare_cached(&format!(
                    "DELETE FROM {} WHERE tenant = ?1 AND name = ?2
                         AND NOT EXISTS (SELECT 1 FROM verifier_agents WHERE tenant = ?1 AND {} = ?2)",
                    kind.table(),
                    kind.agent_column()
                ))?
                .execute(params![tenant, agent_id])?;
                super::sqlite_history::drop_orphan_versions(&tx, kind, &tenant)?;
            }
        }
        super::sqlite_history::forget_agent(&tx, agent_id)?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    fn put_module(
        &self,
        tenant: &str,
        record: &ModuleRecord,
        bytes: &[u8],
        quota: &TenantQuota,
    ) -> Result<ModuleWrite, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM policy_modules WHERE tenant = ?1 AND id = ?2")?
            .query_row(params![tenant, record.id], |_| Ok(()))
            .optional()?
            .is_some();
        if exists {
            return Ok(ModuleWrite::Exists);
        }
        if usage(&tx, tenant)?.components >= quota.components {
            return Ok(ModuleWrite::QuotaExceeded);
        }
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO policy_modules (tenant, id, kind, bytes, uploaded_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                tenant,
                record.id,
                record.kind.name(),
                bytes,
                record.uploaded_at as i64
            ])?;
        tx.commit()?;
        Ok(if inserted == 1 {
            ModuleWrite::Created
        } else {
            ModuleWrite::Exists
        })
    }

    fn quota(&self, tenant: &str) -> Result<Option<TenantQuota>, StoreError> {
        let text: Option<String> = self
            .conn()?
            .prepare_cached("SELECT quota FROM tenant_quotas WHERE tenant = ?1")?
            .query_row([tenant], |row| row.get(0))
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("quota of {tenant}: {e}")))
        })
        .transpose()
    }

    fn quotas(&self) -> Result<Vec<(String, TenantQuota)>, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare("SELECT tenant, quota FROM tenant_quotas ORDER BY tenant")?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(tenant, text)| {
                let quota = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("quota of {tenant}: {e}")))?;
                Ok((tenant, quota))
            })
            .collect()
    }

    fn put_quota(&self, tenant: &str, quota: Option<&TenantQuota>) -> Result<(), StoreError> {
        let conn = self.conn()?;
        match quota {
            Some(quota) => {
                let text = serde_json::to_string(quota).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                conn.prepare_cached(
                    "INSERT INTO tenant_quotas (tenant, quota) VALUES (?1, ?2)
                     ON CONFLICT (tenant) DO UPDATE SET quota = excluded.quota",
                )?
                .execute(params![tenant, text])?;
            }
            None => {
                conn.prepare_cached("DELETE FROM tenant_quotas WHERE tenant = ?1")?
                    .execute([tenant])?;
            }
        }
        Ok(())
    }

    fn tenant_usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        let conn = self.conn()?;
        usage(&conn, tenant)
    }

    fn module(&self, tenant: &str, id: &str) -> Result<Option<(ModuleRecord, Vec<u8>)>, StoreError> {
        let conn = self.conn()?;
        let row = conn
            .prepare_cached(
                "SELECT kind, bytes, uploaded_at FROM policy_modules WHERE tenant = ?1 AND id = ?2",
            )?
            .query_row(params![tenant, id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        row.map(|(kind, bytes, uploaded_at)| {
            let kind = PolicyKind::from_name(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("module kind {kind}")))?;
            Ok((
                ModuleRecord {
                    id: id.to_owned(),
                    kind,
                    size: bytes.len() as u64,
                    uploaded_at: uploaded_at.max(0) as u64,
                },
                bytes,
            ))
        })
        .transpose()
    }

    fn modules(&self, tenant: Option<&str>) -> Result<Vec<(String, ModuleRecord)>, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare(
            "SELECT tenant, id, kind, length(bytes), uploaded_at FROM policy_modules
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, id",
        )?;
        let rows = statement.query_map(params![tenant], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (tenant, id, kind, size, uploaded_at) = row?;
            let kind = PolicyKind::from_name(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("module kind {kind}")))?;
            Ok((
                tenant,
                ModuleRecord {
                    id,
                    kind,
                    size: size.max(0) as u64,
                    uploaded_at: uploaded_at.max(0) as u64,
                },
            ))
        })
        .collect()
    }

    fn delete_module(&self, tenant: &str, id: &str) -> Result<ModuleDelete, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut users = Vec::new();
        for kind in [PolicyKind::Runtime, PolicyKind::MeasuredBoot] {
            let mut statement = tx.prepare(&format!(
                "SELECT name FROM {} WHERE tenant = ?1 AND module = ?2 ORDER BY name",
                kind.table()
            ))?;
            let names = statement.query_map(params![tenant, id], |row| row.get::<_, String>(0))?;
            for name in names {
                users.push(format!("{} policy {}", kind.name(), name?));
            }
        }
        if !users.is_empty() {
            return Ok(ModuleDelete::InUse(users));
        }
        let deleted = tx
            .prepare_cached("DELETE FROM policy_modules WHERE tenant = ?1 AND id = ?2")?
            .execute(params![tenant, id])?;
        tx.commit()?;
        Ok(if deleted == 0 {
            ModuleDelete::NotFound
        } else {
            ModuleDelete::Deleted
        })
    }

    fn put_session(&self, session: &PushSession) -> Result<(), StoreError> {
        let session = session.clone();
        self.grouped(move |conn| {
            // One session per agent, whichever tenant an older one was of.
            conn.prepare_cached("DELETE FROM push_sessions WHERE agent_id = ?1")?
                .execute(params![session.agent_id])?;
            conn.prepare_cached(
                "INSERT INTO push_sessions (session_id, tenant, agent_id, token_salt, token_hash, token_expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                session.session_id,
                session.tenant,
                session.agent_id,
                session.token_salt,
                session.token_hash,
                session.token_expires_at as i64
            ])?;
            Ok(())
        })
    }

    fn claim_session(&self, session_id: &str, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        let (session_id, expires_at, now) = (session_id.to_owned(), signed(expires_at), signed(now));
        self.grouped(move |conn| {
            conn.prepare_cached("DELETE FROM push_claimed_sessions WHERE expires_at < ?1")?
                .execute([now])?;
            let claimed = conn
                .prepare_cached(
                    "INSERT INTO push_claimed_sessions (session_id, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (session_id) DO NOTHING",
                )?
                .execute(params![session_id, expires_at])?;
            Ok(claimed == 1)
        })
    }

    fn shared_secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError::Io("no randomness".into()))?;
        let conn = self.conn()?;
        conn.prepare_cached(
            "INSERT INTO verifier_secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, fresh.as_slice()])?;
        Ok(conn
            .prepare_cached("SELECT value FROM verifier_secrets WHERE name = ?1")?
            .query_row([name], |row| row.get(0))?)
    }

    fn session(&self, session_id: &str) -> Result<Option<PushSession>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .prepare_cached(
                "SELECT agent_id, token_salt, token_hash, token_expires_at, tenant FROM push_sessions
                 WHERE session_id = ?1",
            )?
            .query_row(params![session_id], |row| {
                Ok(PushSession {
                    session_id: session_id.to_owned(),
                    agent_id: row.get(0)?,
                    token_salt: row.get(1)?,
                    token_hash: row.get(2)?,
                    token_expires_at: row.get::<_, i64>(3)?.max(0) as u64,
                    tenant: row.get(4)?,
                })
            })
            .optional()?)
    }

    fn add_attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        record: &PushAttestation,
    ) -> Result<u64, StoreError> {
        let (tenant, agent_id, mut record) = (tenant.to_owned(), agent_id.to_owned(), record.clone());
        self.grouped(move |conn| {
            let next: i64 = conn
                .prepare_cached(
                    "SELECT coalesce(max(idx) + 1, 0) FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2",
                )?
                .query_row(params![tenant, agent_id], |row| row.get(0))?;
            record.index = next as u64;
            let text = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO push_attestations (tenant, agent_id, idx, record) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![tenant, agent_id, next, text])?;
            Ok(next as u64)
        })
    }

    fn update_attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        record: &PushAttestation,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (tenant, agent_id, index) = (tenant.to_owned(), agent_id.to_owned(), record.index as i64);
        self.grouped(move |conn| {
            conn.prepare_cached(
                "UPDATE push_attestations SET record = ?4 WHERE tenant = ?1 AND agent_id = ?2 AND idx = ?3",
            )?
            .execute(params![tenant, agent_id, index, text])?;
            Ok(())
        })
    }

    fn save_push_verdict(
        &self,
        agent: &VerifierAgent,
        from_state: i64,
        extend_session: Option<(&str, u64)>,
        attestation: &PushAttestation,
        history: Option<RoundHistory>,
    ) -> Result<RoundSaved, StoreError> {
        let (tenant, agent_id, record) = (agent.tenant.clone(), agent.agent_id.clone(), to_json(agent)?);
        let revision = i64::try_from(agent.revision).unwrap_or(-1);
        let owner = agent.lease_owner.clone();
        let extend_session = extend_session.map(|(id, expires)| (id.to_owned(), expires as i64));
        let (index, received_at) = (
            attestation.index as i64,
            attestation.capabilities_received_at as i64,
        );
        let text = serde_json::to_string(attestation).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.grouped(move |conn| {
            let saved = save_round(conn, &agent_id, &record, revision, from_state, owner.as_deref())?;
            if saved && let Some((session_id, expires)) = extend_session {
                conn.prepare_cached(
                    "UPDATE push_sessions SET token_expires_at = ?3 WHERE tenant = ?1 AND session_id = ?2",
                )?
                .execute(params![tenant, session_id, expires])?;
            }
            conn.prepare_cached(
                "UPDATE push_attestations SET record = ?4
                 WHERE tenant = ?1 AND agent_id = ?2 AND idx = ?3
                   AND IFNULL(json_extract(record, '$.capabilities_received_at'), 0) = ?5",
            )?
            .execute(params![tenant, agent_id, index, text, received_at])?;
            Ok(with_history(conn, saved, history.as_ref()))
        })
    }

    fn attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        index: Option<u64>,
    ) -> Result<Option<PushAttestation>, StoreError> {
        let conn = self.conn()?;
        let text: Option<String> = match index {
            Some(i) => conn
                .prepare_cached(
                    "SELECT record FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2 AND idx = ?3",
                )?
                .query_row(params![tenant, agent_id, i as i64], |row| row.get(0))
                .optional()?,
            None => conn
                .prepare_cached(
                    "SELECT record FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2
                     ORDER BY idx DESC LIMIT 1",
                )?
                .query_row(params![tenant, agent_id], |row| row.get(0))
                .optional()?,
        };
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    fn attestation_head(
        &self,
        tenant: &str,
        agent_id: &str,
        index: Option<u64>,
    ) -> Result<Option<AttestationHead>, StoreError> {
        let conn = self.conn()?;
        // json_extract reads the few fields needed without building the evidence.
        let columns =
            "idx, json_extract(record, '$.stage'), json_extract(record, '$.capabilities_received_at'),
                       json_extract(record, '$.evidence_received_at')";
        let row = |row: &rusqlite::Row<'_>| {
            Ok(AttestationHead {
                index: row.get::<_, i64>(0)?.max(0) as u64,
                stage: row.get(1)?,
                capabilities_received_at: row.get::<_, i64>(2)?.max(0) as u64,
                evidence_received_at: row.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
            })
        };
        Ok(match index {
            Some(i) => conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2 AND idx = ?3"
                ))?
                .query_row(params![tenant, agent_id, i as i64], row)
                .optional()?,
            None => conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2
                     ORDER BY idx DESC LIMIT 1"
                ))?
                .query_row(params![tenant, agent_id], row)
                .optional()?,
        })
    }

    fn attestations(&self, tenant: &str, agent_id: &str) -> Result<Vec<PushAttestation>, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare(
            "SELECT record FROM push_attestations WHERE tenant = ?1 AND agent_id = ?2 ORDER BY idx",
        )?;
        let rows = statement.query_map(params![tenant, agent_id], |row| row.get::<_, String>(0))?;
        rows.map(|text| serde_json::from_str(&text?).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
}
