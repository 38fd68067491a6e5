//! The client connection as the `h2` crate reads it: the bytes already read while detecting
//! HTTP/2 first, then the stream itself. `monoio_compat::StreamWrapper` turns this into the
//! poll-based reads and writes `h2` expects, on the same thread.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use crate::net::stream::Stream;

pub(crate) struct H2Io {
    stream: Stream,
    /// Bytes read before `h2` took over (the connection preface, maybe more), and how many of
    /// them it has consumed.
    prefix: Vec<u8>,
    at: usize,
}

impl H2Io {
    pub(crate) fn new(stream: Stream, prefix: Vec<u8>) -> Self {
        H2Io {
            stream,
            prefix,
            at: 0,
        }
    }

    /// Copies buffered prefix bytes into `buf`; `None` once the prefix is used up.
    fn take_prefix<T: IoBufMut>(&mut self, buf: &mut T) -> Option<usize> {
        let left = &self.prefix[self.at..];
        if left.is_empty() {
            if self.prefix.capacity() > 0 {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return None;
        }
        let n = left.len().min(buf.bytes_total());
        // SAFETY: `buf` has room for `bytes_total()` bytes at `write_ptr()`, `n` is within it,
        // and the source is our own initialised vector, which cannot overlap the caller's buffer.
        unsafe {
            buf.write_ptr().copy_from_nonoverlapping(left.as_ptr(), n);
            buf.set_init(n);
        }
        self.at += n;
        Some(n)
    }
}

fn unsupported() -> std::io::Error {
    std::io::ErrorKind::Unsupported.into()
}

impl AsyncReadRent for H2Io {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if let Some(n) = self.take_prefix(&mut buf) {
            return (Ok(n), buf);
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
            Stream::TlsServer(s, _) => s.read(buf).await,
            Stream::TlsClient(s, _) => s.read(buf).await,
            // HTTP/2 clients arrive on sockets, never on an in-memory pair.
            Stream::Mem(_) | Stream::H2(_) => (Err(unsupported()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        // StreamWrapper reads with `read` only; the prefix is drained before any readv.
        debug_assert!(self.at == self.prefix.len());
        match &mut self.stream {
            Stream::Tcp(s) => s.readv(buf).await,
            Stream::Unix(s) => s.readv(buf).await,
            Stream::TlsServer(s, _) => s.readv(buf).await,
            Stream::TlsClient(s, _) => s.readv(buf).await,
            // HTTP/2 clients arrive on sockets, never on an in-memory pair.
            Stream::Mem(_) | Stream::H2(_) => (Err(unsupported()), buf),
        }
    }
}

impl AsyncWriteRent for H2Io {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Tcp(s) => s.write(buf).await,
            Stream::Unix(s) => s.write(buf).await,
            Stream::TlsServer(s, _) => s.write(buf).await,
            Stream::TlsClient(s, _) => s.write(buf).await,
            // HTTP/2 clients arrive on sockets, never on an in-memory pair.
            Stream::Mem(_) | Stream::H2(_) => (Err(unsupported()), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Tcp(s) => s.writev(buf).await,
            Stream::Unix(s) => s.writev(buf).await,
            Stream::TlsServer(s, _) => s.writev(buf).await,
            Stream::TlsClient(s, _) => s.writev(buf).await,
            // HTTP/2 clients arrive on sockets, never on an in-memory pair.
            Stream::Mem(_) | Stream::H2(_) => (Err(unsupported()), buf),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Tcp(s) => s.flush().await,
            Stream::Unix(s) => s.flush().await,
            Stream::TlsServer(s, _) => s.flush().await,
            Stream::TlsClient(s, _) => s.flush().await,
            Stream::Mem(_) | Stream::H2(_) => Err(unsupported()),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown_write().await
    }
}
