//! The sources of digests `zest policy create runtime` reads besides the IMA list, as
//! `keylime-policy create runtime` reads them (Keylime 7.14.3): a base policy, a
//! sha256sum-style allowlist, a root filesystem ([`rootfs`]) and initramfs images
//! ([`initrd`], [`cpio`]), and the digest algorithm their files are hashed with.
//!
//! Where Keylime fails silently (a missing rootfs, files hashed with an algorithm it cannot
//! name, `#` lines taken as digests), these functions return an error that says what is
//! wrong.

pub mod cpio;
pub mod initrd;
pub mod rootfs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use thiserror::Error;

use crate::evidence::HashAlg;

/// Paths with their accepted digests (lowercase hex), sorted and unique.
pub type Digests = BTreeMap<String, BTreeSet<String>>;

/// Why a source of digests cannot be used.
#[derive(Debug, Error)]
pub enum InputError {
    #[error("--rootfs {}: {reason}", .path.display())]
    Rootfs { path: PathBuf, reason: String },
    #[error("--skip-path {path}: {reason}")]
    SkipPath { path: String, reason: String },
    #[error("{}: the file name is not UTF-8 (leave its directory out with --skip-path)", .0.display())]
    NotUtf8(PathBuf),
    #[error("--ramdisk-dir {}: {reason}", .path.display())]
    RamdiskDir { path: PathBuf, reason: String },
    #[error("initramfs image {}: {reason}", .path.display())]
    Image {
        path: PathBuf,
        reason: initrd::ImageError,
    },
    #[error("line {line}: {reason}")]
    Allowlist { line: usize, reason: String },
    #[error("{0}")]
    BasePolicy(String),
    #[error(
        "the first digest of the {input} has {len} hex digits, which is no algorithm's (sha1 40, sha256 64, sha384 96, sha512 128)"
    )]
    UnknownDigestLength { input: &'static str, len: usize },
    #[error(
        "the digest algorithm in the {input} ({found}) does not match the previously set '{previous}' algorithm"
    )]
    AlgorithmMismatch {
        input: &'static str,
        found: &'static str,
        previous: &'static str,
    },
    #[error("--algo {0}: not one of sha1, sha256, sha384, sha512")]
    UnknownAlgorithm(String),
    #[error(
        "sm3_256: zest has no SM3 implementation to hash --rootfs and --ramdisk-dir files with \
         (choose --algo sha1, sha256, sha384 or sha512)"
    )]
    Sm3,
}

/// Adds `from`'s digests to `into`'s, path by path.
pub fn merge(into: &mut Digests, from: Digests) {
    for (path, digests) in from {
        into.entry(path).or_default().extend(digests);
    }
}

/// A digest as Keylime's policy schema accepts it: 40 to 128 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    (40..=128).contains(&text.len()) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The policy key of a file named `name` inside a rootfs or an archive: `/` and its path
/// with `.` and empty components dropped, `..` taken lexically (never above the root), and
/// every space replaced by `_`, as IMA writes paths. `None` for the root itself.
pub fn file_key(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!("/{}", parts.join("/")).replace(' ', "_"))
}

/// A digest algorithm as a source states it or its digests' length implies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sm3,
    /// 64 hex digits: SHA-256, unless a later source says SM3-256.
    Sha256OrSm3,
}

impl DigestAlgorithm {
    /// Keylime's names: `sha1`, `sha256`, `sha384`, `sha512`, `sm3_256`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            "sm3_256" => Some(Self::Sm3),
            _ => None,
        }
    }

    /// The algorithm of a digest of `len` hex digits.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            40 => Some(Self::Sha1),
            64 => Some(Self::Sha256OrSm3),
            96 => Some(Self::Sha384),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// `--algo NAME`: as [`Self::from_name`], but sm3_256 is refused since zest cannot
    /// hash with it.
    pub fn from_option(name: &str) -> Result<Self, InputError> {
        match Self::from_name(name) {
            Some(Self::Sm3) => Err(InputError::Sm3),
            Some(algorithm) => Ok(algorithm),
            None => Err(InputError::UnknownAlgorithm(name.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Sm3 => "sm3_256",
            Self::Sha256OrSm3 => "sha256 or sm3_256",
        }
    }

    /// The algorithm both `self` (set first) and `other` allow, if any.
    fn and(self, other: Self) -> Option<Self> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Self::Sha256OrSm3, b @ (Self::Sha256 | Self::Sm3)) => Some(b),
            (a @ (Self::Sha256 | Self::Sm3), Self::Sha256OrSm3) => Some(a),
            _ => None,
        }
    }

    /// The hash files are digested with (64 hex digits alone mean SHA-256).
    pub fn hash(self) -> Result<HashAlg, InputError> {
        match self {
            Self::Sha1 => Ok(HashAlg::Sha1),
            Self::Sha256 | Self::Sha256OrSm3 => Ok(HashAlg::Sha256),
            Self::Sha384 => Ok(HashAlg::Sha384),
            Self::Sha512 => Ok(HashAlg::Sha512),
            Self::Sm3 => Err(InputError::Sm3),
        }
    }
}

/// The algorithm for files, from `(source name, its algorithm)` pairs in Keylime's order of
/// precedence (`--algo`, base policy, allowlist, IMA list): every source that has one must
/// agree with those before it. None at all means SHA-256, as does an undecided 64-digit one.
///
/// Unlike Keylime, a 64-digit base policy or allowlist agrees with `--algo sha256` and hashes
/// files with SHA-256 when no IMA list decides (Keylime refuses the first and leaves the
/// files out in the second).
pub fn resolve_algorithm(
    sources: &[(&'static str, Option<DigestAlgorithm>)],
) -> Result<DigestAlgorithm, InputError> {
    let mut current: Option<DigestAlgorithm> = None;
    for &(input, found) in sources {
        let Some(found) = found else {
            continue;
        };
        current = Some(match current {
            None => found,
            Some(previous) => previous.and(found).ok_or(InputError::AlgorithmMismatch {
                input,
                found: found.name(),
                previous: previous.name(),
            })?,
        });
    }
    Ok(match current {
        None | Some(DigestAlgorithm::Sha256OrSm3) => DigestAlgorithm::Sha256,
        Some(algorithm) => algorithm,
    })
}

/// Digests read from a base policy or an allowlist, with the first one as the source lists
/// it: Keylime names the source's algorithm after that digest's length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedDigests {
    pub digests: Digests,
    pub first: Option<String>,
}

impl ListedDigests {
    /// The algorithm of the first digest; `None` when there is no digest.
    pub fn algorithm(&self, input: &'static str) -> Result<Option<DigestAlgorithm>, InputError> {
        let Some(first) = &self.first else {
            return Ok(None);
        };
        DigestAlgorithm::from_hex_len(first.len())
            .map(Some)
            .ok_or(InputError::UnknownDigestLength {
                input,
                len: first.len(),
            })
    }
}

/// An allowlist: lines of `<digest> <path>` as sha256sum prints them, read as Keylime reads
/// them. Each line is trimmed; blank lines and lines of one field are skipped; the digest
/// ends at the first whitespace and the path is the rest, its spaces replaced by `_`. A line
/// starting with `#` is refused (Keylime has no comments here: it would read `#` as a
/// digest), as is a digest that is not 40 to 128 lowercase hex digits.
pub fn parse_allowlist(text: &str) -> Result<ListedDigests, InputError> {
    let mut listed = ListedDigests::default();
    for (index, raw) in text.lines().enumerate() {
        let line_error = |reason: String| InputError::Allowlist {
            line: index.saturating_add(1),
            reason,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            return Err(line_error(format!(
                "'{line}': an allowlist has no comments (Keylime would read '#' as a digest); remove the line"
            )));
        }
        let Some((digest, path)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if !is_digest(digest) {
            return Err(line_error(format!(
                "'{digest}' is not a digest of 40 to 128 lowercase hex digits"
            )));
        }
        let path = path.trim_start().replace(' ', "_");
        listed.first.get_or_insert_with(|| digest.to_owned());
        listed.digests.entry(path).or_default().insert(digest.to_owned());
    }
    Ok(listed)
}

/// What a new policy keeps of a base policy (`--base-policy`), as Keylime's
/// `update_base_policy` picks it: `meta`, `release` and `ima.dm_policy` are made anew and
/// other keys are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePolicy {
    pub digests: ListedDigests,
    pub excludes: Vec<String>,
    pub keyrings: Digests,
    pub ima_buf: Digests,
    /// `ima.log_hash_alg` (sha1 when absent).
    pub log_hash_alg: String,
    pub ignored_keyrings: Vec<String>,
    /// `verification-keys`: Keylime's keyring as a JSON string ("" when absent).
    pub verification_keys: String,
}

impl BasePolicy {
    /// Reads a runtime policy document; every field kept must have the shape Keylime's
    /// schema gives it, or the error names the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, InputError> {
        let bad = InputError::BasePolicy;
        let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(policy) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let first = policy
            .get("digests")
            .and_then(Value::as_object)
            .and_then(|map| map.values().next())
            .and_then(Value::as_array)
            .and_then(|list| list.first())
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ima = match policy.get("ima") {
            None => serde_json::Map::new(),
            Some(Value::Object(ima)) => ima.clone(),
            Some(_) => return Err(bad("ima is not an object".into())),
        };
        let log_hash_alg = match ima.get("log_hash_alg") {
            None => "sha1".to_owned(),
            Some(Value::String(alg)) if HashAlg::from_name(alg).is_some() => alg.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "ima.log_hash_alg {other} is not one of sha1, sha256, sha384, sha512"
                )));
            }
        };
        let verification_keys = match policy.get("verification-keys") {
            None => String::new(),
            Some(Value::String(keys)) => keys.clone(),
            Some(_) => return Err(bad("verification-keys is not a string".into())),
        };
        Ok(Self {
            digests: ListedDigests {
                digests: digest_map(policy.get("digests"), "digests")?,
                first,
            },
            excludes: strings(policy.get("excludes"), "excludes")?,
            keyrings: digest_map(policy.get("keyrings"), "keyrings")?,
            ima_buf: digest_map(policy.get("ima-buf"), "ima-buf")?,
            log_hash_alg,
            ignored_keyrings: strings(ima.get("ignored_keyrings"), "ima.ignored_keyrings")?,
            verification_keys,
        })
    }
}

/// A `{path: [digest, …]}` object of a policy (absent: empty).
fn digest_map(value: Option<&Value>, field: &str) -> Result<Digests, InputError> {
    let bad = |what: String| InputError::BasePolicy(format!("{field}: {what}"));
    let mut out = Digests::new();
    let Some(value) = value else {
        return Ok(out);
    };
    let Value::Object(map) = value else {
        return Err(bad("not an object of paths".into()));
    };
    for (path, list) in map {
        let Value::Array(items) = list else {
            return Err(bad(format!("{path}: not a list of digests")));
        };
        if items.is_empty() {
            return Err(bad(format!(
                "{path}: an empty list (Keylime needs at least one digest)"
            )));
        }
        let set = out.entry(path.clone()).or_default();
        for item in items {
            match item.as_str() {
                Some(digest) if is_digest(digest) => {
                    set.insert(digest.to_owned());
                }
                _ => {
                    return Err(bad(format!(
                        "{path}: {item} is not a digest of 40 to 128 lowercase hex digits"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// A list of strings of a policy (absent: empty).
fn strings(value: Option<&Value>, field: &str) -> Result<Vec<String>, InputError> {
    let bad = || InputError::BasePolicy(format!("{field}: not a list of strings"));
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1: &str = "4ecc5ebbeb5ef4a2952c54653a7f0049f184c162";
    const SHA256: &str = "299001868fb8c02fd431c336c6d058f5558c5dff5b5af5e6fe04b870a6a9cbba";

    #[test]
    fn allowlists_read_as_keylime_reads_them() {
        let text = format!(
            "{SHA256}  /bin/tool\n\n   \n{SHA1}\t/etc/with space.conf \n{SHA256}\n{SHA1} */bin/marked\r\n"
        );
        let listed = parse_allowlist(&text).unwrap();
        assert_eq!(listed.first.as_deref(), Some(SHA256));
        let keys: Vec<&str> = listed.digests.keys().map(String::as_str).collect();
        assert_eq!(keys, ["*/bin/marked", "/bin/tool", "/etc/with_space.conf"]);
    }

    #[test]
    fn allowlist_comments_and_uppercase_digests_name_their_line() {
        let err = parse_allowlist(&format!("{SHA1}  /a\n# a comment\n")).unwrap_err();
        assert!(err.to_string().starts_with("line 2: '# a comment'"), "{err}");
        let err = parse_allowlist(&format!("\n{}  /a\n", SHA1.to_uppercase())).unwrap_err();
        assert!(err.to_string().starts_with("line 2: '4ECC"), "{err}");
    }

    #[test]
    fn algorithms_agree_or_name_the_source() {
        use DigestAlgorithm::*;
        let resolve = resolve_algorithm;
        assert_eq!(resolve(&[]).unwrap(), Sha256);
        assert_eq!(resolve(&[("allowlist", Some(Sha256OrSm3))]).unwrap(), Sha256);
        assert_eq!(
            resolve(&[
                ("--algo option", Some(Sha256)),
                ("base policy", Some(Sha256OrSm3))
            ])
            .unwrap(),
            Sha256
        );
        assert_eq!(
            resolve(&[
                ("base policy", Some(Sha256OrSm3)),
                ("IMA measurement list", Some(Sm3))
            ])
            .unwrap(),
            Sm3
        );
        let err = resolve(&[("base policy", Some(Sha1)), ("allowlist", Some(Sha256OrSm3))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the digest algorithm in the allowlist (sha256 or sm3_256) does not match the previously set 'sha1' algorithm"
        );
        assert!(matches!(Sm3.hash(), Err(InputError::Sm3)));
        assert!(matches!(
            DigestAlgorithm::from_option("sm3_256"),
            Err(InputError::Sm3)
        ));
    }

    #[test]
    fn base_policies_keep_what_keylime_keeps() {
        let doc = format!(
            r#"{{"meta": {{"version": 1}}, "release": 7, "digests": {{"/b": ["{SHA256}"], "/a": ["{SHA256}"]}},
                "excludes": ["^/tmp/.*"], "ima": {{"ignored_keyrings": ["%k"], "log_hash_alg": "sha256"}},
                "extra": 1}}"#
        );
        let base = BasePolicy::parse(doc.as_bytes()).unwrap();
        assert_eq!(base.digests.digests.len(), 2);
        assert_eq!(
            base.digests.algorithm("base policy").unwrap(),
            Some(DigestAlgorithm::Sha256OrSm3)
        );
        assert_eq!(base.log_hash_alg, "sha256");
        assert_eq!(base.ignored_keyrings, ["%k"]);
        assert_eq!(base.verification_keys, "");
        let empty = BasePolicy::parse(b"{}").unwrap();
        assert_eq!(empty.digests.algorithm("base policy").unwrap(), None);
        assert_eq!(empty.log_hash_alg, "sha1");
        for bad in [
            r#"{"digests": {"/a": []}}"#,
            r#"{"digests": {"/a": ["ABCDEF"]}}"#,
            r#"{"digests": []}"#,
            r#"{"ima": {"log_hash_alg": "md5"}}"#,
            "[1]",
            "not json",
        ] {
            assert!(BasePolicy::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_keys_are_rooted_and_spaces_become_underscores() {
        assert_eq!(file_key("./usr/bin/init").as_deref(), Some("/usr/bin/init"));
        assert_eq!(file_key("etc/a b").as_deref(), Some("/etc/a_b"));
        assert_eq!(file_key("/abs//x/./y").as_deref(), Some("/abs/x/y"));
        assert_eq!(file_key("../../etc/x").as_deref(), Some("/etc/x"));
        assert_eq!(file_key("."), None);
        assert_eq!(file_key("/"), None);
    }
}
