//! One type for TCP, Unix-socket and TLS connections, so the data path is written once.

use std::io;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpStream, UnixStream};

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client whose TLS we terminate; boxed because the session and its buffers are large.
    TlsServer(Box<monoio_rustls::ServerTlsStream<TcpStream>>),
    /// An upstream we dialed with TLS.
    TlsClient(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
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
            Stream::TlsServer(s) => s.read(slice).await,
            Stream::TlsClient(s) => s.read(slice).await,
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
            Stream::TlsServer(s) => s.write_all(slice).await,
            Stream::TlsClient(s) => s.write_all(slice).await,
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
            Stream::TlsServer(s) => s.shutdown().await,
            Stream::TlsClient(s) => s.shutdown().await,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }
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
