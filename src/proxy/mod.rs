//! The HTTP/1 data path of one downstream connection: read a head, route it, answer it or
//! forward it to an upstream target, stream both bodies, repeat while keep-alive holds.
//!
//! Buffers are owned by the connection and reused for every request on it; heads are parsed in
//! place and forwarded line by line from the receive buffer, so a request costs no allocation
//! once the connection is warm.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Action, Respond, Route, TargetAddr, Upstream};
use crate::error::{reason_phrase, write_error_response, ErrorKind, ProxyError, Side};
use crate::http1::body::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use crate::http1::forward::{write_orig, write_request_head, Client, HeaderList, ReqInfo};
use crate::http1::parse::{
    parse_request, parse_response, Framing, HeadLimits, HeaderIdx, HeaderKind, Parse, RequestHead,
    ResponseHead, Version,
};
use crate::net::stream::{reserve_read_space, SplicePipe, Stream, MIN_READ_SPACE, SPLICE_CHUNK};
use crate::route;
use crate::upstream::pool::UpConn;
use crate::worker::ctx::WorkerCtx;

/// Initial receive buffer per connection side: one read takes a typical head plus a small body.
const INITIAL_BUF: usize = 16 * 1024;
/// What a keep-alive connection keeps between requests: a receive buffer for the next head
/// (most fit; a larger one grows it, as nginx's 1k `client_header_buffer_size` does). The rest
/// is released and allocated again by the next request, so 10k idle connections cost a few
/// KiB each instead of every buffer they ever grew.
const IDLE_READ: usize = 1024;
/// Room for the heads a request writes (upstream request, response), reserved once.
const OUT_BUF: usize = 4096;
/// Body bytes streamed per read once a body is larger than what came with the head.
const BODY_CHUNK: usize = 64 * 1024;
/// Body bytes that ride along with the head in one write instead of a second write.
const COALESCE_BODY: usize = 16 * 1024;
/// Upstream response heads: generous fixed limits (upstreams are trusted more than clients).
const RESPONSE_LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 64 * 1024,
    max_uri_bytes: 64 * 1024,
    max_headers: 256,
};
/// X-Forwarded-For hops client_ip_hash looks at (nearest first): a bounded stack array keeps
/// selection allocation-free; a longer chain is read from its nearest hops.
const MAX_XFF_HOPS: usize = 16;
/// Content-Length bodies at least this large move with splice(2) on plaintext sockets; smaller
/// ones are cheaper as one read and one write (splice costs two operations and, on io_uring, a
/// hop through a kernel worker thread).
pub const SPLICE_MIN_BODY: u64 = 64 * 1024;
/// Room a chunked decoder may need for one size line or trailer section (see http1::body).
const CHUNK_FRAMING_ROOM: usize = 32 * 1024;

/// Runs `f` under an optional timeout; `None` when it ran out.
async fn timed<T>(limit: Option<Duration>, f: impl std::future::Future<Output = T>) -> Option<T> {
    match limit {
        Some(d) => monoio::time::timeout(d, f).await.ok(),
        None => Some(f.await),
    }
}

async fn timed_at<T>(
    deadline: Option<Instant>,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => monoio::time::timeout_at(d.into(), f).await.ok(),
        None => Some(f.await),
    }
}

/// One side's receive buffer: `buf[pos..]` holds bytes received but not yet consumed;
/// `buf[..floor]` is kept while a body streams (the request head that spans point into).
struct RecvBuf {
    buf: Vec<u8>,
    pos: usize,
    floor: usize,
}

impl RecvBuf {
    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Moves unconsumed bytes down to `floor` (to 0 between requests, so spans of the next
    /// head start at 0).
    fn compact(&mut self) {
        debug_assert!(self.pos >= self.floor);
        if self.pos > self.floor {
            self.buf.drain(self.floor..self.pos);
            self.pos = self.floor;
        }
    }

    /// Forgets everything consumed above `floor`; only valid when nothing is pending.
    fn reset(&mut self) {
        debug_assert_eq!(self.pending(), 0);
        self.buf.truncate(self.floor);
        self.pos = self.floor;
    }

    async fn read_more(&mut self, stream: &mut Stream, cap: usize) -> std::io::Result<usize> {
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
}

/// Per-connection scratch buffers, reused across requests.
struct Scratch {
    headers: Vec<HeaderIdx>,
    resp_headers: Vec<HeaderIdx>,
    out: Vec<u8>,
    aux: Vec<u8>,
    list: HeaderList,
    /// Status of the response sent for the current request (0: none), for metrics.
    status: u16,
    /// Request bytes read and response bytes sent for the current request (access log).
    bytes_in: u64,
    bytes_out: u64,
    /// The upstream target that answered, as `[upstream, target]` (access log).
    target: Option<(usize, usize)>,
}

/// Serves one downstream connection until it closes, fails or the server drains. Each request
/// is handled by the newest configuration at the time its head arrived: after a reload, a
/// keep-alive connection moves on with its next request, and closes when its listener is gone.
pub async fn serve(
    mut ctx: Rc<WorkerCtx>,
    socket: usize,
    mut listener: usize,
    mut stream: Stream,
    peer: Option<SocketAddr>,
) {
    let mut down = RecvBuf {
        buf: Vec::with_capacity(INITIAL_BUF),
        pos: 0,
        floor: 0,
    };
    let mut peer = peer;
    if ctx.config().listeners[listener].proxy_protocol {
        // The carried address is the client from here on (X-Forwarded-For, trust, placeholders).
        let trusted = &ctx.config().trusted_proxies;
        let header = crate::net::proxy_protocol::accept(trusted, &mut stream, peer, &mut down.buf);
        match Box::pin(header).await {
            Some(Some((source, _))) => peer = Some(source),
            Some(None) => {}
            None => return,
        }
    }
    let mut client = Client {
        peer,
        trusted: is_trusted(&ctx, peer),
        ip_text: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        scheme: if stream.is_tls() { "https" } else { "http" },
    };
    let mut s = Scratch {
        headers: Vec::with_capacity(32),
        resp_headers: Vec::with_capacity(32),
        out: Vec::new(),
        aux: Vec::new(),
        list: HeaderList::default(),
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        target: None,
    };
    let mut ubuf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let limits = HeadLimits {
            max_head_bytes: ctx.config().limits.max_header_bytes,
            max_uri_bytes: ctx.config().limits.max_uri_bytes,
            max_headers: ctx.config().limits.max_headers,
        };
        let head =
            match read_head(&ctx, &mut stream, &mut down, &limits, &mut s.headers, first).await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    answer_error(&mut stream, &mut s.out, &e).await;
                    let status = e.status().unwrap_or(0);
                    ctx.request_done(listener, status, Duration::ZERO, None);
                    return;
                }
            };
        first = false;
        // A reload since the last request: this one uses the new configuration, unless the
        // listener went away with it (then the old one answers this request, the last).
        let mut last = false;
        if let Some(newer) = ctx.newer() {
            match newer.listener_of(socket) {
                Some(l) if is_http(&newer, l) => {
                    ctx = newer;
                    listener = l;
                    client.trusted = is_trusted(&ctx, peer);
                }
                _ => last = true,
            }
        }
        let started = Instant::now();
        s.status = 0;
        s.bytes_in = head.head_len as u64;
        s.bytes_out = 0;
        s.target = None;
        let active = ctx.active();
        s.out.reserve(OUT_BUF);
        // Not boxed, though its state is most of this task's size: building the future and
        // moving it into a box copied ~7 KiB per request (3% of the CPU in small-keepalive).
        let next = handle(
            &ctx,
            listener,
            &client,
            &mut stream,
            &mut down,
            &mut ubuf,
            &mut s,
            &head,
        )
        .await;
        ctx.request_done(listener, s.status, started.elapsed(), s.target);
        if let Some(log) = ctx.access() {
            log_request(&ctx, log, &client, &down.buf, &head, &s, started.elapsed());
        }
        let keep = match next {
            Exchange::Done(keep) => keep,
            Exchange::Upgraded(conn) => {
                // The tunnel counts as in flight: a drain lets it finish up to shutdown_timeout.
                let UpConn {
                    stream: up, slot, ..
                } = conn;
                let (sent, received) = Box::pin(crate::l4::upgrade::run(stream, up)).await;
                tracing::debug!(sent, received, "upgraded connection closed");
                drop(slot);
                drop(active);
                return;
            }
        };
        drop(active);
        if !keep || last || ctx.draining() {
            return;
        }
        down.floor = 0;
        down.compact();
        if down.pending() == 0 && down.buf.capacity() > IDLE_READ {
            down.buf = Vec::with_capacity(IDLE_READ);
        }
        ubuf = Vec::new();
        s.out = Vec::new();
        s.aux = Vec::new();
    }
}

fn is_trusted(ctx: &WorkerCtx, peer: Option<SocketAddr>) -> bool {
    let trusted = &ctx.config().trusted_proxies;
    peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p.ip())))
}

fn is_http(ctx: &WorkerCtx, listener: usize) -> bool {
    matches!(
        ctx.config().listeners[listener].kind,
        crate::config::ListenerKind::Http { .. }
    )
}

/// Reads until a complete request head sits at the start of `down.buf`. `Ok(None)`: the client
/// closed (or idled out) cleanly between requests.
async fn read_head(
    ctx: &WorkerCtx,
    stream: &mut Stream,
    down: &mut RecvBuf,
    limits: &HeadLimits,
    headers: &mut Vec<HeaderIdx>,
    first: bool,
) -> Result<Option<RequestHead>, ProxyError> {
    debug_assert_eq!(down.pos, 0);
    let l = &ctx.config().limits;
    let mut deadline = if first {
        l.header_read_timeout.map(|d| Instant::now() + d)
    } else {
        None
    };
    loop {
        if !down.buf.is_empty() {
            match parse_request(&down.buf, limits, headers) {
                Parse::Complete(h) => return Ok(Some(h)),
                Parse::Invalid(e) => return Err(ProxyError::downstream(ErrorKind::BadHead(e))),
                Parse::Partial => {}
            }
            if deadline.is_none() {
                deadline = l.header_read_timeout.map(|d| Instant::now() + d);
            }
        }
        // A cancelled read takes the buffer with it: decide from what we had before.
        let had_bytes = !down.buf.is_empty();
        let idle = !had_bytes && !first;
        let read = down.read_more(stream, limits.max_head_bytes);
        let res = if idle {
            match timed(l.idle_timeout, read).await {
                Some(r) => r,
                None => return Ok(None),
            }
        } else {
            match timed_at(deadline, read).await {
                Some(r) => r,
                None if !had_bytes => return Ok(None),
                None => return Err(ProxyError::downstream(ErrorKind::HeadTimeout)),
            }
        };
        match res {
            Ok(0) if !had_bytes => return Ok(None),
            Ok(0) => {
                return Err(ProxyError::downstream(ErrorKind::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )))
            }
            Ok(_) => {}
            Err(_) if !had_bytes => return Ok(None),
            Err(e) => return Err(ProxyError::downstream(ErrorKind::ClientIo(e))),
        }
    }
}

/// Sends the error's status (when the client can still be answered) and closes.
async fn answer_error(stream: &mut Stream, out: &mut Vec<u8>, e: &ProxyError) {
    match e.side {
        Side::Downstream => tracing::debug!("closing client connection: {e}"),
        _ => tracing::warn!("{e}"),
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
enum Exchange {
    /// A full response was sent; whether the connection can serve another request.
    Done(bool),
    /// The upstream switched protocols: relay bytes both ways from now on.
    Upgraded(UpConn),
}

/// Handles one request whose head sits at `down.buf[..head.head_len]`.
#[allow(clippy::too_many_arguments)]
async fn handle(
    ctx: &Rc<WorkerCtx>,
    listener: usize,
    client: &Client,
    stream: &mut Stream,
    down: &mut RecvBuf,
    ubuf: &mut Vec<u8>,
    s: &mut Scratch,
    head: &RequestHead,
) -> Exchange {
    let config = &ctx.config();
    if let (Framing::Length(n), Some(max)) = (head.framing, config.limits.max_request_body) {
        if n > max {
            answer_error(
                stream,
                &mut s.out,
                &ProxyError::downstream(ErrorKind::BodyTooLarge),
            )
            .await;
            return Exchange::Done(false);
        }
    }
    let crate::config::ListenerKind::Http { routes } = &config.listeners[listener].kind else {
        return Exchange::Done(false);
    };
    let Some(route) = route::find(routes, &down.buf, head, &s.headers) else {
        return Exchange::Done(respond_simple(stream, down, s, head, 404).await);
    };
    down.pos = head.head_len;
    down.floor = head.head_len;
    match &route.action {
        Action::Respond(r) => Exchange::Done(respond(ctx, client, stream, down, s, head, r).await),
        Action::Proxy(u) => {
            let up = &config.upstreams[*u];
            match forward(ctx, *u, up, route, client, stream, down, ubuf, s, head).await {
                Ok(next) => next,
                Err(Failure { error, answered }) => {
                    if !answered {
                        s.status = error.status().unwrap_or(0);
                        answer_error(stream, &mut s.out, &error).await;
                        s.bytes_out = s.out.len() as u64;
                    } else {
                        tracing::debug!("response cut short: {error}");
                    }
                    Exchange::Done(false)
                }
            }
        }
    }
}

/// Writes the access log line for the request just handled.
fn log_request(
    ctx: &WorkerCtx,
    log: &crate::observe::access::WorkerLog,
    client: &Client,
    buf: &[u8],
    head: &RequestHead,
    s: &Scratch,
    took: Duration,
) {
    let upstream = s
        .target
        .map(|(u, t)| target_name(&ctx.config().upstreams[u].targets[t].addr));
    log.record(&crate::observe::access::Record {
        client: &client.ip_text,
        method: head.method.get(buf),
        uri: head.target.get(buf),
        status: s.status,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        duration: took,
        upstream: upstream.as_deref(),
        worker: ctx.id(),
    });
}

/// Whether the rest of the request body is already in the buffer (so answering without
/// proxying can skip it and keep the connection).
fn skip_buffered_body(down: &mut RecvBuf, head: &RequestHead) -> bool {
    match head.framing {
        Framing::None => true,
        Framing::Length(n) if (down.pending() as u64) >= n => {
            down.pos += n as usize;
            true
        }
        _ => false,
    }
}

async fn respond_simple(
    stream: &mut Stream,
    down: &mut RecvBuf,
    s: &mut Scratch,
    head: &RequestHead,
    status: u16,
) -> bool {
    s.status = status;
    down.pos = head.head_len;
    let keep = head.keep_alive() && skip_buffered_body(down, head);
    let reason = reason_phrase(status);
    s.out.clear();
    let _ = write!(s.out, "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n", reason.len() + 5);
    finish_conn_header(&mut s.out, head.version, keep);
    if !is_head(&down.buf, head) {
        let _ = writeln!(s.out, "{status} {reason}");
    }
    s.bytes_out = s.out.len() as u64;
    let out = std::mem::take(&mut s.out);
    let (res, out) = stream.write_all(out).await;
    s.out = out;
    res.is_ok() && keep
}

fn is_head(buf: &[u8], head: &RequestHead) -> bool {
    head.method.get(buf) == b"HEAD"
}

/// `Connection` for the client: close when we will, keep-alive when a 1.0 client asked for it.
fn finish_conn_header(out: &mut Vec<u8>, version: Version, keep: bool) {
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

async fn respond(
    ctx: &WorkerCtx,
    client: &Client,
    stream: &mut Stream,
    down: &mut RecvBuf,
    s: &mut Scratch,
    head: &RequestHead,
    r: &Respond,
) -> bool {
    let keep = head.keep_alive() && skip_buffered_body(down, head) && !ctx.draining();
    s.status = r.status;
    let info = ReqInfo {
        buf: &down.buf,
        head,
        headers: &s.headers,
        client,
        path: head.path.get(&down.buf),
        query: head.query.map(|q| q.get(&down.buf)),
        upstream: "",
        worker: ctx.id(),
    };
    s.aux.clear();
    r.body.render(&info, &mut s.aux);
    s.out.clear();
    let _ = write!(
        s.out,
        "HTTP/1.1 {} {}\r\n",
        r.status,
        reason_phrase(r.status)
    );
    for (name, value) in &r.headers {
        s.out.extend_from_slice(name.as_bytes());
        s.out.extend_from_slice(b": ");
        value.render(&info, &mut s.out);
        s.out.extend_from_slice(b"\r\n");
    }
    let bodiless = r.status < 200 || r.status == 204 || r.status == 304;
    if !bodiless {
        let _ = write!(s.out, "Content-Length: {}\r\n", s.aux.len());
    }
    finish_conn_header(&mut s.out, head.version, keep);
    if !bodiless && !is_head(&down.buf, head) {
        s.out.extend_from_slice(&s.aux);
    }
    s.bytes_out = s.out.len() as u64;
    let out = std::mem::take(&mut s.out);
    let (res, out) = stream.write_all(out).await;
    s.out = out;
    res.is_ok() && keep
}

/// A failed exchange: `answered` when part of a response already reached the client, so the
/// only honest signal left is closing the connection.
struct Failure {
    error: ProxyError,
    answered: bool,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Failure {
            error,
            answered: false,
        }
    }
}

/// Marks a request in flight on a target for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> InFlight<'a> {
    fn new(c: &'a std::sync::atomic::AtomicU32) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// Proxies one request to `up`. `Ok(keep)` when a full response reached the client.
#[allow(clippy::too_many_arguments)]
async fn forward(
    ctx: &Rc<WorkerCtx>,
    u: usize,
    up: &Upstream,
    route: &Route,
    client: &Client,
    stream: &mut Stream,
    down: &mut RecvBuf,
    ubuf: &mut Vec<u8>,
    s: &mut Scratch,
    head: &RequestHead,
) -> Result<Exchange, Failure> {
    let bal = &ctx.balancer(u);
    if up.request_buffer > 0 {
        let idle = ctx.config().limits.idle_timeout;
        fill_body(stream, down, head.framing, up.request_buffer, idle)
            .await
            .map_err(|e| Failure::from(ProxyError::downstream(ErrorKind::ClientIo(e))))?;
    }
    let method = route
        .method
        .as_deref()
        .map(str::as_bytes)
        .unwrap_or(head.method.get(&down.buf));
    // A request can be replayed only while all of it is still in our buffer.
    let body_buffered = match head.framing {
        Framing::None => true,
        Framing::Length(n) => down.pending() as u64 >= n,
        _ => false,
    };
    let may_retry_sent =
        body_buffered && up.lb.retry_methods.iter().any(|m| m.as_bytes() == method);
    let idempotent = is_idempotent(method);
    let lb_key = LbKey::find(
        bal.policy(),
        &up.lb.key,
        &ctx.config().trusted_proxies,
        client,
        &down.buf,
        head,
        &s.headers,
    );
    let started = Instant::now();
    // Each attempt sends the body from here again (only ever replayed when fully buffered).
    let body_start = down.pos;
    let mut tried = crate::upstream::balance::Tried::default();
    let mut attempts = 0u32;
    let mut waiting = PoolWait(None);
    loop {
        attempts += 1;
        down.pos = body_start;
        let can_try_again = |attempts: u32| match up.lb.try_duration {
            Some(d) => started.elapsed() < d,
            None => attempts <= up.lb.retries,
        };
        let key = lb_key.get(&down.buf);
        let Some(t) = bal.select(tried, key, |i| ctx.pool().has_idle(u, i)) else {
            if can_try_again(attempts) {
                tried = Default::default();
                waiting.start(ctx, u);
                monoio::time::sleep(up.lb.try_interval).await;
                continue;
            }
            waiting.end(ctx, u);
            return Err(ProxyError::upstream(ErrorKind::NoTarget, true).into());
        };
        ctx.gen_metrics().selected[u][t].inc();
        let target = &up.targets[t];
        let _in_flight = InFlight::new(&bal.shared(t).in_flight);
        // A request that cannot be replayed must not meet a pooled connection the upstream
        // already closed: a non-blocking peek finds that out for one syscall. Replayable
        // requests skip it and are replayed if the connection turns out stale.
        let replayable = idempotent && body_buffered;
        let mut pooled = ctx.pool().checkout(u, t, up.transport.idle_timeout);
        while pooled
            .as_ref()
            .is_some_and(|c| !replayable && c.stream.peer_closed())
        {
            pooled = ctx.pool().checkout(u, t, up.transport.idle_timeout);
        }
        let conn = match pooled {
            Some(c) => c,
            None => match dial(ctx, u, t, up).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(upstream = %up.name, target = %target_name(&target.addr), "{e}");
                    // A full target refused a new connection: that says nothing of its health.
                    if !matches!(e.kind, ErrorKind::NoTarget) {
                        bal.record_failure(t);
                    }
                    tried.insert(t);
                    if can_try_again(attempts) {
                        let key = lb_key.get(&down.buf);
                        if bal
                            .select(tried, key, |i| ctx.pool().has_idle(u, i))
                            .is_none()
                        {
                            tried = Default::default();
                            waiting.start(ctx, u);
                            monoio::time::sleep(up.lb.try_interval).await;
                        }
                        continue;
                    }
                    waiting.end(ctx, u);
                    return Err(e.into());
                }
            },
        };
        waiting.end(ctx, u);
        let reused = conn.reused;
        // The cookie policy (re)issues its cookie whenever the request did not name this target.
        let set_cookie = bal.policy() == crate::config::Policy::Cookie
            && lb_key.get(&down.buf) != Some(bal.cookie(t).as_bytes());
        let mut seen = None;
        let result = exchange(
            ctx, u, t, up, route, client, stream, down, ubuf, s, head, conn, set_cookie, &mut seen,
        )
        .await;
        if let Some((status, latency)) = seen {
            note_response(bal.shared(t), up, bal.passive_enabled(), status, latency);
        }
        match result {
            Ok(next) => return Ok(next),
            Err(f) => {
                // A pooled connection the upstream had already closed: replay once on a fresh
                // one when nothing of the response arrived and the request is safe to repeat.
                let stale = reused
                    && !f.answered
                    && matches!(
                        f.error.kind,
                        ErrorKind::UpstreamIo {
                            before_response: true,
                            ..
                        }
                    )
                    && body_buffered
                    && idempotent;
                if stale {
                    // Stale connections come from the pool; a fresh dial follows on the retry.
                    while let Some(c) = ctx.pool().checkout(u, t, Some(Duration::ZERO)) {
                        drop(c);
                    }
                    attempts -= 1;
                    continue;
                }
                // Sent requests are replayed on another target only when retry_methods allows
                // and no byte of a response came back.
                let unanswered = matches!(
                    f.error.kind,
                    ErrorKind::UpstreamIo {
                        before_response: true,
                        ..
                    }
                );
                let replay = f.error.retry_safe || (may_retry_sent && unanswered);
                if !f.answered && replay && can_try_again(attempts) {
                    tried.insert(t);
                    continue;
                }
                return Err(f);
            }
        }
    }
}

/// When a request started waiting for a target with a free slot (for the pool wait metrics).
struct PoolWait(Option<Instant>);

impl PoolWait {
    fn start(&mut self, ctx: &WorkerCtx, u: usize) {
        if self.0.is_none() {
            self.0 = Some(Instant::now());
            ctx.gen_metrics().pool_waits[u].inc();
        }
    }

    fn end(&mut self, ctx: &WorkerCtx, u: usize) {
        if let Some(since) = self.0.take() {
            ctx.gen_metrics().pool_wait_time[u].observe(since.elapsed());
        }
    }
}

/// Feeds one response into the target's shared latency estimate and passive health memory.
fn note_response(
    shared: &crate::upstream::target::TargetShared,
    up: &Upstream,
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

/// Where a request's hash key lives: spans into the request buffer stay valid across retries
/// (the head is kept while the body streams), addresses are copied onto the stack.
#[derive(Clone, Copy)]
enum LbKey {
    None,
    Span(usize, usize),
    Ip([u8; 16], usize),
}

impl LbKey {
    fn get<'a>(&'a self, buf: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            LbKey::None => None,
            LbKey::Span(a, b) => Some(&buf[*a..*b]),
            LbKey::Ip(bytes, len) => Some(&bytes[..*len]),
        }
    }

    fn ip(ip: IpAddr) -> LbKey {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                LbKey::Ip(bytes, 4)
            }
            IpAddr::V6(v6) => {
                bytes.copy_from_slice(&v6.octets());
                LbKey::Ip(bytes, 16)
            }
        }
    }

    /// The key the policy hashes on; `None` (random) when the request does not carry it.
    fn find(
        policy: crate::config::Policy,
        name: &str,
        trusted: &[ipnet::IpNet],
        client: &Client,
        buf: &[u8],
        head: &RequestHead,
        headers: &[HeaderIdx],
    ) -> LbKey {
        use crate::config::Policy;
        let span = |s: &crate::http1::parse::Span| LbKey::Span(s.start as usize, s.end as usize);
        fn fields<'a>(
            headers: &'a [HeaderIdx],
            buf: &'a [u8],
            n: &'a str,
        ) -> impl Iterator<Item = &'a HeaderIdx> + 'a {
            headers
                .iter()
                .filter(move |h| h.name.get(buf).eq_ignore_ascii_case(n.as_bytes()))
        }
        let named = |n: &'static str| fields(headers, buf, n);
        match policy {
            Policy::IpHash => client.peer.map_or(LbKey::None, |p| LbKey::ip(p.ip())),
            Policy::ClientIpHash => match client.peer {
                Some(p) if client.trusted => {
                    client_ip_behind(trusted, named("x-forwarded-for").map(|h| h.value.get(buf)))
                        .map_or(LbKey::ip(p.ip()), LbKey::ip)
                }
                Some(p) => LbKey::ip(p.ip()),
                None => LbKey::None,
            },
            Policy::UriHash => span(&head.target),
            Policy::Header => fields(headers, buf, name)
                .next()
                .map_or(LbKey::None, |h| span(&h.value)),
            Policy::Query => head.query.map_or(LbKey::None, |q| {
                pair_in(buf, q.start as usize, q.end as usize, b'&', name.as_bytes())
                    .map_or(LbKey::None, |(a, b)| LbKey::Span(a, b))
            }),
            Policy::Cookie => named("cookie")
                .find_map(|h| {
                    pair_in(
                        buf,
                        h.value.start as usize,
                        h.value.end as usize,
                        b';',
                        name.as_bytes(),
                    )
                })
                .map_or(LbKey::None, |(a, b)| LbKey::Span(a, b)),
            _ => LbKey::None,
        }
    }
}

/// The client behind trusted proxies: X-Forwarded-For read right to left, the first hop that
/// is not a trusted proxy (or the leftmost when all are trusted).
fn client_ip_behind<'a>(
    trusted: &[ipnet::IpNet],
    values: impl Iterator<Item = &'a [u8]>,
) -> Option<IpAddr> {
    let mut last = None;
    // Later fields continue the list; walk hops from the nearest one back.
    let mut hops: [Option<IpAddr>; MAX_XFF_HOPS] = [None; MAX_XFF_HOPS];
    let mut n = 0;
    for v in values {
        for hop in v.split(|&b| b == b',') {
            let text = std::str::from_utf8(hop).unwrap_or("").trim();
            let ip = text.parse::<IpAddr>().ok();
            if n < MAX_XFF_HOPS {
                hops[n] = ip;
                n += 1;
            } else {
                hops.copy_within(1.., 0);
                hops[MAX_XFF_HOPS - 1] = ip;
            }
        }
    }
    for hop in hops[..n].iter().rev() {
        let ip = (*hop)?;
        last = Some(ip);
        if !trusted.iter().any(|net| net.contains(&ip)) {
            return Some(ip);
        }
    }
    last
}

/// The value of `name` in a `sep`-separated list of `name=value` pairs in `buf[start..end]`,
/// as indices into `buf`.
fn pair_in(buf: &[u8], start: usize, end: usize, sep: u8, name: &[u8]) -> Option<(usize, usize)> {
    let mut at = start;
    while at <= end {
        let stop = buf[at..end]
            .iter()
            .position(|&b| b == sep)
            .map_or(end, |p| at + p);
        let mut a = at;
        while a < stop && buf[a] == b' ' {
            a += 1;
        }
        if let Some(eq) = buf[a..stop].iter().position(|&b| b == b'=') {
            if &buf[a..a + eq] == name {
                let mut b = stop;
                while b > a + eq + 1 && buf[b - 1] == b' ' {
                    b -= 1;
                }
                return Some((a + eq + 1, b));
            }
        }
        at = stop + 1;
    }
    None
}

fn target_name(addr: &TargetAddr) -> String {
    match addr {
        TargetAddr::Tcp { host, .. } => host.clone(),
        TargetAddr::Unix(p) => format!("unix/{}", p.display()),
    }
}

async fn dial(ctx: &WorkerCtx, u: usize, t: usize, up: &Upstream) -> Result<UpConn, ProxyError> {
    let bal = &ctx.balancer(u);
    if !bal.try_reserve_conn(t) {
        return Err(ProxyError::upstream(ErrorKind::NoTarget, true));
    }
    // The reservation is released by UpConn's Drop, or here on failure.
    let release = || {
        bal.shared(t)
            .conns
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    };
    let connect = async {
        match &up.targets[t].addr {
            TargetAddr::Tcp { addr, .. } => {
                let s = monoio::net::TcpStream::connect_addr(*addr).await?;
                s.set_nodelay(true)?;
                Ok::<_, std::io::Error>(Stream::Tcp(s))
            }
            TargetAddr::Unix(p) => Ok(Stream::Unix(monoio::net::UnixStream::connect(p).await?)),
        }
    };
    let stream = match timed(up.transport.dial_timeout, connect).await {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            release();
            return Err(ProxyError::upstream(ErrorKind::Dial(e), true));
        }
        None => {
            release();
            return Err(ProxyError::upstream(ErrorKind::DialTimeout, true));
        }
    };
    let stream = match (up.targets[t].tls, stream) {
        (true, Stream::Tcp(tcp)) => match originate_tls(ctx, u, t, up, tcp).await {
            Ok(s) => s,
            Err(e) => {
                release();
                return Err(e);
            }
        },
        (_, stream) => stream,
    };
    Ok(UpConn::new(stream, bal.shared(t).clone()))
}

/// The TLS handshake toward a TLS target, verified (unless `insecure_skip_verify`) against
/// `server_name` or the target's host. Certificate problems become a 502 saying why.
async fn originate_tls(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
    tcp: monoio::net::TcpStream,
) -> Result<Stream, ProxyError> {
    let (Some(connector), Some(settings), TargetAddr::Tcp { host, .. }) =
        (ctx.upstream_tls(u), &up.transport.tls, &up.targets[t].addr)
    else {
        unreachable!("validation gives every TLS target its settings and a TCP address");
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let name = crate::net::tls::server_name(settings, host)
        .map_err(|e| ProxyError::upstream(ErrorKind::UpstreamTls(e.message), true))?;
    let result = timed(settings.handshake_timeout, connector.connect(name, tcp)).await;
    if !matches!(result, Some(Ok(_))) {
        ctx.shared()
            .upstream_tls_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match result {
        Some(Ok(tls)) => Ok(Stream::TlsClient(Box::new(tls), fd)),
        Some(Err(e)) => {
            let reason = crate::net::tls::failure_reason(&e.into());
            Err(ProxyError::upstream(ErrorKind::UpstreamTls(reason), true))
        }
        None => Err(ProxyError::upstream(
            ErrorKind::UpstreamTls("TLS handshake timed out".into()),
            true,
        )),
    }
}

/// How a body is written out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encode {
    /// Bytes as they came (Content-Length, or chunked passthrough).
    Raw,
    /// Wrap each read in a chunk (close-delimited upstream body to an HTTP/1.1 client).
    Chunk,
    /// Strip chunk framing (chunked upstream body to an HTTP/1.0 client).
    Dechunk,
    /// Read and drop (a HEAD client whose upstream request was not HEAD).
    Discard,
}

/// Errors while relaying a body, by side.
fn io_err(side: Side, e: std::io::Error) -> ProxyError {
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

struct BodyLimits {
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Payload bytes allowed (chunked request bodies against `max_request_body`).
    max: Option<u64>,
    /// Body bytes (as framed on the wire) read from the source so far, for the access log.
    moved: std::cell::Cell<u64>,
}

/// Streams one body from `src` (whose `buf[pos..]` already holds bytes after the head) to
/// `dst`. On return `src.buf[src.pos..]` holds whatever followed the body.
#[allow(clippy::too_many_arguments)]
async fn relay_body(
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
async fn splice_body(
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
async fn fill_body(
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
fn chunked_complete(bytes: &[u8]) -> bool {
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
async fn send_request_body(
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
async fn read_body(
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

async fn write_out(
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

async fn write_aux(
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

/// One request/response exchange on `conn`. Returns the client keep-alive decision.
#[allow(clippy::too_many_arguments)]
async fn exchange(
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
        ctx,
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
async fn switch_protocols(
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

/// The status line and header section sent to the client.
#[allow(clippy::too_many_arguments)]
fn write_response_head(
    ctx: &WorkerCtx,
    up: &Upstream,
    client: &Client,
    req_buf: &[u8],
    req: &RequestHead,
    rbuf: &[u8],
    resp: &ResponseHead,
    headers: &[HeaderIdx],
    encode: Encode,
    zero_length: bool,
    keep: bool,
    upstream_host: &str,
    set_cookie: Option<(&str, &str)>,
    out: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
    list: &mut HeaderList,
) {
    let _ = write!(out, "HTTP/1.1 {} ", resp.status);
    out.extend_from_slice(resp.reason.get(rbuf));
    out.extend_from_slice(b"\r\n");
    let ops = &up.headers.response;
    // Chunk re-coding changes framing: the upstream's Content-Length no longer applies.
    let drop_length = matches!(encode, Encode::Chunk | Encode::Dechunk) || zero_length;
    let kept =
        |h: &&HeaderIdx| !(h.hop_by_hop || drop_length && h.kind == HeaderKind::ContentLength);
    if ops.is_empty() {
        for h in headers.iter().filter(kept) {
            write_orig(out, rbuf, h, resp.bare_lf);
        }
    } else {
        list.clear();
        for (i, h) in headers.iter().enumerate() {
            if kept(&h) {
                list.push_orig(i);
            }
        }
        let info = ReqInfo {
            buf: req_buf,
            head: req,
            headers: &[],
            client,
            path: req.path.get(req_buf),
            query: req.query.map(|q| q.get(req_buf)),
            upstream: upstream_host,
            worker: ctx.id(),
        };
        list.apply(ops, rbuf, headers, &info, tmp);
        list.write(out, rbuf, headers, resp.bare_lf);
    }
    if encode == Encode::Chunk || (resp.framing == Framing::Chunked && encode == Encode::Raw) {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if zero_length {
        out.extend_from_slice(b"Content-Length: 0\r\n");
    }
    if let Some((name, value)) = set_cookie {
        let _ = write!(out, "Set-Cookie: {name}={value}; Path=/\r\n");
    }
    finish_conn_header(out, req.version, keep);
}
