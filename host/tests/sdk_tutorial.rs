//! `sdk/README.md`, followed word for word: its files are written into a fresh directory
//! beside a `zest` checkout, its `cargo test` and wasm build run, and `zest policy test`
//! judges a real boot log with the component it built.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn fixture(path: &str) -> PathBuf {
    let root = std::env::var("ZEST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared/fixtures"));
    root.join(path)
}

/// The tutorial's files: fenced blocks whose info string names a path (```rust my-policy/src/lib.rs).
fn tutorial_files(readme: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let path = info.split_whitespace().nth(1);
        let mut body = String::new();
        for inner in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        if let Some(path) = path {
            files.push((path.to_owned(), body));
        }
    }
    files
}

/// Cargo as the reader runs it: none of the outer build's settings leak in; one target
/// directory is kept between runs so CI compiles the dependencies once.
fn cargo(dir: &Path, args: &[&str]) {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", repo().join("target/zest-tutorial"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .status()
        .expect("running cargo");
    assert!(status.success(), "cargo {args:?} failed in {}", dir.display());
}

fn zest_policy_test(dir: &Path, policy: &Path) -> (bool, String) {
    let wasm = repo().join("target/zest-tutorial/wasm32-wasip2/release/my_policy.wasm");
    let out = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(["policy", "test", "--measured-boot", "--module"])
        .arg(&wasm)
        .arg("--policy")
        .arg(policy)
        .args(["--event-log", "boot.log"])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        // Progress lines (stderr) first, the result (stdout) last.
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// The log at `path` with the SecureBoot variable's value flipped to on.
fn forge_secure_boot(path: &Path) -> Vec<u8> {
    use zest::evidence::uefi::{EventData, EventLog};
    let mut log = EventLog::parse(&std::fs::read(path).unwrap()).unwrap();
    let event = log
        .events
        .iter_mut()
        .find(|e| matches!(e.decode(), EventData::Variable(v) if v.name == "SecureBoot"))
        .unwrap();
    *event.data.last_mut().unwrap() ^= 1;
    log.encode()
}

#[test]
fn the_sdk_tutorial_works_as_written() {
    let readme = std::fs::read_to_string(repo().join("sdk/README.md")).unwrap();
    let files = tutorial_files(&readme);
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "my-policy/Cargo.toml",
            "my-policy/src/lib.rs",
            "my-policy/policy.json"
        ]
    );

    // The reader's layout: `zest` (the checkout) and `my-policy` side by side.
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo(), home.path().join("zest")).unwrap();
    for (path, body) in &files {
        let full = home.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, body).unwrap();
    }
    let crate_dir = home.path().join("my-policy");
    // The reader's own boot log; here Keylime's Fedora log (Secure Boot off, `ro` set).
    std::fs::copy(
        fixture("keylime/test/data/create-mb-policy/binary_bios_measurements"),
        crate_dir.join("boot.log"),
    )
    .unwrap();
    // Pin shared dependencies to the versions zest itself is tested with.
    std::fs::copy(repo().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();

    cargo(&crate_dir, &["test", "--quiet"]);
    cargo(
        &crate_dir,
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );

    let (ok, out) = zest_policy_test(&crate_dir, Path::new("policy.json"));
    assert!(!ok, "{out}");
    assert!(
        out.contains("measured_boot.policy_my-policy {\"message\":\"Secure Boot is not enabled\"}"),
        "{out}"
    );
    assert!(out.contains("relevant PCRs [7, 8]"), "{out}");

    // A forged log: Secure Boot's data flipped to on, its digests left alone (so the PCRs
    // still replay). The policy alone would now pass; the host's data check fails it.
    let forged_path = crate_dir.join("forged.log");
    std::fs::write(&forged_path, forge_secure_boot(&crate_dir.join("boot.log"))).unwrap();
    std::fs::rename(crate_dir.join("boot.log"), crate_dir.join("genuine.log")).unwrap();
    std::fs::rename(&forged_path, crate_dir.join("boot.log")).unwrap();
    let (ok, out) = zest_policy_test(&crate_dir, Path::new("policy.json"));
    assert!(!ok, "{out}");
    assert!(out.contains("measured_boot.invalid_event_data"), "{out}");
    assert!(!out.contains("Secure Boot is not enabled"), "{out}");
    std::fs::rename(crate_dir.join("genuine.log"), crate_dir.join("boot.log")).unwrap();

    let relaxed = crate_dir.join("relaxed.json");
    std::fs::write(
        &relaxed,
        r#"{"secure_boot": false, "required_cmdline_options": ["ro", "rhgb"]}"#,
    )
    .unwrap();
    let (ok, out) = zest_policy_test(&crate_dir, &relaxed);
    assert!(ok, "{out}");
    assert!(out.trim_end().ends_with("PASS"), "{out}");
}
