//! Keylime's pull-mode quote string, then verification against a fixed AK.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::evidence::Quote;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = Quote::from_keylime_string(&String::from_utf8_lossy(data)) {
        let _ = quote.pcrs.get(zest::evidence::HashAlg::Sha256, 10);
    }
});
