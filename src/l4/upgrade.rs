//! Bidirectional byte relay for upgraded connections (WebSocket and other `Upgrade`s): each
//! direction flows until its sender closes, then its FIN is passed on with shutdown(SHUT_WR)
//! while the other direction keeps flowing.
//!
//! Tunnels copy through a small buffer with io_uring reads and writes rather than splice.
//! Measured (loadtest `websocket`, 16 connections ping-ponging 128-byte messages, one worker):
//! this relay costs 13-15 µs of CPU per message; the layer-4 splice relay (readiness wait,
//! then splice in and out of a pipe) cost 25, more than HAProxy's 21. WebSocket traffic is
//! mostly small messages, where a pipe only adds syscalls. A direction whose read stays quiet
//! for `PARK_AFTER` parks (waits for input holding no buffer; a TLS side gives back its
//! ciphertext buffers), so an idle tunnel holds its sockets and tasks, not buffers.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller,
    OwnedReadHalf, Splitable,
};
use monoio::net::{TcpStream, UnixStream};

use crate::net::duplex::End;
use crate::net::sock::read_until;
use crate::net::stream::Stream;
use crate::net::tls_stream::TlsConn;
use crate::worker::idle::{Deadline, IdleClock};

/// Largest copy buffer per direction: bulk flows get full reads.
const COPY_BUF: usize = 16 * 1024;

/// Smallest copy buffer: what a direction reads into after a quiet spell. WebSocket frames
/// are mostly small.
const MIN_COPY_BUF: usize = 1024;

/// A read that waits this long (up to the idle clock's tick more) gives up and the direction
/// parks: it waits for input holding no buffer (a TLS source gives back its ciphertext
/// buffers too), as an idle keep-alive connection does after as long
/// (`proxy::session::PARK_AFTER`). Busy tunnels (a message each way per round trip) rarely
/// wait this long. The worker's idle clock keeps the deadline: a monoio timer entry per read
/// would be 512 bytes, more than the buffer it frees.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The buffer size for the next read after one of `n` bytes into `cap`: doubled (up to
/// `COPY_BUF`) when the read filled it, down to what twice `n` needs (at least
/// `MIN_COPY_BUF`) when it used under a quarter, else unchanged.
fn next_copy_buf(cap: usize, n: usize) -> usize {
    if n >= cap {
        (cap * 2).min(COPY_BUF)
    } else if n < cap / 4 {
        (n * 2)
            .next_power_of_two()
            .clamp(MIN_COPY_BUF, cap.max(MIN_COPY_BUF))
    } else {
        cap
    }
}

/// What a relay moved and how it ended.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Client -> upstream bytes.
    pub up: u64,
    /// Upstream -> client bytes.
    pub down: u64,
    /// Reading from the upstream failed (a reset, or a TLS stream cut without close_notify),
    /// as opposed to a clean end.
    pub upstream_failed: bool,
    /// Nothing moved either way for the idle timeout; both sides were closed.
    pub idle: bool,
}

/// Relays until both directions have ended, or nothing moved for `idle` (never when `None`).
/// `clock`: the worker's idle clock, which parks quiet directions.
/// Each pairing of stream kinds is boxed on its own, built here rather than in an async fn: a
/// TLS pairing's state is several KiB (rustls buffers inline), and a tunnel (plain ones
/// included) would otherwise carry the largest pairing's size, and its arguments, for life.
pub fn run(
    client: Stream,
    upstream: Stream,
    idle: Option<Duration>,
    clock: &Rc<IdleClock>,
) -> Pin<Box<dyn Future<Output = Relayed>>> {
    let clock = clock.clone();
    // TLS streams split into halves like sockets do (`tls_stream::TlsConn` keeps reads
    // independent of writes).
    macro_rules! to_upstream {
        ($a:expr) => {
            match upstream {
                Stream::Tcp(b) => Box::pin(both($a, b, idle, clock)),
                Stream::Unix(b) => Box::pin(both($a, b, idle, clock)),
                Stream::TlsServer(b, _) => Box::pin(both($a, *b, idle, clock)),
                Stream::TlsClient(b, _) => Box::pin(both($a, *b, idle, clock)),
                // The upstream side of a WebSocket to an HTTP/2 target (`http2::tunnel`).
                Stream::Mem(b) => Box::pin(both($a, b, idle, clock)),
                // Upstreams are never HTTP/2 client streams.
                Stream::H2(_) => Box::pin(async { Relayed::default() }),
            }
        };
    }
    match client {
        Stream::Tcp(a) => to_upstream!(a),
        Stream::Unix(a) => to_upstream!(a),
        Stream::TlsServer(a, _) => to_upstream!(*a),
        Stream::TlsClient(a, _) => to_upstream!(*a),
        // An HTTP/2 stream upgraded by extended CONNECT (RFC 8441).
        Stream::Mem(a) => to_upstream!(a),
        // Only a WebSocket over HTTP/2 upgrades, and it comes through the pair above.
        Stream::H2(_) => Box::pin(async { Relayed::default() }),
    }
}

async fn both<A, B>(a: A, b: B, idle: Option<Duration>, clock: Rc<IdleClock>) -> Relayed
where
    A: Splitable + AsyncWriteRent,
    B: Splitable + AsyncWriteRent,
    A::OwnedRead: Source,
    A::OwnedWrite: AsyncWriteRent,
    B::OwnedRead: Source,
    B::OwnedWrite: AsyncWriteRent,
{
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let last = Cell::new(Instant::now());
    // Without an idle timeout nobody reads the clock: upgraded HTTP connections skip it.
    let track = idle.map(|_| &last);
    let relay = async {
        monoio::join!(
            one_way(ar, bw, track, &clock),
            one_way(br, aw, track, &clock)
        )
    };
    monoio::select! {
        ((up, _), (down, upstream_failed)) = relay => Relayed {
            up,
            down,
            upstream_failed,
            idle: false,
        },
        // Dropping the relay closes both sides.
        _ = idle_watch(idle, &last) => Relayed {
            idle: true,
            ..Relayed::default()
        },
    }
}

/// One direction until its sender closes: the bytes moved, and whether reading failed. A
/// read that stays quiet for `PARK_AFTER` is given up and the direction waits for input
/// holding no buffer.
async fn one_way<R: Source, W: AsyncWriteRent>(
    mut r: R,
    mut w: W,
    last: Option<&Cell<Instant>>,
    clock: &Rc<IdleClock>,
) -> (u64, bool) {
    let mut moved = 0u64;
    let mut read_failed = false;
    let mut canceller = Canceller::new();
    let mut cap = MIN_COPY_BUF;
    let mut buf = Vec::new();
    loop {
        if buf.capacity() == 0 {
            buf = Vec::with_capacity(cap);
        }
        buf.clear();
        let quiet = std::pin::pin!(clock.deadline(Instant::now() + PARK_AFTER));
        let (res, b) = r.read_until(buf, quiet, &mut canceller).await;
        buf = b;
        let Some(res) = res else {
            // Parked: the next read takes a fresh small buffer once input is there.
            buf = Vec::new();
            cap = MIN_COPY_BUF;
            if r.wait_input().await.is_err() {
                read_failed = true;
                break;
            }
            continue;
        };
        match res {
            Ok(0) => break,
            Err(_) => {
                read_failed = true;
                break;
            }
            Ok(n) => {
                cap = next_copy_buf(buf.capacity(), n);
                if let Some(last) = last {
                    last.set(Instant::now());
                }
                let (res, b) = w.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    break;
                }
                moved += n as u64;
                if cap != buf.capacity() {
                    buf = Vec::new();
                }
            }
        }
    }
    // Pass the end of this direction on; the other direction keeps flowing.
    let _ = w.shutdown().await;
    (moved, read_failed)
}

/// A tunnel direction's source: a read that gives up when nothing arrives for a while (`None`,
/// with nothing lost: a read racing the give-up keeps its bytes), and a wait for input that
/// holds no buffer.
pub(crate) trait Source {
    async fn read_until(
        &mut self,
        buf: Vec<u8>,
        quiet: Pin<&mut Deadline>,
        canceller: &mut Canceller,
    ) -> (Option<io::Result<usize>>, Vec<u8>);

    /// Waits until input (or the end of it) is there; a TLS source first gives back its
    /// emptied ciphertext buffers.
    async fn wait_input(&mut self) -> io::Result<()>;
}

/// Plain sockets: a cancellable read, and readiness from the descriptor's registration.
macro_rules! socket_source {
    ($($io:ty),*) => {$(
        impl Source for OwnedReadHalf<$io> {
            async fn read_until(
                &mut self,
                buf: Vec<u8>,
                quiet: Pin<&mut Deadline>,
                canceller: &mut Canceller,
            ) -> (Option<io::Result<usize>>, Vec<u8>) {
                let handle = canceller.handle();
                read_until(self.cancelable_read(buf, handle), quiet, canceller).await
            }

            async fn wait_input(&mut self) -> io::Result<()> {
                // SAFETY: the halves share the stream as monoio's own halves do; readiness
                // touches only the descriptor's registration, never what the write half uses.
                unsafe { &*self.0.get() }.readable(false).await
            }
        }
    )*};
}

socket_source!(TcpStream, UnixStream);

impl<C, SD> Source for OwnedReadHalf<TlsConn<C>>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData + 'static,
{
    async fn read_until(
        &mut self,
        buf: Vec<u8>,
        quiet: Pin<&mut Deadline>,
        canceller: &mut Canceller,
    ) -> (Option<io::Result<usize>>, Vec<u8>) {
        // SAFETY: the read half uses only the read side of the TLS stream (`TlsConn` is
        // `Split`: reads and writes touch the session only between their awaits).
        let tls = unsafe { &mut *self.0.get() };
        tls.read_until(buf, quiet, canceller).await
    }

    async fn wait_input(&mut self) -> io::Result<()> {
        // SAFETY: as above; releasing touches `rbuf` (the read side's) and `wbuf` only when no
        // write holds it (a write takes it out of the stream across its await).
        let tls = unsafe { &mut *self.0.get() };
        tls.release_buffers();
        tls.socket().readable(false).await
    }
}

/// An HTTP/2 stream's in-memory end: its bytes already sit in memory, so it never parks.
impl Source for OwnedReadHalf<End> {
    async fn read_until(
        &mut self,
        buf: Vec<u8>,
        _quiet: Pin<&mut Deadline>,
        _canceller: &mut Canceller,
    ) -> (Option<io::Result<usize>>, Vec<u8>) {
        let (res, buf) = self.read(buf).await;
        (Some(res), buf)
    }

    async fn wait_input(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Completes once no byte has moved for `idle` (never when `None`).
pub(crate) async fn idle_watch(idle: Option<Duration>, last: &Cell<Instant>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let due = last.get() + idle;
        if Instant::now() >= due {
            return;
        }
        monoio::time::sleep_until(due.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_buffer_grows_while_reads_fill_it_and_shrinks_when_they_are_small() {
        let cases = [
            // (capacity, bytes read, next capacity)
            (MIN_COPY_BUF, MIN_COPY_BUF, 2 * MIN_COPY_BUF),
            (8 * 1024, 8 * 1024, COPY_BUF),
            (COPY_BUF, COPY_BUF, COPY_BUF),
            (COPY_BUF, 6 * 1024, COPY_BUF),
            (COPY_BUF, 3 * 1024, 8 * 1024),
            (COPY_BUF, 128, MIN_COPY_BUF),
            (MIN_COPY_BUF, 128, MIN_COPY_BUF),
            (MIN_COPY_BUF, 600, MIN_COPY_BUF),
            (4 * 1024, 100, MIN_COPY_BUF),
        ];
        for (cap, n, want) in cases {
            assert_eq!(next_copy_buf(cap, n), want, "cap {cap}, read {n}");
        }
    }
}
