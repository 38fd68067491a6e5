//! A generation: one loaded configuration and what every worker shares because of it (target
//! health and load, TLS configs, labelled metrics). A reload builds the next generation next to
//! the running one; requests in flight finish on the generation they started on.
//!
//! Targets are matched across generations by upstream name, address and transport settings:
//! a target that is unchanged keeps its [`TargetShared`] (health verdict, passive failures,
//! connection count), and because pooled connections point at that same state, a worker can
//! tell which of its idle connections may move to the new generation by pointer equality.

use std::io;
use std::sync::Arc;

use crate::config::{Config, ListenAddr, TargetSource, Upstream};
use crate::net::tls::ListenerTlsState;
use crate::observe::metrics::GenMetrics;
use crate::upstream::balance::SharedTargets;
use crate::upstream::target::TargetShared;

/// One configuration and its shared state. Immutable once built (only atomics inside change).
pub struct Generation {
    /// Counts up from 1 with each successful reload.
    pub id: u64,
    pub config: Arc<Config>,
    /// `[upstream][target]` health and load, indexed like `config.upstreams`.
    pub targets: SharedTargets,
    /// Per listener (indexed like `config.listeners`): its TLS server config.
    pub listener_tls: Vec<Option<Arc<ListenerTlsState>>>,
    /// Per upstream: the TLS client config its TLS targets are dialed with.
    pub upstream_tls: Vec<Option<Arc<rustls::ClientConfig>>>,
    /// Per listener: the id of the bound socket it accepts on. Socket ids outlive generations,
    /// so a connection knows its listener again after a reload.
    pub sockets: Vec<usize>,
    /// Per listener: the address it is bound at (`:0` resolved).
    pub addrs: Vec<ListenAddr>,
    /// Per worker: counters labelled by this configuration's listeners, upstreams and targets.
    pub metrics: Vec<GenMetrics>,
}

impl Generation {
    /// Builds generation `id` from `config`. Targets unchanged since `prev` keep its shared state.
    pub fn build(
        id: u64,
        config: Arc<Config>,
        prev: Option<&Generation>,
        sockets: Vec<usize>,
        addrs: Vec<ListenAddr>,
        workers: usize,
    ) -> io::Result<Generation> {
        debug_assert_eq!(sockets.len(), config.listeners.len());
        debug_assert_eq!(addrs.len(), config.listeners.len());
        Ok(Generation {
            id,
            listener_tls: tls_states(&config)?,
            upstream_tls: tls_connectors(&config)?,
            metrics: (0..workers).map(|_| GenMetrics::new(&config)).collect(),
            targets: targets_after(&config, prev),
            sockets,
            addrs,
            config,
        })
    }

    /// The generation after this one when only upstream targets changed (DNS discovery):
    /// listeners keep their TLS state (certificates are not re-read, session tickets stay
    /// valid) and their sockets; TLS client configs stay too (the transport did not change).
    pub fn with_targets(&self, config: Arc<Config>, workers: usize) -> Generation {
        Generation {
            id: self.id + 1,
            listener_tls: self.listener_tls.clone(),
            upstream_tls: self.upstream_tls.clone(),
            metrics: (0..workers).map(|_| GenMetrics::new(&config)).collect(),
            targets: targets_after(&config, Some(self)),
            sockets: self.sockets.clone(),
            addrs: self.addrs.clone(),
            config,
        }
    }

    /// The shared state of the target in this generation that `new.targets[t]` continues.
    fn find_target(&self, new: &Upstream, t: usize) -> Option<Arc<TargetShared>> {
        let (ui, old) = self
            .config
            .upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| u.name == new.name)?;
        // Connections and the failure ring only carry over where they mean the same thing.
        if old.health.passive.max_fails != new.health.passive.max_fails
            || format!("{:?}", old.transport) != format!("{:?}", new.transport)
        {
            return None;
        }
        let target = &new.targets[t];
        let ti = old
            .targets
            .iter()
            .position(|o| o.addr == target.addr && o.tls == target.tls)?;
        let shared = self.targets[ui][ti].clone();
        if new.health.active.is_none() {
            // Nothing would ever probe it up again.
            shared
                .healthy
                .store(true, std::sync::atomic::Ordering::Relaxed);
            shared
                .unprobed
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        Some(shared)
    }

    /// The listener (index into `config.listeners`) that accepts on socket `socket`.
    pub fn listener_of(&self, socket: usize) -> Option<usize> {
        self.sockets.iter().position(|&s| s == socket)
    }
}

/// Shared state for `config`'s targets: continued from `prev` where a target did not change.
fn targets_after(config: &Config, prev: Option<&Generation>) -> SharedTargets {
    config
        .upstreams
        .iter()
        .map(|u| {
            (0..u.targets.len())
                .map(|t| {
                    prev.and_then(|p| p.find_target(u, t)).unwrap_or_else(|| {
                        let max_fails = u.health.passive.max_fails;
                        // A discovered target is probed before it takes traffic.
                        let discovered = u.targets[t].source != TargetSource::Static;
                        Arc::new(if discovered && u.health.active.is_some() {
                            TargetShared::awaiting_probe(max_fails)
                        } else {
                            TargetShared::with_max_fails(max_fails)
                        })
                    })
                })
                .collect()
        })
        .collect()
}

fn tls_states(config: &Config) -> io::Result<Vec<Option<Arc<ListenerTlsState>>>> {
    config
        .listeners
        .iter()
        .map(|l| match &l.tls {
            Some(t) => ListenerTlsState::new(t)
                .map(|s| Some(Arc::new(s)))
                .map_err(|e| io::Error::other(format!("listener {}: tls.{e}", l.name))),
            None => Ok(None),
        })
        .collect()
}

fn tls_connectors(config: &Config) -> io::Result<Vec<Option<Arc<rustls::ClientConfig>>>> {
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
                crate::net::tls::client_config(t)
                    .map(|mut c| {
                        // `transport.versions`: h2 offered by ALPN, in the order written.
                        c.alpn_protocols = u.transport.alpn();
                        Some(Arc::new(c))
                    })
                    .map_err(|e| {
                        io::Error::other(format!("upstream {}: transport.tls.{e}", u.name))
                    })
            }
            None => Ok(None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Arc<Config> {
        Arc::new(crate::config::Config::parse(yaml, "test.yaml").expect("valid config"))
    }

    fn addrs() -> Vec<ListenAddr> {
        vec![ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap())]
    }

    const BASE: &str = "
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes:
      - upstream: app
upstreams:
  app:
    targets: [127.0.0.1:9001, 127.0.0.1:9002]
";

    #[test]
    fn unchanged_targets_keep_their_shared_state_and_new_ones_start_fresh() {
        let old = Generation::build(1, config(BASE), None, vec![0], addrs(), 1).unwrap();
        old.targets[0][1].record_failure(5);
        let next = BASE.replace(
            "[127.0.0.1:9001, 127.0.0.1:9002]",
            "[127.0.0.1:9002, 127.0.0.1:9003]",
        );
        let new = Generation::build(2, config(&next), Some(&old), vec![0], addrs(), 1).unwrap();
        assert!(Arc::ptr_eq(&new.targets[0][0], &old.targets[0][1]));
        assert!(!Arc::ptr_eq(&new.targets[0][1], &old.targets[0][0]));
        assert!(
            new.targets[0][0].passive_down(6, 1_000),
            "failure memory carried over"
        );
    }

    #[test]
    fn a_changed_transport_gives_targets_fresh_state() {
        let old = Generation::build(1, config(BASE), None, vec![0], addrs(), 1).unwrap();
        let next = format!("{BASE}    transport:\n      dial_timeout: 7s\n");
        let new = Generation::build(2, config(&next), Some(&old), vec![0], addrs(), 1).unwrap();
        assert!(!Arc::ptr_eq(&new.targets[0][0], &old.targets[0][0]));
    }

    #[test]
    fn a_targets_only_change_keeps_listener_sockets_and_unchanged_targets() {
        let old = Generation::build(1, config(BASE), None, vec![3], addrs(), 1).unwrap();
        let mut next = (*old.config).clone();
        next.upstreams[0].targets.remove(0);
        let new = old.with_targets(Arc::new(next), 1);
        assert_eq!((new.id, new.sockets.clone()), (2, vec![3]));
        assert_eq!(new.addrs, old.addrs);
        assert_eq!(new.targets[0].len(), 1);
        assert!(Arc::ptr_eq(&new.targets[0][0], &old.targets[0][1]));
    }

    #[test]
    fn a_new_discovered_target_waits_for_its_first_probe_only_under_active_health() {
        let old = Generation::build(1, config(BASE), None, vec![0], addrs(), 1).unwrap();
        for (health, healthy) in [(false, true), (true, false)] {
            let mut next = (*old.config).clone();
            let u = &mut next.upstreams[0];
            u.targets[1].source = crate::config::TargetSource::A;
            u.targets[1].addr = crate::config::TargetAddr::Tcp {
                host: "127.0.0.9:80".into(),
                addr: "127.0.0.9:80".parse().unwrap(),
            };
            if health {
                let yaml = format!("{BASE}    health: {{ active: {{ uri: /h }} }}\n");
                u.health = config(&yaml).upstreams[0].health.clone();
            }
            let new = old.with_targets(Arc::new(next), 1);
            let s = &new.targets[0][1];
            assert_eq!(
                s.healthy.load(std::sync::atomic::Ordering::Relaxed),
                healthy
            );
            assert_eq!(
                s.unprobed.load(std::sync::atomic::Ordering::Relaxed),
                !healthy
            );
        }
    }

    #[test]
    fn listeners_are_found_by_their_socket_id() {
        let g = Generation::build(1, config(BASE), None, vec![7], addrs(), 1).unwrap();
        assert_eq!(g.listener_of(7), Some(0));
        assert_eq!(g.listener_of(0), None);
    }
}
