//! Bidirectional byte relay for upgraded connections (WebSocket and other `Upgrade`s): each
//! direction flows until its sender closes, then its FIN is passed on with shutdown(SHUT_WR)
//! while the other direction keeps flowing.
//!
//! Tunnels copy through a small buffer with io_uring reads and writes rather than splice.
//! Measured (loadtest `websocket`, 16 connections ping-ponging 128-byte messages, one worker):
//! this relay costs 13-15 µs of CPU per message; the layer-4 splice relay (readiness wait,
//! then splice in and out of a pipe) cost 25, more than HAProxy's 21. WebSocket traffic is
//! mostly small messages, where a pipe only adds syscalls.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use crate::net::stream::Stream;

/// Largest copy buffer per direction: bulk flows get full reads.
const COPY_BUF: usize = 16 * 1024;

/// Smallest copy buffer: what a quiet direction holds in its pending read. WebSocket frames
/// are mostly small, and an idle tunnel should not hold 2 x `COPY_BUF` for hours.
const MIN_COPY_BUF: usize = 1024;

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
/// Each pairing of stream kinds is boxed on its own, built here rather than in an async fn: a
/// TLS pairing's state is several KiB (rustls buffers inline), and a tunnel (plain ones
/// included) would otherwise carry the largest pairing's size, and its arguments, for life.
pub fn run(
    client: Stream,
    upstream: Stream,
    idle: Option<Duration>,
) -> Pin<Box<dyn Future<Output = Relayed>>> {
    // TLS streams split into halves like sockets do (`tls_stream::TlsConn` keeps reads
    // independent of writes).
    macro_rules! to_upstream {
        ($a:expr) => {
            match upstream {
                Stream::Tcp(b) => Box::pin(both($a, b, idle)),
                Stream::Unix(b) => Box::pin(both($a, b, idle)),
                Stream::TlsServer(b, _) => Box::pin(both($a, *b, idle)),
                Stream::TlsClient(b, _) => Box::pin(both($a, *b, idle)),
                // The upstream side of a WebSocket to an HTTP/2 target (`http2::tunnel`).
                Stream::Mem(b) => Box::pin(both($a, b, idle)),
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

async fn both<A, B>(a: A, b: B, idle: Option<Duration>) -> Relayed
where
    A: Splitable + AsyncWriteRent,
    B: Splitable + AsyncWriteRent,
    A::OwnedRead: AsyncReadRent,
    A::OwnedWrite: AsyncWriteRent,
    B::OwnedRead: AsyncReadRent,
    B::OwnedWrite: AsyncWriteRent,
{
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let last = Cell::new(Instant::now());
    // Without an idle timeout nobody reads the clock: upgraded HTTP connections skip it.
    let track = idle.map(|_| &last);
    let relay = async { monoio::join!(one_way(ar, bw, track), one_way(br, aw, track)) };
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

/// One direction until its sender closes: the bytes moved, and whether reading failed.
async fn one_way<R: AsyncReadRent, W: AsyncWriteRent>(
    mut r: R,
    mut w: W,
    last: Option<&Cell<Instant>>,
) -> (u64, bool) {
    let mut moved = 0u64;
    let mut read_failed = false;
    let mut buf = Vec::with_capacity(MIN_COPY_BUF);
    loop {
        buf.clear();
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) => break,
            Err(_) => {
                read_failed = true;
                break;
            }
            Ok(n) => {
                let next = next_copy_buf(buf.capacity(), n);
                if let Some(last) = last {
                    last.set(Instant::now());
                }
                let (res, b) = w.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    break;
                }
                moved += n as u64;
                if next != buf.capacity() {
                    buf = Vec::with_capacity(next);
                }
            }
        }
    }
    // Pass the end of this direction on; the other direction keeps flowing.
    let _ = w.shutdown().await;
    (moved, read_failed)
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
