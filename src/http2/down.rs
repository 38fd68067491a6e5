//! An HTTP/2 stream as the data path's client connection (`net::stream::Stream::H2`), with no
//! second task and no in-memory pair between them.
//!
//! The data path reads and writes HTTP/1.1 as on any client connection; this end turns that
//! into the stream's frames in place, inside the data path's own calls:
//! - reads take the request body straight from `h2`'s `RecvStream` (chunk-framed when the
//!   request head said chunked, trailers as the trailer section), releasing flow-control
//!   window for bytes handed over;
//! - writes parse the response head the data path writes and send it as HEADERS (1xx as
//!   interim HEADERS), then its body as DATA as fast as the client's window opens (a window
//!   shut for `limits.idle_timeout` resets the stream), de-chunked, trailers as trailers.
//!
//! The stream's task keeps a second handle: it watches for the client's RST_STREAM while the
//! data path waits on an upstream (and drops the data path then), resets a response the data
//! path left unfinished, and lingers over an unread upload. Reads and writes touch separate
//! halves, so the h2 upstream exchange may read the body while it writes the response.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};

use super::chunks::{Dechunk, Next};
use super::head::{self, BodyFraming};
use crate::http1::body::write_chunk_header;
use crate::http1::parse::Framing;

/// One HTTP/2 stream's end of the data path; cloning gives another handle to the same stream.
#[derive(Clone)]
pub struct Down(Rc<Shared>);

struct Shared {
    rx: RefCell<Rx>,
    tx: RefCell<Tx>,
    /// The client reset the stream (counted once against `max_resets_per_s`).
    reset_by_client: Cell<bool>,
    /// How long a response waits for the client to open its window.
    stall: Option<Duration>,
}

/// The request body, on its way to the data path.
struct Rx {
    body: RecvStream,
    framing: BodyFraming,
    /// Taken from `h2`, not yet handed over (chunk-framed when `framing` is chunked).
    pending: Bytes,
    state: RxState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RxState {
    Data,
    Trailers,
    /// All of the body was handed over (or it failed): reads give end of stream.
    Done,
}

/// The response, on its way to the client.
struct Tx {
    phase: Phase,
    /// Head bytes not yet complete; then body bytes not yet sent (a partial chunk).
    buf: Vec<u8>,
    /// Where `dechunk` stopped in `buf`.
    pos: usize,
    head_request: bool,
    framing: Framing,
    /// Body bytes a content-length response still owes.
    left: u64,
    /// The writer sends the body itself (`send_body`, then `end`): the head's framing is
    /// ignored, so trailers can follow any body.
    direct: bool,
    dechunk: Dechunk,
}

enum Phase {
    Head(SendResponse<Bytes>),
    Body(SendStream<Bytes>),
    /// The response ended (or was reset): nothing more goes out.
    Done,
}

/// What the bytes written so far call for next.
enum Step {
    /// Nothing until the data path writes more.
    Idle,
    Data(Bytes, bool),
    Trailers(http::HeaderMap),
}

/// How a stream's data path run ended, for its task.
pub(crate) struct Ended {
    /// The client reset the stream.
    pub(crate) reset_by_client: bool,
    /// Part of the request body was never read.
    pub(crate) unread: bool,
}

impl Down {
    /// The data path's end of a stream whose request head declared `framing`.
    pub(crate) fn new(
        body: RecvStream,
        framing: BodyFraming,
        respond: SendResponse<Bytes>,
        head_request: bool,
        stall: Option<Duration>,
    ) -> Down {
        let state = if framing == BodyFraming::None {
            RxState::Done
        } else {
            RxState::Data
        };
        Down(Rc::new(Shared {
            rx: RefCell::new(Rx {
                body,
                framing,
                pending: Bytes::new(),
                state,
            }),
            tx: RefCell::new(Tx {
                phase: Phase::Head(respond),
                buf: Vec::new(),
                pos: 0,
                head_request,
                framing: Framing::None,
                left: 0,
                direct: false,
                dechunk: Dechunk::new(),
            }),
            reset_by_client: Cell::new(false),
            stall,
        }))
    }

    /// Reads request body bytes into the spare capacity of `buf`; `Ok(0)` at its end.
    pub async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        poll_fn(|cx| self.0.poll_read(cx, buf)).await
    }

    /// Takes response bytes as the data path writes them (HTTP/1.1), sending what they make
    /// complete; returns once the client's window took the body bytes among them.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut input = data;
        loop {
            let step = self.0.tx.borrow_mut().step(&mut input)?;
            match step {
                Step::Idle => return Ok(()),
                Step::Data(bytes, end) => self.send(bytes, end).await?,
                Step::Trailers(map) => {
                    let mut tx = self.0.tx.borrow_mut();
                    let res = match &mut tx.phase {
                        Phase::Body(s) => s.send_trailers(map),
                        _ => Ok(()),
                    };
                    tx.phase = Phase::Done;
                    drop(tx);
                    res.map_err(|e| self.0.client_error(e))?;
                }
            }
        }
    }

    /// The end of a close-delimited body (the data path's only use of a shutdown here).
    pub fn shutdown(&mut self) {
        let mut tx = self.0.tx.borrow_mut();
        if tx.framing == Framing::CloseDelimited && !tx.direct {
            if let Phase::Body(s) = &mut tx.phase {
                let _ = s.send_data(Bytes::new(), true);
            }
            tx.phase = Phase::Done;
        }
    }

    /// The request body's next DATA as it came (an h2 target's upload takes it whole: no chunk
    /// framing, no copy), and whether it was the last (no trailers follow); `None` at its end.
    /// Only before any `read_more`. The flow-control window opens again by `release`, once the
    /// bytes went on.
    pub(crate) async fn recv_data(&self) -> io::Result<Option<(Bytes, bool)>> {
        poll_fn(|cx| {
            let mut rx = self.0.rx.borrow_mut();
            debug_assert!(rx.pending.is_empty(), "recv_data after read_more");
            if rx.state != RxState::Data {
                return Poll::Ready(Ok(None));
            }
            match std::task::ready!(rx.body.poll_data(cx)) {
                Some(Ok(b)) => {
                    let last = rx.body.is_end_stream();
                    if last {
                        rx.state = RxState::Done;
                    }
                    Poll::Ready(Ok(Some((b, last))))
                }
                Some(Err(e)) => {
                    rx.state = RxState::Done;
                    Poll::Ready(Err(self.0.client_error(e)))
                }
                None => {
                    rx.state = RxState::Trailers;
                    Poll::Ready(Ok(None))
                }
            }
        })
        .await
    }

    /// Opens the request's flow-control window by `n` bytes taken with `recv_data`.
    pub(crate) fn release(&self, n: usize) {
        let _ = self
            .0
            .rx
            .borrow_mut()
            .body
            .flow_control()
            .release_capacity(n);
    }

    /// The request's trailers, after `recv_data` said its body ended.
    pub(crate) async fn recv_trailers(&self) -> io::Result<Option<http::HeaderMap>> {
        poll_fn(|cx| {
            let mut rx = self.0.rx.borrow_mut();
            if rx.state != RxState::Trailers {
                return Poll::Ready(Ok(None));
            }
            let polled = std::task::ready!(rx.body.poll_trailers(cx));
            rx.state = RxState::Done;
            Poll::Ready(polled.map_err(|e| self.0.client_error(e)))
        })
        .await
    }

    /// Says the response about to be written gets its body by `send_body` and its end by
    /// `end` (an h2 target's DATA and trailers, passed on as they are): whatever its head
    /// says, the body is not re-framed and trailers may follow a length.
    pub(crate) fn frames_body_itself(&self) {
        self.0.tx.borrow_mut().direct = true;
    }

    /// Sends body bytes of a response announced by `frames_body_itself`.
    pub(crate) async fn send_body(&self, data: Bytes) -> io::Result<()> {
        self.send(data, false).await
    }

    /// Ends a response announced by `frames_body_itself`, with its trailers if any.
    pub(crate) fn end(&self, trailers: Option<http::HeaderMap>) -> io::Result<()> {
        let mut tx = self.0.tx.borrow_mut();
        let res = match (&mut tx.phase, trailers) {
            (Phase::Body(s), Some(t)) if !t.is_empty() => s.send_trailers(t),
            (Phase::Body(s), _) => s.send_data(Bytes::new(), true),
            _ => return Ok(()),
        };
        tx.phase = Phase::Done;
        drop(tx);
        res.map_err(|e| self.0.client_error(e))
    }

    /// Sends `data` as the client's window allows; a window that stays shut for `stall`
    /// resets the stream rather than pinning its buffers.
    async fn send(&self, mut data: Bytes, end: bool) -> io::Result<()> {
        let sh = &*self.0;
        if data.is_empty() {
            let sent = sh.tx.borrow_mut().send(data, end);
            return sent.map_err(|e| sh.client_error(e));
        }
        while !data.is_empty() {
            let want = data.len();
            let mut poll = |cx: &mut Context<'_>| match &mut sh.tx.borrow_mut().phase {
                Phase::Body(s) => {
                    s.reserve_capacity(want);
                    s.poll_capacity(cx)
                }
                _ => Poll::Ready(None),
            };
            // Window already open (a small response, mostly): no timer to arm and cancel.
            let ready = poll_fn(|cx| Poll::Ready(poll(cx))).await;
            let polled = match ready {
                Poll::Ready(r) => Some(r),
                Poll::Pending => match sh.stall {
                    Some(d) => monoio::time::timeout(d, poll_fn(&mut poll)).await.ok(),
                    None => Some(poll_fn(&mut poll).await),
                },
            };
            let cap = match polled {
                None => {
                    tracing::debug!(
                        "HTTP/2 client kept its window shut past idle_timeout; stream reset"
                    );
                    sh.tx.borrow_mut().reset(Reason::CANCEL);
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Some(None) => return Err(io::ErrorKind::BrokenPipe.into()),
                Some(Some(Err(e))) => return Err(sh.client_error(e)),
                Some(Some(Ok(n))) => n,
            };
            if cap == 0 {
                continue;
            }
            let chunk = data.split_to(cap.min(data.len()));
            let sent = sh.tx.borrow_mut().send(chunk, end && data.is_empty());
            sent.map_err(|e| sh.client_error(e))?;
        }
        Ok(())
    }

    /// Waits for the client to reset the stream while its response is still owed (a
    /// connection that failed counts too); never ready once the response ended.
    pub(crate) fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut tx = self.0.tx.borrow_mut();
        let polled = match &mut tx.phase {
            Phase::Head(r) => r.poll_reset(cx),
            Phase::Body(s) => s.poll_reset(cx),
            Phase::Done => return Poll::Pending,
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                if r.is_ok() {
                    self.0.reset_by_client.set(true);
                }
                tx.phase = Phase::Done;
                Poll::Ready(())
            }
        }
    }

    /// Called once the data path is done with the stream: a response it left unfinished (none,
    /// or a body cut short) is reset, as nothing else can tell the client.
    pub(crate) fn finish(&self) -> Ended {
        self.0.tx.borrow_mut().reset(Reason::INTERNAL_ERROR);
        let rx = self.0.rx.borrow();
        Ended {
            reset_by_client: self.0.reset_by_client.get(),
            unread: rx.state != RxState::Done,
        }
    }

    /// Reads and drops what is left of the request body, up to `max` bytes.
    pub(crate) async fn discard(&self, max: usize) {
        let mut dropped = 0;
        while dropped < max {
            let polled = poll_fn(|cx| {
                let mut rx = self.0.rx.borrow_mut();
                if rx.state != RxState::Data {
                    return Poll::Ready(None);
                }
                rx.body.poll_data(cx)
            })
            .await;
            match polled {
                Some(Ok(b)) => {
                    dropped += b.len();
                    let _ = self
                        .0
                        .rx
                        .borrow_mut()
                        .body
                        .flow_control()
                        .release_capacity(b.len());
                }
                Some(Err(e)) => {
                    self.0.client_error(e);
                    return;
                }
                None => return,
            }
        }
    }
}

impl Shared {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.borrow_mut();
        let rx = &mut *rx;
        loop {
            if !rx.pending.is_empty() {
                let n = rx.pending.len().min(buf.capacity() - buf.len());
                buf.extend_from_slice(&rx.pending[..n]);
                rx.pending.advance(n);
                return Poll::Ready(Ok(n));
            }
            match rx.state {
                RxState::Done => return Poll::Ready(Ok(0)),
                RxState::Data => match std::task::ready!(rx.body.poll_data(cx)) {
                    Some(Ok(b)) => {
                        let _ = rx.body.flow_control().release_capacity(b.len());
                        if rx.framing != BodyFraming::Chunked {
                            rx.pending = b;
                        } else if !b.is_empty() {
                            let mut out = Vec::with_capacity(b.len() + 12);
                            write_chunk_header(b.len(), &mut out);
                            out.extend_from_slice(&b);
                            out.extend_from_slice(b"\r\n");
                            rx.pending = out.into();
                        }
                    }
                    Some(Err(e)) => {
                        rx.state = RxState::Done;
                        return Poll::Ready(Err(self.client_error(e)));
                    }
                    None if rx.framing == BodyFraming::Chunked => rx.state = RxState::Trailers,
                    None => rx.state = RxState::Done,
                },
                RxState::Trailers => {
                    let trailers = match std::task::ready!(rx.body.poll_trailers(cx)) {
                        Ok(t) => t,
                        Err(e) => {
                            rx.state = RxState::Done;
                            return Poll::Ready(Err(self.client_error(e)));
                        }
                    };
                    let mut out = b"0\r\n".to_vec();
                    for (name, value) in trailers.iter().flatten() {
                        out.extend_from_slice(name.as_str().as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                    rx.pending = out.into();
                    rx.state = RxState::Done;
                }
            }
        }
    }

    /// An h2 error as the data path's I/O error, noting a client's reset.
    fn client_error(&self, e: h2::Error) -> io::Error {
        if is_reset(&e) {
            self.reset_by_client.set(true);
        }
        h2_io(e)
    }
}

impl Tx {
    /// Takes `input` (all of it, or the part a returned step covers) and says what to send.
    fn step(&mut self, input: &mut &[u8]) -> io::Result<Step> {
        if let Phase::Head(_) = self.phase {
            self.buf.extend_from_slice(input);
            *input = &[];
            if !self.head()? {
                return Ok(Step::Idle);
            }
        }
        if !matches!(self.phase, Phase::Body(_)) {
            // After the end nothing more belongs to the response.
            *input = &[];
            return Ok(Step::Idle);
        }
        match self.framing {
            Framing::Length(_) | Framing::CloseDelimited => {
                let limited = matches!(self.framing, Framing::Length(_));
                let from_buf = !self.buf.is_empty();
                let src: &[u8] = if from_buf { &self.buf } else { input };
                let mut n = src.len();
                if limited {
                    n = n.min(self.left as usize);
                }
                if n == 0 {
                    *input = &[];
                    return Ok(Step::Idle);
                }
                let data = Bytes::copy_from_slice(&src[..n]);
                if from_buf {
                    self.buf.drain(..n);
                } else {
                    *input = &input[n..];
                }
                self.left = self.left.saturating_sub(n as u64);
                Ok(Step::Data(data, limited && self.left == 0))
            }
            Framing::Chunked => {
                self.buf.extend_from_slice(input);
                *input = &[];
                let mut p = self.pos;
                let next = self.dechunk.next(&self.buf, &mut p);
                self.pos = p;
                match next {
                    Err(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk")),
                    Ok(Next::Data(r)) => {
                        Ok(Step::Data(Bytes::copy_from_slice(&self.buf[r]), false))
                    }
                    Ok(Next::End(trailers)) => {
                        self.buf.clear();
                        self.pos = 0;
                        if trailers.is_empty() {
                            Ok(Step::Data(Bytes::new(), true))
                        } else {
                            Ok(Step::Trailers(trailers))
                        }
                    }
                    Ok(Next::More) => {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                        Ok(Step::Idle)
                    }
                }
            }
            Framing::None => Ok(Step::Idle),
        }
    }

    /// Sends the response head once `buf` holds it (interim ones before it); `false` while it
    /// is incomplete.
    fn head(&mut self) -> io::Result<bool> {
        loop {
            if !matches!(self.phase, Phase::Head(_)) {
                return Ok(true);
            }
            let Some(h) =
                head::own_response(&self.buf, self.head_request).map_err(|()| self.broken())?
            else {
                return Ok(false);
            };
            let Phase::Head(respond) = &mut self.phase else {
                return Ok(true);
            };
            if h.response.status().is_informational() {
                // Interim responses (100 Continue, 103 Early Hints) are passed on.
                let _ = respond.send_informational(h.response);
                self.buf.drain(..h.len);
                continue;
            }
            let framing = match h.framing {
                Framing::None => Framing::None,
                _ if self.direct => Framing::CloseDelimited,
                f => f,
            };
            let end = matches!(framing, Framing::None | Framing::Length(0));
            let sent = respond.send_response(h.response, end);
            self.buf.drain(..h.len);
            self.framing = framing;
            if let Framing::Length(n) = framing {
                self.left = n;
            }
            self.phase = match sent {
                Ok(_) if end => Phase::Done,
                Ok(s) => Phase::Body(s),
                Err(e) => {
                    self.phase = Phase::Done;
                    return Err(h2_io(e));
                }
            };
            return Ok(true);
        }
    }

    /// What the data path wrote is no HTTP/1.1 response (a bug): the client gets 502.
    fn broken(&mut self) -> io::Error {
        if let Phase::Head(respond) = &mut self.phase {
            let mut resp = http::Response::new(());
            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
            let _ = respond.send_response(resp, true);
        }
        self.phase = Phase::Done;
        io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.1 response")
    }

    fn send(&mut self, data: Bytes, end: bool) -> Result<(), h2::Error> {
        let Phase::Body(s) = &mut self.phase else {
            return Err(Reason::CANCEL.into());
        };
        let res = s.send_data(data, end);
        if end || res.is_err() {
            self.phase = Phase::Done;
        }
        res
    }

    /// Resets a response still owed.
    fn reset(&mut self, reason: Reason) {
        match &mut self.phase {
            Phase::Head(r) => r.send_reset(reason),
            Phase::Body(s) => s.send_reset(reason),
            Phase::Done => {}
        }
        self.phase = Phase::Done;
    }
}

fn is_reset(e: &h2::Error) -> bool {
    e.is_reset() && e.is_remote()
}

fn h2_io(e: h2::Error) -> io::Error {
    io::Error::other(e)
}
