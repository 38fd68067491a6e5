//! One attempt: the request head (and body) to one upstream connection, its response head and
//! body back to the client, or a protocol switch.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Route, TargetAddr, Upstream};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http1::body::Encode;
use crate::http1::forward::{write_orig, write_request_head, Client};
use crate::http1::parse::{
    parse_response, Framing, HeaderKind, Parse, RequestHead, ResponseHead, Version,
};
use crate::http1::response::write_response_head;
use crate::net::stream::Stream;
use crate::proxy::relay::{fill_body, io_err, relay_body, send_request_body, BodyLimits};
use crate::proxy::respond::is_head;
use crate::proxy::session::{
    timed, timed_at, Exchange, Failure, RecvBuf, Scratch, COALESCE_BODY, RESPONSE_LIMITS,
};
use crate::upstream::pool::UpConn;
use crate::worker::ctx::WorkerCtx;

/// One request/response exchange on `conn`. Returns the client keep-alive decision.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exchange(
    ctx: &Rc<WorkerCtx>,
    u: usize,
    t: usize,
    up: &Upstream,
    route: &Route,
    client: &Client,
    stream: &mut Stream,
    down: &mut RecvBuf,
    ubuf: &mut Vec<u8>,
    s: &mut Scratch,
    head: &RequestHead,
    mut conn: UpConn,
    set_cookie: bool,
    seen: &mut Option<(u16, Duration)>,
) -> Result<Exchange, Failure> {
    let tr = &up.transport;
    let client_head = is_head(&down.buf, head);
    // What the upstream was asked decides its response framing; a method override can differ.
    let upstream_head = route.method.as_deref().map_or(client_head, |m| m == "HEAD");
    let upstream_host = match &up.targets[t].addr {
        TargetAddr::Tcp { host, .. } => host.as_str(),
        TargetAddr::Unix(_) => "localhost",
    };
    s.out.clear();
    write_request_head(
        ctx.id(),
        up,
        route,
        client,
        &down.buf,
        head,
        &s.headers,
        upstream_host,
        &mut s.out,
        &mut s.aux,
        &mut s.list,
    );
    let reused = conn.reused;
    // A small, fully buffered body rides along with the head in one write.
    let body_in_buf = match head.framing {
        Framing::Length(n) if n as usize <= COALESCE_BODY && down.pending() as u64 >= n => {
            n as usize
        }
        _ => 0,
    };
    s.out
        .extend_from_slice(&down.buf[down.pos..down.pos + body_in_buf]);
    down.pos += body_in_buf;
    let out = std::mem::take(&mut s.out);
    let Some((res, out)) = timed(tr.write_timeout, conn.stream.write_all(out)).await else {
        return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false).into());
    };
    s.out = out;
    // Nothing of a response can have arrived yet: replay is safe on a reused connection.
    res.map_err(|err| {
        ProxyError::upstream(
            ErrorKind::UpstreamIo {
                err,
                before_response: true,
            },
            reused,
        )
    })?;
    ctx.gen_metrics().upstream_requests[u][t][reused as usize].inc();
    let sent_at = Instant::now();
    let req_limits = BodyLimits {
        read_timeout: ctx.config().limits.idle_timeout,
        write_timeout: tr.write_timeout,
        max: ctx.config().limits.max_request_body,
        moved: Default::default(),
    };
    let rest = match head.framing {
        Framing::Length(n) => Framing::Length(n - body_in_buf as u64),
        f => f,
    };
    let mut ub = RecvBuf {
        buf: std::mem::take(ubuf),
        pos: 0,
        floor: 0,
    };
    ub.buf.clear();
    // With Expect: 100-continue and no body bytes sent yet, the upstream decides first.
    let has_rest = !matches!(rest, Framing::None | Framing::Length(0));
    let mut body_sent = !(head.expect_continue && has_rest && down.pending() == 0);
    if body_sent {
        send_request_body(
            ctx,
            stream,
            down,
            &mut conn.stream,
            rest,
            &mut s.aux,
            &req_limits,
        )
        .await?;
    }
    let deadline = tr.response_header_timeout.map(|d| Instant::now() + d);
    let resp: ResponseHead = loop {
        match parse_response(
            &ub.buf[ub.pos..],
            upstream_head,
            &RESPONSE_LIMITS,
            &mut s.resp_headers,
        ) {
            Parse::Complete(r) if r.status == 101 => {
                if !head.conn.upgrade {
                    return Err(ProxyError::upstream(
                        ErrorKind::UpstreamInvalid("101 without an upgrade request"),
                        false,
                    )
                    .into());
                }
                s.status = 101;
                break r;
            }
            Parse::Complete(r) if r.status < 200 => {
                // Interim responses reach HTTP/1.1 clients as they are.
                let interim = ub.pos..ub.pos + r.head_len;
                ub.pos += r.head_len;
                if head.version == Version::Http11 {
                    let buf = std::mem::take(&mut ub.buf);
                    let (res, buf) = stream.write_range(buf, interim).await;
                    ub.buf = buf;
                    res.map_err(|e| io_err(Side::Downstream, e))?;
                }
                if r.status == 100 && !body_sent {
                    send_request_body(
                        ctx,
                        stream,
                        down,
                        &mut conn.stream,
                        rest,
                        &mut s.aux,
                        &req_limits,
                    )
                    .await?;
                    body_sent = true;
                }
                continue;
            }
            Parse::Complete(r) => {
                *seen = Some((r.status, sent_at.elapsed()));
                ctx.gen_metrics().upstream_response_time[u].observe(sent_at.elapsed());
                s.status = r.status;
                break r;
            }
            Parse::Invalid(_) => {
                return Err(ProxyError::upstream(
                    ErrorKind::UpstreamInvalid("malformed response head"),
                    false,
                )
                .into());
            }
            Parse::Partial => {}
        }
        ub.compact();
        let nothing_yet = ub.buf.is_empty();
        let Some(res) = timed_at(
            deadline,
            ub.read_more(&mut conn.stream, RESPONSE_LIMITS.max_head_bytes),
        )
        .await
        else {
            return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false).into());
        };
        let err = match res {
            Ok(0) => std::io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => continue,
            Err(e) => e,
        };
        let retry = nothing_yet && reused;
        return Err(ProxyError::upstream(
            ErrorKind::UpstreamIo {
                err,
                before_response: nothing_yet,
            },
            retry,
        )
        .into());
    };
    s.bytes_in += body_in_buf as u64 + req_limits.moved.get();
    s.target = Some((u, t));
    if resp.status == 101 {
        return switch_protocols(stream, down, &mut ub, ubuf, s, &resp, conn).await;
    }
    // From here on the client may have seen bytes: failures close instead of answering.
    if up.response_buffer > 0 && !client_head {
        ub.pos += resp.head_len;
        let filled = fill_body(
            &mut conn.stream,
            &mut ub,
            resp.framing,
            up.response_buffer,
            tr.read_timeout,
        )
        .await;
        ub.pos -= resp.head_len;
        filled.map_err(|err| {
            ProxyError::upstream(
                ErrorKind::UpstreamIo {
                    err,
                    before_response: false,
                },
                false,
            )
        })?;
    }
    let http10 = head.version == Version::Http10;
    let encode = match resp.framing {
        _ if client_head => Encode::Discard,
        Framing::Chunked if http10 => Encode::Dechunk,
        Framing::CloseDelimited if !http10 => Encode::Chunk,
        _ => Encode::Raw,
    };
    // A 1.0 client learns where a body of unknown length ends only by the close.
    let unknown_len_to_10 = http10
        && !client_head
        && matches!(resp.framing, Framing::Chunked | Framing::CloseDelimited);
    // A HEAD sent upstream for a GET client: the client still needs a framed (empty) body.
    let zero_length = upstream_head && !client_head && !matches!(resp.status, 204 | 304);
    let keep = head.keep_alive() && body_sent && !ctx.draining() && !unknown_len_to_10;
    s.out.clear();
    write_response_head(
        ctx.id(),
        up,
        client,
        &down.buf,
        head,
        &ub.buf[ub.pos..],
        &resp,
        &s.resp_headers,
        encode,
        zero_length,
        keep,
        upstream_host,
        set_cookie.then(|| (up.lb.key.as_str(), ctx.balancer(u).cookie(t))),
        &mut s.out,
        &mut s.aux,
        &mut s.list,
    );
    ub.pos += resp.head_len;
    let mut framing = resp.framing;
    if let (Framing::Length(n), false) = (framing, client_head) {
        let take = (ub.pending() as u64).min(n).min(COALESCE_BODY as u64) as usize;
        s.out.extend_from_slice(&ub.buf[ub.pos..ub.pos + take]);
        ub.pos += take;
        framing = Framing::Length(n - take as u64);
    }
    s.bytes_out = s.out.len() as u64;
    let out = std::mem::take(&mut s.out);
    let (res, out) = stream.write_all(out).await;
    s.out = out;
    let answered = |error| Failure {
        error,
        answered: true,
    };
    res.map_err(|e| answered(io_err(Side::Downstream, e)))?;
    let resp_limits = BodyLimits {
        read_timeout: tr.read_timeout,
        write_timeout: None,
        max: None,
        moved: Default::default(),
    };
    relay_body(
        ctx,
        false,
        &mut conn.stream,
        &mut ub,
        Side::Upstream,
        stream,
        Side::Downstream,
        framing,
        encode,
        &mut s.aux,
        &resp_limits,
    )
    .await
    .map_err(answered)?;
    s.bytes_out += resp_limits.moved.get();
    // Bytes after a complete response mean the upstream is confused: never reuse that.
    let up_keep = resp.keep_alive()
        && tr.keepalive
        && resp.framing != Framing::CloseDelimited
        && ub.pending() == 0;
    *ubuf = ub.buf;
    if up_keep {
        let bal = &ctx.balancer(u);
        let shared = bal.shared(t);
        // Another worker waits for a slot of this capped target: close instead of pooling.
        let wanted = bal.is_capped(t)
            && shared.wanted.load(std::sync::atomic::Ordering::Relaxed)
            && shared
                .wanted
                .swap(false, std::sync::atomic::Ordering::Relaxed);
        if !wanted {
            ctx.checkin(u, t, conn);
        }
    }
    Ok(Exchange::Done(keep))
}

/// Relays a `101 Switching Protocols` and hands both connections over to a tunnel. Bytes that
/// already arrived past either head (early frames) go across first.
pub(crate) async fn switch_protocols(
    stream: &mut Stream,
    down: &mut RecvBuf,
    ub: &mut RecvBuf,
    ubuf: &mut Vec<u8>,
    s: &mut Scratch,
    resp: &ResponseHead,
    mut conn: UpConn,
) -> Result<Exchange, Failure> {
    let rbuf = &ub.buf[ub.pos..];
    s.out.clear();
    s.out.extend_from_slice(b"HTTP/1.1 101 ");
    s.out.extend_from_slice(resp.reason.get(rbuf));
    s.out.extend_from_slice(b"\r\n");
    for h in &s.resp_headers {
        if !h.hop_by_hop || h.kind == HeaderKind::Upgrade {
            write_orig(&mut s.out, rbuf, h, resp.bare_lf);
        }
    }
    s.out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
    s.out.extend_from_slice(&ub.buf[ub.pos + resp.head_len..]);
    let out = std::mem::take(&mut s.out);
    let (res, out) = stream.write_all(out).await;
    s.out = out;
    res.map_err(|e| Failure {
        error: io_err(Side::Downstream, e),
        answered: true,
    })?;
    if down.pending() > 0 {
        let range = down.pos..down.buf.len();
        let buf = std::mem::take(&mut down.buf);
        let (res, buf) = conn.stream.write_range(buf, range).await;
        down.buf = buf;
        down.pos = down.buf.len();
        res.map_err(|e| Failure {
            error: io_err(Side::Upstream, e),
            answered: true,
        })?;
    }
    *ubuf = std::mem::take(&mut ub.buf);
    Ok(Exchange::Upgraded(conn))
}
