//! The PostgreSQL backend (Keylime's `database_url = postgresql://…`), for several verifiers
//! and registrars on one database. Coordination is the database's own: transactions, row
//! conditions and transaction-scoped advisory locks; no record is cached between calls
//! (only each connection's prepared statements).
//!
//! The `postgres` client drives its connection with a private Tokio runtime, which must not
//! run inside another runtime's task. So each connection lives on a thread of its own, and a
//! call hands its work to a free one and waits: callers stay synchronous, as the traits are,
//! whether they run on the blocking pool or not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction};

use super::{DEFAULT_TENANT, NewRegistration, RegisterOutcome, RegisteredAgent, RegistrarStore, StoreError};

/// Schema migrations, applied in order; `zest_schema.version` records how many ran. The
/// first is the schema SQLite reached at its migration 10.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: every table of the SQLite store, in PostgreSQL's types.
    "CREATE TABLE registrar_agents (
        tenant                  TEXT    NOT NULL DEFAULT 'default',
        agent_id                TEXT    NOT NULL PRIMARY KEY,
        ek_tpm                  TEXT    NOT NULL,
        ekcert                  TEXT,
        aik_tpm                 TEXT    NOT NULL,
        ip                      TEXT,
        port                    INTEGER,
        mtls_cert               TEXT,
        auth_tag_digest         BYTEA   NOT NULL,
        active                  BOOLEAN NOT NULL DEFAULT false,
        regcount                INTEGER NOT NULL DEFAULT 1,
        registered_at           BIGINT  NOT NULL,
        updated_at              BIGINT  NOT NULL,
        pending_ip              TEXT,
        pending_port            INTEGER,
        pending_mtls_cert       TEXT,
        pending_auth_tag_digest BYTEA,
        pending_since           BIGINT
    );
    CREATE TABLE runtime_policies (
        tenant    TEXT   NOT NULL,
        name      TEXT   NOT NULL,
        module    TEXT   NOT NULL,
        checksum  TEXT   NOT NULL,
        generator BIGINT NOT NULL,
        document  BYTEA,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE mb_policies (
        tenant    TEXT   NOT NULL,
        name      TEXT   NOT NULL,
        module    TEXT   NOT NULL,
        checksum  TEXT   NOT NULL,
        generator BIGINT NOT NULL,
        document  BYTEA,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE verifier_agents (
        tenant         TEXT  NOT NULL,
        agent_id       TEXT  NOT NULL PRIMARY KEY,
        runtime_policy TEXT  NOT NULL,
        mb_policy      TEXT  NOT NULL,
        record         JSONB NOT NULL,
        lease_owner    TEXT
    );
    CREATE INDEX verifier_agents_lease ON verifier_agents (lease_owner);
    CREATE INDEX verifier_agents_runtime_policy ON verifier_agents (tenant, runtime_policy);
    CREATE INDEX verifier_agents_mb_policy ON verifier_agents (tenant, mb_policy);
    CREATE TABLE policy_modules (
        tenant      TEXT   NOT NULL,
        id          TEXT   NOT NULL,
        kind        TEXT   NOT NULL,
        bytes       BYTEA  NOT NULL,
        uploaded_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    CREATE TABLE push_sessions (
        session_id       TEXT   NOT NULL PRIMARY KEY,
        tenant           TEXT   NOT NULL,
        agent_id         TEXT   NOT NULL,
        token_salt       BYTEA  NOT NULL,
        token_hash       BYTEA  NOT NULL,
        token_expires_at BIGINT NOT NULL
    );
    CREATE INDEX push_sessions_agent ON push_sessions (agent_id);
    CREATE TABLE push_attestations (
        tenant   TEXT   NOT NULL,
        agent_id TEXT   NOT NULL,
        idx      BIGINT NOT NULL,
        record   JSONB  NOT NULL,
        PRIMARY KEY (tenant, agent_id, idx)
    );
    CREATE TABLE tenant_quotas (
        tenant TEXT NOT NULL PRIMARY KEY,
        quota  TEXT NOT NULL
    );
    CREATE TABLE verifier_leases (
        verifier_id TEXT   NOT NULL PRIMARY KEY,
        alive_until BIGINT NOT NULL
    );
    CREATE TABLE verifier_secrets (
        name  TEXT  NOT NULL PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE push_claimed_sessions (
        session_id TEXT   NOT NULL PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );",
    // 2: SQLite's migration 11: attestation history, recorded evidence, policy versions.
    "ALTER TABLE runtime_policies ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
    ALTER TABLE mb_policies ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
    CREATE TABLE policy_versions (
        kind        TEXT   NOT NULL,
        tenant      TEXT   NOT NULL,
        name        TEXT   NOT NULL,
        version     BIGINT NOT NULL,
        module      TEXT   NOT NULL,
        checksum    TEXT   NOT NULL,
        generator   BIGINT NOT NULL,
        document    BYTEA,
        replaced_at BIGINT NOT NULL,
        PRIMARY KEY (kind, tenant, name, version)
    );
    CREATE TABLE attestation_history (
        id       BIGSERIAL PRIMARY KEY,
        tenant   TEXT    NOT NULL,
        agent_id TEXT    NOT NULL,
        at_ms    BIGINT  NOT NULL,
        passed   BOOLEAN NOT NULL,
        record   TEXT    NOT NULL
    );
    CREATE INDEX attestation_history_agent ON attestation_history (agent_id, passed, id);
    CREATE INDEX attestation_history_tenant ON attestation_history (tenant, id);
    CREATE TABLE agent_evidence (
        agent_id TEXT NOT NULL PRIMARY KEY,
        tenant   TEXT NOT NULL,
        record   TEXT NOT NULL,
        boot_log TEXT
    );
    CREATE INDEX agent_evidence_boot_log ON agent_evidence (boot_log);
    CREATE TABLE agent_ima_segments (
        agent_id TEXT   NOT NULL,
        seq      BIGINT NOT NULL,
        text     TEXT   NOT NULL,
        PRIMARY KEY (agent_id, seq)
    );
    CREATE TABLE evidence_blobs (
        digest TEXT  NOT NULL PRIMARY KEY,
        bytes  BYTEA NOT NULL
    );",
];

/// Advisory lock namespaces (the first key of `pg_advisory_xact_lock(int, int)`).
#[derive(Clone, Copy)]
pub(super) enum Lock {
    /// Migrations: one process at a time brings the schema up to date.
    Schema = 1,
    /// A tenant's holdings, while a quota is checked and the write it guards is made.
    Tenant = 2,
    /// One agent's records (registration, push attestation numbering).
    Agent = 3,
}

/// Takes a transaction-scoped advisory lock on `key` in `space`: held until commit or rollback.
pub(super) fn lock(tx: &mut Transaction<'_>, space: Lock, key: &str) -> Result<(), StoreError> {
    tx.execute_prepared(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&(space as i32), &key],
    )?;
    Ok(())
}

thread_local! {
    /// The prepared statements of this thread's connection, by their SQL. Each connection
    /// lives on a thread of its own, so this is the connection's cache; it is emptied when
    /// the thread connects anew.
    static STATEMENTS: RefCell<HashMap<String, Statement>> = RefCell::new(HashMap::new());
}

/// More distinct statements than the store has means dynamic SQL went astray: start over.
const MAX_STATEMENTS: usize = 512;

/// `sql` prepared on this thread's connection, once. Without this, the client prepares
/// every statement it is handed as text, runs it and closes it: a round trip more, and a
/// parse and plan on the server, for every statement of every round.
fn prepared(client: &mut impl GenericClient, sql: &str) -> Result<Statement, postgres::Error> {
    if let Some(statement) = STATEMENTS.with(|c| c.borrow().get(sql).cloned()) {
        return Ok(statement);
    }
    let statement = client.prepare(sql)?;
    STATEMENTS.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= MAX_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), statement.clone());
    });
    Ok(statement)
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The client's calls, on statements prepared once per connection ([`prepared`]). Only
/// for work run on a connection thread ([`PgStore::run`]).
pub(super) trait Prepared: GenericClient + Sized {
    fn execute_prepared(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let statement = prepared(self, sql)?;
        self.execute(&statement, params)
    }

    fn query_prepared(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let statement = prepared(self, sql)?;
        self.query(&statement, params)
    }

    fn query_one_prepared(&mut self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error> {
        let statement = prepared(self, sql)?;
        self.query_one(&statement, params)
    }

    fn query_opt_prepared(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, postgres::Error> {
        let statement = prepared(self, sql)?;
        self.query_opt(&statement, params)
    }
}

impl<C: GenericClient> Prepared for C {}

type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// PostgreSQL storage: a fixed set of connection threads taking work from one queue.
pub struct PgStore {
    jobs: Mutex<Sender<Job>>,
    config: Arc<postgres::Config>,
}

/// Connections each store keeps at most: enough for the verifier's concurrent calls, few
/// enough that several verifiers stay under PostgreSQL's default `max_connections` (100).
const CONNECTIONS: usize = 8;

impl PgStore {
    /// Connects to `url` (`postgresql://user:password@host:port/db`, or libpq's key=value
    /// form) and brings the schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Config(format!("database_url: {e}")))?;
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..CONNECTIONS {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("zest-pg-{i}"))
                .spawn(move || connection_thread(&receiver))
                .map_err(|e| StoreError::Io(format!("starting a database connection thread: {e}")))?;
        }
        let store = Self {
            jobs: Mutex::new(sender),
            config: Arc::new(config),
        };
        store.run(migrate)?;
        Ok(store)
    }

    /// Runs `work` on a connection thread and waits for its result. A connection that broke
    /// is replaced at the next call.
    pub(super) fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, result) = std::sync::mpsc::sync_channel::<Result<T, StoreError>>(1);
        let config = self.config.clone();
        let job: Job = Box::new(move |slot: &mut Option<Client>| {
            let outcome = on_connection(slot, &config, work);
            send_reply(&reply, outcome);
        });
        self.jobs
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .send(job)
            .map_err(|_| StoreError::Io("the database connection threads stopped".into()))?;
        result
            .recv()
            .map_err(|_| StoreError::Io("a database call panicked".into()))?
    }

    /// Runs `work` in one transaction, committed when it returns `Ok`.
    pub(super) fn transaction<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(move |client| {
            let mut tx = client.transaction()?;
            let value = work(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }
}

fn send_reply<T>(reply: &SyncSender<Result<T, StoreError>>, outcome: Result<T, StoreError>) {
    // The caller waits for this; if it is gone there is nobody to tell.
    let _ = reply.send(outcome);
}

fn on_connection<T>(
    slot: &mut Option<Client>,
    config: &postgres::Config,
    work: impl FnOnce(&mut Client) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if slot.as_ref().is_none_or(Client::is_closed) {
        // Statements prepared on the connection before belong to it.
        STATEMENTS.with(|c| c.borrow_mut().clear());
        *slot = Some(config.connect(NoTls)?);
    }
    let Some(client) = slot.as_mut() else {
        return Err(StoreError::Io("no database connection".into()));
    };
    let outcome = work(client);
    if client.is_closed() {
        *slot = None;
    }
    // A prepared statement whose tables changed shape (another verifier migrated the
    // schema) fails with "cached plan must not change result type": prepare anew.
    if let Err(StoreError::Postgres(e)) = &outcome
        && e.code() == Some(&postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
    {
        STATEMENTS.with(|c| c.borrow_mut().clear());
    }
    outcome
}

fn connection_thread(jobs: &Mutex<Receiver<Job>>) {
    let mut connection: Option<Client> = None;
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => match receiver.recv() {
                Ok(job) => job,
                // The store was dropped.
                Err(_) => return,
            },
            Err(_) => return,
        };
        // A panicking call loses its connection, not the thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut connection))).is_err() {
            connection = None;
        }
    }
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    lock(&mut tx, Lock::Schema, "migrations")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS zest_schema (version INTEGER NOT NULL)")?;
    let found: i64 = match tx.query_opt("SELECT version FROM zest_schema", &[])? {
        Some(row) => i64::from(row.try_get::<_, i32>(0)?),
        None => {
            tx.execute("INSERT INTO zest_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE zest_schema SET version = $1", &[&((i + 1) as i32)])?;
    }
    tx.commit()?;
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn port(p: Option<u16>) -> Option<i32> {
    p.map(i32::from)
}

impl RegistrarStore for PgStore {
    fn register(&self, r: &NewRegistration, stale_before: u64) -> Result<RegisterOutcome, StoreError> {
        let r = r.clone();
        let stale_before = i64::try_from(stale_before).unwrap_or(i64::MAX);
        self.transaction(move |tx| {
            // Registrars racing on one id take turns.
            lock(tx, Lock::Agent, &r.agent_id)?;
            // An unactivated registration past its time holds the id no longer.
            tx.execute_prepared(
                "DELETE FROM registrar_agents WHERE agent_id = $1 AND NOT active AND registered_at < $2",
                &[&r.agent_id, &stale_before],
            )?;
            let existing = tx.query_opt_prepared(
                "SELECT ek_tpm, aik_tpm, ekcert, active FROM registrar_agents WHERE agent_id = $1",
                &[&r.agent_id],
            )?;
            let Some(row) = existing else {
                tx.execute_prepared(
                    "INSERT INTO registrar_agents
                        (tenant, agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert, auth_tag_digest,
                         active, regcount, registered_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false, 1, $10, $10)",
                    &[
                        &DEFAULT_TENANT,
                        &r.agent_id,
                        &r.ek_tpm,
                        &r.ekcert,
                        &r.aik_tpm,
                        &r.ip,
                        &port(r.port),
                        &r.mtls_cert,
                        &r.auth_tag_digest,
                        &now(),
                    ],
                )?;
                return Ok(RegisterOutcome::Created);
            };
            let (ek_tpm, aik_tpm, ekcert, active): (String, String, Option<String>, bool) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let same_tpm = ek_tpm == r.ek_tpm
                && aik_tpm == r.aik_tpm
                && (ekcert.is_none() || r.ekcert.is_none() || ekcert == r.ekcert);
            if !same_tpm {
                return Ok(RegisterOutcome::IdentityConflict);
            }
            let sql = if active {
                // The active record keeps its contact data: the new ones wait for activation.
                "UPDATE registrar_agents SET
                    ekcert = COALESCE(ekcert, $2),
                    pending_ip = $3, pending_port = $4, pending_mtls_cert = $5,
                    pending_auth_tag_digest = $6, pending_since = $7, updated_at = $7
                 WHERE agent_id = $1"
            } else {
                "UPDATE registrar_agents SET
                    ekcert = COALESCE(ekcert, $2), ip = $3, port = $4, mtls_cert = $5,
                    auth_tag_digest = $6, registered_at = $7, updated_at = $7,
                    pending_ip = NULL, pending_port = NULL, pending_mtls_cert = NULL,
                    pending_auth_tag_digest = NULL, pending_since = NULL
                 WHERE agent_id = $1"
            };
            tx.execute_prepared(
                sql,
                &[
                    &r.agent_id,
                    &r.ekcert,
                    &r.ip,
                    &port(r.port),
                    &r.mtls_cert,
                    &r.auth_tag_digest,
                    &now(),
                ],
            )?;
            Ok(RegisterOutcome::Renewed)
        })
    }

    fn registered_agent(&self, agent_id: &str) -> Result<Option<RegisteredAgent>, StoreError> {
        let agent_id = agent_id.to_owned();
        self.run(move |client| {
            let Some(row) = client.query_opt_prepared(
                "SELECT agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert, active, regcount,
                        auth_tag_digest
                 FROM registrar_agents WHERE agent_id = $1",
                &[&agent_id],
            )?
            else {
                return Ok(None);
            };
            let port: Option<i32> = row.try_get(5)?;
            let regcount: i32 = row.try_get(8)?;
            Ok(Some(RegisteredAgent {
                agent_id: row.try_get(0)?,
                ek_tpm: row.try_get(1)?,
                ekcert: row.try_get(2)?,
                aik_tpm: row.try_get(3)?,
                ip: row.try_get(4)?,
                port: port.and_then(|p| u16::try_from(p).ok()),
                mtls_cert: row.try_get(6)?,
                active: row.try_get(7)?,
                regcount: u32::try_from(regcount).unwrap_or(0),
                auth_tag_digest: row.try_get(9)?,
            }))
        })
    }

    fn activate(
        &self,
        agent_id: &str,
        auth_tag_digest: &[u8],
        stale_before: u64,
    ) -> Result<bool, StoreError> {
        let (agent_id, digest) = (agent_id.to_owned(), auth_tag_digest.to_vec());
        let stale_before = i64::try_from(stale_before).unwrap_or(i64::MAX);
        self.transaction(move |tx| {
            // A renewal's credential: its contact data becomes the agent's.
            let renewed = tx.execute_prepared(
                "UPDATE registrar_agents SET
                    ip = pending_ip, port = pending_port, mtls_cert = pending_mtls_cert,
                    auth_tag_digest = pending_auth_tag_digest, active = true, updated_at = $3,
                    pending_ip = NULL, pending_port = NULL, pending_mtls_cert = NULL,
                    pending_auth_tag_digest = NULL, pending_since = NULL
                 WHERE agent_id = $1 AND pending_auth_tag_digest = $2 AND pending_since >= $4",
                &[&agent_id, &digest, &now(), &stale_before],
            )?;
            if renewed == 1 {
                return Ok(true);
            }
            // The first registration's credential (again, for an agent that is active already).
            let n = tx.execute_prepared(
                "UPDATE registrar_agents SET active = true, updated_at = $3
                 WHERE agent_id = $1 AND auth_tag_digest = $2 AND (active OR registered_at >= $4)",
                &[&agent_id, &digest, &now(), &stale_before],
            )?;
            Ok(n == 1)
        })
    }

    fn list_agents(&self) -> Result<Vec<String>, StoreError> {
        self.run(|client| {
            client
                .query_prepared("SELECT agent_id FROM registrar_agents ORDER BY agent_id", &[])?
                .iter()
                .map(|row| row.try_get(0).map_err(StoreError::from))
                .collect()
        })
    }

    fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let agent_id = agent_id.to_owned();
        self.run(move |client| {
            Ok(
                client.execute_prepared("DELETE FROM registrar_agents WHERE agent_id = $1", &[&agent_id])?
                    == 1,
            )
        })
    }

    fn import_agent(&self, a: &RegisteredAgent) -> Result<bool, StoreError> {
        let a = a.clone();
        self.run(move |client| {
            let added = client.execute_prepared(
                "INSERT INTO registrar_agents
                    (tenant, agent_id, ek_tpm, ekcert, aik_tpm, ip, port, mtls_cert, auth_tag_digest,
                     active, regcount, registered_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
                 ON CONFLICT (agent_id) DO NOTHING",
                &[
                    &DEFAULT_TENANT,
                    &a.agent_id,
                    &a.ek_tpm,
                    &a.ekcert,
                    &a.aik_tpm,
                    &a.ip,
                    &port(a.port),
                    &a.mtls_cert,
                    &a.auth_tag_digest,
                    &a.active,
                    &i32::try_from(a.regcount).unwrap_or(i32::MAX),
                    &now(),
                ],
            )?;
            Ok(added == 1)
        })
    }
}
