//! Keylime's configuration files, read as Keylime 7.14 reads them, with zest's own options
//! in a `[zest]` section, environment overrides and command-line flags on top.
//!
//! Order, later wins: built-in default, the first of `DIR/<service>.conf` and
//! `/usr/etc/keylime/<service>.conf` (DIR is `/etc/keylime` or `--config-dir`), the
//! `.conf.d/*.conf` snippets of both in name order, `KEYLIME_<SERVICE>_<OPTION>` (section
//! other than the service's own: `KEYLIME_<SERVICE>_<SECTION>_<OPTION>`), then the flag.
//! `KEYLIME_<SERVICE>_CONFIG=FILE` replaces the files and snippets, as in Keylime.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::ini;

/// The services with a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Verifier,
    Registrar,
    Tenant,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Registrar => "registrar",
            Self::Tenant => "tenant",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Verifier, Self::Registrar, Self::Tenant]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// How zest treats a Keylime option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// zest honours it.
    Used,
    /// Read and shown, but zest has no counterpart (its reason in the text).
    Ignored(&'static str),
}

/// One known option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub section: &'static str,
    pub key: &'static str,
    /// The command-line flag that overrides it (clap id: the flag without dashes, `_` for `-`).
    pub flag: Option<&'static str>,
    pub default: &'static str,
    /// A password or credential: refused in group- or world-readable files.
    pub secret: bool,
    pub usage: Use,
}

const fn opt(
    section: &'static str,
    key: &'static str,
    flag: Option<&'static str>,
    default: &'static str,
) -> OptionSpec {
    OptionSpec {
        section,
        key,
        flag,
        default,
        secret: false,
        usage: Use::Used,
    }
}

const fn ignored(
    section: &'static str,
    key: &'static str,
    default: &'static str,
    why: &'static str,
) -> OptionSpec {
    OptionSpec {
        section,
        key,
        flag: None,
        default,
        secret: false,
        usage: Use::Ignored(why),
    }
}

/// A password zest uses: refused in group- or world-readable files like every secret.
const fn used_secret(section: &'static str, key: &'static str) -> OptionSpec {
    OptionSpec {
        section,
        key,
        flag: None,
        default: "",
        secret: true,
        usage: Use::Used,
    }
}

/// Keylime's default severity labels and policy (everything is an emergency).
pub const DEFAULT_SEVERITY_LABELS: &str =
    r#"["info", "notice", "warning", "error", "critical", "alert", "emergency"]"#;
pub const DEFAULT_SEVERITY_POLICY: &str = r#"[{"event_id": ".*", "severity_label": "emergency"}]"#;

pub const VERIFIER_OPTIONS: &[OptionSpec] = &[
    opt("verifier", "ip", Some("verifier_ip"), "127.0.0.1"),
    opt("verifier", "port", Some("verifier_port"), "8881"),
    opt("verifier", "uuid", Some("verifier_id"), "default"),
    opt("verifier", "mode", Some("mode"), "pull"),
    opt("verifier", "quote_interval", Some("quote_interval"), "2"),
    opt("verifier", "max_retries", Some("max_retries"), "5"),
    opt("verifier", "retry_interval", Some("retry_interval"), "2"),
    opt("verifier", "request_timeout", Some("request_timeout"), "60"),
    opt(
        "verifier",
        "measured_boot_policy_name",
        Some("measured_boot_policy_name"),
        "accept-all",
    ),
    opt(
        "verifier",
        "severity_labels",
        Some("severity_labels"),
        DEFAULT_SEVERITY_LABELS,
    ),
    opt(
        "verifier",
        "severity_policy",
        Some("severity_policy"),
        DEFAULT_SEVERITY_POLICY,
    ),
    opt("verifier", "nonce_lifetime", Some("nonce_lifetime"), "60"),
    opt("verifier", "session_lifetime", Some("session_lifetime"), "180"),
    opt(
        "verifier",
        "challenge_lifetime",
        Some("challenge_lifetime"),
        "1800",
    ),
    opt(
        "verifier",
        "auto_recover_attestation_failures",
        Some("auto_recover_attestation_failures"),
        "False",
    ),
    opt("verifier", "tls_dir", None, "generate"),
    opt("verifier", "server_key", None, "default"),
    used_secret("verifier", "server_key_password"),
    opt("verifier", "server_cert", None, "default"),
    opt("verifier", "trusted_client_ca", None, "default"),
    opt("verifier", "client_key", None, "default"),
    used_secret("verifier", "client_key_password"),
    opt("verifier", "client_cert", None, "default"),
    opt("verifier", "trusted_server_ca", None, "default"),
    used_secret("verifier", "database_url"),
    ignored(
        "verifier",
        "num_workers",
        "0",
        "zest runs one process with an async runtime",
    ),
    ignored(
        "verifier",
        "enable_agent_mtls",
        "True",
        "zest always uses mTLS with pull agents",
    ),
    opt("verifier", "exponential_backoff", None, "True"),
    opt("verifier", "require_allow_list_signatures", None, "False"),
    opt("verifier", "max_upload_size", None, "104857600"),
    opt("revocations", "webhook_url", Some("revocation_webhook"), ""),
    opt(
        "revocations",
        "enabled_revocation_notifications",
        None,
        "['agent']",
    ),
    ignored(
        "revocations",
        "zmq_ip",
        "127.0.0.1",
        "zest offers no ZeroMQ channel",
    ),
    ignored("revocations", "zmq_port", "8992", "zest offers no ZeroMQ channel"),
    opt("zest", "data_dir", Some("data_dir"), super::DEFAULT_DATA_DIR),
    opt("zest", "log_format", Some("log_format"), "text"),
    opt("zest", "max_connections", None, "4096"),
    opt("zest", "max_in_flight_requests", None, "512"),
    opt("zest", "body_timeout", None, "30"),
    opt("zest", "idle_timeout", None, "60"),
    opt("zest", "max_evidence_size", None, "67108864"),
    opt("zest", "policy_timeout", None, "2"),
    opt("zest", "lease_period", None, "10"),
    opt("zest", "policy_memory", None, "268435456"),
    opt("zest", "history_keep_passes", None, "100"),
    opt("zest", "history_keep_failures", None, "1000"),
    opt("verifier", "durable_attestation_import", None, ""),
    opt("verifier", "persistent_store_url", None, ""),
];

pub const REGISTRAR_OPTIONS: &[OptionSpec] = &[
    opt("registrar", "ip", Some("registrar_ip"), "127.0.0.1"),
    opt("registrar", "port", Some("registrar_port"), "8890"),
    opt("registrar", "tls_port", Some("registrar_tls_port"), "8891"),
    opt("registrar", "tls_dir", None, "generate"),
    opt("registrar", "server_key", None, "default"),
    used_secret("registrar", "server_key_password"),
    opt("registrar", "server_cert", None, "default"),
    opt("registrar", "trusted_client_ca", None, "default"),
    used_secret("registrar", "database_url"),
    opt("zest", "data_dir", Some("data_dir"), super::DEFAULT_DATA_DIR),
    opt("zest", "tpm_cert_store", Some("tpm_cert_store"), ""),
    opt("zest", "require_ek_cert", Some("no_ek_cert_check"), "True"),
    opt(
        "zest",
        "registration_timeout",
        Some("registration_timeout"),
        "600",
    ),
    opt("zest", "log_format", Some("log_format"), "text"),
    opt("zest", "max_connections", None, "4096"),
    opt("zest", "max_in_flight_requests", None, "512"),
    opt("zest", "body_timeout", None, "30"),
    opt("zest", "idle_timeout", None, "60"),
];

// The tenant's flags (`--verifier HOST:PORT`, …) override these in `cli::tenant` itself.
pub const TENANT_OPTIONS: &[OptionSpec] = &[
    opt("tenant", "verifier_ip", None, "127.0.0.1"),
    opt("tenant", "verifier_port", None, "8881"),
    opt("tenant", "registrar_ip", None, "127.0.0.1"),
    opt("tenant", "registrar_port", None, "8891"),
    opt("tenant", "tls_dir", None, "default"),
    opt("tenant", "trusted_server_ca", None, "default"),
    opt("tenant", "client_cert", None, "default"),
    opt("tenant", "client_key", None, "default"),
    used_secret("tenant", "client_key_password"),
    ignored(
        "tenant",
        "require_ek_cert",
        "True",
        "zest's registrar checks EK certificates itself",
    ),
    ignored(
        "tenant",
        "tpm_cert_store",
        "/var/lib/keylime/tpm_cert_store",
        "zest's registrar checks EK certificates itself",
    ),
    opt(
        "tenant",
        "accept_tpm_hash_algs",
        None,
        "['sha512', 'sha384', 'sha256']",
    ),
    opt("tenant", "accept_tpm_encryption_algs", None, "['ecc', 'rsa']"),
    opt(
        "tenant",
        "accept_tpm_signing_algs",
        None,
        "['ecschnorr', 'rsassa']",
    ),
    ignored("tenant", "enable_agent_mtls", "True", "zest always uses mTLS"),
    ignored(
        "tenant",
        "max_payload_size",
        "1048576",
        "zest tenant sends no payloads",
    ),
];

pub fn options(service: Service) -> &'static [OptionSpec] {
    match service {
        Service::Verifier => VERIFIER_OPTIONS,
        Service::Registrar => REGISTRAR_OPTIONS,
        Service::Tenant => TENANT_OPTIONS,
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File { path: PathBuf, line: usize },
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => write!(f, "default"),
            Self::File { path, line } => write!(f, "{}:{line}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
            Self::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Setting {
    pub spec: Option<OptionSpec>,
    pub section: String,
    pub key: String,
    pub value: String,
    pub source: Source,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Syntax { path: PathBuf, detail: String },
    #[error(
        "{path} sets {key} but is readable by group or others (mode {mode:o}); a file holding \
         secrets must be private: chmod 600 {path} (CVE-2022-23952)"
    )]
    SecretExposed { path: PathBuf, key: String, mode: u32 },
    #[error("[{section}] {key} = {value:?}: {detail}")]
    Value {
        section: String,
        key: String,
        value: String,
        detail: String,
    },
}

/// The effective configuration of one service.
#[derive(Debug, Clone)]
pub struct Effective {
    pub service: Service,
    /// Where the service's files were looked for.
    pub dir: PathBuf,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    settings: BTreeMap<(String, String), Setting>,
}

impl Effective {
    /// Defaults, files and environment of `service` (flags come with [`Effective::set_flag`]).
    /// `dir` is `/etc/keylime` or `--config-dir`.
    pub fn load(service: Service, dir: &Path) -> Result<Self, ConfigError> {
        let mut effective = Self {
            service,
            dir: dir.to_owned(),
            files: Vec::new(),
            settings: BTreeMap::new(),
        };
        for spec in options(service) {
            effective.settings.insert(
                (spec.section.to_owned(), spec.key.to_owned()),
                Setting {
                    spec: Some(*spec),
                    section: spec.section.into(),
                    key: spec.key.into(),
                    value: spec.default.into(),
                    source: Source::Default,
                },
            );
        }
        for file in files_of(service, dir) {
            effective.read_file(&file)?;
        }
        effective.read_env();
        Ok(effective)
    }

    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let entries = ini::entries(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        for (section, key, value, line) in entries {
            let spec = options(self.service)
                .iter()
                .find(|s| s.section == section && s.key == key)
                .copied();
            // Only the sections this service reads; a shared file may hold others.
            let ours = spec.is_some() || section == self.service.name() || section == "zest";
            if !ours {
                continue;
            }
            let value = strip_quotes(&value).to_owned();
            if spec.is_some_and(|s| holds_secret(&s, &value)) && mode & 0o044 != 0 {
                return Err(ConfigError::SecretExposed {
                    path: path.to_owned(),
                    key,
                    mode: mode & 0o777,
                });
            }
            self.settings.insert(
                (section.clone(), key.clone()),
                Setting {
                    spec,
                    section,
                    key,
                    value,
                    source: Source::File {
                        path: path.to_owned(),
                        line,
                    },
                },
            );
        }
        self.files.push(path.to_owned());
        Ok(())
    }

    fn read_env(&mut self) {
        let service = self.service.name().to_uppercase();
        for setting in self.settings.values_mut() {
            let name = if setting.section == self.service.name() {
                format!("KEYLIME_{service}_{}", setting.key.to_uppercase())
            } else {
                format!(
                    "KEYLIME_{service}_{}_{}",
                    setting.section.to_uppercase(),
                    setting.key.to_uppercase()
                )
            };
            if let Ok(value) = std::env::var(&name) {
                setting.value = strip_quotes(&value).to_owned();
                setting.source = Source::Env(name);
            }
        }
    }

    /// A flag given on the command line (or its `ZEST_…` variable) overrides `section.key`.
    pub fn set_flag(&mut self, section: &str, key: &str, value: String, source: String) {
        if let Some(s) = self.settings.get_mut(&(section.to_owned(), key.to_owned())) {
            s.value = value;
            s.source = Source::Flag(source);
        }
    }

    /// The value of an option of the service's own section, then `[zest]`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(self.service.name(), key)
            .or_else(|| self.get("zest", key))
    }

    /// Whether `section.key` still has its built-in default (no file, variable or flag set it).
    pub fn is_default(&self, section: &str, key: &str) -> bool {
        self.settings
            .get(&(section.to_owned(), key.to_owned()))
            .is_none_or(|s| matches!(s.source, Source::Default))
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.settings
            .get(&(section.to_owned(), key.to_owned()))
            .map(|s| s.value.as_str())
    }

    /// A path option; `None` when empty.
    pub fn path_value(&self, key: &str) -> Option<PathBuf> {
        self.value(key).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// Parses `section.key` with `parse`, naming the option and its source on failure.
    pub fn parsed<T>(
        &self,
        section: &str,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let setting = self.settings.get(&(section.to_owned(), key.to_owned()));
        let value = setting.map(|s| s.value.as_str()).unwrap_or("");
        parse(value).map_err(|detail| ConfigError::Value {
            section: section.into(),
            key: key.into(),
            value: value.into(),
            detail: match setting {
                Some(s) => format!("{detail} (from {})", s.source),
                None => detail,
            },
        })
    }

    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.settings.values()
    }
}

/// Whether a value of `spec` is a credential: a password, or a database URL with one
/// (`sqlite` alone is not).
fn holds_secret(spec: &OptionSpec, value: &str) -> bool {
    spec.secret && !value.is_empty() && (spec.key != "database_url" || value.contains('@'))
}

/// Keylime strips surrounding spaces and double quotes from every value.
fn strip_quotes(value: &str) -> &str {
    value.trim_matches(|c| c == '"' || c == ' ')
}

/// Python's `getboolean`.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    ini::parse_bool(value).ok_or_else(|| "not a boolean (true/false, yes/no, on/off, 1/0)".into())
}

/// A Keylime list option (a Python literal such as `['a', 'b']` or `[{"k": "v"}]`) as JSON text.
pub fn list_as_json(value: &str) -> Result<String, String> {
    fn json(lit: ini::PyLit) -> serde_json::Value {
        use serde_json::Value;
        match lit {
            ini::PyLit::Str(s) => Value::String(s),
            ini::PyLit::Int(i) => Value::from(i),
            ini::PyLit::Float(f) => Value::from(f),
            ini::PyLit::Bool(b) => Value::Bool(b),
            ini::PyLit::None => Value::Null,
            ini::PyLit::List(items) => Value::Array(items.into_iter().map(json).collect()),
            ini::PyLit::Dict(pairs) => Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let key = match json(k) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, json(v))
                    })
                    .collect(),
            ),
        }
    }
    let items = ini::parse_list(value).map_err(|e| e.to_string())?;
    Ok(serde_json::Value::Array(items.into_iter().map(json).collect()).to_string())
}

/// The files of `service`, in the order they apply.
fn files_of(service: Service, dir: &Path) -> Vec<PathBuf> {
    let name = service.name();
    if let Some(file) = std::env::var_os(format!("KEYLIME_{}_CONFIG", name.to_uppercase())) {
        let file = PathBuf::from(file);
        if file.is_file() {
            return vec![file];
        }
    }
    let usr = PathBuf::from("/usr/etc/keylime");
    let mut files = Vec::new();
    let base = [dir.join(format!("{name}.conf")), usr.join(format!("{name}.conf"))]
        .into_iter()
        .find(|p| p.is_file());
    let Some(base) = base else {
        return files;
    };
    files.push(base);
    for snippets in [
        usr.join(format!("{name}.conf.d")),
        dir.join(format!("{name}.conf.d")),
    ] {
        let Ok(read) = std::fs::read_dir(&snippets) else {
            continue;
        };
        let mut found: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// A setting's value as logs and `config show` print it: credentials only as "set".
pub fn shown(s: &Setting) -> String {
    if s.spec.is_some_and(|spec| holds_secret(&spec, &s.value)) {
        "(secret, set)".into()
    } else {
        s.value.clone()
    }
}

/// Logs the settings that differ from the defaults, with where each came from.
pub fn log_overrides(effective: &Effective) {
    for s in effective.settings().filter(|s| s.source != Source::Default) {
        tracing::info!(
            service = effective.service.name(),
            option = %format!("[{}] {}", s.section, s.key),
            value = %shown(s),
            source = %s.source,
            "configuration"
        );
    }
}

/// `zest config show`: every option with its effective value and source. Secrets are
/// shown as set or not, never their value.
pub fn show(effective: &Effective) -> String {
    let mut out = String::new();
    if effective.files.is_empty() {
        out.push_str(&format!(
            "# no {}.conf found in {} or /usr/etc/keylime: defaults, environment and flags only\n",
            effective.service.name(),
            effective.dir.display()
        ));
    } else {
        for f in &effective.files {
            out.push_str(&format!("# read {}\n", f.display()));
        }
    }
    let mut section = String::new();
    for s in effective.settings() {
        if s.section != section {
            section.clone_from(&s.section);
            out.push_str(&format!("[{section}]\n"));
        }
        let value = if s.spec.is_some_and(|spec| spec.secret) {
            if s.value.is_empty() {
                String::new()
            } else {
                "(secret, set)".into()
            }
        } else {
            s.value.clone()
        };
        let note = match s.spec.map(|spec| spec.usage) {
            Some(Use::Used) => String::new(),
            Some(Use::Ignored(why)) => format!("; not used: {why}"),
            None => "; unknown to zest".into(),
        };
        out.push_str(&format!("{} = {value}    # {}{note}\n", s.key, s.source));
    }
    out
}
