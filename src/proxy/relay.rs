//! Bodies in both directions: Content-Length, chunked and close-delimited framing, re-coded
//! where the two sides differ, spliced when both sides are plaintext sockets.

use std::time::Duration;

use crate::error::{ErrorKind, ProxyError, Side};
use crate::http1::body::{write_chunk_header, ChunkedDecoder, Encode, LAST_CHUNK};
use crate::http1::parse::Framing;
use crate::net::stream::{SplicePipe, Stream, MIN_READ_SPACE, SPLICE_CHUNK};
use crate::proxy::session::{timed, RecvBuf, BODY_CHUNK, CHUNK_FRAMING_ROOM, SPLICE_MIN_BODY};
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

pub(crate) fn timeout_err(side: Side) -> ProxyError {
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
    pub(crate) moved: std::cell::Cell<u64>,
}

/// Streams one body from `src` (whose `buf[pos..]` already holds bytes after the head) to
/// `dst`. On return `src.buf[src.pos..]` holds whatever followed the body.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_body(
    ctx: &WorkerCtx,
    upward: bool,
    src_stream: &mut Stream,
    src: &mut RecvBuf,
    src_side: Side,
    dst: &mut Stream,
    dst_side: Side,
    framing: Framing,
    encode: Encode,
    aux: &mut Vec<u8>,
    lim: &BodyLimits,
) -> Result<(), ProxyError> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => {
            let mut remaining = n;
            loop {
                let take = (src.pending() as u64).min(remaining) as usize;
                if take > 0 {
                    write_out(
                        dst,
                        dst_side,
                        src,
                        src.pos..src.pos + take,
                        encode,
                        aux,
                        lim,
                    )
                    .await?;
                    src.pos += take;
                    remaining -= take as u64;
                    lim.moved.set(lim.moved.get() + take as u64);
                }
                if remaining == 0 {
                    return Ok(());
                }
                if encode == Encode::Raw
                    && remaining >= SPLICE_MIN_BODY
                    && src_stream.can_splice()
                    && dst.can_splice()
                {
                    if let Some(mut pipe) = ctx.take_pipe() {
                        // An error may leave bytes in the pipe: then it is dropped, not reused.
                        splice_body(
                            ctx, upward, src_stream, src_side, dst, dst_side, &mut pipe, remaining,
                            lim,
                        )
                        .await?;
                        ctx.return_pipe(pipe);
                        lim.moved.set(lim.moved.get() + remaining);
                        return Ok(());
                    }
                }
                src.reset();
                read_body(src_stream, src, src_side, lim, BODY_CHUNK).await?;
            }
        }
        Framing::CloseDelimited => {
            loop {
                if src.pending() > 0 {
                    write_out(dst, dst_side, src, src.pos..src.buf.len(), encode, aux, lim).await?;
                    lim.moved.set(lim.moved.get() + src.pending() as u64);
                    src.pos = src.buf.len();
                }
                src.reset();
                match read_body(src_stream, src, src_side, lim, BODY_CHUNK).await {
                    Ok(()) => {}
                    Err(ProxyError {
                        kind: ErrorKind::UpstreamIo { err, .. },
                        ..
                    }) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if encode == Encode::Chunk {
                aux.clear();
                aux.extend_from_slice(LAST_CHUNK);
                write_aux(dst, dst_side, aux, lim).await?;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut payload = 0u64;
            loop {
                // Walk what is buffered: forward raw framing+data, or only the data.
                let start = src.pos;
                let mut p = src.pos;
                aux.clear();
                let mut done = false;
                while p < src.buf.len() {
                    let step = dec.step(&src.buf[p..]).map_err(|e| {
                        let why = match e {
                            crate::http1::body::BodyError::Malformed(w) => w,
                            crate::http1::body::BodyError::TooLarge(w) => w,
                        };
                        match src_side {
                            Side::Downstream => ProxyError::downstream(ErrorKind::BadBody(why)),
                            _ => ProxyError::upstream(ErrorKind::UpstreamInvalid(why), false),
                        }
                    })?;
                    if let Some(r) = &step.data {
                        payload += r.len() as u64;
                        if encode == Encode::Dechunk {
                            aux.extend_from_slice(&src.buf[p + r.start..p + r.end]);
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
                if lim.max.is_some_and(|m| payload > m) {
                    return Err(ProxyError::downstream(ErrorKind::BodyTooLarge));
                }
                match encode {
                    Encode::Discard => {}
                    Encode::Dechunk => {
                        if !aux.is_empty() {
                            write_aux(dst, dst_side, aux, lim).await?;
                        }
                    }
                    _ => {
                        if p > start {
                            write_out(dst, dst_side, src, start..p, Encode::Raw, aux, lim).await?;
                        }
                    }
                }
                lim.moved.set(lim.moved.get() + (p - start) as u64);
                src.pos = p;
                if done {
                    return Ok(());
                }
                // Keep an incomplete size line or trailer for the next step.
                src.compact();
                read_body(
                    src_stream,
                    src,
                    src_side,
                    lim,
                    CHUNK_FRAMING_ROOM.max(BODY_CHUNK),
                )
                .await?;
            }
        }
    }
}

/// Moves `remaining` body bytes socket -> pipe -> socket without copying them through user
/// space. Never reads past the body, so a pipelined next request stays in the socket.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn splice_body(
    ctx: &WorkerCtx,
    upward: bool,
    src: &mut Stream,
    src_side: Side,
    dst: &mut Stream,
    dst_side: Side,
    pipe: &mut SplicePipe,
    mut remaining: u64,
    lim: &BodyLimits,
) -> Result<(), ProxyError> {
    src.prepare_splice().map_err(|e| io_err(src_side, e))?;
    dst.prepare_splice().map_err(|e| io_err(dst_side, e))?;
    while remaining > 0 {
        let want = remaining.min(SPLICE_CHUNK as u64) as u32;
        let n = match timed(lim.read_timeout, src.splice_in(pipe, want)).await {
            None => return Err(timeout_err(src_side)),
            Some(Ok(0)) => return Err(io_err(src_side, std::io::ErrorKind::UnexpectedEof.into())),
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(io_err(src_side, e)),
        };
        match timed(lim.write_timeout, dst.splice_out(pipe, n)).await {
            None => return Err(timeout_err(dst_side)),
            Some(Err(e)) => return Err(io_err(dst_side, e)),
            Some(Ok(())) => {}
        }
        remaining -= n as u64;
        ctx.count_spliced(upward, n as u64);
    }
    Ok(())
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

/// Streams the rest of a request body from the client to the upstream, as received.
pub(crate) async fn send_request_body(
    ctx: &WorkerCtx,
    client: &mut Stream,
    down: &mut RecvBuf,
    upstream: &mut Stream,
    rest: Framing,
    aux: &mut Vec<u8>,
    lim: &BodyLimits,
) -> Result<(), ProxyError> {
    relay_body(
        ctx,
        true,
        client,
        down,
        Side::Downstream,
        upstream,
        Side::Upstream,
        rest,
        Encode::Raw,
        aux,
        lim,
    )
    .await
}

/// One body read; end of stream before the body ended is `UnexpectedEof` on that side.
pub(crate) async fn read_body(
    stream: &mut Stream,
    src: &mut RecvBuf,
    side: Side,
    lim: &BodyLimits,
    cap: usize,
) -> Result<(), ProxyError> {
    match timed(lim.read_timeout, src.read_more(stream, cap)).await {
        None => Err(timeout_err(side)),
        Some(Ok(0)) => Err(io_err(side, std::io::ErrorKind::UnexpectedEof.into())),
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(io_err(side, e)),
    }
}

pub(crate) async fn write_out(
    dst: &mut Stream,
    side: Side,
    src: &mut RecvBuf,
    range: std::ops::Range<usize>,
    encode: Encode,
    aux: &mut Vec<u8>,
    lim: &BodyLimits,
) -> Result<(), ProxyError> {
    if encode == Encode::Discard {
        return Ok(());
    }
    if encode == Encode::Chunk {
        aux.clear();
        write_chunk_header(range.len(), aux);
        aux.extend_from_slice(&src.buf[range]);
        aux.extend_from_slice(b"\r\n");
        return write_aux(dst, side, aux, lim).await;
    }
    let buf = std::mem::take(&mut src.buf);
    let res = timed(lim.write_timeout, dst.write_range(buf, range)).await;
    match res {
        Some((r, buf)) => {
            src.buf = buf;
            r.map_err(|e| io_err(side, e))
        }
        None => Err(timeout_err(side)),
    }
}

pub(crate) async fn write_aux(
    dst: &mut Stream,
    side: Side,
    aux: &mut Vec<u8>,
    lim: &BodyLimits,
) -> Result<(), ProxyError> {
    let buf = std::mem::take(aux);
    match timed(lim.write_timeout, dst.write_all(buf)).await {
        Some((r, buf)) => {
            *aux = buf;
            r.map_err(|e| io_err(side, e))
        }
        None => Err(timeout_err(side)),
    }
}
