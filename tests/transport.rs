//! Upstream transport settings and retry rules: keepalive off, pooled-connection idle_timeout,
//! max_idle_per_worker, dial_timeout, target address forms, and which failed requests are
//! replayed on another target.

#[macro_use]
mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::*;

fn start_one(upstream_extra: &str) -> (Proxy, Backend) {
    let b1 = Backend::start("b1");
    let yaml = one_upstream_yaml("$B1", upstream_extra);
    (
        Proxy::start(Driver::any(), &yaml, &[("B1", b1.target())]),
        b1,
    )
}

#[test]
fn keepalive_off_closes_every_upstream_connection_but_keeps_the_client_one() {
    let (proxy, b1) = start_one("    transport: { keepalive: false }\n");
    let mut c = proxy.client();
    for _ in 0..3 {
        let r = c.request(get_req("/", ""));
        assert_eq!(r.status, 200);
        assert!(!r.closes(), "{}", r.head_text());
    }
    assert_eq!(b1.connections(), 3, "one upstream connection per request");
    for req in b1.recorded() {
        assert!(
            req.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")),
            "the upstream request must say Connection: close: {}",
            req.head_text()
        );
    }
}

#[test]
fn pooled_connection_older_than_idle_timeout_is_not_reused() {
    let (proxy, b1) = start_one("    transport: { idle_timeout: 200ms }\n");
    let mut c = proxy.client();
    assert_eq!(c.request(get_req("/", "")).status, 200);
    assert_eq!(c.request(get_req("/", "")).status, 200);
    assert_eq!(b1.connections(), 1, "reused while fresh");
    // Waiting out the configured idle time is the behaviour under test.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c.request(get_req("/", "")).status, 200);
    assert_eq!(
        b1.connections(),
        2,
        "an expired pooled connection must not be used"
    );
}

#[test]
fn max_idle_per_worker_zero_disables_pooling() {
    let (proxy, b1) = start_one("    transport: { max_idle_per_worker: 0 }\n");
    let mut c = proxy.client();
    for _ in 0..3 {
        assert_eq!(c.request(get_req("/", "")).status, 200);
    }
    assert_eq!(b1.connections(), 3);
}

#[test]
fn http_scheme_target_is_accepted() {
    let b1 = Backend::start("b1");
    let yaml = one_upstream_yaml("\"http://$B1\"", "");
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B1", b1.target())]);
    assert_eq!(proxy.get("/").text(), "b1\n");
}

#[test]
fn hostname_target_is_resolved() {
    let b1 = Backend::start("b1");
    let yaml = one_upstream_yaml("\"localhost:$PORT\"", "");
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("PORT", b1.addr().port().to_string())],
    );
    assert_eq!(proxy.get("/").text(), "b1\n");
}

#[test]
fn driver_auto_serves_requests() {
    let b1 = Backend::start("b1");
    // `driver:` set in the YAML wins over the test default.
    let yaml = format!("driver: auto\n{}", one_upstream_yaml("$B1", ""));
    let proxy = Proxy::start(Driver::Epoll, &yaml, &[("B1", b1.target())]);
    assert_eq!(proxy.get("/").status, 200);
}

/// A listener whose accept queue is full, so a new connect hangs in SYN retransmission.
fn full_backlog_listener() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => held.push(c),
            Err(_) => return (s, held, addr),
        }
    }
    panic!("could not fill the accept queue of a backlog-0 listener");
}

driver_tests! {
    fn dial_timeout_gets_504(driver) {
        let (_listener, _held, addr) = full_backlog_listener();
        let yaml = one_upstream_yaml("$T", "    transport: { dial_timeout: 300ms }\n");
        let proxy = Proxy::start(driver, &yaml, &[("T", addr.to_string())]);
        let start = std::time::Instant::now();
        let r = proxy.get("/");
        let took = start.elapsed();
        assert_eq!(r.status, 504, "{}", r.head_text());
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    }

    fn get_already_sent_is_retried_on_another_target_when_the_first_closes_without_answering(driver) {
        let bad = Backend::start_with("bad", BackendOptions { drop_requests: true, ..Default::default() });
        let good = Backend::start("good");
        let yaml = one_upstream_yaml("$BAD, $GOOD", "    lb: { policy: first, retries: 1, try_interval: 10ms }\n");
        let proxy = Proxy::start(driver, &yaml, &[("BAD", bad.target()), ("GOOD", good.target())]);
        let r = proxy.get("/idempotent");
        assert_eq!(r.status, 200, "retry_methods [GET] (the default) allows replaying a sent GET: {}", r.head_text());
        assert_eq!(r.header("x-backend"), Some("good"));
        assert_eq!(bad.requests(), 1);
        assert_eq!(good.requests(), 1);
    }

    fn post_already_sent_is_not_replayed_on_another_target(driver) {
        let bad = Backend::start_with("bad", BackendOptions { drop_requests: true, ..Default::default() });
        let good = Backend::start("good");
        let yaml = one_upstream_yaml("$BAD, $GOOD", "    lb: { policy: first, retries: 1, try_interval: 10ms }\n");
        let proxy = Proxy::start(driver, &yaml, &[("BAD", bad.target()), ("GOOD", good.target())]);
        let mut c = proxy.client();
        let r = c.request("POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n100");
        assert_eq!(r.status, 502, "{}", r.head_text());
        assert_eq!(bad.requests(), 1);
        assert_eq!(good.requests(), 0, "a POST the first target may have acted on must not be replayed");
    }

    fn retry_methods_can_allow_replaying_a_post(driver) {
        let bad = Backend::start_with("bad", BackendOptions { drop_requests: true, ..Default::default() });
        let good = Backend::start("good");
        let yaml = one_upstream_yaml(
            "$BAD, $GOOD",
            "    lb: { policy: first, retries: 1, try_interval: 10ms, retry_methods: [GET, POST] }\n",
        );
        let proxy = Proxy::start(driver, &yaml, &[("BAD", bad.target()), ("GOOD", good.target())]);
        let r = proxy
            .client()
            .request("POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.text(), "abc");
        assert_eq!(good.only_request().body, b"abc");
    }

    fn post_on_a_pooled_connection_the_backend_already_closed_succeeds(driver) {
        // The backend closed the idle connection well before the POST: nothing was sent on a
        // live connection, so using a fresh one loses nothing.
        let b1 = Backend::start_with("b1", BackendOptions { close_after_response: true, ..Default::default() });
        let proxy = Proxy::start(driver, &one_upstream_yaml("$B1", ""), &[("B1", b1.target())]);
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        assert!(b1.wait_for_no_open_connections(Duration::from_secs(3)));
        let r = c.request("POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.text(), "hello");
        assert_eq!(b1.requests(), 2);
    }
}
