//! UEFI boot logs for tests, from Keylime's fixtures.

use zest::evidence::uefi::{EventData, EventLog};

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
