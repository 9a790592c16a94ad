//! Headless Chromium (Debian's `chromium`) for the dashboard test: the page's DOM after it
//! rendered, and a screenshot kept as a test artifact.
//!
//! The browser reaches the verifier through [`forward`], a loopback HTTP listener that
//! relays each GET over HTTPS with the operator's client certificate: the pages are what a
//! browser holding that certificate gets, without installing one into a browser profile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::task::JoinHandle;

/// A headless Chromium with a profile of its own.
pub struct Browser {
    binary: PathBuf,
    profile: tempfile::TempDir,
    timeout: Duration,
}

impl Browser {
    /// `ZEST_CHROMIUM`, else `chromium` (Debian) or `chromium-browser` on the PATH. Each
    /// run may take `ZEST_CHROMIUM_TIMEOUT` seconds (default 60).
    pub fn find() -> anyhow::Result<Self> {
        let binary = match std::env::var_os("ZEST_CHROMIUM") {
            Some(path) => PathBuf::from(path),
            None => ["chromium", "chromium-browser"]
                .iter()
                .find_map(|name| {
                    std::env::var_os("PATH").and_then(|paths| {
                        std::env::split_paths(&paths)
                            .map(|dir| dir.join(name))
                            .find(|p| p.is_file())
                    })
                })
                .context("no chromium on the PATH: install Debian's chromium package (.ci/setup does)")?,
        };
        let timeout = std::env::var("ZEST_CHROMIUM_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_secs);
        Ok(Self {
            binary,
            profile: tempfile::Builder::new().prefix("zest-chromium-").tempdir()?,
            timeout,
        })
    }

    async fn run(&self, args: &[&str], url: &str) -> anyhow::Result<std::process::Output> {
        let mut command = tokio::process::Command::new(&self.binary);
        // No sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .arg(url)
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.timeout, command.output())
            .await
            .with_context(|| format!("chromium did not finish within {:?} on {url}", self.timeout))??;
        if !out.status.success() {
            bail!(
                "chromium failed on {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// The page's DOM once loaded, as HTML.
    pub async fn dom(&self, url: &str) -> anyhow::Result<String> {
        let out = self.run(&["--dump-dom"], url).await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A PNG of the page at 1280×1000.
    pub async fn screenshot(&self, url: &str, to: &Path) -> anyhow::Result<()> {
        let target = format!("--screenshot={}", to.display());
        self.run(&[&target, "--window-size=1280,1000"], url).await?;
        let png = std::fs::read(to).with_context(|| format!("no screenshot at {}", to.display()))?;
        if !png.starts_with(b"\x89PNG") {
            bail!("{} is not a PNG", to.display());
        }
        Ok(())
    }
}

/// Where tests keep artifacts: `ZEST_TEST_ARTIFACTS`, else `target/test-artifacts`.
pub fn artifact_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("ZEST_TEST_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A loopback HTTP listener relaying GETs to `target` (`https://host:port`) with `client`.
pub async fn forward(
    client: reqwest::Client,
    target: String,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |request: Request| {
        let (client, target) = (client.clone(), target.clone());
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            match client.get(format!("{target}{path}")).send().await {
                Ok(reply) => {
                    let status = reply.status().as_u16();
                    let kind = reply.headers().get(header::CONTENT_TYPE).cloned();
                    let body = reply.bytes().await.unwrap_or_default();
                    let mut response = Response::new(Body::from(body));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    if let Some(kind) = kind {
                        response.headers_mut().insert(header::CONTENT_TYPE, kind);
                    }
                    response
                }
                Err(e) => {
                    let mut response = Response::new(Body::from(e.to_string()));
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    response
                }
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}
