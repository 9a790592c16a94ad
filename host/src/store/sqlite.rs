//! The embedded SQLite backend: one file, WAL mode, schema migrations in code.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::group_commit::WriteQueue;
use super::{DEFAULT_TENANT, NewRegistration, RegisterOutcome, RegisteredAgent, RegistrarStore, StoreError};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the registrar's agents.
    "CREATE TABLE registrar_agents (
        tenant          TEXT    NOT NULL DEFAULT 'default',
        agent_id        TEXT    NOT NULL PRIMARY KEY,
        ek_tpm          TEXT    NOT NULL,
        ekcert          TEXT,
        aik_tpm         TEXT    NOT NULL,
        ip              TEXT,
        port            INTEGER,
        mtls_cert       TEXT,
        auth_tag_digest BLOB    NOT NULL,
        active          INTEGER NOT NULL DEFAULT 0,
        regcount        INTEGER NOT NULL DEFAULT 1,
        registered_at   INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    ) STRICT;",
    // 2: the verifier's policies and agents.
    "CREATE TABLE runtime_policies (
        tenant    TEXT    NOT NULL,
        name      TEXT    NOT NULL,
        module    TEXT    NOT NULL,
        document  BLOB,
        checksum  TEXT    NOT NULL,
        generator INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    ) STRICT;
    CREATE TABLE mb_policies (
        tenant    TEXT    NOT NULL,
        name      TEXT    NOT NULL,
        module    TEXT    NOT NULL,
        document  BLOB,
        checksum  TEXT    NOT NULL,
        generator INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    ) STRICT;
    CREATE TABLE verifier_agents (
        tenant         TEXT NOT NULL,
        agent_id       TEXT NOT NULL PRIMARY KEY,
        runtime_policy TEXT NOT NULL,
        mb_policy      TEXT NOT NULL,
        record         TEXT NOT NULL
    ) STRICT;
    CREATE INDEX verifier_agents_runtime_policy ON verifier_agents (tenant, runtime_policy);
    CREATE INDEX verifier_agents_mb_policy ON verifier_agents (tenant, mb_policy);",
    // 3: uploaded policy components, content-addressed.
    "CREATE TABLE policy_modules (
        tenant      TEXT    NOT NULL,
        id          TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        bytes       BLOB    NOT NULL,
        uploaded_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, id)
    ) STRICT;",
    // 4: authenticated push sessions; the token only as a salted hash.
    "CREATE TABLE push_sessions (
        session_id       TEXT    NOT NULL PRIMARY KEY,
        tenant           TEXT    NOT NULL,
        agent_id         TEXT    NOT NULL,
        token_salt       BLOB    NOT NULL,
        token_hash       BLOB    NOT NULL,
        token_expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX push_sessions_agent ON push_sessions (tenant, agent_id);",
    // 5: push attestations, one JSON record each, numbered per agent from 0.
    "CREATE TABLE push_attestations (
        tenant   TEXT    NOT NULL,
        agent_id TEXT    NOT NULL,
        idx      INTEGER NOT NULL,
        record   TEXT    NOT NULL,
        PRIMARY KEY (tenant, agent_id, idx)
    ) STRICT;",
    // 6: policy documents move to the last column, so that reading a policy's module,
    // checksum and generator does not walk a multi-megabyte document's overflow pages.
    "CREATE TABLE runtime_policies_v6 (
        tenant    TEXT    NOT NULL,
        name      TEXT    NOT NULL,
        module    TEXT    NOT NULL,
        checksum  TEXT    NOT NULL,
        generator INTEGER NOT NULL,
        document  BLOB,
        PRIMARY KEY (tenant, name)
    ) STRICT;
    INSERT INTO runtime_policies_v6 (tenant, name, module, checksum, generator, document)
        SELECT tenant, name, module, checksum, generator, document FROM runtime_policies;
    DROP TABLE runtime_policies;
    ALTER TABLE runtime_policies_v6 RENAME TO runtime_policies;
    CREATE TABLE mb_policies_v6 (
        tenant    TEXT    NOT NULL,
        name      TEXT    NOT NULL,
        module    TEXT    NOT NULL,
        checksum  TEXT    NOT NULL,
        generator INTEGER NOT NULL,
        document  BLOB,
        PRIMARY KEY (tenant, name)
    ) STRICT;
    INSERT INTO mb_policies_v6 (tenant, name, module, checksum, generator, document)
        SELECT tenant, name, module, checksum, generator, document FROM mb_policies;
    DROP TABLE mb_policies;
    ALTER TABLE mb_policies_v6 RENAME TO mb_policies;",
    // 7: a re-registration of an active agent waits here, beside the active contact data,
    // until its credential is activated.
    "ALTER TABLE registrar_agents ADD COLUMN pending_ip TEXT;
    ALTER TABLE registrar_agents ADD COLUMN pending_port INTEGER;
    ALTER TABLE registrar_agents ADD COLUMN pending_mtls_cert TEXT;
    ALTER TABLE registrar_agents ADD COLUMN pending_auth_tag_digest BLOB;
    ALTER TABLE registrar_agents ADD COLUMN pending_since INTEGER;",
    // 8: quotas the operator set per tenant (JSON of `TenantQuota`); absent: the defaults.
    "CREATE TABLE tenant_quotas (
        tenant TEXT NOT NULL PRIMARY KEY,
        quota  TEXT NOT NULL
    ) STRICT;",
    // 9: push sessions and attestations are their agent's tenant's (they were all written
    // as the default tenant's before).
    "UPDATE push_sessions SET tenant = coalesce(
        (SELECT tenant FROM verifier_agents WHERE verifier_agents.agent_id = push_sessions.agent_id), tenant);
    UPDATE push_attestations SET tenant = coalesce(
        (SELECT tenant FROM verifier_agents WHERE verifier_agents.agent_id = push_attestations.agent_id), tenant);",
    // 10: which verifier polls a pull agent, and until when each verifier's leases last
    // (Unix milliseconds; renewed while it runs): verifiers sharing a database take over
    // the agents of one that stopped renewing. Secrets the verifiers share (the key their
    // push challenges derive from), and the push sessions already proven (once each).
    "ALTER TABLE verifier_agents ADD COLUMN lease_owner TEXT;
    CREATE TABLE verifier_leases (
        verifier_id TEXT    NOT NULL PRIMARY KEY,
        alive_until INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE verifier_secrets (
        name  TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    CREATE TABLE push_claimed_sessions (
        session_id TEXT    NOT NULL PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) STRICT;",
    // 11: attestation history (one row per judged round), each agent's latest verified
    // evidence (IMA list in segments, boot logs by digest, shared), and policy versions:
    // a replaced policy is kept under its version number.
    "ALTER TABLE runtime_policies ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE mb_policies ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE policy_versions (
        kind        TEXT    NOT NULL,
        tenant      TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        version     INTEGER NOT NULL,
        module      TEXT    NOT NULL,
        checksum    TEXT    NOT NULL,
        generator   INTEGER NOT NULL,
        document    BLOB,
        replaced_at INTEGER NOT NULL,
        PRIMARY KEY (kind, tenant, name, version)
    ) STRICT;
    CREATE TABLE attestation_history (
        id       INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        tenant   TEXT    NOT NULL,
        agent_id TEXT    NOT NULL,
        at_ms    INTEGER NOT NULL,
        passed   INTEGER NOT NULL,
        record   TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX attestation_history_agent ON attestation_history (agent_id, passed, id);
    CREATE INDEX attestation_history_tenant ON attestation_history (tenant, id);
    CREATE TABLE agent_evidence (
        agent_id TEXT NOT NULL PRIMARY KEY,
        tenant   TEXT NOT NULL,
        record   TEXT NOT NULL,
        boot_log TEXT
    ) STRICT;
    CREATE INDEX agent_evidence_boot_log ON agent_evidence (boot_log);
    CREATE TABLE agent_ima_segments (
        agent_id TEXT    NOT NULL,
        seq      INTEGER NOT NULL,
        text     TEXT    NOT NULL,
        PRIMARY KEY (agent_id, seq)
    ) STRICT;
    CREATE TABLE evidence_blobs (
        digest TEXT NOT NULL PRIMARY KEY,
        bytes  BLOB NOT NULL
    ) STRICT;",
];

/// SQLite storage. One connection behind a mutex: SQLite serialises writers anyway, and
/// callers reach it from the blocking pool. The hot writes go through [`WriteQueue`], which
/// commits the writes of many threads together.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    writes: WriteQueue,
    /// A second connection for the long reads of background work (a canary reading every
    /// agent's recorded evidence, history pages): WAL lets it read beside the writer, so
    /// such a reader never holds the connection that live rounds wait for. None in memory.
    reader: Option<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date. The
    /// file is its owner's only (0600) from creation, and SQLite gives its WAL and shared
    /// memory files the same mode.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        if std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let conn = Connection::open(path)?;
        let mut store = Self::init(conn)?;
        // Opened after the migrations, so that it never sees an older schema.
        let reader = tuned(Connection::open(path)?, 16)?;
        reader.pragma_update(None, "query_only", "ON")?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// A private in-memory database, for tests and tools.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // Every statement is prepared once and reused (the store has about 40).
        let mut conn = tuned(conn, 64)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let known = MIGRATIONS.len() as i64;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            writes: WriteQueue::default(),
            reader: None,
        })
    }

    /// Runs `write` in a group commit (see [`WriteQueue`]): its result comes back once the
    /// batch holding it is committed.
    pub(super) fn grouped<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writes.write(&self.conn, write)
    }

    pub(super) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// The connection for background reads ([`Self::reader`]), else the only one.
    pub(super) fn reader(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.reader
            .as_ref()
            .unwrap_or(&self.conn)
            .lock()
            .map_err(|_| StoreError::Poisoned)
    }
}

/// The settings every connection of the store gets, with room for `statements` cached.
fn tuned(conn: Connection, statements: usize) -> Result<Connection, StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(statements);
    // Plans do not depend on bound values: without this, SQLite re-prepares a cached
    // statement whenever a value it may plan around is bound anew (a residual `x = ?`
    // crossing 0/1, a bound LIMIT), which cost a tenth of the verifier's CPU per round.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl RegistrarStore for SqliteStore {
    fn register(&self, r: &NewRegistration, stale_before: u64) -> Result<RegisterOutcome, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stale_before = i64::try_from(stale_before).unwrap_or(i64::MAX);
        // An unactivated registration past its time holds the id no longer: whoever
        // registered it (perhaps with someone else's public EK) loses it.
        tx.prepare_cached(
            "DELETE FROM registrar_agents WHERE agent_id = ?1 AND active = 0 AND registered_at < ?2",
        )?
        .execute(params![r.agent_id, stale_before])?;
        let existing: Option<(String, String, Option<String>, bool)> = tx
            .prepare_cached(
                "SELECT ek_tpm, aik_tpm, ekcert, active FROM registrar_agents WHERE agent_id = ?1",
            )?
            .query_row([&r.agent_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let outcome = match existing {
            None => {
                tx.prepare_cached(
                    "INSERT INTO registrar_agents
                        (tenant, agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert, auth_tag_digest,
                         active, regcount, registered_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 1, ?10, ?10)",
                )?
                .execute(params![
                    DEFAULT_TENANT,
                    r.agent_id,
                    r.ek_tpm,
                    r.ekcert,
                    r.aik_tpm,
                    r.ip,
                    r.port,
                    r.mtls_cert,
                    r.auth_tag_digest,
                    now(),
                ])?;
                RegisterOutcome::Created
            }
            Some((ek_tpm, aik_tpm, ekcert, active)) => {
                let same_tpm = ek_tpm == r.ek_tpm
                    && aik_tpm == r.aik_tpm
                    && (ekcert.is_none() || r.ekcert.is_none() || ekcert == r.ekcert);
                if !same_tpm {
                    RegisterOutcome::IdentityConflict
                } else if active {
                    // The active record keeps its contact data and stays active: the new
                    // address and certificate wait until the new credential is activated.
                    tx.prepare_cached(
                        "UPDATE registrar_agents SET
                            ekcert = COALESCE(ekcert, ?2),
                            pending_ip = ?3, pending_port = ?4, pending_mtls_cert = ?5,
                            pending_auth_tag_digest = ?6, pending_since = ?7, updated_at = ?7
                         WHERE agent_id = ?1",
                    )?
                    .execute(params![
                        r.agent_id,
                        r.ekcert,
                        r.ip,
                        r.port,
                        r.mtls_cert,
                        r.auth_tag_digest,
                        now()
                    ])?;
                    RegisterOutcome::Renewed
                } else {
                    tx.prepare_cached(
                        "UPDATE registrar_agents SET
                            ekcert = COALESCE(ekcert, ?2), ip = ?3, port = ?4, mtls_cert = ?5,
                            auth_tag_digest = ?6, registered_at = ?7, updated_at = ?7,
                            pending_ip = NULL, pending_port = NULL, pending_mtls_cert = NULL,
                            pending_auth_tag_digest = NULL, pending_since = NULL
                         WHERE agent_id = ?1",
                    )?
                    .execute(params![
                        r.agent_id,
                        r.ekcert,
                        r.ip,
                        r.port,
                        r.mtls_cert,
                        r.auth_tag_digest,
                        now()
                    ])?;
                    RegisterOutcome::Renewed
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn registered_agent(&self, agent_id: &str) -> Result<Option<RegisteredAgent>, StoreError> {
        let conn = self.conn()?;
        let agent = conn
            .prepare_cached(
                "SELECT agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert, active, regcount,
                        auth_tag_digest
                 FROM registrar_agents WHERE agent_id = ?1",
            )?
            .query_row([agent_id], |row| {
                Ok(RegisteredAgent {
                    agent_id: row.get(0)?,
                    ek_tpm: row.get(1)?,
                    ekcert: row.get(2)?,
                    aik_tpm: row.get(3)?,
                    ip: row.get(4)?,
                    port: row.get(5)?,
                    mtls_cert: row.get(6)?,
                    active: row.get(7)?,
                    regcount: row.get(8)?,
                    auth_tag_digest: row.get(9)?,
                })
            })
            .optional()?;
        Ok(agent)
    }

    fn activate(
        &self,
        agent_id: &str,
        auth_tag_digest: &[u8],
        stale_before: u64,
    ) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let stale_before = i64::try_from(stale_before).unwrap_or(i64::MAX);
        // A renewal's credential: its contact data becomes the agent's.
        let renewed = conn
            .prepare_cached(
                "UPDATE registrar_agents SET
                ip = pending_ip, port = pending_port, mtls_cert = pending_mtls_cert,
                auth_tag_digest = pending_auth_tag_digest, active = 1, updated_at = ?3,
                pending_ip = NULL, pending_port = NULL, pending_mtls_cert = NULL,
                pending_auth_tag_digest = NULL, pending_since = NULL
             WHERE agent_id = ?1 AND pending_auth_tag_digest = ?2 AND pending_since >= ?4",
            )?
            .execute(params![agent_id, auth_tag_digest, now(), stale_before])?;
        if renewed == 1 {
            return Ok(true);
        }
        // The first registration's credential (again, for an agent that is active already).
        let n = conn
            .prepare_cached(
                "UPDATE registrar_agents SET active = 1, updated_at = ?3
             WHERE agent_id = ?1 AND auth_tag_digest = ?2 AND (active = 1 OR registered_at >= ?4)",
            )?
            .execute(params![agent_id, auth_tag_digest, now(), stale_before])?;
        Ok(n == 1)
    }

    fn list_agents(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT agent_id FROM registrar_agents ORDER BY agent_id")?;
        let ids = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .prepare_cached("DELETE FROM registrar_agents WHERE agent_id = ?1")?
            .execute([agent_id])?
            == 1)
    }

    fn import_agent(&self, a: &RegisteredAgent) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let added = conn
            .prepare_cached(
                "INSERT INTO registrar_agents
                    (tenant, agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert, auth_tag_digest,
                     active, regcount, registered_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
                 ON CONFLICT (agent_id) DO NOTHING",
            )?
            .execute(params![
                DEFAULT_TENANT,
                a.agent_id,
                a.ek_tpm,
                a.ekcert,
                a.aik_tpm,
                a.ip,
                a.port,
                a.mtls_cert,
                a.auth_tag_digest,
                a.active,
                a.regcount,
                now(),
            ])?;
        Ok(added == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(id: &str, ak: &str) -> NewRegistration {
        NewRegistration {
            agent_id: id.into(),
            ek_tpm: "ek".into(),
            ekcert: Some("cert".into()),
            aik_tpm: ak.into(),
            ip: Some("127.0.0.1".into()),
            port: Some(9002),
            mtls_cert: Some("disabled".into()),
            auth_tag_digest: vec![1; 32],
        }
    }

    /// Every schema zest has shipped (each `user_version`), holding rows as the code of its
    /// time wrote them, opens with this code: migrations run, nothing is lost or misread
    /// (the CVE-2025-1057 class: an upgrade that crashes on old rows).
    #[test]
    fn every_shipped_schema_opens_with_its_rows() {
        use crate::store::history::HistoryStore;
        use crate::store::verifier::{PolicyKind, VerifierStore};
        for version in 0..=MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.sqlite");
            let old = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..version] {
                old.execute_batch(sql).unwrap();
            }
            old.pragma_update(None, "user_version", version as i64).unwrap();
            // Multi-tenant enrolments came with quotas (8); before, every agent was the
            // default tenant's. Push rows were written as the default tenant's until 9.
            let tenant = if version >= 8 { "t" } else { DEFAULT_TENANT };
            let pushed_as = if version >= 9 { tenant } else { DEFAULT_TENANT };
            if version >= 1 {
                old.execute(
                    "INSERT INTO registrar_agents (agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert,
                        auth_tag_digest, active, regcount, registered_at, updated_at)
                     VALUES ('r', 'ek', NULL, 'ak', '10.0.0.1', 9002, 'disabled', x'01', 1, 2, 1, 1)",
                    [],
                )
                .unwrap();
            }
            if version >= 2 {
                for table in ["runtime_policies", "mb_policies"] {
                    old.execute(
                        &format!(
                            "INSERT INTO {table} (tenant, name, module, document, checksum, generator)
                             VALUES (?1, 'a', 'builtin:keylime-runtime', x'7b7d', 'c', 3)"
                        ),
                        [tenant],
                    )
                    .unwrap();
                }
                // Keylime's fields only: zest's own came later and default.
                let mut record = serde_json::json!({
                    "agent_id": "a", "ip": "10.0.0.2", "port": 9002, "v": null, "tpm_policy": "{}",
                    "runtime_policy": "a", "mb_policy": "a", "ima_sign_verification_keys": "",
                    "revocation_key": "", "meta_data": "{}", "accept_tpm_hash_algs": ["sha256"],
                    "accept_tpm_encryption_algs": ["rsa"], "accept_tpm_signing_algs": ["rsassa"],
                    "ak_tpm": "ak", "mtls_cert": null, "supported_version": "2.1",
                    "operational_state": 3
                });
                if version >= 8 {
                    record["tenant"] = tenant.into();
                }
                old.execute(
                    "INSERT INTO verifier_agents (tenant, agent_id, runtime_policy, mb_policy, record)
                     VALUES (?1, 'a', 'a', 'a', ?2)",
                    params![tenant, record.to_string()],
                )
                .unwrap();
            }
            if version >= 3 {
                old.execute(
                    "INSERT INTO policy_modules (tenant, id, kind, bytes, uploaded_at)
                     VALUES (?1, 'sha256:00', 'runtime', x'0061736d', 5)",
                    [tenant],
                )
                .unwrap();
            }
            if version >= 4 {
                old.execute(
                    "INSERT INTO push_sessions (session_id, tenant, agent_id, token_salt, token_hash, token_expires_at)
                     VALUES ('s', ?1, 'a', x'01', x'02', 100)",
                    [pushed_as],
                )
                .unwrap();
            }
            if version >= 5 {
                let attestation = serde_json::json!({
                    "index": 0, "stage": "verification_complete", "evaluation": "pass",
                    "failure_reason": null, "evidence": [], "system_info": {}, "boot_time": 1,
                    "challenge": "", "ima_offset": null, "capabilities_received_at": 11,
                    "challenges_expire_at": 0, "evidence_received_at": 12, "verified_at": 13
                });
                old.execute(
                    "INSERT INTO push_attestations (tenant, agent_id, idx, record) VALUES (?1, 'a', 0, ?2)",
                    [pushed_as, &attestation.to_string()],
                )
                .unwrap();
            }
            drop(old);

            let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("schema {version}: {e}"));
            let at = |what: &str| format!("schema {version}: {what}");
            if version >= 1 {
                let r = store
                    .registered_agent("r")
                    .unwrap()
                    .unwrap_or_else(|| panic!("{}", at("registrar row")));
                assert_eq!(
                    (r.active, r.regcount, r.port),
                    (true, 2, Some(9002)),
                    "{}",
                    at("registrar row")
                );
            }
            if version >= 2 {
                let agent = store
                    .agent("a")
                    .unwrap()
                    .unwrap_or_else(|| panic!("{}", at("agent")));
                assert_eq!(agent.tenant, tenant, "{}", at("agent's tenant"));
                assert_eq!(agent.ip.as_deref(), Some("10.0.0.2"));
                let policy = store.policy(PolicyKind::MeasuredBoot, tenant, "a").unwrap();
                assert_eq!(
                    policy.unwrap_or_else(|| panic!("{}", at("refstate"))).document,
                    Some(b"{}".to_vec())
                );
                assert_eq!(store.agent_states().unwrap().len(), 1, "{}", at("states"));
                // Policies written before versions are version 1, with none before.
                let versions = store
                    .policy_versions(PolicyKind::MeasuredBoot, tenant, "a")
                    .unwrap();
                assert_eq!(
                    versions.iter().map(|v| v.version).collect::<Vec<_>>(),
                    vec![1],
                    "{}",
                    at("versions")
                );
            }
            if version >= 3 {
                assert_eq!(store.modules(Some(tenant)).unwrap().len(), 1, "{}", at("module"));
            }
            if version >= 4 {
                let session = store
                    .session("s")
                    .unwrap()
                    .unwrap_or_else(|| panic!("{}", at("session")));
                assert_eq!(
                    session.tenant,
                    tenant,
                    "{}",
                    at("the session is its agent's tenant's")
                );
            }
            if version >= 5 {
                let attestation = store.attestation(tenant, "a", Some(0)).unwrap();
                assert_eq!(
                    attestation
                        .unwrap_or_else(|| panic!("{}", at("attestation")))
                        .evaluation,
                    "pass"
                );
            }
        }
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        SqliteStore::open(&path)
            .unwrap()
            .register(&registration("b", "ak"), 0)
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.list_agents().unwrap(), vec!["b".to_string()]);
        assert!(store.delete_agent("b").unwrap());
        assert!(!store.delete_agent("b").unwrap());
    }

    /// `zest serve` opens the file twice (registrar and verifier). A transaction that reads
    /// before it writes must not fail with "database is locked" because the other
    /// connection wrote in between: write transactions take the write lock first and wait.
    #[test]
    fn two_stores_on_one_file_write_concurrently() {
        use crate::store::verifier::{PolicyDelete, PolicyKind, PolicyRecord, VerifierStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (registrar, verifier) = (
            SqliteStore::open(&path).unwrap(),
            SqliteStore::open(&path).unwrap(),
        );
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..3000 {
                    registrar
                        .register(&registration(&format!("r{i}"), "ak"), 0)
                        .unwrap();
                }
            });
            scope.spawn(|| {
                for i in 0..3000 {
                    let record = PolicyRecord {
                        name: format!("p{i}"),
                        module: "builtin:keylime-runtime".into(),
                        document: Some(b"{}".to_vec()),
                        checksum: String::new(),
                        generator: 3,
                    };
                    verifier
                        .put_policy(
                            PolicyKind::Runtime,
                            DEFAULT_TENANT,
                            &record,
                            true,
                            &Default::default(),
                        )
                        .unwrap();
                    assert_eq!(
                        verifier
                            .delete_policy(PolicyKind::Runtime, DEFAULT_TENANT, &record.name)
                            .unwrap(),
                        PolicyDelete::Deleted
                    );
                }
            });
        });
        assert_eq!(registrar.list_agents().unwrap().len(), 3000);
    }
}
