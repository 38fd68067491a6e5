//! Request and response heads parsed with httparse straight from the receive buffer.
//!
//! Nothing is copied: a parsed head is a set of offsets into the buffer it was parsed from, so
//! untouched header lines can be forwarded as their original bytes.

use std::mem::MaybeUninit;

/// Byte range into the buffer the head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Header names the proxy acts on, recognised once during the parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRealIp,
    Forwarded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderIdx {
    pub name: Span,
    pub value: Span,
    /// The whole original line including its CRLF (or LF).
    pub line: Span,
    pub kind: HeaderKind,
    /// Not to be forwarded: a hop-by-hop field (Connection, Keep-Alive, Proxy-Connection, TE,
    /// Trailer, Transfer-Encoding, Upgrade) or one named by a Connection field.
    pub hop_by_hop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the upstream closes.
    CloseDelimited,
}

/// Connection-level facts from the Connection header and the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnFlags {
    /// Connection: close was present.
    pub close: bool,
    /// Connection: keep-alive was present.
    pub keep_alive: bool,
    /// Connection: upgrade was present (and an Upgrade field too).
    pub upgrade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the blank line; the body starts here.
    pub head_len: usize,
    pub method: Span,
    /// The request-target as sent.
    pub target: Span,
    /// The path part of the target (before `?`); `*` for asterisk-form. Empty for an
    /// absolute-form target without a path (`http://h?q`), which means `/`.
    pub path: Span,
    /// After `?`, without it; `None` when there is no `?`.
    pub query: Option<Span>,
    pub version: Version,
    /// The authority the request is for: an absolute-form target's (which wins over the Host
    /// field, RFC 9112 §3.2.2), else the value of the (single) Host field.
    pub host: Option<Span>,
    pub framing: Framing,
    pub conn: ConnFlags,
    /// `Expect: 100-continue` present.
    pub expect_continue: bool,
    /// Some line ended in a bare LF: forward rebuilt `name: value\r\n` lines, not `line` spans.
    pub bare_lf: bool,
}

impl RequestHead {
    /// Whether the client wants the connection kept open after this exchange.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.conn.close,
            Version::Http10 => self.conn.keep_alive && !self.conn.close,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub head_len: usize,
    pub version: Version,
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: Span,
    pub framing: Framing,
    pub conn: ConnFlags,
    /// As `RequestHead::bare_lf`.
    pub bare_lf: bool,
}

impl ResponseHead {
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.conn.close,
            Version::Http10 => self.conn.keep_alive && !self.conn.close,
        }
    }
}

/// Size limits for a head, from `limits:` (responses use fixed generous ones).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
}

/// Why a head was refused; `status()` is the answer a client gets for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed or ambiguous (smuggling vectors included): 400.
    BadRequest(&'static str),
    /// Head larger than max_head_bytes or more than max_headers fields: 431.
    HeaderTooLarge,
    /// Request-target longer than max_uri_bytes: 414.
    UriTooLong,
    /// Not HTTP/1.0 or 1.1: 505.
    VersionNotSupported,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::BadRequest(_) => 400,
            HeadError::HeaderTooLarge => 431,
            HeadError::UriTooLong => 414,
            HeadError::VersionNotSupported => 505,
        }
    }
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::BadRequest(r) => r,
            HeadError::HeaderTooLarge => "request header fields too large",
            HeadError::UriTooLong => "URI too long",
            HeadError::VersionNotSupported => "HTTP version not supported",
        }
    }
}

/// Tri-state result: a partial head is a normal state (read more), not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    Complete(T),
    Partial,
    Invalid(HeadError),
}

/// httparse wants a fixed array: 256 fields is far beyond any real client (browsers send ~20),
/// and 256 × 32 bytes is a cheap stack array.
const MAX_HEADERS: usize = 256;

/// Distinct field names one request may list in Connection; bounds the hop-by-hop matching work.
const MAX_CONNECTION_OPTIONS: usize = 32;

/// Parses a request head from the start of `buf`. On `Complete`, `headers` holds one entry per
/// field in order (cleared first; its capacity is reused across requests).
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    headers: &mut Vec<HeaderIdx>,
) -> Parse<RequestHead> {
    headers.clear();
    let mut raw = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = limits.max_headers.min(MAX_HEADERS);
    let head_len = match req.parse_with_uninit_headers(buf, &mut raw[..n]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_uri_bytes && partial_target_len(buf) > limits.max_uri_bytes {
                return Parse::Invalid(HeadError::UriTooLong);
            }
            if buf.len() >= limits.max_head_bytes {
                return Parse::Invalid(HeadError::HeaderTooLarge);
            }
            return Parse::Partial;
        }
        Err(httparse::Error::Version) if higher_minor(buf, true).is_some() => {
            return parse_as_http11(buf, true, |b| parse_request(b, limits, headers));
        }
        Err(e) => return Parse::Invalid(map_error(e, buf, true)),
    };
    match request_head(buf, head_len, limits, &req, headers) {
        Ok(head) => Parse::Complete(head),
        Err(e) => Parse::Invalid(e),
    }
}

fn request_head(
    buf: &[u8],
    head_len: usize,
    limits: &HeadLimits,
    req: &httparse::Request<'_, '_>,
    headers: &mut Vec<HeaderIdx>,
) -> Result<RequestHead, HeadError> {
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::BadRequest("invalid request line"));
    };
    if target.len() > limits.max_uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    if head_len > limits.max_head_bytes {
        return Err(HeadError::HeaderTooLarge);
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let method_span = span(buf, method.as_bytes());
    let target_span = span(buf, target.as_bytes());
    let (path, query) = split_target(method.as_bytes(), target.as_bytes(), target_span.start)?;

    let f = scan_fields(buf, head_len, req.headers, headers)?;
    if f.hosts > 1 {
        return Err(HeadError::BadRequest("more than one Host field"));
    }
    if f.hosts == 0 && version == Version::Http11 {
        return Err(HeadError::BadRequest("missing Host field"));
    }
    if let Some(h) = f.host {
        if !valid_host(h.get(buf), true) {
            return Err(HeadError::BadRequest("invalid Host field"));
        }
    }
    if f.blank_host {
        return Err(HeadError::BadRequest("Host field of only whitespace"));
    }
    let host = target_authority(buf, target_span).or(f.host);
    if f.te_fields > 0 && version == Version::Http10 {
        return Err(HeadError::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    let framing = framing(&f)?.unwrap_or(Framing::None);
    Ok(RequestHead {
        head_len,
        method: method_span,
        target: target_span,
        path,
        query,
        version,
        host,
        framing,
        conn: f.conn,
        // RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
        expect_continue: f.expect_continue && version == Version::Http11,
        bare_lf: f.bare_lf,
    })
}

/// Parses a response head. `head_request` and the status decide whether a body follows.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    limits: &HeadLimits,
    headers: &mut Vec<HeaderIdx>,
) -> Parse<ResponseHead> {
    headers.clear();
    // The exchange looks before its first read: nothing to parse yet.
    if buf.is_empty() && limits.max_head_bytes > 0 {
        return Parse::Partial;
    }
    let mut raw = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let n = limits.max_headers.min(MAX_HEADERS);
    // Response has no inherent uninit-headers parse; the default config is the strict one.
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut raw[..n],
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Parse::Invalid(HeadError::HeaderTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::Version) if higher_minor(buf, false).is_some() => {
            return parse_as_http11(buf, false, |b| {
                parse_response(b, head_request, limits, headers)
            });
        }
        Err(e) => return Parse::Invalid(map_error(e, buf, false)),
    };
    match response_head(buf, head_len, head_request, limits, &res, headers) {
        Ok(head) => Parse::Complete(head),
        Err(e) => Parse::Invalid(e),
    }
}

fn response_head(
    buf: &[u8],
    head_len: usize,
    head_request: bool,
    limits: &HeadLimits,
    res: &httparse::Response<'_, '_>,
    headers: &mut Vec<HeaderIdx>,
) -> Result<ResponseHead, HeadError> {
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(HeadError::BadRequest("invalid status line"));
    };
    if head_len > limits.max_head_bytes {
        return Err(HeadError::HeaderTooLarge);
    }
    if !(100..=599).contains(&status) {
        return Err(HeadError::BadRequest("status code out of range"));
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let f = scan_fields(buf, head_len, res.headers, headers)?;
    if f.te_fields > 0 && version == Version::Http10 {
        return Err(HeadError::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    let framing = framing(&f)?;
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else {
        framing.unwrap_or(Framing::CloseDelimited)
    };
    Ok(ResponseHead {
        head_len,
        version,
        status,
        reason: reason_span(buf, head_len, res.headers),
        framing,
        conn: f.conn,
        bare_lf: f.bare_lf,
    })
}

/// What the header loop learned about the fields the proxy acts on.
#[derive(Default)]
struct Fields {
    host: Option<Span>,
    hosts: u32,
    /// A Host line whose value is whitespace only (an empty value is allowed, blanks are not).
    blank_host: bool,
    content_length: Option<u64>,
    te_fields: u32,
    te_chunked: bool,
    conn: ConnFlags,
    expect_continue: bool,
    bare_lf: bool,
}

/// Body framing from CL/TE alone; `None` when neither is present.
fn framing(f: &Fields) -> Result<Option<Framing>, HeadError> {
    match (f.te_fields, f.content_length) {
        (0, None) => Ok(None),
        (0, Some(n)) => Ok(Some(Framing::Length(n))),
        (_, Some(_)) => Err(HeadError::BadRequest(
            "Content-Length together with Transfer-Encoding",
        )),
        (1, None) if f.te_chunked => Ok(Some(Framing::Chunked)),
        _ => Err(HeadError::BadRequest(
            "Transfer-Encoding other than a single chunked",
        )),
    }
}

/// An Upgrade field whose every protocol is `h2c`.
fn offers_only_h2c(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .all(|t| t.eq_ignore_ascii_case(b"h2c"))
}

/// Converts httparse's fields into `HeaderIdx` entries and checks the framing-relevant ones.
fn scan_fields(
    buf: &[u8],
    head_len: usize,
    raw: &[httparse::Header<'_>],
    out: &mut Vec<HeaderIdx>,
) -> Result<Fields, HeadError> {
    let mut f = Fields::default();
    let mut has_upgrade_field = false;
    let mut upgrade_token = false;
    let mut options = [Span::default(); MAX_CONNECTION_OPTIONS];
    let mut n_options = 0;

    let blank = blank_line_start(buf, head_len);
    // The start-line ends where the first field line (or the blank line) begins.
    let first = raw
        .first()
        .map_or(blank, |h| offset(buf, h.name.as_bytes()));
    f.bare_lf = ends_in_bare_lf(buf, first) || ends_in_bare_lf(buf, head_len);

    out.reserve(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let name = span(buf, h.name.as_bytes());
        let value = span(buf, h.value);
        let end = raw
            .get(i + 1)
            .map_or(blank, |next| offset(buf, next.name.as_bytes()));
        f.bare_lf |= ends_in_bare_lf(buf, end);
        let kind = classify(h.name.as_bytes());
        let v = h.value;
        match kind {
            HeaderKind::Host => {
                f.hosts += 1;
                f.host = Some(value);
                // Between the colon and the line end: anything there was trimmed away as OWS.
                let raw = &buf[name.end as usize + 1..end];
                f.blank_host |= v.is_empty() && raw.iter().any(|&b| b == b' ' || b == b'\t');
            }
            HeaderKind::ContentLength => {
                f.content_length = Some(content_length(v, f.content_length)?);
            }
            HeaderKind::TransferEncoding => {
                f.te_fields += 1;
                f.te_chunked = trim_ows(v).eq_ignore_ascii_case(b"chunked");
            }
            HeaderKind::Connection => {
                for t in v.split(|&b| b == b',') {
                    let t = trim_ows(t);
                    if t.eq_ignore_ascii_case(b"close") {
                        f.conn.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        f.conn.keep_alive = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        upgrade_token = true;
                    } else if !t.is_empty() {
                        if n_options == MAX_CONNECTION_OPTIONS {
                            return Err(HeadError::BadRequest("too many Connection options"));
                        }
                        options[n_options] = span(buf, t);
                        n_options += 1;
                    }
                }
            }
            // Offering only h2c is no upgrade: forwarded, it would let a client open an HTTP/2
            // connection to the upstream past every per-request rule ("h2c smuggling"); the
            // request goes on as plain HTTP/1.1, which RFC 9110 §7.8 allows a server to choose.
            HeaderKind::Upgrade => has_upgrade_field |= !offers_only_h2c(v),
            HeaderKind::Expect => {
                f.expect_continue |= trim_ows(v).eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        out.push(HeaderIdx {
            name,
            value,
            line: Span {
                start: name.start,
                end: end as u32,
            },
            kind,
            hop_by_hop: matches!(
                kind,
                HeaderKind::Connection
                    | HeaderKind::KeepAlive
                    | HeaderKind::ProxyConnection
                    | HeaderKind::Te
                    | HeaderKind::Trailer
                    | HeaderKind::TransferEncoding
                    | HeaderKind::Upgrade
            ),
        });
    }
    f.conn.upgrade = upgrade_token && has_upgrade_field;

    if n_options > 0 {
        let options = &options[..n_options];
        for h in out.iter_mut() {
            // Framing fields stay: a client must not be able to strip them on the way upstream.
            if h.hop_by_hop || matches!(h.kind, HeaderKind::Host | HeaderKind::ContentLength) {
                continue;
            }
            let name = h.name.get(buf);
            h.hop_by_hop = options
                .iter()
                .any(|o| o.get(buf).eq_ignore_ascii_case(name));
        }
    }
    Ok(f)
}

/// The one length a Content-Length field value (already accepted by the parser) stands for.
pub fn content_length_value(v: &[u8]) -> Option<u64> {
    content_length(v, None).ok()
}

/// Whether the request's authority comes from an absolute-form target rather than from its
/// Host field (then the Host field is not what goes upstream).
pub fn host_from_target(head: &RequestHead) -> bool {
    head.host
        .is_some_and(|h| head.target.start <= h.start && h.end <= head.target.end)
}

/// Content-Length = 1*DIGIT, possibly repeated as a list; every value must agree with `prev`.
fn content_length(v: &[u8], prev: Option<u64>) -> Result<u64, HeadError> {
    let mut value = prev;
    for item in v.split(|&b| b == b',') {
        let item = trim_ows(item);
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::BadRequest("invalid Content-Length"));
        }
        let n = item
            .iter()
            .try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or(HeadError::BadRequest("Content-Length overflows"))?;
        if value.is_some_and(|p| p != n) {
            return Err(HeadError::BadRequest("conflicting Content-Length values"));
        }
        value = Some(n);
    }
    value.ok_or(HeadError::BadRequest("invalid Content-Length"))
}

/// Splits the request-target into path and query, accepting only origin-form, absolute-form
/// (http/https) and `*` for OPTIONS.
fn split_target(method: &[u8], t: &[u8], base: u32) -> Result<(Span, Option<Span>), HeadError> {
    // httparse admits any non-ASCII byte and '#'; a fragment or raw UTF-8 could be read
    // differently by the upstream, so refuse both.
    if t.iter().any(|&b| b == b'#' || b >= 0x80) {
        return Err(HeadError::BadRequest("invalid character in request-target"));
    }
    let path_start = if t[0] == b'/' {
        0
    } else if t == b"*" {
        if method != b"OPTIONS" {
            return Err(HeadError::BadRequest("asterisk-form is only for OPTIONS"));
        }
        let all = Span {
            start: base,
            end: base + 1,
        };
        return Ok((all, None));
    } else {
        let scheme = if starts_with_ignore_case(t, b"http://") {
            7
        } else if starts_with_ignore_case(t, b"https://") {
            8
        } else {
            return Err(HeadError::BadRequest("invalid request-target"));
        };
        let rest = &t[scheme..];
        let auth_len = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        if !valid_host(&rest[..auth_len], false) {
            return Err(HeadError::BadRequest("invalid authority in request-target"));
        }
        scheme + auth_len
    };
    let at = |i: usize| base + i as u32;
    Ok(match t[path_start..].iter().position(|&b| b == b'?') {
        Some(q) => (
            Span {
                start: at(path_start),
                end: at(path_start + q),
            },
            Some(Span {
                start: at(path_start + q + 1),
                end: at(t.len()),
            }),
        ),
        None => (
            Span {
                start: at(path_start),
                end: at(t.len()),
            },
            None,
        ),
    })
}

/// The authority of an absolute-form target (`http://AUTHORITY/...`), already validated by
/// `split_target`; `None` for the other forms.
fn target_authority(buf: &[u8], target: Span) -> Option<Span> {
    let t = target.get(buf);
    let scheme = if starts_with_ignore_case(t, b"http://") {
        7
    } else if starts_with_ignore_case(t, b"https://") {
        8
    } else {
        return None;
    };
    let len = t[scheme..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(t.len() - scheme);
    let start = target.start + scheme as u32;
    Some(Span {
        start,
        end: start + len as u32,
    })
}

/// Where the minor digit of an `HTTP/1.N` version with N >= 2 sits: RFC 9112 §2.3 has a
/// recipient treat a higher minor version as the highest it supports, 1.1.
fn higher_minor(buf: &[u8], request: bool) -> Option<usize> {
    let skipped = if request {
        buf.len() - skip_empty_lines(buf).len()
    } else {
        0
    };
    let mut at = skipped;
    if request {
        // Neither the method nor the target can hold a SP.
        for _ in 0..2 {
            at += buf[at..].iter().position(|&b| b == b' ')? + 1;
        }
    }
    let v = buf.get(at..at + 8)?;
    // A request line ends after the version, a status line goes on with a SP.
    let ends = match buf.get(at + 8) {
        None => true,
        Some(&b) if request => b == b'\r' || b == b'\n',
        Some(&b) => b == b' ',
    };
    (v.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&v[7]) && ends).then_some(at + 7)
}

/// Parses a head that says `HTTP/1.N` (N >= 2) as the same bytes saying `HTTP/1.1`: a copy
/// with the one digit changed, so every span is valid in the original too. Rare: allocating
/// here costs nothing on the common path.
fn parse_as_http11<T>(
    buf: &[u8],
    request: bool,
    parse: impl FnOnce(&[u8]) -> Parse<T>,
) -> Parse<T> {
    let Some(at) = higher_minor(buf, request) else {
        return Parse::Invalid(HeadError::BadRequest("invalid HTTP version"));
    };
    let mut copy = buf.to_vec();
    copy[at] = b'1';
    parse(&copy)
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2); userinfo is refused. `allow_empty` for the Host
/// field, which may be empty, unlike an http(s) authority.
fn valid_host(h: &[u8], allow_empty: bool) -> bool {
    if h.is_empty() {
        return allow_empty;
    }
    let port = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
    if h[0] == b'[' {
        let Some(close) = h.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &h[1..close];
        let rest = &h[close + 1..];
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| REG_NAME[b as usize] || b == b':' || b == b'%')
            && (rest.is_empty() || (rest[0] == b':' && port(&rest[1..])));
    }
    let mut i = 0;
    while let Some(&b) = h.get(i) {
        if REG_NAME[b as usize] {
            i += 1;
        } else if b == b':' {
            return i > 0 && port(&h[i + 1..]);
        } else if b == b'%'
            && h.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && h.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 3;
        } else {
            return false;
        }
    }
    true
}

/// unreserved / sub-delims (RFC 3986), the bytes of a reg-name besides pct-encoded.
static REG_NAME: [bool; 256] = byte_set(b"-._~!$&'()*+,;=");

/// ALPHA / DIGIT plus `extra`.
const fn byte_set(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Reason phrase located by hand: httparse returns a static "" (not a slice of `buf`) when
/// the phrase holds obs-text.
fn reason_span(buf: &[u8], head_len: usize, raw: &[httparse::Header<'_>]) -> Span {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    // "HTTP/1.x NNN" is 12 bytes; a SP after it introduces the phrase.
    let line_end = raw.first().map_or_else(
        || blank_line_start(buf, head_len),
        |h| offset(buf, h.name.as_bytes()),
    );
    let text_end = line_end - if buf[line_end - 2] == b'\r' { 2 } else { 1 };
    let from = if buf[start + 12] == b' ' {
        start + 13
    } else {
        start + 12
    };
    Span {
        start: from as u32,
        end: text_end.max(from) as u32,
    }
}

/// Maps an httparse error; a syntactically sound `HTTP/x.y` that is not 1.0/1.1 gets 505.
fn map_error(e: httparse::Error, buf: &[u8], request: bool) -> HeadError {
    use httparse::Error as E;
    HeadError::BadRequest(match e {
        E::TooManyHeaders => return HeadError::HeaderTooLarge,
        E::Version if other_http_version(buf, request) => return HeadError::VersionNotSupported,
        E::Version => "invalid HTTP version",
        E::HeaderName => "invalid header field name",
        E::HeaderValue => "invalid header field value",
        E::NewLine => "invalid line ending",
        E::Status => "invalid status line",
        E::Token => "invalid request line",
    })
}

/// Whether the version token is `HTTP/DIGIT.DIGIT` (or, still incomplete, a prefix of it).
fn other_http_version(buf: &[u8], request: bool) -> bool {
    let mut v = skip_empty_lines(buf);
    if request {
        // Neither the method nor the target can hold a SP.
        for _ in 0..2 {
            match v.iter().position(|&b| b == b' ') {
                Some(i) => v = &v[i + 1..],
                None => return false,
            }
        }
    }
    let end = v
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(v.len());
    let complete = end < v.len();
    let v = &v[..end];
    if v.len() > 8 || (complete && v.len() != 8) {
        return false;
    }
    v.iter().zip(b"HTTP/0.0").all(|(&b, &p)| {
        if p == b'0' {
            b.is_ascii_digit()
        } else {
            b == p
        }
    })
}

/// Length of the request-target so far while the request line is incomplete (0 if the method
/// has not ended yet).
fn partial_target_len(buf: &[u8]) -> usize {
    let line = skip_empty_lines(buf);
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return 0;
    };
    let t = &line[sp + 1..];
    t.iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(t.len())
}

fn skip_empty_lines(buf: &[u8]) -> &[u8] {
    let n = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    &buf[n..]
}

/// Where the blank line that ends the head starts.
fn blank_line_start(buf: &[u8], head_len: usize) -> usize {
    // httparse only accepts a CR directly before LF, so a CR here is part of a CRLF blank line.
    head_len - if buf[head_len - 2] == b'\r' { 2 } else { 1 }
}

/// Whether the line ending just before `end` is a bare LF.
#[inline]
fn ends_in_bare_lf(buf: &[u8], end: usize) -> bool {
    end >= 2 && buf[end - 2] != b'\r'
}

fn classify(name: &[u8]) -> HeaderKind {
    use HeaderKind::*;
    let lower0 = name.first().map_or(0, |b| b | 0x20);
    let (canon, kind): (&[u8], HeaderKind) = match (name.len(), lower0) {
        (2, _) => (b"te", Te),
        (4, _) => (b"host", Host),
        (6, _) => (b"expect", Expect),
        (7, b't') => (b"trailer", Trailer),
        (7, b'u') => (b"upgrade", Upgrade),
        (9, b'x') => (b"x-real-ip", XRealIp),
        (9, b'f') => (b"forwarded", Forwarded),
        (10, b'c') => (b"connection", Connection),
        (10, b'k') => (b"keep-alive", KeepAlive),
        (14, _) => (b"content-length", ContentLength),
        (15, _) => (b"x-forwarded-for", XForwardedFor),
        (16, b'p') => (b"proxy-connection", ProxyConnection),
        (16, b'x') => (b"x-forwarded-host", XForwardedHost),
        (17, b't') => (b"transfer-encoding", TransferEncoding),
        (17, b'x') => (b"x-forwarded-proto", XForwardedProto),
        _ => return Other,
    };
    if name.eq_ignore_ascii_case(canon) {
        kind
    } else {
        Other
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Offset of a slice httparse returned into `buf`.
#[inline]
fn offset(buf: &[u8], s: &[u8]) -> usize {
    let o = s.as_ptr() as usize - buf.as_ptr() as usize;
    debug_assert!(o + s.len() <= buf.len());
    o
}

#[inline]
fn span(buf: &[u8], s: &[u8]) -> Span {
    let start = offset(buf, s) as u32;
    Span {
        start,
        end: start + s.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 8192,
        max_uri_bytes: 1024,
        max_headers: 64,
    };

    fn req(buf: &[u8]) -> Parse<RequestHead> {
        parse_request(buf, &LIMITS, &mut Vec::new())
    }

    fn req_ok(buf: &[u8]) -> (RequestHead, Vec<HeaderIdx>) {
        let mut h = Vec::new();
        match parse_request(buf, &LIMITS, &mut h) {
            Parse::Complete(r) => (r, h),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn res(buf: &[u8], head_request: bool) -> Parse<ResponseHead> {
        parse_response(buf, head_request, &LIMITS, &mut Vec::new())
    }

    fn res_ok(buf: &[u8]) -> ResponseHead {
        match res(buf, false) {
            Parse::Complete(r) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[track_caller]
    fn assert_bad(r: Parse<impl std::fmt::Debug>, buf: &[u8]) {
        assert!(
            matches!(r, Parse::Invalid(HeadError::BadRequest(_))),
            "{:?} gave {r:?}",
            String::from_utf8_lossy(buf)
        );
    }

    #[track_caller]
    fn assert_bad_request(buf: &[u8]) {
        assert_bad(req(buf), buf);
    }

    #[track_caller]
    fn assert_bad_response(buf: &[u8]) {
        assert_bad(res(buf, false), buf);
    }

    /// A request with the given field lines (each without its CRLF) after `GET / HTTP/1.1`.
    fn get_with(fields: &[&str]) -> Vec<u8> {
        let mut v = b"GET / HTTP/1.1\r\n".to_vec();
        for f in fields {
            v.extend_from_slice(f.as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    fn post_with(fields: &[&str]) -> Vec<u8> {
        let mut v = b"POST /u HTTP/1.1\r\nHost: a\r\n".to_vec();
        for f in fields {
            v.extend_from_slice(f.as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    fn response_with(status: &str, fields: &[&str]) -> Vec<u8> {
        let mut v = format!("HTTP/1.1 {status}\r\n").into_bytes();
        for f in fields {
            v.extend_from_slice(f.as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    // ---- request line and basics ----

    #[test]
    fn simple_get_yields_spans_into_the_buffer() {
        let buf = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\nBODY";
        let (r, h) = req_ok(buf);
        assert_eq!(r.head_len, buf.len() - 4);
        assert_eq!(r.method.get(buf), b"GET");
        assert_eq!(r.target.get(buf), b"/a/b?x=1&y");
        assert_eq!(r.path.get(buf), b"/a/b");
        assert_eq!(r.query.unwrap().get(buf), b"x=1&y");
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.host.unwrap().get(buf), b"example.com");
        assert_eq!(r.framing, Framing::None);
        assert!(!r.bare_lf && !r.expect_continue && r.keep_alive());
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name.get(buf), b"Host");
        assert_eq!(h[0].value.get(buf), b"example.com");
        assert_eq!(h[0].line.get(buf), b"Host: example.com\r\n");
        assert_eq!(h[0].kind, HeaderKind::Host);
        assert_eq!(h[1].kind, HeaderKind::Other);
    }

    #[test]
    fn a_target_without_query_has_no_query_and_an_empty_query_is_some() {
        let buf = get_with(&["Host: a"]);
        assert_eq!(req_ok(&buf).0.query, None);
        let buf = b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, _) = req_ok(buf);
        assert_eq!(r.path.get(buf), b"/p");
        assert!(r.query.unwrap().is_empty());
    }

    #[test]
    fn leading_empty_lines_before_the_request_line_are_skipped() {
        let buf = b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, _) = req_ok(buf);
        assert_eq!(r.method.get(buf), b"GET");
        assert_eq!(r.head_len, buf.len());
    }

    #[test]
    fn field_values_are_trimmed_as_httparse_does_but_lines_are_whole() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \t v  w \t\r\nX-B:\r\nX-C:   \r\n\r\n";
        let (_, h) = req_ok(buf);
        assert_eq!(h[1].value.get(buf), b"v  w");
        assert_eq!(h[1].line.get(buf), b"X-A: \t v  w \t\r\n");
        assert!(h[2].value.is_empty());
        assert_eq!(h[2].line.get(buf), b"X-B:\r\n");
        assert!(h[3].value.is_empty());
        assert_eq!(h[3].line.get(buf), b"X-C:   \r\n");
    }

    #[test]
    fn obs_text_in_a_field_value_is_accepted() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-N: caf\xc3\xa9\xff\r\n\r\n";
        let (_, h) = req_ok(buf);
        assert_eq!(h[1].value.get(buf), b"caf\xc3\xa9\xff");
    }

    #[test]
    fn http10_request_without_host_is_accepted() {
        let (r, _) = req_ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r.version, Version::Http10);
        assert_eq!(r.host, None);
        assert!(!r.keep_alive());
    }

    #[test]
    fn a_double_space_in_the_request_line_is_refused() {
        assert_bad_request(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_bad_request(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_bad_request(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n");
        assert_bad_request(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn an_invalid_method_token_is_refused() {
        assert_bad_request(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_bad_request(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn a_higher_minor_version_is_read_as_http11() {
        for v in ["HTTP/1.2", "HTTP/1.9"] {
            let buf = "\r\nGET /p HTTP/1.1\r\nHost: a\r\n\r\n".replace("HTTP/1.1", v);
            let (r, h) = req_ok(buf.as_bytes());
            assert_eq!(r.version, Version::Http11, "{v}");
            assert_eq!(r.path.get(buf.as_bytes()), b"/p");
            assert_eq!(h[0].line.get(buf.as_bytes()), b"Host: a\r\n");
            let buf = format!("{v} 204 No Content\r\nX-A: b\r\n\r\n");
            let r = res_ok(buf.as_bytes());
            assert_eq!((r.version, r.status), (Version::Http11, 204), "{v}");
            assert_eq!(r.reason.get(buf.as_bytes()), b"No Content");
        }
        assert_eq!(req(b"GET / HTTP/1.2"), Parse::Partial);
        assert_eq!(req(b"GET / HTTP/1.2\r\nHost: a\r\n"), Parse::Partial);
    }

    #[test]
    fn versions_other_than_1_x_get_505() {
        for v in ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0"] {
            let buf = format!("GET / {v}\r\nHost: a\r\n\r\n");
            assert_eq!(
                req(buf.as_bytes()),
                Parse::Invalid(HeadError::VersionNotSupported),
                "{v}"
            );
        }
        // Known to be unsupported before the line is complete.
        assert_eq!(
            req(b"GET / HTTP/2"),
            Parse::Invalid(HeadError::VersionNotSupported)
        );
        assert_eq!(
            res(b"HTTP/2.0 200 OK\r\n\r\n", false),
            Parse::Invalid(HeadError::VersionNotSupported)
        );
    }

    #[test]
    fn a_malformed_version_is_refused_with_400() {
        for v in [
            "http/1.1",
            "HTTX/1.1",
            "HTTP/1.x",
            "HTTP/11",
            "HTTP/1.10",
            "HTTP/1",
            "1.1",
        ] {
            let buf = format!("GET / {v}\r\nHost: a\r\n\r\n");
            assert_bad_request(buf.as_bytes());
        }
    }

    // ---- request-target forms ----

    #[test]
    fn origin_form_targets_are_accepted() {
        for t in ["/", "//double", "/a%20b", "/p?q=/x?y", "/a{b}|c^d\"e"] {
            let buf = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
            let (r, _) = req_ok(buf.as_bytes());
            assert_eq!(r.target.get(buf.as_bytes()), t.as_bytes());
        }
    }

    #[test]
    fn absolute_form_path_and_query_point_inside_the_target() {
        let buf = b"GET http://example.com:8080/x/y?z=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let (r, _) = req_ok(buf);
        assert_eq!(r.target.get(buf), b"http://example.com:8080/x/y?z=1");
        assert_eq!(r.path.get(buf), b"/x/y");
        assert_eq!(r.query.unwrap().get(buf), b"z=1");

        let buf = b"GET HTTPS://[::1]:443?q HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, _) = req_ok(buf);
        assert!(r.path.is_empty());
        assert_eq!(r.query.unwrap().get(buf), b"q");

        let buf = b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n";
        let (r, _) = req_ok(buf);
        assert!(r.path.is_empty());
        assert_eq!(r.query, None);
    }

    #[test]
    fn asterisk_form_is_accepted_only_for_options() {
        let buf = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        let (r, _) = req_ok(buf);
        assert_eq!(r.path.get(buf), b"*");
        assert_eq!(r.query, None);
        assert_bad_request(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_bad_request(b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn other_request_target_forms_are_refused() {
        for t in [
            "example.com:443",
            "relative/path",
            "ftp://example.com/",
            "http:/example.com/",
            "http://",
            "http:///path",
            "http://user@example.com/",
            "http://exa mple.com/",
            "http://a/b#frag",
            "/a#frag",
            "/caf\u{e9}",
            "http://[::1/",
        ] {
            let buf = format!("CONNECT {t} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_bad_request(buf.as_bytes());
            let buf = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_bad_request(buf.as_bytes());
        }
    }

    #[test]
    fn non_ascii_bytes_in_the_target_are_refused() {
        // httparse itself accepts valid UTF-8 here.
        assert_bad_request(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_bad_request(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    // ---- Host ----

    #[test]
    fn http11_request_without_host_is_refused() {
        assert_bad_request(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
        assert_bad_request(b"GET http://a/ HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn more_than_one_host_field_is_refused() {
        assert_bad_request(&get_with(&["Host: a", "Host: a"]));
        assert_bad_request(&get_with(&["Host: a", "hOsT: b"]));
        assert_bad_request(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n");
    }

    #[test]
    fn an_invalid_host_value_is_refused() {
        for h in [
            "a b", "a/b", "a@b", "a:b:c", "a:8x", "[::1", "[::1]x", "[]", "a%zz", "a%4", ":80",
            "a\\b",
        ] {
            assert_bad_request(&get_with(&[&format!("Host: {h}")]));
        }
    }

    #[test]
    fn valid_host_values_are_accepted() {
        for h in [
            "example.com",
            "example.com:8080",
            "example.com:",
            "127.0.0.1",
            "[::1]:443",
            "[fe80::1%25eth0]",
            "a-b_c~d%41",
        ] {
            let buf = get_with(&[&format!("Host: {h}")]);
            let (r, _) = req_ok(&buf);
            assert_eq!(r.host.unwrap().get(&buf), h.as_bytes());
        }
        // An empty Host is what a client sends for a URI without authority (RFC 9112 §3.2).
        let buf = get_with(&["Host:"]);
        assert!(req_ok(&buf).0.host.unwrap().is_empty());
    }

    #[test]
    fn a_host_of_only_whitespace_is_refused() {
        for line in ["Host: ", "Host:   ", "Host:\t", "Host: \t "] {
            assert_bad_request(&get_with(&[line]));
        }
    }

    #[test]
    fn an_absolute_form_authority_wins_over_the_host_field() {
        let buf = b"GET http://internal.example:81/x?q HTTP/1.1\r\nHost: public.example\r\n\r\n";
        let (r, h) = req_ok(buf);
        assert_eq!(r.host.unwrap().get(buf), b"internal.example:81");
        assert_eq!(h[0].value.get(buf), b"public.example");
        let buf = b"GET https://a.example?q HTTP/1.0\r\n\r\n";
        assert_eq!(req_ok(buf).0.host.unwrap().get(buf), b"a.example");
        let buf = b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n";
        assert_eq!(req_ok(buf).0.host.unwrap().get(buf), b"b");
        // Several Host fields stay refused whatever the target says.
        assert_bad_request(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
    }

    // ---- framing ----

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        assert_bad_request(&post_with(&[
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
        ]));
        assert_bad_request(&post_with(&[
            "Transfer-Encoding: chunked",
            "Content-Length: 0",
        ]));
    }

    #[test]
    fn differing_content_length_fields_are_refused() {
        assert_bad_request(&post_with(&["Content-Length: 5", "Content-Length: 6"]));
    }

    #[test]
    fn differing_values_in_one_content_length_list_are_refused() {
        assert_bad_request(&post_with(&["Content-Length: 5, 6"]));
        assert_bad_request(&post_with(&["Content-Length: 5,5,6"]));
    }

    #[test]
    fn repeated_identical_content_length_values_are_one_length() {
        for f in [
            &["Content-Length: 5", "content-length: 5"][..],
            &["Content-Length: 5 ,\t5,5"][..],
        ] {
            assert_eq!(req_ok(&post_with(f)).0.framing, Framing::Length(5));
        }
    }

    #[test]
    fn content_length_that_is_not_digits_is_refused() {
        for v in [
            "", "+5", "-1", "0x5", "5 5", "5;", "5,", ",5", "5,,5", "1e3", "٥", " ",
        ] {
            assert_bad_request(&post_with(&[&format!("Content-Length: {v}")]));
        }
    }

    #[test]
    fn overflowing_content_length_is_refused() {
        assert_bad_request(&post_with(&["Content-Length: 18446744073709551616"]));
        assert_bad_request(&post_with(&["Content-Length: 99999999999999999999999"]));
        let max = post_with(&["Content-Length: 18446744073709551615"]);
        assert_eq!(req_ok(&max).0.framing, Framing::Length(u64::MAX));
    }

    #[test]
    fn content_length_framing_includes_zero() {
        assert_eq!(
            req_ok(&post_with(&["Content-Length: 0"])).0.framing,
            Framing::Length(0)
        );
        assert_eq!(
            req_ok(&post_with(&["Content-Length: 0042"])).0.framing,
            Framing::Length(42)
        );
    }

    #[test]
    fn a_request_without_length_or_chunking_has_no_body() {
        assert_eq!(req_ok(&post_with(&[])).0.framing, Framing::None);
    }

    #[test]
    fn chunked_transfer_encoding_is_case_insensitive_and_allows_ows() {
        for v in ["chunked", "Chunked", "CHUNKED", "  chunked\t ", "\tcHuNkEd"] {
            let buf = post_with(&[&format!("Transfer-Encoding: {v}")]);
            assert_eq!(req_ok(&buf).0.framing, Framing::Chunked, "{v:?}");
        }
    }

    #[test]
    fn transfer_encoding_whose_final_coding_is_not_chunked_is_refused() {
        for v in [
            "gzip",
            "identity",
            "chunked, gzip",
            "chunkedx",
            "chunked;q=1",
            "",
            "\"chunked\"",
        ] {
            assert_bad_request(&post_with(&[&format!("Transfer-Encoding: {v}")]));
        }
    }

    #[test]
    fn transfer_encoding_with_extra_codings_is_refused() {
        for f in [
            &["Transfer-Encoding: gzip, chunked"][..],
            &["Transfer-Encoding: chunked, chunked"][..],
            &["Transfer-Encoding: chunked,"][..],
            &["Transfer-Encoding: ,chunked"][..],
            &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"][..],
            &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"][..],
        ] {
            assert_bad_request(&post_with(f));
        }
    }

    #[test]
    fn transfer_encoding_in_an_http10_request_is_refused() {
        assert_bad_request(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_bad_request(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    }

    // ---- field syntax ----

    #[test]
    fn obs_fold_is_refused() {
        assert_bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n");
        assert_bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n");
        assert_bad_request(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n");
        assert_bad_request(b"GET / HTTP/1.1\r\nHost: a\n X-A: b\n\n");
        assert_bad_request(&post_with(&["Transfer-Encoding: gzip,", " chunked"]));
    }

    #[test]
    fn whitespace_between_field_name_and_colon_is_refused() {
        assert_bad_request(&get_with(&["Host : a"]));
        assert_bad_request(&get_with(&["Host\t: a"]));
        assert_bad_request(&post_with(&["Transfer-Encoding : chunked"]));
        assert_bad_request(&post_with(&["Content-Length : 5"]));
    }

    #[test]
    fn invalid_field_names_are_refused() {
        for f in [
            ": empty", "X(a): b", "X@: b", "X\"a: b", "X/a: b", "X]: b", "X\x01: b", "Xé: b",
            "NoColon",
        ] {
            assert_bad_request(&get_with(&["Host: a", f]));
        }
        assert_bad_request(b"GET / HTTP/1.1\r\nHost: a\r\nX\x00: b\r\n\r\n");
    }

    #[test]
    fn invalid_field_values_are_refused() {
        for v in [&b"a\x00b"[..], b"a\x01", b"\x7f", b"a\x0bb", b"a\x1bb"] {
            let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: ".to_vec();
            buf.extend_from_slice(v);
            buf.extend_from_slice(b"\r\n\r\n");
            assert_bad_request(&buf);
        }
    }

    #[test]
    fn a_bare_cr_anywhere_is_refused() {
        for buf in [
            &b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET\r/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\rHost: a\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rx",
            b"GET / HTTP/1.1\r\nHost:\ra\r\n\r\n",
        ] {
            assert_bad_request(buf);
        }
        for buf in [
            &b"HTTP/1.1 200 O\rK\r\n\r\n"[..],
            b"HTTP/1.1 200\r\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\r\n",
        ] {
            assert_bad_response(buf);
        }
    }

    #[test]
    fn bare_lf_line_endings_are_accepted_and_flagged() {
        for buf in [
            &b"GET / HTTP/1.1\nHost: a\nX: b\n\n"[..],
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\n",
            b"GET / HTTP/1.0\n\n",
        ] {
            let (r, h) = req_ok(buf);
            assert!(r.bare_lf, "{:?}", String::from_utf8_lossy(buf));
            assert_eq!(r.head_len, buf.len());
            for x in &h {
                let line = x.line.get(buf);
                assert!(line.ends_with(b"\n"));
                let text = line.strip_suffix(b"\n").unwrap();
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                assert_eq!(text, &buf[x.name.start as usize..x.value.end as usize]);
            }
        }
        assert!(!req_ok(&get_with(&["Host: a", "X: b"])).0.bare_lf);
        assert!(res_ok(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n").bare_lf);
        assert!(!res_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").bare_lf);
    }

    // ---- Connection, hop-by-hop, Expect ----

    #[test]
    fn connection_tokens_set_the_flags_case_insensitively() {
        let (r, _) = req_ok(&get_with(&["Host: a", "Connection: Keep-Alive , CLOSE"]));
        assert!(r.conn.close && r.conn.keep_alive && !r.conn.upgrade);
        assert!(!r.keep_alive());

        let (r, _) = req_ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive());

        let (r, _) = req_ok(&get_with(&[
            "Host: a",
            "Connection: x",
            "Connection: close",
        ]));
        assert!(r.conn.close);
    }

    #[test]
    fn an_upgrade_to_h2c_alone_is_not_an_upgrade() {
        for (upgrade, is) in [
            ("h2c", false),
            ("H2C, h2c", false),
            ("websocket", true),
            ("h2c, websocket", true),
        ] {
            let head = format!(
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
            );
            let (r, _) = req_ok(head.as_bytes());
            assert_eq!(r.conn.upgrade, is, "{upgrade}");
        }
    }

    #[test]
    fn connection_upgrade_counts_only_with_an_upgrade_field() {
        let (r, _) = req_ok(&get_with(&["Host: a", "Connection: Upgrade"]));
        assert!(!r.conn.upgrade);
        let (r, h) = req_ok(&get_with(&[
            "Host: a",
            "Connection: upgrade",
            "Upgrade: websocket",
        ]));
        assert!(r.conn.upgrade);
        assert!(h[2].hop_by_hop);
        let (r, _) = req_ok(&get_with(&["Host: a", "Upgrade: websocket"]));
        assert!(!r.conn.upgrade);
    }

    #[test]
    fn standard_hop_by_hop_fields_are_marked() {
        let buf = post_with(&[
            "Connection: close",
            "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Sum",
            "Transfer-Encoding: chunked",
            "Upgrade: h2c",
            "X-Other: 1",
        ]);
        let (_, h) = req_ok(&buf);
        let hop: Vec<bool> = h.iter().map(|x| x.hop_by_hop).collect();
        assert_eq!(
            hop,
            [false, true, true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn fields_named_by_connection_are_hop_by_hop() {
        let buf = get_with(&[
            "Host: a",
            "Connection: x-secret, X-Other",
            "X-Secret: 1",
            "x-other: 2",
            "X-Kept: 3",
        ]);
        let (_, h) = req_ok(&buf);
        let hop: Vec<bool> = h.iter().map(|x| x.hop_by_hop).collect();
        assert_eq!(hop, [false, true, true, true, false]);
    }

    #[test]
    fn connection_can_never_strip_host_or_content_length() {
        let buf = post_with(&["Connection: Host, content-length", "Content-Length: 3"]);
        let (r, h) = req_ok(&buf);
        assert_eq!(r.framing, Framing::Length(3));
        assert!(!h[0].hop_by_hop, "Host");
        assert!(!h[2].hop_by_hop, "Content-Length");
    }

    #[test]
    fn too_many_connection_options_are_refused() {
        let many: Vec<String> = (0..=MAX_CONNECTION_OPTIONS)
            .map(|i| format!("x{i}"))
            .collect();
        let conn = format!("Connection: {}", many.join(","));
        assert_bad_request(&get_with(&["Host: a", &conn]));
        let ok = format!("Connection: {}", many[1..].join(","));
        req_ok(&get_with(&["Host: a", &ok]));
    }

    #[test]
    fn expect_100_continue_is_detected_case_insensitively() {
        assert!(
            req_ok(&post_with(&["Expect: 100-Continue"]))
                .0
                .expect_continue
        );
        assert!(!req_ok(&post_with(&["Expect: 200-ok"])).0.expect_continue);
        assert!(!req_ok(&post_with(&[])).0.expect_continue);
    }

    #[test]
    fn expect_100_continue_in_http10_is_ignored() {
        let (r, _) =
            req_ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!r.expect_continue);
    }

    #[test]
    fn header_kinds_are_classified_case_insensitively() {
        let names = [
            ("hOST", HeaderKind::Host),
            ("CONTENT-LENGTH", HeaderKind::ContentLength),
            ("Connection", HeaderKind::Connection),
            ("keep-alive", HeaderKind::KeepAlive),
            ("Proxy-Connection", HeaderKind::ProxyConnection),
            ("te", HeaderKind::Te),
            ("Trailer", HeaderKind::Trailer),
            ("UPGRADE", HeaderKind::Upgrade),
            ("Expect", HeaderKind::Expect),
            ("X-Forwarded-For", HeaderKind::XForwardedFor),
            ("x-forwarded-proto", HeaderKind::XForwardedProto),
            ("X-Forwarded-Host", HeaderKind::XForwardedHost),
            ("X-Real-IP", HeaderKind::XRealIp),
            ("Forwarded", HeaderKind::Forwarded),
            ("Transfer-Encodinx", HeaderKind::Other),
            ("Hosts", HeaderKind::Other),
            ("tf", HeaderKind::Other),
            ("X-Forwarded-Fox", HeaderKind::Other),
        ];
        let mut buf = b"GET / HTTP/1.0\r\n".to_vec();
        for (n, _) in names {
            let v = match n {
                "CONTENT-LENGTH" => "1",
                "Transfer-Encodinx" => "chunked",
                _ => "x",
            };
            buf.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let (_, h) = req_ok(&buf);
        let kinds: Vec<HeaderKind> = h.iter().map(|x| x.kind).collect();
        let want: Vec<HeaderKind> = names.iter().map(|&(_, k)| k).collect();
        assert_eq!(kinds, want);
    }

    #[test]
    fn forwarding_line_spans_reproduces_the_end_to_end_lines_byte_exactly() {
        let lines: [&[u8]; 8] = [
            b"Host: example.com\r\n",
            b"Connection: keep-alive, X-Hop\r\n",
            b"x-weird-CASE:\tvalue with  spaces \t\r\n",
            b"X-Hop: drop me\r\n",
            b"Content-Length: 3\r\n",
            b"Keep-Alive: timeout=5\r\n",
            b"X-Empty:\r\n",
            b"X-Obs: \xe2\x82\xac\r\n",
        ];
        let mut buf = b"POST /p HTTP/1.1\r\n".to_vec();
        lines.iter().for_each(|l| buf.extend_from_slice(l));
        buf.extend_from_slice(b"\r\nabc");
        let (r, h) = req_ok(&buf);
        assert_eq!(r.framing, Framing::Length(3));
        let mut forwarded = Vec::new();
        for x in h.iter().filter(|x| !x.hop_by_hop) {
            forwarded.extend_from_slice(x.line.get(&buf));
        }
        let want: Vec<u8> = [0, 2, 4, 6, 7]
            .iter()
            .flat_map(|&i| lines[i].to_vec())
            .collect();
        assert_eq!(forwarded, want);
        // Every line, hop-by-hop or not, is the original bytes in order.
        let all: Vec<u8> = h.iter().flat_map(|x| x.line.get(&buf).to_vec()).collect();
        assert_eq!(all, lines.concat());
    }

    // ---- incremental input ----

    #[test]
    fn every_prefix_of_a_request_is_partial_until_the_last_byte() {
        for full in [
            &b"POST http://h/p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-A: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n",
            b"\r\nGET / HTTP/1.0\r\n\r\n",
        ] {
            let mut h = Vec::new();
            let want = parse_request(full, &LIMITS, &mut h);
            assert!(matches!(want, Parse::Complete(_)), "{want:?}");
            let want_h = h.clone();
            for n in 0..full.len() {
                assert_eq!(
                    parse_request(&full[..n], &LIMITS, &mut h),
                    Parse::Partial,
                    "{n}"
                );
            }
            // Trailing body bytes change nothing.
            let mut more = full.to_vec();
            more.extend_from_slice(b"hello");
            assert_eq!(parse_request(&more, &LIMITS, &mut h), want);
            assert_eq!(h, want_h);
        }
    }

    #[test]
    fn every_prefix_of_a_response_is_partial_until_the_last_byte() {
        for full in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n"[..],
            b"HTTP/1.1 204\nX: y\n\n",
            b"HTTP/1.0 404 Not Found\r\n\r\n",
        ] {
            let mut h = Vec::new();
            let want = parse_response(full, false, &LIMITS, &mut h);
            assert!(matches!(want, Parse::Complete(_)), "{want:?}");
            for n in 0..full.len() {
                assert_eq!(
                    parse_response(&full[..n], false, &LIMITS, &mut h),
                    Parse::Partial
                );
            }
            let mut more = full.to_vec();
            more.extend_from_slice(b"hello");
            assert_eq!(parse_response(&more, false, &LIMITS, &mut h), want);
        }
    }

    #[test]
    fn the_headers_vec_is_cleared_and_its_capacity_reused() {
        let mut h = Vec::with_capacity(16);
        let ptr = h.as_ptr();
        for _ in 0..3 {
            let buf = get_with(&["Host: a", "X: 1", "Y: 2"]);
            assert!(matches!(
                parse_request(&buf, &LIMITS, &mut h),
                Parse::Complete(_)
            ));
            assert_eq!(h.len(), 3);
        }
        assert_eq!(h.as_ptr(), ptr);
        assert_eq!(parse_request(b"GET /", &LIMITS, &mut h), Parse::Partial);
        assert!(h.is_empty());
    }

    // ---- limits ----

    fn small_limits() -> HeadLimits {
        HeadLimits {
            max_head_bytes: 100,
            max_uri_bytes: 20,
            max_headers: 4,
        }
    }

    fn padded_request(head_len: usize) -> Vec<u8> {
        let base = b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n".len();
        let pad = "p".repeat(head_len - base);
        get_with(&["Host: a", &format!("X: {pad}")])
    }

    #[test]
    fn a_head_of_exactly_max_head_bytes_is_accepted() {
        let buf = padded_request(100);
        assert_eq!(buf.len(), 100);
        assert!(matches!(
            parse_request(&buf, &small_limits(), &mut Vec::new()),
            Parse::Complete(_)
        ));
    }

    #[test]
    fn a_complete_head_longer_than_max_head_bytes_gets_431() {
        let buf = padded_request(101);
        assert_eq!(
            parse_request(&buf, &small_limits(), &mut Vec::new()),
            Parse::Invalid(HeadError::HeaderTooLarge)
        );
    }

    #[test]
    fn an_incomplete_head_reaching_max_head_bytes_gets_431() {
        let buf = padded_request(200);
        let lim = small_limits();
        assert_eq!(
            parse_request(&buf[..99], &lim, &mut Vec::new()),
            Parse::Partial
        );
        assert_eq!(
            parse_request(&buf[..100], &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::HeaderTooLarge)
        );
        let resp = format!("HTTP/1.1 200 OK\r\nX: {}", "p".repeat(200));
        assert_eq!(
            parse_response(resp.as_bytes(), false, &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::HeaderTooLarge)
        );
    }

    #[test]
    fn more_fields_than_max_headers_get_431() {
        let lim = small_limits();
        let four = get_with(&["Host: a", "A: 1", "B: 2", "C: 3"]);
        assert!(matches!(
            parse_request(&four, &lim, &mut Vec::new()),
            Parse::Complete(_)
        ));
        let five = get_with(&["Host: a", "A: 1", "B: 2", "C: 3", "D: 4"]);
        assert_eq!(
            parse_request(&five, &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::HeaderTooLarge)
        );
        // Detected as soon as the extra field is complete, before the head is.
        assert_eq!(
            parse_request(&five[..five.len() - 2], &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::HeaderTooLarge)
        );
    }

    #[test]
    fn more_fields_than_the_stack_array_get_431_whatever_the_limit() {
        let lim = HeadLimits {
            max_head_bytes: 1 << 20,
            max_uri_bytes: 1024,
            max_headers: 10_000,
        };
        let fields: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
        let mut refs: Vec<&str> = vec!["Host: a"];
        refs.extend(fields.iter().map(String::as_str));
        assert_eq!(
            parse_request(&get_with(&refs), &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::HeaderTooLarge)
        );
        refs.pop();
        let mut h = Vec::new();
        assert!(matches!(
            parse_request(&get_with(&refs), &lim, &mut h),
            Parse::Complete(_)
        ));
        assert_eq!(h.len(), MAX_HEADERS);
    }

    #[test]
    fn a_target_longer_than_max_uri_bytes_gets_414() {
        let lim = small_limits();
        let ok = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(19));
        assert!(matches!(
            parse_request(ok.as_bytes(), &lim, &mut Vec::new()),
            Parse::Complete(_)
        ));
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20));
        assert_eq!(
            parse_request(long.as_bytes(), &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::UriTooLong)
        );
    }

    #[test]
    fn an_overlong_target_gets_414_before_the_request_line_is_complete() {
        let lim = small_limits();
        let t = format!("GET /{}", "a".repeat(40));
        for n in 0..=t.len() {
            let want = if n > "GET ".len() + 20 {
                Parse::Invalid(HeadError::UriTooLong)
            } else {
                Parse::Partial
            };
            assert_eq!(
                parse_request(&t.as_bytes()[..n], &lim, &mut Vec::new()),
                want,
                "{n}"
            );
        }
        // Also when the request line is complete but the head is not.
        let t = format!("GET /{} HTTP/1.1\r\nHost:", "a".repeat(40));
        assert_eq!(
            parse_request(t.as_bytes(), &lim, &mut Vec::new()),
            Parse::Invalid(HeadError::UriTooLong)
        );
    }

    #[test]
    fn head_errors_map_to_their_status_codes() {
        assert_eq!(HeadError::BadRequest("x").status(), 400);
        assert_eq!(HeadError::HeaderTooLarge.status(), 431);
        assert_eq!(HeadError::UriTooLong.status(), 414);
        assert_eq!(HeadError::VersionNotSupported.status(), 505);
    }

    // ---- robustness ----

    /// Spans of a complete head stay inside it and the lines tile the field section.
    fn check_spans(buf: &[u8], head_len: usize, h: &[HeaderIdx]) {
        assert!(head_len <= buf.len());
        for x in h {
            for sp in [x.name, x.value, x.line] {
                assert!(sp.start <= sp.end && sp.end as usize <= head_len);
            }
            assert!(x.line.start == x.name.start && x.value.end <= x.line.end);
        }
        for w in h.windows(2) {
            assert_eq!(w[0].line.end, w[1].line.start);
        }
        if let Some(last) = h.last() {
            assert_eq!(last.line.end as usize, blank_line_start(buf, head_len));
        }
    }

    #[test]
    fn random_mutations_never_panic_and_keep_spans_in_the_head() {
        let seeds: [&[u8]; 4] = [
            b"POST http://h:1/p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: x, close\r\nX: 1\r\n\r\nhello",
            b"GET / HTTP/1.0\nTransfer-Encoding: chunked\nExpect: 100-continue\n\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.0 101 \xe9\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        ];
        let alphabet = b"\r\n :,;\t/?#*0123456789aHTP.\x00\x7f\xff";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let lim = HeadLimits {
            max_head_bytes: 90,
            max_uri_bytes: 12,
            max_headers: 4,
        };
        let mut h = Vec::new();
        let mut complete = 0;
        for i in 0..40_000 {
            let mut buf = seeds[i % seeds.len()].to_vec();
            for _ in 0..1 + rnd(4) {
                let at = rnd(buf.len() + 1);
                let b = alphabet[rnd(alphabet.len())];
                match rnd(3) {
                    0 if at < buf.len() => buf[at] = b,
                    1 if at < buf.len() => {
                        buf.remove(at);
                    }
                    _ => buf.insert(at, b),
                }
            }
            for l in [&LIMITS, &lim] {
                if let Parse::Complete(r) = parse_request(&buf, l, &mut h) {
                    complete += 1;
                    check_spans(&buf, r.head_len, &h);
                    assert!(r.path.end <= r.target.end && r.target.end as usize <= r.head_len);
                }
                for head in [false, true] {
                    if let Parse::Complete(r) = parse_response(&buf, head, l, &mut h) {
                        complete += 1;
                        check_spans(&buf, r.head_len, &h);
                        assert!(r.reason.end as usize <= r.head_len);
                    }
                }
            }
        }
        // The mutations must leave plenty of heads parseable, or this tests nothing.
        assert!(complete > 10_000, "{complete}");
    }

    // ---- responses ----

    #[test]
    fn a_response_with_content_length_has_length_framing() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
        let r = res_ok(buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.reason.get(buf), b"OK");
        assert_eq!(r.framing, Framing::Length(12));
        assert_eq!(r.head_len, buf.len());
        assert!(r.keep_alive());
    }

    #[test]
    fn a_chunked_response_has_chunked_framing() {
        let buf = response_with("200 OK", &["Transfer-Encoding: Chunked"]);
        assert_eq!(res_ok(&buf).framing, Framing::Chunked);
    }

    #[test]
    fn a_response_without_length_is_close_delimited() {
        let r = res_ok(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(r.framing, Framing::CloseDelimited);
        assert!(!r.keep_alive());
    }

    #[test]
    fn head_1xx_204_and_304_responses_have_no_body() {
        let cl = response_with("200 OK", &["Content-Length: 10"]);
        match res(&cl, true) {
            Parse::Complete(r) => assert_eq!(r.framing, Framing::None),
            other => panic!("{other:?}"),
        }
        for status in [
            "100 Continue",
            "101 Switching Protocols",
            "103",
            "204 No Content",
            "304",
        ] {
            let buf = response_with(status, &["Content-Length: 10"]);
            assert_eq!(res_ok(&buf).framing, Framing::None, "{status}");
            let buf = response_with(status, &[]);
            assert_eq!(res_ok(&buf).framing, Framing::None, "{status}");
        }
    }

    #[test]
    fn interim_responses_parse_like_any_other() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        let r = res_ok(buf);
        assert_eq!(r.status, 100);
        assert_eq!(r.head_len, 25);
        assert_eq!(r.reason.get(buf), b"Continue");
        let r = res_ok(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(r.status, 101);
        assert!(r.conn.upgrade);
    }

    #[test]
    fn a_response_with_content_length_and_transfer_encoding_is_invalid() {
        assert_bad_response(&response_with(
            "200 OK",
            &["Content-Length: 3", "Transfer-Encoding: chunked"],
        ));
        // Even where neither decides the framing.
        assert_bad_response(&response_with(
            "304 Not Modified",
            &["Transfer-Encoding: chunked", "Content-Length: 3"],
        ));
    }

    #[test]
    fn a_response_whose_final_coding_is_not_chunked_is_invalid() {
        for v in ["gzip", "chunked, gzip", "gzip, chunked", "chunked, chunked"] {
            assert_bad_response(&response_with(
                "200 OK",
                &[&format!("Transfer-Encoding: {v}")],
            ));
        }
    }

    #[test]
    fn transfer_encoding_in_an_http10_response_is_invalid() {
        assert_bad_response(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    }

    #[test]
    fn response_field_rules_match_request_field_rules() {
        assert_bad_response(&response_with(
            "200 OK",
            &["Content-Length: 1", "Content-Length: 2"],
        ));
        assert_bad_response(&response_with("200 OK", &["Content-Length: 1,2"]));
        assert_bad_response(&response_with("200 OK", &["Content-Length: x"]));
        assert_bad_response(&response_with("200 OK", &["X: a", " folded"]));
        assert_bad_response(&response_with("200 OK", &["Content-Length : 1"]));
        assert_bad_response(&response_with("200 OK", &["X\x01: a"]));
        assert_bad_response(&response_with("200 OK", &["X: a\x00"]));
    }

    #[test]
    fn a_status_outside_100_to_599_is_invalid() {
        for s in ["000", "099", "600", "999"] {
            assert_bad_response(&response_with(s, &[]));
        }
        assert_bad_response(b"HTTP/1.1 20 OK\r\n\r\n");
        assert_bad_response(b"HTTP/1.1 2000 OK\r\n\r\n");
        assert_bad_response(b"HTTP/1.1  200 OK\r\n\r\n");
    }

    #[test]
    fn the_reason_span_covers_the_phrase_even_with_obs_text() {
        // httparse reports "" for a phrase with obs-text; the span still points at the bytes.
        let buf = b"HTTP/1.1 200 Tr\xe8s bien\r\nX: y\r\n\r\n";
        assert_eq!(res_ok(buf).reason.get(buf), b"Tr\xe8s bien");
        let buf = b"HTTP/1.1 200\r\n\r\n";
        assert!(res_ok(buf).reason.is_empty());
        let buf = b"HTTP/1.1 200 \r\n\r\n";
        assert!(res_ok(buf).reason.is_empty());
        let buf = b"\r\nHTTP/1.1 404 Not  Found\n\n";
        assert_eq!(res_ok(buf).reason.get(buf), b"Not  Found");
    }

    #[test]
    fn response_headers_are_indexed_with_hop_by_hop_marks() {
        let buf = response_with(
            "200 OK",
            &[
                "Connection: close, X-Internal",
                "X-Internal: 1",
                "Content-Length: 0",
                "Server: s",
            ],
        );
        let mut h = Vec::new();
        let r = match parse_response(&buf, false, &LIMITS, &mut h) {
            Parse::Complete(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(r.conn.close && !r.keep_alive());
        let hop: Vec<bool> = h.iter().map(|x| x.hop_by_hop).collect();
        assert_eq!(hop, [true, true, false, false]);
        assert_eq!(h[3].line.get(&buf), b"Server: s\r\n");
    }
}
