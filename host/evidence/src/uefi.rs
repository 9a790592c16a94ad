//! The TCG PC Client crypto-agile UEFI event log (`binary_bios_measurements`): parsing,
//! decoding of the event data measured-boot policies look at, replay of every bank and the
//! boot aggregates IMA's `boot_aggregate` is compared with.
//!
//! Layout: one TCG_PCClientPCREvent in the SHA-1 format carrying the Spec ID event
//! (`Spec ID Event03`, the digest sizes of every bank), then TCG_PCR_EVENT2 records:
//! `u32 pcr, u32 type, u32 count, count × (u16 alg, digest), u32 size, data`, little-endian.

use std::collections::BTreeMap;

use super::cursor::{Cursor, ParseError};
use super::public::HashAlg;

mod data;
mod device_path;

pub use data::{EventData, Guid, ImageLoad, SignatureEntry, SignatureList, UefiVariable, VariableData};

/// Largest log accepted (real ones are 20 KiB–2 MiB).
pub const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Largest single event accepted.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Most events accepted.
pub const MAX_EVENTS: usize = 100_000;

pub const EV_NO_ACTION: u32 = 0x03;
pub const EV_SEPARATOR: u32 = 0x04;
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;

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
                let n = h.finish_into(&mut out);
                value.copy_from_slice(&out[..n]);
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
