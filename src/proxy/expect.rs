//! `transport.expect_continue_timeout`: a request with `Expect: 100-continue` sends the
//! upstream its head and holds the body back for the upstream's `100 Continue` (relayed to the
//! client) or final answer (relayed, the body never sent). With the timeout, an upstream that
//! stays silent that long gets the body anyway, as Go's `ExpectContinueTimeout` does: the
//! client is told `100 Continue` by ringway, and a late 100 from the upstream is not passed on
//! a second time.

use std::os::fd::{FromRawFd, RawFd};
use std::time::Instant;

use crate::error::{ProxyError, Side};
use crate::net::stream::Stream;
use crate::proxy::relay::io_err;

/// The interim answer ringway gives the client when it sends the body unasked.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether the upstream sent anything before `by`. Waits for its socket to turn readable
/// (nothing is read, so no byte can be lost when the time runs out). On a TLS upstream any
/// record counts, a session ticket too: the body then waits for the 100 as without the timeout.
pub(crate) async fn answered_by(stream: &Stream, by: Instant) -> bool {
    let by = monoio::time::Instant::from_std(by);
    match stream {
        Stream::Tcp(_) | Stream::Unix(_) => monoio::time::timeout_at(by, stream.wait_readable())
            .await
            .is_ok(),
        Stream::TlsClient(_, fd) => match Socket::dup(*fd) {
            Some(s) => monoio::time::timeout_at(by, s.readable()).await.is_ok(),
            None => true,
        },
        // Upstreams are sockets.
        Stream::TlsServer(..) | Stream::Mem(_) | Stream::H2(_) => true,
    }
}

/// Tells an HTTP/1.1 client to send its body: ringway goes ahead without the upstream's 100.
pub(crate) async fn go_ahead(stream: &mut Stream, http11: bool) -> Result<(), ProxyError> {
    if !http11 {
        return Ok(());
    }
    let (res, _) = stream.write_all(CONTINUE.to_vec()).await;
    res.map_err(|e| io_err(Side::Downstream, e))
}

/// A second descriptor of a TLS upstream's socket, to wait for readability while the TLS
/// stream keeps the first.
enum Socket {
    Tcp(monoio::net::TcpStream),
    Unix(monoio::net::UnixStream),
}

impl Socket {
    fn dup(fd: RawFd) -> Option<Socket> {
        // SAFETY: `fd` is the open socket of the stream that outlives this call; the borrow
        // only asks its address family.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let tcp = socket2::SockRef::from(&borrowed)
            .local_addr()
            .ok()?
            .as_socket()
            .is_some();
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor has no memory effects; the new
        // descriptor is owned by the stream built from it below and closed with it.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        if tcp {
            // SAFETY: `dup` is a fresh descriptor of a TCP socket that nothing else owns.
            let s = unsafe { std::net::TcpStream::from_raw_fd(dup) };
            monoio::net::TcpStream::from_std(s).ok().map(Socket::Tcp)
        } else {
            // SAFETY: `dup` is a fresh descriptor of a Unix socket that nothing else owns.
            let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup) };
            monoio::net::UnixStream::from_std(s).ok().map(Socket::Unix)
        }
    }

    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => s.readable(false).await,
            Socket::Unix(s) => s.readable(false).await,
        }
    }
}
