//! The Prometheus text exposition of the admin endpoint's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::control::generation::Generation;
use crate::control::state::Shared;
use crate::observe::series::{esc, labelled, Registry, Series, FAMILIES};
use crate::upstream::target::dial_name;

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
        "ringway_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        env!("RINGWAY_COMMIT")
    );
    for (name, kind, help) in FAMILIES {
        header(&mut out, name, kind, help);
        series.write(&mut out, name);
    }

    crate::observe::process::render(&mut out);
    if let Some(g) = &current {
        target_gauges(&mut out, g);
        crate::control::discover::stats::render(&mut out, &g.config.upstreams, &shared.dns);
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
        "ringway_worker_receive_buffers",
        "gauge",
        "Downstream HTTP connections of each worker holding a receive buffer (idle ones hold none).",
    );
    for (i, m) in w.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringway_worker_receive_buffers{{worker=\"{i}\"}} {}",
            m.receive_buffers.get()
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
                        esc(&dial_name(&t.addr))
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
