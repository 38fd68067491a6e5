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
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use crate::net::stream::Stream;

/// Copy buffer per direction: WebSocket frames are small; bulk flows still get full reads.
const COPY_BUF: usize = 16 * 1024;

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
pub async fn run(client: Stream, upstream: Stream, idle: Option<Duration>) -> Relayed {
    // Every pairing of stream kinds; TLS streams split into halves like sockets do
    // (monoio-rustls keeps reads independent of writes).
    macro_rules! to_upstream {
        ($a:expr) => {
            match upstream {
                Stream::Tcp(b) => both($a, b, idle).await,
                Stream::Unix(b) => both($a, b, idle).await,
                Stream::TlsServer(b, _) => both($a, *b, idle).await,
                Stream::TlsClient(b, _) => both($a, *b, idle).await,
                // Upstreams are sockets; an in-memory pair is only ever the client side.
                Stream::Mem(_) => Relayed::default(),
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
    let mut buf = Vec::with_capacity(COPY_BUF);
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
                if let Some(last) = last {
                    last.set(Instant::now());
                }
                let (res, b) = w.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    break;
                }
                moved += n as u64;
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
