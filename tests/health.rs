//! Health: passive failure memory shared by workers, and active probes from the one control
//! thread (counted at the backend), with fails/passes hysteresis.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The backend names answering `n` GETs, each on a fresh connection.
fn answers(proxy: &Proxy, n: usize) -> Vec<(u16, String)> {
    (0..n)
        .map(|_| {
            let r = proxy.get("/");
            (r.status, r.header("x-backend").unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn passive_health_avoids_a_target_returning_5xx_and_restores_it_after_fail_duration() {
    let bad = FixedBackend::start("bad", 500, any_port());
    let good = FixedBackend::start("good", 200, any_port());
    let yaml = format!(
        "workers: 2\n{}",
        one_upstream_yaml(
            "$BAD, $GOOD",
            "    lb: { policy: round_robin }\n    \
             health: { passive: { fail_duration: 700ms, max_fails: 1, unhealthy_status: [5xx] } }\n",
        )
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("BAD", bad.target()), ("GOOD", good.target())],
    );
    // Round robin reaches `bad` within two requests on either worker.
    let first = answers(&proxy, 4);
    assert!(first.iter().any(|(s, _)| *s == 500), "{first:?}");
    let hits = bad.requests();
    let failed_at = Instant::now();
    let during = answers(&proxy, 20);
    assert!(during.iter().all(|(s, _)| *s == 200), "{during:?}");
    assert_eq!(
        bad.requests(),
        hits,
        "a failed target is avoided by every worker"
    );
    assert!(
        failed_at.elapsed() < Duration::from_millis(700),
        "the test itself was too slow"
    );
    std::thread::sleep(Duration::from_millis(800));
    let after = answers(&proxy, 6);
    assert!(bad.requests() > hits, "back after fail_duration: {after:?}");
}

#[test]
fn passive_health_counts_slow_responses_as_failures() {
    let slow = Backend::start("slow");
    let yaml = one_upstream_yaml(
        "$S",
        "    lb: { try_duration: 0s }\n    \
         health: { passive: { fail_duration: 5s, unhealthy_latency: 50ms } }\n",
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("S", slow.target())]);
    assert_eq!(proxy.get("/sleep?ms=120").status, 200);
    assert_eq!(
        proxy.get("/").status,
        503,
        "the slow target is down for fail_duration"
    );
}

#[test]
fn active_health_marks_a_killed_target_down_and_a_restarted_one_up_probing_once_per_interval() {
    let a = FixedBackend::start("a", 200, any_port());
    let a_addr = a.addr();
    let b = FixedBackend::start("b", 200, any_port());
    let yaml = format!(
        "workers: 2\n{}",
        one_upstream_yaml(
            "$A, $B",
            "    lb: { policy: round_robin }\n    \
             health:\n      active: { uri: /health, interval: 100ms, timeout: 50ms, fails: 2, passes: 2 }\n",
        )
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    // One probe per interval per target, not one per worker: ~10 in one second.
    std::thread::sleep(Duration::from_millis(1000));
    let probes = a.hits("/health");
    // Per-worker probing would give ~20; a busy machine may delay a few.
    assert!(
        (6..=14).contains(&probes),
        "{probes} probes in 1s at a 100ms interval"
    );
    assert!(answers(&proxy, 10).iter().any(|(_, n)| n == "a"));

    drop(a);
    // Down within interval x fails (plus one interval of slack for the probe in progress).
    std::thread::sleep(Duration::from_millis(100 * 3 + 50));
    let down = answers(&proxy, 10);
    assert!(down.iter().all(|(s, n)| *s == 200 && n == "b"), "{down:?}");

    let a = FixedBackend::start("a", 200, a_addr);
    let came_back = wait_for(Duration::from_millis(100 * 4 + 200), || {
        answers(&proxy, 2).iter().any(|(_, n)| n == "a")
    });
    assert!(
        came_back,
        "the restarted target is used again after `passes` good probes"
    );
    assert!(a.hits("/health") >= 2);
}

#[test]
fn active_health_checks_status_and_body_and_plain_connects_without_uri() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    // `a` answers /status/503 with 503: expect_status 2xx fails it. `b` answers anything else
    // with its name: the body regex passes it.
    let yaml = one_upstream_yaml(
        "$A, $B",
        "    lb: { policy: round_robin }\n    \
         health:\n      active: { uri: /status/503, interval: 50ms, fails: 1, expect_status: \"200,204\" }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    std::thread::sleep(Duration::from_millis(200));
    let seen = answers(&proxy, 6);
    // Both fail the 503 probe: no target left.
    assert!(seen.iter().all(|(s, _)| *s == 503), "{seen:?}");
    drop(proxy);

    let yaml = one_upstream_yaml(
        "$A, $B",
        "    health:\n      active: { uri: /x, body: \"^b\\n$\", interval: 50ms, fails: 1 }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(answers(&proxy, 8).iter().all(|(_, n)| n == "b"));
    drop(proxy);

    let dead = refused_addr().to_string();
    let yaml = one_upstream_yaml(
        "$DEAD, $B",
        "    lb: { policy: round_robin }\n    health:\n      active: { interval: 50ms, fails: 1 }\n",
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DEAD", dead), ("B", b.target())]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(answers(&proxy, 8)
        .iter()
        .all(|(s, n)| *s == 200 && n == "b"));
}

#[test]
fn active_health_probes_send_the_configured_method_uri_and_headers() {
    let a = Backend::start("a");
    let yaml = one_upstream_yaml(
        "$A",
        "    health:\n      active:\n        uri: \"/healthz?deep=1\"\n        method: HEAD\n        \
         interval: 50ms\n        headers: { Host: api.internal, X-Probe: ringway }\n",
    );
    let _proxy = Proxy::start(Driver::any(), &yaml, &[("A", a.target())]);
    assert!(a.wait_for_requests(1, Duration::from_secs(2)));
    let probe = a.recorded().remove(0);
    assert_eq!(probe.method, "HEAD");
    assert_eq!(probe.target, "/healthz?deep=1");
    assert_eq!(probe.header("host"), Some("api.internal"));
    assert_eq!(
        probe.header_all("host").len(),
        1,
        "Host is replaced, not added"
    );
    assert_eq!(probe.header("x-probe"), Some("ringway"));
}

/// The admin endpoint's `/upstreams` body (Connection: close, read to the end).
fn admin_upstreams(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /upstreams HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn admin_reports_a_passively_failed_target_unhealthy_until_fail_duration_passes() {
    let bad = FixedBackend::start("bad", 503, any_port());
    let yaml = format!(
        "admin:\n  listen: 127.0.0.1:0\n{}",
        one_upstream_yaml(
            "$BAD",
            "    health: { passive: { fail_duration: 2s, unhealthy_status: [503] } }\n",
        )
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("BAD", bad.target())]);
    let admin = proxy.server().admin_addr().expect("admin enabled");
    let healthy = |want: bool| {
        let s = admin_upstreams(admin).replace([' ', '\n'], "");
        s.contains(&format!("\"healthy\":{want}"))
    };
    assert!(healthy(true));
    let failed = std::time::Instant::now();
    assert_eq!(proxy.get("/").status, 503);
    // The worker marks the target right after answering: allow it a moment on a busy machine.
    assert!(wait_for(Duration::from_secs(1), || healthy(false)));
    assert!(wait_for(Duration::from_secs(5), || healthy(true)));
    assert!(
        failed.elapsed() >= Duration::from_millis(1900),
        "healthy again too soon"
    );
}
