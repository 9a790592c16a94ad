//! EFI device paths in UEFI's text form, for the node types boot logs carry; other nodes
//! print generically as `Path(type,subtype,hex)`, as efivar does.

use super::data::{Guid, utf16};

/// Renders a device path; malformed input ends the rendering with what was read.
pub(super) fn to_text(mut bytes: &[u8]) -> String {
    let mut nodes: Vec<String> = Vec::new();
    while let Some(&[node_type, subtype, len_lo, len_hi]) = bytes.first_chunk::<4>() {
        let len = usize::from(u16::from_le_bytes([len_lo, len_hi]));
        // A node shorter than its 4-byte header or longer than what is left ends the path.
        let Some((node_bytes, rest)) = bytes.split_at_checked(len) else {
            break;
        };
        let Some(body) = node_bytes.get(4..) else {
            break;
        };
        bytes = rest;
        if node_type == 0x7f {
            if subtype == 0xff {
                break;
            }
            nodes.push(",".into());
            continue;
        }
        nodes.push(node(node_type, subtype, body));
    }
    nodes.join("/").replace("/,/", ",")
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}
fn guid_at(b: &[u8], i: usize) -> Option<Guid> {
    Some(Guid(b.get(i..i + 16)?.try_into().ok()?))
}

fn node(node_type: u8, subtype: u8, b: &[u8]) -> String {
    let text = match (node_type, subtype) {
        (1, 1) => b
            .first_chunk::<2>()
            .map(|&[function, device]| format!("Pci(0x{device:x},0x{function:x})")),
        (1, 4) => guid_at(b, 0).map(|g| format!("VenHw({g})")),
        (2, 1) => u32_at(b, 0).zip(u32_at(b, 4)).map(|(hid, uid)| {
            if hid == 0x0a03_41d0 || hid == 0x0a08_41d0 {
                format!("PciRoot(0x{uid:x})")
            } else {
                format!("Acpi(0x{hid:x},0x{uid:x})")
            }
        }),
        (3, 5) => b
            .first_chunk::<2>()
            .map(|&[port, interface]| format!("USB(0x{port:x},0x{interface:x})")),
        (3, 11) => b
            .get(..6)
            .zip(b.get(32))
            .map(|(mac, if_type)| format!("MAC({},0x{if_type:x})", hex::encode(mac))),
        (3, 18) => u16_at(b, 0)
            .zip(u16_at(b, 2))
            .zip(u16_at(b, 4))
            .map(|((hba, pm), lun)| format!("Sata(0x{hba:x},0x{pm:x},0x{lun:x})")),
        (3, 23) => u32_at(b, 0).zip(b.get(4..12)).map(|(ns, eui)| {
            let eui: Vec<String> = eui.iter().map(|x| format!("{x:02X}")).collect();
            format!("NVMe(0x{ns:x},{})", eui.join("-"))
        }),
        (4, 1) => hard_drive(b),
        (4, 3) => guid_at(b, 0).map(|g| format!("VenMedia({g})")),
        (4, 4) => Some(utf16(b)),
        (4, 6) => guid_at(b, 0).map(|g| format!("FvFile({g})")),
        // libefivar's spelling (Keylime renders device paths with it), not EDK2's `Fv(`.
        (4, 7) => guid_at(b, 0).map(|g| format!("FvVol({g})")),
        _ => None,
    };
    text.unwrap_or_else(|| format!("Path({node_type},{subtype},{})", hex::encode(b)))
}

fn hard_drive(b: &[u8]) -> Option<String> {
    let partition = u32_at(b, 0)?;
    let start = u64_at(b, 4)?;
    let size = u64_at(b, 12)?;
    let signature = b.get(20..36)?;
    let format = *b.get(36)?;
    let sig_type = *b.get(37)?;
    let sig = match sig_type {
        1 => format!("MBR,0x{:x}", u32_at(signature, 0)?),
        2 => format!("GPT,{}", Guid(signature.try_into().ok()?)),
        _ => format!("{sig_type},0"),
    };
    let _ = format;
    Some(format!("HD({partition},{sig},0x{start:x},0x{size:x})"))
}
