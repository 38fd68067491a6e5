//! Retries as Caddy documents them: `retries` and `try_duration` both limit when both are set,
//! `retry_match` narrows which sent requests are retried, and every failure class (dial, TLS,
//! reset or timeout before the response head) is retried like it counts for passive health.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use support::targets::Hung;
use support::*;

#[test]
fn retries_stop_trying_before_try_duration_runs_out_when_both_are_set() {
    let dead = refused_addr();
    let yaml = one_upstream_yaml(
        "$DEAD",
        "    lb: { retries: 2, try_duration: 20s, try_interval: 100ms }\n",
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DEAD", dead.to_string())]);
    let started = Instant::now();
    let r = proxy.get("/");
    let took = started.elapsed();
    assert_eq!(r.status, 502, "{}", r.head_text());
    // Three attempts two pauses apart; try_duration alone would have kept going for 20s.
    assert!(took >= Duration::from_millis(150), "gave up after {took:?}");
    assert!(
        took < Duration::from_secs(8),
        "retries did not limit: {took:?}"
    );
}

#[test]
fn try_duration_stops_retries_early_when_both_are_set() {
    let dead = refused_addr();
    let yaml = one_upstream_yaml(
        "$DEAD",
        "    lb: { retries: 1000, try_duration: 500ms, try_interval: 50ms }\n",
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DEAD", dead.to_string())]);
    let started = Instant::now();
    assert_eq!(proxy.get("/").status, 502);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

fn two_targets(lb: &str) -> (Proxy, Backend, Backend) {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let yaml = one_upstream_yaml(
        "$A, $B",
        &format!("    lb: {lb}\n    health: {{ passive: {{ fail_duration: 0s }} }}\n"),
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    (proxy, a, b)
}

#[test]
fn retry_match_limits_retries_of_sent_requests_to_matching_ones() {
    let (proxy, a, b) = two_targets(
        "{ policy: first, retries: 1, try_interval: 0s, retry_match: { headers: { X-Retry: \"yes\" } } }",
    );
    // A closes without answering; a GET without the header is not retried.
    let r = proxy.client().request(get_req("/bad/empty", ""));
    assert_eq!(r.status, 502);
    assert_eq!((a.requests(), b.requests()), (1, 0));
    // With the header it matches and moves on to B.
    let r = proxy
        .client()
        .request(get_req("/bad/empty", "X-Retry: yes\r\n"));
    assert_eq!(r.status, 502, "B fails the same way");
    assert_eq!((a.requests(), b.requests()), (2, 1));
}

#[test]
fn retry_match_on_a_path_with_retry_methods_retries_a_post() {
    let (proxy, a, b) = two_targets(
        "{ policy: first, retries: 1, try_interval: 0s, retry_methods: [GET, POST], \
         retry_match: { path: /bad } }",
    );
    let r = proxy.client().request(
        "POST /bad/empty HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 502);
    assert_eq!(
        (a.requests(), b.requests()),
        (1, 1),
        "the POST matched and moved on"
    );
}

#[test]
fn a_get_timing_out_before_its_response_head_is_retried_on_another_target() {
    let hung = Hung::start();
    let good = Backend::start("good");
    let yaml = one_upstream_yaml(
        "$HUNG, $GOOD",
        "    lb: { policy: first, retries: 1, try_interval: 0s }\n    \
         transport: { response_header_timeout: 300ms }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("HUNG", hung.target()), ("GOOD", good.target())],
    );
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert_eq!(r.header("x-backend"), Some("good"));
    // ... and it counted against the hung target: the next request goes straight to good.
    let started = Instant::now();
    assert_eq!(proxy.get("/").status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hung.accepted(), 1);
}
