//! The operator's tools as an operator runs them: a `zest serve` process configured by
//! Keylime INI files, the `zest tenant` CLI enrolling a swtpm agent and reading its status,
//! `/metrics`, `zest config show`, `zest ca`, and the CLI's errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zest_tests::process::zest_binary;
use zest_tests::pull_agent::PullAgent;
use zest_tests::server::admin_client;
use zest_tests::{AkKind, EkCa, EkKind, Swtpm, TestAgent};

use zest_tests::free_port;

fn zest(args: &[&str]) -> Output {
    zest_env(args, &[])
}

fn zest_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(zest_binary().unwrap());
    command
        .args(args)
        .env_remove("ZEST_DATA_DIR")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A `zest serve` process; killed on drop.
struct Served {
    child: Child,
    data: PathBuf,
    verifier: u16,
    registrar_http: u16,
    registrar_tls: u16,
    stderr: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Starts `zest serve` whose ports and quote interval come from Keylime INI files in
    /// `config_dir` (a `.conf.d` snippet overrides the interval), with JSON logs.
    fn start(dir: &Path) -> Self {
        let (verifier, registrar_http, registrar_tls) = (free_port(), free_port(), free_port());
        let config = dir.join("etc");
        write(
            &config.join("verifier.conf"),
            &format!(
                "[verifier]\nip = 127.0.0.1\nport = {verifier}\nquote_interval = 2\nmode = both\n[revocations]\nwebhook_url =\n"
            ),
            0o644,
        );
        write(
            &config.join("verifier.conf.d/50-fast.conf"),
            "# polled quickly for the test\n[verifier]\nquote_interval = 0.5\n",
            0o644,
        );
        write(
            &config.join("registrar.conf"),
            &format!("[registrar]\nip = 127.0.0.1\nport = {registrar_http}\ntls_port = {registrar_tls}\n"),
            0o644,
        );
        let data = dir.join("data");
        let stderr = dir.join("zest.log");
        let child = Command::new(zest_binary().unwrap())
            .args([
                "--config-dir",
                config.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(["--log-format", "json", "serve"])
            .env("RUST_LOG", "info")
            .env_remove("ZEST_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let served = Self {
            child,
            data,
            verifier,
            registrar_http,
            registrar_tls,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", verifier)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", registrar_tls)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "zest serve did not start: {}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    /// Trusts the swtpm test CA in the registrar's EK store (read at every registration).
    fn trust_test_ek_ca(&self) {
        let store = self.data.join("tpm_cert_store");
        std::fs::create_dir_all(&store).unwrap();
        let ca = EkCa::shared();
        std::fs::copy(ca.root_pem(), store.join("root.pem")).unwrap();
        std::fs::copy(ca.intermediate_pem(), store.join("intermediate.pem")).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `zest --data-dir DATA tenant --verifier … --registrar … ARGS`
    fn tenant(&self, args: &[&str]) -> Output {
        let verifier = format!("127.0.0.1:{}", self.verifier);
        let registrar = format!("127.0.0.1:{}", self.registrar_tls);
        let mut all = vec![
            "--data-dir",
            self.data.to_str().unwrap(),
            "tenant",
            "--verifier",
            &verifier,
            "--registrar",
            &registrar,
        ];
        all.extend_from_slice(args);
        zest(&all)
    }

    fn status_json(&self, uuid: &str) -> Value {
        let out = self.tenant(&["status", "--uuid", uuid, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn metrics(&self, port: u16) -> String {
        let client = admin_client(&self.data).unwrap();
        let response = client
            .get(format!("https://localhost:{port}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        response.text().await.unwrap()
    }
}

/// The value of one series in Prometheus text.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + zest_tests::wait_limit();
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn runtime_policy(paths: &[&str]) -> String {
    let digests: Vec<(&str, Vec<u8>)> = paths
        .iter()
        .map(|p| (*p, zest::evidence::HashAlg::Sha256.digest(&[p.as_bytes()])))
        .collect();
    zest_tests::policies::runtime_policy(&digests).to_string()
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_listening(port: u16, what: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}: {}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_cli_enrols_an_agent_and_reports_its_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let uuid = "5b7d3f0e-0c1a-4c4e-9d55-0123456789ab";

    // The agent registers (with its address and certificate) at the registrar's plain port.
    let tpm = Swtpm::start().unwrap();
    let agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    served.trust_test_ek_ca();
    let nk = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pull = PullAgent::start(agent, nk.public_key_pem(), &served.data.join("cv_ca/cacert.crt"))
        .await
        .unwrap();
    pull.state.lock().unwrap().nk_private = Some(nk.serialize_der());
    let digest = |p: &str| zest::evidence::HashAlg::Sha256.digest(&[p.as_bytes()]);
    pull.measure("/usr/bin/bash", &digest("/usr/bin/bash")).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    pull.register(
        &client,
        &format!("http://127.0.0.1:{}", served.registrar_http),
        "2.6",
    )
    .await
    .unwrap();

    // Errors name their cause and change nothing.
    let missing = served.tenant(&["add", "--uuid", "no-such-agent", "--runtime-policy", "/dev/null"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no-such-agent is not registered"),
        "{}",
        stderr(&missing)
    );
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, "{not json").unwrap();
    let bad = served.tenant(&[
        "add",
        "--uuid",
        uuid,
        "--runtime-policy",
        policy_file.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("is not JSON"), "{}", stderr(&bad));
    let unknown = served.tenant(&["status", "--uuid", uuid]);
    assert!(
        stderr(&unknown).contains("is not enrolled at the verifier"),
        "{}",
        stderr(&unknown)
    );

    // The scripted spelling: add with --ip/--port/--runtime-policy, then status; with a
    // payload that the agent can read only after the verifier's first good quote.
    std::fs::write(&policy_file, runtime_policy(&["/usr/bin/bash"])).unwrap();
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, b"keys for the workload").unwrap();
    let port = pull.addr.port().to_string();
    let add = served.tenant(&[
        "add",
        "--uuid",
        uuid,
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
        "--runtime-policy",
        policy_file.to_str().unwrap(),
        "--payload",
        payload.to_str().unwrap(),
        "--verify",
    ]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(stdout(&add).contains("enrolled in pull mode"), "{}", stdout(&add));
    assert!(
        stderr(&add).contains("identity quote verified"),
        "{}",
        stderr(&add)
    );
    assert!(stderr(&add).contains("the agent proved K"), "{}", stderr(&add));
    assert_eq!(
        pull.state.lock().unwrap().payload.as_deref(),
        Some(&b"keys for the workload"[..])
    );
    wait_for("PASS", || {
        let s = served.status_json(uuid);
        s["attestation_status"] == "PASS" && s["attestation_count"].as_u64() >= Some(2)
    });
    let record = served.status_json(uuid);
    assert_eq!(record["operational_state"], 3);
    assert_eq!(record["has_runtime_policy"], 1);
    // The .conf.d snippet's quote_interval (0.5 s) overrode verifier.conf's 2 s.
    assert_eq!(record["attestation_period"], "0s", "{record}");
    assert_eq!(record["tpm_policy"], "{\"mask\":\"0x400\"}");

    let table = served.tenant(&["status", "--uuid", uuid]);
    let text = stdout(&table);
    assert!(text.contains("attestation status     PASS"), "{text}");
    assert!(text.contains("operational state      Get Quote (3)"), "{text}");
    assert!(
        text.contains(&format!("address                127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.contains("failures               none"), "{text}");
    let list = stdout(&served.tenant(&["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with(uuid) && l.contains("PASS") && l.contains("Get Quote")),
        "{list}"
    );
    let reg = stdout(&served.tenant(&["regstatus", "--uuid", uuid]));
    assert!(
        reg.contains("registrations     1") && reg.contains("mTLS certificate  yes"),
        "{reg}"
    );

    // A file no policy allows: the verifier fails the agent, and the table says why.
    pull.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    wait_for("FAIL", || {
        served.status_json(uuid)["attestation_status"] == "FAIL"
    });
    let text = stdout(&served.tenant(&["status", "--uuid", uuid]));
    assert!(
        text.contains("operational state      Invalid Quote (9)"),
        "{text}"
    );
    assert!(
        text.contains("failure                ima.validation.ima-ng.not_in_allowlist"),
        "{text}"
    );

    // Metrics of both services after real rounds.
    let metrics = served.metrics(served.verifier).await;
    let passes = series(
        &metrics,
        r#"zest_verifier_attestations_total{mode="pull",result="pass"}"#,
    )
    .unwrap();
    assert!(passes >= 2.0, "{metrics}");
    assert_eq!(
        series(
            &metrics,
            r#"zest_verifier_attestations_total{mode="pull",result="fail"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            r#"zest_verifier_agents{mode="pull",operational_state="Invalid Quote",attestation_status="FAIL"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        series(
            &metrics,
            r#"zest_verifier_attestation_failures_total{mode="pull",event_id="ima.validation.ima-ng.not_in_allowlist"}"#
        ) == Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            r#"zest_verifier_attestation_duration_seconds_count{mode="pull"}"#
        ),
        Some(passes + 1.0)
    );
    let evaluations = series(
        &metrics,
        r#"zest_policy_evaluation_seconds_count{kind="runtime",module="builtin:keylime-runtime"}"#,
    )
    .unwrap();
    assert!(evaluations >= 2.0, "{metrics}");
    let registrar = served.metrics(served.registrar_tls).await;
    assert_eq!(
        series(&registrar, r#"zest_registrar_registrations_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        series(&registrar, r#"zest_registrar_agents{state="active"}"#),
        Some(1.0)
    );

    // Stop keeps the enrolment; delete removes it.
    let stop = served.tenant(&["stop", "--uuid", uuid]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let delete = served.tenant(&["delete", "--uuid", uuid]);
    assert!(delete.status.success(), "{}", stderr(&delete));
    let gone = served.tenant(&["status", "--uuid", uuid, "--json"]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("is not enrolled"));

    // A push agent (the verifier runs `mode = both`): enrolled without an address.
    let tpm2 = Swtpm::start().unwrap();
    let mut push_agent = TestAgent::new(&tpm2, "push-agent-1", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    zest_tests::server::register_and_activate(
        &client,
        &format!("http://127.0.0.1:{}", served.registrar_http),
        &mut push_agent,
        "2.6",
    )
    .await
    .unwrap();
    let push = served.tenant(&[
        "add",
        "--uuid",
        "push-agent-1",
        "--push",
        "--runtime-policy",
        policy_file.to_str().unwrap(),
    ]);
    assert!(push.status.success(), "{}", stderr(&push));
    let record = served.status_json("push-agent-1");
    assert!(
        record["ip"].is_null() && record["attestation_status"] == "PENDING",
        "{record}"
    );
    let table = stdout(&served.tenant(&["status", "--uuid", "push-agent-1"]));
    assert!(table.contains("mode                   push"), "{table}");

    // tenant.conf alone tells the tenant where to go and which certificates to use.
    let etc = dir.path().join("tenant-etc");
    write(
        &etc.join("tenant.conf"),
        &format!(
            "[tenant]\nverifier_ip = 127.0.0.1\nverifier_port = {}\nregistrar_ip = 127.0.0.1\nregistrar_port = {}\ntls_dir = {}\nclient_cert = client-cert.crt\nclient_key = client-private.pem\ntrusted_server_ca = [\"cacert.crt\"]\n",
            served.verifier,
            served.registrar_tls,
            served.data.join("cv_ca").display()
        ),
        0o644,
    );
    let listed = zest(&["--config-dir", etc.to_str().unwrap(), "tenant", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("push-agent-1"), "{}", stdout(&listed));
    let reglist = zest(&["--config-dir", etc.to_str().unwrap(), "tenant", "reglist"]);
    assert!(stdout(&reglist).contains("push-agent-1"), "{}", stdout(&reglist));
    // Its accept lists bind the identity check: an agent signing with RSASSA is refused
    // when only RSAPSS is accepted, and nothing is enrolled.
    let conf = std::fs::read_to_string(etc.join("tenant.conf")).unwrap();
    write(
        &etc.join("tenant.conf"),
        &format!("{conf}accept_tpm_signing_algs = ['rsapss']\n"),
        0o644,
    );
    let strict = zest(&[
        "--config-dir",
        etc.to_str().unwrap(),
        "tenant",
        "add",
        "--uuid",
        uuid,
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("sign_alg rsassa is not in accept_tpm_signing_algs"),
        "{}",
        stderr(&strict)
    );
    assert!(!served.tenant(&["status", "--uuid", uuid]).status.success());

    // Named policies and modules.
    let create = served.tenant(&[
        "runtime-policy",
        "create",
        "--name",
        "web",
        "--file",
        policy_file.to_str().unwrap(),
    ]);
    assert!(create.status.success(), "{}", stderr(&create));
    assert!(
        stdout(&served.tenant(&["runtime-policy", "list"]))
            .lines()
            .any(|l| l == "web")
    );
    let shown: Value =
        serde_json::from_slice(&served.tenant(&["runtime-policy", "show", "--name", "web"]).stdout).unwrap();
    assert!(shown.is_object(), "{shown}");
    let again = served.tenant(&[
        "runtime-policy",
        "create",
        "--name",
        "web",
        "--file",
        policy_file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("the verifier answered 409"),
        "{}",
        stderr(&again)
    );
    assert!(
        served
            .tenant(&["runtime-policy", "delete", "--name", "web"])
            .status
            .success()
    );
    let wasm = dir.path().join("hostile.wasm");
    std::fs::write(&wasm, zest_tests::policies::test_component("hostile")).unwrap();
    let upload = served.tenant(&[
        "module",
        "upload",
        wasm.to_str().unwrap(),
        "--kind",
        "measured-boot",
    ]);
    assert!(upload.status.success(), "{}", stderr(&upload));
    let id = stdout(&upload).trim().to_owned();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let wrong = served.tenant(&["module", "upload", wasm.to_str().unwrap(), "--kind", "runtime"]);
    assert!(
        !wrong.status.success() && stderr(&wrong).contains("the verifier answered 4"),
        "{}",
        stderr(&wrong)
    );
    let modules = stdout(&served.tenant(&["module", "list"]));
    assert!(
        modules.contains("builtin:keylime-runtime") && modules.contains(&id),
        "{modules}"
    );
    assert!(served.tenant(&["module", "delete", &id]).status.success());

    // A tenant certificate from another CA: the error says which files to check.
    let foreign = dir.path().join("foreign");
    assert!(
        zest(&["ca", "init", "--dir", foreign.to_str().unwrap()])
            .status
            .success()
    );
    let refused = served.tenant(&["--tls-dir", foreign.to_str().unwrap(), "list"]);
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains("TLS: is") && text.contains("foreign/cacert.crt"),
        "{text}"
    );

    // The JSON log format: one object per line.
    let log = served.log();
    let listening = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "verifier listening");
    assert!(listening.is_some(), "{log}");
    assert!(
        log.contains("verifier.conf.d/50-fast.conf:3"),
        "the configuration's sources are logged: {log}"
    );
}

#[test]
fn tenant_errors_name_the_connection_or_certificate_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = zest(&["--data-dir", data.to_str().unwrap(), "ca", "init"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let port = free_port().to_string();
    let refused = zest(&[
        "--data-dir",
        data.to_str().unwrap(),
        "tenant",
        "--verifier",
        &format!("127.0.0.1:{port}"),
        "list",
    ]);
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains("cannot reach the verifier") && text.contains("Connection refused"),
        "{text}"
    );
    assert!(text.contains("is the verifier running"), "{text}");
    let missing = zest(&[
        "--data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
        "tenant",
        "list",
    ]);
    assert!(
        stderr(&missing).contains("reading the CA certificate"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_zest_ca_are_accepted_and_foreign_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let init = zest(&["--data-dir", d, "ca", "init", "--server-name", "verifier.example"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let shown = stdout(&init);
    // Server certificates are servers only; clients carry their role.
    assert!(
        shown.contains("verifier.example")
            && shown.contains("usage     serverAuth\n")
            && !shown.contains("serverAuth, clientAuth")
            && shown.contains("urn:zest:role:operator"),
        "{shown}"
    );
    for key in ["ca-private.pem", "server-private.pem", "client-private.pem"] {
        let mode = std::fs::metadata(data.join("cv_ca").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = zest(&["--data-dir", d, "ca", "init"]);
    assert!(!again.status.success() && stderr(&again).contains("already holds a CA"));
    let issue = zest(&[
        "--data-dir",
        d,
        "ca",
        "issue",
        "--name",
        "operator",
        "--client",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(issue.status.success(), "{}", stderr(&issue));
    let show = stdout(&zest(&["ca", "show", "--dir", dir.path().to_str().unwrap()]));
    assert!(
        show.contains("CN=operator")
            && show.contains("usage     clientAuth")
            && show.contains("urn:zest:role:operator"),
        "{show}"
    );
    // A foreign CA for the negative case.
    let foreign = dir.path().join("foreign");
    assert!(
        zest(&["ca", "init", "--dir", foreign.to_str().unwrap()])
            .status
            .success()
    );
    let no_ca = zest(&[
        "ca",
        "issue",
        "--name",
        "x",
        "--dir",
        dir.path().join("empty").to_str().unwrap(),
    ]);
    assert!(!no_ca.status.success() && stderr(&no_ca).contains("holds no CA"));

    // The verifier serves with the CA made by `zest ca init` (it does not replace it).
    let port = free_port();
    let mut child = Command::new(zest_binary().unwrap())
        .args(["--data-dir", d, "verifier", "--verifier-port", &port.to_string()])
        .env("ZEST_CONFIG_DIR", dir.path().join("no-etc"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &|| "zest verifier".into());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("cv_ca/cacert.crt")).unwrap()).unwrap();
    let client_with = |stem: &Path| {
        let mut identity = std::fs::read(stem.with_file_name(format!(
            "{}-cert.crt",
            stem.file_name().unwrap().to_str().unwrap()
        )))
        .unwrap();
        identity.extend(
            std::fs::read(stem.with_file_name(format!(
                "{}-private.pem",
                stem.file_name().unwrap().to_str().unwrap()
            )))
            .unwrap(),
        );
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca.clone()])
            .identity(reqwest::Identity::from_pem(&identity).unwrap())
            .build()
            .unwrap()
    };
    let operator = client_with(&dir.path().join("operator"));
    let ok = operator
        .get(format!("https://127.0.0.1:{port}/v2.6/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let stranger = client_with(&foreign.join("client"));
    assert!(
        stranger
            .get(format!("https://127.0.0.1:{port}/v2.6/agents"))
            .send()
            .await
            .is_err(),
        "a client certificate from another CA must fail the handshake"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_show_names_every_source_and_refuses_exposed_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    write(
        &etc.join("verifier.conf"),
        "[verifier]\n# Keylime's own file\nport = 9881\nquote_interval = 2\nseverity_labels = ['info', 'emergency']\ndatabase_url = sqlite\n",
        0o644,
    );
    write(
        &etc.join("verifier.conf.d/10-site.conf"),
        "[verifier]\nquote_interval = 7\n",
        0o644,
    );
    let e = etc.to_str().unwrap();
    let out = zest_env(
        &[
            "--config-dir",
            e,
            "--data-dir",
            "/srv/zest",
            "config",
            "show",
            "verifier",
        ],
        &[("KEYLIME_VERIFIER_MAX_RETRIES", "9")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        line("port").contains(&format!("9881    # {}:3", etc.join("verifier.conf").display())),
        "{text}"
    );
    assert!(
        line("quote_interval").contains("= 7    # ") && line("quote_interval").contains("10-site.conf:2"),
        "{text}"
    );
    assert!(
        line("max_retries").contains("9    # env KEYLIME_VERIFIER_MAX_RETRIES"),
        "{text}"
    );
    assert!(
        line("data_dir").contains("/srv/zest    # flag --data-dir"),
        "{text}"
    );
    assert!(line("request_timeout").contains("60    # default"), "{text}");
    assert!(line("zmq_port").contains("not used"), "{text}");

    // A password in a group-readable snippet is refused, naming the file and the fix.
    let secret = etc.join("verifier.conf.d/20-db.conf");
    write(
        &secret,
        "[verifier]\ndatabase_url = postgresql://zest:hunter2@db/zest\n",
        0o640,
    );
    let refused = zest(&["--config-dir", e, "config", "show", "verifier"]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("20-db.conf sets database_url") && err.contains("CVE-2022-23952"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the secret must not be echoed: {err}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shown = zest(&["--config-dir", e, "config", "show", "verifier"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("database_url = (secret, set)") && !stdout(&shown).contains("hunter2"));

    // A bad value names the option, the value and where it came from.
    write(
        &etc.join("verifier.conf.d/30-bad.conf"),
        "[verifier]\nquote_interval = soon\n",
        0o644,
    );
    let bad = zest(&["--config-dir", e, "verifier"]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("[verifier] quote_interval = \"soon\"") && err.contains("30-bad.conf:2"),
        "{err}"
    );
    // Syntax errors name the file and line without quoting it.
    write(
        &etc.join("verifier.conf.d/30-bad.conf"),
        "[verifier]\nthis line has no delimiter\n",
        0o644,
    );
    let syntax = zest(&["--config-dir", e, "config", "show"]);
    assert!(
        stderr(&syntax).contains("30-bad.conf: line 2"),
        "{}",
        stderr(&syntax)
    );
}

/// Keylime's `--cert DIR --include …`: the payload is the certificate package Keylime's tenant
/// builds (checked with Python's zipfile, CRCs included), `revocation_key` is the
/// RevocationNotifier's key, and a revocation the agent then receives verifies with the
/// RevocationNotifier certificate inside the package, as Keylime's agent verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_add_with_cert_delivers_keylimes_package_and_signed_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let uuid = "7c1e2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
    let tpm = Swtpm::start().unwrap();
    let agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    served.trust_test_ek_ca();
    let nk = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pull = PullAgent::start(agent, nk.public_key_pem(), &served.data.join("cv_ca/cacert.crt"))
        .await
        .unwrap();
    pull.state.lock().unwrap().nk_private = Some(nk.serialize_der());
    let digest = |p: &str| zest::evidence::HashAlg::Sha256.digest(&[p.as_bytes()]);
    pull.measure("/usr/bin/bash", &digest("/usr/bin/bash")).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    pull.register(
        &client,
        &format!("http://127.0.0.1:{}", served.registrar_http),
        "2.6",
    )
    .await
    .unwrap();

    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, runtime_policy(&["/usr/bin/bash"])).unwrap();
    let autorun = dir.path().join("autorun.sh");
    std::fs::write(&autorun, "#!/bin/sh\necho unpacked > done.txt\n").unwrap();
    let extra = dir.path().join("extra");
    std::fs::create_dir_all(extra.join("nested")).unwrap();
    std::fs::write(extra.join("app.conf"), "setting = 1\n").unwrap();
    std::fs::write(extra.join("nested/skipped.txt"), "not in the package").unwrap();
    // Keylime's `--cert default` is its CA work directory: zest's is DATA_DIR/cv_ca.
    let ca_dir = served.data.join("cv_ca");
    let port = pull.addr.port().to_string();
    let add = served.tenant(&[
        "add",
        "--uuid",
        uuid,
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
        "--runtime-policy",
        policy_file.to_str().unwrap(),
        "--cert",
        ca_dir.to_str().unwrap(),
        "--include",
        autorun.to_str().unwrap(),
        extra.to_str().unwrap(),
        "--verify",
    ]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(stderr(&add).contains("the agent proved K"), "{}", stderr(&add));

    let package = pull
        .state
        .lock()
        .unwrap()
        .payload
        .clone()
        .expect("the agent decrypted a payload");
    let zip_file = dir.path().join("package.zip");
    std::fs::write(&zip_file, &package).unwrap();
    let listing = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())\n\
             print('\\n'.join(z.namelist()))\n\
             sys.stderr.write(z.read('RevocationNotifier-cert.crt').decode())",
        )
        .arg(&zip_file)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let names: Vec<String> = stdout(&listing).lines().map(str::to_owned).collect();
    assert_eq!(
        names,
        [
            format!("{uuid}-public.pem"),
            format!("{uuid}-cert.crt"),
            format!("{uuid}-private.pem"),
            "cacert.crt".into(),
            "cacrl.der".into(),
            "cacrl.pem".into(),
            "RevocationNotifier-cert.crt".into(),
            "autorun.sh".into(),
            "app.conf".into(),
        ]
    );
    let notifier_cert = stderr(&listing);
    assert_eq!(
        notifier_cert,
        std::fs::read_to_string(ca_dir.join("RevocationNotifier-cert.crt")).unwrap()
    );

    // A failure: the revocation the agent receives is signed by the RevocationNotifier key.
    pull.measure("/tmp/evil", &digest("/tmp/evil")).unwrap();
    wait_for("a revocation at the agent", || {
        !pull.state.lock().unwrap().revocations.is_empty()
    });
    let message = pull.state.lock().unwrap().revocations[0].clone();
    let (_, pem) = x509_parser::pem::parse_x509_pem(notifier_cert.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, RsaPssSaltLength, UnparsedPublicKey};
    const MAX_SALT: aws_lc_rs::signature::RsaParameters =
        RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        message["signature"].as_str().unwrap(),
    )
    .unwrap();
    UnparsedPublicKey::new(&MAX_SALT, cert.public_key().subject_public_key.data.as_ref())
        .verify(message["msg"].as_str().unwrap().as_bytes(), &signature)
        .expect("the revocation verifies with the package's RevocationNotifier certificate");

    // --include without --cert, and --verify without a payload, are refused.
    let refused = served.tenant(&["add", "--uuid", uuid, "--include", autorun.to_str().unwrap()]);
    assert!(!refused.status.success());
    let refused = served.tenant(&["add", "--uuid", uuid, "--verify"]);
    assert!(
        stderr(&refused).contains("--verify only works"),
        "{}",
        stderr(&refused)
    );
}
