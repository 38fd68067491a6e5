//! Our TLS stream, for the clients a listener terminates and the upstreams we dial, and the
//! socket under it (one module: a tunnel's socket is itself a TLS stream): rustls over a
//! socket, with ciphertext buffers that exist only while bytes move. monoio-rustls keeps two
//! 16 KiB buffers per connection for its whole life and cannot drop them (a read it started
//! cannot be cancelled either), so an idle keep-alive TLS connection cost over 40 KiB; this
//! one parks like a plain socket. Toward upstreams it also decrypts without waiting what
//! arrived while a body streams, to tell an early answer from a session ticket.

use std::io::{self, BufRead, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent};
use monoio::io::{Canceller, Split};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;
use rustls::{ClientConnection, ConnectionCommon, ServerConfig, ServerConnection, SideData};

use crate::net::sock::read_until;

/// The socket under a TLS stream: TCP, or a Unix socket (TLS on unix listeners and to unix
/// targets). One match per TLS record read or written; the plaintext paths never see it.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A tunnel through an `https://` forward proxy (TLS to the proxy), and its socket's
    /// descriptor: a TLS target's own TLS runs inside it.
    Tunnel(Box<TlsClient>, RawFd),
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

    /// Waits for write readiness (HTTP/2's nonblocking writes).
    pub async fn writable(&self, relaxed: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.writable(relaxed).await,
            Sock::Unix(s) => s.writable(relaxed).await,
            Sock::Tunnel(..) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

// SAFETY: both sockets allow a read and a write in flight at once (monoio marks them `Split`),
// and so does our TLS stream over one (`tls_stream::TlsConn` is `Split`).
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

/// Ciphertext read per socket read: one full TLS record (16 KiB of plaintext and its framing).
const TLS_READ: usize = 16 * 1024 + 256;

/// Largest write buffer kept between writes: two full records.
const WRITE_KEEP: usize = 2 * TLS_READ;

/// A TLS stream of ours: a server side (`TlsServer`) or an upstream we dialed (`TlsClient`).
pub struct TlsConn<C> {
    io: Sock,
    session: C,
    /// Ciphertext received and not yet taken by rustls: `rbuf[rpos..]`. Empty (unallocated)
    /// while the connection is parked.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Ciphertext rustls produced, reused for every write; freed while parked.
    wbuf: Vec<u8>,
}

// SAFETY: reads use `rbuf` and writes use `wbuf`, each taken out of `self` across its socket
// operation; both halves touch the session only between awaits, on one thread. The socket
// allows a read and a write in flight at once (`Sock` is `Split`).
unsafe impl<C> Split for TlsConn<C> {}

pub type TlsServer = TlsConn<ServerConnection>;
/// An upstream we dialed with TLS: our own stream (not monoio-rustls) so an early answer can
/// be told from a session ticket while a body streams (`probe_response`).
pub type TlsClient = TlsConn<ClientConnection>;

impl TlsServer {
    /// Runs the server side of a handshake on `io`.
    pub async fn accept(config: Arc<ServerConfig>, io: Sock) -> io::Result<TlsServer> {
        let session = ServerConnection::new(config).map_err(invalid)?;
        let mut s = TlsConn::with(io, session);
        s.handshake().await?;
        Ok(s)
    }
}

impl TlsClient {
    /// The stream over a socket whose client handshake is done.
    pub fn new(io: Sock, session: ClientConnection) -> TlsClient {
        TlsConn::with(io, session)
    }
}

impl<C, SD> TlsConn<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData + 'static,
{
    fn with(io: Sock, session: C) -> Self {
        TlsConn {
            io,
            session,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        }
    }

    async fn handshake(&mut self) -> io::Result<()> {
        let mut eof = false;
        while self.session.is_handshaking() {
            if self.session.wants_write() {
                self.write_tls().await?;
                continue;
            }
            if eof || !self.session.wants_read() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake eof",
                ));
            }
            match self.read_tls().await {
                Ok(n) => eof = n == 0,
                Err(e) => {
                    // The client learns why: rustls queued an alert.
                    if e.kind() == io::ErrorKind::InvalidData && self.session.wants_write() {
                        let _ = self.write_tls().await;
                    }
                    return Err(e);
                }
            }
            if self.session.is_handshaking() && self.peer_closed_in_handshake() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake alert",
                ));
            }
        }
        // Session tickets and the like, sent before the first request is read.
        while self.session.wants_write() {
            self.write_tls().await?;
        }
        Ok(())
    }

    fn peer_closed_in_handshake(&mut self) -> bool {
        self.session
            .process_new_packets()
            .is_ok_and(|s| s.peer_has_closed())
    }

    /// The protocol ALPN chose, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }

    /// Frees the ciphertext buffers when they hold nothing (the next read or write allocates
    /// them again).
    pub fn release_buffers(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf = Vec::new();
            self.rpos = 0;
        }
        if !self.session.wants_write() {
            self.wbuf = Vec::new();
        }
        // rustls shrinks its record reader (16 KiB after a full record) back to 4 KiB when it
        // is empty and asked to read: a reader with nothing to give makes it do just that.
        let _ = self.session.read_tls(&mut NothingYet);
    }

    /// The socket, for readiness waits while parked.
    pub fn socket(&self) -> &Sock {
        &self.io
    }

    /// Gives rustls what was received; reads the socket when nothing is. `Ok(0)`: end of
    /// stream.
    async fn read_tls(&mut self) -> io::Result<usize> {
        if self.rpos == self.rbuf.len() {
            let mut buf = std::mem::take(&mut self.rbuf);
            buf.clear();
            self.rpos = 0;
            buf.reserve(TLS_READ);
            let (res, buf) = self.io.read(buf).await;
            self.rbuf = buf;
            res?;
        }
        self.feed()
    }

    /// Hands `rbuf[rpos..]` (all of it, or what rustls takes) to rustls and decrypts. An empty
    /// `rbuf` tells rustls the peer closed.
    fn feed(&mut self) -> io::Result<usize> {
        let n = self.session.read_tls(&mut &self.rbuf[self.rpos..])?;
        self.rpos += n;
        if let Err(e) = self.session.process_new_packets() {
            // The alert rustls queued is sent with the next write (or not at all): a read
            // never writes, since the halves of a split stream read and write independently.
            return Err(invalid(e));
        }
        Ok(n)
    }

    /// Writes everything rustls has queued.
    async fn write_tls(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.wbuf);
        buf.clear();
        while self.session.wants_write() {
            self.session.write_tls(&mut buf)?;
        }
        let (res, buf) = self.io.write_all(buf).await;
        // One that grew for a large write (up to rustls's 64 KiB send limit) is not kept for
        // the connection's life (an upgraded connection's is its tunnel's).
        if buf.capacity() <= WRITE_KEEP {
            self.wbuf = buf;
        }
        res.map(|_| ())
    }

    /// Plaintext into `slice`, reading the socket only when rustls has none.
    fn plaintext(&mut self, slice: &mut [u8]) -> Option<io::Result<usize>> {
        match self.session.reader().read(slice) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    /// `read`, giving up when nothing arrives within `quiet` (`None` then, and nothing is
    /// lost: a socket read racing the cancel keeps its bytes for the next read).
    pub async fn read_unless_quiet<T: IoBufMut>(
        &mut self,
        buf: T,
        quiet: Duration,
        canceller: &mut Canceller,
    ) -> (Option<io::Result<usize>>, T) {
        let quiet = std::pin::pin!(monoio::time::sleep(quiet));
        self.read_until(buf, quiet, canceller).await
    }

    /// `read`, giving up once `quiet` completes while the socket has given nothing to decrypt
    /// (`None` then, and nothing is lost, as in `read_unless_quiet`).
    pub async fn read_until<T: IoBufMut, Q: std::future::Future<Output = ()>>(
        &mut self,
        mut buf: T,
        mut quiet: std::pin::Pin<&mut Q>,
        canceller: &mut Canceller,
    ) -> (Option<io::Result<usize>>, T) {
        // SAFETY: `buf` owns `bytes_total` writable bytes at `write_ptr` while we hold it.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        loop {
            if let Some(r) = self.plaintext(slice) {
                if let Ok(n) = r {
                    // SAFETY: rustls wrote `n` bytes into the slice.
                    unsafe { buf.set_init(n) };
                }
                return (Some(r), buf);
            }
            if self.rpos < self.rbuf.len() {
                if let Err(e) = self.feed() {
                    return (Some(Err(e)), buf);
                }
                continue;
            }
            let mut rbuf = std::mem::take(&mut self.rbuf);
            rbuf.clear();
            self.rpos = 0;
            rbuf.reserve(TLS_READ);
            let handle = canceller.handle();
            let q = quiet.as_mut();
            let (res, rbuf) = match &mut self.io {
                Sock::Tcp(s) => read_until(s.cancelable_read(rbuf, handle), q, canceller).await,
                Sock::Unix(s) => read_until(s.cancelable_read(rbuf, handle), q, canceller).await,
                Sock::Tunnel(..) => {
                    let (res, rbuf) = self.io.read(rbuf).await;
                    (Some(res), rbuf)
                }
            };
            self.rbuf = rbuf;
            match res {
                None => return (None, buf),
                Some(Err(e)) => return (Some(Err(e)), buf),
                Some(Ok(_)) => {
                    if let Err(e) = self.feed() {
                        return (Some(Err(e)), buf);
                    }
                }
            }
        }
    }
}

/// What a probe found decrypted: how many of the first plaintext bytes it copied, and them.
pub type Head = (usize, [u8; 10]);

impl<C, SD> TlsConn<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData + 'static,
{
    /// Whether `probe_plaintext` can read the socket itself (not through a tunnel's TLS).
    pub fn can_probe(&self) -> bool {
        !matches!(self.io, Sock::Tunnel(..))
    }

    /// Whether the socket is a Unix one (else TCP).
    pub fn is_unix(&self) -> bool {
        matches!(self.io, Sock::Unix(_))
    }

    /// Decrypts what socket `fd` (this stream's) holds, without waiting, and returns the
    /// start of the plaintext it gave, leaving all of it in rustls for the next read: `None`
    /// when the records carried none (a TLS 1.3 session ticket). An end of stream or a broken
    /// record is an error (the next read reports it too). Only while no read is in flight;
    /// a write may be (it touches the session only between its awaits, and not `rbuf`).
    pub fn probe_plaintext(&mut self, fd: RawFd) -> io::Result<Option<Head>> {
        loop {
            if let Ok(b) = self.session.reader().fill_buf() {
                if !b.is_empty() {
                    let mut head = [0u8; 10];
                    let n = b.len().min(head.len());
                    head[..n].copy_from_slice(&b[..n]);
                    return Ok(Some((n, head)));
                }
            }
            if self.rpos < self.rbuf.len() {
                if self.feed()? == 0 {
                    return Ok(None);
                }
                continue;
            }
            match self.recv_now(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
                Ok(0) => {
                    self.feed()?;
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(_) => {
                    self.feed()?;
                }
            }
        }
    }

    /// One nonblocking recv(2) on `fd` (this stream's socket) into an emptied `rbuf`: the bytes
    /// received (0: end of stream), not yet given to rustls.
    fn recv_now(&mut self, fd: RawFd) -> io::Result<usize> {
        debug_assert!(self.rpos == self.rbuf.len());
        self.rbuf.clear();
        self.rpos = 0;
        self.rbuf.reserve(TLS_READ);
        // SAFETY: recv writes at most `capacity` bytes into the vector's spare capacity.
        let n = unsafe {
            libc::recv(
                fd,
                self.rbuf.as_mut_ptr().cast(),
                self.rbuf.capacity(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: recv initialised the first `n` bytes.
        unsafe { self.rbuf.set_len(n as usize) };
        Ok(n as usize)
    }
}

/// What [`TlsConn::pull`] did.
pub enum Pulled {
    /// Ciphertext went to rustls; `more`: the socket may hold more (the read filled `rbuf`, or
    /// it came from `rbuf`).
    Fed { more: bool },
    /// The socket has nothing now.
    WouldBlock,
}

/// Nonblocking I/O for a caller that waits for the socket's readiness itself (HTTP/2's codec,
/// `http2::io`): nothing is read until the socket has bytes, so a connection waiting for its
/// client holds no ciphertext buffer, only rustls's session.
impl<C, SD> TlsConn<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData + 'static,
{
    /// Decrypted bytes waiting: a chunk (empty after the peer's close_notify), `WouldBlock`
    /// when there are none yet, `UnexpectedEof` after a close without close_notify.
    pub fn plaintext_chunk(&mut self) -> io::Result<&[u8]> {
        self.session.reader().into_first_chunk()
    }

    /// Takes `n` bytes of the chunk `plaintext_chunk` gave.
    pub fn consume_plaintext(&mut self, n: usize) {
        self.session.reader().consume(n);
    }

    /// Gives rustls more ciphertext: what `rbuf` still holds, else what socket `fd` (this
    /// stream's) has now. An end of stream is given to rustls too (its reader reports it).
    pub fn pull(&mut self, fd: RawFd) -> io::Result<Pulled> {
        if self.rpos < self.rbuf.len() {
            self.feed()?;
            return Ok(Pulled::Fed { more: true });
        }
        match self.recv_now(fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Pulled::WouldBlock),
            Err(e) => Err(e),
            Ok(n) => {
                self.feed()?;
                // rustls takes a few KiB per call: what it left in `rbuf` is more too.
                Ok(Pulled::Fed {
                    more: n == self.rbuf.capacity() || self.rpos < self.rbuf.len(),
                })
            }
        }
    }

    /// Encrypts what rustls takes of `src` (0 while it holds its limit of unsent records).
    pub fn put_plaintext(&mut self, src: &[u8]) -> io::Result<usize> {
        self.session.writer().write(src)
    }

    /// Sends what rustls has queued on socket `fd`, without waiting: `WouldBlock` when the
    /// socket is full with some left.
    pub fn push(&mut self, fd: RawFd) -> io::Result<()> {
        while self.session.wants_write() {
            self.session.write_tls(&mut SendNow(fd))?;
        }
        Ok(())
    }

    /// Queues close_notify (sent by the next `push`).
    pub fn queue_close_notify(&mut self) {
        self.session.send_close_notify();
    }
}

/// Writes to a socket without waiting (its descriptor may be blocking: io_uring's are).
struct SendNow(RawFd);

impl Write for SendNow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: sends from `buf`, which is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: a zeroed msghdr is valid; its iovecs point at `bufs` (IoSlice is an iovec)
        // for the duration of the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            libc::sendmsg(self.0, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that has nothing yet (not an end of stream).
struct NothingYet;

impl Read for NothingYet {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C, SD> AsyncReadRent for TlsConn<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData + 'static,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: `buf` owns `bytes_total` writable bytes at `write_ptr` while we hold it.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        loop {
            if let Some(r) = self.plaintext(slice) {
                if let Ok(n) = r {
                    // SAFETY: rustls wrote `n` bytes into the slice.
                    unsafe { buf.set_init(n) };
                }
                return (r, buf);
            }
            if let Err(e) = self.read_tls().await {
                return (Err(e), buf);
            }
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer is the first iovec of `buf`, which outlives this call.
        let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = n {
            // SAFETY: `n` bytes were written into the first iovec.
            unsafe { buf.set_init(n) };
        }
        (n, buf)
    }
}

impl<C, SD> AsyncWriteRent for TlsConn<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData + 'static,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `buf` owns `bytes_init` readable bytes at `read_ptr` while we hold it.
        let slice = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        if self.session.wants_write() {
            if let Err(e) = self.write_tls().await {
                return (Err(e), buf);
            }
        }
        let n = match self.session.writer().write(slice) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        if let Err(e) = self.write_tls().await {
            return (Err(e), buf);
        }
        (Ok(n), buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer is the first iovec of `buf`, which outlives this call.
        let n = match unsafe { RawBuf::new_from_iovec(&buf) } {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (n, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.session.writer().flush()?;
        if self.session.wants_write() {
            self.write_tls().await?;
        }
        self.io.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        if self.session.wants_write() {
            self.write_tls().await?;
        }
        self.io.shutdown().await
    }
}
