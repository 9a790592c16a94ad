//! What `zest policy create runtime` reads from files it is handed: cpio streams and the
//! offset of an initramfs image's main archive, flat allowlists and base policies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zest::policy::create_inputs::{BasePolicy, cpio, initrd, parse_allowlist};

fuzz_target!(|data: &[u8]| {
    let _ = cpio::parse(data);
    let _ = initrd::main_archive_offset(data);
    let _ = BasePolicy::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_allowlist(text);
    }
});
