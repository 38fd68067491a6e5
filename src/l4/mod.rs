//! Layer-4 tunnels: each connection accepted on a `protocol: tcp` listener is joined to one
//! upstream target and bytes flow both ways until both sides have finished.
//!
//! Small messages are copied through a stack buffer; a bulk flow moves with splice(2) through a
//! pooled pipe (`net::splice`), so it never enters user space, and gives the pipe back when it
//! goes quiet (`pump`). The runtime supplies readiness (an io_uring poll, or epoll). Half-close is
//! passed on (a FIN becomes shutdown(SHUT_WR) on the other side while the other direction keeps
//! flowing); a reset or error on either side resets both (SO_LINGER 0), so the peer learns of
//! the failure instead of seeing a clean end.

mod pump;
pub mod upgrade;
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::config::ListenerKind;
use crate::error::Side;
use crate::l4::pump::{one_way, socket, Conn, DirError, Shared, Way};
use crate::l4::upgrade::idle_watch;
use crate::net::proxy_protocol;
use crate::net::stream::Stream;
use crate::observe::metrics::TunnelCounters;
use crate::upstream::connect::{connect, Attempts, Connected, Link, Want};
use crate::upstream::pool::UpConn;
use crate::upstream::retry;
use crate::upstream::target::dialled;
use crate::worker::ctx::WorkerCtx;

/// Serves one connection of a tcp listener until both directions are done.
pub async fn serve(
    ctx: &Rc<WorkerCtx>,
    listener: usize,
    mut client: Stream,
    peer: Option<SocketAddr>,
) {
    let l = &ctx.config().listeners[listener];
    let ListenerKind::Tcp {
        upstream,
        idle_timeout,
    } = l.kind
    else {
        debug_assert!(false, "l4::serve on an http listener");
        return;
    };
    let up = &ctx.config().upstreams[upstream];
    let sends_header = up.transport.proxy_protocol != crate::config::ProxyProtocol::Off;
    let mut source = peer;
    // Only a PROXY header to the upstream needs the address the client reached (a
    // getsockname per connection otherwise).
    let mut dest = match &client {
        Stream::Tcp(s) if sends_header => s.local_addr().ok(),
        _ => None,
    };
    let mut early = Vec::new();
    // On a TLS listener the header came before the handshake and was read then.
    if l.proxy_protocol && !client.is_tls() {
        match proxy_protocol::accept(&ctx.config().trusted_proxies, &mut client, peer, &mut early)
            .await
        {
            Some(Some((s, d))) => (source, dest) = (Some(s), Some(d)),
            Some(None) => {}
            None => return,
        }
    }
    let started = Instant::now();
    let connect_took = std::cell::Cell::new(None);
    let log = |target: Option<usize>, end: &str, moved: [u64; 2]| {
        let via = target.map(|_| upstream);
        let g = ctx.gen_metrics();
        g.add_bytes(listener, via, moved);
        // A tcp listener counts its finished connections in the no-status class.
        g.requests[listener][0][0].inc();
        if let Some(log) = ctx.access() {
            log.record(&crate::observe::access::Record {
                event: crate::observe::access::Event::Tcp,
                protocol: "tcp",
                client: source,
                listener: &l.name,
                upstream: Some(&up.name),
                upstream_addr: target.map(|t| dialled(&up.targets[t].addr)).as_deref(),
                upstream_connect: connect_took.get(),
                bytes_in: moved[0],
                bytes_out: moved[1],
                duration: started.elapsed(),
                end,
                worker: ctx.id(),
                ..Default::default()
            });
        }
    };
    // ip_hash keys on the peer, client_ip_hash on the client a PROXY header carried.
    let key_ip = match up.lb.policy {
        crate::config::Policy::IpHash => peer.map(|p| p.ip()),
        crate::config::Policy::ClientIpHash => source.map(|s| s.ip()),
        _ => None,
    };
    let key_bytes = key_ip.map(|ip| match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    });
    let want = Want {
        key: key_bytes.as_deref(),
        reuse: None,
        source,
        dest,
        proxy_header: sends_header,
        upgrade: false,
    };
    let mut att = Attempts::default();
    let connected = connect(ctx, upstream, up, &mut att, &want).await;
    connect_took.set(Some(started.elapsed()));
    // The tunnel holds the connection slot and the in-flight mark for its whole life (tcp
    // counts open connections, so least_conn and max_connections see tunnels).
    let Ok(Connected {
        target: t,
        conn:
            Link::Conn(UpConn {
                stream: mut target,
                slot: _slot,
                ..
            }),
        in_flight: _in_flight,
    }) = connected
    else {
        tracing::debug!(upstream = %up.name, "no target reachable; closing the client");
        log(att.last_failed, "no_target", [0, 0]);
        return;
    };
    ctx.tunnel_counters()
        .tunnels
        .fetch_add(1, Ordering::Relaxed);
    // Whatever the client sent after its own PROXY header goes out first.
    if !early.is_empty() {
        if let (Err(e), _) = target.write_all(early).await {
            let addr = dialled(&up.targets[t].addr);
            tracing::debug!(upstream = %up.name, upstream_addr = %addr, "upstream write failed: {e}");
            log(Some(t), "upstream_error", [0, 0]);
            return;
        }
    }
    let _active = ctx.active();
    let counters = &ctx.tunnel_counters();
    let moved = [Cell::new(0), Cell::new(0)];
    // A tunnel the upstream failed before sending a byte counts against it, recorded before
    // the client sees the end so its next connection already avoids the target.
    let judge = |end: &End, from_upstream: u64| {
        let failed = match end {
            End::Reset(Side::Upstream, e) => Some(e),
            _ => None,
        };
        if let (Some(e), true) = (
            failed,
            retry::tunnel_counts_against_target(failed.is_some(), from_upstream),
        ) {
            let addr = dialled(&up.targets[t].addr);
            tracing::warn!(upstream = %up.name, upstream_addr = %addr, "upstream failed before its first byte: {e}");
            ctx.balancer(upstream).record_failure(t);
        }
    };
    let run = Tunnel {
        idle: idle_timeout,
        counters,
        moved: &moved,
        judge: &judge,
    };
    let end = match (client, target) {
        (Stream::Tcp(a), Stream::Tcp(b)) => pump(a, b, &run).await,
        (Stream::Tcp(a), Stream::Unix(b)) => pump(a, b, &run).await,
        (Stream::Unix(a), Stream::Tcp(b)) => pump(a, b, &run).await,
        (Stream::Unix(a), Stream::Unix(b)) => pump(a, b, &run).await,
        // TLS streams (a TLS target) cannot be spliced: the buffered relay.
        (client, target) => {
            let r = upgrade::run(client, target, idle_timeout, ctx.idle_clock()).await;
            moved[0].set(r.up);
            moved[1].set(r.down);
            let end = if r.idle {
                End::Idle
            } else if r.upstream_failed {
                End::Reset(Side::Upstream, io::ErrorKind::ConnectionReset.into())
            } else {
                End::Closed
            };
            judge(&end, r.down);
            end
        }
    };
    tracing::debug!(upstream = %up.name, upstream_addr = %dialled(&up.targets[t].addr), "tunnel ended: {end:?}");
    log(Some(t), end.name(), [moved[0].get(), moved[1].get()]);
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished cleanly (each direction saw its FIN and passed it on).
    Closed,
    /// No byte moved either way for `idle_timeout`.
    Idle,
    /// A side failed or reset; both were reset.
    Reset(Side, io::Error),
}

impl End {
    /// How the access log names it.
    pub fn name(&self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle_timeout",
            End::Reset(Side::Upstream, _) => "upstream_error",
            End::Reset(..) => "client_error",
        }
    }
}

/// What a tunnel's pump reports to: its idle limit, counters, bytes moved each way (upload,
/// download), and the judge of how it ended, called before either socket closes.
#[derive(Clone, Copy)]
struct Tunnel<'a> {
    idle: Option<Duration>,
    counters: &'a TunnelCounters,
    moved: &'a [Cell<u64>; 2],
    judge: &'a dyn Fn(&End, u64),
}

/// Moves bytes between `a` (the client) and `b` (the upstream) until both directions ended,
/// an error or reset happened, or the tunnel idled out.
async fn pump<A: Conn, B: Conn>(a: A, b: B, run: &Tunnel<'_>) -> End {
    let Tunnel {
        idle,
        counters,
        moved,
        judge,
    } = *run;
    let last = Cell::new(Instant::now());
    let (nonblocking, ended, gave_up) = (Cell::new(false), Cell::new(0), Cell::new(false));
    let shared = Shared {
        last: &last,
        counters,
        nonblocking: &nonblocking,
        fds: [a.as_raw_fd(), b.as_raw_fd()],
        ended: &ended,
        gave_up: &gave_up,
    };
    let (mut up, mut down) = (Way::default(), Way::default());
    let end = both_ways(
        one_way(&a, &b, &mut up, &shared, &moved[0], true),
        one_way(&b, &a, &mut down, &shared, &moved[1], false),
        idle,
        &last,
    )
    .await;
    judge(&end, moved[1].get());
    if matches!(end, End::Reset(..)) {
        abort_on_close(a.as_raw_fd());
        abort_on_close(b.as_raw_fd());
    }
    // After a clean end both directions ran to completion, so no op on either socket is in
    // flight unless a wait was given up: close(2) then, without the two ring entries per
    // socket the runtime's close costs. Otherwise the other direction's pending wait was just
    // dropped and still holds its socket.
    let clean = matches!(end, End::Closed);
    if clean && !gave_up.get() {
        crate::net::close::close_settled(a);
        crate::net::close::close_settled(b);
    } else {
        drop((a, b));
    }
    // After a clean end both pipes are empty (each direction drains its pipe before reading
    // again); after anything else one may still hold bytes, so it is closed instead.
    up.finish(clean);
    down.finish(clean);
    end
}

/// Runs both directions (upload = client to upstream, download = the reverse) and the idle
/// watchdog; ends when both directions are done, on the first error, or when idle.
async fn both_ways(
    up: impl Future<Output = Result<(), DirError>>,
    down: impl Future<Output = Result<(), DirError>>,
    idle: Option<Duration>,
    last: &Cell<Instant>,
) -> End {
    let mut up = pin!(up);
    let mut down = pin!(down);
    let mut watchdog = pin!(idle_watch(idle, last));
    let (mut up_done, mut down_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !up_done {
            if let Poll::Ready(r) = up.as_mut().poll(cx) {
                up_done = true;
                match r {
                    Ok(()) => {}
                    Err(DirError::Read(e)) => return Poll::Ready(End::Reset(Side::Downstream, e)),
                    Err(DirError::Write(e)) => return Poll::Ready(End::Reset(Side::Upstream, e)),
                }
            }
        }
        if !down_done {
            if let Poll::Ready(r) = down.as_mut().poll(cx) {
                down_done = true;
                match r {
                    Ok(()) => {}
                    Err(DirError::Read(e)) => return Poll::Ready(End::Reset(Side::Upstream, e)),
                    Err(DirError::Write(e)) => return Poll::Ready(End::Reset(Side::Downstream, e)),
                }
            }
        }
        if up_done && down_done {
            return Poll::Ready(End::Closed);
        }
        watchdog.as_mut().poll(cx).map(|()| End::Idle)
    })
    .await
}

/// SO_LINGER with a zero timeout: the coming close(2) sends RST instead of FIN, which is how a
/// reset on one side is passed on to the other. No effect on Unix sockets.
fn abort_on_close(fd: RawFd) {
    let _ = socket(fd).set_linger(Some(Duration::ZERO));
}
