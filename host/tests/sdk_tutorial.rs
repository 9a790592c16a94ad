//! `sdk/README.md`, followed word for word: its ```` ```sh run ```` blocks are run in order
//! (`zest` is this build's binary, `cargo` the reader's), its files are written where they
//! name, and each ```` ```text ```` block must appear in the output of the command before it.
//! The reader needs no TPM and no log of their own: `zest policy new` brings the samples.

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

/// One step of the tutorial, in the order it appears.
#[derive(Debug)]
enum Step {
    /// A shell line the reader types.
    Run(String),
    /// A file the reader writes (a fenced block whose info string names a path).
    Write { path: String, body: String },
    /// Output the previous command prints.
    Expect(String),
}

fn steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        for inner in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        let words: Vec<&str> = info.split_whitespace().collect();
        match words.as_slice() {
            ["sh", "run"] => steps.extend(
                body.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| Step::Run(l.to_owned())),
            ),
            ["text"] => steps.push(Step::Expect(body)),
            [_, path] => steps.push(Step::Write {
                path: (*path).to_owned(),
                body,
            }),
            _ => {}
        }
    }
    steps
}

/// Runs one line as the reader would, in `dir`: (success, stdout and stderr).
fn run(line: &str, dir: &Path, target: &Path) -> (bool, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut command = match words[0] {
        "zest" => Command::new(env!("CARGO_BIN_EXE_zest")),
        // Cargo as the reader runs it: none of the outer build's settings leak in; one
        // target directory is kept between runs so CI compiles the dependencies once.
        "cargo" => {
            let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            c.env("CARGO_TARGET_DIR", target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .env_remove("CARGO_BUILD_TARGET")
                .env_remove("CARGO_MAKEFLAGS");
            c
        }
        other => panic!("the tutorial runs {other}, which this test does not know: {line}"),
    };
    let out = command.args(&words[1..]).current_dir(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn the_sdk_tutorial_works_as_written() {
    let readme = std::fs::read_to_string(repo().join("sdk/README.md")).unwrap();
    let steps = steps(&readme);
    let home = tempfile::tempdir().unwrap();
    let target = repo().join("target/zest-tutorial");
    let mut dir = home.path().to_path_buf();
    let mut last: Option<(String, bool, String)> = None;
    let mut policy_tests = 0;
    for step in &steps {
        match step {
            Step::Run(line) if line.starts_with("cd ") => {
                dir = dir
                    .join(line.trim_start_matches("cd ").trim())
                    .canonicalize()
                    .unwrap();
            }
            Step::Run(line) => {
                if let Some((previous, ok, out)) = last.take() {
                    assert!(ok, "`{previous}` failed:\n{out}");
                }
                let (ok, out) = run(line, &dir, &target);
                if let Some(name) = line
                    .strip_prefix("zest policy new ")
                    .and_then(|a| a.split_whitespace().last())
                {
                    assert!(ok, "`{line}` failed:\n{out}");
                    // Pin shared dependencies to the versions zest is tested with, and share
                    // the target directory (the tutorial names paths in `target/`).
                    let made = dir.join(name);
                    std::fs::copy(repo().join("Cargo.lock"), made.join("Cargo.lock")).unwrap();
                    std::fs::create_dir_all(&target).unwrap();
                    std::os::unix::fs::symlink(&target, made.join("target")).unwrap();
                }
                if line.starts_with("zest policy test") {
                    policy_tests += 1;
                }
                last = Some((line.clone(), ok, out));
            }
            Step::Write { path, body } => {
                let full = home.path().join(path);
                assert!(
                    full.parent().unwrap().is_dir(),
                    "the tutorial writes {path} before making its crate"
                );
                std::fs::write(&full, body).unwrap();
            }
            Step::Expect(expected) => {
                // `zest policy test` fails on FAIL: the expected output says which it is.
                let (line, _, out) = last.take().expect("an expected output follows a command");
                for want in expected.lines().filter(|l| !l.trim().is_empty()) {
                    assert!(
                        out.contains(want.trim()),
                        "`{line}` did not print `{}`:\n{out}",
                        want.trim()
                    );
                }
            }
        }
    }
    if let Some((line, ok, out)) = last {
        assert!(ok, "`{line}` failed:\n{out}");
    }
    assert_eq!(
        policy_tests, 2,
        "the tutorial runs zest policy test on both policies"
    );
}
