//! The verifier's records in the PostgreSQL store: the same rules as the SQLite store's,
//! with row conditions and advisory locks where several verifiers may write at once.

use postgres::{GenericClient, Row, Transaction};

use super::StoreError;
use super::history::{RoundHistory, RoundSaved};
use super::postgres::{Lock, PgStore, Prepared, lock};
use super::verifier::{
    AgentState, AttestationHead, EnrolOutcome, ModuleDelete, ModuleRecord, ModuleWrite, PolicyDelete,
    PolicyKind, PolicyRecord, PolicyWrite, PushAttestation, PushSession, TenantQuota, TenantUsage,
    VerifierAgent, VerifierStore,
};

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An agent row (`record::text, lease_owner`).
fn agent_row(row: &Row) -> Result<VerifierAgent, StoreError> {
    Ok(VerifierAgent {
        lease_owner: row.try_get(1)?,
        ..from_json(&row.try_get::<_, String>(0)?)?
    })
}

/// Every agent's schedule: ids, states and lease owners, without whole records.
fn states(client: &mut impl GenericClient) -> Result<Vec<AgentState>, StoreError> {
    client
        .query_prepared(
            "SELECT agent_id, (record->>'operational_state')::bigint,
                    COALESCE((record->>'push')::boolean, false),
                    COALESCE((record->>'polls_after_failure')::boolean, false), tenant, lease_owner
             FROM verifier_agents",
            &[],
        )?
        .iter()
        .map(|row| {
            Ok(AgentState {
                agent_id: row.try_get(0)?,
                operational_state: row.try_get(1)?,
                push: row.try_get(2)?,
                polls_after_failure: row.try_get(3)?,
                tenant: row.try_get(4)?,
                lease_owner: row.try_get(5)?,
            })
        })
        .collect()
}

fn unsigned(n: i64) -> u64 {
    n.max(0) as u64
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The record of a round, unless the stored one moved on since the round read it: another
/// revision (re-enrolled, updated) or another state (stopped).
/// A saved verdict's history, written in its transaction.
fn with_history(tx: &mut Transaction<'_>, saved: bool, history: &RoundHistory) -> RoundSaved {
    RoundSaved {
        saved,
        history: saved.then(|| super::postgres_history::write_round_with_verdict(tx, history)),
    }
}

fn save_round(
    client: &mut impl GenericClient,
    agent_id: &str,
    record: &str,
    revision: i64,
    from_state: i64,
    lease_owner: Option<&str>,
) -> Result<bool, StoreError> {
    let changed = client.execute_prepared(
        "UPDATE verifier_agents SET record = ($2::text)::jsonb
         WHERE agent_id = $1
           AND COALESCE((record->>'revision')::bigint, 0) = $3
           AND (record->>'operational_state')::bigint = $4
           AND lease_owner IS NOT DISTINCT FROM $5",
        &[&agent_id, &record, &revision, &from_state, &lease_owner],
    )?;
    Ok(changed > 0)
}

/// A tenant's holdings, read inside the caller's transaction.
fn usage(client: &mut impl GenericClient, tenant: &str) -> Result<TenantUsage, StoreError> {
    let row = client.query_one_prepared(
        "SELECT (SELECT count(*) FROM verifier_agents WHERE tenant = $1),
                (SELECT count(*) FROM runtime_policies WHERE tenant = $1)
                  + (SELECT count(*) FROM mb_policies WHERE tenant = $1),
                (SELECT count(*) FROM policy_modules WHERE tenant = $1)",
        &[&tenant],
    )?;
    Ok(TenantUsage {
        agents: unsigned(row.try_get(0)?),
        policies: unsigned(row.try_get(1)?),
        components: unsigned(row.try_get(2)?),
    })
}

pub(super) fn policy_row(row: &Row) -> Result<PolicyRecord, StoreError> {
    Ok(PolicyRecord {
        name: row.try_get(0)?,
        module: row.try_get(1)?,
        document: row.try_get(2)?,
        checksum: row.try_get(3)?,
        generator: row.try_get(4)?,
    })
}

fn insert_policy(
    client: &mut impl GenericClient,
    kind: PolicyKind,
    tenant: &str,
    r: &PolicyRecord,
) -> Result<u64, StoreError> {
    Ok(client.execute_prepared(
        &format!(
            "INSERT INTO {} (tenant, name, module, document, checksum, generator)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, name) DO NOTHING",
            kind.table()
        ),
        &[
            &tenant,
            &r.name,
            &r.module,
            &r.document,
            &r.checksum,
            &r.generator,
        ],
    )?)
}

fn exists(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<bool, StoreError> {
    Ok(client.query_opt_prepared(sql, params)?.is_some())
}

fn attestation_json(record: &PushAttestation) -> Result<String, StoreError> {
    to_json(record)
}

impl VerifierStore for PgStore {
    fn put_policy(
        &self,
        kind: PolicyKind,
        tenant: &str,
        r: &PolicyRecord,
        create_only: bool,
        quota: &TenantQuota,
    ) -> Result<PolicyWrite, StoreError> {
        let (tenant, r, policies) = (tenant.to_owned(), r.clone(), quota.policies);
        if create_only {
            return self.transaction(move |tx| {
                lock(tx, Lock::Tenant, &tenant)?;
                let sql = format!("SELECT 1 FROM {} WHERE tenant = $1 AND name = $2", kind.table());
                if exists(tx, &sql, &[&tenant, &r.name])? {
                    return Ok(PolicyWrite::Exists);
                }
                if usage(tx, &tenant)?.policies >= policies {
                    return Ok(PolicyWrite::QuotaExceeded);
                }
                Ok(match insert_policy(tx, kind, &tenant, &r)? {
                    0 => PolicyWrite::Exists,
                    _ => PolicyWrite::Done,
                })
            });
        }
        self.transaction(move |tx| {
            Ok(
                match super::postgres_history::replace_policy(tx, kind, &tenant, &r, None)? {
                    super::history::Swap::NotFound => PolicyWrite::NotFound,
                    _ => PolicyWrite::Done,
                },
            )
        })
    }

    fn policy(&self, kind: PolicyKind, tenant: &str, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.run(move |client| {
            client
                .query_opt_prepared(
                    &format!(
                        "SELECT name, module, document, checksum, generator FROM {}
                         WHERE tenant = $1 AND name = $2",
                        kind.table()
                    ),
                    &[&tenant, &name],
                )?
                .as_ref()
                .map(policy_row)
                .transpose()
        })
    }

    fn policy_info(
        &self,
        kind: PolicyKind,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.run(move |client| {
            let Some(row) = client.query_opt_prepared(
                &format!(
                    "SELECT name, module, document IS NOT NULL, checksum, generator FROM {}
                     WHERE tenant = $1 AND name = $2",
                    kind.table()
                ),
                &[&tenant, &name],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(PolicyRecord {
                name: row.try_get(0)?,
                module: row.try_get(1)?,
                document: row.try_get::<_, bool>(2)?.then(Vec::new),
                checksum: row.try_get(3)?,
                generator: row.try_get(4)?,
            }))
        })
    }

    fn policy_names(
        &self,
        kind: PolicyKind,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.run(move |client| {
            client
                .query_prepared(
                    &format!(
                        "SELECT tenant, name FROM {} WHERE $1::text IS NULL OR tenant = $1
                         ORDER BY tenant, name",
                        kind.table()
                    ),
                    &[&tenant],
                )?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
    }

    fn delete_policy(&self, kind: PolicyKind, tenant: &str, name: &str) -> Result<PolicyDelete, StoreError> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.transaction(move |tx| {
            // An enrolment naming this policy waits, or is waited for.
            lock(tx, Lock::Tenant, &tenant)?;
            let sql = format!(
                "SELECT 1 FROM verifier_agents WHERE tenant = $1 AND {} = $2 LIMIT 1",
                kind.agent_column()
            );
            if exists(tx, &sql, &[&tenant, &name])? {
                return Ok(PolicyDelete::InUse);
            }
            let deleted = tx.execute_prepared(
                &format!("DELETE FROM {} WHERE tenant = $1 AND name = $2", kind.table()),
                &[&tenant, &name],
            )?;
            super::postgres_history::drop_orphan_versions(tx, kind, &tenant)?;
            Ok(if deleted == 0 {
                PolicyDelete::NotFound
            } else {
                PolicyDelete::Deleted
            })
        })
    }

    fn enrol(
        &self,
        agent: &VerifierAgent,
        new_policies: &[(PolicyKind, PolicyRecord)],
        quota: &TenantQuota,
    ) -> Result<EnrolOutcome, StoreError> {
        let (agent, new_policies, quota) = (agent.clone(), new_policies.to_vec(), *quota);
        let record = to_json(&agent)?;
        self.transaction(move |tx| {
            lock(tx, Lock::Tenant, &agent.tenant)?;
            lock(tx, Lock::Agent, &agent.agent_id)?;
            if exists(
                tx,
                "SELECT 1 FROM verifier_agents WHERE agent_id = $1",
                &[&agent.agent_id],
            )? {
                return Ok(EnrolOutcome::AgentExists);
            }
            let held = usage(tx, &agent.tenant)?;
            if held.agents >= quota.agents {
                return Ok(EnrolOutcome::QuotaExceeded("agents"));
            }
            if held.policies + new_policies.len() as u64 > quota.policies {
                return Ok(EnrolOutcome::QuotaExceeded("policies"));
            }
            // Checked before anything is written: every outcome but `Enrolled` writes nothing.
            for (kind, policy) in &new_policies {
                let sql = format!("SELECT 1 FROM {} WHERE tenant = $1 AND name = $2", kind.table());
                if exists(tx, &sql, &[&agent.tenant, &policy.name])? {
                    return Ok(EnrolOutcome::PolicyExists(*kind));
                }
            }
            for (kind, name) in [
                (PolicyKind::Runtime, &agent.runtime_policy),
                (PolicyKind::MeasuredBoot, &agent.mb_policy),
            ] {
                let sql = format!("SELECT 1 FROM {} WHERE tenant = $1 AND name = $2", kind.table());
                let brought = new_policies.iter().any(|(k, p)| *k == kind && &p.name == name);
                if !brought && !exists(tx, &sql, &[&agent.tenant, name])? {
                    return Ok(EnrolOutcome::PolicyMissing(kind));
                }
            }
            for (kind, policy) in &new_policies {
                insert_policy(tx, *kind, &agent.tenant, policy)?;
            }
            tx.execute_prepared(
                "INSERT INTO verifier_agents (tenant, agent_id, runtime_policy, mb_policy, record)
                 VALUES ($1, $2, $3, $4, ($5::text)::jsonb)",
                &[
                    &agent.tenant,
                    &agent.agent_id,
                    &agent.runtime_policy,
                    &agent.mb_policy,
                    &record,
                ],
            )?;
            Ok(EnrolOutcome::Enrolled)
        })
    }

    fn agent(&self, agent_id: &str) -> Result<Option<VerifierAgent>, StoreError> {
        let agent_id = agent_id.to_owned();
        self.run(move |client| {
            client
                .query_opt_prepared(
                    "SELECT record::text, lease_owner FROM verifier_agents WHERE agent_id = $1",
                    &[&agent_id],
                )?
                .as_ref()
                .map(agent_row)
                .transpose()
        })
    }

    fn agents(&self) -> Result<Vec<VerifierAgent>, StoreError> {
        self.run(|client| {
            client
                .query_prepared(
                    "SELECT record::text, lease_owner FROM verifier_agents ORDER BY agent_id",
                    &[],
                )?
                .iter()
                .map(agent_row)
                .collect()
        })
    }

    fn agent_states(&self) -> Result<Vec<AgentState>, StoreError> {
        self.run(states)
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
        self.transaction(move |tx| {
            tx.execute_prepared(
                "INSERT INTO verifier_leases (verifier_id, alive_until) VALUES ($1, $2)
                 ON CONFLICT (verifier_id) DO UPDATE SET alive_until = excluded.alive_until",
                &[&me, &until],
            )?;
            // Rows another verifier is taking right now are skipped, not waited for: each
            // agent goes to one verifier.
            tx.execute_prepared(
                "UPDATE verifier_agents SET lease_owner = $1
                 WHERE agent_id IN (
                     SELECT agent_id FROM verifier_agents
                     WHERE (lease_owner IS NULL OR lease_owner NOT IN
                            (SELECT verifier_id FROM verifier_leases WHERE alive_until > $2))
                       AND NOT COALESCE((record->>'push')::boolean, false)
                     ORDER BY agent_id LIMIT $3
                     FOR UPDATE SKIP LOCKED)",
                &[&me, &now, &take],
            )?;
            states(tx)
        })
    }

    fn update_agent(&self, agent: &VerifierAgent, unless_states: &[i64]) -> Result<bool, StoreError> {
        let (agent_id, record, blocked) = (agent.agent_id.clone(), to_json(agent)?, unless_states.to_vec());
        self.run(move |client| {
            // The state guard reads the stored record: a stop or delete that landed meanwhile wins.
            let changed = client.execute_prepared(
                "UPDATE verifier_agents SET record = ($2::text)::jsonb
                 WHERE agent_id = $1 AND NOT ((record->>'operational_state')::bigint = ANY($3))",
                &[&agent_id, &record, &blocked],
            )?;
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
        match history {
            // One statement: no transaction needed.
            None => self
                .run(move |client| {
                    save_round(client, &agent_id, &record, revision, from_state, owner.as_deref())
                })
                .map(|saved| RoundSaved { saved, history: None }),
            Some(history) => self.transaction(move |tx| {
                let saved = save_round(tx, &agent_id, &record, revision, from_state, owner.as_deref())?;
                Ok(with_history(tx, saved, &history))
            }),
        }
    }

    fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let agent_id = agent_id.to_owned();
        self.transaction(move |tx| {
            let tenant: Option<String> = tx
                .query_opt_prepared(
                    "DELETE FROM verifier_agents WHERE agent_id = $1 RETURNING tenant",
                    &[&agent_id],
                )?
                .map(|row| row.try_get(0))
                .transpose()?;
            let Some(tenant) = tenant else {
                return Ok(false);
            };
            // A re-enrolled agent starts clean: its old token and attestations go with it.
            // push_attestations is keyed by (tenant, agent_id, idx): naming the tenant deletes
            // by key instead of scanning every agent's attestations.
            tx.execute_prepared("DELETE FROM push_sessions WHERE agent_id = $1", &[&agent_id])?;
            tx.execute_prepared(
                "DELETE FROM push_attestations WHERE tenant = $1 AND agent_id = $2",
                &[&tenant, &agent_id],
            )?;
            // Keylime names an agent's policies after it when no name was given.
            for kind in [PolicyKind::Runtime, PolicyKind::MeasuredBoot] {
                tx.execute_prepared(
                    &format!(
                        "DELETE FROM {} WHERE tenant = $1 AND name = $2
                           AND NOT EXISTS (SELECT 1 FROM verifier_agents WHERE tenant = $1 AND {} = $2)",
                        kind.table(),
                        kind.agent_column()
                    ),
                    &[&tenant, &agent_id],
                )?;
                super::postgres_history::drop_orphan_versions(tx, kind, &tenant)?;
            }
            super::postgres_history::forget_agent(tx, &agent_id)?;
            Ok(true)
        })
    }

    fn put_module(
        &self,
        tenant: &str,
        record: &ModuleRecord,
        bytes: &[u8],
        quota: &TenantQuota,
    ) -> Result<ModuleWrite, StoreError> {
        let (tenant, record, bytes, components) = (
            tenant.to_owned(),
            record.clone(),
            bytes.to_vec(),
            quota.components,
        );
        self.transaction(move |tx| {
            lock(tx, Lock::Tenant, &tenant)?;
            if exists(
                tx,
                "SELECT 1 FROM policy_modules WHERE tenant = $1 AND id = $2",
                &[&tenant, &record.id],
            )? {
                return Ok(ModuleWrite::Exists);
            }
            if usage(tx, &tenant)?.components >= components {
                return Ok(ModuleWrite::QuotaExceeded);
            }
            let inserted = tx.execute_prepared(
                "INSERT INTO policy_modules (tenant, id, kind, bytes, uploaded_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, id) DO NOTHING",
                &[
                    &tenant,
                    &record.id,
                    &record.kind.name(),
                    &bytes,
                    &signed(record.uploaded_at),
                ],
            )?;
            Ok(if inserted == 1 {
                ModuleWrite::Created
            } else {
                ModuleWrite::Exists
            })
        })
    }

    fn quota(&self, tenant: &str) -> Result<Option<TenantQuota>, StoreError> {
        let tenant = tenant.to_owned();
        self.run(move |client| {
            let Some(row) =
                client.query_opt_prepared("SELECT quota FROM tenant_quotas WHERE tenant = $1", &[&tenant])?
            else {
                return Ok(None);
            };
            let text: String = row.try_get(0)?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("quota of {tenant}: {e}")))
        })
    }

    fn quotas(&self) -> Result<Vec<(String, TenantQuota)>, StoreError> {
        self.run(|client| {
            client
                .query_prepared("SELECT tenant, quota FROM tenant_quotas ORDER BY tenant", &[])?
                .iter()
                .map(|row| {
                    let (tenant, text): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                    let quota = serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("quota of {tenant}: {e}")))?;
                    Ok((tenant, quota))
                })
                .collect()
        })
    }

    fn put_quota(&self, tenant: &str, quota: Option<&TenantQuota>) -> Result<(), StoreError> {
        let tenant = tenant.to_owned();
        let text = quota.map(to_json).transpose()?;
        self.run(move |client| {
            match text {
                Some(text) => client.execute_prepared(
                    "INSERT INTO tenant_quotas (tenant, quota) VALUES ($1, $2)
                     ON CONFLICT (tenant) DO UPDATE SET quota = excluded.quota",
                    &[&tenant, &text],
                )?,
                None => client.execute_prepared("DELETE FROM tenant_quotas WHERE tenant = $1", &[&tenant])?,
            };
            Ok(())
        })
    }

    fn tenant_usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        let tenant = tenant.to_owned();
        self.run(move |client| usage(client, &tenant))
    }

    fn module(&self, tenant: &str, id: &str) -> Result<Option<(ModuleRecord, Vec<u8>)>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |client| {
            let Some(row) = client.query_opt_prepared(
                "SELECT kind, bytes, uploaded_at FROM policy_modules WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )?
            else {
                return Ok(None);
            };
            let (kind, bytes, uploaded_at): (String, Vec<u8>, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let kind = PolicyKind::from_name(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("module kind {kind}")))?;
            Ok(Some((
                ModuleRecord {
                    id,
                    kind,
                    size: bytes.len() as u64,
                    uploaded_at: unsigned(uploaded_at),
                },
                bytes,
            )))
        })
    }

    fn modules(&self, tenant: Option<&str>) -> Result<Vec<(String, ModuleRecord)>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.run(move |client| {
            client
                .query_prepared(
                    "SELECT tenant, id, kind, octet_length(bytes)::bigint, uploaded_at FROM policy_modules
                     WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, id",
                    &[&tenant],
                )?
                .iter()
                .map(|row| {
                    let kind: String = row.try_get(2)?;
                    let kind = PolicyKind::from_name(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("module kind {kind}")))?;
                    Ok((
                        row.try_get(0)?,
                        ModuleRecord {
                            id: row.try_get(1)?,
                            kind,
                            size: unsigned(row.try_get(3)?),
                            uploaded_at: unsigned(row.try_get(4)?),
                        },
                    ))
                })
                .collect()
        })
    }

    fn delete_module(&self, tenant: &str, id: &str) -> Result<ModuleDelete, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.transaction(move |tx| {
            lock(tx, Lock::Tenant, &tenant)?;
            let mut users = Vec::new();
            for kind in [PolicyKind::Runtime, PolicyKind::MeasuredBoot] {
                let rows = tx.query_prepared(
                    &format!(
                        "SELECT name FROM {} WHERE tenant = $1 AND module = $2 ORDER BY name",
                        kind.table()
                    ),
                    &[&tenant, &id],
                )?;
                for row in rows {
                    users.push(format!("{} policy {}", kind.name(), row.try_get::<_, String>(0)?));
                }
            }
            if !users.is_empty() {
                return Ok(ModuleDelete::InUse(users));
            }
            let deleted = tx.execute_prepared(
                "DELETE FROM policy_modules WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )?;
            Ok(if deleted == 0 {
                ModuleDelete::NotFound
            } else {
                ModuleDelete::Deleted
            })
        })
    }

    fn put_session(&self, session: &PushSession) -> Result<(), StoreError> {
        let session = session.clone();
        self.transaction(move |tx| {
            lock(tx, Lock::Agent, &session.agent_id)?;
            // One session per agent, whichever tenant an older one was of.
            tx.execute_prepared("DELETE FROM push_sessions WHERE agent_id = $1", &[&session.agent_id])?;
            tx.execute_prepared(
                "INSERT INTO push_sessions (session_id, tenant, agent_id, token_salt, token_hash, token_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &session.session_id,
                    &session.tenant,
                    &session.agent_id,
                    &session.token_salt,
                    &session.token_hash,
                    &signed(session.token_expires_at),
                ],
            )?;
            Ok(())
        })
    }

    fn claim_session(&self, session_id: &str, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        let (session_id, expires_at, now) = (session_id.to_owned(), signed(expires_at), signed(now));
        self.transaction(move |tx| {
            tx.execute_prepared("DELETE FROM push_claimed_sessions WHERE expires_at < $1", &[&now])?;
            let claimed = tx.execute_prepared(
                "INSERT INTO push_claimed_sessions (session_id, expires_at) VALUES ($1, $2)
                 ON CONFLICT (session_id) DO NOTHING",
                &[&session_id, &expires_at],
            )?;
            Ok(claimed == 1)
        })
    }

    fn shared_secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError::Io("no randomness".into()))?;
        let name = name.to_owned();
        self.transaction(move |tx| {
            tx.execute_prepared(
                "INSERT INTO verifier_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh.as_slice()],
            )?;
            Ok(tx
                .query_one_prepared("SELECT value FROM verifier_secrets WHERE name = $1", &[&name])?
                .try_get(0)?)
        })
    }

    fn session(&self, session_id: &str) -> Result<Option<PushSession>, StoreError> {
        let session_id = session_id.to_owned();
        self.run(move |client| {
            let Some(row) = client.query_opt_prepared(
                "SELECT agent_id, token_salt, token_hash, token_expires_at, tenant FROM push_sessions
                 WHERE session_id = $1",
                &[&session_id],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(PushSession {
                session_id,
                agent_id: row.try_get(0)?,
                token_salt: row.try_get(1)?,
                token_hash: row.try_get(2)?,
                token_expires_at: unsigned(row.try_get(3)?),
                tenant: row.try_get(4)?,
            }))
        })
    }

    fn add_attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        record: &PushAttestation,
    ) -> Result<u64, StoreError> {
        let (tenant, agent_id, mut record) = (tenant.to_owned(), agent_id.to_owned(), record.clone());
        self.transaction(move |tx| {
            // Two verifiers numbering one agent's attestations take turns.
            lock(tx, Lock::Agent, &agent_id)?;
            let next: i64 = tx
                .query_one_prepared(
                    "SELECT COALESCE(max(idx) + 1, 0) FROM push_attestations WHERE tenant = $1 AND agent_id = $2",
                    &[&tenant, &agent_id],
                )?
                .try_get(0)?;
            record.index = unsigned(next);
            tx.execute_prepared(
                "INSERT INTO push_attestations (tenant, agent_id, idx, record)
                 VALUES ($1, $2, $3, ($4::text)::jsonb)",
                &[&tenant, &agent_id, &next, &attestation_json(&record)?],
            )?;
            Ok(record.index)
        })
    }

    fn update_attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        record: &PushAttestation,
    ) -> Result<(), StoreError> {
        let text = attestation_json(record)?;
        let (tenant, agent_id, index) = (tenant.to_owned(), agent_id.to_owned(), signed(record.index));
        self.run(move |client| {
            client.execute_prepared(
                "UPDATE push_attestations SET record = ($4::text)::jsonb
                 WHERE tenant = $1 AND agent_id = $2 AND idx = $3",
                &[&tenant, &agent_id, &index, &text],
            )?;
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
        let extend_session = extend_session.map(|(id, expires)| (id.to_owned(), signed(expires)));
        let (index, received_at) = (
            signed(attestation.index),
            signed(attestation.capabilities_received_at),
        );
        let text = attestation_json(attestation)?;
        self.transaction(move |tx| {
            let saved = save_round(tx, &agent_id, &record, revision, from_state, owner.as_deref())?;
            if saved && let Some((session_id, expires)) = extend_session {
                tx.execute_prepared(
                    "UPDATE push_sessions SET token_expires_at = $3 WHERE tenant = $1 AND session_id = $2",
                    &[&tenant, &session_id, &expires],
                )?;
            }
            // Only the attestation judged: the same index and the same start.
            tx.execute_prepared(
                "UPDATE push_attestations SET record = ($4::text)::jsonb
                 WHERE tenant = $1 AND agent_id = $2 AND idx = $3
                   AND COALESCE((record->>'capabilities_received_at')::bigint, 0) = $5",
                &[&tenant, &agent_id, &index, &text, &received_at],
            )?;
            Ok(match &history {
                Some(history) => with_history(tx, saved, history),
                None => RoundSaved { saved, history: None },
            })
        })
    }

    fn attestation(
        &self,
        tenant: &str,
        agent_id: &str,
        index: Option<u64>,
    ) -> Result<Option<PushAttestation>, StoreError> {
        let (tenant, agent_id) = (tenant.to_owned(), agent_id.to_owned());
        let index = index.map(signed);
        self.run(move |client| {
            client
                .query_opt_prepared(
                    "SELECT record::text FROM push_attestations
                     WHERE tenant = $1 AND agent_id = $2 AND ($3::bigint IS NULL OR idx = $3)
                     ORDER BY idx DESC LIMIT 1",
                    &[&tenant, &agent_id, &index],
                )?
                .map(|row| from_json(&row.try_get::<_, String>(0)?))
                .transpose()
        })
    }

    fn attestation_head(
        &self,
        tenant: &str,
        agent_id: &str,
        index: Option<u64>,
    ) -> Result<Option<AttestationHead>, StoreError> {
        let (tenant, agent_id) = (tenant.to_owned(), agent_id.to_owned());
        let index = index.map(signed);
        self.run(move |client| {
            let Some(row) = client.query_opt_prepared(
                "SELECT idx, record->>'stage', (record->>'capabilities_received_at')::bigint,
                        (record->>'evidence_received_at')::bigint
                 FROM push_attestations
                 WHERE tenant = $1 AND agent_id = $2 AND ($3::bigint IS NULL OR idx = $3)
                 ORDER BY idx DESC LIMIT 1",
                &[&tenant, &agent_id, &index],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(AttestationHead {
                index: unsigned(row.try_get(0)?),
                stage: row.try_get(1)?,
                capabilities_received_at: unsigned(row.try_get::<_, Option<i64>>(2)?.unwrap_or(0)),
                evidence_received_at: row.try_get::<_, Option<i64>>(3)?.map(unsigned),
            }))
        })
    }

    fn attestations(&self, tenant: &str, agent_id: &str) -> Result<Vec<PushAttestation>, StoreError> {
        let (tenant, agent_id) = (tenant.to_owned(), agent_id.to_owned());
        self.run(move |client| {
            client
                .query_prepared(
                    "SELECT record::text FROM push_attestations WHERE tenant = $1 AND agent_id = $2 ORDER BY idx",
                    &[&tenant, &agent_id],
                )?
                .iter()
                .map(|row| from_json(&row.try_get::<_, String>(0)?))
                .collect()
        })
    }
}
