//! Starting and stopping the whole proxy: binds listeners, starts one pinned worker thread per
//! core, and drains them on shutdown. This is the library entry point tests use.

pub mod admin;
pub mod discover;
pub mod generation;
pub mod health;
pub mod reload;
pub mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;

use crate::config::{Config, Driver, ListenAddr};
use crate::control::generation::Generation;
use crate::control::reload::{Control, Reloaded, WorkerLink};
use crate::control::state::Shared;
use crate::net::listener::{self, BoundSocket};
use crate::observe::metrics::{TunnelCounters, WorkerMetrics};
use crate::observe::series::Registry;
use crate::worker::{self, DriverKind};

/// How long a start waits for the first DNS answers of dynamic upstreams (two tries at a
/// resolver that does not answer, and some room).
const FIRST_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Server {
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    control: Arc<Mutex<Control>>,
    driver: DriverKind,
    /// Stopped last, so /readyz reports the drain while it happens.
    admin: Option<crate::control::admin::Admin>,
    /// Writes access log lines; finishes after the workers (who hold its senders) exit.
    access_writer: Option<crate::observe::access::Writer>,
}

impl Server {
    /// Binds every listener and starts the workers; returns once all of them are serving.
    pub fn start(config: Config) -> io::Result<Server> {
        let workers = config.workers.max(1);
        let mut sockets: Vec<Vec<(usize, BoundSocket)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::with_capacity(config.listeners.len());
        for (id, l) in config.listeners.iter().enumerate() {
            let bound = listener::bind(l, workers)?;
            addrs.push(bound.addr);
            for (w, socket) in bound.sockets.into_iter().enumerate() {
                sockets[w].push((id, socket));
            }
        }
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
                let (w, tx) = crate::observe::access::Writer::start(target)?;
                (Some(w), Some(tx))
            }
            None => (None, None),
        };
        let admin_addr = config.admin;
        let config = Arc::new(config);
        let ids = (0..config.listeners.len()).collect();
        let gen = Arc::new(Generation::build(
            1,
            config.clone(),
            None,
            ids,
            addrs,
            workers,
        )?);
        let mut registry = Registry::default();
        registry.add(gen.clone());
        let shared = Arc::new(Shared {
            draining: AtomicBool::new(false),
            metrics: (0..workers).map(|_| WorkerMetrics::default()).collect(),
            tls_handshake_failures: AtomicU64::new(0),
            upstream_tls_failures: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            tunnels: (0..workers).map(|_| TunnelCounters::default()).collect(),
            current: ArcSwap::new(gen.clone()),
            registry: Mutex::new(registry),
            dns: Default::default(),
        });
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::with_capacity(workers);
        let mut links = Vec::with_capacity(workers);
        for (id, sockets) in sockets.into_iter().enumerate() {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            theirs.set_nonblocking(true)?;
            let (inbox_tx, inbox) = mpsc::channel();
            links.push(WorkerLink {
                tx: inbox_tx,
                wake: ours,
            });
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let init = worker::WorkerInit {
                id,
                driver,
                sockets,
                wake: theirs,
                inbox,
                access: access_tx.clone(),
                gen: gen.clone(),
                shared: shared.clone(),
            };
            let tx = tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ringway-w{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    worker::run(init, |r| {
                        let _ = tx.send(r);
                    });
                })?;
            handles.push(handle);
        }
        drop(tx);
        drop(access_tx);
        let control = Control::new(shared.clone(), links, &config.listeners, None);
        let mut server = Server {
            workers: handles,
            shared,
            control: Arc::new(Mutex::new(control)),
            driver: DriverKind::Epoll,
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
        match health::Checker::start(config.clone(), gen.targets.clone()) {
            Ok(checker) => server.control().set_health(checker),
            Err(e) => {
                server.stop_now();
                return Err(io::Error::new(e.kind(), format!("health checker: {e}")));
            }
        }
        // Names to resolve: the first answers are in before the server counts as started
        // (bounded: a resolver that does not answer leaves those upstreams at 503 meanwhile).
        let follow = server
            .control()
            .follow_dns(Arc::downgrade(&server.control), config.clone());
        match follow {
            Ok(Some(ready)) => {
                let _ = ready.recv_timeout(FIRST_LOOKUP_WAIT);
            }
            Ok(None) => {}
            Err(e) => {
                server.stop_now();
                return Err(io::Error::new(e.kind(), format!("DNS discovery: {e}")));
            }
        }
        if let Some(addr) = admin_addr {
            let shared = server.shared.clone();
            match crate::control::admin::Admin::start(addr, shared, server.control.clone()) {
                Ok(a) => server.admin = Some(a),
                Err(e) => {
                    server.stop_now();
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the configuration file and swaps it into every worker (SIGHUP, `POST /reload`).
    /// On any error the running configuration stays.
    pub fn reload(&self) -> Result<Reloaded, String> {
        self.control().reload()
    }

    /// Swaps an already validated configuration in, as a reload of its file would.
    pub fn reload_with(&self, config: Config) -> Result<Reloaded, String> {
        self.control().swap_in(config)
    }

    /// The configuration new connections get now.
    pub fn config(&self) -> Arc<Config> {
        self.shared.current.load().config.clone()
    }

    /// The admin endpoint's bound address (with `:0` resolved), when it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr())
    }

    /// The bound address of a TCP listener (with `:0` resolved).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        let gen = self.shared.current.load();
        let i = gen
            .config
            .listeners
            .iter()
            .position(|l| l.name == listener)?;
        match &gen.addrs[i] {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }

    /// Each listener's name and bound address.
    pub fn listeners(&self) -> Vec<(String, ListenAddr)> {
        let gen = self.shared.current.load();
        let names = gen.config.listeners.iter().map(|l| l.name.clone());
        names.zip(gen.addrs.iter().cloned()).collect()
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

    /// Reloads TLS certificates from their files; see [`Shared::reload_tls`].
    pub fn reload_tls(&self) -> Result<usize, String> {
        self.shared.reload_tls()
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
        let delay = self.shared.current.load().config.shutdown_delay;
        let unix_paths = {
            let mut control = self.control();
            control.drain(delay);
            control.unix_paths()
        };
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        // Our socket files would otherwise block the next start's bind ("not a socket" aside).
        for path in unix_paths {
            let _ = std::fs::remove_file(path);
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
