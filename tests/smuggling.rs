//! Request smuggling and malformed messages: every ambiguous or malformed request is refused
//! with 400 (or 505 / 414 / 431 where more precise) and the connection closed, before anything
//! reaches the backend; an upstream that breaks the rules gets the client a 502 or a cut
//! connection, never a desynchronised one.

#[macro_use]
mod support;

use support::*;

/// Sends `raw` in one write and asserts: `status`, `Connection: close`, the connection
/// closed, a short body, and no complete request at the backend.
fn assert_refused(driver: Driver, raw: &[u8], status: u16) {
    let (proxy, b1) = proxy_to_one_backend(driver);
    let mut c = proxy.client();
    c.send(raw);
    let r = c.try_read_response(false).unwrap_or_else(|e| {
        panic!(
            "expected {status} for {:?}, got: {e}",
            String::from_utf8_lossy(raw)
        )
    });
    assert_eq!(
        r.status,
        status,
        "for request {:?} got {}",
        String::from_utf8_lossy(raw),
        r.head_text()
    );
    assert!(
        r.closes(),
        "a refused request must close the connection: {}",
        r.head_text()
    );
    assert!(r.body.len() < 200, "error bodies stay short");
    let rest = c.read_until_close();
    assert!(
        rest.is_empty(),
        "nothing may follow the error response, got {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        b1.requests(),
        0,
        "the backend must not see a complete request, got {:#?}",
        b1.recorded()
    );
}

fn refused(driver: Driver, raw: &str) {
    assert_refused(driver, raw.as_bytes(), 400);
}

driver_tests! {
    fn content_length_together_with_chunked_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    fn chunked_together_with_content_length_in_either_order_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n");
    }

    fn two_differing_content_lengths_are_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    }

    fn content_length_list_with_differing_values_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!");
    }

    fn content_length_with_a_plus_sign_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello");
    }

    fn content_length_with_trailing_garbage_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\nhello");
    }

    fn negative_content_length_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n");
    }

    fn hexadecimal_content_length_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello");
    }

    fn empty_content_length_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n");
    }

    fn content_length_with_inner_space_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n0123456789");
    }

    fn overflowing_content_length_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    }

    fn transfer_encoding_not_ending_in_chunked_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
    }

    fn unknown_transfer_encoding_is_refused(driver) {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello";
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(raw);
        let r = c.read_response();
        // 400 or 501 Not Implemented are both honest; the connection must not survive.
        assert!(matches!(r.status, 400 | 501), "got {}", r.head_text());
        c.read_until_close();
        assert_eq!(b1.requests(), 0);
    }

    fn obfuscated_chunked_transfer_encoding_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n");
    }

    fn chunked_applied_twice_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    }

    fn transfer_encoding_with_vertical_tab_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n");
    }

    fn transfer_encoding_in_http10_request_is_refused(driver) {
        refused(driver, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    }

    fn non_hexadecimal_chunk_size_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    }

    fn negative_chunk_size_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n");
    }

    fn chunk_size_with_0x_prefix_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n");
    }

    fn overflowing_chunk_size_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n");
    }

    fn chunk_data_longer_than_its_size_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n");
    }

    fn chunk_size_line_ending_in_bare_lf_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n");
    }

    fn chunk_extension_without_a_name_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5; =x\r\nhello\r\n0\r\n\r\n");
    }

    fn chunk_extension_with_an_unterminated_quote_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n");
    }

    fn chunk_extension_with_a_control_character_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n");
    }

    fn valid_chunk_extensions_are_accepted(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(
            "POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;q=\"a b\"\r\nhello\r\n0\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello");
        assert_eq!(b1.only_request().body, b"hello");
    }

    fn malformed_trailer_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n");
    }

    fn obs_fold_header_line_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n");
    }

    fn folded_transfer_encoding_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n");
    }

    fn space_before_colon_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nX-Name : v\r\n\r\n");
    }

    fn space_before_colon_in_transfer_encoding_is_refused(driver) {
        refused(driver, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n");
    }

    fn invalid_header_name_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nBad[Name]: v\r\n\r\n");
    }

    fn header_line_without_a_colon_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n");
    }

    fn bare_cr_inside_a_header_value_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n");
    }

    fn bare_cr_as_a_line_ending_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n");
    }

    fn nul_in_a_header_value_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n");
    }

    fn missing_host_in_http11_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nX-A: b\r\n\r\n");
    }

    fn two_host_fields_are_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    }

    fn invalid_host_value_is_refused(driver) {
        refused(driver, "GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    }

    fn fragment_in_request_target_is_refused(driver) {
        refused(driver, "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    fn garbage_request_line_is_refused(driver) {
        assert_refused(driver, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400);
    }

    fn unsupported_http_version_gets_505(driver) {
        assert_refused(driver, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    }

    fn content_length_cannot_be_dropped_by_naming_it_in_connection(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("POST /echo-body HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello");
        let got = b1.only_request();
        assert_eq!(got.header("content-length"), Some("5"));
        assert_eq!(got.body, b"hello");
    }

    fn bare_lf_line_endings_are_accepted_and_forwarded_as_crlf(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request("GET /lf HTTP/1.1\nHost: a\nX-A: 1\n\n");
        assert_eq!(r.status, 200);
        let got = b1.only_request();
        assert_eq!(got.header("x-a"), Some("1"));
        let head = got.head;
        for (i, &b) in head.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && head[i - 1] == b'\r', "bare LF forwarded upstream: {:?}", String::from_utf8_lossy(&head));
            }
        }
    }

    fn smuggled_request_in_a_refused_body_never_reaches_the_backend(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().status, 400);
        c.read_until_close();
        // A fresh, valid request still works and is the only one the backend ever saw.
        assert_eq!(proxy.get("/fine").status, 200);
        let log = b1.recorded();
        assert_eq!(log.len(), 1, "{log:#?}");
        assert_eq!(log[0].target, "/fine");
    }

    fn upstream_garbage_instead_of_a_response_gets_502(driver) {
        upstream_violation_gets_502(driver, "/bad/garbage");
    }

    fn upstream_response_with_content_length_and_chunked_gets_502(driver) {
        upstream_violation_gets_502(driver, "/bad/cl-te");
    }

    fn upstream_response_with_differing_content_lengths_gets_502(driver) {
        upstream_violation_gets_502(driver, "/bad/two-cl");
    }

    fn upstream_response_with_obs_fold_gets_502(driver) {
        upstream_violation_gets_502(driver, "/bad/obs-fold");
    }

    fn upstream_response_with_space_before_colon_gets_502(driver) {
        upstream_violation_gets_502(driver, "/bad/space-colon");
    }

    fn upstream_malformed_chunk_cuts_the_client_connection(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        c.send(get_req("/bad/chunk", ""));
        match c.try_read_response(false) {
            Ok(r) => panic!("a body with a malformed chunk must not complete: {} {:?}", r.head_text(), r.text()),
            Err(ReadError::Closed(b)) => {
                let text = String::from_utf8_lossy(&b);
                assert!(!text.contains("evil"), "bytes after the bad chunk reached the client: {text:?}");
            }
            Err(e) => panic!("expected the connection to be cut, got {e}"),
        }
    }

    fn upstream_sending_an_unrequested_extra_response_does_not_desync_the_client(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/bad/extra", ""));
        assert_eq!(r.text(), "ok\n");
        let r = c.request(get_req("/second", ""));
        assert_eq!(r.text(), "b1\n", "the second response must come from a fresh exchange");
        assert_eq!(r.header("x-path"), Some("/second"));
        assert_eq!(b1.connections(), 2, "a connection with stray bytes must not be reused");
    }
}

fn upstream_violation_gets_502(driver: Driver, path: &str) {
    let (proxy, _b1) = proxy_to_one_backend(driver);
    let mut c = proxy.client();
    c.send(get_req(path, ""));
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("expected 502 for upstream {path}, got: {e}"));
    assert_eq!(r.status, 502, "upstream {path}: {}", r.head_text());
    assert!(
        !r.body.is_empty() && r.body.len() < 200,
        "a short error body"
    );
    assert!(r.closes(), "{}", r.head_text());
    c.read_until_close();
}
