//! Layer-4 tunnels: each connection accepted on a `protocol: tcp` listener is joined to one
//! upstream target and bytes flow both ways until both sides have finished.
//!
//! Payload moves with splice(2) through one pipe per direction, so it never enters user space
//! (io_uring's `IORING_OP_SPLICE`, or nonblocking splice on the epoll driver). Half-close is
//! passed on (a FIN becomes shutdown(SHUT_WR) on the other side while the other direction keeps
//! flowing); a reset or error on either side resets both (SO_LINGER 0), so the peer learns of
//! the failure instead of seeing a clean end.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Split,
    Splitable,
};
use monoio::net::unix::new_pipe;
use monoio::net::{Pipe, TcpStream, UnixStream};

use crate::balance::{TargetShared, Tried};
use crate::config::{ListenerKind, TargetAddr, Upstream};
use crate::proxy_protocol;
use crate::stream::Stream;
use crate::worker::WorkerCtx;

/// Bytes asked of one splice: the default pipe capacity (16 pages), so one splice in fills the
/// pipe and the bytes leave in one or two splices out.
const SPLICE_CHUNK: u32 = 64 * 1024;
/// Buffer of the copying fallback (used when no pipe can be had, e.g. out of descriptors).
const COPY_CHUNK: usize = 64 * 1024;

/// Tunnel counters of one worker, written only by that worker (relaxed adds on its own cache
/// line) and summed by `Server` for tests and metrics.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TunnelCounters {
    /// Payload bytes moved with splice(2), both directions.
    pub spliced_bytes: AtomicU64,
    /// Payload bytes moved through a user-space buffer (the fallback), both directions.
    pub copied_bytes: AtomicU64,
    /// Tunnels that reached a target.
    pub tunnels: AtomicU64,
}

/// Holds one connection slot and one in-flight mark on a target for the tunnel's life (tcp
/// counts open connections, so least_conn and max_connections see tunnels).
struct Slot(Arc<TargetShared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a tunnel as in-flight work (a drain waits for it up to `shutdown_timeout`), also
/// when the worker's shutdown drops the task.
struct Active<'a>(&'a Cell<usize>);

impl<'a> Active<'a> {
    fn new(c: &'a Cell<usize>) -> Self {
        c.set(c.get() + 1);
        Active(c)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Serves one connection of a tcp listener until both directions are done.
pub async fn serve(
    ctx: &Rc<WorkerCtx>,
    listener: usize,
    mut client: Stream,
    peer: Option<SocketAddr>,
) {
    let l = &ctx.config.listeners[listener];
    let ListenerKind::Tcp {
        upstream,
        idle_timeout,
    } = l.kind
    else {
        debug_assert!(false, "l4::serve on an http listener");
        return;
    };
    let mut source = peer;
    let mut dest = match &client {
        Stream::Tcp(s) => s.local_addr().ok(),
        Stream::Unix(_) => None,
    };
    let mut early = Vec::new();
    if l.proxy_protocol {
        match proxy_protocol::accept(&ctx.config.trusted_proxies, &mut client, peer, &mut early)
            .await
        {
            Some(Some((s, d))) => (source, dest) = (Some(s), Some(d)),
            Some(None) => {}
            None => return,
        }
    }
    let up = &ctx.config.upstreams[upstream];
    let Some((t, mut target, _slot)) = connect(ctx, upstream, up).await else {
        tracing::debug!(upstream = %up.name, "no target reachable; closing the client");
        return;
    };
    ctx.shared.tunnels[ctx.id]
        .tunnels
        .fetch_add(1, Ordering::Relaxed);
    // The PROXY header and whatever the client sent after its own header go out first.
    let mut first = Vec::new();
    proxy_protocol::write_header(up.transport.proxy_protocol, source, dest, &mut first);
    first.extend_from_slice(&early);
    if !first.is_empty() {
        if let (Err(e), _) = target.write_all(first).await {
            tracing::debug!(upstream = %up.name, target = t, "upstream write failed: {e}");
            return;
        }
    }
    let _active = Active::new(&ctx.active_requests);
    let counters = &ctx.shared.tunnels[ctx.id];
    let end = match (client, target) {
        (Stream::Tcp(a), Stream::Tcp(b)) => pump(a, b, idle_timeout, counters).await,
        (Stream::Tcp(a), Stream::Unix(b)) => pump(a, b, idle_timeout, counters).await,
        (Stream::Unix(a), Stream::Tcp(b)) => pump(a, b, idle_timeout, counters).await,
        (Stream::Unix(a), Stream::Unix(b)) => pump(a, b, idle_timeout, counters).await,
    };
    tracing::debug!(upstream = %up.name, target = t, "tunnel ended: {end:?}");
}

/// Picks and dials a target, failing over per `retries` / `try_duration` / `try_interval`.
async fn connect(ctx: &WorkerCtx, u: usize, up: &Upstream) -> Option<(usize, Stream, Slot)> {
    let bal = &ctx.balancers[u];
    let started = Instant::now();
    let mut tried = Tried::default();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let can_try_again = match up.lb.try_duration {
            Some(d) => started.elapsed() < d,
            None => attempts <= up.lb.retries,
        };
        let Some(t) = bal.select(tried, |_| false) else {
            if !can_try_again {
                return None;
            }
            tried = Tried::default();
            monoio::time::sleep(up.lb.try_interval).await;
            continue;
        };
        if !bal.try_reserve_conn(t) {
            // Filled up by another worker since select looked.
            tried.insert(t);
            continue;
        }
        let shared = bal.shared(t).clone();
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(shared);
        match dial(&up.targets[t].addr, up.transport.dial_timeout).await {
            Ok(s) => return Some((t, s, slot)),
            Err(e) => {
                tracing::warn!(upstream = %up.name, target = t, "tcp dial failed: {e}");
                drop(slot);
                tried.insert(t);
                if !can_try_again {
                    return None;
                }
                if bal.select(tried, |_| false).is_none() {
                    tried = Tried::default();
                    monoio::time::sleep(up.lb.try_interval).await;
                }
            }
        }
    }
}

async fn dial(addr: &TargetAddr, timeout: Option<Duration>) -> io::Result<Stream> {
    let connect = async {
        match addr {
            TargetAddr::Tcp { addr, .. } => {
                let s = TcpStream::connect_addr(*addr).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            TargetAddr::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
        }
    };
    match timeout {
        Some(d) => monoio::time::timeout(d, connect)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => connect.await,
    }
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

/// Which connection an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// Moves bytes between `a` (the client) and `b` (the upstream) until both directions ended,
/// an error or reset happened, or the tunnel idled out.
async fn pump<A, B>(a: A, b: B, idle: Option<Duration>, counters: &TunnelCounters) -> End
where
    A: Split + AsyncWriteRent + AsRawFd,
    B: Split + AsyncWriteRent + AsRawFd,
    OwnedReadHalf<A>: AsyncReadRent + SpliceSource,
    OwnedWriteHalf<A>: AsyncWriteRent + SpliceDestination,
    OwnedReadHalf<B>: AsyncReadRent + SpliceSource,
    OwnedWriteHalf<B>: AsyncWriteRent + SpliceDestination,
{
    let (a_fd, b_fd) = (a.as_raw_fd(), b.as_raw_fd());
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let last = Cell::new(Instant::now());
    let pipes = new_pipe().and_then(|p| Ok((p, new_pipe()?)));
    let end = match pipes {
        Ok((up_pipe, down_pipe)) => {
            let up = splice_one_way(&mut ar, &mut bw, up_pipe, &last, counters);
            let down = splice_one_way(&mut br, &mut aw, down_pipe, &last, counters);
            both_ways(up, down, idle, &last).await
        }
        Err(e) => {
            tracing::debug!("no pipe for splice ({e}); copying through a buffer");
            let up = copy_one_way(&mut ar, &mut bw, &last, counters);
            let down = copy_one_way(&mut br, &mut aw, &last, counters);
            both_ways(up, down, idle, &last).await
        }
    };
    // Reuniting skips the write halves' shutdown-on-drop: a reset must not be preceded by a FIN.
    let a = ar.reunite(aw).ok();
    let b = br.reunite(bw).ok();
    debug_assert!(a.is_some() && b.is_some(), "halves of one stream reunite");
    if matches!(end, End::Reset(..)) {
        abort_on_close(a_fd);
        abort_on_close(b_fd);
    }
    drop((a, b));
    end
}

/// A direction's failure: which end of it failed.
enum DirError {
    Read(io::Error),
    Write(io::Error),
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
                    Err(DirError::Read(e)) => return Poll::Ready(End::Reset(Side::Client, e)),
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
                    Err(DirError::Write(e)) => return Poll::Ready(End::Reset(Side::Client, e)),
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

/// Completes once no byte has moved for `idle` (never when `None`).
async fn idle_watch(idle: Option<Duration>, last: &Cell<Instant>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let due = last.get() + idle;
        if Instant::now() >= due {
            return;
        }
        monoio::time::sleep_until(due.into()).await;
    }
}

/// One direction with splice: socket -> pipe -> socket, until EOF (passed on as SHUT_WR).
async fn splice_one_way<R, W>(
    r: &mut R,
    w: &mut W,
    (mut pipe_r, mut pipe_w): (Pipe, Pipe),
    last: &Cell<Instant>,
    counters: &TunnelCounters,
) -> Result<(), DirError>
where
    R: SpliceSource,
    W: SpliceDestination + AsyncWriteRent,
{
    loop {
        let n = r
            .splice_to_pipe(&mut pipe_w, SPLICE_CHUNK)
            .await
            .map_err(DirError::Read)?;
        if n == 0 {
            return w.shutdown().await.map_err(DirError::Write);
        }
        last.set(Instant::now());
        let mut left = n;
        while left > 0 {
            let m = w
                .splice_from_pipe(&mut pipe_r, left)
                .await
                .map_err(DirError::Write)?;
            if m == 0 {
                return Err(DirError::Write(io::ErrorKind::WriteZero.into()));
            }
            debug_assert!(m <= left);
            left -= m;
        }
        last.set(Instant::now());
        counters
            .spliced_bytes
            .fetch_add(u64::from(n), Ordering::Relaxed);
    }
}

/// One direction through a user-space buffer (when no pipe could be created).
async fn copy_one_way<R, W>(
    r: &mut R,
    w: &mut W,
    last: &Cell<Instant>,
    counters: &TunnelCounters,
) -> Result<(), DirError>
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK);
    loop {
        buf.clear();
        let (res, b) = r.read(buf.slice_mut(0..COPY_CHUNK)).await;
        buf = b.into_inner();
        let n = res.map_err(DirError::Read)?;
        if n == 0 {
            return w.shutdown().await.map_err(DirError::Write);
        }
        last.set(Instant::now());
        let (res, b) = w.write_all(buf).await;
        buf = b;
        res.map_err(DirError::Write)?;
        last.set(Instant::now());
        counters.copied_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// SO_LINGER with a zero timeout: the coming close(2) sends RST instead of FIN, which is how a
/// reset on one side is passed on to the other. No effect on Unix sockets.
fn abort_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live stack value; `fd` is
    // still open (its stream is dropped only after this call) and owned by this tunnel.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
