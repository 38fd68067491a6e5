//! The control side of a running server: the listening sockets, the links to the workers, the
//! health checker, and configuration reloads. Never on a worker's data path: the admin thread
//! and the signal handler call in here, one at a time (a mutex).
//!
//! A reload validates the file, binds the listeners that are new, builds the next
//! [`Generation`] (TLS files are read here) and only then hands it to every worker; anything that
//! fails before that leaves the running configuration untouched.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::config::{Config, ListenAddr};
use crate::control::discover::merge::{self, Discovered};
use crate::control::discover::Discoverer;
use crate::control::generation::Generation;
use crate::control::health;
use crate::control::state::Shared;
use crate::net::listener::{self, BoundSocket};
use crate::worker::WorkerMsg;

/// How long a reload waits for every worker to switch before it reports success anyway: a
/// worker busy this long is stuck on something else, and switches when it gets to it.
const RELOAD_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound listening address, shared by the generations that use it.
struct Socket {
    /// As configured (`:0` included): what a reloaded listener is matched against.
    configured: ListenAddr,
    /// The listener using it. Port 0 means "any port" for every listener that says so, so
    /// those match by name as well.
    name: String,
}

impl Socket {
    fn serves(&self, l: &crate::config::Listener) -> bool {
        let any_port = matches!(&l.addr, ListenAddr::Tcp(a) if a.port() == 0);
        self.configured == l.addr && (!any_port || self.name == l.name)
    }
}

/// One worker as the control side sees it.
pub struct WorkerLink {
    pub tx: mpsc::Sender<WorkerMsg>,
    /// Our end of the worker's wake socket: a byte after each message; closed to drain.
    pub wake: UnixStream,
}

pub struct Control {
    shared: Arc<Shared>,
    workers: Vec<WorkerLink>,
    /// By socket id; `None` once a reload removed it.
    sockets: Vec<Option<Socket>>,
    health: Option<health::Checker>,
    /// The configuration as its file says, before discovered targets are merged in.
    base: Option<Arc<Config>>,
    /// The last good DNS answers (see `control::discover`).
    found: Discovered,
    discoverer: Option<Discoverer>,
    /// This control itself, as the discovery thread reaches it.
    me: std::sync::Weak<std::sync::Mutex<Control>>,
}

/// What a successful reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub listeners_added: usize,
    pub listeners_removed: usize,
    /// Settings that changed in the file but only take effect on a restart.
    pub restart_required: Vec<&'static str>,
}

impl Control {
    pub fn new(
        shared: Arc<Shared>,
        workers: Vec<WorkerLink>,
        listeners: &[crate::config::Listener],
        health: Option<health::Checker>,
    ) -> Control {
        Control {
            shared,
            workers,
            sockets: listeners
                .iter()
                .map(|l| {
                    Some(Socket {
                        configured: l.addr.clone(),
                        name: l.name.clone(),
                    })
                })
                .collect(),
            health,
            base: None,
            found: Discovered::new(),
            discoverer: None,
            me: std::sync::Weak::new(),
        }
    }

    /// Resolves the DNS names `base` asks for from now on (starting the discovery thread when
    /// there are some). The receiver hears when the first lookups are done; wait for it
    /// without holding this control's lock (the answers are applied under it).
    pub fn follow_dns(
        &mut self,
        me: std::sync::Weak<std::sync::Mutex<Control>>,
        base: Arc<Config>,
    ) -> std::io::Result<Option<mpsc::Receiver<()>>> {
        self.me = me;
        let jobs = merge::jobs(&base);
        self.base = Some(base);
        if let Some(d) = &self.discoverer {
            d.set_jobs(jobs);
            return Ok(None);
        }
        if jobs.is_empty() {
            return Ok(None);
        }
        let me = self.me.clone();
        let sink = Box::new(move |found: Discovered| {
            if let Some(control) = me.upgrade() {
                let mut c = control.lock().unwrap_or_else(|e| e.into_inner());
                c.set_discovered(found);
            }
        });
        let (d, ready) = Discoverer::start(jobs, sink, self.shared.dns.clone())?;
        self.discoverer = Some(d);
        Ok(Some(ready))
    }

    /// New DNS answers: when they change the targets, the configuration with them merged in
    /// is swapped into every worker (a failure keeps the running targets; the next change
    /// tries again).
    pub fn set_discovered(&mut self, found: Discovered) {
        self.found = found;
        let Some(base) = self.base.clone() else {
            return;
        };
        if self.shared.draining.load(Ordering::SeqCst) {
            return;
        }
        let effective = merge::effective(&base, &self.found);
        if merge::same_targets(&effective, &self.shared.current.load().config) {
            return;
        }
        match self.install(effective, None) {
            Ok(r) => tracing::info!(generation = r.generation, "upstream targets changed (DNS)"),
            Err(e) => tracing::error!("DNS: the changed targets could not be swapped in: {e}"),
        }
    }

    pub fn set_health(&mut self, checker: Option<health::Checker>) {
        self.health = checker;
    }

    /// Re-reads the configuration file and swaps it in; a failure leaves the running one.
    pub fn reload(&mut self) -> Result<Reloaded, String> {
        let result = self.try_reload();
        let counter = match &result {
            Ok(r) => {
                tracing::info!(
                    generation = r.generation,
                    added = r.listeners_added,
                    removed = r.listeners_removed,
                    "configuration reloaded"
                );
                for key in &r.restart_required {
                    tracing::warn!("reload: {key} changed; it takes effect on restart");
                }
                &self.shared.reloads_ok
            }
            Err(e) => {
                tracing::error!("reload failed, running configuration kept: {e}");
                &self.shared.reloads_failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn try_reload(&mut self) -> Result<Reloaded, String> {
        if self.shared.draining.load(Ordering::SeqCst) {
            return Err("the server is shutting down".into());
        }
        let old = self.shared.current.load_full();
        let path: PathBuf = old
            .config
            .source
            .clone()
            .ok_or("the configuration was not read from a file; nothing to re-read")?;
        let config = crate::config::Config::load(&path).map_err(|e| e.to_string())?;
        self.swap_in(config)
    }

    /// Swaps `config` in (the file was already read and validated), with the targets DNS
    /// discovered for it merged in.
    pub fn swap_in(&mut self, mut config: Config) -> Result<Reloaded, String> {
        let old = self.shared.current.load_full();
        let restart_required = keep_restart_only(&old.config, &mut config);
        let base = Arc::new(config);
        let reloaded =
            self.install(merge::effective(&base, &self.found), Some(restart_required))?;
        let me = self.me.clone();
        if let Err(e) = self.follow_dns(me, base) {
            tracing::error!("DNS discovery could not start: {e}");
        }
        Ok(reloaded)
    }

    /// Builds the generation of `config` and hands it to every worker. `restart_required` is
    /// `None` when only discovered targets changed (the file was not read again).
    fn install(
        &mut self,
        config: Config,
        restart_required: Option<Vec<&'static str>>,
    ) -> Result<Reloaded, String> {
        let old = self.shared.current.load_full();
        let workers = self.workers.len();
        // Listeners at an address already bound keep their socket (and its queue); others bind.
        let mut socket_ids = Vec::with_capacity(config.listeners.len());
        let mut addrs = Vec::with_capacity(config.listeners.len());
        let mut added: Vec<(usize, Vec<BoundSocket>)> = Vec::new();
        for l in &config.listeners {
            let existing = (0..self.sockets.len()).find(|&id| {
                let free = !socket_ids.contains(&id);
                free && self.sockets[id].as_ref().is_some_and(|s| s.serves(l))
            });
            match existing {
                Some(id) => {
                    socket_ids.push(id);
                    let i = old.sockets.iter().position(|&s| s == id);
                    addrs.push(i.map_or_else(|| l.addr.clone(), |i| old.addrs[i].clone()));
                }
                None => {
                    // Dropping `added` on an error below closes what this reload bound.
                    let bound = listener::bind(l, workers).map_err(|e| e.to_string())?;
                    let id = self.sockets.len() + added.len();
                    socket_ids.push(id);
                    addrs.push(bound.addr);
                    added.push((id, bound.sockets));
                }
            }
        }
        let config = Arc::new(config);
        let gen = if restart_required.is_none() && added.is_empty() && socket_ids == old.sockets {
            // Only targets changed (DNS): listeners keep their TLS state.
            old.with_targets(config.clone(), workers)
        } else {
            Generation::build(
                old.id + 1,
                config.clone(),
                Some(&old),
                socket_ids.clone(),
                addrs,
                workers,
            )
            .map_err(|e| e.to_string())?
        };
        let restart_required = restart_required.unwrap_or_default();
        let gen = Arc::new(gen);
        let removed: Vec<usize> = (0..self.sockets.len())
            .filter(|id| self.sockets[*id].is_some() && !socket_ids.contains(id))
            .collect();
        // Committed from here: every worker gets the generation and its new sockets.
        for (id, _) in &added {
            let l = socket_ids
                .iter()
                .position(|s| s == id)
                .expect("bound for a listener");
            self.sockets.push(Some(Socket {
                configured: config.listeners[l].addr.clone(),
                name: config.listeners[l].name.clone(),
            }));
        }
        for (l, &id) in config.listeners.iter().zip(&socket_ids) {
            if let Some(s) = &mut self.sockets[id] {
                s.name.clone_from(&l.name);
            }
        }
        let mut per_worker: Vec<Vec<(usize, BoundSocket)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let listeners_added = added.len();
        for (id, sockets) in added {
            for (w, socket) in sockets.into_iter().enumerate() {
                per_worker[w].push((id, socket));
            }
        }
        let (done_tx, done_rx) = mpsc::channel();
        for (link, add) in self.workers.iter_mut().zip(per_worker) {
            let msg = WorkerMsg::Reload {
                gen: gen.clone(),
                add,
                remove: removed.clone(),
                done: done_tx.clone(),
            };
            if link.tx.send(msg).is_ok() {
                let _ = link.wake.write_all(&[1]);
            }
        }
        drop(done_tx);
        let deadline = std::time::Instant::now() + RELOAD_ACK_TIMEOUT;
        let mut acked = 0;
        while acked < workers {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(_) => acked += 1,
                Err(_) => {
                    tracing::warn!(
                        acked,
                        workers,
                        "reload: not every worker switched in time; the rest will when free"
                    );
                    break;
                }
            }
        }
        self.shared.current.store(gen.clone());
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(gen.clone());
        for id in &removed {
            if let Some(Socket {
                configured: ListenAddr::Unix(path),
                ..
            }) = self.sockets[*id].take()
            {
                // The workers stopped accepting on it (acked above); the file would block a
                // later bind of the same path.
                let _ = std::fs::remove_file(path);
            }
        }
        // Probes follow the new targets; those that stayed keep their verdict meanwhile.
        if let Some(h) = self.health.take() {
            h.stop();
        }
        self.health = health::Checker::start(config.clone(), gen.targets.clone())
            .map_err(|e| format!("health checker: {e}"))?;
        Ok(Reloaded {
            generation: gen.id,
            listeners_added,
            listeners_removed: removed.len(),
            restart_required,
        })
    }

    /// Starts the drain: stops probes, then (after `shutdown_delay`, readiness failing meanwhile)
    /// tells every worker to stop accepting and finish.
    pub fn drain(&mut self, shutdown_delay: Duration) {
        if let Some(h) = self.health.take() {
            h.stop();
        }
        self.discoverer = None;
        self.shared.draining.store(true, Ordering::SeqCst);
        // Keep accepting meanwhile so traffic that load balancers still send (until they
        // notice) is served, not refused.
        if !shutdown_delay.is_zero() && !self.workers.is_empty() {
            std::thread::sleep(shutdown_delay);
        }
        self.workers.clear();
    }

    /// Unix socket files of the listeners still bound (removed on shutdown).
    pub fn unix_paths(&self) -> Vec<PathBuf> {
        self.sockets
            .iter()
            .flatten()
            .filter_map(|s| match &s.configured {
                ListenAddr::Unix(p) => Some(p.clone()),
                ListenAddr::Tcp(_) => None,
            })
            .collect()
    }
}

/// Settings a running server cannot change: the file's values are replaced by the running
/// ones (so `/config` tells what runs) and named in the result.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut keep = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    keep("workers", running.workers != new.workers);
    keep("pin_workers", running.pin_workers != new.pin_workers);
    keep("driver", running.driver != new.driver);
    keep("admin", running.admin != new.admin);
    keep(
        "log",
        format!("{:?}", running.log) != format!("{:?}", new.log),
    );
    new.workers = running.workers;
    new.pin_workers = running.pin_workers;
    new.driver = running.driver;
    new.admin = running.admin;
    new.log = running.log.clone();
    changed
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut restart = String::new();
        for key in &self.restart_required {
            let _ = write!(restart, " {key}");
        }
        write!(
            f,
            "generation {}: {} listener(s) added, {} removed{}",
            self.generation,
            self.listeners_added,
            self.listeners_removed,
            if restart.is_empty() {
                String::new()
            } else {
                format!("; needs a restart to change:{restart}")
            }
        )
    }
}
