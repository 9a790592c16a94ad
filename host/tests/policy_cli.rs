//! `zest policy test` as a policy author runs it before uploading a policy.

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
