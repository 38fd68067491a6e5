//! One worker per core: a pinned thread running its own monoio runtime, its own listeners,
//! balancer replicas and connection pools. Nothing here is shared but `Shared`'s atomics.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, UnixListener};

use crate::balance::Balancer;
use crate::closer::Closer;
use crate::config::{Config, Driver, ListenerKind};
use crate::listener::BoundSocket;
use crate::pool::Pool;
use crate::server::Shared;
use crate::stream::{SplicePipe, Stream};

/// Submission queue entries per ring: enough for thousands of connections' in-flight ops
/// without `EBUSY`; the completion queue is twice this.
const RING_ENTRIES: u32 = 4096;
/// How often a worker looks for idle connections another worker needs the slots of (capped
/// targets only): well under the default try_interval, so a waiting request loses little.
const HANDOVER_POLL: Duration = Duration::from_millis(20);
/// How often a draining worker checks whether its in-flight requests are done.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Back-off after accept fails for lack of descriptors, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Empty pipes a worker keeps for splicing bodies: enough for its concurrent large transfers
/// without holding many descriptors.
const MAX_CACHED_PIPES: usize = 16;
/// After the drain, how long connection tasks get to notice the close and drop their sockets.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Everything one worker owns.
pub struct WorkerCtx {
    pub id: usize,
    pub config: Arc<Config>,
    /// This worker's access log buffer, when access logging is on.
    pub access: Option<crate::access::WorkerLog>,
    /// One replica per upstream, indexed like `config.upstreams`.
    pub balancers: Vec<Balancer>,
    pub pool: Pool,
    pub shared: Arc<Shared>,
    /// Requests being handled now (a drain waits for these).
    pub active_requests: Cell<usize>,
    /// Open downstream connections (for `limits.max_connections`).
    pub open_conns: Cell<usize>,
    /// Empty splice pipes ready for reuse.
    pipes: RefCell<Vec<SplicePipe>>,
    /// Fired when the server drains: accept loops stop (epoll; io_uring accepts end by
    /// shutdown(2) of their socket, see `listener::stop_accepting`).
    stop_accepting: Closer,
    uring: Cell<bool>,
    /// Fired after the drain: every connection task ends, closing its sockets.
    close_all: Closer,
}

impl WorkerCtx {
    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// A pipe for splicing, or `None` when none can be made (the caller copies instead).
    pub fn take_pipe(&self) -> Option<SplicePipe> {
        if let Some(p) = self.pipes.borrow_mut().pop() {
            return Some(p);
        }
        SplicePipe::new()
            .inspect_err(|e| tracing::debug!(worker = self.id, "no splice pipe: {e}"))
            .ok()
    }

    /// Returns a pipe that is known to be empty.
    pub fn return_pipe(&self, pipe: SplicePipe) {
        let mut pipes = self.pipes.borrow_mut();
        if pipes.len() < MAX_CACHED_PIPES {
            pipes.push(pipe);
        }
    }

    pub fn count_spliced(&self, upward: bool, n: u64) {
        let m = self.metrics();
        let c = if upward {
            &m.spliced_up
        } else {
            &m.spliced_down
        };
        c.add(n);
    }

    /// This worker's counters (only this worker writes them).
    #[inline]
    pub fn metrics(&self) -> &crate::metrics::WorkerMetrics {
        &self.shared.metrics[self.id]
    }
}

/// Which event loop a worker got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    /// io_uring with COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN: fewer interrupts and
    /// task-work runs only when the worker asks for completions.
    IoUringTuned,
    Epoll,
}

impl DriverKind {
    pub fn name(&self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::IoUringTuned => "io_uring (coop_taskrun, single_issuer, defer_taskrun)",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Whether this kernel (and seccomp profile) lets us create an io_uring at all.
pub fn io_uring_available() -> bool {
    io_uring::IoUring::new(2).is_ok()
}

// Each argument is one thing the server hands a worker; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
/// Runs a worker to completion on the current thread: returns once the server is draining and
/// this worker's in-flight requests finished or `shutdown_timeout` passed.
pub fn run(
    id: usize,
    driver: Driver,
    sockets: Vec<BoundSocket>,
    wake: std::os::unix::net::UnixStream,
    access: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    config: Arc<Config>,
    shared: Arc<Shared>,
    started: impl FnOnce(io::Result<DriverKind>),
) {
    let ctx = move || {
        let balancers = config
            .upstreams
            .iter()
            .zip(&shared.targets)
            .map(|(u, s)| Balancer::new(u, s, id, seed_for(id)))
            .collect();
        let pool = Pool::new(config.upstreams.iter().map(|u| u.targets.len()));
        let access = access.map(|tx| crate::access::WorkerLog::new(tx, config.log.format));
        Rc::new(WorkerCtx {
            id,
            access,
            config,
            balancers,
            pool,
            shared,
            active_requests: Cell::new(0),
            open_conns: Cell::new(0),
            pipes: RefCell::new(Vec::new()),
            stop_accepting: Closer::default(),
            uring: Cell::new(false),
            close_all: Closer::default(),
        })
    };
    if driver != Driver::Epoll {
        match build_uring() {
            Ok((mut rt, kind)) => {
                started(Ok(kind));
                let ctx = ctx();
                ctx.uring.set(true);
                rt.block_on(worker_main(ctx, sockets, wake));
                return;
            }
            Err(e) if driver == Driver::IoUring => {
                started(Err(e));
                return;
            }
            Err(_) => {}
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            started(Ok(DriverKind::Epoll));
            rt.block_on(worker_main(ctx(), sockets, wake));
        }
        Err(e) => started(Err(e)),
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

fn build_uring() -> io::Result<(UringRuntime, DriverKind)> {
    let mut tuned = io_uring::IoUring::builder();
    tuned
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(tuned)
        .enable_timer()
        .build();
    match rt {
        Ok(rt) => Ok((rt, DriverKind::IoUringTuned)),
        // Older kernels refuse the flags; a plain ring still beats epoll.
        Err(_) => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
            .map(|rt| (rt, DriverKind::IoUring)),
    }
}

fn seed_for(worker: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

async fn worker_main(
    ctx: Rc<WorkerCtx>,
    sockets: Vec<BoundSocket>,
    wake: std::os::unix::net::UnixStream,
) {
    let mut accepts = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        match socket {
            BoundSocket::Tcp(l) => match TcpListener::from_std(l) {
                Ok(l) => accepts.push(monoio::spawn(accept_loop(ctx.clone(), index, l))),
                Err(e) => tracing::error!(worker = ctx.id, "listener registration failed: {e}"),
            },
            BoundSocket::Unix(l) => match UnixListener::from_std(l) {
                Ok(l) => accepts.push(monoio::spawn(accept_loop(ctx.clone(), index, l))),
                Err(e) => tracing::error!(worker = ctx.id, "listener registration failed: {e}"),
            },
        }
    }
    if ctx.access.is_some() {
        monoio::spawn(flush_access_log(ctx.clone()));
    }
    let capped = ctx
        .balancers
        .iter()
        .any(|b| (0..b.len()).any(|t| b.is_capped(t)));
    if capped {
        monoio::spawn(hand_over_idle_slots(ctx.clone()));
    }
    // The control thread closes its end of `wake` when the server drains: a readable socket
    // wakes io_uring and epoll alike, where shutdown(2) of a Unix listener does not wake epoll.
    match monoio::net::UnixStream::from_std(wake) {
        Ok(mut wake) => {
            use monoio::io::AsyncReadRent;
            let _ = wake.read(Vec::with_capacity(1)).await;
        }
        Err(e) => {
            tracing::error!(worker = ctx.id, "cannot watch for shutdown: {e}");
            std::future::pending::<()>().await;
        }
    }
    ctx.stop_accepting.close();
    for a in accepts {
        a.await;
    }
    let deadline = Instant::now() + ctx.config.shutdown_timeout;
    while ctx.active_requests.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL).await;
    }
    if ctx.active_requests.get() > 0 {
        tracing::warn!(
            worker = ctx.id,
            in_flight = ctx.active_requests.get(),
            "shutdown_timeout passed with requests in flight; closing them"
        );
    }
    // End every connection task so their sockets close now, not whenever the runtime goes.
    ctx.close_all.close();
    let deadline = Instant::now() + CLOSE_GRACE;
    while ctx.open_conns.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL).await;
    }
    if let Some(log) = &ctx.access {
        log.flush();
    }
}

/// Hands the access log buffer to the writer thread now and then, so lines from a quiet
/// worker do not wait for the buffer to fill.
async fn flush_access_log(ctx: Rc<WorkerCtx>) {
    while !ctx.close_all.is_closed() {
        monoio::select! {
            _ = monoio::time::sleep(crate::access::FLUSH_INTERVAL) => {},
            _ = ctx.close_all.wait() => {},
        }
        if let Some(log) = &ctx.access {
            log.flush();
        }
    }
}

/// With `max_connections` caps, an idle pooled connection in one worker would starve another
/// worker of that target's slots until `idle_timeout`: this task hands such slots over.
async fn hand_over_idle_slots(ctx: Rc<WorkerCtx>) {
    while !ctx.draining() {
        monoio::time::sleep(HANDOVER_POLL).await;
        for (u, b) in ctx.balancers.iter().enumerate() {
            for t in (0..b.len()).filter(|&t| b.is_capped(t)) {
                ctx.pool.hand_over(u, t, b.shared(t));
            }
        }
    }
}

/// Admits a new downstream connection unless the worker is at `limits.max_connections`.
fn admit(ctx: &WorkerCtx) -> bool {
    !matches!(ctx.config.limits.max_connections, Some(max) if ctx.open_conns.get() >= max)
}

/// A listening socket of either family, accepted from by one loop.
trait Accept {
    async fn accept_conn(&self) -> io::Result<(Stream, Option<std::net::SocketAddr>)>;
}

impl Accept for TcpListener {
    async fn accept_conn(&self) -> io::Result<(Stream, Option<std::net::SocketAddr>)> {
        let (s, peer) = self.accept().await?;
        Ok((Stream::Tcp(s), Some(peer)))
    }
}

impl Accept for UnixListener {
    async fn accept_conn(&self) -> io::Result<(Stream, Option<std::net::SocketAddr>)> {
        let (s, _) = self.accept().await?;
        Ok((Stream::Unix(s), None))
    }
}

async fn accept_loop(ctx: Rc<WorkerCtx>, index: usize, listener: impl Accept) {
    loop {
        // On io_uring an accept must complete, never be dropped in flight (see
        // `listener::stop_accepting`); epoll has nothing in the kernel to leave behind.
        let accepted = if ctx.uring.get() {
            listener.accept_conn().await
        } else {
            monoio::select! {
                r = listener.accept_conn() => r,
                _ = ctx.stop_accepting.wait() => break,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                // Still served while draining: shutdown_delay keeps accepting on purpose.
                ctx.metrics().accepted.inc();
                if admit(&ctx) {
                    spawn_conn(&ctx, index, stream, peer);
                }
            }
            Err(e) => {
                if ctx.draining() {
                    break;
                }
                accept_failed(&ctx, e).await;
            }
        }
    }
}

async fn accept_failed(ctx: &WorkerCtx, e: io::Error) {
    tracing::warn!(worker = ctx.id, "accept failed: {e}");
    monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
}

fn spawn_conn(
    ctx: &Rc<WorkerCtx>,
    listener: usize,
    stream: Stream,
    peer: Option<std::net::SocketAddr>,
) {
    let ctx = ctx.clone();
    ctx.open_conns.set(ctx.open_conns.get() + 1);
    monoio::spawn(async move {
        let serve = async {
            // The handshake runs here, in the connection's task, so the accept loop never waits.
            let Some(stream) = terminate_tls(&ctx, listener, stream, peer).await else {
                return;
            };
            match &ctx.config.listeners[listener].kind {
                ListenerKind::Http { .. } => {
                    crate::proxy::serve(&ctx, listener, stream, peer).await
                }
                ListenerKind::Tcp { .. } => crate::l4::serve(&ctx, listener, stream, peer).await,
            }
        };
        monoio::select! {
            _ = CatchPanic(Box::pin(serve)) => {},
            _ = ctx.close_all.wait() => {},
        }
        ctx.open_conns.set(ctx.open_conns.get() - 1);
    });
}

/// Ends one connection, not the worker, when its task panics. monoio-rustls keeps its I/O
/// buffers in `Option`s that are `expect`ed present; a TLS stream whose halves meet a protocol
/// error while the other half is mid-write (an upgraded tunnel) panics inside the library.
/// Requests in flight on that connection stay counted until shutdown_timeout.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future<Output = ()>> std::future::Future for CatchPanic<F> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                tracing::error!("a connection task panicked; that connection is closed");
                std::task::Poll::Ready(())
            }
        }
    }
}

/// Runs the TLS handshake when the listener terminates TLS (plain streams pass through).
/// A failed or timed-out handshake is counted and logged at debug: it concerns that client only.
async fn terminate_tls(
    ctx: &WorkerCtx,
    listener: usize,
    stream: Stream,
    peer: Option<std::net::SocketAddr>,
) -> Option<Stream> {
    let Some(state) = &ctx.shared.listener_tls[listener] else {
        return Some(stream);
    };
    // Validation allows TLS on TCP listeners only.
    let tcp = match stream {
        Stream::Tcp(tcp) => tcp,
        other => return Some(other),
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    // Loaded once per connection: a reload applies to connections accepted after it.
    let acceptor = monoio_rustls::TlsAcceptor::from(state.current.load_full());
    let handshake = acceptor.accept(tcp);
    let result = match state.settings.handshake_timeout {
        Some(limit) => monoio::time::timeout(limit, handshake)
            .await
            .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut).into())),
        None => handshake.await,
    };
    match result {
        Ok(tls) => Some(Stream::TlsServer(Box::new(tls), fd)),
        Err(e) => {
            ctx.shared
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            let reason = crate::tls::failure_reason(&e.into());
            tracing::debug!(worker = ctx.id, ?peer, "TLS handshake failed: {reason}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_connection_task_ends_alone() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let survived = rt.block_on(async {
            let boom = monoio::spawn(CatchPanic(Box::pin(async {
                panic!("a library bug in a connection task");
            })));
            boom.await;
            true
        });
        assert!(survived);
    }
}
