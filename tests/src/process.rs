//! Support for benchmarks: a real `zest verifier` process (release build) whose CPU time
//! and memory are read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::server::send_json;

pub fn zest_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("ZEST_BIN") {
        return Ok(path.into());
    }
    // target/release/deps/pull_round-… → target/release/zest
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("zest"))
        .context("no target directory")?;
    if !path.exists() {
        bail!(
            "{} is missing: build it first (`cargo build -p zest`, with `--release` for benchmarks)",
            path.display()
        );
    }
    Ok(path)
}

/// CPU seconds (user + system) of a process so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let per_second: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()?;
    Ok(ticks / per_second)
}

pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A `zest verifier` process on a free port with its own data directory; killed on drop.
pub struct Verifier {
    pub child: Child,
    pub data: tempfile::TempDir,
    /// `https://localhost:PORT/v2.6`
    pub url: String,
    /// `https://localhost:PORT`
    pub https: String,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Verifier {
    /// Starts `zest verifier` with `args` besides its data directory and port.
    pub async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("zest-bench-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(zest_binary()?)
            .args(["verifier", "--data-dir"])
            .arg(data.path())
            .args(["--verifier-port", &port.to_string()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("ZEST_BENCH_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            })
            .spawn()?;
        let verifier = Self {
            child,
            data,
            url: format!("https://localhost:{port}/v2.6"),
            https: format!("https://localhost:{port}"),
        };
        let deadline = Instant::now() + crate::wait_limit();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("the verifier did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(verifier)
    }

    pub async fn status(&self, client: &reqwest::Client, uuid: &str) -> anyhow::Result<Value> {
        let (_, reply) = send_json(client.get(format!("{}/agents/{uuid}", self.url))).await?;
        Ok(reply["results"].clone())
    }
}

/// A `zest` process of a test, its stderr in a log file; killed (SIGKILL) when dropped.
pub struct ZestProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for ZestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ZestProcess {
    /// Starts `zest ARGS` with `RUST_LOG=info` (and none of the test's own `ZEST_DATA_DIR`
    /// or `ZEST_CONFIG_DIR`), its stderr in `log`, and waits up to 30 s until it listens on
    /// `port`; the error holds its log.
    pub async fn start(args: &[&std::ffi::OsStr], port: u16, log: &Path) -> anyhow::Result<Self> {
        let child = Command::new(zest_binary()?)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("ZEST_DATA_DIR")
            .env_remove("ZEST_CONFIG_DIR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        let mut zest = Self {
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + crate::wait_limit();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = zest.child.try_wait()? {
                bail!("zest exited ({status}) before listening: {}", zest.log_text());
            }
            if Instant::now() > deadline {
                bail!("zest did not listen within 30 s: {}", zest.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(zest)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
