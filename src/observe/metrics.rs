//! Metrics: each worker writes its own counters (one writer, relaxed plain stores, no shared
//! hot cache lines); the admin endpoint sums them on scrape and renders the Prometheus text
//! exposition format.
//!
//! Counters labelled by configuration names (listener, upstream, target) live in the
//! [`Generation`] they were counted in. A scrape sums every generation still in use plus the
//! totals of retired ones, by label, so a series whose name survives a reload keeps counting up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{Config, ListenerKind};

/// A counter with a single writer (its worker): load + store, not a locked read-modify-write.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// For a gauge its worker raises and lowers (open connections).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets; +Inf is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub(crate) const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    pub(crate) buckets: [Counter; BUCKETS],
    pub(crate) sum_ns: Counter,
}

impl Histogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].inc();
        self.sum_ns.add(d.as_nanos() as u64);
    }
}

/// Status classes counted: index 1..=5 for 1xx..5xx, 0 when no response was sent.
pub const STATUS_CLASSES: usize = 6;
pub(crate) const CLASS_LABELS: [&str; STATUS_CLASSES] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[inline]
pub fn status_class(status: u16) -> usize {
    if (100..600).contains(&status) {
        (status / 100) as usize
    } else {
        0
    }
}

/// The protocol a client sent a request in: the `protocol` label of the request series.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    H1 = 0,
    /// HTTP/2 over TLS (h2) or cleartext (h2c): the listener tells which.
    H2 = 1,
}

pub const PROTOCOLS: usize = 2;
pub(crate) const PROTOCOL_LABELS: [&str; PROTOCOLS] = ["h1", "h2"];

/// One worker's counters that no configuration change renames. Only that worker writes them.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub in_flight: Counter,
    /// Downstream HTTP connections holding a receive buffer now (busy, or quiet for less than
    /// `proxy::PARK_AFTER`); parked idle connections hold none.
    pub receive_buffers: Counter,
    /// Body bytes moved with splice(2), client -> upstream and upstream -> client.
    pub spliced_up: Counter,
    pub spliced_down: Counter,
}

/// One worker's counters labelled by a generation's configuration. Only that worker writes them.
#[derive(Debug)]
pub struct GenMetrics {
    /// `[listener][protocol][class]`; a tcp listener counts its finished connections in
    /// `[0][0]`.
    pub requests: Vec<[[Counter; STATUS_CLASSES]; PROTOCOLS]>,
    /// Responses from each target, `[upstream][target][class]`.
    pub target_responses: Vec<Vec<[Counter; STATUS_CLASSES]>>,
    /// `[upstream][target][reused as usize]`.
    pub upstream_requests: Vec<Vec<[Counter; 2]>>,
    /// Times the balancer picked each target, `[upstream][target]`.
    pub selected: Vec<Vec<Counter>>,
    /// Time from sending the request upstream to its response head, `[upstream]`.
    pub upstream_response_time: Vec<Histogram>,
    /// Requests that found no target with a free connection slot and waited, `[upstream]`.
    pub pool_waits: Vec<Counter>,
    /// How long those requests waited, `[upstream]`.
    pub pool_wait_time: Vec<Histogram>,
    /// Time from a complete request head to the end of its response,
    /// `[listener][upstream + 1, 0 when answered locally][protocol][class]`; empty for tcp
    /// listeners.
    pub request_duration: Vec<Vec<[[Histogram; STATUS_CLASSES]; PROTOCOLS]>>,
    /// Client connections open now, `[listener]`: a gauge raised on accept and lowered on
    /// close in the generation that accepted the connection.
    pub open_connections: Vec<Counter>,
    /// Client bytes received and sent, `[listener][0: in, 1: out]`.
    pub listener_bytes: Vec<[Counter; 2]>,
    /// Bytes of the requests and responses (tunnels) that went through each upstream,
    /// `[upstream][0: sent to it, 1: received from it]`.
    pub upstream_bytes: Vec<[Counter; 2]>,
    /// HTTP/2 connections open to each upstream's targets now, `[upstream]`: a gauge raised
    /// after the handshake and lowered when the connection ends.
    pub upstream_h2_connections: Vec<Counter>,
}

/// One finished request, for [`GenMetrics::request_done`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Done {
    pub listener: usize,
    /// The upstream group the route chose (whether or not a target answered).
    pub upstream: Option<usize>,
    /// The target that answered, `(upstream, target)`.
    pub target: Option<(usize, usize)>,
    pub status: u16,
    pub took: Duration,
    /// Request bytes received, response bytes sent.
    pub bytes: [u64; 2],
    pub protocol: Protocol,
}

impl GenMetrics {
    pub fn new(config: &Config) -> Self {
        GenMetrics {
            requests: per_item(&config.listeners),
            target_responses: per_target(config),
            upstream_requests: per_target(config),
            selected: per_target(config),
            upstream_response_time: per_item(&config.upstreams),
            pool_waits: per_item(&config.upstreams),
            pool_wait_time: per_item(&config.upstreams),
            request_duration: config
                .listeners
                .iter()
                .map(|l| match l.kind {
                    ListenerKind::Http { .. } => (0..=config.upstreams.len())
                        .map(|_| Default::default())
                        .collect(),
                    ListenerKind::Tcp { .. } => Vec::new(),
                })
                .collect(),
            open_connections: per_item(&config.listeners),
            listener_bytes: per_item(&config.listeners),
            upstream_bytes: per_item(&config.upstreams),
            upstream_h2_connections: per_item(&config.upstreams),
        }
    }

    /// Counts a finished request: by listener and status class, its duration by listener,
    /// upstream and class, its bytes, and by target when one answered.
    pub fn request_done(&self, d: &Done) {
        let class = status_class(d.status);
        let p = d.protocol as usize;
        self.requests[d.listener][p][class].inc();
        if let Some((u, t)) = d.target {
            self.target_responses[u][t][class].inc();
        }
        let upstream = d.upstream.or(d.target.map(|(u, _)| u));
        if let Some(per_upstream) = self.request_duration.get(d.listener) {
            per_upstream[upstream.map_or(0, |u| u + 1)][p][class].observe(d.took);
        }
        self.add_bytes(d.listener, upstream, d.bytes);
    }

    /// Adds `[in, out]` client bytes to the listener, and to the upstream they went through.
    pub fn add_bytes(&self, listener: usize, upstream: Option<usize>, bytes: [u64; 2]) {
        let l = &self.listener_bytes[listener];
        l[0].add(bytes[0]);
        l[1].add(bytes[1]);
        if let Some(u) = upstream {
            let u = &self.upstream_bytes[u];
            u[0].add(bytes[0]);
            u[1].add(bytes[1]);
        }
    }
}

fn per_item<I, T: Default>(items: &[I]) -> Vec<T> {
    items.iter().map(|_| T::default()).collect()
}

fn per_target<T: Default>(config: &Config) -> Vec<Vec<T>> {
    config
        .upstreams
        .iter()
        .map(|u| per_item(&u.targets))
        .collect()
}

/// Tunnel counters of one worker, written only by that worker (relaxed adds on its own cache
/// line) and summed by the control side for tests and metrics.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TunnelCounters {
    /// Payload bytes moved with splice(2), both directions.
    pub spliced_bytes: AtomicU64,
    /// Payload bytes moved through a user-space buffer (small messages, and bulk flows when no
    /// pipe is free), both directions.
    pub copied_bytes: AtomicU64,
    /// Tunnels that reached a target.
    pub tunnels: AtomicU64,
}
