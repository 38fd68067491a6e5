//! The state of one target shared by all workers: load (in-flight requests, connections),
//! health (the active checker's verdict, passive failure memory) and latency. Only atomics,
//! written by any worker and the health thread, read on every selection.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::TargetAddr;

/// p2c_ewma forgets old latency with this time constant (linkerd's default decay window).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Milliseconds since the first call in this process, plus one so 0 can mean "never".
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// State of one target shared by all workers.
#[derive(Debug)]
pub struct TargetShared {
    /// Requests being proxied to this target right now, across workers.
    pub in_flight: AtomicU32,
    /// Open (or dialing) connections to this target, across workers, pooled ones included.
    pub conns: AtomicU32,
    /// The active health checker's verdict (true until probes say otherwise).
    pub healthy: AtomicBool,
    /// A worker found this capped target full with no idle connection of its own. Pools are
    /// per worker, so whichever worker holds an idle one closes it to hand the slot over.
    pub wanted: AtomicBool,
    /// Passive failures: a ring of `now_ms` stamps (0 = empty) as long as `max_fails`. The slot
    /// at `fail_next` is the oldest remembered failure: the target is down while it is recent.
    fails: Box<[AtomicU64]>,
    fail_next: AtomicU32,
    /// A target that appeared at run time (DNS) and waits for its first active probe, down
    /// meanwhile: that probe alone decides whether it takes traffic.
    pub unprobed: AtomicBool,
    /// Times passive failures took this target down, and times active probes did.
    pub passive_marks: AtomicU64,
    pub active_marks: AtomicU64,
    /// p2c_ewma: peak-EWMA of response latency in ns (f64 bits) and when it was last updated.
    ewma: AtomicU64,
    ewma_at: AtomicU64,
}

impl TargetShared {
    pub fn new() -> Self {
        Self::with_max_fails(1)
    }

    pub fn with_max_fails(max_fails: u32) -> Self {
        TargetShared {
            in_flight: AtomicU32::new(0),
            conns: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            wanted: AtomicBool::new(false),
            fails: (0..max_fails.max(1)).map(|_| AtomicU64::new(0)).collect(),
            fail_next: AtomicU32::new(0),
            unprobed: AtomicBool::new(false),
            passive_marks: AtomicU64::new(0),
            active_marks: AtomicU64::new(0),
            ewma: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
        }
    }

    /// Healthy by both the active checker and passive failure memory (for the admin endpoint
    /// and metrics; selection keeps `fail_duration` at hand and asks the two separately).
    pub fn is_healthy(&self, passive: &crate::config::PassiveHealth) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !passive
                .fail_duration
                .is_some_and(|d| self.passive_down(now_ms(), d.as_millis().max(1) as u64))
    }

    /// Remembers one passive failure at `now` (from [`now_ms`]).
    pub fn record_failure(&self, now: u64) {
        let i = self.fail_next.fetch_add(1, Ordering::Relaxed) as usize % self.fails.len();
        self.fails[i].store(now, Ordering::Relaxed);
    }

    /// Remembers one passive failure and counts it when it takes the target down (failure
    /// path only, so the extra loads cost nothing on success).
    pub fn record_failure_within(&self, now: u64, fail_ms: u64) {
        let was_down = self.passive_down(now, fail_ms);
        self.record_failure(now);
        if !was_down && self.passive_down(now, fail_ms) {
            self.passive_marks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `max_fails` failures happened within `fail_ms` before `now`. Lock-free: one load
    /// of the oldest remembered failure (a racing writer can only make it newer).
    pub fn passive_down(&self, now: u64, fail_ms: u64) -> bool {
        let i = self.fail_next.load(Ordering::Relaxed) as usize % self.fails.len();
        let oldest = self.fails[i].load(Ordering::Relaxed);
        oldest != 0 && now.saturating_sub(oldest) < fail_ms
    }

    /// Folds one response latency into the peak-EWMA: a slower sample takes over at once, a
    /// faster one is blended in by how long ago the last sample was.
    pub fn observe_latency(&self, latency: Duration) {
        let now = now_ns();
        let rtt = latency.as_nanos() as f64;
        let prev = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let prev_at = self.ewma_at.swap(now, Ordering::Relaxed);
        let next = if rtt > prev || prev_at == 0 {
            rtt
        } else {
            let w = (-(now.saturating_sub(prev_at) as f64) / EWMA_DECAY.as_nanos() as f64).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma.store(next.to_bits(), Ordering::Relaxed);
    }

    /// p2c_ewma's load estimate: latency x (in-flight + 1).
    pub fn ewma_cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        ewma * (self.in_flight.load(Ordering::Relaxed) as f64 + 1.0)
    }
}

impl TargetShared {
    /// A target that takes no traffic before an active probe passed.
    pub fn awaiting_probe(max_fails: u32) -> Self {
        let s = Self::with_max_fails(max_fails);
        s.healthy.store(false, Ordering::Relaxed);
        s.unprobed.store(true, Ordering::Relaxed);
        s
    }
}

impl Default for TargetShared {
    fn default() -> Self {
        Self::new()
    }
}

/// The address a target is dialed at, as logs, metrics and the cookie policy name it (Caddy's
/// `Dial`).
pub fn dial_name(addr: &TargetAddr) -> String {
    match addr {
        TargetAddr::Tcp { host, .. } => host.clone(),
        TargetAddr::Unix(p) => format!("unix/{}", p.display()),
    }
}

/// The address a target was dialled at, as the access log names it: the resolved `ip:port`
/// (a hostname target's name may stand for several addresses).
pub fn dialled(addr: &TargetAddr) -> String {
    match addr {
        TargetAddr::Tcp { addr, .. } => addr.to_string(),
        TargetAddr::Unix(p) => format!("unix/{}", p.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_failures_mark_a_target_down_until_they_expire() {
        let s = TargetShared::with_max_fails(3);
        let t0 = 1_000;
        s.record_failure(t0);
        s.record_failure(t0 + 10);
        assert!(!s.passive_down(t0 + 20, 100), "two of three failures");
        s.record_failure(t0 + 20);
        assert!(s.passive_down(t0 + 30, 100));
        assert!(s.passive_down(t0 + 99, 100));
        // The oldest failure ages out after fail_duration: below max_fails again.
        assert!(!s.passive_down(t0 + 100, 100));
    }

    #[test]
    fn peak_ewma_takes_a_slow_sample_at_once_and_decays_slowly() {
        let s = TargetShared::new();
        s.observe_latency(Duration::from_millis(1));
        s.observe_latency(Duration::from_millis(100));
        let after_peak = f64::from_bits(s.ewma.load(Ordering::Relaxed));
        assert_eq!(after_peak, 100e6);
        s.observe_latency(Duration::from_millis(1));
        let after_fast = f64::from_bits(s.ewma.load(Ordering::Relaxed));
        assert!(after_fast > 90e6, "{after_fast}");
    }
}
