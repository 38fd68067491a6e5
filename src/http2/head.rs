//! Pure conversions between an HTTP/2 stream's fields and the HTTP/1.1 messages the shared data
//! path reads and writes: request head out, response head and chunked trailers back.

use std::io::Write as _;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Method;

use crate::http1::parse::{Framing, HeaderIdx, HeaderKind, ResponseHead};

/// How the request body travels on the HTTP/1.1 side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// END_STREAM came with the headers and no content-length: no body.
    None,
    /// content-length given: DATA is copied as is (h2 checks the sum against it).
    Length,
    /// No content-length: the DATA frames become chunks, trailers the trailer section.
    Chunked,
    /// An extended CONNECT: after the upgrade, DATA is the tunnel's bytes (copied as is).
    Tunnel,
}

/// Why a request cannot be turned into HTTP/1.1: the status to answer on its stream.
pub type Refused = u16;

/// Writes the HTTP/1.1 head of an HTTP/2 request into `out`. The head goes through the same
/// parser, limits, routes and header rules as any HTTP/1 request; this only maps RFC 9113
/// §8.3 to RFC 9112 and refuses what has no faithful mapping. It does not rely on `h2`'s own
/// checks (which refuse some of the same): nothing it writes may smuggle a second meaning past
/// the HTTP/1 parser (fuzzed by `fuzz/fuzz_targets/h2_request.rs`).
pub fn request_head(
    parts: &Parts,
    end_stream: bool,
    out: &mut Vec<u8>,
) -> Result<BodyFraming, Refused> {
    if parts.method == Method::CONNECT {
        // Extended CONNECT for a WebSocket goes through `websocket_head`; other tunnels are
        // not offered.
        return Err(501);
    }
    let lengths = head_fields(parts, parts.method.as_str(), Mode::Request, out)?;
    let framing = if lengths == 1 {
        BodyFraming::Length
    } else if end_stream {
        BodyFraming::None
    } else {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        BodyFraming::Chunked
    };
    // One request per adapter connection: the data path ends it after this exchange.
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(framing)
}

/// Whether a request is an extended CONNECT opening a WebSocket (RFC 8441 §4).
pub fn is_websocket(parts: &Parts) -> bool {
    parts.method == Method::CONNECT
        && parts
            .extensions
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Writes the HTTP/1.1 WebSocket handshake (RFC 6455 §4.1) for an extended CONNECT: a GET
/// with `Upgrade: websocket` and our own `Sec-WebSocket-Key` (`key`, base64 of 16 random
/// bytes); the client's Sec-WebSocket-Version, -Protocol and -Extensions pass as they are.
/// After a 101 the stream's DATA is the connection's bytes both ways.
pub fn websocket_head(parts: &Parts, key: &str, out: &mut Vec<u8>) -> Result<(), Refused> {
    if head_fields(parts, "GET", Mode::WebSocket, out)? > 0 {
        // A tunnel has no length.
        return Err(400);
    }
    // `close`: a refused upgrade is one exchange, like any other request on the pair.
    out.extend_from_slice(b"Connection: Upgrade, close\r\nUpgrade: websocket\r\n");
    let _ = write!(out, "Sec-WebSocket-Key: {key}\r\n\r\n");
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Request,
    WebSocket,
}

/// Writes the request line, Host and the fields of a request; returns how many
/// content-length fields it had.
fn head_fields(
    parts: &Parts,
    method: &str,
    mode: Mode,
    out: &mut Vec<u8>,
) -> Result<usize, Refused> {
    let Some(path) = parts.uri.path_and_query() else {
        return Err(400);
    };
    // RFC 9113 §8.3.1: origin-form, or `*` for OPTIONS. Anything else would be read as an
    // absolute-form target, whose authority overrides :authority on the HTTP/1 side.
    let origin = path.as_str().starts_with('/');
    let asterisk = path.as_str() == "*" && parts.method == Method::OPTIONS;
    if !(origin || asterisk) {
        return Err(400);
    }
    let authority = parts.uri.authority();
    // §8.3.1: no userinfo in :authority (the HTTP/1 Host field cannot carry it either).
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return Err(400);
    }
    if authority.is_none() && parts.headers.get_all("host").iter().count() != 1 {
        // HTTP/1.1 needs exactly one Host.
        return Err(400);
    }
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = authority {
        // RFC 9113 §8.3.1: :authority wins over a Host field.
        let _ = write!(out, "Host: {a}\r\n");
    }
    let mut lengths = 0;
    let mut cookies = 0;
    for (name, value) in &parts.headers {
        if unsafe_bytes(value.as_bytes()) {
            return Err(400);
        }
        match name.as_str() {
            "host" if authority.is_some() => continue,
            // §8.2.2: connection-specific fields make a request malformed; on the HTTP/1 side
            // they would frame the body or upgrade the connection.
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" => {
                return Err(400)
            }
            // "trailers", the only TE HTTP/2 allows, is hop-by-hop in HTTP/1.1: dropped.
            "te" if value.as_bytes().eq_ignore_ascii_case(b"trailers") => continue,
            "te" => return Err(400),
            // The handshake's key is ours (the client's would answer a different nonce).
            "sec-websocket-key" | "sec-websocket-accept" if mode == Mode::WebSocket => continue,
            "cookie" => {
                // RFC 9113 §8.2.3: split cookie fields are joined back with "; ".
                cookies += 1;
                continue;
            }
            "content-length" => {
                lengths += 1;
                if !decimal(value.as_bytes()) {
                    return Err(400);
                }
            }
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if lengths > 1 {
        return Err(400);
    }
    if cookies > 0 {
        out.extend_from_slice(b"cookie: ");
        for (i, v) in parts.headers.get_all("cookie").iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    Ok(lengths)
}

/// A content-length HTTP/2 accepts: one decimal number that fits in a u64 (no list, no
/// whitespace, which HTTP/1.1 would tolerate).
fn decimal(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit)
}

/// CR, LF and NUL end or corrupt an HTTP/1.1 line; `http` already refuses them in field
/// values, this keeps the rule where the mapping happens.
fn unsafe_bytes(v: &[u8]) -> bool {
    v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// Fields HTTP/2 forbids in a response (RFC 9113 §8.2.2), besides those the parser marks
/// hop-by-hop.
fn connection_specific(kind: HeaderKind) -> bool {
    matches!(
        kind,
        HeaderKind::Connection
            | HeaderKind::KeepAlive
            | HeaderKind::ProxyConnection
            | HeaderKind::TransferEncoding
            | HeaderKind::Upgrade
            | HeaderKind::Te
    )
}

/// The HTTP/2 response for an HTTP/1.1 response head in `buf`. `None`: a field that cannot
/// be carried (the data path never produces one; a bug would be answered 502).
pub(crate) fn response(
    buf: &[u8],
    head: &ResponseHead,
    headers: &[HeaderIdx],
) -> Option<http::Response<()>> {
    let mut resp = http::Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(head.status).ok()?;
    let map = resp.headers_mut();
    map.reserve(headers.len());
    for h in headers {
        // Trailer announces trailers and is still meaningful in HTTP/2.
        if connection_specific(h.kind) || (h.hop_by_hop && h.kind != HeaderKind::Trailer) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.get(buf)).ok()?;
        let value = HeaderValue::from_bytes(h.value.get(buf)).ok()?;
        map.append(name, value);
    }
    Some(resp)
}

/// What an upstream's answer to a WebSocket handshake means for the extended CONNECT.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// 101 with the right accept: answer 200 (these fields) and open the tunnel.
    Switched(http::Response<()>),
    /// It claimed success without switching (a 2xx), or switched wrongly (no `Upgrade:
    /// websocket`, a wrong Sec-WebSocket-Accept): answered 502, as any broken upstream.
    Broken,
    /// It refused (3xx, 4xx, 5xx): that response goes to the client as it is.
    Refused,
}

/// Reads the upstream's (or the data path's) answer to `websocket_head`; `accept` is the
/// Sec-WebSocket-Accept our key calls for.
pub(crate) fn handshake(
    buf: &[u8],
    head: &ResponseHead,
    headers: &[HeaderIdx],
    accept: &str,
) -> Handshake {
    if head.status != 101 {
        return if (200..300).contains(&head.status) {
            Handshake::Broken
        } else {
            Handshake::Refused
        };
    }
    let field = |kind: Option<HeaderKind>, name: &[u8]| {
        headers
            .iter()
            .filter(|h| kind.map_or(h.name.get(buf).eq_ignore_ascii_case(name), |k| h.kind == k))
            .map(|h| h.value.get(buf).trim_ascii())
            .collect::<Vec<_>>()
    };
    let upgrade = field(Some(HeaderKind::Upgrade), b"");
    let accepts = field(None, b"sec-websocket-accept");
    if upgrade.len() != 1
        || !upgrade[0].eq_ignore_ascii_case(b"websocket")
        || accepts != [accept.as_bytes()]
    {
        return Handshake::Broken;
    }
    let mut resp = http::Response::new(());
    let map = resp.headers_mut();
    for h in headers {
        let name = h.name.get(buf);
        if connection_specific(h.kind)
            || h.hop_by_hop
            || name.eq_ignore_ascii_case(b"sec-websocket-accept")
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(h.value.get(buf)),
        ) else {
            return Handshake::Broken;
        };
        map.append(name, value);
    }
    Handshake::Switched(resp)
}

/// Whether the upstream's final `status` to an HTTP/2 client's extended CONNECT (`http2` and an
/// upgrade request: an h2 stream carries no other) claimed success without switching. The
/// stream answers 502 for it (`head::handshake`), so the data path answers that 502 itself:
/// the access log and metrics then show what the client got, not the upstream's 2xx.
pub(crate) fn unswitched(
    http2: bool,
    head: &crate::http1::parse::RequestHead,
    status: u16,
) -> bool {
    http2 && head.conn.upgrade && (200..300).contains(&status)
}

/// A response head the data path wrote, read back for an HTTP/2 client.
#[derive(Debug)]
pub(crate) struct OwnHead {
    pub(crate) response: http::Response<()>,
    pub(crate) framing: Framing,
    /// Bytes of `buf` the head took.
    pub(crate) len: usize,
}

/// Most bytes a response head the data path writes may take (as `RESPONSE_LIMITS`).
const OWN_HEAD_MAX: usize = 64 * 1024;

/// Reads a response head the data path itself wrote into `buf` (`Ok(None)` while it is
/// incomplete). That head went through `write_response_head` or a local answer's writer, from
/// fields the upstream parser already checked, so this only splits lines, finds the framing and
/// drops fields HTTP/2 forbids (RFC 9113 §8.2.2); `http` checks every name and value again, and
/// anything it refuses (a bug) is `Err`, answered 502. Cheaper than parsing it a second time.
pub(crate) fn own_response(buf: &[u8], head_request: bool) -> Result<Option<OwnHead>, ()> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > OWN_HEAD_MAX {
            Err(())
        } else {
            Ok(None)
        };
    };
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(())?;
    if !status_line.starts_with(b"HTTP/1.") || status_line.len() < 12 {
        return Err(());
    }
    let status = http::StatusCode::from_bytes(&status_line[9..12]).map_err(|_| ())?;
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let (mut length, mut chunked, mut options) = (None, false, None);
    let map = response.headers_mut();
    for line in lines {
        let colon = line.iter().position(|&b| b == b':').ok_or(())?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| ())?;
        let value = line[colon + 1..].trim_ascii();
        match name.as_str() {
            "content-length" => {
                let n = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                length = Some(n.ok_or(())?);
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case(b"chunked"),
            "connection" => options = Some(value),
            _ => {}
        }
        if hop_by_hop(&name) {
            continue;
        }
        map.append(name, HeaderValue::from_bytes(value).map_err(|_| ())?);
    }
    // Fields the Connection header names are hop-by-hop too (the data path names none but
    // close and keep-alive; this keeps the rule where the mapping happens).
    for name in options.into_iter().flat_map(|v| v.split(|&b| b == b',')) {
        if let Ok(name) = HeaderName::from_bytes(name.trim_ascii()) {
            if name != http::header::TRAILER {
                map.remove(name);
            }
        }
    }
    let code = status.as_u16();
    let framing = if head_request || code < 200 || code == 204 || code == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::CloseDelimited
    };
    Ok(Some(OwnHead {
        response,
        framing,
        len: end + 4,
    }))
}

/// The trailer fields at the end of a chunked body: `tail` holds everything the decoder
/// consumed after the last payload byte (the CRLF ending that chunk, the last-chunk line, the
/// trailer lines and the final CRLF), already validated by `ChunkedDecoder`. Fields HTTP/2
/// forbids in trailers are dropped.
pub(crate) fn trailers(tail: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut lines = tail
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // Up to and including the last-chunk line ("0" with optional extensions).
    for line in lines.by_ref() {
        if line.first() == Some(&b'0') {
            break;
        }
    }
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if hop_by_hop(&name) || matches!(name.as_str(), "content-length" | "host" | "trailer") {
            continue;
        }
        map.append(name, value);
    }
    map
}

/// Connection-specific fields an HTTP/1.1 head may carry and HTTP/2 forbids (RFC 9113 §8.2.2).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse::{parse_response, HeadLimits, Parse};

    /// `uri` is a whole URI, or a bare :path as `h2` builds it when :authority is absent.
    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let uri = uri.parse::<http::Uri>().unwrap_or_else(|_| {
            let mut p = http::uri::Parts::default();
            p.path_and_query = Some(http::uri::PathAndQuery::try_from(uri).unwrap());
            http::Uri::from_parts(p).unwrap()
        });
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn head(p: &Parts, end: bool) -> (Result<BodyFraming, Refused>, String) {
        let mut out = Vec::new();
        let r = request_head(p, end, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_get_becomes_an_http11_head_with_host_from_authority() {
        let p = parts(
            "GET",
            "https://example.com/a/b?x=1",
            &[("host", "other"), ("accept", "*/*"), ("te", "trailers")],
        );
        let (r, h) = head(&p, true);
        assert_eq!(r, Ok(BodyFraming::None));
        assert_eq!(
            h,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\naccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn bodies_keep_their_length_or_become_chunked() {
        let p = parts("POST", "http://a/up", &[("content-length", "5")]);
        let (r, h) = head(&p, false);
        assert_eq!(r, Ok(BodyFraming::Length));
        assert!(
            h.contains("content-length: 5\r\n") && !h.contains("chunked"),
            "{h}"
        );
        let p = parts("POST", "http://a/up", &[]);
        let (r, h) = head(&p, false);
        assert_eq!(r, Ok(BodyFraming::Chunked));
        assert!(h.contains("Transfer-Encoding: chunked\r\n"), "{h}");
    }

    #[test]
    fn split_cookies_are_joined_and_bad_requests_refused() {
        let p = parts("GET", "http://a/", &[("cookie", "a=1"), ("cookie", "b=2")]);
        let (_, h) = head(&p, true);
        assert!(h.contains("cookie: a=1; b=2\r\n"), "{h}");
        let p = parts("CONNECT", "a:443", &[]);
        assert_eq!(head(&p, true).0, Err(501));
        let p = parts(
            "POST",
            "http://a/",
            &[("content-length", "1"), ("content-length", "2")],
        );
        assert_eq!(head(&p, false).0, Err(400));
    }

    #[test]
    fn requests_http11_would_read_differently_are_refused() {
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            Result<BodyFraming, Refused>,
        );
        let cases: &[Case] = &[
            // A :path HTTP/1.1 would not read as origin-form (`http` refuses most already).
            ("GET", "http://a/", &[], Ok(BodyFraming::None)),
            ("OPTIONS", "*", &[("host", "a")], Ok(BodyFraming::None)),
            ("GET", "*", &[("host", "a")], Err(400)),
            ("GET", "?x", &[("host", "a")], Err(400)),
            ("GET", "http://u:p@a/", &[], Err(400)),
            // Without :authority, HTTP/1.1 needs exactly one Host.
            ("GET", "/", &[], Err(400)),
            ("GET", "/", &[("host", "a"), ("host", "b")], Err(400)),
            ("GET", "/", &[("host", "a")], Ok(BodyFraming::None)),
            ("GET", "http://a/", &[("connection", "upgrade")], Err(400)),
            ("GET", "http://a/", &[("upgrade", "websocket")], Err(400)),
            ("GET", "http://a/", &[("keep-alive", "1")], Err(400)),
            ("GET", "http://a/", &[("proxy-connection", "x")], Err(400)),
            (
                "POST",
                "http://a/",
                &[("transfer-encoding", "chunked")],
                Err(400),
            ),
            ("GET", "http://a/", &[("te", "gzip")], Err(400)),
            (
                "GET",
                "http://a/",
                &[("te", "Trailers")],
                Ok(BodyFraming::None),
            ),
            ("POST", "http://a/", &[("content-length", "5, 5")], Err(400)),
            ("POST", "http://a/", &[("content-length", "+5")], Err(400)),
            (
                "POST",
                "http://a/",
                &[("content-length", "99999999999999999999")],
                Err(400),
            ),
        ];
        for (method, uri, headers, want) in cases {
            let p = parts(method, uri, headers);
            assert_eq!(head(&p, true).0, *want, "{method} {uri} {headers:?}");
        }
    }

    #[test]
    fn an_extended_connect_becomes_a_websocket_handshake_with_our_key() {
        let p = parts(
            "CONNECT",
            "https://a/chat?x=1",
            &[
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "client"),
                ("sec-websocket-protocol", "chat"),
            ],
        );
        let mut out = Vec::new();
        assert_eq!(websocket_head(&p, "KEY", &mut out), Ok(()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nsec-websocket-version: 13\r\nsec-websocket-protocol: chat\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Key: KEY\r\n\r\n"
        );
        let p = parts("CONNECT", "https://a/chat", &[("content-length", "0")]);
        assert_eq!(websocket_head(&p, "KEY", &mut Vec::new()), Err(400));
    }

    #[test]
    fn only_a_101_with_the_right_accept_opens_the_tunnel() {
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_uri_bytes: 4096,
            max_headers: 64,
        };
        let check = |raw: &str| {
            let mut idx = Vec::new();
            let Parse::Complete(h) = parse_response(raw.as_bytes(), false, &limits, &mut idx)
            else {
                panic!("parse {raw}");
            };
            handshake(raw.as_bytes(), &h, &idx, "ACCEPT")
        };
        let switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ACCEPT\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
        let Handshake::Switched(ok) = check(switched) else {
            panic!("not switched");
        };
        assert_eq!(ok.status(), 200);
        let names: Vec<_> = ok.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-protocol"]);
        let wrong = switched.replace("ACCEPT", "OTHER");
        assert!(matches!(check(&wrong), Handshake::Broken));
        let no_upgrade = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ACCEPT\r\n\r\n";
        assert!(matches!(check(no_upgrade), Handshake::Broken));
        let ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(check(ok200), Handshake::Broken));
        let refused = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(check(refused), Handshake::Refused));
    }

    #[test]
    fn response_heads_lose_connection_fields_and_keep_trailer() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_uri_bytes: 4096,
            max_headers: 64,
        };
        let mut idx = Vec::new();
        let Parse::Complete(h) = parse_response(raw, false, &limits, &mut idx) else {
            panic!("parse");
        };
        let r = response(raw, &h, &idx).unwrap();
        let names: Vec<_> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["trailer", "content-type", "set-cookie"]);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn own_response_heads_read_back_as_the_full_parser_reads_them() {
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_uri_bytes: 4096,
            max_headers: 64,
        };
        let heads: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length:0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nX-A:  padded value \t\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nTE: trailers\r\nProxy-Connection: x\r\n\r\n",
        ];
        for head_request in [false, true] {
            for raw in heads {
                let mut idx = Vec::new();
                let Parse::Complete(h) = parse_response(raw, head_request, &limits, &mut idx)
                else {
                    panic!("parse {:?}", String::from_utf8_lossy(raw));
                };
                let want = response(raw, &h, &idx).unwrap();
                let own = own_response(raw, head_request).unwrap().unwrap();
                let what = String::from_utf8_lossy(raw);
                assert_eq!(own.len, h.head_len, "{what}");
                assert_eq!(own.framing, h.framing, "{what}");
                assert_eq!(own.response.status(), want.status(), "{what}");
                assert_eq!(own.response.headers(), want.headers(), "{what}");
            }
        }
    }

    #[test]
    fn own_response_heads_wait_for_their_end_and_refuse_what_http2_cannot_carry() {
        assert!(matches!(
            own_response(b"HTTP/1.1 200 OK\r\nA: b\r\n", false),
            Ok(None)
        ));
        assert!(matches!(own_response(b"", false), Ok(None)));
        let huge = [&b"HTTP/1.1 200 OK\r\nA: "[..], &[b'a'; 70 * 1024]].concat();
        assert!(own_response(&huge, false).is_err());
        for bad in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            b"HTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: x\x00y\r\n\r\n",
        ] {
            assert!(
                own_response(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunked_trailers_become_header_fields() {
        let m = trailers(b"\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok \r\nConnection: x\r\n\r\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m["grpc-status"], "0");
        assert_eq!(m["grpc-message"], "ok");
        assert!(trailers(b"0;ext=1\r\n\r\n").is_empty());
    }

    #[test]
    fn only_a_2xx_to_an_http2_websocket_handshake_counts_as_not_switched() {
        use crate::http1::parse::{parse_request, HeadLimits, Parse};
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_uri_bytes: 4096,
            max_headers: 16,
        };
        let parse = |text: &[u8]| match parse_request(text, &limits, &mut Vec::new()) {
            Parse::Complete(h) => h,
            _ => panic!("unparsed"),
        };
        let ws = parse(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let plain = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // (http2, head, status, not switched)
        let cases = [
            (true, &ws, 200, true),
            (true, &ws, 204, true),
            (true, &ws, 101, false),
            (true, &ws, 403, false),
            (true, &ws, 302, false),
            // HTTP/1.1 clients may get a 200 to an Upgrade: it is theirs to read.
            (false, &ws, 200, false),
            (true, &plain, 200, false),
        ];
        for (http2, head, status, want) in cases {
            assert_eq!(unswitched(http2, head, status), want, "{http2} {status}");
        }
    }
}
