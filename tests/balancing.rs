//! Load balancing across targets: round_robin, weighted_round_robin, first, random,
//! least_conn, and retries onto another target when a dial fails.

#[macro_use]
mod support;

use std::time::Duration;
use support::*;

fn start_two(lb: &str) -> (Proxy, Backend, Backend) {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let yaml = one_upstream_yaml("$A, $B", &format!("    lb: {lb}\n"));
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    (proxy, a, b)
}

/// The backend names answering `n` requests sent one by one over one connection.
fn sequence(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut c = proxy.client();
    (0..n)
        .map(|_| {
            let r = c.request(get_req("/", ""));
            assert_eq!(r.status, 200);
            r.header("x-backend").unwrap().to_string()
        })
        .collect()
}

driver_tests! {
    fn round_robin_alternates_between_two_backends(driver) {
        let a = Backend::start("a");
        let b = Backend::start("b");
        let yaml = one_upstream_yaml("$A, $B", "    lb: { policy: round_robin }\n");
        let proxy = Proxy::start(driver, &yaml, &[("A", a.target()), ("B", b.target())]);
        let seq = sequence(&proxy, 10);
        for w in seq.windows(2) {
            assert_ne!(w[0], w[1], "round robin must alternate: {seq:?}");
        }
        assert_eq!(a.requests(), 5);
        assert_eq!(b.requests(), 5);
        // Each backend's connection is pooled and reused.
        assert_eq!(a.connections(), 1);
        assert_eq!(b.connections(), 1);
    }
}

#[test]
fn weighted_round_robin_follows_the_weights() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let yaml = one_upstream_yaml(
        "{ address: \"$A\", weight: 3 }, { address: \"$B\", weight: 1 }",
        "    lb: { policy: weighted_round_robin }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    let seq = sequence(&proxy, 16);
    assert_eq!(a.requests(), 12, "{seq:?}");
    assert_eq!(b.requests(), 4, "{seq:?}");
    // Smooth: never more than three of `a` in a row.
    let mut run = 0;
    for s in &seq {
        run = if s == "a" { run + 1 } else { 0 };
        assert!(run <= 3, "not smooth: {seq:?}");
    }
}

#[test]
fn first_policy_always_picks_the_first_available_target() {
    let (proxy, a, b) = start_two("{ policy: first }");
    let seq = sequence(&proxy, 6);
    assert!(seq.iter().all(|s| s == "a"), "{seq:?}");
    assert_eq!(b.requests(), 0);
    assert_eq!(a.requests(), 6);
}

#[test]
fn first_policy_falls_over_to_the_next_target_when_the_first_refuses() {
    let b = Backend::start("b");
    let yaml = one_upstream_yaml(
        "$DEAD, $B",
        "    lb: { policy: first, retries: 1, try_interval: 10ms }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("DEAD", refused_addr().to_string()), ("B", b.target())],
    );
    for _ in 0..3 {
        assert_eq!(proxy.get("/").header("x-backend"), Some("b"));
    }
}

#[test]
fn random_policy_uses_every_target() {
    let (proxy, a, b) = start_two("{ policy: random }");
    let seq = sequence(&proxy, 60);
    assert!(a.requests() > 0 && b.requests() > 0, "{seq:?}");
    assert_eq!(a.requests() + b.requests(), 60);
}

#[test]
fn random_choose_uses_every_target() {
    let (proxy, a, b) = start_two("{ policy: random_choose, choose: 2 }");
    // With nothing in flight all loads tie; over 60 requests both targets are chosen.
    let seq = sequence(&proxy, 60);
    assert!(a.requests() > 0 && b.requests() > 0, "{seq:?}");
}

#[test]
fn least_conn_avoids_the_target_with_a_request_in_flight() {
    let (proxy, a, b) = start_two("{ policy: least_conn }");
    // Two workers would be fine too, but one keeps the in-flight view simple.
    let addr = proxy.addr();
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.request(get_req("/sleep?ms=800", ""))
    });
    assert!(
        wait_for(Duration::from_secs(3), || a.requests() + b.requests() == 1),
        "the slow request never reached a backend"
    );
    let busy = if a.requests() == 1 { "a" } else { "b" };
    for _ in 0..3 {
        let r = proxy.get("/");
        assert_ne!(
            r.header("x-backend"),
            Some(busy),
            "least_conn picked the busy target"
        );
    }
    assert_eq!(slow.join().unwrap().status, 200);
}

#[test]
fn retries_skip_a_refusing_target() {
    let b = Backend::start("b");
    let yaml = one_upstream_yaml(
        "$DEAD, $B",
        "    lb: { policy: round_robin, retries: 1, try_interval: 10ms }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("DEAD", refused_addr().to_string()), ("B", b.target())],
    );
    for _ in 0..6 {
        let r = proxy.get("/");
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.header("x-backend"), Some("b"));
    }
}

#[test]
fn try_duration_keeps_trying_until_a_target_answers() {
    // The only target refuses at first and comes up 300 ms later on the same port.
    let dead = refused_addr();
    let yaml = one_upstream_yaml(
        "$T",
        "    lb: { policy: first, try_duration: 3s, try_interval: 50ms }\n",
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("T", dead.to_string())]);
    let addr = proxy.addr();
    let client = std::thread::spawn(move || get(addr, "/late"));
    std::thread::sleep(Duration::from_millis(300));
    let listener = std::net::TcpListener::bind(dead).expect("rebind the refused port");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = std::io::Read::read(&mut s, &mut buf);
        let _ = std::io::Write::write_all(
            &mut s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlate\n",
        );
    });
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "late\n");
    server.join().unwrap();
}
