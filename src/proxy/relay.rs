//! Bodies in both directions: Content-Length, chunked and close-delimited framing, re-coded
//! where the two sides differ, spliced when both sides are plaintext sockets.

use std::cell::Cell;
use std::ops::Range;
use std::time::Duration;

use crate::error::{ErrorKind, ProxyError, Side};
use crate::http1::body::{write_chunk_header, BodyError, ChunkedDecoder, Encode, LAST_CHUNK};
use crate::http1::parse::Framing;
use crate::net::splice::Pipe;
use crate::net::stream::{Stream, MIN_READ_SPACE};
use crate::proxy::session::{
    timed, RecvBuf, Session, BODY_CHUNK, CHUNK_FRAMING_ROOM, SPLICE_MIN_BODY,
};
use crate::upstream::pool::UpConn;
use crate::worker::ctx::WorkerCtx;

/// Errors while relaying a body, by side.
pub(crate) fn io_err(side: Side, e: std::io::Error) -> ProxyError {
    match side {
        Side::Downstream => ProxyError::downstream(ErrorKind::ClientIo(e)),
        _ => ProxyError::upstream(
            ErrorKind::UpstreamIo {
                err: e,
                before_response: false,
            },
            false,
        ),
    }
}

fn timeout_err(side: Side) -> ProxyError {
    match side {
        Side::Downstream => {
            ProxyError::downstream(ErrorKind::ClientIo(std::io::ErrorKind::TimedOut.into()))
        }
        _ => ProxyError::upstream(ErrorKind::UpstreamTimeout, false),
    }
}

pub(crate) struct BodyLimits {
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    /// Payload bytes allowed (chunked request bodies against `max_request_body`).
    pub(crate) max: Option<u64>,
    /// Body bytes (as framed on the wire) read from the source so far, for the access log.
    pub(crate) moved: Cell<u64>,
}

/// Which way a body moves: client to upstream (a request) or back (a response).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Up,
    Down,
}

/// One body on its way from `src` to `dst`. `buf[pos..]` holds bytes of it that arrived with
/// the head; on return it holds whatever followed the body.
pub(crate) struct Relay<'a> {
    pub(crate) ctx: &'a WorkerCtx,
    pub(crate) dir: Dir,
    pub(crate) src: &'a mut Stream,
    pub(crate) buf: &'a mut RecvBuf,
    pub(crate) dst: &'a mut Stream,
    /// Scratch space for re-coded chunks.
    pub(crate) aux: &'a mut Vec<u8>,
    pub(crate) lim: &'a BodyLimits,
}

impl Relay<'_> {
    /// The side each end's failures are blamed on: `(source, destination)`.
    fn sides(&self) -> (Side, Side) {
        match self.dir {
            Dir::Up => (Side::Downstream, Side::Upstream),
            Dir::Down => (Side::Upstream, Side::Downstream),
        }
    }

    fn moved(&self, n: u64) {
        self.lim.moved.set(self.lim.moved.get() + n);
    }

    /// Streams the whole body, framed as `framing`, written as `encode` says.
    pub(crate) async fn body(
        &mut self,
        framing: Framing,
        encode: Encode,
    ) -> Result<(), ProxyError> {
        match framing {
            Framing::None => Ok(()),
            Framing::Length(n) => self.length(n, encode).await,
            Framing::CloseDelimited => self.until_close(encode).await,
            Framing::Chunked => self.chunked(encode).await,
        }
    }

    async fn length(&mut self, n: u64, encode: Encode) -> Result<(), ProxyError> {
        let mut remaining = n;
        loop {
            let take = (self.buf.pending() as u64).min(remaining) as usize;
            if take > 0 {
                let at = self.buf.pos;
                self.write_range(at..at + take, encode).await?;
                self.buf.pos += take;
                remaining -= take as u64;
                self.moved(take as u64);
            }
            if remaining == 0 {
                return Ok(());
            }
            if encode == Encode::Raw
                && remaining >= SPLICE_MIN_BODY
                && self.src.can_splice()
                && self.dst.can_splice()
            {
                match Pipe::take() {
                    Ok(mut pipe) => {
                        // An error may leave bytes in the pipe: then it is dropped, not reused.
                        self.splice(&mut pipe, remaining).await?;
                        pipe.give_back();
                        self.moved(remaining);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::debug!(worker = self.ctx.id(), "no splice pipe ({e}); copying")
                    }
                }
            }
            self.buf.reset();
            self.read(BODY_CHUNK).await?;
        }
    }

    async fn until_close(&mut self, encode: Encode) -> Result<(), ProxyError> {
        loop {
            if self.buf.pending() > 0 {
                let range = self.buf.pos..self.buf.buf.len();
                self.write_range(range, encode).await?;
                self.moved(self.buf.pending() as u64);
                self.buf.pos = self.buf.buf.len();
            }
            self.buf.reset();
            match self.read(BODY_CHUNK).await {
                Ok(()) => {}
                Err(ProxyError {
                    kind: ErrorKind::UpstreamIo { err, .. },
                    ..
                }) if err.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        if encode == Encode::Chunk {
            self.aux.clear();
            self.aux.extend_from_slice(LAST_CHUNK);
            self.write_aux().await?;
        }
        Ok(())
    }

    async fn chunked(&mut self, encode: Encode) -> Result<(), ProxyError> {
        let (src_side, _) = self.sides();
        let mut dec = ChunkedDecoder::new();
        let mut payload = 0u64;
        loop {
            // Walk what is buffered: forward raw framing+data, or only the data.
            let start = self.buf.pos;
            let mut p = start;
            self.aux.clear();
            let mut done = false;
            while p < self.buf.buf.len() {
                let step = dec.step(&self.buf.buf[p..]).map_err(|e| {
                    let why = match e {
                        BodyError::Malformed(w) | BodyError::TooLarge(w) => w,
                    };
                    match src_side {
                        Side::Downstream => ProxyError::downstream(ErrorKind::BadBody(why)),
                        _ => ProxyError::upstream(ErrorKind::UpstreamInvalid(why), false),
                    }
                })?;
                if let Some(r) = &step.data {
                    payload += r.len() as u64;
                    if encode == Encode::Dechunk {
                        self.aux
                            .extend_from_slice(&self.buf.buf[p + r.start..p + r.end]);
                    }
                }
                p += step.consumed;
                if step.done {
                    done = true;
                    break;
                }
                if step.consumed == 0 {
                    break;
                }
            }
            if self.lim.max.is_some_and(|m| payload > m) {
                return Err(ProxyError::downstream(ErrorKind::BodyTooLarge));
            }
            match encode {
                Encode::Discard => {}
                Encode::Dechunk => {
                    if !self.aux.is_empty() {
                        self.write_aux().await?;
                    }
                }
                _ => {
                    if p > start {
                        self.write_range(start..p, Encode::Raw).await?;
                    }
                }
            }
            self.moved((p - start) as u64);
            self.buf.pos = p;
            if done {
                return Ok(());
            }
            // Keep an incomplete size line or trailer for the next step.
            self.buf.compact();
            self.read(CHUNK_FRAMING_ROOM.max(BODY_CHUNK)).await?;
        }
    }

    /// Moves `remaining` body bytes socket -> pipe -> socket without copying them through user
    /// space. Never reads past the body, so a pipelined next request stays in the socket.
    async fn splice(&mut self, pipe: &mut Pipe, mut remaining: u64) -> Result<(), ProxyError> {
        let (src_side, dst_side) = self.sides();
        self.src.prepare_splice().map_err(|e| io_err(src_side, e))?;
        self.dst.prepare_splice().map_err(|e| io_err(dst_side, e))?;
        while remaining > 0 {
            // The pipe may grow after a fill that filled it, so ask for its capacity each step.
            let want = remaining.min(pipe.capacity() as u64) as usize;
            let n = match timed(self.lim.read_timeout, self.src.splice_in(pipe, want)).await {
                None => return Err(timeout_err(src_side)),
                Some(Ok(0)) => {
                    return Err(io_err(src_side, std::io::ErrorKind::UnexpectedEof.into()))
                }
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(io_err(src_side, e)),
            };
            match timed(self.lim.write_timeout, self.dst.splice_out(pipe, n)).await {
                None => return Err(timeout_err(dst_side)),
                Some(Err(e)) => return Err(io_err(dst_side, e)),
                Some(Ok(())) => {}
            }
            remaining -= n as u64;
            self.ctx.count_spliced(self.dir == Dir::Up, n as u64);
        }
        Ok(())
    }

    /// One body read; end of stream before the body ended is `UnexpectedEof` on that side.
    async fn read(&mut self, cap: usize) -> Result<(), ProxyError> {
        let (side, _) = self.sides();
        match timed(self.lim.read_timeout, self.buf.read_more(self.src, cap)).await {
            None => Err(timeout_err(side)),
            Some(Ok(0)) => Err(io_err(side, std::io::ErrorKind::UnexpectedEof.into())),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(io_err(side, e)),
        }
    }

    /// Writes `buf.buf[range]` to the destination, wrapped in a chunk when re-coding.
    async fn write_range(&mut self, range: Range<usize>, encode: Encode) -> Result<(), ProxyError> {
        let (_, side) = self.sides();
        if encode == Encode::Discard {
            return Ok(());
        }
        if encode == Encode::Chunk {
            self.aux.clear();
            write_chunk_header(range.len(), self.aux);
            self.aux.extend_from_slice(&self.buf.buf[range]);
            self.aux.extend_from_slice(b"\r\n");
            return self.write_aux().await;
        }
        let buf = std::mem::take(&mut self.buf.buf);
        let res = timed(self.lim.write_timeout, self.dst.write_range(buf, range)).await;
        match res {
            Some((r, buf)) => {
                self.buf.buf = buf;
                r.map_err(|e| io_err(side, e))
            }
            None => Err(timeout_err(side)),
        }
    }

    async fn write_aux(&mut self) -> Result<(), ProxyError> {
        let (_, side) = self.sides();
        let buf = std::mem::take(self.aux);
        match timed(self.lim.write_timeout, self.dst.write_all(buf)).await {
            Some((r, buf)) => {
                *self.aux = buf;
                r.map_err(|e| io_err(side, e))
            }
            None => Err(timeout_err(side)),
        }
    }
}

/// Reads until `want` body bytes (or the whole body, if shorter) sit in `rb` after `rb.pos`,
/// for `request_buffer` / `response_buffer`. End of stream stops early without error: the relay
/// that follows reports a truncated body.
pub(crate) async fn fill_body(
    stream: &mut Stream,
    rb: &mut RecvBuf,
    framing: Framing,
    want: u64,
    read_timeout: Option<Duration>,
) -> std::io::Result<()> {
    let target = match framing {
        Framing::None => return Ok(()),
        Framing::Length(n) => n.min(want),
        Framing::Chunked | Framing::CloseDelimited => want,
    } as usize;
    let cap = rb.pos + target + MIN_READ_SPACE;
    while rb.pending() < target {
        if framing == Framing::Chunked && chunked_complete(&rb.buf[rb.pos..]) {
            break;
        }
        match timed(read_timeout, rb.read_more(stream, cap)).await {
            None => return Err(std::io::ErrorKind::TimedOut.into()),
            Some(Ok(0)) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `bytes` hold a whole chunked body (malformed counts as complete: the relay says so).
pub(crate) fn chunked_complete(bytes: &[u8]) -> bool {
    let mut dec = ChunkedDecoder::new();
    let mut p = 0;
    loop {
        match dec.step(&bytes[p..]) {
            Ok(step) if step.done => return true,
            Ok(step) if step.consumed == 0 => return false,
            Ok(step) => p += step.consumed,
            Err(_) => return true,
        }
    }
}

/// Streams the rest of the request body from the client to the upstream, as received (also
/// under `early::send_body`'s watch for an early answer).
pub(crate) async fn stream_body(
    sess: &mut Session<'_>,
    conn: &mut UpConn,
    rest: Framing,
    lim: &BodyLimits,
) -> Result<(), ProxyError> {
    Relay {
        ctx: sess.ctx,
        dir: Dir::Up,
        src: sess.stream,
        buf: sess.down,
        dst: &mut conn.stream,
        aux: &mut sess.s.aux,
        lim,
    }
    .body(rest, Encode::Raw)
    .await
}
