//! The HTTP/1 data path of one downstream connection: read a head, route it, answer it or
//! forward it to an upstream target, stream both bodies, repeat while keep-alive holds.
//!
//! Buffers are owned by the connection and reused for every request on it; heads are parsed in
//! place and forwarded line by line from the receive buffer, so a request costs no allocation
//! once the connection is warm.

pub mod exchange;
pub mod forward;
pub mod lb_key;
pub mod relay;
pub mod respond;
pub mod session;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Action;
use crate::error::{ErrorKind, ProxyError};
use crate::http1::forward::{Client, HeaderList};
use crate::http1::parse::{parse_request, Framing, HeadLimits, HeaderIdx, Parse, RequestHead};
use crate::net::stream::Stream;
use crate::proxy::forward::forward;
use crate::proxy::respond::{respond, respond_simple};
use crate::proxy::session::{
    answer_error, timed, timed_at, Exchange, Failure, RecvBuf, Scratch, Session, IDLE_READ,
    INITIAL_BUF, OUT_BUF,
};
use crate::route;
use crate::upstream::pool::UpConn;
use crate::upstream::target::dial_name;
use crate::worker::ctx::WorkerCtx;

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
    // On a TLS listener the header came before the handshake and was read then.
    if ctx.config().listeners[listener].proxy_protocol && !stream.is_tls() {
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
        local: stream.local_addr(),
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
        let mut sess = Session {
            ctx: &ctx,
            listener,
            client: &client,
            stream: &mut stream,
            down: &mut down,
            ubuf: &mut ubuf,
            s: &mut s,
            head: &head,
        };
        // Not boxed, though its state is most of this task's size: building the future and
        // moving it into a box copied ~7 KiB per request (3% of the CPU in small-keepalive).
        let next = handle(&mut sess).await;
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
                let tr = s.target.map(|(u, _)| &ctx.config().upstreams[u].transport);
                let limit = tr.and_then(|t| t.stream_timeout);
                let relay = crate::l4::upgrade::run(stream, up, None);
                // `stream_close_delay`: a reload ends it that long after; dropping closes both.
                let relay = Box::pin(upgrade_until_replaced(
                    &ctx,
                    tr.and_then(|t| t.stream_close_delay),
                    relay,
                ));
                // `stream_timeout`: dropping the relay closes both sides.
                match limit {
                    None => {
                        let r = relay.await;
                        tracing::debug!(
                            sent = r.up,
                            received = r.down,
                            "upgraded connection closed"
                        );
                    }
                    Some(d) => match monoio::time::timeout(d, relay).await {
                        Ok(r) => {
                            tracing::debug!(
                                sent = r.up,
                                received = r.down,
                                "upgraded connection closed"
                            )
                        }
                        Err(_) => {
                            tracing::debug!("upgraded connection closed after stream_timeout")
                        }
                    },
                }
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

/// Handles one request whose head sits at `down.buf[..head.head_len]`: route it, then answer
/// it locally or forward it.
async fn handle(sess: &mut Session<'_>) -> Exchange {
    let (ctx, head) = (sess.ctx, sess.head);
    let config = ctx.config();
    if let (Framing::Length(n), Some(max)) = (head.framing, config.limits.max_request_body) {
        if n > max {
            sess.answer_error(&ProxyError::downstream(ErrorKind::BodyTooLarge))
                .await;
            return Exchange::Done(false);
        }
    }
    let crate::config::ListenerKind::Http { routes } = &config.listeners[sess.listener].kind else {
        return Exchange::Done(false);
    };
    let Some(route) = route::find(routes, &sess.down.buf, head, &sess.s.headers) else {
        return Exchange::Done(respond_simple(sess, 404).await);
    };
    sess.down.pos = head.head_len;
    sess.down.floor = head.head_len;
    match &route.action {
        Action::Respond(r) => Exchange::Done(respond(sess, r).await),
        Action::Proxy(u) => match forward(sess, *u, route).await {
            Ok(next) => next,
            Err(Failure { error, answered }) => {
                if !answered {
                    sess.s.status = error.status().unwrap_or(0);
                    sess.answer_error(&error).await;
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
    let upstream = s
        .target
        .map(|(u, t)| dial_name(&ctx.config().upstreams[u].targets[t].addr));
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
