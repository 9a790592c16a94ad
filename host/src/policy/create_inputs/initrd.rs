//! `--ramdisk-dir`: the digests of the regular files inside initramfs images, as
//! `keylime-policy create runtime --ramdisk-dir` computes them from extracted images.
//!
//! The images are the entries of the directory whose name starts with `initr` and that are
//! files (symlinks followed). An image may start with uncompressed "early" archives
//! (microcode) before the main archive; as Keylime (dracut's skipcpio), they are left out
//! when something follows them, and the main archive is decompressed by the system's own
//! tool for its format (`gzip`, `zstd`, `xz`, `bzip2`, `lz4`, `lzop`) and read as cpio here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

use super::cpio::{self, CpioError};
use super::{Digests, InputError, file_key};
use crate::evidence::HashAlg;

/// Largest decompressed image read (real ones are tens to hundreds of MiB).
pub const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;

/// Why one image could not be read.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("reading it: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Cpio(#[from] CpioError),
    #[error(
        "the data at offset {offset} is in no format zest knows (first bytes {magic}); \
         expected a cpio archive or gzip, zstd, xz, lzma, bzip2, lz4 or lzo data"
    )]
    UnknownFormat { offset: usize, magic: String },
    #[error("decompressing it needs `{tool}` ({format} data at offset {offset}), which is not installed")]
    ToolMissing {
        tool: &'static str,
        format: &'static str,
        offset: usize,
    },
    #[error("`{tool} -dc` failed on its {format} data at offset {offset}: {reason}")]
    Tool {
        tool: &'static str,
        format: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("it decompresses to more than {} bytes", MAX_DECOMPRESSED_BYTES)]
    TooLarge,
    #[error("a member name that is not UTF-8: {0}")]
    NotUtf8(String),
}

/// How the main archive of an image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Lzma,
    Bzip2,
    Lz4,
    Lzo,
}

impl Compression {
    /// The format whose magic `data` starts with (the magics Keylime and the kernel know;
    /// lz4 in both its frame and its legacy, kernel, format).
    pub fn detect(data: &[u8]) -> Option<Self> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (b"070701", Compression::None),
            (b"070702", Compression::None),
            (b"\x1f\x8b", Compression::Gzip),
            (b"\x28\xb5\x2f\xfd", Compression::Zstd),
            (b"\xfd7zXZ\x00", Compression::Xz),
            (b"\x5d\x00\x00", Compression::Lzma),
            (b"BZh", Compression::Bzip2),
            (b"\x04\x22\x4d\x18", Compression::Lz4),
            (b"\x02\x21\x4c\x18", Compression::Lz4),
            (b"\x89LZO\x00\x0d", Compression::Lzo),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|(_, c)| *c)
    }

    /// The format's name and the tool that decompresses it with `-dc` (none for plain cpio).
    pub fn tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::None => None,
            Self::Gzip => Some(("gzip", "gzip")),
            Self::Zstd => Some(("zstd", "zstd")),
            Self::Xz => Some(("xz", "xz")),
            // xz reads the legacy .lzma format too.
            Self::Lzma => Some(("lzma", "xz")),
            Self::Bzip2 => Some(("bzip2", "bzip2")),
            Self::Lz4 => Some(("lz4", "lz4")),
            Self::Lzo => Some(("lzo", "lzop")),
        }
    }
}

/// The digests of the regular files of every image in `dir`, merged (a path found in two
/// images gets both digests). A directory without images is an error, not an empty result.
pub fn ramdisk_digests(dir: &Path, alg: HashAlg) -> Result<Digests, InputError> {
    let images = images(dir)?;
    let mut digests = Digests::new();
    for path in images {
        let image = std::fs::read(&path).map_err(|e| InputError::Image {
            path: path.clone(),
            reason: ImageError::Read(e),
        })?;
        let found = image_digests(&image, alg).map_err(|reason| InputError::Image { path, reason })?;
        for (key, digest) in found {
            digests.entry(key).or_default().insert(digest);
        }
    }
    Ok(digests)
}

/// The images of `dir`, sorted: its entries named `initr…` that are files (through symlinks).
fn images(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let ramdisk_error = |reason: String| InputError::RamdiskDir {
        path: dir.to_path_buf(),
        reason,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| ramdisk_error(e.to_string()))?;
    let mut images = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ramdisk_error(e.to_string()))?;
        let named = entry.file_name().as_encoded_bytes().starts_with(b"initr");
        if named && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            images.push(entry.path());
        }
    }
    if images.is_empty() {
        return Err(ramdisk_error(
            "no initramfs image in it (a file whose name starts with `initr`)".into(),
        ));
    }
    images.sort();
    Ok(images)
}

/// The offset of an image's main archive: past every uncompressed archive that something
/// other than zero padding follows. An image that is uncompressed cpio alone starts at 0.
pub fn main_archive_offset(image: &[u8]) -> Result<usize, CpioError> {
    let mut offset = 0;
    loop {
        if !image.get(offset..).is_some_and(cpio::is_newc) {
            return Ok(offset);
        }
        let next = cpio::skip_zeros(image, cpio::archive_end(image, offset)?);
        if next >= image.len() {
            return Ok(offset);
        }
        offset = next;
    }
}

/// The digest of each regular file of one image, by policy key. Within an image a later
/// member of the same path replaces an earlier one, as when the kernel unpacks it.
pub fn image_digests(image: &[u8], alg: HashAlg) -> Result<BTreeMap<String, String>, ImageError> {
    let offset = main_archive_offset(image)?;
    let main = image.get(offset..).unwrap_or_default();
    let compression = Compression::detect(main).ok_or_else(|| ImageError::UnknownFormat {
        offset,
        magic: hex::encode(main.get(..8).unwrap_or(main)),
    })?;
    let decompressed;
    let stream = match compression.tool() {
        None => main,
        Some((format, tool)) => {
            decompressed = decompress(main, format, tool, offset)?;
            decompressed.as_slice()
        }
    };
    file_digests(stream, alg)
}

/// An inode of a cpio stream: (archive, devmajor, devminor, ino).
type Inode = (usize, u32, u32, u32);

/// Hashes the regular files of a cpio stream. Hard links: newc stores the data once, with
/// the last name of an inode; every name of the inode gets that data's digest.
fn file_digests(stream: &[u8], alg: HashAlg) -> Result<BTreeMap<String, String>, ImageError> {
    let mut out = BTreeMap::new();
    let mut links: BTreeMap<Inode, (Vec<String>, Option<String>)> = BTreeMap::new();
    for member in cpio::parse(stream)? {
        if !member.is_regular_file() {
            continue;
        }
        let name = std::str::from_utf8(member.name)
            .map_err(|_| ImageError::NotUtf8(String::from_utf8_lossy(member.name).into_owned()))?;
        let Some(key) = file_key(name) else {
            continue;
        };
        if member.nlink > 1 {
            let group = links
                .entry((member.archive, member.devmajor, member.devminor, member.ino))
                .or_default();
            group.0.push(key);
            if !member.data.is_empty() {
                group.1 = Some(hex::encode(alg.digest(&[member.data])));
            }
            continue;
        }
        out.insert(key, hex::encode(alg.digest(&[member.data])));
    }
    for (names, digest) in links.into_values() {
        let digest = digest.unwrap_or_else(|| hex::encode(alg.digest(&[])));
        for name in names {
            out.insert(name, digest.clone());
        }
    }
    Ok(out)
}

/// Runs `tool -dc` over `data`: stdin is fed from a thread while stdout is read here, so
/// neither pipe can fill up and stall the other.
fn decompress(
    data: &[u8],
    format: &'static str,
    tool: &'static str,
    offset: usize,
) -> Result<Vec<u8>, ImageError> {
    let tool_error = |reason: String| ImageError::Tool {
        tool,
        format,
        offset,
        reason,
    };
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::ToolMissing { tool, format, offset },
            _ => tool_error(e.to_string()),
        })?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(tool_error("its pipes could not be opened".into()));
    };
    let (read, message) = std::thread::scope(|scope| {
        // A tool that stops reading early makes this write fail; its exit status says why.
        scope.spawn(move || {
            let _ = stdin.write_all(data);
        });
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text)
                .trim()
                .chars()
                .take(2000)
                .collect::<String>()
        });
        let mut out = Vec::new();
        let read = stdout
            .take(MAX_DECOMPRESSED_BYTES + 1)
            .read_to_end(&mut out)
            .map(|_| out);
        if read
            .as_ref()
            .is_ok_and(|out| out.len() as u64 > MAX_DECOMPRESSED_BYTES)
        {
            // Stop the tool so the stdin and stderr threads end.
            let _ = child.kill();
        }
        (read, errors.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| tool_error(e.to_string()))?;
    let out = read.map_err(|e| tool_error(e.to_string()))?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(ImageError::TooLarge);
    }
    // gzip exits with 2 after a warning only (e.g. "trailing garbage ignored").
    let warning_only = tool == "gzip" && status.code() == Some(2);
    if !status.success() && !warning_only {
        let reason = if message.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {message}")
        };
        return Err(tool_error(reason));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::create_inputs::cpio::write_newc;

    const FILE: u32 = 0o100_644;

    fn sha256(data: &[u8]) -> String {
        hex::encode(HashAlg::Sha256.digest(&[data]))
    }

    #[test]
    fn an_early_archive_is_skipped_and_a_lone_archive_is_read_whole() {
        let early = write_newc(&[("kernel/x86/microcode/GenuineIntel.bin", FILE, b"ucode")]);
        let main = write_newc(&[
            ("./usr/bin/init", 0o100_755, b"init"),
            ("etc/a b.conf", FILE, b"x"),
        ]);
        assert_eq!(main_archive_offset(&early).unwrap(), 0);
        let image = [early.clone(), main].concat();
        assert_eq!(main_archive_offset(&image).unwrap(), early.len());
        let digests = image_digests(&image, HashAlg::Sha256).unwrap();
        assert_eq!(
            digests,
            BTreeMap::from([
                ("/etc/a_b.conf".to_owned(), sha256(b"x")),
                ("/usr/bin/init".to_owned(), sha256(b"init")),
            ])
        );
        let alone = image_digests(&early, HashAlg::Sha1).unwrap();
        assert_eq!(
            alone.keys().collect::<Vec<_>>(),
            ["/kernel/x86/microcode/GenuineIntel.bin"]
        );
    }

    #[test]
    fn hard_links_share_the_data_of_their_inode() {
        let mut archive = write_newc(&[("bin/a", FILE, b""), ("bin/b", FILE, b"shared")]);
        // Make both entries one inode with two links (ino field at 6, nlink at 38).
        for header in [0, 116] {
            archive[header + 6..header + 14].copy_from_slice(b"00000007");
            archive[header + 38..header + 46].copy_from_slice(b"00000002");
        }
        let digests = image_digests(&archive, HashAlg::Sha256).unwrap();
        assert_eq!(digests["/bin/a"], sha256(b"shared"));
        assert_eq!(digests["/bin/b"], sha256(b"shared"));
    }

    #[test]
    fn unknown_formats_name_their_bytes() {
        let err = image_digests(b"PK\x03\x04 not an initrd", HashAlg::Sha256).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("offset 0") && text.contains("504b0304"), "{text}");
    }

    #[test]
    fn formats_are_detected_by_magic() {
        assert_eq!(Compression::detect(b"\x1f\x8b\x08"), Some(Compression::Gzip));
        assert_eq!(Compression::detect(b"\x02\x21\x4c\x18.."), Some(Compression::Lz4));
        assert_eq!(Compression::detect(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(Compression::detect(b"070702"), Some(Compression::None));
        assert_eq!(Compression::detect(b"07070"), None);
    }
}
