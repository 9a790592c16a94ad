//! `keylime-runtime`: Keylime's runtime_policy semantics for IMA measurement lists
//! (keylime-policies.md §2.4), as a zest policy component.
//!
//! Per entry: wrong PCR → `ima.validation.ima_pcr`; violations pass (Keylime's shipped
//! `ignore_tomtou_errors = False`); a bad template hash → `ima.validation.ima_hash`; then
//! `ima`/`ima-ng` against `digests`, `ima-sig` by signature (any known key) else against
//! `digests`, `ima-buf` keys against `keyrings` (and learned on success), other `ima-buf`
//! against `ima-buf`. Excluded paths pass. Learned keys travel in the state blob.

mod document;
mod excludes;

use std::collections::HashMap;

use serde_json::json;
use zest_policy_sdk::runtime::{Batch, Entry, Template};
use zest_policy_sdk::{Failure, HashAlg, KeyKind, LoadError, RuntimePolicy, Verdict, hex, host};

use document::Document;
use excludes::Excludes;

const IMA_PCR: u32 = 10;
const BOOT_AGGREGATE: &[u8] = b"boot_aggregate";

/// A path (or buffer name) → accepted lowercase hex digests.
type Table = HashMap<Box<[u8]>, Vec<String>>;

pub struct KeylimeRuntime {
    digests: Table,
    keyrings: Table,
    ima_buf: Table,
    excludes: Excludes,
    ignore_all_keyrings: bool,
    ignored_keyrings: Vec<Box<[u8]>>,
    log_hash_alg: HashAlg,
    /// `verification-keys`: key id → DER SubjectPublicKeyInfo.
    tenant_keys: HashMap<u32, Vec<u8>>,
}

fn table(map: HashMap<String, Vec<String>>) -> Table {
    map.into_iter()
        .map(|(k, v)| (k.into_bytes().into_boxed_slice(), v))
        .collect()
}

impl RuntimePolicy for KeylimeRuntime {
    fn load(document: &[u8]) -> Result<Self, LoadError> {
        let doc = Document::parse(document)?;
        let excludes = Excludes::compile(&doc.excludes).map_err(LoadError::Unsupported)?;
        let mut tenant_keys = HashMap::new();
        for (i, (id, der)) in doc.verification_keys.into_iter().enumerate() {
            let key = host::parse_key(&der)
                .filter(|k| k.kind != KeyKind::Other)
                .ok_or_else(|| {
                    LoadError::Schema(format!(
                        "verification-keys.pubkeys[{i}]: not an RSA or EC SubjectPublicKeyInfo"
                    ))
                })?;
            tenant_keys.insert(id.unwrap_or(key.key_id), key.spki_der);
        }
        Ok(Self {
            digests: table(doc.digests),
            keyrings: table(doc.keyrings),
            ima_buf: table(doc.ima_buf),
            excludes,
            ignore_all_keyrings: doc.ignored_keyrings.iter().any(|k| k == "*"),
            ignored_keyrings: doc
                .ignored_keyrings
                .into_iter()
                .map(|k| k.into_bytes().into_boxed_slice())
                .collect(),
            log_hash_alg: doc.log_hash_alg,
            tenant_keys,
        })
    }

    fn log_hash_alg(&self) -> HashAlg {
        self.log_hash_alg
    }

    fn evaluate(&self, batch: &Batch) -> Verdict {
        let mut learned = Learned::from_state(batch.prior_state.as_deref());
        let learned_before = learned.len();
        let boot_aggregates: Vec<String> = batch.boot_aggregates.iter().map(|d| hex(&d.value)).collect();
        let mut failures = Vec::new();
        for entry in &batch.entries {
            self.check_entry(entry, &boot_aggregates, &mut learned, &mut failures);
        }
        let state = (learned.len() > 0 || learned_before > 0 || batch.prior_state.is_some())
            .then(|| learned.to_state());
        Verdict { failures, state }
    }
}

/// The allowlist a digest is checked against.
#[derive(Clone, Copy)]
enum Against {
    Digests,
    Keyrings,
    ImaBuf,
}

impl KeylimeRuntime {
    fn check_entry(
        &self,
        e: &Entry,
        boot_aggregates: &[String],
        learned: &mut Learned,
        out: &mut Vec<Failure>,
    ) {
        if e.pcr != IMA_PCR {
            out.push(
                Failure::new(
                    "ima.validation.ima_pcr",
                    json!({"message": "IMA PCR is not the configured one", "expected": "10", "got": e.pcr.to_string()}),
                )
                .at(e.index),
            );
        }
        if e.violation {
            return;
        }
        if !e.template_hash_ok {
            out.push(
                Failure::message(
                    "ima.validation.ima_hash",
                    format!(
                        "IMA template hash does not match the calculated hash ({}).",
                        String::from_utf8_lossy(&e.name)
                    ),
                )
                .at(e.index),
            );
            return;
        }
        match e.template {
            Template::Ima | Template::ImaNg => self.allowlist(Against::Digests, e, boot_aggregates, out),
            Template::ImaSig => {
                if e.signature_raw.is_some()
                    && (self.excludes.matches(&e.name) || self.signature_verifies(e, learned))
                {
                    return;
                }
                self.allowlist(Against::Digests, e, boot_aggregates, out);
            }
            Template::ImaBuf => self.check_buffer(e, boot_aggregates, learned, out),
        }
    }

    fn check_buffer(
        &self,
        e: &Entry,
        boot_aggregates: &[String],
        learned: &mut Learned,
        out: &mut Vec<Failure>,
    ) {
        let buffer = e.buffer.as_deref().unwrap_or_default();
        match host::parse_key(buffer) {
            Some(key) if key.kind == KeyKind::Other => out.push(
                Failure::message(
                    "ima.invalid_key",
                    format!(
                        "key from {} does not have a supported key: Unsupported key type",
                        String::from_utf8_lossy(&e.name)
                    ),
                )
                .at(e.index),
            ),
            Some(key) => {
                let ignored =
                    self.ignore_all_keyrings || self.ignored_keyrings.iter().any(|k| **k == *e.name);
                if ignored {
                    return;
                }
                let before = out.len();
                self.allowlist(Against::Keyrings, e, boot_aggregates, out);
                if out.len() == before {
                    learned.add(&e.name, key.key_id, key.spki_der);
                }
            }
            None => self.allowlist(Against::ImaBuf, e, boot_aggregates, out),
        }
    }

    /// Keylime's `_validate_ima_ng`: excluded → pass; unknown name → `not_in_allowlist`;
    /// digest not listed → `runtime_policy_hash`. The digest algorithm is not compared.
    fn allowlist(&self, against: Against, e: &Entry, boot_aggregates: &[String], out: &mut Vec<Failure>) {
        // Keylime tests the excludes first; an entry the allowlist accepts passes either
        // way, so the regex runs only for entries that would otherwise fail.
        let table = match against {
            Against::Digests => &self.digests,
            Against::Keyrings => &self.keyrings,
            Against::ImaBuf => &self.ima_buf,
        };
        let listed = table.get(&*e.name);
        // Aggregates computed from a verified boot log join the policy's boot_aggregate list.
        let aggregates: &[String] = match against {
            Against::Digests if *e.name == *BOOT_AGGREGATE => boot_aggregates,
            _ => &[],
        };
        if listed.is_none() && aggregates.is_empty() {
            if self.excludes.matches(&e.name) {
                return;
            }
            out.push(
                Failure::message(
                    "ima.validation.ima-ng.not_in_allowlist",
                    format!(
                        "File not found in allowlist: {}",
                        String::from_utf8_lossy(&e.name)
                    ),
                )
                .at(e.index),
            );
            return;
        }
        let mut buf = [0u8; 128];
        let got = hex_into(&e.file_digest.value, &mut buf);
        let listed = listed.map(Vec::as_slice).unwrap_or_default();
        if listed.iter().chain(aggregates).any(|d| d.as_bytes() == got) || self.excludes.matches(&e.name) {
            return;
        }
        let expected: Vec<&String> = listed.iter().chain(aggregates).collect();
        out.push(
            Failure::new(
                "ima.validation.ima-ng.runtime_policy_hash",
                json!({
                    "message": "Hash not found in runtime policy",
                    "got": String::from_utf8_lossy(got),
                    "expected": expected,
                }),
            )
            .at(e.index),
        );
    }

    /// Keylime's `_asymmetric_verify`: the header's hash must be the entry's digest
    /// algorithm and a key with the header's id must verify the signature over the digest.
    fn signature_verifies(&self, e: &Entry, learned: &Learned) -> bool {
        let Some(sig) = &e.signature else { return false };
        let name = match sig.hash_algo {
            1 => "md5",
            2 => "sha1",
            4 => "sha256",
            5 => "sha384",
            6 => "sha512",
            7 => "sha224",
            _ => return false,
        };
        if name != e.file_digest.alg_name {
            return false;
        }
        let Some(hash) = HashAlg::from_name(name) else {
            return false;
        };
        let key = self
            .tenant_keys
            .get(&sig.key_id)
            .map(Vec::as_slice)
            .or_else(|| learned.find(sig.key_id));
        key.is_some_and(|spki| host::verify_prehashed(spki, hash, &e.file_digest.value, &sig.signature))
    }
}

/// Lowercase hex of `bytes` into `buf` (digests are at most 64 bytes).
fn hex_into<'a>(bytes: &[u8], buf: &'a mut [u8; 128]) -> &'a [u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len().min(64);
    for (i, b) in bytes[..n].iter().enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    &buf[..2 * n]
}

/// A learned key: its IMA key id and DER SubjectPublicKeyInfo.
type LearnedKey = (u32, Vec<u8>);

/// Keys learned from keyring measurements, per keyring (by name), in the order learned.
#[derive(Default)]
struct Learned {
    keyrings: Vec<(Vec<u8>, Vec<LearnedKey>)>,
}

impl Learned {
    fn from_state(state: Option<&[u8]>) -> Self {
        let Some(value) = state.and_then(|s| serde_json::from_slice::<serde_json::Value>(s).ok()) else {
            return Self::default();
        };
        let mut learned = Self::default();
        for ring in value["keyrings"].as_array().into_iter().flatten() {
            let name = ring["name"].as_str().unwrap_or_default().as_bytes().to_vec();
            let keys = ring["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| {
                    let id = u32::try_from(k["id"].as_u64()?).ok()?;
                    let spki = zest_policy_sdk::unhex(k["spki"].as_str()?)?;
                    Some((id, spki))
                })
                .collect();
            learned.keyrings.push((name, keys));
        }
        learned
    }

    fn to_state(&self) -> Vec<u8> {
        let rings: Vec<_> = self
            .keyrings
            .iter()
            .map(|(name, keys)| {
                json!({
                    "name": String::from_utf8_lossy(name),
                    "keys": keys.iter().map(|(id, spki)| json!({"id": id, "spki": hex(spki)})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "keyrings": rings }).to_string().into_bytes()
    }

    fn len(&self) -> usize {
        self.keyrings.iter().map(|(_, keys)| keys.len()).sum()
    }

    fn add(&mut self, keyring: &[u8], id: u32, spki: Vec<u8>) {
        let index = match self.keyrings.iter().position(|(name, _)| name == keyring) {
            Some(i) => i,
            None => {
                self.keyrings.push((keyring.to_vec(), Vec::new()));
                self.keyrings.len() - 1
            }
        };
        let keys = &mut self.keyrings[index].1;
        // A keyring holds one key per id; a later key with the same id replaces it.
        keys.retain(|(k, _)| *k != id);
        keys.push((id, spki));
    }

    fn find(&self, id: u32) -> Option<&[u8]> {
        self.keyrings.iter().find_map(|(_, keys)| {
            keys.iter()
                .find(|(k, _)| *k == id)
                .map(|(_, spki)| spki.as_slice())
        })
    }
}

zest_policy_sdk::export_runtime_policy!(KeylimeRuntime);
