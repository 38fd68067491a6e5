//! The basic data path: requests reach the backend and answers reach the client, with
//! connections reused on both sides, pipelining, HTTP/1.0 and split reads.

#[macro_use]
mod support;

use std::time::Duration;
use support::*;

driver_tests! {
    fn get_is_proxied_to_the_backend_and_its_answer_returned(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.get("/hello?x=1");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "b1\n");
        assert_eq!(r.header("x-backend"), Some("b1"));
        let req = b1.only_request();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/hello?x=1");
        assert_eq!(req.header("host"), Some("test.local"));
    }

    fn keep_alive_client_uses_one_backend_connection_for_many_requests(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        for i in 0..20 {
            let r = c.request(get_req(&format!("/r{i}"), ""));
            assert_eq!(r.status, 200);
            assert!(!r.closes(), "request {i} closed the connection: {}", r.head_text());
            assert_eq!(r.header("x-path"), Some(format!("/r{i}").as_str()));
        }
        assert_eq!(b1.requests(), 20);
        assert_eq!(b1.connections(), 1, "the proxy should reuse its upstream connection");
    }

    fn sequential_client_connections_share_a_pooled_backend_connection(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        for _ in 0..5 {
            let mut c = proxy.client();
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert_eq!(b1.requests(), 5);
        assert_eq!(b1.connections(), 1, "idle upstream connections should be pooled across clients");
    }

    fn pipelined_requests_are_answered_in_order(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let mut all = String::new();
        for p in ["/one", "/two", "/three", "/four"] {
            all.push_str(&get_req(p, ""));
        }
        c.send(all);
        for p in ["/one", "/two", "/three", "/four"] {
            let r = c.read_response();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-path"), Some(p));
        }
        assert_eq!(b1.requests(), 4);
        assert_eq!(b1.connections(), 1);
    }

    fn pipelined_post_and_get_are_not_mixed_up(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(format!(
            "POST /echo-body HTTP/1.1\r\nHost: test.local\r\nContent-Length: 11\r\n\r\nGET /x HTTP{}",
            get_req("/after", "")
        ));
        let r = c.read_response();
        assert_eq!(r.text(), "GET /x HTTP", "the body must be exactly Content-Length bytes");
        let r = c.read_response();
        assert_eq!(r.header("x-path"), Some("/after"));
        let log = b1.recorded();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].target, "/after");
    }

    fn http10_request_is_answered_and_the_connection_closed(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("GET /old HTTP/1.0\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "b1\n");
        c.expect_closed();
        assert_eq!(b1.only_request().target, "/old");
    }

    fn http10_keep_alive_request_keeps_the_connection_open(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        for _ in 0..3 {
            let r = c.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            assert_eq!(r.status, 200);
            assert!(
                r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
                "a 1.0 keep-alive answer must say so: {}",
                r.head_text()
            );
            assert!(r.has_header("content-length"));
        }
        assert_eq!(b1.requests(), 3);
    }

    fn connection_close_request_gets_answer_then_close(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/", "Connection: close\r\n"));
        assert_eq!(r.status, 200);
        assert!(r.closes(), "expected Connection: close, got {}", r.head_text());
        c.expect_closed();
    }

    fn head_response_has_no_body_and_the_connection_stays_in_sync(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("HEAD /big?n=100 HTTP/1.1\r\nHost: test.local\r\n\r\n");
        let r = c.read_head_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("100"));
        // Any stray body bytes would be read as the next response's head.
        let r = c.request(get_req("/next", ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-path"), Some("/next"));
    }

    fn head_of_a_chunked_resource_has_no_body(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("HEAD /chunked HTTP/1.1\r\nHost: test.local\r\n\r\n");
        let r = c.read_head_response();
        assert_eq!(r.status, 200);
        let r = c.request(get_req("/next", ""));
        assert_eq!(r.header("x-path"), Some("/next"));
    }

    fn no_content_and_not_modified_responses_carry_no_body(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/status/204", ""));
        assert_eq!(r.status, 204);
        assert!(!r.has_header("transfer-encoding"), "204 must not be chunked: {}", r.head_text());
        let r = c.request(get_req("/status/304", ""));
        assert_eq!(r.status, 304);
        assert!(!r.has_header("transfer-encoding"), "304 must not be chunked: {}", r.head_text());
        let r = c.request(get_req("/next", ""));
        assert_eq!(r.header("x-path"), Some("/next"));
    }

    fn error_statuses_from_the_backend_are_passed_through(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        for s in [201u16, 404, 500, 503] {
            let r = c.request(get_req(&format!("/status/{s}"), ""));
            assert_eq!(r.status, s);
            assert_eq!(r.text(), format!("status {s}\n"));
        }
    }

    fn expect_100_continue_is_relayed_end_to_end(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("POST /continue HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
        let interim = c.read_response();
        assert_eq!(interim.status, 100, "expected 100 Continue before sending the body");
        c.send("0123456789");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "got 10 bytes\n");
        assert_eq!(b1.only_request().body, b"0123456789");
        // The connection is still usable.
        assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
    }

    fn expect_100_continue_rejected_by_backend_reaches_client_without_the_body(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("POST /continue/reject HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 417);
        // The proxy cannot know whether the body follows: it must not keep the connection.
        c.read_until_close();
    }

    fn request_head_sent_byte_by_byte_is_reassembled(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let req = "GET /split?q=1 HTTP/1.1\r\nHost: test.local\r\nX-Split: yes\r\n\r\n";
        c.send_split(req, 1, Duration::from_millis(1));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        let got = b1.only_request();
        assert_eq!(got.target, "/split?q=1");
        assert_eq!(got.header("x-split"), Some("yes"));
    }

    fn request_split_between_head_and_body_arrives_intact(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("POST /echo-body HTTP/1.1\r\nHost: test.local\r\nContent-Length: 12\r\n\r\n");
        std::thread::sleep(Duration::from_millis(20));
        c.send_split("hello world!", 3, Duration::from_millis(5));
        assert_eq!(c.read_response().text(), "hello world!");
        assert_eq!(b1.only_request().body, b"hello world!");
    }

    fn absolute_form_target_is_forwarded_in_origin_form(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request("GET http://test.local/abs/path?k=v HTTP/1.1\r\nHost: test.local\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(b1.only_request().target, "/abs/path?k=v");
    }

    fn many_concurrent_clients_are_all_answered(driver) {
        let b1 = Backend::start("b1");
        let yaml = format!("workers: 2\n{}", one_upstream_yaml("$B1", ""));
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let addr = proxy.addr();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    for i in 0..10 {
                        let path = format!("/t{t}/r{i}");
                        let r = c.request(get_req(&path, ""));
                        assert_eq!(r.status, 200);
                        assert_eq!(r.header("x-path"), Some(path.as_str()));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a client thread failed");
        }
        assert_eq!(b1.requests(), 160);
    }

    fn expect_100_continue_with_the_body_sent_at_once_is_answered(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("POST /continue HTTP/1.1\r\nHost: test.local\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nabcd");
        let r = c.read_final_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "got 4 bytes\n");
        assert_eq!(b1.only_request().body, b"abcd");
        assert_eq!(c.request(get_req("/next", "")).header("x-path"), Some("/next"));
    }

    fn early_hints_reach_http11_clients_before_the_final_response(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(get_req("/early-hints", ""));
        let hints = c.read_response();
        assert_eq!(hints.status, 103);
        assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "after hints\n");
    }

    fn early_hints_are_not_sent_to_http10_clients(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request("GET /early-hints HTTP/1.0\r\n\r\n");
        assert_eq!(r.status, 200, "HTTP/1.0 has no interim responses: {}", r.head_text());
        assert_eq!(r.text(), "after hints\n");
    }

    fn client_half_close_after_a_request_still_gets_the_response(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(get_req("/half", ""));
        c.shutdown_write();
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-path"), Some("/half"));
        c.read_until_close();
    }

    fn client_vanishing_mid_body_does_not_disturb_later_requests(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        {
            let mut c = proxy.client();
            c.send("POST / HTTP/1.1\r\nHost: test.local\r\nContent-Length: 1000\r\n\r\nonly ten b");
        }
        {
            let mut c = proxy.client();
            c.send(get_req("/sleep?ms=300", ""));
            assert!(b1.wait_for_requests(1, Duration::from_secs(3)));
        }
        for _ in 0..3 {
            assert_eq!(proxy.get("/after").status, 200);
        }
        let log = b1.recorded();
        assert!(log.iter().all(|r| r.body.is_empty()), "a partial body was completed: {log:#?}");
        assert_eq!(log.iter().filter(|r| r.target == "/after").count(), 3);
    }

    fn options_asterisk_is_forwarded_as_is(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request("OPTIONS * HTTP/1.1\r\nHost: test.local\r\n\r\n");
        assert_eq!(r.status, 200);
        let got = b1.only_request();
        assert_eq!(got.method, "OPTIONS");
        assert_eq!(got.target, "*");
    }

    fn percent_encoded_target_is_forwarded_byte_for_byte(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let target = "/a%20b/%2e%2E/c?x=%2F&y=a+b&z";
        proxy.client().request(get_req(target, ""));
        assert_eq!(b1.only_request().target, target);
    }

    fn reason_phrase_from_the_backend_is_kept(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(get_req("/status/418", ""));
        assert_eq!(r.status, 418);
        assert_eq!(r.reason, "Other");
    }
}
