//! One worker per core: a pinned thread running its own monoio runtime, its own listeners,
//! balancer replicas and connection pools. Nothing here is shared but `Shared`'s atomics.

pub mod buffers;
pub mod catch;
pub mod closer;
pub mod ctx;
pub mod idle;
pub mod trim;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, UnixListener};

use crate::config::{Driver, ListenerKind};
use crate::control::generation::Generation;
use crate::control::state::Shared;
use crate::net::listener::{self, BoundSocket};
use crate::net::stream::Stream;
use crate::worker::catch::CatchPanic;
use crate::worker::closer::Closer;
use crate::worker::ctx::{AcceptLoop, WorkerCore, WorkerCtx};

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
/// After the drain, how long connection tasks get to notice the close and drop their sockets.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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

/// A message from the control thread; the wake socket gets one byte after each.
pub enum WorkerMsg {
    /// Switch to a new generation; bind accept loops for added sockets, stop removed ones.
    Reload {
        gen: Arc<Generation>,
        add: Vec<(usize, BoundSocket)>,
        remove: Vec<usize>,
        /// Told once this worker serves new connections with `gen`.
        done: mpsc::Sender<usize>,
    },
}

/// What the server hands a worker when it starts it.
pub struct WorkerInit {
    pub id: usize,
    pub driver: Driver,
    /// `(socket id, socket)` for every listener.
    pub sockets: Vec<(usize, BoundSocket)>,
    /// Readable when a message waits in `inbox`; closed when the server drains.
    pub wake: std::os::unix::net::UnixStream,
    pub inbox: mpsc::Receiver<WorkerMsg>,
    pub access: Option<mpsc::Sender<Vec<u8>>>,
    pub gen: Arc<Generation>,
    pub shared: Arc<Shared>,
}

/// Runs a worker to completion on the current thread: returns once the server is draining and
/// this worker's in-flight requests finished or `shutdown_timeout` passed.
pub fn run(init: WorkerInit, started: impl FnOnce(io::Result<DriverKind>)) {
    let WorkerInit {
        id,
        driver,
        sockets,
        wake,
        inbox,
        access,
        gen,
        shared,
    } = init;
    let core = move || {
        let access = access.map(|tx| {
            crate::observe::access::WorkerLog::new(tx, gen.config.log.access_format.clone())
        });
        let core = Rc::new(WorkerCore {
            id,
            shared,
            access,
            active_requests: Cell::new(0),
            open_conns: Cell::new(0),
            stop_accepting: Closer::default(),
            uring: Cell::new(false),
            close_all: Closer::default(),
            current: RefCell::new(None),
            accepts: RefCell::new(Vec::new()),
            handing_over: Cell::new(false),
            idle: Rc::default(),
            buffers: Default::default(),
        });
        let ctx = WorkerCtx::new(&core, gen, None);
        *core.current.borrow_mut() = Some(Rc::new(ctx));
        core
    };
    if driver != Driver::Epoll {
        match build_uring() {
            Ok((mut rt, kind)) => {
                started(Ok(kind));
                let core = core();
                core.uring.set(true);
                rt.block_on(worker_main(core, sockets, wake, inbox));
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
            rt.block_on(worker_main(core(), sockets, wake, inbox));
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

async fn worker_main(
    core: Rc<WorkerCore>,
    sockets: Vec<(usize, BoundSocket)>,
    wake: std::os::unix::net::UnixStream,
    inbox: mpsc::Receiver<WorkerMsg>,
) {
    for (socket, bound) in sockets {
        start_accepting(&core, socket, bound);
    }
    if core.access.is_some() {
        monoio::spawn(flush_access_log(core.clone()));
    }
    start_handing_over(&core);
    monoio::spawn(sweep_idle(core.clone()));
    monoio::spawn(trim::run(core.clone()));
    // The control thread writes a byte after each message and closes its end when the server
    // drains: a readable socket wakes io_uring and epoll alike, where shutdown(2) of a Unix
    // listener does not wake epoll.
    match monoio::net::UnixStream::from_std(wake) {
        Ok(mut wake) => {
            use monoio::io::AsyncReadRent;
            let mut buf = Vec::with_capacity(64);
            loop {
                let (res, b) = wake.read(buf).await;
                buf = b;
                buf.clear();
                match res {
                    Ok(n) if n > 0 => {
                        while let Ok(msg) = inbox.try_recv() {
                            apply(&core, msg);
                        }
                    }
                    _ => break,
                }
            }
        }
        Err(e) => {
            tracing::error!(worker = core.id, "cannot watch for control messages: {e}");
            std::future::pending::<()>().await;
        }
    }
    core.stop_accepting.close();
    let accepts = std::mem::take(&mut *core.accepts.borrow_mut());
    for a in &accepts {
        listener::stop_accepting(a.fd);
    }
    for a in accepts {
        a.task.await;
    }
    let shutdown_timeout = core
        .current()
        .map_or(Duration::ZERO, |c| c.config.shutdown_timeout);
    let deadline = Instant::now() + shutdown_timeout;
    while core.active_requests.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL).await;
    }
    if core.active_requests.get() > 0 {
        tracing::warn!(
            worker = core.id,
            in_flight = core.active_requests.get(),
            "shutdown_timeout passed with requests in flight; closing them"
        );
    }
    // End every connection task so their sockets close now, not whenever the runtime goes.
    core.close_all.close();
    let deadline = Instant::now() + CLOSE_GRACE;
    while core.open_conns.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL).await;
    }
    // Pools close their idle upstream connections here (the contexts point back at `core`).
    core.current.borrow_mut().take();
    if let Some(log) = &core.access {
        log.flush();
    }
}

/// Switches this worker to a new generation.
fn apply(core: &Rc<WorkerCore>, msg: WorkerMsg) {
    match msg {
        WorkerMsg::Reload {
            gen,
            add,
            remove,
            done,
        } => {
            let generation = gen.id;
            let prev = core.current();
            let ctx = WorkerCtx::new(core, gen, prev.as_deref());
            *core.current.borrow_mut() = Some(Rc::new(ctx));
            drop(prev);
            for (socket, bound) in add {
                start_accepting(core, socket, bound);
            }
            core.accepts.borrow_mut().retain(|a| {
                if !remove.contains(&a.socket) {
                    return true;
                }
                a.stop.close();
                listener::stop_accepting(a.fd);
                false
            });
            start_handing_over(core);
            let _ = done.send(core.id);
            tracing::debug!(
                worker = core.id,
                generation,
                "serving the new configuration"
            );
        }
    }
}

fn start_accepting(core: &Rc<WorkerCore>, socket: usize, bound: BoundSocket) {
    let fd = bound.raw_fd();
    let stop = Rc::new(Closer::default());
    let task = match bound {
        BoundSocket::Tcp(l) => TcpListener::from_std(l)
            .map(|l| monoio::spawn(accept_loop(core.clone(), socket, l, stop.clone()))),
        BoundSocket::Unix(l) => UnixListener::from_std(l)
            .map(|l| monoio::spawn(accept_loop(core.clone(), socket, l, stop.clone()))),
    };
    match task {
        Ok(task) => core.accepts.borrow_mut().push(AcceptLoop {
            socket,
            fd,
            stop,
            task,
        }),
        Err(e) => tracing::error!(worker = core.id, "listener registration failed: {e}"),
    }
}

/// Hands the access log buffer to the writer thread now and then, so lines from a quiet
/// worker do not wait for the buffer to fill.
async fn flush_access_log(core: Rc<WorkerCore>) {
    while !core.close_all.is_closed() {
        monoio::select! {
            _ = monoio::time::sleep(crate::observe::access::FLUSH_INTERVAL) => {},
            _ = core.close_all.wait() => {},
        }
        if let Some(log) = &core.access {
            log.flush();
        }
    }
}

fn start_handing_over(core: &Rc<WorkerCore>) {
    let Some(ctx) = core.current() else { return };
    let capped = ctx
        .balancers
        .iter()
        .any(|b| (0..b.len()).any(|t| b.is_capped(t)));
    if capped && !core.handing_over.replace(true) {
        monoio::spawn(hand_over_idle_slots(core.clone()));
    }
}

/// With `max_connections` caps, an idle pooled connection in one worker would starve another
/// worker of that target's slots until `idle_timeout`: this task hands such slots over.
async fn hand_over_idle_slots(core: Rc<WorkerCore>) {
    while !core.draining() {
        monoio::time::sleep(HANDOVER_POLL).await;
        let Some(ctx) = core.current() else { break };
        for (u, b) in ctx.balancers.iter().enumerate() {
            // This worker's own waiters take its idle connections first.
            if ctx.queues.len(u) > 0 {
                continue;
            }
            for t in (0..b.len()).filter(|&t| b.is_capped(t)) {
                ctx.pool.hand_over(u, t, b.shared(t));
            }
        }
    }
    core.handing_over.set(false);
}

/// Closes pooled upstream connections that went stale while idle (see `pool::SWEEP_EVERY`).
async fn sweep_idle(core: Rc<WorkerCore>) {
    while !core.close_all.is_closed() {
        monoio::select! {
            _ = monoio::time::sleep(crate::upstream::pool::SWEEP_EVERY) => {},
            _ = core.close_all.wait() => break,
        }
        let Some(ctx) = core.current() else { break };
        let ups = &ctx.config.upstreams;
        ctx.pool
            .sweep(Instant::now(), |u| ups[u].transport.idle_timeout);
    }
}

/// Admits a new downstream connection unless the worker is at `limits.max_connections`.
fn admit(ctx: &WorkerCtx) -> bool {
    !matches!(ctx.config.limits.max_connections, Some(max) if ctx.core.open_conns.get() >= max)
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

async fn accept_loop(core: Rc<WorkerCore>, socket: usize, listener: impl Accept, stop: Rc<Closer>) {
    loop {
        // On io_uring an accept must complete, never be dropped in flight (see
        // `listener::stop_accepting`); epoll has nothing in the kernel to leave behind.
        let accepted = if core.uring.get() {
            listener.accept_conn().await
        } else {
            monoio::select! {
                r = listener.accept_conn() => r,
                _ = core.stop_accepting.wait() => break,
                _ = stop.wait() => break,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                // Still served while draining: shutdown_delay keeps accepting on purpose.
                core.metrics().accepted.inc();
                let Some(ctx) = core.current() else { break };
                // A removed listener's socket is stopped before its generation goes away.
                let Some(index) = ctx.gen.listener_of(socket) else {
                    continue;
                };
                if admit(&ctx) {
                    spawn_conn(ctx, socket, index, stream, peer);
                }
            }
            Err(e) => {
                if core.draining() || stop.is_closed() {
                    break;
                }
                accept_failed(&core, e).await;
            }
        }
    }
}

async fn accept_failed(core: &WorkerCore, e: io::Error) {
    tracing::warn!(worker = core.id, "accept failed: {e}");
    monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
}

fn spawn_conn(
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    stream: Stream,
    peer: Option<std::net::SocketAddr>,
) {
    let core = ctx.core.clone();
    core.open_conns.set(core.open_conns.get() + 1);
    // Lowered in this same generation's counters when the connection ends.
    ctx.gen_metrics().open_connections[listener].inc();
    let gen = ctx.clone();
    // Each kind boxed on its own, and a plain HTTP connection's future built here rather than
    // inside an async block: a task keeps a block's captures beside what it moved them into, and
    // an idle keep-alive connection should carry neither those nor a TLS handshake's state.
    let serve: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> = match (
        &ctx.config.listeners[listener].kind,
        ctx.gen.listener_tls[listener].is_some(),
    ) {
        // Plaintext HTTP/1 only: nothing to detect.
        (ListenerKind::Http { .. }, false) if !ctx.config.listeners[listener].protocols.h2c => {
            Box::pin(crate::proxy::serve(
                ctx.clone(),
                socket,
                listener,
                stream,
                peer,
            ))
        }
        // A plaintext tunnel: one box, not a tunnel boxed inside the general path's.
        (ListenerKind::Tcp { .. }, false) => {
            Box::pin(async move { crate::l4::serve(&ctx, listener, stream, peer).await })
        }
        _ => Box::pin(async move {
            let mut peer = peer;
            let before_tls = ctx.gen.listener_tls[listener].is_some()
                && ctx.config.listeners[listener].proxy_protocol;
            if let (true, Stream::Tcp(tcp)) = (before_tls, &stream) {
                let trusted = &ctx.config.trusted_proxies;
                let header = crate::net::proxy_protocol::accept_before_tls(trusted, tcp, peer);
                match Box::pin(header).await {
                    Some(Some((source, _))) => peer = Some(source),
                    Some(None) => {}
                    None => return,
                }
            }
            // The handshake runs here, in the connection's task, so the accept loop never
            // waits.
            let stream = if ctx.gen.listener_tls[listener].is_some() {
                match Box::pin(terminate_tls(&ctx, listener, stream, peer)).await {
                    Some(s) => s,
                    None => return,
                }
            } else {
                stream
            };
            match &ctx.config.listeners[listener].kind {
                ListenerKind::Http { .. } => {
                    serve_http(ctx.clone(), socket, listener, stream, peer).await
                }
                ListenerKind::Tcp { .. } => {
                    Box::pin(crate::l4::serve(&ctx, listener, stream, peer)).await
                }
            }
        }),
    };
    monoio::spawn(async move {
        monoio::select! {
            _ = CatchPanic(serve) => {},
            _ = core.close_all.wait() => {},
        }
        core.open_conns.set(core.open_conns.get() - 1);
        gen.gen_metrics().open_connections[listener].sub(1);
    });
}

/// An http listener's connection: its PROXY header (if expected), then HTTP/1 or, by ALPN or
/// the connection preface, HTTP/2.
async fn serve_http(
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    mut stream: Stream,
    peer: Option<std::net::SocketAddr>,
) {
    let Some((mut down, client)) = crate::proxy::open(&ctx, listener, &mut stream, peer).await
    else {
        return;
    };
    match crate::http2::detect(&ctx, listener, &mut stream, &mut down).await {
        crate::http2::Detected::Http1 => {
            crate::proxy::serve_h1(ctx, socket, listener, stream, down, client).await
        }
        crate::http2::Detected::Http2 => {
            let prefix = std::mem::take(&mut down.buf);
            let h2 = crate::http2::serve(ctx, socket, listener, stream, prefix, client);
            Box::pin(h2).await
        }
        crate::http2::Detected::Close => {}
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
    let Some(state) = &ctx.gen.listener_tls[listener] else {
        return Some(stream);
    };
    let mut tcp = match stream {
        Stream::Tcp(tcp) => crate::net::stream::Sock::Tcp(tcp),
        Stream::Unix(unix) => crate::net::stream::Sock::Unix(unix),
        other => return Some(other),
    };
    let http = matches!(
        ctx.config.listeners[listener].kind,
        ListenerKind::Http { .. }
    );
    let started = std::time::Instant::now();
    let failed = |first| {
        ctx.shared
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        let reason = match first {
            Some(_) => "plain HTTP sent to a TLS port (answered 400)",
            None => "closed or timed out before the first byte",
        };
        log_tls_failure(ctx, listener, peer, reason, started);
    };
    let limit = state.settings.handshake_timeout;
    if http && !crate::net::sniff::tls_or_refuse(&mut tcp, limit, failed).await {
        return None;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    // Loaded once per connection: a reload applies to connections accepted after it.
    let handshake = crate::net::tls_stream::TlsServer::accept(state.current.load_full(), tcp);
    let result = match state.settings.handshake_timeout {
        // The wait for the first byte counts against the same limit.
        Some(limit) => monoio::time::timeout(limit.saturating_sub(started.elapsed()), handshake)
            .await
            .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut))),
        None => handshake.await,
    };
    match result {
        Ok(tls) => Some(Stream::TlsServer(Box::new(tls), fd)),
        Err(e) => {
            ctx.shared
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            let reason = crate::net::tls::failure_reason(&e);
            tracing::debug!(worker = ctx.id, ?peer, "TLS handshake failed: {reason}");
            log_tls_failure(ctx, listener, peer, &reason, started);
            None
        }
    }
}

/// A failed handshake is the client's only trace: the access log gets a line for it.
fn log_tls_failure(
    ctx: &WorkerCtx,
    listener: usize,
    peer: Option<std::net::SocketAddr>,
    reason: &str,
    started: std::time::Instant,
) {
    if let Some(log) = ctx.access() {
        log.record(&crate::observe::access::Record {
            event: crate::observe::access::Event::TlsHandshakeFailed,
            client: peer,
            listener: &ctx.config.listeners[listener].name,
            reason,
            duration: started.elapsed(),
            worker: ctx.id,
            ..Default::default()
        });
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
