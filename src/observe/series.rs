//! Counters by label, summed over workers and generations: a scrape sums every generation still
//! in use plus the totals of retired ones, so a series whose name survives a reload keeps
//! counting up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::ListenerKind;
use crate::control::generation::Generation;
use crate::observe::metrics::{
    Histogram, BUCKETS, CLASS_LABELS, LATENCY_BUCKETS, PROTOCOLS, PROTOCOL_LABELS,
};
use crate::upstream::target::dial_name;

/// Generations whose counters a scrape sums: those in use, and the totals of retired ones.
#[derive(Default)]
pub struct Registry {
    pub(crate) live: Vec<Arc<Generation>>,
    pub(crate) retired: Series,
}

impl Registry {
    pub fn add(&mut self, generation: Arc<Generation>) {
        self.live.push(generation);
    }

    /// Folds generations nobody uses any more (only we hold them) into the retired totals.
    pub(crate) fn retire_unused(&mut self) {
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
pub(crate) struct Series(BTreeMap<(&'static str, String), Value>);

enum Value {
    Count(u64),
    Hist([u64; BUCKETS], u64),
}

impl Series {
    pub(crate) fn count(&mut self, family: &'static str, labels: String, n: u64) {
        match self.0.entry((family, labels)).or_insert(Value::Count(0)) {
            Value::Count(v) => *v += n,
            Value::Hist(..) => debug_assert!(false, "{family} is a counter"),
        }
    }

    pub(crate) fn hist(&mut self, family: &'static str, labels: String, h: &Histogram) {
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

    pub(crate) fn merge(&mut self, other: &Series) {
        for ((family, labels), value) in &other.0 {
            match value {
                Value::Count(n) => self.count(family, labels.clone(), *n),
                Value::Hist(b, sum) => self.add_hist(family, labels.clone(), b, *sum),
            }
        }
    }

    pub(crate) fn write(&self, out: &mut String, family: &str) {
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
pub(crate) const FAMILIES: [(&str, &str, &str); 13] = [
    (
        "ringway_requests_total",
        "counter",
        "Requests completed, by listener, protocol (h1, h2) and status class (none: no \
         response sent).",
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
    (
        "ringway_request_duration_seconds",
        "histogram",
        "Time from a complete request head to the end of its response, by listener, protocol, \
         upstream (empty: answered locally) and status class.",
    ),
    (
        "ringway_open_connections",
        "gauge",
        "Client connections open now, by listener.",
    ),
    (
        "ringway_listener_bytes_total",
        "counter",
        "Bytes received from (in) and sent to (out) clients, by listener.",
    ),
    (
        "ringway_upstream_bytes_total",
        "counter",
        "Bytes of requests sent to (out) and responses received from (in) each upstream \
         (tunnel payload on tcp listeners).",
    ),
    (
        "ringway_tcp_connections_total",
        "counter",
        "Connections accepted by each tcp listener.",
    ),
    (
        "ringway_upstream_http2_connections",
        "gauge",
        "HTTP/2 connections open to each upstream's targets now (each carries many streams).",
    ),
];

pub(crate) fn write_hist(
    out: &mut String,
    family: &str,
    labels: &str,
    b: &[u64; BUCKETS],
    sum_ns: u64,
) {
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

/// Escapes a label value (backslash, quote, newline) per the exposition format.
pub(crate) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One generation's labelled counters, summed over workers.
pub(crate) fn labelled(g: &Generation) -> Series {
    let mut s = Series::default();
    let [requests, responses, upstream_requests, selected, response_time, waits, wait_time, duration, open, listener_bytes, upstream_bytes, tcp_conns, h2_conns] =
        FAMILIES.map(|f| f.0);
    let mut http_used = vec![false; g.config.upstreams.len()];
    for l in &g.config.listeners {
        if let ListenerKind::Http { routes } = &l.kind {
            for r in routes {
                if let crate::config::Action::Proxy(u) = r.action {
                    http_used[u] = true;
                }
            }
        }
    }
    for m in &g.metrics {
        for (li, l) in g.config.listeners.iter().enumerate() {
            let name = format!("listener=\"{}\"", esc(&l.name));
            s.count(open, name.clone(), m.open_connections[li].get());
            for (dir, label) in ["in", "out"].iter().enumerate() {
                let n = m.listener_bytes[li][dir].get();
                s.count(listener_bytes, format!("{name},direction=\"{label}\""), n);
            }
            if matches!(l.kind, ListenerKind::Tcp { .. }) {
                // HTTP series would stay zero here forever: count connections instead.
                let n: u64 = m.requests[li][0].iter().map(|c| c.get()).sum();
                s.count(tcp_conns, name, n);
                continue;
            }
            // HTTP/2 series only where the listener serves it.
            let protocols = if (l.protocols.h2 && l.tls.is_some()) || l.protocols.h2c {
                PROTOCOLS
            } else {
                1
            };
            for (p, proto) in PROTOCOL_LABELS.iter().enumerate().take(protocols) {
                for (class, label) in CLASS_LABELS.iter().enumerate() {
                    let labels = format!("{name},protocol=\"{proto}\",code=\"{label}\"");
                    s.count(requests, labels, m.requests[li][p][class].get());
                }
            }
            for (slot, per_protocol) in m.request_duration[li].iter().enumerate() {
                let upstream = match slot {
                    0 => "",
                    u => &g.config.upstreams[u - 1].name,
                };
                for (p, per_class) in per_protocol.iter().enumerate() {
                    for (class, h) in per_class.iter().enumerate() {
                        // Only combinations that happened: listeners x upstreams x protocols x
                        // classes is large.
                        if h.buckets.iter().all(|b| b.get() == 0) {
                            continue;
                        }
                        let labels = format!(
                            "{name},protocol=\"{}\",upstream=\"{}\",code=\"{}\"",
                            PROTOCOL_LABELS[p],
                            esc(upstream),
                            CLASS_LABELS[class]
                        );
                        s.hist(duration, labels, h);
                    }
                }
            }
        }
        for (ui, u) in g.config.upstreams.iter().enumerate() {
            let up = format!("upstream=\"{}\"", esc(&u.name));
            // An upstream only tcp listeners use never sees an HTTP request or response.
            let http = http_used[ui];
            for (ti, t) in u.targets.iter().enumerate() {
                let target = format!("{up},target=\"{}\"", esc(&dial_name(&t.addr)));
                s.count(selected, target.clone(), m.selected[ui][ti].get());
                if !http {
                    continue;
                }
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
            }
            for (dir, label) in ["out", "in"].iter().enumerate() {
                let n = m.upstream_bytes[ui][dir].get();
                s.count(upstream_bytes, format!("{up},direction=\"{label}\""), n);
            }
            if http {
                s.hist(response_time, up.clone(), &m.upstream_response_time[ui]);
            }
            if u.targets.iter().any(|t| u.transport.may_speak_h2(t)) {
                s.count(h2_conns, up.clone(), m.upstream_h2_connections[ui].get());
            }
            s.count(waits, up.clone(), m.pool_waits[ui].get());
            s.hist(wait_time, up, &m.pool_wait_time[ui]);
        }
    }
    s
}
