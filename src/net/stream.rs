//! One type for TCP, Unix-socket and TLS connections, so the data path is written once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpStream, UnixStream};

use crate::net::splice::Pipe;

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client whose TLS we terminate; boxed because the session and its buffers are large.
    /// The descriptor is the socket's, for non-blocking peeks.
    TlsServer(Box<monoio_rustls::ServerTlsStream<Sock>>, RawFd),
    /// An upstream we dialed with TLS (and its socket's descriptor).
    TlsClient(Box<monoio_rustls::ClientTlsStream<Sock>>, RawFd),
}

/// The socket under a TLS stream: TCP, or a Unix socket (TLS on unix listeners and to unix
/// targets). One match per TLS record read or written; the plaintext paths never see it.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

// SAFETY: both sockets allow a read and a write in flight at once (monoio marks them `Split`).
unsafe impl monoio::io::Split for Sock {}

impl AsyncReadRent for Sock {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.read(buf).await,
            Sock::Unix(s) => s.read(buf).await,
        }
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.readv(buf).await,
            Sock::Unix(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Sock {
    async fn write<T: IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.write(buf).await,
            Sock::Unix(s) => s.write(buf).await,
        }
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.writev(buf).await,
            Sock::Unix(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush().await,
            Sock::Unix(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown().await,
            Sock::Unix(s) => s.shutdown().await,
        }
    }
}

impl Stream {
    /// Reads into the spare capacity of `buf` (after its current length), growing the length.
    /// `Ok(0)` is end of stream; a full buffer must be grown or drained by the caller first.
    pub async fn read_more(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        debug_assert!(buf.len() < buf.capacity(), "read_more needs spare capacity");
        let start = buf.len();
        let end = buf.capacity();
        let slice = buf.slice_mut(start..end);
        let (res, slice) = match self {
            Stream::Tcp(s) => s.read(slice).await,
            Stream::Unix(s) => s.read(slice).await,
            Stream::TlsServer(s, _) => s.read(slice).await,
            Stream::TlsClient(s, _) => s.read(slice).await,
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
        let slice = buf.slice(range);
        let (res, slice) = match self {
            Stream::Tcp(s) => s.write_all(slice).await,
            Stream::Unix(s) => s.write_all(slice).await,
            Stream::TlsServer(s, _) => s.write_all(slice).await,
            Stream::TlsClient(s, _) => s.write_all(slice).await,
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
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(..) | Stream::TlsClient(..))
    }
}

impl Stream {
    /// Whether an idle connection was closed (or sent unexpected bytes) by its peer, checked
    /// with a non-blocking peek that consumes nothing.
    pub fn peer_closed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            // Any byte on an idle TLS connection (close_notify included) means it is done.
            Stream::TlsServer(_, fd) | Stream::TlsClient(_, fd) => *fd,
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
        // 0: FIN; >0: bytes nobody asked for; <0 with EAGAIN: alive and quiet.
        n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
    }
}

/// TLS bytes must pass through rustls; callers check `can_splice` first.
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
    fn splice_fd(&self) -> io::Result<RawFd> {
        match self {
            Stream::Tcp(s) => Ok(s.as_raw_fd()),
            Stream::Unix(s) => Ok(s.as_raw_fd()),
            Stream::TlsServer(..) | Stream::TlsClient(..) => Err(not_spliceable()),
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

    async fn wait_readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable(false).await,
            Stream::Unix(s) => s.readable(false).await,
            Stream::TlsServer(..) | Stream::TlsClient(..) => Err(not_spliceable()),
        }
    }

    async fn wait_writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable(false).await,
            Stream::Unix(s) => s.writable(false).await,
            Stream::TlsServer(..) | Stream::TlsClient(..) => Err(not_spliceable()),
        }
    }

    /// Moves up to `len` bytes (at most the pipe's capacity) from this socket into the empty
    /// pipe; `Ok(0)` is end of stream.
    pub async fn splice_in(&mut self, pipe: &mut Pipe, len: usize) -> io::Result<usize> {
        let fd = self.splice_fd()?;
        loop {
            match pipe.fill(fd, len) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_readable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves exactly `len` bytes out of the pipe into this socket.
    pub async fn splice_out(&mut self, pipe: &mut Pipe, mut len: usize) -> io::Result<()> {
        let fd = self.splice_fd()?;
        while len > 0 {
            match pipe.drain(fd, len) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => len -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether this stream's bytes can move with splice (plaintext sockets can; TLS cannot).
    pub fn can_splice(&self) -> bool {
        matches!(self, Stream::Tcp(_) | Stream::Unix(_))
    }
}

impl Stream {
    /// The local address of a TCP (or TLS over TCP) connection; `None` for Unix sockets.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(_) => return None,
            Stream::TlsServer(_, fd) | Stream::TlsClient(_, fd) => *fd,
        };
        // SAFETY: `fd` belongs to a socket `self` owns and keeps open for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
    }
}
