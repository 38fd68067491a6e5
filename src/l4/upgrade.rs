//! Bidirectional byte relay for upgraded connections (WebSocket and other `Upgrade`s): each
//! direction flows until its sender closes, then its FIN is passed on with shutdown(SHUT_WR)
//! while the other direction keeps flowing.
//!
//! Tunnels copy through a small buffer with io_uring reads and writes rather than splice.
//! Measured (loadtest `websocket`, 16 connections ping-ponging 128-byte messages, one worker):
//! this relay costs 13-15 µs of CPU per message; the layer-4 splice relay (readiness wait,
//! then splice in and out of a pipe) cost 25, more than HAProxy's 21. WebSocket traffic is
//! mostly small messages, where a pipe only adds syscalls.

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use crate::net::stream::Stream;

/// Copy buffer per direction: WebSocket frames are small; bulk flows still get full reads.
const COPY_BUF: usize = 16 * 1024;

/// Relays until both directions have ended. Returns (client->upstream, upstream->client) bytes.
pub async fn run(client: Stream, upstream: Stream) -> (u64, u64) {
    // Every pairing of stream kinds; TLS streams split into halves like sockets do
    // (monoio-rustls keeps reads independent of writes).
    macro_rules! to_upstream {
        ($a:expr) => {
            match upstream {
                Stream::Tcp(b) => both($a, b).await,
                Stream::Unix(b) => both($a, b).await,
                Stream::TlsServer(b, _) => both($a, *b).await,
                Stream::TlsClient(b, _) => both($a, *b).await,
            }
        };
    }
    match client {
        Stream::Tcp(a) => to_upstream!(a),
        Stream::Unix(a) => to_upstream!(a),
        Stream::TlsServer(a, _) => to_upstream!(*a),
        Stream::TlsClient(a, _) => to_upstream!(*a),
    }
}

async fn both<A, B>(a: A, b: B) -> (u64, u64)
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
    monoio::join!(one_way(ar, bw), one_way(br, aw))
}

async fn one_way<R: AsyncReadRent, W: AsyncWriteRent>(mut r: R, mut w: W) -> u64 {
    let mut moved = 0u64;
    let mut buf = Vec::with_capacity(COPY_BUF);
    loop {
        buf.clear();
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
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
    moved
}
