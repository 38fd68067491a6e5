//! The HTTP/1 data path of one downstream connection: read a head, route it, answer it or
//! forward it to an upstream target, stream both bodies, repeat while keep-alive holds.
//!
//! Buffers are owned by the connection and reused for every request on it; heads are parsed in
//! place and forwarded line by line from the receive buffer, so a request costs no allocation
//! once the connection is warm.

pub mod early;
pub mod exchange;
pub mod expect;
pub mod forward;
pub mod lb_key;
pub mod linger;
pub mod relay;
pub mod respond;
pub mod session;
pub mod shape;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::Canceller;

use crate::config::Action;
use crate::error::{ErrorKind, ProxyError};
use crate::http1::forward::{Client, HeaderList};
use crate::http1::parse::{parse_request, Framing, HeadLimits, HeaderIdx, Parse, RequestHead};
use crate::net::stream::Stream;
use crate::observe::metrics::{Done, Protocol};
use crate::proxy::forward::forward;
use crate::proxy::respond::{respond, respond_simple};
use crate::proxy::session::{
    answer_error, timed, timed_at, Exchange, Failure, RecvBuf, Scratch, Session, Trace, IDLE_READ,
    INITIAL_BUF, OUT_BUF, PARK_AFTER,
};
use crate::route;
use crate::upstream::pool::UpConn;
use crate::upstream::target::dialled;
use crate::worker::ctx::WorkerCtx;

/// What a downstream connection keeps between bursts of requests: all a parked (idle) one holds.
struct Conn {
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    stream: Stream,
    /// Its `peer` is the client's address (the one a PROXY header carried, if any).
    client: Client,
    /// Received, not yet handled; unallocated while parked.
    down: RecvBuf,
    first: bool,
}

/// How a burst of requests on one connection ended.
enum Burst {
    /// Closed, failed, drained, or out of idle time.
    Closed,
    /// The response to an upgrade was sent: the connection becomes a tunnel (boxed: rare, and
    /// a parked connection's task keeps room for this value).
    Upgraded(Box<(UpConn, Option<usize>)>),
    /// No request for `PARK_AFTER`: park until input arrives, for at most this long.
    Quiet(Option<Duration>),
}

/// Serves one downstream connection until it closes, fails or the server drains. Each request
/// is handled by the newest configuration at the time its head arrived: after a reload, a
/// keep-alive connection moves on with its next request, and closes when its listener is gone.
pub fn serve(
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    stream: Stream,
    peer: Option<SocketAddr>,
) -> impl std::future::Future<Output = ()> {
    let scheme = if stream.is_tls() { "https" } else { "http" };
    let local = local_of(&ctx, listener, &stream);
    let mut conn = Conn {
        ctx,
        socket,
        listener,
        stream,
        client: Client {
            peer,
            trusted: false,
            ip_text: String::new(),
            scheme,
            local,
        },
        down: RecvBuf {
            buf: Vec::with_capacity(INITIAL_BUF),
            pos: 0,
            floor: 0,
        },
        first: true,
    };
    // An async block using `conn` in place, not an async fn: a task keeps an async fn's
    // arguments beside the locals moved out of them, for its whole life.
    async move {
        if conn.ctx.config().listeners[conn.listener].proxy_protocol {
            // The carried address is the client from here on (X-Forwarded-For, trust,
            // placeholders).
            let trusted = &conn.ctx.config().trusted_proxies;
            let header = crate::net::proxy_protocol::accept(
                trusted,
                &mut conn.stream,
                conn.client.peer,
                &mut conn.down.buf,
            );
            match Box::pin(header).await {
                Some(Some((source, _))) => conn.client.peer = Some(source),
                Some(None) => {}
                None => return,
            }
        }
        let peer = conn.client.peer;
        conn.client.trusted = is_trusted(&conn.ctx, peer);
        conn.client.ip_text = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        if let Some(up) = bursts(&mut conn).await {
            Box::pin(tunnel(conn, up)).await;
        }
    }
}

/// Opens a downstream connection: reads its PROXY header when the listener expects one, and
/// says who the client is. `None`: the connection is to be closed. The receive buffer returned
/// holds whatever arrived after the header. (Listeners that may speak HTTP/2 start here; the
/// worker then picks `serve_h1` or `http2::serve`.)
pub(crate) async fn open(
    ctx: &WorkerCtx,
    listener: usize,
    stream: &mut Stream,
    peer: Option<SocketAddr>,
) -> Option<(RecvBuf, Client)> {
    let mut down = RecvBuf {
        buf: Vec::with_capacity(INITIAL_BUF),
        pos: 0,
        floor: 0,
    };
    let mut peer = peer;
    // On a TLS listener the header came before the handshake and was read then.
    if ctx.config().listeners[listener].proxy_protocol && !stream.is_tls() {
        // The carried address is the client from here on (X-Forwarded-For, trust, placeholders).
        let trusted = &ctx.config().trusted_proxies;
        let header = crate::net::proxy_protocol::accept(trusted, stream, peer, &mut down.buf);
        match Box::pin(header).await {
            Some(Some((source, _))) => peer = Some(source),
            Some(None) => {}
            None => return None,
        }
    }
    let client = client_of(ctx, peer, stream.is_tls(), local_of(ctx, listener, stream));
    Some((down, client))
}

/// The address the client reached us at: the listener's own when it is bound to one address
/// and port, else the kernel's answer (a getsockname per connection).
fn local_of(ctx: &WorkerCtx, listener: usize, stream: &Stream) -> Option<SocketAddr> {
    bound_local(&ctx.config().listeners[listener].addr).or_else(|| stream.local_addr())
}

/// A listening address every connection accepted on it has as its local address.
fn bound_local(addr: &crate::config::ListenAddr) -> Option<SocketAddr> {
    match addr {
        crate::config::ListenAddr::Tcp(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(*a),
        _ => None,
    }
}

/// Who the client is: `peer` (the PROXY header's source when there was one), and whether it
/// reached us over TLS.
pub(crate) fn client_of(
    ctx: &WorkerCtx,
    peer: Option<SocketAddr>,
    tls: bool,
    local: Option<SocketAddr>,
) -> Client {
    Client {
        peer,
        trusted: is_trusted(ctx, peer),
        ip_text: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        scheme: if tls { "https" } else { "http" },
        local,
    }
}

/// An HTTP/2 stream reaches the data path as `Stream::H2` (a WebSocket over one through an
/// in-memory pair), a client on a socket.
fn protocol_of(stream: &Stream) -> Protocol {
    match stream {
        Stream::Mem(_) | Stream::H2(_) => Protocol::H2,
        _ => Protocol::H1,
    }
}

/// Serves an opened connection as `serve` does; its first bytes may already sit in `down`.
/// HTTP/2 streams run through here too, each as a one-request connection (`http2::stream`).
pub(crate) fn serve_h1(
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    stream: Stream,
    down: RecvBuf,
    client: Client,
) -> impl std::future::Future<Output = ()> {
    let mut conn = Conn {
        ctx,
        socket,
        listener,
        stream,
        client,
        down,
        first: true,
    };
    async move {
        if let Some(up) = bursts(&mut conn).await {
            Box::pin(tunnel(conn, up)).await;
        }
    }
}

/// Serves bursts of requests, parking the connection between them, until it closes or
/// upgrades (then the upstream connection it switched to is returned).
async fn bursts(conn: &mut Conn) -> Option<Box<(UpConn, Option<usize>)>> {
    loop {
        let held = BufferHeld::new(conn.ctx.clone());
        // Boxed: buffers, scratch and the exchange's state exist only while the connection is
        // busy, so a parked connection's task is a few hundred bytes instead of several KiB.
        let burst = crate::worker::catch::boxed(|| busy(conn)).await;
        drop(held);
        match burst {
            Burst::Closed => return None,
            Burst::Upgraded(up) => return Some(up),
            Burst::Quiet(left) => {
                conn.down = RecvBuf {
                    buf: Vec::new(),
                    pos: 0,
                    floor: 0,
                };
                conn.stream.release_idle();
                // No timer of its own: the worker's idle clock keeps the deadline.
                let woke = match left {
                    None => conn.stream.wait_readable().await.is_ok(),
                    Some(left) => {
                        let deadline = conn.ctx.idle_clock().deadline(Instant::now() + left);
                        monoio::select! {
                            r = conn.stream.wait_readable() => r.is_ok(),
                            _ = deadline => false,
                        }
                    }
                };
                if !woke {
                    return None;
                }
            }
        }
    }
}

/// Relays an upgraded connection until both sides are done.
async fn tunnel(conn: Conn, up: Box<(UpConn, Option<usize>)>) {
    // Only the sockets go on: the receive buffer (whatever it held was forwarded before the
    // switch) is freed rather than kept for the tunnel's life.
    let Conn {
        ctx,
        stream,
        down,
        client,
        ..
    } = conn;
    drop((down, client));
    // The tunnel counts as in flight: a drain lets it finish up to shutdown_timeout.
    let ctx = &ctx;
    let active = ctx.active();
    let (
        UpConn {
            stream: up, slot, ..
        },
        upstream,
    ) = *up;
    let tr = upstream.map(|u| &ctx.config().upstreams[u].transport);
    let relay = crate::l4::upgrade::run(stream, up, None, ctx.idle_clock());
    // `stream_close_delay`: a reload ends it that long after; dropping closes both sides.
    let relay = upgrade_until_replaced(ctx, tr.and_then(|t| t.stream_close_delay), relay);
    // `stream_timeout`: dropping the relay closes both sides.
    match timed(tr.and_then(|t| t.stream_timeout), relay).await {
        Some(r) => tracing::debug!(sent = r.up, received = r.down, "upgraded connection closed"),
        None => tracing::debug!("upgraded connection closed after stream_timeout"),
    }
    drop(slot);
    drop(active);
}

/// Counts a connection in `ringway_worker_receive_buffers` while it is busy.
struct BufferHeld(Rc<WorkerCtx>);

impl BufferHeld {
    fn new(ctx: Rc<WorkerCtx>) -> Self {
        ctx.metrics().receive_buffers.inc();
        BufferHeld(ctx)
    }
}

impl Drop for BufferHeld {
    fn drop(&mut self) {
        self.0.metrics().receive_buffers.sub(1);
    }
}

/// Serves requests until the connection closes, upgrades or goes quiet.
async fn busy(conn: &mut Conn) -> Burst {
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
        copied: Vec::new(),
        send_on: None,
        trace: Trace::default(),
        body_at: None,
    };
    let mut ubuf: Vec<u8> = Vec::new();
    let mut canceller = Canceller::new();
    // When the last request ended (read once for its metrics): the quiet read's clock starts.
    let mut ended = None;
    loop {
        let ctx = &conn.ctx;
        let limits = HeadLimits {
            max_head_bytes: ctx.config().limits.max_header_bytes,
            max_uri_bytes: ctx.config().limits.max_uri_bytes,
            max_headers: ctx.config().limits.max_headers,
        };
        let mut reader = HeadReader {
            ctx,
            stream: &mut conn.stream,
            down: &mut conn.down,
            limits: &limits,
            headers: &mut s.headers,
            first: conn.first,
            canceller: &mut canceller,
            since: ended.take(),
        };
        let head = match reader.read().await {
            Ok(HeadRead::Head(h)) => h,
            Ok(HeadRead::Closed) => return Burst::Closed,
            Ok(HeadRead::Quiet(left)) => return Burst::Quiet(left),
            Err(e) => {
                let refused = Instant::now();
                answer_error(&mut conn.stream, &mut s.out, &e).await;
                let status = e.status().unwrap_or(0);
                let down = &conn.down;
                ctx.gen_metrics().request_done(&Done {
                    listener: conn.listener,
                    status,
                    bytes: [down.buf.len() as u64, s.out.len() as u64],
                    protocol: protocol_of(&conn.stream),
                    ..Done::default()
                });
                if let (Some(log), true) = (ctx.access(), status > 0) {
                    // No head parsed: what the client sent is unknown, the answer is not.
                    log.record(&crate::observe::access::Record {
                        client: conn.client.peer,
                        listener: &ctx.config().listeners[conn.listener].name,
                        status,
                        bytes_in: down.buf.len() as u64,
                        bytes_out: s.out.len() as u64,
                        body_bytes_out: body_len(&s.out, s.out.len() as u64),
                        duration: refused.elapsed(),
                        worker: ctx.id(),
                        ..Default::default()
                    });
                }
                if matches!(e.kind, ErrorKind::BadHead(_)) {
                    // The rest of the refused head (and whatever followed) is unread.
                    linger::linger(&mut conn.stream, &mut conn.down).await;
                }
                return Burst::Closed;
            }
        };
        conn.first = false;
        // A reload since the last request: this one uses the new configuration, unless the
        // listener went away with it (then the old one answers this request, the last).
        let mut last = false;
        if let Some(newer) = conn.ctx.newer() {
            match newer.listener_of(conn.socket) {
                Some(l) if is_http(&newer, l) => {
                    conn.ctx = newer;
                    conn.listener = l;
                    conn.client.trusted = is_trusted(&conn.ctx, conn.client.peer);
                }
                _ => last = true,
            }
        }
        let ctx = &conn.ctx;
        let started = Instant::now();
        s.status = 0;
        s.bytes_in = head.head_len as u64;
        s.bytes_out = 0;
        s.target = None;
        s.trace = Trace {
            listener: conn.listener,
            http2: protocol_of(&conn.stream) == Protocol::H2,
            ..Trace::default()
        };
        let active = ctx.active();
        if s.out.capacity() == 0 {
            s.out = ctx.buffers().take();
        }
        s.out.reserve(OUT_BUF);
        if ubuf.capacity() == 0 {
            ubuf = ctx.buffers().take();
        }
        let mut sess = Session {
            ctx,
            listener: conn.listener,
            client: &conn.client,
            stream: &mut conn.stream,
            down: &mut conn.down,
            ubuf: &mut ubuf,
            s: &mut s,
            head: &head,
        };
        // Not boxed, though its state is most of this task's size: building the future and
        // moving it into a box copied ~7 KiB per request (3% of the CPU in small-keepalive).
        let next = handle(&mut sess).await;
        let now = Instant::now();
        let took = now - started;
        ended = Some(now);
        ctx.gen_metrics().request_done(&Done {
            listener: conn.listener,
            upstream: s.trace.upstream,
            target: s.target,
            status: s.status,
            took,
            bytes: [s.bytes_in, s.bytes_out],
            protocol: protocol_of(&conn.stream),
        });
        if let Some(log) = ctx.access() {
            log_request(ctx, log, &conn.client, &conn.down.buf, &head, &s, took);
        }
        drop(active);
        let keep = match next {
            Exchange::Done(keep) => keep,
            Exchange::Upgraded(up) => {
                return Burst::Upgraded(Box::new((up, s.target.map(|(u, _)| u))))
            }
        };
        // Back to the worker's spares, also when the connection closes (an HTTP/2 stream
        // always does): the next request (on any connection) takes them, and this one holds
        // none while it waits. Small ones stay (they cost less than a trip).
        for b in [&mut ubuf, &mut s.out, &mut s.aux] {
            if b.capacity() < crate::worker::buffers::SPARE_MIN {
                b.clear();
            } else {
                ctx.buffers().give(std::mem::take(b));
            }
        }
        if !keep && linger::unread_input(&conn.stream, &conn.down, &head) {
            linger::linger(&mut conn.stream, &mut conn.down).await;
            return Burst::Closed;
        }
        if !keep || last || ctx.draining() {
            return Burst::Closed;
        }
        let down = &mut conn.down;
        down.floor = 0;
        down.compact();
        if down.pending() == 0 && down.buf.capacity() > IDLE_READ {
            down.buf = Vec::with_capacity(IDLE_READ);
        }
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

/// How waiting for a request head ended (errors aside).
enum HeadRead {
    Head(RequestHead),
    /// The client closed (or idled out) cleanly between requests.
    Closed,
    /// Nothing arrived for `PARK_AFTER` between requests; this much idle time is left.
    Quiet(Option<Duration>),
}

/// What reading one request head needs from the connection.
struct HeadReader<'a> {
    ctx: &'a WorkerCtx,
    stream: &'a mut Stream,
    down: &'a mut RecvBuf,
    limits: &'a HeadLimits,
    headers: &'a mut Vec<HeaderIdx>,
    first: bool,
    canceller: &'a mut Canceller,
    /// A clock reading taken just before this read began, if the caller had one.
    since: Option<Instant>,
}

impl HeadReader<'_> {
    /// Reads until a complete request head sits at the start of `down.buf`.
    async fn read(&mut self) -> Result<HeadRead, ProxyError> {
        debug_assert_eq!(self.down.pos, 0);
        let l = &self.ctx.config().limits;
        let mut deadline = if self.first {
            l.header_read_timeout.map(|d| Instant::now() + d)
        } else {
            None
        };
        loop {
            if !self.down.buf.is_empty() {
                match parse_request(&self.down.buf, self.limits, self.headers) {
                    Parse::Complete(h) => return Ok(HeadRead::Head(h)),
                    Parse::Invalid(e) => return Err(ProxyError::downstream(ErrorKind::BadHead(e))),
                    Parse::Partial => {}
                }
                if deadline.is_none() {
                    deadline = l.header_read_timeout.map(|d| Instant::now() + d);
                }
            }
            // A cancelled read takes the buffer with it: decide from what we had before.
            let had_bytes = !self.down.buf.is_empty();
            let idle = !had_bytes && !self.first;
            let res = if idle {
                match self.read_idle(l.idle_timeout).await {
                    Ok(r) => r,
                    Err(end) => return Ok(end),
                }
            } else {
                let read = self.down.read_more(self.stream, self.limits.max_head_bytes);
                match timed_at(deadline, read).await {
                    Some(r) => r,
                    None if !had_bytes => return Ok(HeadRead::Closed),
                    None => return Err(ProxyError::downstream(ErrorKind::HeadTimeout)),
                }
            };
            match res {
                Ok(0) if !had_bytes => return Ok(HeadRead::Closed),
                Ok(0) => {
                    return Err(ProxyError::downstream(ErrorKind::ClientIo(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    )))
                }
                Ok(_) => {}
                Err(_) if !had_bytes => return Ok(HeadRead::Closed),
                Err(e) => return Err(ProxyError::downstream(ErrorKind::ClientIo(e))),
            }
        }
    }

    /// The read between requests: under the idle timeout, and on a plain socket only until
    /// `PARK_AFTER`, after which the connection parks holding no buffer.
    async fn read_idle(
        &mut self,
        idle_timeout: Option<Duration>,
    ) -> Result<std::io::Result<usize>, HeadRead> {
        let parks = self.stream.can_park() && idle_timeout.is_none_or(|d| d > PARK_AFTER);
        if !parks {
            let read = self.down.read_more(self.stream, self.limits.max_head_bytes);
            return timed(idle_timeout, read).await.ok_or(HeadRead::Closed);
        }
        let since = self.since.unwrap_or_else(Instant::now);
        let quiet = std::pin::pin!(self.ctx.idle_clock().deadline(since + PARK_AFTER));
        let read = self
            .down
            .read_unless_quiet(self.stream, quiet, self.canceller);
        // The idle clock ends the quiet wait up to a tick late: what is left counts from `since`.
        read.await
            .ok_or_else(|| HeadRead::Quiet(idle_timeout.map(|d| d.saturating_sub(since.elapsed()))))
    }
}

/// Handles one request whose head sits at `down.buf[..head.head_len]`: route it, then answer
/// it locally or forward it.
async fn handle(sess: &mut Session<'_>) -> Exchange {
    let (ctx, head) = (sess.ctx, sess.head);
    let config = ctx.config();
    if let (Framing::Length(n), Some(max)) = (head.framing, config.limits.max_request_body) {
        if n > max {
            sess.s.status = 413;
            sess.answer_error(&ProxyError::downstream(ErrorKind::BodyTooLarge))
                .await;
            sess.s.bytes_out = sess.s.out.len() as u64;
            return Exchange::Done(false);
        }
    }
    let crate::config::ListenerKind::Http { routes } = &config.listeners[sess.listener].kind else {
        return Exchange::Done(false);
    };
    let Some((index, route)) = route::find_at(routes, &sess.down.buf, head, &sess.s.headers) else {
        return Exchange::Done(respond_simple(sess, 404).await);
    };
    sess.s.trace.route = Some(index);
    if let Action::Proxy(u) = route.action {
        sess.s.trace.upstream = Some(u);
    }
    sess.down.pos = head.head_len;
    sess.down.floor = head.head_len;
    match &route.action {
        // An h2 client's WebSocket told 2xx without a switch gets 502 from its stream: say so.
        Action::Respond(r)
            if crate::http2::head::unswitched(sess.s.trace.http2, head, r.status) =>
        {
            Exchange::Done(respond_simple(sess, 502).await)
        }
        Action::Respond(r) => Exchange::Done(respond(sess, r).await),
        Action::Proxy(u) => match forward(sess, *u, route).await {
            Ok(next) => next,
            Err(Failure { error, answered }) => {
                if !answered {
                    sess.s.status = error.status().unwrap_or(0);
                    crate::proxy::shape::answer_error(sess, route, &error).await;
                    sess.s.bytes_out = sess.s.out.len() as u64;
                } else {
                    tracing::debug!("response cut short: {error}");
                }
                Exchange::Done(false)
            }
        },
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
    let config = ctx.config();
    let tr = &s.trace;
    let group = tr.upstream.map(|u| &config.upstreams[u]);
    // The target that answered, else the one whose dial failed last.
    let addr = match (s.target, group, tr.dialed) {
        (Some((u, t)), _, _) => Some(dialled(&config.upstreams[u].targets[t].addr)),
        (None, Some(up), Some(t)) => Some(dialled(&up.targets[t].addr)),
        _ => None,
    };
    let header = |name: &[u8]| {
        s.headers
            .iter()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name))
            .map_or(&[][..], |h| h.value.get(buf))
    };
    let routes = match &config.listeners[tr.listener].kind {
        crate::config::ListenerKind::Http { routes } => &routes[..],
        crate::config::ListenerKind::Tcp { .. } => &[],
    };
    let route = tr
        .route
        .map(|i| match routes.get(i).and_then(|r| r.name.as_deref()) {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(i.to_string()),
        });
    log.record(&crate::observe::access::Record {
        client: client.peer,
        listener: &config.listeners[s.trace.listener].name,
        protocol: match head.version {
            _ if tr.http2 => "HTTP/2.0",
            crate::http1::parse::Version::Http11 => "HTTP/1.1",
            crate::http1::parse::Version::Http10 => "HTTP/1.0",
        },
        method: head.method.get(buf),
        host: head.host.map_or(&[][..], |h| h.get(buf)),
        uri: head.target.get(buf),
        status: s.status,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        body_bytes_out: body_len(&s.out, s.bytes_out),
        duration: took,
        route: route.as_deref(),
        upstream: group.map(|u| u.name.as_str()),
        upstream_addr: addr.as_deref(),
        upstream_connect: tr.connect,
        upstream_response: tr.response,
        user_agent: header(b"user-agent"),
        referer: header(b"referer"),
        request_id: header(b"x-request-id"),
        worker: ctx.id(),
        ..Default::default()
    });
}

/// Of `sent` bytes, those after the response head that `out` still starts with (nginx's
/// `$body_bytes_sent`); all of them when `out` holds no head.
fn body_len(out: &[u8], sent: u64) -> u64 {
    if !out.starts_with(b"HTTP/") {
        return sent;
    }
    match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => sent.saturating_sub(end as u64 + 4),
        None => sent,
    }
}

/// How often an upgraded connection with `stream_close_delay` looks for a newer configuration.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs an upgraded connection's relay; with `close_delay`, ends it that long after a newer
/// configuration replaced the one it was opened under.
async fn upgrade_until_replaced(
    ctx: &WorkerCtx,
    close_delay: Option<std::time::Duration>,
    relay: impl std::future::Future<Output = crate::l4::upgrade::Relayed>,
) -> crate::l4::upgrade::Relayed {
    let Some(delay) = close_delay else {
        return relay.await;
    };
    let replaced = async {
        while ctx.newer().is_none() {
            monoio::time::sleep(RELOAD_POLL).await;
        }
        monoio::time::sleep(delay).await;
    };
    monoio::select! {
        r = relay => r,
        _ = replaced => {
            tracing::debug!("upgraded connection closed after stream_close_delay");
            crate::l4::upgrade::Relayed::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenAddr;

    #[test]
    fn only_a_listener_bound_to_one_address_and_port_names_its_connections_local_address() {
        let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
        let cases = [
            (tcp("127.0.0.1:8080"), Some("127.0.0.1:8080")),
            (tcp("[::1]:443"), Some("[::1]:443")),
            (tcp("0.0.0.0:80"), None),
            (tcp("[::]:80"), None),
            (tcp("127.0.0.1:0"), None),
            (ListenAddr::Unix("/tmp/x.sock".into()), None),
        ];
        for (addr, want) in cases {
            let want = want.map(|w| w.parse::<SocketAddr>().unwrap());
            assert_eq!(bound_local(&addr), want, "{addr:?}");
        }
    }
}
