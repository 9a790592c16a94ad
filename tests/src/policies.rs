//! Policy components built for the sandbox tests from `tests/policies` (misbehaving on
//! purpose), compiled once per process for wasm32-wasip2.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The bytes of test component `name` (`hostile`, `wrong_world`).
pub fn test_component(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let release = BUILT.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../target"))
            .join("zest-test-policies");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(manifest.join("policies/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the test policies");
        assert!(status.success(), "building tests/policies failed");
        target.join("wasm32-wasip2/release")
    });
    let path = release.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Keylime runtime policy (format 1, generator 3) allowing exactly `digests` (path, SHA-256).
pub fn runtime_policy(digests: &[(&str, Vec<u8>)]) -> serde_json::Value {
    let digests: serde_json::Map<String, serde_json::Value> = digests
        .iter()
        .map(|(path, digest)| (path.to_string(), serde_json::json!([hex::encode(digest)])))
        .collect();
    serde_json::json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}
