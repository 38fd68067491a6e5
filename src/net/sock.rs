//! The socket under a TLS stream, and a read that gives up when nothing arrives for a while
//! without losing what raced the give-up (a leaf: `stream` and `tls_stream` both use it).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Canceller};
use monoio::net::{TcpStream, UnixStream};

/// The socket under a TLS stream: TCP, or a Unix socket (TLS on unix listeners and to unix
/// targets). One match per TLS record read or written; the plaintext paths never see it.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A tunnel through an `https://` forward proxy (TLS to the proxy), and its socket's
    /// descriptor: a TLS target's own TLS runs inside it.
    Tunnel(Box<monoio_rustls::ClientTlsStream<Sock>>, RawFd),
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
            Sock::Tunnel(_, fd) => *fd,
        }
    }
}

impl Sock {
    /// Waits for read readiness (a TLS listener peeks its client's first byte with it).
    pub async fn readable(&self, relaxed: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.readable(relaxed).await,
            Sock::Unix(s) => s.readable(relaxed).await,
            // Only listeners peek, and a tunnel is never accepted.
            Sock::Tunnel(..) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

// SAFETY: both sockets allow a read and a write in flight at once (monoio marks them `Split`),
// and so does a TLS stream over one (monoio-rustls marks it `Split` when its socket is).
unsafe impl monoio::io::Split for Sock {}

impl AsyncReadRent for Sock {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.read(buf).await,
            Sock::Unix(s) => s.read(buf).await,
            // Boxed: the tunnel's future holds one of this type's own.
            Sock::Tunnel(s, _) => Box::pin(s.read(buf)).await,
        }
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.readv(buf).await,
            Sock::Unix(s) => s.readv(buf).await,
            // Boxed: the tunnel's future holds one of this type's own.
            Sock::Tunnel(s, _) => Box::pin(s.readv(buf)).await,
        }
    }
}

impl AsyncWriteRent for Sock {
    async fn write<T: IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.write(buf).await,
            Sock::Unix(s) => s.write(buf).await,
            // Boxed: the tunnel's future holds one of this type's own.
            Sock::Tunnel(s, _) => Box::pin(s.write(buf)).await,
        }
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Sock::Tcp(s) => s.writev(buf).await,
            Sock::Unix(s) => s.writev(buf).await,
            // Boxed: the tunnel's future holds one of this type's own.
            Sock::Tunnel(s, _) => Box::pin(s.writev(buf)).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush().await,
            Sock::Unix(s) => s.flush().await,
            Sock::Tunnel(s, _) => Box::pin(s.flush()).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown().await,
            Sock::Unix(s) => s.shutdown().await,
            Sock::Tunnel(s, _) => Box::pin(s.shutdown()).await,
        }
    }
}

/// Runs a cancellable read; when nothing arrived within `quiet`, cancels it and waits for its
/// completion: `None` if it was cancelled, else what it read (bytes that raced the cancel).
pub(crate) async fn quiet_read<B>(
    read: impl std::future::Future<Output = monoio::BufResult<usize, B>>,
    quiet: Duration,
    canceller: &mut Canceller,
) -> (Option<io::Result<usize>>, B) {
    let mut read = std::pin::pin!(read);
    if let Ok((res, buf)) = monoio::time::timeout(quiet, read.as_mut()).await {
        return (Some(res), buf);
    }
    *canceller = std::mem::take(canceller).cancel();
    let (res, buf) = read.await;
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => (None, buf),
        res => (Some(res), buf),
    }
}
