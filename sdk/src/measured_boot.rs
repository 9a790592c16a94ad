//! The types of the measured-boot world, and helpers to find things in a boot log.
//!
//! Text forms: GUIDs are lowercase 8-4-4-4-12 text (`8be4df61-93ca-11d2-aa0d-00e098032b8c`);
//! the helpers that take a GUID accept either case. Digests and other byte strings are
//! bytes; [`crate::hex`] prints them as Keylime does (lowercase).

use crate::HashAlg;
pub use crate::measured_boot_bindings::exports::zest::policy::measured_boot::{
    BootLog, BootOption, EfiVariable, Event, EventData, EventDigest, FirmwareBlob, ImageLoad, PcrValue,
    SignatureEntry, SignatureList, VariableData,
};

/// TCG event types (TCG PC Client Platform Firmware Profile, section 10.4.1), for
/// [`Event::event_type`] and [`BootLog::events_of`].
pub mod event_type {
    pub const EV_PREBOOT_CERT: u32 = 0x0000_0000;
    pub const EV_POST_CODE: u32 = 0x0000_0001;
    pub const EV_UNUSED: u32 = 0x0000_0002;
    pub const EV_NO_ACTION: u32 = 0x0000_0003;
    pub const EV_SEPARATOR: u32 = 0x0000_0004;
    pub const EV_ACTION: u32 = 0x0000_0005;
    pub const EV_EVENT_TAG: u32 = 0x0000_0006;
    pub const EV_S_CRTM_CONTENTS: u32 = 0x0000_0007;
    pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
    pub const EV_CPU_MICROCODE: u32 = 0x0000_0009;
    pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0x0000_000a;
    pub const EV_TABLE_OF_DEVICES: u32 = 0x0000_000b;
    pub const EV_COMPACT_HASH: u32 = 0x0000_000c;
    /// GRUB measures commands, kernel command lines and files as EV_IPL (PCR 8 and 9).
    pub const EV_IPL: u32 = 0x0000_000d;
    pub const EV_IPL_PARTITION_DATA: u32 = 0x0000_000e;
    pub const EV_NONHOST_CODE: u32 = 0x0000_000f;
    pub const EV_NONHOST_CONFIG: u32 = 0x0000_0010;
    pub const EV_NONHOST_INFO: u32 = 0x0000_0011;
    pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x0000_0012;
    pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
    pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
    pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
    pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
    pub const EV_EFI_ACTION: u32 = 0x8000_0007;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
    pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000a;
    pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000b;
    pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000c;
    pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
    /// The db (or shim's vendor_db / MokList) entry that verified a loaded image.
    pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;
    pub const EV_EFI_SPDM_FIRMWARE_BLOB: u32 = 0x8000_00e1;
    pub const EV_EFI_SPDM_FIRMWARE_CONFIG: u32 = 0x8000_00e2;
}

/// Vendor GUIDs of the variables Secure Boot policies read.
pub mod guid {
    /// EFI_GLOBAL_VARIABLE: `SecureBoot`, `PK`, `KEK`, `BootOrder`, `Boot####`.
    pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    /// EFI_IMAGE_SECURITY_DATABASE_GUID: `db`, `dbx`, and shim's `vendor_db` authority events.
    pub const EFI_IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
    /// shim's variables: `MokList`, `MokListX`, `SbatLevel`.
    pub const SHIM_LOCK: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
    /// EFI_CERT_X509_GUID: a signature list of DER certificates.
    pub const EFI_CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
    /// EFI_CERT_SHA256_GUID: a signature list of SHA-256 digests.
    pub const EFI_CERT_SHA256: &str = "c1c41626-504c-4092-aca9-41f936934328";
}

impl BootLog {
    /// The events of one type, in log order.
    pub fn events_of(&self, event_type: u32) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.event_type == event_type)
    }

    /// The events measured into one PCR, in log order.
    pub fn events_in(&self, pcr: u32) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.pcr == pcr)
    }

    /// The first measurement of a configuration or boot variable (EV_EFI_VARIABLE_DRIVER_CONFIG,
    /// EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2) with this vendor GUID (either case) and
    /// name. Authority events, which name the entry that verified an image, are in
    /// [`BootLog::authorities`].
    pub fn variable(&self, guid: &str, name: &str) -> Option<&EfiVariable> {
        self.events
            .iter()
            .filter(|e| e.event_type != event_type::EV_EFI_VARIABLE_AUTHORITY)
            .filter_map(Event::variable)
            .find(|v| v.is(guid, name))
    }

    /// The EV_EFI_VARIABLE_AUTHORITY events' variables: for each image loaded under Secure
    /// Boot, the variable (`db`, shim's `vendor_db` or `MokList`…) and the entry in it that
    /// verified the image.
    pub fn authorities(&self) -> impl Iterator<Item = &EfiVariable> {
        self.events_of(event_type::EV_EFI_VARIABLE_AUTHORITY)
            .filter_map(Event::variable)
    }

    /// The `SecureBoot` variable as measured: `Some(true)` when Secure Boot was on; `None`
    /// when the log does not measure it (or its value is not one byte).
    pub fn secure_boot(&self) -> Option<bool> {
        match self.variable(guid::EFI_GLOBAL_VARIABLE, "SecureBoot")?.parsed {
            VariableData::Boolean(on) => Some(on),
            _ => None,
        }
    }

    /// The quoted value of a PCR in the quoted bank.
    pub fn quoted_pcr(&self, index: u32) -> Option<&[u8]> {
        self.quoted
            .iter()
            .find(|p| p.index == index)
            .map(|p| p.value.as_slice())
    }

    /// The kernel command lines GRUB measured (EV_IPL text after `kernel_cmdline: ` in PCR 8).
    pub fn kernel_cmdlines(&self) -> impl Iterator<Item = &str> {
        self.events_in(8)
            .filter_map(Event::text)
            .filter_map(|t| t.strip_prefix("kernel_cmdline: "))
    }
}

impl Event {
    /// The digest of one bank, if the event carries one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.value.alg == alg)
            .map(|d| d.value.value.as_slice())
    }

    /// The decoded UEFI variable, for variable events.
    pub fn variable(&self) -> Option<&EfiVariable> {
        match &self.parsed {
            EventData::Variable(v) => Some(v),
            _ => None,
        }
    }

    /// The text of EV_IPL, EV_ACTION and EV_EFI_ACTION events (without the trailing NUL).
    pub fn text(&self) -> Option<&str> {
        match &self.parsed {
            EventData::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The device path of a loaded image (EV_EFI_BOOT_SERVICES_APPLICATION and drivers).
    pub fn image_path(&self) -> Option<&str> {
        match &self.parsed {
            EventData::Image(i) => Some(&i.device_path),
            _ => None,
        }
    }
}

impl EfiVariable {
    /// Whether this is the variable `name` of vendor `guid` (either case).
    pub fn is(&self, guid: &str, name: &str) -> bool {
        self.name == name && self.guid.eq_ignore_ascii_case(guid)
    }

    /// Every signature of every list, for `db`, `dbx`, `KEK`, `PK` and `MokList`-like
    /// variables; empty for other data.
    pub fn signatures(&self) -> impl Iterator<Item = &SignatureEntry> {
        let lists: &[SignatureList] = match &self.parsed {
            VariableData::SignatureLists(lists) => lists,
            _ => &[],
        };
        let single = match &self.parsed {
            VariableData::Signature(entry) => Some(entry),
            _ => None,
        };
        lists.iter().flat_map(|l| l.entries.iter()).chain(single)
    }
}
