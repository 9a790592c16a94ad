//! `zest policy create runtime` from the sources `keylime-policy create runtime` (Keylime
//! 7.14.3) reads: a root filesystem, initramfs images, a flat allowlist, a base policy and
//! `--algo`. Expected digests are computed here with aws-lc (zest hashes with RustCrypto), and
//! the images are made here (cpio newc written by this file, compressed by the system's gzip
//! and zstd). The interop run (tests/interop/run.sh) compares the same cases with Keylime's
//! own keylime-policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use aws_lc_rs::digest;
use serde_json::{Value, json};
use zest_tests::process::zest_binary;

fn hex_digest(alg: &'static digest::Algorithm, data: &[u8]) -> String {
    hex::encode(digest::digest(alg, data))
}

fn sha256(data: &[u8]) -> String {
    hex_digest(&digest::SHA256, data)
}

/// `zest policy create runtime ARGS` run in `dir`.
fn create(dir: &Path, args: &[&str]) -> Output {
    Command::new(zest_binary().unwrap())
        .current_dir(dir)
        .args(["policy", "create", "runtime"])
        .args(args)
        .output()
        .unwrap()
}

/// The policy `create` wrote to stdout; the test fails with stderr otherwise.
fn policy(dir: &Path, args: &[&str]) -> Value {
    let out = create(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused(dir: &Path, args: &[&str]) -> String {
    let out = create(dir, args);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(
        out.stdout.is_empty(),
        "{args:?} wrote {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The files a rootfs gives, by policy key, with their contents.
const ROOTFS_FILES: &[(&str, &str, &[u8])] = &[
    ("bin/tool", "/bin/tool", b"#!/bin/sh\necho hi\n"),
    ("etc/config.txt", "/etc/config.txt", b"hello\n"),
    ("etc/empty", "/etc/empty", b""),
    ("etc/with space.conf", "/etc/with_space.conf", b"spaced\n"),
    (
        "etc/caf\u{e9}.txt",
        "/etc/caf\u{e9}.txt",
        "caf\u{e9}\n".as_bytes(),
    ),
    (
        "usr/lib/deep/nested/lib.so",
        "/usr/lib/deep/nested/lib.so",
        b"libdata",
    ),
    // Only the top-level /var and /run are left out.
    ("usr/var/kept", "/usr/var/kept", b"usr/var is not /var\n"),
    ("opt/run/kept", "/opt/run/kept", b"opt/run is not /run\n"),
    (
        "etc/sub/skipme.txt",
        "/etc/sub/skipme.txt",
        b"under a skip path\n",
    ),
];

/// A rootfs with what Keylime leaves out beside what it keeps.
fn rootfs(root: &Path) {
    for (path, _, data) in ROOTFS_FILES {
        write(&root.join(path), data);
    }
    for left_out in [
        "var/log/x.log",
        "tmp/x",
        "proc/x",
        "sys/x",
        "run/x",
        "dev/x",
        "media/x",
        "mnt/x",
        "snap/x",
        "lost+found/x",
    ] {
        write(&root.join(left_out), b"left out\n");
    }
    std::os::unix::fs::symlink("bin/tool", root.join("link-to-tool")).unwrap();
    std::os::unix::fs::symlink("../usr", root.join("etc/dirlink")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("etc/dangling")).unwrap();
    let fifo = std::ffi::CString::new(root.join("etc/fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // A file not owned by root is left out; only root can make one.
    let not_root = root.join("home/user/notroot.txt");
    write(&not_root, b"not root\n");
    let path = std::ffi::CString::new(not_root.into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::chown(path.as_ptr(), 1000, 1000) };
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every file of [`ROOTFS_FILES`] with its digest.
fn rootfs_digests(alg: &'static digest::Algorithm) -> BTreeMap<String, Vec<String>> {
    ROOTFS_FILES
        .iter()
        .map(|(_, key, data)| (key.to_string(), vec![hex_digest(alg, data)]))
        .collect()
}

/// A cpio newc archive of `(name, mode, data)` entries and its trailer, padded to 512 bytes
/// as GNU cpio pads it.
fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer: (&str, u32, &[u8]) = ("TRAILER!!!", 0, b"");
    for (i, (name, mode, data)) in entries.iter().chain([&trailer]).enumerate() {
        let fields = [
            i as u32 + 1,
            *mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
    out
}

/// `tool ARGS` with `data` on stdin; its stdout.
fn pipe(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e} (.ci/setup installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{tool} failed");
    out.stdout
}

const FILE: u32 = 0o100_644;
const DIR: u32 = 0o040_755;
const LINK: u32 = 0o120_777;

/// The main archive of an image tagged `tag`: directories, files and symlinks, as dracut
/// writes them.
fn initramfs_tree(tag: &str) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let init = format!("#!/bin/sh\n# init {tag}\n").into_bytes();
    let release = format!("NAME={tag}\n").into_bytes();
    let spaced = format!("space {tag}\n").into_bytes();
    let archive = newc(&[
        (".", DIR, b""),
        ("usr", DIR, b""),
        ("usr/bin", DIR, b""),
        ("usr/bin/init", 0o100_755, &init),
        ("usr/bin/sh", LINK, b"init"),
        ("bin", LINK, b"usr/bin"),
        ("etc", DIR, b""),
        ("etc/initrd-release", FILE, &release),
        ("etc/space name.conf", FILE, &spaced),
        ("etc/empty", FILE, b""),
        ("usr/lib/modules/common.ko", FILE, b"shared content\n"),
    ]);
    let files = BTreeMap::from([
        ("/usr/bin/init".to_owned(), init),
        ("/etc/initrd-release".to_owned(), release),
        ("/etc/space_name.conf".to_owned(), spaced),
        ("/etc/empty".to_owned(), Vec::new()),
        (
            "/usr/lib/modules/common.ko".to_owned(),
            b"shared content\n".to_vec(),
        ),
    ]);
    (archive, files)
}

/// A /boot-like directory: an image with an early microcode archive and a gzip main archive,
/// a zstd image, a symlink to the first, and files that are not images. Returns the digests
/// Keylime's --ramdisk-dir gives (SHA-256).
fn ramdisk_dir(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let early = newc(&[
        ("kernel", DIR, b""),
        ("kernel/x86/microcode/GenuineIntel.bin", FILE, b"FAKE MICROCODE\n"),
    ]);
    let (main_a, files_a) = initramfs_tree("gzip");
    let (main_b, files_b) = initramfs_tree("zstd");
    write(
        &dir.join("initramfs-a.img"),
        &[early, pipe("gzip", &["-n", "-c"], &main_a)].concat(),
    );
    write(&dir.join("initrd-b.img"), &pipe("zstd", &["-q", "-c"], &main_b));
    std::os::unix::fs::symlink("initramfs-a.img", dir.join("initrd-link.img")).unwrap();
    write(
        &dir.join("vmlinuz-6.1.0-test"),
        &pipe("gzip", &["-n", "-c"], &main_b),
    );
    write(
        &dir.join("initrd-subdir/initrd-nested.img"),
        &pipe("gzip", &["-c"], &newc(&[("x", FILE, b"x")])),
    );
    let mut digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, data) in files_a.into_iter().chain(files_b) {
        digests.entry(key).or_default().push(sha256(&data));
    }
    for list in digests.values_mut() {
        list.sort();
        list.dedup();
    }
    digests
}

/// The whole policy Keylime writes, but for the timestamp.
fn without_timestamp(mut policy: Value) -> Value {
    let timestamp = policy["meta"]["timestamp"].take();
    assert!(timestamp.is_string(), "{policy}");
    policy
}

fn expected_policy(digests: BTreeMap<String, Vec<String>>) -> Value {
    json!({
        "meta": {"version": 1, "generator": 3, "timestamp": null},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}

#[test]
fn a_rootfs_and_initramfs_images_give_the_policy_keylime_writes() {
    let dir = tempfile::tempdir().unwrap();
    rootfs(&dir.path().join("rootfs"));
    let ramdisk = ramdisk_dir(&dir.path().join("boot"));

    let mut expected = rootfs_digests(&digest::SHA256);
    let got = policy(dir.path(), &["--rootfs", "rootfs"]);
    if !running_as_root() {
        // Keylime runs as root only; elsewhere no file of the test's is root-owned.
        expected.clear();
    }
    assert_eq!(without_timestamp(got), expected_policy(expected.clone()));

    // -s takes directories as Keylime does (relative to the current directory), and every
    // algorithm hashes the same files; --ramdisk-dir adds the images' files.
    for (alg, name) in [
        (&digest::SHA1_FOR_LEGACY_USE_ONLY, "sha1"),
        (&digest::SHA384, "sha384"),
        (&digest::SHA512, "sha512"),
    ] {
        let got = policy(
            dir.path(),
            &["--rootfs", "rootfs", "-s", "rootfs/etc/sub", "--algo", name],
        );
        let mut expected = rootfs_digests(alg);
        expected.remove("/etc/sub/skipme.txt");
        if !running_as_root() {
            expected.clear();
        }
        assert_eq!(without_timestamp(got), expected_policy(expected), "{name}");
    }
    let got = policy(dir.path(), &["--ramdisk-dir", "boot"]);
    assert_eq!(without_timestamp(got), expected_policy(ramdisk.clone()));

    let mut both = expected;
    for (key, digests) in ramdisk {
        let list = both.entry(key).or_default();
        list.extend(digests);
        list.sort();
        list.dedup();
    }
    let got = policy(dir.path(), &["--ramdisk-dir", "boot", "--rootfs", "rootfs"]);
    assert_eq!(without_timestamp(got), expected_policy(both));

    // Skipping the rootfs itself leaves nothing; a skip path outside it is ignored, with a
    // warning, as Keylime does.
    let got = policy(dir.path(), &["--rootfs", "rootfs/etc", "-s", "rootfs"]);
    assert_eq!(got["digests"], json!({}));
    let out = create(dir.path(), &["--rootfs", "rootfs", "-s", "boot"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: --skip-path boot: not a directory under the rootfs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn allowlists_base_policies_and_the_ima_list_choose_the_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    rootfs(&dir.path().join("rootfs"));
    let tool_sha1 = hex_digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"#!/bin/sh\necho hi\n");
    let other = sha256(b"other\n");
    write(
        &dir.path().join("allowlist-sha1.txt"),
        format!(
            "{tool_sha1}  /bin/tool\n\n{}\t/etc/with space.conf\n",
            hex_digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"x")
        )
        .as_bytes(),
    );
    write(
        &dir.path().join("allowlist-sha256.txt"),
        format!("{other}  /usr/bin/other\n{}  */bin/marked\n", sha256(b"m")).as_bytes(),
    );
    let base = json!({
        "meta": {"version": 1, "generator": 1, "timestamp": "2020-01-01 00:00:00"},
        "release": 7,
        "digests": {"/usr/bin/base-only": [sha256(b"base\n")], "/bin/tool": [sha256(b"old tool\n")]},
        "excludes": ["^/tmp/.*"],
        "keyrings": {".ima": [sha256(b"key")]},
        "ima": {"ignored_keyrings": ["%keyring"], "log_hash_alg": "sha256", "dm_policy": null},
        "ima-buf": {"dm_table_load": [sha256(b"dm")]},
        "verification-keys": "",
        "extra-field": "dropped",
    });
    write(&dir.path().join("base.json"), base.to_string().as_bytes());
    write(
        &dir.path().join("ima-sha1.log"),
        format!(
            "10 {z} ima-ng sha1:{} boot_aggregate\n10 {z} ima-ng sha1:{tool_sha1} /bin/tool\n",
            hex_digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"ba"),
            z = "0".repeat(40)
        )
        .as_bytes(),
    );
    let as_root = running_as_root();

    // A SHA-1 allowlist makes the rootfs SHA-1; its `*` and tab forms are read as
    // sha256sum writes them, spaces in paths become `_`.
    let got = policy(dir.path(), &["-a", "allowlist-sha1.txt", "--rootfs", "rootfs"]);
    assert_eq!(got["digests"]["/bin/tool"], json!([tool_sha1]));
    if as_root {
        assert_eq!(
            got["digests"]["/etc/with_space.conf"].as_array().unwrap().len(),
            2,
            "{got}"
        );
        assert_eq!(got["digests"].as_object().unwrap().len(), ROOTFS_FILES.len());
    }
    let got = policy(dir.path(), &["-a", "allowlist-sha256.txt"]);
    assert_eq!(got["digests"]["*/bin/marked"], json!([sha256(b"m")]));

    // The algorithm comes from the IMA list's boot_aggregate when nothing else names one.
    let got = policy(dir.path(), &["-m", "ima-sha1.log", "--rootfs", "rootfs"]);
    assert_eq!(got["digests"]["/bin/tool"], json!([tool_sha1]));
    assert!(got["digests"]["boot_aggregate"].is_array(), "{got}");

    // A base policy keeps what Keylime keeps and gets a new meta and release. With SHA-256
    // digests it agrees with --algo sha256 and makes the rootfs SHA-256 (Keylime refuses
    // the first and silently leaves the rootfs out in the second).
    for args in [
        &[
            "-p",
            "base.json",
            "-a",
            "allowlist-sha256.txt",
            "--algo",
            "sha256",
            "--rootfs",
            "rootfs",
        ][..],
        &[
            "-p",
            "base.json",
            "-a",
            "allowlist-sha256.txt",
            "--rootfs",
            "rootfs",
        ][..],
    ] {
        let got = without_timestamp(policy(dir.path(), args));
        let mut digests = if as_root {
            rootfs_digests(&digest::SHA256)
        } else {
            BTreeMap::new()
        };
        digests.insert("/usr/bin/base-only".into(), vec![sha256(b"base\n")]);
        digests.insert("/usr/bin/other".into(), vec![other.clone()]);
        digests.insert("*/bin/marked".into(), vec![sha256(b"m")]);
        let tool = digests.entry("/bin/tool".into()).or_default();
        tool.push(sha256(b"old tool\n"));
        tool.sort();
        assert_eq!(
            got,
            json!({
                "meta": {"version": 1, "generator": 3, "timestamp": null},
                "release": 0,
                "digests": digests,
                "excludes": ["^/tmp/.*"],
                "keyrings": {".ima": [sha256(b"key")]},
                "ima": {"ignored_keyrings": ["%keyring"], "log_hash_alg": "sha256", "dm_policy": null},
                "ima-buf": {"dm_table_load": [sha256(b"dm")]},
                "verification-keys": "",
            }),
            "{args:?}"
        );
    }

    // The flat allowlist form, boot_aggregate first.
    let out = create(
        dir.path(),
        &[
            "-m",
            "ima-sha1.log",
            "-a",
            "allowlist-sha1.txt",
            "--show-legacy-allowlist",
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let boot_aggregate = hex_digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"ba");
    let spaced = hex_digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"x");
    assert_eq!(
        text,
        format!("{boot_aggregate}  boot_aggregate\n{tool_sha1}  /bin/tool\n{spaced}  /etc/with_space.conf\n")
    );
}

#[test]
fn inputs_that_disagree_or_are_not_there_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    rootfs(&dir.path().join("rootfs"));
    let sha1 = hex_digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"x");
    write(
        &dir.path().join("allowlist-sha1.txt"),
        format!("{sha1}  /a\n").as_bytes(),
    );
    write(
        &dir.path().join("allowlist-sha256.txt"),
        format!("{}  /a\n", sha256(b"x")).as_bytes(),
    );
    write(
        &dir.path().join("commented.txt"),
        format!("{sha1}  /a\n# a comment line\n").as_bytes(),
    );
    write(
        &dir.path().join("base-sha1.json"),
        json!({"digests": {"/b": [sha1]}}).to_string().as_bytes(),
    );
    write(&dir.path().join("boot/vmlinuz"), b"not an image");
    write(
        &dir.path().join("bad-image/initrd.img"),
        b"PK\x03\x04 a zip, not an initramfs",
    );
    let out_file = dir.path().join("policy.json");
    let out = out_file.to_str().unwrap();

    for (args, says) in [
        (
            &["-p", "base-sha1.json", "-a", "allowlist-sha256.txt", "-o", out][..],
            "the digest algorithm in the allowlist (sha256 or sm3_256) does not match the previously set 'sha1' algorithm",
        ),
        (
            &[
                "-a",
                "allowlist-sha1.txt",
                "--algo",
                "sha256",
                "--rootfs",
                "rootfs",
                "-o",
                out,
            ][..],
            "the digest algorithm in the allowlist (sha1) does not match the previously set 'sha256' algorithm",
        ),
        (
            &["--rootfs", "no-such-dir", "-o", out][..],
            "--rootfs no-such-dir: No such file or directory",
        ),
        (
            &["-a", "commented.txt", "-o", out][..],
            "line 2: '# a comment line'",
        ),
        (
            &["--ramdisk-dir", "boot", "-o", out][..],
            "no initramfs image in it",
        ),
        (
            &["--ramdisk-dir", "bad-image", "-o", out][..],
            "in no format zest knows (first bytes 504b0304",
        ),
        (
            &["--rootfs", "rootfs", "--algo", "sm3_256", "-o", out][..],
            "zest has no SM3 implementation",
        ),
    ] {
        let stderr = refused(dir.path(), args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!out_file.exists(), "{args:?} wrote {out}");
    }
    // An algorithm Keylime does not name is a usage error, exit 2, as Keylime's argparse.
    let out = create(dir.path(), &["--rootfs", "rootfs", "--algo", "md5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'md5' for '--algo"));
}
