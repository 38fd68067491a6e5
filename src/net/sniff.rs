//! The first byte on a TLS listener, read before the handshake: a client that speaks plain
//! HTTP to a TLS port gets nginx's 400 answer instead of a silent close it cannot explain.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::net::stream::Sock;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// TLS records of type handshake start with this byte; a ClientHello always does.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long the rest of the refused request may take to drain after the answer.
const LINGER: Duration = Duration::from_secs(1);

/// nginx's words for the same mistake, so the answer reads as users know it.
pub const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Content-Length: 46\r\n\
Connection: close\r\n\
\r\n\
The plain HTTP request was sent to HTTPS port\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstByte {
    /// A TLS handshake record: go on with the handshake.
    Tls,
    /// An upper-case letter: the start of an HTTP method.
    PlainHttp,
    /// Anything else: the handshake will refuse it.
    Other,
}

pub fn classify(first: u8) -> FirstByte {
    match first {
        TLS_HANDSHAKE => FirstByte::Tls,
        b'A'..=b'Z' => FirstByte::PlainHttp,
        _ => FirstByte::Other,
    }
}

/// Waits (at most `limit`) for the first byte without consuming it. `None`: the peer closed,
/// failed or the time ran out (the handshake would fail the same way).
pub async fn peek_first(tcp: &Sock, limit: Option<Duration>) -> Option<u8> {
    let wait = async {
        loop {
            let mut byte = 0u8;
            // SAFETY: `byte` is a valid one-byte buffer for the call's duration and the fd is
            // owned by `tcp`, which outlives the call; MSG_PEEK leaves the byte for rustls.
            let n = unsafe {
                libc::recv(
                    tcp.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            match n {
                1 => return Some(byte),
                0 => return None,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => tcp.readable(false).await.ok()?,
                        io::ErrorKind::Interrupted => {}
                        _ => return None,
                    }
                }
            }
        }
    };
    match limit {
        Some(limit) => monoio::time::timeout(limit, wait).await.ok().flatten(),
        None => wait.await,
    }
}

/// False when the client spoke plain HTTP (answered with a 400 here) or sent nothing in time;
/// true when the handshake should go on (rustls judges anything that is not HTTP).
/// `failed` runs before any answer is written, so whoever reads the answer sees it counted.
pub async fn tls_or_refuse(
    tcp: &mut Sock,
    limit: Option<Duration>,
    failed: impl FnOnce(Option<FirstByte>),
) -> bool {
    match peek_first(tcp, limit).await.map(classify) {
        None => {
            failed(None);
            false
        }
        Some(FirstByte::PlainHttp) => {
            failed(Some(FirstByte::PlainHttp));
            refuse_plain_http(tcp).await;
            false
        }
        Some(FirstByte::Tls | FirstByte::Other) => true,
    }
}

/// Answers a plain HTTP request on a TLS port with nginx's 400; the caller then closes.
pub async fn refuse_plain_http(tcp: &mut Sock) {
    let (_, _) = tcp.write_all(PLAIN_HTTP_ON_TLS).await;
    // Lets the answer leave before the close; unread request bytes would otherwise make the
    // kernel send a reset that can destroy it in flight.
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 4096];
        loop {
            let (r, b) = tcp.read(buf).await;
            buf = b;
            if !matches!(r, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = monoio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_classified() {
        for (byte, want) in [
            (0x16, FirstByte::Tls),
            (b'G', FirstByte::PlainHttp),
            (b'P', FirstByte::PlainHttp),
            (b'g', FirstByte::Other),
            (0x80, FirstByte::Other),
            (b'\r', FirstByte::Other),
        ] {
            assert_eq!(classify(byte), want, "{byte:#x}");
        }
    }

    #[test]
    fn the_plain_http_answer_has_the_right_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ON_TLS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
