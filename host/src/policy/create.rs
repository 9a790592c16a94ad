//! Policy documents made from evidence, as Keylime's `keylime-policy create runtime` and
//! `keylime-policy create measured-boot` make them from the same inputs
//! (keylime-policies.md §3.7 and §4.1).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use thiserror::Error;

use crate::evidence::HashAlg;
use crate::evidence::ima::{ImaEntry, Template, lines};
use crate::evidence::ima_keys::parse_key;
use crate::evidence::uefi::{Event, EventData, EventLog, VariableData};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CreateError {
    #[error("the IMA list must start with a boot_aggregate entry of a known digest algorithm: {0}")]
    NoBootAggregate(String),
    #[error("the event log has no events")]
    NoEvents,
    #[error("the event log has Secure Boot disabled; pass --without-secureboot to create a refstate for it")]
    SecureBootDisabled,
    #[error("expected {expected} UEFI applications (shim, grub{kernel}) in PCR 4, found {found}")]
    Applications {
        expected: &'static str,
        kernel: &'static str,
        found: usize,
    },
    #[error("event {0} has no sha256 digest")]
    NoSha256(usize),
    #[error("a verification key: {0}")]
    Key(String),
}

/// What goes into a runtime policy besides the list's file digests.
#[derive(Debug, Default, Clone)]
pub struct RuntimeOptions {
    /// `-k`: digests of keys measured into keyrings (ima-buf entries holding a key).
    pub keyrings: bool,
    /// `-b`: digests of other ima-buf entries.
    pub ima_buf: bool,
    pub ignored_keyrings: Vec<String>,
    /// Exclude regexes, one per entry.
    pub excludes: Vec<String>,
    /// Verification keys for ima-sig: certificates or public keys, DER or PEM.
    pub verification_keys: Vec<Vec<u8>>,
    /// `meta.timestamp`.
    pub timestamp: String,
}

/// A runtime policy from an IMA list: every ima-ng/ima-sig path with its digests (the
/// `boot_aggregate` among them), sorted and unique; generator 3 (LegacyAllowList).
pub fn runtime_policy(ima_list: &str, options: &RuntimeOptions) -> Result<Value, CreateError> {
    let first = lines(ima_list).next().unwrap_or_default();
    let algorithm_ok = ImaEntry::parse(first, 0).is_ok_and(|e| {
        e.name == "boot_aggregate"
            && matches!(e.digest_alg, "sha1" | "sha256" | "sha384" | "sha512" | "sm3_256")
    });
    if !algorithm_ok {
        return Err(CreateError::NoBootAggregate(first.chars().take(120).collect()));
    }
    let mut digests: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut keyrings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ima_buf: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, line) in lines(ima_list).enumerate() {
        // Keylime skips what it cannot read rather than failing the whole list.
        let Ok(entry) = ImaEntry::parse(line, i) else {
            continue;
        };
        let digest = hex::encode(entry.digest());
        match entry.template {
            Template::ImaNg | Template::ImaSig => {
                digests.entry(entry.name.to_owned()).or_default().insert(digest);
            }
            Template::ImaBuf if options.keyrings || options.ima_buf => {
                if parse_key(&entry.buffer_bytes()).is_some() {
                    if options.keyrings && !options.ignored_keyrings.iter().any(|k| k == entry.name) {
                        keyrings.entry(entry.name.to_owned()).or_default().insert(digest);
                    }
                } else if options.ima_buf {
                    ima_buf.entry(entry.name.to_owned()).or_default().insert(digest);
                }
            }
            Template::Ima | Template::ImaBuf => {}
        }
    }
    let verification_keys = if options.verification_keys.is_empty() {
        String::new()
    } else {
        let mut keyids = Vec::new();
        let mut pubkeys = Vec::new();
        for data in &options.verification_keys {
            let key =
                parse_key(data).ok_or_else(|| CreateError::Key("not a certificate or public key".into()))?;
            keyids.push(key.key_id);
            pubkeys.push(base64_encode(&key.spki_der));
        }
        json!({"meta": {"version": 1}, "keyids": keyids, "pubkeys": pubkeys}).to_string()
    };
    let sorted = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
    let mut ignored: Vec<String> = options.ignored_keyrings.clone();
    ignored.sort();
    ignored.dedup();
    let mut excludes = options.excludes.clone();
    excludes.sort();
    excludes.dedup();
    Ok(json!({
        "meta": {"version": 1, "generator": 3, "timestamp": options.timestamp},
        "release": 0,
        "digests": digests.into_iter().map(|(k, v)| (k, sorted(v))).collect::<BTreeMap<_, _>>(),
        "excludes": excludes,
        "keyrings": keyrings.into_iter().map(|(k, v)| (k, sorted(v))).collect::<BTreeMap<_, _>>(),
        "ima": {"ignored_keyrings": ignored, "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": ima_buf.into_iter().map(|(k, v)| (k, sorted(v))).collect::<BTreeMap<_, _>>(),
        "verification-keys": verification_keys,
    }))
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_of(event: &Event) -> Result<String, CreateError> {
    event
        .digest(HashAlg::Sha256)
        .map(|d| format!("0x{}", hex::encode(d)))
        .ok_or(CreateError::NoSha256(event.number))
}

fn type_is(event: &Event, name: &str) -> bool {
    event.type_name() == name
}

fn signatures(data: &VariableData) -> Vec<Value> {
    let entry = |e: &crate::evidence::uefi::SignatureEntry| json!({"SignatureOwner": e.owner.to_string(), "SignatureData": format!("0x{}", hex::encode(&e.data))});
    match data {
        VariableData::SignatureLists(lists) => {
            lists.iter().flat_map(|l| l.entries.iter().map(entry)).collect()
        }
        VariableData::Signature(e) => vec![entry(e)],
        VariableData::Signatures(entries) => entries.iter().map(entry).collect(),
        VariableData::Boolean(_)
        | VariableData::BootOrder(_)
        | VariableData::BootOption { .. }
        | VariableData::Raw => Vec::new(),
    }
}

fn text(event: &Event) -> Option<String> {
    match event.decode() {
        EventData::Text(t) => Some(t),
        _ => None,
    }
}

/// Python's `re.escape` (3.7+): the characters special in a pattern get a backslash.
pub fn python_re_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "()[]{}?*+-|^$\\.&~# \t\n\r\u{b}\u{c}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An `example` reference state from a boot log (Keylime's `create_mb_refstate`).
pub fn measured_boot_refstate(log: &EventLog, without_secureboot: bool) -> Result<Value, CreateError> {
    let events = &log.events;
    if events.len() <= 1 {
        return Err(CreateError::NoEvents);
    }
    let has_secureboot = events
        .iter()
        .filter(|e| type_is(e, "EV_EFI_VARIABLE_DRIVER_CONFIG"))
        .find_map(|e| match e.decode() {
            EventData::Variable(v) if v.name == "SecureBoot" => match v.decoded {
                VariableData::Boolean(b) => Some(b),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or(false);
    if !has_secureboot && !without_secureboot {
        return Err(CreateError::SecureBootDisabled);
    }

    let mut scrtm_and_bios = serde_json::Map::new();
    if let Some(e) = events.iter().find(|e| type_is(e, "EV_S_CRTM_VERSION")) {
        scrtm_and_bios.insert("scrtm".into(), json!({"sha256": sha256_of(e)?}));
    }
    let firmware = events
        .iter()
        .filter(|e| {
            type_is(e, "EV_EFI_PLATFORM_FIRMWARE_BLOB") || type_is(e, "EV_EFI_PLATFORM_FIRMWARE_BLOB2")
        })
        .map(|e| Ok(json!({"sha256": sha256_of(e)?})))
        .collect::<Result<Vec<_>, CreateError>>()?;
    scrtm_and_bios.insert("platform_firmware".into(), Value::Array(firmware));

    let mut keys: BTreeMap<&str, Vec<Value>> = ["pk", "kek", "db", "dbx"]
        .into_iter()
        .map(|k| (k, Vec::new()))
        .collect();
    let mut vendor_db = Vec::new();
    for e in events {
        let EventData::Variable(v) = e.decode() else {
            continue;
        };
        let name = v.name.to_lowercase();
        if type_is(e, "EV_EFI_VARIABLE_DRIVER_CONFIG") {
            if let Some(slot) = keys.get_mut(name.as_str()) {
                *slot = signatures(&v.decoded);
            }
        } else if type_is(e, "EV_EFI_VARIABLE_AUTHORITY") && name == "vendor_db" {
            vendor_db.extend(signatures(&v.decoded));
        }
    }

    let mut mokdig = Vec::new();
    let mut mokxdig = Vec::new();
    for e in events.iter().filter(|e| type_is(e, "EV_IPL")) {
        match text(e).as_deref() {
            Some("MokList") => mokdig.push(json!({"sha256": sha256_of(e)?})),
            Some("MokListX") => mokxdig.push(json!({"sha256": sha256_of(e)?})),
            _ => {}
        }
    }

    let applications: Vec<&Event> = events
        .iter()
        .filter(|e| type_is(e, "EV_EFI_BOOT_SERVICES_APPLICATION"))
        .filter(|e| match e.decode() {
            EventData::ImageLoad(i) => !is_firmware_application(&i.device_path_text),
            _ => true,
        })
        .collect();
    let mut kernel = serde_json::Map::new();
    let (shim, grub) = if has_secureboot {
        let (&[shim, grub, kernel_app] | &[shim, grub, kernel_app, _]) = applications.as_slice() else {
            return Err(CreateError::Applications {
                expected: "3 or 4",
                kernel: ", kernel",
                found: applications.len(),
            });
        };
        kernel.insert("kernel_authcode_sha256".into(), sha256_of(kernel_app)?.into());
        (shim, grub)
    } else {
        let &[shim, grub] = applications.as_slice() else {
            return Err(CreateError::Applications {
                expected: "2",
                kernel: "",
                found: applications.len(),
            });
        };
        (shim, grub)
    };
    kernel.insert("shim_authcode_sha256".into(), sha256_of(shim)?.into());
    kernel.insert("grub_authcode_sha256".into(), sha256_of(grub)?.into());
    let ipl = |pcr: u32| {
        events
            .iter()
            .filter(move |e| e.pcr == pcr && type_is(e, "EV_IPL"))
    };
    if let Some(e) = ipl(9).find(|e| text(e).is_some_and(|t| t.contains("initrd") || t.contains("initramfs")))
    {
        kernel.insert("initrd_plain_sha256".into(), sha256_of(e)?.into());
    }
    if !has_secureboot && let Some(e) = ipl(9).find(|e| text(e).is_some_and(|t| t.contains("vmlinuz"))) {
        kernel.insert("vmlinuz_plain_sha256".into(), sha256_of(e)?.into());
    }
    if let Some(line) = ipl(8).filter_map(text).find(|t| t.contains("kernel_cmdline")) {
        let cmdline = line.get("kernel_cmdline: ".len()..).unwrap_or_default();
        kernel.insert("kernel_cmdline".into(), python_re_escape(cmdline).into());
    }

    Ok(json!({
        "has_secureboot": has_secureboot,
        "scrtm_and_bios": [Value::Object(scrtm_and_bios)],
        "pk": keys.remove("pk").unwrap_or_default(),
        "kek": keys.remove("kek").unwrap_or_default(),
        "db": keys.remove("db").unwrap_or_default(),
        "dbx": keys.remove("dbx").unwrap_or_default(),
        "vendor_db": vendor_db,
        "mokdig": mokdig,
        "mokxdig": mokxdig,
        "kernels": [Value::Object(kernel)],
    }))
}

/// Firmware's own applications (`FvVol(guid)/FvFile(guid)`) are not shim, grub or a kernel.
fn is_firmware_application(device_path: &str) -> bool {
    device_path.starts_with("FvVol(") && device_path.contains(")/FvFile(")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_escape_matches_python() {
        assert_eq!(
            python_re_escape("BOOT_IMAGE=(hd0)/vmlinuz-6.1 root=UUID=ab-cd ro"),
            r"BOOT_IMAGE=\(hd0\)/vmlinuz\-6\.1\ root=UUID=ab\-cd\ ro"
        );
    }
}
