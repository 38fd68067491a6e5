//! Layer-4 tunnels: each connection accepted on a `protocol: tcp` listener is joined to one
//! upstream target and bytes flow both ways until both sides have finished.
//!
//! Payload moves with splice(2) through one pipe per direction (`net::splice`), so it never
//! enters user space; the runtime supplies readiness (an io_uring poll, or epoll). Half-close is
//! passed on (a FIN becomes shutdown(SHUT_WR) on the other side while the other direction keeps
//! flowing); a reset or error on either side resets both (SO_LINGER 0), so the peer learns of
//! the failure instead of seeing a clean end.

pub mod upgrade;
use std::cell::Cell;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::net::{TcpStream, UnixStream};

use crate::config::ListenerKind;
use crate::error::Side;
use crate::l4::upgrade::idle_watch;
use crate::net::proxy_protocol;
use crate::net::splice::Pipe;
use crate::net::stream::Stream;
use crate::observe::metrics::TunnelCounters;
use crate::upstream::connect::{connect, Attempts, Connected, Link, Want};
use crate::upstream::pool::UpConn;
use crate::upstream::retry;
use crate::upstream::target::dialled;
use crate::worker::ctx::WorkerCtx;

/// Buffer of the copying fallback (used when no pipe can be had, e.g. out of descriptors).
const COPY_CHUNK: usize = 64 * 1024;

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
    let mut source = peer;
    let mut dest = match &client {
        Stream::Tcp(s) => s.local_addr().ok(),
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
    let up = &ctx.config().upstreams[upstream];
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
        proxy_header: up.transport.proxy_protocol != crate::config::ProxyProtocol::Off,
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
            let r = upgrade::run(client, target, idle_timeout).await;
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
    let addr = dialled(&up.targets[t].addr);
    tracing::debug!(upstream = %up.name, upstream_addr = %addr, "tunnel ended: {end:?}");
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

/// A connection the tunnel drives: readiness from the runtime (an io_uring poll, or epoll), the
/// data moved by nonblocking syscalls on the raw descriptor.
trait Conn: AsRawFd {
    async fn readable(&self) -> io::Result<()>;
    async fn writable(&self) -> io::Result<()>;
}

// `relaxed: false`: on the epoll driver readiness is re-checked with poll(2), because our own
// syscalls (not the runtime's) consumed the last readiness.
impl Conn for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        TcpStream::readable(self, false).await
    }
    async fn writable(&self) -> io::Result<()> {
        TcpStream::writable(self, false).await
    }
}

impl Conn for UnixStream {
    async fn readable(&self) -> io::Result<()> {
        UnixStream::readable(self, false).await
    }
    async fn writable(&self) -> io::Result<()> {
        UnixStream::writable(self, false).await
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
    for (fd, side) in [
        (a.as_raw_fd(), Side::Downstream),
        (b.as_raw_fd(), Side::Upstream),
    ] {
        // io_uring's sockets are blocking; our syscalls must not be.
        if let Err(e) = socket(fd).set_nonblocking(true) {
            return End::Reset(side, e);
        }
    }
    let pipes = Pipe::take().and_then(|p| Ok((p, Pipe::take()?)));
    let (mut up, mut down) = match pipes {
        Ok((p, q)) => (Carrier::Pipe(p), Carrier::Pipe(q)),
        Err(e) => {
            tracing::debug!("no pipe for splice ({e}); copying through a buffer");
            let buffer = || Carrier::Buffer(vec![0; COPY_CHUNK]);
            (buffer(), buffer())
        }
    };
    let last = Cell::new(Instant::now());
    let end = both_ways(
        one_way(&a, &b, &mut up, &last, counters, &moved[0]),
        one_way(&b, &a, &mut down, &last, counters, &moved[1]),
        idle,
        &last,
    )
    .await;
    judge(&end, moved[1].get());
    if matches!(end, End::Reset(..)) {
        abort_on_close(a.as_raw_fd());
        abort_on_close(b.as_raw_fd());
    }
    drop((a, b));
    // After a clean end both pipes are empty (each direction drains its pipe before reading
    // again); after anything else one may still hold bytes, so it is closed instead.
    if matches!(end, End::Closed) {
        for carrier in [up, down] {
            if let Carrier::Pipe(p) = carrier {
                p.give_back();
            }
        }
    }
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

/// How one direction's payload gets from one socket to the other.
enum Carrier {
    /// splice(2) in and out of a pipe: the bytes stay in the kernel.
    Pipe(Pipe),
    /// read(2) and write(2) through this buffer (when no pipe could be had).
    Buffer(Vec<u8>),
}

impl Carrier {
    /// Takes up to a chunk from `src` (bound for `dst`); `Ok(0)` is EOF.
    fn fill(&mut self, src: RawFd, dst: RawFd) -> io::Result<usize> {
        match self {
            Carrier::Pipe(p) => p.fill(src, dst, usize::MAX),
            Carrier::Buffer(buf) => (&*socket(src)).read(buf),
        }
    }

    /// Passes on up to `len` of the bytes taken, starting `done` bytes in.
    fn drain(&mut self, dst: RawFd, done: usize, len: usize) -> io::Result<usize> {
        match self {
            Carrier::Pipe(p) => p.drain(dst, len),
            Carrier::Buffer(buf) => (&*socket(dst)).write(&buf[done..done + len]),
        }
    }
}

/// One direction, until EOF (passed on as SHUT_WR) or an error.
async fn one_way(
    src: &impl Conn,
    dst: &impl Conn,
    carrier: &mut Carrier,
    last: &Cell<Instant>,
    counters: &TunnelCounters,
    moved: &Cell<u64>,
) -> Result<(), DirError> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        let n = loop {
            match carrier.fill(src_fd, dst_fd) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    src.readable().await.map_err(DirError::Read)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DirError::Read(e)),
            }
        };
        if n == 0 {
            return socket(dst_fd)
                .shutdown(std::net::Shutdown::Write)
                .map_err(DirError::Write);
        }
        last.set(Instant::now());
        let mut done = 0;
        while done < n {
            match carrier.drain(dst_fd, done, n - done) {
                Ok(0) => return Err(DirError::Write(io::ErrorKind::WriteZero.into())),
                Ok(m) => done += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.writable().await.map_err(DirError::Write)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DirError::Write(e)),
            }
        }
        debug_assert_eq!(done, n);
        last.set(Instant::now());
        let counter = match carrier {
            Carrier::Pipe(_) => &counters.spliced_bytes,
            Carrier::Buffer(_) => &counters.copied_bytes,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        moved.set(moved.get() + n as u64);
    }
}

/// The socket behind `fd`, borrowed: for options, shutdown and plain reads and writes.
fn socket(fd: RawFd) -> ManuallyDrop<socket2::Socket> {
    // SAFETY: `fd` is an open socket owned by a stream of the calling tunnel that outlives the
    // returned value; ManuallyDrop keeps this borrow from closing it.
    ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(fd) })
}

/// SO_LINGER with a zero timeout: the coming close(2) sends RST instead of FIN, which is how a
/// reset on one side is passed on to the other. No effect on Unix sockets.
fn abort_on_close(fd: RawFd) {
    let _ = socket(fd).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdUnix;

    /// Drives `one_way` from `near_a` to `near_b` with `carrier` while threads write `data`
    /// into `far_a` (then FIN) and read `far_b` to its end.
    fn carry(carrier: Carrier, data: Vec<u8>) -> (Vec<u8>, TunnelCounters) {
        let (near_a, mut far_a) = StdUnix::pair().unwrap();
        let (near_b, mut far_b) = StdUnix::pair().unwrap();
        let writer = std::thread::spawn(move || {
            far_a.write_all(&data).unwrap();
            far_a.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            far_b.read_to_end(&mut got).unwrap();
            got
        });
        let counters = TunnelCounters::default();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = UnixStream::from_std(near_a).unwrap();
            let b = UnixStream::from_std(near_b).unwrap();
            for fd in [a.as_raw_fd(), b.as_raw_fd()] {
                socket(fd).set_nonblocking(true).unwrap();
            }
            let mut carrier = carrier;
            let last = Cell::new(Instant::now());
            let moved = Cell::new(0);
            let r = one_way(&a, &b, &mut carrier, &last, &counters, &moved).await;
            assert_eq!(moved.get(), 3_000_000);
            assert!(r.is_ok(), "one_way failed");
        });
        writer.join().unwrap();
        (reader.join().unwrap(), counters)
    }

    fn data() -> Vec<u8> {
        (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn buffered_fallback_moves_every_byte_and_passes_the_fin_on() {
        let (got, counters) = carry(Carrier::Buffer(vec![0; 1000]), data());
        assert!(got == data(), "bytes differ");
        assert_eq!(counters.copied_bytes.load(Ordering::Relaxed), 3_000_000);
        assert_eq!(counters.spliced_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn splice_moves_every_byte_between_unix_sockets_and_passes_the_fin_on() {
        let (got, counters) = carry(Carrier::Pipe(Pipe::take().unwrap()), data());
        assert!(got == data(), "bytes differ");
        assert_eq!(counters.spliced_bytes.load(Ordering::Relaxed), 3_000_000);
    }
}
