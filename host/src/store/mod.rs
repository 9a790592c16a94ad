//! Storage behind a narrow interface. SQLite (embedded, one file) is the default; PostgreSQL
//! (Keylime's `database_url`) serves several verifiers and registrars on one database.
//!
//! The traits are synchronous: async callers run them on the blocking pool
//! (`tokio::task::spawn_blocking`), so a slow disk never stalls the reactor.

pub mod durable;
mod group_commit;
pub mod history;
mod postgres;
mod postgres_history;
mod postgres_verifier;
mod sqlite;
mod sqlite_history;
mod sqlite_verifier;
pub mod verifier;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
use thiserror::Error;
pub use verifier::{
    AgentState, AttestationHead, EnrolOutcome, ModuleDelete, ModuleRecord, ModuleWrite, PolicyDelete,
    PolicyKind, PolicyRecord, PolicyWrite, PushAttestation, PushSession, StoredFailure, TenantQuota,
    TenantUsage, VerifierAgent, VerifierStore,
};

/// Where a service keeps its records: Keylime's `database_url`.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Database {
    /// The embedded SQLite file, `DATA_DIR/zest.sqlite`.
    #[default]
    Sqlite,
    /// The SQLite file a `sqlite:///PATH` URL names.
    SqliteFile(std::path::PathBuf),
    /// A PostgreSQL URL (`postgresql://user:password@host:port/db`), shared by several
    /// verifiers and registrars.
    Postgres(String),
}

impl Database {
    /// Keylime's `database_url`: empty or `sqlite` is the embedded default; SQLAlchemy's
    /// `sqlite:///relative` and `sqlite:////absolute` name a file; `postgresql://`,
    /// `postgres://` and `postgresql+DRIVER://` (Keylime's `+psycopg2`) are PostgreSQL.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.is_empty() || url == "sqlite" {
            return Ok(Self::Sqlite);
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(StoreError::Config(format!(
                "database_url: {:?} is neither sqlite nor a URL (postgresql://…)",
                redact(url)
            )));
        };
        let dialect = scheme.split('+').next().unwrap_or(scheme);
        match dialect {
            "sqlite" => match rest.strip_prefix('/') {
                Some(path) if !path.is_empty() => Ok(Self::SqliteFile(path.into())),
                _ => Ok(Self::Sqlite),
            },
            "postgresql" | "postgres" => Ok(Self::Postgres(format!("postgresql://{rest}"))),
            other => Err(StoreError::Config(format!(
                "database_url: zest stores in SQLite or PostgreSQL, not {other}"
            ))),
        }
    }

    /// Opens the verifier's store; `embedded` is the default SQLite file.
    pub fn open_verifier(
        &self,
        embedded: &std::path::Path,
    ) -> Result<std::sync::Arc<dyn VerifierStore>, StoreError> {
        Ok(match self {
            Self::Postgres(url) => std::sync::Arc::new(PgStore::open(url)?),
            Self::Sqlite => std::sync::Arc::new(SqliteStore::open(embedded)?),
            Self::SqliteFile(path) => std::sync::Arc::new(SqliteStore::open(path)?),
        })
    }

    /// Opens the registrar's store; `embedded` is the default SQLite file.
    pub fn open_registrar(
        &self,
        embedded: &std::path::Path,
    ) -> Result<std::sync::Arc<dyn RegistrarStore>, StoreError> {
        Ok(match self {
            Self::Postgres(url) => std::sync::Arc::new(PgStore::open(url)?),
            Self::Sqlite => std::sync::Arc::new(SqliteStore::open(embedded)?),
            Self::SqliteFile(path) => std::sync::Arc::new(SqliteStore::open(path)?),
        })
    }
}

/// A URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("Sqlite(DATA_DIR/zest.sqlite)"),
            Self::SqliteFile(path) => write!(f, "Sqlite({})", path.display()),
            Self::Postgres(url) => write!(f, "Postgres({})", redact(url)),
        }
    }
}

/// The tenant every record belongs to until multi-tenancy reaches the API.
pub const DEFAULT_TENANT: &str = "default";

/// A storage failure (not a business outcome: those are return values).
/// A PostgreSQL error with its cause: the client's own text is only "db error" or "error
/// connecting to server". The server's detail and hint (which may quote row values) are
/// left out.
fn postgres_message(e: &::postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database error: {}", postgres_message(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("{0}")]
    Config(String),
    #[error("database schema version {found} is newer than this zest understands ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("storage lock poisoned by a panicked writer")]
    Poisoned,
    #[error("database commit failed: {0}")]
    Commit(String),
    #[error("a stored record cannot be read: {0}")]
    Corrupt(String),
    #[error("the database file: {0}")]
    Io(String),
}

/// A validated registration, ready to store. Keys are kept as the base64 text of their
/// TPM2B_PUBLIC bytes; the EK certificate as base64 DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRegistration {
    pub agent_id: String,
    pub ek_tpm: String,
    pub ekcert: Option<String>,
    pub aik_tpm: String,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub mtls_cert: Option<String>,
    /// SHA-256 of the auth tag the agent must present to activate. The tag itself and the
    /// credential behind it are never stored.
    pub auth_tag_digest: Vec<u8>,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new agent.
    Created,
    /// A known agent with the same TPM identity registered again (new credential).
    Renewed,
    /// The agent id is taken by a different EK, EK certificate or AK: nothing changed.
    IdentityConflict,
}

/// A registered agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAgent {
    pub agent_id: String,
    pub ek_tpm: String,
    pub ekcert: Option<String>,
    pub aik_tpm: String,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub mtls_cert: Option<String>,
    pub active: bool,
    pub regcount: u32,
    pub auth_tag_digest: Vec<u8>,
}

/// The registrar's records.
pub trait RegistrarStore: Send + Sync + 'static {
    /// Inserts a new agent, or renews a known one whose EK, EK certificate and AK are
    /// unchanged; atomically, so two racing registrations cannot both win. An active agent's
    /// renewal is kept aside (its contact data and credential) until activated; an
    /// unactivated registration from before `stale_before` (Unix seconds) is forgotten first.
    fn register(
        &self,
        registration: &NewRegistration,
        stale_before: u64,
    ) -> Result<RegisterOutcome, StoreError>;

    /// The agent with this id, active or not.
    fn registered_agent(&self, agent_id: &str) -> Result<Option<RegisteredAgent>, StoreError>;

    /// Activates the credential whose auth-tag digest is `auth_tag_digest`: a pending
    /// renewal's (its contact data then replaces the active one), or the first
    /// registration's; neither when made before `stale_before` (Unix seconds). Returns
    /// whether one matched.
    fn activate(&self, agent_id: &str, auth_tag_digest: &[u8], stale_before: u64)
    -> Result<bool, StoreError>;

    /// Every registered agent id, active or not, in id order.
    fn list_agents(&self) -> Result<Vec<String>, StoreError>;

    /// Removes the agent. Returns whether it existed.
    fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError>;

    /// Adds a registration made elsewhere (`zest import keylime`) as it stands, active or
    /// not, unless the id is taken. Returns whether it was added.
    fn import_agent(&self, agent: &RegisteredAgent) -> Result<bool, StoreError>;
}
