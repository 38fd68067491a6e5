//! Metrics: each worker writes its own counters (one writer, relaxed plain stores, no shared
//! hot cache lines); the admin endpoint sums them on scrape and renders the Prometheus text
//! exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{Config, TargetAddr};
use crate::server::Shared;

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

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [Counter; LATENCY_BUCKETS.len() + 1],
    sum_ns: Counter,
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

/// Status classes counted per listener: index 1..=5 for 1xx..5xx, 0 when no response was sent.
pub const STATUS_CLASSES: usize = 6;

/// One worker's counters. Only that worker writes them.
#[derive(Debug)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub in_flight: Counter,
    /// `[listener][class]`.
    pub requests: Vec<[Counter; STATUS_CLASSES]>,
    /// `[upstream][target][reused as usize]`.
    pub upstream_requests: Vec<Vec<[Counter; 2]>>,
    pub request_duration: Histogram,
    /// Time from sending the request upstream to its response head, `[upstream]`.
    pub upstream_response_time: Vec<Histogram>,
    /// Body bytes moved with splice(2), client -> upstream and upstream -> client.
    pub spliced_up: Counter,
    pub spliced_down: Counter,
}

impl WorkerMetrics {
    pub fn new(config: &Config) -> Self {
        WorkerMetrics {
            accepted: Counter::default(),
            in_flight: Counter::default(),
            requests: config
                .listeners
                .iter()
                .map(|_| Default::default())
                .collect(),
            upstream_requests: config
                .upstreams
                .iter()
                .map(|u| u.targets.iter().map(|_| Default::default()).collect())
                .collect(),
            request_duration: Histogram::default(),
            upstream_response_time: config
                .upstreams
                .iter()
                .map(|_| Histogram::default())
                .collect(),
            spliced_up: Counter::default(),
            spliced_down: Counter::default(),
        }
    }

    #[inline]
    pub fn request_done(&self, listener: usize, status: u16, took: Duration) {
        let class = if (100..600).contains(&status) {
            (status / 100) as usize
        } else {
            0
        };
        self.requests[listener][class].inc();
        self.request_duration.observe(took);
    }
}

fn target_label(addr: &TargetAddr) -> String {
    match addr {
        TargetAddr::Tcp { host, .. } => host.clone(),
        TargetAddr::Unix(p) => format!("unix/{}", p.display()),
    }
}

/// Escapes a label value (backslash, quote, newline) per the exposition format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, parts: &[&Histogram]) {
    let mut cumulative = 0u64;
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, bound) in LATENCY_BUCKETS
        .iter()
        .map(|b| b.to_string())
        .chain(["+Inf".to_string()])
        .enumerate()
    {
        cumulative += parts.iter().map(|h| h.buckets[i].get()).sum::<u64>();
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let sum: u64 = parts.iter().map(|h| h.sum_ns.get()).sum();
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// The Prometheus text exposition of everything, summed over workers where it is a total.
pub fn render(config: &Config, shared: &Shared) -> String {
    let w = &shared.metrics;
    let mut out = String::with_capacity(8192);
    let _ = writeln!(
        out,
        "# HELP ringway_build_info Version of the running binary."
    );
    let _ = writeln!(out, "# TYPE ringway_build_info gauge");
    let _ = writeln!(
        out,
        "ringway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    let _ = writeln!(out, "# HELP ringway_requests_total Requests completed, by listener and status class (none: no response sent).");
    let _ = writeln!(out, "# TYPE ringway_requests_total counter");
    for (li, l) in config.listeners.iter().enumerate() {
        for (class, label) in ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .enumerate()
        {
            let n: u64 = w.iter().map(|m| m.requests[li][class].get()).sum();
            let _ = writeln!(
                out,
                "ringway_requests_total{{listener=\"{}\",code=\"{label}\"}} {n}",
                esc(&l.name)
            );
        }
    }

    let _ = writeln!(out, "# HELP ringway_request_duration_seconds Time from a complete request head to the end of its response.");
    let _ = writeln!(out, "# TYPE ringway_request_duration_seconds histogram");
    let parts: Vec<&Histogram> = w.iter().map(|m| &m.request_duration).collect();
    histogram(&mut out, "ringway_request_duration_seconds", "", &parts);

    let _ = writeln!(out, "# HELP ringway_upstream_requests_total Requests sent to each target, by whether a pooled connection was reused.");
    let _ = writeln!(out, "# TYPE ringway_upstream_requests_total counter");
    for (ui, u) in config.upstreams.iter().enumerate() {
        for (ti, t) in u.targets.iter().enumerate() {
            for (reused, label) in ["false", "true"].iter().enumerate() {
                let n: u64 = w
                    .iter()
                    .map(|m| m.upstream_requests[ui][ti][reused].get())
                    .sum();
                let _ = writeln!(
                    out,
                    "ringway_upstream_requests_total{{upstream=\"{}\",target=\"{}\",connection_reused=\"{label}\"}} {n}",
                    esc(&u.name),
                    esc(&target_label(&t.addr))
                );
            }
        }
    }

    let _ = writeln!(out, "# HELP ringway_upstream_response_time_seconds Time from sending a request upstream to its response head.");
    let _ = writeln!(
        out,
        "# TYPE ringway_upstream_response_time_seconds histogram"
    );
    for (ui, u) in config.upstreams.iter().enumerate() {
        let parts: Vec<&Histogram> = w.iter().map(|m| &m.upstream_response_time[ui]).collect();
        histogram(
            &mut out,
            "ringway_upstream_response_time_seconds",
            &format!("upstream=\"{}\"", esc(&u.name)),
            &parts,
        );
    }

    for (name, help, pick) in [
        (
            "ringway_upstream_in_flight_requests",
            "Requests being proxied to each target now, across workers.",
            0,
        ),
        (
            "ringway_upstream_open_connections",
            "Open (or dialing) connections to each target, pooled ones included.",
            1,
        ),
        (
            "ringway_upstream_healthy",
            "1 when the target is healthy (active checks and passive failure memory).",
            2,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (ui, u) in config.upstreams.iter().enumerate() {
            for (ti, t) in u.targets.iter().enumerate() {
                let s = &shared.targets[ui][ti];
                let v = match pick {
                    0 => s.in_flight.load(Ordering::Relaxed) as u64,
                    1 => s.conns.load(Ordering::Relaxed) as u64,
                    _ => s.is_healthy(&u.health.passive) as u64,
                };
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",target=\"{}\"}} {v}",
                    esc(&u.name),
                    esc(&target_label(&t.addr))
                );
            }
        }
    }

    let _ = writeln!(out, "# HELP ringway_worker_accepted_connections_total Connections accepted by each worker (core imbalance shows here).");
    let _ = writeln!(
        out,
        "# TYPE ringway_worker_accepted_connections_total counter"
    );
    for (i, m) in w.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringway_worker_accepted_connections_total{{worker=\"{i}\"}} {}",
            m.accepted.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringway_worker_in_flight_requests Requests each worker is handling now."
    );
    let _ = writeln!(out, "# TYPE ringway_worker_in_flight_requests gauge");
    for (i, m) in w.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringway_worker_in_flight_requests{{worker=\"{i}\"}} {}",
            m.in_flight.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringway_spliced_bytes_total Body bytes moved with splice(2), by direction."
    );
    let _ = writeln!(out, "# TYPE ringway_spliced_bytes_total counter");
    let up: u64 = w.iter().map(|m| m.spliced_up.get()).sum();
    let down: u64 = w.iter().map(|m| m.spliced_down.get()).sum();
    let _ = writeln!(
        out,
        "ringway_spliced_bytes_total{{direction=\"upstream\"}} {up}"
    );
    let _ = writeln!(
        out,
        "ringway_spliced_bytes_total{{direction=\"downstream\"}} {down}"
    );
    let _ = writeln!(
        out,
        "# HELP ringway_tls_handshake_failures_total Client TLS handshakes that failed or timed out."
    );
    let _ = writeln!(out, "# TYPE ringway_tls_handshake_failures_total counter");
    let _ = writeln!(
        out,
        "ringway_tls_handshake_failures_total {}",
        shared
            .tls_handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    out
}
