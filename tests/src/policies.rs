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
