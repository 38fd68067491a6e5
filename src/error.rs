//! Proxy errors carry the side that failed and whether a retry is safe; `status()` maps each
//! to the one answer the client gets, in one place.

use std::io;

use crate::http1::parse::HeadError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug)]
pub enum ErrorKind {
    /// The client's head was refused (400/414/431/505).
    BadHead(HeadError),
    /// The client's body framing was malformed.
    BadBody(&'static str),
    /// Content-Length or chunked body over `limits.max_request_body`.
    BodyTooLarge,
    /// The whole head did not arrive within `header_read_timeout`.
    HeadTimeout,
    /// Client connection failed or closed mid-exchange.
    ClientIo(io::Error),
    /// Every target is down or full.
    NoTarget,
    Dial(io::Error),
    DialTimeout,
    /// The TLS handshake with the upstream failed; says why (unknown issuer, name mismatch...).
    UpstreamTls(String),
    /// The upstream broke the protocol (bad head, bad framing).
    UpstreamInvalid(&'static str),
    /// The upstream closed or failed; `before_response` when no response byte had arrived.
    UpstreamIo {
        err: io::Error,
        before_response: bool,
    },
    UpstreamTimeout,
}

#[derive(Debug)]
pub struct ProxyError {
    pub side: Side,
    pub kind: ErrorKind,
    /// Nothing reached the upstream that it could have acted on, so another attempt is safe.
    pub retry_safe: bool,
}

impl ProxyError {
    pub fn downstream(kind: ErrorKind) -> Self {
        ProxyError {
            side: Side::Downstream,
            kind,
            retry_safe: false,
        }
    }

    pub fn upstream(kind: ErrorKind, retry_safe: bool) -> Self {
        ProxyError {
            side: Side::Upstream,
            kind,
            retry_safe,
        }
    }

    /// The status the client gets, or `None` when the client cannot be answered (it is gone).
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::BadHead(e) => Some(e.status()),
            ErrorKind::BadBody(_) => Some(400),
            ErrorKind::BodyTooLarge => Some(413),
            ErrorKind::HeadTimeout => Some(408),
            ErrorKind::ClientIo(_) => None,
            ErrorKind::NoTarget => Some(503),
            ErrorKind::Dial(_)
            | ErrorKind::UpstreamTls(_)
            | ErrorKind::UpstreamInvalid(_)
            | ErrorKind::UpstreamIo { .. } => Some(502),
            ErrorKind::DialTimeout | ErrorKind::UpstreamTimeout => Some(504),
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ErrorKind::BadHead(e) => write!(f, "bad request head: {}", e.reason()),
            ErrorKind::BadBody(r) => write!(f, "bad request body: {r}"),
            ErrorKind::BodyTooLarge => write!(f, "request body too large"),
            ErrorKind::HeadTimeout => write!(f, "request head timed out"),
            ErrorKind::ClientIo(e) => write!(f, "client i/o: {e}"),
            ErrorKind::NoTarget => write!(f, "no upstream target available"),
            ErrorKind::Dial(e) => write!(f, "upstream dial failed: {e}"),
            ErrorKind::DialTimeout => write!(f, "upstream dial timed out"),
            ErrorKind::UpstreamTls(why) => write!(f, "upstream TLS handshake failed: {why}"),
            ErrorKind::UpstreamInvalid(r) => write!(f, "invalid upstream response: {r}"),
            ErrorKind::UpstreamIo { err, .. } => write!(f, "upstream i/o: {err}"),
            ErrorKind::UpstreamTimeout => write!(f, "upstream timed out"),
        }
    }
}

/// Reason phrase for the statuses ringway itself produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete short error response that closes the connection.
pub fn write_error_response(status: u16, out: &mut Vec<u8>) {
    use std::io::Write;
    let reason = reason_phrase(status);
    let body_len = 4 + reason.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n{status} {reason}\n"
    );
}
