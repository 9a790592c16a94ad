//! Keylime configuration text: the INI reader (ConfigParser's dialect) and the Python-literal
//! lists of options such as `severity_policy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entries) = zest::config::ini::entries(text) {
        for (_, _, value, _) in entries {
            let _ = zest::config::keylime::list_as_json(&value);
            let _ = zest::config::keylime::parse_bool(&value);
        }
    }
    let _ = zest::config::keylime::list_as_json(text);
});
