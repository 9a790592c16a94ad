//! Decoding of UEFI event data: the fields measured-boot policies inspect. Decoding never
//! fails the log: data that does not decode is kept raw (`EventData::Raw`).

use super::super::cursor::Cursor;
use super::device_path;

/// A UEFI GUID (mixed-endian on the wire), printed in canonical lowercase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    fn read(c: &mut Cursor<'_>) -> Option<Self> {
        Some(Self(c.array("GUID").ok()?))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            hex::encode(&g[10..16])
        )
    }
}

/// One EFI_SIGNATURE_DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    pub owner: Guid,
    pub data: Vec<u8>,
}

/// One EFI_SIGNATURE_LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList {
    pub signature_type: Guid,
    pub entries: Vec<SignatureEntry>,
}

/// What a variable's data decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableData {
    /// `SecureBoot`, `SetupMode`, `DeployedMode`, `AuditMode`, `MokListTrusted`…: one byte.
    Boolean(bool),
    /// `PK`, `KEK`, `db`, `dbx`…: signature lists.
    SignatureLists(Vec<SignatureList>),
    /// `db` authority events: one EFI_SIGNATURE_DATA (the certificate that verified an image).
    Signature(SignatureEntry),
    /// shim's `vendor_db` authority events: EFI_SIGNATURE_DATA entries logged without a
    /// list, read as Keylime reads them (see `vendor_db.rs`).
    Signatures(Vec<SignatureEntry>),
    /// `BootOrder`: `Boot####` numbers.
    BootOrder(Vec<u16>),
    /// `Boot####`: an EFI_LOAD_OPTION.
    BootOption {
        enabled: bool,
        description: String,
        device_path: String,
    },
    /// Anything else.
    Raw,
}

/// UEFI_VARIABLE_DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiVariable {
    pub guid: Guid,
    pub name: String,
    pub data: Vec<u8>,
    pub decoded: VariableData,
}

/// UEFI_IMAGE_LOAD_EVENT (boot services applications and drivers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLoad {
    pub location: u64,
    pub length: u64,
    pub link_time_address: u64,
    pub device_path: Vec<u8>,
    /// The device path in UEFI's text form (`PciRoot(0x0)/Pci(0x1,0x1)/…/\EFI\…`).
    pub device_path_text: String,
}

/// A GPT partition from an EV_EFI_GPT_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub starting_lba: u64,
    pub ending_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// Decoded event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    /// The log's opening Spec ID event.
    SpecId,
    /// EV_NO_ACTION `StartupLocality`.
    StartupLocality(u8),
    /// Text events: EV_EFI_ACTION, EV_ACTION, EV_IPL (grub/systemd strings), EV_POST_CODE
    /// strings, EV_S_CRTM_VERSION (UTF-16), EV_OMIT_BOOT_DEVICE_EVENTS.
    Text(String),
    /// EV_SEPARATOR: the separator value (0 or 0xFFFFFFFF for errors).
    Separator(Vec<u8>),
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB(2).
    FirmwareBlob {
        description: Option<String>,
        base: u64,
        length: u64,
    },
    /// EV_EFI_VARIABLE_*.
    Variable(UefiVariable),
    /// EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER.
    ImageLoad(ImageLoad),
    /// EV_EFI_GPT_EVENT: the disk GUID and its partitions.
    Gpt {
        disk_guid: Guid,
        partitions: Vec<GptPartition>,
    },
    /// Not decoded.
    Raw,
}

/// Decodes the data of an event of type `event_type`.
pub(super) fn decode(event_type: u32, data: &[u8]) -> EventData {
    let decoded = match event_type {
        0x03 => startup_locality(data),
        0x04 => Some(EventData::Separator(data.to_vec())),
        0x08 => Some(EventData::Text(utf16_or_text(data))),
        0x01 | 0x05 | 0x0d | 0x12 | 0x8000_0007 => Some(EventData::Text(text(data))),
        0x8000_0008 => blob(data, false),
        0x8000_000a => blob(data, true),
        0x8000_0001 | 0x8000_0002 | 0x8000_000c | 0x8000_00e0 => {
            variable(event_type, data).map(EventData::Variable)
        }
        0x8000_0003..=0x8000_0005 => image_load(data).map(EventData::ImageLoad),
        0x8000_0006 => gpt(data),
        _ => None,
    };
    decoded.unwrap_or(EventData::Raw)
}

fn startup_locality(data: &[u8]) -> Option<EventData> {
    let rest = data.strip_prefix(b"StartupLocality\0")?;
    let &[locality] = rest else {
        return None;
    };
    Some(EventData::StartupLocality(locality))
}

/// Text as logged: trailing NULs removed, invalid UTF-8 replaced.
fn text(data: &[u8]) -> String {
    let trimmed = data
        .iter()
        .rposition(|b| *b != 0)
        .and_then(|i| data.get(..=i))
        .unwrap_or_default();
    String::from_utf8_lossy(trimmed).into_owned()
}

/// S-CRTM versions are UTF-16 on most firmware, plain text on some.
fn utf16_or_text(data: &[u8]) -> String {
    if data.len() >= 2 && data.len().is_multiple_of(2) && data.iter().skip(1).step_by(2).all(|b| *b == 0) {
        utf16(data)
    } else {
        text(data)
    }
}

pub(super) fn utf16(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .as_chunks::<2>()
        .0
        .iter()
        .map(|c| u16::from_le_bytes(*c))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn blob(data: &[u8], with_description: bool) -> Option<EventData> {
    let mut c = Cursor::new(data);
    let description = if with_description {
        let n = c.u8("blob description size").ok()?;
        Some(text(c.take(n.into(), "blob description").ok()?))
    } else {
        None
    };
    let base = u64::from_le_bytes(c.take(8, "blob base").ok()?.try_into().ok()?);
    let length = u64::from_le_bytes(c.take(8, "blob length").ok()?.try_into().ok()?);
    Some(EventData::FirmwareBlob {
        description,
        base,
        length,
    })
}

fn u64_le(c: &mut Cursor<'_>) -> Option<u64> {
    Some(u64::from_le_bytes(c.take(8, "u64").ok()?.try_into().ok()?))
}

/// UEFI_VARIABLE_DATA split into its GUID, UTF-16 name bytes and VariableData; bytes after
/// VariableData are ignored (as decoding ignores them).
fn variable_parts(data: &[u8]) -> Option<(Guid, &[u8], &[u8])> {
    let mut c = Cursor::new(data);
    let guid = Guid::read(&mut c)?;
    let name_len = usize::try_from(u64_le(&mut c)?).ok()?;
    let data_len = usize::try_from(u64_le(&mut c)?).ok()?;
    let name = c.take(name_len.checked_mul(2)?, "variable name").ok()?;
    let value = c.take(data_len, "variable data").ok()?;
    Some((guid, name, value))
}

/// The VariableData of a UEFI_VARIABLE_DATA: what some firmware measures alone for
/// EV_EFI_VARIABLE_BOOT(2) events.
pub(super) fn variable_value(data: &[u8]) -> Option<&[u8]> {
    variable_parts(data).map(|(_, _, value)| value)
}

fn variable(event_type: u32, data: &[u8]) -> Option<UefiVariable> {
    let (guid, name, value) = variable_parts(data)?;
    let name = utf16(name);
    let decoded = variable_data(event_type, &name, value);
    Some(UefiVariable {
        guid,
        name,
        data: value.to_vec(),
        decoded,
    })
}

fn variable_data(event_type: u32, name: &str, data: &[u8]) -> VariableData {
    // shim logs the vendor_db entry that verified an image without its list; Keylime reads
    // those its own way, and only in authority events (what it cannot read stays raw).
    if event_type == super::EV_EFI_VARIABLE_AUTHORITY && name == "vendor_db" {
        return super::vendor_db::entries(data).map_or(VariableData::Raw, VariableData::Signatures);
    }
    let parsed = match name {
        "SecureBoot" | "SetupMode" | "AuditMode" | "DeployedMode" | "MokListTrusted" if data.len() == 1 => {
            data.first().map(|b| VariableData::Boolean(*b != 0))
        }
        "PK" | "KEK" | "db" | "dbx" | "dbt" | "dbr" | "vendor_db" | "MokList" | "MokListX" => {
            signature_lists(data).map(VariableData::SignatureLists)
        }
        "BootOrder" if data.len().is_multiple_of(2) => Some(VariableData::BootOrder(
            data.as_chunks::<2>()
                .0
                .iter()
                .map(|c| u16::from_le_bytes(*c))
                .collect(),
        )),
        n if n.len() == 8 && n.starts_with("Boot") && n[4..].chars().all(|c| c.is_ascii_hexdigit()) => {
            boot_option(data)
        }
        _ => None,
    };
    // Authority events for `db` carry a single EFI_SIGNATURE_DATA rather than lists.
    parsed
        .or_else(|| {
            (name == "db" && data.len() > 16)
                .then(|| signature_entry(data))
                .flatten()
                .map(VariableData::Signature)
        })
        .unwrap_or(VariableData::Raw)
}

fn signature_entry(data: &[u8]) -> Option<SignatureEntry> {
    let (owner, rest) = data.split_first_chunk::<16>()?;
    Some(SignatureEntry {
        owner: Guid(*owner),
        data: rest.to_vec(),
    })
}

fn signature_lists(data: &[u8]) -> Option<Vec<SignatureList>> {
    let mut c = Cursor::new(data);
    let mut lists = Vec::new();
    while c.remaining() > 0 {
        let signature_type = Guid::read(&mut c)?;
        let list_size = c.u32_le("SignatureListSize").ok()? as usize;
        let header_size = c.u32_le("SignatureHeaderSize").ok()? as usize;
        let entry_size = c.u32_le("SignatureSize").ok()? as usize;
        let body_len = list_size.checked_sub(28)?.checked_sub(header_size)?;
        c.take(header_size, "signature header").ok()?;
        let body = c.take(body_len, "signature list").ok()?;
        if entry_size <= 16 || !body_len.is_multiple_of(entry_size) {
            return None;
        }
        let entries = body
            .chunks_exact(entry_size)
            .map(signature_entry)
            .collect::<Option<Vec<_>>>()?;
        lists.push(SignatureList {
            signature_type,
            entries,
        });
    }
    Some(lists)
}

fn boot_option(data: &[u8]) -> Option<VariableData> {
    let mut c = Cursor::new(data);
    let attributes = c.u32_le("EFI_LOAD_OPTION.Attributes").ok()?;
    let path_len = c.u16_le("EFI_LOAD_OPTION.FilePathListLength").ok()? as usize;
    let rest = data.get(6..)?;
    let desc_units = rest.chunks_exact(2).position(|u| u == [0, 0])?;
    let description = utf16(rest.get(..desc_units * 2)?);
    let path = rest.get((desc_units + 1) * 2..(desc_units + 1) * 2 + path_len)?;
    Some(VariableData::BootOption {
        enabled: attributes & 1 == 1,
        description,
        device_path: device_path::to_text(path),
    })
}

fn image_load(data: &[u8]) -> Option<ImageLoad> {
    let mut c = Cursor::new(data);
    let location = u64_le(&mut c)?;
    let length = u64_le(&mut c)?;
    let link_time_address = u64_le(&mut c)?;
    let path_len = usize::try_from(u64_le(&mut c)?).ok()?;
    let device_path = c.take(path_len, "device path").ok()?.to_vec();
    let device_path_text = device_path::to_text(&device_path);
    Some(ImageLoad {
        location,
        length,
        link_time_address,
        device_path,
        device_path_text,
    })
}

fn gpt(data: &[u8]) -> Option<EventData> {
    let mut c = Cursor::new(data);
    let header = c.take(92, "GPT header").ok()?;
    let disk_guid = Guid(field(header, 56)?);
    let entry_size = u32::from_le_bytes(field(header, 84)?) as usize;
    c.take(data.len().min(92).saturating_sub(92), "pad").ok()?;
    let count = u64_le(&mut c)?;
    if entry_size < 128 || count > 1024 {
        return None;
    }
    let mut partitions = Vec::new();
    for _ in 0..count {
        let e = c.take(entry_size, "GPT partition").ok()?;
        partitions.push(GptPartition {
            type_guid: Guid(field(e, 0)?),
            unique_guid: Guid(field(e, 16)?),
            starting_lba: u64::from_le_bytes(field(e, 32)?),
            ending_lba: u64::from_le_bytes(field(e, 40)?),
            attributes: u64::from_le_bytes(field(e, 48)?),
            name: utf16(e.get(56..128)?),
        });
    }
    Some(EventData::Gpt {
        disk_guid,
        partitions,
    })
}

/// The `N` bytes of `bytes` at offset `at`, if present.
fn field<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The TCG name of an event type.
pub(super) fn event_type_name(t: u32) -> String {
    let name = match t {
        0x00 => "EV_PREBOOT_CERT",
        0x01 => "EV_POST_CODE",
        0x02 => "EV_UNUSED",
        0x03 => "EV_NO_ACTION",
        0x04 => "EV_SEPARATOR",
        0x05 => "EV_ACTION",
        0x06 => "EV_EVENT_TAG",
        0x07 => "EV_S_CRTM_CONTENTS",
        0x08 => "EV_S_CRTM_VERSION",
        0x09 => "EV_CPU_MICROCODE",
        0x0a => "EV_PLATFORM_CONFIG_FLAGS",
        0x0b => "EV_TABLE_OF_DEVICES",
        0x0c => "EV_COMPACT_HASH",
        0x0d => "EV_IPL",
        0x0e => "EV_IPL_PARTITION_DATA",
        0x0f => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00e1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00e2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        other => return format!("0x{other:08x}"),
    };
    name.to_owned()
}
