//! The cpio "new ASCII" format (`newc`, magic `070701`, and its CRC variant `070702`) that
//! initramfs images are made of, read from untrusted bytes: every offset is checked, nothing
//! panics, and the work is bounded by the input's length.
//!
//! A stream may hold several archives one after the other, each ending with a `TRAILER!!!`
//! entry and zero padding, as the kernel unpacks them. Within an archive, names and data
//! start on 4-byte boundaries counted from the archive's first header.

use thiserror::Error;

/// A newc header: the 6-byte magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// The name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";
const MAGIC_LEN: usize = 6;
const FIELD_LEN: usize = 8;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

// Field positions, in header order after the magic.
const INO: usize = 0;
const MODE: usize = 1;
const NLINK: usize = 4;
const FILESIZE: usize = 6;
const DEVMAJOR: usize = 7;
const DEVMINOR: usize = 8;
const NAMESIZE: usize = 11;

/// Why bytes are not a well-formed newc stream; offsets count from the start of the bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CpioError {
    #[error("no cpio archive: the data is empty or all zeros")]
    Empty,
    #[error("no newc cpio header at offset {offset} (bytes {magic})")]
    NotCpio { offset: usize, magic: String },
    #[error("the cpio header at offset {offset} has a {field} field that is not 8 hex digits")]
    BadField { offset: usize, field: &'static str },
    #[error("the cpio header at offset {offset} has an empty name")]
    EmptyName { offset: usize },
    #[error("the cpio entry at offset {offset} is cut short: the data ends inside its {part}")]
    Truncated { offset: usize, part: &'static str },
    #[error("the cpio archive starting at offset {start} ends without a TRAILER!!! entry")]
    NoTrailer { start: usize },
}

/// One entry of an archive, borrowing its name and data from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    /// Which archive of the stream it is in, counting from 0.
    pub archive: usize,
    /// The name as stored, without its terminating NUL (e.g. `./usr/bin/init`).
    pub name: &'a [u8],
    pub mode: u32,
    pub ino: u32,
    pub nlink: u32,
    pub devmajor: u32,
    pub devminor: u32,
    /// The file's contents (a symlink's target for a link; empty for a directory).
    pub data: &'a [u8],
}

impl Member<'_> {
    /// A regular file (`S_IFREG`): the only members whose data is a file's contents.
    pub fn is_regular_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

/// Whether `data` starts with a newc or newc-with-CRC magic.
pub fn is_newc(data: &[u8]) -> bool {
    data.starts_with(b"070701") || data.starts_with(b"070702")
}

/// The first offset at or after `pos` whose byte is not zero, or `data.len()`.
pub fn skip_zeros(data: &[u8], pos: usize) -> usize {
    data.get(pos..)
        .and_then(|rest| rest.iter().position(|b| *b != 0))
        .map_or(data.len(), |i| pos.saturating_add(i))
}

/// Every member of every archive in `data` (the TRAILER!!! entries left out). Zeros between
/// archives are skipped; anything else after an archive must be another archive.
pub fn parse(data: &[u8]) -> Result<Vec<Member<'_>>, CpioError> {
    let mut members = Vec::new();
    let mut pos = skip_zeros(data, 0);
    if pos >= data.len() {
        return Err(CpioError::Empty);
    }
    let mut archive = 0;
    while pos < data.len() {
        let (found, end) = read_archive(data, pos, archive)?;
        members.extend(found);
        archive = archive.saturating_add(1);
        pos = skip_zeros(data, end);
    }
    Ok(members)
}

/// The offset just past the TRAILER!!! entry of the archive that starts at `start` (its
/// alignment padding included, but never past the end of `data`).
pub fn archive_end(data: &[u8], start: usize) -> Result<usize, CpioError> {
    read_archive(data, start, 0).map(|(_, end)| end)
}

/// Reads the archive at `start` up to its trailer: its members and the offset after it.
fn read_archive(data: &[u8], start: usize, archive: usize) -> Result<(Vec<Member<'_>>, usize), CpioError> {
    let mut members = Vec::new();
    let mut pos = start;
    loop {
        if pos >= data.len() {
            return Err(CpioError::NoTrailer { start });
        }
        let (member, next) = read_member(data, pos, start, archive)?;
        if member.name == TRAILER {
            return Ok((members, next.min(data.len())));
        }
        members.push(member);
        pos = next;
    }
}

/// `pos` rounded up to a multiple of 4 counted from `start` (`pos >= start`).
fn align(pos: usize, start: usize) -> Option<usize> {
    let relative = pos.checked_sub(start)?.checked_add(3)? & !3;
    start.checked_add(relative)
}

fn field(header: &[u8], offset: usize, index: usize, name: &'static str) -> Result<u32, CpioError> {
    let bad = || CpioError::BadField { offset, field: name };
    let from = MAGIC_LEN + FIELD_LEN * index;
    let digits = header.get(from..from + FIELD_LEN).ok_or_else(bad)?;
    let mut value: u32 = 0;
    for byte in digits {
        let digit = char::from(*byte).to_digit(16).ok_or_else(bad)?;
        value = (value << 4) | digit;
    }
    Ok(value)
}

/// The member whose header is at `pos`, and the offset of the next header.
fn read_member(
    data: &[u8],
    pos: usize,
    start: usize,
    archive: usize,
) -> Result<(Member<'_>, usize), CpioError> {
    let truncated = |part| CpioError::Truncated { offset: pos, part };
    let rest = data.get(pos..).unwrap_or_default();
    if !is_newc(rest) {
        let magic = rest.get(..MAGIC_LEN).unwrap_or(rest);
        return Err(CpioError::NotCpio {
            offset: pos,
            magic: hex::encode(magic),
        });
    }
    let header_end = pos.checked_add(HEADER_LEN).ok_or_else(|| truncated("header"))?;
    let Some(header) = data.get(pos..header_end) else {
        return Err(truncated("header"));
    };
    let namesize = field(header, pos, NAMESIZE, "namesize")? as usize;
    let filesize = field(header, pos, FILESIZE, "filesize")? as usize;
    if namesize == 0 {
        return Err(CpioError::EmptyName { offset: pos });
    }
    let name_end = header_end
        .checked_add(namesize)
        .ok_or_else(|| truncated("name"))?;
    let stored_name = data.get(header_end..name_end).ok_or_else(|| truncated("name"))?;
    // The name ends at its NUL; the writer counts that NUL in namesize.
    let name_len = stored_name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(stored_name.len());
    let name = stored_name.get(..name_len).unwrap_or_default();
    let data_start = align(name_end, start).ok_or_else(|| truncated("name padding"))?;
    let data_end = data_start
        .checked_add(filesize)
        .ok_or_else(|| truncated("data"))?;
    let contents = if filesize == 0 {
        // An empty member needs no padding to be present: a stream may end right after a
        // trailer whose name is not padded.
        &[][..]
    } else {
        data.get(data_start..data_end).ok_or_else(|| truncated("data"))?
    };
    let next = align(data_end, start).ok_or_else(|| truncated("data padding"))?;
    let member = Member {
        archive,
        name,
        mode: field(header, pos, MODE, "mode")?,
        ino: field(header, pos, INO, "ino")?,
        nlink: field(header, pos, NLINK, "nlink")?,
        devmajor: field(header, pos, DEVMAJOR, "devmajor")?,
        devminor: field(header, pos, DEVMINOR, "devminor")?,
        data: contents,
    };
    Ok((member, next))
}

/// Writes a newc archive of `entries` (name, mode, data), padded as GNU cpio pads it, for
/// tests (`ino` counts from 1, `nlink` 1).
#[cfg(test)]
pub(crate) fn write_newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, ino: usize, name: &str, mode: u32, data: &[u8]) {
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check
        let fields = [
            ino as u32,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = String::from("070701");
        for value in fields {
            header.push_str(&format!("{value:08x}"));
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        put(&mut out, i + 1, name, *mode, data);
    }
    put(&mut out, 0, "TRAILER!!!", 0, &[]);
    while out.len() % 512 != 0 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: u32 = 0o100_644;
    const DIR: u32 = 0o040_755;
    const LINK: u32 = 0o120_777;

    fn sample() -> Vec<u8> {
        write_newc(&[
            (".", DIR, b""),
            ("usr", DIR, b""),
            ("usr/bin/init", 0o100_755, b"#!/bin/sh\n"),
            ("etc/empty", FILE, b""),
            ("bin", LINK, b"usr/bin"),
        ])
    }

    #[test]
    fn members_of_one_archive_with_names_and_data() {
        let data = sample();
        let members = parse(&data).unwrap();
        let names: Vec<&[u8]> = members.iter().map(|m| m.name).collect();
        assert_eq!(names, [&b"."[..], b"usr", b"usr/bin/init", b"etc/empty", b"bin"]);
        let init = &members[2];
        assert!(init.is_regular_file());
        assert_eq!(init.data, b"#!/bin/sh\n");
        assert!(members[3].is_regular_file() && members[3].data.is_empty());
        assert!(!members[4].is_regular_file());
        assert!(!members[1].is_regular_file());
        assert_eq!(archive_end(&data, 0).unwrap() % 4, 0);
    }

    #[test]
    fn concatenated_archives_are_all_read() {
        let mut data = sample();
        data.extend(write_newc(&[("second", FILE, b"2")]));
        data.extend([0u8; 7]);
        let members = parse(&data).unwrap();
        let last = members.last().unwrap();
        assert_eq!(
            (last.name, last.archive, last.data),
            (&b"second"[..], 1, &b"2"[..])
        );
    }

    #[test]
    fn an_unpadded_trailer_at_the_very_end_is_accepted() {
        let data = sample();
        let at = data.windows(TRAILER.len()).rposition(|w| w == TRAILER).unwrap();
        let cut = &data[..at + TRAILER.len() + 1];
        assert_eq!(parse(cut).unwrap().len(), 5);
        assert_eq!(archive_end(cut, 0).unwrap(), cut.len());
    }

    #[test]
    fn junk_after_an_archive_is_refused() {
        let mut data = sample();
        data.extend(b"\x1f\x8b junk");
        assert!(matches!(parse(&data), Err(CpioError::NotCpio { .. })));
    }

    #[test]
    fn empty_and_zero_streams_are_refused() {
        assert_eq!(parse(b""), Err(CpioError::Empty));
        assert_eq!(parse(&[0u8; 600]), Err(CpioError::Empty));
    }

    #[test]
    fn a_missing_trailer_is_refused() {
        let data = sample();
        let at = data.windows(TRAILER.len()).rposition(|w| w == TRAILER).unwrap();
        let without = &data[..at - HEADER_LEN];
        assert_eq!(parse(without), Err(CpioError::NoTrailer { start: 0 }));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let data = sample();
        let end = archive_end(&data, 0).unwrap();
        for cut in 0..data.len() {
            // A cut inside the trailer's name may still read as a trailer: only no panic.
            let _ = parse(&data[..cut]);
            let _ = archive_end(&data[..cut], 0);
        }
        // Cuts before the trailer's header are errors.
        for cut in 1..(end - 200) {
            assert!(parse(&data[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_headers_are_errors() {
        // Sizes near usize/u32 limits, non-hex digits, a `+` sign Rust's parser would take.
        let huge = format!("070701{}", "ffffffff".repeat(13));
        assert!(matches!(parse(huge.as_bytes()), Err(CpioError::Truncated { .. })));
        let mut sign = sample();
        sign[6..14].copy_from_slice(b"+0000001");
        assert!(matches!(
            parse(&sign),
            Err(CpioError::BadField { field: "ino", .. })
        ));
        let mut empty_name = sample();
        empty_name[94..102].copy_from_slice(b"00000000");
        assert_eq!(parse(&empty_name), Err(CpioError::EmptyName { offset: 0 }));
        let mut big_file = sample();
        big_file[54..62].copy_from_slice(b"7fffffff");
        assert!(matches!(parse(&big_file), Err(CpioError::Truncated { .. })));
        assert!(matches!(
            parse(b"070707 odc is not newc"),
            Err(CpioError::NotCpio { offset: 0, .. })
        ));
        let odc = [b"070707".as_slice(), &[b'0'; 200]].concat();
        assert!(matches!(parse(&odc), Err(CpioError::NotCpio { offset: 0, .. })));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator: headers with random fields and random tails.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = sample();
        for _ in 0..2000 {
            let mut data = base.clone();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % data.len();
                data[at] = b"0123456789abcdefg\0"[(next() % 18) as usize];
            }
            let cut = (next() as usize) % (data.len() + 1);
            let _ = parse(&data[..cut]);
            let _ = archive_end(&data[..cut], 0);
        }
    }
}
