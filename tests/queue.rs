//! Connection caps that wait instead of failing: requests finding every target at
//! `max_connections` queue (FIFO per worker) for `transport.queue_timeout`, then get 503; a
//! slot freed by any worker lets the next one in; `transport.max_connections` caps a whole
//! upstream across workers.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use support::*;

/// Sends `n` requests `/sleep?ms=MS&i=I` from their own connections, `gap` apart, and returns
/// each one's status and how long it took.
fn staggered(proxy: &Proxy, n: usize, ms: u64, gap: Duration) -> Vec<(u16, Duration)> {
    let addr = proxy.addr();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let h = std::thread::spawn(move || {
                let started = Instant::now();
                let r = get(addr, &format!("/sleep?ms={ms}&i={i}"));
                (r.status, started.elapsed())
            });
            std::thread::sleep(gap);
            h
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

driver_tests! {
    fn requests_beyond_max_connections_wait_and_are_served_in_fifo_order(driver) {
        let b1 = Backend::start("b1");
        let yaml = format!(
            "workers: 1\n{}",
            one_upstream_yaml("{ address: \"$B1\", max_connections: 1 }", "")
        );
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let started = Instant::now();
        let results = staggered(&proxy, 5, 150, Duration::from_millis(30));
        assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
        // One at a time, in the order they arrived.
        let order: Vec<String> = b1.recorded().into_iter().map(|r| r.target).collect();
        let want: Vec<String> = (0..5).map(|i| format!("/sleep?ms=150&i={i}")).collect();
        assert_eq!(order, want);
        // The one connection passed from request to request (no close and redial).
        assert_eq!(b1.connections(), 1);
        // One at a time: five 150 ms requests took at least 750 ms, within queue_timeout.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(700), "ran side by side: {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    fn a_request_waiting_longer_than_queue_timeout_gets_503(driver) {
        let b1 = Backend::start("b1");
        let yaml = format!(
            "workers: 1\n{}",
            one_upstream_yaml(
                "{ address: \"$B1\", max_connections: 1 }",
                "    transport: { queue_timeout: 300ms }\n",
            )
        );
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let results = staggered(&proxy, 2, 1500, Duration::from_millis(100));
        assert_eq!(results[0].0, 200, "{results:?}");
        assert_eq!(results[1].0, 503, "{results:?}");
        let waited = results[1].1;
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_millis(1400), "gave up only after {waited:?}");
    }
}

#[test]
fn a_slot_freed_by_another_worker_lets_a_waiting_request_in() {
    let b1 = Backend::start("b1");
    let yaml = format!(
        "workers: 2\n{}",
        one_upstream_yaml(
            "{ address: \"$B1\", max_connections: 1 }",
            "    transport: { keepalive: false }\n"
        )
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B1", b1.target())]);
    // Six requests over fresh connections land on both workers; all wait their turn.
    let results = staggered(&proxy, 6, 100, Duration::from_millis(10));
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    assert_eq!(b1.requests(), 6);
}

#[test]
fn an_upstream_wide_max_connections_caps_all_targets_together() {
    // Pooled (keep-alive) connections hold their slot too: a worker's idle one is handed over
    // to another worker's waiting request.
    for keepalive in [true, false] {
        let a = Backend::start("a");
        let b = Backend::start("b");
        let yaml = format!(
            "workers: 2\n{}",
            one_upstream_yaml(
                "$A, $B",
                &format!(
                    "    lb: {{ policy: round_robin }}\n    \
                     transport: {{ max_connections: 1, keepalive: {keepalive} }}\n"
                )
            )
        );
        let proxy = Proxy::start(
            Driver::any(),
            &yaml,
            &[("A", a.target()), ("B", b.target())],
        );
        let started = Instant::now();
        let results = staggered(&proxy, 4, 200, Duration::from_millis(10));
        assert!(
            results.iter().all(|(s, _)| *s == 200),
            "keepalive {keepalive}: {results:?}"
        );
        // One connection at a time across both targets: the four ran one after another.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(750),
            "ran side by side: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "keepalive {keepalive}: {took:?}"
        );
        assert_eq!(a.requests() + b.requests(), 4);
    }
}
