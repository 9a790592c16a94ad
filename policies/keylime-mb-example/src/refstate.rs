//! The `example` policy's reference state (keylime-policies.md §3.5), checked the way
//! Keylime's `refstate_to_test` checks it, but at load instead of at every evaluation.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};
use zest_policy_sdk::LoadError;

/// `{"sha256": "0x…"}`: (algorithm, lowercase hex without `0x`).
pub type DigestSpec = Vec<(String, String)>;

/// `{"SignatureOwner": guid, "SignatureData": "0x…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sig {
    pub owner: String,
    /// The data when it is lowercase hex; Keylime compares hex strings, so anything else
    /// never matches.
    pub bytes: Option<Vec<u8>>,
}

impl Sig {
    pub fn matches(&self, entry: &zest_policy_sdk::measured_boot::SignatureEntry) -> bool {
        self.owner == entry.owner && self.bytes.as_deref() == Some(entry.data.as_slice())
    }
}

pub struct Kernel {
    pub shim: String,
    pub grub: String,
    /// Secure Boot: the kernel's Authenticode digest.
    pub kernel: Option<String>,
    /// No Secure Boot: the kernel file's plain digest.
    pub vmlinuz: Option<String>,
    pub initrd: String,
    /// `kernel_cmdline: <kernel_cmdline>`, full match.
    pub cmdline: Regex,
    pub cmdline_pattern: String,
}

pub struct ScrtmAndBios {
    pub scrtm: DigestSpec,
    pub platform_firmware: Vec<DigestSpec>,
}

pub struct RefState {
    pub has_secureboot: bool,
    pub scrtm_and_bios: Vec<ScrtmAndBios>,
    pub pk: Vec<Sig>,
    pub kek: Vec<Sig>,
    pub db: Vec<Sig>,
    pub dbx: Vec<Sig>,
    pub vendor_db: Vec<Sig>,
    pub mokdig: Vec<DigestSpec>,
    pub mokxdig: Vec<DigestSpec>,
    pub kernels: Vec<Kernel>,
    /// The document as loaded, for failure contexts (Keylime puts the refstate there).
    pub text: String,
}

fn schema(message: impl Into<String>) -> LoadError {
    LoadError::Schema(message.into())
}

fn is_hex(text: &str) -> bool {
    text.strip_prefix("0x").is_some_and(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn hex_value(value: &Value, what: &str) -> Result<String, LoadError> {
    match value.as_str() {
        Some(s) if is_hex(s) => Ok(s[2..].to_owned()),
        _ => Err(schema(format!(
            "{what}: {value} is not 0x followed by some lowercase hex digits"
        ))),
    }
}

fn list<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, LoadError> {
    value
        .as_array()
        .ok_or_else(|| schema(format!("{what}: {value} is not a list")))
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, LoadError> {
    value
        .as_object()
        .ok_or_else(|| schema(format!("{what}: {value} is not an object")))
}

fn field<'a>(object: &'a Map<String, Value>, name: &str, what: &str) -> Result<&'a Value, LoadError> {
    object
        .get(name)
        .ok_or_else(|| schema(format!("{what} lacks field '{name}'")))
}

fn digest_spec(value: &Value, what: &str) -> Result<DigestSpec, LoadError> {
    object(value, what)?
        .iter()
        .map(|(alg, v)| Ok((alg.clone(), hex_value(v, &format!("{what}.{alg}"))?)))
        .collect()
}

fn sigs(value: &Value, what: &str) -> Result<Vec<Sig>, LoadError> {
    list(value, what)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let what = format!("{what}[{i}]");
            let o = object(v, &what)?;
            let owner = field(o, "SignatureOwner", &what)?
                .as_str()
                .ok_or_else(|| schema(format!("{what}.SignatureOwner is not a string")))?;
            let data = field(o, "SignatureData", &what)?
                .as_str()
                .ok_or_else(|| schema(format!("{what}.SignatureData is not a string")))?;
            let data = data
                .strip_prefix("0x")
                .ok_or_else(|| schema(format!("{what}.SignatureData {data:?} does not start with 0x")))?;
            let lowercase = data
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            Ok(Sig {
                owner: owner.to_owned(),
                bytes: lowercase.then(|| zest_policy_sdk::unhex(data)).flatten(),
            })
        })
        .collect()
}

fn kernel(value: &Value, what: &str, secure_boot: bool) -> Result<Kernel, LoadError> {
    let o = object(value, what)?;
    let hex_field = |name: &str| hex_value(field(o, name, what)?, &format!("{what}.{name}"));
    let cmdline = field(o, "kernel_cmdline", what)?
        .as_str()
        .ok_or_else(|| schema(format!("{what}.kernel_cmdline is not a string")))?;
    let translated = zest_policy_sdk::python_regex::translate(cmdline)
        .map_err(|why| LoadError::Unsupported(format!("{what}.kernel_cmdline {cmdline:?}: {why}")))?;
    let regex = RegexBuilder::new(&format!(r"\A(?:kernel_cmdline: (?:{translated}))\z"))
        .size_limit(16 << 20)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let why = text.lines().last().unwrap_or_default().trim().to_owned();
            LoadError::Unsupported(format!("{what}.kernel_cmdline {cmdline:?}: {why}"))
        })?;
    Ok(Kernel {
        shim: hex_field("shim_authcode_sha256")?,
        grub: hex_field("grub_authcode_sha256")?,
        kernel: if secure_boot {
            Some(hex_field("kernel_authcode_sha256")?)
        } else {
            None
        },
        vmlinuz: if secure_boot {
            None
        } else {
            Some(hex_field("vmlinuz_plain_sha256")?)
        },
        initrd: hex_field("initrd_plain_sha256")?,
        cmdline: regex,
        cmdline_pattern: cmdline.to_owned(),
    })
}

impl RefState {
    pub fn parse(bytes: &[u8]) -> Result<Self, LoadError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| LoadError::InvalidJson(e.to_string()))?;
        let root = value
            .as_object()
            .ok_or_else(|| schema(format!("the refstate is {value} instead of an object")))?;
        let has_secureboot = match root.get("has_secureboot") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(schema(format!("has_secureboot: {other} is not a boolean"))),
        };
        let kernels = list(
            root.get("kernels")
                .ok_or_else(|| schema("refstate['kernels'] is missing"))?,
            "kernels",
        )?
        .iter()
        .enumerate()
        .map(|(i, k)| kernel(k, &format!("kernels[{i}]"), has_secureboot))
        .collect::<Result<Vec<_>, _>>()?;
        let scrtm_and_bios = list(
            root.get("scrtm_and_bios")
                .ok_or_else(|| schema("refstate['scrtm_and_bios'] is missing"))?,
            "scrtm_and_bios",
        )?
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let what = format!("scrtm_and_bios[{i}]");
            let o = object(entry, &what)?;
            Ok(ScrtmAndBios {
                scrtm: digest_spec(field(o, "scrtm", &what)?, &format!("{what}.scrtm"))?,
                platform_firmware: list(field(o, "platform_firmware", &what)?, &what)?
                    .iter()
                    .enumerate()
                    .map(|(j, d)| digest_spec(d, &format!("{what}.platform_firmware[{j}]")))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
        for required in ["pk", "kek", "db", "dbx", "mokdig", "mokxdig"] {
            if !root.contains_key(required) {
                return Err(schema(format!("refstate lacks {required}")));
            }
        }
        let digests = |name: &str| -> Result<Vec<DigestSpec>, LoadError> {
            list(&root[name], name)?
                .iter()
                .enumerate()
                .map(|(i, d)| digest_spec(d, &format!("{name}[{i}]")))
                .collect()
        };
        Ok(Self {
            has_secureboot,
            scrtm_and_bios,
            pk: sigs(&root["pk"], "pk")?,
            kek: sigs(&root["kek"], "kek")?,
            db: sigs(&root["db"], "db")?,
            dbx: sigs(&root["dbx"], "dbx")?,
            vendor_db: match root.get("vendor_db") {
                Some(v) => sigs(v, "vendor_db")?,
                None => Vec::new(),
            },
            mokdig: digests("mokdig")?,
            mokxdig: digests("mokxdig")?,
            kernels,
            text: value.to_string(),
        })
    }
}
