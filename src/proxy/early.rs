//! Early answers: an upstream may answer (401, 403, 413...) before it has read the request
//! body, and then stop reading. Waiting for the body to go through would end in a write
//! timeout and a 502 in place of the upstream's answer, so while a body streams upstream the
//! upstream socket is watched: the first response byte stops the body, and the response is
//! relayed as usual (the exchange then closes the upstream connection, and the client side
//! closes lingering, see `proxy::linger`).

use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use crate::error::{ProxyError, Side};
use crate::http1::parse::Framing;
use crate::net::stream::Stream;
use crate::net::tls_stream::{Head, TlsClient};
use crate::proxy::relay::BodyLimits;
use crate::proxy::session::Session;
use crate::upstream::pool::UpConn;

/// How a request body went upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// Every byte of it.
    Whole,
    /// The upstream began its response first: the rest of the body was not sent.
    Cut,
}

/// A second descriptor of an upstream socket, only to wait for it to turn readable while the
/// relay owns the stream; for a TLS upstream, also the stream, to decrypt what arrived.
struct Watch {
    sock: WatchSock,
    tls: Option<(*mut TlsClient, RawFd)>,
}

enum WatchSock {
    Tcp(monoio::net::TcpStream),
    Unix(monoio::net::UnixStream),
}

/// What turned the upstream socket readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// TLS records with no plaintext (a TLS 1.3 session ticket): keep sending, keep watching.
    Nothing,
    /// An interim (1xx) response: the upstream still wants the body.
    Interim,
    /// A final response, an end of stream or an error: stop the body.
    Final,
}

impl Watch {
    /// `None` for in-memory streams and TLS through a forward proxy's tunnel (whose socket
    /// carries the tunnel's own TLS): those keep streaming the whole body.
    fn of(stream: &mut Stream) -> Option<Watch> {
        let (fd, unix, tls) = match stream {
            Stream::Tcp(s) => (s.as_raw_fd(), false, None),
            Stream::Unix(s) => (s.as_raw_fd(), true, None),
            Stream::TlsClient(s, fd) if s.can_probe() => {
                let tls: *mut TlsClient = &mut **s;
                (*fd, s.is_unix(), Some((tls, *fd)))
            }
            // Upstreams are sockets; a server-side stream is only ever a client.
            Stream::TlsServer(..) | Stream::TlsClient(..) | Stream::Mem(_) | Stream::H2(_) => {
                return None
            }
        };
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor has no memory effects; the new
        // descriptor is owned by the stream built from it below and closed with it.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        let sock = if unix {
            // SAFETY: `dup` is a fresh descriptor of a Unix socket that nothing else owns.
            let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup) };
            WatchSock::Unix(monoio::net::UnixStream::from_std(s).ok()?)
        } else {
            // SAFETY: `dup` is a fresh descriptor of a TCP socket that nothing else owns.
            let s = unsafe { std::net::TcpStream::from_raw_fd(dup) };
            WatchSock::Tcp(monoio::net::TcpStream::from_std(s).ok()?)
        };
        Some(Watch { sock, tls })
    }

    async fn readable(&self) -> std::io::Result<()> {
        match &self.sock {
            WatchSock::Tcp(s) => s.readable(false).await,
            WatchSock::Unix(s) => s.readable(false).await,
        }
    }

    fn fd(&self) -> i32 {
        match &self.sock {
            WatchSock::Tcp(s) => s.as_raw_fd(),
            WatchSock::Unix(s) => s.as_raw_fd(),
        }
    }

    /// What arrived, once the socket turned readable.
    fn seen(&self) -> Seen {
        let (n, head) = match self.tls {
            None => self.peek(),
            Some((tls, fd)) => match decrypt(tls, fd) {
                Ok(None) => return Seen::Nothing,
                Ok(Some(found)) => found,
                Err(_) => return Seen::Final,
            },
        };
        if n == head.len() && is_interim_start(&head) {
            Seen::Interim
        } else {
            Seen::Final
        }
    }

    /// Whether response bytes wait to be read (a write failed because the upstream answered
    /// and closed: its answer is still readable).
    fn response_pending(&self) -> bool {
        match self.tls {
            None => self.peek().0 > 0,
            // TLS: only plaintext is a response (a session ticket is not).
            Some((tls, fd)) => matches!(decrypt(tls, fd), Ok(Some(_))),
        }
    }

    /// The first bytes waiting in the socket, without consuming them.
    fn peek(&self) -> (usize, [u8; 10]) {
        let mut head = [0u8; 10];
        // SAFETY: recv writes at most `head.len()` bytes into `head`, which outlives the call.
        let n = unsafe {
            libc::recv(
                self.fd(),
                head.as_mut_ptr().cast(),
                head.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        (n.max(0) as usize, head)
    }
}

/// What a TLS upstream sent, decrypted and left in its stream for the response to read.
/// Called only while the body relay is suspended (between its polls) or done.
fn decrypt(tls: *mut TlsClient, fd: RawFd) -> std::io::Result<Option<Head>> {
    // SAFETY: the pointer is the upstream's boxed TLS stream, which outlives the watch (both
    // live within `send_body`'s borrow of the connection). The relay that also holds it is
    // suspended while this runs, on this thread, and has no read in flight (it only writes
    // upstream); a suspended write holds only the socket and its own taken buffer, which the
    // probe leaves alone: the contract that makes the stream `Split`.
    unsafe { (*tls).probe_plaintext(fd) }
}

/// `HTTP/1.x 1`: the start of a 1xx status line.
fn is_interim_start(b: &[u8; 10]) -> bool {
    b.starts_with(b"HTTP/1.") && b[8] == b' ' && b[9] == b'1'
}

/// Streams the rest of the request body from the client to the upstream, as received, unless
/// the upstream starts a final response first.
pub(crate) async fn send_body(
    sess: &mut Session<'_>,
    conn: &mut UpConn,
    rest: Framing,
    lim: &BodyLimits,
) -> Result<BodyEnd, ProxyError> {
    let watch = match rest {
        Framing::None | Framing::Length(0) => None,
        _ => Watch::of(&mut conn.stream),
    };
    let Some(watch) = watch else {
        crate::proxy::relay::stream_body(sess, conn, rest, lim).await?;
        return Ok(BodyEnd::Whole);
    };
    // A relay stopped mid-operation takes the receive buffer with it: keep the head (which
    // the response phase still reads) to put back.
    let floor = sess.down.floor;
    let head = sess.down.buf[..floor].to_vec();
    let end = {
        let mut body = std::pin::pin!(crate::proxy::relay::stream_body(sess, conn, rest, lim));
        loop {
            let readable = monoio::select! {
                r = &mut body => break match r {
                    Ok(()) => Ok(BodyEnd::Whole),
                    Err(e) if e.side == Side::Upstream && watch.response_pending() => Ok(BodyEnd::Cut),
                    Err(e) => Err(e),
                },
                r = watch.readable() => r.is_ok(),
            };
            match if readable { watch.seen() } else { Seen::Final } {
                Seen::Nothing => continue,
                // 100 Continue (to a client that sent its body at once): carry on.
                Seen::Interim => break body.await.map(|()| BodyEnd::Whole),
                Seen::Final => break Ok(BodyEnd::Cut),
            }
        }
    };
    if matches!(end, Ok(BodyEnd::Cut)) {
        sess.down.buf.clear();
        sess.down.buf.extend_from_slice(&head);
        sess.down.pos = floor;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_1xx_status_line_start_is_interim() {
        for (bytes, interim) in [
            (b"HTTP/1.1 100", true),
            (b"HTTP/1.0 103", true),
            (b"HTTP/1.1 200", false),
            (b"HTTP/1.1 401", false),
            (b"HTTP/1.1  10", false),
            (b"garbage!!!!!", false),
        ] {
            let head: [u8; 10] = bytes[..10].try_into().unwrap();
            assert_eq!(is_interim_start(&head), interim, "{bytes:?}");
        }
    }
}
