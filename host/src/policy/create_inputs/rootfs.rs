//! `--rootfs`: the digests of the files of a root filesystem, as
//! `keylime-policy create runtime --rootfs` computes them: every regular file owned by root
//! (uid 0), of any mode and size, keyed by its path inside the rootfs (`/etc/hosts`).
//! Symlinks are never followed; fifos, sockets and devices are skipped.
//!
//! Left out: the top-level directories Keylime always leaves out ([`BASE_EXCLUDE_DIRS`]:
//! `/var`, not `/usr/var`), and the `--skip-path` directories. Keylime also leaves out the
//! mount points of the machine it runs on whose filesystem type differs from its `/`'s,
//! whatever rootfs it reads; zest does not (that depends on the host, not on the rootfs):
//! name such directories with `--skip-path`.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Digests, InputError, file_key};
use crate::evidence::HashAlg;

/// Keylime's `BASE_EXCLUDE_DIRS`, relative to the rootfs.
pub const BASE_EXCLUDE_DIRS: &[&str] = &[
    "sys",
    "run",
    "proc",
    "lost+found",
    "dev",
    "media",
    "snap",
    "mnt",
    "var",
    "tmp",
];

/// The digests of the root-owned regular files under `root`, hashed with `alg`, leaving out
/// [`BASE_EXCLUDE_DIRS`] and `skip_paths`, with a warning for each skip path that is not a
/// directory under the rootfs and so leaves nothing out (empty items are ignored). Skipping
/// the rootfs or a directory holding it gives no digests. A missing rootfs, an unreadable
/// directory or an unreadable file is an error.
pub fn rootfs_digests(
    root: &Path,
    skip_paths: &[String],
    alg: HashAlg,
) -> Result<(Digests, Vec<InputError>), InputError> {
    let rootfs_error = |reason: String| InputError::Rootfs {
        path: root.to_path_buf(),
        reason,
    };
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(rootfs_error("not a directory".into())),
        Err(e) => return Err(rootfs_error(e.to_string())),
    }
    let canonical_root = std::fs::canonicalize(root).map_err(|e| rootfs_error(e.to_string()))?;
    let mut excluded: BTreeSet<PathBuf> = BASE_EXCLUDE_DIRS.iter().map(PathBuf::from).collect();
    let mut warnings = Vec::new();
    for skip in skip_paths.iter().filter(|s| !s.is_empty()) {
        match skip_dir(root, &canonical_root, skip) {
            Ok(relative) if relative.as_os_str().is_empty() => return Ok((Digests::new(), warnings)),
            Ok(relative) => {
                excluded.insert(relative);
            }
            Err(warning) => warnings.push(warning),
        }
    }

    let mut digests = Digests::new();
    let mut buffer = vec![0u8; 64 * 1024];
    // Directories still to read: (path on disk, path inside the rootfs).
    let mut pending = vec![(root.to_path_buf(), PathBuf::new())];
    while let Some((dir, relative)) = pending.pop() {
        let read_error = |e: std::io::Error| rootfs_error(format!("reading {}: {e}", dir.display()));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(read_error(e)),
        };
        for entry in entries {
            let entry = entry.map_err(read_error)?;
            let path = entry.path();
            let inside = relative.join(entry.file_name());
            // symlink_metadata: a symlink is seen as one, never as what it points to.
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Gone since the directory was listed: not part of the rootfs any more.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(rootfs_error(format!("{}: {e}", path.display()))),
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                if !excluded.contains(&inside) {
                    pending.push((path, inside));
                }
            } else if kind.is_file() && meta.uid() == 0 {
                let Some(digest) = file_digest(&path, alg, &mut buffer)
                    .map_err(|e| rootfs_error(format!("reading {}: {e}", path.display())))?
                else {
                    continue;
                };
                let name = inside.to_str().ok_or_else(|| InputError::NotUtf8(path.clone()))?;
                if let Some(key) = file_key(name) {
                    digests.entry(key).or_default().insert(digest);
                }
            }
        }
    }
    Ok((digests, warnings))
}

/// A `--skip-path` as a directory path relative to the rootfs ("" when it is the rootfs or
/// holds it). As in Keylime, a relative skip path is relative to the current directory, not
/// to the rootfs.
fn skip_dir(root: &Path, canonical_root: &Path, skip: &str) -> Result<PathBuf, InputError> {
    let skip_error = |reason: String| InputError::SkipPath {
        path: skip.to_owned(),
        reason,
    };
    let canonical = std::fs::canonicalize(skip).map_err(|e| skip_error(e.to_string()))?;
    if !canonical.is_dir() {
        return Err(skip_error("not a directory".into()));
    }
    if canonical_root.starts_with(&canonical) {
        return Ok(PathBuf::new());
    }
    canonical
        .strip_prefix(canonical_root)
        .map(Path::to_path_buf)
        .map_err(|_| skip_error(format!("not a directory under the rootfs {}", root.display())))
}

/// The hex digest of a file's contents; `None` when it vanished before it could be opened.
fn file_digest(path: &Path, alg: HashAlg, buffer: &mut [u8]) -> std::io::Result<Option<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = alg.hasher();
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(buffer.get(..n).unwrap_or_default());
    }
    Ok(Some(hex::encode(hasher.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> String {
        hex::encode(HashAlg::Sha256.digest(&[data]))
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, data) in [
            ("bin/tool", "tool"),
            ("etc/a b.conf", "spaced"),
            ("etc/sub/skipped", "s"),
            ("var/log/x", "v"),
            ("usr/var/kept", "k"),
        ] {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, data).unwrap();
        }
        std::os::unix::fs::symlink("bin/tool", root.join("link")).unwrap();
        dir
    }

    #[test]
    fn root_owned_files_outside_excluded_dirs() {
        let dir = tree();
        let owned = std::fs::metadata(dir.path().join("bin/tool")).unwrap().uid() == 0;
        let skip = dir.path().join("etc/sub").display().to_string();
        let (digests, warnings) = rootfs_digests(dir.path(), &[skip], HashAlg::Sha256).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        if !owned {
            // Not running as root: nothing is root-owned.
            assert!(digests.is_empty());
            return;
        }
        let keys: Vec<&str> = digests.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/bin/tool", "/etc/a_b.conf", "/usr/var/kept"]);
        assert_eq!(digests["/bin/tool"], BTreeSet::from([sha256(b"tool")]));
    }

    #[test]
    fn skip_paths_not_under_the_rootfs_leave_nothing_out_and_say_so() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        let (all, _) = rootfs_digests(dir.path(), &[], HashAlg::Sha1).unwrap();
        for bad in [
            outside.path().display().to_string(),
            dir.path().join("no-such-dir").display().to_string(),
            dir.path().join("bin/tool").display().to_string(),
            // Relative to the current directory, as Keylime reads it: not under the rootfs.
            "etc/sub".to_owned(),
        ] {
            let (digests, warnings) =
                rootfs_digests(dir.path(), std::slice::from_ref(&bad), HashAlg::Sha1).unwrap();
            assert_eq!(digests, all);
            let [warning] = warnings.as_slice() else {
                panic!("{warnings:?}")
            };
            assert!(
                warning.to_string().starts_with(&format!("--skip-path {bad}:")),
                "{warning}"
            );
        }
        for whole in [dir.path().to_path_buf(), dir.path().join("..")] {
            let skip = whole.display().to_string();
            assert!(
                rootfs_digests(dir.path(), &[skip], HashAlg::Sha1)
                    .unwrap()
                    .0
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_missing_rootfs_is_an_error() {
        let dir = tree();
        let err = rootfs_digests(&dir.path().join("nope"), &[], HashAlg::Sha256).unwrap_err();
        // Keylime logs this and writes a policy without the rootfs: a typo would go unseen.
        assert!(err.to_string().starts_with("--rootfs "), "{err}");
        let err = rootfs_digests(&dir.path().join("bin/tool"), &[], HashAlg::Sha256).unwrap_err();
        assert!(err.to_string().ends_with("not a directory"), "{err}");
    }
}
