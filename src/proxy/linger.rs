//! Lingering close: when ringway closes a client connection whose input it has not read (an
//! early answer to an upload, a refused head), closing at once would make the kernel answer
//! the client's next bytes with a reset, and a reset can destroy the answer before the client
//! read it. So ringway sends FIN after the answer and reads and discards the client's input for
//! a bounded time and byte count, as nginx's `lingering_close` and Apache's do.

use std::time::{Duration, Instant};

use crate::http1::parse::{Framing, RequestHead};
use crate::net::stream::Stream;
use crate::proxy::session::{timed, RecvBuf};

/// Longest time a connection lingers in all: enough for a client on a slow link to get the
/// answer; nginx's `lingering_time` is 30 s, but a lingering connection only costs a socket.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(10);

/// How long to wait for more input before closing: a client that has read the answer usually
/// closes at once (nginx's `lingering_timeout` is 5 s).
pub(crate) const LINGER_READ: Duration = Duration::from_secs(2);

/// Most bytes discarded: bounds what a client that keeps sending can make ringway read.
pub(crate) const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// Read size while discarding: one buffer reused for every read.
const DRAIN_READ: usize = 16 * 1024;

/// Whether closing after this request leaves client input unread: a body ringway may not
/// have read, or bytes already waiting. A client that asked to close sends nothing after its
/// request (RFC 9112 §9.6), so only one that did not ask costs a peek at the socket.
pub(crate) fn unread_input(stream: &Stream, down: &RecvBuf, head: &RequestHead) -> bool {
    !matches!(head.framing, Framing::None | Framing::Length(0))
        || down.pending() > 0
        || (head.keep_alive() && stream.input_waiting())
}

/// Sends FIN, then reads and discards input until the client closes, goes quiet for
/// `LINGER_READ`, or the time or byte bound is reached. The caller drops the stream after.
pub(crate) async fn linger(stream: &mut Stream, down: &mut RecvBuf) {
    if stream.shutdown_write().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIME;
    down.buf.clear();
    down.pos = 0;
    down.floor = 0;
    down.buf.reserve(DRAIN_READ);
    let mut drained = 0u64;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        down.buf.clear();
        match timed(
            Some(left.min(LINGER_READ)),
            down.read_more(stream, DRAIN_READ),
        )
        .await
        {
            Some(Ok(n)) if n > 0 => drained += n as u64,
            _ => return,
        }
    }
}
