//! The response head parser: never panics, and a complete head's spans lie inside the head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http1::parse::{parse_response, Framing, HeadLimits, Parse};

fuzz_target!(|data: &[u8]| {
    let (head_request, buf) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => return,
    };
    let limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_uri_bytes: 64 * 1024,
        max_headers: 256,
    };
    let mut headers = Vec::new();
    if let Parse::Complete(h) = parse_response(buf, head_request, &limits, &mut headers) {
        assert!(h.head_len <= buf.len());
        assert!((100..=599).contains(&h.status));
        assert!(h.reason.start <= h.reason.end && (h.reason.end as usize) <= h.head_len);
        for f in &headers {
            assert!((f.line.end as usize) <= h.head_len && f.name.start == f.line.start);
        }
        if head_request {
            assert_eq!(h.framing, Framing::None);
        }
    }
});
