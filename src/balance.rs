//! Target selection. Every worker owns a replica of each upstream's balancer (`Cell` state, no
//! locks); the inputs that must be global (in-flight requests, open connections, health) are
//! atomics in `TargetShared`, so replicas decide sensibly together.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::config::{Policy, Target, Upstream};

/// State of one target shared by all workers.
#[derive(Debug)]
pub struct TargetShared {
    /// Requests being proxied to this target right now, across workers.
    pub in_flight: AtomicU32,
    /// Open (or dialing) connections to this target, across workers, pooled ones included.
    pub conns: AtomicU32,
    pub healthy: AtomicBool,
}

impl TargetShared {
    pub fn new() -> Self {
        TargetShared {
            in_flight: AtomicU32::new(0),
            conns: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

impl Default for TargetShared {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared state for every target of every upstream: `[upstream][target]`.
pub type SharedTargets = Vec<Vec<Arc<TargetShared>>>;

pub fn shared_targets(upstreams: &[Upstream]) -> SharedTargets {
    upstreams
        .iter()
        .map(|u| {
            u.targets
                .iter()
                .map(|_| Arc::new(TargetShared::new()))
                .collect()
        })
        .collect()
}

/// The targets already tried for one request; selection skips them while others remain.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u128);

impl Tried {
    /// Targets past the mask's width are never excluded (they stay selectable).
    pub fn insert(&mut self, i: usize) {
        if i < 128 {
            self.0 |= 1 << i;
        }
    }
    pub fn contains(&self, i: usize) -> bool {
        i < 128 && self.0 & (1 << i) != 0
    }
}

/// One worker's replica of an upstream's balancer.
pub struct Balancer {
    policy: Policy,
    choose: usize,
    targets: Vec<TargetRef>,
    rr_next: Cell<usize>,
    /// Smooth weighted round robin's current weights (nginx's algorithm).
    wrr_current: RefCell<Vec<i64>>,
    rng: Cell<u64>,
}

struct TargetRef {
    shared: Arc<TargetShared>,
    weight: u32,
    max_conns: Option<u32>,
}

impl Balancer {
    /// `worker` offsets round robin so N workers do not hit targets in lockstep; `seed` makes
    /// random policies reproducible in tests.
    pub fn new(up: &Upstream, shared: &[Arc<TargetShared>], worker: usize, seed: u64) -> Self {
        debug_assert_eq!(up.targets.len(), shared.len());
        let targets: Vec<TargetRef> = up
            .targets
            .iter()
            .zip(shared)
            .map(|(t, s): (&Target, _)| TargetRef {
                shared: s.clone(),
                weight: t.weight.max(1),
                max_conns: t.max_connections,
            })
            .collect();
        let n = targets.len().max(1);
        Balancer {
            policy: up.lb.policy,
            choose: up.lb.choose.max(1),
            rr_next: Cell::new(worker % n),
            wrr_current: RefCell::new(vec![0; targets.len()]),
            targets,
            rng: Cell::new(seed | 1),
        }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Whether a target can take a request now: healthy, not tried, and below its connection cap
    /// unless `reuse` says an idle pooled connection is at hand (reusing one adds no connection).
    fn available(&self, i: usize, tried: Tried, has_idle: &impl Fn(usize) -> bool) -> bool {
        let t = &self.targets[i];
        if tried.contains(i) || !t.shared.healthy.load(Ordering::Relaxed) {
            return false;
        }
        match t.max_conns {
            Some(max) => t.shared.conns.load(Ordering::Relaxed) < max || has_idle(i),
            None => true,
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: cheap, good enough for spreading load, no shared state.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn in_flight(&self, i: usize) -> u32 {
        self.targets[i].shared.in_flight.load(Ordering::Relaxed)
    }

    /// Picks a target index, or `None` when none is available. Never allocates.
    pub fn select(&self, tried: Tried, has_idle: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let ok = |i: usize| self.available(i, tried, &has_idle);
        match self.policy {
            Policy::First => (0..n).find(|&i| ok(i)),
            Policy::RoundRobin => {
                let start = self.rr_next.get();
                let pick = (0..n).map(|k| (start + k) % n).find(|&i| ok(i))?;
                self.rr_next.set((pick + 1) % n);
                Some(pick)
            }
            Policy::Random => self.random_available(n, &ok),
            Policy::RandomChoose => {
                let mut best: Option<usize> = None;
                for _ in 0..self.choose {
                    let Some(i) = self.random_available(n, &ok) else {
                        break;
                    };
                    if best.is_none_or(|b| self.in_flight(i) < self.in_flight(b)) {
                        best = Some(i);
                    }
                }
                best
            }
            Policy::LeastConn => {
                let mut best: Option<usize> = None;
                let mut ties = 0u64;
                for i in (0..n).filter(|&i| ok(i)) {
                    match best {
                        Some(b) if self.in_flight(i) > self.in_flight(b) => {}
                        Some(b) if self.in_flight(i) == self.in_flight(b) => {
                            // Reservoir sampling breaks ties uniformly at random.
                            ties += 1;
                            if self.next_random().is_multiple_of(ties + 1) {
                                best = Some(i);
                            }
                        }
                        _ => {
                            best = Some(i);
                            ties = 0;
                        }
                    }
                }
                best
            }
            Policy::WeightedRoundRobin => {
                let mut current = self.wrr_current.borrow_mut();
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| ok(i)) {
                    let w = self.targets[i].weight as i64;
                    current[i] += w;
                    total += w;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                current[b] -= total;
                Some(b)
            }
        }
    }

    /// A uniformly random available target: a few random probes, then a scan from a random
    /// start so a mostly-down upstream still finds its live targets.
    fn random_available(&self, n: usize, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..3 {
            let i = (self.next_random() % n as u64) as usize;
            if ok(i) {
                return Some(i);
            }
        }
        let start = (self.next_random() % n as u64) as usize;
        (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
    }

    pub fn shared(&self, i: usize) -> &Arc<TargetShared> {
        &self.targets[i].shared
    }

    /// Reserves a new connection slot against `max_connections`; false when the target is full.
    pub fn try_reserve_conn(&self, i: usize) -> bool {
        let t = &self.targets[i];
        let prev = t.shared.conns.fetch_add(1, Ordering::AcqRel);
        match t.max_conns {
            Some(max) if prev >= max => {
                t.shared.conns.fetch_sub(1, Ordering::AcqRel);
                false
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Forwarded, HeaderOps, Lb, TargetAddr, Transport};
    use std::time::Duration;

    fn upstream(policy: Policy, weights: &[u32]) -> Upstream {
        Upstream {
            name: "u".into(),
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Target {
                    addr: TargetAddr::Tcp {
                        host: format!("127.0.0.1:{}", 9000 + i),
                        addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                    },
                    weight: w,
                    max_connections: None,
                })
                .collect(),
            lb: Lb {
                policy,
                choose: 2,
                retries: 0,
                try_duration: None,
                try_interval: Duration::from_millis(250),
                retry_methods: vec!["GET".into()],
            },
            transport: Transport {
                dial_timeout: None,
                response_header_timeout: None,
                read_timeout: None,
                write_timeout: None,
                keepalive: true,
                idle_timeout: None,
                max_idle_per_worker: 32,
                proxy_protocol: crate::config::ProxyProtocol::Off,
            },
            headers: HeaderOps::default(),
            forwarded: Forwarded::Xff,
            request_buffer: 0,
            response_buffer: 0,
        }
    }

    fn balancer(
        policy: Policy,
        weights: &[u32],
        worker: usize,
    ) -> (Balancer, Vec<Arc<TargetShared>>) {
        let up = upstream(policy, weights);
        let shared = shared_targets(std::slice::from_ref(&up)).remove(0);
        (Balancer::new(&up, &shared, worker, 42), shared)
    }

    #[test]
    fn round_robin_visits_each_target_once_per_cycle() {
        let (b, _) = balancer(Policy::RoundRobin, &[1, 1, 1], 0);
        let picks: Vec<_> = (0..6)
            .map(|_| b.select(Tried::default(), |_| false).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_workers_start_at_different_offsets() {
        let (b0, _) = balancer(Policy::RoundRobin, &[1, 1, 1], 0);
        let (b1, _) = balancer(Policy::RoundRobin, &[1, 1, 1], 1);
        assert_ne!(
            b0.select(Tried::default(), |_| false),
            b1.select(Tried::default(), |_| false)
        );
    }

    #[test]
    fn unhealthy_and_tried_targets_are_skipped() {
        let (b, shared) = balancer(Policy::RoundRobin, &[1, 1, 1], 0);
        shared[1].healthy.store(false, Ordering::Relaxed);
        let mut tried = Tried::default();
        tried.insert(0);
        assert_eq!(b.select(tried, |_| false), Some(2));
        tried.insert(2);
        assert_eq!(b.select(tried, |_| false), None);
    }

    #[test]
    fn weighted_round_robin_follows_weights_smoothly() {
        let (b, _) = balancer(Policy::WeightedRoundRobin, &[5, 1, 1], 0);
        let picks: Vec<_> = (0..7)
            .map(|_| b.select(Tried::default(), |_| false).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
        // Smooth: the heavy target is never picked more than twice in a row here.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_prefers_target_with_fewest_in_flight_requests() {
        let (b, shared) = balancer(Policy::LeastConn, &[1, 1, 1], 0);
        shared[0].in_flight.store(5, Ordering::Relaxed);
        shared[2].in_flight.store(1, Ordering::Relaxed);
        assert_eq!(b.select(Tried::default(), |_| false), Some(1));
    }

    #[test]
    fn random_choose_never_picks_the_busier_of_two_targets() {
        let (b, shared) = balancer(Policy::RandomChoose, &[1, 1], 0);
        shared[0].in_flight.store(3, Ordering::Relaxed);
        let ones = (0..1000)
            .filter(|_| b.select(Tried::default(), |_| false) == Some(1))
            .count();
        // With 2 samples the busy target wins only when both samples hit it (~1/4).
        assert!(
            ones > 650,
            "picked the idle target only {ones} times of 1000"
        );
    }

    #[test]
    fn full_target_is_skipped_unless_an_idle_connection_exists() {
        let mut up = upstream(Policy::First, &[1, 1]);
        up.targets[0].max_connections = Some(1);
        let shared = shared_targets(std::slice::from_ref(&up)).remove(0);
        let b = Balancer::new(&up, &shared, 0, 1);
        assert!(b.try_reserve_conn(0));
        assert!(!b.try_reserve_conn(0));
        assert_eq!(b.select(Tried::default(), |_| false), Some(1));
        assert_eq!(b.select(Tried::default(), |i| i == 0), Some(0));
    }
}
