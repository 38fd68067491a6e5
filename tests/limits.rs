//! Downstream protection (`limits:`): head size and field count -> 431, URI -> 414, body ->
//! 413, slow heads -> 408, idle keep-alive connections closed, per-worker connection cap.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::*;

fn proxy_with_limits(driver: Driver, limits: &str) -> (Proxy, Backend) {
    let b1 = Backend::start("b1");
    let yaml = format!("limits:\n{limits}{}", one_upstream_yaml("$B1", ""));
    let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
    (proxy, b1)
}

/// Sends `raw`, expects `status` with `Connection: close`, then the close; the backend saw
/// no complete request.
fn expect_refusal(proxy: &Proxy, b1: &Backend, raw: &[u8], status: u16) {
    let mut c = proxy.client();
    c.send(raw);
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected {status}, got: {e}"));
    assert_eq!(r.status, status, "{}", r.head_text());
    assert!(r.closes(), "{}", r.head_text());
    c.read_until_close();
    assert_eq!(b1.requests(), 0);
}

driver_tests! {
    fn request_head_over_max_header_bytes_gets_431(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_header_bytes: 1KiB\n");
        let raw = get_req("/", &format!("X-Big: {}\r\n", "a".repeat(2000)));
        expect_refusal(&proxy, &b1, raw.as_bytes(), 431);
    }

    fn request_head_just_under_max_header_bytes_is_proxied(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_header_bytes: 1KiB\n");
        let r = proxy.client().request(get_req("/", &format!("X-Big: {}\r\n", "a".repeat(900))));
        assert_eq!(r.status, 200);
        assert_eq!(b1.only_request().header("x-big").map(str::len), Some(900));
    }

    fn head_over_max_header_bytes_without_its_end_gets_431(driver) {
        // The blank line never comes: the limit must trip on the bytes alone.
        let (proxy, b1) = proxy_with_limits(driver, "  max_header_bytes: 1KiB\n");
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "a".repeat(3000));
        expect_refusal(&proxy, &b1, raw.as_bytes(), 431);
    }

    fn too_many_header_fields_get_431(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_headers: 10\n");
        let extra: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
        expect_refusal(&proxy, &b1, get_req("/", &extra).as_bytes(), 431);
    }

    fn request_target_over_max_uri_bytes_gets_414(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_uri_bytes: 100\n");
        let raw = get_req(&format!("/{}", "p".repeat(200)), "");
        expect_refusal(&proxy, &b1, raw.as_bytes(), 414);
    }

    fn content_length_over_max_request_body_gets_413(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_request_body: 100\n");
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 200\r\n\r\n{}", "x".repeat(200));
        expect_refusal(&proxy, &b1, raw.as_bytes(), 413);
    }

    fn content_length_over_max_request_body_gets_413_before_the_body_is_sent(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_request_body: 100\n");
        expect_refusal(&proxy, &b1, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n", 413);
    }

    fn chunked_body_over_max_request_body_gets_413(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_request_body: 100\n");
        let body = "x".repeat(150);
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n96\r\n{body}\r\n0\r\n\r\n");
        expect_refusal(&proxy, &b1, raw.as_bytes(), 413);
    }

    fn body_exactly_at_max_request_body_is_proxied(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  max_request_body: 100\n");
        let mut c = proxy.client();
        let r = c.request(format!("POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{}", "y".repeat(100)));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 100);
        let chunked = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{}\r\n0\r\n\r\n", "z".repeat(100));
        assert_eq!(c.request(chunked).status, 200);
        assert_eq!(b1.requests(), 2);
    }

    fn incomplete_head_gets_408_after_header_read_timeout(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  header_read_timeout: 300ms\n");
        let mut c = proxy.client();
        let start = Instant::now();
        c.send("GET / HTTP/1.1\r\nHost: a\r\n");
        let r = c.read_response();
        let took = start.elapsed();
        assert_eq!(r.status, 408, "{}", r.head_text());
        assert!(r.closes());
        assert!(took >= Duration::from_millis(250), "408 came too early: {took:?}");
        assert!(took < Duration::from_secs(3), "408 came too late: {took:?}");
        c.read_until_close();
        assert_eq!(b1.requests(), 0);
    }

    fn dripping_head_bytes_does_not_extend_header_read_timeout(driver) {
        let (proxy, _b1) = proxy_with_limits(driver, "  header_read_timeout: 300ms\n");
        let mut c = proxy.client();
        let start = Instant::now();
        c.send("GET / HTTP/1.1\r\n");
        // Keep dripping one header line every 50 ms until the proxy gives up (or 2 s pass).
        let mut i = 0;
        while start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
            if c.try_send(format!("X-{i}: v\r\n")).is_err() {
                break;
            }
            i += 1;
            if start.elapsed() > Duration::from_millis(400) {
                break;
            }
        }
        let r = c.try_read_response(false).unwrap_or_else(|e| panic!("expected 408: {e}"));
        assert_eq!(r.status, 408);
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    fn silent_new_connection_is_closed_after_header_read_timeout(driver) {
        let (proxy, _b1) = proxy_with_limits(driver, "  header_read_timeout: 300ms\n");
        let mut c = proxy.client();
        let start = Instant::now();
        let rest = c.read_until_close();
        assert!(start.elapsed() >= Duration::from_millis(250));
        // Either a 408 or a silent close is fine for a connection that never sent a byte.
        if !rest.is_empty() {
            assert!(rest.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&rest));
        }
    }

    fn idle_keep_alive_connection_is_closed_after_idle_timeout(driver) {
        let (proxy, _b1) = proxy_with_limits(driver, "  idle_timeout: 300ms\n");
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        let start = Instant::now();
        c.expect_closed();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250), "closed too early: {took:?}");
        assert!(took < Duration::from_secs(3), "closed too late: {took:?}");
    }

    fn keep_alive_connection_survives_pauses_shorter_than_idle_timeout(driver) {
        let (proxy, b1) = proxy_with_limits(driver, "  idle_timeout: 2s\n");
        let mut c = proxy.client();
        for _ in 0..3 {
            assert_eq!(c.request(get_req("/", "")).status, 200);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(b1.requests(), 3);
    }

    fn connections_over_max_connections_are_refused(driver) {
        let (proxy, _b1) = proxy_with_limits(driver, "  max_connections: 1\n");
        let mut first = proxy.client();
        assert_eq!(first.request(get_req("/", "")).status, 200);
        // The first connection is open and idle: a second one is over the limit.
        let mut second = proxy.client();
        let _ = second.try_send(get_req("/", ""));
        match second.try_read_response(false) {
            Err(ReadError::Closed(b)) => assert!(b.is_empty()),
            Ok(r) => assert_eq!(r.status, 503, "over the limit: {}", r.head_text()),
            Err(e) => panic!("the connection over the limit must be refused: {e}"),
        }
        // The first connection still works; once it closes, a new one is admitted.
        assert_eq!(first.request(get_req("/", "")).status, 200);
        drop(first);
        let ok = wait_for(Duration::from_secs(3), || {
            let mut c = proxy.client();
            if c.try_send(get_req("/", "Connection: close\r\n")).is_err() {
                return false;
            }
            matches!(c.try_read_response(false), Ok(r) if r.status == 200)
        });
        assert!(ok, "a connection slot should free up when the first client leaves");
    }
}
