//! A PostgreSQL cluster of Debian's packages for one test: `initdb` in a temporary directory,
//! a server on a free loopback port, run as an unprivileged user (`nobody` when the tests run
//! as root, since PostgreSQL refuses root), stopped when dropped. No system service is used.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use tempfile::TempDir;

/// A running cluster; dropping it stops the server and removes its files.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/N/bin` with `initdb` (Debian's layout), or `ZEST_PG_BIN`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("ZEST_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql): run .ci/setup")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/N/bin/initdb: run .ci/setup")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program args…`, as `nobody` when we are root.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn checked(output: std::io::Result<Output>, what: &str) -> anyhow::Result<Output> {
    let output = output.with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

impl Postgres {
    /// Creates and starts a cluster whose superuser `zest` connects without a password over
    /// loopback.
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("zest-pg-").tempdir()?;
        if is_root() {
            // The server's own files belong to the user it runs as.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let data = dir.path().join("data");
        checked(
            unprivileged(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "zest",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ])
                .output(),
            "initdb",
        )?;
        let port = crate::free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            dir.path().display()
        );
        checked(
            unprivileged(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "-w", "-t", "60", "start"])
                .output(),
            "pg_ctl start",
        )?;
        Ok(Self { dir, bin, port })
    }

    /// `postgresql://zest@127.0.0.1:PORT/NAME`.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://zest@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let sql = format!("CREATE DATABASE \"{name}\"");
        with_client(&self.url("postgres"), move |client| {
            Ok(client.batch_execute(&sql)?)
        })?;
        Ok(self.url(name))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = unprivileged(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Runs `work` with a connection to `url`, on a thread of its own: the `postgres` client
/// blocks on a runtime of its own, which an async test's thread must not do.
pub fn with_client<T: Send>(
    url: &str,
    work: impl FnOnce(&mut postgres::Client) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut client = postgres::Client::connect(url, postgres::NoTls)?;
                work(&mut client)
            })
            .join()
            .unwrap_or_else(|_| bail!("a database call panicked"))
    })
}
