//! swtpm lifecycle: a fresh state directory per TPM, manufactured by `swtpm_setup` with EK
//! certificates from a per-process test CA (`swtpm_localca`), served on a free port pair.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

static SHARED_CA: OnceLock<EkCa> = OnceLock::new();

extern "C" fn remove_shared_ca() {
    if let Some(ca) = SHARED_CA.get() {
        let _ = std::fs::remove_dir_all(ca.dir.path());
    }
}

/// The EK CA that signs every test TPM's EK certificates in this process: the two-level
/// CA `swtpm_localca` creates (root and intermediate).
pub struct EkCa {
    dir: TempDir,
    config: PathBuf,
}

impl EkCa {
    /// The process-wide CA, created on first use and removed when the process exits.
    pub fn shared() -> &'static EkCa {
        SHARED_CA.get_or_init(|| {
            let ca = EkCa::create().expect("creating the swtpm test EK CA");
            // A static is never dropped, so its TempDir would outlive every test process and
            // pile up in /tmp; the test harness leaves through exit(), which runs this.
            // SAFETY: registers a plain extern "C" function with no preconditions.
            unsafe {
                libc::atexit(remove_shared_ca);
            }
            ca
        })
    }

    fn create() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("zest-ekca-").tempdir()?;
        let ca = dir.path().join("ca");
        std::fs::create_dir(&ca)?;
        let localca_conf = dir.path().join("swtpm-localca.conf");
        std::fs::write(
            &localca_conf,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )?;
        let options = dir.path().join("swtpm-localca.options");
        std::fs::write(
            &options,
            "--platform-manufacturer zest\n--platform-version 2.1\n--platform-model test\n",
        )?;
        let config = dir.path().join("swtpm_setup.conf");
        std::fs::write(
            &config,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha1,sha256\n",
                localca_conf.display(),
                options.display()
            ),
        )?;
        Ok(Self { dir, config })
    }

    /// The root CA certificate (PEM); exists after the first TPM was manufactured.
    pub fn root_pem(&self) -> PathBuf {
        self.dir.path().join("ca/swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate CA certificate (PEM) that signs the EK certificates.
    pub fn intermediate_pem(&self) -> PathBuf {
        self.dir.path().join("ca/issuercert.pem")
    }
}

/// A running swtpm with a fresh state; killed on drop.
pub struct Swtpm {
    state: TempDir,
    child: Child,
    pub port: u16,
}

impl Swtpm {
    /// Manufactures a TPM (EK certificates for the RSA-2048 and ECC P-384 EKs, persisted
    /// EKs at 0x81010001 and 0x81010016) and starts it.
    pub fn start() -> anyhow::Result<Self> {
        let ca = EkCa::shared();
        let state = tempfile::Builder::new().prefix("zest-swtpm-").tempdir()?;
        {
            // swtpm_localca creates the CA on first use and bumps a serial file: one at a time.
            static SETUP: Mutex<()> = Mutex::new(());
            let _guard = SETUP.lock().unwrap_or_else(|e| e.into_inner());
            let out = Command::new("swtpm_setup")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(state.path())
                .args(["--create-ek-cert", "--lock-nvram", "--overwrite", "--config"])
                .arg(&ca.config)
                .output()
                .context("running swtpm_setup (is swtpm-tools installed?)")?;
            if !out.status.success() {
                bail!(
                    "swtpm_setup failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            match spawn(state.path(), port) {
                Ok(child) => return Ok(Self { state, child, port }),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("swtpm did not start")))
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(state: &Path, port: u16) -> anyhow::Result<Child> {
    let mut command = Command::new("swtpm");
    command
        .args(["socket", "--tpm2", "--server"])
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .args(["--flags", "not-need-init,startup-clear", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The TSS opens its TPM sockets without close-on-exec: a swtpm started while another
    // test talks to its own swtpm would inherit that connection and keep it open after the
    // test closes it, and a single-client swtpm would then never answer that test's next
    // connection. The child closes every inherited descriptor beyond stdio.
    // SAFETY: close_range is async-signal-safe and touches only the child's descriptors.
    unsafe {
        command.pre_exec(|| {
            libc::close_range(3, libc::c_uint::MAX, 0);
            Ok(())
        });
    }
    let mut child = command.spawn().context("starting swtpm (is swtpm installed?)")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("swtpm exited at start ({status}) on port {port}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    bail!("swtpm did not listen on port {port} within 5 s")
}

/// A port P with P+1 also free (the swtpm TCTI expects the control port at P+1).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind(("127.0.0.1", 0))?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free consecutive port pair found")
}
