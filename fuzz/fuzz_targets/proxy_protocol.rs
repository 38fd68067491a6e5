//! The PROXY protocol (v1 and v2) header parser: never panics, a complete header lies within
//! the input, and a prefix of a complete header is never complete or invalid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::net::proxy_protocol::{parse, Parse};

fuzz_target!(|data: &[u8]| {
    if let Parse::Complete(h) = parse(data) {
        assert!(h.len > 0 && h.len <= data.len());
        assert_eq!(parse(&data[..h.len]), Parse::Complete(h));
        if h.len > 1 {
            let cut = data.len() % h.len;
            assert_eq!(
                parse(&data[..cut]),
                Parse::Partial,
                "prefix of {} bytes",
                cut
            );
        }
    }
});
