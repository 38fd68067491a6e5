//! What discovery reports to the admin endpoint and metrics: failed lookups by reason and the
//! state of each query. A leaf: written by the discovery thread, read on scrape.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The last outcome of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryState {
    /// `a`, `srv` or `host`.
    pub kind: &'static str,
    /// The last lookup failed (the last good addresses still serve).
    pub failing: Option<String>,
    /// Addresses of the last good answer.
    pub addresses: usize,
}

#[derive(Default)]
pub struct DnsStats {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By (upstream, name, reason).
    failures: BTreeMap<(String, String, &'static str), u64>,
    /// By (upstream, name).
    queries: BTreeMap<(String, String), QueryState>,
}

impl DnsStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn failed(&self, upstream: &str, name: &str, reason: &'static str) {
        let key = (upstream.to_string(), name.to_string(), reason);
        *self.lock().failures.entry(key).or_insert(0) += 1;
    }

    pub fn set_state(&self, upstream: &str, name: &str, state: QueryState) {
        let key = (upstream.to_string(), name.to_string());
        self.lock().queries.insert(key, state);
    }

    /// Forgets queries no configuration asks for any more (their failure counts stay).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.lock().queries.retain(|(u, n), _| keep(u, n));
    }

    /// `((upstream, name, reason), count)` for every reason seen.
    pub fn failures(&self) -> Vec<((String, String, &'static str), u64)> {
        let inner = self.lock();
        inner
            .failures
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// The queries of `upstream`: `(name, state)`.
    pub fn queries_of(&self, upstream: &str) -> Vec<(String, QueryState)> {
        let inner = self.lock();
        let of = inner.queries.iter().filter(|((u, _), _)| u == upstream);
        of.map(|((_, n), s)| (n.clone(), s.clone())).collect()
    }
}

/// The Prometheus lines of discovery: targets per upstream (in `upstreams`, the running
/// configuration) and failed lookups by reason.
pub fn render(out: &mut String, upstreams: &[crate::config::Upstream], stats: &DnsStats) {
    use std::fmt::Write as _;
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        out,
        "# HELP ringway_upstream_targets Targets of each upstream now, static and discovered.\n\
         # TYPE ringway_upstream_targets gauge"
    );
    for u in upstreams {
        let _ = writeln!(
            out,
            "ringway_upstream_targets{{upstream=\"{}\"}} {}",
            esc(&u.name),
            u.targets.len()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringway_dns_resolution_failures_total DNS lookups of upstream names that failed \
         (the last good addresses kept serving), by reason.\n\
         # TYPE ringway_dns_resolution_failures_total counter"
    );
    for ((upstream, name, reason), n) in stats.failures() {
        let _ = writeln!(
            out,
            "ringway_dns_resolution_failures_total{{upstream=\"{}\",name=\"{}\",reason=\"{reason}\"}} {n}",
            esc(&upstream),
            esc(&name)
        );
    }
}
