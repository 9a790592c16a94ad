//! The `zest` binary as an operator starts it: data directory, TLS material, listeners.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &std::path::Path, http: u16, https: u16) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(["registrar", "--data-dir"])
        .arg(data)
        .args([
            "--registrar-port",
            &http.to_string(),
            "--registrar-tls-port",
            &https.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// GET over plain HTTP/1.1, returning the raw response once the server answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_for(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(reply) = get(port, "/version") {
            return reply;
        }
        assert!(Instant::now() < deadline, "zest did not answer on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn registrar_creates_its_data_dir_and_keylime_tls_files_then_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (http, https) = (free_port(), free_port());
    let server = start(&data, http, https);
    let reply = wait_for(http);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""current_version":"2.6""#), "{reply}");

    let tls = data.join("cv_ca");
    for file in ["cacert.crt", "server-cert.crt", "client-cert.crt"] {
        assert!(tls.join(file).is_file(), "{file} missing");
    }
    for key in ["server-private.pem", "client-private.pem", "ca-private.pem"] {
        let mode = std::fs::metadata(tls.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key} must be private");
    }
    assert!(data.join("zest.sqlite").is_file());
    assert!(data.join("tpm_cert_store").is_dir());
    let ca_before = std::fs::read(tls.join("cacert.crt")).unwrap();
    drop(server);

    let _again = start(&data, http, https);
    wait_for(http);
    assert_eq!(
        std::fs::read(tls.join("cacert.crt")).unwrap(),
        ca_before,
        "material is reused, not regenerated"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(["registrar", "--data-dir"])
        .arg(tmp.path())
        .args([
            "--registrar-port",
            &port.to_string(),
            "--registrar-tls-port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn serve_runs_the_registrar_and_the_verifier_and_the_verifier_wants_client_certificates() {
    let data = tempfile::tempdir().unwrap();
    let (http, https, verifier) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--registrar-port", &http.to_string()])
        .args(["--registrar-tls-port", &https.to_string()])
        .args(["--verifier-port", &verifier.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    assert!(wait_for(http).contains("current_version"));
    // The verifier speaks only TLS: a plain request gets no HTTP answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", verifier)).is_err() {
        assert!(Instant::now() < deadline, "the verifier never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply = get(verifier, "/version").unwrap_or_default();
    assert!(!reply.starts_with("HTTP/"), "plain HTTP answered: {reply}");
    assert!(data.path().join("zest.sqlite").exists());
}

#[test]
fn a_bad_verifier_option_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(["verifier", "--data-dir"])
        .arg(data.path())
        .args(["--measured-boot-policy-name", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("measured_boot_policy_name = \"nope\"")
            && stderr.contains("accept-all")
            && stderr.contains("flag --measured-boot-policy-name"),
        "{stderr}"
    );
}
