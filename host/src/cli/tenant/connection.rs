//! Where `zest tenant` connects, with which certificate, and how it talks to the verifier
//! and the registrar (Keylime's envelope, API version negotiation, errors that name the cause).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use super::ConnectionArgs;
pub use crate::agent_client::Accept;
use crate::config::keylime::{Effective, Service};

/// Where the tenant connects and the files it authenticates with.
#[derive(Debug, Clone)]
pub struct Connection {
    pub verifier: String,
    pub registrar: String,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// tenant.conf `client_key_password`, for an encrypted PKCS#8 `client_key`.
    pub client_key_password: Option<String>,
    /// Every CA of tenant.conf's `trusted_server_ca` list after the first (`ca_cert`).
    pub more_cas: Vec<PathBuf>,
    /// tenant.conf `accept_tpm_hash_algs`, `accept_tpm_encryption_algs`,
    /// `accept_tpm_signing_algs`: what the identity quote and the verifier may accept.
    pub accept: Accept,
}

impl Connection {
    /// The tenant's settings: tenant.conf, then `--data-dir`, then the flags.
    pub(crate) fn resolve(
        args: &ConnectionArgs,
        data_dir: Option<&Path>,
        config_dir: &Path,
    ) -> anyhow::Result<Self> {
        let conf = Effective::load(Service::Tenant, config_dir)?;
        let get = |key: &str| conf.value(key).map(str::to_owned);
        let host_port = |ip: Option<String>, port: Option<String>, default_port: u16| {
            let ip = ip.filter(|s| !s.is_empty()).unwrap_or_else(|| "127.0.0.1".into());
            let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(default_port);
            join_host_port(&ip, port)
        };
        let mut verifier = host_port(get("verifier_ip"), get("verifier_port"), 8881);
        let mut registrar = host_port(get("registrar_ip"), get("registrar_port"), 8891);
        let conf_dir = conf
            .path_value("tls_dir")
            .filter(|d| d.as_os_str() != "default" && d.as_os_str() != "generate")
            // Keylime resolves a relative tls_dir against its work directory.
            .map(|d| {
                let work = std::env::var_os("KEYLIME_DIR").unwrap_or_else(|| "/var/lib/keylime".into());
                Path::new(&work).join(d)
            });
        let tls_dir = match (&args.tls_dir, data_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(data)) => data.join("cv_ca"),
            // Without either, where `zest serve` keeps it by default.
            (None, None) => {
                conf_dir.unwrap_or_else(|| Path::new(crate::config::DEFAULT_DATA_DIR).join("cv_ca"))
            }
        };
        let file = |key: &str, default: &str| -> PathBuf {
            // The data directory's layout wins over tenant.conf's file names.
            let named = if data_dir.is_some() || args.tls_dir.is_some() {
                None
            } else {
                get(key).filter(|v| !v.is_empty() && v != "default")
            };
            // `trusted_server_ca` is a list in Keylime (`["cacert.crt"]`): zest trusts its first.
            let named = named.map(|v| match crate::config::keylime::list_as_json(&v) {
                Ok(json) => serde_json::from_str::<Vec<Value>>(&json)
                    .ok()
                    .and_then(|l| l.first().and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or(v),
                Err(_) => v,
            });
            let name = named.unwrap_or_else(|| default.to_owned());
            let path = PathBuf::from(&name);
            if path.is_absolute() {
                path
            } else {
                tls_dir.join(path)
            }
        };
        let ca_cert = file("trusted_server_ca", "cacert.crt");
        // The rest of Keylime's `trusted_server_ca` list, under the same directory.
        let more_cas: Vec<PathBuf> = if data_dir.is_some() || args.tls_dir.is_some() {
            Vec::new()
        } else {
            get("trusted_server_ca")
                .and_then(|v| crate::config::keylime::list_as_json(&v).ok())
                .and_then(|json| serde_json::from_str::<Vec<String>>(&json).ok())
                .map(|names| names.iter().skip(1).map(|n| tls_dir.join(n)).collect())
                .unwrap_or_default()
        };
        let client_key_password = get("client_key_password").filter(|p| !p.is_empty());
        let client_cert = file("client_cert", "client-cert.crt");
        let client_key = file("client_key", "client-private.pem");
        if let Some(v) = &args.verifier {
            verifier = v.clone();
        }
        if let Some(r) = &args.registrar {
            registrar = r.clone();
        }
        let list = |key: &str| {
            conf.parsed("tenant", key, |v| {
                let json = crate::config::keylime::list_as_json(v)?;
                serde_json::from_str::<Vec<String>>(&json).map_err(|_| "must be a list of names".to_owned())
            })
        };
        let accept = Accept {
            hash: list("accept_tpm_hash_algs")?,
            encryption: list("accept_tpm_encryption_algs")?,
            signing: list("accept_tpm_signing_algs")?,
        };
        Ok(Self {
            accept,
            verifier: format!("https://{verifier}"),
            registrar: format!("https://{registrar}"),
            ca_cert,
            client_cert,
            client_key,
            client_key_password,
            more_cas,
        })
    }

    /// The client certificate followed by its key, in PEM; the key may be encrypted PKCS#8
    /// (`client_key_password`), as Keylime's ca_util writes it.
    pub(crate) fn identity_pem(&self) -> anyhow::Result<Vec<u8>> {
        crate::net::pki::KeyPairFiles {
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
            password: self.client_key_password.clone(),
        }
        .identity_pem()
        .with_context(|| {
            format!(
                "reading the client certificate {} and key {}",
                self.client_cert.display(),
                self.client_key.display()
            )
        })
    }

    pub(crate) fn client(&self) -> anyhow::Result<reqwest::Client> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
        };
        let mut cas = Vec::new();
        for path in std::iter::once(&self.ca_cert).chain(&self.more_cas) {
            let pem = read(path, "CA certificate")?;
            cas.push(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{}: not a PEM certificate", path.display()))?,
            );
        }
        let identity = self.identity_pem()?;
        let identity = reqwest::Identity::from_pem(&identity).with_context(|| {
            format!(
                "{} and {}: not a PEM certificate and key",
                self.client_cert.display(),
                self.client_key.display()
            )
        })?;
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(cas)
            .identity(identity)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTPS client")
    }
}

pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A connected tenant: one client, and the API version each server speaks.
pub(crate) struct Tenant {
    pub(crate) http: reqwest::Client,
    pub(crate) conn: Connection,
    /// Each server's API version, asked once per command (`update` and `add` send several).
    pub(crate) versions: [tokio::sync::OnceCell<String>; 2],
}

/// A server's reply: status and JSON body (Keylime's envelope).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn results(&self) -> &Value {
        member(&self.body, "results")
    }
}

/// `value[key]` without indexing: `Null` when `value` is not an object or has no `key`.
pub(crate) fn member<'a>(value: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    value.get(key).unwrap_or(&NULL)
}

/// Sets `key` in a JSON object; a value that is not an object is left alone.
pub(crate) fn set_member(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Server {
    Verifier,
    Registrar,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Registrar => "registrar",
        }
    }
}

impl Tenant {
    pub(crate) fn base(&self, server: Server) -> &str {
        match server {
            Server::Verifier => &self.conn.verifier,
            Server::Registrar => &self.conn.registrar,
        }
    }

    /// Sends a request; connection and TLS failures become errors that name the cause.
    pub(crate) async fn send(
        &self,
        server: Server,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<Reply> {
        let base = self.base(server);
        let response = request.send().await.map_err(|e| {
            let mut chain = vec![e.to_string()];
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push(s.to_string());
                source = s.source();
            }
            let text = chain.join(": ");
            let hint = if text.contains("Connection refused") {
                format!(" (is the {} running and listening there?)", server.name())
            } else if text.contains("certificate") || text.contains("Certificate") || text.contains("tls") {
                format!(
                    " (TLS: is {} the CA of the {}, and {} a client certificate it trusts?)",
                    self.conn.ca_cert.display(),
                    server.name(),
                    self.conn.client_cert.display()
                )
            } else {
                String::new()
            };
            anyhow!("cannot reach the {} at {base}: {text}{hint}", server.name())
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the {}'s answer", server.name()))?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            let all: &[u8] = &bytes;
            let head = all.get(..500).unwrap_or(all);
            json!({"status": String::from_utf8_lossy(head).into_owned()})
        });
        Ok(Reply { status, body })
    }

    /// Sends and requires a 2xx answer; otherwise the error carries the server's message.
    pub(crate) async fn expect(
        &self,
        server: Server,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Reply> {
        let reply = self.send(server, request).await?;
        self.succeeded(server, reply, what)
    }

    /// The reply when it is a 2xx, else an error naming `what` and the server's message.
    pub(crate) fn succeeded(&self, server: Server, reply: Reply, what: &str) -> anyhow::Result<Reply> {
        if !(200..300).contains(&reply.status) {
            let message = member(&reply.body, "status").as_str().unwrap_or("(no message)");
            bail!(
                "{what}: the {} answered {}: {message}",
                server.name(),
                reply.status
            );
        }
        Ok(reply)
    }

    /// The newest 2.x API version the server offers (zest and Keylime answer `GET /version`).
    pub(crate) async fn version(&self, server: Server) -> anyhow::Result<String> {
        let request = self.http.get(format!("{}/version", self.base(server)));
        let reply = self.send(server, request).await?;
        // A verifier in push mode answers 410 Gone; Keylime's tenant then speaks its own
        // newest 2.x.
        if reply.status == 410 {
            return Ok("2.6".to_owned());
        }
        let reply = self.succeeded(server, reply, "asking the API version")?;
        let results = reply.results();
        let mut offered: Vec<String> = results["supported_versions"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if let Some(current) = results["current_version"].as_str() {
            offered.push(current.to_owned());
        }
        offered
            .into_iter()
            .filter(|v| v.starts_with("2."))
            .max_by_key(|v| v.trim_start_matches("2.").parse::<u32>().unwrap_or(0))
            .ok_or_else(|| anyhow!("the {} offers no 2.x API version", server.name()))
    }

    pub(crate) async fn url(&self, server: Server, path: &str) -> anyhow::Result<String> {
        let [verifier, registrar] = &self.versions;
        let slot = match server {
            Server::Verifier => verifier,
            Server::Registrar => registrar,
        };
        let version = slot.get_or_try_init(|| self.version(server)).await?;
        Ok(format!("{}/v{version}/{path}", self.base(server)))
    }
}
