//! The configuration loader: any text gets a `Config` or an error naming a line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = ringway::config::Config::parse(text, "fuzz.yaml") {
        assert_eq!(e.file, "fuzz.yaml");
    }
});
