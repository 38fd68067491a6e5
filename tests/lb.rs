//! Load-balancing policies through the real data path: hashing stickiness, the cookie policy,
//! load-aware policies across two workers, connection caps across workers, and retries.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

/// Three named backends and a proxy over them with `lb` as the upstream's lb mapping body.
fn three(lb: &str, workers: usize) -> (Proxy, [Backend; 3]) {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let yaml = format!(
        "workers: {workers}\n{}",
        one_upstream_yaml("$A, $B, $C", &format!("    lb: {lb}\n"))
    );
    let vars = [
        ("A", bs[0].target()),
        ("B", bs[1].target()),
        ("C", bs[2].target()),
    ];
    (Proxy::start(Driver::any(), &yaml, &vars), bs)
}

/// Which backend answered `extra`-decorated GETs of `path`, one per fresh connection.
fn who(proxy: &Proxy, path: &str, extra: &str) -> String {
    let mut c = proxy.client();
    let r = c.request(get_req(path, extra));
    assert_eq!(r.status, 200, "{}", r.head_text());
    r.header("x-backend").unwrap().to_string()
}

#[test]
fn header_policy_sends_the_same_value_to_the_same_target() {
    let (proxy, _bs) = three("{ policy: header, key: X-User }", 2);
    let mut owners = HashMap::new();
    for user in 0..30 {
        let first = who(&proxy, "/", &format!("X-User: u{user}\r\n"));
        for _ in 0..3 {
            assert_eq!(who(&proxy, "/", &format!("x-user: u{user}\r\n")), first);
        }
        owners.insert(user, first);
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "30 keys should reach all 3 targets: {owners:?}"
    );
}

#[test]
fn query_policy_sends_the_same_value_to_the_same_target() {
    let (proxy, _bs) = three("{ policy: query, key: id }", 2);
    let mut seen = std::collections::HashSet::new();
    for id in 0..30 {
        let first = who(&proxy, &format!("/x?a=1&id={id}"), "");
        assert_eq!(who(&proxy, &format!("/y?id={id}&b=2"), ""), first);
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn uri_hash_sends_the_same_uri_to_the_same_target() {
    let (proxy, _bs) = three("{ policy: uri_hash }", 2);
    let mut seen = std::collections::HashSet::new();
    for n in 0..30 {
        let path = format!("/item/{n}");
        let first = who(&proxy, &path, "");
        assert!((0..3).all(|_| who(&proxy, &path, "") == first));
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn ip_hash_sends_one_client_address_to_one_target() {
    let (proxy, _bs) = three("{ policy: ip_hash }", 2);
    let first = who(&proxy, "/", "");
    assert!((0..20).all(|_| who(&proxy, "/", "") == first));
}

#[test]
fn client_ip_hash_uses_the_forwarded_client_behind_a_trusted_proxy() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let yaml = format!(
        "trusted_proxies: [127.0.0.0/8]\n{}",
        one_upstream_yaml("$A, $B, $C", "    lb: { policy: client_ip_hash }\n")
    );
    let vars = [
        ("A", bs[0].target()),
        ("B", bs[1].target()),
        ("C", bs[2].target()),
    ];
    let proxy = Proxy::start(Driver::any(), &yaml, &vars);
    let mut seen = std::collections::HashSet::new();
    for n in 0..30 {
        // The nearest hop is another trusted proxy: the client is the hop before it.
        let xff = format!("X-Forwarded-For: 203.0.113.{n}, 127.0.0.9\r\n");
        let first = who(&proxy, "/", &xff);
        assert!((0..3).all(|_| who(&proxy, "/", &xff) == first));
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "different clients should spread");
}

#[test]
fn cookie_policy_sets_a_cookie_once_and_sticks_to_its_target() {
    let (proxy, bs) = three("{ policy: cookie, key: sticky, secret: s3cret }", 2);
    let mut c = proxy.client();
    let r = c.request(get_req("/", ""));
    let set = r
        .header("set-cookie")
        .expect("first response sets the cookie")
        .to_string();
    let target = r.header("x-backend").unwrap().to_string();
    let pair = set.split(';').next().unwrap().to_string();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "sticky");
    let owner = bs.iter().find(|b| b.name() == target).unwrap();
    assert_eq!(
        value,
        ringway::upstream::balance::cookie_value("s3cret", &owner.target()),
        "hex HMAC-SHA256(secret, dial address): {set}"
    );
    for _ in 0..20 {
        let mut c = proxy.client();
        let r = c.request(get_req("/", &format!("Cookie: other=1; {pair}\r\n")));
        assert_eq!(r.header("x-backend").unwrap(), target);
        assert!(
            !r.has_header("set-cookie"),
            "a matching cookie is not set again"
        );
    }
}

/// One slow request holds target X; while it runs, quick requests on fresh connections (which
/// SO_REUSEPORT spreads over both workers) should prefer the other target.
fn held_load_steers_quick_requests_away(lb: &str, min_share: f64) {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let yaml = format!(
        "workers: 2\n{}",
        one_upstream_yaml("$A, $B", &format!("    lb: {lb}\n"))
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    let addr = proxy.addr();
    let slow = std::thread::spawn(move || get(addr, "/sleep?ms=3000").status);
    assert!(wait_for(Duration::from_secs(2), || a.requests()
        + b.requests()
        == 1));
    let held = if a.requests() == 1 { "a" } else { "b" };
    // Only answers given while the slow request still holds its target count.
    let (mut n, mut other) = (0, 0);
    while n < 40 && !slow.is_finished() {
        let name = who(&proxy, "/", "");
        if !slow.is_finished() {
            n += 1;
            other += usize::from(name != held);
        }
    }
    assert_eq!(slow.join().unwrap(), 200);
    assert!(n >= 10, "only {n} requests fit into the slow one");
    let share = other as f64 / n as f64;
    assert!(
        share >= min_share,
        "only {other} of {n} avoided the loaded target"
    );
}

#[test]
fn least_conn_avoids_the_target_another_worker_keeps_busy() {
    // Not 100%: a quick request's in-flight mark is dropped just after its last byte is
    // written, so the next request (maybe on the other worker) can still see a 1-1 tie.
    held_load_steers_quick_requests_away("{ policy: least_conn }", 0.85);
}

#[test]
fn random_choose_prefers_the_target_another_worker_keeps_less_busy() {
    // Two samples of two targets both hit the busy one a quarter of the time.
    held_load_steers_quick_requests_away("{ policy: random_choose, choose: 2 }", 0.6);
}

/// 8 concurrent slow requests from fresh connections (spread over two workers) to one
/// target capped at 2 connections: never more than 2 open at once, and every request is
/// served (waiting requests retry until a slot frees).
fn capped_target_serves_everyone(keepalive: bool) {
    let a = Backend::start("a");
    let transport = if keepalive {
        ""
    } else {
        "    transport: { keepalive: false }\n"
    };
    let yaml = format!(
        "workers: 2\n{}",
        one_upstream_yaml(
            "{ address: \"$A\", max_connections: 2 }",
            &format!("    lb: {{ try_duration: 10s, try_interval: 20ms }}\n{transport}")
        )
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("A", a.target())]);
    let addr = proxy.addr();
    for round in 0..2 {
        let clients: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || get(addr, "/sleep?ms=150").status))
            .collect();
        let mut peak = 0;
        let started = Instant::now();
        while !clients.iter().all(|c| c.is_finished())
            && started.elapsed() < Duration::from_secs(10)
        {
            peak = peak.max(a.open_connections());
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = started.elapsed();
        for c in clients {
            assert_eq!(c.join().unwrap(), 200, "round {round}");
        }
        assert!(peak <= 2, "{peak} connections open at once, cap is 2");
        // 8 requests of 150 ms over 2 connections: ~600 ms, not an idle timeout.
        assert!(took < Duration::from_secs(3), "round {round} took {took:?}");
    }
    assert_eq!(a.requests(), 16);
}

#[test]
fn max_connections_holds_across_workers_under_concurrent_load() {
    capped_target_serves_everyone(false);
}

#[test]
fn max_connections_hands_pooled_slots_to_a_waiting_worker() {
    capped_target_serves_everyone(true);
}

#[test]
fn retries_skip_a_dead_target() {
    let b = Backend::start("b");
    let yaml = one_upstream_yaml(
        "$DEAD, $B",
        "    lb: { policy: round_robin, retries: 1, try_interval: 0s }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("DEAD", refused_addr().to_string()), ("B", b.target())],
    );
    for _ in 0..10 {
        assert_eq!(proxy.get("/").status, 200);
    }
    assert_eq!(b.requests(), 10);
}

#[test]
fn a_post_that_reached_the_upstream_is_not_retried() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let yaml = one_upstream_yaml(
        "$A, $B",
        // Passive health off: A stays first in line for the GET below.
        "    lb: { policy: first, retries: 3, try_interval: 0s }\n    \
         health: { passive: { fail_duration: 0s } }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("B", b.target())],
    );
    let mut c = proxy.client();
    let r = c.request(
        "POST /bad/empty HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 502);
    assert_eq!(a.requests(), 1);
    assert_eq!(
        b.requests(),
        0,
        "the POST must not be replayed on another target"
    );
    // The same failure on a GET (a retry method) moves on to the next target.
    let r = proxy.get("/bad/empty");
    assert_eq!(r.status, 502);
    assert_eq!(b.requests(), 1, "a GET is retried on the other target");
}

#[test]
fn all_targets_down_answers_503_after_try_duration() {
    let yaml = one_upstream_yaml(
        "$D1, $D2",
        "    lb: { try_duration: 600ms, try_interval: 100ms }\n    \
         health: { passive: { fail_duration: 10s, max_fails: 1 } }\n",
    );
    let d1 = refused_addr().to_string();
    let d2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let proxy = Proxy::start(Driver::any(), &yaml, &[("D1", d1), ("D2", d2)]);
    let started = Instant::now();
    let r = proxy.get("/");
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.head_text());
    assert!(took >= Duration::from_millis(600), "gave up after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn split_sends_its_percent_of_10k_requests_within_two_percent() {
    let main = Backend::start("main");
    let canary = Backend::start("canary");
    let yaml = one_upstream_yaml(
        "$M",
        "    split: { targets: [\"$C\"], percent: 20 }\n    lb: { policy: round_robin }\n",
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("M", main.target()), ("C", canary.target())],
    );
    let mut c = proxy.client();
    let n = 10_000;
    for _ in 0..n {
        assert_eq!(c.request(get_req("/", "")).status, 200);
    }
    let share = canary.requests() as f64 / n as f64;
    assert_eq!(main.requests() + canary.requests(), n);
    assert!(
        (share - 0.20).abs() < 0.02,
        "canary got {share:.3} of requests"
    );
}
