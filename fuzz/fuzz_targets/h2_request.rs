//! The HTTP/2 request mapping (`http2::head::request_head`): an h2 request head, built the way
//! the `h2` crate builds one from a HEADERS frame, becomes HTTP/1.1 bytes the data path parses
//! again. Whatever it writes must mean the same thing to ringway's HTTP/1 parser: one complete
//! head and nothing after it, the same method, target and authority, the body framing the
//! stream relays (never Content-Length and Transfer-Encoding together), no upgrade, and no
//! CR, LF or NUL inside a field. A head the parser refuses is fine (the client gets its 4xx).
//! An extended CONNECT (`:protocol websocket`, RFC 8441) becomes a WebSocket handshake
//! (`websocket_head`): a GET that upgrades, with exactly one key, and no body.
//!
//! Input: a flags byte (bit 0: END_STREAM came with the headers; bit 1: `:protocol
//! websocket`), then lines: method, scheme, authority, path (an empty scheme or authority is
//! absent), then `name:value` fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http1::parse::{parse_request, Framing, HeadLimits, Parse, Version};
use ringway::http2::head::{request_head, websocket_head, BodyFraming};

use http::header::{HeaderName, HeaderValue};
use http::uri::{self, Authority, PathAndQuery};
use http::{Method, Request};

/// The handshake key `stream.rs` would generate (random there; fixed here).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Generous enough that only a malformed head, not its size, is refused.
const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 1 << 20,
    max_uri_bytes: 1 << 20,
    max_headers: 256,
};

/// What `h2::server` makes of the pseudo-header fields and fields (its
/// `convert_poll_message` and HPACK field checks); `None` where it resets the stream.
fn h2_request(lines: &[&[u8]], protocol: bool) -> Option<http::request::Parts> {
    let [method, scheme, authority, path, fields @ ..] = lines else {
        return None;
    };
    let method = Method::from_bytes(method).ok()?;
    if protocol && method != Method::CONNECT {
        return None;
    }
    // A plain CONNECT has neither :scheme nor :path; an extended one has both.
    let connect = method == Method::CONNECT && !protocol;
    let mut parts = uri::Parts::default();
    if !authority.is_empty() {
        parts.authority = Some(Authority::from_maybe_shared(authority.to_vec()).ok()?);
    }
    if !scheme.is_empty() {
        if connect {
            return None;
        }
        let scheme: uri::Scheme = std::str::from_utf8(scheme).ok()?.parse().ok()?;
        if parts.authority.is_some() {
            parts.scheme = Some(scheme);
        }
    } else if !connect {
        return None;
    }
    if !path.is_empty() {
        if connect {
            return None;
        }
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(path.to_vec()).ok()?);
    } else if !connect {
        return None;
    }
    let mut req = Request::builder()
        .method(method)
        .uri(parts)
        .body(())
        .ok()?;
    for line in fields {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_lowercase(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(&line[colon + 1..]).ok()?;
        req.headers_mut().append(name, value);
    }
    Some(req.into_parts().0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let end_stream = flags & 1 == 1;
    let websocket = flags & 2 == 2;
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let Some(parts) = h2_request(&lines, websocket) else {
        return;
    };
    let mut out = Vec::new();
    let framing = if websocket {
        websocket_head(&parts, KEY, &mut out).map(|()| BodyFraming::Tunnel)
    } else {
        request_head(&parts, end_stream, &mut out)
    };
    let Ok(framing) = framing else {
        return;
    };
    let mut idx = Vec::new();
    let head = match parse_request(&out, &LIMITS, &mut idx) {
        Parse::Complete(h) => h,
        // Refused by the data path's parser: answered 4xx, nothing forwarded.
        Parse::Invalid(_) => return,
        Parse::Partial => panic!("an unfinished head: {:?}", String::from_utf8_lossy(&out)),
    };
    // One head, nothing after it: no field smuggled a second request or a body.
    assert_eq!(head.head_len, out.len());
    assert_eq!(head.version, Version::Http11);
    let method = if websocket { "GET" } else { parts.method.as_str() };
    assert_eq!(head.method.get(&out), method.as_bytes());
    let pq = parts.uri.path_and_query().expect("a mapped request has a path");
    assert_eq!(head.target.get(&out), pq.as_str().as_bytes());
    if let Some(a) = parts.uri.authority() {
        assert_eq!(head.host.map(|h| h.get(&out)), Some(a.as_str().as_bytes()));
    }
    // One exchange per stream; an upgrade only for a WebSocket.
    assert!(head.conn.close);
    assert_eq!(head.conn.upgrade, websocket);
    let want = match framing {
        BodyFraming::None => Framing::None,
        BodyFraming::Length => {
            let cl = parts.headers["content-length"].to_str().unwrap();
            Framing::Length(cl.parse().unwrap())
        }
        BodyFraming::Chunked => Framing::Chunked,
        // The tunnel's bytes follow the upgrade, not the head.
        BodyFraming::Tunnel => Framing::None,
    };
    assert_eq!(head.framing, want);
    let count = |name: &str| {
        idx.iter()
            .filter(|f| f.name.get(&out).eq_ignore_ascii_case(name.as_bytes()))
            .count()
    };
    let (cl, te) = (count("content-length"), count("transfer-encoding"));
    assert!(cl <= 1 && te <= 1 && cl + te <= 1, "CL {cl} TE {te}");
    if websocket {
        assert_eq!(cl + te, 0);
        assert_eq!((count("upgrade"), count("sec-websocket-key")), (1, 1));
    } else {
        assert_eq!(count("upgrade"), 0);
    }
    for f in &idx {
        for s in [f.name, f.value] {
            assert!(!s.get(&out).iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
        }
    }
});
