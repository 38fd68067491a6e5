//! What workers and the control side share: atomics and immutable data only. A leaf: anything
//! may import it, and it imports nothing that runs.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

use arc_swap::ArcSwap;

use crate::control::generation::Generation;
use crate::observe::metrics::{TunnelCounters, WorkerMetrics};
use crate::observe::series::Registry;

/// State shared by all workers: only atomics (and immutable data).
pub struct Shared {
    pub draining: AtomicBool,
    /// One entry per worker, indexed by worker id; each written only by its worker.
    pub metrics: Vec<WorkerMetrics>,
    /// Client handshakes that failed or timed out, on every listener.
    pub tls_handshake_failures: AtomicU64,
    /// Handshakes with TLS targets that failed or timed out.
    pub upstream_tls_failures: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Layer-4 tunnel counters, indexed by worker id.
    pub tunnels: Vec<TunnelCounters>,
    /// The configuration new connections get (workers learn of a new one by message; this is
    /// for the admin endpoint and the control side).
    pub current: ArcSwap<Generation>,
    /// Every generation whose counters a scrape must still sum.
    pub registry: Mutex<Registry>,
    /// DNS lookups of dynamic upstreams: failures and the state of each name.
    pub dns: std::sync::Arc<crate::control::discover::stats::DnsStats>,
}

impl Shared {
    /// Rebuilds every TLS listener's certificates from their files. New connections get the
    /// new config; open ones keep theirs. A listener whose files are broken keeps the config
    /// it had; the error names it.
    pub fn reload_tls(&self) -> Result<usize, String> {
        let gen = self.current.load_full();
        let mut reloaded = 0;
        let mut errors = Vec::new();
        for (state, l) in gen.listener_tls.iter().zip(&gen.config.listeners) {
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
