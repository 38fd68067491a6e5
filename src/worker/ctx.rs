//! A worker's state: its core (what it owns for its whole life) and its context for one
//! configuration generation (balancer replicas and pools). Connection tasks see them through
//! methods; the fields belong to the worker's runtime.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::control::generation::Generation;
use crate::control::state::Shared;
use crate::upstream::balance::Balancer;
use crate::upstream::pool::{Pool, UpConn};
use crate::worker::closer::Closer;

/// What a worker owns for its whole life, whatever configuration it serves.
pub struct WorkerCore {
    pub(super) id: usize,
    pub(super) shared: Arc<Shared>,
    /// This worker's access log buffer, when access logging is on.
    pub(super) access: Option<crate::observe::access::WorkerLog>,
    /// Requests (and tunnels) being handled now (a drain waits for these).
    pub(super) active_requests: Cell<usize>,
    /// Open downstream connections (for `limits.max_connections`).
    pub(super) open_conns: Cell<usize>,
    /// Fired when the server drains: accept loops stop (epoll; io_uring accepts end by
    /// shutdown(2) of their socket, see `listener::stop_accepting`).
    pub(super) stop_accepting: Closer,
    pub(super) uring: Cell<bool>,
    /// Fired after the drain: every connection task ends, closing its sockets.
    pub(super) close_all: Closer,
    /// The generation new connections and requests use; `None` once the worker has stopped
    /// (each generation's context points back here, so the last one is let go explicitly).
    pub(super) current: RefCell<Option<Rc<WorkerCtx>>>,
    /// This worker's accept loops, by socket id.
    pub(super) accepts: RefCell<Vec<AcceptLoop>>,
    /// Whether the task that hands idle slots of capped targets to other workers runs.
    pub(super) handing_over: Cell<bool>,
    /// Idle deadlines of parked keep-alive connections.
    pub(super) idle: Rc<crate::worker::idle::IdleClock>,
    /// Spare scratch buffers its requests take and give back.
    pub(super) buffers: crate::worker::buffers::Buffers,
}

pub(super) struct AcceptLoop {
    pub(super) socket: usize,
    pub(super) fd: std::os::fd::RawFd,
    /// Fired when a reload removes this listener.
    pub(super) stop: Rc<Closer>,
    pub(super) task: monoio::task::JoinHandle<()>,
}

impl WorkerCore {
    /// The context of the current generation.
    pub fn current(&self) -> Option<Rc<WorkerCtx>> {
        self.current.borrow().clone()
    }

    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// This worker's counters (only this worker writes them).
    #[inline]
    pub fn metrics(&self) -> &crate::observe::metrics::WorkerMetrics {
        &self.shared.metrics[self.id]
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
}

/// A worker's view of one generation: its configuration, this worker's balancer replicas and
/// connection pool for it. Connection tasks hold the context of the request they are serving.
pub struct WorkerCtx {
    pub(super) id: usize,
    pub(super) core: Rc<WorkerCore>,
    pub(super) gen: Arc<Generation>,
    pub(super) config: Arc<Config>,
    pub(super) shared: Arc<Shared>,
    /// One replica per upstream, indexed like `config.upstreams`.
    pub(super) balancers: Vec<Balancer>,
    pub(super) pool: Pool,
    /// Requests waiting for a connection slot, per upstream.
    pub(super) queues: crate::upstream::queue::Queues,
    /// HTTP/2 connections to upstream targets, shared by this worker's requests.
    pub(super) h2: crate::http2::client::Conns,
}

impl WorkerCtx {
    /// Builds this worker's context for `gen`, moving idle connections to targets that did not
    /// change out of `prev`'s pool (no reconnect storm after a reload).
    pub(super) fn new(
        core: &Rc<WorkerCore>,
        gen: Arc<Generation>,
        prev: Option<&WorkerCtx>,
    ) -> WorkerCtx {
        let id = core.id;
        let config = gen.config.clone();
        let balancers = config
            .upstreams
            .iter()
            .zip(&gen.targets)
            .map(|(u, s)| Balancer::new(u, s, id, seed_for(id)))
            .collect();
        let pool = Pool::new(config.upstreams.iter().map(|u| u.targets.len()));
        let config_upstreams = config.upstreams.len();
        let h2 = crate::http2::client::Conns::new(config.upstreams.iter().map(|u| u.targets.len()));
        if let Some(prev) = prev {
            for (u, targets) in gen.targets.iter().enumerate() {
                for (t, shared) in targets.iter().enumerate() {
                    if let Some((pu, pt)) = prev.find_target(shared) {
                        prev.pool.move_idle((pu, pt), &pool, (u, t));
                    }
                }
            }
            // What is left belongs to targets that are gone (DNS dropped them, a reload
            // removed them): closed now rather than when the old generation is let go.
            let gone = Pool::new(std::iter::once(1));
            for (u, targets) in prev.gen.targets.iter().enumerate() {
                for t in 0..targets.len() {
                    prev.pool.move_idle((u, t), &gone, (0, 0));
                }
            }
        }
        WorkerCtx {
            id,
            core: core.clone(),
            shared: core.shared.clone(),
            config,
            gen,
            balancers,
            pool,
            queues: crate::upstream::queue::Queues::new(config_upstreams),
            h2,
        }
    }

    /// Where a target (by its shared state) sits in this generation.
    fn find_target(
        &self,
        shared: &Arc<crate::upstream::target::TargetShared>,
    ) -> Option<(usize, usize)> {
        self.gen.targets.iter().enumerate().find_map(|(u, ts)| {
            ts.iter()
                .position(|s| Arc::ptr_eq(s, shared))
                .map(|t| (u, t))
        })
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// The listener that bound socket `socket` in this generation, if it still has one.
    pub fn listener_of(&self, socket: usize) -> Option<usize> {
        self.gen.listener_of(socket)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// This worker's balancer replica of upstream `u`.
    #[inline]
    pub fn balancer(&self, u: usize) -> &Balancer {
        &self.balancers[u]
    }

    /// This worker's idle upstream connections of this generation.
    #[inline]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// This worker's HTTP/2 connections to upstream targets of this generation.
    pub fn h2(&self) -> &crate::http2::client::Conns {
        &self.h2
    }

    pub fn queues(&self) -> &crate::upstream::queue::Queues {
        &self.queues
    }

    /// The TLS client config of upstream `u` (`None` when none of its targets is TLS).
    pub fn upstream_tls(&self, u: usize) -> Option<&Arc<rustls::ClientConfig>> {
        self.gen.upstream_tls[u].as_ref()
    }

    /// This worker's access log buffer, when access logging is on.
    pub fn access(&self) -> Option<&crate::observe::access::WorkerLog> {
        self.core.access.as_ref()
    }

    /// This worker's layer-4 tunnel counters.
    pub fn tunnel_counters(&self) -> &crate::observe::metrics::TunnelCounters {
        &self.shared.tunnels[self.id]
    }

    /// Marks a request or tunnel in flight until the guard drops (a drain waits for it).
    pub fn active(&self) -> Active<'_> {
        let core = &*self.core;
        core.active_requests.set(core.active_requests.get() + 1);
        core.metrics()
            .in_flight
            .set(core.active_requests.get() as u64);
        Active(core)
    }

    pub fn count_spliced(&self, upward: bool, n: u64) {
        self.core.count_spliced(upward, n)
    }

    /// The worker's coarse clock for idle deadlines of parked connections.
    pub fn idle_clock(&self) -> &Rc<crate::worker::idle::IdleClock> {
        &self.core.idle
    }

    /// The worker's spare scratch buffers.
    pub fn buffers(&self) -> &crate::worker::buffers::Buffers {
        &self.core.buffers
    }

    /// The current generation's context when a reload replaced this one.
    pub fn newer(&self) -> Option<Rc<WorkerCtx>> {
        let current = self.core.current.borrow();
        match &*current {
            Some(c) if !std::ptr::eq(&**c, self) => Some(c.clone()),
            _ => None,
        }
    }

    /// Keeps an upstream connection for reuse: in this pool, or after a reload in the current
    /// generation's, when the target is still there; otherwise it closes.
    pub fn checkin(&self, u: usize, t: usize, conn: UpConn) {
        match self.newer() {
            None => {
                let tr = &self.config.upstreams[u].transport;
                // `keepalive_idle_conns`: past the total, the connection closes instead.
                if tr
                    .keepalive_idle_conns
                    .is_some_and(|cap| self.pool.idle_total(u) >= cap)
                {
                    return;
                }
                self.pool.checkin(u, t, conn, tr.max_idle_per_worker);
            }
            Some(current) => {
                if let Some((u, t)) = current.find_target(conn.slot.target()) {
                    let max_idle = current.config.upstreams[u].transport.max_idle_per_worker;
                    current.pool.checkin(u, t, conn, max_idle);
                }
            }
        }
    }

    pub fn draining(&self) -> bool {
        self.core.draining()
    }

    /// Completes once the server drains (HTTP/2 connections then send GOAWAY).
    pub(crate) fn drain_started(&self) -> crate::worker::closer::Wait<'_> {
        self.core.stop_accepting.wait()
    }

    /// Completes when the worker ends every connection task (tasks a connection spawns too).
    pub(crate) fn closing(&self) -> crate::worker::closer::Wait<'_> {
        self.core.close_all.wait()
    }

    /// This worker's counters that no reload renames.
    #[inline]
    pub fn metrics(&self) -> &crate::observe::metrics::WorkerMetrics {
        self.core.metrics()
    }

    /// Counts upstream `u`'s HTTP/2 connections open (+1) and closed (-1), from a connection's
    /// task, which may outlive this context.
    pub fn h2_gauge(&self, u: usize) -> Box<dyn Fn(isize)> {
        let (gen, id) = (self.gen.clone(), self.id);
        Box::new(move |d| {
            let c = &gen.metrics[id].upstream_h2_connections[u];
            match d {
                1.. => c.add(d as u64),
                _ => c.sub(d.unsigned_abs() as u64),
            }
        })
    }

    /// This worker's counters labelled by this generation's names.
    #[inline]
    pub fn gen_metrics(&self) -> &crate::observe::metrics::GenMetrics {
        &self.gen.metrics[self.id]
    }

    /// Counts a finished request: by listener and status class, and by target when one answered.
    pub fn request_done(
        &self,
        listener: usize,
        status: u16,
        took: Duration,
        target: Option<(usize, usize)>,
    ) {
        self.gen_metrics()
            .request_done(&crate::observe::metrics::Done {
                listener,
                upstream: None,
                target,
                status,
                took,
                bytes: [0, 0],
                protocol: Default::default(),
            });
    }
}

fn seed_for(worker: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A request or tunnel in flight on this worker (see [`WorkerCtx::active`]).
pub struct Active<'a>(&'a WorkerCore);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let core = self.0;
        core.active_requests.set(core.active_requests.get() - 1);
        core.metrics()
            .in_flight
            .set(core.active_requests.get() as u64);
    }
}
