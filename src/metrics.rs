//! Metrics: each worker writes its own counters (one writer, relaxed plain stores, no shared
//! hot cache lines); the admin endpoint sums them on scrape and renders the Prometheus text
//! exposition format.
//!
//! Counters labelled by configuration names (listener, upstream, target) live in the
//! [`Generation`] they were counted in. A scrape sums every generation still in use plus the
//! totals of retired ones, by label, so a series whose name survives a reload keeps counting up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Config, TargetAddr};
use crate::generation::Generation;
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
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [Counter; BUCKETS],
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

/// Status classes counted: index 1..=5 for 1xx..5xx, 0 when no response was sent.
pub const STATUS_CLASSES: usize = 6;
const CLASS_LABELS: [&str; STATUS_CLASSES] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[inline]
pub fn status_class(status: u16) -> usize {
    if (100..600).contains(&status) {
        (status / 100) as usize
    } else {
        0
    }
}

/// One worker's counters that no configuration change renames. Only that worker writes them.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub in_flight: Counter,
    pub request_duration: Histogram,
    /// Body bytes moved with splice(2), client -> upstream and upstream -> client.
    pub spliced_up: Counter,
    pub spliced_down: Counter,
}

/// One worker's counters labelled by a generation's configuration. Only that worker writes them.
#[derive(Debug)]
pub struct GenMetrics {
    /// `[listener][class]`.
    pub requests: Vec<[Counter; STATUS_CLASSES]>,
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

/// Generations whose counters a scrape sums: those in use, and the totals of retired ones.
#[derive(Default)]
pub struct Registry {
    live: Vec<Arc<Generation>>,
    retired: Series,
}

impl Registry {
    pub fn add(&mut self, generation: Arc<Generation>) {
        self.live.push(generation);
    }

    /// Folds generations nobody uses any more (only we hold them) into the retired totals.
    fn retire_unused(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            // The newest generation is current even while no connection uses it.
            if i + 1 < self.live.len() && Arc::strong_count(&self.live[i]) == 1 {
                let g = self.live.remove(i);
                self.retired.merge(&labelled(&g));
            } else {
                i += 1;
            }
        }
    }
}

/// A snapshot of counters by (family, labels): counts, or histogram buckets and sum.
#[derive(Default)]
struct Series(BTreeMap<(&'static str, String), Value>);

enum Value {
    Count(u64),
    Hist([u64; BUCKETS], u64),
}

impl Series {
    fn count(&mut self, family: &'static str, labels: String, n: u64) {
        match self.0.entry((family, labels)).or_insert(Value::Count(0)) {
            Value::Count(v) => *v += n,
            Value::Hist(..) => debug_assert!(false, "{family} is a counter"),
        }
    }

    fn hist(&mut self, family: &'static str, labels: String, h: &Histogram) {
        let buckets = std::array::from_fn(|i| h.buckets[i].get());
        self.add_hist(family, labels, &buckets, h.sum_ns.get());
    }

    fn add_hist(&mut self, family: &'static str, labels: String, b: &[u64; BUCKETS], sum: u64) {
        match self
            .0
            .entry((family, labels))
            .or_insert(Value::Hist([0; BUCKETS], 0))
        {
            Value::Hist(acc, acc_sum) => {
                for (x, y) in acc.iter_mut().zip(b) {
                    *x += y;
                }
                *acc_sum += sum;
            }
            Value::Count(_) => debug_assert!(false, "{family} is a histogram"),
        }
    }

    fn merge(&mut self, other: &Series) {
        for ((family, labels), value) in &other.0 {
            match value {
                Value::Count(n) => self.count(family, labels.clone(), *n),
                Value::Hist(b, sum) => self.add_hist(family, labels.clone(), b, *sum),
            }
        }
    }

    fn write(&self, out: &mut String, family: &str) {
        for ((_, labels), value) in self.0.iter().filter(|((f, _), _)| *f == family) {
            match value {
                Value::Count(n) => {
                    let _ = writeln!(out, "{family}{{{labels}}} {n}");
                }
                Value::Hist(b, sum) => write_hist(out, family, labels, b, *sum),
            }
        }
    }
}

/// Labelled families: name, type, help.
const FAMILIES: [(&str, &str, &str); 7] = [
    (
        "ringway_requests_total",
        "counter",
        "Requests completed, by listener and status class (none: no response sent).",
    ),
    (
        "ringway_upstream_responses_total",
        "counter",
        "Requests completed through each target, by status class sent to the client.",
    ),
    (
        "ringway_upstream_requests_total",
        "counter",
        "Requests sent to each target, by whether a pooled connection was reused.",
    ),
    (
        "ringway_upstream_selected_total",
        "counter",
        "Times the load balancer picked each target.",
    ),
    (
        "ringway_upstream_response_time_seconds",
        "histogram",
        "Time from sending a request upstream to its response head.",
    ),
    (
        "ringway_pool_waits_total",
        "counter",
        "Requests that found no target with a free connection slot and waited for one.",
    ),
    (
        "ringway_pool_wait_seconds",
        "histogram",
        "How long requests waited for a free connection slot.",
    ),
];

fn write_hist(out: &mut String, family: &str, labels: &str, b: &[u64; BUCKETS], sum_ns: u64) {
    let mut cumulative = 0u64;
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, n) in b.iter().enumerate() {
        cumulative += n;
        let bound = LATENCY_BUCKETS
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(
            out,
            "{family}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{family}_sum{braces} {}", sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{family}_count{braces} {cumulative}");
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

/// One generation's labelled counters, summed over workers.
fn labelled(g: &Generation) -> Series {
    let mut s = Series::default();
    let [requests, responses, upstream_requests, selected, response_time, waits, wait_time] =
        FAMILIES.map(|f| f.0);
    for m in &g.metrics {
        for (li, l) in g.config.listeners.iter().enumerate() {
            for (class, label) in CLASS_LABELS.iter().enumerate() {
                let labels = format!("listener=\"{}\",code=\"{label}\"", esc(&l.name));
                s.count(requests, labels, m.requests[li][class].get());
            }
        }
        for (ui, u) in g.config.upstreams.iter().enumerate() {
            let up = format!("upstream=\"{}\"", esc(&u.name));
            for (ti, t) in u.targets.iter().enumerate() {
                let target = format!("{up},target=\"{}\"", esc(&target_label(&t.addr)));
                for (class, label) in CLASS_LABELS.iter().enumerate() {
                    let n = m.target_responses[ui][ti][class].get();
                    s.count(responses, format!("{target},code=\"{label}\""), n);
                }
                for (reused, label) in ["false", "true"].iter().enumerate() {
                    let n = m.upstream_requests[ui][ti][reused].get();
                    s.count(
                        upstream_requests,
                        format!("{target},connection_reused=\"{label}\""),
                        n,
                    );
                }
                s.count(selected, target, m.selected[ui][ti].get());
            }
            s.hist(response_time, up.clone(), &m.upstream_response_time[ui]);
            s.count(waits, up.clone(), m.pool_waits[ui].get());
            s.hist(wait_time, up, &m.pool_wait_time[ui]);
        }
    }
    s
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition of everything, summed over workers where it is a total.
pub fn render(shared: &Shared, registry: &Mutex<Registry>) -> String {
    let (series, current) = {
        let mut r = registry.lock().unwrap_or_else(|e| e.into_inner());
        r.retire_unused();
        let mut series = Series::default();
        series.merge(&r.retired);
        for g in &r.live {
            series.merge(&labelled(g));
        }
        (series, r.live.last().cloned())
    };
    let w = &shared.metrics;
    let mut out = String::with_capacity(8192);
    header(
        &mut out,
        "ringway_build_info",
        "gauge",
        "Version of the running binary.",
    );
    let _ = writeln!(
        out,
        "ringway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    for (name, kind, help) in FAMILIES {
        header(&mut out, name, kind, help);
        series.write(&mut out, name);
    }

    header(
        &mut out,
        "ringway_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the end of its response.",
    );
    let mut total = Series::default();
    for m in w {
        total.hist(
            "ringway_request_duration_seconds",
            String::new(),
            &m.request_duration,
        );
    }
    total.write(&mut out, "ringway_request_duration_seconds");

    if let Some(g) = &current {
        target_gauges(&mut out, g);
    }

    header(
        &mut out,
        "ringway_worker_accepted_connections_total",
        "counter",
        "Connections accepted by each worker (core imbalance shows here).",
    );
    for (i, m) in w.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringway_worker_accepted_connections_total{{worker=\"{i}\"}} {}",
            m.accepted.get()
        );
    }
    header(
        &mut out,
        "ringway_worker_in_flight_requests",
        "gauge",
        "Requests (and tunnels) each worker is handling now.",
    );
    for (i, m) in w.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringway_worker_in_flight_requests{{worker=\"{i}\"}} {}",
            m.in_flight.get()
        );
    }
    header(
        &mut out,
        "ringway_spliced_bytes_total",
        "counter",
        "Bytes moved with splice(2): HTTP bodies by direction, and layer-4 tunnel payload.",
    );
    let up: u64 = w.iter().map(|m| m.spliced_up.get()).sum();
    let down: u64 = w.iter().map(|m| m.spliced_down.get()).sum();
    let tunnel: u64 = shared
        .tunnels
        .iter()
        .map(|c| c.spliced_bytes.load(Ordering::Relaxed))
        .sum();
    for (direction, n) in [("upstream", up), ("downstream", down), ("tunnel", tunnel)] {
        let _ = writeln!(
            out,
            "ringway_spliced_bytes_total{{direction=\"{direction}\"}} {n}"
        );
    }
    header(
        &mut out,
        "ringway_tcp_tunnels_total",
        "counter",
        "Layer-4 tunnels that reached a target.",
    );
    let tunnels: u64 = shared
        .tunnels
        .iter()
        .map(|c| c.tunnels.load(Ordering::Relaxed))
        .sum();
    let _ = writeln!(out, "ringway_tcp_tunnels_total {tunnels}");
    header(
        &mut out,
        "ringway_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out: with clients (downstream) and targets (upstream).",
    );
    for (side, n) in [
        ("downstream", &shared.tls_handshake_failures),
        ("upstream", &shared.upstream_tls_failures),
    ] {
        let _ = writeln!(
            out,
            "ringway_tls_handshake_failures_total{{side=\"{side}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "ringway_config_reloads_total",
        "counter",
        "Configuration reloads, by result (failed: the running configuration was kept).",
    );
    for (result, n) in [
        ("ok", &shared.reloads_ok),
        ("failed", &shared.reloads_failed),
    ] {
        let _ = writeln!(
            out,
            "ringway_config_reloads_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    out
}

/// Gauges and health transitions of the current generation's targets (their state is shared
/// by every generation that has the target, so the current one tells it all).
fn target_gauges(out: &mut String, g: &Generation) {
    let targets = || {
        g.config
            .upstreams
            .iter()
            .enumerate()
            .flat_map(move |(ui, u)| {
                u.targets.iter().enumerate().map(move |(ti, t)| {
                    let labels = format!(
                        "upstream=\"{}\",target=\"{}\"",
                        esc(&u.name),
                        esc(&target_label(&t.addr))
                    );
                    (u, &g.targets[ui][ti], labels)
                })
            })
    };
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
        header(out, name, "gauge", help);
        for (u, s, labels) in targets() {
            let v = match pick {
                0 => s.in_flight.load(Ordering::Relaxed) as u64,
                1 => s.conns.load(Ordering::Relaxed) as u64,
                _ => s.is_healthy(&u.health.passive) as u64,
            };
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
    header(
        out,
        "ringway_upstream_marked_unhealthy_total",
        "counter",
        "Times a target was marked unhealthy, by check type (passive: failures of real requests).",
    );
    for (_, s, labels) in targets() {
        for (check, n) in [("passive", &s.passive_marks), ("active", &s.active_marks)] {
            let _ = writeln!(
                out,
                "ringway_upstream_marked_unhealthy_total{{{labels},check=\"{check}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}
