//! An existing Keylime PKI works unchanged: Keylime's TLS options (`tls_dir`, `server_cert`,
//! `server_key`, `server_key_password`, `trusted_client_ca` as a list, `client_cert`,
//! `client_key`, `client_key_password`, `trusted_server_ca`) name the files, keys may be
//! encrypted PKCS#8 (what Keylime's `ca_util` writes with a password), and relative paths
//! resolve under `tls_dir` as Keylime resolves them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use zest::config::{DataDir, RegistrarConfig};
use zest::net::TlsOptions;
use zest::verifier::VerifierConfig;
use zest_tests::process::zest_binary;
use zest_tests::server::{TestVerifier, send_json};

struct Ca {
    cert_pem: String,
    key: KeyPair,
    params: CertificateParams,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert_pem: cert.pem(),
        key,
        params,
    }
}

/// A leaf of `ca`: (certificate PEM, PKCS#8 key PEM).
fn leaf(ca: &Ca, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Encrypts a PKCS#8 key PEM with `openssl pkcs8 -topk8 -v2 aes256` (PBES2, as Keylime's
/// `ca_util` and Python's `BestAvailableEncryption` write), or as a traditional OpenSSL key.
fn encrypt(key_pem: &str, password: &str, out: &Path, traditional: bool) {
    let plain = out.with_extension("plain");
    std::fs::write(&plain, key_pem).unwrap();
    let mut command = Command::new("openssl");
    if traditional {
        command.args(["ec", "-aes256", "-passout", &format!("pass:{password}")]);
    } else {
        command.args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-passout",
            &format!("pass:{password}"),
        ]);
    }
    let status = command
        .arg("-in")
        .arg(&plain)
        .arg("-out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::remove_file(plain).unwrap();
}

/// A site's PKI in `dir`: the server's CA, two client CAs, the verifier's client identity.
struct Pki {
    dir: PathBuf,
    server_ca: String,
    /// Operator certificates of the second client CA.
    client: (String, String),
    /// A client of a CA the options do not list.
    stranger: (String, String),
}

fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let server_ca = ca("site server CA");
    let client_ca_1 = ca("site client CA 1");
    let client_ca_2 = ca("site client CA 2");
    let other = ca("another CA");
    let (server_cert, server_key) = leaf(&server_ca, "verifier", true);
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("server-ca.crt", &server_ca.cert_pem);
    write("client-ca-1.crt", &client_ca_1.cert_pem);
    write("client-ca-2.crt", &client_ca_2.cert_pem);
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    write("certs/verifier.crt", &server_cert);
    encrypt(&server_key, "zestpw", &dir.join("verifier.key"), false);
    encrypt(&server_key, "zestpw", &dir.join("verifier-traditional.key"), true);
    let (vclient_cert, vclient_key) = leaf(&client_ca_1, "verifier-client", false);
    write("verifier-client.crt", &vclient_cert);
    encrypt(&vclient_key, "clientpw", &dir.join("verifier-client.key"), false);
    Pki {
        dir: dir.to_path_buf(),
        server_ca: server_ca.cert_pem,
        client: leaf(&client_ca_2, "operator", false),
        stranger: leaf(&other, "stranger", false),
    }
}

fn options(pki: &Pki) -> TlsOptions {
    TlsOptions {
        tls_dir: pki.dir.display().to_string(),
        server_cert: "certs/verifier.crt".into(),
        server_key: "verifier.key".into(),
        server_key_password: "zestpw".into(),
        trusted_client_ca: "['client-ca-1.crt', 'client-ca-2.crt']".into(),
        client_cert: "verifier-client.crt".into(),
        client_key: "verifier-client.key".into(),
        client_key_password: "clientpw".into(),
        trusted_server_ca: "['server-ca.crt']".into(),
    }
}

fn client(pki: &Pki, identity: &(String, String)) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.server_ca.as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(format!("{}{}", identity.0, identity.1).as_bytes()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .identity(identity)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_verifier_and_registrar_serve_with_the_sites_pki_and_encrypted_keys() {
    let root = tempfile::tempdir().unwrap();
    let pki = pki(&root.path().join("pki"));
    let data = tempfile::Builder::new().prefix("zest-pki-").tempdir().unwrap();
    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.tls = options(&pki);
    let verifier = TestVerifier::start_in(data, config.clone()).await.unwrap();
    let url = verifier.url("2.6", "agents/");

    // An operator of the second listed client CA, over the site's server certificate.
    let (status, reply) = send_json(client(&pki, &pki.client).get(&url)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    // A client of an unlisted CA fails the handshake; so does zest's own generated one,
    // which this configuration does not trust.
    assert!(client(&pki, &pki.stranger).get(&url).send().await.is_err());
    assert!(
        !verifier.data.path().join("cv_ca").exists(),
        "nothing generated when the PKI is named"
    );

    // The registrar with the same files.
    let data_dir = tempfile::tempdir().unwrap();
    let dir = DataDir(data_dir.path().to_path_buf());
    let mut registrar = RegistrarConfig::defaults(&dir);
    registrar.port = 0;
    registrar.tls_port = 0;
    registrar.require_ek_cert = false;
    registrar.tls = options(&pki);
    let server = zest::registrar::start(&dir, &registrar).await.unwrap();
    let url = format!("https://localhost:{}/v2.6/agents/", server.https_addr.port());
    let (status, reply) = send_json(client(&pki, &pki.client).get(&url)).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(client(&pki, &pki.stranger).get(&url).send().await.is_err());
}

/// One way of getting the options wrong.
type Change = Box<dyn Fn(&mut TlsOptions)>;

#[tokio::test]
async fn bad_pki_options_stop_the_start_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let pki = pki(&root.path().join("pki"));
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "wrong password",
            Box::new(|o| o.server_key_password = "nope".into()),
            "password is wrong",
        ),
        (
            "no password",
            Box::new(|o| o.server_key_password = String::new()),
            "no password is set",
        ),
        (
            "traditional encrypted key",
            Box::new(|o| o.server_key = "verifier-traditional.key".into()),
            "openssl pkcs8 -topk8",
        ),
        (
            "all",
            Box::new(|o| o.trusted_client_ca = "all".into()),
            "turns off peer verification",
        ),
        (
            "empty list",
            Box::new(|o| o.trusted_client_ca = "[]".into()),
            "is empty",
        ),
        (
            "missing file",
            Box::new(|o| o.server_cert = "nowhere.crt".into()),
            "nowhere.crt",
        ),
        (
            "generate with files",
            Box::new(|o| o.tls_dir = "generate".into()),
            "tls_dir = generate needs the other TLS options",
        ),
    ];
    for (what, change, expected) in cases {
        let mut tls = options(&pki);
        change(&mut tls);
        let mut config = VerifierConfig::defaults();
        config.port = 0;
        config.tls = tls;
        let data = tempfile::Builder::new().prefix("zest-pki-").tempdir().unwrap();
        let error = match TestVerifier::start_in(data, config).await {
            Ok(_) => panic!("{what}: the verifier started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(expected), "{what}: {error}");
        assert!(
            !error.contains("zestpw"),
            "{what}: the password is in the error: {error}"
        );
    }
}

/// The options as an operator writes them in verifier.conf, with a relative tls_dir
/// (resolved in the data directory, Keylime's work directory).
#[tokio::test]
async fn verifier_conf_names_the_pki() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let pki = pki(&data.join("site-tls"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let etc = root.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let conf = etc.join("verifier.conf");
    std::fs::write(
        &conf,
        format!(
            "[verifier]\nip = 127.0.0.1\nport = {port}\ntls_dir = site-tls\nserver_cert = certs/verifier.crt\n\
             server_key = verifier.key\nserver_key_password = zestpw\n\
             trusted_client_ca = [\"client-ca-1.crt\", \"client-ca-2.crt\"]\n\
             client_cert = verifier-client.crt\nclient_key = verifier-client.key\nclient_key_password = clientpw\n\
             trusted_server_ca = [\"server-ca.crt\"]\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = root.path().join("zest.log");
    let mut child = Command::new(zest_binary().unwrap())
        .args([
            "--config-dir",
            etc.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "verifier",
        ])
        .env_remove("ZEST_DATA_DIR")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "zest verifier did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("https://localhost:{port}/v2.6/agents/");
    let result = send_json(client(&pki, &pki.client).get(&url)).await;
    // zest tenant from tenant.conf alone: an encrypted client key, and a trusted_server_ca
    // list whose second entry is the server's CA.
    encrypt(&pki.client.1, "tenantpw", &pki.dir.join("operator.key"), false);
    std::fs::write(pki.dir.join("operator.crt"), &pki.client.0).unwrap();
    let tenant_conf = etc.join("tenant.conf");
    std::fs::write(
        &tenant_conf,
        format!(
            "[tenant]\ntls_dir = {}\nclient_cert = operator.crt\nclient_key = operator.key\n\
             client_key_password = tenantpw\ntrusted_server_ca = ['client-ca-1.crt', 'server-ca.crt']\n",
            pki.dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tenant_conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listed = Command::new(zest_binary().unwrap())
        .args(["--config-dir", etc.to_str().unwrap(), "tenant", "--verifier"])
        .arg(format!("localhost:{port}"))
        .args(["list", "--json"])
        .env_remove("ZEST_DATA_DIR")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let (status, reply) = result.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log.contains("zestpw") && !log.contains("clientpw"),
        "a password is in the log: {log}"
    );
}

/// The cv_ca a Keylime verifier generated (`tls_dir = generate`): its CA key lives in
/// Keylime's keystore (private.yml), not in ca-private.pem, and its keys are encrypted with
/// `server_key_password` / `client_key_password`. zest uses the files as they are and
/// generates nothing. (The interop run does the same with a cv_ca made by Keylime's ca_util.)
#[tokio::test]
async fn a_cv_ca_keylime_generated_is_used_as_it_is() {
    let data = tempfile::Builder::new().prefix("zest-pki-").tempdir().unwrap();
    let cv_ca = data.path().join("cv_ca");
    std::fs::create_dir_all(&cv_ca).unwrap();
    let keylime_ca = ca("Keylime Certificate Authority");
    let (server_cert, server_key) = leaf(&keylime_ca, "server", true);
    let (client_cert, client_key) = leaf(&keylime_ca, "client", false);
    std::fs::write(cv_ca.join("cacert.crt"), &keylime_ca.cert_pem).unwrap();
    std::fs::write(cv_ca.join("server-cert.crt"), &server_cert).unwrap();
    encrypt(
        &server_key,
        "kl-server-pw",
        &cv_ca.join("server-private.pem"),
        false,
    );
    std::fs::write(cv_ca.join("client-cert.crt"), &client_cert).unwrap();
    encrypt(
        &client_key,
        "kl-client-pw",
        &cv_ca.join("client-private.pem"),
        false,
    );
    std::fs::write(cv_ca.join("private.yml"), "keylime's encrypted keystore\n").unwrap();

    let mut config = VerifierConfig::defaults();
    config.port = 0;
    config.tls.server_key_password = "kl-server-pw".into();
    config.tls.client_key_password = "kl-client-pw".into();
    let verifier = TestVerifier::start_in(data, config).await.unwrap();
    assert!(
        !cv_ca.join("ca-private.pem").exists(),
        "nothing generated beside Keylime's files"
    );
    let ca_cert = reqwest::Certificate::from_pem(keylime_ca.cert_pem.as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(format!("{client_cert}{client_key}").as_bytes()).unwrap();
    let keylime_tenant = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca_cert])
        .identity(identity)
        .build()
        .unwrap();
    let (status, reply) = send_json(keylime_tenant.get(verifier.url("2.6", "agents/")))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
}
