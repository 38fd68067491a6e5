//! The request head parser: never panics, and a complete head's spans lie inside the head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http1::parse::{parse_request, Framing, HeadLimits, Parse};

fuzz_target!(|data: &[u8]| {
    // The first byte picks small or large limits, so both the limit paths and deep heads run.
    let (small, buf) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => return,
    };
    let limits = if small {
        HeadLimits {
            max_head_bytes: 256,
            max_uri_bytes: 64,
            max_headers: 8,
        }
    } else {
        HeadLimits {
            max_head_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
        }
    };
    let mut headers = Vec::new();
    if let Parse::Complete(h) = parse_request(buf, &limits, &mut headers) {
        assert!(h.head_len <= buf.len() && h.head_len <= limits.max_head_bytes);
        let inside =
            |s: ringway::http1::parse::Span| s.start <= s.end && (s.end as usize) <= h.head_len;
        assert!(inside(h.method) && inside(h.target) && inside(h.path));
        assert!(h.query.map_or(true, inside) && h.host.map_or(true, inside));
        assert!(headers.len() <= limits.max_headers);
        for f in &headers {
            assert!(inside(f.name) && inside(f.value) && inside(f.line));
        }
        // A request never has a close-delimited body.
        assert_ne!(h.framing, Framing::CloseDelimited);
        // The same bytes parse the same way again (the headers vec is reused).
        let again = parse_request(buf, &limits, &mut headers);
        assert_eq!(again, Parse::Complete(h));
    }
});
