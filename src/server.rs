//! Starting and stopping the whole proxy: binds listeners, starts one pinned worker thread per
//! core, and drains them on shutdown. This is the library entry point tests use.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::balance::{shared_targets, SharedTargets};
use crate::config::{Config, Driver, ListenAddr};
use crate::health;
use crate::l4::TunnelCounters;
use crate::listener;
use crate::metrics::WorkerMetrics;
use crate::tls::ListenerTlsState;
use crate::worker::{self, DriverKind};

/// State shared by all workers: only atomics (and immutable data).
pub struct Shared {
    pub draining: AtomicBool,
    /// One entry per worker, indexed by worker id; each written only by its worker.
    pub metrics: Vec<WorkerMetrics>,
    /// `[upstream][target]` health and load, indexed like `Config::upstreams`.
    pub targets: SharedTargets,
    /// Per listener (indexed like `Config::listeners`): its live TLS server config.
    pub listener_tls: Vec<Option<ListenerTlsState>>,
    /// Per upstream: the TLS client config its TLS targets are dialed with (one session cache
    /// for all workers, so a new connection can resume).
    pub upstream_tls: Vec<Option<monoio_rustls::TlsConnector>>,
    /// Client handshakes that failed or timed out, on every listener.
    pub tls_handshake_failures: AtomicU64,
    /// Layer-4 tunnel counters, indexed by worker id.
    pub tunnels: Vec<TunnelCounters>,
}

impl Shared {
    /// Rebuilds every TLS listener's certificates from their files (SIGHUP). New connections
    /// get the new config; open ones keep theirs. A listener whose files are broken keeps
    /// the config it had; the error names it.
    pub fn reload_tls(&self, listeners: &[crate::config::Listener]) -> Result<usize, String> {
        let mut reloaded = 0;
        let mut errors = Vec::new();
        for (state, l) in self.listener_tls.iter().zip(listeners) {
            if let Some(state) = state {
                match state.reload() {
                    Ok(()) => reloaded += 1,
                    Err(e) => errors.push(format!("listener {}: tls.{e}", l.name)),
                }
            }
        }
        if errors.is_empty() {
            Ok(reloaded)
        } else {
            Err(errors.join("; "))
        }
    }
}

fn tls_states(config: &Config) -> io::Result<Vec<Option<ListenerTlsState>>> {
    config
        .listeners
        .iter()
        .map(|l| match &l.tls {
            Some(t) => ListenerTlsState::new(t)
                .map(Some)
                .map_err(|e| io::Error::other(format!("listener {}: tls.{e}", l.name))),
            None => Ok(None),
        })
        .collect()
}

fn tls_connectors(config: &Config) -> io::Result<Vec<Option<monoio_rustls::TlsConnector>>> {
    config
        .upstreams
        .iter()
        .map(|u| match &u.transport.tls {
            Some(t) => {
                if t.insecure_skip_verify {
                    tracing::warn!(
                        upstream = %u.name,
                        "insecure_skip_verify: TLS certificates of this upstream are not verified"
                    );
                }
                crate::tls::client_config(t)
                    .map(|c| Some(monoio_rustls::TlsConnector::from(Arc::new(c))))
                    .map_err(|e| {
                        io::Error::other(format!("upstream {}: transport.tls.{e}", u.name))
                    })
            }
            None => Ok(None),
        })
        .collect()
}

pub struct Server {
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    config: Arc<Config>,
    names: Vec<String>,
    addrs: Vec<ListenAddr>,
    listener_fds: Vec<std::os::fd::RawFd>,
    /// Our ends of one socketpair per worker: closing them wakes the workers to drain.
    wakers: Vec<std::os::unix::net::UnixStream>,
    driver: DriverKind,
    /// The active health checker's control thread, when some upstream has `health.active`.
    health: Option<health::Checker>,
    shutdown_delay: std::time::Duration,
    /// Stopped last, so /readyz reports the drain while it happens.
    admin: Option<crate::admin::Admin>,
    /// Writes access log lines; finishes after the workers (who hold its senders) exit.
    access_writer: Option<crate::access::Writer>,
}

impl Server {
    /// Binds every listener and starts the workers; returns once all of them are serving.
    pub fn start(config: Config) -> io::Result<Server> {
        let workers = config.workers.max(1);
        let bound = listener::bind_all(&config, workers)?;
        let listener_fds = bound.sockets.iter().flatten().map(|s| s.raw_fd()).collect();
        let shared = Arc::new(Shared {
            draining: AtomicBool::new(false),
            metrics: (0..workers).map(|_| WorkerMetrics::new(&config)).collect(),
            targets: shared_targets(&config.upstreams),
            listener_tls: tls_states(&config)?,
            upstream_tls: tls_connectors(&config)?,
            tls_handshake_failures: AtomicU64::new(0),
            tunnels: (0..workers).map(|_| TunnelCounters::default()).collect(),
        });
        let driver = match config.driver {
            Driver::Auto if !worker::io_uring_available() => {
                tracing::warn!(
                    "io_uring is unavailable (kernel or seccomp); using the epoll driver"
                );
                Driver::Epoll
            }
            d => d,
        };
        let cores = if config.pin_workers {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (access_writer, access_tx) = match &config.log.access_log {
            Some(target) => {
                let (w, tx) = crate::access::Writer::start(target)?;
                (Some(w), Some(tx))
            }
            None => (None, None),
        };
        let config = Arc::new(config);
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::with_capacity(workers);
        let mut wakers = Vec::with_capacity(workers);
        for (id, sockets) in bound.sockets.into_iter().enumerate() {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            theirs.set_nonblocking(true)?;
            wakers.push(ours);
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let (config, shared, tx) = (config.clone(), shared.clone(), tx.clone());
            let access = access_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ringway-w{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    worker::run(id, driver, sockets, theirs, access, config, shared, |r| {
                        let _ = tx.send(r);
                    });
                })?;
            handles.push(handle);
        }
        drop(tx);
        drop(access_tx);
        let mut server = Server {
            workers: handles,
            shared,
            config: config.clone(),
            names: config.listeners.iter().map(|l| l.name.clone()).collect(),
            addrs: bound.addrs,
            wakers,
            listener_fds,
            driver: DriverKind::Epoll,
            health: None,
            shutdown_delay: config.shutdown_delay,
            admin: None,
            access_writer,
        };
        for _ in 0..workers {
            match rx.recv() {
                Ok(Ok(kind)) => server.driver = kind,
                Ok(Err(e)) => {
                    server.stop_now();
                    return Err(io::Error::new(e.kind(), format!("worker runtime: {e}")));
                }
                Err(_) => {
                    server.stop_now();
                    return Err(io::Error::other("a worker exited during startup"));
                }
            }
        }
        match health::Checker::start(config.clone(), server.shared.targets.clone()) {
            Ok(checker) => server.health = checker,
            Err(e) => {
                server.stop_now();
                return Err(io::Error::new(e.kind(), format!("health checker: {e}")));
            }
        }
        if let Some(addr) = config.admin {
            let bound = server
                .names
                .iter()
                .cloned()
                .zip(server.addrs.iter().cloned())
                .collect();
            match crate::admin::Admin::start(addr, config.clone(), server.shared.clone(), bound) {
                Ok(a) => server.admin = Some(a),
                Err(e) => {
                    server.stop_now();
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// The admin endpoint's bound address (with `:0` resolved), when it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr())
    }

    /// The bound address of a TCP listener (with `:0` resolved).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        let i = self.names.iter().position(|n| n == listener)?;
        match &self.addrs[i] {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }

    pub fn listeners(&self) -> impl Iterator<Item = (&str, &ListenAddr)> {
        self.names.iter().map(String::as_str).zip(&self.addrs)
    }

    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Body bytes moved with splice so far: (client -> upstream, upstream -> client).
    pub fn spliced_bytes(&self) -> (u64, u64) {
        self.shared.metrics.iter().fold((0, 0), |(u, d), m| {
            (u + m.spliced_up.get(), d + m.spliced_down.get())
        })
    }

    /// Layer-4 payload bytes moved with splice(2), summed over workers.
    pub fn l4_spliced_bytes(&self) -> u64 {
        let sum = self.shared.tunnels.iter();
        sum.map(|c| c.spliced_bytes.load(Ordering::Relaxed)).sum()
    }

    /// Layer-4 payload bytes moved through a user-space buffer (the no-pipe fallback).
    pub fn l4_copied_bytes(&self) -> u64 {
        let sum = self.shared.tunnels.iter();
        sum.map(|c| c.copied_bytes.load(Ordering::Relaxed)).sum()
    }

    /// Layer-4 tunnels that reached a target, summed over workers.
    pub fn l4_tunnels(&self) -> u64 {
        let sum = self.shared.tunnels.iter();
        sum.map(|c| c.tunnels.load(Ordering::Relaxed)).sum()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Reloads TLS certificates from their files (SIGHUP); see [`Shared::reload_tls`].
    pub fn reload_tls(&self) -> Result<usize, String> {
        self.shared.reload_tls(&self.config.listeners)
    }

    /// Client TLS handshakes that failed so far.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.shared.tls_handshake_failures.load(Ordering::Relaxed)
    }

    /// Stops accepting; in-flight requests finish (up to `shutdown_timeout`), keep-alive
    /// connections close after their current response. Returns when every worker has exited.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(h) = self.health.take() {
            h.stop();
        }
        self.shared.draining.store(true, Ordering::SeqCst);
        // Readiness fails from now on; keep accepting meanwhile so traffic that load
        // balancers still send (until they notice) is served, not refused.
        if !self.shutdown_delay.is_zero() && !self.workers.is_empty() {
            std::thread::sleep(self.shutdown_delay);
        }
        for &fd in &self.listener_fds {
            listener::stop_accepting(fd);
        }
        self.wakers.clear();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        // Our socket files would otherwise block the next start's bind ("not a socket" aside).
        for addr in &self.addrs {
            if let ListenAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
        self.admin = None;
        if let Some(w) = self.access_writer.take() {
            w.finish();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop_now();
        }
    }
}
