//! Target selection. Every worker owns a replica of each upstream's balancer (`Cell` state, no
//! locks); the inputs that must be global (in-flight requests, open connections, active and
//! passive health, latency) are atomics in `TargetShared`, so replicas decide sensibly together.

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Policy, Split, Target, TargetSource, Upstream};
use crate::upstream::target::{dial_name, now_ms, TargetShared};

/// Random probes before `random_available` falls back to a scan, so a mostly-down upstream
/// still finds its live targets in bounded time.
const RANDOM_PROBES: usize = 3;

/// Shared state for every target of every upstream: `[upstream][target]`.
pub type SharedTargets = Vec<Vec<Arc<TargetShared>>>;

pub fn shared_targets(upstreams: &[Upstream]) -> SharedTargets {
    upstreams
        .iter()
        .map(|u| {
            u.targets
                .iter()
                .map(|_| Arc::new(TargetShared::with_max_fails(u.health.passive.max_fails)))
                .collect()
        })
        .collect()
}

/// The cookie policy's value for a target: hex HMAC-SHA256(secret, dial address).
pub fn cookie_value(secret: &str, dial: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(dial.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// FNV-1a: a stable, allocation-free hash of a key's bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A 64-bit finalizer (murmur3's fmix64): spreads the key/target combination for HRW scores.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
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
    split: Option<Split>,
    /// Round robin's next index, per side (main, split).
    rr_next: [Cell<usize>; 2],
    /// Smooth weighted round robin's current weights (nginx's algorithm).
    wrr_current: RefCell<Vec<i64>>,
    rng: Cell<u64>,
    /// Passive health's memory in ms; `None` when passive health is off.
    fail_ms: Option<u64>,
    /// `unhealthy_request_count`.
    max_requests: Option<u32>,
    /// Some targets carry an SRV priority: only the lowest one with a healthy target serves.
    tiered: bool,
    /// `transport.max_connections`: connections to all targets together, across workers.
    max_upstream_conns: Option<u32>,
}

struct TargetRef {
    shared: Arc<TargetShared>,
    weight: u32,
    max_conns: Option<u32>,
    /// The target's identity for rendezvous hashing.
    hrw_seed: u64,
    /// The cookie policy's value for this target (empty for other policies).
    cookie: String,
    /// SRV priority (lower first); `None`: in every tier.
    tier: Option<u16>,
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
            .map(|(t, s): (&Target, _)| {
                let dial = dial_name(&t.addr);
                // Addresses of one re-resolved hostname share its name: the address tells
                // them apart.
                let identity = match (&t.source, &t.addr) {
                    (TargetSource::Hostname, crate::config::TargetAddr::Tcp { addr, .. }) => {
                        format!("{dial}@{addr}")
                    }
                    _ => dial,
                };
                TargetRef {
                    shared: s.clone(),
                    weight: t.weight.max(1),
                    max_conns: t.max_connections,
                    hrw_seed: mix64(fnv1a(identity.as_bytes())),
                    cookie: if up.lb.policy == Policy::Cookie {
                        cookie_value(&up.lb.secret, &identity)
                    } else {
                        String::new()
                    },
                    tier: match t.source {
                        TargetSource::Srv { priority } => Some(priority),
                        _ => None,
                    },
                }
            })
            .collect();
        let tiered = targets.iter().any(|t| t.tier.is_some());
        let split = up.split.filter(|s| s.start > 0 && s.start < targets.len());
        let side_len = |side: usize| match split {
            Some(s) if side == 1 => targets.len() - s.start,
            Some(s) => s.start,
            None => targets.len(),
        };
        Balancer {
            policy: up.lb.policy,
            choose: up.lb.choose.max(1),
            rr_next: [
                Cell::new(worker % side_len(0).max(1)),
                Cell::new(worker % side_len(1).max(1)),
            ],
            wrr_current: RefCell::new(vec![0; targets.len()]),
            targets,
            split,
            rng: Cell::new(seed | 1),
            fail_ms: up
                .health
                .passive
                .fail_duration
                .map(|d| d.as_millis().max(1) as u64),
            max_requests: up.health.passive.unhealthy_request_count,
            tiered,
            max_upstream_conns: up.transport.max_connections,
        }
    }

    /// Whether the upstream-wide cap is reached. Sequentially consistent with the increment in
    /// `try_reserve_conn`: of two workers reserving the last slot at once, at most one keeps it.
    fn upstream_full(&self) -> bool {
        self.max_upstream_conns.is_some_and(|max| {
            let open: u32 = self
                .targets
                .iter()
                .map(|t| t.shared.conns.load(Ordering::SeqCst))
                .sum();
            open >= max
        })
    }

    /// Whether a request finding nothing to select should wait for a connection slot: some
    /// target it has not tried is up but at its cap (or the upstream at its own).
    pub fn waits_for_slot(&self, tried: Tried) -> bool {
        let now = now_ms();
        let upstream_full = self.upstream_full();
        (0..self.targets.len()).any(|i| {
            let t = &self.targets[i];
            let s = &t.shared;
            !tried.contains(i)
                && s.healthy.load(Ordering::Relaxed)
                && !self.fail_ms.is_some_and(|ms| s.passive_down(now, ms))
                && (upstream_full
                    || t.max_conns
                        .is_some_and(|max| s.conns.load(Ordering::Relaxed) >= max))
        })
    }

    /// The lowest SRV priority that has a healthy target (`None`: no tiers, or none healthy).
    fn live_tier(&self, now: u64) -> Option<u16> {
        let healthy = |s: &TargetShared| {
            s.healthy.load(Ordering::Relaxed)
                && !self.fail_ms.is_some_and(|ms| s.passive_down(now, ms))
        };
        let tiers = self.targets.iter().filter(|t| healthy(&t.shared));
        tiers.filter_map(|t| t.tier).min()
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Whether passive health is on (callers skip failure bookkeeping otherwise).
    /// Records a passive failure of target `t` (when passive health is on).
    pub fn record_failure(&self, t: usize) {
        if let Some(ms) = self.fail_ms {
            self.shared(t).record_failure_within(now_ms(), ms);
        }
    }

    pub fn passive_enabled(&self) -> bool {
        self.fail_ms.is_some()
    }

    /// The cookie policy's value for target `i`.
    pub fn cookie(&self, i: usize) -> &str {
        &self.targets[i].cookie
    }

    /// Whether a target can take a request now: healthy (actively and passively), not tried,
    /// below `unhealthy_request_count`, and below its connection cap unless `has_idle` says an
    /// idle pooled connection is at hand (reusing one adds no connection).
    fn available(
        &self,
        i: usize,
        tried: Tried,
        (now, upstream_full): (u64, bool),
        has_idle: &impl Fn(usize) -> bool,
    ) -> bool {
        let t = &self.targets[i];
        let s = &t.shared;
        if tried.contains(i) || !s.healthy.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(ms) = self.fail_ms {
            if s.passive_down(now, ms) {
                return false;
            }
        }
        if let Some(max) = self.max_requests {
            if s.in_flight.load(Ordering::Relaxed) >= max {
                return false;
            }
        }
        if upstream_full && !has_idle(i) {
            // Another worker's idle connection may be holding the slot: ask for it.
            if !s.wanted.load(Ordering::Relaxed) {
                s.wanted.store(true, Ordering::Relaxed);
            }
            return false;
        }
        match t.max_conns {
            Some(max) if s.conns.load(Ordering::Relaxed) >= max && !has_idle(i) => {
                // Load first: a flag already raised costs no cache-line write.
                if !s.wanted.load(Ordering::Relaxed) {
                    s.wanted.store(true, Ordering::Relaxed);
                }
                false
            }
            _ => true,
        }
    }

    /// Whether target `i` has a `max_connections` cap, its own or the upstream's.
    pub fn is_capped(&self, i: usize) -> bool {
        self.targets[i].max_conns.is_some() || self.max_upstream_conns.is_some()
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

    /// Picks a target index, or `None` when none is available. `key` is the request's hash key
    /// for the hashing policies (the cookie value for `cookie`), borrowed from the request
    /// buffer; `None` falls back to random. Never allocates.
    pub fn select(
        &self,
        tried: Tried,
        key: Option<&[u8]>,
        has_idle: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let now = if self.fail_ms.is_some() { now_ms() } else { 0 };
        let upstream_full = self.upstream_full();
        let tier = if self.tiered {
            self.live_tier(now)
        } else {
            None
        };
        let ok = |i: usize| {
            let in_tier = match (tier, self.targets[i].tier) {
                (Some(live), Some(t)) => t == live,
                _ => true,
            };
            in_tier && self.available(i, tried, (now, upstream_full), &has_idle)
        };
        if self.policy == Policy::Cookie {
            // Sticky: the target the cookie names wins while it is available, on either side.
            if let Some(v) = key {
                if let Some(i) = (0..n).find(|&i| self.targets[i].cookie.as_bytes() == v) {
                    if ok(i) {
                        return Some(i);
                    }
                }
            }
        }
        match self.split {
            None => self.select_in(0, 0..n, key, &ok),
            Some(sp) => {
                let to_split = (self.next_random() % 100) < sp.percent as u64;
                let (main, canary) = (0..sp.start, sp.start..n);
                let (first, second) = if to_split {
                    ((1, canary), (0, main))
                } else {
                    ((0, main), (1, canary))
                };
                // A side with nothing available hands its request to the other side.
                self.select_in(first.0, first.1, key, &ok)
                    .or_else(|| self.select_in(second.0, second.1, key, &ok))
            }
        }
    }

    /// The policy applied to the targets in `range` (one side of a split, or all of them).
    fn select_in(
        &self,
        side: usize,
        range: Range<usize>,
        key: Option<&[u8]>,
        ok: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        debug_assert!(range.end <= self.targets.len());
        let (base, n) = (range.start, range.len());
        if n == 0 {
            return None;
        }
        match self.policy {
            Policy::First => range.clone().find(|&i| ok(i)),
            Policy::RoundRobin => {
                let start = self.rr_next[side].get();
                let pick = (0..n).map(|k| (start + k) % n).find(|&k| ok(base + k))?;
                self.rr_next[side].set((pick + 1) % n);
                Some(base + pick)
            }
            Policy::Random | Policy::Cookie => self.random_available(range, ok),
            Policy::RandomChoose => {
                let mut best: Option<usize> = None;
                for _ in 0..self.choose {
                    let Some(i) = self.random_available(range.clone(), ok) else {
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
                for i in range.filter(|&i| ok(i)) {
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
                for i in range.filter(|&i| ok(i)) {
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
            Policy::IpHash
            | Policy::ClientIpHash
            | Policy::UriHash
            | Policy::Query
            | Policy::Header => match key {
                Some(k) => self.rendezvous(range, k, ok),
                None => self.random_available(range, ok),
            },
            Policy::P2cEwma => {
                let a = self.random_available(range.clone(), ok)?;
                // A second, different sample: a random offset from the first that skips it.
                let off = 1 + (self.next_random() % (n as u64).max(2).saturating_sub(1)) as usize;
                let b = (0..n - 1)
                    .map(|k| base + (a - base + off + k) % n)
                    .find(|&i| i != a && ok(i));
                match b {
                    Some(b)
                        if self.targets[b].shared.ewma_cost()
                            < self.targets[a].shared.ewma_cost() =>
                    {
                        Some(b)
                    }
                    _ => Some(a),
                }
            }
        }
    }

    /// Rendezvous (highest random weight) hashing: each available target scores
    /// `mix(hash(key) ^ target)`; the best wins, so removing a target remaps only its keys.
    fn rendezvous(
        &self,
        range: Range<usize>,
        key: &[u8],
        ok: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let h = fnv1a(key);
        range
            .filter(|&i| ok(i))
            .max_by_key(|&i| mix64(h ^ self.targets[i].hrw_seed))
    }

    /// A uniformly random available target in `range`: a few random probes, then a scan from
    /// a random start.
    fn random_available(&self, range: Range<usize>, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let (base, n) = (range.start, range.len() as u64);
        if n == 0 {
            return None;
        }
        for _ in 0..RANDOM_PROBES {
            let i = base + (self.next_random() % n) as usize;
            if ok(i) {
                return Some(i);
            }
        }
        let start = (self.next_random() % n) as usize;
        (0..n as usize)
            .map(|k| base + (start + k) % n as usize)
            .find(|&i| ok(i))
    }

    pub fn shared(&self, i: usize) -> &Arc<TargetShared> {
        &self.targets[i].shared
    }

    /// Reserves a new connection slot against `max_connections`; false when the target is full.
    pub fn try_reserve_conn(&self, i: usize) -> bool {
        let t = &self.targets[i];
        let prev = t.shared.conns.fetch_add(1, Ordering::SeqCst);
        let over_upstream = self.max_upstream_conns.is_some_and(|max| {
            let open: u32 = self
                .targets
                .iter()
                .map(|t| t.shared.conns.load(Ordering::SeqCst))
                .sum();
            open > max
        });
        match t.max_conns {
            Some(max) if prev >= max => {
                t.shared.conns.fetch_sub(1, Ordering::AcqRel);
                t.shared.wanted.store(true, Ordering::Relaxed);
                false
            }
            _ if over_upstream => {
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
    use crate::config::{Forwarded, HeaderOps, Health, Lb, TargetAddr, Transport};
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
                    tls: false,
                    h2c: false,
                    weight: w,
                    max_connections: None,
                    source: Default::default(),
                    fallbacks: Vec::new(),
                })
                .collect(),
            split: None,
            health: Health::default(),
            lb: Lb {
                policy,
                choose: 2,
                key: String::new(),
                secret: String::new(),
                retries: 0,
                try_duration: None,
                try_interval: Duration::from_millis(250),
                retry_methods: vec!["GET".into()],
                retry_match: None,
            },
            transport: Transport {
                dial_timeout: None,
                response_header_timeout: None,
                read_timeout: None,
                write_timeout: None,
                keepalive: true,
                idle_timeout: None,
                max_idle_per_worker: 32,
                tls: None,
                proxy_protocol: crate::config::ProxyProtocol::Off,
                fastcgi: None,
                versions: vec![crate::config::HttpVersion::Http11],
                queue_timeout: None,
                max_connections: None,
                max_response_header: 64 * 1024,
                keepalive_interval: None,
                local_address: None,
                stream_timeout: None,
                forward_proxy: None,
                fallback: None,
                expect_continue_timeout: None,
                read_buffer: None,
                write_buffer: None,
                keepalive_idle_conns: None,
                stream_close_delay: None,
            },
            headers: HeaderOps::default(),
            forwarded: Forwarded::Xff,
            request_buffer: 0,
            response_buffer: 0,
            dynamic: None,
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
            .map(|_| b.select(Tried::default(), None, |_| false).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_workers_start_at_different_offsets() {
        let (b0, _) = balancer(Policy::RoundRobin, &[1, 1, 1], 0);
        let (b1, _) = balancer(Policy::RoundRobin, &[1, 1, 1], 1);
        assert_ne!(
            b0.select(Tried::default(), None, |_| false),
            b1.select(Tried::default(), None, |_| false)
        );
    }

    #[test]
    fn unhealthy_and_tried_targets_are_skipped() {
        let (b, shared) = balancer(Policy::RoundRobin, &[1, 1, 1], 0);
        shared[1].healthy.store(false, Ordering::Relaxed);
        let mut tried = Tried::default();
        tried.insert(0);
        assert_eq!(b.select(tried, None, |_| false), Some(2));
        tried.insert(2);
        assert_eq!(b.select(tried, None, |_| false), None);
    }

    #[test]
    fn only_the_lowest_srv_priority_with_a_healthy_target_serves_and_static_targets_always_do() {
        // Targets: SRV priority 10 (two), SRV priority 20, and one without a priority.
        let mut up = upstream(Policy::RoundRobin, &[1, 1, 1, 1]);
        let tiers = [Some(10), Some(10), Some(20), None];
        for (t, tier) in up.targets.iter_mut().zip(tiers) {
            t.source = tier.map_or(TargetSource::A, |priority| TargetSource::Srv { priority });
        }
        let shared = shared_targets(std::slice::from_ref(&up)).remove(0);
        let b = Balancer::new(&up, &shared, 0, 42);
        let picks = |b: &Balancer| {
            let mut seen: Vec<usize> = (0..8)
                .filter_map(|_| b.select(Tried::default(), None, |_| false))
                .collect();
            seen.sort();
            seen.dedup();
            seen
        };
        let cases: [(&[usize], &[usize]); 4] = [
            (&[], &[0, 1, 3]),
            (&[0], &[1, 3]),
            (&[0, 1], &[2, 3]),
            (&[0, 1, 2], &[3]),
        ];
        for (down, want) in cases {
            for (i, s) in shared.iter().enumerate() {
                s.healthy.store(!down.contains(&i), Ordering::Relaxed);
            }
            assert_eq!(picks(&b), want, "down: {down:?}");
        }
    }

    #[test]
    fn weighted_round_robin_follows_weights_smoothly() {
        let (b, _) = balancer(Policy::WeightedRoundRobin, &[5, 1, 1], 0);
        let picks: Vec<_> = (0..7)
            .map(|_| b.select(Tried::default(), None, |_| false).unwrap())
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
        assert_eq!(b.select(Tried::default(), None, |_| false), Some(1));
    }

    #[test]
    fn random_choose_never_picks_the_busier_of_two_targets() {
        let (b, shared) = balancer(Policy::RandomChoose, &[1, 1], 0);
        shared[0].in_flight.store(3, Ordering::Relaxed);
        let ones = (0..1000)
            .filter(|_| b.select(Tried::default(), None, |_| false) == Some(1))
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
        assert_eq!(b.select(Tried::default(), None, |_| false), Some(1));
        assert_eq!(b.select(Tried::default(), None, |i| i == 0), Some(0));
    }

    fn pick(b: &Balancer, key: Option<&[u8]>) -> usize {
        b.select(Tried::default(), key, |_| false).unwrap()
    }

    #[test]
    fn cookie_value_equals_caddys_documented_example() {
        assert_eq!(
            cookie_value("secret", "10.1.0.10:8080"),
            "cdd96966817dd14a99f47ee17451464f29998da170814a16b483e4c1ff4c48cf"
        );
    }

    #[test]
    fn cookie_policy_sticks_to_the_target_its_cookie_names_while_it_is_available() {
        let (b, shared) = balancer(Policy::Cookie, &[1, 1, 1], 0);
        let v = b.cookie(2).as_bytes().to_vec();
        assert!((0..50).all(|_| pick(&b, Some(&v)) == 2));
        shared[2].healthy.store(false, Ordering::Relaxed);
        assert!((0..50).all(|_| pick(&b, Some(&v)) != 2));
        // An unknown cookie falls back to random over all targets.
        let seen: std::collections::HashSet<_> =
            (0..200).map(|_| pick(&b, Some(b"nope"))).collect();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn weighted_round_robin_ratios_hold_within_two_percent_over_10k_picks() {
        let (b, _) = balancer(Policy::WeightedRoundRobin, &[5, 3, 2], 0);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[pick(&b, None)] += 1;
        }
        for (c, want) in counts.iter().zip([0.5, 0.3, 0.2]) {
            let got = *c as f64 / 10_000.0;
            assert!((got - want).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn hashing_policies_map_the_same_key_to_the_same_target() {
        for policy in [
            Policy::UriHash,
            Policy::Header,
            Policy::Query,
            Policy::IpHash,
        ] {
            let (b, _) = balancer(policy, &[1, 1, 1, 1], 0);
            for k in 0..100u32 {
                let key = format!("key-{k}");
                let first = pick(&b, Some(key.as_bytes()));
                assert!((0..5).all(|_| pick(&b, Some(key.as_bytes())) == first));
            }
        }
    }

    #[test]
    fn rendezvous_hashing_remaps_only_the_removed_targets_keys() {
        // Property: for many target counts and each removed target, every key that did not
        // live on the removed target keeps its target; the removed target's keys spread out.
        for n in 2..8usize {
            let (b, shared) = balancer(Policy::UriHash, &vec![1; n], 0);
            let keys: Vec<String> = (0..2000)
                .map(|k| format!("/item/{k}?v={}", k * 7))
                .collect();
            let before: Vec<usize> = keys.iter().map(|k| pick(&b, Some(k.as_bytes()))).collect();
            for (gone, gone_shared) in shared.iter().enumerate() {
                gone_shared.healthy.store(false, Ordering::Relaxed);
                let mut moved_to = vec![0usize; n];
                for (k, &was) in keys.iter().zip(&before) {
                    let now = pick(&b, Some(k.as_bytes()));
                    if was == gone {
                        assert_ne!(now, gone);
                        moved_to[now] += 1;
                    } else {
                        assert_eq!(now, was, "key {k} moved though its target stayed");
                    }
                }
                gone_shared.healthy.store(true, Ordering::Relaxed);
                if n > 2 {
                    let receivers = moved_to.iter().filter(|&&c| c > 0).count();
                    assert!(
                        receivers > 1,
                        "removed keys all went to one target: {moved_to:?}"
                    );
                }
            }
            // Keys spread over every target in the first place.
            for t in 0..n {
                let share = before.iter().filter(|&&p| p == t).count() as f64 / 2000.0;
                assert!(
                    (share - 1.0 / n as f64).abs() < 0.06,
                    "n={n} target {t}: {share}"
                );
            }
        }
    }

    #[test]
    fn hashing_policies_without_a_key_pick_at_random() {
        let (b, _) = balancer(Policy::Header, &[1, 1, 1], 0);
        let seen: std::collections::HashSet<_> = (0..200).map(|_| pick(&b, None)).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn split_sends_its_percent_within_two_percent_over_10k_picks() {
        let mut up = upstream(Policy::RoundRobin, &[1, 1, 1, 1]);
        up.split = Some(Split {
            start: 2,
            percent: 10,
        });
        let shared = shared_targets(std::slice::from_ref(&up)).remove(0);
        let b = Balancer::new(&up, &shared, 0, 7);
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            counts[pick(&b, None)] += 1;
        }
        let split = (counts[2] + counts[3]) as f64 / 10_000.0;
        assert!((split - 0.10).abs() < 0.02, "{counts:?}");
        // Each side is balanced by the policy.
        assert!(counts[0].abs_diff(counts[1]) <= 1, "{counts:?}");
        assert!(counts[2].abs_diff(counts[3]) <= 1, "{counts:?}");
        // A side with nothing available hands over to the other.
        shared[2].healthy.store(false, Ordering::Relaxed);
        shared[3].healthy.store(false, Ordering::Relaxed);
        assert!((0..500).all(|_| pick(&b, None) < 2));
    }

    #[test]
    fn passive_health_and_request_count_gate_selection() {
        let mut up = upstream(Policy::RoundRobin, &[1, 1]);
        up.health.passive.fail_duration = Some(Duration::from_secs(60));
        up.health.passive.unhealthy_request_count = Some(2);
        let shared = shared_targets(std::slice::from_ref(&up)).remove(0);
        let b = Balancer::new(&up, &shared, 0, 1);
        shared[0].record_failure(now_ms());
        assert!((0..10).all(|_| pick(&b, None) == 1));
        shared[1].in_flight.store(2, Ordering::Relaxed);
        assert_eq!(b.select(Tried::default(), None, |_| false), None);
    }

    #[test]
    fn p2c_ewma_prefers_the_faster_target() {
        let (b, shared) = balancer(Policy::P2cEwma, &[1, 1], 0);
        shared[0].observe_latency(Duration::from_millis(50));
        shared[1].observe_latency(Duration::from_millis(1));
        assert!((0..100).all(|_| pick(&b, None) == 1));
        // Load counts too: enough requests in flight on the fast one tip the balance.
        shared[1].in_flight.store(100, Ordering::Relaxed);
        assert!((0..100).all(|_| pick(&b, None) == 0));
    }

    #[test]
    fn round_robin_cycles_exactly_on_every_worker_from_its_own_offset() {
        let up = upstream(Policy::RoundRobin, &[1, 1, 1]);
        let shared = shared_targets(std::slice::from_ref(&up)).remove(0);
        for worker in 0..4 {
            let b = Balancer::new(&up, &shared, worker, 9);
            let picks: Vec<_> = (0..6).map(|_| pick(&b, None)).collect();
            let start = worker % 3;
            let want: Vec<_> = (0..6).map(|k| (start + k) % 3).collect();
            assert_eq!(picks, want, "worker {worker}");
        }
    }
}
