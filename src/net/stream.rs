//! One type for TCP, Unix-socket and TLS connections, so the data path is written once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller,
};
use monoio::net::{TcpStream, UnixStream};

use crate::net::sock::read_until;

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client whose TLS we terminate; boxed because the session and its buffers are large.
    /// The descriptor is the socket's, for non-blocking peeks.
    TlsServer(Box<crate::net::tls_stream::TlsServer>, RawFd),
    /// An upstream we dialed with TLS (and its socket's descriptor).
    TlsClient(Box<crate::net::tls_stream::TlsClient>, RawFd),
    /// One end of an in-memory pair: a WebSocket over an HTTP/2 stream (either side).
    Mem(crate::net::duplex::End),
    /// An HTTP/2 stream served by the HTTP/1 data path: reads take its request body, writes
    /// send its response (`http2::down`).
    H2(crate::http2::down::Down),
}

pub use crate::net::tls_stream::Sock;

impl Sock {
    /// The plaintext stream over this socket (a tunnel is already a TLS client stream).
    pub fn into_stream(self) -> Stream {
        match self {
            Sock::Tcp(s) => Stream::Tcp(s),
            Sock::Unix(s) => Stream::Unix(s),
            Sock::Tunnel(s, fd) => Stream::TlsClient(s, fd),
        }
    }
}

impl Stream {
    /// Reads into the spare capacity of `buf` (after its current length), growing the length.
    /// `Ok(0)` is end of stream; a full buffer must be grown or drained by the caller first.
    pub async fn read_more(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        debug_assert!(buf.len() < buf.capacity(), "read_more needs spare capacity");
        if let Stream::Mem(s) = self {
            let mut buf = buf;
            let res = s.read_more(&mut buf).await;
            return (res, buf);
        }
        if let Stream::H2(s) = self {
            let mut buf = buf;
            let res = s.read_more(&mut buf).await;
            return (res, buf);
        }
        let start = buf.len();
        let end = buf.capacity();
        let slice = buf.slice_mut(start..end);
        let (res, slice) = match self {
            Stream::Tcp(s) => s.read(slice).await,
            Stream::Unix(s) => s.read(slice).await,
            Stream::TlsServer(s, _) => s.read(slice).await,
            Stream::TlsClient(s, _) => s.read(slice).await,
            Stream::Mem(_) | Stream::H2(_) => unreachable!("read above"),
        };
        (res, slice.into_inner())
    }

    /// Writes `buf[range]` completely and hands the buffer back.
    pub async fn write_range(
        &mut self,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        if range.is_empty() {
            return (Ok(()), buf);
        }
        if let Stream::Mem(s) = self {
            let res = s.write_all(&buf[range]).await;
            return (res, buf);
        }
        if let Stream::H2(s) = self {
            let res = s.write_all(&buf[range]).await;
            return (res, buf);
        }
        let slice = buf.slice(range);
        let (res, slice) = match self {
            Stream::Tcp(s) => s.write_all(slice).await,
            Stream::Unix(s) => s.write_all(slice).await,
            Stream::TlsServer(s, _) => s.write_all(slice).await,
            Stream::TlsClient(s, _) => s.write_all(slice).await,
            Stream::Mem(_) | Stream::H2(_) => unreachable!("written above"),
        };
        (res.map(|_| ()), slice.into_inner())
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let len = buf.len();
        self.write_range(buf, 0..len).await
    }

    /// Sends FIN so a close-delimited peer sees the end.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Unix(s) => s.shutdown().await,
            // close_notify first, then FIN.
            Stream::TlsServer(s, _) => s.shutdown().await,
            Stream::TlsClient(s, _) => s.shutdown().await,
            Stream::Mem(s) => {
                s.shutdown();
                Ok(())
            }
            Stream::H2(s) => {
                s.shutdown();
                Ok(())
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(..) | Stream::TlsClient(..))
    }

    /// Whether an idle connection can wait for input holding no buffer: sockets, and TLS
    /// streams we serve (whose quiet read gives up only with nothing decrypted or buffered).
    pub fn can_park(&self) -> bool {
        matches!(
            self,
            Stream::Tcp(_) | Stream::Unix(_) | Stream::TlsServer(..)
        )
    }

    /// Frees what a parked connection does not need (a TLS stream's ciphertext buffers).
    pub fn release_idle(&mut self) {
        if let Stream::TlsServer(s, _) = self {
            s.release_buffers();
        }
    }

    /// `read_more`, giving up once `quiet` completes with nothing read (`None` then) without
    /// losing input: the read is cancelled and its completion awaited, so bytes that raced the
    /// cancel are kept. `quiet` may be a deadline of the worker's idle clock (no timer entry of
    /// its own). TLS client streams read as `read_more` does.
    pub async fn read_more_until<Q: std::future::Future<Output = ()>>(
        &mut self,
        buf: Vec<u8>,
        quiet: std::pin::Pin<&mut Q>,
        canceller: &mut Canceller,
    ) -> (Option<io::Result<usize>>, Vec<u8>) {
        debug_assert!(buf.len() < buf.capacity(), "read_more needs spare capacity");
        let start = buf.len();
        let end = buf.capacity();
        let slice = buf.slice_mut(start..end);
        let handle = canceller.handle();
        let (res, slice) = match self {
            Stream::Tcp(s) => read_until(s.cancelable_read(slice, handle), quiet, canceller).await,
            Stream::Unix(s) => read_until(s.cancelable_read(slice, handle), quiet, canceller).await,
            Stream::TlsServer(s, _) => s.read_until(slice, quiet, canceller).await,
            _ => {
                let (res, buf) = self.read_more(slice.into_inner()).await;
                return (Some(res), buf);
            }
        };
        (res, slice.into_inner())
    }
}

impl Stream {
    /// Whether an idle connection was closed (or sent unexpected bytes) by its peer, checked
    /// with a non-blocking peek that consumes nothing.
    pub fn peer_closed(&self) -> bool {
        !matches!(self.peek_byte(), Peeked::Quiet)
    }

    /// Whether bytes wait to be read: unlike `peer_closed`, a FIN alone is not input (closing
    /// then loses nothing, so no lingering close is needed).
    pub fn input_waiting(&self) -> bool {
        matches!(self.peek_byte(), Peeked::Bytes)
    }

    fn peek_byte(&self) -> Peeked {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            // Any byte on an idle TLS connection (close_notify included) means it is done.
            Stream::TlsServer(_, fd) | Stream::TlsClient(_, fd) => *fd,
            // Never pooled: an in-memory stream serves one request.
            Stream::Mem(_) | Stream::H2(_) => return Peeked::Quiet,
        };
        let mut byte = 0u8;
        // SAFETY: recv writes at most 1 byte into `byte`, which outlives the call.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            1.. => Peeked::Bytes,
            0 => Peeked::Closed,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
                Peeked::Quiet
            }
            _ => Peeked::Closed,
        }
    }
}

/// What a non-blocking peek at a socket found.
enum Peeked {
    /// Bytes nobody asked for yet.
    Bytes,
    /// FIN, or an error (reset): nothing more will come.
    Closed,
    /// Alive, nothing waiting.
    Quiet,
}

impl Stream {
    /// The local address of a TCP connection (what a FastCGI application gets as
    /// SERVER_ADDR/SERVER_PORT); `None` for Unix sockets or when the kernel says no.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::TlsServer(_, fd) | Stream::TlsClient(_, fd) => *fd,
            Stream::Unix(_) | Stream::Mem(_) | Stream::H2(_) => return None,
        };
        // SAFETY: `fd` belongs to this stream, which outlives the borrow (used only here).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
    }
}

/// TLS bytes must pass through rustls (in-memory ones have no descriptor); callers check
/// `can_splice` first.
fn not_spliceable() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "TLS streams cannot splice")
}

/// Bytes of spare capacity to ensure before a read; small reads waste syscalls.
pub const MIN_READ_SPACE: usize = 4096;

/// Makes room for a read: keeps at least `MIN_READ_SPACE` spare bytes without exceeding `cap`
/// total capacity unless the buffer already holds more.
pub fn reserve_read_space(buf: &mut Vec<u8>, cap: usize) {
    let spare = buf.capacity() - buf.len();
    if spare < MIN_READ_SPACE {
        let want = (buf.len() + MIN_READ_SPACE)
            .max(buf.capacity() * 2)
            .min(cap.max(buf.len() + MIN_READ_SPACE));
        buf.reserve_exact(want - buf.len());
    }
}

impl Stream {
    /// The socket splices move bytes through (plaintext sockets only).
    pub fn splice_fd(&self) -> io::Result<RawFd> {
        match self {
            Stream::Tcp(s) => Ok(s.as_raw_fd()),
            Stream::Unix(s) => Ok(s.as_raw_fd()),
            Stream::TlsServer(..) | Stream::TlsClient(..) | Stream::Mem(_) | Stream::H2(_) => {
                Err(not_spliceable())
            }
        }
    }

    /// Puts the socket in non-blocking mode before splicing: SPLICE_F_NONBLOCK covers only
    /// the pipe, and io_uring leaves sockets blocking, so a full peer would otherwise stall
    /// the whole worker inside splice(2). io_uring's own operations work either way.
    pub fn prepare_splice(&self) -> io::Result<()> {
        let fd = self.splice_fd()?;
        // SAFETY: F_GETFL/F_SETFL on an open descriptor have no memory effects.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return Err(io::Error::last_os_error());
            }
            if flags & libc::O_NONBLOCK == 0
                && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits, holding no buffer, until the peer sends something or closes (sockets, and TLS
    /// streams we serve once `read_more_until` gave up).
    pub async fn wait_readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable(false).await,
            Stream::Unix(s) => s.readable(false).await,
            Stream::TlsServer(s, _) => s.socket().readable(false).await,
            Stream::TlsClient(..) | Stream::Mem(_) | Stream::H2(_) => Err(not_spliceable()),
        }
    }

    /// Waits, holding no buffer, until the socket takes bytes again (plain sockets).
    pub async fn wait_writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable(false).await,
            Stream::Unix(s) => s.writable(false).await,
            Stream::TlsServer(..) | Stream::TlsClient(..) | Stream::Mem(_) | Stream::H2(_) => {
                Err(not_spliceable())
            }
        }
    }

    /// Whether this stream's bytes can move with splice (plaintext sockets can; TLS cannot).
    pub fn can_splice(&self) -> bool {
        matches!(self, Stream::Tcp(_) | Stream::Unix(_))
    }
}
