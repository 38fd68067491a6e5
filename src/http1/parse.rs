//! Request and response heads parsed with httparse straight from the receive buffer.
//!
//! Nothing is copied: a parsed head is a set of offsets into the buffer it was parsed from, so
//! untouched header lines can be forwarded as their original bytes.

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
    /// The path part of the target (before `?`).
    pub path: Span,
    /// After `?`, without it; `None` when there is no `?`.
    pub query: Option<Span>,
    pub version: Version,
    /// Value of the (single) Host field.
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

/// Parses a request head from the start of `buf`. On `Complete`, `headers` holds one entry per
/// field in order (cleared first; its capacity is reused across requests).
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    headers: &mut Vec<HeaderIdx>,
) -> Parse<RequestHead> {
    let _ = (buf, limits, headers);
    Parse::Partial
}

/// Parses a response head. `head_request` and the status decide whether a body follows.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    limits: &HeadLimits,
    headers: &mut Vec<HeaderIdx>,
) -> Parse<ResponseHead> {
    let _ = (buf, head_request, limits, headers);
    Parse::Partial
}
