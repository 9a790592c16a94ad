//! shim's `vendor_db` authority events, read as Keylime reads them
//! (`tpm_bootlog_enrich.enrich_vendor_db_authority_variable`). shim logs the
//! EFI_SIGNATURE_DATA that verified an image (the owner GUID, then a DER certificate) without
//! the EFI_SIGNATURE_LIST around it, so nothing states an entry's size: Keylime reads entries
//! back to back and ends each at its certificate's DER length, taking the first `30 82 HH LL`
//! within 100 bytes after the owner. Bytes it skips stay in the entry's data; reading stops
//! at the first entry it cannot read, keeping those before; when none reads, Keylime keeps
//! the raw data, which its `example` policy then calls "not a list".

use super::data::{Guid, SignatureEntry};

const OWNER_LEN: usize = 16;
/// How far past the owner Keylime looks for the certificate.
const SEARCH_LEN: usize = 100;
/// A DER SEQUENCE with a two-byte length (certificates of 256 bytes to 64 KiB).
const DER_START: [u8; 2] = [0x30, 0x82];

/// The entries of a `vendor_db` authority event's VariableData; `None` when Keylime reads
/// none.
pub(super) fn entries(data: &[u8]) -> Option<Vec<SignatureEntry>> {
    let mut entries = Vec::new();
    let mut offset = 0;
    // Keylime stops when nothing follows an owner (`offset + 16 >= len(b)`).
    while offset + OWNER_LEN < data.len() {
        let Some((entry, end)) = entry_at(data, offset) else {
            break;
        };
        entries.push(entry);
        offset = end;
    }
    (!entries.is_empty()).then_some(entries)
}

/// The entry whose owner starts at `offset`, and where it ends.
fn entry_at(data: &[u8], offset: usize) -> Option<(SignatureEntry, usize)> {
    let owner: [u8; OWNER_LEN] = data.get(offset..offset + OWNER_LEN)?.try_into().ok()?;
    let body = offset + OWNER_LEN;
    let search_end = (body + SEARCH_LEN).min(data.len().saturating_sub(2));
    let cert = (body..search_end).find(|&i| data.get(i..i + 2) == Some(DER_START.as_slice()))?;
    let len: [u8; 2] = data.get(cert + 2..cert + 4)?.try_into().ok()?;
    let end = cert + 4 + usize::from(u16::from_be_bytes(len));
    let entry = SignatureEntry {
        owner: Guid(owner),
        data: data.get(body..end)?.to_vec(),
    };
    Some((entry, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner of Keylime's own vendor_db test data (`0223eddb-9079-4388-af77-2d65b1c35d3b`).
    const OWNER: &str = "dbed230279908843af772d65b1c35d3b";

    fn der(fill: u8, len: u16) -> Vec<u8> {
        [
            vec![0x30, 0x82],
            len.to_be_bytes().to_vec(),
            vec![fill; usize::from(len)],
        ]
        .concat()
    }

    fn bytes(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn read(data: &[u8]) -> Option<Vec<(String, String)>> {
        entries(data).map(|es| {
            es.into_iter()
                .map(|e| (e.owner.to_string(), hex::encode(e.data)))
                .collect()
        })
    }

    fn owner() -> Vec<u8> {
        hex::decode(OWNER).unwrap()
    }

    // The expected values below are what Keylime 7.14.3's enrichment returns for the same bytes.

    #[test]
    fn one_entry_is_the_owner_and_the_certificate() {
        assert_eq!(
            read(&bytes(&[&owner(), &der(0x11, 8)])),
            Some(vec![(
                "0223eddb-9079-4388-af77-2d65b1c35d3b".into(),
                "308200081111111111111111".into()
            )])
        );
    }

    #[test]
    fn entries_back_to_back_split_at_their_der_length() {
        let second_owner = hex::decode("bd9afa775903324dbd6028f4e78f784b").unwrap();
        let data = bytes(&[&owner(), &der(0x11, 8), &second_owner, &der(0x22, 260)]);
        let read = read(&data).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].0, "77fa9abd-0359-4d32-bd60-28f4e78f784b");
        assert_eq!(read[1].1.len(), 2 * 264);
        assert!(read[1].1.starts_with("3082010422"));
    }

    #[test]
    fn reading_stops_at_the_first_unreadable_entry() {
        let one = Some(vec![(
            "0223eddb-9079-4388-af77-2d65b1c35d3b".into(),
            "308200081111111111111111".into(),
        )]);
        assert_eq!(read(&bytes(&[&owner(), &der(0x11, 8), &[0xee; 20]])), one);
        assert_eq!(read(&bytes(&[&owner(), &der(0x11, 8), &owner(), &[0; 32]])), one);
    }

    #[test]
    fn bytes_before_the_certificate_belong_to_the_entry() {
        let read1 = read(&bytes(&[&owner(), &[1, 2, 3], &der(0x11, 8)])).unwrap();
        assert_eq!(read1[0].1, "010203308200081111111111111111");
        let read2 = read(&bytes(&[&owner(), &[0xaa; 99], &der(0x11, 8)])).unwrap();
        assert_eq!(read2[0].1.len(), 2 * 111);
    }

    #[test]
    fn what_keylime_cannot_read_stays_raw() {
        let sha256: Vec<u8> = (0..32).collect();
        let truncated = der(0x11, 8);
        for data in [
            bytes(&[&owner(), &sha256]),
            bytes(&[&owner(), &[0xaa; 100], &der(0x11, 8)]),
            bytes(&[&owner(), &[0x30, 0x81, 0x08], &[0x11; 8]]),
            bytes(&[&owner(), &truncated[..truncated.len() - 1]]),
            owner(),
            bytes(&[&owner(), &[0x30]]),
            Vec::new(),
        ] {
            assert_eq!(read(&data), None, "{}", hex::encode(&data));
        }
    }

    #[test]
    fn a_signature_list_is_read_with_its_type_as_owner() {
        // The rest of an EFI_SIGNATURE_LIST's header comes before the real owner.
        let header = bytes(&[
            &hex::decode("a159c0a5e494a74a87b5ab155c2bf072").unwrap(),
            &0x38u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0x1cu32.to_le_bytes(),
        ]);
        let read = read(&bytes(&[&header, &owner(), &der(0x11, 8)])).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, "a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
        assert!(
            read[0].1.starts_with("38000000000000001c000000dbed2302"),
            "{}",
            read[0].1
        );
    }
}
