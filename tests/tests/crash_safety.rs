//! Crash safety of push mode with a real `zest verifier` process: a SIGKILL while evidence
//! is being judged leaves no attestation evaluating forever. The restarted verifier fails the
//! interrupted attestation, and the agent is not told "verification in progress" for good:
//! its next round starts.

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use zest::evidence::uefi::EventLog;
use zest_tests::boot::fedora_bytes;
use zest_tests::policies::test_component;
use zest_tests::process::ZestProcess;
use zest_tests::push_agent::PushAgent;
use zest_tests::push_env::enrol_body;
use zest_tests::server::{admin_client, anonymous_client, send_json};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

/// A `zest verifier --mode push` process on `DIR/data`, configured by its flags and a
/// minimal `DIR/etc/verifier.conf`; killed on drop.
struct Zest {
    process: ZestProcess,
    port: u16,
}

impl Zest {
    /// Starts run `run` of the verifier on `dir` (a fresh port each run; the data stays).
    async fn start(dir: &Path, run: u32) -> Self {
        let port = zest_tests::free_port();
        let config = dir.join("etc");
        std::fs::create_dir_all(&config).unwrap();
        // The first run's policy may spin for a minute, so the kill surely lands while it
        // evaluates; the restart runs with the default deadline.
        let zest_section = if run == 1 {
            "[zest]\npolicy_timeout = 60\n"
        } else {
            ""
        };
        std::fs::write(
            config.join("verifier.conf"),
            format!("[verifier]\nip = 127.0.0.1\n{zest_section}"),
        )
        .unwrap();
        let (data, port_text) = (dir.join("data"), port.to_string());
        let args: Vec<&OsStr> = vec![
            "--config-dir".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "verifier".as_ref(),
            "--verifier-port".as_ref(),
            port_text.as_ref(),
            // No pause between rounds: the agent's next round right after the restart is
            // about the interrupted attestation, not about the quote interval.
            "--mode".as_ref(),
            "push".as_ref(),
            "--quote-interval".as_ref(),
            "0".as_ref(),
        ];
        let log = dir.join(format!("zest-{run}.log"));
        let process = ZestProcess::start(&args, port, &log).await.unwrap();
        Self { process, port }
    }

    /// `https://localhost:PORT`
    fn https(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// `https://localhost:PORT/{path}`
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.https())
    }

    fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// A crypto-agile boot log of its Spec ID header alone: it parses and replays to the
/// all-zero PCRs 0–15 of a freshly started swtpm, so the refstate's component is reached.
fn header_only_boot_log() -> Vec<u8> {
    let mut log = EventLog::parse(&fedora_bytes()).expect("the Fedora fixture parses");
    log.events.truncate(1);
    log.encode()
}

#[tokio::test]
async fn a_kill_during_evaluation_fails_the_attestation_at_restart_and_the_agent_attests_again() {
    let dir = tempfile::Builder::new().prefix("zest-crash-").tempdir().unwrap();
    let data = dir.path().join("data");
    let mut zest = Zest::start(dir.path(), 1).await;
    let admin = admin_client(&data).unwrap();

    // A measured-boot component whose `evaluate` spins until the policy deadline (60 s here), named
    // by a refstate: evidence judged with it stays `evaluating_evidence` that long.
    let (code, reply) = send_json(
        admin
            .post(zest.url("v2.6/modules?kind=measured-boot"))
            .header("content-type", "application/wasm")
            .body(test_component("hostile")),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");
    let module = reply["results"]["module"].as_str().unwrap().to_owned();
    let (code, reply) = send_json(
        admin
            .post(zest.url("v2.6/mbpolicies/spin"))
            .json(&json!({"mb_policy": "\"loop\"", "module": module})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{reply}");

    let tpm = Swtpm::start().unwrap();
    let uuid = "crash-agent";
    let agent = TestAgent::new(&tpm, uuid, EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut body = enrol_body(&agent, r#"{"mask": "0x1"}"#, None);
    body["mb_policy_name"] = json!("spin");
    let (code, reply) = send_json(admin.post(zest.url(&format!("v2.6/agents/{uuid}"))).json(&body))
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    let mut agent = PushAgent::new(agent, &zest.https(), anonymous_client(&data).unwrap(), "rsa");
    agent.authenticate().await.unwrap();

    // Evidence with a boot log that reaches the spinning component.
    let (code, location, created) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{created}");
    let location = location.unwrap();
    let mut evidence = agent
        .evidence(&created["data"]["attributes"]["evidence_requested"], None)
        .unwrap();
    let boot = evidence["data"]["attributes"]["evidence_collected"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["evidence_type"] == "uefi_log")
        .unwrap_or_else(|| panic!("the refstate asks for no boot log: {created}"));
    boot["data"]["entries"] = json!(B64.encode(header_only_boot_log()));
    let (code, reply) = agent
        .submit(&format!("{}{location}", zest.https()), &evidence)
        .await
        .unwrap();
    assert_eq!(code, 202, "{reply}");
    let index: u64 = location.rsplit('/').next().unwrap().parse().unwrap();
    let record = format!("v3.0/agents/{uuid}/attestations/{index}");

    // Killed while it judges.
    let deadline = Instant::now() + zest_tests::wait_limit();
    loop {
        let (code, reply) = send_json(admin.get(zest.url(&record))).await.unwrap();
        assert_eq!(code, 200, "{reply}");
        let stage = reply["data"]["attributes"]["stage"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if stage == "evaluating_evidence" {
            break;
        }
        assert!(
            stage != "verification_complete",
            "judged before the kill could interrupt it: {reply}"
        );
        assert!(Instant::now() < deadline, "never evaluating: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    zest.process.child.kill().unwrap();
    let killed = zest.process.child.wait().unwrap();
    assert_eq!(killed.signal(), Some(libc::SIGKILL), "{killed}");
    let first_log = zest.log_text();
    drop(zest);

    // Started again on the same data: the interrupted attestation is a failure, at once.
    let zest = Zest::start(dir.path(), 2).await;
    let (code, reply) = send_json(admin.get(zest.url(&record))).await.unwrap();
    assert_eq!(code, 200, "{reply}");
    let attributes = &reply["data"]["attributes"];
    assert_eq!(
        (attributes["stage"].as_str(), attributes["evaluation"].as_str()),
        (Some("verification_complete"), Some("fail")),
        "{reply}"
    );
    assert_eq!(
        attributes["failures"][0]["type"], "internal.verifier.interrupted",
        "{reply}\nfirst run's log:\n{first_log}"
    );
    let (_, status) = send_json(admin.get(zest.url(&format!("v2.6/agents/{uuid}"))))
        .await
        .unwrap();
    assert_eq!(status["results"]["attestation_status"], "FAIL", "{status}");

    // The agent is not answered 503 "verification in progress": its session survived the
    // restart and its next round starts.
    agent.verifier = zest.https();
    let (code, location, reply) = agent.offer().await.unwrap();
    assert_eq!(code, 201, "{reply}\n{}", zest.log_text());
    let next: u64 = location.unwrap().rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(next, index + 1);
}
