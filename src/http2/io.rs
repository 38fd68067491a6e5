//! The client or upstream connection as the `h2` crate reads and writes it ([`H2Transport`]).
//!
//! Sockets and TLS streams over them are driven directly ([`Direct`]): a read waits for the
//! socket's readiness first, then takes its bytes with a nonblocking recv(2) straight into
//! h2's own buffer (or into a ciphertext buffer rustls drains at once), and writes are
//! nonblocking sends from h2's buffer. So a connection with nothing moving holds no I/O buffer
//! of ours: no pending read's buffer, no copy of h2's writes, no TLS record buffer. A TLS
//! stream inside a forward proxy's tunnel has no socket of its own and goes through
//! `monoio_compat::StreamWrapper` (an 8 KiB buffer each way) over [`H2Io`] instead.

use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;
use monoio_compat::StreamWrapper;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::stream::Stream;
use crate::net::tls_stream::Pulled;

/// What `h2` runs over.
pub(crate) enum H2Transport {
    Direct(Direct),
    /// Boxed: rare (a forward proxy's tunnel), and three times the size.
    Wrapped(Box<StreamWrapper<H2Io>>),
}

impl H2Transport {
    /// `prefix`: bytes read before `h2` took over (the connection preface, maybe more).
    pub(crate) fn new(stream: Stream, prefix: Vec<u8>) -> Self {
        let fd = match &stream {
            Stream::Tcp(s) => Some(std::os::fd::AsRawFd::as_raw_fd(s)),
            Stream::Unix(s) => Some(std::os::fd::AsRawFd::as_raw_fd(s)),
            Stream::TlsServer(s, fd) => s.can_probe().then_some(*fd),
            Stream::TlsClient(s, fd) => s.can_probe().then_some(*fd),
            Stream::Mem(_) | Stream::H2(_) => None,
        };
        match fd {
            Some(fd) => H2Transport::Direct(Direct::new(stream, fd, prefix)),
            None => H2Transport::Wrapped(Box::new(StreamWrapper::new(H2Io::new(stream, prefix)))),
        }
    }
}

impl AsyncRead for H2Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            H2Transport::Direct(d) => d.poll_read(cx, buf),
            H2Transport::Wrapped(w) => Pin::new(&mut **w).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for H2Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            H2Transport::Direct(d) => d.poll_write(cx, buf),
            H2Transport::Wrapped(w) => Pin::new(&mut **w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            H2Transport::Direct(d) => d.poll_flush(cx),
            H2Transport::Wrapped(w) => Pin::new(&mut **w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            H2Transport::Direct(d) => d.poll_shutdown(cx),
            H2Transport::Wrapped(w) => Pin::new(&mut **w).poll_shutdown(cx),
        }
    }
}

/// A readiness wait on the connection's socket.
type Wait = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// A socket, or a TLS stream over one, driven by readiness and nonblocking syscalls.
pub(crate) struct Direct {
    /// Pending readiness waits. They borrow the socket inside `stream`, so they are dropped
    /// before it (see `Drop`).
    read_wait: Option<Wait>,
    write_wait: Option<Wait>,
    /// The stream, owned (a `Box` turned raw): every access, the waits' included, goes
    /// through this one pointer, whose target stays put however `Direct` moves.
    stream: NonNull<Stream>,
    fd: RawFd,
    prefix: Vec<u8>,
    at: usize,
    /// The socket may have bytes: read before waiting (false after a read came up short).
    readable: bool,
    /// close_notify was queued (TLS).
    closing: bool,
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.read_wait = None;
        self.write_wait = None;
        // SAFETY: `stream` came from `Box::into_raw` in `new`, and nothing borrows it now.
        drop(unsafe { Box::from_raw(self.stream.as_ptr()) });
    }
}

impl Direct {
    fn new(stream: Stream, fd: RawFd, prefix: Vec<u8>) -> Self {
        // An empty prefix (TLS: ALPN chose h2, nothing was read) is the receive buffer
        // detection took: not kept for the connection's life.
        let prefix = if prefix.is_empty() {
            Vec::new()
        } else {
            prefix
        };
        Direct {
            read_wait: None,
            write_wait: None,
            stream: NonNull::from(Box::leak(Box::new(stream))),
            fd,
            prefix,
            at: 0,
            readable: true,
            closing: false,
        }
    }

    fn stream(&mut self) -> &mut Stream {
        // SAFETY: the box is ours until `Drop`; the waits only use it while polled, from
        // `poll_wait`, never while this borrow lives.
        unsafe { self.stream.as_mut() }
    }

    /// A readiness wait for reading (`write` false) or writing.
    fn wait(&self, write: bool) -> Wait {
        // SAFETY: the stream outlives the wait (waits drop first, see `Drop`) and does not
        // move (boxed); the wait reads only the socket's registration, and only while polled.
        let stream: &'static Stream = unsafe { &*self.stream.as_ptr() };
        Box::pin(async move {
            match (stream, write) {
                (Stream::Tcp(s), false) => s.readable(false).await,
                (Stream::Tcp(s), true) => s.writable(false).await,
                (Stream::Unix(s), false) => s.readable(false).await,
                (Stream::Unix(s), true) => s.writable(false).await,
                (Stream::TlsServer(t, _), false) => t.socket().readable(false).await,
                (Stream::TlsServer(t, _), true) => t.socket().writable(false).await,
                (Stream::TlsClient(t, _), false) => t.socket().readable(false).await,
                (Stream::TlsClient(t, _), true) => t.socket().writable(false).await,
                (Stream::Mem(_) | Stream::H2(_), _) => Err(io::ErrorKind::Unsupported.into()),
            }
        })
    }

    /// Polls the read (or write) readiness wait, arming it first.
    fn poll_wait(&mut self, cx: &mut Context<'_>, write: bool) -> Poll<io::Result<()>> {
        let slot = if write {
            &self.write_wait
        } else {
            &self.read_wait
        };
        if slot.is_none() {
            let w = self.wait(write);
            *(if write {
                &mut self.write_wait
            } else {
                &mut self.read_wait
            }) = Some(w);
        }
        let slot = if write {
            &mut self.write_wait
        } else {
            &mut self.read_wait
        };
        let r = std::task::ready!(slot.as_mut().expect("armed").as_mut().poll(cx));
        *slot = None;
        Poll::Ready(r)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let left = &self.prefix[self.at..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.readable {
                match self.try_read(buf) {
                    Ok(true) => return Poll::Ready(Ok(())),
                    Ok(false) => self.readable = false,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.read_wait.is_none() {
                // About to wait: a TLS stream gives back its emptied ciphertext buffer and
                // shrinks rustls's record reader.
                match self.stream() {
                    Stream::TlsServer(t, _) => t.release_buffers(),
                    Stream::TlsClient(t, _) => t.release_buffers(),
                    _ => {}
                }
            }
            std::task::ready!(self.poll_wait(cx, false))?;
            self.readable = true;
        }
    }

    /// Reads what is there without waiting: true when `buf` got bytes (or the end of
    /// stream), false when nothing is there yet.
    fn try_read(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        let fd = self.fd;
        match self.stream() {
            Stream::TlsServer(t, _) => tls_read(t, fd, buf),
            Stream::TlsClient(t, _) => tls_read(t, fd, buf),
            _ => recv_into(fd, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, src: &[u8]) -> Poll<io::Result<usize>> {
        let fd = self.fd;
        loop {
            let r = match self.stream() {
                Stream::TlsServer(t, _) => tls_write(t, fd, src),
                Stream::TlsClient(t, _) => tls_write(t, fd, src),
                _ => send(fd, src),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.poll_wait(cx, true))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.fd;
        loop {
            let r = match self.stream() {
                Stream::TlsServer(t, _) => t.push(fd),
                Stream::TlsClient(t, _) => t.push(fd),
                _ => Ok(()),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.poll_wait(cx, true))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closing {
            self.closing = true;
            match self.stream() {
                Stream::TlsServer(t, _) => t.queue_close_notify(),
                Stream::TlsClient(t, _) => t.queue_close_notify(),
                _ => {}
            }
        }
        std::task::ready!(self.poll_flush(cx))?;
        // SAFETY: shutdown(2) on our own socket.
        if unsafe { libc::shutdown(self.fd, libc::SHUT_WR) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTCONN) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// recv(2) into `buf`'s unfilled part without waiting: true when it got bytes or the end of
/// stream, false when the socket has none.
fn recv_into(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
    loop {
        // SAFETY: recv writes at most `remaining` bytes into the unfilled part, and what it
        // wrote is marked initialised and filled below.
        let n = unsafe {
            let dst = buf.unfilled_mut();
            libc::recv(fd, dst.as_mut_ptr().cast(), dst.len(), libc::MSG_DONTWAIT)
        };
        if n >= 0 {
            // SAFETY: recv initialised `n` bytes of the unfilled part.
            unsafe { buf.assume_init(n as usize) };
            buf.advance(n as usize);
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// send(2) without waiting (`WouldBlock` when the socket is full).
fn send(fd: RawFd, src: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: sends from `src`, valid for `src.len()` bytes.
        let n = unsafe {
            libc::send(
                fd,
                src.as_ptr().cast(),
                src.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

type TlsConn<C> = crate::net::tls_stream::TlsConn<C>;

/// Decrypted bytes into `buf` without waiting (see `recv_into`). A short socket read means
/// the socket is drained: without plaintext after it, the socket is waited for.
fn tls_read<C, SD>(t: &mut TlsConn<C>, fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<bool>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData + 'static,
{
    loop {
        if copy_plaintext(t, buf)? {
            return Ok(true);
        }
        match t.pull(fd)? {
            Pulled::Fed { more: true } => {}
            Pulled::Fed { more: false } => return copy_plaintext(t, buf),
            Pulled::WouldBlock => return Ok(false),
        }
    }
}

/// Decrypted bytes rustls holds into `buf`: true when it got some (or the end of stream),
/// false when there are none yet.
fn copy_plaintext<C, SD>(t: &mut TlsConn<C>, buf: &mut ReadBuf<'_>) -> io::Result<bool>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData + 'static,
{
    match t.plaintext_chunk() {
        Ok(chunk) => {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            t.consume_plaintext(n);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Encrypts and sends what it can of `src` without waiting: `WouldBlock` only when nothing
/// of `src` was taken (rustls holds its limit of unsent records and the socket is full).
fn tls_write<C, SD>(t: &mut TlsConn<C>, fd: RawFd, src: &[u8]) -> io::Result<usize>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData + 'static,
{
    let n = t.put_plaintext(src)?;
    match t.push(fd) {
        // Records left over go out with the next write or flush.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
        Err(e) => Err(e),
        Ok(()) if n == 0 && !src.is_empty() => {
            // Everything went out, so rustls takes some now.
            t.put_plaintext(src)
        }
        Ok(()) => Ok(n),
    }
}

/// The stream as rent-style I/O, for `StreamWrapper` (which makes it poll-style, copying
/// through its own buffers): the bytes read while detecting HTTP/2 first, then the stream.
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
