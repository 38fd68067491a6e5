//! Upstream failures: 502 when a target refuses or breaks, 504 on response_header_timeout,
//! 503 when every target is full, transparent retry of stale pooled connections, cut
//! connections when a response breaks after its head. The client never hangs.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::*;

/// Reads the error response for `path` and checks its shape: `status`, short body, close.
fn expect_error(proxy: &Proxy, path: &str, status: u16) -> Duration {
    let mut c = proxy.client();
    let start = Instant::now();
    c.send(get_req(path, ""));
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected {status} for {path}: {e}"));
    let took = start.elapsed();
    assert_eq!(r.status, status, "{}", r.head_text());
    assert!(
        !r.body.is_empty() && r.body.len() < 100,
        "short error body: {:?}",
        r.text()
    );
    assert!(r.text().starts_with(&status.to_string()), "{:?}", r.text());
    assert!(
        r.closes(),
        "error responses close the connection: {}",
        r.head_text()
    );
    c.read_until_close();
    took
}

driver_tests! {
    fn refused_target_gets_502(driver) {
        let yaml = one_upstream_yaml("$DEAD", "");
        let proxy = Proxy::start(driver, &yaml, &[("DEAD", refused_addr().to_string())]);
        expect_error(&proxy, "/", 502);
        // The proxy keeps serving new connections after a failure.
        expect_error(&proxy, "/again", 502);
    }

    fn response_header_timeout_gets_504(driver) {
        let b1 = Backend::start("b1");
        let yaml = one_upstream_yaml("$B1", "    transport: { response_header_timeout: 300ms }\n");
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let took = expect_error(&proxy, "/sleep?ms=3000", 504);
        assert!(took >= Duration::from_millis(250), "504 came too early: {took:?}");
        assert!(took < Duration::from_secs(2), "504 came too late: {took:?}");
        // A fast request right after is fine.
        assert_eq!(proxy.get("/").status, 200);
    }

    fn full_target_gets_503(driver) {
        let b1 = Backend::start("b1");
        // queue_timeout 0s: no waiting for a slot (tests/queue.rs covers the wait).
        let yaml = one_upstream_yaml(
            "{ address: \"$B1\", max_connections: 1 }",
            "    transport: { queue_timeout: 0s }\n",
        );
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let addr = proxy.addr();
        let slow = std::thread::spawn(move || get(addr, "/sleep?ms=1000"));
        assert!(b1.wait_for_requests(1, Duration::from_secs(3)), "slow request never arrived");
        expect_error(&proxy, "/", 503);
        assert_eq!(slow.join().unwrap().status, 200);
        assert_eq!(b1.connections(), 1, "max_connections: 1 must never be exceeded");
        // Once the slow request is done its connection is free again.
        assert_eq!(proxy.get("/").status, 200);
    }

    fn stale_pooled_connection_is_retried_transparently_for_get(driver) {
        let b1 = Backend::start_with("b1", BackendOptions { close_after_response: true, ..Default::default() });
        let proxy = Proxy::start(driver, &one_upstream_yaml("$B1", ""), &[("B1", b1.target())]);
        let mut c = proxy.client();
        for i in 0..4 {
            let r = c.request(get_req(&format!("/r{i}"), ""));
            assert_eq!(r.status, 200, "request {i}: {}", r.head_text());
            assert_eq!(r.header("x-path"), Some(format!("/r{i}").as_str()));
            // Let the backend's close land, so the pooled connection is certainly stale.
            assert!(b1.wait_for_no_open_connections(Duration::from_secs(3)));
        }
        assert_eq!(b1.requests(), 4, "each request reached the backend exactly once");
        assert_eq!(b1.connections(), 4);
    }

    fn upstream_closing_without_an_answer_gets_502(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        expect_error(&proxy, "/bad/empty", 502);
    }

    fn upstream_cutting_a_body_short_cuts_the_client_connection(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(get_req("/bad/truncated", ""));
        match c.try_read_response(false) {
            Err(ReadError::Closed(b)) => {
                let text = String::from_utf8_lossy(&b);
                assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
                assert!(text.ends_with("0123456789"), "{text:?}");
            }
            Ok(r) => panic!("a truncated body must not look complete: {} {:?}", r.head_text(), r.text()),
            Err(e) => panic!("expected the connection to be cut: {e}"),
        }
    }

    fn upstream_stalling_mid_body_is_cut_after_read_timeout(driver) {
        let b1 = Backend::start("b1");
        let yaml = one_upstream_yaml("$B1", "    transport: { read_timeout: 300ms }\n");
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let mut c = proxy.client();
        let start = Instant::now();
        c.send(get_req("/stall", ""));
        match c.try_read_response(false) {
            Err(ReadError::Closed(b)) => assert!(String::from_utf8_lossy(&b).ends_with("ab")),
            Ok(r) => panic!("a stalled body must not complete: {}", r.head_text()),
            Err(e) => panic!("expected the connection to be cut after read_timeout: {e}"),
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    }

    fn upstream_disappearing_between_requests_gets_502_then_recovers(driver) {
        let b1 = Backend::start("b1");
        let target = b1.addr();
        let proxy = Proxy::start(driver, &one_upstream_yaml("$B1", ""), &[("B1", b1.target())]);
        assert_eq!(proxy.get("/").status, 200);
        drop(b1);
        expect_error(&proxy, "/", 502);
        // A new backend on the same port is used again.
        let listener = std::net::TcpListener::bind(target).expect("rebind the backend port");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nback\n");
        });
        let r = proxy.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "back\n");
        server.join().unwrap();
    }
}
