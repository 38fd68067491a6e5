//! The state of one downstream connection and of the request it is serving: receive buffers,
//! scratch space reused across requests, and how an exchange ended.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{write_error_response, ProxyError, Side};
use crate::http1::forward::{Client, HeaderList};
use crate::http1::parse::{HeadLimits, HeaderIdx, RequestHead};
use crate::net::stream::{reserve_read_space, Stream};
use crate::upstream::pool::UpConn;
use crate::worker::ctx::WorkerCtx;

/// Initial receive buffer per connection side: one read takes a typical head plus a small body.
pub(crate) const INITIAL_BUF: usize = 16 * 1024;

/// What a keep-alive connection keeps between requests: a receive buffer for the next head
/// (most fit; a larger one grows it, as nginx's 1k `client_header_buffer_size` does). The rest
/// is released and allocated again by the next request, so 10k idle connections cost a few
/// KiB each instead of every buffer they ever grew.
pub(crate) const IDLE_READ: usize = 1024;

/// A keep-alive connection quiet this long is idle rather than between the requests of a busy
/// client (whose next request comes within a millisecond or two): it gives back its receive
/// buffer and request state and waits on readiness alone. Short, so that the busy state of
/// connections arriving at thousands a second never piles up; parking and waking cost one
/// poll and one allocation, paid only by clients this slow. Kept by the worker's idle clock
/// (up to `worker::idle::TICK` late): a timer entry per request cost more than the rest of
/// the wait.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// Room for the heads a request writes (upstream request, response), reserved once.
pub(crate) const OUT_BUF: usize = 4096;

/// Body bytes streamed per read once a body is larger than what came with the head.
pub(crate) const BODY_CHUNK: usize = 64 * 1024;

/// Body bytes that ride along with the head in one write instead of a second write.
pub(crate) const COALESCE_BODY: usize = 16 * 1024;

/// Upstream response heads: generous fixed limits (upstreams are trusted more than clients).
pub(crate) const RESPONSE_LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 64 * 1024,
    max_uri_bytes: 64 * 1024,
    max_headers: 256,
};

/// Content-Length bodies at least this large move with splice(2) on plaintext sockets; smaller
/// ones are cheaper as one read and one write (splice costs two operations and, on io_uring, a
/// hop through a kernel worker thread).
pub const SPLICE_MIN_BODY: u64 = 64 * 1024;

/// Room a chunked decoder may need for one size line or trailer section (see http1::body).
pub(crate) const CHUNK_FRAMING_ROOM: usize = 32 * 1024;

/// Runs `f` under an optional timeout; `None` when it ran out.
pub(crate) fn timed<F: Future>(limit: Option<Duration>, f: F) -> Timed<F> {
    Timed {
        f,
        limit: limit.map(monoio::time::sleep),
    }
}

/// Runs `f` until an optional deadline; `None` when it passed.
pub(crate) fn timed_at<F: Future>(deadline: Option<Instant>, f: F) -> Timed<F> {
    Timed {
        f,
        limit: deadline.map(|d| monoio::time::sleep_until(d.into())),
    }
}

/// `f` and its optional timer as one plain future rather than an async fn around monoio's
/// `Timeout`: that moved `f` twice more per await (into the async fn, then into the
/// `Timeout`), several times per request, and took the timer path when there was no limit.
pub(crate) struct Timed<F> {
    f: F,
    limit: Option<monoio::time::Sleep>,
}

impl<F: Future> Future for Timed<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: neither field is ever moved out of the pinned value; both are only polled
        // in place (structural pinning), and `Timed` has no Drop of its own.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `f` stays where it is until `Timed` is dropped.
        if let Poll::Ready(v) = unsafe { Pin::new_unchecked(&mut this.f) }.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match &mut this.limit {
            // SAFETY: as for `f`.
            Some(sleep) => unsafe { Pin::new_unchecked(sleep) }.poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    }
}

/// One side's receive buffer: `buf[pos..]` holds bytes received but not yet consumed;
/// `buf[..floor]` is kept while a body streams (the request head that spans point into).
pub(crate) struct RecvBuf {
    pub(crate) buf: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) floor: usize,
}

impl RecvBuf {
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Moves unconsumed bytes down to `floor` (to 0 between requests, so spans of the next
    /// head start at 0).
    pub(crate) fn compact(&mut self) {
        debug_assert!(self.pos >= self.floor);
        if self.pos > self.floor {
            self.buf.drain(self.floor..self.pos);
            self.pos = self.floor;
        }
    }

    /// Forgets everything consumed above `floor`; only valid when nothing is pending.
    pub(crate) fn reset(&mut self) {
        debug_assert_eq!(self.pending(), 0);
        self.buf.truncate(self.floor);
        self.pos = self.floor;
    }

    pub(crate) async fn read_more(
        &mut self,
        stream: &mut Stream,
        cap: usize,
    ) -> std::io::Result<usize> {
        // An empty buffer reads into whatever room it has (an idle connection's small one);
        // a partial head or body makes room for a full read.
        if !self.buf.is_empty() || self.buf.capacity() < IDLE_READ {
            reserve_read_space(&mut self.buf, cap);
        }
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = stream.read_more(buf).await;
        self.buf = buf;
        res
    }

    /// `read_more` on an empty buffer between requests; `None` when the connection stayed
    /// quiet until `quiet` completed (nothing was read, nothing lost).
    pub(crate) async fn read_unless_quiet<Q: std::future::Future<Output = ()>>(
        &mut self,
        stream: &mut Stream,
        quiet: std::pin::Pin<&mut Q>,
        canceller: &mut monoio::io::Canceller,
    ) -> Option<std::io::Result<usize>> {
        debug_assert!(self.buf.is_empty());
        if self.buf.capacity() < IDLE_READ {
            self.buf.reserve_exact(IDLE_READ);
        }
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = stream.read_more_until(buf, quiet, canceller).await;
        self.buf = buf;
        res
    }
}

/// Per-connection scratch buffers, reused across requests.
pub(crate) struct Scratch {
    pub(crate) headers: Vec<HeaderIdx>,
    pub(crate) resp_headers: Vec<HeaderIdx>,
    pub(crate) out: Vec<u8>,
    pub(crate) aux: Vec<u8>,
    pub(crate) list: HeaderList,
    /// Status of the response sent for the current request (0: none), for metrics.
    pub(crate) status: u16,
    /// Request bytes read and response bytes sent for the current request (access log).
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// The upstream target that answered, as `[upstream, target]` (access log).
    pub(crate) target: Option<(usize, usize)>,
    /// Header lines a `handle_response` rule copies onto the answer of another upstream.
    pub(crate) copied: Vec<u8>,
    /// A `handle_response` rule's second route: `forward` sends the request on with it once
    /// the first exchange has handed its connection back.
    pub(crate) send_on: Option<Box<crate::config::Route>>,
    /// Where the request body starts while all of it is still in the receive buffer (so a
    /// `handle_response` rule can send it to a second upstream); `None` once it streamed.
    pub(crate) body_at: Option<usize>,
    /// What the access log tells beyond the status and bytes.
    pub(crate) trace: Trace,
}

/// Where the current request went and how long the upstream took (access log only).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Trace {
    /// The listener the request came in on (in the generation that served it).
    pub(crate) listener: usize,
    /// Index of the matching route in its listener.
    pub(crate) route: Option<usize>,
    /// The upstream group the route sent it to.
    pub(crate) upstream: Option<usize>,
    /// The target last dialed, also when every dial failed.
    pub(crate) dialed: Option<usize>,
    /// Getting a connection (pooled or dialed, failovers included).
    pub(crate) connect: Option<Duration>,
    /// From the first dial until the response ended or failed.
    pub(crate) response: Option<Duration>,
    /// The request is an HTTP/2 stream (`Stream::H2`, or a WebSocket's in-memory pair).
    pub(crate) http2: bool,
}

/// One request on a downstream connection: the generation serving it, the connection's stream
/// and buffers, and the parsed head. Every stage of the exchange takes this one value.
pub(crate) struct Session<'a> {
    pub(crate) ctx: &'a Rc<WorkerCtx>,
    pub(crate) listener: usize,
    pub(crate) client: &'a Client,
    pub(crate) stream: &'a mut Stream,
    /// The client side's receive buffer; the head sits at `buf[..head.head_len]`.
    pub(crate) down: &'a mut RecvBuf,
    /// The upstream side's receive buffer, kept across requests.
    pub(crate) ubuf: &'a mut Vec<u8>,
    pub(crate) s: &'a mut Scratch,
    pub(crate) head: &'a RequestHead,
}

impl Session<'_> {
    /// Sends the error's status (when the client can still be answered); the caller closes.
    pub(crate) async fn answer_error(&mut self, e: &ProxyError) {
        answer_error(self.stream, &mut self.s.out, e).await;
    }
}

/// Sends the error's status (when the client can still be answered); the caller closes.
pub(crate) async fn answer_error(stream: &mut Stream, out: &mut Vec<u8>, e: &ProxyError) {
    // Upstream failures were logged where they happened, with the upstream and its address;
    // the answer itself is in the access log.
    match e.side {
        Side::Downstream => tracing::debug!("closing client connection: {e}"),
        _ => tracing::debug!("answering the client: {e}"),
    }
    if let Some(status) = e.status() {
        out.clear();
        write_error_response(status, out);
        let buf = std::mem::take(out);
        let (_, buf) = stream.write_all(buf).await;
        *out = buf;
    }
}

/// How an exchange left the client connection.
pub(crate) enum Exchange {
    /// A full response was sent; whether the connection can serve another request.
    Done(bool),
    /// The upstream switched protocols: relay bytes both ways from now on.
    Upgraded(UpConn),
}

/// A failed exchange: `answered` when part of a response already reached the client, so the
/// only honest signal left is closing the connection.
pub(crate) struct Failure {
    pub(crate) error: ProxyError,
    pub(crate) answered: bool,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Failure {
            error,
            answered: false,
        }
    }
}
