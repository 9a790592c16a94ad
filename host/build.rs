//! Builds the built-in policies (`../policies`, a workspace of its own) for wasm32-wasip2
//! and leaves the components in OUT_DIR for `include_bytes!`.
//!
//! The nested cargo gets a target directory of its own (sharing the outer one deadlocks on
//! its lock) and none of the outer build's compiler settings: clippy's wrapper, fuzzing's
//! sanitizer flags and a host `--target` must not reach a wasm build.

// A build script reports failure by panicking: cargo prints the message and stops the build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;

const POLICIES: [&str; 4] = [
    "accept_all",
    "keylime_mb_example",
    "keylime_runtime",
    "reject_all",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let policies = manifest.join("../policies");
    println!("cargo:rerun-if-changed=../policies");
    println!("cargo:rerun-if-changed=../wit");
    println!("cargo:rerun-if-changed=../sdk");
    println!("cargo:rerun-if-env-changed=ZEST_POLICIES_TARGET_DIR");

    // target/<profile>/build/zest-<hash>/out → target/zest-policies: one nested build shared
    // by every profile and by clippy.
    let target_dir = std::env::var_os("ZEST_POLICIES_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            out.ancestors()
                .nth(4)
                .map(|t| t.join("zest-policies"))
                .unwrap_or_else(|| out.join("zest-policies"))
        });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(policies.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the built-in policies");
    if !status.success() {
        panic!(
            "building the built-in policies failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }
    for name in POLICIES {
        let built = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        std::fs::copy(&built, out.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
