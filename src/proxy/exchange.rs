//! One attempt: the request head (and body) to one upstream connection, its response head and
//! body back to the client, or a protocol switch.

use std::time::{Duration, Instant};

use crate::config::{Route, TargetAddr, Upstream};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::http1::body::Encode;
use crate::http1::forward::{override_drops_body, write_orig, write_request_head, Client, Request};
use crate::http1::parse::{
    parse_response, Framing, HeaderKind, Parse, RequestHead, ResponseHead, Version,
};
use crate::http1::response::{write_response_head, ClientResponse};
use crate::proxy::early::{self, BodyEnd};
use crate::proxy::expect;
use crate::proxy::relay::{fill_body, io_err, BodyLimits, Dir, Relay};
use crate::proxy::respond::is_head;
use crate::proxy::session::{
    timed, timed_at, Exchange, Failure, RecvBuf, Scratch, Session, COALESCE_BODY, RESPONSE_LIMITS,
};
use crate::proxy::shape::{self, Answered, Decision};
use crate::upstream::pool::UpConn;
use crate::worker::ctx::WorkerCtx;

/// The target an attempt goes to.
pub(crate) struct Attempt<'a> {
    pub(crate) u: usize,
    pub(crate) t: usize,
    pub(crate) up: &'a Upstream,
    pub(crate) route: &'a Route,
    /// Whether the response (re)issues the cookie policy's cookie.
    pub(crate) set_cookie: bool,
}

impl Attempt<'_> {
    /// The Host an upstream gets when the client sent none.
    pub(crate) fn host(&self) -> &str {
        match &self.up.targets[self.t].addr {
            TargetAddr::Tcp { host, .. } => host.as_str(),
            TargetAddr::Unix(_) => "localhost",
        }
    }
}

/// What the request phase leaves for the response phase.
struct Sent {
    /// The upstream got a HEAD (its response has no body whatever its framing says).
    upstream_head: bool,
    /// The whole request body went upstream (else the client connection cannot be reused).
    body_sent: bool,
    /// The upstream answered early and the body was stopped part way: never send it again.
    cut: bool,
    /// A method override to GET/HEAD keeps the body from the upstream.
    drop_body: bool,
    /// `expect_continue_timeout` passed: ringway told the client 100 and sent the body.
    continued: bool,
    /// Request body bytes that rode along with the head.
    coalesced: usize,
    /// When the head went (the response time counts from here).
    at: Instant,
    /// Limits of the request body, and what of it moved.
    limits: BodyLimits,
    /// A `handle_response` rule's new status for the response.
    replace_status: Option<u16>,
}

/// One request/response exchange on `conn`. `seen` gets the response status and latency as
/// soon as a response head arrives (for passive health), even if the exchange fails later.
pub(crate) async fn exchange(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    mut conn: UpConn,
    seen: &mut Option<(u16, Duration)>,
) -> Result<Exchange, Failure> {
    let mut sent = send_head(sess, a, &mut conn).await?;
    let mut ub = RecvBuf {
        buf: std::mem::take(sess.ubuf),
        pos: 0,
        floor: 0,
    };
    ub.buf.clear();
    let resp = read_response_head(sess, a, &mut conn, &mut ub, &mut sent, seen).await?;
    sess.s.bytes_in += sent.coalesced as u64 + sent.limits.moved.get();
    sess.s.target = Some((a.u, a.t));
    if resp.status == 101 {
        return switch_protocols(sess, &mut ub, &resp, conn).await;
    }
    if shape::shapes(a.route) {
        let rbuf = &ub.buf[ub.pos..];
        let headers = &sess.s.resp_headers;
        match shape::decide(a.route, resp.status, |name, want| {
            shape::header_matches(rbuf, headers, name, want)
        }) {
            Decision::Pass => {}
            Decision::ReplaceStatus(code) => sent.replace_status = Some(code),
            Decision::Local(local) => {
                let first = Answered {
                    route: a.route,
                    u: a.u,
                    t: a.t,
                    keepalive: a.up.transport.keepalive,
                    conn: Some(conn),
                    ub,
                    resp: &resp,
                    body_sent: sent.body_sent,
                    upstream_head: sent.upstream_head,
                };
                return shape::answer(sess, first, local).await;
            }
        }
    }
    send_response(sess, a, conn, ub, &resp, &sent).await
}

/// What the client's response head is made of, besides the session and the attempt.
pub(crate) struct ClientHead<'b> {
    /// The bytes `resp`'s spans point into.
    pub rbuf: &'b [u8],
    pub resp: &'b ResponseHead,
    pub encode: Encode,
    /// Announce a body the upstream did not send (its answer to a HEAD made for a GET).
    pub zero_length: bool,
    pub keep: bool,
}

/// Writes the client's response head for this attempt's upstream answer into `sess.s.out`
/// (every transport: HTTP/1.1, HTTP/2, FastCGI).
pub(crate) fn write_client_head(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    host: &str,
    h: ClientHead<'_>,
) {
    let from = HeadFrom {
        ctx: sess.ctx,
        buf: &sess.down.buf,
        head: sess.head,
        client: sess.client,
    };
    write_client_head_from(&from, sess.s, a, host, h);
}

/// What of a session the client's response head is written from (borrowed apart from its
/// stream, which an exchange may be using meanwhile).
pub(crate) struct HeadFrom<'s> {
    pub(crate) ctx: &'s WorkerCtx,
    /// The client's receive buffer, which `head` points into.
    pub(crate) buf: &'s [u8],
    pub(crate) head: &'s RequestHead,
    pub(crate) client: &'s Client,
}

/// `write_client_head`, from the parts of a session it reads.
pub(crate) fn write_client_head_from(
    from: &HeadFrom<'_>,
    s: &mut Scratch,
    a: &Attempt<'_>,
    host: &str,
    h: ClientHead<'_>,
) {
    let ctx = from.ctx;
    s.out.clear();
    let bal = ctx.balancer(a.u);
    let Scratch {
        resp_headers,
        out,
        aux,
        list,
        ..
    } = s;
    let r = ClientResponse {
        rbuf: h.rbuf,
        head: h.resp,
        headers: resp_headers,
        encode: h.encode,
        zero_length: h.zero_length,
        keep: h.keep,
        set_cookie: a
            .set_cookie
            .then(|| (a.up.lb.key.as_str(), bal.cookie(a.t))),
    };
    let req = Request {
        buf: from.buf,
        head: from.head,
        headers: &[],
        client: from.client,
        worker: ctx.id(),
    };
    write_response_head(&req, a.up, host, &r, out, aux, list);
}

/// Writes the request head this attempt sends upstream into `sess.s.out` (HTTP/1.1 bytes; the
/// HTTP/2 exchange turns them into fields).
pub(crate) fn write_upstream_head(sess: &mut Session<'_>, a: &Attempt<'_>) {
    sess.s.out.clear();
    let Scratch {
        headers,
        out,
        aux,
        list,
        ..
    } = &mut *sess.s;
    let req = Request {
        buf: &sess.down.buf,
        head: sess.head,
        headers,
        client: sess.client,
        worker: sess.ctx.id(),
    };
    write_request_head(&req, a.up, a.route, a.host(), out, aux, list);
}

/// Writes the request head (with a small buffered body riding along) and, unless the client
/// expects 100-continue, the rest of the body.
async fn send_head(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    conn: &mut UpConn,
) -> Result<Sent, Failure> {
    let (ctx, head) = (sess.ctx, sess.head);
    let tr = &a.up.transport;
    let client_head = is_head(&sess.down.buf, head);
    write_upstream_head(sess, a);
    let reused = conn.reused;
    let down = &mut *sess.down;
    let drop_body = override_drops_body(a.route);
    // A small, fully buffered body rides along with the head in one write.
    let coalesced = match head.framing {
        Framing::Length(n) if n as usize <= COALESCE_BODY && down.pending() as u64 >= n => {
            n as usize
        }
        _ => 0,
    };
    // A dropped body that is all in the buffer is skipped (the client connection stays usable);
    // a longer one is never read, and the client connection closes after the response.
    let (coalesced, skipped) = if drop_body {
        (0, coalesced)
    } else {
        (coalesced, 0)
    };
    down.pos += skipped;
    sess.s
        .out
        .extend_from_slice(&down.buf[down.pos..down.pos + coalesced]);
    down.pos += coalesced;
    let out = std::mem::take(&mut sess.s.out);
    let Some((res, out)) = timed(tr.write_timeout, conn.stream.write_all(out)).await else {
        return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false).into());
    };
    sess.s.out = out;
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
    ctx.gen_metrics().upstream_requests[a.u][a.t][reused as usize].inc();
    let at = Instant::now();
    let limits = BodyLimits {
        read_timeout: ctx.config().limits.idle_timeout,
        write_timeout: tr.write_timeout,
        max: ctx.config().limits.max_request_body,
        moved: Default::default(),
    };
    // With Expect: 100-continue and no body bytes sent yet, the upstream decides first.
    let rest = rest_of_body(head.framing, coalesced);
    let has_rest = !matches!(rest, Framing::None | Framing::Length(0));
    let mut body_sent = if drop_body {
        !has_rest || skipped > 0
    } else {
        !(head.expect_continue && has_rest && sess.down.pending() == 0)
    };
    let mut cut = false;
    if body_sent && !drop_body {
        cut = early::send_body(sess, conn, rest, &limits).await? == BodyEnd::Cut;
        body_sent = !cut;
    }
    let sent = Sent {
        // What the upstream was asked decides its response framing; a method override can differ.
        upstream_head: a
            .route
            .method
            .as_deref()
            .map_or(client_head, |m| m == "HEAD"),
        body_sent,
        cut,
        drop_body,
        continued: false,
        coalesced,
        at,
        limits,
        replace_status: None,
    };
    Ok(sent)
}

/// The request body framing left after `coalesced` bytes went with the head.
fn rest_of_body(framing: Framing, coalesced: usize) -> Framing {
    match framing {
        Framing::Length(n) => Framing::Length(n - coalesced as u64),
        f => f,
    }
}

/// Reads up to the final response head, passing interim ones on to HTTP/1.1 clients and
/// sending a held-back body on `100 Continue`.
async fn read_response_head(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    conn: &mut UpConn,
    ub: &mut RecvBuf,
    sent: &mut Sent,
    seen: &mut Option<(u16, Duration)>,
) -> Result<ResponseHead, Failure> {
    let head = sess.head;
    let deadline =
        a.up.transport
            .response_header_timeout
            .map(|d| Instant::now() + d);
    let limits = crate::http1::parse::HeadLimits {
        max_head_bytes: a.up.transport.max_response_header,
        ..RESPONSE_LIMITS
    };
    // `expect_continue_timeout`: when a held-back body goes without the upstream's 100 (unless
    // `response_header_timeout` ends the wait first).
    let mut go_ahead = match a.up.transport.expect_continue_timeout {
        Some(d) if head.expect_continue && !sent.body_sent && !sent.cut && !sent.drop_body => {
            Some(sent.at + d).filter(|by| deadline.is_none_or(|end| *by < end))
        }
        _ => None,
    };
    loop {
        match parse_response(
            &ub.buf[ub.pos..],
            sent.upstream_head,
            &limits,
            &mut sess.s.resp_headers,
        ) {
            Parse::Complete(r) if r.status == 101 => {
                if !head.conn.upgrade {
                    return Err(ProxyError::upstream(
                        ErrorKind::UpstreamInvalid("101 without an upgrade request"),
                        false,
                    )
                    .into());
                }
                sess.s.status = 101;
                return Ok(r);
            }
            Parse::Complete(r) if r.status < 200 => {
                // Interim responses reach HTTP/1.1 clients as they are.
                let interim = ub.pos..ub.pos + r.head_len;
                ub.pos += r.head_len;
                // After ringway's own 100, the upstream's late one would be a second.
                if head.version == Version::Http11 && !(r.status == 100 && sent.continued) {
                    let buf = std::mem::take(&mut ub.buf);
                    let (res, buf) = sess.stream.write_range(buf, interim).await;
                    ub.buf = buf;
                    res.map_err(|e| io_err(Side::Downstream, e))?;
                }
                if r.status == 100 && !sent.body_sent && !sent.cut && !sent.drop_body {
                    let rest = rest_of_body(head.framing, sent.coalesced);
                    crate::proxy::relay::stream_body(sess, conn, rest, &sent.limits).await?;
                    sent.body_sent = true;
                }
                continue;
            }
            Parse::Complete(r) => {
                let took = sent.at.elapsed();
                *seen = Some((r.status, took));
                // Judged before the client sees the answer, so its next request already
                // avoids a target this response took down.
                let bal = sess.ctx.balancer(a.u);
                let passive = bal.passive_enabled();
                note_response(bal.shared(a.t), a.up, passive, r.status, took);
                sess.ctx.gen_metrics().upstream_response_time[a.u].observe(took);
                if crate::http2::head::unswitched(sess.s.trace.http2, head, r.status) {
                    return Err(ProxyError::upstream(
                        ErrorKind::UpstreamInvalid("a 2xx that did not switch to the WebSocket"),
                        false,
                    )
                    .into());
                }
                sess.s.status = r.status;
                return Ok(r);
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
        if let Some(by) = go_ahead.take_if(|_| nothing_yet && !sent.body_sent) {
            if !expect::answered_by(&conn.stream, by).await {
                expect::go_ahead(sess.stream, head.version == Version::Http11).await?;
                sent.continued = true;
                let rest = rest_of_body(head.framing, sent.coalesced);
                let cut = early::send_body(sess, conn, rest, &sent.limits).await? == BodyEnd::Cut;
                sent.cut = cut;
                sent.body_sent = !cut;
                continue;
            }
        }
        let Some(res) = timed_at(
            deadline,
            ub.read_more(&mut conn.stream, limits.max_head_bytes),
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
        let retry = nothing_yet && conn.reused;
        return Err(ProxyError::upstream(
            ErrorKind::UpstreamIo {
                err,
                before_response: nothing_yet,
            },
            retry,
        )
        .into());
    }
}

/// Sends the response head and streams the body to the client; pools the upstream connection
/// when it can serve another request. From here on the client may have seen bytes: failures
/// close instead of answering.
async fn send_response(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    mut conn: UpConn,
    mut ub: RecvBuf,
    resp: &ResponseHead,
    sent: &Sent,
) -> Result<Exchange, Failure> {
    let (ctx, head) = (sess.ctx, sess.head);
    let tr = &a.up.transport;
    let client_head = is_head(&sess.down.buf, head);
    if a.up.response_buffer > 0 && !client_head {
        ub.pos += resp.head_len;
        let filled = fill_body(
            &mut conn.stream,
            &mut ub,
            resp.framing,
            a.up.response_buffer,
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
    let keep = head.keep_alive() && sent.body_sent && !ctx.draining() && !unknown_len_to_10;
    write_client_head(
        sess,
        a,
        a.host(),
        ClientHead {
            rbuf: &ub.buf[ub.pos..],
            resp,
            encode,
            // A HEAD sent upstream for a GET client: the client still needs a framed body.
            zero_length: sent.upstream_head && !client_head && !matches!(resp.status, 204 | 304),
            keep,
        },
    );
    if let Some(code) = sent.replace_status {
        shape::replace_status_line(&mut sess.s.out, code);
        sess.s.status = code;
    }
    if !sess.s.copied.is_empty() {
        shape::insert_fields(&mut sess.s.out, &sess.s.copied);
    }
    ub.pos += resp.head_len;
    let mut framing = resp.framing;
    if let (Framing::Length(n), false) = (framing, client_head) {
        let take = (ub.pending() as u64).min(n).min(COALESCE_BODY as u64) as usize;
        sess.s.out.extend_from_slice(&ub.buf[ub.pos..ub.pos + take]);
        ub.pos += take;
        framing = Framing::Length(n - take as u64);
    }
    sess.s.bytes_out = sess.s.out.len() as u64;
    let out = std::mem::take(&mut sess.s.out);
    let (res, out) = sess.stream.write_all(out).await;
    sess.s.out = out;
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
    Relay {
        ctx,
        dir: Dir::Down,
        src: &mut conn.stream,
        buf: &mut ub,
        dst: sess.stream,
        aux: &mut sess.s.aux,
        lim: &resp_limits,
    }
    .body(framing, encode)
    .await
    .map_err(answered)?;
    sess.s.bytes_out += resp_limits.moved.get();
    // Bytes after a complete response mean the upstream is confused: never reuse that.
    // An upstream that answered without the (whole) body may read what it missed as the
    // next request, or still wait for it: never reuse that connection either.
    let up_keep = resp.keep_alive()
        && sent.body_sent
        && tr.keepalive
        && resp.framing != Framing::CloseDelimited
        && ub.pending() == 0;
    *sess.ubuf = ub.buf;
    if up_keep {
        let bal = ctx.balancer(a.u);
        let shared = bal.shared(a.t);
        // Another worker waits for a slot of this capped target: close instead of pooling,
        // unless requests of this worker wait too (they reuse it without a new handshake).
        let wanted = bal.is_capped(a.t)
            && ctx.queues().len(a.u) == 0
            && shared.wanted.load(std::sync::atomic::Ordering::Relaxed)
            && shared
                .wanted
                .swap(false, std::sync::atomic::Ordering::Relaxed);
        if !wanted {
            ctx.checkin(a.u, a.t, conn);
        }
    }
    Ok(Exchange::Done(keep))
}

/// Relays a `101 Switching Protocols` and hands both connections over to a tunnel. Bytes that
/// already arrived past either head (early frames) go across first.
async fn switch_protocols(
    sess: &mut Session<'_>,
    ub: &mut RecvBuf,
    resp: &ResponseHead,
    mut conn: UpConn,
) -> Result<Exchange, Failure> {
    let s = &mut *sess.s;
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
    let (res, out) = sess.stream.write_all(out).await;
    s.out = out;
    res.map_err(|e| Failure {
        error: io_err(Side::Downstream, e),
        answered: true,
    })?;
    let down = &mut *sess.down;
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
    *sess.ubuf = std::mem::take(&mut ub.buf);
    Ok(Exchange::Upgraded(conn))
}

/// Feeds one response into the target's shared latency estimate and passive health memory.
pub(crate) fn note_response(
    shared: &crate::upstream::target::TargetShared,
    up: &crate::config::Upstream,
    passive: bool,
    status: u16,
    latency: Duration,
) {
    if up.lb.policy == crate::config::Policy::P2cEwma {
        shared.observe_latency(latency);
    }
    let p = &up.health.passive;
    let failed =
        p.unhealthy_status.contains(status) || p.unhealthy_latency.is_some_and(|max| latency > max);
    if let (true, true, Some(d)) = (passive, failed, p.fail_duration) {
        shared.record_failure_within(
            crate::upstream::target::now_ms(),
            d.as_millis().max(1) as u64,
        );
    }
}
