//! DSSE envelopes of signed runtime policies and the keys sent with them: parse both, then
//! verify whatever came out; Python-style re-serialisation of the same bytes as JSON text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::dsse::{Envelope, VerifyingKey, is_envelope, python_dumps};

fuzz_target!(|data: &[u8]| {
    let _ = is_envelope(data);
    let key = VerifyingKey::from_pem(data).ok();
    if let Ok(envelope) = Envelope::parse(data)
        && let Some(key) = &key
    {
        let _ = envelope.verify(key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = python_dumps(text);
    }
});
