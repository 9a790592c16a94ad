//! Configuration of the services: defaults match Keylime's, the CLI fills them in.

pub mod ini;
pub mod keylime;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Where a zest installation keeps its state when no `--data-dir` is given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/zest";

/// Creates `dir` and its missing parents readable by their owner only (0700), whatever the
/// umask: they hold keys, certificates trusted for EKs, or compiled code.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The data directory layout: one SQLite file, Keylime-style TLS material, EK CA store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// The embedded database file.
    pub fn database(&self) -> PathBuf {
        self.0.join("zest.sqlite")
    }

    /// TLS material, named as Keylime's verifier generates it.
    pub fn tls_dir(&self) -> PathBuf {
        self.0.join("cv_ca")
    }

    /// Trusted EK CA certificates (Keylime's `tpm_cert_store`).
    pub fn tpm_cert_store(&self) -> PathBuf {
        self.0.join("tpm_cert_store")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the directory (and its parents) if needed, readable by its owner only: it
    /// holds keys, the database and compiled policies. An existing directory is tightened
    /// to 0700 too.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)?;
        let mode = std::fs::metadata(&self.0)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            tracing::warn!(dir = %self.0.display(), mode = format!("{mode:o}"), "tightening the data directory to 0700");
            std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
}

/// The registrar's settings (Keylime `[registrar]` names in the comments).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrarConfig {
    /// `ip`: address both listeners bind.
    pub ip: IpAddr,
    /// `port`: plain HTTP for agents (8890).
    pub port: u16,
    /// `tls_port`: HTTPS for agents and the tenant (8891).
    pub tls_port: u16,
    /// Directory of trusted EK CA certificates (`[tenant] tpm_cert_store` in Keylime).
    pub tpm_cert_store: PathBuf,
    /// Check EK certificates at registration: a certificate is required, must carry the
    /// EK's key and must chain to the store. Keylime leaves this to its tenant.
    pub require_ek_cert: bool,
    /// `[zest] registration_timeout`: how long a registration waits for its activation.
    /// Until then a re-registration of an active agent changes nothing it serves; after
    /// it, an unactivated registration no longer holds the agent id.
    pub registration_timeout: std::time::Duration,
    /// `[zest]` connection, request and body limits of both listeners.
    pub serve_limits: crate::net::ServeLimits,
    /// Keylime's TLS options (`tls_dir`, `server_cert`, `server_key`, …).
    pub tls: crate::net::TlsOptions,
    /// `database_url`: the embedded SQLite file, or a PostgreSQL database.
    pub database: crate::store::Database,
}

impl RegistrarConfig {
    /// Keylime's defaults, with the EK CA store inside `data_dir`.
    pub fn defaults(data_dir: &DataDir) -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8890,
            tls_port: 8891,
            tpm_cert_store: data_dir.tpm_cert_store(),
            require_ek_cert: true,
            registration_timeout: std::time::Duration::from_secs(600),
            serve_limits: crate::net::ServeLimits::default(),
            tls: crate::net::TlsOptions::default(),
            database: crate::store::Database::default(),
        }
    }
}
