//! `keylime-mb-example`: Keylime's `example` measured-boot policy (keylime-policies.md
//! §3.6), check for check, over its reference state (`mb_refstate`).
//!
//! Every event must pass the test its (PCR, event type) selects; some kinds are allowed
//! once; kernel, boot-loader, S-CRTM and firmware events are collected and compared with
//! the reference state at the end. The first reason to reject is reported as Keylime's
//! `measured_boot.policy_example` event. Keylime's quirks are kept: the second
//! `EV_NO_ACTION` on PCR 0 (a StartupLocality event) is rejected, an `FFFFFFFF`
//! separator never passes, and a digest counts when any of its algorithms is listed.

mod refstate;

use std::collections::HashSet;

use serde_json::json;
use sha2::Digest as _;
use zest_policy_sdk::measured_boot::{BootLog, Event, EventData, SignatureEntry, VariableData};
use zest_policy_sdk::{Failure, LoadError, MeasuredBootPolicy, Verdict, hex};

use refstate::{DigestSpec, RefState, Sig};

const EFI_GLOBAL: [&str; 2] = [
    "8be4df61-93ca-11d2-aa0d-00e098032b8c",
    "61dfe48b-ca93-d211-aa0d-00e098032b8c",
];
const IMAGE_SECURITY_DB: [&str; 2] = [
    "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
    "cbb219d7-3a3d-9645-a3bc-dad00e67656f",
];
const SHIM_LOCK: [&str; 2] = [
    "605dab50-e046-4300-abb6-3dd810dd8b23",
    "50ab5d60-46e0-0043-abb6-3dd810dd8b23",
];
const CERT_X509: [&str; 2] = [
    "a5c059a1-94e4-4aa7-87b5-ab155c2bf072",
    "a159c0a5-e494-a74a-87b5-ab155c2bf072",
];
const CERT_SHA256: [&str; 2] = [
    "c1c41626-504c-4092-aca9-41f936934328",
    "2616c4c1-4c50-9240-aca9-41f936934328",
];

/// Relevant PCRs: 0–9 and 14.
const RELEVANT_PCRS: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14];

pub struct Example {
    refstate: RefState,
}

impl MeasuredBootPolicy for Example {
    fn load(document: &[u8]) -> Result<Self, LoadError> {
        Ok(Self {
            refstate: RefState::parse(document)?,
        })
    }

    fn relevant_pcrs(&self) -> Vec<u32> {
        RELEVANT_PCRS.to_vec()
    }

    fn evaluate(&self, log: &BootLog) -> Verdict {
        match Run::new(&self.refstate).check(log) {
            Ok(()) => Verdict::pass(),
            Err(reason) => Verdict::with_failures(vec![Failure::new(
                "measured_boot.policy_example",
                json!({
                    "context": "Boot attestation failed",
                    "policy": "example",
                    "refstate": self.refstate.text,
                    "reason": reason,
                }),
            )]),
        }
    }
}

zest_policy_sdk::export_measured_boot_policy!(Example);

type Check = Result<(), String>;

/// One evaluation: which once-only tests ran, and the events collected for the end.
struct Run<'a> {
    rs: &'a RefState,
    once: HashSet<&'static str>,
    config_flags: u32,
    bsas: Vec<&'a Event>,
    ipl9s: Vec<&'a Event>,
    vmlinuz: Vec<&'a Event>,
    kernel_cmdlines: Vec<&'a str>,
    s_crtms: Vec<&'a Event>,
    platform_firmware_blobs: Vec<&'a Event>,
}

impl<'a> Run<'a> {
    fn new(rs: &'a RefState) -> Self {
        Self {
            rs,
            once: HashSet::new(),
            config_flags: 0,
            bsas: Vec::new(),
            ipl9s: Vec::new(),
            vmlinuz: Vec::new(),
            kernel_cmdlines: Vec::new(),
            s_crtms: Vec::new(),
            platform_firmware_blobs: Vec::new(),
        }
    }

    fn check(mut self, log: &'a BootLog) -> Check {
        for event in &log.events {
            self.event(event).map_err(|why| {
                // Keylime prints the whole event; the number, kind and variable name say
                // which one.
                let variable = match &event.parsed {
                    EventData::Variable(v) => format!(" {}", v.name),
                    _ => String::new(),
                };
                format!(
                    "event {} (PCR {}, {}{variable}) {why}",
                    event.number, event.pcr, event.type_name
                )
            })?;
        }
        self.finish()
    }

    /// Keylime's `OnceTest`: passes the first time only.
    fn once(&mut self, key: &'static str) -> Check {
        if self.once.insert(key) {
            Ok(())
        } else {
            Err("test was already run once".into())
        }
    }

    fn event(&mut self, e: &'a Event) -> Check {
        match (e.pcr, e.type_name.as_str()) {
            (0, "EV_NO_ACTION") => self.once("no_action"),
            (1, "EV_CPU_MICROCODE") => self.once("microcode"),
            (1, "EV_EFI_HANDOFF_TABLES") => self.once("handoff"),
            (1, "EV_EFI_HANDOFF_TABLES2") => self.once("handoff2"),
            (0, "EV_S_CRTM_VERSION") => {
                self.s_crtms.push(e);
                Ok(())
            }
            (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB" | "EV_EFI_PLATFORM_FIRMWARE_BLOB2") => {
                self.platform_firmware_blobs.push(e);
                Ok(())
            }
            (7, "EV_EFI_VARIABLE_DRIVER_CONFIG") => self.driver_config(e),
            (7, "EV_EFI_VARIABLE_AUTHORITY") => self.authority(e),
            (2, "EV_EFI_BOOT_SERVICES_DRIVER") => Ok(()),
            (1, "EV_EFI_VARIABLE_BOOT") => boot_variable(e),
            (1, "EV_PLATFORM_CONFIG_FLAGS") => {
                // Keylime: an `Or` of four once-only tests.
                self.config_flags += 1;
                if self.config_flags <= 4 {
                    Ok(())
                } else {
                    Err("[test was already run once, test was already run once, test was already run once, test was already run once]".into())
                }
            }
            (pcr @ (1 | 4 | 5), "EV_EFI_ACTION") => efi_action(e, pcr),
            (0..=7, "EV_SEPARATOR") => separator(e),
            (4, "EV_EFI_BOOT_SERVICES_APPLICATION") => {
                self.bsas.push(e);
                Ok(())
            }
            (14, "EV_IPL") => self.ipl14(e),
            (9, "EV_IPL") => self.ipl9(e),
            (8, "EV_IPL") => self.ipl8(e),
            (5, "EV_EFI_GPT_EVENT") => self.once("gpt"),
            (pcr, kind) => Err(format!(
                "has unexpected ('PCRIndex', 'EventType') combination ({pcr}, '{kind}')"
            )),
        }
    }

    fn driver_config(&mut self, e: &'a Event) -> Check {
        let (guid, name, data) = variable(e)?;
        let rs = self.rs;
        let lenient = |sigs: &[Sig]| !rs.has_secureboot && sigs.is_empty();
        let checked = if EFI_GLOBAL.contains(&guid) {
            match name {
                "SecureBoot" => Some(secure_boot(data, rs.has_secureboot)),
                "PK" => Some(self.once("PK").and_then(|()| {
                    if lenient(&rs.pk) {
                        Ok(())
                    } else {
                        key_subset(data, &CERT_X509, &rs.pk)
                    }
                })),
                "KEK" => Some(self.once("KEK").and_then(|()| {
                    if lenient(&rs.kek) {
                        Ok(())
                    } else {
                        key_subset(data, &CERT_X509, &rs.kek)
                    }
                })),
                _ => None,
            }
        } else if IMAGE_SECURITY_DB.contains(&guid) {
            let x509_or_sha256 = [CERT_X509[0], CERT_X509[1], CERT_SHA256[0], CERT_SHA256[1]];
            match name {
                "db" => Some(self.once("db").and_then(|()| {
                    if lenient(&rs.db) {
                        Ok(())
                    } else {
                        key_subset(data, &x509_or_sha256, &rs.db)
                    }
                })),
                "vendor_db" => Some(self.once("vendor_db").and_then(|()| {
                    if lenient(&rs.vendor_db) {
                        Ok(())
                    } else {
                        key_subset(data, &x509_or_sha256, &rs.vendor_db)
                    }
                })),
                "dbx" => Some(self.once("dbx").and_then(|()| {
                    if lenient(&rs.dbx) {
                        Ok(())
                    } else {
                        key_superset(data, &rs.dbx)
                    }
                })),
                _ => None,
            }
        } else {
            None
        };
        checked
            .unwrap_or_else(|| {
                Err(format!(
                    "Event has unexpected ('VariableName', 'UnicodeName') combination ('{guid}', '{name}')"
                ))
            })
            .map_err(|why| format!("VariableData {why}"))
    }

    fn authority(&mut self, e: &'a Event) -> Check {
        let (guid, name, data) = variable(e)?;
        let rs = self.rs;
        let checked = if IMAGE_SECURITY_DB.contains(&guid) {
            match name {
                "db" => Some(self.once("authority_db")),
                // Keylime: IterateTest(SignatureSetMember(vendor_db)), once; its reasons
                // name the VariableData.
                "vendor_db" => Some(
                    self.once("authority_vendor_db")
                        .and_then(|()| {
                            if !rs.has_secureboot && rs.vendor_db.is_empty() {
                                return Ok(());
                            }
                            vendor_db_members(data, &rs.vendor_db)
                        })
                        .map_err(|why| format!("VariableData {why}")),
                ),
                _ => None,
            }
        } else if SHIM_LOCK.contains(&guid) {
            match name {
                "SbatLevel" => Some(self.once("sbat_level")),
                "Shim" => Some(self.once("shim")),
                "MokListTrusted" if guid == SHIM_LOCK[0] => {
                    Some(self.once("mok_list_trusted").and_then(|()| match data {
                        VariableData::Boolean(_) => Ok(()),
                        _ => Err("has no 'Enabled' field".into()),
                    }))
                }
                "MokListRT" if guid == SHIM_LOCK[0] => Some(self.once("mok_list_rt")),
                _ => None,
            }
        } else {
            None
        };
        checked.unwrap_or_else(|| {
            Err(format!(
                "Event has unexpected ('VariableName', 'UnicodeName') combination ('{guid}', '{name}')"
            ))
        })
    }

    fn ipl14(&mut self, e: &'a Event) -> Check {
        let s = ipl_string(e)?;
        // Keylime's `Or` of three alternatives lists why each one failed.
        let not = |name: &str| format!("Event String is not '{name}'");
        match s {
            "MokList" => digests_test(e, &self.rs.mokdig)
                .map_err(|why| format!("[{why}, {}, {}]", not("MokListX"), not("MokListTrusted"))),
            "MokListX" => digests_test(e, &self.rs.mokxdig)
                .map_err(|why| format!("[{}, {why}, {}]", not("MokList"), not("MokListTrusted"))),
            "MokListTrusted" => self.once("ipl_mok_list_trusted"),
            _ => Err(format!(
                "[{}, {}, {}]",
                not("MokList"),
                not("MokListX"),
                not("MokListTrusted")
            )),
        }
    }

    fn ipl9(&mut self, e: &'a Event) -> Check {
        let s = ipl_string(e)?;
        // Python's `.` stops at a newline; these patterns are full matches.
        let line = !s.contains('\n');
        if line && (s.contains("/loader/entries") || s.contains("/grub")) {
            Ok(())
        } else if line && s.contains("/vmlinuz") {
            self.vmlinuz.push(e);
            Ok(())
        } else if line && (s.contains("/initrd") || s.contains("/initramfs")) {
            self.ipl9s.push(e);
            Ok(())
        } else {
            Err(format!(
                "Event String {s:?} is no boot loader entry, grub file, kernel or initrd"
            ))
        }
    }

    fn ipl8(&mut self, e: &'a Event) -> Check {
        let s = ipl_string(e)?;
        if s.starts_with("grub_cmd: ") {
            Ok(())
        } else if s.starts_with("kernel_cmdline: ") && !s.contains('\n') {
            self.kernel_cmdlines.push(s);
            Ok(())
        } else {
            Err(format!(
                "Event String {s:?} does not match grub_cmd: .* or kernel_cmdline: .*"
            ))
        }
    }

    /// The checks Keylime delays to the end of the log.
    fn finish(&self) -> Check {
        let rs = self.rs;
        let mut reasons = Vec::new();
        for kernel in &rs.kernels {
            match self.kernel_matches(kernel) {
                Ok(()) => {
                    reasons.clear();
                    break;
                }
                Err(why) => reasons.push(why),
            }
        }
        if rs.kernels.is_empty() {
            return Err("does not pass empty disjunction".into());
        }
        if !reasons.is_empty() {
            return Err(format!("[{}]", reasons.join(", ")));
        }
        let mut reasons = Vec::new();
        for allowed in &rs.scrtm_and_bios {
            let result = tuple(&self.s_crtms, std::slice::from_ref(&allowed.scrtm))
                .map_err(|why| format!("s_crtms {why}"))
                .and_then(|()| {
                    tuple(&self.platform_firmware_blobs, &allowed.platform_firmware)
                        .map_err(|why| format!("platform_firmware_blobs {why}"))
                });
            match result {
                Ok(()) => return Ok(()),
                Err(why) => reasons.push(why),
            }
        }
        if rs.scrtm_and_bios.is_empty() {
            return Err("does not pass empty disjunction".into());
        }
        Err(format!("[{}]", reasons.join(", ")))
    }

    fn kernel_matches(&self, k: &refstate::Kernel) -> Check {
        let sha256 = |hex: &str| vec![("sha256".to_owned(), hex.to_owned())];
        let bsas = if let Some(kernel) = &k.kernel {
            let three = [sha256(&k.shim), sha256(&k.grub), sha256(kernel)];
            let four = [sha256(&k.shim), sha256(&k.grub), sha256(kernel), sha256(kernel)];
            tuple(&self.bsas, &three).or_else(|a| tuple(&self.bsas, &four).map_err(|b| format!("[{a}, {b}]")))
        } else {
            tuple(&self.bsas, &[sha256(&k.shim), sha256(&k.grub)])
        };
        bsas.map_err(|why| format!("bsas {why}"))?;
        tuple(&self.ipl9s, &[sha256(&k.initrd)]).map_err(|why| format!("ipl9s {why}"))?;
        match &k.vmlinuz {
            Some(plain) => tuple(&self.vmlinuz, &[sha256(plain)]),
            // With Secure Boot the kernel is checked by its Authenticode digest; the
            // PCR 9 event must still be there exactly once.
            None => exactly(self.vmlinuz.len(), 1),
        }
        .map_err(|why| format!("vmlinuz {why}"))?;
        exactly(self.kernel_cmdlines.len(), 1).map_err(|why| format!("kernel_cmdlines {why}"))?;
        let line = self.kernel_cmdlines[0];
        if !k.cmdline.is_match(line) {
            return Err(format!(
                "kernel_cmdlines [0] does not match kernel_cmdline: {}",
                k.cmdline_pattern
            ));
        }
        Ok(())
    }
}

/// Keylime's `TupleTest` of `DigestTest`s: exactly as many events as specs, in order.
fn tuple(events: &[&Event], specs: &[DigestSpec]) -> Check {
    exactly(events.len(), specs.len())?;
    for (i, (event, spec)) in events.iter().zip(specs).enumerate() {
        digests_test(event, std::slice::from_ref(spec)).map_err(|why| format!("[{i}] {why}"))?;
    }
    Ok(())
}

fn exactly(got: usize, want: usize) -> Check {
    if got > want {
        Err(format!(" is longer ({got}) than the applicable tests ({want})"))
    } else if got < want {
        Err(format!(" is shorter ({got}) than the applicable tests ({want})"))
    } else {
        Ok(())
    }
}

/// Keylime's `DigestsTest`: some digest of the event, in an algorithm the specs name, has
/// a listed value.
fn digests_test(e: &Event, specs: &[DigestSpec]) -> Check {
    let listed = |alg: &str, value: &str| specs.iter().flatten().any(|(a, v)| a == alg && v == value);
    if e.digests
        .iter()
        .any(|d| listed(&d.value.alg_name, &hex(&d.value.value)))
    {
        return Ok(());
    }
    let approved: Vec<String> = specs
        .iter()
        .flatten()
        .map(|(alg, value)| format!("'{alg}': {{'{value}'}}"))
        .collect();
    Err(format!("has no digest approved by {{{}}}", approved.join(", ")))
}

fn variable(e: &Event) -> Result<(&str, &str, &VariableData), String> {
    match &e.parsed {
        EventData::Variable(v) => Ok((v.guid.as_str(), v.name.as_str(), &v.parsed)),
        _ => Err("Event is not a UEFI variable".into()),
    }
}

fn secure_boot(data: &VariableData, has_secureboot: bool) -> Check {
    let want = if has_secureboot { "Yes" } else { "No" };
    match data {
        VariableData::Boolean(enabled) => {
            let got = if *enabled { "Yes" } else { "No" };
            if got == want {
                Ok(())
            } else {
                Err(format!("Enabled is not '{want}'"))
            }
        }
        _ => Err("has no 'Enabled' field".into()),
    }
}

/// Keylime's `KeySubset(Multi)`: every signature list has one of `types` and all its keys
/// are in `keys`.
fn key_subset(data: &VariableData, types: &[&str], keys: &[Sig]) -> Check {
    let VariableData::SignatureLists(lists) = data else {
        return Err("is not a list".into());
    };
    for (i, list) in lists.iter().enumerate() {
        if !types.contains(&list.signature_type.as_str()) {
            return Err(format!("[{i}] SignatureType is not one of {types:?}"));
        }
        for (j, entry) in list.entries.iter().enumerate() {
            if !keys.iter().any(|k| k.matches(entry)) {
                return Err(format!("[{i}] Keys [{j}] is not in the reference state"));
            }
        }
    }
    Ok(())
}

/// Keylime's `KeySuperset`: exactly one list, of SHA-256 hashes, holding every listed key.
fn key_superset(data: &VariableData, keys: &[Sig]) -> Check {
    let VariableData::SignatureLists(lists) = data else {
        return Err("is not a list".into());
    };
    exactly(lists.len(), 1)?;
    let list = &lists[0];
    if !CERT_SHA256.contains(&list.signature_type.as_str()) {
        return Err(format!("[0] SignatureType is not '{}'", CERT_SHA256[0]));
    }
    let present: HashSet<(&str, &[u8])> = list
        .entries
        .iter()
        .map(|e| (e.owner.as_str(), e.data.as_slice()))
        .collect();
    let missing = keys
        .iter()
        .filter(|k| {
            !k.bytes
                .as_deref()
                .is_some_and(|bytes| present.contains(&(k.owner.as_str(), bytes)))
        })
        .count();
    if missing == 0 {
        Ok(())
    } else {
        Err(format!(
            "[0] Keys lacks {missing} of the reference state's dbx entries"
        ))
    }
}

/// Keylime's `IterateTest(SignatureSetMember(vendor_db))`: every entry of a vendor_db
/// authority event is one of the reference state's.
fn vendor_db_members(data: &VariableData, keys: &[Sig]) -> Check {
    for (i, entry) in signatures(data)?.into_iter().enumerate() {
        if keys.is_empty() {
            return Err(format!("[{i}] does not pass empty disjunction"));
        }
        if !keys.iter().any(|k| k.matches(entry)) {
            return Err(format!(
                "[{i}] is not one of the reference state's vendor_db signatures"
            ));
        }
    }
    Ok(())
}

/// The signatures of a vendor_db authority event (Keylime lists them flat; the host hands
/// shim's entries as one list without a type).
fn signatures(data: &VariableData) -> Result<Vec<&SignatureEntry>, String> {
    match data {
        VariableData::SignatureLists(lists) => Ok(lists.iter().flat_map(|l| l.entries.iter()).collect()),
        VariableData::Signature(entry) => Ok(vec![entry]),
        _ => Err("is not a list".into()),
    }
}

fn boot_variable(e: &Event) -> Check {
    let (guid, name, _) = variable(e)?;
    let boot_n =
        name.len() > 4 && name.starts_with("Boot") && name[4..].chars().all(|c| c.is_ascii_hexdigit());
    if EFI_GLOBAL.contains(&guid) && (name == "BootOrder" || boot_n) {
        Ok(())
    } else {
        Err(format!(
            "Event.UnicodeName, {name}, does not match BootOrder|Boot[0-9a-fA-F]+"
        ))
    }
}

fn ipl_string(e: &Event) -> Result<&str, String> {
    match &e.parsed {
        EventData::Text(s) => Ok(s),
        _ => Err("Event has no 'String' field".into()),
    }
}

/// The digests of `value` in every algorithm Keylime knows, for self-describing events.
/// The values are the spec's fixed strings, so each is hashed once per instance.
fn all_digests(value: &'static [u8]) -> DigestSpec {
    thread_local! {
        static KNOWN: std::cell::RefCell<Vec<(&'static [u8], DigestSpec)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    KNOWN.with(|known| {
        if let Some((_, spec)) = known.borrow().iter().find(|(v, _)| *v == value) {
            return spec.clone();
        }
        let spec = vec![
            ("sha1".into(), hex(&sha1::Sha1::digest(value))),
            ("sha256".into(), hex(&sha2::Sha256::digest(value))),
            ("sha384".into(), hex(&sha2::Sha384::digest(value))),
            ("sha512".into(), hex(&sha2::Sha512::digest(value))),
        ];
        known.borrow_mut().push((value, spec.clone()));
        spec
    })
}

/// Keylime's `EvEfiActionTest`: the spec's strings for the PCR, digest = H(string).
fn efi_action(e: &Event, pcr: u32) -> Check {
    let expected: &[&str] = match pcr {
        1 => &["Entering ROM Based Setup"],
        4 => &[
            "Calling EFI Application from Boot Option",
            "Returning from EFI Application from Boot Option",
        ],
        5 => &[
            "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Failure",
            "Exit Boot Services Returned with Success",
        ],
        _ => {
            return Err(format!(
                "No EV_EFI_ACTION event for {pcr} is expected in the spec"
            ));
        }
    };
    let text = match &e.parsed {
        EventData::Text(t) => t.as_str(),
        _ => "",
    };
    let mut reasons = Vec::new();
    for want in expected {
        if text != *want {
            reasons.push(format!("Event is not {want:?}"));
            continue;
        }
        match digests_test(e, &[all_digests(want.as_bytes())]) {
            Ok(()) => return Ok(()),
            Err(why) => reasons.push(why),
        }
    }
    Err(format!("[{}]", reasons.join(", ")))
}

/// Keylime's `EvSeperatorTest`: `00000000` with its digest. Keylime compares the hex of
/// the data with `FFFFFFFF` in capitals, so an error separator never passes.
fn separator(e: &Event) -> Check {
    let data = match &e.parsed {
        EventData::Separator(d) => d.as_slice(),
        _ => e.data.as_slice(),
    };
    if data != [0, 0, 0, 0] {
        return Err(format!(
            "[Event is not '00000000', Event is not 'FFFFFFFF'] (data {})",
            hex(data)
        ));
    }
    digests_test(e, &[all_digests(&[0, 0, 0, 0])])
}
