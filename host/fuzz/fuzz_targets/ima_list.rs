//! IMA ASCII lines: parsing, template data, template hashes and the PCR 10 replay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::evidence::HashAlg;
use zest::evidence::ima::{ImaEntry, ImaPosition, ImaSignature, replay};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = replay(&text, HashAlg::Sha256, HashAlg::Sha1, &ImaPosition::start(HashAlg::Sha256), Some(&[0u8; 32]));
    let _ = r.matched_after;
    for (i, line) in zest::evidence::ima::lines(&text).enumerate() {
        if let Ok(entry) = ImaEntry::parse(line, i) {
            let _ = ImaSignature::parse(&entry.signature_bytes());
        }
    }
});
