//! `zest policy test` as a policy author runs it before uploading a policy.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

fn fixture(path: &str) -> String {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    format!("{root}/{path}")
}

fn policy_test(module: &str, log: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let refstate = dir.path().join("refstate.json");
    std::fs::write(&refstate, "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args([
            "policy",
            "test",
            "--measured-boot",
            "--module",
            module,
            "--policy",
        ])
        .arg(&refstate)
        .args(["--event-log", log])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn builtin_policies_pass_and_fail_the_fedora_log() {
    let log = fixture("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let (ok, stdout, stderr) = policy_test("builtin:accept-all", &log);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");

    let (ok, stdout, stderr) = policy_test("builtin:reject-all", &log);
    assert!(!ok);
    assert!(stdout.contains("measured_boot.policy_reject-all"), "{stdout}");
    assert!(stdout.trim_end().ends_with("FAIL"), "{stdout}");
    assert!(stderr.contains("fails policy reject-all"), "{stderr}");
}

#[test]
fn bad_modules_and_logs_are_clear_errors() {
    let log = fixture("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let (ok, _, stderr) = policy_test("builtin:no-such-policy", &log);
    assert!(
        !ok && stderr.contains("no built-in measured-boot policy 'no-such-policy'"),
        "{stderr}"
    );

    let not_wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_wasm.path(), b"not a component").unwrap();
    let (ok, _, stderr) = policy_test(not_wasm.path().to_str().unwrap(), &log);
    assert!(
        !ok && stderr.contains("not a valid WebAssembly component"),
        "{stderr}"
    );

    let bogus = fixture("keylime/test/data/create-mb-policy/binary_bios_measurements-bogus");
    let (ok, _, stderr) = policy_test("builtin:accept-all", &bogus);
    assert!(!ok && stderr.contains("is not a valid event log"), "{stderr}");
}

fn zest(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn runtime_test(policy: &str, ima_log: &str) -> (bool, String, String) {
    zest(&[
        "policy",
        "test",
        "--runtime",
        "--module",
        "builtin:keylime-runtime",
        "--policy",
        policy,
        "--ima-log",
        ima_log,
    ])
}

#[test]
fn keylimes_fixture_runtime_policy_is_refused_naming_the_entry() {
    let policy = fixture("keylime/test/data/runtime-policy-test.json");
    let log = fixture("keylime/test/data/create-runtime-policy/ima-log-sha256");
    let (ok, _, stderr) = runtime_test(&policy, &log);
    assert!(!ok);
    assert!(
        stderr.contains(r#"digests["boot_aggregate"][0]"#) && stderr.contains("does not match"),
        "{stderr}"
    );
}

#[test]
fn a_created_runtime_policy_passes_its_list_and_fails_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = fixture("keylime/test/data/create-runtime-policy/ima-log-sha256");
    let policy = dir.path().join("policy.json");
    let (ok, _, stderr) = zest(&[
        "policy",
        "create",
        "runtime",
        "--ima-log",
        &log,
        "-o",
        policy.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(doc["meta"]["generator"], 3);
    assert_eq!(
        doc["digests"]["/data"],
        serde_json::json!(["96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754"])
    );

    let (ok, stdout, stderr) = runtime_test(policy.to_str().unwrap(), &log);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");

    // The same file measured with another content: its template hash no longer matches.
    let text = std::fs::read_to_string(&log).unwrap();
    let changed = dir.path().join("changed");
    std::fs::write(&changed, text.replace("96d7fae8", "00000000")).unwrap();
    let (ok, stdout, stderr) = runtime_test(policy.to_str().unwrap(), changed.to_str().unwrap());
    assert!(!ok);
    assert!(stdout.contains("ima.validation.ima_hash (entry 1)"), "{stdout}");
    assert!(stderr.contains("fails policy keylime-runtime"), "{stderr}");

    // A list that is not IMA's format at all.
    std::fs::write(&changed, "10 zz ima-ng\n").unwrap();
    let (ok, stdout, _) = runtime_test(policy.to_str().unwrap(), changed.to_str().unwrap());
    assert!(!ok && stdout.contains("ima.parser.entry"), "{stdout}");

    // No boot_aggregate first: Keylime's generator refuses the list.
    let unknown = fixture("keylime/test/data/create-runtime-policy/ima-log-unknown");
    let (ok, _, stderr) = zest(&["policy", "create", "runtime", "--ima-log", &unknown]);
    assert!(!ok && stderr.contains("boot_aggregate"), "{stderr}");
    let (ok, _, stderr) = zest(&[
        "policy",
        "test",
        "--runtime",
        "--module",
        "builtin:keylime-runtime",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("--ima-log"), "{stderr}");
}

#[test]
fn a_measured_boot_refstate_is_created_and_the_example_policy_judges_the_log() {
    let log = fixture("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let (ok, _, stderr) = zest(&["policy", "create", "measured-boot", "--event-log", &log]);
    assert!(!ok && stderr.contains("--without-secureboot"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let refstate = dir.path().join("refstate.json");
    let (ok, _, stderr) = zest(&[
        "policy",
        "create",
        "measured-boot",
        "-i",
        "-e",
        &log,
        "-o",
        refstate.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&refstate).unwrap()).unwrap();
    assert_eq!(doc["has_secureboot"], false);
    assert_eq!(
        doc["scrtm_and_bios"][0]["platform_firmware"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        doc["kernels"][0]["vmlinuz_plain_sha256"],
        "0x4a8f189eb2dddfca6495f5e951a0099882e1453e9f6629ad4d961f99428e12c8"
    );

    // Keylime's example rejects this firmware's second EV_NO_ACTION (StartupLocality).
    let (ok, stdout, _) = zest(&[
        "policy",
        "test",
        "--measured-boot",
        "--module",
        "builtin:keylime-mb-example",
        "--policy",
        refstate.to_str().unwrap(),
        "--event-log",
        &log,
    ]);
    assert!(!ok);
    assert!(
        stdout.contains("measured_boot.policy_example") && stdout.contains("test was already run once"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""refstate":"…""#),
        "the refstate is elided on a terminal: {stdout}"
    );
}

/// A forged log: the sample's SecureBoot byte flipped, its digests left alone (so the PCRs
/// still replay). A policy alone would not notice; `zest policy test`, as the verifier,
/// fails it for the data that no longer matches its digest.
#[test]
fn forged_event_data_fails_whatever_the_policy() {
    use zest::evidence::uefi::{EventData, EventLog};
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/testdata/boot.log")).unwrap();
    let mut log = EventLog::parse(&sample).unwrap();
    let event = log
        .events
        .iter_mut()
        .find(|e| matches!(e.decode(), EventData::Variable(v) if v.name == "SecureBoot"))
        .unwrap();
    *event.data.last_mut().unwrap() ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let forged = dir.path().join("forged.log");
    std::fs::write(&forged, log.encode()).unwrap();
    let (ok, out, _) = policy_test("builtin:accept-all", forged.to_str().unwrap());
    assert!(!ok, "{out}");
    assert!(out.contains("measured_boot.invalid_event_data"), "{out}");
}

/// `zest policy new` refuses what would not make a crate, and never writes over a directory.
#[test]
fn policy_new_refuses_bad_names_existing_directories_and_a_missing_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let new = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zest"))
            .args(["policy", "new"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = new(&["--runtime", "../escape"]);
    assert!(!ok && err.contains("is not a crate name"), "{err}");
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let (ok, err) = new(&["--runtime", "taken"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path().join("taken")).unwrap().count(), 0);
    let (ok, err) = new(&["--measured-boot", "fresh", "--sdk", "/nonexistent/sdk"]);
    assert!(
        !ok && err.contains("the policy SDK is not at /nonexistent/sdk"),
        "{err}"
    );
    assert!(!dir.path().join("fresh").exists());
    let (ok, err) = new(&["--measured-boot", "fresh"]);
    assert!(ok, "{err}");
    let manifest = std::fs::read_to_string(dir.path().join("fresh/Cargo.toml")).unwrap();
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .unwrap();
    assert!(
        manifest.contains(&format!("path = \"{}\"", sdk.display())),
        "{manifest}"
    );
    assert!(manifest.contains("features = [\"measured-boot\"]"), "{manifest}");
    assert_eq!(
        std::fs::read(dir.path().join("fresh/testdata/boot.log")).unwrap(),
        std::fs::read(sdk.join("testdata/boot.log")).unwrap()
    );
}
