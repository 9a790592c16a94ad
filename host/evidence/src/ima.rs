//! The IMA measurement list in its ASCII form: line parsing, template data and template
//! hashes, and the replay of PCR 10 from a saved position (keylime-policies.md §1).
//!
//! Parsing borrows from the text and the replay reuses one buffer, so a 100,000-entry list
//! costs no allocation per line.

use thiserror::Error;

use super::public::HashAlg;

/// Largest list accepted in one evidence message (CVE-2022-23951: cap before decoding).
pub const MAX_LIST_BYTES: usize = 512 * 1024 * 1024;
/// Longest line accepted (ima-buf entries carry certificates as hex).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// The PCR IMA extends.
pub const IMA_PCR: u32 = 10;
/// Name field size of the legacy `ima` template (TCG_EVENT_NAME_LEN_MAX + 1).
const IMA_NAME_LEN: usize = 256;

/// IMA templates Keylime understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    Ima,
    ImaNg,
    ImaSig,
    ImaBuf,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ima => "ima",
            Self::ImaNg => "ima-ng",
            Self::ImaSig => "ima-sig",
            Self::ImaBuf => "ima-buf",
        }
    }
}

/// Why a line could not be parsed (Keylime event `ima.parser.entry`); the line is then not
/// folded into the running PCR value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("IMA line {line}: {reason}")]
pub struct ImaLineError {
    /// 0-based index among the non-empty lines of the text.
    pub line: usize,
    pub reason: String,
}

/// One parsed line; text fields borrow from the list, digests are decoded in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry<'a> {
    pub pcr: u32,
    template_hash: [u8; 64],
    template_hash_len: u8,
    pub template: Template,
    /// The file digest's algorithm name (`sha256`, …; for `ima`, `sha1` or `md5` by length).
    pub digest_alg: &'a str,
    digest: [u8; 64],
    digest_len: u8,
    /// The path (or buffer name for ima-buf); spaces were rewritten to `_` by the kernel.
    pub name: &'a str,
    /// ima-sig: the `security.ima` xattr, hex (empty when the file had none).
    pub signature: &'a str,
    /// ima-buf: the buffer, hex.
    pub buffer: &'a str,
}

/// Splits the list into non-empty lines as Keylime does: on `\n` only, keeping trailing
/// spaces (an empty ima-sig signature ends the line with one).
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').filter(|l| !l.is_empty())
}

impl<'a> ImaEntry<'a> {
    /// Parses one line; `line` is its index, for the error.
    pub fn parse(text: &'a str, line: usize) -> Result<Self, ImaLineError> {
        let err = |reason: &str| ImaLineError {
            line,
            reason: reason.to_owned(),
        };
        if text.len() > MAX_LINE_BYTES {
            return Err(err("line too long"));
        }
        let mut head = text.splitn(4, ' ');
        let (Some(pcr), Some(template_hash), Some(template), Some(rest)) =
            (head.next(), head.next(), head.next(), head.next())
        else {
            return Err(err("fewer than four fields"));
        };
        let pcr = pcr
            .parse::<u32>()
            .map_err(|_| err("PCR column is not a number"))?;
        let mut template_hash_bytes = [0u8; 64];
        let template_hash_len = decode_hex(template_hash, &mut template_hash_bytes)
            .filter(|n| *n > 0)
            .ok_or_else(|| err("template hash is not hex of at most 64 bytes"))?;
        let (template, parts) = match template {
            "ima" => (Template::Ima, 2),
            "ima-ng" => (Template::ImaNg, 2),
            "ima-sig" => (Template::ImaSig, 3),
            "ima-buf" => (Template::ImaBuf, 3),
            other => return Err(err(&format!("unsupported template '{}'", other.escape_debug()))),
        };
        let mut fields = rest.splitn(parts, ' ');
        let digest_field = fields.next().unwrap_or_default();
        let name = fields.next().ok_or_else(|| err("missing name field"))?;
        let third = if parts == 3 {
            fields.next().ok_or_else(|| err("missing third field"))?
        } else {
            ""
        };
        let (digest_alg, digest) = if template == Template::Ima {
            let alg = match digest_field.len() {
                40 => "sha1",
                32 => "md5",
                _ => return Err(err("ima template digest is neither SHA-1 nor MD5")),
            };
            (alg, digest_field)
        } else {
            match digest_field.split_once(':') {
                Some((alg, hex)) if !alg.is_empty() && !hex.contains(':') => (alg, hex),
                _ => return Err(err("digest is not 'algorithm:hex'")),
            }
        };
        let mut digest_bytes = [0u8; 64];
        let digest_len = decode_hex(digest, &mut digest_bytes)
            .ok_or_else(|| err("file digest is not hex of at most 64 bytes"))?;
        if !is_hex(third) {
            return Err(err(if template == Template::ImaSig {
                "signature is not hex"
            } else {
                "buffer is not hex"
            }));
        }
        let (signature, buffer) = match template {
            Template::ImaSig => (third, ""),
            Template::ImaBuf => ("", third),
            _ => ("", ""),
        };
        Ok(Self {
            pcr,
            template_hash: template_hash_bytes,
            template_hash_len: template_hash_len as u8,
            template,
            digest_alg,
            digest: digest_bytes,
            digest_len: digest_len as u8,
            name,
            signature,
            buffer,
        })
    }

    /// True for a violation entry (ToMToU, open-writers): the kernel logs an all-zero
    /// template hash and extends all-ones.
    pub fn is_violation(&self) -> bool {
        self.template_hash().iter().all(|b| *b == 0)
    }

    /// The template-hash column.
    pub fn template_hash(&self) -> &[u8] {
        // Parse stores at most 64 decoded bytes, so the length always fits.
        self.template_hash
            .get(..usize::from(self.template_hash_len))
            .unwrap_or_default()
    }

    /// The file digest.
    pub fn digest(&self) -> &[u8] {
        // Parse stores at most 64 decoded bytes, so the length always fits.
        self.digest
            .get(..usize::from(self.digest_len))
            .unwrap_or_default()
    }

    /// Writes the template data, the bytes the template hash covers (§1.3), into `out`.
    pub fn write_template_data(&self, out: &mut Vec<u8>) {
        out.clear();
        let digest = self.digest();
        if self.template == Template::Ima {
            out.extend_from_slice(digest);
            let name = self.name.as_bytes();
            let n = name.len().min(IMA_NAME_LEN - 1);
            out.extend_from_slice(name.get(..n).unwrap_or_default());
            out.resize(out.len() + IMA_NAME_LEN - n, 0);
            return;
        }
        let d_ng_len = self.digest_alg.len() + 2 + digest.len();
        out.extend_from_slice(&(d_ng_len as u32).to_le_bytes());
        out.extend_from_slice(self.digest_alg.as_bytes());
        out.extend_from_slice(b":\0");
        out.extend_from_slice(digest);
        out.extend_from_slice(&((self.name.len() + 1) as u32).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(0);
        match self.template {
            Template::ImaSig => {
                // Keylime drops a signature whose v2 header is malformed and hashes an empty
                // field instead; the entry then fails its template hash.
                if let Some(len) = hex_len_prefixed(self.signature, out) {
                    let sig_start = out.len().saturating_sub(len);
                    let valid = out
                        .get(sig_start..)
                        .is_some_and(|sig| ImaSignature::parse(sig).is_ok());
                    if !valid {
                        out.truncate(sig_start.saturating_sub(4));
                        out.extend_from_slice(&0u32.to_le_bytes());
                    }
                }
            }
            Template::ImaBuf => {
                hex_len_prefixed(self.buffer, out);
            }
            Template::Ima | Template::ImaNg => {}
        }
    }

    /// The ima-sig signature as bytes (empty when none).
    pub fn signature_bytes(&self) -> Vec<u8> {
        hex::decode(self.signature).unwrap_or_default()
    }

    /// The ima-buf buffer as bytes.
    pub fn buffer_bytes(&self) -> Vec<u8> {
        hex::decode(self.buffer).unwrap_or_default()
    }
}

/// Appends `u32 len ‖ bytes` for a hex field; returns the decoded length (None when empty).
fn hex_len_prefixed(hex_text: &str, out: &mut Vec<u8>) -> Option<usize> {
    let len = hex_text.len() / 2;
    out.extend_from_slice(&(len as u32).to_le_bytes());
    if len == 0 {
        return None;
    }
    let start = out.len();
    out.resize(start + len, 0);
    // Parse validated the text, so this cannot fail.
    if let Some(dst) = out.get_mut(start..) {
        let _ = decode_hex_into(hex_text.as_bytes(), dst);
    }
    Some(len)
}

/// Hex digit values; 0xff for anything else.
// Every index is below b'a' + 6 in a 256-entry table, and an out-of-bounds index in a
// const initialiser fails the build rather than panicking at run time.
#[allow(clippy::indexing_slicing)]
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes hex into the front of `out`; the decoded length, or None if it is not hex or
/// does not fit.
fn decode_hex(text: &str, out: &mut [u8; 64]) -> Option<usize> {
    let n = text.len() / 2;
    let dst = out.get_mut(..n)?;
    decode_hex_into(text.as_bytes(), dst).then_some(n)
}

/// Decodes `src` (exactly 2 × `dst.len()` hex digits) into `dst`.
fn decode_hex_into(src: &[u8], dst: &mut [u8]) -> bool {
    if src.len() != dst.len() * 2 {
        return false;
    }
    let mut bad = 0u8;
    for (&[a, b], out) in src.as_chunks::<2>().0.iter().zip(dst.iter_mut()) {
        let (hi, lo) = (hex_value(a), hex_value(b));
        bad |= hi | lo;
        *out = (hi << 4) | (lo & 0x0f);
    }
    bad & 0xf0 == 0
}

/// The value of a hex digit; 0xff for anything else.
fn hex_value(b: u8) -> u8 {
    // A u8 indexes a 256-entry table, so the fallback is never taken.
    HEX.get(usize::from(b)).copied().unwrap_or(0xff)
}

fn is_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|b| hex_value(b) != 0xff)
}

/// The v2 header of an ima-sig signature (`struct signature_v2_hdr`, big-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaSignature {
    /// 3 (EVM_IMA_XATTR_DIGSIG) or 5 (EVM_XATTR_PORTABLE_DIGSIG).
    pub xattr_type: u8,
    /// Linux `hash_info` id: 1 md5, 2 sha1, 4 sha256, 5 sha384, 6 sha512, 7 sha224.
    pub hash_algo: u8,
    /// Last four bytes of the SHA-1 of the key's subjectPublicKey.
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl ImaSignature {
    /// Parses and checks the header: type 3 or 5, version 2, exact length.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let Some((&[xattr_type, version, hash_algo, k0, k1, k2, k3, s0, s1], signature)) =
            bytes.split_first_chunk::<9>()
        else {
            return Err("signature header shorter than 9 bytes".into());
        };
        let size = usize::from(u16::from_be_bytes([s0, s1]));
        if size != signature.len() {
            return Err(format!(
                "signature size {size} does not match the {} bytes present",
                signature.len()
            ));
        }
        if xattr_type != 3 && xattr_type != 5 {
            return Err(format!("xattr type {xattr_type} is not a digital signature"));
        }
        if version != 2 {
            return Err(format!("signature version {version} is not 2"));
        }
        Ok(Self {
            xattr_type,
            hash_algo,
            key_id: u32::from_be_bytes([k0, k1, k2, k3]),
            signature: signature.to_vec(),
        })
    }

    /// The name of the hash algorithm, as the `d-ng` field would spell it.
    pub fn hash_name(&self) -> Option<&'static str> {
        match self.hash_algo {
            1 => Some("md5"),
            2 => Some("sha1"),
            4 => Some("sha256"),
            5 => Some("sha384"),
            6 => Some("sha512"),
            7 => Some("sha224"),
            _ => None,
        }
    }
}

/// Where a replay starts: the position in the agent's list and PCR 10 there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaPosition {
    /// Number of entries of the list already covered by earlier quotes.
    pub next_entry: u64,
    /// PCR 10 in the quoted bank after those entries (zeros at the start of a boot).
    pub pcr10: Vec<u8>,
}

impl ImaPosition {
    /// The start of a boot: entry 0, PCR 10 all zeros.
    pub fn start(bank: HashAlg) -> Self {
        Self {
            next_entry: 0,
            pcr10: vec![0; bank.digest_len()],
        }
    }
}

/// What a verifier keeps between rounds for incremental IMA: the position and the boot it
/// belongs to (Keylime's `next_ima_ml_entry`, `ima_pcrs`, `boottime`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaState {
    pub position: ImaPosition,
    /// The agent's boot time (seconds) when the position was saved.
    pub boot_time: u64,
}

/// How to treat the list an agent returned, given what was saved (keylime-policies.md §1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Replay the returned entries from the saved position.
    FromSaved(ImaPosition),
    /// The agent sent its list from entry 0: replay from zeros and forget saved state.
    FromStart,
    /// The agent rebooted (same offset asked, another boot time): Keylime resets the state
    /// and checks nothing this round; the next round is a full one.
    Rebooted,
    /// The agent answered from another offset than the one asked for
    /// (`qoute_validation.invalid_ima_entry_nb` in Keylime).
    OffsetMismatch { requested: u64, answered: u64 },
}

/// Decides how to replay a returned list: `requested` is the offset the verifier asked
/// for, `answered` the agent's `ima_measurement_list_entry`, `boot_time` its `boottime`.
pub fn resume(saved: Option<&ImaState>, requested: u64, answered: u64, boot_time: u64) -> Resume {
    if answered == 0 {
        return Resume::FromStart;
    }
    if answered != requested {
        return Resume::OffsetMismatch { requested, answered };
    }
    match saved {
        Some(state) if state.boot_time == boot_time && state.position.next_entry == answered => {
            Resume::FromSaved(state.position.clone())
        }
        Some(state) if state.boot_time != boot_time => Resume::Rebooted,
        // Without saved state for this offset the replay cannot continue mid-list.
        _ => Resume::OffsetMismatch {
            requested: saved.map_or(0, |s| s.position.next_entry),
            answered,
        },
    }
}

/// What the replay found out about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFacts {
    /// 0-based index among this batch's non-empty lines.
    pub line: usize,
    /// A violation entry: extended as all-ones, not validated further.
    pub violation: bool,
    /// The template-hash column equals the log hash of the template data.
    pub template_hash_ok: bool,
    /// The PCR column is 10.
    pub pcr_ok: bool,
    /// The entry is at or before the point where the replay matched the quote.
    pub covered_by_quote: bool,
}

/// The result of replaying a batch against a quoted PCR 10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaReplay {
    /// Facts per parsed entry, in order.
    pub entries: Vec<EntryFacts>,
    pub parse_errors: Vec<ImaLineError>,
    /// Entries of this batch folded in when the running value first equalled the quote
    /// (`Some(0)` when the start value already did); `None`: no prefix matched.
    pub matched_after: Option<usize>,
    /// The position to resume from next time (up to the match), when there was a match.
    pub next_position: Option<ImaPosition>,
    /// The running value after every parsed entry of the batch.
    pub final_pcr10: Vec<u8>,
}

/// Replays a batch of IMA lines into PCR 10 of `bank` from `from`, checking template hashes
/// with `log_hash` (Keylime's `ima.log_hash_alg`, usually sha1) and looking for the quoted
/// value at every prefix (IMA appends and extends without regard to quotes, so the quote
/// may lag the list).
pub fn replay(
    text: &str,
    bank: HashAlg,
    log_hash: HashAlg,
    from: &ImaPosition,
    quoted: Option<&[u8]>,
) -> ImaReplay {
    let bank_len = bank.digest_len();
    let ones = [0xffu8; 64];
    // The running value lives in a fixed buffer: no allocation per entry.
    let mut running = [0u8; 64];
    for (dst, src) in running.iter_mut().zip(&from.pcr10) {
        *dst = *src;
    }
    let mut template_data = Vec::with_capacity(512);
    let mut computed = [0u8; 64];
    let mut extend = [0u8; 64];
    let mut entries = Vec::new();
    let mut parse_errors = Vec::new();
    let matches = |value: &[u8]| quoted == Some(value);
    let mut matched_after = matches(head(&running, bank_len)).then_some(0);
    let mut match_value = matched_after.map(|_| head(&running, bank_len).to_vec());
    for (line_no, line) in lines(text).enumerate() {
        let entry = match ImaEntry::parse(line, line_no) {
            Ok(e) => e,
            Err(e) => {
                parse_errors.push(e);
                continue;
            }
        };
        let violation = entry.is_violation();
        let mut template_hash_ok = true;
        let extend_value: &[u8] = if violation {
            head(&ones, bank_len)
        } else {
            entry.write_template_data(&mut template_data);
            let mut h = log_hash.hasher();
            h.update(&template_data);
            let n = h.finish_into(&mut computed);
            template_hash_ok = entry.template_hash() == head(&computed, n);
            if bank == log_hash {
                head(&computed, n)
            } else {
                let mut h = bank.hasher();
                h.update(&template_data);
                let n = h.finish_into(&mut extend);
                head(&extend, n)
            }
        };
        let mut h = bank.hasher();
        h.update(head(&running, bank_len));
        h.update(extend_value);
        h.finish_into(&mut running);
        entries.push(EntryFacts {
            line: line_no,
            violation,
            template_hash_ok,
            pcr_ok: entry.pcr == IMA_PCR,
            covered_by_quote: matched_after.is_none(),
        });
        if matched_after.is_none() && matches(head(&running, bank_len)) {
            matched_after = Some(line_no + 1);
            match_value = Some(head(&running, bank_len).to_vec());
        }
    }
    let next_position = matched_after.zip(match_value).map(|(n, pcr10)| ImaPosition {
        next_entry: from.next_entry + n as u64,
        pcr10,
    });
    if matched_after.is_none() {
        for e in &mut entries {
            e.covered_by_quote = false;
        }
    }
    ImaReplay {
        entries,
        parse_errors,
        matched_after,
        next_position,
        final_pcr10: head(&running, bank_len).to_vec(),
    }
}

/// The first `n` bytes of a digest buffer; `n` is a digest length, at most 64.
fn head(buf: &[u8; 64], n: usize) -> &[u8] {
    buf.get(..n).unwrap_or(buf.as_slice())
}

/// One entry as a policy sees it: the parsed fields, owned, with what the replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEntry {
    /// Absolute position in the agent's list.
    pub index: u64,
    pub pcr: u32,
    pub template: Template,
    pub violation: bool,
    pub template_hash_ok: bool,
    pub digest_alg: String,
    pub digest: Vec<u8>,
    pub name: Vec<u8>,
    /// ima-sig: the raw xattr (None when the column is empty) and its parsed header.
    pub signature_raw: Option<Vec<u8>>,
    pub signature: Option<ImaSignature>,
    /// ima-buf: the buffer.
    pub buffer: Option<Vec<u8>>,
    /// Validated, but past the point where the replay met the quote.
    pub after_quote: bool,
}

/// The entries of a replayed batch as policies see them; `start_offset` is the position of
/// the batch's first line in the agent's list. Unparseable lines are left out (the replay
/// reported them).
pub fn checked_entries(text: &str, replay: &ImaReplay, start_offset: u64) -> Vec<CheckedEntry> {
    let mut facts = replay.entries.iter().peekable();
    let mut out = Vec::with_capacity(replay.entries.len());
    for (line_no, line) in lines(text).enumerate() {
        let Some(fact) = facts.next_if(|f| f.line == line_no) else {
            continue;
        };
        let Ok(entry) = ImaEntry::parse(line, line_no) else {
            continue;
        };
        let signature_raw = (entry.template == Template::ImaSig && !entry.signature.is_empty())
            .then(|| entry.signature_bytes());
        let signature = signature_raw
            .as_deref()
            .and_then(|raw| ImaSignature::parse(raw).ok());
        out.push(CheckedEntry {
            index: start_offset + line_no as u64,
            pcr: entry.pcr,
            template: entry.template,
            violation: fact.violation,
            template_hash_ok: fact.template_hash_ok,
            digest_alg: entry.digest_alg.to_owned(),
            digest: entry.digest().to_vec(),
            name: entry.name.as_bytes().to_vec(),
            signature_raw,
            signature,
            buffer: (entry.template == Template::ImaBuf).then(|| entry.buffer_bytes()),
            after_quote: !fact.covered_by_quote,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_AGGREGATE: &str = "10 0000000000000000000000000000000000000000 ima-ng sha256:0000000000000000000000000000000000000000000000000000000000000000 boot_aggregate";

    #[test]
    fn template_data_of_ima_ng_matches_the_reference_layout() {
        let line = "10 91f34b5c671d73504b274a919661cf80dab1e127 ima-ng sha1:1350320e5f7f51553bac8aa403489a1b135bc101 /usr/bin/dd";
        let entry = ImaEntry::parse(line, 0).unwrap();
        let mut data = Vec::new();
        entry.write_template_data(&mut data);
        assert_eq!(&data[..4], &(4u32 + 2 + 20).to_le_bytes());
        assert_eq!(&data[4..10], b"sha1:\0");
        assert_eq!(&data[30..34], &12u32.to_le_bytes());
        assert_eq!(&data[34..], b"/usr/bin/dd\0");
    }

    #[test]
    fn keylime_fixture_logs_have_valid_template_hashes() {
        for (file, log_hash) in [
            ("ima-log-sha256", HashAlg::Sha1),
            ("ima-log-sha384", HashAlg::Sha1),
            ("ima-log-sha512", HashAlg::Sha1),
        ] {
            let text = crate::test_fixture(&format!("keylime/test/data/create-runtime-policy/{file}"));
            let text = String::from_utf8(text).unwrap();
            let r = replay(
                &text,
                HashAlg::Sha256,
                log_hash,
                &ImaPosition::start(HashAlg::Sha256),
                None,
            );
            assert!(r.parse_errors.is_empty(), "{file}: {:?}", r.parse_errors);
            assert!(!r.entries.is_empty());
            for e in &r.entries {
                assert!(e.template_hash_ok || e.violation, "{file} line {}", e.line);
            }
        }
    }

    #[test]
    fn violations_extend_all_ones_and_match_at_any_prefix() {
        let text = format!("{BOOT_AGGREGATE}\n");
        let bank = HashAlg::Sha256;
        let r = replay(&text, bank, HashAlg::Sha1, &ImaPosition::start(bank), None);
        assert!(r.entries[0].violation);
        let expected = bank.digest(&[&[0u8; 32], &[0xff; 32]]);
        assert_eq!(r.final_pcr10, expected);
        // The start value itself matches: nothing of the batch is covered.
        let r = replay(
            &text,
            bank,
            HashAlg::Sha1,
            &ImaPosition::start(bank),
            Some(&[0u8; 32]),
        );
        assert_eq!(r.matched_after, Some(0));
        assert!(!r.entries[0].covered_by_quote);
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for bad in [
            "10",
            "x abc ima-ng sha1:00 /a",
            "10 zz ima-ng sha1:00 /a",
            "10 00 ima-modsig sha1:00 /a",
            "10 00 ima-ng sha1 /a",
            "10 00 ima-ng sha1:0 /a",
            "10 00 ima-ng a:b:00 /a",
            "10 00 ima-sig sha1:00 /a",
            "10 00 ima-buf sha1:00 /a xyz",
            "10 00 ima 0011 /a",
        ] {
            assert!(ImaEntry::parse(bad, 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn resume_rules() {
        let state = ImaState {
            position: ImaPosition {
                next_entry: 7,
                pcr10: vec![1; 32],
            },
            boot_time: 1000,
        };
        assert_eq!(
            resume(Some(&state), 7, 7, 1000),
            Resume::FromSaved(state.position.clone())
        );
        assert_eq!(resume(Some(&state), 7, 0, 1000), Resume::FromStart);
        assert_eq!(resume(Some(&state), 7, 7, 2000), Resume::Rebooted);
        assert_eq!(
            resume(Some(&state), 7, 5, 1000),
            Resume::OffsetMismatch {
                requested: 7,
                answered: 5
            }
        );
        assert_eq!(resume(None, 0, 0, 1000), Resume::FromStart);
        assert!(matches!(resume(None, 3, 3, 1000), Resume::OffsetMismatch { .. }));
    }

    #[test]
    fn signature_header() {
        let mut sig = vec![3, 2, 4, 0xf3, 0x45, 0x2d, 0x23, 0, 2, 0xaa, 0xbb];
        let parsed = ImaSignature::parse(&sig).unwrap();
        assert_eq!(parsed.key_id, 0xf345_2d23);
        assert_eq!(parsed.hash_name(), Some("sha256"));
        sig.push(0);
        assert!(ImaSignature::parse(&sig).is_err());
        assert!(ImaSignature::parse(&[3, 3, 4, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
