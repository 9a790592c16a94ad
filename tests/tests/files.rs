//! What zest leaves on disk is its owner's only: the data directory 0700, the database and
//! its WAL 0600 from their creation, keys 0600.

use std::os::unix::fs::PermissionsExt;

use zest_tests::TestRegistrar;
use zest_tests::server::{RegistrarOptions, TestVerifier};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_data_directory_and_database_are_private_from_creation() {
    // A data directory someone made world-readable is tightened.
    let data = tempfile::Builder::new().prefix("zest-files-").tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let verifier = TestVerifier::start_in(data, zest_tests::pull_env::config())
        .await
        .unwrap();
    let dir = verifier.data.path();
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&dir.join("zest.sqlite")), 0o600);
    let wal = dir.join("zest.sqlite-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    for key in ["ca-private.pem", "server-private.pem", "client-private.pem"] {
        assert_eq!(mode(&dir.join("cv_ca").join(key)), 0o600, "{key}");
    }
    // Nothing below it is writable by others.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        assert_eq!(mode(&path) & 0o002, 0, "{} is world-writable", path.display());
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }

    let registrar = TestRegistrar::start(RegistrarOptions::default()).await.unwrap();
    assert_eq!(mode(registrar.data.path()), 0o700);
    assert_eq!(mode(&registrar.data.path().join("zest.sqlite")), 0o600);
}

#[test]
fn a_tampered_compiled_policy_is_compiled_again_never_loaded() {
    use zest::policy::{PolicyLimits, PolicyRuntime};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("policy-cache");
    let source = zest::policy::builtin_measured_boot("accept-all").unwrap();
    let digest = hex::encode(zest::evidence::HashAlg::Sha256.digest(&[source]));
    let entry = cache.join(format!("{digest}.cwasm"));

    PolicyRuntime::new(PolicyLimits::default(), Some(cache.clone()))
        .unwrap()
        .component(source)
        .unwrap();
    let written = std::fs::read(&entry).unwrap();
    assert_eq!(mode(&dir.path().join("policy-cache.key")), 0o600);
    assert_eq!(mode(&entry), 0o600);

    // Someone changes one byte of the compiled code: a new process does not load it, it
    // compiles the source again and writes an entry of its own.
    let mut tampered = written.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    std::fs::write(&entry, &tampered).unwrap();
    PolicyRuntime::new(PolicyLimits::default(), Some(cache.clone()))
        .unwrap()
        .component(source)
        .unwrap();
    let rewritten = std::fs::read(&entry).unwrap();
    assert_ne!(rewritten, tampered, "the tampered entry was kept");

    // An entry written with another installation's key is not ours either.
    std::fs::write(dir.path().join("policy-cache.key"), [7u8; 32]).unwrap();
    let before = std::fs::read(&entry).unwrap();
    PolicyRuntime::new(PolicyLimits::default(), Some(cache))
        .unwrap()
        .component(source)
        .unwrap();
    assert_ne!(std::fs::read(&entry).unwrap(), before);
    // No temporary files are left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("policy-cache"))
            .unwrap()
            .count(),
        1
    );
}
