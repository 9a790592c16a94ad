//! UEFI boot logs for tests: Keylime's fixtures, the SDK's sample, and logs built from them.

use zest::evidence::HashAlg;
use zest::evidence::uefi::{EV_EFI_VARIABLE_AUTHORITY, Event, EventData, EventLog};

use crate::fixture;

/// Keylime's Fedora event log (`create-mb-policy/binary_bios_measurements`).
pub fn fedora_bytes() -> Vec<u8> {
    fixture("keylime/test/data/create-mb-policy/binary_bios_measurements")
}

/// The Fedora log without the events of this firmware that Keylime's `example` does not
/// know (StartupLocality, POST codes, non-host info and S-CRTM contents in PCR 0, setup
/// variables in PCR 1, the firmware's own boot application): the log of the same boot on
/// firmware that logs less, which the policy can accept. Without StartupLocality it also
/// replays from all-zero PCRs, as a software TPM started at locality 0 holds them.
pub fn fedora_without_unlisted_pcr0_events() -> Vec<u8> {
    let mut log = EventLog::parse(&fedora_bytes()).expect("the Fedora fixture parses");
    let header = log.events.remove(0);
    log.events.retain(|e| {
        let firmware_application = matches!(
            e.decode(),
            EventData::ImageLoad(i) if i.device_path_text.starts_with("FvVol(")
        );
        let unlisted = match (e.pcr, e.type_name().as_str()) {
            (0, "EV_NO_ACTION" | "EV_POST_CODE" | "EV_NONHOST_INFO" | "EV_S_CRTM_CONTENTS") => true,
            (1, "EV_EFI_VARIABLE_DRIVER_CONFIG") => true,
            (4, "EV_EFI_BOOT_SERVICES_APPLICATION") => firmware_application,
            _ => false,
        };
        !unlisted
    });
    log.events.insert(0, header);
    log.encode()
}

/// A GUID in its wire form: the first three fields little-endian, the last two as written.
pub fn guid(text: &str) -> [u8; 16] {
    let fields: Vec<&str> = text.split('-').collect();
    assert_eq!(fields.len(), 5, "{text}");
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&u32::from_str_radix(fields[0], 16).unwrap().to_le_bytes());
    out.extend_from_slice(&u16::from_str_radix(fields[1], 16).unwrap().to_le_bytes());
    out.extend_from_slice(&u16::from_str_radix(fields[2], 16).unwrap().to_le_bytes());
    out.extend_from_slice(&hex::decode(fields[3]).unwrap());
    out.extend_from_slice(&hex::decode(fields[4]).unwrap());
    out.try_into().unwrap()
}

/// UTF-16LE, without a terminator.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// UEFI_VARIABLE_DATA: GUID, name length (UTF-16 units, no NUL), data length, name, data.
pub fn uefi_variable(guid_text: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = guid(guid_text).to_vec();
    out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&utf16(name));
    out.extend_from_slice(data);
    out
}

/// An event of both banks whose digests are of `measured`; numbered once the log is whole.
pub fn event(pcr: u32, event_type: u32, data: Vec<u8>, measured: &[u8]) -> Event {
    Event {
        number: 0,
        pcr,
        event_type,
        digests: [HashAlg::Sha1, HashAlg::Sha256]
            .into_iter()
            .map(|bank| (bank.tpm_id(), bank.digest(&[measured])))
            .collect(),
        data,
    }
}

/// An event whose digests are of its data, as TCG requires of variables, separators and
/// actions (zest's `check_data` verifies them).
pub fn covered(pcr: u32, event_type: u32, data: Vec<u8>) -> Event {
    let measured = data.clone();
    event(pcr, event_type, data, &measured)
}

/// EFI_IMAGE_SECURITY_DATABASE_GUID, under which shim logs its `vendor_db` authority events.
pub const IMAGE_SECURITY_DB: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;

/// The SDK's sample log (`sdk/testdata/boot.log`): Secure Boot on, shim and GRUB loaded.
pub fn sdk_sample_bytes() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/testdata/boot.log");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SDK's sample Secure Boot log as a Fedora/RHEL shim logs it when a certificate built
/// into shim (its `vendor_db`) verified the kernel: the kernel's image event after GRUB's,
/// then one EV_EFI_VARIABLE_AUTHORITY `vendor_db` event per value (each that event's
/// VariableData: EFI_SIGNATURE_DATA entries, back to back, without a list).
pub fn secure_boot_with_vendor_db(vendor_db: &[Vec<u8>]) -> Vec<u8> {
    let mut log = EventLog::parse(&sdk_sample_bytes()).expect("the SDK sample log parses");
    let grub = log
        .events
        .iter()
        .rposition(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .expect("GRUB's image event");
    let mut kernel = event(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        Vec::new(),
        b"zest test: kernel Authenticode",
    );
    kernel.data = log.events[grub].data.clone();
    let authority = vendor_db.iter().map(|value| {
        covered(
            7,
            EV_EFI_VARIABLE_AUTHORITY,
            uefi_variable(IMAGE_SECURITY_DB, "vendor_db", value),
        )
    });
    log.events
        .splice(grub + 1..grub + 1, std::iter::once(kernel).chain(authority));
    for (number, e) in log.events.iter_mut().enumerate() {
        e.number = number;
    }
    log.encode()
}
