//! A zest registrar on loopback ports for one test, with its own data directory, and the
//! HTTP clients that talk to it (plain, TLS without and with the tenant certificate).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use tempfile::TempDir;
use zest::config::{DataDir, RegistrarConfig};
use zest::net::TlsMaterial;
use zest::registrar::RegistrarServer;
use zest::verifier::{VerifierConfig, VerifierServer};

use crate::agent::TestAgent;

/// How a test registrar is set up.
#[derive(Debug, Clone)]
pub struct RegistrarOptions {
    /// Check EK certificates against the store.
    pub require_ek_cert: bool,
    /// PEM files copied into the EK CA store before start.
    pub trusted_ek_cas: Vec<PathBuf>,
    /// How long a registration waits for its activation.
    pub registration_timeout: std::time::Duration,
    /// Connection, request and body limits of both listeners.
    pub serve_limits: zest::net::ServeLimits,
    /// `database_url`: the embedded file by default.
    pub database: zest::store::Database,
}

impl Default for RegistrarOptions {
    fn default() -> Self {
        Self {
            require_ek_cert: true,
            trusted_ek_cas: Vec::new(),
            registration_timeout: std::time::Duration::from_secs(600),
            serve_limits: zest::net::ServeLimits::default(),
            database: zest::store::Database::default(),
        }
    }
}

impl RegistrarOptions {
    /// EK certificates checked against the swtpm test CA.
    pub fn trusting_swtpm_ca() -> Self {
        let ca = crate::swtpm::EkCa::shared();
        Self {
            trusted_ek_cas: vec![ca.root_pem(), ca.intermediate_pem()],
            ..Self::default()
        }
    }
}

/// A registrar serving on free loopback ports; stops when dropped.
pub struct TestRegistrar {
    pub data: TempDir,
    pub server: RegistrarServer,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// `https://localhost:PORT`
    pub https: String,
}

impl TestRegistrar {
    /// Starts a registrar with a fresh data directory.
    pub async fn start(options: RegistrarOptions) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("zest-data-").tempdir()?;
        let data_dir = DataDir(data.path().to_path_buf());
        let mut config = RegistrarConfig::defaults(&data_dir);
        config.port = 0;
        config.tls_port = 0;
        config.require_ek_cert = options.require_ek_cert;
        config.registration_timeout = options.registration_timeout;
        config.serve_limits = options.serve_limits;
        config.database = options.database;
        std::fs::create_dir_all(&config.tpm_cert_store)?;
        for (i, ca) in options.trusted_ek_cas.iter().enumerate() {
            std::fs::copy(ca, config.tpm_cert_store.join(format!("ca{i}.pem")))
                .with_context(|| format!("copying {}", ca.display()))?;
        }
        let server = zest::registrar::start(&data_dir, &config).await?;
        let http = format!("http://127.0.0.1:{}", server.http_addr.port());
        let https = format!("https://localhost:{}", server.https_addr.port());
        Ok(Self {
            data,
            server,
            http,
            https,
        })
    }

    /// A registrar that checks EK certificates and trusts the swtpm test CA (root and
    /// intermediate in its store).
    pub async fn trusting_swtpm_ca() -> anyhow::Result<Self> {
        Self::start(RegistrarOptions::trusting_swtpm_ca()).await
    }

    /// Plain HTTP client (the agents' transport).
    pub fn plain_client(&self) -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap_or_default()
    }

    /// HTTPS client that trusts the registrar's CA and presents no certificate.
    pub fn anonymous_client(&self) -> anyhow::Result<reqwest::Client> {
        anonymous_client(self.data.path())
    }

    /// HTTPS client presenting the tenant certificate generated in `cv_ca/`.
    pub fn admin_client(&self) -> anyhow::Result<reqwest::Client> {
        admin_client(self.data.path())
    }

    /// Registers and activates `agent` over plain HTTP with API `version`, the way Keylime's
    /// Rust agent does (`POST` then `PUT /v{version}/agents/{uuid}`).
    pub async fn register_and_activate(&self, agent: &mut TestAgent, version: &str) -> anyhow::Result<()> {
        register_and_activate(&self.plain_client(), &self.http, agent, version).await
    }
}

fn tls_file(data_dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(data_dir.join("cv_ca").join(name))?)
}

/// HTTPS client that trusts the CA in `data_dir/cv_ca` and presents no certificate.
pub fn anonymous_client(data_dir: &Path) -> anyhow::Result<reqwest::Client> {
    anonymous_client_from(data_dir, None)
}

/// [`anonymous_client`] whose connections come from `local` (a loopback address of its own,
/// as an agent on its own machine would).
pub fn anonymous_client_from(
    data_dir: &Path,
    local: Option<std::net::IpAddr>,
) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&tls_file(data_dir, TlsMaterial::CA_CERT)?)?;
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .local_address(local)
        .build()?)
}

/// HTTPS client presenting the tenant certificate generated in `data_dir/cv_ca`.
pub fn admin_client(data_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&tls_file(data_dir, TlsMaterial::CA_CERT)?)?;
    let mut identity = tls_file(data_dir, TlsMaterial::CLIENT_CERT)?;
    identity.extend(tls_file(data_dir, TlsMaterial::CLIENT_KEY)?);
    let identity = reqwest::Identity::from_pem(&identity)?;
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .identity(identity)
        .build()?)
}

/// HTTPS client trusting the CA in `ca_dir` (`cacert.crt`) and presenting `cert`/`key`.
pub fn client_presenting(ca_dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_dir.join(TlsMaterial::CA_CERT))?)?;
    let mut identity = std::fs::read(cert)?;
    identity.extend(std::fs::read(key)?);
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?)
}

/// The `/metrics` page of the service at `base` (`https://host:port`), as `client` reads it.
pub async fn metrics_page(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(client.get(format!("{base}/metrics")).send().await?.text().await?)
}

/// A verifier on a free loopback port with its own data directory; stops when dropped.
pub struct TestVerifier {
    pub data: TempDir,
    pub server: VerifierServer,
    /// `https://localhost:PORT`
    pub https: String,
    pub config: VerifierConfig,
}

impl TestVerifier {
    /// Starts a verifier with a fresh data directory and Keylime's defaults.
    pub async fn start() -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("zest-verifier-").tempdir()?;
        let mut config = VerifierConfig::defaults();
        config.port = 0;
        Self::start_in(data, config).await
    }

    /// Starts a verifier on `data` (possibly used before: a restart).
    pub async fn start_in(data: TempDir, config: VerifierConfig) -> anyhow::Result<Self> {
        let server = zest::verifier::start(&DataDir(data.path().to_path_buf()), &config).await?;
        let https = format!("https://localhost:{}", server.addr.port());
        Ok(Self {
            data,
            server,
            https,
            config,
        })
    }

    /// Stops the verifier and starts another on the same data directory.
    pub async fn restart(self) -> anyhow::Result<Self> {
        let Self {
            data, server, config, ..
        } = self;
        drop(server);
        Self::start_in(data, config).await
    }

    pub fn admin_client(&self) -> anyhow::Result<reqwest::Client> {
        admin_client(self.data.path())
    }

    pub fn anonymous_client(&self) -> anyhow::Result<reqwest::Client> {
        anonymous_client(self.data.path())
    }

    /// `https://localhost:PORT/v{version}/{path}`
    pub fn url(&self, version: &str, path: &str) -> String {
        format!("{}/v{version}/{path}", self.https)
    }
}

/// Registers and activates `agent` at the registrar `base` (`http://host:port`) with API
/// `version`: `POST /v{version}/agents/{uuid}`, TPM2_ActivateCredential, then
/// `PUT /v{version}/agents/{uuid}` with the auth tag, as Keylime's Rust agent does.
pub async fn register_and_activate(
    client: &reqwest::Client,
    base: &str,
    agent: &mut TestAgent,
    version: &str,
) -> anyhow::Result<()> {
    register_at_and_activate_at(client, base, base, agent, version).await
}

/// Registers at the registrar `register_at` and activates at `activate_at` (registrars
/// sharing a database behind one address).
pub async fn register_at_and_activate_at(
    client: &reqwest::Client,
    register_at: &str,
    activate_at: &str,
    agent: &mut TestAgent,
    version: &str,
) -> anyhow::Result<()> {
    let url = format!("{register_at}/v{version}/agents/{}", agent.uuid);
    let (status, body) = send_json(client.post(&url).json(&agent.registration_body())).await?;
    if status != 200 {
        bail!("registration answered {status}: {body}");
    }
    let blob = body["results"]["blob"]
        .as_str()
        .context("no results.blob")?
        .to_owned();
    let credential = agent.activate_credential(&blob)?;
    let url = format!("{activate_at}/v{version}/agents/{}", agent.uuid);
    let (status, body) = send_json(client.put(&url).json(&agent.activation_body(&credential))).await?;
    if status != 200 {
        bail!("activation answered {status}: {body}");
    }
    Ok(())
}

/// Sends a request and returns the status and JSON body; fails if the body is not JSON.
pub async fn send_json(request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text)
        .with_context(|| format!("status {status}, body is not JSON: {text:?}"))?;
    Ok((status, body))
}

/// `zest ca issue --name NAME --client --tenant TENANT`, then an HTTPS client presenting it.
pub fn tenant_client(verifier: &TestVerifier, tenant: &str) -> reqwest::Client {
    let ca_dir = verifier.data.path().join("cv_ca");
    let out = tempfile::tempdir().unwrap();
    let issued = std::process::Command::new(crate::process::zest_binary().unwrap())
        .args(["ca", "issue", "--name", tenant, "--client", "--tenant", tenant])
        .arg("--dir")
        .arg(&ca_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    client_presenting(
        &ca_dir,
        &out.path().join(format!("{tenant}-cert.crt")),
        &out.path().join(format!("{tenant}-private.pem")),
    )
    .unwrap()
}
