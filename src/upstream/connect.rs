//! The one connector HTTP and layer 4 share: select a target -> reserve a connection slot ->
//! (HTTP) reuse a pooled idle connection -> dial (TCP or Unix) under the dial timeout -> PROXY
//! header -> TLS handshake for TLS targets. A failed dial or handshake always fails over to a
//! target not yet tried; once all failed, `retries` / `try_duration` / `try_interval` decide.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{TargetAddr, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::http2::client::{H2Stream, Waited};
use crate::net::stream::{Sock, Stream};
use crate::upstream::balance::Tried;
use crate::upstream::handshake::handshake;
use crate::upstream::pool::{InFlight, Tag, UpConn};
use crate::upstream::retry;
use crate::upstream::target::dial_name;
use crate::worker::ctx::WorkerCtx;

/// Runs `f` under an optional timeout; `None` when it ran out.
async fn timed<T>(limit: Option<Duration>, f: impl std::future::Future<Output = T>) -> Option<T> {
    match limit {
        Some(d) => monoio::time::timeout(d, f).await.ok(),
        None => Some(f.await),
    }
}

/// One request's (or tunnel's) search for a target, across connects and exchanges.
pub struct Attempts {
    started: Instant,
    /// Targets that failed this request; cleared when none is left to wait for one to recover.
    pub tried: Tried,
    attempts: u32,
    /// Since when it waits for a target with a free slot (for the pool wait metrics).
    waiting: Option<Instant>,
    /// The target of the last failed dial (the access log names it on a 502).
    pub last_failed: Option<usize>,
    /// When waiting in the connection queue ends (`transport.queue_timeout` after it began).
    queue_deadline: Option<Instant>,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts {
            started: Instant::now(),
            tried: Tried::default(),
            attempts: 0,
            waiting: None,
            last_failed: None,
            queue_deadline: None,
        }
    }
}

impl Attempts {
    /// Whether `retries` / `try_duration` allow one more attempt.
    pub fn may_try_again(&self, up: &Upstream) -> bool {
        retry::may_try_again(
            up.lb.retries,
            up.lb.try_duration,
            self.attempts,
            self.started.elapsed(),
        )
    }

    /// Gives back the attempt a stale pooled connection used: its replay is no retry.
    pub fn replay(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
    }

    fn wait_start(&mut self, ctx: &WorkerCtx, u: usize) {
        if self.waiting.is_none() {
            self.waiting = Some(Instant::now());
            ctx.gen_metrics().pool_waits[u].inc();
        }
    }

    fn wait_end(&mut self, ctx: &WorkerCtx, u: usize) {
        if let Some(since) = self.waiting.take() {
            ctx.gen_metrics().pool_wait_time[u].observe(since.elapsed());
        }
    }
}

/// What a connection is wanted for.
#[derive(Default)]
pub struct Want<'a> {
    /// The hash key of the hashing policies (the cookie value for `cookie`).
    pub key: Option<&'a [u8]>,
    /// HTTP may reuse pooled idle connections: `Some(replayable)`, where a request that cannot
    /// be replayed skips pooled connections the upstream already closed. Tunnels never reuse.
    pub reuse: Option<bool>,
    /// The client's addresses for the PROXY header, when the upstream sends one.
    pub source: Option<SocketAddr>,
    pub dest: Option<SocketAddr>,
    /// The upstream sends a PROXY header (so pooled connections are the client's own).
    pub proxy_header: bool,
    /// An Upgrade (WebSocket) request: carried over HTTP/2 (RFC 8441) its tunnel needs a
    /// connection slot of its own, which a stream on a shared connection does not spare.
    pub upgrade: bool,
}

impl Want<'_> {
    /// The pool tag of connections opened for this want: a PROXY header names the client, so
    /// its connections serve that client only.
    fn tag(&self) -> Tag {
        self.proxy_header.then_some((self.source, self.dest))
    }
}

/// A connection to target `target`, and the request's in-flight mark on it.
pub struct Connected<'a> {
    pub target: usize,
    pub conn: Link,
    pub in_flight: InFlight<'a>,
}

/// What carries one request to its target.
pub enum Link {
    /// A connection of its own (HTTP/1.1, FastCGI, a tunnel).
    Conn(UpConn),
    /// A stream on this worker's shared HTTP/2 connection to the target.
    H2(H2Stream),
}

/// Selects a target and connects to it (a pooled connection or a new one), failing over to
/// other targets while `att` allows. A failed dial or handshake counts against the target's
/// passive health.
pub async fn connect<'a>(
    ctx: &'a WorkerCtx,
    u: usize,
    up: &Upstream,
    att: &mut Attempts,
    want: &Want<'_>,
) -> Result<Connected<'a>, ProxyError> {
    let bal = ctx.balancer(u);
    let has_idle = |i| {
        want.reuse.is_some()
            && (ctx.pool().has_idle_tagged(u, i, want.tag())
                || (!want.upgrade && ctx.h2().has_room(u, i, want.tag())))
    };
    // HTTP requests wait for a connection slot in a FIFO when targets are full; one arriving
    // while others wait queues behind them instead of taking the next free slot first.
    let queueing = want.reuse.is_some() && up.transport.queue_timeout.is_some();
    let mut my_turn = false;
    loop {
        att.attempts += 1;
        let behind_others = queueing && !my_turn && ctx.queues().len(u) > 0;
        my_turn = false;
        let picked = if behind_others {
            None
        } else {
            bal.select(att.tried, want.key, has_idle)
        };
        let Some(t) = picked else {
            if queueing && (behind_others || bal.waits_for_slot(att.tried)) {
                att.wait_start(ctx, u);
                let limit = up.transport.queue_timeout.unwrap_or_default();
                let deadline = *att.queue_deadline.get_or_insert(Instant::now() + limit);
                if wait_for_slot(ctx, u, att.tried, want, deadline).await {
                    att.replay();
                    my_turn = true;
                    continue;
                }
                att.wait_end(ctx, u);
                return Err(ProxyError::upstream(ErrorKind::NoTarget, true));
            }
            if att.may_try_again(up) {
                att.tried = Tried::default();
                att.wait_start(ctx, u);
                monoio::time::sleep(up.lb.try_interval).await;
                continue;
            }
            att.wait_end(ctx, u);
            return Err(ProxyError::upstream(ErrorKind::NoTarget, true));
        };
        ctx.gen_metrics().selected[u][t].inc();
        let in_flight = InFlight::new(bal.shared(t));
        let dialed = if want.reuse.is_some() && up.transport.may_speak_h2(&up.targets[t]) {
            h2_link(ctx, u, t, up, want).await
        } else {
            let pooled = want
                .reuse
                .and_then(|replayable| checkout(ctx, u, t, up, replayable, want));
            match pooled {
                Some(conn) => Ok(Link::Conn(conn)),
                None => dial(ctx, u, t, up, want).await.map(Link::Conn),
            }
        };
        match dialed {
            Ok(conn) => {
                att.wait_end(ctx, u);
                return Ok(Connected {
                    target: t,
                    conn,
                    in_flight,
                });
            }
            // Filled up by another worker since select looked: no attempt, no failure.
            Err(e) if matches!(e.kind, ErrorKind::NoTarget) => {
                att.tried.insert(t);
                att.replay();
            }
            Err(e) => {
                let target = dial_name(&up.targets[t].addr);
                tracing::warn!(upstream = %up.name, upstream_addr = %target, "{e}");
                att.last_failed = Some(t);
                if retry::counts_against_target(e.side, &e.kind, false) {
                    bal.record_failure(t);
                }
                att.tried.insert(t);
                let untried = bal.select(att.tried, want.key, has_idle).is_some();
                // A failed dial reached no upstream: moving on to an untried target spends no
                // attempt (nginx's `proxy_next_upstream error`); `retries` counts the rounds.
                let step = retry::after_connect_failure(
                    retry::is_connect_failure(&e.kind),
                    untried,
                    att.may_try_again(up),
                );
                match step {
                    retry::NextStep::FailOver => att.replay(),
                    retry::NextStep::Wait => {
                        att.tried = Tried::default();
                        att.wait_start(ctx, u);
                        monoio::time::sleep(up.lb.try_interval).await;
                    }
                    retry::NextStep::GiveUp => {
                        att.wait_end(ctx, u);
                        return Err(e);
                    }
                    retry::NextStep::Next => {}
                }
            }
        }
    }
}

/// Waits at the back of this worker's queue for upstream `u`, and once at its head, polls the
/// shared counters until a target can be selected (true) or `deadline` passes (false).
async fn wait_for_slot(
    ctx: &WorkerCtx,
    u: usize,
    tried: Tried,
    want: &Want<'_>,
    deadline: Instant,
) -> bool {
    let ticket = ctx.queues().join(u);
    let has_idle = |i| ctx.pool().has_idle_tagged(u, i, want.tag());
    let deadline = monoio::time::Instant::from_std(deadline);
    if monoio::time::timeout_at(deadline, ticket.turn())
        .await
        .is_err()
    {
        return false;
    }
    loop {
        if ctx.balancer(u).select(tried, want.key, has_idle).is_some() {
            return true;
        }
        // Another client's idle PROXY-header connection holds a slot this request cannot
        // use: close it so the next look finds the slot free.
        if want.tag().is_some() {
            ctx.pool().evict_other(u, want.tag());
        }
        if monoio::time::Instant::now() >= deadline {
            return false;
        }
        monoio::time::sleep(crate::upstream::queue::POLL).await;
    }
}

/// The warmest pooled connection to `t`. A request that cannot be replayed must not meet a
/// connection the upstream already closed: a non-blocking peek finds that out for one syscall.
/// Replayable requests skip it and are replayed if the connection turns out stale.
fn checkout(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
    replayable: bool,
    want: &Want<'_>,
) -> Option<UpConn> {
    loop {
        let conn = ctx
            .pool()
            .checkout_tagged(u, t, up.transport.idle_timeout, want.tag())?;
        if replayable || !conn.stream.peer_closed() {
            return Some(conn);
        }
    }
}

/// A target that may speak HTTP/2: a stream on this worker's connection to it when one has
/// room, else a pooled HTTP/1.1 connection (a TLS target that chose http/1.1), else, once a
/// dial another request started has ended, a new connection: HTTP/2 when the target agrees
/// (h2c, or ALPN h2), HTTP/1.1 otherwise unless `versions` asks for HTTP/2 alone.
async fn h2_link(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
    want: &Want<'_>,
) -> Result<Link, ProxyError> {
    let conns = ctx.h2();
    // A WebSocket's tunnel slot, taken before anything is sent: one that finds the target
    // full is turned away (or queued) like a request needing a new connection.
    let mut tunnel_slot = None;
    if want.upgrade {
        let bal = ctx.balancer(u);
        if !bal.try_reserve_conn(t) {
            return Err(ProxyError::upstream(ErrorKind::NoTarget, true));
        }
        tunnel_slot = Some(crate::upstream::pool::ConnSlot::reserved(
            bal.shared(t).clone(),
        ));
    }
    loop {
        if let Some(mut stream) = conns.stream(u, t, want.tag()) {
            stream.tunnel_slot = tunnel_slot;
            return Ok(Link::H2(stream));
        }
        if let Some(conn) = want
            .reuse
            .and_then(|replayable| checkout(ctx, u, t, up, replayable, want))
        {
            return Ok(Link::Conn(conn));
        }
        match conns.wait_for_dial(u, t).await {
            Waited::NoDial => break,
            Waited::Connected => {}
            // Treated as full, not as failed: the dialing request already counted the failure.
            Waited::Failed => return Err(ProxyError::upstream(ErrorKind::NoTarget, true)),
        }
    }
    let mut dialing = conns.dialing(u, t);
    let conn = match dial(ctx, u, t, up, want).await {
        Ok(conn) => conn,
        Err(e) => {
            dialing.fail();
            return Err(e);
        }
    };
    if !crate::http2::client::negotiated_h2(up.targets[t].h2c, &conn.stream) {
        if up.transport.h2_only() {
            dialing.fail();
            let why = "the target did not agree to HTTP/2 (ALPN h2), which versions requires";
            return Err(ProxyError::upstream(
                ErrorKind::UpstreamTls(why.into()),
                true,
            ));
        }
        return Ok(Link::Conn(conn));
    }
    let limit = up.transport.dial_timeout;
    let opened = timed(
        limit,
        conns.open(u, t, conn, &up.transport, ctx.h2_gauge(u)),
    )
    .await;
    let failed = match opened {
        Some(Ok(mut stream)) => {
            stream.tunnel_slot = tunnel_slot;
            return Ok(Link::H2(stream));
        }
        Some(Err(e)) => ErrorKind::Dial(std::io::Error::other(format!("HTTP/2 handshake: {e}"))),
        None => ErrorKind::DialTimeout,
    };
    dialing.fail();
    Err(ProxyError::upstream(failed, true))
}

/// Closes every pooled connection to `t`: one was found stale, so the others are suspect.
pub fn discard_idle(ctx: &WorkerCtx, u: usize, t: usize) {
    ctx.pool().drain(u, t);
}

/// Reserves a connection slot on `t` and opens a new connection: dial, PROXY header, TLS.
async fn dial(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
    want: &Want<'_>,
) -> Result<UpConn, ProxyError> {
    let bal = &ctx.balancer(u);
    if !bal.try_reserve_conn(t) {
        return Err(ProxyError::upstream(ErrorKind::NoTarget, true));
    }
    // From here the slot is released by UpConn's Drop, or by this one on failure.
    let slot = crate::upstream::pool::ConnSlot::reserved(bal.shared(t).clone());
    let target = &up.targets[t];
    let connect = async {
        match &target.addr {
            TargetAddr::Tcp { addr, host } => {
                let tr = &up.transport;
                crate::upstream::dial::open(ctx, u, tr, host, *addr, &target.fallbacks).await
            }
            TargetAddr::Unix(p) => Ok(Sock::Unix(monoio::net::UnixStream::connect(p).await?)),
        }
    };
    let mut stream = match timed(up.transport.dial_timeout, connect).await {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => return Err(ProxyError::upstream(ErrorKind::Dial(e), true)),
        None => return Err(ProxyError::upstream(ErrorKind::DialTimeout, true)),
    };
    // The PROXY header travels in plaintext ahead of any TLS, as receivers expect it.
    let mut header = Vec::new();
    crate::net::proxy_protocol::write_header(
        up.transport.proxy_protocol,
        want.source,
        want.dest,
        &mut header,
    );
    if !header.is_empty() {
        use monoio::io::AsyncWriteRentExt;
        if let (Err(e), _) = stream.write_all(header).await {
            return Err(ProxyError::upstream(ErrorKind::Dial(e), true));
        }
    }
    let stream = match target.tls {
        // Boxed: the handshake's state (a whole rustls connection) would otherwise sit in every
        // HTTP connection task, idle or plaintext ones too; a TLS dial is rare next to requests.
        true => Box::pin(originate_tls(ctx, u, t, up, stream)).await?,
        false => stream.into_stream(),
    };
    Ok(UpConn {
        stream,
        slot,
        reused: false,
        tag: want.tag(),
    })
}

/// The TLS handshake toward a TLS target, verified (unless `insecure_skip_verify`) against
/// `server_name` or the target's host. Certificate problems become a 502 saying why.
async fn originate_tls(
    ctx: &WorkerCtx,
    u: usize,
    t: usize,
    up: &Upstream,
    tcp: Sock,
) -> Result<Stream, ProxyError> {
    let (Some(config), Some(settings)) = (ctx.upstream_tls(u), &up.transport.tls) else {
        unreachable!("validation gives every TLS target its settings");
    };
    // A unix target has no host: validation asks for `server_name` (or skipped verification).
    let host = match &up.targets[t].addr {
        TargetAddr::Tcp { host, .. } => host.as_str(),
        TargetAddr::Unix(_) => "localhost",
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let tls_err = |why: String| ProxyError::upstream(ErrorKind::UpstreamTls(why), true);
    let name = crate::net::tls::server_name(settings, host).map_err(|e| tls_err(e.message))?;
    let session =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| tls_err(e.to_string()))?;
    let result = timed(settings.handshake_timeout, handshake(tcp, session)).await;
    if !matches!(result, Some(Ok(_))) {
        ctx.shared()
            .upstream_tls_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match result {
        Some(Ok((tcp, session))) => Ok(Stream::TlsClient(
            Box::new(crate::net::tls_stream::TlsClient::new(tcp, session)),
            fd,
        )),
        Some(Err(e)) => Err(tls_err(crate::net::tls::failure_reason(&e))),
        None => Err(tls_err("TLS handshake timed out".into())),
    }
}
