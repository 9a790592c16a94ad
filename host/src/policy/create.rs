//! Policy documents made from evidence, as Keylime's `keylime-policy create runtime` and
//! `keylime-policy create measured-boot` make them from the same inputs
//! (keylime-policies.md §3.7 and §4.1).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use thiserror::Error;

use super::create_inputs::{BasePolicy, Digests, merge};
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

/// What goes into a runtime policy besides the IMA list's file digests.
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
    /// `--base-policy`: the policy the new one extends. Its digests, excludes, keyrings,
    /// ima-buf, ignored keyrings, `log_hash_alg` and verification keys are kept; `meta`,
    /// `release` (0) and `dm_policy` (null) are made anew.
    pub base: Option<BasePolicy>,
    /// File digests of the other sources (`--allowlist`, `--rootfs`, `--ramdisk-dir`).
    pub digests: Digests,
}

/// The digest algorithm of an IMA list: that of its first line, which must be a
/// `boot_aggregate` entry of sha1, sha256, sha384, sha512 or sm3_256.
pub fn ima_list_algorithm(ima_list: &str) -> Result<&str, CreateError> {
    let first = lines(ima_list).next().unwrap_or_default();
    match ImaEntry::parse(first, 0) {
        Ok(e)
            if e.name == "boot_aggregate"
                && matches!(e.digest_alg, "sha1" | "sha256" | "sha384" | "sha512" | "sm3_256") =>
        {
            Ok(e.digest_alg)
        }
        _ => Err(CreateError::NoBootAggregate(first.chars().take(120).collect())),
    }
}

/// A runtime policy: the base policy's digests (if any), those of `options.digests`, and
/// every ima-ng/ima-sig path of the IMA list (if any) with its digests (the
/// `boot_aggregate` among them), each list sorted and unique; generator 3 (LegacyAllowList).
pub fn runtime_policy(ima_list: Option<&str>, options: &RuntimeOptions) -> Result<Value, CreateError> {
    let base = options.base.as_ref();
    let mut digests: Digests = base.map(|b| b.digests.digests.clone()).unwrap_or_default();
    merge(&mut digests, options.digests.clone());
    let mut keyrings: Digests = base.map(|b| b.keyrings.clone()).unwrap_or_default();
    let mut ima_buf: Digests = base.map(|b| b.ima_buf.clone()).unwrap_or_default();
    let ignored: BTreeSet<String> = base
        .map(|b| b.ignored_keyrings.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(options.ignored_keyrings.iter().cloned())
        .collect();
    let excludes: BTreeSet<String> = base
        .map(|b| b.excludes.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(options.excludes.iter().cloned())
        .collect();
    if let Some(ima_list) = ima_list {
        ima_list_algorithm(ima_list)?;
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
                        if options.keyrings && !ignored.contains(entry.name) {
                            keyrings.entry(entry.name.to_owned()).or_default().insert(digest);
                        }
                    } else if options.ima_buf {
                        ima_buf.entry(entry.name.to_owned()).or_default().insert(digest);
                    }
                }
                Template::Ima | Template::ImaBuf => {}
            }
        }
    }
    let verification_keys = verification_keys(
        base.map_or("", |b| b.verification_keys.as_str()),
        &options.verification_keys,
    )?;
    let log_hash_alg = base.map_or("sha1", |b| b.log_hash_alg.as_str());
    let sorted = |map: Digests| {
        map.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>()
    };
    Ok(json!({
        "meta": {"version": 1, "generator": 3, "timestamp": options.timestamp},
        "release": 0,
        "digests": sorted(digests),
        "excludes": excludes.into_iter().collect::<Vec<_>>(),
        "keyrings": sorted(keyrings),
        "ima": {"ignored_keyrings": ignored.into_iter().collect::<Vec<_>>(), "log_hash_alg": log_hash_alg, "dm_policy": null},
        "ima-buf": sorted(ima_buf),
        "verification-keys": verification_keys,
    }))
}

/// `verification-keys`: the base policy's keyring with the added keys (a key whose id is
/// already there replaces it, as in Keylime's keyring); the base's string as it is when no
/// key is added.
fn verification_keys(base: &str, added: &[Vec<u8>]) -> Result<String, CreateError> {
    if added.is_empty() {
        return Ok(base.to_owned());
    }
    let mut ring = base_keyring(base)?;
    for data in added {
        let key =
            parse_key(data).ok_or_else(|| CreateError::Key("not a certificate or public key".into()))?;
        let keyid = Value::from(key.key_id);
        let pubkey = base64_encode(&key.spki_der);
        match ring.iter_mut().find(|(id, _)| *id == keyid) {
            Some(slot) => slot.1 = pubkey,
            None => ring.push((keyid, pubkey)),
        }
    }
    let (keyids, pubkeys): (Vec<Value>, Vec<String>) = ring.into_iter().unzip();
    Ok(json!({"meta": {"version": 1}, "keyids": keyids, "pubkeys": pubkeys}).to_string())
}

/// The (key id, base64 SubjectPublicKeyInfo) pairs of a policy's `verification-keys`.
fn base_keyring(text: &str) -> Result<Vec<(Value, String)>, CreateError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: &str| CreateError::Key(format!("the base policy's verification-keys {why}"));
    let value: Value = serde_json::from_str(text).map_err(|_| bad("are not JSON"))?;
    // Keylime's database once stored the keyring JSON encoded twice.
    let value = match value {
        Value::String(inner) => serde_json::from_str(&inner).map_err(|_| bad("are not JSON"))?,
        other => other,
    };
    let pubkeys = value
        .get("pubkeys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("have no pubkeys list"))?;
    let keyids = value.get("keyids").and_then(Value::as_array);
    let mut ring = Vec::new();
    for (i, pubkey) in pubkeys.iter().enumerate() {
        let pubkey = pubkey
            .as_str()
            .ok_or_else(|| bad("list a pubkey that is not a string"))?;
        let keyid = match keyids.and_then(|ids| ids.get(i)) {
            Some(id) => id.clone(),
            None => {
                use base64::Engine;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(pubkey)
                    .map_err(|_| bad("list a pubkey that is not base64"))?;
                Value::from(
                    parse_key(&der)
                        .ok_or_else(|| bad("list a pubkey that is not a key"))?
                        .key_id,
                )
            }
        };
        ring.push((keyid, pubkey.to_owned()));
    }
    Ok(ring)
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
