//! Message bodies in both directions: Content-Length, chunked (with trailers) and
//! close-delimited, small and large, HTTP/1.1 and HTTP/1.0.

#[macro_use]
mod support;

use std::time::Duration;
use support::*;

fn chunked(body: &[u8], piece: usize, trailers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for p in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

fn post_head(path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n")
}

driver_tests! {
    fn content_length_request_body_reaches_backend_intact(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let body = pattern(1000);
        let mut c = proxy.client();
        let mut req = post_head("/echo-body", "Content-Length: 1000\r\n").into_bytes();
        req.extend_from_slice(&body);
        let r = c.request(req);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        let got = b1.only_request();
        assert_eq!(got.header("content-length"), Some("1000"));
        assert!(!got.chunked);
        assert_eq!(got.body, body);
    }

    fn every_byte_value_survives_a_round_trip(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let body: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut req = post_head("/echo-body", "Content-Length: 4096\r\n").into_bytes();
        req.extend_from_slice(&body);
        assert_eq!(proxy.client().request(req).body, body);
    }

    fn empty_content_length_body_is_forwarded_as_empty(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(post_head("/echo-body", "Content-Length: 0\r\n"));
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert!(b1.only_request().body.is_empty());
        assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
    }

    fn large_content_length_request_body_streams_to_backend_intact(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let body = pattern(2 * 1024 * 1024);
        let mut c = proxy.client();
        c.send(post_head("/", &format!("Content-Length: {}\r\n", body.len())));
        c.send(&body);
        let r = c.read_response();
        assert_eq!(r.status, 200);
        let got = b1.only_request();
        assert_eq!(got.body.len(), body.len());
        assert!(got.body == body, "2 MiB body arrived corrupted");
    }

    fn chunked_request_body_with_trailers_reaches_backend_intact(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let body = pattern(3000);
        let mut req = post_head("/echo-body", "Transfer-Encoding: chunked\r\n").into_bytes();
        req.extend_from_slice(&chunked(&body, 700, "X-Checksum: 1234\r\n"));
        let mut c = proxy.client();
        let r = c.request(req);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        let got = b1.only_request();
        assert!(got.chunked, "the backend should receive a chunked body: {}", got.head_text());
        assert!(!got.has_header("content-length"));
        assert_eq!(got.body, body);
        assert_eq!(got.trailers, vec![("X-Checksum".to_string(), "1234".to_string())]);
        // The connection stays in sync after the trailer section.
        assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
    }

    fn chunked_request_body_split_inside_framing_arrives_intact(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let body = pattern(200);
        let mut req = post_head("/echo-body", "Transfer-Encoding: chunked\r\n").into_bytes();
        req.extend_from_slice(&chunked(&body, 50, "X-T: 1\r\n"));
        let mut c = proxy.client();
        // 7-byte pieces cut size lines, CRLFs and the trailer in the middle.
        c.send_split(&req, 7, Duration::from_millis(1));
        assert_eq!(c.read_response().body, body);
        assert_eq!(b1.only_request().body, body);
    }

    fn large_chunked_request_body_arrives_intact(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let body = pattern(1024 * 1024);
        let mut req = post_head("/", "Transfer-Encoding: chunked\r\n").into_bytes();
        req.extend_from_slice(&chunked(&body, 10_000, ""));
        let mut c = proxy.client();
        assert_eq!(c.request(req).status, 200);
        let got = b1.only_request();
        assert_eq!(got.body.len(), body.len());
        assert!(got.body == body, "1 MiB chunked body arrived corrupted");
    }

    fn chunked_response_with_trailers_reaches_client_intact(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/chunked", ""));
        assert_eq!(r.status, 200);
        assert!(r.chunked, "expected a chunked response: {}", r.head_text());
        assert_eq!(r.text(), "hello, chunked world");
        assert_eq!(r.trailers, vec![("X-Trailer".to_string(), "done".to_string())]);
        assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
    }

    fn large_chunked_response_reaches_client_intact(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(get_req("/chunked?n=600000", ""));
        assert_eq!(r.body.len(), 600_000);
        assert!(r.body == pattern(600_000), "chunked body arrived corrupted");
    }

    fn large_content_length_response_reaches_client_intact(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/big?n=3000000", ""));
        assert_eq!(r.header("content-length"), Some("3000000"));
        assert_eq!(r.body.len(), 3_000_000);
        assert!(r.body == pattern(3_000_000), "3 MB body arrived corrupted");
        assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
    }

    fn close_delimited_response_is_framed_for_http11_client_and_connection_kept(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/close", ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "close-delimited body\n");
        assert!(
            r.chunked || r.closes(),
            "a close-delimited body must reach a 1.1 client chunked or with a close: {}",
            r.head_text()
        );
        if r.chunked {
            // The client connection can be kept: the proxy delimited the body itself.
            assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
            assert_eq!(b1.connections(), 2, "the close-delimited upstream connection cannot be reused");
        }
    }

    fn large_close_delimited_response_reaches_client_intact(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(get_req("/close?n=1000000", ""));
        assert_eq!(r.body.len(), 1_000_000);
        assert!(r.body == pattern(1_000_000), "close-delimited body arrived corrupted");
    }

    fn close_delimited_response_reaches_http10_client_then_closes(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request("GET /close HTTP/1.0\r\n\r\n");
        assert_eq!(r.status, 200);
        assert!(!r.chunked, "HTTP/1.0 clients cannot read chunked bodies");
        assert_eq!(r.text(), "close-delimited body\n");
        c.expect_closed();
    }

    fn chunked_response_is_dechunked_for_http10_client(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert!(!r.has_header("transfer-encoding"), "1.0 client got chunked: {}", r.head_text());
        assert_eq!(r.text(), "hello, chunked world");
        // Without a length the end of the body can only be signalled by closing.
        assert!(c.buffered().is_empty());
    }

    fn large_chunked_response_is_dechunked_for_http10_client(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request("GET /chunked?n=300000 HTTP/1.0\r\n\r\n");
        assert!(!r.chunked);
        assert_eq!(r.body.len(), 300_000);
        assert!(r.body == pattern(300_000));
    }

    fn http10_upstream_response_reaches_http11_client(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/http10", ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "http/1.0 body\n");
        if !r.closes() {
            assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
            assert_eq!(b1.connections(), 2);
        }
    }

    fn chunked_request_then_content_length_request_on_one_connection(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let mut req = post_head("/a", "Transfer-Encoding: chunked\r\n").into_bytes();
        req.extend_from_slice(&chunked(b"first", 2, ""));
        req.extend_from_slice(post_head("/b", "Content-Length: 6\r\n").as_bytes());
        req.extend_from_slice(b"second");
        c.send(req);
        assert_eq!(c.read_response().header("x-path"), Some("/a"));
        assert_eq!(c.read_response().header("x-path"), Some("/b"));
        let log = b1.recorded();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].body, b"first");
        assert_eq!(log[1].body, b"second");
    }

    fn alternating_body_sizes_keep_the_connection_in_sync(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        for (i, n) in [0usize, 1, 17_000, 5, 70_000, 0, 300].into_iter().enumerate() {
            let body = pattern(n);
            let mut req = post_head("/echo-body", &format!("Content-Length: {n}\r\n")).into_bytes();
            req.extend_from_slice(&body);
            let r = c.request(req);
            assert_eq!(r.body.len(), n, "request {i}");
            assert!(r.body == body, "request {i} body corrupted");
        }
        assert_eq!(b1.connections(), 1);
    }

    fn request_body_arriving_late_is_never_read_as_part_of_the_head(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(post_head("/echo-body", "Content-Length: 10\r\n") + "abcde");
        std::thread::sleep(Duration::from_millis(30));
        // The late part of the body starts like a HEAD request line.
        c.send("HEADx");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "abcdeHEADx");
        assert_eq!(b1.only_request().body, b"abcdeHEADx");
    }

    fn request_without_length_or_chunked_has_no_body(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        // Requests are never close-delimited: what follows the head is the next request.
        c.send(format!("POST /echo-body HTTP/1.1\r\nHost: test.local\r\n\r\n{}", get_req("/second", "")));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(c.read_response().header("x-path"), Some("/second"));
        let log = b1.recorded();
        assert_eq!(log.len(), 2);
        assert!(log[0].body.is_empty());
        assert!(!log[0].has_header("transfer-encoding"));
    }
}
