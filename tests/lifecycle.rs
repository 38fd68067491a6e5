//! Starting and stopping: graceful drain with a request in flight, idle connections closed on
//! shutdown, shutdown_timeout bounding the drain, startup errors, listener addresses.

#[macro_use]
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

/// Whether a TCP connect to `addr` is refused (or otherwise fails) right now.
fn refused(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

driver_tests! {
    fn graceful_shutdown_finishes_the_request_in_flight_and_refuses_new_connections(driver) {
        let (mut proxy, b1) = proxy_to_one_backend(driver);
        let addr = proxy.addr();
        let mut c = proxy.client();
        c.send(get_req("/sleep?ms=1000", ""));
        assert!(b1.wait_for_requests(1, Duration::from_secs(3)), "the slow request never arrived");
        let server = proxy.take_server();
        let stopper = std::thread::spawn(move || shutdown_bounded(server));
        // New connections are refused while the old request is still being served.
        assert!(
            wait_for(Duration::from_secs(2), || refused(addr)),
            "new connections were still accepted during the drain"
        );
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "slept\n");
        assert!(r.closes(), "a draining proxy closes keep-alive connections: {}", r.head_text());
        c.expect_closed();
        let took = stopper.join().unwrap().expect("shutdown returned");
        assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
        assert!(refused(addr), "the listener is gone after shutdown");
    }

    fn shutdown_closes_idle_keep_alive_connections_promptly(driver) {
        let (mut proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        let took = shutdown_bounded(proxy.take_server()).expect("shutdown returned");
        assert!(took < Duration::from_secs(2), "an idle connection held shutdown for {took:?}");
        c.expect_closed();
    }

    fn shutdown_timeout_bounds_the_drain(driver) {
        let b1 = Backend::start("b1");
        let yaml = format!("shutdown_timeout: 300ms\n{}", one_upstream_yaml("$B1", ""));
        let mut proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let mut c = proxy.client();
        c.send(get_req("/sleep?ms=4000", ""));
        assert!(b1.wait_for_requests(1, Duration::from_secs(3)));
        let start = Instant::now();
        shutdown_bounded(proxy.take_server()).expect("shutdown returned");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250), "shutdown did not wait at all: {took:?}");
        assert!(took < Duration::from_secs(2), "shutdown ignored shutdown_timeout: {took:?}");
        match c.try_read_response(false) {
            Err(ReadError::Closed(_)) => {}
            Ok(r) => assert!(r.status >= 500, "unexpected answer after the drain: {}", r.head_text()),
            Err(e) => panic!("the client must see its connection end: {e}"),
        }
    }

    fn server_restarts_on_the_same_port_after_shutdown(driver) {
        let b1 = Backend::start("b1");
        let proxy = Proxy::start(driver, &one_upstream_yaml("$B1", ""), &[("B1", b1.target())]);
        let addr = proxy.addr();
        assert_eq!(proxy.get("/").status, 200);
        proxy.shutdown();
        let yaml = format!(
            "listeners:\n  - name: web\n    listen: {addr}\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n"
        );
        let again = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        assert_eq!(again.addr(), addr);
        assert_eq!(again.get("/").status, 200);
    }
}

#[test]
fn start_fails_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let yaml = format!(
        "driver: epoll\npin_workers: false\nworkers: 1\nlisteners:\n  - name: web\n    listen: {addr}\n    routes:\n      - respond: {{ status: 200 }}\n"
    );
    let config = ringway::config::Config::parse(&yaml, "test.yaml").expect("valid config");
    match ringway::control::Server::start(config) {
        Ok(s) => {
            s.shutdown();
            panic!("Server::start succeeded on a port another socket holds");
        }
        Err(e) => assert!(
            e.to_string().contains("web"),
            "the error names the listener: {e}"
        ),
    }
}

#[test]
fn every_listener_gets_its_own_address_and_routes() {
    let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - respond: { status: 200, body: \"web\\n\" }\n  - name: other\n    listen: 127.0.0.1:0\n    routes:\n      - respond: { status: 200, body: \"other\\n\" }\n";
    let proxy = Proxy::start(Driver::any(), yaml, &[]);
    let web = proxy.local_addr("web").unwrap();
    let other = proxy.local_addr("other").unwrap();
    assert_ne!(web.port(), other.port());
    assert_eq!(proxy.local_addr("missing"), None);
    assert_eq!(get(web, "/").text(), "web\n");
    assert_eq!(get(other, "/").text(), "other\n");
}

#[test]
fn several_workers_share_one_port() {
    let b1 = Backend::start("b1");
    let yaml = format!("workers: 2\n{}", one_upstream_yaml("$B1", ""));
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B1", b1.target())]);
    let clients: Vec<Client> = (0..8).map(|_| proxy.client()).collect();
    for mut c in clients {
        assert_eq!(c.request(get_req("/", "")).status, 200);
    }
    assert_eq!(b1.requests(), 8);
}
