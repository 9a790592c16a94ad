//! The TCG PC Client crypto-agile UEFI event log (`binary_bios_measurements`): parsing,
//! decoding of the event data measured-boot policies look at, replay of every bank and the
//! boot aggregates IMA's `boot_aggregate` is compared with.
//!
//! Layout: one TCG_PCClientPCREvent in the SHA-1 format carrying the Spec ID event
//! (`Spec ID Event03`, the digest sizes of every bank), then TCG_PCR_EVENT2 records:
//! `u32 pcr, u32 type, u32 count, count × (u16 alg, digest), u32 size, data`, little-endian.

use std::collections::{BTreeMap, BTreeSet};

use super::cursor::{Cursor, ParseError};
use super::public::HashAlg;

mod data;
mod device_path;
mod vendor_db;

pub use data::{EventData, Guid, ImageLoad, SignatureEntry, SignatureList, UefiVariable, VariableData};

/// Largest log accepted (real ones are 20 KiB–2 MiB).
pub const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Largest single event accepted.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Most events accepted.
pub const MAX_EVENTS: usize = 100_000;

pub const EV_NO_ACTION: u32 = 0x03;
pub const EV_SEPARATOR: u32 = 0x04;
pub const EV_ACTION: u32 = 0x05;
pub const EV_S_CRTM_VERSION: u32 = 0x08;
pub const EV_COMPACT_HASH: u32 = 0x0C;
pub const EV_IPL: u32 = 0x0D;
pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x12;
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000C;
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

/// The value an EV_SEPARATOR measures when firmware reports an error (TCG PFP: 1 as a
/// little-endian u32); its event data then holds implementation-defined error information.
const SEPARATOR_ERROR_VALUE: &[u8] = &[1, 0, 0, 0];

/// Whether an event's data is what its digests measured (see [`Event::check_data`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCheck {
    /// The digests of this event type do not cover its data (EV_IPL, firmware blobs,
    /// applications, EV_NO_ACTION, unknown types…), or it carries no digest in a bank we
    /// can hash: the data proves nothing and the replay alone vouches for the event.
    NotCovered,
    /// Every digest in a bank we can hash is of the data.
    Verified,
    /// The digest of this bank is not of the data: the data was edited after measurement.
    Mismatch { alg: HashAlg },
}

/// The Spec ID event that opens a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version: (u8, u8, u8),
    pub uintn_size: u8,
    /// (TPM_ALG_ID, digest size) of every bank the log carries.
    pub algorithms: Vec<(u16, u16)>,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Keylime's `EventNum`: 0 is the Spec ID header, the others follow in order.
    pub number: usize,
    pub pcr: u32,
    pub event_type: u32,
    /// (TPM_ALG_ID, digest), as logged.
    pub digests: Vec<(u16, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    /// The digest this event carries for a bank.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(alg, _)| *alg == bank.tpm_id())
            .map(|(_, d)| d.as_slice())
    }

    /// Decodes the event data. Decoding is on demand: replaying a log needs none of it,
    /// and policies that do read it do so once per evaluation.
    pub fn decode(&self) -> EventData {
        if self.number == 0 {
            return EventData::SpecId;
        }
        data::decode(self.event_type, &self.data)
    }

    /// The TCG name of the event type (`EV_IPL`, …).
    pub fn type_name(&self) -> String {
        data::event_type_name(self.event_type)
    }

    /// Whether this event's data is what its digests measured. Replay only uses digests,
    /// so without this check a log whose event data was edited (a `SecureBoot` byte
    /// flipped) still matches the quote while a policy reads forged data.
    ///
    /// Checked are the types whose digest is H(event data) (TCG PC Client PFP): separators,
    /// EV_ACTION/EV_EFI_ACTION, EV_S_CRTM_VERSION, EV_COMPACT_HASH,
    /// EV_OMIT_BOOT_DEVICE_EVENTS, EV_EFI_VARIABLE_DRIVER_CONFIG/AUTHORITY/BOOT/BOOT2 and
    /// EV_EFI_GPT_EVENT, for every digest in a bank [`HashAlg`] covers (sm3 and other
    /// banks are skipped). Two firmware variants are accepted:
    /// - EV_EFI_VARIABLE_BOOT(2) digests of the VariableData alone (common firmware);
    ///   the variable's GUID and name are then not covered, only its value.
    /// - an EV_SEPARATOR measuring the error value 1 with error information as data,
    ///   unless the data claims the normal separator 0.
    pub fn check_data(&self) -> DataCheck {
        // A second byte string the digest may cover instead of the whole event data.
        let alternative: Option<&[u8]> = match self.event_type {
            EV_SEPARATOR => {
                // Accepting H(1) for data reading 0 would let an error boot pass as normal.
                (self.data != [0u8; 4]).then_some(SEPARATOR_ERROR_VALUE)
            }
            EV_ACTION
            | EV_EFI_ACTION
            | EV_S_CRTM_VERSION
            | EV_COMPACT_HASH
            | EV_OMIT_BOOT_DEVICE_EVENTS
            | EV_EFI_VARIABLE_DRIVER_CONFIG
            | EV_EFI_VARIABLE_AUTHORITY
            | EV_EFI_GPT_EVENT => None,
            EV_EFI_VARIABLE_BOOT | EV_EFI_VARIABLE_BOOT2 => data::variable_value(&self.data),
            // EV_IPL (GRUB measures the command, not the logged text), EV_POST_CODE,
            // blobs, images, handoff tables, EV_NO_ACTION, unknown types.
            _ => return DataCheck::NotCovered,
        };
        let mut checked = false;
        for (alg, digest) in &self.digests {
            let Some(bank) = HashAlg::from_tpm(*alg) else {
                continue;
            };
            checked = true;
            let measures = |bytes: &[u8]| bank.digest(&[bytes]) == *digest;
            if !(measures(self.data.as_slice()) || alternative.is_some_and(measures)) {
                return DataCheck::Mismatch { alg: bank };
            }
        }
        if checked {
            DataCheck::Verified
        } else {
            DataCheck::NotCovered
        }
    }
}

/// PCRs whose replay the verifier compares with the quote, as Keylime's
/// `MEASUREDBOOT_PCRS` (PCR 10 belongs to IMA).
pub const MEASURED_BOOT_PCRS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];

/// Something the verifier finds wrong with a boot log before any policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFinding {
    /// PCRs the policy relies on that the quote lacks (`measured_boot.missing_pcrs`).
    MissingPcrs(Vec<u32>),
    /// An event whose data is not what its digest in `bank` measured
    /// (`measured_boot.invalid_event_data`).
    EventData {
        event: usize,
        pcr: u32,
        type_name: String,
        bank: HashAlg,
    },
    /// A compared PCR whose replay differs from its quoted value
    /// (`measured_boot.invalid_pcr_<pcr>`).
    PcrMismatch {
        pcr: u32,
        replayed: Vec<u8>,
        quoted: Vec<u8>,
    },
}

/// The verifier's checks of a boot log against a verified quote (one bank), and the PCRs
/// whose events may reach a policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootCheck {
    /// Empty when the policy may be asked.
    pub findings: Vec<BootFinding>,
    /// Quoted PCRs whose replay equals the quote: only their events reach the policy.
    pub verified_pcrs: BTreeSet<u32>,
}

/// Checks `log` (replayed into `replayed`) against the `quoted` values of `bank`, for a
/// policy relying on `relevant` PCRs:
/// 1. every relevant PCR is quoted, else nothing more is checked;
/// 2. every event's data is what its digests measured ([`Event::check_data`]);
/// 3. every quoted PCR of [`MEASURED_BOOT_PCRS`] the policy relies on (all of them when it
///    names none) replays to its quoted value, as Keylime compares them. Beyond Keylime, a
///    PCR that does not replay never hands its events to the policy.
pub fn check_boot(
    log: &EventLog,
    replayed: &PcrBanks,
    bank: HashAlg,
    quoted: &BTreeMap<u32, Vec<u8>>,
    relevant: &[u32],
) -> BootCheck {
    let mut check = BootCheck::default();
    let missing: Vec<u32> = relevant
        .iter()
        .copied()
        .filter(|p| !quoted.contains_key(p))
        .collect();
    if !missing.is_empty() {
        check.findings.push(BootFinding::MissingPcrs(missing));
        return check;
    }
    for event in &log.events {
        if let DataCheck::Mismatch { alg } = event.check_data() {
            check.findings.push(BootFinding::EventData {
                event: event.number,
                pcr: event.pcr,
                type_name: event.type_name(),
                bank: alg,
            });
        }
    }
    let zeros = vec![0u8; bank.digest_len()];
    let log_bank = replayed.get(&bank);
    for (pcr, value) in quoted {
        let from_log = log_bank.and_then(|b| b.get(pcr)).unwrap_or(&zeros);
        if from_log == value {
            check.verified_pcrs.insert(*pcr);
            continue;
        }
        let compared = MEASURED_BOOT_PCRS.contains(pcr) && (relevant.is_empty() || relevant.contains(pcr));
        if compared {
            check.findings.push(BootFinding::PcrMismatch {
                pcr: *pcr,
                replayed: from_log.clone(),
                quoted: value.clone(),
            });
        }
    }
    check
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    pub spec_id: SpecId,
    /// Every event, the Spec ID header first (as Keylime lists it).
    pub events: Vec<Event>,
}

/// Replayed PCR values: bank → PCR index → value.
pub type PcrBanks = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

impl EventLog {
    /// Parses a binary crypto-agile log.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "UEFI event log";
        if bytes.is_empty() {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: "the log is empty".into(),
            });
        }
        if bytes.len() > MAX_LOG_BYTES {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} bytes is too large", bytes.len()),
            });
        }
        let mut c = Cursor::new(bytes);
        let pcr = c.u32_le("header event PCR index")?;
        let event_type = c.u32_le("header event type")?;
        let sha1 = c.take(20, "header event digest")?.to_vec();
        let size = c.u32_le("header event size")? as usize;
        let header = c.take(size, "Spec ID event")?;
        if event_type != EV_NO_ACTION || pcr != 0 {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: "does not start with a Spec ID event (not crypto-agile)".into(),
            });
        }
        let spec_id = spec_id(header)?;
        let mut events = vec![Event {
            number: 0,
            pcr,
            event_type,
            digests: vec![(HashAlg::Sha1.tpm_id(), sha1)],
            data: header.to_vec(),
        }];
        while c.remaining() > 0 {
            if events.len() > MAX_EVENTS {
                return Err(ParseError::Invalid {
                    what: WHAT,
                    detail: format!("more than {MAX_EVENTS} events"),
                });
            }
            let pcr = c.u32_le("TCG_PCR_EVENT2.pcrIndex")?;
            let event_type = c.u32_le("TCG_PCR_EVENT2.eventType")?;
            let count = c.u32_le("TPML_DIGEST_VALUES.count")?;
            if count as usize > spec_id.algorithms.len() {
                return Err(ParseError::Invalid {
                    what: WHAT,
                    detail: format!(
                        "event {} has {count} digests for {} banks",
                        events.len(),
                        spec_id.algorithms.len()
                    ),
                });
            }
            let mut digests = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let alg = c.u16_le("TPMT_HA.hashAlg")?;
                let size = spec_id
                    .algorithms
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, s)| *s)
                    .ok_or(ParseError::Unsupported {
                        what: "event digest algorithm (not in the Spec ID event)",
                        value: alg.into(),
                    })?;
                digests.push((alg, c.take(size.into(), "TPMT_HA.digest")?.to_vec()));
            }
            let size = c.u32_le("TCG_PCR_EVENT2.eventSize")? as usize;
            if size > MAX_EVENT_BYTES {
                return Err(ParseError::Invalid {
                    what: WHAT,
                    detail: format!("event of {size} bytes"),
                });
            }
            let data = c.take(size, "TCG_PCR_EVENT2.event")?.to_vec();
            events.push(Event {
                number: events.len(),
                pcr,
                event_type,
                digests,
                data,
            });
        }
        Ok(Self { spec_id, events })
    }

    /// The binary log again: the Spec ID header in the SHA-1 format, then every other
    /// event as TCG_PCR_EVENT2. `parse(encode(log)) == log`; tests and benchmarks use it
    /// to write logs they edited.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            out.extend_from_slice(&e.pcr.to_le_bytes());
            out.extend_from_slice(&e.event_type.to_le_bytes());
            if i == 0 {
                let sha1 = e.digests.first().map(|(_, d)| d.as_slice()).unwrap_or(&[0; 20]);
                out.extend_from_slice(sha1);
            } else {
                out.extend_from_slice(&(e.digests.len() as u32).to_le_bytes());
                for (alg, digest) in &e.digests {
                    out.extend_from_slice(&alg.to_le_bytes());
                    out.extend_from_slice(digest);
                }
            }
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.data);
        }
        out
    }

    /// Replays every bank the log carries (for the banks we can hash): each PCR starts at
    /// zeros, except that a StartupLocality event sets PCR 0's last byte to the locality
    /// (and an H-CRTM event to 4); EV_NO_ACTION events are not extended.
    pub fn replay(&self) -> PcrBanks {
        let mut locality = 0u8;
        for e in &self.events {
            if e.event_type == EV_NO_ACTION
                && e.pcr == 0
                && let EventData::StartupLocality(l) = e.decode()
            {
                locality = l;
            } else if e.event_type == EV_EFI_HCRTM_EVENT {
                locality = 4;
            }
        }
        let mut banks = PcrBanks::new();
        for (alg, _) in &self.spec_id.algorithms {
            let Some(bank) = HashAlg::from_tpm(*alg) else {
                continue;
            };
            let pcrs = banks.entry(bank).or_default();
            for e in self
                .events
                .iter()
                .skip(1)
                .filter(|e| e.event_type != EV_NO_ACTION)
            {
                let Some(digest) = e.digest(bank) else { continue };
                let value = pcrs.entry(e.pcr).or_insert_with(|| {
                    let mut v = vec![0u8; bank.digest_len()];
                    if e.pcr == 0
                        && let Some(last) = v.last_mut()
                    {
                        *last = locality;
                    }
                    v
                });
                let mut h = bank.hasher();
                h.update(value);
                h.update(digest);
                let mut out = [0u8; 64];
                // `value` has the bank's digest length, which is what the hasher writes.
                h.finish_into(&mut out);
                for (v, o) in value.iter_mut().zip(out) {
                    *v = o;
                }
            }
        }
        banks
    }
}

/// IMA's boot aggregates per bank: H(PCR 0‖…‖7) and H(PCR 0‖…‖9), missing PCRs as zeros.
pub fn boot_aggregates(pcrs: &PcrBanks) -> BTreeMap<HashAlg, [Vec<u8>; 2]> {
    pcrs.iter()
        .map(|(bank, values)| {
            let zeros = vec![0u8; bank.digest_len()];
            let value = |i: u32| values.get(&i).map(Vec::as_slice).unwrap_or(&zeros);
            let upto = |n: u32| {
                let parts: Vec<&[u8]> = (0..=n).map(value).collect();
                bank.digest(&parts)
            };
            (*bank, [upto(7), upto(9)])
        })
        .collect()
}

fn spec_id(data: &[u8]) -> Result<SpecId, ParseError> {
    const WHAT: &str = "Spec ID event";
    let mut c = Cursor::new(data);
    let signature = c.take(16, "Spec ID signature")?;
    if signature != b"Spec ID Event03\0" {
        return Err(ParseError::Invalid {
            what: WHAT,
            detail: "signature is not 'Spec ID Event03'".into(),
        });
    }
    let platform_class = c.u32_le("Spec ID platformClass")?;
    let minor = c.u8("Spec ID specVersionMinor")?;
    let major = c.u8("Spec ID specVersionMajor")?;
    let errata = c.u8("Spec ID specErrata")?;
    let uintn_size = c.u8("Spec ID uintnSize")?;
    let n = c.u32_le("Spec ID numberOfAlgorithms")?;
    if n == 0 || n > 16 {
        return Err(ParseError::Invalid {
            what: WHAT,
            detail: format!("{n} algorithms"),
        });
    }
    let mut algorithms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let alg = c.u16_le("Spec ID algorithmId")?;
        let size = c.u16_le("Spec ID digestSize")?;
        if let Some(h) = HashAlg::from_tpm(alg)
            && usize::from(size) != h.digest_len()
        {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("{} digest size {size}", h.name()),
            });
        }
        if size == 0 || size > 64 {
            return Err(ParseError::Invalid {
                what: WHAT,
                detail: format!("digest size {size}"),
            });
        }
        algorithms.push((alg, size));
    }
    let vendor = c.u8("Spec ID vendorInfoSize")?;
    c.take(vendor.into(), "Spec ID vendorInfo")?;
    Ok(SpecId {
        platform_class,
        spec_version: (major, minor, errata),
        uintn_size,
        algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_a_parsed_log_gives_back_its_bytes() {
        let bytes = crate::test_fixture("keylime/test/data/create-mb-policy/binary_bios_measurements");
        assert_eq!(EventLog::parse(&bytes).unwrap().encode(), bytes);
    }

    fn fedora_log() -> Vec<u8> {
        crate::test_fixture("keylime/test/data/create-mb-policy/binary_bios_measurements")
    }

    #[test]
    fn fedora_log_replays_to_the_known_pcr0() {
        let log = EventLog::parse(&fedora_log()).unwrap();
        assert_eq!(log.events.len(), 1 + 120, "the Spec ID header and 120 events");
        let pcrs = log.replay();
        let pcr0 = hex::encode(&pcrs[&HashAlg::Sha256][&0]);
        assert_eq!(
            pcr0,
            "0ee9a7feba8f4172f1a7451594aa5731665a4d353ac61814042ce107a00742f2"
        );
        assert!(pcrs.contains_key(&HashAlg::Sha1));
        let aggregates = boot_aggregates(&pcrs);
        assert_eq!(aggregates[&HashAlg::Sha256][0].len(), 32);
    }

    #[test]
    fn fedora_log_event_data_decodes() {
        let log = EventLog::parse(&fedora_log()).unwrap();
        let find = |pred: &dyn Fn(&Event) -> bool| {
            log.events.iter().filter(|e| pred(e)).cloned().collect::<Vec<_>>()
        };
        assert_eq!(log.events[1].decode(), EventData::StartupLocality(3));
        let crtm = find(&|e| e.event_type == 0x08);
        assert_eq!(crtm[0].decode(), EventData::Text("N40ET41W ".into()));
        let separators = find(&|e| e.event_type == EV_SEPARATOR);
        assert!(separators.len() >= 8);
        assert!(
            separators
                .iter()
                .all(|e| e.decode() == EventData::Separator(vec![0; 4]))
        );
        let secure_boot = find(&|e| matches!(&e.decode(), EventData::Variable(v) if v.name == "SecureBoot"));
        let EventData::Variable(v) = secure_boot[0].decode() else {
            unreachable!()
        };
        assert_eq!(v.decoded, VariableData::Boolean(false));
        assert_eq!(v.guid.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        let db = find(&|e| {
            e.event_type == 0x8000_0001 && matches!(&e.decode(), EventData::Variable(v) if v.name == "db")
        });
        let EventData::Variable(v) = db[0].decode() else {
            unreachable!()
        };
        let VariableData::SignatureLists(lists) = &v.decoded else {
            panic!("db is not signature lists: {v:?}")
        };
        assert!(!lists.is_empty() && lists.iter().all(|l| !l.entries.is_empty()));
        let apps = find(&|e| e.event_type == 0x8000_0003);
        assert!(apps.iter().any(|e| matches!(&e.decode(),
            EventData::ImageLoad(i) if i.device_path_text.starts_with("PciRoot(0x0)/") && i.device_path_text.ends_with("\\EFI\\fedora\\shimx64.efi"))));
        let ipl = find(&|e| {
            e.event_type == 0x0d
                && matches!(&e.decode(), EventData::Text(t) if t.starts_with("kernel_cmdline: "))
        });
        assert_eq!(ipl.len(), 1);
        assert!(
            find(&|e| e.event_type == 0x8000_0007)
                .iter()
                .any(|e| e.decode() == EventData::Text("Calling EFI Application from Boot Option".into()))
        );
    }

    /// Every real log of the fixtures (the others are malformed on purpose).
    const REAL_LOGS: &[&str] = &["keylime/test/data/create-mb-policy/binary_bios_measurements"];

    #[test]
    fn real_logs_have_no_data_mismatch() {
        for name in REAL_LOGS {
            let log = EventLog::parse(&crate::test_fixture(name)).unwrap();
            let mut verified = 0;
            for e in &log.events {
                match e.check_data() {
                    DataCheck::Verified => verified += 1,
                    DataCheck::NotCovered => {}
                    DataCheck::Mismatch { alg } => {
                        panic!(
                            "{name}: event {} ({}) mismatches in {alg:?}",
                            e.number,
                            e.type_name()
                        )
                    }
                }
            }
            assert!(verified > 0, "{name}: nothing was checked");
        }
        // The Fedora log: 1 S-CRTM version, 8 driver-config variables, 8 separators,
        // 14 boot variables (digests of VariableData only), 1 EFI action, 1 GPT, 1 authority.
        let log = EventLog::parse(&fedora_log()).unwrap();
        let verified = log
            .events
            .iter()
            .filter(|e| e.check_data() == DataCheck::Verified)
            .count();
        assert_eq!(verified, 34);
    }

    /// The log with event `index`'s data edited by `edit`, digests kept, re-encoded and parsed.
    fn forge(log: &EventLog, index: usize, edit: impl FnOnce(&mut Vec<u8>)) -> EventLog {
        let mut log = log.clone();
        edit(&mut log.events[index].data);
        EventLog::parse(&log.encode()).unwrap()
    }

    #[test]
    fn a_flipped_secure_boot_byte_is_a_mismatch_the_replay_misses() {
        let log = EventLog::parse(&fedora_log()).unwrap();
        let index = log
            .events
            .iter()
            .position(|e| {
                e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG
                    && matches!(&e.decode(), EventData::Variable(v) if v.name == "SecureBoot")
            })
            .unwrap();
        assert_eq!(log.events[index].check_data(), DataCheck::Verified);
        let forged = forge(&log, index, |data| *data.last_mut().unwrap() ^= 1);
        let EventData::Variable(v) = forged.events[index].decode() else {
            panic!("SecureBoot no longer decodes")
        };
        assert_eq!(
            v.decoded,
            VariableData::Boolean(true),
            "the forgery turns Secure Boot on"
        );
        assert!(matches!(
            forged.events[index].check_data(),
            DataCheck::Mismatch { .. }
        ));
        assert_eq!(forged.replay(), log.replay());
        let others_fine = forged
            .events
            .iter()
            .filter(|e| e.number != index)
            .all(|e| !matches!(e.check_data(), DataCheck::Mismatch { .. }));
        assert!(others_fine);
    }

    #[test]
    fn a_flipped_boot_variable_value_is_a_mismatch() {
        // This firmware's boot variable digests cover VariableData only; it is still checked.
        let log = EventLog::parse(&fedora_log()).unwrap();
        let index = log
            .events
            .iter()
            .position(|e| e.event_type == EV_EFI_VARIABLE_BOOT)
            .unwrap();
        assert_eq!(log.events[index].check_data(), DataCheck::Verified);
        let forged = forge(&log, index, |data| *data.last_mut().unwrap() ^= 1);
        assert!(matches!(
            forged.events[index].check_data(),
            DataCheck::Mismatch { .. }
        ));
    }

    #[test]
    fn a_flipped_ipl_byte_is_not_covered() {
        let log = EventLog::parse(&fedora_log()).unwrap();
        let index = log.events.iter().position(|e| e.event_type == EV_IPL).unwrap();
        assert_eq!(log.events[index].check_data(), DataCheck::NotCovered);
        let forged = forge(&log, index, |data| *data.last_mut().unwrap() ^= 1);
        assert_ne!(forged.events[index].data, log.events[index].data);
        assert_eq!(forged.events[index].check_data(), DataCheck::NotCovered);
        assert_eq!(forged.replay(), log.replay());
    }

    fn event(event_type: u32, digests: Vec<(u16, Vec<u8>)>, data: &[u8]) -> Event {
        Event {
            number: 1,
            pcr: 7,
            event_type,
            digests,
            data: data.to_vec(),
        }
    }

    #[test]
    fn only_computable_digests_are_checked() {
        let data: &[u8] = b"Calling EFI Application from Boot Option";
        let sha256 = (HashAlg::Sha256.tpm_id(), HashAlg::Sha256.digest(&[data]));
        let sm3: (u16, Vec<u8>) = (0x0012, vec![0xAA; 32]);
        let wrong_sha1: (u16, Vec<u8>) = (HashAlg::Sha1.tpm_id(), vec![0; 20]);
        assert_eq!(
            event(EV_EFI_ACTION, vec![sm3.clone()], data).check_data(),
            DataCheck::NotCovered
        );
        assert_eq!(
            event(EV_EFI_ACTION, vec![], data).check_data(),
            DataCheck::NotCovered
        );
        assert_eq!(
            event(EV_EFI_ACTION, vec![sm3, sha256.clone()], data).check_data(),
            DataCheck::Verified
        );
        assert_eq!(
            event(EV_EFI_ACTION, vec![sha256, wrong_sha1.clone()], data).check_data(),
            DataCheck::Mismatch { alg: HashAlg::Sha1 }
        );
        // Types whose digest does not cover the data never mismatch.
        assert_eq!(
            event(EV_IPL, vec![wrong_sha1.clone()], data).check_data(),
            DataCheck::NotCovered
        );
        assert_eq!(
            event(0x8000_0003, vec![wrong_sha1.clone()], data).check_data(),
            DataCheck::NotCovered
        );
        assert_eq!(
            event(EV_NO_ACTION, vec![wrong_sha1], data).check_data(),
            DataCheck::NotCovered
        );
    }

    #[test]
    fn error_separators_may_measure_the_error_value() {
        let error_value: &[u8] = &[1, 0, 0, 0];
        let error = vec![(HashAlg::Sha256.tpm_id(), HashAlg::Sha256.digest(&[error_value]))];
        assert_eq!(
            event(EV_SEPARATOR, error.clone(), &[0xFF; 4]).check_data(),
            DataCheck::Verified
        );
        // An error separator must not pass for the normal one.
        assert_eq!(
            event(EV_SEPARATOR, error, &[0; 4]).check_data(),
            DataCheck::Mismatch { alg: HashAlg::Sha256 }
        );
    }

    #[test]
    fn undecodable_boot_variables_are_checked_against_the_whole_data() {
        let data = [0xEEu8; 10];
        let sha1 = |d: &[u8]| vec![(HashAlg::Sha1.tpm_id(), HashAlg::Sha1.digest(&[d]))];
        assert_eq!(
            event(EV_EFI_VARIABLE_BOOT2, sha1(&data[..]), &data).check_data(),
            DataCheck::Verified
        );
        assert_eq!(
            event(EV_EFI_VARIABLE_BOOT2, sha1(&data[..9]), &data).check_data(),
            DataCheck::Mismatch { alg: HashAlg::Sha1 }
        );
    }

    #[test]
    fn bogus_and_empty_logs_are_rejected() {
        for name in ["binary_bios_measurements-bogus", "binary_bios_measurements-empty"] {
            let bytes = crate::test_fixture(&format!("keylime/test/data/create-mb-policy/{name}"));
            assert!(EventLog::parse(&bytes).is_err(), "{name}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_log() {
        let bytes = fedora_log();
        for n in (0..bytes.len()).step_by(7) {
            let _ = EventLog::parse(&bytes[..n]);
        }
    }
}
