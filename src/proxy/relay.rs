//! Bodies in both directions: Content-Length, chunked and close-delimited framing, re-coded
//! where the two sides differ, spliced when both sides are plaintext sockets.

use std::cell::Cell;
use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::{ErrorKind, ProxyError, Side};
use crate::http1::body::{write_chunk_header, BodyError, ChunkedDecoder, Encode, LAST_CHUNK};
use crate::http1::parse::Framing;
use crate::net::splice::{Pipe, SPILL_MAX, STALL_GRACE};
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
        // Bytes copied since a splice stalled on the destination (`None`: none stalled).
        let mut stalled: Option<u64> = None;
        loop {
            let take = (self.buf.pending() as u64).min(remaining) as usize;
            if take > 0 {
                let at = self.buf.pos;
                self.write_range(at..at + take, encode).await?;
                self.buf.pos += take;
                remaining -= take as u64;
                self.moved(take as u64);
                if let Some(copied) = &mut stalled {
                    *copied += take as u64;
                }
            }
            if remaining == 0 {
                return Ok(());
            }
            if encode == Encode::Raw
                && remaining >= SPLICE_MIN_BODY
                && stalled.is_none_or(may_splice_again)
                && self.src.can_splice()
                && self.dst.can_splice()
            {
                match self.splice(&mut remaining).await? {
                    Spliced::Done => return Ok(()),
                    // The pipe's bytes wait in `buf`; copying goes on from there.
                    Spliced::Stalled => {
                        stalled = Some(0);
                        continue;
                    }
                    Spliced::NoPipe => {}
                }
            }
            self.buf.reset();
            let cap = match stalled {
                // A stalled destination gets no more than a small buffer's worth at a time.
                Some(_) => {
                    let small = self.buf.floor + STALLED_CHUNK;
                    if self.buf.buf.capacity() > small + STALLED_CHUNK {
                        self.buf.buf.shrink_to(small);
                    }
                    STALLED_CHUNK
                }
                None => BODY_CHUNK,
            };
            self.read(cap).await?;
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
    /// space, counting down `remaining` as they reach the destination. Never reads past the
    /// body, so a pipelined next request stays in the socket. The pipe is held only while
    /// bytes move: an empty one goes back to the pool while the source is quiet, and one whose
    /// destination stalls is emptied into `buf` (`Spliced::Stalled`).
    async fn splice(&mut self, remaining: &mut u64) -> Result<Spliced, ProxyError> {
        let (src_side, dst_side) = self.sides();
        let src = self.src.splice_fd().map_err(|e| io_err(src_side, e))?;
        let dst = self.dst.splice_fd().map_err(|e| io_err(dst_side, e))?;
        self.src.prepare_splice().map_err(|e| io_err(src_side, e))?;
        self.dst.prepare_splice().map_err(|e| io_err(dst_side, e))?;
        // An error may leave bytes in the pipe: then it is dropped with this, not reused.
        let mut pipe: Option<Pipe> = None;
        while *remaining > 0 {
            let filled = timed(
                self.lim.read_timeout,
                self.fill(&mut pipe, src, dst, *remaining),
            );
            let n = match filled.await {
                None => return Err(timeout_err(src_side)),
                Some(Ok(None)) => return Ok(Spliced::NoPipe),
                Some(Ok(Some(0))) => {
                    return Err(io_err(src_side, std::io::ErrorKind::UnexpectedEof.into()))
                }
                Some(Ok(Some(n))) => n,
                Some(Err(e)) => return Err(io_err(src_side, e)),
            };
            let drained = timed(self.lim.write_timeout, self.drain(&mut pipe, dst, n));
            let spilled = match drained.await {
                None => return Err(timeout_err(dst_side)),
                Some(Err(e)) => return Err(io_err(dst_side, e)),
                Some(Ok(spilled)) => spilled,
            };
            let out = (n - spilled) as u64;
            *remaining -= out;
            self.moved(out);
            self.ctx.count_spliced(self.dir == Dir::Up, out);
            if spilled > 0 {
                return Ok(Spliced::Stalled);
            }
        }
        if let Some(p) = pipe {
            p.give_back();
        }
        Ok(Spliced::Done)
    }

    /// Splices up to `want` bytes from the source into the pipe, taking one from the pool
    /// when it has none (`Ok(None)`: none to be had). While the source stays quiet past
    /// `STALL_GRACE` the empty pipe goes back to the pool.
    async fn fill(
        &self,
        pipe: &mut Option<Pipe>,
        src: RawFd,
        dst: RawFd,
        want: u64,
    ) -> std::io::Result<Option<usize>> {
        loop {
            let p = match pipe {
                Some(p) => p,
                None => match Pipe::take() {
                    Ok(p) => pipe.insert(p),
                    Err(e) => {
                        tracing::debug!(worker = self.ctx.id(), "no splice pipe ({e}); copying");
                        return Ok(None);
                    }
                },
            };
            let len = want.min(p.capacity() as u64) as usize;
            match p.fill(src, dst, len) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match monoio::time::timeout(STALL_GRACE, self.src.wait_readable()).await {
                        Ok(r) => r?,
                        Err(_) => {
                            // Debug level: the loadtest's slow-read trace matches these with
                            // the normal client's outliers.
                            tracing::debug!(
                                worker = self.ctx.id(),
                                src = src,
                                "splice source quiet for {STALL_GRACE:?}; pipe back to the pool"
                            );
                            if let Some(p) = pipe.take() {
                                p.give_back();
                            }
                            self.src.wait_readable().await?;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Splices the `n` bytes the pipe holds out to the destination. Returns how many were
    /// spilled instead: when the destination took nothing for `STALL_GRACE` and the rest fits
    /// `SPILL_MAX`, it goes into `buf` (copied on from there) and the pipe back to the pool.
    async fn drain(
        &mut self,
        pipe: &mut Option<Pipe>,
        dst: RawFd,
        n: usize,
    ) -> std::io::Result<usize> {
        let mut left = n;
        while left > 0 {
            let Some(p) = pipe.as_mut() else {
                unreachable!("a filled pipe is held until it is drained or spilled")
            };
            match p.drain(dst, left) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match monoio::time::timeout(STALL_GRACE, self.dst.wait_writable()).await {
                        Ok(r) => r?,
                        Err(_) if spill_on_stall(left) => {
                            tracing::debug!(
                                worker = self.ctx.id(),
                                dst = dst,
                                "splice destination stalled for {STALL_GRACE:?}; spilling {left} bytes"
                            );
                            self.buf.reset();
                            p.spill(&mut self.buf.buf, left)?;
                            if let Some(p) = pipe.take() {
                                p.give_back();
                            }
                            return Ok(left);
                        }
                        Err(_) => {
                            tracing::debug!(
                                worker = self.ctx.id(),
                                dst = dst,
                                "splice destination stalled for {STALL_GRACE:?}; keeping a grown pipe of {left} bytes"
                            );
                            self.dst.wait_writable().await?
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(0)
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

/// How a spliced body ended.
enum Spliced {
    /// Every byte reached the destination.
    Done,
    /// The destination stalled: what the pipe held waits in the relay's buffer, the pipe went
    /// back, and the rest of the body is copied.
    Stalled,
    /// No pipe could be had (out of descriptors): the rest is copied.
    NoPipe,
}

/// Reads per step once a destination stalled: the most a slow reader keeps in user space,
/// as HAProxy's default 16 KiB buffer.
const STALLED_CHUNK: usize = 16 * 1024;

/// Bytes copied after a stall before splicing is tried again: a client that came back to speed
/// returns to the cheap path, a slow reader (a few bytes a second) never gets this far.
const RESPLICE_AFTER: u64 = 1024 * 1024;

/// Whether a destination that took nothing for `STALL_GRACE` gets the `held` bytes of its pipe
/// through user space, so the pipe can go back; more than `SPILL_MAX` (a grown pipe) stays put.
fn spill_on_stall(held: usize) -> bool {
    held <= SPILL_MAX
}

/// Whether a body whose splice stalled may splice again, `copied` bytes later.
fn may_splice_again(copied: u64) -> bool {
    copied >= RESPLICE_AFTER
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_destination_gets_a_base_pipes_worth_through_user_space_and_no_more() {
        let table = [
            (1, true, "a few bytes"),
            (16 * 1024, true, "a small buffer's worth"),
            (SPILL_MAX, true, "a full base pipe"),
            (SPILL_MAX + 1, false, "more than a base pipe holds"),
            (1 << 20, false, "a full grown pipe"),
        ];
        for (held, spill, why) in table {
            assert_eq!(spill_on_stall(held), spill, "{why}");
        }
    }

    #[test]
    fn a_stalled_body_splices_again_only_after_its_reader_took_a_mib_at_copy_speed() {
        let table = [
            (0, false, "just stalled"),
            (STALLED_CHUNK as u64, false, "one small buffer later"),
            (RESPLICE_AFTER - 1, false, "one byte short"),
            (RESPLICE_AFTER, true, "a MiB later"),
        ];
        for (copied, again, why) in table {
            assert_eq!(may_splice_again(copied), again, "{why}");
        }
    }
}
